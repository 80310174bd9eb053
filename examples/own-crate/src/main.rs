//! Serves [`RecordingCounter`] inside an actix-web application of this crate's own, with the
//! durable inbox: the same pieces `meet-webhooks serve` assembles.
//!
//! ```sh
//! cargo run                # listens on 127.0.0.1:5081/hooks/openvidu, key "example-key"
//! # from the repository root:
//! cargo run -- send recordingStarted --url http://127.0.0.1:5081/hooks/openvidu --key example-key
//! ```

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use meet_webhooks_runtime::ServiceBuilder;
use own_crate::{Receiver, RecordingCounter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The process-wide parts are this binary's to choose: the logger and the metrics recorder
    // (served on the routes below once installed).
    meet_webhooks_runtime::logging::init(meet_webhooks_runtime::logging::Format::Text);
    meet_webhooks_runtime::metrics::install()?;
    // The inbox, its dispatcher and the verification; every setting not given keeps its default.
    let service = ServiceBuilder::new(Receiver::new(RecordingCounter::default()), ["example-key"])
        .path("/hooks/openvidu")
        .data_dir(std::env::temp_dir().join("meet-webhooks-own-crate"))
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
