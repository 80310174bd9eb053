//! The durable inbox: a verified delivery is stored before it is acknowledged, and handled
//! from storage.
//!
//! ```text
//!  HTTP workers ──append──▶ ┌──────────────┐            ┌────────────┐
//!   (await commit)          │ writer thread│◀──due────── │ dispatcher │──▶ WebhookHandler
//!                           │  owns Store  │◀──record─── │ (own thread)│
//!                           └──────────────┘──wake──────▶└────────────┘
//! ```
//!
//! - One writer thread owns the [`Store`]. Appends that arrive while it is committing are
//!   committed together in the next transaction (group commit): one fsync per batch, not per
//!   delivery, and each delivery is answered only after the commit that holds it. Handler
//!   outcomes that queued beside them go into the same transaction. The answers reach each
//!   runtime thread through its mailbox (`mailbox.rs`): one wake-up per commit, not one per
//!   delivery.
//! - The signature is the delivery's identity: a unique constraint turns the provider's retry
//!   into a duplicate, across restarts.
//! - The dispatcher takes due deliveries in arrival order, at most one per room at a time (the
//!   events of a room are handled in order), runs the generated handler, and records the
//!   outcome: done, retry later with exponential backoff, or dead after the last attempt.
//! - A crash loses nothing acknowledged: whatever was not recorded as done is handled again
//!   after the restart (at least once; exactly once when nothing crashed). What a crash can
//!   make run twice is bounded: the running handlers plus [`MAX_UNRECORDED`] outcomes waiting
//!   for their commit.
//!
//! [`Store`] is the seam for other backends: SQLite here; several replicas sharing PostgreSQL
//! would implement the same four operations (with `FOR UPDATE SKIP LOCKED` in `due`).

mod dispatch;
mod mailbox;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::web::Bytes;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

pub use dispatch::{Dispatcher, DispatcherHandle, MAX_UNRECORDED, RetryPolicy};
use mailbox::{Answer, Mailbox, ToWake};
pub use sqlite::{FILE_NAME, Filter, Selection, SqliteStore};

/// What the request path stores.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Decoded `X-Signature`: the delivery's identity.
    pub signature: [u8; 32],
    /// `X-Timestamp` as sent.
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub event: Option<String>,
    /// Whether a typed webhook matched when it arrived (else it goes to the fallback).
    pub typed: bool,
    /// `data.roomId`: deliveries of one room are handled in arrival order.
    pub room: Option<String>,
    /// As received (shares the request's buffer).
    pub body: Bytes,
    pub received_at_ms: i64,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    New(i64),
    /// Already stored under this id: a retry of a delivery we have.
    Duplicate(i64),
}

/// A stored delivery, as the dispatcher and the CLI see it.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub id: i64,
    pub event: Option<String>,
    pub state: State,
    /// `typed` or `fallback`, as classified when it was last handled (or received).
    pub kind: &'static str,
    pub attempts: u32,
    pub received_at: i64,
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub room: Option<String>,
    #[serde(skip)]
    pub signature: [u8; 32],
    #[serde(skip)]
    pub body: Vec<u8>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Done,
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// What became of one handler attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: i64,
    pub attempts: u32,
    /// Whether the body matched a typed webhook this time.
    pub typed: bool,
    pub result: Result<(), String>,
    /// `Some(at)`: retry at this time (ms); `None` with an error: dead.
    pub retry_at_ms: Option<i64>,
    pub now_ms: i64,
}

/// Storage failed: the delivery is not acknowledged (503), so the provider retries it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self(error.to_string())
    }
}

/// `inbox stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub pending: u64,
    pub done: u64,
    pub dead: u64,
    pub fallback: u64,
    pub oldest_pending_received_at: Option<i64>,
}

/// How many deliveries wait: for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: u64,
    pub dead: u64,
}

/// A storage backend. It lives on the writer thread, which calls it one operation at a time.
pub trait Store: Send + 'static {
    /// Stores a batch in one durable commit; one answer per delivery, in order.
    fn append(&mut self, batch: &[NewDelivery]) -> Result<Vec<Appended>, StoreError>;
    /// Pending deliveries due at `now_ms`, in arrival order, at most the first of each room.
    fn due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Stored>, StoreError>;
    /// Records handler outcomes.
    fn record(&mut self, outcomes: &[Outcome]) -> Result<(), StoreError>;
    /// Both (either may be empty), as one commit where the backend can (the pages they touch
    /// are written once); by default one after the other.
    fn append_and_record(
        &mut self,
        batch: &[NewDelivery],
        outcomes: &[Outcome],
    ) -> (Result<Vec<Appended>, StoreError>, Result<(), StoreError>) {
        let appended = if batch.is_empty() { Ok(Vec::new()) } else { self.append(batch) };
        let recorded = if outcomes.is_empty() { Ok(()) } else { self.record(outcomes) };
        (appended, recorded)
    }
    /// Deletes done deliveries handled before `before_ms`; returns how many.
    fn prune(&mut self, before_ms: i64) -> Result<usize, StoreError>;
    /// Pending and dead deliveries (cheap: both are indexed; counting all would scan).
    fn depth(&mut self) -> Result<Depth, StoreError>;
    /// Fails unless a write would succeed now.
    fn check(&mut self) -> Result<(), StoreError>;
}

