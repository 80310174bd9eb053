//! Hands stored deliveries to the generated handler: claimed first, then handled, then the
//! outcome recorded for that claim.
//!
//! A handler slot is taken from the claim until its outcome is committed, so what a crash can
//! make run again is at most `concurrency` deliveries. The dispatcher claims only what it can
//! start now (the attempt counts from the claim), and stops a handler whose claim was lost. An
//! inbox that can claims what it stores into the free slots and hands the claims over
//! ([`crate::inbox::Offer`]): the dispatcher's own turns then claim what their outcomes made due,
//! and half of what is free only when woken (something due that no append claimed) or when such
//! a claim came back full.
//!
//! Every claim is renewed from when it is made until its outcome is committed, by a task of
//! its own every quarter lease, whatever the dispatcher is waiting for: a commit that takes
//! longer than a lease (a database that stalls, rows another replica holds) costs neither the
//! claims it is committing, whose handlers have run, nor those of handlers still running.
//!
//! A handler runs only while its claim is known to be live: until half its lease after the
//! claim or its last renewal was asked for. Its task checks that each time it is polled, before
//! the handler starts and each time it resumes after an `await`; past it the handler is
//! stopped there (its process was paused, and the claim may be another replica's by now), and
//! the claim runs out and is taken again. A claim that arrives that late is not started. What
//! a handler does between two `await`s it does whole: a pause inside such a stretch cannot be
//! seen from inside the process, and that stretch ends after the pause; its outcome is fenced.
//!
//! When storage fails the dispatcher pauses, keeps the outcomes it could not record, and tries
//! again with backoff: one log line when storage fails and one when it is back, never a handler
//! run it cannot record.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::clock::system_time;
use crate::defaults;
use crate::inbox::{
    Claim, ClaimRequest, Claimed, Completed, Completion, Handed, Inbox, Kind, Offer, Outcome, Slots, StoreError,
};
use crate::webhooks::{DeliveryContext, LaterEvent, Webhooks, hand_over};

/// When a failed handler is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the delivery is dead.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub base: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: defaults::MAX_ATTEMPTS, base: defaults::RETRY_DELAY, max: defaults::RETRY_MAX_DELAY }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The dispatcher's settings.
pub struct Dispatcher<W> {
    pub inbox: Arc<dyn Inbox>,
    pub webhooks: Arc<W>,
    /// Handlers running at once (a slot lasts until the outcome is committed).
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// How long a claim lasts unless renewed ([`defaults::LEASE`]).
    pub lease: Duration,
    /// Done deliveries older than this are deleted.
    pub retention: Duration,
    /// On shutdown, how long running handlers get to finish.
    pub shutdown_grace: Duration,
    /// How often due deliveries are looked for when nothing woke the dispatcher
    /// ([`defaults::POLL`]).
    pub poll: Duration,
}

/// A running dispatcher.
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops claiming, lets running handlers finish (within the grace period), records their
    /// outcomes, and returns when the dispatcher has stopped. Handlers still running then are
    /// stopped; their deliveries are pending again, the attempt not counted.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

const MAINTENANCE: Duration = Duration::from_secs(10);
/// Outcomes enough that a turn goes at once, whatever the inbox's turn gap.
const TURN_BATCH: usize = 32;
/// Backoff while storage fails: from the first to the last.
const STORAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The line that says a claim took over one that ran out: whose it was and how long ago it ran
/// out, since a takeover means a replica stopped or froze with a handler running.
fn took_over_line(id: i64, event: Option<&str>, attempt: u32, previous: &crate::inbox::TakenOver) -> String {
    format!(
        "delivery {id} event={}: taken over from {}, whose claim ran out {:.1} s ago without an outcome (its handler \
         may have run, in part or in full): attempt {attempt}",
        event.unwrap_or("-"),
        previous.owner,
        previous.ran_out_ms as f64 / 1000.0
    )
}

