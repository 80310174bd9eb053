//! The `meet-webhooks` command line: `serve` (the default), `send`, `verify`, `spec`, `inbox`.
//!
//! Every setting is a flag and an environment variable (the flag wins); `--help` shows each
//! with its default. A bad value is a start-up error that names the setting. This module holds
//! the arguments; each command lives in a module of its own.

mod inbox;
mod inspect;
mod send;
mod serve;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::defaults;
use crate::verify::{Policy, TimestampUnit};
use crate::webhooks::{Spec, Webhooks};

// No `Debug` on the argument types: they hold keys, which must never be printed.
#[derive(Parser)]
#[command(name = "meet-webhooks", version, about = "A verified webhook receiver for OpenVidu Meet")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// Where the inbox is: for `serve` and `inbox` alike, before or after the command.
    #[command(flatten)]
    data: DataDirArg,
    /// Log lines as text, or as one JSON object a line (for log pipelines).
    #[arg(long, global = true, env = "MEET_WEBHOOKS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Receive webhooks (the default when no command is given).
    Serve(Box<ServeCommand>),
    /// Sign and send one event, exactly as OpenVidu Meet does.
    Send(SendArgs),
    /// Check a captured delivery (body on standard input) and say which check it fails.
    Verify(VerifyArgs),
    /// List the webhooks this binary was generated from; `spec diff` compares specs.
    Spec(SpecCommand),
    /// Look into the inbox and replay deliveries (works while the service runs).
    Inbox(InboxCommand),
}

#[derive(Args)]
struct ServeCommand {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    data: DataDirAfter,
}

#[derive(Args)]
struct SpecCommand {
    #[command(subcommand)]
    action: Option<SpecAction>,
}

#[derive(Subcommand)]
enum SpecAction {
    /// What changes for handler code from one spec to another: webhooks and fields added and
    /// removed, types, enum values; each line says whether code that compiled before still does.
    Diff(DiffArgs),
}

#[derive(Args)]
struct DiffArgs {
    /// `[OLD] NEW`: spec folders or root documents. Without OLD, the spec this binary was built
    /// from.
    #[arg(num_args = 1..=2, required = true, value_name = "SPEC")]
    specs: Vec<std::path::PathBuf>,
    /// One JSON object: both specs' names, a summary and every change.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InboxCommand {
    #[command(subcommand)]
    action: InboxAction,
    #[command(flatten)]
    data: DataDirAfter,
}

