//! The durable inbox: a verified delivery is stored before it is acknowledged, and handled
//! from storage, once.
//!
//! ```text
//!  request path ──append──▶ ┌─────────────────┐ ◀──claim──── ┌────────────┐
//!   (200 once committed)    │  dyn Inbox      │ ◀─complete── │ dispatcher │──▶ WebhookHandler
//!                           │ (SQLite, or     │ ◀──renew──── │            │
//!  `inbox` CLI ─list/show/─▶│  PostgreSQL)    │ ──wake─────▶ └────────────┘
//!              replay/stats └─────────────────┘
//! ```
//!
//! [`Inbox`] is the one seam between the service and its storage. Every backend keeps these
//! promises, and the dispatcher relies on nothing else:
//!
//! - **Acknowledged means committed.** [`Inbox::append`] returns once the delivery is durable.
//!   The signature is the delivery's identity: the provider's retry of a stored delivery is
//!   [`Appended::Duplicate`], across restarts.
//! - **Claim before handling.** [`Inbox::claim`] hands out deliveries under a claim recorded in
//!   storage: its holder, a fencing token, and a lease that ends on the storage's clock. The
//!   attempt is counted when it is claimed, so a handler that kills the process uses up its
//!   attempts like one that fails, and ends dead. A delivery is never claimed while a claim
//!   on it is live, and the holder renews it until the outcome is committed.
//! - **Fenced outcomes.** [`Inbox::complete`] records an outcome only for the claim that
//!   holds the delivery; a late or repeated outcome (its lease ran out and the delivery was
//!   claimed again) changes nothing and is answered [`Completed::Fenced`]. An outcome whose lease
//!   ran out while nobody claimed the delivery again is recorded: it was handled once.
//! - **One room at a time, in the provider's order.** A delivery is claimable only while it is
//!   the first pending delivery of its room (`data.roomId`) by [`NewDelivery::order`]: the
//!   `creationDate` the provider wrote (arrival for a delivery without one), ties by arrival. A
//!   room's later events wait while an earlier one runs or waits for its retry; an earlier event
//!   that arrives while a later one waits unclaimed (in the reorder window, or for its retry)
//!   takes its place. A replayed delivery goes behind whatever of its room is pending.
//! - **Late is said.** A claim carries the latest event of its room (and of its recording)
//!   already handled, if it was created after the claimed one ([`Lateness`]): what a handler
//!   needs to ignore an update that arrives after its end.
//!
//! Together: each delivery is handled once while nothing crashes; a crash (or a lost lease)
//! hands the deliveries whose outcome was not committed to another attempt, which is at most
//! the dispatcher's `concurrency` deliveries.
//!
//! How a backend makes this fast is its own business: the SQLite one ([`sqlite`]) commits the
//! appends that queue together in one transaction on a writer thread, and the outcomes and
//! claims that queue together in the next; the PostgreSQL one (`postgres`, feature `postgres`), shared by several
//! replicas, batches appends into multi-row inserts and claims with `FOR UPDATE SKIP LOCKED`.

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
mod offer;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod wakeups;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::Serialize;

/// Implementations of [`Inbox`] use it: `#[meet_webhooks_runtime::inbox::async_trait]`.
pub use async_trait::async_trait;
pub use memory::MemoryInbox;
pub use offer::{Handed, Offer, Slots};
#[cfg(feature = "postgres")]
pub use postgres::PgInbox;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteInbox;
pub use wakeups::Wakeups;

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
    pub kind: Kind,
    /// `data.roomId`: deliveries of one room are handled one at a time, in [`Self::order`].
    pub room: Option<String>,
    /// `data.recordingId`, for recording events: whose later events make one late.
    pub recording: Option<String>,
    /// The body's `creationDate` (the provider's clock), in microseconds since the epoch.
    pub created_us: Option<i64>,
    /// As received (shares the request's buffer).
    pub body: Bytes,
    pub received_at_ms: i64,
    /// Not claimable until it has been stored this long (the reorder window): an earlier event
    /// that the provider is retrying has that long to arrive first and take its place.
    pub hold: Duration,
}