/// Prunes and counts the inbox every `every`, beside the dispatcher's turns: on a large inbox a
/// pruning round (and the vacuum it may run) takes seconds, and no turn waits for it.
async fn maintain(inbox: Arc<dyn Inbox>, retention: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let round = async {
            let pruned = inbox.prune(retention).await.map_err(|e| ("cannot prune the inbox", e))?;
            let depth = inbox.depth().await.map_err(|e| ("cannot count the inbox", e))?;
            Ok::<_, (&str, StoreError)>((pruned, depth))
        };
        match round.await {
            Ok((pruned, depth)) => {
                if pruned > 0 {
                    log::info!("pruned {pruned} done deliveries older than {} s", retention.as_secs());
                }
                crate::metrics::inbox_depth(depth.pending, depth.dead);
                if std::mem::take(&mut failing) {
                    log::info!("pruning works again");
                }
            }
            Err((what, error)) if !std::mem::replace(&mut failing, true) => {
                log::warn!("{what}: {error}; trying again every {:.1} s", every.as_secs_f64());
            }
            Err((what, error)) => log::debug!("{what}: {error}"),
        }
    }
}

/// A claim whose handler runs.
struct Held {
    claim: Claim,
    attempt: u32,
    event: Option<String>,
    /// How the delivery was classified for this attempt.
    kind: Kind,
    started: std::time::Instant,
}

/// The claims the dispatcher holds, from the claim until the outcome of its attempt is
/// committed (or the claim is known to be lost), shared by the dispatcher's loop and the task
/// that renews them.
#[derive(Clone, Default)]
struct Leases(Arc<Mutex<HashMap<Claim, Leased>>>);

struct Leased {
    live: KnownLive,
    /// The handler's task while it runs; `None` once its outcome waits to be committed.
    running: Option<AbortHandle>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Claim, Leased>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, claim: Claim, live: KnownLive, task: AbortHandle) {
        self.lock().insert(claim, Leased { live, running: Some(task) });
    }

    /// The claim's handler has finished: its outcome waits to be committed. Whether the claim
    /// is still held (not lost meanwhile).
    fn finished(&self, claim: &Claim) -> bool {
        self.lock().get_mut(claim).map(|leased| leased.running = None).is_some()
    }

    /// Renews no more.
    fn release<'a>(&self, claims: impl IntoIterator<Item = &'a Claim>) {
        let mut leases = self.lock();
        for claim in claims {
            leases.remove(claim);
        }
    }

    /// Every quarter lease, extends the leases of the claims held; stops the handlers of those
    /// that were lost. Runs until aborted.
    async fn renew(self, inbox: Arc<dyn Inbox>, lease: Duration) {
        let mut storage = Health::default();
        let mut tick = tokio::time::interval(lease / 4);
        loop {
            tick.tick().await;
            let claims: Vec<Claim> = self.lock().keys().copied().collect();
            if claims.is_empty() || !storage.ready() {
                continue;
            }
            let asked = Instant::now();
            let lost = match inbox.renew(&claims, lease).await {
                Ok(lost) => lost,
                Err(e) => {
                    storage.failed("cannot renew claims", &e);
                    continue;
                }
            };
            storage.recovered();
            let mut leases = self.lock();
            for claim in &claims {
                if !lost.contains(claim) {
                    if let Some(leased) = leases.get(claim) {
                        leased.live.extend(asked, lease);
                    }
                    continue;
                }
                // An outcome committed meanwhile reads as lost too: only a running handler is news.
                if let Some(Leased { running: Some(task), .. }) = leases.remove(claim) {
                    log::warn!(
                        "delivery {}: lost the claim on it (its lease ran out); its handler is stopped and another \
                         attempt handles it",
                        claim.id
                    );
                    task.abort();
                }
            }
        }
    }
}

/// The warning for a failed attempt: when the next one is (`again`: its delay, from `now`), or,
/// for the last, the command that replays the delivery.
fn failed_line(
    id: i64,
    event: &str,
    attempt: u32,
    max_attempts: u32,
    error: &str,
    again: Option<(Duration, jiff::Timestamp)>,
) -> String {
    let next = match again {
        Some((delay, now)) => {
            let at = now + jiff::SignedDuration::try_from(delay).unwrap_or_default();
            format!("will retry in {:.1} s, at {at:.3}", delay.as_secs_f64())
        }
        None => format!("dead: replay it with `meet-webhooks inbox replay {id}`"),
    };
    let event = if event.is_empty() { "-" } else { event };
    format!("delivery {id} (event {event}) attempt {attempt}/{max_attempts} failed: {error}; {next}")
}

