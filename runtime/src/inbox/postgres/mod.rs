//! The inbox on PostgreSQL, shared by several replicas of the receiver.
//!
//! - **Its own runtime.** actix runs a single-threaded runtime per HTTP worker, and a database
//!   connection belongs to the runtime that made it: the pool lives on a runtime of its own
//!   (one thread), and the inbox's methods hand their work to it.
//! - **Group commit.** Appends that arrive while a commit runs go into the next one (a small
//!   batch waits [`LINGER`] for more while other replicas announce commits, so that replicas
//!   sharing a load commit as seldom as one alone; `bench/results/2026-12-06-b.md`): one
//!   multi-row `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`, rows sorted by their
//!   unique key, in a transaction that commits (`synchronous_commit=on`, whatever the server's
//!   default) before any of them is acknowledged. A retry that another replica is committing
//!   waits for that commit, then is a duplicate. Its statements (the rooms, the rows, the heads,
//!   the claim) are sent together: a batch without duplicates is three round trips with `BEGIN`
//!   and `COMMIT`.
//! - **Rooms in the provider's order.** A room's deliveries run by `ord` (their `creationDate`),
//!   ties by `room_seq`: a transaction that adds to a room first locks the room's row (rooms
//!   sorted, so batches never deadlock) and numbers its deliveries from it, in the order they
//!   were committed, that is acknowledged, whichever replica took them. A room's head is set
//!   as its first delivery is stored (the room has none pending), or by [`PROMOTE`], always
//!   under that lock. A replica frozen inside such a transaction holds its rooms for 5 s at
//!   most ([`SESSION_SETTINGS`]).
//! - **Claims** lock the due heads with `FOR UPDATE SKIP LOCKED` and set a lease on the
//!   database's clock (`now()`), never a replica's; outcomes and renewals count only for the
//!   claim that holds the delivery (fencing). A replica that stops renewing loses its claims
//!   once the lease runs out, and another replica takes them.
//! - **Claimed as stored.** While the dispatcher has free handler slots ([`Inbox::offer`]), the
//!   transaction that stores a batch also claims what it stored that is due at once (the same
//!   claim, narrowed to their keys, sent with the insert), and the claims go to the dispatcher
//!   when it commits: such a delivery waits for no wake-up and no transaction of the
//!   dispatcher's, and is announced to no other replica. When held deliveries (the reorder
//!   window, a retry's wait) came due and the dispatcher has not looked yet, the same
//!   transaction claims whatever is due and unclaimed (it takes over no claim), into half the
//!   free slots: they wait for the next commit, not for the dispatcher's turn in progress
//!   (`bench/results/2026-12-06-g.md`). The rest is announced and claimed by whichever
//!   dispatcher looks first.
//! - **A dispatcher's turn in three round trips** (`BEGIN`, the work, `COMMIT`). A claim is one
//!   statement (`WITH … FOR UPDATE SKIP LOCKED` feeding the `UPDATE` that takes the rows). The
//!   locks of a turn's rooms, its outcomes however many, the rooms' next heads and the claim
//!   are sent together (pipelined): the server runs them in the order sent, the outcomes in the
//!   order of their ids as renewals lock them (rows locked in two orders could deadlock), and
//!   the claim sees the heads the outcomes moved on; a turn's handled deliveries, when they are
//!   all it records, in one statement. A room's events sent at once are handled a turn apart,
//!   so each round trip a turn saves shortens their wait (`bench/results/2026-12-07-h.md`).
//! - **Planned once.** The engine's transactions run every statement on one plan per
//!   connection, by index ([`PIN`]): planned for each call's parameters, they spent as long
//!   being planned as running.
//!
//! Here the commit engine (appends, claims, outcomes, renewals); beside it, as in the SQLite
//! inbox: reaching the database and its errors in words (`connect.rs`), the CLI's queries
//! (`admin.rs`), pruning (`prune.rs`) and readiness (`ready.rs`).

mod admin;
mod connect;
mod notify;
mod prune;
mod ready;
mod schema;

pub(crate) use connect::reason;
use connect::{connection, describe, failed, patiently};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, PoisonError};
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub use schema::VERSION as SCHEMA_VERSION;

use super::{
    Appended, Attempt, Claim, ClaimRequest, Claimed, Completed, Completion, Counts, Depth, Handed, Inbox, Kind,
    Lateness, Later, NewDelivery, Offer, Outcome, Query, Selection, State, Stats, StoreError, Stored, TakenOver,
    Wakeups,
};
use crate::clock::millis;

/// Milliseconds since the epoch, on the database's clock: as the transaction began.
const NOW_MS: &str = "(extract(epoch from now()) * 1000)::bigint";
/// The same, as the statement reads it.
const CLOCK_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
/// What every connection of the inbox runs with, whatever the server's defaults:
/// - `synchronous_commit=on`: an acknowledged delivery is on the server's disk (and its
///   synchronous standbys');
/// - `idle_in_transaction_session_timeout`: a replica frozen in the middle of a transaction
///   (SIGSTOP, a paused VM) holds the rows it locked, its rooms among them, and every other
///   replica's appends to those rooms wait for it; the server ends such a session after 5 s
///   of silence, its transaction rolled back (nothing of it was acknowledged). Our
///   transactions never wait between statements for anything but the database.
pub const SESSION_SETTINGS: &str = "-c synchronous_commit=on -c idle_in_transaction_session_timeout=5s";
/// Most appends committed in one transaction.
const MAX_BATCH: usize = 1024;
/// A batch smaller than this that arrives while the appender is busy, and other replicas
/// announce commits, waits [`LINGER`] for more.
const LINGER_BELOW: usize = 32;
/// How long a small batch waits for more while the appender is busy.
const LINGER: Duration = Duration::from_millis(2);
/// The least time between the starts of a dispatcher's turns while each has little to do.
const TURN_GAP: Duration = Duration::from_millis(2);
/// Connections in the pool: the appender, the dispatcher, and the rest (readiness, the CLI).
const POOL_SIZE: usize = 8;
/// Connections a replica opens at most: its pool, and the one that listens ([`notify`]).
const CONNECTIONS: usize = POOL_SIZE + 1;

/// The columns a [`Stored`] is read from, by name ([`stored`]).
const COLUMNS: &str = "id, event, state, kind, attempts, received_at, COALESCE(queued_at, received_at) AS queued_at, \
                       timestamp, timestamp_ms, room, recording, created, \
                       late_id, late_event, late_created, signature, body, last_error, owner, \
                       (extract(epoch from lease_until) * 1000)::bigint AS lease_until_ms, done_at, \
                       history::text AS history, due_at";

/// [`COLUMNS`] of a claimed row (`d`).
const CLAIMED_COLUMNS: &str = "d.id, d.event, d.state, d.kind, d.attempts, d.received_at, \
                               COALESCE(d.queued_at, d.received_at) AS queued_at, d.timestamp, d.timestamp_ms, \
                               d.room, d.recording, d.created, d.late_id, d.late_event, d.late_created, \
                               d.signature, d.body, d.last_error, d.owner, \
                               (extract(epoch from d.lease_until) * 1000)::bigint AS lease_until_ms, d.done_at, \
                               d.history::text AS history, d.due_at";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The PostgreSQL inbox (cheap to clone).
#[derive(Clone)]
pub struct PgInbox {
    pool: Pool,
    runtime: tokio::runtime::Handle,
    appends: mpsc::Sender<(NewDelivery, Reply<Appended>)>,
    /// Who claims deliveries through this inbox.
    owner: Arc<str>,
    /// Where it is, without a password.
    target: Arc<str>,
    /// Woken by this replica's commits and every replica's announcements ([`notify`]).
    wake: Arc<Wakeups>,
    /// Announces to every replica what a commit stored: when it comes due, in ms from now.
    announce: mpsc::UnboundedSender<Vec<u64>>,
    /// Whether other replicas announce commits too ([`Inbox::turn_gap`]).
    peers: Arc<notify::Peers>,
    /// The dispatcher's offer, the latest: the appender claims into its free slots ([`Inbox::offer`]).
    offer: Offered,
    /// The database could not be reached: the next operation first records that it is
    /// reachable again ([`REACHABLE_AGAIN`]).
    away: Arc<std::sync::atomic::AtomicBool>,
    /// Ends the inbox's runtime, and its thread to join, until [`Inbox::close`].
    running: Running,
}

/// The dispatcher's offer, shared with the appender.
type Offered = Arc<std::sync::RwLock<Option<Arc<Offer>>>>;

/// What ends the inbox's runtime, and its thread to join; `None` once closed.
type Running = Arc<std::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>>>;

/// Recorded by a replica that could not use the database and now can, before anything else
/// it does: no claim is taken over until a full lease after it (see [`CLAIM`]).
const REACHABLE_AGAIN: &str =
    "INSERT INTO meta (key, value) VALUES ('reachable_since', (extract(epoch from now()) * 1000)::bigint)
     ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, excluded.value)";

