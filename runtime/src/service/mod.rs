//! Assembling a running receiver: the one place that knows every default and puts the pieces
//! together (the webhook route behind its verification, the operations routes, the inbox and
//! its dispatcher, metrics), for `meet-webhooks serve`, the tests and an application that embeds
//! the receiver alike.
//!
//! ```ignore
//! // `Receiver` and `ServiceHandler`: the generated adapter and your handler (see the crate docs).
//! let service = ServiceBuilder::new(Receiver::new(ServiceHandler), ["my-openvidu-api-key"])
//!     .data_dir("./data")
//!     .build()?;
//! service.bind("127.0.0.1:5080".parse()?, None)?.run()?;
//! ```
//!
//! To add the routes to an actix-web application of your own instead, call
//! [`Service::routes`] in its `App::configure`, and [`Service::shut_down`] when it stops.
//!
//! Beside the builder here: `keys.rs` (where the verifier's keys come from, and their reload on
//! SIGHUP) and `ops.rs` (the routes beside the webhook's).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, ServiceConfig};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::console::Console;
use crate::dispatch::{Dispatcher, DispatcherHandle, RetryPolicy};
#[cfg(feature = "postgres")]
use crate::inbox::PgInbox;
#[cfg(feature = "sqlite")]
use crate::inbox::SqliteInbox;
use crate::inbox::{Inbox, StoreError};
use crate::middleware::Gate;
use crate::route::{self, Endpoint};
use crate::verify::{KeyError, Policy};
use crate::webhooks::Webhooks;

use crate::defaults;

mod keys;
mod ops;

pub use keys::read_key_file;
use keys::{Keys, reload_on_hangup};
use ops::{not_found, operations};

/// Where deliveries are kept.
pub enum Storage {
    /// The SQLite inbox in this directory (the default: [`crate::defaults::DATA_DIR`]; feature
    /// `sqlite`).
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// The PostgreSQL inbox at this URL, shared with the other replicas that use it (feature
    /// `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(String),
    /// An inbox of your own.
    Inbox(Arc<dyn Inbox>),
    /// None: each delivery is handled before it is answered, and retries are recognised in
    /// memory, up to this many deliveries at once.
    Inline { replay_capacity: usize },
}

