//! The routes beside the webhook's: `/healthz`, `/readyz`, `/metrics`, and the 404 that says
//! a webhook URL is wrong.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::web::{self, ServiceConfig};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::inbox::Inbox;

/// `/healthz` (the process is up), `/readyz` (storage takes writes), `/metrics`.
pub(super) fn operations(config: &mut ServiceConfig, metrics: Option<PrometheusHandle>, inbox: Option<Arc<dyn Inbox>>) {
    config
        .app_data(web::Data::new(inbox))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", web::get().to(ready));
    if let Some(metrics) = metrics {
        config.app_data(web::Data::new(metrics)).route("/metrics", web::get().to(render));
    }
}

/// How long a scrape waits for the inbox's counts before it shows the last ones.
const COUNT_WAIT: Duration = Duration::from_secs(2);

/// `/metrics`, with the inbox's pending and dead counts read now (through its partial indexes,
/// on a reader), not as the dispatcher last counted them.
async fn render(metrics: web::Data<PrometheusHandle>, inbox: web::Data<Option<Arc<dyn Inbox>>>) -> HttpResponse {
    if let Some(inbox) = inbox.as_ref()
        && let Ok(Ok(depth)) = tokio::time::timeout(COUNT_WAIT, inbox.depth()).await
    {
        crate::metrics::inbox_depth(depth.pending, depth.dead);
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}

/// Anything but the webhook and ops routes: 404, counted, and said in the log (at most once
/// every 10 s): a POST here is most likely OpenVidu Meet with a wrong webhook URL.
pub(super) async fn not_found(req: actix_web::HttpRequest, path: String) -> HttpResponse {
    static REPORTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    crate::metrics::rejected(crate::error::Rejection::NotFound.code());
    if crate::logging::every(&REPORTED, Duration::from_secs(10)) {
        let peer = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        log::warn!(
            "{} {} from {peer}: 404, not the webhook path {path}; if this is OpenVidu Meet, its webhook URL is \
             wrong (said at most every 10 s; counted as outcome=\"not_found\")",
            req.method(),
            req.path()
        );
    }
    crate::error::Rejection::NotFound.response()
}

async fn ready(inbox: web::Data<Option<Arc<dyn Inbox>>>) -> HttpResponse {
    if let Some(inbox) = inbox.as_ref()
        && let Err(e) = inbox.check().await
    {
        // The detail (paths, causes) is for the log, not the client.
        log::warn!("not ready: {e}");
        return crate::error::Rejection::StorageUnavailable.response();
    }
    HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
}
