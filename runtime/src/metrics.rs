//! The service's metrics, named in one place.
//!
//! Recorded through the `metrics` facade (a no-op until a recorder is installed); `serve`
//! installs a Prometheus recorder ([`install`]) and exposes it on `GET /metrics`. The names are
//! public (for dashboards and alerts); only the receiver records them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::webhooks::Spec;

/// Deliveries by event and outcome ([`Outcome`]: `accepted`, `fallback`, `duplicate`,
/// `handled`, or a refusal's code; refusals before verification have `event=""`). The `event`
/// label of every metric is bounded, whatever the bodies say (see `event_label`).
pub const DELIVERIES: &str = "meet_webhooks_deliveries_total";
/// Handler calls that returned an error (without the inbox).
pub const HANDLER_FAILURES: &str = "meet_webhooks_handler_failures_total";
/// Seconds from a verified delivery's body to its answer, whatever the answer.
pub const LATENCY: &str = "meet_webhooks_delivery_seconds";

/// Deliveries waiting in the inbox, by state (`pending`, `dead`).
pub const INBOX_DEPTH: &str = "meet_webhooks_inbox_deliveries";
/// Deliveries per inbox commit.
pub const COMMIT_BATCH: &str = "meet_webhooks_inbox_commit_batch_size";
/// Seconds per inbox commit (including its fsync).
pub const COMMIT_LATENCY: &str = "meet_webhooks_inbox_commit_seconds";
/// Inbox commits that failed.
pub const COMMIT_FAILURES: &str = "meet_webhooks_inbox_commit_failures_total";
/// Handler attempts by event and outcome ([`Attempt`]: `done`, `retry`, `dead`).
pub const HANDLER_ATTEMPTS: &str = "meet_webhooks_handler_attempts_total";
/// Seconds a handler attempt ran, by event.
pub const HANDLER_SECONDS: &str = "meet_webhooks_handler_seconds";
/// Seconds from a delivery's storing (in the transaction whose commit acknowledged it; its
/// replay, for a replayed one) to the start of its handler's first attempt: the rest of that
/// commit, any reorder window, the wait for a handler slot or its room's turn. Measured from
/// the storage's clock to the handling replica's.
pub const HANDLER_LAG: &str = "meet_webhooks_handler_lag_seconds";
/// Deliveries a default method acknowledged without handling them (an unimplemented webhook,
/// or the default fallback), by event.
pub const UNHANDLED: &str = "meet_webhooks_unhandled_total";
/// Deliveries verified, by the key that signed them (`key="1"` for the first given): during a
/// rotation, when the old key stops being used. Never the key itself.
pub const VERIFIED: &str = "meet_webhooks_verified_total";
/// This build: version and spec, as labels of a gauge that is always 1.
pub const BUILD_INFO: &str = "meet_webhooks_build_info";
/// Keys in use (after the last reload).
pub const KEYS: &str = "meet_webhooks_keys";
/// Client connections open now.
pub const OPEN_CONNECTIONS: &str = "meet_webhooks_open_connections";

/// Installs the process's global Prometheus recorder, with buckets fit for each histogram, and
/// a thread for the life of the process that drains recorded histogram samples into their
/// buckets (without it they pile up in memory until the next scrape: a leak when nobody
/// scrapes). For a binary, once; the library never calls it. A service built after it serves
/// it on `GET /metrics` (or pass a handle of your own to
/// [`crate::service::ServiceBuilder::metrics`]).
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let seconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
    // Handlers call out (the Meet API, a download) and deliveries wait out a reorder window.
    let long = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
    let handle = PrometheusBuilder::new()
        .set_buckets(&seconds)?
        .set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.to_owned()), &sizes)?
        .set_buckets_for_metric(Matcher::Full(HANDLER_SECONDS.to_owned()), &long)?
        .set_buckets_for_metric(Matcher::Full(HANDLER_LAG.to_owned()), &long)?
        .install_recorder()?;
    let _ = INSTALLED.set(handle.clone());
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                upkeep.run_upkeep();
            }
        })
        .expect("spawning the metrics upkeep thread");
    Ok(handle)
}

/// The recorder [`install`] installed, if it did.
static INSTALLED: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// The recorder [`install`] installed, for a service built without a handle of its own.
pub(crate) fn installed() -> Option<PrometheusHandle> {
    INSTALLED.get().cloned()
}