/// Why a service could not be built: which setting, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("--key: {0}")]
    Keys(#[from] KeyError),
    #[error("{setting}: {problem}")]
    Setting { setting: &'static str, problem: String },
    #[error("the inbox: {0}")]
    Storage(#[from] StoreError),
}

/// Settings for a [`Service`], each starting at its [`defaults`] value.
pub struct ServiceBuilder<W> {
    webhooks: W,
    keys: Vec<Vec<u8>>,
    key_file: Option<PathBuf>,
    policy: Policy,
    path: String,
    body_limit: usize,
    body_memory: usize,
    request_timeout: Duration,
    keep_alive: Duration,
    max_connections: usize,
    strict: bool,
    /// `None` until chosen, when there is no default (without the `sqlite` feature).
    storage: Option<Storage>,
    concurrency: usize,
    retry: RetryPolicy,
    retention: Duration,
    reorder_window: Duration,
    shutdown_grace: Duration,
    lease: Duration,
    replica_id: String,
    metrics: Option<PrometheusHandle>,
    signals: bool,
    /// The operator's console: its address and token.
    console: Option<(SocketAddr, String)>,
}

impl<W: Webhooks> ServiceBuilder<W> {
    /// A service that verifies deliveries with `keys` (the OpenVidu Meet API keys; several
    /// during a rotation) and hands them to `webhooks`: the generated `Receiver` around your
    /// handler (`Receiver::new(handler)`).
    pub fn new<K: AsRef<[u8]>>(webhooks: W, keys: impl IntoIterator<Item = K>) -> Self {
        Self {
            webhooks,
            keys: keys.into_iter().map(|k| k.as_ref().to_vec()).collect(),
            key_file: None,
            policy: Policy::default(),
            path: defaults::PATH.to_owned(),
            body_limit: defaults::BODY_LIMIT,
            body_memory: defaults::BODY_MEMORY,
            request_timeout: defaults::REQUEST_TIMEOUT,
            keep_alive: defaults::KEEP_ALIVE,
            max_connections: defaults::MAX_CONNECTIONS,
            strict: false,
            storage: default_storage(),
            concurrency: defaults::CONCURRENCY,
            retry: RetryPolicy::default(),
            retention: defaults::RETENTION,
            reorder_window: defaults::REORDER_WINDOW,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            lease: defaults::LEASE,
            replica_id: default_replica_id(),
            metrics: None,
            signals: true,
            console: None,
        }
    }

    /// Keys from this file too, one per line (`#` starts a comment): read at start, and again
    /// on SIGHUP (with [`ServiceBuilder::signals`] on), so a rotation needs no restart.
    pub fn key_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.key_file = Some(file.into());
        self
    }

    /// The timestamp window and unit ([`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The URL path deliveries are posted to ([`crate::defaults::PATH`]).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The largest body accepted ([`crate::defaults::BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Bytes of request bodies received at once, across connections, before they are
    /// verified ([`crate::defaults::BODY_MEMORY`]); past it a delivery gets 503 `overloaded`.
    pub fn body_memory(mut self, bytes: usize) -> Self {
        self.body_memory = bytes;
        self
    }

    /// How long a client gets to send each request head, and again its body
    /// ([`crate::defaults::REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long an idle kept-alive connection stays open ([`crate::defaults::KEEP_ALIVE`]).
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.keep_alive = idle;
        self
    }

    /// Client connections open at once ([`crate::defaults::MAX_CONNECTIONS`]); more wait.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Refuse (422) deliveries that match no typed webhook instead of handing them to the
    /// fallback (off).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Where deliveries are kept ([`Storage::Sqlite`] in [`crate::defaults::DATA_DIR`]; without
    /// the `sqlite` feature there is no default, and [`ServiceBuilder::build`] asks for one).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The SQLite inbox in `dir`.
    #[cfg(feature = "sqlite")]
    pub fn data_dir(self, dir: impl Into<PathBuf>) -> Self {
        self.storage(Storage::Sqlite(dir.into()))
    }

    /// Handlers running at once ([`crate::defaults::CONCURRENCY`]); the events of one room always run
    /// one at a time.
    pub fn concurrency(mut self, handlers: usize) -> Self {
        self.concurrency = handlers;
        self
    }

    /// When failed handlers are tried again ([`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long a delivery of a room waits once stored before it may be handled, so that an
    /// earlier event the provider is retrying arrives first and is handled first
    /// ([`crate::defaults::REORDER_WINDOW`]; zero: handled as soon as its room allows).
    pub fn reorder_window(mut self, window: Duration) -> Self {
        self.reorder_window = window;
        self
    }

    /// How long handled deliveries are kept ([`crate::defaults::RETENTION`]).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long running handlers get to finish on shutdown ([`crate::defaults::SHUTDOWN_GRACE`]).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long a claim lasts unless renewed ([`crate::defaults::LEASE`]): how long another
    /// replica waits before it takes over the deliveries of one that stopped.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The name this process claims deliveries under (host name and pid).
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = id.into();
        self
    }

    /// Serves `GET /metrics` from this recorder. Without it, the one
    /// [`crate::metrics::install`] installed, if it was called before [`ServiceBuilder::build`];
    /// with neither there is no `/metrics` route (the metrics are recorded only once a recorder is).
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Whether SIGINT and SIGTERM stop the server started by [`Bound::run`] (on).
    pub fn signals(mut self, signals: bool) -> Self {
        self.signals = signals;
        self
    }

    /// Serves the operator's console ([`crate::console`]) on `addr`, a listener of its own,
    /// to requests that carry `token` (at least [`crate::defaults::ADMIN_TOKEN_MIN_LEN`] characters).
    /// Off by default; it needs an inbox.
    pub fn console(mut self, addr: SocketAddr, token: impl Into<String>) -> Self {
        self.console = Some((addr, token.into()));
        self
    }

    /// Checks the settings, opens the storage and starts the dispatcher.
    pub fn build(self) -> Result<Service<W>, ServiceError> {
        let invalid = |setting, problem: String| Err(ServiceError::Setting { setting, problem });
        if self.policy.max_age.is_zero() {
            return invalid("--max-age", "must be more than 0".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("--request-timeout", "must be more than 0".into());
        }
        if self.lease < Duration::from_millis(30) {
            return invalid("--lease", "must be at least 30 ms".into());
        }
        if self.concurrency == 0 {
            return invalid("--concurrency", "must be at least 1".into());
        }
        if self.keep_alive.is_zero() {
            return invalid("--keep-alive", "must be more than 0".into());
        }
        if self.max_connections == 0 {
            return invalid("--max-connections", "must be at least 1".into());
        }
        if self.body_memory < self.body_limit {
            return invalid(
                "--body-memory",
                format!("{} bytes cannot hold one body of --body-limit ({} bytes)", self.body_memory, self.body_limit),
            );
        }
        let Some(storage) = self.storage else {
            return invalid(
                "storage",
                "none chosen: give ServiceBuilder::storage an inbox (the sqlite feature, off in this build, makes \
                 SQLite the default)"
                    .into(),
            );
        };
        if let Storage::Inline { replay_capacity: 0 } = storage {
            return invalid(
                "--replay-capacity",
                "must be at least 1 without the inbox: every delivery is remembered to recognise its retries".into(),
            );
        }
        if self.retry.base > self.retry.max {
            return invalid(
                "--retry-delay",
                format!("{:?} is longer than --retry-max-delay ({:?})", self.retry.base, self.retry.max),
            );
        }
        if self.reorder_window > defaults::REORDER_WINDOW_MAX {
            return invalid(
                "--reorder-window",
                format!(
                    "{:?} is longer than {:?}: past the provider's last retry (about 9 s) it only delays handlers",
                    self.reorder_window,
                    defaults::REORDER_WINDOW_MAX
                ),
            );
        }
        let window = self.policy.max_age.saturating_add(self.policy.max_future);
        if !matches!(storage, Storage::Inline { .. }) && self.retention < window {
            return invalid(
                "--retention-hours",
                format!(
                    "{:?} is shorter than the replay window ({window:?}): a retry could be handled twice",
                    self.retention
                ),
            );
        }
        if let Some((_, token)) = &self.console {
            if matches!(storage, Storage::Inline { .. }) {
                return invalid("--admin-bind", "the console shows the inbox: it needs one (not --no-inbox)".into());
            }
            if token.chars().count() < crate::defaults::ADMIN_TOKEN_MIN_LEN {
                return invalid(
                    "--admin-token",
                    format!(
                        "at least {} characters (`openssl rand -hex 32` makes a good one)",
                        crate::defaults::ADMIN_TOKEN_MIN_LEN
                    ),
                );
            }
        }
        let keys = Keys { given: self.keys, file: self.key_file, policy: self.policy };
        let verifier = keys.verifier().map_err(|problem| ServiceError::Setting { setting: "--key-file", problem })?;
        crate::metrics::keys_loaded(verifier.key_count());
        let gate = web::Data::new(Gate {
            verifier: arc_swap::ArcSwap::from_pointee(verifier),
            body_limit: self.body_limit,
            body_timeout: self.request_timeout,
            body_memory: crate::middleware::BodyMemory::new(self.body_memory),
        });
        crate::metrics::build_info(&W::SPEC);
        let webhooks = Arc::new(self.webhooks);
        let (inbox, replay_capacity): (Option<Arc<dyn Inbox>>, usize) = match storage {
            #[cfg(feature = "sqlite")]
            Storage::Sqlite(dir) => (Some(Arc::new(SqliteInbox::open(&dir, &self.replica_id)?)), 0),
            #[cfg(feature = "postgres")]
            Storage::Postgres(url) => (Some(Arc::new(PgInbox::connect(&url, &self.replica_id)?)), 0),
            Storage::Inbox(inbox) => (Some(inbox), 0),
            Storage::Inline { replay_capacity } => (None, replay_capacity),
        };
        let (receiver, dispatcher) = match &inbox {
            Some(inbox) => {
                let dispatcher = Dispatcher {
                    inbox: inbox.clone(),
                    webhooks: webhooks.clone(),
                    concurrency: self.concurrency,
                    retry: self.retry,
                    lease: self.lease,
                    retention: self.retention,
                    shutdown_grace: self.shutdown_grace,
                    poll: crate::defaults::POLL,
                }
                .spawn();
                (Endpoint::with_inbox(webhooks, inbox.clone(), self.strict, self.reorder_window), Some(dispatcher))
            }
            None => (Endpoint::inline(webhooks, self.policy.max_age, self.strict, replay_capacity), None),
        };
        let console = match (self.console, &inbox) {
            (Some((addr, token)), Some(inbox)) => {
                Some((addr, Console::new(&token, inbox.clone(), fallback_reason::<W>)))
            }
            _ => None,
        };
        Ok(Service {
            console,
            keys: Arc::new(keys),
            gate,
            receiver: web::Data::new(receiver),
            inbox,
            dispatcher,
            path: self.path,
            metrics: self.metrics.or_else(crate::metrics::installed),
            request_timeout: self.request_timeout,
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
            body_limit: self.body_limit,
            signals: self.signals,
        })
    }
}