/// What a handler task returns: `None` when its claim was no longer known to be live when the
/// handler was to start or resume, so it was not started or was stopped (see [`KnownLive`]).
type Finished = Option<Result<(), String>>;

/// Until when a claim is known to be live, on this process's monotonic clock: half its lease
/// after the claim, or its last renewal, was asked for. The lease itself ends on the storage's
/// clock a whole lease after that at the earliest; the other half is the margin for what a
/// handler does between two checks. Shared by the dispatcher, which extends it as renewals
/// succeed, and the handler's task, which checks it whenever it is polled.
#[derive(Debug, Clone)]
struct KnownLive {
    since: Instant,
    /// Nanoseconds after `since`.
    until: Arc<AtomicU64>,
}

impl KnownLive {
    fn new(asked: Instant, lease: Duration) -> Self {
        let live = Self { since: asked, until: Arc::new(AtomicU64::new(0)) };
        live.extend(asked, lease);
        live
    }

    /// A renewal asked for at `asked` succeeded.
    fn extend(&self, asked: Instant, lease: Duration) {
        let until = (asked + lease / 2).saturating_duration_since(self.since);
        self.until.fetch_max(u64::try_from(until.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn holds(&self) -> bool {
        let elapsed = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        elapsed < self.until.load(Ordering::Relaxed)
    }

    /// Runs `work`, polling it only while the claim is known to be live: `None` once it is not.
    async fn guard<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| if self.holds() { work.as_mut().poll(cx).map(Some) } else { Poll::Ready(None) }).await
    }
}

impl<W: Webhooks> Dispatcher<W> {
    /// Runs the dispatcher on a thread of its own.
    pub fn spawn(self) -> DispatcherHandle {
        let (stop, stopped) = watch::channel(false);
        // A slot is taken from the claim until its outcome is committed; an inbox that claims
        // as it stores takes from the same slots and hands its claims over here, from the first
        // delivery stored after this returns.
        let slots = Arc::new(Slots::new(self.concurrency));
        let (hand, handed) = tokio::sync::mpsc::unbounded_channel::<Handed>();
        self.inbox.offer(Offer { slots: slots.clone(), request: self.claim_request(0), handed: hand });
        let thread = std::thread::Builder::new()
            .name("inbox-dispatcher".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
                runtime.block_on(self.run(stopped, slots, handed));
            })
            .expect("spawning the dispatcher thread");
        DispatcherHandle { stop, thread }
    }

