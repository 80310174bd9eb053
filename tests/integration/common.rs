//! A real receiver on 127.0.0.1:0 with a handler that records what reached it, and a raw
//! HTTP/1.1 client that can send what a well-behaved client would not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meet_webhooks::{Receiver, WebhookHandler};
use meet_webhooks_runtime::RetryPolicy;
use meet_webhooks_runtime::inbox::{Filter, Inbox, SqliteInbox, Stored};
use meet_webhooks_runtime::verify::{Policy, sign};
use meet_webhooks_runtime::{DeliveryContext, HandlerResult, Unmatched, UnmatchedEvent, WebhookInfo};
use meet_webhooks_runtime::{Running, ServiceBuilder, Storage};

pub const KEY: &str = "test-api-key";
pub const PATH: &str = "/webhook";

/// What reached the handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A typed method (this handler implements none, so each lands in `unimplemented`).
    Typed {
        operation_id: &'static str,
        delivery_id: String,
        attempt: u32,
    },
    Fallback {
        event: Option<String>,
        reason: Unmatched,
    },
}

pub struct Recorder {
    pub calls: Mutex<Vec<Call>>,
    /// Every handler run, typed or fallback: (delivery id, attempt).
    pub runs: Mutex<Vec<(String, u32)>>,
    /// The bodies the fallback received, in order.
    pub fallback_bodies: Mutex<Vec<serde_json::Value>>,
    /// Fail this many calls before succeeding.
    pub failures_left: AtomicU32,
    /// When set, every call waits for a permit of `release` first.
    pub paused: std::sync::atomic::AtomicBool,
    pub release: tokio::sync::Semaphore,
    /// Rooms whose fallback event is being handled right now, and how often a second event of
    /// a room started while one was running.
    pub active_rooms: Mutex<std::collections::HashSet<String>>,
    pub room_overlaps: AtomicU32,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            runs: Mutex::default(),
            fallback_bodies: Mutex::default(),
            failures_left: AtomicU32::new(0),
            paused: std::sync::atomic::AtomicBool::new(false),
            release: tokio::sync::Semaphore::new(0),
            active_rooms: Mutex::default(),
            room_overlaps: AtomicU32::new(0),
        }
    }
}

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn pause(&self) {
        if self.paused.load(Ordering::SeqCst) {
            self.release.acquire().await.unwrap().forget();
        }
    }

    fn record(&self, call: Call) -> HandlerResult {
        self.calls.lock().unwrap().push(call);
        let failing = self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing { Err("the test handler fails on purpose".into()) } else { Ok(()) }
    }
}

impl WebhookHandler for Recorder {
    async fn unimplemented(&self, ctx: &DeliveryContext, webhook: &'static WebhookInfo) -> HandlerResult {
        self.runs.lock().unwrap().push((ctx.delivery_id.clone(), ctx.attempt));
        self.pause().await;
        self.record(Call::Typed {
            operation_id: webhook.operation_id,
            delivery_id: ctx.delivery_id.clone(),
            attempt: ctx.attempt,
        })
    }

    async fn fallback(&self, ctx: &DeliveryContext, event: UnmatchedEvent) -> HandlerResult {
        self.runs.lock().unwrap().push((ctx.delivery_id.clone(), ctx.attempt));
        let room = event.body["data"]["roomId"].as_str().map(str::to_owned);
        if let Some(room) = &room
            && !self.active_rooms.lock().unwrap().insert(room.clone())
        {
            self.room_overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.fallback_bodies.lock().unwrap().push(event.body.into_value());
        self.pause().await;
        if let Some(room) = &room {
            self.active_rooms.lock().unwrap().remove(room);
        }
        self.record(Call::Fallback { event: event.event, reason: event.reason })
    }
}

pub struct Options {
    pub keys: Vec<&'static str>,
    pub policy: Policy,
    pub strict: bool,
    pub body_limit: usize,
    pub timeout: Duration,
    /// Store deliveries in an inbox in this directory, handled by a dispatcher.
    pub inbox: Option<InboxOptions>,
    /// Without the inbox: deliveries remembered for duplicate detection.
    pub replay_capacity: usize,
    /// Where the inbox is, instead of `inbox.dir` (whose other settings still apply).
    pub storage: Option<Storage>,
    pub body_memory: usize,
    pub max_connections: usize,
    pub keep_alive: Duration,
    /// Serve the console on 127.0.0.1:0 with this token.
    pub console: Option<&'static str>,
}

pub struct InboxOptions {
    pub dir: std::path::PathBuf,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub lease: Duration,
    /// This server's name in claims.
    pub replica: String,
    /// Zero unless a test is about it: deliveries are handled at once.
    pub reorder_window: Duration,
}

impl InboxOptions {
    pub fn new(dir: &std::path::Path) -> Self {
        let retry = RetryPolicy { max_attempts: 3, base: Duration::from_millis(20), max: Duration::from_millis(100) };
        Self {
            dir: dir.to_path_buf(),
            retry,
            concurrency: 4,
            lease: Duration::from_secs(30),
            replica: "test".into(),
            reorder_window: Duration::ZERO,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keys: vec![KEY],
            policy: Policy::default(),
            strict: false,
            body_limit: 64 * 1024,
            timeout: Duration::from_secs(5),
            inbox: None,
            replay_capacity: 1000,
            storage: None,
            body_memory: meet_webhooks_runtime::defaults::BODY_MEMORY,
            max_connections: meet_webhooks_runtime::defaults::MAX_CONNECTIONS,
            keep_alive: meet_webhooks_runtime::defaults::KEEP_ALIVE,
            console: None,
        }
    }
}

pub struct TestServer<H: WebhookHandler = Recorder> {
    pub addr: SocketAddr,
    /// Where the console listens, if it is on.
    pub console: Option<SocketAddr>,
    running: Running<Receiver<H>>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::with(Options::default())
    }