#[derive(Subcommand)]
enum InboxAction {
    /// List the newest deliveries (oldest of them first, so the newest is last).
    List {
        /// Which deliveries: fallback means those that matched no typed webhook.
        #[arg(long, value_enum, default_value_t = StateFilter::All)]
        state: StateFilter,
        /// Only this event.
        #[arg(long)]
        event: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// How many of the newest to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one delivery: headers and body as received.
    Show {
        id: i64,
        /// Print only the body, byte for byte (nothing added): to pipe into `verify`.
        #[arg(long)]
        body: bool,
    },
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
        /// With --fallback: replay nothing; count the deliveries that would fit a typed webhook
        /// of this build now, and say why the others do not.
        #[arg(long)]
        dry_run: bool,
    },
    /// Count deliveries by state, and say which replica holds which claims.
    Stats {
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `inbox list --state`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StateFilter {
    Pending,
    Done,
    Dead,
    Fallback,
    All,
}

/// The keys from the environment when no `--key` is given: comma-separated, as a list is
/// written in one variable. (A flag's value is one key, commas and all: a key may hold one.)
const KEY_ENV: &str = "MEET_WEBHOOKS_KEY";

#[derive(Clone, Args)]
struct KeyArgs {
    /// A key that signs deliveries: the OpenVidu Meet API key. Repeat the flag to accept
    /// several during a rotation. Without it, MEET_WEBHOOKS_KEY is read: keys separated by
    /// commas.
    #[arg(long = "key")]
    keys: Vec<String>,
    /// A file with one key per line (added to --key).
    #[arg(long, env = "MEET_WEBHOOKS_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Clone, Args)]
struct PolicyArgs {
    /// Oldest acceptable X-Timestamp, in seconds.
    #[arg(long, env = "MEET_WEBHOOKS_MAX_AGE", default_value_t = Seconds(defaults::MAX_AGE), allow_hyphen_values = true)]
    max_age: Seconds,
    /// How far in the future X-Timestamp may be, in seconds (clock skew).
    #[arg(long, env = "MEET_WEBHOOKS_MAX_FUTURE", default_value_t = Seconds(defaults::MAX_FUTURE), allow_hyphen_values = true)]
    max_future: Seconds,
    /// Unit of X-Timestamp: auto (by magnitude), s or ms.
    #[arg(long, env = "MEET_WEBHOOKS_TIMESTAMP_UNIT", default_value_t = TimestampUnit::Auto)]
    timestamp_unit: TimestampUnit,
}

#[derive(Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Address to listen on.
    #[arg(long, env = "MEET_WEBHOOKS_BIND", default_value = defaults::BIND)]
    bind: SocketAddr,
    /// The path OpenVidu Meet posts every event to.
    #[arg(long, env = "MEET_WEBHOOKS_PATH", default_value = defaults::PATH, value_parser = parse_path)]
    path: String,
    /// Largest accepted body, in bytes.
    #[arg(long, env = "MEET_WEBHOOKS_BODY_LIMIT", default_value_t = defaults::BODY_LIMIT, value_parser = in_range(1, 1 << 30))]
    body_limit: usize,
    /// Bytes of request bodies received at once, across connections, before they are
    /// verified; past it a delivery gets 503 overloaded (the provider retries).
    #[arg(long, env = "MEET_WEBHOOKS_BODY_MEMORY", default_value_t = defaults::BODY_MEMORY, value_parser = in_range(1, 1 << 40))]
    body_memory: usize,
    /// Seconds a client gets to send each request head, and again its body.
    #[arg(long, env = "MEET_WEBHOOKS_REQUEST_TIMEOUT", default_value_t = Seconds(defaults::REQUEST_TIMEOUT), allow_hyphen_values = true)]
    request_timeout: Seconds,
    /// Seconds an idle kept-alive connection stays open.
    #[arg(long, env = "MEET_WEBHOOKS_KEEP_ALIVE", default_value_t = Seconds(defaults::KEEP_ALIVE), allow_hyphen_values = true)]
    keep_alive: Seconds,
    /// Client connections open at once; more wait in the kernel's queue (keep it under the
    /// process's file limit, `ulimit -n`).
    #[arg(long, env = "MEET_WEBHOOKS_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS, value_parser = in_range(1, 1_000_000))]
    max_connections: usize,
    /// Refuse (422) deliveries that match no typed webhook instead of handing them to the
    /// fallback handler.
    #[arg(long, env = "MEET_WEBHOOKS_STRICT")]
    strict: bool,
    /// How many recent deliveries are remembered to acknowledge retries without handling them
    /// twice.
    #[arg(long, env = "MEET_WEBHOOKS_REPLAY_CAPACITY", default_value_t = defaults::REPLAY_CAPACITY, value_parser = in_range(1, 100_000_000))]
    replay_capacity: usize,
    /// HTTP worker threads (default: one per core but one, at least one: the inbox's writer
    /// and dispatcher threads need a core too).
    #[arg(long, env = "MEET_WEBHOOKS_WORKERS", value_parser = in_range(1, 1024))]
    workers: Option<usize>,
    #[command(flatten)]
    inbox: InboxArgs,
    #[command(flatten)]
    meet: MeetArgs,
    #[command(flatten)]
    console: ConsoleArgs,
}

/// The operator's console: the inbox on a web page.
#[derive(Clone, Args)]
struct ConsoleArgs {
    /// Serve the inbox console on this address, a listener of its own (keep it off the
    /// provider's network: 127.0.0.1:5081, or behind your VPN). Off by default.
    #[arg(long, env = "MEET_WEBHOOKS_ADMIN_BIND")]
    admin_bind: Option<SocketAddr>,
    /// The console's token, at least 16 characters (`openssl rand -hex 32`).
    #[arg(long, env = "MEET_WEBHOOKS_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// A file whose first line is the console's token.
    #[arg(long, env = "MEET_WEBHOOKS_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

impl ConsoleArgs {
    /// The console's address and token, if it is on; else the flag at fault, and why.
    fn settings(&self) -> Result<Option<(SocketAddr, String)>, (&'static str, String)> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| ("--admin-token-file", format!("{}: {e}", file.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        match (self.admin_bind, token) {
            // The builder checks a token's length too; here the message names the file.
            (Some(_), Some(token))
                if self.admin_token.is_none() && token.chars().count() < crate::defaults::ADMIN_TOKEN_MIN_LEN =>
            {
                Err((
                    "--admin-token-file",
                    format!(
                        "its first line is the token, at least {} characters (`openssl rand -hex 32`)",
                        crate::defaults::ADMIN_TOKEN_MIN_LEN
                    ),
                ))
            }
            (Some(bind), Some(token)) => Ok(Some((bind, token))),
            (Some(_), None) => {
                Err(("--admin-bind", "the console needs a token (--admin-token or --admin-token-file)".into()))
            }
            (None, Some(_)) => Err(("--admin-token", "give --admin-bind too, where the console listens".into())),
            (None, None) => Ok(None),
        }
    }
}

/// Where handlers reach the OpenVidu Meet REST API.
#[derive(Clone, Args)]
struct MeetArgs {
    /// The Meet REST API's base URL (https://meet.example.com/meet/api/v1). Without it handlers
    /// get no Meet client.
    #[arg(long, env = "MEET_WEBHOOKS_MEET_URL")]
    meet_url: Option<String>,
    /// The key for the Meet REST API (X-API-KEY), when it is not the first key that signs the
    /// webhooks (--key).
    #[arg(long, env = "MEET_WEBHOOKS_MEET_API_KEY", hide_env_values = true)]
    meet_api_key: Option<String>,
    /// Seconds a Meet API call may take.
    #[arg(long, env = "MEET_WEBHOOKS_MEET_TIMEOUT", default_value_t = Seconds(crate::meet::TIMEOUT), allow_hyphen_values = true)]
    meet_timeout: Seconds,
}

/// Where the inbox is, given before any command (`meet-webhooks --data-dir X inbox list`) or to
/// `serve` without one.
#[derive(Clone, Args)]
struct DataDirArg {
    /// Where the inbox (an SQLite file) lives; created on first start.
    #[arg(long, env = "MEET_WEBHOOKS_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// Keep the inbox in PostgreSQL instead (postgres://user:password@host/database), shared by
    /// every replica that uses it.
    #[arg(long, env = "MEET_WEBHOOKS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// The same, given after a command that reads the inbox (`serve`, `inbox`, `verify`), anywhere
/// after it: it wins over what was given before. Commands that do not read the inbox (`send`,
/// `spec`) do not take it.
#[derive(Clone, Args)]
struct DataDirAfter {
    /// Where the inbox (an SQLite file) lives [env: MEET_WEBHOOKS_DATA_DIR] [default: ./data]
    #[arg(long = "data-dir", global = true, value_name = "DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the inbox in PostgreSQL instead (postgres://user:password@host/database), shared by
    /// every replica that uses it [env: MEET_WEBHOOKS_DATABASE_URL]
    #[arg(long = "database-url", global = true, value_name = "DATABASE_URL")]
    database_url: Option<String>,
}

impl DataDirAfter {
    /// Where the inbox is: what was given after the command, else before it.
    fn over(self, before: &DataDirArg) -> DataDirArg {
        DataDirArg {
            data_dir: self.data_dir.unwrap_or_else(|| before.data_dir.clone()),
            database_url: self.database_url.or_else(|| before.database_url.clone()),
        }
    }
}

#[derive(Clone, Args)]
struct InboxArgs {
    /// Handle deliveries before answering, without storing them (nothing survives a crash).
    #[arg(long, env = "MEET_WEBHOOKS_NO_INBOX")]
    no_inbox: bool,
    /// Handlers running at once (events of one room always run one at a time, in order).
    #[arg(long, env = "MEET_WEBHOOKS_CONCURRENCY", default_value_t = defaults::CONCURRENCY, value_parser = in_range(1, 100_000))]
    concurrency: usize,
    /// Attempts per delivery before it is dead (kept for `inbox replay`).
    #[arg(long, env = "MEET_WEBHOOKS_MAX_ATTEMPTS", default_value_t = defaults::MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// Seconds a room's delivery waits once stored before it is handled, so that an earlier
    /// event the provider is still retrying is handled first (0: no wait; rooms still run in
    /// creationDate order among what has arrived).
    #[arg(long, env = "MEET_WEBHOOKS_REORDER_WINDOW", default_value_t = Seconds(defaults::REORDER_WINDOW), allow_hyphen_values = true)]
    reorder_window: Seconds,
    /// Seconds before the first retry of a failed handler; doubled for each further one.
    #[arg(long, env = "MEET_WEBHOOKS_RETRY_DELAY", default_value_t = Seconds(defaults::RETRY_DELAY), allow_hyphen_values = true)]
    retry_delay: Seconds,
    /// Longest wait between retries, in seconds.
    #[arg(long, env = "MEET_WEBHOOKS_RETRY_MAX_DELAY", default_value_t = Seconds(defaults::RETRY_MAX_DELAY), allow_hyphen_values = true)]
    retry_max_delay: Seconds,
    /// Hours a handled delivery is kept before it is pruned (dead ones are kept until replayed).
    #[arg(long, env = "MEET_WEBHOOKS_RETENTION_HOURS", default_value_t = Hours(defaults::RETENTION), allow_hyphen_values = true)]
    retention_hours: Hours,
    /// This replica's name in claims and logs (default: host name and pid).
    #[arg(long, env = "MEET_WEBHOOKS_REPLICA_ID")]
    replica_id: Option<String>,
    /// Seconds a claim lasts unless renewed: how long other replicas wait before they take over
    /// the deliveries of one that stopped.
    #[arg(long, env = "MEET_WEBHOOKS_LEASE", default_value_t = Seconds(defaults::LEASE), allow_hyphen_values = true)]
    lease: Seconds,
    /// Seconds running handlers get to finish on shutdown; the rest stay pending.
    #[arg(long, env = "MEET_WEBHOOKS_SHUTDOWN_GRACE", default_value_t = Seconds(defaults::SHUTDOWN_GRACE), allow_hyphen_values = true)]
    shutdown_grace: Seconds,
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
    #[arg(long, default_value_t = TimestampUnit::Milliseconds, value_parser = sending_unit)]
    timestamp_unit: TimestampUnit,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The X-Timestamp header of the delivery.
    #[arg(long, required_unless_present = "inbox", conflicts_with = "inbox")]
    timestamp: Option<String>,
    /// The X-Signature header of the delivery.
    #[arg(long, required_unless_present = "inbox", conflicts_with = "inbox")]
    signature: Option<String>,
    /// Check the delivery of this id stored in the inbox (its headers and body as received),
    /// instead of one on standard input.
    #[arg(long, value_name = "ID")]
    inbox: Option<i64>,
    #[command(flatten)]
    data: DataDirAfter,
}

/// A unit to send timestamps in: `ms` or `s` (`auto` is for receiving).
fn sending_unit(text: &str) -> Result<TimestampUnit, String> {
    match text.parse()? {
        TimestampUnit::Auto => Err("auto is for receiving: send in ms (what the provider sends) or s".into()),
        unit => Ok(unit),
    }
}

fn parse_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.contains(char::is_whitespace) {
        Ok(path.to_owned())
    } else {
        Err(format!("{path:?} is not a URL path: it must start with / and have no spaces"))
    }
}

/// Runs the `meet-webhooks` command line: parses the arguments, installs the logger and, for
/// `serve`, the metrics recorder; the exit code says whether it worked. `serve` builds what it
/// serves with `webhooks` (the generated `Receiver` around the service's handler), given the
/// Meet API's settings when `--meet-url` is set.
pub fn main<W: Webhooks>(webhooks: impl FnOnce(Option<crate::meet::Settings>) -> W) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let cli = Cli::command()
        .version(version_line(&W::SPEC))
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|error| exit_naming_the_variable(&error));
    crate::logging::init(match cli.log_format {
        LogFormat::Text => crate::logging::Format::Text,
        LogFormat::Json => crate::logging::Format::Json,
    });
    let outcome = match cli.command {
        None => serve::serve(webhooks, cli.serve, &cli.data),
        Some(Command::Serve(command)) => {
            let ServeCommand { serve, data } = *command;
            serve::serve(webhooks, serve, &data.over(&cli.data))
        }
        Some(Command::Send(args)) => send::send::<W>(args),
        Some(Command::Verify(args)) => inspect::verify(args, &cli.data),
        Some(Command::Spec(SpecCommand { action: None })) => {
            inspect::spec(&W::SPEC);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Spec(SpecCommand { action: Some(SpecAction::Diff(args)) })) => inspect::diff(&W::SPEC, args),
        Some(Command::Inbox(command)) => {
            let data = command.data.clone().over(&cli.data);
            inbox::inbox::<W>(command, &data)
        }
    };
    crate::logging::flush();
    outcome.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    })
}

