//! Criterion benchmarks of the request path without the network.
//!
//! - `verify/300B`, `verify/10KB`: the pure HMAC check of a typical and a large delivery.
//! - `in_process/typed`: one delivery through the actix app in process: verification middleware,
//!   replay cache, classification and the typed parse, with a handler that does nothing.
//!
//! `cargo bench --bench verify`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use actix_web::{App, test};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use meet_webhooks_runtime::{DeliveryContext, HandlerResult, WebhookInfo};

fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
use meet_webhooks::{Receiver, WEBHOOKS, WebhookHandler};
use meet_webhooks_runtime::verify::{Policy, Verifier, sign};
use meet_webhooks_runtime::{ServiceBuilder, Storage};

const KEY: &[u8] = b"bench-api-key";

/// A body of about `size` bytes shaped like a recording event, its members in the provider's
/// order (`event` first).
fn body_of(size: usize, n: u64) -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_str(WEBHOOKS[0].example).unwrap();
    body["data"]["recordingId"] = format!("room-{n}--EG_XYZ--XX445").into();
    let padding = size.saturating_sub(body.to_string().len() + 16);
    body["data"]["details"] = "x".repeat(padding).into();
    let event = body.as_object_mut().unwrap().remove("event").unwrap();
    let rest = body.to_string();
    format!("{{\"event\":{event},{}", &rest[1..]).into_bytes()
}

fn verification(c: &mut Criterion) {
    let verifier = Verifier::new(&[KEY], Policy::default()).unwrap();
    let mut group = c.benchmark_group("verify");
    for (name, size) in [("300B", 300), ("10KB", 10 * 1024)] {
        let body = body_of(size, 0);
        let now = SystemTime::now();
        let timestamp = millis_since_epoch(now).to_string();
        let signature = sign(KEY, &timestamp, &body);
        group.throughput(criterion::Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                verifier
                    .verify(black_box(timestamp.as_bytes()), black_box(signature.as_bytes()), black_box(&body), now)
                    .unwrap()
            })
        });
    }
    group.finish();
}

struct Nothing;

impl WebhookHandler for Nothing {
    async fn unimplemented(&self, _: &DeliveryContext, _: &'static WebhookInfo) -> HandlerResult {
        Ok(())
    }
}

fn in_process(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let receiver = ServiceBuilder::new(Receiver::new(Nothing), [KEY])
        .storage(Storage::Inline { replay_capacity: 10_000_000 })
        .build()
        .unwrap();
    let service = system.block_on(test::init_service(App::new().configure(receiver.routes())));
    let counter = AtomicU64::new(0);
    c.bench_function("in_process/typed", |b| {
        b.iter_batched(
            || {
                // Every delivery distinct: a duplicate takes a shorter path.
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = body_of(300, n);
                let timestamp = millis_since_epoch(SystemTime::now()).to_string();
                let signature = sign(KEY, &timestamp, &body);
                test::TestRequest::post()
                    .uri("/webhook")
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("x-timestamp", timestamp))
                    .insert_header(("x-signature", signature))
                    .set_payload(body)
                    .to_request()
            },
            |request| {
                let response = system.block_on(test::call_service(&service, request));
                assert!(response.status().is_success());
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, verification, in_process);
criterion_main!(benches);
