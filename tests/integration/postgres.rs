//! The PostgreSQL inbox on a real server: each test makes a database of its own and drops it.
//!
//! The server is `MEET_WEBHOOKS_TEST_DATABASE_URL` (default: the local one,
//! `postgres://postgres@127.0.0.1:5432/test`). Without one these tests say so in one line and
//! pass; with `MEET_WEBHOOKS_REQUIRE_POSTGRES=1` (CI) they fail instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meet_webhooks_runtime::Storage;
use meet_webhooks_runtime::inbox::{
    Appended, ClaimRequest, Completed, Completion, Filter, Handed, Inbox, Kind, NewDelivery, Offer, Outcome, PgInbox,
    Slots, State,
};

use crate::common::{InboxOptions, Options, TestServer, block_on, eventually, now_ms};
use crate::inbox::{mixed_delivery, try_deliver};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of the test's own, dropped at the end.
pub struct TestDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// `None` (and one printed line) when there is no server and none is required.
    pub fn create() -> Option<Self> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var("MEET_WEBHOOKS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let name = format!("mw_test_{}_{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        match execute(&admin, &format!("CREATE DATABASE {name}")) {
            Ok(()) => {}
            Err(e) if std::env::var_os("MEET_WEBHOOKS_REQUIRE_POSTGRES").is_some() => {
                panic!("PostgreSQL at {admin} is required (MEET_WEBHOOKS_REQUIRE_POSTGRES) but unusable: {e}")
            }
            Err(e) => {
                eprintln!(
                    "skipped: no PostgreSQL at {admin} ({e}); set MEET_WEBHOOKS_TEST_DATABASE_URL to run these tests"
                );
                return None;
            }
        }
        let base = admin.split('?').next().unwrap();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        Some(Self { admin, name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = execute(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = connection.await;
        result
    })
}

fn delivery(n: u8, room: Option<&str>) -> NewDelivery {
    NewDelivery {
        signature: [n; 32],
        timestamp: n.to_string(),
        timestamp_ms: i64::from(n),
        event: Some("roomTest".into()),
        kind: Kind::Fallback,
        room: room.map(Into::into),
        body: format!("{{\"n\":{n}}}").into(),
        received_at_ms: now_ms(),
        recording: None,
        created_us: None,
        hold: std::time::Duration::ZERO,
    }
}

#[test]
fn a_delivery_stored_before_queued_at_was_kept_is_read_as_queued_at_its_receipt() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let mut old = delivery(1, None);
    old.received_at_ms = 1_000;
    let Appended::New(id) = block_on(inbox.append(old)).unwrap() else { panic!("new") };
    // What schema version 5 left on the rows stored before it.
    execute(&db.url, "UPDATE deliveries SET queued_at = NULL").unwrap();
    block_on(async {
        assert_eq!(inbox.get(id).await.unwrap().unwrap().queued_at, 1_000);
        let claimed = inbox.claim(request(10, Duration::from_secs(30))).await.unwrap();
        assert_eq!(claimed.iter().map(|c| (c.claim.id, c.delivery.queued_at)).collect::<Vec<_>>(), [(id, 1_000)]);
        inbox.close().await;
    });
}

fn request(limit: usize, lease: Duration) -> ClaimRequest {
    ClaimRequest { limit, lease, max_attempts: 3 }
}

fn ids(claimed: &[meet_webhooks_runtime::inbox::Claimed]) -> Vec<i64> {
    claimed.iter().map(|c| c.claim.id).collect()
}

#[test]
fn two_replicas_share_duplicates_claims_room_order_and_fencing() {
    let Some(db) = TestDatabase::create() else { return };
    let a = PgInbox::connect(&db.url, "replica-a").unwrap();
    let b = PgInbox::connect(&db.url, "replica-b").unwrap();
    let lease = Duration::from_secs(30);
    block_on(async {
        // A retry that reaches the other replica is a duplicate.
        let Appended::New(first) = a.append(delivery(1, Some("r"))).await.unwrap() else { panic!() };
        assert_eq!(b.append(delivery(1, Some("r"))).await.unwrap(), Appended::Duplicate(first));
        // Room r's later events, taken by either replica, and another room.
        let Appended::New(second) = b.append(delivery(2, Some("r"))).await.unwrap() else { panic!() };
        let Appended::New(third) = a.append(delivery(3, Some("r"))).await.unwrap() else { panic!() };
        let Appended::New(other) = b.append(delivery(4, Some("s"))).await.unwrap() else { panic!() };

        // One claim at a time, a room's head only, whichever replica asks.
        let claimed = a.claim(request(10, lease)).await.unwrap();
        assert_eq!(ids(&claimed), [first, other]);
        assert!(claimed.iter().all(|c| c.attempt == 1));
        assert!(b.claim(request(10, lease)).await.unwrap().is_empty(), "nothing claimed twice; r waits");
        let done = Completion { claim: claimed[0].claim, kind: Kind::Fallback, outcome: Outcome::Done };
        assert_eq!(a.complete(&[done]).await.unwrap(), [Completed::Recorded]);
        let next = b.claim(request(10, Duration::from_millis(50))).await.unwrap();
        assert_eq!(ids(&next), [second], "room r goes on in commit order, on the other replica");
        assert_eq!(b.stats().await.unwrap().claimed_by, [("replica-a".to_owned(), 1), ("replica-b".to_owned(), 1)]);

        // B stops renewing: after its lease (the database's clock) A takes the delivery over,
        // and B's late outcome and renewal change nothing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let taken = a.claim(request(10, lease)).await.unwrap();
        assert_eq!(ids(&taken), [second]);
        assert_eq!(taken[0].attempt, 2);
        let late = Completion { claim: next[0].claim, kind: Kind::Fallback, outcome: Outcome::Done };
        assert_eq!(b.complete(&[late]).await.unwrap(), [Completed::Fenced]);
        assert_eq!(b.renew(&[next[0].claim], lease).await.unwrap(), [next[0].claim]);
        assert_eq!(a.get(second).await.unwrap().unwrap().state, State::Pending);
        let (completed, then) = a
            .complete_and_claim(
                &[Completion { claim: taken[0].claim, kind: Kind::Fallback, outcome: Outcome::Done }],
                request(10, lease),
            )
            .await
            .unwrap();
        assert_eq!(completed, [Completed::Recorded]);
        assert_eq!(ids(&then), [third], "the outcome and the room's next claim in one commit");

        // A dead delivery replayed goes back to its room.
        let dead =
            Completion { claim: then[0].claim, kind: Kind::Fallback, outcome: Outcome::Dead { error: "boom".into() } };
        a.complete(&[dead]).await.unwrap();
        assert_eq!(a.list(Filter::State(State::Dead), None, 10).await.unwrap().len(), 1);
        assert_eq!(b.replay(meet_webhooks_runtime::inbox::Selection::Dead).await.unwrap(), 1);
        let again = b.claim(request(10, lease)).await.unwrap();
        assert_eq!((ids(&again), again[0].attempt), (vec![third], 1));

        // A lease that ran out while nobody claimed the delivery again: its outcome still counts
        // (the fence is its own), so the delivery is not handled a second time.
        let Appended::New(late_but_alone) = a.append(delivery(5, Some("t"))).await.unwrap() else { panic!() };
        let short = b.claim(request(10, Duration::from_millis(50))).await.unwrap();
        assert_eq!(ids(&short), [late_but_alone]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = Completion { claim: short[0].claim, kind: Kind::Fallback, outcome: Outcome::Done };
        assert_eq!(b.complete(&[done]).await.unwrap(), [Completed::Recorded]);
        assert_eq!(a.get(late_but_alone).await.unwrap().unwrap().state, State::Done);
        a.close().await;
        b.close().await;
    });
}

#[test]
fn an_earlier_arrival_leaves_its_room_s_head_to_a_claim_that_is_taking_it() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "replica-a").unwrap();
    let dated = |n: u8, created_ms: i64| NewDelivery { created_us: Some(created_ms * 1000), ..delivery(n, Some("r")) };
    block_on(async {
        let Appended::New(later) = inbox.append(dated(1, 2000)).await.unwrap() else { panic!() };
        // Replica b's claim of the head (what its claim statement writes), not committed yet.
        let (b, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        b.batch_execute("BEGIN").await.unwrap();
        let claiming = "UPDATE deliveries SET owner = 'replica-b', fence = fence + 1, attempts = attempts + 1,
                               lease_until = now() + interval '30 s'
                         WHERE id = $1";
        assert_eq!(b.execute(claiming, &[&later]).await.unwrap(), 1);
        // An earlier event of the room arrives meanwhile: it waits for the claim to commit.
        let append = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.append(dated(2, 1000)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.batch_execute("COMMIT").await.unwrap();
        assert!(matches!(append.await.unwrap().unwrap(), Appended::New(_)));
        // b runs the later one: nothing else of the room may run until it is done.
        assert_eq!(ids(&inbox.claim(request(10, Duration::from_secs(30))).await.unwrap()), Vec::<i64>::new());
        drop(b);
        let _ = connection.await;
        inbox.close().await;
    });
}

#[test]
fn a_replica_that_died_on_its_last_attempt_leaves_the_delivery_dead_and_the_room_going() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "replica").unwrap();
    block_on(async {
        inbox.append(delivery(1, Some("r"))).await.unwrap();
        inbox.append(delivery(2, Some("r"))).await.unwrap();
        let short = ClaimRequest { limit: 1, lease: Duration::from_millis(50), max_attempts: 2 };
        for attempt in 1..=2 {
            let claimed = inbox.claim(short).await.unwrap();
            assert_eq!((claimed[0].claim.id, claimed[0].attempt), (1, attempt));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(ids(&inbox.claim(short).await.unwrap()), [2]);
        let dead = inbox.get(1).await.unwrap().unwrap();
        assert_eq!((dead.state, dead.attempts), (State::Dead, 2));
        assert!(dead.last_error.unwrap().contains("never finished"));
        inbox.close().await;
    });
}

fn postgres_server(url: &str, concurrency: usize) -> TestServer {
    postgres_server_with(url, |inbox| inbox.concurrency = concurrency)
}

/// A server on the PostgreSQL inbox at `url`, its inbox settings changed by `set`.
fn postgres_server_with(url: &str, set: impl FnOnce(&mut InboxOptions)) -> TestServer {
    let mut inbox = InboxOptions::new(std::path::Path::new("unused"));
    set(&mut inbox);
    TestServer::with(Options {
        inbox: Some(inbox),
        storage: Some(Storage::Postgres(url.to_owned())),
        ..Options::default()
    })
}

#[test]
fn two_replicas_on_one_database_handle_each_delivery_once_whichever_took_it() {
    const N: usize = 600;
    const SENDERS: usize = 12;
    let Some(db) = TestDatabase::create() else { return };
    let replicas = [postgres_server(&db.url, 4), postgres_server(&db.url, 4)];
    let addrs = [replicas[0].addr, replicas[1].addr];
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for n in (s..N).step_by(SENDERS) {
                    let (timestamp, body) = (now_ms().to_string(), mixed_delivery(n, 7));
                    statuses.push(try_deliver(addrs[n % 2], &timestamp, &body));
                    // The provider's retry of every tenth, to the other replica.
                    if n % 10 == 0 {
                        statuses.push(try_deliver(addrs[(n + 1) % 2], &timestamp, &body));
                    }
                }
                statuses
            })
        })
        .collect();
    for sender in senders {
        assert!(sender.join().unwrap().iter().all(|s| *s == Some(200)));
    }
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    eventually("nothing pending", || block_on(inbox.stats()).unwrap().pending == 0);
    std::thread::sleep(Duration::from_millis(300));
    let stored = block_on(inbox.list(Filter::All, None, 10_000)).unwrap();
    assert_eq!(stored.len(), N, "each delivery stored once, retries included");
    assert!(stored.iter().all(|r| r.state == State::Done && r.attempts == 1));
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for replica in &replicas {
        for (id, attempt) in replica.recorder().runs.lock().unwrap().iter() {
            runs.entry(id.clone()).or_default().push(*attempt);
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, attempts)| attempts[..] != [1]).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(runs.len(), N);
    let by_replica: Vec<usize> = replicas.iter().map(|r| r.recorder().runs.lock().unwrap().len()).collect();
    eprintln!("postgres: {N} deliveries, handled {by_replica:?} by the two replicas");
    block_on(inbox.close());

    // The CLI reads the same inbox while the replicas run.
    let (code, stdout, stderr) = crate::binary::run(&["inbox", "--database-url", &db.url, "stats", "--json"], b"");
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((stats["done"].as_u64(), stats["pending"].as_u64()), (Some(N as u64), Some(0)), "{stats}");
    let (code, stdout, _) = crate::binary::run(&["inbox", "--database-url", &db.url, "show", "1"], b"");
    assert_eq!(code, 0);
    assert!(stdout.contains("state: done") && stdout.contains("X-Signature: "), "{stdout}");
}