/// `0.1.0 (spec OpenVidu Meet Webhooks 1.0.0)`: which spec a binary was built from matters
/// as much as its version.
fn version_line(spec: &Spec) -> String {
    format!("{} (spec {} {})", env!("CARGO_PKG_VERSION"), spec.title, spec.version)
}

/// A whole number from `min` to `max`, said so when it is not.
fn in_range(min: usize, max: usize) -> impl clap::builder::TypedValueParser<Value = usize> {
    move |text: &str| -> Result<usize, String> {
        text.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
    }
}

/// clap's error, and for a bad value the environment variable that may have set it: a value
/// that came from the environment is not on the command line for the user to see.
fn exit_naming_the_variable(error: &clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        error.exit();
    }
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or_default().trim_start_matches('-').to_owned(),
        _ => String::new(),
    };
    let _ = error.print();
    if let Some(variable) = variable_of(&flag) {
        eprintln!("(--{flag} may also come from {variable})");
    }
    std::process::exit(2);
}

/// The environment variable of a flag (`max-age` → `MEET_WEBHOOKS_MAX_AGE`), from clap's
/// own description of the command line.
fn variable_of(flag: &str) -> Option<String> {
    use clap::CommandFactory;
    fn find(command: &clap::Command, flag: &str) -> Option<String> {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .or_else(|| command.get_subcommands().find_map(|c| find(c, flag)))
    }
    find(&Cli::command(), flag.trim_start_matches('-'))
}

