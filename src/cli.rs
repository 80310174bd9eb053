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
use metrics_exporter_prometheus::PrometheusHandle;

use std::sync::Arc;

use crate::app::{self, DEFAULT_REPLAY_CAPACITY, Receiver};
use crate::handler::ServiceHandler;
use crate::inbox::{Dispatcher, Filter, Inbox, RetryPolicy, Selection, SqliteStore, State};
use crate::middleware::{DEFAULT_BODY_LIMIT, Gate};
use crate::verify::{Policy, TimestampUnit, Verifier, millis_since_epoch};
use crate::{WEBHOOKS, WebhookHandler, generated};

// No `Debug` on the argument types: they hold keys, which must never be printed.
#[derive(Parser)]
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

#[derive(Subcommand)]
enum Command {
    /// Receive webhooks (the default when no command is given).
    Serve(ServeArgs),
    /// Sign and send one event, exactly as OpenVidu Meet does.
    Send(SendArgs),
    /// Check a captured delivery (body on standard input) and say which check it fails.
    Verify(VerifyArgs),
    /// List the webhooks this binary was generated from.
    Spec,
    /// Look into the inbox and replay deliveries (works while the service runs).
    Inbox(InboxCommand),
}

#[derive(Args)]
struct InboxCommand {
    #[command(flatten)]
    data: DataDirArg,
    #[command(subcommand)]
    action: InboxAction,
}

#[derive(Subcommand)]
enum InboxAction {
    /// List deliveries, oldest first.
    List {
        /// pending, done, dead, fallback (matched no typed webhook) or all.
        #[arg(long, default_value = "all", value_parser = ["pending", "done", "dead", "fallback", "all"])]
        state: String,
        /// Only this event.
        #[arg(long)]
        event: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show one delivery: headers and body as received.
    Show { id: i64 },
    /// Hand deliveries to the handlers again.
    Replay {
        /// The delivery to replay.
        #[arg(required_unless_present_any = ["dead", "fallback"], conflicts_with_all = ["dead", "fallback"])]
        id: Option<i64>,
        /// Every dead delivery.
        #[arg(long, conflicts_with = "fallback")]
        dead: bool,
        /// Every delivery that matched no typed webhook (after rebuilding against a newer spec).
        #[arg(long)]
        fallback: bool,
    },
    /// Count deliveries by state.
    Stats,
}

#[derive(Clone, Args)]
struct KeyArgs {
    /// Key(s) that sign deliveries: the OpenVidu Meet API key. Repeat the flag, or separate
    /// keys with commas in the variable, to accept several during a rotation.
    #[arg(long = "key", env = "MEET_WEBHOOKS_KEY", value_delimiter = ',', hide_env_values = true)]
    keys: Vec<String>,
    /// A file with one key per line (added to --key).
    #[arg(long, env = "MEET_WEBHOOKS_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Clone, Args)]
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

#[derive(Clone, Args)]
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
    #[command(flatten)]
    inbox: InboxArgs,
}

#[derive(Clone, Args)]
struct DataDirArg {
    /// Where the inbox (an SQLite file) lives; created on first start.
    #[arg(long, env = "MEET_WEBHOOKS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Clone, Args)]
struct InboxArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Handle deliveries before answering, without storing them (nothing survives a crash).
    #[arg(long, env = "MEET_WEBHOOKS_NO_INBOX")]
    no_inbox: bool,
    /// Handlers running at once (events of one room always run one at a time, in order).
    #[arg(long, env = "MEET_WEBHOOKS_CONCURRENCY", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    concurrency: usize,
    /// Attempts per delivery before it is dead (kept for `inbox replay`).
    #[arg(long, env = "MEET_WEBHOOKS_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Seconds before the first retry of a failed handler; doubled for each further one.
    #[arg(long, env = "MEET_WEBHOOKS_RETRY_DELAY", default_value_t = 1.0)]
    retry_delay: f64,
    /// Longest wait between retries, in seconds.
    #[arg(long, env = "MEET_WEBHOOKS_RETRY_MAX_DELAY", default_value_t = 300.0)]
    retry_max_delay: f64,
    /// Hours a handled delivery is kept before it is pruned (dead ones are kept until replayed).
    #[arg(long, env = "MEET_WEBHOOKS_RETENTION_HOURS", default_value_t = 168.0)]
    retention_hours: f64,
    /// Seconds running handlers get to finish on shutdown; the rest stay pending.
    #[arg(long, env = "MEET_WEBHOOKS_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
}

impl InboxArgs {
    fn open(&self, replay_window: Duration) -> Result<Inbox, String> {
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
        let store = SqliteStore::open(&self.data.data_dir).map_err(|e| format!("--data-dir: {e}"))?;
        let path = store.path().to_path_buf();
        Ok(Inbox::start(store, path))
    }

    fn dispatcher<H: WebhookHandler>(&self, inbox: Inbox, handler: Arc<H>) -> Dispatcher<H> {
        Dispatcher {
            inbox,
            handler,
            concurrency: self.concurrency,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                base: Duration::from_secs_f64(self.retry_delay),
                max: Duration::from_secs_f64(self.retry_max_delay),
            },
            retention: Duration::from_secs_f64(self.retention_hours * 3600.0),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
        }
    }
}

#[derive(Args)]
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

