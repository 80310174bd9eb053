//! What wakes the dispatcher: a commit that stored a delivery it may claim now, and the times
//! at which deliveries held back (a reorder window) come due. Without them the dispatcher
//! finds such deliveries only at its next poll.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Wake-ups for one inbox's dispatcher (a backend owns one; see [`super::Inbox::wakeups`]).
pub struct Wakeups {
    now: Notify,
    /// When held deliveries come due, each rounded up to a whole millisecond after `base` (so
    /// that a flood of deliveries adds one entry per millisecond, not one each).
    due: Mutex<Due>,
    base: Instant,
}

#[derive(Default)]
struct Due {
    heap: BinaryHeap<Reverse<u64>>,
    /// The last one asked for: a flood asks for the same millisecond many times in a row.
    last: u64,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

impl Default for Wakeups {
    fn default() -> Self {
        Self { now: Notify::new(), due: Mutex::default(), base: Instant::now() }
    }
}

impl Wakeups {
    /// Something may be claimed now.
    pub fn wake(&self) {
        self.now.notify_one();
    }

    /// Something comes due `after` from now (at once for zero).
    pub fn wake_after(&self, after: Duration) {
        if after.is_zero() {
            return self.wake();
        }
        let at = (Instant::now() + after).saturating_duration_since(self.base);
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        if due.last == at {
            return;
        }
        let earliest = due.heap.peek().is_none_or(|&Reverse(first)| at < first);
        due.heap.push(Reverse(at));
        due.last = at;
        drop(due);
        // A dispatcher asleep until a later time (or none) must look again.
        if earliest {
            self.wake();
        }
    }

    /// Returns when woken, or when the earliest wake-up asked for comes (which it consumes).
    pub async fn wait(&self) {
        let next = {
            let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
            let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            while due.heap.peek().is_some_and(|&Reverse(at)| at <= now) {
                due.heap.pop();
            }
            due.heap.peek().map(|&Reverse(at)| self.base + Duration::from_millis(at))
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = self.now.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => self.now.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_asked_for_later_comes_then_and_once() {
        let wakeups = Wakeups::default();
        let started = Instant::now();
        wakeups.wake_after(Duration::from_millis(300));
        // That call woke the waiter to look again (nothing else was due).
        wakeups.wait().await;
        assert!(started.elapsed() < Duration::from_millis(1));
        wakeups.wait().await;
        let waited = started.elapsed();
        assert_eq!(waited.as_millis(), 301, "rounded up to the next millisecond");
        // Consumed: nothing more is due, so only a wake ends the wait.
        let again = tokio::time::timeout(Duration::from_secs(10), wakeups.wait()).await;
        assert!(again.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_wake_up_comes_first_and_repeats_within_a_millisecond_are_one() {
        let wakeups = Wakeups::default();
        wakeups.wake_after(Duration::from_millis(500));
        wakeups.wait().await;
        for _ in 0..1000 {
            wakeups.wake_after(Duration::from_millis(200));
        }
        assert_eq!(wakeups.due.lock().unwrap().heap.len(), 2, "one entry per millisecond");
        // The first of them woke the waiter (it is the earliest now); the next wait ends at it.
        wakeups.wait().await;
        let started = Instant::now();
        wakeups.wait().await;
        assert_eq!(started.elapsed().as_millis(), 201);
        wakeups.wait().await;
        assert_eq!(started.elapsed().as_millis(), 501);
    }
}
