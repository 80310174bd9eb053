//! The service's metrics, named in one place.
//!
//! Recorded through the `metrics` facade (a no-op until a recorder is installed); `serve`
//! installs a Prometheus recorder and exposes it on `GET /metrics`.

use std::time::Duration;

/// Deliveries by event and outcome (`handled`, `fallback`, `duplicate`, or a rejection code).
pub const DELIVERIES: &str = "meet_webhooks_deliveries_total";
/// Handler calls that returned an error.
pub const HANDLER_FAILURES: &str = "meet_webhooks_handler_failures_total";
/// Seconds from the body's arrival to the answer, for accepted deliveries.
pub const LATENCY: &str = "meet_webhooks_delivery_seconds";

/// A delivery refused before it was verified (no event is known yet).
pub fn rejected(code: &'static str) {
    metrics::counter!(DELIVERIES, "event" => "", "outcome" => code).increment(1);
}

/// A verified delivery's outcome.
pub fn delivered(event: &str, outcome: &'static str, latency: Duration) {
    metrics::counter!(DELIVERIES, "event" => event.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(LATENCY).record(latency.as_secs_f64());
}

pub fn handler_failed(event: &str) {
    metrics::counter!(HANDLER_FAILURES, "event" => event.to_owned()).increment(1);
}
