//! Processes killed for real: a receiver with the durable inbox runs as a child process (this
//! test binary, re-run as [`crash_child`]) whose handler appends a line to a file at the start
//! of every run. The file is the handler's own record: it survives the kill (the lines are in
//! the OS's cache), and it counts runs whatever the log says.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use meet_webhooks::WEBHOOKS;
use meet_webhooks::WebhookHandler;
use meet_webhooks_runtime::RetryPolicy;
use meet_webhooks_runtime::Storage;
use meet_webhooks_runtime::inbox::Filter;
use meet_webhooks_runtime::inbox::{Inbox, State};
use meet_webhooks_runtime::{DeliveryContext, HandlerResult, UnmatchedEvent, WebhookInfo};

use crate::common::{InboxOptions, Options, TestServer, admin, block_on, eventually, example, now_ms};
use crate::inbox::try_deliver;

pub const CONCURRENCY: usize = 4;
const MAX_ATTEMPTS: u32 = 3;

/// The handler's own record of its runs, a line per event, one write each (O_APPEND: lines of
/// several processes never mix): `start <recordingId> <attempt> <room> <replica> <ns>
/// <creationDate µs|-> <later in room|-> <later in recording|->` when a run starts (the later
/// events by inbox id, as its context names them), `end ... <ns> ok|failed` when it ends. It fails a delivery's first attempt when
/// the body asks (`data.failFirst`), takes `data.sleepMs` when given, and aborts the process when it asks for that
/// (`data.abort`, a second after it started, so that deliveries sent beside it are
/// acknowledged first, also on a machine busy with other tests), as a handler with a fatal bug
/// would.
struct RunLog {
    file: Mutex<std::fs::File>,
    replica: String,
}

impl RunLog {
    fn line(&self, line: String) -> std::io::Result<()> {
        self.file.lock().unwrap().write_all(line.as_bytes())
    }

    async fn run(&self, ctx: &DeliveryContext) -> HandlerResult {
        let body: serde_json::Value = serde_json::from_slice(&ctx.body)?;
        let recording = body["data"]["recordingId"].as_str().unwrap_or("-");
        let room = body["data"]["roomId"].as_str().unwrap_or("-");
        let what = format!("{recording} {} {room} {}", ctx.attempt, self.replica);
        let id = |later: &Option<meet_webhooks_runtime::LaterEvent>| {
            later.as_ref().map_or("-".to_owned(), |l| l.delivery_id.clone())
        };
        let created = ctx.creation_date.map_or("-".to_owned(), |ms| format!("{}", (ms * 1000.0).round() as i64));
        self.line(format!(
            "start {what} {} {created} {} {}\n",
            nanos(),
            id(&ctx.later_in_room),
            id(&ctx.later_in_recording)
        ))?;
        if body["data"]["abort"] == true {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            std::process::abort();
        }
        // Long enough that two runs of one room at once would overlap.
        let sleep = body["data"]["sleepMs"].as_u64().unwrap_or(2);
        tokio::time::sleep(Duration::from_millis(sleep)).await;
        let fail = body["data"]["failFirst"] == true && ctx.attempt == 1;
        self.line(format!("end {what} {} {}\n", nanos(), if fail { "failed" } else { "ok" }))?;
        if fail { Err("failing the first attempt on purpose".into()) } else { Ok(()) }
    }
}

/// Wall-clock nanoseconds: comparable across processes on one machine.
pub fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

impl WebhookHandler for RunLog {
    async fn unimplemented(&self, ctx: &DeliveryContext, _webhook: &'static WebhookInfo) -> HandlerResult {
        self.run(ctx).await
    }

    async fn fallback(&self, ctx: &DeliveryContext, _event: UnmatchedEvent) -> HandlerResult {
        self.run(ctx).await
    }
}

