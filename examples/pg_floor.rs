//! The PostgreSQL floor for `bench/run.sh`: the inbox's own group-committed insert, driven
//! straight at the database with nothing else (no HTTP, no verification, no handlers), by as
//! many appends in flight as the load tool has connections. What a replica acknowledges can
//! only approach this.
//!
//! ```sh
//! cargo run --release --example pg_floor -- --database-url postgres://postgres@127.0.0.1/bench --seconds 5
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use meet_webhooks_runtime::inbox::{Inbox, Kind, NewDelivery, PgInbox};

#[derive(Parser)]
struct Args {
    /// An empty database to write to.
    #[arg(long, env = "MEET_WEBHOOKS_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Appends waiting for their commit at once.
    #[arg(long, default_value_t = 64)]
    in_flight: u16,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

fn main() {
    let args = Args::parse();
    let inbox = Arc::new(PgInbox::connect(&args.database_url, "floor").unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    }));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let all = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.in_flight)
            .map(|_| {
                let (inbox, counter) = (inbox.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    while Instant::now() < deadline {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let mut signature = [0u8; 32];
                        signature[..8].copy_from_slice(&n.to_le_bytes());
                        let body = format!(
                            r#"{{"event":"recordingStarted","creationDate":{n},"data":{{"recordingId":"room-{n}--EG_X--XX445","roomId":"room-{n}","status":"active"}}}}"#
                        );
                        let delivery = NewDelivery {
                            signature,
                            timestamp: n.to_string(),
                            timestamp_ms: n as i64,
                            event: Some("recordingStarted".into()),
                            kind: Kind::Typed,
                            room: Some(format!("room-{n}")),
                            body: body.into(),
                            received_at_ms: n as i64,
                            recording: None,
                            created_us: None,
                            hold: std::time::Duration::ZERO,
                        };
                        let sent = Instant::now();
                        inbox.append(delivery).await.expect("an append");
                        histogram.record(sent.elapsed().as_micros() as u64).unwrap();
                    }
                    histogram
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for task in tasks {
            all.add(task.await.unwrap()).unwrap();
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let appended = all.len();
    println!(
        "{}",
        serde_json::json!({
            "connections": args.in_flight,
            "seconds": (elapsed * 100.0).round() / 100.0,
            "deliveries": appended,
            "deliveries_per_second": (appended as f64 / elapsed).round(),
            "non_2xx": 0,
            "connection_errors": 0,
            "latency_us": {
                "p50": all.value_at_quantile(0.50),
                "p99": all.value_at_quantile(0.99),
                "p99.9": all.value_at_quantile(0.999),
                "max": all.max(),
            },
        })
    );
}