#[test]
fn replicas_that_start_at_once_set_the_schema_up_once_and_a_newer_one_is_refused() {
    let Some(db) = TestDatabase::create() else { return };
    let starting: Vec<_> = (0..4)
        .map(|i| {
            let url = db.url.clone();
            std::thread::spawn(move || PgInbox::connect(&url, &format!("replica-{i}")).map(|_| ()))
        })
        .collect();
    for start in starting {
        start.join().unwrap().unwrap();
    }
    execute(&db.url, "UPDATE meet_webhooks_schema SET version = 99").unwrap();
    let error = PgInbox::connect(&db.url, "old").err().unwrap().to_string();
    assert!(error.contains("schema version 99") && error.contains("newer"), "{error}");
}

#[test]
fn tls_is_used_when_the_url_requires_it_and_the_password_never_shows() {
    let Some(db) = TestDatabase::create() else { return };
    // Trust authentication ignores the password; it only has to stay out of sight.
    let url = db.url.replacen("://postgres@", "://postgres:hunter2-secret@", 1);
    assert_ne!(url, db.url, "{}", db.url);
    let inbox = PgInbox::connect(&format!("{url}?sslmode=require"), "tls").unwrap();
    assert!(!inbox.describe().contains("hunter2"), "{}", inbox.describe());
    block_on(inbox.append(delivery(1, None))).unwrap();
    let encrypted: bool = block_on(async {
        let (client, connection) = tokio_postgres::connect(&db.admin, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT COALESCE(bool_and(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                  WHERE a.datname = $1 AND a.backend_type = 'client backend'",
                &[&db.name],
            )
            .await
            .unwrap();
        row.get(0)
    });
    assert!(encrypted, "every connection of the inbox is encrypted");
    block_on(inbox.close());

    // Nor in what the CLI prints when the database is not there.
    let missing = url.replace(&db.name, "mw_no_such_database");
    let (code, stdout, stderr) = crate::binary::run(&["inbox", "--database-url", &missing, "stats"], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("mw_no_such_database") && !format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");
}

/// One handler run from the run log: its start line, and when it ended (and how) if it did.
struct Run<'a> {
    line: &'a crate::crash::Logged,
    end: Option<u128>,
    ok: bool,
}

/// `r3-11 attempt 1 on replica-1 <start>..<end> ok`, for failure messages.
impl std::fmt::Display for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { line, end, ok } = self;
        let outcome = if *ok { "ok" } else { "-" };
        write!(f, "{} attempt {} on {} {}..{end:?} {outcome}", line.recording, line.attempt, line.replica, line.nanos)
    }
}

/// Sends a signed delivery; `None` if no answer came within `timeout` (the replica is down or
/// frozen).
fn deliver_within(addr: std::net::SocketAddr, timestamp: &str, body: &str, timeout: Duration) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let signature = meet_webhooks_runtime::verify::sign(crate::common::KEY.as_bytes(), timestamp, body.as_bytes());
    let headers = [("content-type", "application/json"), ("x-timestamp", timestamp), ("x-signature", &signature)];
    stream.write_all(&crate::common::post_request("x", &headers, body.as_bytes())).ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    String::from_utf8_lossy(&bytes).split(' ').nth(1)?.parse().ok()
}

/// Three child receivers (`replica-0` to `replica-2`) on the database at `url`, with a lease of
/// `lease_ms` and 6 attempts (a delivery may lose attempts to a kill or a freeze besides failing
/// once), logging their runs to `dir/runs`.
fn three_replicas(url: &str, dir: &std::path::Path, lease_ms: u64) -> Vec<crate::crash::ChildReceiver> {
    (0..3)
        .map(|i| {
            let (replica, lease) = (format!("replica-{i}"), lease_ms.to_string());
            let log = dir.join(format!("{replica}.log"));
            let env = [
                ("CRASH_CHILD_DATABASE_URL", url),
                ("CRASH_CHILD_REPLICA", replica.as_str()),
                ("CRASH_CHILD_LEASE_MS", lease.as_str()),
                ("CRASH_CHILD_MAX_ATTEMPTS", "6"),
                ("CRASH_CHILD_LOG", log.to_str().unwrap()),
            ];
            crate::crash::ChildReceiver::start_with(&dir.join(format!("unused-{i}")), &dir.join("runs"), &env)
        })
        .collect()
}