impl PgInbox {
    /// Connects to `url` (`postgres://user:password@host/db?sslmode=...`), creates or upgrades
    /// the tables, and claims deliveries as `owner`.
    pub fn connect(url: &str, owner: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::invalid("--database-url is not a PostgreSQL URL (postgres://user@host/database)").caused_by(e)
        })?;
        let target = describe(&config);
        let options = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        config.options(format!("{options}{SESSION_SETTINGS}"));
        // `sslmode` in the URL decides (`disable`, `prefer` (the default), `require`). As with
        // libpq's `require`, the connection is encrypted but the server's certificate is not
        // checked: put the database on a network you trust, or behind a verifying proxy.
        let tls = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()
            .map_err(|e| StoreError::invalid("cannot set up TLS").caused_by(e))?;
        let tls = postgres_native_tls::MakeTlsConnector::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("inbox-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::unavailable("cannot start the inbox's runtime").caused_by(e))?;
        let handle = runtime.handle().clone();
        // The runtime lives until the inbox is closed: its thread parks when idle.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("inbox-postgres".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                drop(runtime);
            })
            .map_err(|e| StoreError::unavailable("cannot start the inbox's thread").caused_by(e))?;
        let running: Running = Arc::new(std::sync::Mutex::new(Some((stop, thread))));
        let pool = {
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(Duration::from_secs(5)))
                .wait_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::invalid("cannot set up the connection pool").caused_by(e))?
        };
        let migrated = {
            let pool = pool.clone();
            let target = target.clone();
            handle.block_on(async move {
                let mut client = patiently(&pool, &target).await?;
                schema::migrate(&mut client).await
            })
        };
        if let Err(e) = migrated {
            stop_runtime(&running);
            return Err(StoreError { context: format!("{target}: {}", e.context), ..e });
        }
        let (appends, queue) = mpsc::channel(MAX_BATCH * 8);
        let wake = Arc::new(Wakeups::default());
        let (announce, announcements) = mpsc::unbounded_channel();
        let peers = Arc::new(notify::Peers::new());
        let offer = Offered::default();
        let claims = Claims { owner: owner.into(), offer: offer.clone() };
        handle.spawn(appender(
            pool.clone(),
            target.clone(),
            queue,
            wake.clone(),
            announce.clone(),
            peers.clone(),
            claims,
        ));
        handle.spawn(notify::announcer(pool.clone(), announcements, peers.clone()));
        handle.spawn(notify::listener(config, tls, wake.clone(), peers.clone()));
        let away = Arc::default();
        Ok(Self {
            pool,
            runtime: handle,
            appends,
            owner: owner.into(),
            target: target.into(),
            wake,
            announce,
            peers,
            offer,
            away,
            running,
        })
    }

    /// Runs `work` with a connection, on the inbox's runtime.
    async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Client, Arc<str>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        use std::sync::atomic::Ordering;
        let (pool, owner, target, away) =
            (self.pool.clone(), self.owner.clone(), self.target.clone(), self.away.clone());
        let task = self.runtime.spawn(async move {
            let client = connection(&pool, &target).await?;
            if away.load(Ordering::Relaxed) {
                client.execute(REACHABLE_AGAIN, &[]).await.map_err(failed)?;
                away.store(false, Ordering::Relaxed);
            }
            work(client, owner).await
        });
        let result = task.await.map_err(|e| StoreError::unavailable("the inbox's task failed").caused_by(e))?;
        // Only a database out of reach: one that refused a statement (a lock timeout, a
        // permission) was there all along, and its claims' owners could renew them.
        if result.as_ref().is_err_and(|e| e.unreachable) {
            self.away.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Ends the inbox's runtime and waits for its thread (an inbox that failed to open).
fn stop_runtime(running: &Running) {
    if let Some((stop, thread)) = running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        let _ = stop.send(());
        let _ = thread.join();
    }
}

/// Who the appender claims for, once the dispatcher has made its offer.
struct Claims {
    owner: Arc<str>,
    offer: Offered,
}

