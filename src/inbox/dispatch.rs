//! Hands stored deliveries to the generated handler, in arrival order, one room at a time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Inbox, Outcome, Stored};
use crate::generated::{Event, WebhookHandler, dispatch};
use crate::runtime::{DeliveryContext, UnmatchedEvent};
use crate::verify::millis_since_epoch;

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
        Self { max_attempts: 8, base: Duration::from_secs(1), max: Duration::from_secs(300) }
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
pub struct Dispatcher<H> {
    pub inbox: Inbox,
    pub handler: Arc<H>,
    /// Handlers running at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Done deliveries older than this are deleted.
    pub retention: Duration,
    /// On shutdown, how long running handlers get to finish.
    pub shutdown_grace: Duration,
}

/// A running dispatcher.
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops taking deliveries, lets running handlers finish (within the grace period), and
    /// returns when the dispatcher has stopped. Unfinished deliveries stay pending.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// How often due deliveries are looked for when nothing wakes the dispatcher (retries that come
/// due, replays from the CLI).
const POLL: Duration = Duration::from_millis(250);
const MAINTENANCE: Duration = Duration::from_secs(10);
/// Due deliveries fetched per query.
const FETCH: usize = 256;
/// Handler outcomes that may wait for their commit at once. A crash handles again whatever
/// ran without its outcome committed: at most `concurrency + MAX_UNRECORDED` deliveries. Each
/// writer cycle commits the outcomes queued during it, so this also caps how many deliveries
/// are handled per commit.
pub const MAX_UNRECORDED: usize = 64;

struct Running {
    id: i64,
    room: Option<String>,
    event: Option<String>,
    attempts: u32,
}

