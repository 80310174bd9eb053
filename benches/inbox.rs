//! Criterion benchmarks of the durable inbox's dispatcher on a backlog.
//!
//! - `drain/one room`: 20,000 pending deliveries of one room (handled one at a time, in
//!   order), worked through by the dispatcher with a handler that only counts.
//! - `drain/1000 rooms`: the same backlog spread over 1,000 rooms (the default number of
//!   handlers at once, `defaults::CONCURRENCY`).
//! - `drain/postgres, 1000 rooms`: that backlog in the PostgreSQL inbox, one replica, on a
//!   fresh database `mw_bench_drain` of the server `MEET_WEBHOOKS_TEST_DATABASE_URL` (default
//!   the local one); left out when there is none.
//!
//! Each delivery carries what the provider's do: a `creationDate` (in order, with a fraction)
//! and a recording, so the inbox keeps each room's and recording's latest handled event as it
//! goes. Throughput is deliveries handled per second, from the dispatcher's start until the
//! handler has seen the last one. `cargo bench --bench inbox`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meet_webhooks::{Receiver, WEBHOOKS, WebhookHandler};
use meet_webhooks_runtime::inbox::{Inbox, Kind, NewDelivery, PgInbox, SqliteInbox};
use meet_webhooks_runtime::{DeliveryContext, HandlerResult, UnmatchedEvent, WebhookInfo};
use meet_webhooks_runtime::{Dispatcher, RetryPolicy};

const BACKLOG: usize = 20_000;

#[derive(Default)]
struct Count(AtomicUsize);

impl WebhookHandler for Count {
    async fn unimplemented(&self, _ctx: &DeliveryContext, _webhook: &'static WebhookInfo) -> HandlerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn fallback(&self, _ctx: &DeliveryContext, _event: UnmatchedEvent) -> HandlerResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Where the backlog is kept.
#[derive(Clone, Copy)]
enum Storage<'a> {
    Sqlite,
    /// A database of this server (its admin URL), made anew for each run.
    Postgres(&'a str),
}

const PG_DATABASE: &str = "mw_bench_drain";

/// Runs `sql` on the server of `admin`.
fn pg_execute(admin: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = connection.await;
        result
    })
}

/// Fills a new inbox with the backlog, then times the dispatcher working through it.
fn drain_once(storage: Storage<'_>, rooms: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let inbox: Arc<dyn Inbox> = match storage {
        Storage::Sqlite => Arc::new(SqliteInbox::open(dir.path(), "bench").unwrap()),
        Storage::Postgres(admin) => {
            pg_execute(admin, &format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")).unwrap();
            pg_execute(admin, &format!("CREATE DATABASE {PG_DATABASE}")).unwrap();
            let base = admin.split('?').next().unwrap();
            let url = format!("{}/{PG_DATABASE}?sslmode=disable", &base[..base.rfind('/').unwrap()]);
            Arc::new(PgInbox::connect(&url, "bench").unwrap())
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let appends = (0..BACKLOG).map(|n| {
            let mut body: serde_json::Value = serde_json::from_str(WEBHOOKS[0].example).unwrap();
            let room = format!("room-{}", n % rooms);
            // As the provider sends them: created in order, with a fraction, two recordings a room.
            let created_us = 1_796_400_000_000_000 + n as i64 * 1000 + 392;
            let recording = format!("{room}--EG_{}", n / rooms % 2);
            body["creationDate"] = (created_us as f64 / 1000.0).into();
            body["data"]["roomId"] = room.clone().into();
            body["data"]["recordingId"] = recording.clone().into();
            body["data"]["seq"] = n.into();
            let inbox = inbox.clone();
            async move {
                let mut signature = [0u8; 32];
                signature[..8].copy_from_slice(&(n as u64).to_le_bytes());
                let delivery = NewDelivery {
                    signature,
                    timestamp: n.to_string(),
                    timestamp_ms: n as i64,
                    event: Some(WEBHOOKS[0].event.into()),
                    kind: Kind::Typed,
                    room: Some(room),
                    body: body.to_string().into(),
                    received_at_ms: n as i64,
                    recording: Some(recording),
                    created_us: Some(created_us),
                    hold: std::time::Duration::ZERO,
                };
                inbox.append(delivery).await.unwrap();
            }
        });
        futures_util::future::join_all(appends).await;
    });
    let handler = Arc::new(Receiver::new(Count::default()));
    let started = Instant::now();
    let dispatcher = Dispatcher {
        inbox: inbox.clone(),
        webhooks: handler.clone(),
        concurrency: meet_webhooks_runtime::defaults::CONCURRENCY,
        retry: RetryPolicy::default(),
        lease: meet_webhooks_runtime::defaults::LEASE,
        retention: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(1),
        poll: meet_webhooks_runtime::defaults::POLL,
    }
    .spawn();
    while handler.0.load(Ordering::Relaxed) < BACKLOG {
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed();
    runtime.block_on(dispatcher.stop());
    runtime.block_on(inbox.close());
    elapsed
}

fn drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain");
    group.sample_size(10).throughput(Throughput::Elements(BACKLOG as u64));
    for (name, rooms) in [("one room", 1), ("1000 rooms", 1000)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| drain_once(Storage::Sqlite, rooms)).sum())
        });
    }
    let admin = std::env::var("MEET_WEBHOOKS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if pg_execute(&admin, "SELECT 1").is_ok() {
        group.bench_function("postgres, 1000 rooms", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| drain_once(Storage::Postgres(&admin), 1000)).sum())
        });
        let _ = pg_execute(&admin, &format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"));
    } else {
        eprintln!("drain/postgres left out: no PostgreSQL at {admin}");
    }
    group.finish();
}

criterion_group!(benches, drain);
criterion_main!(benches);
