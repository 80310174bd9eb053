//! An inbox in memory: the contract every inbox keeps, stated as plain code (scans over one
//! list, no index, nothing durable), and run by the same contract suite as SQLite and
//! PostgreSQL (`tests/integration/contract.rs`). For tests of handlers and of embedding code
//! (`Storage::Inbox`): nothing survives the process, so it is no inbox for production.

use std::sync::Mutex;
use std::time::Duration;

use super::{
    Appended, Attempt, Claim, ClaimRequest, Claimed, Completed, Completion, Depth, Inbox, Kind, Lateness, Later,
    NewDelivery, Outcome, Query, Selection, State, Stats, StoreError, Stored, TakenOver,
};
use crate::clock::{millis, now_ms};

/// See the module doc.
#[derive(Debug)]
pub struct MemoryInbox {
    owner: String,
    deliveries: Mutex<Deliveries>,
    wake: super::Wakeups,
}

#[derive(Debug, Default)]
struct Deliveries {
    rows: Vec<Row>,
    last_id: i64,
    /// The last place given in a room's queue: appends and replays take the next (ties of
    /// `order` go by it).
    last_place: i64,
    /// The latest handled event of each room (recording `""`) and of each recording, by
    /// `creationDate`, and when it was handled.
    handled: std::collections::HashMap<(String, String), (Later, i64)>,
    closed: bool,
}

#[derive(Debug, Clone)]
struct Row {
    stored: Stored,
    fence: i64,
    due_at: i64,
    /// When its last claim was taken.
    claimed_at: Option<i64>,
    /// Its place in its room's queue.
    place: i64,
    /// Its room's order: `creationDate` (or arrival), first, then `place`.
    order: i64,
}

impl Row {
    /// Its delivery as a read shows it.
    fn view(&self) -> Stored {
        let due_at = (self.stored.state == State::Pending).then_some(self.due_at);
        Stored { due_at, ..self.stored.clone() }
    }
}

impl MemoryInbox {
    /// An empty inbox whose claims are held as `owner`.
    pub fn new(owner: impl Into<String>) -> Self {
        Self { owner: owner.into(), deliveries: Mutex::default(), wake: super::Wakeups::default() }
    }

    /// The deliveries, or an error once closed.
    fn open(&self) -> Result<std::sync::MutexGuard<'_, Deliveries>, StoreError> {
        let deliveries = self.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if deliveries.closed { Err(StoreError::unavailable("the memory inbox is closed")) } else { Ok(deliveries) }
    }
}

impl Row {
    /// Its current attempt ended (`now`: when; `None`: it never finished), as `outcome`.
    fn ended(&mut self, outcome: &str, now: Option<i64>, error: Option<&str>) {
        let stored = &mut self.stored;
        stored.history.push(Attempt {
            attempt: stored.attempts,
            replica: stored.claimed_by.clone(),
            started_at: self.claimed_at,
            duration_ms: now.zip(self.claimed_at).map(|(now, at)| now - at),
            outcome: outcome.to_owned(),
            error: error.map(str::to_owned),
        });
    }
}

impl Deliveries {
    fn row(&mut self, id: i64) -> Option<&mut Row> {
        self.rows.iter_mut().find(|r| r.stored.id == id)
    }

    /// Whether `row` is its room's head: the one of its room's pending deliveries that a claim
    /// holds (its lease may have run out), or else the first by `(order, place)`.
    fn is_head(&self, row: &Row) -> bool {
        let Some(room) = &row.stored.room else { return true };
        let mut others = self.rows.iter().filter(|r| {
            r.stored.state == State::Pending && r.stored.room.as_ref() == Some(room) && r.stored.id != row.stored.id
        });
        if row.stored.claimed_by.is_some() {
            return true;
        }
        !others.any(|r| r.stored.claimed_by.is_some() || (r.order, r.place) < (row.order, row.place))
    }

    /// What of `stored`'s room and recording was handled although created after it.
    fn lateness(&self, stored: &Stored) -> Lateness {
        let (Some(room), Some(created)) = (&stored.room, stored.created_us) else { return Lateness::default() };
        let later = |recording: &str| {
            self.handled
                .get(&(room.clone(), recording.to_owned()))
                .map(|(later, _)| later)
                .filter(|later| later.created_us > created)
                .cloned()
        };
        Lateness { room: later(""), recording: stored.recording.as_deref().and_then(later) }
    }

    /// `stored` was handled: the latest of its room and recording, if it is.
    fn mark_handled(&mut self, stored: &Stored, now: i64) {
        let (Some(room), Some(created)) = (&stored.room, stored.created_us) else { return };
        let later = Later { id: stored.id, event: stored.event.clone(), created_us: created };
        for recording in std::iter::once("").chain(stored.recording.as_deref()) {
            let mark = self.handled.entry((room.clone(), recording.to_owned())).or_insert((later.clone(), now));
            if mark.0.created_us <= created {
                *mark = (later.clone(), now);
            }
        }
    }