impl<H: WebhookHandler> Dispatcher<H> {
    /// Runs the dispatcher on a thread of its own.
    pub fn spawn(self) -> DispatcherHandle {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("inbox-dispatcher".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
                runtime.block_on(self.run(stopped));
            })
            .expect("spawning the dispatcher thread");
        DispatcherHandle { stop, thread }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut running: JoinSet<(bool, Result<(), String>)> = JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, Running> = HashMap::new();
        let mut busy_rooms: HashSet<String> = HashSet::new();
        let mut ready: VecDeque<Stored> = VecDeque::new();
        let mut recording: JoinSet<()> = JoinSet::new();
        let mut maintenance = tokio::time::interval(MAINTENANCE);
        loop {
            if *stop.borrow() {
                break;
            }
            if running.len() < self.concurrency && recording.len() < MAX_UNRECORDED {
                self.start_due(&mut running, &mut tasks, &mut busy_rooms, &mut ready).await;
            }
            tokio::select! {
                Some(_) = recording.join_next() => {}
                Some(finished) = running.join_next_with_id() => {
                    let (task, typed, result) = match finished {
                        Ok((task, (typed, result))) => (task, typed, result),
                        Err(e) => (e.id(), true, Err(format!("the handler panicked: {e}"))),
                    };
                    if let Some(done) = tasks.remove(&task) {
                        if let Some(room) = &done.room {
                            busy_rooms.remove(room);
                        }
                        self.finish(done, typed, result, &mut recording).await;
                    }
                }
                _ = self.inbox.wake().notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = maintenance.tick() => self.maintain().await,
                _ = stop.changed() => {}
            }
        }
        // Shutdown: take nothing new; give running handlers the grace period.
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, running.join_next_with_id()).await {
                Ok(Some(Ok((task, (typed, result))))) => {
                    if let Some(done) = tasks.remove(&task) {
                        self.finish(done, typed, result, &mut recording).await;
                    }
                }
                Ok(Some(Err(e))) => {
                    if let Some(done) = tasks.remove(&e.id()) {
                        self.finish(done, true, Err(format!("the handler panicked: {e}")), &mut recording).await;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    log::warn!("{} handler(s) still running at shutdown; their deliveries stay pending", running.len());
                    running.abort_all();
                    break;
                }
            }
        }
        // The outcomes of what finished are committed before the dispatcher reports stopped.
        while tokio::time::timeout_at(deadline + Duration::from_secs(5), recording.join_next())
            .await
            .is_ok_and(|r| r.is_some())
        {}
    }

    /// Starts due deliveries while there is room. Due deliveries are fetched a batch at a
    /// time: a query per delivery would cost the writer thread more than the insert did.
    async fn start_due(
        &self,
        running: &mut JoinSet<(bool, Result<(), String>)>,
        tasks: &mut HashMap<tokio::task::Id, Running>,
        busy_rooms: &mut HashSet<String>,
        ready: &mut VecDeque<Stored>,
    ) {
        if running.len() >= self.concurrency {
            return;
        }
        if ready.is_empty() {
            let now = millis_since_epoch(SystemTime::now());
            match self.inbox.due(now, FETCH.max(2 * self.concurrency)).await {
                Ok(due) => ready.extend(due),
                Err(e) => {
                    log::error!("cannot read due deliveries from the inbox: {e}");
                    return;
                }
            }
        }
        while running.len() < self.concurrency {
            let Some(row) = ready.pop_front() else { break };
            // Still pending in storage while it runs: skip it, and any later event of a room
            // that has one running (it comes back in a later fetch).
            if tasks.values().any(|t| t.id == row.id) || row.room.as_ref().is_some_and(|r| busy_rooms.contains(r)) {
                continue;
            }
            if let Some(room) = &row.room {
                busy_rooms.insert(room.clone());
            }
            let info =
                Running { id: row.id, room: row.room.clone(), event: row.event.clone(), attempts: row.attempts + 1 };
            let handler = self.handler.clone();
            let task = running.spawn(async move { handle(&*handler, row).await });
            tasks.insert(task.id(), info);
        }
    }

    async fn finish(&self, done: Running, typed: bool, result: Result<(), String>, recording: &mut JoinSet<()>) {
        let now_ms = millis_since_epoch(SystemTime::now());
        let event = done.event.as_deref().unwrap_or("");
        let retry_at_ms = match &result {
            Err(_) if done.attempts < self.retry.max_attempts => {
                Some(now_ms + i64::try_from(self.retry.delay(done.attempts).as_millis()).unwrap_or(i64::MAX))
            }
            _ => None,
        };
        let label = match (&result, retry_at_ms) {
            (Ok(()), _) => "done",
            (Err(_), Some(_)) => "retry",
            (Err(_), None) => "dead",
        };
        if let Err(e) = &result {
            log::warn!(
                "delivery {} (event {}) attempt {}/{} failed: {e}; {}",
                done.id,
                if event.is_empty() { "-" } else { event },
                done.attempts,
                self.retry.max_attempts,
                if retry_at_ms.is_some() { "will retry" } else { "dead: replay it with `meet-webhooks inbox replay`" }
            );
        }
        crate::metrics::handler_attempt(event, label);
        let outcome = Outcome { id: done.id, attempts: done.attempts, typed, result, retry_at_ms, now_ms };
        match self.inbox.record(outcome).await {
            Ok(committed) => {
                recording.spawn(async move {
                    let _ = committed.await;
                });
            }
            // Left pending in storage: it will be handled again (at least once).
            Err(e) => log::error!("cannot record the outcome of delivery {}: {e}", done.id),
        }
    }

    async fn maintain(&self) {
        let cutoff =
            millis_since_epoch(SystemTime::now()) - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        match self.inbox.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} done deliveries older than {} s", self.retention.as_secs()),
            Err(e) => log::warn!("cannot prune the inbox: {e}"),
        }
        self.inbox.report_depth().await;
    }
}

/// Runs the handler for one stored delivery: `(typed, result)`.
async fn handle<H: WebhookHandler>(handler: &H, row: Stored) -> (bool, Result<(), String>) {
    let ctx = DeliveryContext {
        delivery_id: row.id.to_string(),
        attempt: row.attempts + 1,
        timestamp_ms: row.timestamp_ms,
        received_at: UNIX_EPOCH + Duration::from_millis(u64::try_from(row.received_at).unwrap_or(0)),
        event: row.event,
        body: row.body.into(),
    };
    // Classified again from the stored bytes: after a rebuild against a newer spec, an event
    // that went to the fallback before may be typed now.
    match Event::classify(ctx.event.as_deref(), &ctx.body) {
        Ok(event) => (true, dispatch(handler, &ctx, event).await.map_err(|e| e.to_string())),
        Err(reason) => {
            let body = serde_json::from_slice(&ctx.body).unwrap_or(serde_json::Value::Null);
            let unmatched = UnmatchedEvent { event: ctx.event.clone(), reason, body };
            (false, handler.fallback(&ctx, unmatched).await.map_err(|e| e.to_string()))
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
}