/// Not a test of its own: the receiver the tests below start, kill and restart. It runs only
/// in a child process that names its data directory (or database) and run log.
#[test]
#[ignore = "the child process of the crash tests"]
fn crash_child() {
    let (Ok(dir), Ok(runs)) = (std::env::var("CRASH_CHILD_DIR"), std::env::var("CRASH_CHILD_RUNS")) else {
        return;
    };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(runs).unwrap();
    if std::env::var_os("CRASH_CHILD_LOG").is_some() {
        meet_webhooks_runtime::logging::init(meet_webhooks_runtime::logging::Format::Json);
    }
    let replica = std::env::var("CRASH_CHILD_REPLICA").unwrap_or_else(|_| "child".into());
    let max_attempts = std::env::var("CRASH_CHILD_MAX_ATTEMPTS").map_or(MAX_ATTEMPTS, |n| n.parse().unwrap());
    let retry = RetryPolicy { max_attempts, base: Duration::from_millis(20), max: Duration::from_millis(100) };
    let lease = std::env::var("CRASH_CHILD_LEASE_MS")
        .map_or(Duration::from_secs(30), |ms| Duration::from_millis(ms.parse().unwrap()));
    let reorder_window = std::env::var("CRASH_CHILD_REORDER_WINDOW_MS")
        .map_or(Duration::ZERO, |ms| Duration::from_millis(ms.parse().unwrap()));
    let inbox = InboxOptions {
        dir: PathBuf::from(dir),
        retry,
        concurrency: CONCURRENCY,
        lease,
        replica: replica.clone(),
        reorder_window,
    };
    let storage = std::env::var("CRASH_CHILD_DATABASE_URL").ok().map(Storage::Postgres);
    let options = Options { inbox: Some(inbox), storage, ..Options::default() };
    let server = TestServer::with_handler(options, RunLog { file: Mutex::new(file), replica });
    // The parent finds it listening (crate::binary::listening).
    let _server = server;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A running child receiver; killed when dropped.
pub struct ChildReceiver {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildReceiver {
    fn start(dir: &Path, runs: &Path) -> Self {
        Self::start_with(dir, runs, &[])
    }

    /// With more settings for the child (`CRASH_CHILD_*`; `CRASH_CHILD_LOG` names a file for its
    /// log, warnings and errors in JSON).
    pub fn start_with(dir: &Path, runs: &Path, env: &[(&str, &str)]) -> Self {
        let log = env.iter().find(|(name, _)| *name == "CRASH_CHILD_LOG");
        let stderr = log.map_or_else(Stdio::null, |(_, path)| std::fs::File::create(path).unwrap().into());
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["crash::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env("CRASH_CHILD_DIR", dir)
            .env("CRASH_CHILD_RUNS", runs)
            .envs(env.iter().copied())
            .env("RUST_LOG", if log.is_some() { "warn" } else { "error" })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Killed and waited for on drop, whatever happens next.
        let mut receiver = Self { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)) };
        let mut stdout = receiver.child.stdout.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        receiver.addr = crate::binary::listening(&mut receiver.child);
        receiver
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for ChildReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the run log.
pub struct Logged {
    pub start: bool,
    pub recording: String,
    pub attempt: u32,
    pub room: String,
    pub replica: String,
    pub nanos: u128,
    /// For an end: whether the run succeeded.
    pub ok: bool,
    /// For a start: the event's `creationDate` (µs), and whether its context said a later event
    /// of its room was handled already.
    pub created: Option<i64>,
    pub late_in_room: bool,
}

/// The run log's whole lines (one may be being written right now).
pub fn logged(path: &Path) -> Vec<Logged> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    whole
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Logged {
                start: f[0] == "start",
                recording: f[1].to_owned(),
                attempt: f[2].parse().unwrap(),
                room: f[3].to_owned(),
                replica: f[4].to_owned(),
                nanos: f[5].parse().unwrap(),
                ok: f.get(6) == Some(&"ok"),
                created: f.get(6).and_then(|c| c.parse().ok()),
                late_in_room: f.get(7).is_some_and(|l| *l != "-"),
            }
        })
        .collect()
}

/// The attempts each recording's handler was started with, from the run log.
fn runs(path: &Path) -> HashMap<String, Vec<u32>> {
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for line in logged(path).into_iter().filter(|l| l.start) {
        runs.entry(line.recording).or_default().push(line.attempt);
    }
    runs
}

fn delivery(recording: &str, room: &str, abort: bool) -> (String, String) {
    let webhook = WEBHOOKS.iter().find(|w| w.event == "recordingStarted").unwrap();
    let mut body = example(webhook);
    body["data"]["recordingId"] = recording.into();
    body["data"]["roomId"] = room.into();
    if abort {
        body["data"]["abort"] = true.into();
    }
    (now_ms().to_string(), body.to_string())
}