/// Sets [`BUILD_INFO`] for a service of `spec`.
pub(crate) fn build_info(spec: &Spec) {
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "spec_title" => spec.title,
        "spec_version" => spec.version
    )
    .set(1.0);
}

/// The `# HELP` line of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DELIVERIES,
        "Deliveries by event and outcome: accepted, fallback, duplicate, handled, or the code of a refusal"
    );
    describe_counter!(HANDLER_FAILURES, "Handler calls that returned an error (without the inbox)");
    describe_histogram!(LATENCY, metrics::Unit::Seconds, "From a verified delivery's body to its answer");
    describe_gauge!(INBOX_DEPTH, "Deliveries in the inbox waiting to be handled (pending) or replayed (dead)");
    describe_histogram!(COMMIT_BATCH, "Deliveries per inbox commit");
    describe_histogram!(COMMIT_LATENCY, metrics::Unit::Seconds, "Inbox commits, their fsync included");
    describe_counter!(COMMIT_FAILURES, "Inbox commits that failed");
    describe_counter!(HANDLER_ATTEMPTS, "Handler attempts by event and outcome: done, retry, dead");
    describe_histogram!(HANDLER_SECONDS, metrics::Unit::Seconds, "Handler attempts, by event");
    describe_histogram!(
        HANDLER_LAG,
        metrics::Unit::Seconds,
        "From a delivery's storing (or replay) to the start of its handler's first attempt"
    );
    describe_counter!(UNHANDLED, "Deliveries a default method acknowledged without handling them, by event");
    describe_counter!(VERIFIED, "Deliveries verified, by the key that signed them (1 = the first key given)");
    describe_gauge!(KEYS, "Keys in use");
    describe_gauge!(OPEN_CONNECTIONS, "Client connections open");
    describe_gauge!(BUILD_INFO, "1, labelled with this build's version and the spec it was generated from");
}

/// The `event` label for an event name from a body: a webhook of the spec, the admin screen's
/// `testEvent`, `""` for none, and `other` for anything else (the provider's body must not
/// decide how many series the metrics hold).
pub(crate) fn event_label(spec: &Spec, event: &str) -> &'static str {
    match event {
        "" => "",
        "testEvent" => "testEvent",
        _ => spec.webhook(event).map_or("other", |w| w.event),
    }
}