/// A receiver ready to serve: its routes, its inbox and its running dispatcher.
pub struct Service<W> {
    keys: Arc<Keys>,
    gate: web::Data<Gate>,
    receiver: web::Data<Endpoint<W>>,
    inbox: Option<Arc<dyn Inbox>>,
    dispatcher: Option<DispatcherHandle>,
    path: String,
    metrics: Option<PrometheusHandle>,
    request_timeout: Duration,
    keep_alive: Duration,
    max_connections: usize,
    body_limit: usize,
    signals: bool,
    console: Option<(SocketAddr, Console)>,
}

impl<W: Webhooks> Service<W> {
    /// The handler, in the generated `Receiver` it was given in (which derefs to it).
    pub fn handler(&self) -> &Arc<W> {
        &self.receiver.webhooks
    }

    /// The inbox deliveries are kept in (`None` without one).
    pub fn inbox(&self) -> Option<&Arc<dyn Inbox>> {
        self.inbox.as_ref()
    }

    /// The webhook route and `GET /healthz`, `/readyz` and (with a recorder) `/metrics`, for
    /// `App::configure`. Call it once per HTTP worker: the state is shared.
    pub fn routes(&self) -> impl Fn(&mut ServiceConfig) + Clone + Send + 'static {
        let (path, gate, receiver) = (self.path.clone(), self.gate.clone(), self.receiver.clone());
        let (metrics, inbox) = (self.metrics.clone(), self.inbox.clone());
        move |config: &mut ServiceConfig| {
            route::configure(&path, gate.clone(), receiver.clone())(config);
            operations(config, metrics.clone(), inbox.clone());
            let path = path.clone();
            config.default_service(web::to(move |req: actix_web::HttpRequest| not_found(req, path.clone())));
        }
    }

    /// Listens on `addr` (port 0: any free port) with `workers` HTTP threads (default: one per
    /// core but one; the inbox's threads need a core too).
    /// The console's listener is bound here too (its errors name `--admin-bind`).
    pub fn bind(self, addr: SocketAddr, workers: Option<usize>) -> std::io::Result<Bound<W>> {
        let listener = listen(addr, self.max_connections)?;
        let console = match &self.console {
            Some((at, _)) => Some(TcpListener::bind(at).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on --admin-bind {at} for the console: {e}"))
            })?),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Bound { service: self, listener, console, workers: workers.unwrap_or_else(|| default_workers(cores)) })
    }

    /// The console's server on `listener` (one worker; it stops with the webhook's server).
    fn console_server(&self, listener: Option<TcpListener>) -> std::io::Result<Option<actix_web::dev::Server>> {
        let (Some(listener), Some((_, console))) = (listener, &self.console) else { return Ok(None) };
        let routes = console.routes();
        log::info!("the inbox console on http://{}/ (token required)", listener.local_addr()?);
        let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)?
            .run();
        Ok(Some(server))
    }

    /// Stops the dispatcher (running handlers get the grace period) and lets go of the storage,
    /// with whatever threads they started. Call it from the runtime that served the routes (or
    /// any Tokio runtime) once the server has stopped.
    pub async fn shut_down(mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
        if let Some(inbox) = self.inbox.take() {
            inbox.close().await;
        }
    }

    fn server(&self, listener: TcpListener, workers: usize) -> std::io::Result<actix_web::dev::Server> {
        // Always: SIGHUP's default action would end the process (a service manager's reload).
        if self.signals {
            actix_web::rt::spawn(reload_on_hangup(self.keys.clone(), self.gate.clone()));
        }
        let limits = crate::server::Limits {
            workers,
            request_timeout: self.request_timeout,
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
            path: self.path.clone(),
            body_limit: self.body_limit,
            signals: self.signals,
        };
        crate::server::serve(listener, limits, self.routes())
    }

    /// The webhook's server, and the console's if it is on.
    fn servers(
        &self,
        listener: TcpListener,
        console: Option<TcpListener>,
        workers: usize,
    ) -> std::io::Result<(actix_web::dev::Server, Option<actix_web::dev::Server>)> {
        Ok((self.server(listener, workers)?, self.console_server(console)?))
    }

    fn describe(&self, addr: SocketAddr) -> String {
        let verifier = self.gate.verifier.load();
        let policy = verifier.policy();
        format!(
            "meet-webhooks {} listening on http://{addr}{} (spec {} {}, {}, {}, max age {} s, max \
             future {} s, unit {}{}{})",
            env!("CARGO_PKG_VERSION"),
            self.path,
            W::SPEC.title,
            W::SPEC.version,
            counted(W::SPEC.webhooks.len(), "webhook"),
            counted(verifier.key_count(), "key"),
            policy.max_age.as_secs(),
            policy.max_future.as_secs(),
            policy.unit,
            self.inbox.as_ref().map(|i| format!(", inbox {}", i.describe())).unwrap_or_else(|| ", no inbox".into()),
            if self.receiver.strict { ", strict" } else { "" }
        )
    }
}