#[test]
fn sigkill_in_the_middle_loses_no_acknowledged_delivery_and_handles_few_twice() {
    const N: usize = 800;
    const SENDERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (data, run_log) = (dir.path().join("data"), dir.path().join("runs"));
    let mut first = ChildReceiver::start(&data, &run_log);
    let deliveries: Vec<(String, String)> =
        (0..N).map(|n| delivery(&format!("crash-{n}"), &format!("room-{}", n % 7), false)).collect();
    let addr = first.addr;
    let (acked_tx, acked_rx) = std::sync::mpsc::channel();
    let senders: Vec<_> = deliveries
        .chunks(N / SENDERS)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let acked = acked_tx.clone();
            std::thread::spawn(move || {
                for (timestamp, body) in &chunk {
                    if let Some(status) = try_deliver(addr, timestamp, body) {
                        let _ = acked.send(((timestamp.clone(), body.clone()), status));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    drop(acked_tx);
    // Kill it once a good part has been acknowledged and handled, while deliveries still arrive.
    let mut answered = Vec::new();
    while answered.len() < N / 3 {
        answered.push(acked_rx.recv_timeout(Duration::from_secs(30)).expect("answers keep coming"));
    }
    eventually("handlers ran before the kill", || runs(&run_log).len() >= N / 10);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    for sender in senders {
        sender.join().unwrap();
    }
    answered.extend(acked_rx.iter());
    assert!(answered.iter().all(|(_, status)| *status == 200), "only 200s before the kill");
    let acked: Vec<(String, String)> = answered.into_iter().map(|(d, _)| d).collect();
    assert!(acked.len() >= N / 3 && acked.len() < N, "killed in the middle: {} of {N} acknowledged", acked.len());
    let before_restart = runs(&run_log);

    // Restart on the same data directory: everything acknowledged is there and gets handled.
    let second = ChildReceiver::start(&data, &run_log);
    eventually("nothing pending", || block_on(admin(&data).stats()).unwrap().pending == 0);
    let stored = block_on(admin(&data).list(Filter::All, None, 1_000_000)).unwrap();
    let states: HashMap<String, State> = stored
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (body["data"]["recordingId"].as_str().unwrap().to_owned(), r.state)
        })
        .collect();
    let runs = runs(&run_log);
    for (_, body) in &acked {
        let recording = serde_json::from_str::<serde_json::Value>(body).unwrap()["data"]["recordingId"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(states.get(&recording), Some(&State::Done), "acknowledged {recording} is stored and handled");
        assert!(runs.contains_key(&recording), "acknowledged {recording} reached its handler");
    }
    assert_eq!(states.len(), stored.len(), "each delivery stored once");

    // Handled twice only if the kill came between a handler's claim and the commit of its
    // outcome: at most the handlers that hold a claim at once. The second run is its next
    // attempt: the first one counted when it was claimed.
    let twice: Vec<(&String, &Vec<u32>)> = runs.iter().filter(|(_, attempts)| attempts.len() > 1).collect();
    assert!(twice.len() <= CONCURRENCY, "handled again after the restart: {twice:?}");
    for (recording, attempts) in &twice {
        assert_eq!(attempts[..], [1, 2], "{recording}");
        assert_eq!(before_restart.get(*recording).map(Vec::len), Some(1), "{recording} ran once before the kill");
    }
    eprintln!(
        "crash test: {} of {N} acknowledged before SIGKILL, {} stored, {} handler runs, {} handled again after restart",
        acked.len(),
        stored.len(),
        runs.values().map(Vec::len).sum::<usize>(),
        twice.len()
    );

    // A retry of an acknowledged delivery is still a duplicate after the restart.
    let (timestamp, body) = &acked[0];
    assert_eq!(try_deliver(second.addr, timestamp, body), Some(200));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(block_on(admin(&data).list(Filter::All, None, 1_000_000)).unwrap().len(), stored.len());
}

#[test]
fn a_handler_that_aborts_the_process_ends_dead_after_its_attempts_and_its_room_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run_log) = (dir.path().join("data"), dir.path().join("runs"));
    let mut service = ChildReceiver::start(&data, &run_log);
    // The fatal one first in its room, then one after it in the same room, and one elsewhere.
    for (recording, room, abort) in [("fatal", "r1", true), ("after-fatal", "r1", false), ("elsewhere", "r2", false)] {
        let (timestamp, body) = delivery(recording, room, abort);
        assert_eq!(try_deliver(service.addr, &timestamp, &body), Some(200), "{recording}");
    }
    // Restarted each time it dies, as a supervisor would, until nothing is pending.
    let mut restarts = 0;
    eventually("nothing pending", || {
        if service.exited() {
            restarts += 1;
            assert!(restarts <= MAX_ATTEMPTS as usize, "still crashing after {restarts} restarts");
            service = ChildReceiver::start(&data, &run_log);
        }
        block_on(admin(&data).stats()).unwrap().pending == 0
    });
    let runs = runs(&run_log);
    assert_eq!(runs["fatal"], [1, 2, 3], "one run per attempt, then no more");
    assert_eq!(restarts, MAX_ATTEMPTS as usize, "it killed the process once per attempt");
    assert_eq!(runs["after-fatal"], [1], "its room went on, once");
    assert_eq!(runs["elsewhere"], [1]);
    let stored = block_on(admin(&data).list(Filter::All, None, 10)).unwrap();
    let fatal = stored.iter().find(|r| String::from_utf8_lossy(&r.body).contains("\"fatal\"")).unwrap();
    assert_eq!((fatal.state, fatal.attempts), (State::Dead, MAX_ATTEMPTS));
    assert!(fatal.last_error.as_deref().unwrap().contains("never finished"), "{fatal:?}");
    drop(service);
}
