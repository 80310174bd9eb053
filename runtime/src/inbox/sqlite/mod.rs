//! The inbox in an SQLite file (`<data-dir>/inbox.sqlite3`, WAL): embedded, nothing to install.
//!
//! ```text
//!  HTTP workers ──append──▶ ┌───────────────┐
//!   (await commit)          │ writer thread │──answers──▶ mailboxes (one wake per commit
//!  dispatcher ──claim/─────▶│  owns Store   │             per runtime thread)
//!    complete/renew         └───────────────┘
//! ```
//!
//! One writer thread owns the connection (`store.rs`). Whatever queued up while it was
//! committing goes into the next cycle (group commit): the appends in one transaction, one fsync
//! per batch rather than per delivery, each delivery answered only after the commit that holds
//! it; then the outcomes, renewals and claims (which see those deliveries) in a second one,
//! without an fsync, so that acknowledgements do not wait for the dispatcher's half of the SQL.
//! The answers reach each runtime thread through its mailbox (`mailbox.rs`): one wake-up per
//! commit, not one per delivery. Queries (the CLI's, metrics, readiness) run between batches.

mod mailbox;
mod schedule;
mod schema;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use mailbox::{Answer, Mailbox, ToWake};
pub use schema::VERSION as SCHEMA_VERSION;
pub use store::{FILE_NAME, LOCK_NAME, WAL_LIMIT};
use store::{PRUNE_BATCH, Store, Work};

use super::{
    Appended, Claim, ClaimRequest, Claimed, Completed, Completion, Counts, Depth, Inbox, NewDelivery, Query, Selection,
    Stats, StoreError, Stored, Wakeups,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// A query run on the writer thread; it sends its own answer.
type Job = Box<dyn FnOnce(&mut Store) + Send>;

enum Op {
    /// Answered through the mailbox of the thread that asked, if it has one.
    Append(NewDelivery, Reply<Appended>, Option<Arc<Mailbox>>),
    Complete(Vec<Completion>, Reply<Vec<Completed>>),
    Renew(Vec<Claim>, Duration, Reply<Vec<Claim>>),
    Claim(ClaimRequest, Reply<Vec<Claimed>>),
    /// Both, answered together.
    Settle(Vec<Completion>, ClaimRequest, Reply<(Vec<Completed>, Vec<Claimed>)>),
    /// Anything else, on its own after the batch.
    Run(Job),
    /// Fold the log back and stop.
    Close(oneshot::Sender<()>),
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 4096;

/// The SQLite inbox: a handle to its writer thread (cheap to clone).
#[derive(Clone)]
pub struct SqliteInbox {
    ops: mpsc::Sender<Op>,
    /// Woken after a commit that stored something new, and when what it held back comes due.
    wake: Arc<Wakeups>,
    path: PathBuf,
    /// Counts are read here, off the writer thread (`store::open_reader`); opened when first
    /// needed.
    reader: Arc<Mutex<Option<rusqlite::Connection>>>,
}

impl SqliteInbox {
    /// Opens (creating if needed) the inbox in `dir` for a service that claims deliveries as
    /// `owner`. Fails if another process serves `dir`, or its file is from a newer version.
    pub fn open(dir: &Path, owner: &str) -> Result<Self, StoreError> {
        Ok(Self::start(Store::open_service(dir, owner)?))
    }

    /// Opens the existing inbox in `dir` to look into it or replay deliveries, beside the
    /// service that may be running on it.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::start(Store::open_admin(dir)?))
    }

    fn start(store: Store) -> Self {
        let (ops, rx) = mpsc::channel(MAX_BATCH * 4);
        let wake = Arc::new(Wakeups::default());
        let path = store.path().to_path_buf();
        let notify = wake.clone();
        std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || writer(store, rx, &notify))
            .expect("spawning the inbox writer thread");
        Self { ops, wake, path, reader: Arc::default() }
    }

    /// The inbox's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send<T>(&self, op: Op, answer: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
        let stopped = || StoreError::unavailable(format!("the inbox {} is closed", self.path.display()));
        self.ops.send(op).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `query` on the reader's connection, in a blocking task: the writer goes on
    /// committing.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&rusqlite::Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reader, path) = (self.reader.clone(), self.path.clone());
        let read = move || {
            let mut reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let conn = match &mut *reader {
                Some(conn) => conn,
                none => none.insert(store::open_reader(&path)?),
            };
            query(conn, &path)
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| StoreError::unavailable(format!("reading the inbox {} failed: {e}", self.path.display())))?
    }

    /// Runs `query` on the writer thread, between batches.
    async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(
            Op::Run(Box::new(move |store| {
                let _ = tx.send(query(store));
            })),
            rx,
        )
        .await
    }
}