/// Collects appends and commits them in batches; claims what it stores into the dispatcher's
/// free slots, in the same transaction, and hands the claims over.
async fn appender(
    pool: Pool,
    target: String,
    mut queue: mpsc::Receiver<(NewDelivery, Reply<Appended>)>,
    wake: Arc<Wakeups>,
    announce: mpsc::UnboundedSender<Vec<u64>>,
    peers: Arc<notify::Peers>,
    claims: Claims,
) {
    let mut batch = Vec::new();
    let mut committed: Option<std::time::Instant> = None;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Busy (the last commit just ended) with a small batch beside other replicas: wait a
        // moment for more, so that replicas sharing a load commit in batches as large as one
        // replica alone would. Alone, what arrives during a commit makes the next batch.
        if batch.len() < LINGER_BELOW && committed.is_some_and(|at| at.elapsed() < LINGER) && peers.recently() {
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH
                && let Ok(more) = queue.try_recv()
            {
                batch.push(more);
            }
        }
        let (deliveries, replies): (Vec<NewDelivery>, Vec<Reply<Appended>>) = batch.drain(..).unzip();
        // Slots for what comes due at once, if the dispatcher has them to spare.
        let offer = claims.offer.read().unwrap_or_else(PoisonError::into_inner).clone();
        let offer = offer.as_deref().filter(|offer| !offer.handed.is_closed());
        // And, when held deliveries came due that the dispatcher has not looked for yet, half of
        // the free slots for whatever is due.
        let held_due = wake.due();
        let taken = offer.map_or(0, |offer| {
            let fresh = deliveries.iter().filter(|d| d.hold.is_zero()).count();
            offer.slots.take(if held_due { fresh + offer.slots.free().div_ceil(2) } else { fresh })
        });
        let claiming = offer
            .filter(|_| taken > 0)
            .map(|offer| (&*claims.owner, ClaimRequest { limit: taken, ..offer.request }, held_due));
        let started = std::time::Instant::now();
        let result = match connection(&pool, &target).await {
            Ok(mut client) => insert(&mut client, &deliveries, claiming).await,
            Err(e) => Err(e),
        };
        crate::metrics::inbox_commit(deliveries.len(), started.elapsed(), result.is_ok());
        committed = Some(std::time::Instant::now());
        match result {
            Ok(Inserted { answers, due, claimed }) => {
                for &after in &due {
                    wake.wake_after(Duration::from_millis(after));
                }
                if !due.is_empty() {
                    let _ = announce.send(due.into_iter().collect());
                }
                // The slots no claim took are free again before anyone hears of the commit.
                if let Some(offer) = offer {
                    offer.slots.give(taken - claimed.len());
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
                if let Some(offer) = offer
                    && !claimed.is_empty()
                {
                    hand_over(&pool, &target, &claims.owner, offer, Handed { claimed, asked: started });
                }
            }
            Err(error) => {
                if let Some(offer) = offer {
                    offer.slots.give(taken);
                }
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Hands claims made while storing to the dispatcher; one that has stopped gets none, and they
/// are given back (pending again, the attempt not counted), else they would wait out their lease.
fn hand_over(pool: &Pool, target: &str, owner: &Arc<str>, offer: &Offer, handed: Handed) {
    let Err(mpsc::error::SendError(Handed { claimed, .. })) = offer.handed.send(handed) else { return };
    offer.slots.give(claimed.len());
    let (pool, target, owner) = (pool.clone(), target.to_owned(), owner.clone());
    let back: Vec<Completion> = claimed
        .into_iter()
        .map(|c| Completion { claim: c.claim, kind: c.delivery.kind, outcome: Outcome::Interrupted })
        .collect();
    tokio::spawn(async move {
        let given_back = async {
            let mut client = connection(&pool, &target).await?;
            turn(&mut client, &owner, &back, None).await
        };
        if let Err(e) = given_back.await {
            log::warn!("cannot give back {} claim(s) the stopped dispatcher did not take: {e}", back.len());
        }
    });
}

/// What a batch's transaction did: one answer per delivery, in order; when the new ones that
/// no claim took come due (in ms from the end of the insert, on the database's clock: 0 for
/// those due already, else a wake-up at that time after the commit is never early); and what
/// it claimed.
struct Inserted {
    answers: Vec<Appended>,
    due: std::collections::BTreeSet<u64>,
    claimed: Vec<Claimed>,
}

/// Stores a batch in one transaction: rooms locked in order and numbered, rows inserted in key
/// order, heads set, and, when `claiming`, due heads claimed as the dispatcher's claims are:
/// those the batch stored, or (its flag set) any that nobody holds.
async fn insert(
    client: &mut Client,
    batch: &[NewDelivery],
    claiming: Option<(&str, ClaimRequest, bool)>,
) -> Result<Inserted, StoreError> {
    let tx = client.transaction().await.map_err(failed)?;
    let Batch { ids, due, claimed } = pinned(&tx, store(&tx, batch, claiming)).await?;
    tx.commit().await.map_err(failed)?;
    let taken: std::collections::HashSet<i64> = claimed.iter().map(|c| c.claim.id).collect();
    let due = due.into_iter().filter(|(id, _)| !taken.contains(id)).map(|(_, after)| after).collect();
    // A key that appears twice in one batch is new for its first copy only.
    let mut answered: std::collections::HashSet<(i64, [u8; 32])> = std::collections::HashSet::new();
    let answers = batch
        .iter()
        .map(|d| {
            let key = (d.timestamp_ms, d.signature);
            let (id, new) = *ids.get(&key).ok_or_else(|| StoreError::unavailable("a stored delivery vanished"))?;
            Ok(if new && answered.insert(key) { Appended::New(id) } else { Appended::Duplicate(id) })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Inserted { answers, due, claimed })
}

/// What [`store`] did in its transaction: each delivery's id by key, and whether it inserted it;
/// the new ones with when they come due (as [`Inserted`]'s); and what it claimed.
struct Batch {
    ids: HashMap<(i64, [u8; 32]), (i64, bool)>,
    due: Vec<(i64, u64)>,
    claimed: Vec<Claimed>,
}

/// Locks the rooms `$1` (sorted, no room twice), made if need be, and advances each by `$2`
/// deliveries: the [`INSERT`] after it numbers them back from there (a replay advances them by
/// none, and numbers its deliveries itself).
static ADD_TO_ROOMS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO rooms AS r (room, last_seq, touched_at)
             SELECT room, added, {NOW_MS} FROM unnest($1::text[], $2::bigint[]) AS t(room, added) ORDER BY room
             ON CONFLICT (room) DO UPDATE SET last_seq = r.last_seq + excluded.last_seq, touched_at = excluded.touched_at"
    )
});

/// [`insert`]'s statements.
async fn store(
    tx: &Transaction<'_>,
    batch: &[NewDelivery],
    claiming: Option<(&str, ClaimRequest, bool)>,
) -> Result<Batch, StoreError> {
    // Each room's row, locked (rooms in order: batches never deadlock) and advanced by the
    // number of this batch's deliveries in it, in one statement ([`ADD_TO_ROOMS`]): they are
    // numbered from there.
    let mut counts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for room in batch.iter().filter_map(|d| d.room.as_deref()) {
        *counts.entry(room).or_default() += 1;
    }
    let rooms: Vec<&str> = counts.keys().copied().collect();
    let added: Vec<i64> = counts.values().copied().collect();
    // Numbered in arrival order, back from the room's last number ([`INSERT`]); inserted in key
    // order.
    let behind_it: Vec<Option<i64>> = batch
        .iter()
        .map(|d| {
            d.room.as_deref().map(|room| {
                let left = counts.get_mut(room).expect("every room of the batch is counted");
                *left -= 1;
                *left
            })
        })
        .collect();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        (batch[a].timestamp_ms, batch[a].signature).cmp(&(batch[b].timestamp_ms, batch[b].signature))
    });
    let timestamp_ms: Vec<i64> = order.iter().map(|&i| batch[i].timestamp_ms).collect();
    let signature: Vec<&[u8]> = order.iter().map(|&i| &batch[i].signature[..]).collect();
    let timestamp: Vec<&str> = order.iter().map(|&i| batch[i].timestamp.as_str()).collect();
    let event: Vec<Option<&str>> = order.iter().map(|&i| batch[i].event.as_deref()).collect();
    let kind: Vec<&str> = order.iter().map(|&i| batch[i].kind.as_str()).collect();
    let room: Vec<Option<&str>> = order.iter().map(|&i| batch[i].room.as_deref()).collect();
    let behind: Vec<Option<i64>> = order.iter().map(|&i| behind_it[i]).collect();
    let body: Vec<&[u8]> = order.iter().map(|&i| &batch[i].body[..]).collect();
    let received_at: Vec<i64> = order.iter().map(|&i| batch[i].received_at_ms).collect();
    // Only a room's deliveries are ordered.
    let ord: Vec<Option<i64>> = order.iter().map(|&i| batch[i].room.as_ref().map(|_| batch[i].order())).collect();
    let created: Vec<Option<i64>> = order.iter().map(|&i| batch[i].created_us).collect();
    let recording: Vec<Option<&str>> = order.iter().map(|&i| batch[i].recording.as_deref()).collect();
    let hold: Vec<i64> = order.iter().map(|&i| millis(batch[i].hold)).collect();
    // Each room's first delivery of the batch, in the room's order: stored as its head when the
    // room has no other pending delivery.
    let mut firsts: HashMap<&str, usize> = HashMap::new();
    for (i, d) in batch.iter().enumerate() {
        if let Some(room) = d.room.as_deref() {
            let first = firsts.entry(room).or_insert(i);
            // Ties go to the earlier arrival, numbered first.
            if d.order() < batch[*first].order() {
                *first = i;
            }
        }
    }
    let first: Vec<bool> =
        order.iter().map(|&i| batch[i].room.as_deref().is_some_and(|room| firsts[room] == i)).collect();
    // What this batch stores that comes due at once, by key, when the transaction claims it.
    let (fresh_ms, fresh_signature): (Vec<i64>, Vec<&[u8]>) =
        batch.iter().filter(|d| d.hold.is_zero()).map(|d| (d.timestamp_ms, &d.signature[..])).unzip();
    let heads = match claiming {
        // Whatever is due that nobody holds, when held deliveries came due.
        Some((_, _, true)) => Some(Heads::Unclaimed),
        Some((_, _, false)) if !fresh_ms.is_empty() => {
            Some(Heads::Stored { timestamp_ms: &fresh_ms, signature: &fresh_signature })
        }
        _ => None,
    };
    // Prepared first (once per connection): a statement prepared on the way would be sent after
    // the ones behind it.
    let rooms_statement = tx.prepare_cached(&ADD_TO_ROOMS).await.map_err(failed)?;
    let insert_statement = tx.prepare_cached(&INSERT).await.map_err(failed)?;
    if !rooms.is_empty() {
        tx.prepare_cached(&PROMOTE).await.map_err(failed)?;
    }
    if let Some(heads) = heads {
        tx.prepare_cached(heads.sql()).await.map_err(failed)?;
    }
    // The rooms, the rows, the rooms' heads and the claim, sent together (pipelined): the server
    // runs them in this order, each seeing what the one before changed (and, a statement of its
    // own, what the transactions it waited for to lock the rooms committed).
    let numbered = async {
        if rooms.is_empty() { Ok(0) } else { tx.execute(&rooms_statement, &[&rooms, &added]).await.map_err(failed) }
    };
    let insert = async {
        tx.query(
            &insert_statement,
            &[
                &timestamp_ms,
                &signature,
                &timestamp,
                &event,
                &kind,
                &room,
                &behind,
                &body,
                &received_at,
                &ord,
                &created,
                &recording,
                &hold,
                &first,
            ],
        )
        .await
        .map_err(failed)
    };
    let heads_set = async { if rooms.is_empty() { Ok(()) } else { promote(tx, &rooms).await } };
    let claimed = async {
        match (claiming, heads) {
            (Some((owner, request, _)), Some(heads)) => claim(tx, owner, &request, heads).await,
            _ => Ok(Vec::new()),
        }
    };
    let (_, inserted, (), claimed) = futures_util::future::try_join4(numbered, insert, heads_set, claimed).await?;
    // By key: the delivery's id, and whether this batch inserted it.
    let key = |row: &Row| -> (i64, [u8; 32]) { (row.get(1), row.get::<_, &[u8]>(2).try_into().unwrap_or([0; 32])) };
    let due: Vec<(i64, u64)> =
        inserted.iter().map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(3)).unwrap_or(0))).collect();
    let mut ids: std::collections::HashMap<(i64, [u8; 32]), (i64, bool)> =
        inserted.iter().map(|r| (key(r), (r.get(0), true))).collect();
    if ids.len() < batch.len() {
        for row in query(
            tx,
            "SELECT id, timestamp_ms, signature FROM deliveries
              WHERE (timestamp_ms, signature) IN (SELECT * FROM unnest($1::bigint[], $2::bytea[]))",
            &[&timestamp_ms, &signature],
        )
        .await?
        {
            ids.entry(key(&row)).or_insert((row.get(0), false));
        }
    }
    Ok(Batch { ids, due, claimed })
}

