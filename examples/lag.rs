//! The service with a handler that measures how long deliveries wait: for each delivery's first
//! attempt, the time from its storing in the transaction that acknowledged it
//! (`DeliveryContext::queued_at`, whole milliseconds, so read up to a millisecond long) to the
//! handler's start, as `meet_webhooks_handler_lag_seconds` counts it. For `bench/lag.py`.
//!
//! ```sh
//! MEET_WEBHOOKS_LAG_FILE=lag.json cargo run --release --example lag -- serve --key secret
//! ```
//!
//! Every 200 ms it writes the figures so far to `MEET_WEBHOOKS_LAG_FILE` as one JSON object:
//! `{"count": …, "p50_us": …, "p99_us": …, "max_us": …, "values": [[µs, count], …],
//! "from_receipt": [[µs, count], …]}` (the values let several replicas' figures be merged;
//! `from_receipt` is the same wait counted from the receipt, `received_at`, so with the answer's
//! commit). Every flag of `meet-webhooks serve` applies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use meet_webhooks::{Receiver, WebhookHandler};
use meet_webhooks_runtime::{DeliveryContext, HandlerResult, UnmatchedEvent, WebhookInfo};

/// Records each first attempt's wait: from its storing (`queued_at`), and from its receipt.
#[derive(Clone)]
struct Lag(Arc<Mutex<[Histogram<u64>; 2]>>);

impl Lag {
    fn record(&self, ctx: &DeliveryContext) -> HandlerResult {
        if ctx.attempt == 1 {
            let now = SystemTime::now();
            let mut figures = self.0.lock().unwrap();
            for (histogram, since) in figures.iter_mut().zip([ctx.queued_at, ctx.received_at]) {
                let us = u64::try_from(now.duration_since(since).unwrap_or_default().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(us.max(1));
            }
        }
        Ok(())
    }
}

impl WebhookHandler for Lag {
    async fn unimplemented(&self, ctx: &DeliveryContext, _webhook: &'static WebhookInfo) -> HandlerResult {
        self.record(ctx)
    }

    async fn fallback(&self, ctx: &DeliveryContext, _event: UnmatchedEvent) -> HandlerResult {
        self.record(ctx)
    }
}

fn main() -> std::process::ExitCode {
    let histogram = || Histogram::new_with_bounds(1, 600_000_000, 4).unwrap();
    let lag = Lag(Arc::new(Mutex::new([histogram(), histogram()])));
    if let Some(file) = std::env::var_os("MEET_WEBHOOKS_LAG_FILE") {
        let figures = lag.0.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let [h, receipt] = figures.lock().unwrap().clone();
                let values = |h: &Histogram<u64>| {
                    h.iter_recorded().map(|v| [v.value_iterated_to(), v.count_at_value()]).collect::<Vec<_>>()
                };
                let json = serde_json::json!({
                    "count": h.len(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p99_us": h.value_at_quantile(0.99),
                    "max_us": h.max(),
                    "values": values(&h),
                    "from_receipt": values(&receipt),
                });
                let partial = std::path::PathBuf::from(&file).with_extension("partial");
                if std::fs::write(&partial, json.to_string()).is_ok() {
                    let _ = std::fs::rename(&partial, &file);
                }
            }
        });
    }
    meet_webhooks_runtime::cli::main(move |_meet| Receiver::new(lag))
}