    async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        slots: Arc<Slots>,
        mut handed: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    ) {
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut held: HashMap<tokio::task::Id, Held> = HashMap::new();
        let mut unrecorded: Vec<Completion> = Vec::new();
        let mut storage = Health::within(self.lease);
        // Whether due deliveries may be waiting (cleared when a claim came back short).
        let mut look = true;
        // Whether the inbox took the offer (it keeps the sender): else every claim is the
        // dispatcher's, and each turn claims all it can.
        let shared = !handed.is_closed();
        // A claim is known to be live for half its lease: a renewal every quarter leaves the
        // other quarter for the renewal's round trip.
        let leases = Leases::default();
        let renewals = tokio::spawn(leases.clone().renew(self.inbox.clone(), self.lease));
        // Pruning every 10 s, or twice a retention when it is shorter (a retention of seconds
        // keeps the inbox to seconds of deliveries).
        let every = MAINTENANCE.min(self.retention / 2).max(Duration::from_millis(10));
        let maintenance = tokio::spawn(maintain(self.inbox.clone(), self.retention, every));
        // When the last turn began ([`Inbox::turn_gap`]).
        let mut last_turn = Instant::now();
        // A timer of its own: a sleep made anew each turn of the loop would never fire while
        // anything else (finishing handlers, wakeups) woke the loop more often than this.
        // The first turn looks anyway: the first poll is one interval after it.
        let mut poll = tokio::time::interval_at(Instant::now() + self.poll, self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            // Outcomes and new claims go together: the slots they free are taken in the same
            // commit (the claims see the rooms the outcomes unblocked).
            if storage.ready() && (!unrecorded.is_empty() || (look && slots.free() > 0)) {
                // Little to record, soon after the last turn: wait out the inbox's gap, taking in
                // the handlers that finish meanwhile (and starting claims handed over).
                let gap = (last_turn + self.inbox.turn_gap()).saturating_duration_since(Instant::now());
                if !gap.is_zero() && unrecorded.len() < TURN_BATCH {
                    let gap = async {
                        tokio::select! {
                            () = tokio::time::sleep(gap) => {}
                            _ = stop.changed() => {}
                        }
                    };
                    self.starting_handed(gap, &mut handed, &mut running, &mut held, &leases, &slots).await;
                    while let Some(finished) = running.try_join_next_with_id() {
                        self.finished(finished, &mut held, &mut unrecorded, &leases, &slots);
                    }
                    look = true;
                }
                // The outcomes' slots go to the claims of this commit. Beside an inbox that claims
                // as it stores, that is all (each outcome makes at most its room's next delivery
                // due) unless something else may be due (woken, also during the last turn; or the
                // last such claim came back full), and then half of the free slots: appends that
                // commit meanwhile claim what they store into the rest (with none left they would
                // wake the dispatcher for another such turn, and so on while the load lasts).
                let looking = look || !shared || self.inbox.wakeups().woken();
                let taken = match (looking, shared) {
                    (false, _) => 0,
                    (true, true) => slots.take(slots.free().div_ceil(2)),
                    (true, false) => slots.take(usize::MAX),
                };
                let limit = unrecorded.len() + taken;
                let request = self.claim_request(limit);
                let asked = Instant::now();
                last_turn = asked;
                // Claims handed over while the turn waits for the storage (its room locks, its
                // commit) start now, not after it.
                let turn = async {
                    if unrecorded.is_empty() {
                        self.inbox.claim(request).await.map(|claimed| (Vec::new(), claimed))
                    } else {
                        self.inbox.complete_and_claim(&unrecorded, request).await
                    }
                };
                let settled = self.starting_handed(turn, &mut handed, &mut running, &mut held, &leases, &slots).await;
                let died = unrecorded.iter().any(|c| matches!(c.outcome, Outcome::Dead { .. }));
                match settled {
                    Ok((completed, claimed)) => {
                        storage.recovered();
                        // A retry recorded now comes due its wait from now (on the storage's
                        // clock, from its commit or before): the dispatcher looks then.
                        for (completion, answer) in unrecorded.iter().zip(&completed) {
                            if let (Outcome::Retry { after, .. }, Completed::Recorded) = (&completion.outcome, answer) {
                                self.inbox.wakeups().wake_after(*after);
                            }
                        }
                        recorded(&mut unrecorded, &completed, &leases);
                        slots.give(limit - claimed.len());
                        // A dead letter shows in the gauge now, not at the next maintenance.
                        if died {
                            self.count(&mut storage).await;
                        }
                        look = looking && claimed.len() == limit;
                        self.start_all(claimed, asked, &mut running, &mut held, &leases, &slots);
                    }
                    Err(e) => {
                        slots.give(taken);
                        storage.failed("cannot record outcomes or claim deliveries (outcomes are kept)", &e);
                    }
                }
            }
            tokio::select! {
                Some(finished) = running.join_next_with_id() => {
                    self.finished(finished, &mut held, &mut unrecorded, &leases, &slots);
                    while let Some(finished) = running.try_join_next_with_id() {
                        self.finished(finished, &mut held, &mut unrecorded, &leases, &slots);
                    }
                }
                Some(Handed { claimed, asked }) = handed.recv() => {
                    self.start_all(claimed, Instant::from_std(asked), &mut running, &mut held, &leases, &slots);
                }
                () = self.inbox.wakeups().wait() => look = true,
                _ = poll.tick() => look = true,
                () = tokio::time::sleep_until(storage.retry_at), if !storage.ready() => {}
                _ = stop.changed() => {}
            }
        }
        // Claims handed over from now on are given back by the inbox; those on their way are
        // given back here, their attempts not counted.
        handed.close();
        while let Ok(Handed { claimed, .. }) = handed.try_recv() {
            unrecorded.extend(claimed.into_iter().map(|c| Completion {
                claim: c.claim,
                kind: c.delivery.kind,
                outcome: Outcome::Interrupted,
            }));
        }
        self.shut_down(running, held, unrecorded, storage, &leases, &slots).await;
        renewals.abort();
        maintenance.abort();
    }

    fn claim_request(&self, limit: usize) -> ClaimRequest {
        ClaimRequest { limit, lease: self.lease, max_attempts: self.retry.max_attempts }
    }

    /// Runs `work`, starting meanwhile the claims the inbox hands over.
    async fn starting_handed<T>(
        &self,
        work: impl Future<Output = T>,
        handed: &mut tokio::sync::mpsc::UnboundedReceiver<Handed>,
        running: &mut JoinSet<Finished>,
        held: &mut HashMap<tokio::task::Id, Held>,
        leases: &Leases,
        slots: &Slots,
    ) -> T {
        let mut work = pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                Some(Handed { claimed, asked }) = handed.recv() => {
                    self.start_all(claimed, Instant::from_std(asked), running, held, leases, slots);
                }
            }
        }
    }

    /// Starts the handlers of claims asked for at `asked`, unless they arrived so late that they
    /// may be another replica's by now: those are left to run out, and their slots given back.
    fn start_all(
        &self,
        claimed: Vec<Claimed>,
        asked: Instant,
        running: &mut JoinSet<Finished>,
        held: &mut HashMap<tokio::task::Id, Held>,
        leases: &Leases,
        slots: &Slots,
    ) {
        // A claim is good for its lease from when it was made, at the latest when it was asked
        // for. One that took half of that to arrive (this process was paused, or the database
        // stalled) may be another replica's by the time its handler runs.
        if asked.elapsed() >= self.lease / 2 && !claimed.is_empty() {
            log::warn!(
                "{} claim(s) arrived {} ms after they were asked for (the process was paused?): not started; they \
                 are handled once their lease has run out",
                claimed.len(),
                asked.elapsed().as_millis()
            );
            slots.give(claimed.len());
            return;
        }
        for claimed in claimed {
            self.start(claimed, asked, running, held, leases);
        }
    }

    /// Runs the handler of a claim asked for at `asked`, while the claim is known to be live: a
    /// process paused (or starved) between taking the claim and starting its handler, or while
    /// the handler waits, may have lost it to another replica meanwhile, and must not go on
    /// with a delivery that another replica may be running, or has run, since.
    fn start(
        &self,
        claimed: Claimed,
        asked: Instant,
        running: &mut JoinSet<Finished>,
        held: &mut HashMap<tokio::task::Id, Held>,
        leases: &Leases,
    ) {
        let live = KnownLive::new(asked, self.lease);
        let Claimed { claim, attempt, delivery, lateness, took_over } = claimed;
        if let Some(previous) = &took_over {
            log::warn!("{}", took_over_line(claim.id, delivery.event.as_deref(), attempt, previous));
        }
        if attempt == 1 {
            crate::metrics::handler_lag(delivery.queued_at);
        }
        let event = delivery.event.clone();
        let ctx = DeliveryContext {
            delivery_id: delivery.id.to_string(),
            attempt,
            timestamp_ms: delivery.timestamp_ms,
            received_at: system_time(delivery.received_at),
            queued_at: system_time(delivery.queued_at),
            event: delivery.event,
            body: delivery.body.into(),
            creation_date: delivery.created_us.map(|us| us as f64 / 1000.0),
            later_in_room: lateness.room.as_ref().map(LaterEvent::from_inbox),
            later_in_recording: lateness.recording.as_ref().map(LaterEvent::from_inbox),
        };
        // Classified again from the stored bytes: after a rebuild against a newer spec, an event
        // that went to the fallback before may be typed now.
        let classified = W::classify(ctx.event.as_deref(), &ctx.body);
        let kind = if classified.is_ok() { Kind::Typed } else { Kind::Fallback };
        let webhooks = self.webhooks.clone();
        let guard = live.clone();
        let signature = delivery.signature;
        let task = running.spawn(async move {
            // Not before this process has logged that it accepted the delivery.
            crate::logging::accepted(&signature).await;
            let run = guard.guard(hand_over(&*webhooks, &ctx, classified)).await;
            run.map(|result| result.map_err(|e| e.to_string()))
        });
        let started = std::time::Instant::now();
        held.insert(task.id(), Held { claim, attempt, event, kind, started });
        leases.hold(claim, live, task);
    }

    /// Turns a finished handler into the outcome to record.
    fn finished(
        &self,
        finished: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
        held: &mut HashMap<tokio::task::Id, Held>,
        unrecorded: &mut Vec<Completion>,
        leases: &Leases,
        slots: &Slots,
    ) {
        let (task, result) = match finished {
            Ok((task, Some(result))) => (task, result),
            Ok((task, None)) => {
                if let Some(held) = held.remove(&task) {
                    leases.release([&held.claim]);
                    slots.give(1);
                    log::warn!(
                        "delivery {}: its claim was no longer known to be live when its handler was to start or go \
                         on (the process was paused?): not run further; it is handled again once the claim has run \
                         out",
                        held.claim.id
                    );
                }
                return;
            }
            // Stopped: its claim was lost (nothing to record), or shutdown stopped it (the
            // delivery is pending again, this attempt not counted).
            Err(e) if e.is_cancelled() => {
                if let Some(held) = held.remove(&e.id()) {
                    if leases.finished(&held.claim) {
                        unrecorded.push(Completion {
                            claim: held.claim,
                            kind: held.kind,
                            outcome: Outcome::Interrupted,
                        });
                    } else {
                        slots.give(1);
                    }
                }
                return;
            }
            Err(e) => (e.id(), Err(format!("the handler panicked: {e}"))),
        };
        let Some(Held { claim, attempt, event, kind, started }) = held.remove(&task) else { return };
        let ran = started.elapsed();
        leases.finished(&claim);
        let event = event.as_deref().unwrap_or("");
        let outcome = match result {
            Ok(()) => {
                log::info!(
                    "delivery {} event={} handled: attempt {attempt}, {} ms{}",
                    claim.id,
                    if event.is_empty() { "-" } else { event },
                    ran.as_millis(),
                    if kind == Kind::Fallback { ", by the fallback" } else { "" }
                );
                Outcome::Done
            }
            Err(error) => {
                let retry = attempt < self.retry.max_attempts;
                let delay = self.retry.delay(attempt);
                let again = retry.then(|| (delay, jiff::Timestamp::now()));
                log::warn!("{}", failed_line(claim.id, event, attempt, self.retry.max_attempts, &error, again));
                if retry { Outcome::Retry { after: delay, error } } else { Outcome::Dead { error } }
            }
        };
        let attempt = match outcome {
            Outcome::Done => crate::metrics::Attempt::Done,
            Outcome::Retry { .. } => crate::metrics::Attempt::Retry,
            _ => crate::metrics::Attempt::Dead,
        };
        crate::metrics::handler_attempt(&W::SPEC, event, attempt, ran);
        unrecorded.push(Completion { claim, kind, outcome });
    }

    /// Records the outcomes waiting for it (at shutdown).
    async fn record(&self, unrecorded: &mut Vec<Completion>, storage: &mut Health, leases: &Leases) {
        match self.inbox.complete(unrecorded).await {
            Ok(completed) => {
                storage.recovered();
                recorded(unrecorded, &completed, leases);
            }
            Err(e) => storage.failed("cannot record handler outcomes", &e),
        }
    }

    /// Sets the inbox gauges.
    async fn count(&self, storage: &mut Health) {
        match self.inbox.depth().await {
            Ok(depth) => crate::metrics::inbox_depth(depth.pending, depth.dead),
            Err(e) => storage.failed("cannot count the inbox", &e),
        }
    }

    /// Takes nothing new; gives running handlers the grace period; records what finished, and
    /// gives back the claims of what did not.
    async fn shut_down(
        &self,
        mut running: JoinSet<Finished>,
        mut held: HashMap<tokio::task::Id, Held>,
        mut unrecorded: Vec<Completion>,
        mut storage: Health,
        leases: &Leases,
        slots: &Slots,
    ) {
        let deadline = Instant::now() + self.shutdown_grace;
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, running.join_next_with_id()).await {
                Ok(Some(finished)) => self.finished(finished, &mut held, &mut unrecorded, leases, slots),
                Ok(None) => break,
                Err(_) => {
                    log::warn!(
                        "{} handler(s) still running at shutdown: stopped; their deliveries are handled after the \
                         next start",
                        running.len()
                    );
                    running.abort_all();
                    // One may have finished just before: its outcome counts.
                    while let Some(finished) = running.join_next_with_id().await {
                        self.finished(finished, &mut held, &mut unrecorded, leases, slots);
                    }
                }
            }
        }
        debug_assert!(held.is_empty(), "every handler's task was joined");
        // A few tries: storage may be failing right now.
        let give_up = Instant::now() + Duration::from_secs(5);
        while !unrecorded.is_empty() && Instant::now() < give_up {
            tokio::time::sleep_until(storage.retry_at.min(give_up)).await;
            self.record(&mut unrecorded, &mut storage, leases).await;
        }
    }
}