#[test]
fn three_replicas_through_a_kill_and_a_freeze_lose_nothing_and_keep_each_room_in_order() {
    use crate::crash::{logged, nanos};
    const ROOMS: usize = 24;
    const PER_ROOM: usize = 30;
    const SENDERS: usize = 6;
    // Long enough that a replica merely starved of CPU (CI runs many tests at once on two cores)
    // does not miss its renewals, nor get a renewal back too late to go on with its handlers
    // (a quarter lease): only the kill and the freeze may cost repeats.
    const LEASE_MS: u64 = 3000;
    let Some(db) = TestDatabase::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run_log = dir.path().join("runs");
    let mut replicas = three_replicas(&db.url, dir.path(), LEASE_MS);
    let addrs: Vec<std::net::SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let webhook = meet_webhooks::WEBHOOKS.iter().find(|w| w.event == "recordingStarted").unwrap();

    // Each sender owns some rooms and sends a room's events one after another, each to a
    // replica in turn; without an answer it tries the next replica, as the provider retries.
    // Every ninth is sent again to another replica after its answer: a retry, a duplicate.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (addrs, acked) = (addrs.clone(), acked.clone());
            let webhook = *webhook;
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for seq in 0..PER_ROOM {
                    for room in (s..ROOMS).step_by(SENDERS) {
                        let mut body = crate::common::example(&webhook);
                        let recording = format!("r{room}-{seq}");
                        body["data"]["recordingId"] = recording.clone().into();
                        body["data"]["roomId"] = format!("room-{room}").into();
                        body["data"]["failFirst"] = ((room + seq) % 7 == 0).into();
                        let (timestamp, body) = (now_ms().to_string(), body.to_string());
                        let mut target = room + seq;
                        // Each try's answer, for a failure message: the status, or none in time.
                        let mut tries = Vec::new();
                        let status = (0..30).find_map(|_| {
                            target += 1;
                            let status =
                                deliver_within(addrs[target % 3], &timestamp, &body, Duration::from_millis(700));
                            tries.push((target % 3, status));
                            status.filter(|s| *s == 200)
                        });
                        if status.is_some() {
                            acked.lock().unwrap().push((format!("room-{room}"), recording.clone()));
                            if seq % 9 == 0 {
                                deliver_within(addrs[(target + 1) % 3], &timestamp, &body, Duration::from_millis(700));
                            }
                        }
                        statuses.push(status.map(|_| ()).ok_or_else(|| format!("{recording}: {tries:?}")));
                        std::thread::sleep(Duration::from_millis(8));
                    }
                }
                statuses
            })
        })
        .collect();
    let total = ROOMS * PER_ROOM;
    let acked_count = || acked.lock().unwrap().len();
    eventually("a quarter acknowledged", || acked_count() >= total / 4);
    replicas[0].child.kill().unwrap(); // SIGKILL, mid-flood
    let killed_at = nanos();
    replicas[0].child.wait().unwrap();
    eventually("two fifths acknowledged", || acked_count() >= total * 2 / 5);
    let signal = |name: &str, pid: u32| {
        assert!(std::process::Command::new("kill").args(["-s", name, &pid.to_string()]).status().unwrap().success())
    };
    let frozen = replicas[1].child.id();
    signal("STOP", frozen);
    let stopped_at = nanos();
    std::thread::sleep(Duration::from_millis(LEASE_MS * 5 / 2));
    // Before the signal: whatever the frozen replica writes after this, it wrote after the freeze.
    let continued_at = nanos();
    signal("CONT", frozen);
    for sender in senders {
        let unacknowledged: Vec<String> = sender.join().unwrap().into_iter().filter_map(Result::err).collect();
        assert!(
            unacknowledged.is_empty(),
            "every delivery is acknowledged by some replica (killed at {killed_at}, frozen {stopped_at}..{continued_at}); \
             not these, after (replica, status) tries: {unacknowledged:?}"
        );
    }

    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    eventually("nothing pending", || block_on(inbox.stats()).unwrap().pending == 0);
    let stored = block_on(inbox.list(Filter::All, None, 100_000)).unwrap();
    block_on(inbox.close());
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total);
    let mut stored_by_recording: HashMap<String, Vec<State>> = HashMap::new();
    for row in &stored {
        let body: serde_json::Value = serde_json::from_slice(&row.body).unwrap();
        stored_by_recording
            .entry(body["data"]["recordingId"].as_str().unwrap().to_owned())
            .or_default()
            .push(row.state);
    }
    for (_, recording) in &acked {
        assert_eq!(
            stored_by_recording.get(recording),
            Some(&vec![State::Done]),
            "{recording}: stored once, handled: {:?}",
            stored.iter().find(|r| String::from_utf8_lossy(&r.body).contains(&format!("\"{recording}\"")))
        );
    }

    // The handler's own record: runs per room never overlap, and succeed in acknowledgement
    // order. A run cut off by the kill counts as ended then; a run of the frozen replica that
    // spans the freeze is out of the overlap check (its outcome is fenced, changes nothing).
    let lines = logged(&run_log);
    let mut runs: Vec<Run> = Vec::new();
    for line in &lines {
        if line.start {
            runs.push(Run { line, end: None, ok: false });
        } else if let Some(run) = runs.iter_mut().rev().find(|r| {
            (&r.line.recording, r.line.attempt, &r.line.replica) == (&line.recording, line.attempt, &line.replica)
        }) {
            run.end = Some(line.nanos);
            run.ok = line.ok;
        }
    }
    let mut by_room: HashMap<&str, Vec<(u128, u128, &Run)>> = HashMap::new();
    // Successful runs per room, by start: those that span the freeze too. Such a run's outcome
    // counts when no other replica took its claim over before the frozen one came back (the
    // fence was still its own); when one did, the two runs of that delivery sit side by side.
    let mut succeeded: HashMap<&str, Vec<(u128, &str)>> = HashMap::new();
    for run in &runs {
        let (start, replica) = (run.line.nanos, run.line.replica.as_str());
        if run.ok {
            succeeded.entry(run.line.room.as_str()).or_default().push((start, run.line.recording.as_str()));
        }
        // (A thread of a stopped process may still run for a moment after `kill` returns.)
        let spans_the_freeze =
            replica == "replica-1" && start < stopped_at + 50_000_000 && run.end.is_none_or(|e| e > continued_at);
        let end = match run.end {
            _ if spans_the_freeze => continue,
            Some(end) => end,
            None if replica == "replica-0" => killed_at,
            None => continue, // stopped when its claim was lost
        };
        by_room.entry(run.line.room.as_str()).or_default().push((start, end, run));
    }
    for (room, mut runs) in by_room {
        runs.sort_by_key(|(start, end, _)| (*start, *end));
        for pair in runs.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{room}: {} ({}, {}..{}) and {} ({}, {}..{}) ran at once (killed at {killed_at}, frozen from \
                 {stopped_at} to {continued_at})",
                pair[0].2.line.recording,
                pair[0].2.line.replica,
                pair[0].0,
                pair[0].1,
                pair[1].2.line.recording,
                pair[1].2.line.replica,
                pair[1].0,
                pair[1].1
            );
        }
    }
    // A run whose outcome the kill or the freeze kept from being recorded runs again, at once
    // and in its place: the same delivery twice in a row.
    for room in (0..ROOMS).map(|room| format!("room-{room}")) {
        let mut succeeded = succeeded.remove(room.as_str()).unwrap_or_default();
        succeeded.sort_unstable();
        let mut handled: Vec<&str> = succeeded.into_iter().map(|(_, recording)| recording).collect();
        handled.dedup();
        let expected: Vec<&str> = acked.iter().filter(|(r, _)| *r == room).map(|(_, rec)| rec.as_str()).collect();
        let record = || runs.iter().filter(|r| r.line.room == room).map(Run::to_string).collect::<Vec<_>>().join("\n");
        assert_eq!(
            handled,
            expected,
            "{room}: handled in acknowledgement order (killed at {killed_at}, frozen {stopped_at}..{continued_at}); its runs:\n{}",
            record()
        );
    }
    let starts = lines.iter().filter(|l| l.start).count();
    let failing = acked
        .iter()
        .filter(|(_, rec)| {
            stored.iter().any(|s| {
                String::from_utf8_lossy(&s.body).contains(&format!("\"{rec}\""))
                    && String::from_utf8_lossy(&s.body).contains("\"failFirst\":true")
            })
        })
        .count();
    eprintln!(
        "three replicas: {total} deliveries, {starts} handler runs ({failing} first attempts failed on purpose), replica-0 killed, replica-1 frozen for {} ms",
        (continued_at - stopped_at) / 1_000_000
    );
    // Which deliveries ran more often than once (twice for a deliberate failure), with their
    // runs: what a failure of the bound below must be read from.
    let repeated = || {
        let mut by_recording: HashMap<&str, Vec<&Run>> = HashMap::new();
        for run in &runs {
            by_recording.entry(run.line.recording.as_str()).or_default().push(run);
        }
        let mut out: Vec<String> = by_recording
            .into_iter()
            .filter(|(_, runs)| {
                runs.len() > 1 + usize::from(runs.iter().any(|r| r.line.attempt == 1 && !r.ok && r.end.is_some()))
            })
            .map(|(_, runs)| {
                let runs: Vec<String> = runs.iter().map(ToString::to_string).collect();
                runs.join("; ")
            })
            .collect();
        out.sort();
        out.join("\n")
    };
    // What may run again: the kill's claims (4, the concurrency) and the frozen replica's (4).
    // A surviving replica whose commits wait on rows the frozen one locked keeps renewing its
    // claims meanwhile, so none of its own run again (CI once saw four do, before renewals got
    // a task of their own).
    assert!(
        starts <= total + failing + 2 * 4,
        "runs beyond failures, the kill and the freeze: {starts} (killed at {killed_at}, frozen {stopped_at}..{continued_at}); repeated:\n{}",
        repeated()
    );
}

#[test]
fn a_replica_frozen_in_the_middle_of_a_commit_holds_its_room_for_seconds_not_for_ever() {
    use std::sync::mpsc;
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    assert!(matches!(block_on(inbox.append(delivery(1, Some("room-1")))), Ok(Appended::New(_))));

    // A replica frozen mid-commit: a session with the inbox's settings that has locked the
    // room's row, as an append does, and then says nothing more (its thread blocks, so it does
    // not even read its socket) until the test lets it go.
    let mut config: tokio_postgres::Config = db.url.parse().unwrap();
    config.options(meet_webhooks_runtime::inbox::postgres::SESSION_SETTINGS);
    let (locked, is_locked) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let frozen = std::thread::spawn(move || {
        block_on(async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("BEGIN; SELECT 1 FROM rooms WHERE room = 'room-1' FOR UPDATE").await.unwrap();
            locked.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(90));
            // What the replica finds when it comes back.
            client.batch_execute("COMMIT").await
        })
    });
    is_locked.recv().unwrap();

    // Another replica's append to that room waits for the lock until the server ends the
    // silent session (without the setting: for as long as the replica stays frozen).
    let other = PgInbox::connect(&db.url, "b").unwrap();
    let (done, appended) = mpsc::channel();
    std::thread::spawn(move || done.send(block_on(other.append(delivery(2, Some("room-1"))))));
    let appended = appended.recv_timeout(Duration::from_secs(45));
    let _ = release.send(());
    assert!(matches!(appended, Ok(Ok(Appended::New(_)))), "the other replica's append went through: {appended:?}");
    assert!(frozen.join().unwrap().is_err(), "the frozen replica's transaction was ended, not committed");
    let stored = block_on(inbox.list(Filter::All, None, 10)).unwrap();
    assert_eq!(stored.len(), 2);
    block_on(inbox.close());
}