/// A service with its listening socket.
pub struct Bound<W> {
    service: Service<W>,
    listener: TcpListener,
    console: Option<TcpListener>,
    workers: usize,
}

impl<W: Webhooks> Bound<W> {
    /// The address it listens on (its port, when bound to port 0).
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the console listens on, if it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until SIGINT or SIGTERM (see [`ServiceBuilder::signals`]), then shuts down:
    /// in-flight requests finish, then running handlers get their grace period.
    pub fn run(self) -> std::io::Result<()> {
        let Self { service, listener, console, workers } = self;
        log::info!("{}", service.describe(listener.local_addr()?));
        if let Some(inbox) = &service.inbox {
            match actix_web::rt::System::new().block_on(inbox.depth()) {
                Ok(depth) => log::info!(
                    "inbox: {} pending (handled from now on), {} dead (see `meet-webhooks inbox list --state dead`)",
                    depth.pending,
                    depth.dead
                ),
                Err(e) => log::warn!("inbox: cannot count its deliveries: {e}"),
            }
        }
        let served = actix_web::rt::System::new().block_on(async {
            let served = match service.servers(listener, console, workers) {
                Ok((server, console)) => with_console(server, console).await,
                Err(e) => Err(e),
            };
            service.shut_down().await;
            served
        });
        log::info!("stopped");
        served
    }