/// A batch's rows, in key order (`$1`, `$2`), a delivery already stored skipped; returns each
/// new row's id and key, and in how many milliseconds it comes due (0: at once). A delivery of
/// a room is numbered `$7` before the room's last number ([`ADD_TO_ROOMS`] just advanced it:
/// how many of the batch's deliveries of its room arrived after it). A room's
/// first delivery of the batch (`$14`) is stored as its head when the room has no pending
/// delivery (the caller holds the rooms' locks): [`PROMOTE`] then finds it in place, and the
/// row is not written a second time (`bench/results/2026-12-07-f.md`).
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO deliveries (timestamp_ms, signature, timestamp, event, kind, room, room_seq, body,
                                         received_at, ord, created, recording, due_at, head, queued_at)
                 SELECT t.timestamp_ms, t.signature, t.timestamp, t.event, t.kind, t.room,
                        (SELECT last_seq FROM rooms WHERE room = t.room) - t.behind, t.body,
                        t.received_at, t.ord, t.created, t.recording, {NOW_MS} + t.hold,
                        t.room IS NULL OR (t.first AND pending.id IS NULL),
                        {CLOCK_MS}
                   FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[],
                               $7::bigint[], $8::bytea[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[],
                               $13::bigint[], $14::bool[])
                        AS t(timestamp_ms, signature, timestamp, event, kind, room, behind, body, received_at,
                             ord, created, recording, hold, first)
                        LEFT JOIN LATERAL (SELECT id FROM deliveries
                                            WHERE t.first AND room = t.room AND state = 'pending' LIMIT 1) pending
                               ON true
                 ON CONFLICT (timestamp_ms, signature) DO NOTHING
                 RETURNING id, timestamp_ms, signature,
                           CASE WHEN due_at <= {CLOCK_MS} THEN 0 ELSE due_at - {CLOCK_MS} + 1 END"
    )
});

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

// Statements are prepared once per connection and kept (`prepare_cached`): a round trip and a
// parse fewer for each.

async fn query(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(failed)?;
    tx.query(&statement, params).await.map_err(failed)
}

async fn execute(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(failed)?;
    tx.execute(&statement, params).await.map_err(failed)
}

/// Each room of `$1` whose first pending delivery (by `ord`, then `room_seq`) is not its head
/// makes it its head, unless a claim holds the head it has (the caller holds the rooms'
/// locks): a room without a head gets one, and one whose head waits unclaimed (in the reorder
/// window, or for a retry) gives its place to an earlier event that arrived meanwhile. A head
/// about to give its place is locked and looked at again: a claim that took it meanwhile (claims
/// lock heads, not rooms) has committed its owner by then, and the head stays (else both would
/// run); heads that stay are not locked. Per room,
/// its first pending delivery through the (room, ord, room_seq) index and its head through its
/// own: a plan that stays cheap however long the rooms' backlogs and whatever the plan cache
/// chose.
static PROMOTE: LazyLock<String> = LazyLock::new(|| promote_sql("unnest($1::text[])"));

/// [`PROMOTE`] for the rooms of the deliveries `$1` (ids), for a caller that sends it in the
/// pipeline that locks those rooms, before it has their names.
static PROMOTE_OF: LazyLock<String> = LazyLock::new(|| {
    promote_sql("(SELECT DISTINCT room FROM deliveries WHERE id = ANY($1::bigint[]) AND room IS NOT NULL)")
});

/// [`PROMOTE`] over the rooms `rooms` (a set of one text column).
fn promote_sql(rooms: &str) -> String {
    format!(
        "WITH seen AS (
           SELECT first.id AS head, current.id AS was
             FROM {rooms} AS r(room)
             CROSS JOIN LATERAL (SELECT id FROM deliveries WHERE room = r.room AND state = 'pending'
                                  ORDER BY ord, room_seq LIMIT 1) first
             LEFT JOIN LATERAL (SELECT id, owner FROM deliveries
                                 WHERE room = r.room AND head LIMIT 1) current ON true
            WHERE current.id IS NULL OR (current.id <> first.id AND current.owner IS NULL)),
         moved AS (
           SELECT head, was FROM seen
            WHERE was IS NULL
               OR EXISTS (SELECT 1 FROM (SELECT owner FROM deliveries WHERE id = seen.was FOR UPDATE) l
                           WHERE l.owner IS NULL))
         UPDATE deliveries d SET head = (d.id = moved.head)
           FROM moved
          WHERE d.id IN (moved.head, moved.was)"
    )
}

/// Each room's first pending delivery is its head unless a claim holds another (the caller
/// holds the rooms' locks).
async fn promote(tx: &Transaction<'_>, rooms: &[&str]) -> Result<(), StoreError> {
    execute(tx, &PROMOTE, &[&rooms]).await?;
    Ok(())
}

/// What every transaction of the commit engine runs with (`SET LOCAL`: until it ends): its
/// statements on one plan per connection, made with sequential scans off. Left to itself,
/// PostgreSQL planned them afresh at every call, which took about as long as running them: a
/// generic plan reckons 10 rows for an array parameter and looks dearer than a custom plan for a
/// call's few (`bench/results/2026-12-06-h.md`, `2026-12-07-c.md`). Every statement here finds
/// its rows by index; made while the table is young, a generic plan would scan it whole as it
/// grows.
const PIN: [&str; 2] = ["SET LOCAL plan_cache_mode = force_generic_plan", "SET LOCAL enable_seqscan = off"];

/// Runs `work`, the statements of the transaction `tx` begun just before, behind the settings
/// of [`PIN`], sent ahead of its first statement without waiting for their answers (pipelined).
async fn pinned<T>(tx: &Transaction<'_>, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let (first, second) =
        (tx.prepare_cached(PIN[0]).await.map_err(failed)?, tx.prepare_cached(PIN[1]).await.map_err(failed)?);
    let pin = |statement| async move { tx.execute(statement, &[]).await.map_err(failed) };
    let (_, _, done) = futures_util::future::try_join3(pin(&first), pin(&second), work).await?;
    Ok(done)
}

/// A [`Stored`] from the [`COLUMNS`] of `row`, read by name.
fn stored(row: &Row) -> Stored {
    let text = |name: &str| row.get::<_, String>(name);
    let signature: Vec<u8> = row.get("signature");
    let claimed_by: Option<String> = row.get("owner");
    let state = State::parse(&text("state")).unwrap_or(State::Pending);
    Stored {
        id: row.get("id"),
        event: row.get("event"),
        state,
        kind: Kind::parse(&text("kind")).unwrap_or(Kind::Fallback),
        attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or(0),
        received_at: row.get("received_at"),
        queued_at: row.get("queued_at"),
        timestamp: text("timestamp"),
        timestamp_ms: row.get("timestamp_ms"),
        room: row.get("room"),
        recording: row.get("recording"),
        created_us: row.get("created"),
        late: row.get::<_, Option<i64>>("late_id").map(|id| Later {
            id,
            event: row.get("late_event"),
            created_us: row.get::<_, Option<i64>>("late_created").unwrap_or(0),
        }),
        signature: signature.try_into().unwrap_or([0; 32]),
        body: row.get("body"),
        last_error: row.get("last_error"),
        claimed_until: if claimed_by.is_some() { row.get("lease_until_ms") } else { None },
        claimed_by,
        done_at: row.get("done_at"),
        due_at: if state == State::Pending { row.get("due_at") } else { None },
        history: Attempt::parse_history(row.get("history")),
    }
}

/// Claims up to `$1` due heads, oldest first, in one statement: locks them (skipping those
/// another replica is locking) and takes those with an attempt left, as `$2` for `$3` ms; one
/// whose last claim ran out on its last attempt (`$4`: the replica that ran it stopped) is left
/// as it is, to be buried. Each row: whether it was taken, its fence, then [`CLAIMED_COLUMNS`].
///
/// Another replica's claim is taken over only once its lease ran out **and** its owner has had
/// a full lease of a reachable database to renew it or record its outcome: a lease that ran out
/// while the database was down (restarted: the server's start time; or unreachable: the time
/// a replica found it again, [`REACHABLE_AGAIN`]) is not a sign that its owner is gone, and
/// its handler may have finished meanwhile.
///
/// The later events of a claimed delivery's room and recording already handled are looked up
/// by key, one delivery at a time (`LATERAL … LIMIT 1`): joined plainly, the planner chose to
/// read the whole `handled` table (a row per room and recording ever handled) once per claim
/// (`bench/results/2026-12-06-f.md`).
static CLAIM: LazyLock<String> = LazyLock::new(|| claim_sql(""));

/// [`CLAIM`] of the deliveries of keys `$5`, `$6` alone: what a batch stored, claimed by its own
/// transaction.
static CLAIM_STORED: LazyLock<String> =
    LazyLock::new(|| claim_sql("(timestamp_ms, signature) IN (SELECT * FROM unnest($5::bigint[], $6::bytea[])) AND"));

/// [`CLAIM`] of the due heads nobody holds a claim on: never a takeover.
static CLAIM_UNCLAIMED: LazyLock<String> = LazyLock::new(|| claim_sql("owner IS NULL AND"));