#[derive(Args)]
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
    crate::logging::init();
    let outcome = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Send(args)) => send(args),
        Some(Command::Verify(args)) => verify(args),
        Some(Command::Spec) => {
            spec();
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Inbox(command)) => inbox(command),
    };
    crate::logging::flush();
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
    let metrics = crate::metrics::install().map_err(|e| format!("cannot set up metrics: {e}"))?;
    let timeout = Duration::from_secs(args.request_timeout);
    let gate = web::Data::new(Gate { verifier, body_limit: args.body_limit, body_timeout: timeout });
    let handler = Arc::new(ServiceHandler);
    let (receiver, dispatcher) = if args.inbox.no_inbox {
        (Receiver::inline(ServiceHandler, &gate, args.strict, args.replay_capacity), None)
    } else {
        let window = Duration::from_secs(args.policy.max_age + args.policy.max_future);
        let inbox = args.inbox.open(window)?;
        log::info!("inbox: {} ({} handler(s) at once)", inbox.path().display(), args.inbox.concurrency);
        let dispatcher = args.inbox.dispatcher(inbox.clone(), handler.clone()).spawn();
        (Receiver::with_inbox(handler, inbox, args.strict), Some(dispatcher))
    };
    let receiver = web::Data::new(receiver);
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
    let served = actix_web::rt::System::new().block_on(server.run());
    // The server has stopped taking deliveries; let running handlers finish.
    if let Some(dispatcher) = dispatcher {
        dispatcher.stop();
    }
    served.map_err(|e| format!("server failed: {e}"))?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `/healthz` (the process is up), `/readyz` (storage takes writes), `/metrics`.
fn operations(metrics: PrometheusHandle, inbox: Option<Inbox>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(web::Data::new(metrics))
            .app_data(web::Data::new(inbox))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
            .route(
                "/readyz",
                web::get().to(|inbox: web::Data<Option<Inbox>>| async move {
                    match inbox.as_ref() {
                        Some(inbox) => match inbox.check().await {
                            Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
                            Err(e) => HttpResponse::ServiceUnavailable()
                                .json(serde_json::json!({"error": "storage_unavailable", "message": e.to_string()})),
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
    let creation_ms = millis_since_epoch(SystemTime::now());
    body["creationDate"] = creation_ms.into();
    if let Some(data) = data {
        body["data"] = data;
    }
    let unit = if args.timestamp_unit == "s" { Unit::Seconds } else { Unit::Milliseconds };
    // As the provider does: X-Timestamp is the event's creationDate.
    let timestamp = if unit == Unit::Seconds { creation_ms / 1000 } else { creation_ms };
    let client = Client::new(&args.url, Signing::new(&args.key).fixed_timestamp(timestamp));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let delivered = runtime.block_on(async {
        match deliver(&client, event, body.clone()).await {
            Ok(Some(delivered)) => Ok(delivered),
            Ok(None) => client.deliver_raw(body.to_string()).await,
            Err(e) => Err(e),
        }
    });
    let delivered = delivered.map_err(|e| e.to_string())?;
    match delivered.body.as_str() {
        "" => println!("{}", delivered.status),
        body => println!("{} {body}", delivered.status),
    }
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
    let handled = |method: &str| match generated::IMPLEMENTED {
        Some((type_name, methods)) if methods.contains(&method) => format!("handled by {type_name}"),
        Some(_) => "default: acknowledged with a warning".to_owned(),
        None => "unknown".to_owned(),
    };
    for webhook in WEBHOOKS {
        println!(
            "  {:<20} {:<28} {:<32} {}",
            webhook.event,
            webhook.operation_id,
            webhook.method,
            handled(webhook.method)
        );
    }
    println!("  {:<20} {:<28} {:<32} {}", "(anything else)", "-", "fallback", handled("fallback"));
}

fn inbox(command: InboxCommand) -> Result<ExitCode, String> {
    let dir = &command.data.data_dir;
    if !dir.join(crate::inbox::FILE_NAME).exists() {
        return Err(format!(
            "--data-dir {}: no inbox there (has the service run with this data directory?)",
            dir.display()
        ));
    }
    let store = SqliteStore::open(dir).map_err(|e| format!("--data-dir: {e}"))?;
    match command.action {
        InboxAction::List { state, event, json, limit } => {
            let filter = match state.as_str() {
                "pending" => Filter::State(State::Pending),
                "done" => Filter::State(State::Done),
                "dead" => Filter::State(State::Dead),
                "fallback" => Filter::Fallback,
                _ => Filter::All,
            };
            for row in store.list(filter, event.as_deref(), limit).map_err(|e| e.to_string())? {
                if json {
                    println!("{}", serde_json::to_string(&row).map_err(|e| e.to_string())?);
                } else {
                    println!(
                        "{:>8}  {:<8} {:<8} {:>2}  {:<24} {}",
                        row.id,
                        row.state.as_str(),
                        row.kind,
                        row.attempts,
                        row.event.as_deref().unwrap_or("-"),
                        row.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        InboxAction::Show { id } => {
            let row = store.get(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("no delivery {id}"))?;
            println!("id: {}\nstate: {} ({}), attempts: {}", row.id, row.state.as_str(), row.kind, row.attempts);
            println!("received_at: {}", row.received_at);
            if let Some(error) = &row.last_error {
                println!("last_error: {error}");
            }
            println!("X-Timestamp: {}\nX-Signature: {}\n", row.timestamp, hex::encode(row.signature));
            println!("{}", String::from_utf8_lossy(&row.body));
        }
        InboxAction::Replay { id, dead, fallback } => {
            let selection = match (id, dead, fallback) {
                (Some(id), _, _) => Selection::One(id),
                (None, true, _) => Selection::Dead,
                _ => Selection::Fallback,
            };
            let n = store.replay(selection).map_err(|e| e.to_string())?;
            if let (0, Selection::One(id)) = (n, selection) {
                return Err(format!("no delivery {id}"));
            }
            println!("{n} delivery(ies) pending again; the running service hands them to the handlers");
        }
        InboxAction::Stats => {
            let stats = store.stats().map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&stats).map_err(|e| e.to_string())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