#[test]
fn the_database_restarted_under_load_loses_nothing_acknowledged_and_the_service_recovers() {
    let Some(cluster) = crate::cluster::Cluster::start(&[]) else { return };
    let url = cluster.url("postgres");
    let server = postgres_server(&url, 4);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answers: Vec<(String, Option<u16>)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = mixed_delivery(n, 5);
                let status = deliver_within(addr, &now_ms().to_string(), &body, Duration::from_secs(3));
                answers.push((body, status));
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        })
    };
    let ready = || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut stream, b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        crate::common::read_response(&mut stream).status
    };
    std::thread::sleep(Duration::from_millis(500));
    // A clean restart, then a crash of the server (no checkpoint, no goodbye to clients).
    cluster.restart();
    std::thread::sleep(Duration::from_millis(500));
    cluster.crash();
    eventually("not ready while the database is down", || ready() == 503);
    std::thread::sleep(Duration::from_millis(500));
    cluster.up();
    eventually("ready again once it is back", || ready() == 200);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let answers = sender.join().unwrap();

    let acknowledged: Vec<&String> = answers.iter().filter(|(_, s)| *s == Some(200)).map(|(b, _)| b).collect();
    let refused = answers.iter().filter(|(_, s)| *s == Some(503)).count();
    let unanswered = answers.iter().filter(|(_, s)| s.is_none()).count();
    assert!(answers.iter().all(|(_, s)| matches!(s, Some(200 | 503) | None)), "only 200 and 503");
    assert!(refused > 0, "503 while the database was down");
    let inbox = PgInbox::connect(&url, "test").unwrap();
    eventually("everything handled", || block_on(inbox.stats()).unwrap().pending == 0);
    let stored: Vec<String> = block_on(inbox.list(Filter::All, None, 100_000))
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.state, State::Done);
            String::from_utf8(r.body).unwrap()
        })
        .collect();
    for body in &acknowledged {
        assert!(stored.contains(body), "acknowledged, then lost: {body}");
    }
    eprintln!(
        "database restarts: {} deliveries sent, {} acknowledged and kept, {refused} refused with 503, {unanswered} unanswered",
        answers.len(),
        acknowledged.len()
    );
    block_on(inbox.close());
}

#[test]
fn pruning_deletes_handled_deliveries_only() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "replica").unwrap();
    block_on(async {
        for n in 1..=4 {
            inbox.append(delivery(n, None)).await.unwrap();
        }
        let claimed = inbox.claim(request(3, Duration::from_secs(30))).await.unwrap();
        let outcome = |i: usize, outcome| Completion { claim: claimed[i].claim, kind: Kind::Fallback, outcome };
        let dead = Outcome::Dead { error: "boom".into() };
        inbox.complete(&[outcome(0, Outcome::Done), outcome(1, Outcome::Done), outcome(2, dead)]).await.unwrap();
        assert_eq!(inbox.prune(Duration::from_secs(60)).await.unwrap(), 0, "handled just now");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(inbox.prune(Duration::ZERO).await.unwrap(), 2, "the two done");
        let left: Vec<State> = inbox.list(Filter::All, None, 10).await.unwrap().iter().map(|r| r.state).collect();
        assert_eq!(left, [State::Dead, State::Pending], "dead ones wait for a replay, pending ones for a handler");
        assert_eq!(inbox.depth().await.unwrap(), meet_webhooks_runtime::inbox::Depth { pending: 1, dead: 1 });
        inbox.close().await;
    });
}

#[test]
fn a_replica_whose_claim_was_taken_stops_that_handler_and_changes_nothing() {
    let Some(db) = TestDatabase::create() else { return };
    let mut inbox = InboxOptions::new(std::path::Path::new("unused"));
    inbox.lease = Duration::from_millis(300);
    let server = TestServer::with(Options {
        inbox: Some(inbox),
        storage: Some(Storage::Postgres(db.url.clone())),
        ..Options::default()
    });
    let recorder = server.recorder();
    recorder.paused.store(true, Ordering::SeqCst);
    assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(0, 1)), Some(200));
    eventually("its handler runs", || recorder.runs.lock().unwrap().len() == 1);
    // Another replica takes the delivery over (as after this one's lease ran out).
    execute(
        &db.url,
        "UPDATE deliveries SET owner = 'other-replica', fence = fence + 1, lease_until = now() + interval '1 hour'",
    )
    .unwrap();
    // The next renewal finds the claim gone and stops the handler: released now, it never ends.
    std::thread::sleep(Duration::from_millis(400));
    recorder.release.add_permits(1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(recorder.calls().is_empty(), "the handler was stopped before it finished");
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    let row = block_on(inbox.list(Filter::All, None, 10)).unwrap().remove(0);
    assert_eq!((row.state, row.claimed_by.as_deref()), (State::Pending, Some("other-replica")), "nothing changed");
    block_on(inbox.close());
}

#[test]
fn outcomes_and_renewals_of_the_same_claims_at_once_do_not_deadlock() {
    // The dispatcher renews its claims while it commits outcomes, on two connections: the two
    // lock the same rows, and would deadlock (one of them failing after a second) if they did
    // not lock them in one order. Outcomes come in the order handlers finished: here the reverse.
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "replica").unwrap();
    block_on(async {
        for round in 0..3u16 {
            for n in 0..200u16 {
                let mut new = delivery(0, None);
                new.signature[..4].copy_from_slice(&[round.to_be_bytes(), n.to_be_bytes()].concat());
                inbox.append(new).await.unwrap();
            }
            let claimed = inbox.claim(request(200, Duration::from_secs(30))).await.unwrap();
            assert_eq!(claimed.len(), 200);
            let claims: Vec<_> = claimed.iter().map(|c| c.claim).collect();
            let outcomes: Vec<Completion> = claims
                .iter()
                .rev()
                .map(|&claim| Completion { claim, kind: Kind::Fallback, outcome: Outcome::Done })
                .collect();
            let renewal = async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                inbox.renew(&claims, Duration::from_secs(30)).await
            };
            let (completed, renewed) = tokio::join!(inbox.complete(&outcomes), renewal);
            let completed = completed.expect("the outcomes are committed");
            renewed.expect("the renewal goes through");
            assert!(completed.iter().all(|c| *c == Completed::Recorded), "round {round}: {completed:?}");
        }
        assert_eq!(inbox.depth().await.unwrap().pending, 0);
        inbox.close().await;
    });
}

#[test]
fn a_batch_of_outcomes_is_answered_in_its_own_order_each_recorded_as_given() {
    outcomes_answered_in_their_order(|i| match i % 4 {
        0 => Outcome::Done,
        1 => Outcome::Retry { after: Duration::from_secs(3600), error: format!("retry {i}") },
        2 => Outcome::Dead { error: format!("dead {i}") },
        _ => Outcome::Interrupted,
    });
}

#[test]
fn a_batch_of_handled_deliveries_is_answered_in_its_own_order_each_recorded_as_handled() {
    // One statement records them all (the usual batch).
    outcomes_answered_in_their_order(|_| Outcome::Done);
}

/// The dispatcher sends outcomes in the order its handlers finished; the inbox records them in
/// the order of their ids, all at once: each answer must still be its own outcome's.
fn outcomes_answered_in_their_order(outcome: fn(usize) -> Outcome) {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "replica").unwrap();
    block_on(async {
        let rooms: Vec<String> = (0..40).map(|n| format!("r{n}")).collect();
        for (n, room) in (1..).zip(&rooms) {
            inbox.append(delivery(n, Some(room))).await.unwrap();
        }
        let Appended::New(waiting) = inbox.append(delivery(100, Some("r0"))).await.unwrap() else { panic!() };
        let claimed = inbox.claim(request(100, Duration::from_secs(30))).await.unwrap();
        assert_eq!(claimed.len(), 40, "the room heads");
        // Newest first; the seventh with a fence that is no longer its claim's.
        let mut completions: Vec<Completion> = claimed
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| Completion { claim: c.claim, kind: Kind::Typed, outcome: outcome(i) })
            .collect();
        completions[6].claim.fence += 1;
        // With a claim in the same turn: it sees what the outcomes changed.
        let (answers, claimed_then) =
            inbox.complete_and_claim(&completions, request(100, Duration::from_secs(30))).await.unwrap();
        for (k, answer) in answers.iter().enumerate() {
            let expected = if k == 6 { Completed::Fenced } else { Completed::Recorded };
            assert_eq!(*answer, expected, "answer {k}");
        }
        for (k, c) in completions.iter().enumerate() {
            let stored = inbox.get(c.claim.id).await.unwrap().unwrap();
            let seen = (stored.state, stored.last_error.as_deref(), stored.claimed_by.is_some(), stored.attempts);
            let expected = match (&c.outcome, k) {
                (_, 6) => (State::Pending, None, true, 1),
                (Outcome::Done, _) => (State::Done, None, false, 1),
                (Outcome::Retry { error, .. }, _) => (State::Pending, Some(error.as_str()), false, 1),
                (Outcome::Dead { error }, _) => (State::Dead, Some(error.as_str()), false, 1),
                // Given back (the attempt not counted), then claimed again by the turn's claim.
                (Outcome::Interrupted, _) => (State::Pending, None, true, 1),
            };
            assert_eq!(seen, expected, "delivery {} ({:?})", c.claim.id, c.outcome);
            if k != 6 && c.outcome == Outcome::Done {
                let attempt = stored.history.iter().map(|a| (a.attempt, a.replica.as_deref(), a.outcome.as_str()));
                assert_eq!(attempt.collect::<Vec<_>>(), [(1, Some("replica"), "done")], "its history");
                assert_eq!(stored.kind, Kind::Typed, "the kind it was handled as");
            }
        }
        // The turn's claim took the interrupted ones (due again) and room r0's next (its head is
        // done), not the failed, dead or fenced ones.
        let interrupted: Vec<i64> = completions
            .iter()
            .enumerate()
            .filter(|&(k, c)| k != 6 && c.outcome == Outcome::Interrupted)
            .map(|(_, c)| c.claim.id)
            .collect();
        let mut expected = [interrupted, vec![waiting]].concat();
        expected.sort_unstable();
        assert_eq!(ids(&claimed_then), expected);
        inbox.close().await;
    });
}