/// Which due heads a claim takes.
#[derive(Clone, Copy)]
enum Heads<'a> {
    /// Any, claims that ran out taken over: the dispatcher's claims, made after this replica
    /// recorded that it reaches the database again ([`REACHABLE_AGAIN`]).
    Any,
    /// Those nobody holds a claim on: a batch's transaction claiming what came due (the
    /// appender records no reachability, so it takes nothing over).
    Unclaimed,
    /// Those of these keys, just stored by the same transaction (or, a duplicate, before it).
    Stored { timestamp_ms: &'a [i64], signature: &'a [&'a [u8]] },
}

impl Heads<'_> {
    fn sql(&self) -> &'static str {
        match self {
            Heads::Any => &CLAIM,
            Heads::Unclaimed => &CLAIM_UNCLAIMED,
            Heads::Stored { .. } => &CLAIM_STORED,
        }
    }
}

/// [`CLAIM`], its due heads narrowed by `only` (a condition and `AND`, or nothing).
fn claim_sql(only: &str) -> String {
    format!(
        "WITH due AS (SELECT id, room, recording, created, attempts < $4 AS taken, owner AS was_owner,
                          {NOW_MS} - (extract(epoch from lease_until) * 1000)::bigint AS ran_out_ms
                     FROM deliveries
                   WHERE {only} head AND due_at <= {NOW_MS}
                     AND (owner IS NULL OR (lease_until <= now()
                          AND GREATEST(pg_postmaster_start_time(),
                                       to_timestamp(COALESCE((SELECT value FROM meta WHERE key = 'reachable_since'), 0) / 1000.0))
                              <= now() - make_interval(secs => $3::float8 / 1000)))
                   ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
     UPDATE deliveries d
        SET owner = CASE WHEN due.taken THEN $2 ELSE d.owner END,
            fence = d.fence + due.taken::int,
            attempts = d.attempts + due.taken::int,
            lease_until = CASE WHEN due.taken THEN now() + make_interval(secs => $3::float8 / 1000)
                               ELSE d.lease_until END,
            late_id = CASE WHEN due.taken THEN in_room.id ELSE d.late_id END,
            late_event = CASE WHEN due.taken THEN in_room.event ELSE d.late_event END,
            late_created = CASE WHEN due.taken THEN in_room.created ELSE d.late_created END,
            claimed_at = CASE WHEN due.taken THEN {NOW_MS} ELSE d.claimed_at END
       FROM due
            LEFT JOIN LATERAL (SELECT id, event, created FROM handled
                                WHERE room = due.room AND recording = '' AND created > due.created LIMIT 1) in_room
                   ON true
            LEFT JOIN LATERAL (SELECT id, event, created FROM handled
                                WHERE room = due.room AND recording = due.recording AND created > due.created
                                LIMIT 1) in_recording
                   ON true
      WHERE d.id = due.id
     RETURNING due.taken, due.was_owner, due.ran_out_ms, d.fence, {CLAIMED_COLUMNS}, in_recording.id AS recording_late_id,
               in_recording.event AS recording_late_event, in_recording.created AS recording_late_created"
    )
}

/// Claims due heads, oldest first, up to the request's limit, burying on the way those that
/// have no attempt left (their last claim ran out: the replica that ran it stopped); those of
/// `heads` alone (a batch's transaction buries none: it takes nothing over).
async fn claim(
    tx: &Transaction<'_>,
    owner: &str,
    request: &ClaimRequest,
    heads: Heads<'_>,
) -> Result<Vec<Claimed>, StoreError> {
    let mut claimed: Vec<Claimed> = Vec::new();
    let lease_ms = millis(request.lease) as f64;
    let max = i32::try_from(request.max_attempts).unwrap_or(i32::MAX);
    loop {
        let limit = i64::try_from(request.limit - claimed.len()).unwrap_or(i64::MAX);
        let due = match heads {
            Heads::Any | Heads::Unclaimed => query(tx, heads.sql(), &[&limit, &owner, &lease_ms, &max]).await?,
            Heads::Stored { timestamp_ms, signature } => {
                query(tx, heads.sql(), &[&limit, &owner, &lease_ms, &max, &timestamp_ms, &signature]).await?
            }
        };
        let (taken, spent): (Vec<&Row>, Vec<&Row>) = due.iter().partition(|r| r.get::<_, bool>("taken"));
        claimed.extend(taken.iter().map(|row| {
            let delivery = stored(row);
            let recording = row.get::<_, Option<i64>>("recording_late_id").map(|id| Later {
                id,
                event: row.get("recording_late_event"),
                created_us: row.get::<_, Option<i64>>("recording_late_created").unwrap_or(0),
            });
            let lateness = Lateness { room: delivery.late.clone(), recording };
            Claimed {
                claim: Claim { id: delivery.id, fence: row.get("fence") },
                attempt: delivery.attempts,
                delivery,
                lateness,
                took_over: row
                    .get::<_, Option<String>>("was_owner")
                    .map(|owner| TakenOver { owner, ran_out_ms: row.get::<_, Option<i64>>("ran_out_ms").unwrap_or(0) }),
            }
        }));
        // Burying may have unblocked rooms: look again for the places it took.
        let spent: Vec<(i64, Option<String>)> = spent.iter().map(|r| (r.get("id"), r.get("room"))).collect();
        if spent.is_empty()
            || claimed.len() >= request.limit
            || !matches!(heads, Heads::Any)
            || !bury(tx, &spent, request.max_attempts).await?
        {
            break;
        }
    }
    claimed.sort_by_key(|c| c.claim.id);
    Ok(claimed)
}