impl NewDelivery {
    /// Its place in its room (microseconds): its `creationDate`, or its arrival when it has
    /// none. Ties go by arrival.
    pub fn order(&self) -> i64 {
        self.created_us.unwrap_or(self.received_at_ms.saturating_mul(1000))
    }
}

/// A delivery of `room` for the inboxes' unit tests: its key and arrival from `n`, due at once.
#[cfg(test)]
pub(crate) fn test_delivery(n: u8, room: &str) -> NewDelivery {
    NewDelivery {
        signature: [n; 32],
        timestamp: n.to_string(),
        timestamp_ms: i64::from(n),
        event: None,
        kind: Kind::Fallback,
        room: Some(room.into()),
        body: "{}".into(),
        received_at_ms: i64::from(n),
        recording: None,
        created_us: None,
        hold: Duration::ZERO,
    }
}

/// A later event of the same room (or recording) that was handled before this delivery was
/// claimed: this one arrives late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Later {
    /// Its inbox id.
    pub id: i64,
    pub event: Option<String>,
    /// Its `creationDate`, in microseconds since the epoch.
    pub created_us: i64,
}

/// What a claim found handled already that was created after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lateness {
    /// The latest handled event of its room, if created after this one.
    pub room: Option<Later>,
    /// For a recording event, the latest handled event of its recording, if created after this one.
    pub recording: Option<Later>,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    New(i64),
    /// Already stored under this id: a retry of a delivery we have.
    Duplicate(i64),
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not handled yet: waiting, claimed by a handler, or waiting for a retry.
    Pending,
    /// Handled.
    Done,
    /// Out of attempts: kept until it is replayed.
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

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Done, Self::Dead].into_iter().find(|s| s.as_str() == text)
    }
}

/// Which handler method a delivery went to, as classified when it was last handled (or
/// received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Its typed webhook method.
    Typed,
    /// The fallback: an event, value or shape the spec does not know.
    Fallback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Typed => "typed",
            Self::Fallback => "fallback",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Typed, Self::Fallback].into_iter().find(|k| k.as_str() == text)
    }
}

/// A stored delivery, as the dispatcher and the CLI see it.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub id: i64,
    pub event: Option<String>,
    pub state: State,
    pub kind: Kind,
    /// Attempts so far, counted when each was claimed (reset by a replay).
    pub attempts: u32,
    pub received_at: i64,
    /// When it was stored, by the transaction whose commit acknowledged it, or queued again by a
    /// replay (ms, the storage's clock): its handler's lag is measured from here.
    pub queued_at: i64,
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub room: Option<String>,
    pub recording: Option<String>,
    /// The body's `creationDate`, in microseconds since the epoch (`None`: it has none usable,
    /// and its room holds it in arrival order).
    pub created_us: Option<i64>,
    /// Set when it was last claimed after a later event of its room had been handled.
    pub late: Option<Later>,
    #[serde(skip)]
    pub signature: [u8; 32],
    #[serde(skip)]
    pub body: Vec<u8>,
    pub last_error: Option<String>,
    /// Who holds a claim on it, and until when (ms, the storage's clock); the claim may have
    /// run out (its holder stopped) and is then taken by the next claim.
    pub claimed_by: Option<String>,
    pub claimed_until: Option<i64>,
    /// When a pending delivery may next be claimed, ms on the storage's clock: the end of its
    /// reorder window, or of its retry's wait (a room's later deliveries also wait for its
    /// head). `None` once it is done or dead.
    pub due_at: Option<i64>,
    /// When it was handled (done) or given up (dead), ms on the storage's clock.
    pub done_at: Option<i64>,
    /// Every attempt whose end the inbox saw, oldest first (replays included).
    pub history: Vec<Attempt>,
}

