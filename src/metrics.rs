//! The service's metrics, named in one place.
//!
//! Recorded through the `metrics` facade (a no-op until a recorder is installed); `serve`
//! installs a Prometheus recorder and exposes it on `GET /metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram};

/// Deliveries by event and outcome (`handled`, `fallback`, `duplicate`, or a rejection code).
pub const DELIVERIES: &str = "meet_webhooks_deliveries_total";
/// Handler calls that returned an error.
pub const HANDLER_FAILURES: &str = "meet_webhooks_handler_failures_total";
/// Seconds from the body's arrival to the answer, for accepted deliveries.
pub const LATENCY: &str = "meet_webhooks_delivery_seconds";

/// Deliveries in the inbox, by state.
pub const INBOX_DEPTH: &str = "meet_webhooks_inbox_deliveries";
/// Deliveries per inbox commit.
pub const COMMIT_BATCH: &str = "meet_webhooks_inbox_commit_batch_size";
/// Seconds per inbox commit (including its fsync).
pub const COMMIT_LATENCY: &str = "meet_webhooks_inbox_commit_seconds";
/// Inbox commits that failed.
pub const COMMIT_FAILURES: &str = "meet_webhooks_inbox_commit_failures_total";
/// Handler attempts by event and outcome (`done`, `retry`, `dead`).
pub const HANDLER_ATTEMPTS: &str = "meet_webhooks_handler_attempts_total";

/// A delivery refused before it was verified (no event is known yet).
pub fn rejected(code: &'static str) {
    metrics::counter!(DELIVERIES, "event" => "", "outcome" => code).increment(1);
}

/// A verified delivery's outcome.
pub fn delivered(event: &str, outcome: &'static str, latency: Duration) {
    // Looking a labelled counter up in the recorder's registry hashes and allocates its key;
    // per delivery that showed in profiles, so each thread keeps the handles it has used.
    thread_local! {
        static COUNTERS: RefCell<HashMap<&'static str, HashMap<Box<str>, Counter>>> = RefCell::new(HashMap::new());
        static LATENCY_HISTOGRAM: Histogram = metrics::histogram!(LATENCY);
    }
    COUNTERS.with_borrow_mut(|counters| {
        let by_event = counters.entry(outcome).or_default();
        match by_event.get(event) {
            Some(counter) => counter.increment(1),
            None => {
                let counter = metrics::counter!(DELIVERIES, "event" => event.to_owned(), "outcome" => outcome);
                counter.increment(1);
                by_event.insert(event.into(), counter);
            }
        }
    });
    LATENCY_HISTOGRAM.with(|h| h.record(latency.as_secs_f64()));
}

pub fn handler_failed(event: &str) {
    metrics::counter!(HANDLER_FAILURES, "event" => event.to_owned()).increment(1);
}

pub fn inbox_commit(batch: usize, latency: Duration, ok: bool) {
    metrics::histogram!(COMMIT_BATCH).record(batch as f64);
    metrics::histogram!(COMMIT_LATENCY).record(latency.as_secs_f64());
    if !ok {
        metrics::counter!(COMMIT_FAILURES).increment(1);
    }
}

pub fn inbox_depth(stats: &crate::inbox::Stats) {
    for (state, n) in [("pending", stats.pending), ("done", stats.done), ("dead", stats.dead)] {
        metrics::gauge!(INBOX_DEPTH, "state" => state).set(n as f64);
    }
}

pub fn handler_attempt(event: &str, outcome: &'static str) {
    metrics::counter!(HANDLER_ATTEMPTS, "event" => event.to_owned(), "outcome" => outcome).increment(1);
}