/// The environment that runs a process with its wall clock `offset` off (libfaketime, Debian's
/// `faketime`; its monotonic clock untouched); `None`, and a line, when it is not installed.
pub fn clock_off_by(offset: &str) -> Option<Vec<(&'static str, String)>> {
    const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !std::path::Path::new(LIBRARY).exists() {
        assert!(
            std::env::var_os("MEET_WEBHOOKS_REQUIRE_POSTGRES").is_none(),
            "{LIBRARY} is missing: CI installs Debian's faketime"
        );
        eprintln!("skipped: a skewed clock needs libfaketime (apt-get install faketime)");
        return None;
    }
    Some(vec![
        ("LD_PRELOAD", LIBRARY.to_owned()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ])
}

#[test]
fn a_replica_whose_clock_is_ahead_prunes_nothing_the_others_just_handled() {
    let Some(db) = TestDatabase::create() else { return };
    let Some(skewed) = clock_off_by("+170h") else { return };
    let data = tempfile::tempdir().unwrap();
    let a = crate::binary::Service::start_in(data.path(), &["--database-url", &db.url, "--replica-id", "a"]);
    let sent: Vec<(String, String)> = (0..20).map(|n| (now_ms().to_string(), mixed_delivery(n, 3))).collect();
    for (timestamp, body) in &sent {
        assert_eq!(try_deliver(a.addr, timestamp, body), Some(200));
    }
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    eventually("all handled", || block_on(inbox.stats()).unwrap().pending == 0);

    // A replica 170 hours ahead, keeping deliveries the default 168 hours: its pruning, which
    // runs as it starts, must not take what was handled a moment ago.
    let env: Vec<(&str, &str)> = skewed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b =
        crate::binary::Service::start_in_with_env(data.path(), &["--database-url", &db.url, "--replica-id", "b"], &env);
    assert_eq!(b.get("/readyz").status, 200);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(block_on(inbox.list(Filter::All, None, 100)).unwrap().len(), sent.len(), "kept");
    // So the provider's retries are still duplicates, and nothing is handled twice.
    for (timestamp, body) in &sent {
        assert_eq!(try_deliver(a.addr, timestamp, body), Some(200));
    }
    let rows = block_on(inbox.list(Filter::All, None, 100)).unwrap();
    assert_eq!(rows.len(), sent.len(), "a retry was stored again");
    assert!(rows.iter().all(|r| r.attempts == 1), "{rows:?}");
    block_on(inbox.close());
}

/// A replica on `url` with a lease of `lease`, named `replica`.
fn replica(url: &str, replica: &str, lease: Duration) -> TestServer {
    postgres_server_with(url, |inbox| {
        inbox.lease = lease;
        inbox.replica = replica.into();
    })
}

#[test]
fn a_database_outage_longer_than_the_lease_hands_no_claim_to_another_replica() {
    outage_longer_than_the_lease(true);
}

#[test]
fn a_database_out_of_reach_longer_than_the_lease_hands_no_claim_to_another_replica() {
    outage_longer_than_the_lease(false);
}

/// Replica a's handler finishes while the database is away (restarted when `restart`, else out
/// of both replicas' reach) for longer than the lease; a comes back to it a second after b
/// does, as a replica slower to reconnect would. b must not run the delivery again.
fn outage_longer_than_the_lease(restart: bool) {
    let Some(cluster) = crate::cluster::Cluster::start(&[]) else { return };
    let url = cluster.url("postgres");
    let proxies = [crate::cluster::Proxy::to(cluster.port), crate::cluster::Proxy::to(cluster.port)];
    let through = |proxy: &crate::cluster::Proxy| format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let lease = Duration::from_secs(3);
    let a = replica(&through(&proxies[0]), "a", lease);
    a.recorder().paused.store(true, Ordering::SeqCst);
    assert_eq!(try_deliver(a.addr, &now_ms().to_string(), &mixed_delivery(0, 1)), Some(200));
    eventually("replica a runs its handler", || a.recorder().runs.lock().unwrap().len() == 1);
    let b = replica(&through(&proxies[1]), "b", lease);
    assert_eq!(b.raw(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").status, 200);

    proxies[0].down();
    if restart {
        cluster.crash();
    } else {
        proxies[1].down();
    }
    a.recorder().paused.store(false, Ordering::SeqCst);
    a.recorder().release.add_permits(1);
    std::thread::sleep(lease * 2);
    if restart {
        cluster.up();
    } else {
        proxies[1].up();
    }
    std::thread::sleep(Duration::from_secs(1));
    proxies[0].up();

    let inbox = PgInbox::connect(&url, "test").unwrap();
    eventually("the outcome is recorded", || block_on(inbox.stats()).is_ok_and(|s| s.pending == 0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.recorder().runs.lock().unwrap().len(), 0, "replica b ran it again");
    let rows = block_on(inbox.list(Filter::All, None, 10)).unwrap();
    assert_eq!((rows.len(), rows[0].state, rows[0].attempts), (1, State::Done, 1), "{rows:?}");
    block_on(inbox.close());
}

#[test]
fn the_database_s_own_reasons_are_shown_without_the_password() {
    let Some(db) = TestDatabase::create() else { return };
    // An unknown database: the server's message and SQLSTATE, at once.
    let with_password = db.url.replace("postgres@", "postgres:hunter2@");
    let missing = with_password.replace(&db.name, "mw_no_such_database");
    let (code, stdout, stderr) = crate::binary::run(&["serve", "--key", "k", "--database-url", &missing], b"");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(r#"database "mw_no_such_database" does not exist (SQLSTATE 3D000)"#), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");

    // Permission denied, to a role that may read the inbox but not change it (roles belong to
    // the whole server: on a cluster of the test's own).
    let Some(cluster) = crate::cluster::Cluster::start(&[]) else { return };
    let url = cluster.url("postgres");
    block_on(PgInbox::connect(&url, "test").unwrap().close());
    cluster.sql("CREATE ROLE mw_reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO mw_reader;");
    let reader = url.replace("postgres@", "mw_reader:hunter2@");
    let (code, stdout, stderr) = crate::binary::run(&["inbox", "--database-url", &reader, "stats"], b"");
    assert_ne!(code, 0);
    assert!(stderr.contains("permission denied for schema public (SQLSTATE 42501)"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");
}

#[test]
fn a_service_started_while_the_database_is_full_waits_for_a_connection_and_says_why() {
    use std::io::{BufRead, BufReader};
    let Some(cluster) = crate::cluster::Cluster::start(&["max_connections=12", "superuser_reserved_connections=0"])
    else {
        return;
    };
    let url = cluster.url("postgres");
    // Every connection the server allows, taken.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let held: Vec<tokio_postgres::Client> = runtime.block_on(async {
        let mut held = Vec::new();
        while let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(connection);
            held.push(client);
        }
        held
    });
    assert_eq!(held.len(), 12);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meet-webhooks"))
        .args(["serve", "--bind", "127.0.0.1:0", "--key", crate::common::KEY, "--database-url", &url])
        .env("RUST_LOG", "info")
        .env_remove("MEET_WEBHOOKS_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || stderr.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let waiting = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        waiting.contains("too many clients")
            && waiting.contains("SQLSTATE 53300")
            && waiting.contains("max_connections"),
        "{waiting}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(child.try_wait().unwrap(), None, "it waits rather than exit");

    // Connections free up: it starts and serves.
    drop(held);
    drop(runtime);
    let listening = crate::binary::listening(&mut child);
    assert_eq!(try_deliver(listening, &now_ms().to_string(), &mixed_delivery(0, 1)), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn readiness_fails_while_deliveries_cannot_be_stored() {
    // A role of its own (roles belong to the whole server: on a cluster of the test's own).
    let Some(cluster) = crate::cluster::Cluster::start(&[]) else { return };
    let url = cluster.url("postgres");
    block_on(PgInbox::connect(&url, "setup").unwrap().close());
    cluster.sql(
        "CREATE ROLE mw_service LOGIN;
         GRANT CREATE, USAGE ON SCHEMA public TO mw_service;
         GRANT ALL ON ALL TABLES IN SCHEMA public TO mw_service;
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO mw_service;",
    );
    let server = postgres_server(&url.replace("postgres@", "mw_service@"), 2);
    let ready = || server.raw(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").status;
    assert_eq!(ready(), 200);

    // The deliveries table locked by someone else: deliveries wait, so readiness fails.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let locker = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("BEGIN; LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE").await.unwrap();
        client
    });
    assert_eq!(ready(), 503, "ready while the deliveries table is locked");
    runtime.block_on(locker.batch_execute("ROLLBACK")).unwrap();
    assert_eq!(ready(), 200);

    // The right to store deliveries taken away: so is readiness.
    execute(&url, "REVOKE INSERT ON deliveries FROM mw_service").unwrap();
    assert_eq!(ready(), 503, "ready without the right to store a delivery");
    assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(0, 1)), Some(503));
    execute(&url, "GRANT INSERT ON deliveries TO mw_service").unwrap();
    assert_eq!(ready(), 200);
    // A database that refused statements was reachable all along: nothing delays takeovers.
    let reachable_since = block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query("SELECT value FROM meta WHERE key = 'reachable_since'", &[]).await.unwrap().len()
    });
    assert_eq!(reachable_since, 0, "a refused statement was taken for an unreachable database");
    drop(server);
}

/// A dispatcher on `inbox` for `handler`, looking for deliveries by itself only every minute:
/// whatever it handles sooner, a wake-up told it of.
fn dispatcher_polling_every_minute(
    inbox: &PgInbox,
    handler: &std::sync::Arc<meet_webhooks::Receiver<crate::common::Recorder>>,
    concurrency: usize,
) -> meet_webhooks_runtime::DispatcherHandle {
    meet_webhooks_runtime::Dispatcher {
        concurrency,
        shutdown_grace: Duration::from_millis(100),
        poll: Duration::from_secs(60),
        ..crate::inbox::dispatcher_of(std::sync::Arc::new(inbox.clone()), handler.clone())
    }
    .spawn()
}

#[test]
fn a_delivery_acknowledged_by_a_busy_replica_is_handled_by_an_idle_one_at_once() {
    use std::time::Instant;

    let Some(db) = TestDatabase::create() else { return };
    let (a, b) = (PgInbox::connect(&db.url, "a").unwrap(), PgInbox::connect(&db.url, "b").unwrap());
    let (busy, idle) = (
        std::sync::Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default())),
        std::sync::Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default())),
    );
    // Replica a's one handler slot is taken by a handler that does not finish.
    busy.paused.store(true, Ordering::SeqCst);
    let dispatcher_a = dispatcher_polling_every_minute(&a, &busy, 1);
    block_on(a.append(delivery(1, None))).unwrap();
    eventually("replica a busy", || busy.runs.lock().unwrap().len() == 1);
    let dispatcher_b = dispatcher_polling_every_minute(&b, &idle, 4);
    std::thread::sleep(Duration::from_millis(300));

    // Each delivery replica a acknowledges, replica b starts: at once, or when its reorder
    // window ends. Without a wake-up it would wait for b's poll, a minute.
    let mut waits = Vec::new();
    for (n, hold) in [(2, 0), (3, 0), (4, 300), (5, 0), (6, 300)] {
        let hold = Duration::from_millis(hold);
        let before = idle.runs.lock().unwrap().len();
        let acknowledged = Instant::now();
        block_on(a.append(NewDelivery { hold, ..delivery(n, Some("room")) })).unwrap();
        while idle.runs.lock().unwrap().len() == before {
            assert!(acknowledged.elapsed() < Duration::from_secs(5), "delivery {n} not handled by replica b");
            std::thread::sleep(Duration::from_millis(1));
        }
        let waited = acknowledged.elapsed();
        assert!(waited >= hold, "delivery {n} started within its hold: {waited:?}");
        waits.push(waited.saturating_sub(hold).as_millis());
    }
    eprintln!("replica b started each delivery this long (ms) after its commit (and hold): {waits:?}");
    assert_eq!(busy.runs.lock().unwrap().len(), 1, "replica a took nothing more");
    busy.release.add_permits(1);
    block_on(dispatcher_b.stop());
    block_on(dispatcher_a.stop());
    block_on(a.close());
    block_on(b.close());
}