    /// Starts a server with a [`Recorder`] on its own thread; it lives until the test process
    /// ends.
    pub fn with(options: Options) -> Self {
        Self::with_handler(options, Recorder::default())
    }

    pub fn recorder(&self) -> &Recorder {
        self.running.handler()
    }
}

impl<H: WebhookHandler> TestServer<H> {
    /// Starts a server with `handler`, assembled as `meet-webhooks serve` assembles its own, on
    /// its own thread; it lives until the test process ends.
    pub fn with_handler(mut options: Options, handler: H) -> Self {
        let storage = match (options.storage.take(), &options.inbox) {
            (Some(storage), _) => storage,
            (None, None) => Storage::Inline { replay_capacity: options.replay_capacity },
            (None, Some(settings)) => Storage::Sqlite(settings.dir.clone()),
        };
        let mut builder = ServiceBuilder::new(Receiver::new(handler), &options.keys)
            .policy(options.policy)
            .path(PATH)
            .strict(options.strict)
            .body_limit(options.body_limit)
            .request_timeout(options.timeout)
            .body_memory(options.body_memory)
            .max_connections(options.max_connections)
            .keep_alive(options.keep_alive)
            .storage(storage)
            .retention(Duration::from_secs(3600))
            .shutdown_grace(Duration::from_secs(1))
            .signals(false);
        if let Some(settings) = &options.inbox {
            builder = builder
                .retry(settings.retry)
                .concurrency(settings.concurrency)
                .lease(settings.lease)
                .reorder_window(settings.reorder_window)
                .replica_id(&settings.replica);
        }
        if let Some(token) = options.console {
            builder = builder.console("127.0.0.1:0".parse().unwrap(), token);
        }
        let bound = builder.build().unwrap().bind("127.0.0.1:0".parse().unwrap(), Some(1)).unwrap();
        let running = bound.spawn().unwrap();
        Self { addr: running.addr, console: running.console_addr, running }
    }

    /// The inbox it keeps deliveries in.
    pub fn inbox(&self) -> &std::sync::Arc<dyn Inbox> {
        self.running.inbox().expect("a server with an inbox")
    }

    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// POSTs a delivery signed with `key` at `timestamp`.
    pub fn deliver(&self, key: &str, timestamp: &str, body: &[u8]) -> Response {
        let signature = sign(key.as_bytes(), timestamp, body);
        self.post(
            &[("content-type", "application/json"), ("x-timestamp", timestamp), ("x-signature", &signature)],
            body,
        )
    }

    /// POSTs `body` with exactly these headers (plus Host, Content-Length, Connection: close).
    pub fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.raw(&post_request(&self.addr.to_string(), headers, body))
    }

    /// Sends raw bytes and reads the answer until the server closes the connection.
    pub fn raw(&self, request: &[u8]) -> Response {
        let mut stream = self.connect();
        stream.write_all(request).unwrap();
        read_response(&mut stream)
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The `error` code of a refusal.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut bytes = Vec::new();
    // Read until the server closes; a reset after a complete answer still counts.
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => panic!("reading the response: {e} (got {:?})", String::from_utf8_lossy(&bytes)),
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head in {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Response { status, head: head.to_owned(), body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// The inbox in `dir`, as the `inbox` CLI opens it beside a running service.
pub fn admin(dir: &std::path::Path) -> SqliteInbox {
    SqliteInbox::open_existing(dir).unwrap()
}

/// Every delivery in the inbox in `dir`, oldest first.
pub fn rows(dir: &std::path::Path) -> Vec<Stored> {
    block_on(admin(dir).list(Filter::All, None, 1_000_000)).unwrap()
}

/// One delivery of the inbox in `dir`.
pub fn row(dir: &std::path::Path, id: i64) -> Stored {
    block_on(admin(dir).get(id)).unwrap().unwrap()
}

/// Now, in milliseconds and seconds, as the provider would write X-Timestamp.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The spec's example body for a webhook, with a fresh `creationDate`.
pub fn example(webhook: &WebhookInfo) -> serde_json::Value {
    let mut body: serde_json::Value = serde_json::from_str(webhook.example).unwrap();
    body["creationDate"] = now_ms().into();
    body
}

/// Waits (bounded) until `done` holds; panics with `what` if it never does.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A complete `POST /webhook` with exactly these headers plus Host, Content-Length and
/// `Connection: close`.
pub fn post_request(host: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST {PATH} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// POSTs `body` to the webhook path of `addr`, signed with `key` now: the answer's status.
pub fn signed_status(addr: SocketAddr, key: &str, body: &str) -> u16 {
    let timestamp = now_ms().to_string();
    let signature = sign(key.as_bytes(), &timestamp, body.as_bytes());
    let headers =
        [("content-type", "application/json"), ("x-timestamp", timestamp.as_str()), ("x-signature", &signature)];
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(&post_request(&addr.to_string(), &headers, body.as_bytes())).unwrap();
    read_response(&mut stream).status
}

/// Held by tests that read the process-wide inbox gauges and by tests whose dispatchers count
/// their inbox often (a short retention): under `cargo test` they share one process, and one
/// dispatcher's count overwrites another's.
pub static INBOX_GAUGES: std::sync::Mutex<()> = std::sync::Mutex::new(());