/// The outcomes waiting were committed, or answered fenced (logged): their claims are renewed
/// no more.
fn recorded(unrecorded: &mut Vec<Completion>, answers: &[Completed], leases: &Leases) {
    for (completion, answer) in unrecorded.iter().zip(answers) {
        if *answer == Completed::Fenced {
            log::warn!(
                "delivery {}: the outcome of an attempt was not recorded: its claim ran out and the delivery was \
                 claimed again",
                completion.claim.id
            );
        }
    }
    leases.release(unrecorded.iter().map(|c| &c.claim));
    unrecorded.clear();
}

/// Whether storage works, and when to try again if not: logs once when it fails and once
/// when it is back.
struct Health {
    failing_since: Option<Instant>,
    retry_at: Instant,
    delay: Duration,
    /// The longest wait between tries.
    most: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self { failing_since: None, retry_at: Instant::now(), delay: STORAGE_BACKOFF.0, most: STORAGE_BACKOFF.1 }
    }
}

impl Health {
    /// Tries at least four times a lease: once storage is back, outcomes waiting for it are
    /// recorded well within the lease that other replicas give this one before taking over.
    fn within(lease: Duration) -> Self {
        Self { most: STORAGE_BACKOFF.1.min(lease / 4).max(STORAGE_BACKOFF.0), ..Self::default() }
    }