/// What became of a delivery: the `outcome` label of [`DELIVERIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored in the inbox, for a typed method.
    Accepted,
    /// Stored for the fallback (or, without the inbox, handled by it).
    Fallback,
    /// A retry of a delivery already taken.
    Duplicate,
    /// Without the inbox: handled by a typed method before the answer.
    Handled,
    /// Refused: the refusal's code.
    Refused(&'static str),
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Fallback => "fallback",
            Self::Duplicate => "duplicate",
            Self::Handled => "handled",
            Self::Refused(code) => code,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How a handler attempt ended: the `outcome` label of [`HANDLER_ATTEMPTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Done,
    Retry,
    Dead,
}

impl Attempt {
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry => "retry",
            Self::Dead => "dead",
        }
    }
}

/// A delivery refused before it was verified (no event is known yet).
pub(crate) fn rejected(code: &'static str) {
    metrics::counter!(DELIVERIES, "event" => "", "outcome" => code).increment(1);
}

/// A verified delivery's outcome.
pub(crate) fn delivered(spec: &Spec, event: &str, outcome: Outcome, latency: Duration) {
    // Looking a labelled counter up in the recorder's registry hashes and allocates its key;
    // per delivery that showed in profiles, so each thread keeps the handles it has used.
    thread_local! {
        static COUNTERS: RefCell<HashMap<(&'static str, &'static str), Counter>> = RefCell::new(HashMap::new());
        static LATENCY_HISTOGRAM: Histogram = metrics::histogram!(LATENCY);
    }
    let (event, outcome) = (event_label(spec, event), outcome.label());
    COUNTERS.with_borrow_mut(|counters| {
        counters
            .entry((event, outcome))
            .or_insert_with(|| metrics::counter!(DELIVERIES, "event" => event, "outcome" => outcome))
            .increment(1);
    });
    LATENCY_HISTOGRAM.with(|h| h.record(latency.as_secs_f64()));
}

pub(crate) fn handler_failed(spec: &Spec, event: &str) {
    metrics::counter!(HANDLER_FAILURES, "event" => event_label(spec, event)).increment(1);
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn inbox_commit(batch: usize, latency: Duration, ok: bool) {
    metrics::histogram!(COMMIT_BATCH).record(batch as f64);
    metrics::histogram!(COMMIT_LATENCY).record(latency.as_secs_f64());
    if !ok {
        metrics::counter!(COMMIT_FAILURES).increment(1);
    }
}

pub(crate) fn inbox_depth(pending: u64, dead: u64) {
    for (state, n) in [("pending", pending), ("dead", dead)] {
        metrics::gauge!(INBOX_DEPTH, "state" => state).set(n as f64);
    }
}

/// A delivery of `event` (already a label: see [`event_label`]) that a default method
/// acknowledged.
pub(crate) fn unhandled(event: &'static str) {
    // Per delivery a default method acknowledges: handles kept per thread, as in `delivered`.
    thread_local! {
        static COUNTERS: RefCell<HashMap<&'static str, Counter>> = RefCell::new(HashMap::new());
    }
    COUNTERS.with_borrow_mut(|counters| {
        counters.entry(event).or_insert_with(|| metrics::counter!(UNHANDLED, "event" => event)).increment(1);
    });
}

/// A delivery verified with the key at `index` (from 0).
pub(crate) fn verified(index: usize) {
    const LABELS: [&str; 9] = ["1", "2", "3", "4", "5", "6", "7", "8", "9+"];
    // As for `delivered`: each thread keeps its handles.
    thread_local! {
        static COUNTERS: RefCell<[Option<Counter>; 9]> = const { RefCell::new([const { None }; 9]) };
    }
    let slot = index.min(LABELS.len() - 1);
    COUNTERS.with_borrow_mut(|counters| {
        counters[slot].get_or_insert_with(|| metrics::counter!(VERIFIED, "key" => LABELS[slot])).increment(1);
    });
}

pub(crate) fn keys_loaded(count: usize) {
    metrics::gauge!(KEYS).set(count as f64);
}

pub(crate) fn open_connections(open: usize) {
    metrics::gauge!(OPEN_CONNECTIONS).set(open as f64);
}

pub(crate) fn handler_attempt(spec: &Spec, event: &str, outcome: Attempt, ran: Duration) {
    // Per handler attempt: handles kept per thread, as in `delivered`.
    /// A handler attempt's counter (by event and outcome) and run-time histogram (by event).
    type AttemptHandles = (Counter, Histogram);
    thread_local! {
        static HANDLES: RefCell<HashMap<(&'static str, &'static str), AttemptHandles>> = RefCell::new(HashMap::new());
    }
    let (event, outcome) = (event_label(spec, event), outcome.label());
    HANDLES.with_borrow_mut(|handles| {
        let (attempts, seconds) = handles.entry((event, outcome)).or_insert_with(|| {
            (
                metrics::counter!(HANDLER_ATTEMPTS, "event" => event, "outcome" => outcome),
                metrics::histogram!(HANDLER_SECONDS, "event" => event),
            )
        });
        attempts.increment(1);
        seconds.record(ran.as_secs_f64());
    });
}

/// A delivery queued at `queued_at_ms` (on the epoch, truncated to the millisecond) starts its
/// first attempt now: the lag is read at most a millisecond long, never short.
pub(crate) fn handler_lag(queued_at_ms: i64) {
    thread_local! {
        static LAG: Histogram = metrics::histogram!(HANDLER_LAG);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let lag = now.as_secs_f64() - queued_at_ms as f64 / 1000.0;
    LAG.with(|h| h.record(lag.max(0.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "client")]
    #[test]
    fn event_labels_are_the_spec_s_events_and_a_few_more() {
        let spec = &crate::snapshots::v3::SPEC;
        let webhook = spec.webhooks[0].event;
        assert_eq!(event_label(spec, webhook), webhook);
        assert_eq!(event_label(spec, "testEvent"), "testEvent");
        assert_eq!(event_label(spec, ""), "");
        assert_eq!(event_label(spec, "anything\nelse"), "other");
    }
}