/// One attempt at a delivery, as the inbox recorded its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt since it arrived or was last replayed.
    pub attempt: u32,
    /// The replica whose claim ran it.
    pub replica: Option<String>,
    /// When it was claimed, that is when its handler started (ms, the storage's clock).
    pub started_at: Option<i64>,
    /// From its claim to its outcome (ms); `None` when it never finished.
    pub duration_ms: Option<i64>,
    /// What became of it: `done`, `retry`, `dead`, `interrupted` (a shutdown stopped it, the
    /// attempt given back) or `unfinished` (the process running it stopped).
    pub outcome: String,
    pub error: Option<String>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Attempt {
    /// The history a store keeps as JSON text (an array of attempts); what it cannot read is
    /// left out rather than failing the read of the delivery.
    pub(crate) fn parse_history(text: Option<&str>) -> Vec<Attempt> {
        text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }
}

/// Proof of a claim: the delivery and the fencing token its claim got. An outcome or a renewal
/// counts only while the delivery is still claimed under this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub id: i64,
    /// Grows with every claim of the delivery, replays included: never reused.
    pub fence: i64,
}

/// A claimed delivery, ready for its handler.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub claim: Claim,
    /// 1 for the first attempt (counted at claim time).
    pub attempt: u32,
    pub delivery: Stored,
    /// What of its room (and recording) was handled already although created after it.
    pub lateness: Lateness,
    /// The claim this one took over, if the delivery was claimed when it was taken.
    pub took_over: Option<TakenOver>,
}

/// A claim that ran out before its outcome was recorded (its holder stopped, froze or lost the
/// storage), as the claim that took its delivery over found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// Its holder: a replica's name.
    pub owner: String,
    /// How long before the takeover its lease ran out, ms on the storage's clock.
    pub ran_out_ms: i64,
}

impl TakenOver {
    /// The claim `stored` held when a claim took it at `now` (ms), taken off it; `None` if it
    /// held none.
    pub(crate) fn take(stored: &mut Stored, now: i64) -> Option<Self> {
        let owner = stored.claimed_by.take()?;
        Some(Self { owner, ran_out_ms: now.saturating_sub(stored.claimed_until.unwrap_or(now)) })
    }
}

/// What [`Inbox::claim`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest {
    /// At most this many deliveries.
    pub limit: usize,
    /// How long the claims last unless renewed.
    pub lease: Duration,
    /// A delivery whose last claim ran out on its last attempt (its handler never finished:
    /// the process died) is dead instead of claimed again.
    pub max_attempts: u32,
}

/// What became of one handler attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled.
    Done,
    /// Failed; claimable again after this long.
    Retry { after: Duration, error: String },
    /// Failed on its last attempt: kept until replayed.
    Dead { error: String },
    /// Stopped before it finished, by a shutdown: pending again, the attempt not counted.
    Interrupted,
}

/// One outcome, for the claim that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub claim: Claim,
    /// How the delivery was classified on this attempt.
    pub kind: Kind,
    pub outcome: Outcome,
}

/// Whether an outcome was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    Recorded,
    /// The claim no longer holds the delivery (its lease ran out, or the outcome was recorded
    /// already): nothing changed.
    Fenced,
}

/// Which deliveries `inbox list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    State(State),
    /// Those that matched no typed webhook.
    Fallback,
    All,
}

/// What the console and `inbox list` ask for: deliveries newest first, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub event: Option<String>,
    pub room: Option<String>,
    /// A recording id, or a delivery's id.
    pub text: Option<String>,
    /// Only deliveries stored before this id: the page after one that ended there.
    pub before: Option<i64>,
    pub limit: usize,
}

/// A value bound into the conditions of a [`Query`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

impl Query {
    /// The newest `limit` deliveries, whatever they are.
    pub fn newest(limit: usize) -> Self {
        Self { filter: Filter::All, event: None, room: None, text: None, before: None, limit }
    }

