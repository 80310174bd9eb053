//! Embedding the receiver in your own actix-web application, with your own handler and the
//! durable inbox: the same pieces `meet-webhooks serve` assembles.
//!
//! ```sh
//! cargo run --example embedded      # listens on 127.0.0.1:5081/hooks/openvidu, key "example-key"
//! cargo run -- send recordingStarted --url http://127.0.0.1:5081/hooks/openvidu --key example-key
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use meet_webhooks::app::{self, Receiver};
use meet_webhooks::inbox::{DEFAULT_LEASE, Dispatcher, Inbox, RetryPolicy, SqliteInbox};
use meet_webhooks::middleware::Gate;
use meet_webhooks::runtime::{DeliveryContext, HandlerResult, UnmatchedEvent};
use meet_webhooks::verify::{Policy, Verifier};
use meet_webhooks::{WebhookHandler, types};

/// Counts recordings; everything else gets the generated defaults.
#[derive(Default)]
struct RecordingCounter {
    started: AtomicU64,
}

impl WebhookHandler for RecordingCounter {
    async fn recording_started_webhook(
        &self,
        ctx: &DeliveryContext,
        body: types::RecordingStartedWebhookBody,
    ) -> HandlerResult {
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        println!("recording #{n} started (delivery {}, attempt {}): {:?}", ctx.delivery_id, ctx.attempt, body.data);
        Ok(())
    }

    async fn fallback(&self, ctx: &DeliveryContext, event: UnmatchedEvent) -> HandlerResult {
        println!("delivery {} kept for later: {:?} ({})", ctx.delivery_id, event.event, event.reason);
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let verifier = Verifier::new(&["example-key"], Policy::default()).expect("a key");
    let gate = web::Data::new(Gate { verifier, body_limit: 1 << 20, body_timeout: Duration::from_secs(5) });

    let data_dir = std::env::temp_dir().join("meet-webhooks-example");
    let inbox: Arc<dyn Inbox> =
        Arc::new(SqliteInbox::open(&data_dir, "embedded-example").map_err(std::io::Error::other)?);
    let handler = Arc::new(RecordingCounter::default());
    let dispatcher = Dispatcher {
        inbox: inbox.clone(),
        handler: handler.clone(),
        concurrency: 4,
        retry: RetryPolicy::default(),
        lease: DEFAULT_LEASE,
        retention: Duration::from_secs(24 * 3600),
        shutdown_grace: Duration::from_secs(10),
    }
    .spawn();
    let receiver = web::Data::new(Receiver::with_inbox(handler, inbox.clone(), false));

    println!("listening on http://127.0.0.1:5081/hooks/openvidu");
    let served = actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            App::new()
                .configure(app::configure("/hooks/openvidu", gate.clone(), receiver.clone()))
                .route("/", web::get().to(|| async { HttpResponse::Ok().body("your own routes live here too") }))
        })
        .bind("127.0.0.1:5081")?
        .run(),
    );
    dispatcher.stop();
    actix_web::rt::System::new().block_on(inbox.close());
    served
}