/// Dead, with why, and their rooms go on. A room whose row another transaction holds is left
/// for the next claim: waiting for it while holding these rows could deadlock.
/// Whether it buried any.
async fn bury(tx: &Transaction<'_>, spent: &[(i64, Option<String>)], max_attempts: u32) -> Result<bool, StoreError> {
    let mut rooms: Vec<String> = spent.iter().filter_map(|(_, room)| room.clone()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let locked: Vec<String> =
        query(tx, "SELECT room FROM rooms WHERE room = ANY($1) ORDER BY room FOR UPDATE SKIP LOCKED", &[&rooms])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let ids: Vec<i64> = spent
        .iter()
        .filter(|(_, room)| room.as_ref().is_none_or(|room| locked.contains(room)))
        .map(|(id, _)| *id)
        .collect();
    let error = crate::inbox::never_finished(max_attempts);
    execute(
        tx,
        &format!(
            "UPDATE deliveries SET state = 'dead', head = false, owner = NULL, lease_until = NULL,
                    done_at = {NOW_MS}, last_error = $2, {}
              WHERE id = ANY($1)",
            ended("unfinished", "NULL", "$2")
        ),
        &[&ids, &error],
    )
    .await?;
    let locked: Vec<&str> = locked.iter().map(String::as_str).collect();
    promote(tx, &locked).await?;
    Ok(!ids.is_empty())
}

/// A dispatcher's turn in one transaction: `completions` recorded, then, with a `request`, the
/// due heads claimed (they see the rooms the outcomes moved on), the claim sent with the
/// outcomes: three round trips in all with the transaction's `BEGIN` and `COMMIT`.
async fn turn(
    client: &mut Client,
    owner: &str,
    completions: &[Completion],
    request: Option<ClaimRequest>,
) -> Result<(Vec<Completed>, Vec<Claimed>), StoreError> {
    let tx = client.transaction().await.map_err(failed)?;
    let work = async {
        if request.is_some() {
            tx.prepare_cached(Heads::Any.sql()).await.map_err(failed)?;
        }
        let claimed = async {
            match request {
                Some(request) => claim(&tx, owner, &request, Heads::Any).await,
                None => Ok(Vec::new()),
            }
        };
        complete(&tx, owner, completions, claimed).await
    };
    let done = pinned(&tx, work).await?;
    tx.commit().await.map_err(failed)?;
    Ok(done)
}

/// Records outcomes for the claims that still hold their deliveries, then runs `then`.
///
/// One round trip whatever the batch (once its statements are prepared): the rooms locked, the
/// outcomes, the rooms' next heads and `then`'s first statement are sent together (pipelined:
/// each statement is sent without waiting for the answer to the one before, and the server runs
/// them in the order sent; `then` must send its first statement when first polled, its
/// statement prepared). The outcomes go in the order of their ids, as renewals lock them: the
/// two run at once, and rows locked in two orders could deadlock. A batch of handled deliveries
/// alone (the usual one) is recorded by one statement ([`DONE_ALL`]), any other one statement
/// an outcome.
async fn complete<T>(
    tx: &Transaction<'_>,
    owner: &str,
    batch: &[Completion],
    then: impl Future<Output = Result<T, StoreError>>,
) -> Result<(Vec<Completed>, T), StoreError> {
    if batch.is_empty() {
        return Ok((Vec::new(), then.await?));
    }
    let ids: Vec<i64> = batch.iter().map(|c| c.claim.id).collect();
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_unstable_by_key(|&i| batch[i].claim.id);
    // Prepared first (once per connection): a statement that had to be prepared on the way
    // would be sent after the ones behind it.
    let done_all = if batch.iter().all(|c| c.outcome == Outcome::Done) {
        Some(tx.prepare_cached(&DONE_ALL).await.map_err(failed)?)
    } else {
        None
    };
    let mut statements = HashMap::new();
    for c in batch.iter().filter(|_| done_all.is_none()) {
        if let std::collections::hash_map::Entry::Vacant(entry) = statements.entry(std::mem::discriminant(&c.outcome)) {
            entry.insert(tx.prepare_cached(&outcome_sql(&c.outcome)).await.map_err(failed)?);
        }
    }
    let lock_statement = tx.prepare_cached(LOCK_ROOMS_OF).await.map_err(failed)?;
    let promote_statement = tx.prepare_cached(&PROMOTE_OF).await.map_err(failed)?;
    let mark_statement = tx.prepare_cached(&MARK_HANDLED).await.map_err(failed)?;
    // First, the rooms' rows: every change of a room's head is made under its lock.
    let lock = async { tx.execute(&lock_statement, &[&ids]).await.map_err(failed) };
    let updates = async {
        if let Some(statement) = &done_all {
            let ids: Vec<i64> = order.iter().map(|&i| batch[i].claim.id).collect();
            let fences: Vec<i64> = order.iter().map(|&i| batch[i].claim.fence).collect();
            let kinds: Vec<&str> = order.iter().map(|&i| batch[i].kind.as_str()).collect();
            let rows = tx.query(statement, &[&ids, &fences, &owner, &kinds]).await.map_err(failed)?;
            let recorded: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
            Ok(ids.iter().map(|id| recorded.contains(id)).collect())
        } else {
            let each = order.iter().map(|&i| {
                let c = &batch[i];
                record(tx, &statements[&std::mem::discriminant(&c.outcome)], owner, c)
            });
            futures_util::future::try_join_all(each).await
        }
    };
    // After the outcomes (sent after them): the handled ones become their rooms' and recordings'
    // latest, if they are.
    let done: Vec<i64> = batch.iter().filter(|c| c.outcome == Outcome::Done).map(|c| c.claim.id).collect();
    let mark =
        async { if done.is_empty() { Ok(0) } else { tx.execute(&mark_statement, &[&done]).await.map_err(failed) } };
    // Each room's first pending delivery is its head: a room whose head is done or dead goes on;
    // in the others the head is still the first, and nothing changes.
    let promote = async { tx.execute(&promote_statement, &[&ids]).await.map_err(failed) };
    let (_, recorded, _, _, then) = futures_util::future::try_join5(lock, updates, mark, promote, then).await?;
    let mut answers = vec![Completed::Fenced; batch.len()];
    for (&i, recorded) in order.iter().zip(recorded) {
        if recorded {
            answers[i] = Completed::Recorded;
        }
    }
    Ok((answers, then))
}

/// Locks the rows of the rooms of the deliveries `$1` (ids), in the rooms' order, by their key:
/// joined, the planner read the whole table of rooms.
const LOCK_ROOMS_OF: &str = "SELECT room FROM rooms
                              WHERE room = ANY(ARRAY(SELECT room FROM deliveries WHERE id = ANY($1::bigint[])))
                              ORDER BY room FOR UPDATE";

/// The handled deliveries `$1` become their rooms' (recording '') and recordings' latest
/// handled events, each where it was created after what they had. They are read by id alone
/// (`MATERIALIZED`): planned without statistics, `state = 'done'` chose the index of every done
/// delivery, read whole each turn (`bench/results/2026-12-06-d.md`).
static MARK_HANDLED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO handled AS h (room, recording, id, event, created, done_at)
         WITH d AS MATERIALIZED (SELECT id, state, room, recording, event, created FROM deliveries WHERE id = ANY($1))
         SELECT DISTINCT ON (d.room, r.recording) d.room, r.recording, d.id, d.event, d.created, {NOW_MS}
           FROM d CROSS JOIN LATERAL (VALUES (''), (d.recording)) AS r(recording)
          WHERE d.state = 'done' AND d.room IS NOT NULL AND d.created IS NOT NULL
            AND r.recording IS NOT NULL
          ORDER BY d.room, r.recording, d.created DESC
         ON CONFLICT (room, recording) DO UPDATE
            SET id = excluded.id, event = excluded.event, created = excluded.created, done_at = excluded.done_at
          WHERE excluded.created >= h.created"
    )
});

/// Records the claims `$1` (ids, in order), `$2` (their fences), of owner `$3`, handled, each
/// with its kind (`$4`): [`outcome_sql`]'s `Done` for many rows, locked in the order of their
/// ids; returns the ids whose claims still held their deliveries. Each row is looked up by its
/// id: joined instead, the planner read every entry of the pending index, those of rows handled
/// since the last vacuum too (`bench/results/2026-12-07-c.md`).
static DONE_ALL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deliveries SET {}
           FROM (SELECT d.id AS held_id, c.kind AS new_kind
                   FROM unnest($1::bigint[], $2::bigint[], $4::text[]) AS c(id, fence, kind)
                   CROSS JOIN LATERAL (SELECT id FROM deliveries
                                        WHERE id = c.id AND fence = c.fence AND owner = $3 AND state = 'pending'
                                        FOR UPDATE) d) held
          WHERE id = held.held_id
          RETURNING id",
        handled("held.new_kind")
    )
});

/// The `SET` clause that records a handled delivery, of the kind `kind` (an SQL expression).
fn handled(kind: &str) -> String {
    format!(
        "state = 'done', head = false, owner = NULL, lease_until = NULL, kind = {kind}, last_error = NULL,
         done_at = {NOW_MS}, {}",
        ended_now("done", "NULL")
    )
}

/// The statement that records `outcome` for the claim `$1` (id), `$2` (fence), `$3` (owner).
fn outcome_sql(outcome: &Outcome) -> String {
    let held = "WHERE id = $1 AND fence = $2 AND owner = $3 AND state = 'pending'";
    match outcome {
        Outcome::Done => format!("UPDATE deliveries SET {} {held}", handled("$4")),
        Outcome::Retry { .. } => format!(
            "UPDATE deliveries SET owner = NULL, lease_until = NULL, kind = $4, last_error = $5,
                    due_at = {NOW_MS} + $6, {} {held}",
            ended_now("retry", "$5")
        ),
        Outcome::Dead { .. } => format!(
            "UPDATE deliveries SET state = 'dead', head = false, owner = NULL, lease_until = NULL,
                    kind = $4, last_error = $5, done_at = {NOW_MS}, {} {held}",
            ended_now("dead", "$5")
        ),
        Outcome::Interrupted => format!(
            "UPDATE deliveries SET owner = NULL, lease_until = NULL, attempts = attempts - 1, {} {held}",
            ended_now("interrupted", "NULL")
        ),
    }
}

/// The `SET` clause that adds the attempt ending now to the row's `history`: its outcome, and
/// its duration and error as SQL expressions (the claim's columns are read as they were before
/// the `UPDATE`).
fn ended(outcome: &str, duration: &str, error: &str) -> String {
    format!(
        "history = COALESCE(history, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
             'attempt', attempts, 'replica', owner, 'started_at', claimed_at, 'duration_ms', {duration},
             'outcome', '{outcome}'::text, 'error', {error}::text))"
    )
}

/// [`ended`] for an attempt that ends now: it lasted from its claim.
fn ended_now(outcome: &str, error: &str) -> String {
    ended(outcome, &format!("{NOW_MS} - claimed_at"), error)
}

/// Records one outcome with its statement (from [`outcome_sql`]): whether its claim still held
/// the delivery.
async fn record(
    tx: &Transaction<'_>,
    statement: &tokio_postgres::Statement,
    owner: &str,
    c: &Completion,
) -> Result<bool, StoreError> {
    let (id, fence, kind) = (c.claim.id, c.claim.fence, c.kind.as_str());
    let updated = match &c.outcome {
        Outcome::Done => tx.execute(statement, &[&id, &fence, &owner, &kind]).await,
        Outcome::Retry { after, error } => {
            tx.execute(statement, &[&id, &fence, &owner, &kind, error, &millis(*after)]).await
        }
        Outcome::Dead { error } => tx.execute(statement, &[&id, &fence, &owner, &kind, error]).await,
        Outcome::Interrupted => tx.execute(statement, &[&id, &fence, &owner]).await,
    };
    Ok(updated.map_err(failed)? == 1)
}