    /// The SQL conditions that select what it asks for (`TRUE` and more conditions joined by
    /// `AND`), and their values, written with `placeholder(n)` for the `n`th value (1-based).
    /// States are written as literals: only then can SQLite use its partial indexes (of pending,
    /// dead and fallback deliveries). The rest is read newest first until a page is found: at
    /// once for a room or an event of the last hours, the whole inbox for one that is not there.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn conditions(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<Value<'_>>) {
        let mut sql = String::from("TRUE");
        let mut values = Vec::new();
        let mut bind = |sql: &mut String, value| {
            values.push(value);
            *sql += &placeholder(values.len());
        };
        match self.filter {
            Filter::State(state) => sql += &format!(" AND state = '{}'", state.as_str()),
            Filter::Fallback => sql += " AND kind = 'fallback'",
            Filter::All => {}
        }
        if let Some(event) = &self.event {
            sql += " AND event = ";
            bind(&mut sql, Value::Text(event));
        }
        if let Some(room) = &self.room {
            sql += " AND room = ";
            bind(&mut sql, Value::Text(room));
        }
        if let Some(text) = &self.text {
            sql += " AND (recording = ";
            bind(&mut sql, Value::Text(text));
            if let Ok(id) = text.trim().parse::<i64>() {
                sql += " OR id = ";
                bind(&mut sql, Value::Int(id));
            }
            sql += ")";
        }
        if let Some(before) = self.before {
            sql += " AND id < ";
            bind(&mut sql, Value::Int(before));
        }
        (sql, values)
    }

    /// Whether `stored` is one it asks for (what [`Self::conditions`] select, as plain code).
    pub(crate) fn matches(&self, stored: &Stored) -> bool {
        let filtered = match self.filter {
            Filter::State(state) => stored.state == state,
            Filter::Fallback => stored.kind == Kind::Fallback,
            Filter::All => true,
        };
        let text = self.text.as_deref().is_none_or(|text| {
            stored.recording.as_deref() == Some(text) || text.trim().parse::<i64>().is_ok_and(|id| id == stored.id)
        });
        filtered
            && text
            && self.event.as_deref().is_none_or(|e| stored.event.as_deref() == Some(e))
            && self.room.as_deref().is_none_or(|r| stored.room.as_deref() == Some(r))
            && self.before.is_none_or(|before| stored.id < before)
    }
}

/// Which deliveries `inbox replay` hands to the handlers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    One(i64),
    Dead,
    Fallback,
}

/// `inbox stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub pending: u64,
    pub done: u64,
    pub dead: u64,
    /// Of all of those, how many matched no typed webhook.
    pub fallback: u64,
    pub oldest_pending_received_at: Option<i64>,
    /// Claims by holder (a claim whose lease ran out is counted until it is taken again).
    pub claimed_by: Vec<(String, u64)>,
}

/// How many deliveries wait: for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: u64,
    pub dead: u64,
}

/// What the console shows on each refresh: what waits, and who holds it. Cheap (read through
/// indexes of what waits, not the whole inbox), unlike [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub dead: u64,
    /// Deliveries that matched no typed webhook, whatever their state.
    pub fallback: u64,
    /// Claims by holder (a claim whose lease ran out is counted until it is taken again).
    pub claimed_by: Vec<(String, u64)>,
}

/// Why a delivery was buried: its last claim ran out on its last attempt (the process that
/// ran it stopped, or froze, mid-handler). One text for every inbox.
pub(crate) fn never_finished(max_attempts: u32) -> String {
    format!("its last attempt (of {max_attempts}) never finished: the process handling it stopped or lost its claim")
}

/// Why storage did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// It may work later: the storage is down, full, locked, read-only, or its file is gone.
    /// A delivery is answered 503 so that the provider retries; the dispatcher backs off.
    Unavailable,
    /// It cannot work as asked: a newer schema, another process owns the inbox, no such inbox.
    Invalid,
}

/// A storage error: its kind, what was being done, and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}{}", .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
pub struct StoreError {
    pub kind: ErrorKind,
    /// The storage could not be reached at all (rather than refusing what was asked).
    pub(crate) unreachable: bool,
    context: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Unavailable, unreachable: false, context: context.into(), source: None }
    }

    pub fn invalid(context: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Invalid, unreachable: false, context: context.into(), source: None }
    }

    /// Unavailable because the storage could not be reached (down, restarting, cut off).
    #[cfg(feature = "postgres")]
    pub(crate) fn unreachable(context: impl Into<String>) -> Self {
        Self { unreachable: true, ..Self::unavailable(context) }
    }

    /// Adds the underlying error.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