/// Offers `inbox` a dispatcher's `free` slots, as `Dispatcher::spawn` does: the slots, and where
/// the claims made as deliveries are stored arrive.
fn offer_slots(inbox: &PgInbox, free: usize) -> (std::sync::Arc<Slots>, tokio::sync::mpsc::UnboundedReceiver<Handed>) {
    let slots = std::sync::Arc::new(Slots::new(free));
    let (hand, handed) = tokio::sync::mpsc::unbounded_channel();
    inbox.offer(Offer { slots: slots.clone(), request: request(0, Duration::from_secs(30)), handed: hand });
    (slots, handed)
}

/// Stores `d` through `inbox`, as a new delivery: its id.
fn append_new(inbox: &PgInbox, d: NewDelivery) -> i64 {
    match block_on(inbox.append(d)).unwrap() {
        Appended::New(id) => id,
        Appended::Duplicate(id) => panic!("{id} stored already"),
    }
}

/// The next claims handed over to `handed`, if any come within half a second: the appender
/// hands its claims over after it answers the batch that made them.
fn next_handed(handed: &mut tokio::sync::mpsc::UnboundedReceiver<Handed>) -> Option<Handed> {
    block_on(async { tokio::time::timeout(Duration::from_millis(500), handed.recv()).await.ok().flatten() })
}

/// Who holds a claim on delivery `id`.
fn owner(url: &str, id: i64) -> Option<String> {
    scalar(url, &format!("SELECT owner FROM deliveries WHERE id = {id}"))
}

#[test]
fn a_delivery_due_at_once_is_claimed_in_the_commit_that_stores_it_while_the_dispatcher_has_a_slot() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let (slots, mut handed) = offer_slots(&inbox, 1);
    let owner = |id: i64| owner(&db.url, id);
    let append = |d: NewDelivery| append_new(&inbox, d);
    // Nothing but the appender claims here (no dispatcher): the claim came with the commit.
    let first = append(delivery(1, Some("room")));
    let claims = next_handed(&mut handed).expect("the claim is handed over");
    assert_eq!(ids(&claims.claimed), [first]);
    assert_eq!(claims.claimed[0].attempt, 1);
    assert_eq!(owner(first).as_deref(), Some("a"));
    assert_eq!(slots.free(), 0, "the claim holds the slot");

    // No slot: stored, and left to the dispatcher.
    let second = append(delivery(2, None));
    assert!(next_handed(&mut handed).is_none());
    assert_eq!(owner(second), None);
    slots.give(1);

    // Held for the reorder window, or behind its room's running head: not due, not claimed,
    // and the slot is given back. The delivery left before was due at once, and woke the
    // dispatcher: it is the dispatcher's.
    let third = append(NewDelivery { hold: Duration::from_secs(60), ..delivery(3, None) });
    let fourth = append(delivery(4, Some("room")));
    assert!(next_handed(&mut handed).is_none());
    assert_eq!((owner(second), owner(third), owner(fourth)), (None, None, None));
    assert_eq!(slots.free(), 1);

    // A dispatcher that stopped is offered nothing more.
    drop(handed);
    let fifth = append(delivery(5, None));
    assert_eq!(owner(fifth), None);
    assert_eq!(scalar::<i32>(&db.url, &format!("SELECT attempts FROM deliveries WHERE id = {fifth}")), 0);
    block_on(inbox.close());
}

#[test]
fn a_held_delivery_that_came_due_is_claimed_by_the_next_commit_that_stores_one() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let (slots, mut handed) = offer_slots(&inbox, 4);
    // Held for 50 ms, then due; no dispatcher looks for it here. Nothing is handed over in the
    // half second that the check waits, by the end of which it is due.
    let held = append_new(&inbox, NewDelivery { hold: Duration::from_millis(50), ..delivery(1, Some("r")) });
    assert!(next_handed(&mut handed).is_none(), "held: not claimed as it is stored");
    // The next batch stored claims it, with what it stores.
    let next = append_new(&inbox, NewDelivery { hold: Duration::from_secs(60), ..delivery(2, None) });
    let claims = next_handed(&mut handed).expect("claims handed over with the commit");
    assert_eq!(ids(&claims.claimed), [held]);
    assert_eq!(claims.claimed[0].attempt, 1);
    assert_eq!(slots.free(), 3, "the claim holds a slot; the rest are given back");
    assert_eq!(owner(&db.url, next), None);
    block_on(inbox.close());
}

#[test]
fn a_batch_s_transaction_takes_over_no_claim_that_ran_out() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let (slots, mut handed) = offer_slots(&inbox, 4);
    // Held for a moment; then another replica's claim on it ran out an hour ago.
    let held = append_new(&inbox, NewDelivery { hold: Duration::from_millis(50), ..delivery(1, None) });
    execute(
        &db.url,
        &format!(
            "UPDATE deliveries SET owner = 'b', fence = fence + 1, attempts = 1,
                    lease_until = now() - interval '1 hour' WHERE id = {held}"
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Its wake-up came: the next batch's transaction claims what is due, but takes nothing over
    // (the appender records no reachability: takeovers are the dispatcher's).
    append_new(&inbox, NewDelivery { hold: Duration::from_secs(60), ..delivery(2, None) });
    assert!(next_handed(&mut handed).is_none(), "nothing handed over");
    assert_eq!(slots.free(), 4);
    assert_eq!(owner(&db.url, held).as_deref(), Some("b"));
    // The dispatcher's claim takes it over.
    let claimed = block_on(inbox.claim(request(10, Duration::from_secs(30)))).unwrap();
    assert_eq!(ids(&claimed), [held]);
    assert_eq!(claimed[0].took_over.as_ref().map(|t| t.owner.as_str()), Some("b"));
    block_on(inbox.close());
}

#[test]
fn a_claim_made_as_the_dispatcher_stops_is_given_back_its_attempt_not_counted() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let (slots, mut handed) = offer_slots(&inbox, 2);
    // Room r's row exists, and nothing of it is pending.
    block_on(inbox.append(delivery(1, Some("r")))).unwrap();
    let first = block_on(handed.recv()).unwrap().claimed.remove(0);
    let done = Completion { claim: first.claim, kind: Kind::Fallback, outcome: Outcome::Done };
    assert_eq!(block_on(inbox.complete(&[done])).unwrap(), [Completed::Recorded]);
    slots.give(1);

    // The next append of room r waits for the room's row, held here, past the point where it
    // saw the dispatcher still there; the dispatcher stops meanwhile.
    let (locked, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let holder = {
        let url = db.url.clone();
        let (locked, release) = (locked.0, release.1);
        std::thread::spawn(move || {
            block_on(async {
                let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let tx = client.transaction().await.unwrap();
                tx.execute("SELECT 1 FROM rooms WHERE room = 'r' FOR UPDATE", &[]).await.unwrap();
                locked.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || release.recv()).await;
                tx.commit().await.unwrap();
            })
        })
    };
    locked.1.recv().unwrap();
    let appending = {
        let inbox = inbox.clone();
        std::thread::spawn(move || block_on(inbox.append(delivery(2, Some("r")))).unwrap())
    };
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually("the append waits for the room", || scalar::<i64>(&db.url, waiting) == 1);
    drop(handed);
    release.0.send(()).unwrap();
    holder.join().unwrap();
    let Appended::New(second) = appending.join().unwrap() else { panic!("stored already") };

    // Claimed by its commit, handed to nobody: pending again, unclaimed, no attempt spent.
    let claim = format!("SELECT owner IS NULL AND attempts = 0 FROM deliveries WHERE id = {second}");
    eventually("the claim given back", || scalar::<bool>(&db.url, &claim));
    assert_eq!(
        scalar::<i64>(&db.url, &format!("SELECT fence FROM deliveries WHERE id = {second}")),
        1,
        "it was claimed"
    );
    assert_eq!(slots.free(), 2);
    block_on(inbox.close());
}