    fn ready(&self) -> bool {
        Instant::now() >= self.retry_at
    }

    fn failed(&mut self, what: &str, error: &StoreError) {
        if self.failing_since.is_none() {
            log::error!(
                "{what}: {error}; handlers pause until storage works again (trying every {} s at most)",
                STORAGE_BACKOFF.1.as_secs()
            );
            self.failing_since = Some(Instant::now());
            self.delay = STORAGE_BACKOFF.0;
        } else {
            log::debug!("{what}: {error}");
            self.delay = (self.delay * 2).min(self.most);
        }
        self.retry_at = Instant::now() + self.delay;
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            log::info!("storage works again after {:.1} s; handlers resume", since.elapsed().as_secs_f64());
            self.delay = STORAGE_BACKOFF.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy { max_attempts: 5, base: Duration::from_millis(100), max: Duration::from_millis(500) };
        let delays: Vec<u128> = (1..=5).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_failed_attempt_says_when_the_next_is_and_the_last_names_its_replay_command() {
        let now: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let again = Some((Duration::from_millis(2500), now));
        assert_eq!(
            failed_line(42, "recordingEnded", 1, 5, "the bucket said 503", again),
            "delivery 42 (event recordingEnded) attempt 1/5 failed: the bucket said 503; will retry in 2.5 s, at \
             2026-12-06T10:00:02.500Z"
        );
        assert_eq!(
            failed_line(42, "", 5, 5, "boom", None),
            "delivery 42 (event -) attempt 5/5 failed: boom; dead: replay it with `meet-webhooks inbox replay 42`"
        );
    }
}