/// Durable storage for deliveries: what the request path, the dispatcher and the `inbox` CLI
/// use, whatever the backend. See the module docs for the promises every backend keeps.
#[async_trait::async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Stores a delivery; returns once it is committed durably.
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, StoreError>;

    /// Claims up to `request.limit` due deliveries, soonest due first, at most one per room,
    /// each its room's head (see the module docs), with what of its room was handled already
    /// although created after it.
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the leases of these claims; returns the ones that were lost (fenced).
    async fn renew(&self, claims: &[Claim], lease: Duration) -> Result<Vec<Claim>, StoreError>;

    /// Records outcomes, each only if its claim still holds the delivery; one answer each, in
    /// order. On an error none is recorded.
    async fn complete(&self, completions: &[Completion]) -> Result<Vec<Completed>, StoreError>;

    /// [`Inbox::complete`], then [`Inbox::claim`], in one commit: the claims see the rooms the
    /// outcomes unblocked, and a handler slot is reused without a second round trip. On an
    /// error neither happened.
    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: ClaimRequest,
    ) -> Result<(Vec<Completed>, Vec<Claimed>), StoreError>;

    /// Makes the selected done or dead deliveries pending again, with a fresh count of
    /// attempts; returns how many. A pending delivery is left as it is.
    async fn replay(&self, selection: Selection) -> Result<usize, StoreError>;

    /// The deliveries a query asks for, newest first.
    async fn search(&self, query: &Query) -> Result<Vec<Stored>, StoreError>;

    /// The newest `limit` deliveries that pass the filter, oldest first.
    async fn list(&self, filter: Filter, event: Option<&str>, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let query = Query { filter, event: event.map(str::to_owned), ..Query::newest(limit) };
        let mut newest = self.search(&query).await?;
        newest.reverse();
        Ok(newest)
    }

    async fn get(&self, id: i64) -> Result<Option<Stored>, StoreError>;

    async fn stats(&self) -> Result<Stats, StoreError>;

    /// Pending and dead deliveries (cheap: for metrics).
    async fn depth(&self) -> Result<Depth, StoreError>;

    /// What waits, and who holds it (cheap: see [`Counts`]). By default from [`Inbox::stats`].
    async fn counts(&self) -> Result<Counts, StoreError> {
        let stats = self.stats().await?;
        Ok(Counts { pending: stats.pending, dead: stats.dead, fallback: stats.fallback, claimed_by: stats.claimed_by })
    }

    /// Deletes done deliveries handled longer than `retention` ago, by the storage's own clock
    /// (a replica whose clock is ahead must not delete what others just handled: those records
    /// are what turns the provider's retries into duplicates); returns how many.
    async fn prune(&self, retention: Duration) -> Result<usize, StoreError>;

    /// Fails unless a durable write succeeds now (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;

    /// Lets go of the storage cleanly (the SQLite inbox folds its log into the file).
    /// Operations after it fail.
    async fn close(&self);

    /// Woken after a commit that stored a new delivery (or made one pending again), and when
    /// one held back (its `hold`) comes due; on PostgreSQL, also by other replicas' commits.
    fn wakeups(&self) -> &Wakeups;

    /// Takes the dispatcher's offer to claim deliveries as they are stored ([`Offer`]); by
    /// default it is declined (dropped), and every claim is the dispatcher's.
    fn offer(&self, _offer: Offer) {}

    /// The least time between the starts of two of the dispatcher's turns (claims and outcomes)
    /// while it has little to do in each: what a turn costs beyond its deliveries is paid at
    /// most this often. None by default; PostgreSQL, where each turn is a transaction on a server
    /// that replicas share, sets one while other replicas announce commits.
    fn turn_gap(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Where the inbox lives, for logs (never a password).
    fn describe(&self) -> String;
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