#[test]
fn a_replica_with_free_slots_claims_what_it_stores_and_never_more_than_its_slots() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    let handler = std::sync::Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default()));
    let dispatcher = dispatcher_polling_every_minute(&inbox, &handler, 2);
    let count = |sql: &str| scalar::<i64>(&db.url, &format!("SELECT count(*) FROM deliveries WHERE {sql}"));
    // One by one, each handled before the next is sent (a slot is always free): each was
    // claimed by the transaction that stored it (its claim's time is that commit's `now()`).
    // The first may find the dispatcher's first claim holding the slots.
    for n in 1..=21 {
        block_on(inbox.append(delivery(n, Some(if n % 2 == 0 { "even" } else { "odd" })))).unwrap();
        eventually("handled", || count("state = 'done'") == i64::from(n));
        // The dispatcher frees the slot when its turn's answer reaches it, just after the commit
        // seen here: on a busy machine the next append could come first and find none free.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count("claimed_at = due_at AND state = 'done' AND attempts = 1 AND timestamp_ms > 1"), 20);

    // Both slots are taken by handlers that wait: what arrives meanwhile is stored, not
    // claimed, and handled once a slot is free.
    handler.paused.store(true, Ordering::SeqCst);
    for n in [22, 23] {
        block_on(inbox.append(delivery(n, None))).unwrap();
        eventually("a slot taken", || handler.runs.lock().unwrap().len() == usize::from(n));
    }
    block_on(inbox.append(delivery(24, None))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count("owner IS NOT NULL"), 2, "two slots, two claims");
    handler.paused.store(false, Ordering::SeqCst);
    handler.release.add_permits(2);
    eventually("all handled", || count("state = 'done'") == 24);
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 24);
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "each once: {runs:?}");
    block_on(dispatcher.stop());
    block_on(inbox.close());
}

#[test]
fn the_claims_of_a_killed_replica_start_on_another_within_the_lease_and_a_second() {
    use crate::crash::{logged, nanos};
    const LEASE_MS: u64 = 1000;
    const SENDERS: usize = 3;
    let Some(db) = TestDatabase::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run_log = dir.path().join("runs");
    let mut replicas = three_replicas(&db.url, dir.path(), LEASE_MS);
    let addrs: Vec<std::net::SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let webhook = *meet_webhooks::WEBHOOKS.iter().find(|w| w.event == "recordingStarted").unwrap();

    // A paced load, well under what three replicas handle (each runs 4 handlers of 200 ms at
    // once): 3 senders, 15 deliveries a second each, to the replicas in turn.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut body = crate::common::example(&webhook);
                    let recording = format!("s{s}-{n}");
                    body["data"]["recordingId"] = recording.clone().into();
                    body["data"]["roomId"] = format!("room-{s}-{n}").into();
                    body["data"]["sleepMs"] = 200.into();
                    let (timestamp, body) = (now_ms().to_string(), body.to_string());
                    let acked = (0..30).any(|t| {
                        deliver_within(addrs[(n + t) % 3], &timestamp, &body, Duration::from_millis(700)) == Some(200)
                    });
                    assert!(acked, "{recording} acknowledged by some replica");
                    acknowledged.push(recording);
                    std::thread::sleep(Duration::from_millis(66));
                }
                acknowledged
            })
        })
        .collect();
    // Connected before the kill: what the killed replica holds is read just before and at once
    // after it, not once its leases may have run out and been taken over.
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    let held_by_0 = || -> Vec<i64> {
        block_on(inbox.list(Filter::State(State::Pending), None, 100_000))
            .unwrap()
            .into_iter()
            .filter(|d| d.claimed_by.as_deref() == Some("replica-0"))
            .map(|d| d.id)
            .collect()
    };
    std::thread::sleep(Duration::from_millis(1500));
    // It holds a few claims at a time, and at some moments none: the kill waits for two.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held_by_0().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    replicas[0].child.kill().unwrap(); // SIGKILL, under load
    let killed_at = nanos();
    replicas[0].child.wait().unwrap();
    let held = held_by_0();
    let listed_ms = (nanos() - killed_at) / 1_000_000;
    std::thread::sleep(Duration::from_millis(LEASE_MS + 2000));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<String> = senders.into_iter().flat_map(|s| s.join().unwrap()).collect();
    eventually("nothing pending", || block_on(inbox.stats()).unwrap().pending == 0);
    let stored = block_on(inbox.list(Filter::All, None, 100_000)).unwrap();
    block_on(inbox.close());
    assert!(stored.iter().all(|d| d.state == State::Done), "every delivery handled");
    assert_eq!(stored.len(), acknowledged.len(), "each stored once");
    // An outcome the killed replica had sent still commits (its connection's last statement runs
    // to its end), maybe after the read above: that delivery was handled then, not held.
    let held: Vec<i64> = held
        .into_iter()
        .filter(|id| {
            let row = stored.iter().find(|d| d.id == *id).unwrap();
            let done_by_0 = |a: &meet_webhooks_runtime::inbox::Attempt| {
                a.replica.as_deref() == Some("replica-0") && a.outcome == "done"
            };
            !(row.attempts == 1 && row.history.iter().any(done_by_0))
        })
        .collect();

    // Each delivery the killed replica held: its next run, on another replica.
    let recording_of = |id: i64| {
        let row = stored.iter().find(|d| d.id == id).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&row.body).unwrap();
        body["data"]["recordingId"].as_str().unwrap().to_owned()
    };
    let lines = logged(&run_log);
    let mut takeovers = Vec::new();
    for id in &held {
        let recording = recording_of(*id);
        let taken = lines
            .iter()
            .filter(|l| l.start && l.recording == recording && l.replica != "replica-0" && l.nanos > killed_at)
            .map(|l| l.nanos)
            .min()
            .unwrap_or_else(|| panic!("{recording} (delivery {id}), held by the killed replica, never ran again"));
        takeovers.push((taken - killed_at) / 1_000_000);
    }
    eprintln!(
        "replica-0 killed holding {} claims; each started on another replica this long after (ms): {takeovers:?}",
        held.len()
    );
    assert!(!held.is_empty(), "the kill caught claims in flight (read {listed_ms} ms after it)");
    let bound = u128::from(LEASE_MS) + 1000;
    assert!(takeovers.iter().all(|&ms| ms <= bound), "taken over within {bound} ms: {takeovers:?}");
    // Each takeover is logged where it happened: whose claim it was, how long ago it ran out.
    drop(replicas);
    let logs: String =
        (1..3).map(|i| std::fs::read_to_string(dir.path().join(format!("replica-{i}.log"))).unwrap()).collect();
    for id in &held {
        let said = logs.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|line| {
            let message = line["message"].as_str()?;
            let rest =
                message.strip_prefix(&format!("delivery {id} event=recordingStarted: taken over from replica-0, "))?;
            let ago: f64 = rest.strip_prefix("whose claim ran out ")?.split(' ').next()?.parse().ok()?;
            (line["level"] == "WARN").then_some(ago)
        });
        let ago = said.unwrap_or_else(|| panic!("delivery {id}'s takeover not logged:\n{logs}"));
        assert!((0.0..=(LEASE_MS + 1000) as f64 / 1000.0).contains(&ago), "{ago}");
    }
}

#[test]
fn a_replica_spaces_its_turns_only_while_another_announces_commits() {
    let Some(db) = TestDatabase::create() else { return };
    let a = PgInbox::connect(&db.url, "a").unwrap();
    let b = PgInbox::connect(&db.url, "b").unwrap();
    assert_eq!(block_on(a.append(delivery(1, None))).unwrap(), Appended::New(1));
    // Its own announcement arrives within milliseconds, and does not count.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.turn_gap(), Duration::ZERO, "alone: each turn at once");
    assert!(matches!(block_on(b.append(delivery(2, None))).unwrap(), Appended::New(_)));
    eventually("a hears b's commit", || a.turn_gap() > Duration::ZERO);
    let heard = std::time::Instant::now();
    eventually("a forgets b once it is quiet", || a.turn_gap() == Duration::ZERO);
    assert!(heard.elapsed() < Duration::from_secs(5), "{:?}", heard.elapsed());
    block_on(a.close());
    block_on(b.close());
}

#[test]
fn a_claim_reads_the_handled_marks_of_its_rooms_by_key_however_many_rooms_were_handled() {
    let Some(db) = TestDatabase::create() else { return };
    // The tables made (building an index reads its table: counted once its connection ends).
    block_on(PgInbox::connect(&db.url, "schema").unwrap().close());
    // The marks of 5,000 rooms handled before, and both tables analyzed: the planner would
    // rather read `handled` whole, once per claim, than look it up for each delivery claimed.
    execute(
        &db.url,
        "INSERT INTO handled (room, recording, id, event, created, done_at)
              SELECT 'done-' || n, '', n, 'meetingEnded', 0, 0 FROM generate_series(1, 5000) n;
         ANALYZE handled;",
    )
    .unwrap();
    let inbox = PgInbox::connect(&db.url, "a").unwrap();
    for n in 1..=40u8 {
        let mut d = delivery(n, Some(&format!("room-{n}")));
        d.created_us = Some(i64::from(n));
        block_on(inbox.append(d)).unwrap();
    }
    execute(&db.url, "ANALYZE deliveries").unwrap();
    let scans = || -> (i64, i64) {
        let read = |column: &str| {
            scalar::<i64>(
                &db.url,
                &format!("SELECT COALESCE({column}, 0) FROM pg_stat_user_tables WHERE relname = 'handled'"),
            )
        };
        (read("seq_scan"), read("idx_scan"))
    };
    let before = scans();
    assert_eq!(block_on(inbox.claim(request(64, Duration::from_secs(30)))).unwrap().len(), 40);
    // The claim's reads are counted once its connection ends.
    block_on(inbox.close());
    eventually("the claim's reads of `handled` counted", || {
        std::thread::sleep(Duration::from_millis(50));
        let now = scans();
        now.0 + now.1 > before.0 + before.1
    });
    let after = scans();
    assert_eq!(after.0, before.0, "read whole (sequential scans, index scans): {before:?} → {after:?}");
}