    fn claim(&mut self, owner: &str, request: ClaimRequest, now: i64) -> Vec<Claimed> {
        let mut claimed = Vec::new();
        while claimed.len() < request.limit {
            // The due heads that no live claim holds, oldest first.
            let next = self
                .rows
                .iter()
                .filter(|r| r.stored.state == State::Pending && r.due_at <= now)
                .filter(|r| r.stored.claimed_until.is_none_or(|until| until <= now))
                .filter(|r| self.is_head(r))
                .min_by_key(|r| (r.due_at, r.stored.id))
                .map(|r| (r.stored.id, self.lateness(&r.stored)));
            let Some((id, lateness)) = next else { break };
            let row = self.row(id).expect("found above");
            let stored = &mut row.stored;
            if stored.attempts >= request.max_attempts {
                // Its last claim ran out on its last attempt: buried, and its room goes on.
                let error = super::never_finished(request.max_attempts);
                row.ended("unfinished", None, Some(&error));
                let stored = &mut row.stored;
                (stored.state, stored.last_error, stored.done_at) = (State::Dead, Some(error), Some(now));
                (stored.claimed_by, stored.claimed_until) = (None, None);
                continue;
            }
            row.fence += 1;
            row.claimed_at = Some(now);
            let took_over = TakenOver::take(stored, now);
            stored.attempts += 1;
            stored.claimed_by = Some(owner.to_owned());
            stored.claimed_until = Some(now.saturating_add(millis(request.lease)));
            stored.late = lateness.room.clone();
            claimed.push(Claimed {
                claim: Claim { id, fence: row.fence },
                attempt: stored.attempts,
                delivery: row.view(),
                lateness,
                took_over,
            });
        }
        claimed
    }

    /// The row `claim` still holds (under its fence, by `owner`), pending.
    fn held(&mut self, owner: &str, claim: Claim) -> Option<&mut Row> {
        self.row(claim.id).filter(|r| {
            r.fence == claim.fence && r.stored.state == State::Pending && r.stored.claimed_by.as_deref() == Some(owner)
        })
    }

    fn complete(&mut self, owner: &str, completions: &[Completion], now: i64) -> Vec<Completed> {
        let mut answers = Vec::with_capacity(completions.len());
        for completion in completions {
            let Some(row) = self.held(owner, completion.claim) else {
                answers.push(Completed::Fenced);
                continue;
            };
            let (name, error) = match &completion.outcome {
                Outcome::Done => ("done", None),
                Outcome::Retry { error, .. } => ("retry", Some(error.as_str())),
                Outcome::Dead { error } => ("dead", Some(error.as_str())),
                Outcome::Interrupted => ("interrupted", None),
            };
            row.ended(name, Some(now), error);
            let stored = &mut row.stored;
            (stored.claimed_by, stored.claimed_until, stored.kind) = (None, None, completion.kind);
            match &completion.outcome {
                Outcome::Done => {
                    (stored.state, stored.last_error, stored.done_at) = (State::Done, None, Some(now));
                    let stored = stored.clone();
                    self.mark_handled(&stored, now);
                }
                Outcome::Retry { after, error } => {
                    stored.last_error = Some(error.clone());
                    row.due_at = now.saturating_add(millis(*after));
                }
                Outcome::Dead { error } => {
                    (stored.state, stored.last_error, stored.done_at) = (State::Dead, Some(error.clone()), Some(now));
                }
                Outcome::Interrupted => stored.attempts = stored.attempts.saturating_sub(1),
            }
            answers.push(Completed::Recorded);
        }
        answers
    }
}

#[async_trait::async_trait]
impl Inbox for MemoryInbox {
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, StoreError> {
        let hold = delivery.hold;
        let mut deliveries = self.open()?;
        let key = (delivery.timestamp_ms, delivery.signature);
        if let Some(row) = deliveries.rows.iter().find(|r| (r.stored.timestamp_ms, r.stored.signature) == key) {
            return Ok(Appended::Duplicate(row.stored.id));
        }
        deliveries.last_id += 1;
        deliveries.last_place += 1;
        let (id, place, order) = (deliveries.last_id, deliveries.last_place, delivery.order());
        deliveries.rows.push(Row {
            stored: Stored {
                id,
                event: delivery.event,
                state: State::Pending,
                kind: delivery.kind,
                attempts: 0,
                received_at: delivery.received_at_ms,
                queued_at: now_ms(),
                timestamp: delivery.timestamp,
                timestamp_ms: delivery.timestamp_ms,
                room: delivery.room,
                recording: delivery.recording,
                created_us: delivery.created_us,
                late: None,
                signature: delivery.signature,
                body: delivery.body.to_vec(),
                last_error: None,
                claimed_by: None,
                claimed_until: None,
                done_at: None,
                due_at: None,
                history: Vec::new(),
            },
            fence: 0,
            due_at: now_ms().saturating_add(millis(delivery.hold)),
            claimed_at: None,
            place,
            order,
        });
        drop(deliveries);
        self.wake.wake_after(hold);
        Ok(Appended::New(id))
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Claimed>, StoreError> {
        Ok(self.open()?.claim(&self.owner, request, now_ms()))
    }

    async fn renew(&self, claims: &[Claim], lease: Duration) -> Result<Vec<Claim>, StoreError> {
        let mut deliveries = self.open()?;
        let until = now_ms().saturating_add(millis(lease));
        let mut lost = Vec::new();
        for claim in claims {
            match deliveries.held(&self.owner, *claim) {
                Some(row) => row.stored.claimed_until = Some(until),
                None => lost.push(*claim),
            }
        }
        Ok(lost)
    }

    async fn complete(&self, completions: &[Completion]) -> Result<Vec<Completed>, StoreError> {
        Ok(self.open()?.complete(&self.owner, completions, now_ms()))
    }

    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: ClaimRequest,
    ) -> Result<(Vec<Completed>, Vec<Claimed>), StoreError> {
        let mut deliveries = self.open()?;
        let now = now_ms();
        let completed = deliveries.complete(&self.owner, completions, now);
        Ok((completed, deliveries.claim(&self.owner, request, now)))
    }

