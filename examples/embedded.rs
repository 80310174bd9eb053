//! Embedding the receiver in your own actix-web application, with your own handler and the
//! durable inbox: the same pieces `meet-webhooks serve` assembles.
//!
//! ```sh
//! cargo run --example embedded      # listens on 127.0.0.1:5081/hooks/openvidu, key "example-key"
//! cargo run -- send recordingStarted --url http://127.0.0.1:5081/hooks/openvidu --key example-key
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use meet_webhooks::runtime::{DeliveryContext, HandlerResult, UnmatchedEvent};
use meet_webhooks::service::ServiceBuilder;
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The inbox, its dispatcher and the verification, assembled as `meet-webhooks serve`
    // assembles them; every setting not given here keeps its default.
    let service = ServiceBuilder::new(RecordingCounter::default(), ["example-key"])
        .path("/hooks/openvidu")
        .data_dir(std::env::temp_dir().join("meet-webhooks-example"))
        .shutdown_grace(Duration::from_secs(10))
        .build()?;
    let routes = service.routes();

    println!("listening on http://127.0.0.1:5081/hooks/openvidu");
    let server = HttpServer::new(move || {
        App::new()
            .configure(routes.clone())
            .route("/", web::get().to(|| async { HttpResponse::Ok().body("your own routes live here too") }))
    })
    .bind("127.0.0.1:5081")?
    .run();
    actix_web::rt::System::new().block_on(async {
        let served = server.await;
        // Running handlers get their grace period; the inbox is closed cleanly.
        service.shut_down().await;
        Ok(served?)
    })
}