    /// Serves on a thread of its own (for tests and tools); [`Running::stop`] ends it.
    pub fn spawn(self) -> std::io::Result<Running<W>> {
        let Self { service, listener, console, workers } = self;
        let addr = listener.local_addr()?;
        let console_addr = console.as_ref().map(TcpListener::local_addr).transpose()?;
        let (handler, inbox) = (service.handler().clone(), service.inbox.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("meet-webhooks-server".into()).spawn(move || {
            actix_web::rt::System::new().block_on(async {
                let served = match service.servers(listener, console, workers) {
                    Ok((server, console)) => {
                        let _ = tx.send(server.handle());
                        with_console(server, console).await
                    }
                    Err(e) => Err(e),
                };
                service.shut_down().await;
                served
            })
        })?;
        let handle = rx.recv().map_err(|_| std::io::Error::other("the server did not start"))?;
        Ok(Running { addr, console_addr, handler, inbox, handle, thread: Some(thread) })
    }
}

/// A service running on its own thread.
pub struct Running<W> {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address the console listens on, if it is on.
    pub console_addr: Option<SocketAddr>,
    handler: Arc<W>,
    inbox: Option<Arc<dyn Inbox>>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl<W> Running<W> {
    /// The handler, in its generated `Receiver` (which derefs to it).
    pub fn handler(&self) -> &Arc<W> {
        &self.handler
    }

    /// The inbox deliveries are kept in (`None` without one).
    pub fn inbox(&self) -> Option<&Arc<dyn Inbox>> {
        self.inbox.as_ref()
    }

    /// Stops as a signal would: in-flight requests finish, then running handlers.
    pub fn stop(mut self) -> std::io::Result<()> {
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err(std::io::Error::other("panicked"))))
    }
}