impl KeyArgs {
    /// The keys given by flag, or else by the variable.
    fn given(&self) -> Vec<Vec<u8>> {
        let from_env: Vec<String> = match std::env::var(KEY_ENV) {
            Ok(list) if self.keys.is_empty() => list.split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let given = if self.keys.is_empty() { &from_env } else { &self.keys };
        given.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).map(|k| k.as_bytes().to_vec()).collect()
    }

    /// Every key: given, and from the key file.
    fn collect(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut keys = self.given();
        if let Some(file) = &self.key_file {
            keys.extend(crate::service::read_key_file(file).map_err(|e| format!("--key-file {e}"))?);
        }
        if keys.is_empty() {
            return Err(NO_KEY.to_owned());
        }
        Ok(keys)
    }
}

const NO_KEY: &str = "no key: give the OpenVidu Meet API key that signs the webhooks with --key <KEY>, \
                      MEET_WEBHOOKS_KEY=<KEY> or --key-file <FILE>";

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy { max_age: self.max_age.0, max_future: self.max_future.0, unit: self.timestamp_unit }
    }
}

/// A duration given in seconds (fractions allowed), shown in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seconds(Duration);

/// A duration given in hours (fractions allowed), shown in hours.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hours(Duration);

/// At most about 31 years: far beyond any sensible setting, and far from overflowing a
/// timestamp in milliseconds when added to one.
const LONGEST: Duration = Duration::from_secs(1 << 30);

fn parse_duration(text: &str, unit: &str, seconds_per_unit: f64) -> Result<Duration, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of {unit}"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .ok()
        .filter(|d| *d <= LONGEST)
        .ok_or_else(|| format!("{text}: must be from 0 to {} {unit}", LONGEST.as_secs_f64() / seconds_per_unit))
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text, "seconds", 1.0).map(Self)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl FromStr for Hours {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text, "hours", 3600.0).map(Self)
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64() / 3600.0)
    }
}
