//! The `meet-webhooks` command line: `serve` (the default), `send`, `verify`, `spec`.
//!
//! Every setting is a flag and an environment variable (the flag wins); `--help` shows each
//! with its default. A bad value is a start-up error that names the setting.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::{Args, Parser, Subcommand};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::app::{self, DEFAULT_REPLAY_CAPACITY, Receiver};
use crate::handler::ServiceHandler;
use crate::middleware::{DEFAULT_BODY_LIMIT, Gate};
use crate::verify::{Policy, TimestampUnit, Verifier, millis_since_epoch};
use crate::{WEBHOOKS, generated};

#[derive(Debug, Parser)]
#[command(
    name = "meet-webhooks",
    version,
    about = "A verified webhook receiver for OpenVidu Meet",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive webhooks (the default when no command is given).
    Serve(ServeArgs),
    /// Sign and send one event, exactly as OpenVidu Meet does.
    Send(SendArgs),
    /// Check a captured delivery (body on standard input) and say which check it fails.
    Verify(VerifyArgs),
    /// List the webhooks this binary was generated from.
    Spec,
}

#[derive(Debug, Clone, Args)]
struct KeyArgs {
    /// Key(s) that sign deliveries: the OpenVidu Meet API key. Repeat the flag, or separate
    /// keys with commas in the variable, to accept several during a rotation.
    #[arg(long = "key", env = "MEET_WEBHOOKS_KEY", value_delimiter = ',', hide_env_values = true)]
    keys: Vec<String>,
    /// A file with one key per line (added to --key).
    #[arg(long, env = "MEET_WEBHOOKS_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct PolicyArgs {
    /// Oldest acceptable X-Timestamp, in seconds.
    #[arg(long, env = "MEET_WEBHOOKS_MAX_AGE", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    max_age: u64,
    /// How far in the future X-Timestamp may be, in seconds (clock skew).
    #[arg(long, env = "MEET_WEBHOOKS_MAX_FUTURE", default_value_t = 30)]
    max_future: u64,
    /// Unit of X-Timestamp: auto (by magnitude), s or ms.
    #[arg(long, env = "MEET_WEBHOOKS_TIMESTAMP_UNIT", default_value = "auto")]
    timestamp_unit: TimestampUnit,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Address to listen on.
    #[arg(long, env = "MEET_WEBHOOKS_BIND", default_value = "127.0.0.1:5080")]
    bind: SocketAddr,
    /// The path OpenVidu Meet posts every event to.
    #[arg(long, env = "MEET_WEBHOOKS_PATH", default_value = "/webhook", value_parser = parse_path)]
    path: String,
    /// Largest accepted body, in bytes.
    #[arg(long, env = "MEET_WEBHOOKS_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    body_limit: usize,
    /// Seconds a client gets to send its request head, and again its body.
    #[arg(long, env = "MEET_WEBHOOKS_REQUEST_TIMEOUT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout: u64,
    /// Refuse (422) deliveries that match no typed webhook instead of handing them to the
    /// fallback handler.
    #[arg(long, env = "MEET_WEBHOOKS_STRICT")]
    strict: bool,
    /// How many recent deliveries are remembered to acknowledge retries without handling them
    /// twice.
    #[arg(long, env = "MEET_WEBHOOKS_REPLAY_CAPACITY", default_value_t = DEFAULT_REPLAY_CAPACITY)]
    replay_capacity: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "MEET_WEBHOOKS_WORKERS")]
    workers: Option<usize>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The webhook: its event name (recordingStarted), its operationId, or testEvent.
    webhook: String,
    /// The receiver's webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:5080/webhook")]
    url: String,
    /// The key to sign with.
    #[arg(long, env = "MEET_WEBHOOKS_KEY", hide_env_values = true)]
    key: String,
    /// A JSON file with the event's `data` (default: built from the spec's examples).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Unit of X-Timestamp: ms (what the provider sends) or s.
    #[arg(long, default_value = "ms", value_parser = ["ms", "s"])]
    timestamp_unit: String,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The X-Timestamp header of the delivery.
    #[arg(long)]
    timestamp: String,
    /// The X-Signature header of the delivery.
    #[arg(long)]
    signature: String,
}

fn parse_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.contains(char::is_whitespace) {
        Ok(path.to_owned())
    } else {
        Err(format!("{path:?} is not a URL path: it must start with / and have no spaces"))
    }
}

/// Runs the command line; the exit code says whether it worked.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let outcome = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Send(args)) => send(args),
        Some(Command::Verify(args)) => verify(args),
        Some(Command::Spec) => {
            spec();
            Ok(ExitCode::SUCCESS)
        }
    };
    outcome.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    })
}