/// Serves until `server` stops; the console (if any) runs beside it and stops with it.
async fn with_console(server: actix_web::dev::Server, console: Option<actix_web::dev::Server>) -> std::io::Result<()> {
    let Some(console) = console else { return server.await };
    let handle = console.handle();
    let console = actix_web::rt::spawn(console);
    let served = server.await;
    handle.stop(true).await;
    let _ = console.await;
    served
}

/// Why a stored delivery goes to the fallback, as this build classifies it ([`Console`]).
fn fallback_reason<W: Webhooks>(event: Option<&str>, body: &[u8]) -> Option<String> {
    W::classify(event, body).err().map(|reason| reason.to_string())
}

/// SQLite in [`defaults::DATA_DIR`] when the feature is on; else none until one is chosen.
fn default_storage() -> Option<Storage> {
    #[cfg(feature = "sqlite")]
    return Some(Storage::Sqlite(PathBuf::from(defaults::DATA_DIR)));
    #[cfg(not(feature = "sqlite"))]
    None
}

/// `1 webhook`, `5 webhooks`.
fn counted(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// This machine's name and this process's id, for claims and logs.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// One HTTP worker per core but one (at least one). The inbox's writer and dispatcher threads
/// need CPU of their own, and an HTTP worker that shares its core with them (or with anything
/// else busy) switches threads more than it serves (`bench/results/figures-in-code.md`, one-http-worker).
fn default_workers(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// Listens on `addr` with a queue of connections waiting to be accepted as long as the open
/// connections allowed: the provider opens a connection per event, all at once in a burst, and
/// a queue that overflows drops connection attempts, which the client sees as a retry a second
/// or more later. The kernel caps the queue at `net.core.somaxconn`: said once, when it does.
fn listen(addr: SocketAddr, max_connections: usize) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's `TcpListener::bind`: a restart need not wait for the old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(max_connections).unwrap_or(i32::MAX);
    if let Some(cap) = somaxconn().filter(|&cap| cap < backlog) {
        log::info!(
            "the kernel caps the queue of connections waiting to be accepted at {cap} (net.core.somaxconn), under \
             --max-connections {max_connections}: raise it (sysctl net.core.somaxconn={max_connections}) to take \
             bursts that large"
        );
    }
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// The kernel's cap on a listening socket's queue, where it says (Linux).
fn somaxconn() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_core_is_left_for_the_inbox() {
        let workers: Vec<usize> = [0, 1, 2, 4, 16].into_iter().map(super::default_workers).collect();
        assert_eq!(workers, [1, 1, 1, 3, 15]);
    }

    #[cfg(all(not(feature = "sqlite"), feature = "client"))]
    struct Nothing;
    #[cfg(all(not(feature = "sqlite"), feature = "client"))]
    impl crate::snapshots::v3::WebhookHandler for Nothing {}

    /// Without the `sqlite` feature there is no default inbox: the build asks for one rather
    /// than quietly running without durability.
    #[cfg(all(not(feature = "sqlite"), feature = "client"))]
    #[test]
    fn without_sqlite_a_storage_must_be_chosen() {
        use super::{ServiceBuilder, ServiceError, Storage};
        use crate::snapshots::v3::Receiver;
        let unchosen = ServiceBuilder::new(Receiver::new(Nothing), ["k"]).build();
        assert!(matches!(unchosen, Err(ServiceError::Setting { setting: "storage", .. })), "{:?}", unchosen.err());
        let inbox = std::sync::Arc::new(crate::inbox::MemoryInbox::new("test"));
        let service =
            ServiceBuilder::new(Receiver::new(Nothing), ["k"]).storage(Storage::Inbox(inbox)).build().unwrap();
        assert!(service.inbox().is_some());
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(service.shut_down());
    }

    /// With it, SQLite in `./data` is the default.
    #[cfg(feature = "sqlite")]
    #[test]
    fn with_sqlite_the_default_inbox_is_a_file_in_the_data_dir() {
        assert!(
            matches!(super::default_storage(), Some(super::Storage::Sqlite(dir)) if dir == std::path::Path::new("./data"))
        );
    }
}