enum Op {
    /// Answered through the mailbox of the thread that asked, if it has one.
    Append(NewDelivery, oneshot::Sender<Result<Appended, StoreError>>, Option<Arc<Mailbox>>),
    Due(i64, usize, oneshot::Sender<Result<Vec<Stored>, StoreError>>),
    /// Answered once the batch holding the outcome was committed (or failed to be).
    Record(Outcome, oneshot::Sender<()>, Option<Arc<Mailbox>>),
    Prune(i64, oneshot::Sender<Result<usize, StoreError>>),
    Check(oneshot::Sender<Result<(), StoreError>>),
    Depth(oneshot::Sender<Result<Depth, StoreError>>),
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 4096;

/// The handle the request path and the dispatcher share.
#[derive(Clone)]
pub struct Inbox {
    ops: mpsc::Sender<Op>,
    /// Woken after a commit that stored something new.
    wake: Arc<Notify>,
    path: PathBuf,
}

impl Inbox {
    /// Starts the writer thread over `store`.
    pub fn start(store: impl Store, path: PathBuf) -> Self {
        let (ops, rx) = mpsc::channel(MAX_BATCH * 4);
        let wake = Arc::new(Notify::new());
        let notify = wake.clone();
        std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || writer(store, rx, &notify))
            .expect("spawning the inbox writer thread");
        Self { ops, wake, path }
    }

    /// Where the inbox lives (for logs).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(crate) fn wake(&self) -> &Notify {
        &self.wake
    }

    async fn call<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).await.map_err(|_| StoreError("the inbox writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError("the inbox writer has stopped".into()))?
    }

    /// Stores a delivery; returns once it is committed durably.
    pub async fn append(&self, delivery: NewDelivery) -> Result<Appended, StoreError> {
        self.call(|tx| Op::Append(delivery, tx, Mailbox::current())).await
    }

    pub async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        self.call(|tx| Op::Due(now_ms, limit, tx)).await
    }

    /// Queues a handler outcome; the returned receiver resolves once its batch is committed.
    /// Outcomes are committed in batches, before any later `due` is answered, so a recorded
    /// delivery is never handed out again. A failure to commit is logged by the writer; the
    /// delivery then stays pending (handled again: at least once).
    pub async fn record(&self, outcome: Outcome) -> Result<oneshot::Receiver<()>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Record(outcome, tx, Mailbox::current()))
            .await
            .map_err(|_| StoreError("the inbox writer has stopped".into()))?;
        Ok(rx)
    }

    pub async fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.call(|tx| Op::Prune(before_ms, tx)).await
    }

    pub async fn depth(&self) -> Result<Depth, StoreError> {
        self.call(Op::Depth).await
    }

    /// Publishes the number of pending and dead deliveries as metrics.
    pub async fn report_depth(&self) {
        match self.depth().await {
            Ok(depth) => crate::metrics::inbox_depth(&depth),
            Err(e) => log::warn!("cannot count the inbox: {e}"),
        }
    }

    /// Whether storage takes writes now (for `/readyz`).
    pub async fn check(&self) -> Result<(), StoreError> {
        self.call(Op::Check).await
    }
}

fn writer(mut store: impl Store, mut ops: mpsc::Receiver<Op>, wake: &Notify) {
    let mut batch: Vec<NewDelivery> = Vec::new();
    type Reply<T> = (oneshot::Sender<T>, Option<Arc<Mailbox>>);
    let mut replies: Vec<Reply<Result<Appended, StoreError>>> = Vec::new();
    let mut others: Vec<Op> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut recorded: Vec<Reply<()>> = Vec::new();
    let mut to_wake = ToWake::default();
    while let Some(first) = ops.blocking_recv() {
        // Everything that queued up while the last commit ran goes into this one.
        let mut next = Some(first);
        while let Some(op) = next.take().or_else(|| ops.try_recv().ok()) {
            match op {
                Op::Append(delivery, reply, mailbox) => {
                    batch.push(delivery);
                    replies.push((reply, mailbox));
                }
                Op::Record(outcome, ack, mailbox) => {
                    outcomes.push(outcome);
                    recorded.push((ack, mailbox));
                }
                other => others.push(other),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
        }
        // Outcomes are committed with the appends that queued beside them, or on their own,
        // but always before the queries that came after them (and a little earlier is fine).
        if !batch.is_empty() || !outcomes.is_empty() {
            let started = std::time::Instant::now();
            let (appended, recorded_result) = store.append_and_record(&batch, &outcomes);
            if !batch.is_empty() {
                crate::metrics::inbox_commit(batch.len(), started.elapsed(), appended.is_ok());
            }
            match appended {
                Ok(answers) => {
                    let stored_new = answers.iter().any(|a| matches!(a, Appended::New(_)));
                    for ((reply, mailbox), answer) in replies.drain(..).zip(answers) {
                        to_wake.post(mailbox.as_ref(), Answer::Appended(reply, Ok(answer)));
                    }
                    if stored_new {
                        wake.notify_one();
                    }
                }
                Err(error) => {
                    for (reply, mailbox) in replies.drain(..) {
                        to_wake.post(mailbox.as_ref(), Answer::Appended(reply, Err(error.clone())));
                    }
                }
            }
            if let Err(error) = recorded_result {
                log::error!(
                    "cannot record {} handler outcome(s); they stay pending and will be handled again: {error}",
                    outcomes.len()
                );
            }
            for (ack, mailbox) in recorded.drain(..) {
                to_wake.post(mailbox.as_ref(), Answer::Recorded(ack));
            }
            batch.clear();
            outcomes.clear();
            to_wake.wake_all();
        }
        for op in others.drain(..) {
            match op {
                Op::Due(now, limit, reply) => {
                    let _ = reply.send(store.due(now, limit));
                }
                Op::Prune(before, reply) => {
                    let _ = reply.send(store.prune(before));
                }
                Op::Check(reply) => {
                    let _ = reply.send(store.check());
                }
                Op::Depth(reply) => {
                    let _ = reply.send(store.depth());
                }
                Op::Append(..) | Op::Record(..) => unreachable!("batched above"),
            }
        }
    }
}
