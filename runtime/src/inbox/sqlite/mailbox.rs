//! Answers from the writer thread to the tasks that wait for them: one wake-up per commit for
//! each runtime thread, not one per delivery.
//!
//! A tokio waker used from another thread schedules its task remotely, and every remote
//! schedule writes to the runtime's eventfd: a system call on the writer thread per answered
//! delivery, and a wake-up of a runtime that may be asleep in `epoll_wait` (strace: 1.2
//! `write`s and 1.4 `epoll_wait`s per delivery). Here each runtime thread that waits for the
//! writer has a [`Mailbox`] and one pump task: the writer puts a commit's answers for that
//! thread in the mailbox and wakes the pump once; the pump hands them out, and those wakes are
//! local to its thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::oneshot;

use crate::inbox::{Appended, StoreError};

/// An append's answer on its way to the task waiting for it.
pub(super) struct Answer(pub oneshot::Sender<Result<Appended, StoreError>>, pub Result<Appended, StoreError>);

impl Answer {
    fn send(self) {
        // A receiver that is gone (its request was cancelled) needs no answer.
        let _ = self.0.send(self.1);
    }
}

/// Where a runtime thread's answers are put.
pub(super) struct Mailbox {
    queue: Mutex<Queue>,
    pump: AtomicWaker,
}

struct Queue {
    answers: Vec<Answer>,
    /// Whether the pump still runs (its runtime may have shut down).
    open: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

impl Mailbox {
    /// The mailbox of the current thread, its pump running on the current tokio runtime;
    /// `None` outside a runtime (the answer is then sent straight to the waiting task).
    pub(super) fn current() -> Option<Arc<Mailbox>> {
        CURRENT.with_borrow_mut(|current| {
            if let Some(mailbox) = current.as_ref().filter(|m| m.lock().open) {
                return Some(mailbox.clone());
            }
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let mailbox = Arc::new(Mailbox {
                queue: Mutex::new(Queue { answers: Vec::new(), open: true }),
                pump: AtomicWaker::new(),
            });
            runtime.spawn(Pump { mailbox: mailbox.clone(), spare: Vec::new() });
            *current = Some(mailbox.clone());
            Some(mailbox)
        })
    }

    /// Queues `answer`; the caller wakes the mailbox once it has queued a commit's answers.
    /// A mailbox whose pump has stopped sends it straight away.
    pub(super) fn post(&self, answer: Answer) {
        let mut queue = self.lock();
        if queue.open {
            queue.answers.push(answer);
        } else {
            drop(queue);
            answer.send();
        }
    }

    pub(super) fn wake(&self) {
        self.pump.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends whatever arrives in its mailbox; runs until its runtime shuts down.
struct Pump {
    mailbox: Arc<Mailbox>,
    /// The other half of a double buffer, so that a busy pump does not allocate.
    spare: Vec<Answer>,
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.mailbox.pump.register(cx.waker());
        std::mem::swap(&mut this.mailbox.lock().answers, &mut this.spare);
        for answer in this.spare.drain(..) {
            answer.send();
        }
        Poll::Pending
    }
}

impl Drop for Pump {
    /// The runtime is shutting down: close the mailbox and send what is in it.
    fn drop(&mut self) {
        let answers = {
            let mut queue = self.mailbox.lock();
            queue.open = false;
            std::mem::take(&mut queue.answers)
        };
        answers.into_iter().for_each(Answer::send);
    }
}

/// The mailboxes a commit posted to, each to be woken once.
#[derive(Default)]
pub(super) struct ToWake(Vec<Arc<Mailbox>>);

impl ToWake {
    /// Sends `answer` through `mailbox`, or straight to its task without one.
    pub(super) fn post(&mut self, mailbox: Option<&Arc<Mailbox>>, answer: Answer) {
        match mailbox {
            Some(mailbox) => {
                mailbox.post(answer);
                // A handful of runtime threads at most: a linear search beats hashing.
                if !self.0.iter().any(|m| Arc::ptr_eq(m, mailbox)) {
                    self.0.push(mailbox.clone());
                }
            }
            None => answer.send(),
        }
    }

    pub(super) fn wake_all(&mut self) {
        for mailbox in self.0.drain(..) {
            mailbox.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_their_tasks_through_the_pump_and_after_it_stops() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mailbox = runtime.block_on(async { Mailbox::current() }).expect("inside a runtime");
        let (tx, rx) = oneshot::channel();
        let writer = {
            let mailbox = mailbox.clone();
            std::thread::spawn(move || {
                let mut to_wake = ToWake::default();
                to_wake.post(Some(&mailbox), Answer(tx, Ok(Appended::New(7))));
                to_wake.wake_all();
            })
        };
        assert_eq!(runtime.block_on(rx).unwrap().unwrap(), Appended::New(7));
        writer.join().unwrap();

        // Once the runtime is gone, the pump is too: answers go straight to their receivers.
        drop(runtime);
        assert!(!mailbox.lock().open);
        let (tx, mut rx) = oneshot::channel();
        mailbox.post(Answer(tx, Ok(Appended::Duplicate(7))));
        assert_eq!(rx.try_recv().unwrap().unwrap(), Appended::Duplicate(7));
    }

    #[test]
    fn outside_a_runtime_there_is_no_mailbox() {
        assert!(Mailbox::current().is_none());
    }
}