/// A value of the first row and column `sql` returns, on a connection of its own.
fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(url: &str, sql: &str) -> T {
    block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

#[test]
fn a_pruning_round_that_waits_holds_up_no_handler() {
    let Some(db) = TestDatabase::create() else { return };
    block_on(PgInbox::connect(&db.url, "schema").unwrap().close());
    // Twelve thousand dead rows: the next pruning round vacuums the table.
    execute(
        &db.url,
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, body, received_at, due_at)
              SELECT sha256(n::text::bytea), n::text, n, 'fallback', '{}', 0, 0 FROM generate_series(1, 12000) n;
         DELETE FROM deliveries;",
    )
    .unwrap();
    eventually("the dead rows counted", || {
        scalar::<i64>(&db.url, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'deliveries'") >= 10_000
    });
    // A lock that a vacuum waits for and nothing else does, held until the end of the test.
    let holder = tokio::runtime::Runtime::new().unwrap();
    let (client, connection) = holder.block_on(tokio_postgres::connect(&db.url, tokio_postgres::NoTls)).unwrap();
    holder.spawn(connection);
    holder.block_on(client.batch_execute("BEGIN; LOCK TABLE deliveries IN SHARE UPDATE EXCLUSIVE MODE")).unwrap();

    // The service prunes as it starts, and its vacuum waits.
    let server = postgres_server(&db.url, 4);
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE query = 'VACUUM (ANALYZE) deliveries' AND wait_event_type = 'Lock'";
    eventually("the vacuum waits for the lock", || scalar::<i64>(&db.url, waiting) == 1);
    // Deliveries are handled all the same.
    for n in 0..3 {
        assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(n, 3)), Some(200));
    }
    eventually("handled while the vacuum waits", || server.recorder().runs.lock().unwrap().len() == 3);
    assert_eq!(scalar::<i64>(&db.url, waiting), 1, "still waiting");
    holder.block_on(client.batch_execute("ROLLBACK")).unwrap();
}

#[test]
fn pruning_under_load_keeps_the_postgres_inbox_bounded() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    crate::inbox::pruning_under_load_keeps_the_inbox_bounded(std::sync::Arc::new(inbox.clone()));
    block_on(inbox.close());
}

#[test]
fn a_pruning_round_vacuums_the_deliveries_table_once_enough_of_it_is_dead() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    let vacuums =
        || scalar::<i64>(&db.url, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'deliveries'");
    // A few dead rows: nothing to do.
    execute(
        &db.url,
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, body, received_at, due_at)
                      SELECT int8send(n), n::text, n, 'typed', '{}', 0, 0 FROM generate_series(1, 100) n;
                      DELETE FROM deliveries",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the statistics reach the server's counters
    block_on(inbox.prune(Duration::from_secs(3600))).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(vacuums(), 0);
    // Twenty thousand handled and gone: the next round vacuums.
    execute(
        &db.url,
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, body, received_at, due_at)
                      SELECT int8send(n), n::text, n, 'typed', '{}', 0, 0 FROM generate_series(1, 20000) n;
                      DELETE FROM deliveries",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    block_on(inbox.prune(Duration::from_secs(3600))).unwrap();
    eventually("vacuumed", || vacuums() == 1);
    block_on(inbox.close());
}

#[test]
fn a_pruning_round_analyzes_the_inbox_tables_once_enough_of_them_changed() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    // Whether the planner has statistics on the state of deliveries and on the rooms handled.
    let has = |table: &str, column: &str| {
        let sql = format!("SELECT count(*) > 0 FROM pg_stats WHERE tablename = '{table}' AND attname = '{column}'");
        scalar::<bool>(&db.url, &sql)
    };
    let analyzed = || (has("deliveries", "state"), has("handled", "room"));
    // A few rows: nothing to do.
    execute(
        &db.url,
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, body, received_at, due_at)
                      SELECT int8send(n), n::text, n, 'typed', '{}', 0, 0 FROM generate_series(1, 100) n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the statistics reach the server's counters
    block_on(inbox.prune(Duration::from_secs(3600))).unwrap();
    assert_eq!(analyzed(), (false, false));
    // Thousands stored and handled: the next round analyzes both tables.
    execute(
        &db.url,
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, kind, body, received_at, due_at, state)
                      SELECT int8send(n), n::text, n, 'typed', '{}', 0, 0, 'done' FROM generate_series(101, 5000) n;
         INSERT INTO handled (room, recording, id, event, created, done_at)
                      SELECT 'room-' || n, '', n, 'meetingEnded', n, 0 FROM generate_series(1, 2000) n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    block_on(inbox.prune(Duration::from_secs(3600))).unwrap();
    assert_eq!(analyzed(), (true, true));
    block_on(inbox.close());
}

#[test]
fn recording_handled_events_reads_no_other_done_delivery_before_any_analysis() {
    let Some(db) = TestDatabase::create() else { return };
    let inbox = PgInbox::connect(&db.url, "test").unwrap();
    // 2,000 deliveries over 200 rooms, each room's events created in turn; never analyzed (no
    // pruning round runs here).
    let appends = (0..2000u32).map(|n| {
        let delivery = NewDelivery {
            signature: [n.to_be_bytes(), [7; 4], [7; 4], [7; 4], [7; 4], [7; 4], [7; 4], [7; 4]]
                .concat()
                .try_into()
                .unwrap(),
            timestamp: n.to_string(),
            timestamp_ms: i64::from(n),
            room: Some(format!("room-{}", n % 200)),
            created_us: Some(i64::from(n) * 1000),
            ..delivery(0, None)
        };
        inbox.append(delivery)
    });
    for appended in block_on(futures_util::future::join_all(appends)) {
        assert!(matches!(appended.unwrap(), Appended::New(_)));
    }
    let mut handled = 0;
    loop {
        let claimed = block_on(inbox.claim(request(100, Duration::from_secs(30)))).unwrap();
        if claimed.is_empty() {
            break;
        }
        let done: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion { claim: c.claim, kind: Kind::Fallback, outcome: Outcome::Done })
            .collect();
        assert!(block_on(inbox.complete(&done)).unwrap().iter().all(|c| *c == Completed::Recorded));
        handled += done.len();
    }
    assert_eq!(handled, 2000);
    std::thread::sleep(Duration::from_millis(1500)); // the statistics reach the server's counters
    let read: i64 =
        scalar(&db.url, "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'deliveries_done'");
    // Each turn read its own deliveries by id: the index of every done delivery, read per turn,
    // would have given tens of thousands.
    assert!(read < 2000, "{read} entries of done deliveries read");
    block_on(inbox.close());
}

/// The README's role: one that logs in and owns the inbox's database, nothing more.
struct OwnerRole {
    admin: String,
    name: String,
    /// Dropped first: a role that owns a database cannot be dropped.
    database: String,
}

impl Drop for OwnerRole {
    fn drop(&mut self) {
        let _ = execute(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database));
        let _ = execute(&self.admin, &format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

#[test]
fn the_service_runs_with_a_role_that_only_owns_its_database() {
    let Some(db) = TestDatabase::create() else { return };
    let Some((_, host)) = db.url.split_once("://postgres@") else {
        eprintln!("skipped: the test database's URL names another user than postgres");
        return;
    };
    let role = OwnerRole { admin: db.admin.clone(), name: format!("{}_owner", db.name), database: db.name.clone() };
    // The README's two statements (the database exists already: it is handed over).
    execute(&db.admin, &format!("CREATE ROLE {} LOGIN", role.name)).unwrap();
    execute(&db.admin, &format!("ALTER DATABASE {} OWNER TO {}", db.name, role.name)).unwrap();
    let privileges = {
        let sql = format!(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls OR rolinherit AND \
             EXISTS (SELECT 1 FROM pg_auth_members WHERE member = oid) FROM pg_roles WHERE rolname = '{}'",
            role.name
        );
        let admin = db.admin.clone();
        block_on(async move {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0)
        })
    };
    assert!(!privileges, "the role has nothing but its login and its database");
    let url = format!("postgres://{}@{host}", role.name);
    let service = crate::binary::Service::start(&["--database-url", &url]);
    assert_eq!(try_deliver(service.addr, &now_ms().to_string(), &mixed_delivery(1, 1)), Some(200));
    assert_eq!(service.get("/readyz").status, 200);
    eventually("handled", || {
        let (_, stdout, _) = crate::binary::run(&["inbox", "stats", "--json", "--database-url", &url], b"");
        serde_json::from_str::<serde_json::Value>(&stdout).is_ok_and(|s| s["done"] == 1)
    });
    drop(service);
    drop(role);
}

#[test]
fn a_delivery_claimed_as_it_is_stored_starts_while_the_dispatcher_s_turn_waits_for_a_room() {
    let Some(db) = TestDatabase::create() else { return };
    let server = postgres_server(&db.url, 8);
    let recorder = server.recorder();
    // A delivery of room-0, its handler held.
    recorder.paused.store(true, Ordering::SeqCst);
    assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(0, 1)), Some(200));
    eventually("its handler runs", || recorder.runs.lock().unwrap().len() == 1);
    // The room's row locked, until the end of the test: the turn that records that delivery's
    // outcome waits for it.
    let holder = tokio::runtime::Runtime::new().unwrap();
    let (client, connection) = holder.block_on(tokio_postgres::connect(&db.url, tokio_postgres::NoTls)).unwrap();
    holder.spawn(connection);
    holder.block_on(client.batch_execute("BEGIN; SELECT 1 FROM rooms WHERE room = 'room-0' FOR UPDATE")).unwrap();
    recorder.paused.store(false, Ordering::SeqCst);
    recorder.release.add_permits(1);
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually("the outcome's turn waits for the room", || scalar::<i64>(&db.url, waiting) == 1);
    // A delivery without a room, claimed as it is stored: its handler starts meanwhile.
    assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(4, 1)), Some(200));
    eventually("the new delivery handled while the turn waits", || recorder.runs.lock().unwrap().len() == 2);
    assert_eq!(scalar::<i64>(&db.url, waiting), 1, "still waiting");
    holder.block_on(client.batch_execute("ROLLBACK")).unwrap();
    let done = "SELECT count(*) FROM deliveries WHERE state = 'done'";
    eventually("both outcomes recorded", || scalar::<i64>(&db.url, done) == 2);
}