#[async_trait::async_trait]
impl Inbox for PgInbox {
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::unavailable("the inbox is closed");
        self.appends.send((delivery, tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>, StoreError> {
        self.run(move |mut client, owner| async move { Ok(turn(&mut client, &owner, &[], Some(request)).await?.1) })
            .await
    }

    async fn renew(&self, claims: &[Claim], lease: Duration) -> Result<Vec<Claim>, StoreError> {
        let claims = claims.to_vec();
        self.run(move |client, owner| async move {
            let ids: Vec<i64> = claims.iter().map(|c| c.id).collect();
            let fences: Vec<i64> = claims.iter().map(|c| c.fence).collect();
            let held: Vec<(i64, i64)> = client
                .query(
                    // Locked in the order of their ids, as outcomes lock them (see `complete`).
                    "UPDATE deliveries d SET lease_until = now() + make_interval(secs => $4::float8 / 1000)
                       FROM (SELECT d.id FROM deliveries d JOIN unnest($1::bigint[], $2::bigint[]) c(id, fence)
                                    ON d.id = c.id AND d.fence = c.fence
                              WHERE d.owner = $3 AND d.state = 'pending'
                              ORDER BY d.id FOR UPDATE OF d) held
                      WHERE d.id = held.id
                      RETURNING d.id, d.fence",
                    &[&ids, &fences, &&*owner, &(millis(lease) as f64)],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            // Lost: every claim but the ones renewed, under their own fence.
            Ok(claims.into_iter().filter(|c| !held.contains(&(c.id, c.fence))).collect())
        })
        .await
    }

    async fn complete(&self, completions: &[Completion]) -> Result<Vec<Completed>, StoreError> {
        let completions = completions.to_vec();
        self.run(move |mut client, owner| async move { Ok(turn(&mut client, &owner, &completions, None).await?.0) })
            .await
    }

    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: ClaimRequest,
    ) -> Result<(Vec<Completed>, Vec<Claimed>), StoreError> {
        let completions = completions.to_vec();
        self.run(move |mut client, owner| async move { turn(&mut client, &owner, &completions, Some(request)).await })
            .await
    }

    async fn replay(&self, selection: Selection) -> Result<usize, StoreError> {
        admin::replay(self, selection).await
    }

    async fn search(&self, query: &Query) -> Result<Vec<Stored>, StoreError> {
        admin::search(self, query).await
    }

    async fn get(&self, id: i64) -> Result<Option<Stored>, StoreError> {
        admin::get(self, id).await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        admin::stats(self).await
    }

    async fn depth(&self) -> Result<Depth, StoreError> {
        self.run(|client, _| async move {
            let row = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending'),
                            (SELECT COUNT(*) FROM deliveries WHERE state = 'dead')",
                    &[],
                )
                .await
                .map_err(failed)?;
            let count = |i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            Ok(Depth { pending: count(0), dead: count(1) })
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        admin::counts(self).await
    }

    async fn prune(&self, retention: Duration) -> Result<usize, StoreError> {
        prune::prune(self, retention).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        ready::check(self).await
    }

    /// Closes the connections, ends the inbox's runtime and joins its thread.
    async fn close(&self) {
        self.pool.close();
        let running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((stop, thread)) = running {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wake
    }

    /// The appender claims what it stores, as far as the dispatcher's slots go: a delivery that
    /// comes due at once waits for no claim turn ([`Offer`]).
    fn offer(&self, offer: Offer) {
        *self.offer.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(offer));
    }

    /// Every replica is woken by every replica's commits: without a gap, each would take its
    /// turns as often as one alone, with a share of the deliveries in each. A replica that
    /// hears no other takes its turns at once.
    fn turn_gap(&self) -> Duration {
        if self.peers.recently() { TURN_GAP } else { Duration::ZERO }
    }

    fn describe(&self) -> String {
        self.target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` with the URL of a database of its own on the test server
    /// (`MEET_WEBHOOKS_TEST_DATABASE_URL`), dropped after it; skipped when there is no server and
    /// none is required (`MEET_WEBHOOKS_REQUIRE_POSTGRES`).
    fn with_database(test: impl FnOnce(&str) + std::panic::UnwindSafe) {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let admin = std::env::var("MEET_WEBHOOKS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin_runs = |sql: String| {
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await
            })
        };
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("mw_unit_{}_{count}", std::process::id());
        if let Err(e) = admin_runs(format!("CREATE DATABASE {name}")) {
            assert!(std::env::var_os("MEET_WEBHOOKS_REQUIRE_POSTGRES").is_none(), "PostgreSQL at {admin}: {e}");
            return eprintln!("skipped: no PostgreSQL at {admin} ({e})");
        }
        let base = admin.split('?').next().unwrap();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        let outcome = std::panic::catch_unwind(|| test(&url));
        admin_runs(format!("DROP DATABASE {name} WITH (FORCE)")).unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    use crate::inbox::test_delivery as delivery;

    /// The first column of every row `sql` returns.
    async fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        client: &Client,
        sql: &str,
    ) -> Result<Vec<T>, StoreError> {
        Ok(client.query(sql, &[]).await.map_err(failed)?.iter().map(|r| r.get(0)).collect())
    }

    #[test]
    fn a_room_s_first_delivery_is_stored_as_its_head_its_row_written_once_and_no_backlog_read() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            // A batch's rows updated by its own transaction, the rows it read, and the heads it
            // leaves (by key; those of rooms `backlog-…` left out). The server's counts for the
            // transaction may include the connection's earlier ones: read before and after.
            let store_counting = |batch: Vec<NewDelivery>| {
                inbox.run(move |mut client, _| async move {
                    let counts = "SELECT n_tup_upd, seq_tup_read + COALESCE(idx_tup_fetch, 0)
                                    FROM pg_stat_xact_user_tables WHERE relname = 'deliveries'";
                    let tx = client.transaction().await.map_err(failed)?;
                    let before = tx.query_one(counts, &[]).await.map_err(failed)?;
                    pinned(&tx, store(&tx, &batch, None)).await?;
                    let after = tx.query_one(counts, &[]).await.map_err(failed)?;
                    tx.commit().await.map_err(failed)?;
                    let heads: Vec<i64> = column(
                        &client,
                        "SELECT timestamp_ms FROM deliveries WHERE head AND COALESCE(room, '') NOT LIKE 'backlog-%'
                          ORDER BY timestamp_ms",
                    )
                    .await?;
                    let delta = |i: usize| after.get::<_, i64>(i) - before.get::<_, i64>(i);
                    Ok((delta(0), delta(1), heads))
                })
            };
            // A backlog: 200 rooms with a pending delivery each, held (a reorder window), and
            // the table analyzed, as the pruning round does.
            let backlog = (0..200u8)
                .map(|n| NewDelivery {
                    timestamp_ms: 1_000 + i64::from(n),
                    hold: Duration::from_secs(60),
                    ..delivery(n, &format!("backlog-{n}"))
                })
                .collect();
            runtime.block_on(store_counting(backlog)).unwrap();
            let analyze =
                |client: Client, _| async move { client.batch_execute("ANALYZE deliveries").await.map_err(failed) };
            runtime.block_on(inbox.run(analyze)).unwrap();
            let created = |n: u8, room: &str, at_us: i64| NewDelivery { created_us: Some(at_us), ..delivery(n, room) };
            let roomless = NewDelivery { room: None, ..delivery(4, "") };
            // Room a's two events, the later created first; room b's one; one without a room.
            let first = vec![created(1, "a", 2_000), created(2, "a", 1_000), created(3, "b", 1_000), roomless];
            let (updated, read, heads) = runtime.block_on(store_counting(first)).unwrap();
            assert_eq!(heads, [2, 3, 4], "each room's earliest, and the one without a room");
            assert_eq!(updated, 0, "every head was stored as such");
            // Each room looked up by key, not the backlog read.
            assert!(read < 50, "{read} rows read to store 4 deliveries beside a backlog of 200");
            // An event of room a created before its head, which waits unclaimed: it takes the
            // head's place ([`PROMOTE`]: the one row it inserts and the one it replaces, updated).
            let (updated, _, heads) = runtime.block_on(store_counting(vec![created(5, "a", 500)])).unwrap();
            assert_eq!(heads, [3, 4, 5]);
            assert_eq!(updated, 2, "the new head and the one it replaced");
            runtime.block_on(inbox.close());
        });
    }

    #[test]
    fn a_turn_s_claim_takes_the_next_delivery_of_the_room_its_outcome_moved_on() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                for n in 1..=3 {
                    inbox.append(delivery(n, "a")).await.unwrap();
                }
                let request = ClaimRequest { limit: 1, lease: Duration::from_secs(30), max_attempts: 3 };
                let done = |c: &Claimed| Completion { claim: c.claim, kind: Kind::Fallback, outcome: Outcome::Done };
                let mut claimed = inbox.claim(request).await.unwrap();
                let mut order = Vec::new();
                // Each turn sends its claim with its outcome: the claim must see the head it moved.
                while let Some(c) = claimed.pop() {
                    order.push(c.delivery.timestamp_ms);
                    let (completed, next) = inbox.complete_and_claim(&[done(&c)], request).await.unwrap();
                    assert_eq!(completed, [Completed::Recorded]);
                    claimed = next;
                }
                assert_eq!(order, [1, 2, 3], "each in the turn that recorded the one before it");
                inbox.close().await;
            });
        });
    }

    #[test]
    fn a_room_s_ties_go_in_arrival_order_within_a_batch_and_across_batches() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let store_one = |batch: Vec<NewDelivery>| {
                runtime.block_on(inbox.run(move |mut client, _| async move {
                    let tx = client.transaction().await.map_err(failed)?;
                    pinned(&tx, store(&tx, &batch, None)).await?;
                    tx.commit().await.map_err(failed)
                }))
            };
            // Created in the same microsecond; keys (and so the order of insertion) unlike
            // the order of arrival.
            let tied = |n: u8| NewDelivery { created_us: Some(1_000), ..delivery(n, "t") };
            store_one(vec![tied(9), tied(7), tied(8), delivery(1, "other")]).unwrap();
            store_one(vec![tied(6), tied(5)]).unwrap();
            let order = runtime
                .block_on(inbox.run(|client, _| async move {
                    column::<i64>(
                        &client,
                        "SELECT timestamp_ms FROM deliveries WHERE room = 't' ORDER BY ord, room_seq",
                    )
                    .await
                }))
                .unwrap();
            assert_eq!(order, [9, 7, 8, 6, 5], "the room's order: as they arrived");
            runtime.block_on(inbox.close());
        });
    }

    #[test]
    fn a_room_with_nothing_pending_for_a_retention_is_pruned_and_starts_again_when_it_comes_back() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let sql = |sql: &'static str| {
                runtime.block_on(
                    inbox.run(move |client, _| async move { client.batch_execute(sql).await.map_err(failed) }),
                )
            };
            let strings = |sql: &'static str| {
                runtime.block_on(inbox.run(move |client, _| async move { column::<String>(&client, sql).await }))
            };
            let rooms = || strings("SELECT room || ':' || last_seq FROM rooms ORDER BY room");
            // Rooms last added to an hour ago: one with nothing pending, one with a delivery
            // pending, one whose delivery is dead; and one added to now, with nothing pending.
            sql("INSERT INTO rooms (room, last_seq, touched_at) VALUES ('idle', 7, 0), ('waiting', 3, 0), ('gone', 5, 0),
                        ('recent', 2, (extract(epoch from now()) * 1000)::bigint);
                 INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, room, room_seq, body, received_at,
                                         due_at, ord, state, head)
                 VALUES ('\\x01', '1', 1, 'fallback', 'waiting', 3, '', 0, 0, 0, 'pending', true),
                        ('\\x02', '2', 2, 'fallback', 'gone', 5, '', 0, 0, 0, 'dead', false)")
            .unwrap();
            runtime.block_on(inbox.prune(Duration::from_secs(600))).unwrap();
            assert_eq!(rooms().unwrap(), ["recent:2", "waiting:3"], "those with nothing pending for 10 minutes went");
            // A pruned room that comes back is numbered from the start, its delivery its head.
            let store_one = |batch: Vec<NewDelivery>| {
                inbox.run(move |mut client, _| async move {
                    let tx = client.transaction().await.map_err(failed)?;
                    pinned(&tx, store(&tx, &batch, None)).await?;
                    tx.commit().await.map_err(failed)
                })
            };
            runtime.block_on(store_one(vec![delivery(3, "idle")])).unwrap();
            // A dead delivery of a pruned room, replayed, makes its room again.
            assert_eq!(runtime.block_on(inbox.replay(Selection::Dead)).unwrap(), 1);
            assert_eq!(rooms().unwrap(), ["gone:1", "idle:1", "recent:2", "waiting:3"]);
            let heads = strings("SELECT room || ':' || room_seq FROM deliveries WHERE head ORDER BY room");
            assert_eq!(heads.unwrap(), ["gone:1", "idle:1", "waiting:3"]);
            runtime.block_on(inbox.close());
        });
    }

    #[test]
    fn an_analysis_keeps_ten_values_a_column_and_none_of_bodies_or_histories() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (kept, wide, unset) = runtime
                .block_on(inbox.run(|client, _| async move {
                    // 5,000 deliveries of 500 rooms, each with a value of its own in most columns,
                    // and as many rooms' latest handled events.
                    client
                        .batch_execute(
                            "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, room, room_seq, body,
                                                     received_at, due_at, ord, created, history)
                             SELECT decode(md5(g::text), 'hex'), g::text, g, 'fallback', 'r' || g % 500, g,
                                    convert_to('{\"n\":' || g || '}', 'UTF8'), g, g, g, g, jsonb_build_array(g)
                               FROM generate_series(1, 5000) g;
                             INSERT INTO handled (room, recording, id, event, created, done_at)
                             SELECT 'r' || g, '', g, 'e' || g, g, g FROM generate_series(1, 5000) g;
                             ANALYZE deliveries, handled",
                        )
                        .await
                        .map_err(failed)?;
                    // The most values any column keeps: its common values, or its histogram's bounds.
                    let kept: i32 = client
                        .query_one(
                            "SELECT max(GREATEST(cardinality(most_common_vals::text::text[]),
                                                 cardinality(histogram_bounds::text::text[])))::int
                               FROM pg_stats WHERE tablename IN ('deliveries', 'handled')",
                            &[],
                        )
                        .await
                        .map_err(failed)?
                        .get(0);
                    let wide: Vec<String> = column(
                        &client,
                        "SELECT attname::text FROM pg_stats WHERE tablename = 'deliveries' AND attname IN ('body', 'history')",
                    )
                    .await?;
                    // A column added later without a target of its own would read 30,000 rows.
                    let unset: Vec<String> = column(
                        &client,
                        "SELECT attrelid::regclass::text || '.' || attname FROM pg_attribute
                          WHERE attrelid IN ('deliveries'::regclass, 'handled'::regclass)
                            AND attnum > 0 AND NOT attisdropped AND attstattarget < 0",
                    )
                    .await?;
                    Ok((kept, wide, unset))
                }))
                .unwrap();
            // At the server's default (100) a column of 5,000 values keeps 101 bounds.
            assert!(kept <= 11, "a column keeps {kept} values");
            assert!(wide.is_empty(), "analyzed: {wide:?}");
            assert!(unset.is_empty(), "at the server's default target: {unset:?}");
            runtime.block_on(inbox.close());
        });
    }

    #[test]
    fn the_engines_statements_run_on_one_plan_for_a_connection_and_leave_its_settings_as_they_were() {
        with_database(|url| {
            let inbox = PgInbox::connect(url, "a").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let setting = "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')";
            let settings = |row: Row| (row.get::<_, String>(0), row.get::<_, String>(1));
            let request = ClaimRequest { limit: 10, lease: Duration::from_secs(30), max_attempts: 8 };
            let (custom, handled, connection, after) = runtime
                .block_on(inbox.run(move |mut client, owner| async move {
                    let connection = settings(client.query_one(setting, &[]).await.map_err(failed)?);
                    let (mut after, mut handled) = (Vec::new(), 0);
                    // Each turn as the appender and the dispatcher take theirs: two deliveries of
                    // a room stored and the first claimed as stored; its outcome recorded, which
                    // makes the second the room's head, claimed by the same turn; then its outcome.
                    for n in 0..8u8 {
                        let room = format!("room-{n}");
                        let batch = [delivery(2 * n + 1, &room), delivery(2 * n + 2, &room)];
                        let stored = insert(&mut client, &batch, Some((&owner, request, false))).await?;
                        let done = |claimed: &[Claimed]| -> Vec<Completion> {
                            claimed
                                .iter()
                                .map(|c| Completion { claim: c.claim, kind: c.delivery.kind, outcome: Outcome::Done })
                                .collect()
                        };
                        let (first, next) = turn(&mut client, &owner, &done(&stored.claimed), Some(request)).await?;
                        let (then, _) = turn(&mut client, &owner, &done(&next), None).await?;
                        handled += first.iter().chain(&then).filter(|r| **r == Completed::Recorded).count();
                        after.push(settings(client.query_one(setting, &[]).await.map_err(failed)?));
                    }
                    let custom: Vec<String> =
                        column(&client, "SELECT statement FROM pg_prepared_statements WHERE custom_plans > 0").await?;
                    Ok((custom, handled, connection, after))
                }))
                .unwrap();
            assert_eq!(handled, 16, "each turn handled both deliveries of its room");
            // Planned once, then run on that plan: never planned for a call's parameters (left to
            // itself, PostgreSQL plans each of the first five calls for its parameters).
            assert!(custom.is_empty(), "planned for a call's parameters: {custom:#?}");
            // The settings end with the transaction: the connection's other work is planned as always.
            assert!(after.iter().all(|s| *s == connection), "{after:?}, not the connection's {connection:?}");
            runtime.block_on(inbox.close());
        });
    }
}
