//! `meet-webhooks serve`: the receiver, its inbox and dispatcher, and the operations endpoints.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::PrometheusHandle;

use super::{InboxArgs, ServeArgs};
use crate::app::{self, Receiver};
use crate::handler::ServiceHandler;
use crate::inbox::{DEFAULT_LEASE, Dispatcher, Inbox, RetryPolicy, SqliteInbox};
use crate::middleware::Gate;
use crate::verify::Verifier;
use crate::{WEBHOOKS, WebhookHandler, generated};

impl InboxArgs {
    fn open(&self, replay_window: Duration) -> Result<Arc<dyn Inbox>, String> {
        let seconds = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value).map_err(|_| format!("{name} {value}: not a number of seconds"))
        };
        let retention = seconds("--retention-hours", self.retention_hours * 3600.0)?;
        if retention < replay_window {
            return Err(format!(
                "--retention-hours {}: must be at least the replay window ({} s), or a retry could be handled twice",
                self.retention_hours,
                replay_window.as_secs()
            ));
        }
        seconds("--retry-delay", self.retry_delay)?;
        seconds("--retry-max-delay", self.retry_max_delay)?;
        let owner = format!("{}:{}", host_name(), std::process::id());
        let inbox = SqliteInbox::open(&self.data.data_dir, &owner).map_err(|e| format!("--data-dir: {e}"))?;
        Ok(Arc::new(inbox))
    }

    fn dispatcher<H: WebhookHandler>(&self, inbox: Arc<dyn Inbox>, handler: Arc<H>) -> Dispatcher<H> {
        Dispatcher {
            inbox,
            handler,
            concurrency: self.concurrency,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                base: Duration::from_secs_f64(self.retry_delay),
                max: Duration::from_secs_f64(self.retry_max_delay),
            },
            lease: DEFAULT_LEASE,
            retention: Duration::from_secs_f64(self.retention_hours * 3600.0),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
        }
    }
}

pub(super) fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let keys = args.keys.collect()?;
    let verifier = Verifier::new(&keys, args.policy.policy()).map_err(|e| format!("--key: {e}"))?;
    let metrics = crate::metrics::install().map_err(|e| format!("cannot set up metrics: {e}"))?;
    let timeout = Duration::from_secs(args.request_timeout);
    let gate = web::Data::new(Gate { verifier, body_limit: args.body_limit, body_timeout: timeout });
    let handler = Arc::new(ServiceHandler);
    let (receiver, dispatcher) = if args.inbox.no_inbox {
        (Receiver::inline(ServiceHandler, &gate, args.strict, args.replay_capacity), None)
    } else {
        let window = Duration::from_secs(args.policy.max_age + args.policy.max_future);
        let inbox = args.inbox.open(window)?;
        log::info!("inbox: {} ({} handler(s) at once)", inbox.describe(), args.inbox.concurrency);
        let dispatcher = args.inbox.dispatcher(inbox.clone(), handler.clone()).spawn();
        (Receiver::with_inbox(handler, inbox, args.strict), Some(dispatcher))
    };
    let receiver = web::Data::new(receiver);
    let inbox = receiver.inbox().cloned();
    let (key_count, window) = (gate.verifier.key_count(), app::describe_window(&gate));
    let path = args.path.clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(app::configure(&path, gate.clone(), receiver.clone()))
            .configure(operations(metrics.clone(), receiver.inbox().cloned()))
    })
    // Time to receive the request head; the body has its own limit in the middleware.
    .client_request_timeout(timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(Duration::from_secs(75))
    // On SIGINT/SIGTERM: stop accepting, give in-flight deliveries this long, then exit.
    .shutdown_timeout(30);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = server.workers(args.workers.unwrap_or_else(|| default_workers(cores)));
    let server = server.bind(args.bind).map_err(|e| format!("--bind {}: {e}", args.bind))?;
    let bound: Vec<String> = server.addrs().iter().map(ToString::to_string).collect();
    log::info!(
        "meet-webhooks {} listening on http://{}{} (spec {} {}, {} webhooks, {} key(s), {}{})",
        env!("CARGO_PKG_VERSION"),
        bound.join(", http://"),
        args.path,
        generated::SPEC_TITLE,
        generated::SPEC_VERSION,
        WEBHOOKS.len(),
        key_count,
        window,
        if args.strict { ", strict" } else { "" }
    );
    let served = actix_web::rt::System::new().block_on(server.run());
    // The server has stopped taking deliveries; let running handlers finish, then let go of
    // the storage cleanly.
    if let Some(dispatcher) = dispatcher {
        dispatcher.stop();
    }
    if let Some(inbox) = inbox {
        actix_web::rt::System::new().block_on(inbox.close());
    }
    served.map_err(|e| format!("server failed: {e}"))?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `/healthz` (the process is up), `/readyz` (storage takes writes), `/metrics`.
fn operations(metrics: PrometheusHandle, inbox: Option<Arc<dyn Inbox>>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(web::Data::new(metrics))
            .app_data(web::Data::new(inbox))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
            .route(
                "/readyz",
                web::get().to(|inbox: web::Data<Option<Arc<dyn Inbox>>>| async move {
                    match inbox.as_ref() {
                        Some(inbox) => match inbox.check().await {
                            Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
                            Err(e) => {
                                // The detail (paths, causes) is for the log, not the client.
                                log::warn!("not ready: {e}");
                                HttpResponse::ServiceUnavailable().json(serde_json::json!({
                                    "error": "storage_unavailable",
                                    "message": "the inbox cannot take writes; the service log says why"
                                }))
                            }
                        },
                        None => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
                    }
                }),
            )
            .route(
                "/metrics",
                web::get().to(|metrics: web::Data<PrometheusHandle>| async move {
                    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
                }),
            );
    }
}

/// This machine's name, for claims and logs (`localhost` if it has none).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// One HTTP worker per core but one (at least one). The inbox's writer and dispatcher threads
/// need CPU of their own, and an HTTP worker that shares its core with them (or with anything
/// else busy) switches threads more than it serves: on 2 cores, 1 worker measured 21% more
/// deliveries/s than 2 without the inbox and the same with it (bench/run.sh).
fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_core_is_left_for_the_inbox() {
        let workers: Vec<usize> = [0, 1, 2, 4, 16].into_iter().map(super::default_workers).collect();
        assert_eq!(workers, [1, 1, 1, 3, 15]);
    }
}