impl KeyArgs {
    fn collect(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut keys: Vec<Vec<u8>> =
            self.keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec()).collect();
        if let Some(file) = &self.key_file {
            let text = std::fs::read_to_string(file).map_err(|e| format!("--key-file {}: {e}", file.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        if keys.is_empty() {
            return Err("no key: give the OpenVidu Meet API key that signs the webhooks with --key <KEY>, \
                        MEET_WEBHOOKS_KEY=<KEY> or --key-file <FILE>"
                .to_owned());
        }
        Ok(keys)
    }
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            max_age: Duration::from_secs(self.max_age),
            max_future: Duration::from_secs(self.max_future),
            unit: self.timestamp_unit,
        }
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let keys = args.keys.collect()?;
    let verifier = Verifier::new(&keys, args.policy.policy()).map_err(|e| format!("--key: {e}"))?;
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot set up metrics: {e}"))?;
    let timeout = Duration::from_secs(args.request_timeout);
    let gate = web::Data::new(Gate { verifier, body_limit: args.body_limit, body_timeout: timeout });
    let receiver = web::Data::new(Receiver::new(ServiceHandler, &gate, args.strict, args.replay_capacity));
    let (key_count, window) = (gate.verifier.key_count(), app::describe_window(&gate));
    let path = args.path.clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(app::configure(&path, gate.clone(), receiver.clone()))
            .configure(operations(metrics.clone()))
    })
    // Time to receive the request head; the body has its own limit in the middleware.
    .client_request_timeout(timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(Duration::from_secs(75))
    // On SIGINT/SIGTERM: stop accepting, give in-flight deliveries this long, then exit.
    .shutdown_timeout(30);
    let server = match args.workers {
        Some(n) => server.workers(n),
        None => server,
    };
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
    actix_web::rt::System::new().block_on(server.run()).map_err(|e| format!("server failed: {e}"))?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `/healthz`, `/readyz`, `/metrics`.
fn operations(metrics: PrometheusHandle) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(web::Data::new(metrics))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
            .route(
                "/readyz",
                web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ready"})) }),
            )
            .route(
                "/metrics",
                web::get().to(|metrics: web::Data<PrometheusHandle>| async move {
                    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
                }),
            );
    }
}

fn send(args: SendArgs) -> Result<ExitCode, String> {
    use meet_webhooks_client::{Client, Signing, TimestampUnit as Unit, deliver};

    let webhook = WEBHOOKS.iter().find(|w| [w.event, w.operation_id, w.method].contains(&args.webhook.as_str()));
    let event = webhook.map_or(args.webhook.as_str(), |w| w.event);
    let data = match &args.data {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("--data {}: {e}", file.display()))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| format!("--data {}: not JSON: {e}", file.display()))?,
            )
        }
        None => None,
    };
    let mut body = match (webhook, event) {
        (Some(w), _) => {
            serde_json::from_str(w.example).map_err(|e| format!("the spec's example for {event} is not JSON: {e}"))?
        }
        (None, "testEvent") => {
            serde_json::json!({ "data": { "message": "Test webhook from meet-webhooks send" } })
        }
        (None, _) if data.is_some() => serde_json::json!({}),
        (None, other) => {
            let known: Vec<&str> = WEBHOOKS.iter().map(|w| w.event).collect();
            return Err(format!(
                "the spec has no webhook {other:?} (it has: {}, and testEvent); give its --data to send it anyway",
                known.join(", ")
            ));
        }
    };
    body["event"] = event.into();
    body["creationDate"] = millis_since_epoch(SystemTime::now()).into();
    if let Some(data) = data {
        body["data"] = data;
    }
    let unit = if args.timestamp_unit == "s" { Unit::Seconds } else { Unit::Milliseconds };
    let client = Client::new(&args.url, Signing::new(&args.key).unit(unit));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let delivered = runtime.block_on(async {
        match deliver(&client, event, body.clone()).await {
            Ok(Some(delivered)) => Ok(delivered),
            Ok(None) => client.deliver_raw(body.to_string()).await,
            Err(e) => Err(e),
        }
    });
    let delivered = delivered.map_err(|e| e.to_string())?;
    println!("{} {}", delivered.status, delivered.body);
    Ok(if delivered.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn verify(args: VerifyArgs) -> Result<ExitCode, String> {
    let keys = args.keys.collect()?;
    let verifier = Verifier::new(&keys, args.policy.policy()).map_err(|e| format!("--key: {e}"))?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).map_err(|e| format!("cannot read the body from standard input: {e}"))?;
    let (timestamp, signature) = (args.timestamp.as_bytes(), args.signature.as_bytes());
    match verifier.verify_signature(timestamp, signature, &body) {
        Err(e) => {
            println!("invalid: {} ({e})", e.code());
            return Ok(ExitCode::FAILURE);
        }
        Ok(key) => println!("signature: valid (key #{key}, {} body bytes)", body.len()),
    }
    let timestamp_ms = verifier.timestamp_ms(timestamp).map_err(|e| e.to_string())?;
    match verifier.check_window(timestamp_ms, SystemTime::now()) {
        Ok(()) => {
            println!("timestamp: within the window; the receiver would accept this delivery");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("timestamp: {} ({e}); the receiver would refuse it now", e.code());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn spec() {
    println!("{} {} ({} webhooks)", generated::SPEC_TITLE, generated::SPEC_VERSION, WEBHOOKS.len());
    for webhook in WEBHOOKS {
        println!("  {:<24} {:<32} WebhookHandler::{}", webhook.event, webhook.operation_id, webhook.method);
    }
}