    async fn replay(&self, selection: Selection) -> Result<usize, StoreError> {
        let mut deliveries = self.open()?;
        let now = now_ms();
        let mut replayed = 0;
        for at in 0..deliveries.rows.len() {
            let stored = &deliveries.rows[at].stored;
            let selected = match selection {
                Selection::One(id) => stored.id == id,
                Selection::Dead => stored.state == State::Dead,
                Selection::Fallback => stored.kind == Kind::Fallback,
            };
            if !selected || stored.state == State::Pending {
                continue;
            }
            let room = stored.room.clone();
            // Behind whatever of its room is pending already, and what arrives from now on.
            deliveries.last_place += 1;
            let place = deliveries.last_place;
            let last = deliveries
                .rows
                .iter()
                .filter(|r| r.stored.state == State::Pending && r.stored.room.is_some() && r.stored.room == room)
                .map(|r| r.order.saturating_add(1))
                .max()
                .unwrap_or(i64::MIN);
            let row = &mut deliveries.rows[at];
            (row.place, row.due_at, row.stored.done_at) = (place, now, None);
            row.order = now.saturating_mul(1000).max(last);
            let stored = &mut row.stored;
            (stored.state, stored.attempts, stored.last_error, stored.queued_at) = (State::Pending, 0, None, now);
            (stored.claimed_by, stored.claimed_until) = (None, None);
            replayed += 1;
        }
        drop(deliveries);
        if replayed > 0 {
            self.wake.wake();
        }
        Ok(replayed)
    }

    async fn search(&self, query: &Query) -> Result<Vec<Stored>, StoreError> {
        let deliveries = self.open()?;
        let rows = deliveries.rows.iter().rev().filter(|r| query.matches(&r.stored));
        Ok(rows.take(query.limit).map(Row::view).collect())
    }

    async fn get(&self, id: i64) -> Result<Option<Stored>, StoreError> {
        Ok(self.open()?.rows.iter().find(|r| r.stored.id == id).map(Row::view))
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let deliveries = self.open()?;
        let mut stats = Stats::default();
        let mut holders = std::collections::BTreeMap::<String, u64>::new();
        for s in deliveries.rows.iter().map(|r| &r.stored) {
            match s.state {
                State::Pending => {
                    stats.pending += 1;
                    stats.oldest_pending_received_at =
                        Some(stats.oldest_pending_received_at.map_or(s.received_at, |o: i64| o.min(s.received_at)));
                    if let Some(owner) = &s.claimed_by {
                        *holders.entry(owner.clone()).or_default() += 1;
                    }
                }
                State::Done => stats.done += 1,
                State::Dead => stats.dead += 1,
            }
            stats.fallback += u64::from(s.kind == Kind::Fallback);
        }
        stats.claimed_by = holders.into_iter().collect();
        Ok(stats)
    }

    async fn depth(&self) -> Result<Depth, StoreError> {
        let stats = self.stats().await?;
        Ok(Depth { pending: stats.pending, dead: stats.dead })
    }

    async fn prune(&self, retention: Duration) -> Result<usize, StoreError> {
        let mut deliveries = self.open()?;
        let before = now_ms().saturating_sub(millis(retention));
        let count = deliveries.rows.len();
        deliveries.rows.retain(|r| !(r.stored.state == State::Done && r.stored.done_at.is_some_and(|at| at < before)));
        deliveries.handled.retain(|_, (_, at)| *at >= before);
        Ok(count - deliveries.rows.len())
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.open().map(drop)
    }

    async fn close(&self) {
        self.deliveries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed = true;
    }

    fn wakeups(&self) -> &super::Wakeups {
        &self.wake
    }

    fn describe(&self) -> String {
        "memory (nothing is kept when the process ends)".to_owned()
    }
}