#[async_trait::async_trait]
impl Inbox for SqliteInbox {
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Append(delivery, tx, Mailbox::current()), rx).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Claim(request, tx), rx).await
    }

    async fn renew(&self, claims: &[Claim], lease: Duration) -> Result<Vec<Claim>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Renew(claims.to_vec(), lease, tx), rx).await
    }

    async fn complete(&self, completions: &[Completion]) -> Result<Vec<Completed>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Complete(completions.to_vec(), tx), rx).await
    }

    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: ClaimRequest,
    ) -> Result<(Vec<Completed>, Vec<Claimed>), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Settle(completions.to_vec(), request, tx), rx).await
    }

    async fn replay(&self, selection: Selection) -> Result<usize, StoreError> {
        let replayed = self.run(move |store| store.replay(selection)).await?;
        if replayed > 0 {
            self.wake.wake();
        }
        Ok(replayed)
    }

    /// The console's reads, [`Inbox::get`] and [`Inbox::stats`] run on the reader (as
    /// [`Inbox::depth`]): the writer goes on committing while they read.
    async fn search(&self, query: &Query) -> Result<Vec<Stored>, StoreError> {
        let query = query.clone();
        self.read(move |conn, path| store::search(conn, path, &query)).await
    }

    async fn get(&self, id: i64) -> Result<Option<Stored>, StoreError> {
        self.read(move |conn, path| store::get(conn, path, id)).await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        self.read(store::stats).await
    }

    /// Read on a connection of its own, in a blocking task: the writer goes on committing.
    async fn depth(&self) -> Result<Depth, StoreError> {
        self.read(store::depth).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.read(store::counts).await
    }

    async fn prune(&self, retention: Duration) -> Result<usize, StoreError> {
        // A writer query per batch, each queued behind what arrived during the one before: a
        // large backlog (a retention lowered on a big inbox) does not hold deliveries back
        // until all of it is gone.
        let (before_ms, bound) = self
            .run(move |store| {
                let before_ms = store.now().saturating_sub(crate::clock::millis(retention));
                Ok((before_ms, store.prune_bound(before_ms)?))
            })
            .await?;
        let mut pruned = 0;
        loop {
            let n = self.run(move |store| store.prune_batch(before_ms, bound)).await?;
            pruned += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
        self.run(move |store| {
            if pruned > 0 {
                store.prune_handled(before_ms)?;
            }
            store.fold_log();
            Ok(())
        })
        .await?;
        Ok(pruned)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.run(|store| store.check()).await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wake
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The writer thread: commits what queued up together, answers, then runs the queries.
fn writer(mut store: Store, mut ops: mpsc::Receiver<Op>, wake: &Wakeups) {
    // This cycle's appends, committed on their own; then the rest of its work.
    let mut arrivals = Work::default();
    let mut work = Work::default();
    let mut appended: Vec<(Reply<Appended>, Option<Arc<Mailbox>>)> = Vec::new();
    let mut completed: Vec<Slot<Vec<Completed>>> = Vec::new();
    let mut renewed: Vec<Reply<Vec<Claim>>> = Vec::new();
    let mut claimed: Vec<Slot<Vec<Claimed>>> = Vec::new();
    let mut settled: Vec<Settled> = Vec::new();
    let mut queries: Vec<Job> = Vec::new();
    let mut close: Option<oneshot::Sender<()>> = None;
    let mut to_wake = ToWake::default();
    while let Some(first) = ops.blocking_recv() {
        let mut next = Some(first);
        while let Some(op) = next.take().or_else(|| ops.try_recv().ok()) {
            match op {
                Op::Append(delivery, reply, mailbox) => {
                    arrivals.appends.push(delivery);
                    appended.push((reply, mailbox));
                }
                Op::Complete(completions, reply) => {
                    work.completions.push(completions);
                    completed.push(Slot::Alone(reply));
                }
                Op::Renew(claims, lease, reply) => {
                    work.renewals.push((claims, lease));
                    renewed.push(reply);
                }
                Op::Claim(request, reply) => {
                    work.claims.push(request);
                    claimed.push(Slot::Alone(reply));
                }
                Op::Settle(completions, request, reply) => {
                    // The claims come after every outcome of the transaction: they see the
                    // rooms these outcomes unblock.
                    work.completions.push(completions);
                    completed.push(Slot::Settle(settled.len()));
                    work.claims.push(request);
                    claimed.push(Slot::Settle(settled.len()));
                    settled.push(Settled { completed: None, reply: Some(reply) });
                }
                Op::Run(query) => queries.push(query),
                Op::Close(done) => close = Some(done),
            }
            if arrivals.appends.len() >= MAX_BATCH || close.is_some() {
                break;
            }
        }
        // The deliveries first, in a transaction of their own, answered once it is fsynced; then
        // the dispatcher's outcomes, renewals and claims (which see those deliveries) in a second
        // one, without an fsync. Together the two would keep the acknowledgements waiting for
        // the dispatcher's half of the SQL too.
        if !arrivals.is_empty() {
            let started = Instant::now();
            let result = store.commit(&arrivals);
            crate::metrics::inbox_commit(arrivals.appends.len(), started.elapsed(), result.is_ok());
            match result {
                Ok(answers) => {
                    // Due at receipt plus its hold, on the wall clock (see `Store::commit`): one
                    // wake-up now if any is due, and one per millisecond the others come due in.
                    let now = crate::clock::now_ms();
                    let (mut due_now, mut last) = (false, None);
                    for (delivery, answer) in arrivals.appends.iter().zip(&answers.appended) {
                        if !matches!(answer, Appended::New(_)) {
                            continue;
                        }
                        let due = delivery.received_at_ms.saturating_add(crate::clock::millis(delivery.hold));
                        if due <= now {
                            due_now = true;
                        } else if last != Some(due) {
                            wake.wake_after(Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
                            last = Some(due);
                        }
                    }
                    if due_now {
                        wake.wake();
                    }
                    for ((reply, mailbox), answer) in appended.drain(..).zip(answers.appended) {
                        to_wake.post(mailbox.as_ref(), Answer(reply, Ok(answer)));
                    }
                }
                Err(error) => {
                    for (reply, mailbox) in appended.drain(..) {
                        to_wake.post(mailbox.as_ref(), Answer(reply, Err(error.clone())));
                    }
                }
            }
            to_wake.wake_all();
            arrivals.appends.clear();
        }
        if !work.is_empty() {
            match store.commit(&work) {
                Ok(answers) => {
                    for (slot, answer) in completed.drain(..).zip(answers.completed) {
                        match slot {
                            Slot::Alone(reply) => drop(reply.send(Ok(answer))),
                            Slot::Settle(i) => settled[i].completed = Some(answer),
                        }
                    }
                    for (slot, answer) in claimed.drain(..).zip(answers.claimed) {
                        match slot {
                            Slot::Alone(reply) => drop(reply.send(Ok(answer))),
                            Slot::Settle(i) => settled[i].answer(answer),
                        }
                    }
                    for (reply, answer) in renewed.drain(..).zip(answers.lost) {
                        let _ = reply.send(Ok(answer));
                    }
                    settled.clear();
                }
                Err(error) => {
                    fail(&mut completed, &error);
                    fail(&mut claimed, &error);
                    for reply in renewed.drain(..) {
                        let _ = reply.send(Err(error.clone()));
                    }
                    for reply in settled.drain(..).filter_map(|s| s.reply) {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            work.completions.clear();
            work.renewals.clear();
            work.claims.clear();
        }
        for query in queries.drain(..) {
            query(&mut store);
        }
        if let Some(done) = close.take() {
            store.close();
            // The file and the data directory's lock are let go of before the answer.
            drop(store);
            let _ = done.send(());
            // Dropping the receiver fails whatever is still queued, and every later call.
            return;
        }
    }
}

/// Where the answer to an outcome or a claim goes.
enum Slot<T> {
    Alone(Reply<T>),
    /// Half of an [`Op::Settle`]: its index among the cycle's settlements.
    Settle(usize),
}

/// An [`Op::Settle`] waiting for both its answers.
struct Settled {
    completed: Option<Vec<Completed>>,
    reply: Option<Reply<(Vec<Completed>, Vec<Claimed>)>>,
}

impl Settled {
    fn answer(&mut self, claimed: Vec<Claimed>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Ok((self.completed.take().unwrap_or_default(), claimed)));
        }
    }
}

/// Fails the answers that wait alone (a settlement is failed once, through its own reply).
fn fail<T>(slots: &mut Vec<Slot<T>>, error: &StoreError) {
    for slot in slots.drain(..) {
        if let Slot::Alone(reply) = slot {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{Kind, Outcome, State};

    use crate::inbox::test_delivery as delivery;

    /// Runs `test` on a new inbox in a directory of its own (given too), on a runtime of its own.
    fn with_inbox(test: impl AsyncFnOnce(SqliteInbox, &Path)) {
        let dir = tempfile::tempdir().unwrap();
        let inbox = SqliteInbox::open(dir.path(), "me").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test(inbox, dir.path()));
    }

    /// The writer thread held in a query ([`hold_writer`]).
    struct Held<F> {
        /// The query: done once released.
        busy: F,
        /// Answers once the writer is inside it: what is queued from then on goes into its next
        /// cycle.
        inside: oneshot::Receiver<()>,
        release: std::sync::mpsc::Sender<()>,
    }

    /// Holds the writer thread in a query until `release` is sent (30 s at most).
    fn hold_writer(inbox: &SqliteInbox) -> Held<impl Future<Output = Result<(), StoreError>> + '_> {
        let (entered, inside) = oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = inbox.run(move |_| {
            let _ = entered.send(());
            let _ = held.recv_timeout(Duration::from_secs(30));
            Ok(())
        });
        Held { busy, inside, release }
    }

    #[test]
    fn deliveries_arriving_while_a_large_backlog_is_pruned_are_committed_between_its_batches() {
        with_inbox(async |inbox, _| {
            let numbered = |n: u32| {
                let mut d = delivery(0, "unused");
                d.room = None;
                d.signature[..4].copy_from_slice(&n.to_be_bytes());
                d
            };
            // Five batches of pruning, handled a moment ago.
            let backlog = 4 * PRUNE_BATCH as u32 + 1;
            futures_util::future::try_join_all((0..backlog).map(|n| inbox.append(numbered(n)))).await.unwrap();
            let request = ClaimRequest { limit: backlog as usize, lease: Duration::from_secs(30), max_attempts: 3 };
            let claimed = inbox.claim(request).await.unwrap();
            let done: Vec<Completion> = claimed
                .iter()
                .map(|c| Completion { claim: c.claim, kind: Kind::Fallback, outcome: Outcome::Done })
                .collect();
            assert!(inbox.complete(&done).await.unwrap().iter().all(|c| *c == Completed::Recorded));
            tokio::time::sleep(Duration::from_millis(2)).await;

            // Deliveries keep arriving, one at a time, while the backlog goes.
            let pruning = std::cell::Cell::new(true);
            let (pruned, arrived_meanwhile) = tokio::join!(
                async {
                    let pruned = inbox.prune(Duration::ZERO).await.unwrap();
                    pruning.set(false);
                    pruned
                },
                async {
                    for (arrived, n) in (backlog..).enumerate() {
                        assert!(matches!(inbox.append(numbered(n)).await.unwrap(), Appended::New(_)));
                        if !pruning.get() {
                            return arrived as u64;
                        }
                    }
                    unreachable!()
                }
            );
            assert_eq!(pruned, backlog as usize);
            // Were the batches one writer query, only the first delivery (queued with it) would go
            // before them all (checked: 1).
            assert!(arrived_meanwhile >= 3, "{arrived_meanwhile} deliveries committed while 5 batches were pruned");
            let left = inbox.stats().await.unwrap();
            assert_eq!((left.done, left.pending), (0, arrived_meanwhile + 1));
            inbox.close().await;
        });
    }

    #[test]
    fn an_outcome_and_the_claim_of_the_next_in_its_room_commit_together_or_not_at_all() {
        with_inbox(async |inbox, dir| {
            for n in 1..=3 {
                inbox.append(delivery(n, "a")).await.unwrap();
            }
            let request = ClaimRequest { limit: 1, lease: Duration::from_secs(30), max_attempts: 3 };
            let first = inbox.claim(request).await.unwrap().remove(0);
            let done = |c: &Claimed| Completion { claim: c.claim, kind: Kind::Fallback, outcome: Outcome::Done };
            let (completed, next) = inbox.complete_and_claim(&[done(&first)], request).await.unwrap();
            assert_eq!(completed, [Completed::Recorded]);
            assert_eq!(next.iter().map(|c| c.claim.id).collect::<Vec<_>>(), [2], "the room's next, in the same commit");

            // A commit that fails records neither the outcome nor the claim.
            let file = dir.join(FILE_NAME);
            let mut permissions = std::fs::metadata(&file).unwrap().permissions();
            permissions.set_readonly(true);
            std::fs::set_permissions(&file, permissions.clone()).unwrap();
            assert!(inbox.complete_and_claim(&[done(&next[0])], request).await.is_err());
            #[allow(clippy::permissions_set_readonly_false)]
            permissions.set_readonly(false);
            std::fs::set_permissions(&file, permissions).unwrap();
            let second = inbox.get(2).await.unwrap().unwrap();
            assert_eq!((second.state, second.claimed_by.as_deref()), (State::Pending, Some("me")));
            assert_eq!(inbox.get(3).await.unwrap().unwrap().claimed_by, None);
            inbox.close().await;
        });
    }

    #[test]
    fn deliveries_are_stored_and_answered_whatever_becomes_of_the_outcomes_queued_beside_them() {
        with_inbox(async |inbox, _| {
            inbox.append(delivery(1, "a")).await.unwrap();
            let request = ClaimRequest { limit: 1, lease: Duration::from_secs(30), max_attempts: 3 };
            let [claimed] = &inbox.claim(request).await.unwrap()[..] else { panic!("claimed") };
            let done = Completion { claim: claimed.claim, kind: Kind::Fallback, outcome: Outcome::Done };
            // The file refuses the outcome.
            inbox
                .run(|store| {
                    store
                        .execute_batch(
                            "CREATE TRIGGER fail AFTER UPDATE OF state ON deliveries
                             BEGIN SELECT RAISE(ABORT, 'refused'); END",
                        )
                        .map_err(|e| StoreError::unavailable(e.to_string()))
                })
                .await
                .unwrap();
            // The writer is held in a query while the outcome and a new delivery queue: its next
            // cycle takes both.
            let Held { busy, inside, release } = hold_writer(&inbox);
            let queued = async {
                inside.await.unwrap();
                let complete = tokio::spawn({
                    let inbox = inbox.clone();
                    async move { inbox.complete(&[done]).await }
                });
                let append = tokio::spawn({
                    let inbox = inbox.clone();
                    async move { inbox.append(delivery(2, "b")).await }
                });
                while inbox.ops.capacity() > inbox.ops.max_capacity() - 2 {
                    tokio::task::yield_now().await;
                }
                release.send(()).unwrap();
                (complete.await.unwrap(), append.await.unwrap())
            };
            let (busy, (completed, appended)) = tokio::join!(busy, queued);
            busy.unwrap();
            assert!(completed.is_err(), "the outcome was refused: {completed:?}");
            let Ok(Appended::New(id)) = appended else { panic!("the delivery was stored: {appended:?}") };
            assert_eq!(inbox.get(id).await.unwrap().map(|d| d.state), Some(State::Pending));
            inbox.close().await;
        });
    }

    #[test]
    fn the_inbox_is_counted_while_its_writer_is_busy() {
        with_inbox(async |inbox, _| {
            for n in 1..=3 {
                inbox.append(delivery(n, "a")).await.unwrap();
            }
            // The writer thread stays in a query until the count has answered.
            let Held { busy, release, .. } = hold_writer(&inbox);
            let count = async {
                let depth = tokio::time::timeout(Duration::from_secs(10), inbox.depth()).await;
                release.send(()).unwrap();
                depth
            };
            let (busy, depth) = tokio::join!(busy, count);
            busy.unwrap();
            let depth = depth.expect("the count waited for the writer").unwrap();
            assert_eq!((depth.pending, depth.dead), (3, 0));
            inbox.close().await;
        });
    }
}
