//! Issue 5: the durable inbox. In process (a real server and a real SQLite file) for the
//! handler semantics; the real binary, killed with SIGKILL, for crash safety.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meet_webhooks::WEBHOOKS;
use meet_webhooks_runtime::inbox::{
    Appended, ClaimRequest, Completion, Filter, Inbox, Kind, NewDelivery, Outcome, SqliteInbox, State,
};
use meet_webhooks_runtime::verify::sign;
use serde_json::json;

use crate::binary::{Service, run};
use crate::common::{
    Call, InboxOptions, KEY, Options, TestServer, admin, block_on, eventually, example, now_ms, post_request, row, rows,
};

fn inbox_server(dir: &std::path::Path) -> TestServer {
    TestServer::with(Options { inbox: Some(InboxOptions::new(dir)), ..Options::default() })
}

fn accepted_id(response: &crate::common::Response) -> i64 {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["status"], "accepted", "{response:?}");
    response.json()["id"].as_i64().unwrap()
}

#[test]
fn a_delivery_is_stored_before_it_is_acknowledged_and_then_handled() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    let (timestamp, body) = (now_ms().to_string(), example(&WEBHOOKS[0]).to_string());
    let id = accepted_id(&server.deliver(KEY, &timestamp, body.as_bytes()));
    let stored = row(dir.path(), id);
    assert_eq!(stored.body, body.as_bytes(), "stored as received");
    assert_eq!(stored.timestamp, timestamp);
    assert_eq!(stored.signature, hex::decode(sign(KEY.as_bytes(), &timestamp, body.as_bytes())).unwrap()[..]);
    eventually("handled", || row(dir.path(), id).state == State::Done);
    assert_eq!(
        server.recorder().calls(),
        [Call::Typed { operation_id: WEBHOOKS[0].operation_id, delivery_id: id.to_string(), attempt: 1 }]
    );
    // The provider's retry is a duplicate: acknowledged, not stored or handled again.
    let again = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!(again.json(), json!({"status": "duplicate", "id": id}));
    assert_eq!(rows(dir.path()).len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.recorder().calls().len(), 1);
}

#[test]
fn a_handler_that_fails_twice_then_succeeds_is_retried_with_its_attempt_number() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    server.recorder().failures_left.store(2, Ordering::SeqCst);
    let id = accepted_id(&server.deliver(KEY, &now_ms().to_string(), example(&WEBHOOKS[0]).to_string().as_bytes()));
    eventually("done after three attempts", || row(dir.path(), id).state == State::Done);
    let attempts: Vec<u32> = server
        .recorder()
        .calls()
        .iter()
        .map(|c| match c {
            Call::Typed { attempt, delivery_id, .. } if *delivery_id == id.to_string() => *attempt,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(row(dir.path(), id).attempts, 3);
}

#[test]
fn a_handler_that_always_fails_leaves_a_dead_delivery_that_replay_hands_back_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    server.recorder().failures_left.store(u32::MAX, Ordering::SeqCst);
    let id = accepted_id(&server.deliver(KEY, &now_ms().to_string(), example(&WEBHOOKS[0]).to_string().as_bytes()));
    eventually("dead after the last attempt", || row(dir.path(), id).state == State::Dead);
    let dead = row(dir.path(), id);
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.as_deref().unwrap().contains("fails on purpose"), "{dead:?}");
    assert_eq!(server.recorder().calls().len(), 3);

    // The fix, then the CLI, on the same data directory while the service runs.
    server.recorder().failures_left.store(0, Ordering::SeqCst);
    let listed = run(&["inbox", "--data-dir", dir.path().to_str().unwrap(), "list", "--state", "dead", "--json"], b"");
    let line: serde_json::Value = serde_json::from_str(listed.1.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["id"].as_i64(), line["state"].as_str(), line["attempts"].as_u64()),
        (Some(id), Some("dead"), Some(3))
    );
    assert!(line["event"].is_string() && line["received_at"].is_i64(), "{line}");
    let (code, stdout, stderr) =
        run(&["inbox", "--data-dir", dir.path().to_str().unwrap(), "replay", &id.to_string()], b"");
    assert_eq!(code, 0, "{stdout}{stderr}");
    eventually("handled after the replay", || row(dir.path(), id).state == State::Done);
    let last = server.recorder().calls().pop().unwrap();
    assert!(matches!(last, Call::Typed { attempt: 1, .. }), "a replay starts counting again: {last:?}");
}

#[test]
fn a_slow_handler_does_not_hold_up_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    // Every handler call blocks until released: if an answer waited for its handler, this
    // test could not get past the first delivery.
    server.recorder().paused.store(true, Ordering::SeqCst);
    for n in 0..20 {
        let mut body = example(&WEBHOOKS[0]);
        body["data"]["recordingId"] = format!("slow-{n}").into();
        accepted_id(&server.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes()));
    }
    assert!(server.recorder().calls().is_empty(), "nothing was handled before the answers");
    server.recorder().release.add_permits(20);
    eventually("all 20 handled", || server.recorder().calls().len() == 20);
}

#[test]
fn the_events_of_one_room_are_handled_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    server.recorder().paused.store(true, Ordering::SeqCst);
    for seq in 0..5 {
        for room in ["a", "b", "c"] {
            let body = json!({"event": "roomTest", "creationDate": now_ms(), "data": {"roomId": room, "seq": seq}});
            accepted_id(&server.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes()));
        }
    }
    // Let handlers through one at a time, so that out-of-order starts would have the chance.
    for _ in 0..15 {
        server.recorder().release.add_permits(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    eventually("all 15 handled", || server.recorder().calls().len() == 15);
    assert_eq!(server.recorder().room_overlaps.load(Ordering::SeqCst), 0, "two events of one room ran at once");
    let mut by_room: HashMap<String, Vec<i64>> = HashMap::new();
    for body in server.recorder().fallback_bodies.lock().unwrap().iter() {
        by_room
            .entry(body["data"]["roomId"].as_str().unwrap().into())
            .or_default()
            .push(body["data"]["seq"].as_i64().unwrap());
    }
    for (room, seqs) in by_room {
        assert_eq!(seqs, [0, 1, 2, 3, 4], "room {room}");
    }
}

#[test]
fn a_fallback_delivery_replayed_after_a_rebuild_reaches_its_typed_method() {
    // An older build, whose spec did not know this webhook, stored it as a fallback and handled
    // it there. This build knows it: `inbox replay --fallback` re-classifies from the stored
    // bytes. (CI also does this across two real builds: `.ci/spec-upgrade`.)
    let dir = tempfile::tempdir().unwrap();
    let webhook = WEBHOOKS.last().unwrap();
    let body = example(webhook).to_string();
    let timestamp = now_ms().to_string();
    {
        let inbox = SqliteInbox::open(dir.path(), "older-build").unwrap();
        let delivery = NewDelivery {
            signature: hex::decode(sign(KEY.as_bytes(), &timestamp, body.as_bytes())).unwrap().try_into().unwrap(),
            timestamp: timestamp.clone(),
            timestamp_ms: timestamp.parse().unwrap(),
            event: Some(webhook.event.into()),
            kind: Kind::Fallback,
            room: None,
            body: body.clone().into(),
            received_at_ms: now_ms(),
            recording: None,
            created_us: None,
            hold: std::time::Duration::ZERO,
        };
        block_on(async {
            assert!(matches!(inbox.append(delivery).await.unwrap(), Appended::New(_)));
            let request = ClaimRequest { limit: 1, lease: Duration::from_secs(30), max_attempts: 3 };
            let [claimed] = &inbox.claim(request).await.unwrap()[..] else { panic!("one claim") };
            let done = Completion { claim: claimed.claim, kind: Kind::Fallback, outcome: Outcome::Done };
            inbox.complete(&[done]).await.unwrap();
            inbox.close().await;
        });
    }
    let server = inbox_server(dir.path());
    let fallbacks = || block_on(admin(dir.path()).list(Filter::Fallback, None, 10)).unwrap();
    assert_eq!(fallbacks().len(), 1);
    assert!(server.recorder().calls().is_empty());
    let (code, stdout, stderr) =
        run(&["inbox", "--data-dir", dir.path().to_str().unwrap(), "replay", "--fallback"], b"");
    assert_eq!(code, 0, "{stdout}{stderr}");
    eventually("handled by the typed method", || !server.recorder().calls().is_empty());
    assert!(
        matches!(server.recorder().calls()[0], Call::Typed { operation_id, .. } if operation_id == webhook.operation_id)
    );
    eventually("recorded as typed and done", || {
        let rows = rows(dir.path());
        rows[0].state == State::Done && rows[0].kind == Kind::Typed
    });
    assert!(fallbacks().is_empty());
    // And the provider's retry of it is still a duplicate.
    let again = server.deliver(KEY, &timestamp, body.as_bytes());
    assert_eq!(again.json()["status"], "duplicate");
}

/// Sends one signed delivery over a fresh connection; `None` if the service was not there to
/// answer (it was killed).
pub fn try_deliver(addr: std::net::SocketAddr, timestamp: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let signature = sign(KEY.as_bytes(), timestamp, body.as_bytes());
    let headers = [("content-type", "application/json"), ("x-timestamp", timestamp), ("x-signature", &signature)];
    stream.write_all(&post_request("x", &headers, body.as_bytes())).ok()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn storage_that_becomes_unwritable_gets_503_and_not_ready_then_recovers() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let service = Service::start_in(&data, &[]);
    let send = |n: usize| {
        let mut body = example(&WEBHOOKS[0]);
        body["data"]["recordingId"] = format!("storage-{n}").into();
        try_deliver(service.addr, &now_ms().to_string(), &body.to_string())
    };
    assert_eq!(send(0), Some(200));
    assert_eq!(service.get("/readyz").status, 200);

    let file = data.join(meet_webhooks_runtime::inbox::sqlite::FILE_NAME);
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&file, permissions.clone()).unwrap();
    assert_eq!(send(1), Some(503));
    let ready = service.get("/readyz");
    assert_eq!((ready.status, ready.error().as_str()), (503, "storage_unavailable"));
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&file, permissions).unwrap();
    assert_eq!(send(2), Some(200));

    let moved = parent.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    assert_eq!(send(3), Some(503));
    assert_eq!(service.get("/readyz").status, 503);
    std::fs::rename(&moved, &data).unwrap();
    assert_eq!(service.get("/readyz").status, 200);
    assert_eq!(send(4), Some(200));

    let stored: Vec<String> = rows(&data)
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["data"]["recordingId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(stored, ["storage-0", "storage-2", "storage-4"], "exactly the acknowledged ones");
}

#[test]
fn inbox_stats_and_show_read_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    let (timestamp, body) = (now_ms().to_string(), example(&WEBHOOKS[0]).to_string());
    let id = accepted_id(&server.deliver(KEY, &timestamp, body.as_bytes()));
    eventually("handled", || row(dir.path(), id).state == State::Done);
    let path = dir.path().to_str().unwrap();
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "stats", "--json"], b"");
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((stats["done"].as_u64(), stats["pending"].as_u64()), (Some(1), Some(0)), "{stats}");
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "stats"], b"");
    assert_eq!(code, 0);
    assert!(stdout.starts_with("deliveries by state: 0 pending, 1 done, 0 dead\n"), "for people: {stdout}");
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "show", &id.to_string()], b"");
    assert_eq!(code, 0);
    assert!(stdout.contains(&format!("X-Timestamp: {timestamp}")) && stdout.contains(&body), "{stdout}");
    let (code, _, stderr) = run(&["inbox", "--data-dir", path, "show", "999"], b"");
    assert_eq!(code, 2);
    assert!(stderr.contains("no delivery 999"), "{stderr}");
}

#[test]
fn the_reorder_window_holds_a_room_s_event_and_not_one_without_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = InboxOptions { reorder_window: Duration::from_secs(60), ..InboxOptions::new(dir.path()) };
    let server = TestServer::with(Options { inbox: Some(inbox), ..Options::default() });
    let deliver =
        |body: serde_json::Value| accepted_id(&server.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes()));
    let room = deliver(json!({"event": "meetingStarted", "creationDate": now_ms(), "data": {"roomId": "held"}}));
    let test = deliver(json!({"event": "testEvent", "creationDate": now_ms(), "data": {"message": "hi"}}));
    eventually("the test event handled at once", || row(dir.path(), test).state == State::Done);
    let held = row(dir.path(), room);
    assert_eq!((held.state, held.attempts), (State::Pending, 0), "the room's event waits out its window");
}

#[test]
fn inbox_list_and_show_say_when_the_provider_created_a_delivery_and_that_it_ran_late() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    // The spec's example where it has the webhook (the tests also run against older specs,
    // without recordingEnded); typed or not, it is handled.
    let send = |event: &str, created: f64| {
        let mut body =
            WEBHOOKS.iter().find(|w| w.event == event).map_or_else(|| json!({"event": event, "data": {}}), example);
        body["creationDate"] = created.into();
        body["data"]["roomId"] = "room-late".into();
        body["data"]["recordingId"] = "room-late--EG_1".into();
        let id = accepted_id(&server.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes()));
        eventually("handled", || row(dir.path(), id).state == State::Done);
        id
    };
    // 2026-12-05T01:00:00.500Z with a fraction, and a second before it, arriving after it.
    let ended = send("recordingEnded", 1_796_432_400_500.392_6);
    let updated = send("recordingUpdated", 1_796_432_399_500.0);
    let path = dir.path().to_str().unwrap();
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "list"], b"");
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("CREATED (UTC)"), "{stdout}");
    assert!(lines[1].contains("2026-12-05T01:00:00.500Z") && !lines[1].contains("handled after"), "{stdout}");
    let late = format!("handled after recordingEnded (delivery {ended}, created 2026-12-05T01:00:00.500Z)");
    assert!(lines[2].contains("2026-12-05T00:59:59.500Z") && lines[2].contains(&late), "{stdout}");
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "show", &updated.to_string()], b"");
    assert_eq!(code, 0);
    assert!(stdout.contains("created: 2026-12-05T00:59:59.500Z (creationDate)"), "{stdout}");
    assert!(stdout.contains(&format!("late: {late}")), "{stdout}");
    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "list", "--json"], b"");
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows[0]["created_us"], 1_796_432_400_500_393_i64);
    assert_eq!((rows[0]["late"].clone(), rows[1]["late"]["id"].as_i64()), (serde_json::Value::Null, Some(ended)));
    // A body without a creationDate says so.
    let (timestamp, body) = (now_ms().to_string(), json!({"event": "testEvent", "data": {}}).to_string());
    let test = accepted_id(&server.deliver(KEY, &timestamp, body.as_bytes()));
    eventually("handled", || row(dir.path(), test).state == State::Done);
    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "show", &test.to_string()], b"");
    assert!(stdout.contains("created: - (no creationDate"), "{stdout}");
    // Why it went to the fallback, and when it came, as a UTC date.
    assert!(stdout.contains("\nfallback_reason: the spec has no webhook of this name\n"), "{stdout}");
    let received = stdout.lines().find_map(|l| l.strip_prefix("received_at: ")).unwrap();
    assert!(received.parse::<jiff::Timestamp>().is_ok() && received.ends_with('Z'), "{stdout}");
    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "list", "--json"], b"");
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fallback = rows.iter().find(|r| r["id"] == test).unwrap();
    assert_eq!(fallback["fallback_reason"], "the spec has no webhook of this name");
    assert!(rows.iter().filter(|r| r["kind"] == "typed").all(|r| r.get("fallback_reason").is_none()), "{stdout}");
}

#[test]
fn the_pending_list_says_when_each_delivery_is_next_attempted() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = InboxOptions::new(dir.path());
    (options.retry.base, options.retry.max) = (Duration::from_secs(60), Duration::from_secs(60));
    options.reorder_window = Duration::from_secs(40);
    let server = TestServer::with(Options { inbox: Some(options), ..Options::default() });
    server.recorder().failures_left.store(1, Ordering::SeqCst);
    // Without a room: handled at once, fails, and waits a minute for its retry.
    let body = json!({"event": "testEvent", "creationDate": now_ms(), "data": {}}).to_string();
    let failed = accepted_id(&server.deliver(KEY, &now_ms().to_string(), body.as_bytes()));
    eventually("its first attempt failed", || row(dir.path(), failed).last_error.is_some());
    let retried_after = now_ms();
    // A room's: it waits out the reorder window first.
    let waiting =
        accepted_id(&server.deliver(KEY, &now_ms().to_string(), example(&WEBHOOKS[0]).to_string().as_bytes()));
    let received = row(dir.path(), waiting).received_at;
    let path = dir.path().to_str().unwrap();

    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "list", "--state", "pending", "--json"], b"");
    let due: HashMap<i64, i64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["id"].as_i64().unwrap(), r["due_at"].as_i64().unwrap_or_else(|| panic!("{r}"))))
        .collect();
    assert!((retried_after - 5_000..=retried_after).contains(&(due[&failed] - 60_000)), "{stdout}");
    assert_eq!(due[&waiting], received + 40_000, "{stdout}");
    // As UTC times in the table, and in `show`.
    let (code, stdout, _) = run(&["inbox", "--data-dir", path, "list", "--state", "pending"], b"");
    assert_eq!(code, 0);
    let shown = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let line = |id: i64| stdout.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap();
    assert!(stdout.lines().next().unwrap().contains("  NEXT (UTC)  "), "{stdout}");
    assert!(line(waiting).contains(&shown(due[&waiting])), "{stdout}");
    assert!(line(failed).contains(&shown(due[&failed])), "{stdout}");
    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "show", &failed.to_string()], b"");
    let next = jiff::Timestamp::from_millisecond(due[&failed]).unwrap();
    assert!(stdout.contains(&format!("\nnext_attempt: {next:.3}\n")), "{stdout}");
    // Handled: no next attempt.
    let handled = accepted_id(&server.deliver(
        KEY,
        &now_ms().to_string(),
        json!({"event": "x", "data": {}}).to_string().as_bytes(),
    ));
    eventually("handled", || row(dir.path(), handled).state == State::Done);
    assert_eq!(row(dir.path(), handled).due_at, None);
    let (_, stdout, _) = run(&["inbox", "--data-dir", path, "list", "--state", "done"], b"");
    let line = stdout.lines().nth(1).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[6], "-", "{stdout}");
}

#[test]
fn stopping_lets_running_handlers_finish_within_the_grace_period_and_leaves_the_rest_pending() {
    use meet_webhooks_runtime::{Dispatcher, RetryPolicy};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let inbox: Arc<dyn Inbox> = Arc::new(SqliteInbox::open(dir.path(), "test").unwrap());
    let recorder = Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default()));
    recorder.paused.store(true, Ordering::SeqCst);
    let start = |grace_ms: u64| {
        Dispatcher {
            inbox: inbox.clone(),
            webhooks: recorder.clone(),
            concurrency: 1,
            retry: RetryPolicy::default(),
            lease: meet_webhooks_runtime::defaults::LEASE,
            retention: Duration::from_secs(3600),
            shutdown_grace: Duration::from_millis(grace_ms),
            poll: meet_webhooks_runtime::defaults::POLL,
        }
        .spawn()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let append = |n: i64| {
        let body = json!({"event": "shutdownTest", "creationDate": now_ms(), "data": {"n": n}}).to_string();
        let timestamp = (now_ms() + n).to_string();
        let delivery = NewDelivery {
            signature: hex::decode(sign(KEY.as_bytes(), &timestamp, body.as_bytes())).unwrap().try_into().unwrap(),
            timestamp: timestamp.clone(),
            timestamp_ms: timestamp.parse().unwrap(),
            event: Some("shutdownTest".into()),
            kind: Kind::Fallback,
            room: None,
            body: body.into(),
            received_at_ms: now_ms(),
            recording: None,
            created_us: None,
            hold: std::time::Duration::ZERO,
        };
        let Appended::New(id) = runtime.block_on(inbox.append(delivery)).unwrap() else { panic!() };
        id
    };

    // A handler that finishes within the grace period is recorded as done.
    let first = append(1);
    let dispatcher = start(10_000);
    eventually("the handler started", || recorder.fallback_bodies.lock().unwrap().len() == 1);
    let stopping = std::thread::spawn(move || block_on(dispatcher.stop()));
    std::thread::sleep(Duration::from_millis(100));
    recorder.release.add_permits(1);
    stopping.join().unwrap();
    eventually("recorded done", || row(dir.path(), first).state == State::Done);

    // One that does not is stopped and left pending, its attempt not counted, to be handled
    // after the next start.
    let second = append(2);
    let dispatcher = start(200);
    eventually("the handler started", || recorder.fallback_bodies.lock().unwrap().len() == 2);
    block_on(dispatcher.stop());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(row(dir.path(), second).state, State::Pending);
    assert_eq!(row(dir.path(), second).attempts, 0);
    recorder.paused.store(false, Ordering::SeqCst);
    let dispatcher = start(1000);
    eventually("handled after the restart", || row(dir.path(), second).state == State::Done);
    block_on(dispatcher.stop());
}

#[test]
fn strict_mode_with_the_inbox_refuses_and_stores_nothing_that_matches_no_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::with(Options { strict: true, inbox: Some(InboxOptions::new(dir.path())), ..Options::default() });
    let body = json!({"event": "testEvent", "creationDate": now_ms(), "data": {}}).to_string();
    let response = server.deliver(KEY, &now_ms().to_string(), body.as_bytes());
    assert_eq!((response.status, response.error().as_str()), (422, "unmatched_event"));
    accepted_id(&server.deliver(KEY, &now_ms().to_string(), example(&WEBHOOKS[0]).to_string().as_bytes()));
    let stored = rows(dir.path());
    assert_eq!(stored.len(), 1, "only the typed delivery is stored");
    assert_eq!(stored[0].kind, Kind::Typed);
}

/// A distinct signed body for every `n`: the spec's webhooks in turn, and the admin screen's
/// `testEvent` (no room) every fifth, over `rooms` rooms.
pub fn mixed_delivery(n: usize, rooms: usize) -> String {
    if n % 5 == 4 {
        return json!({"event": "testEvent", "creationDate": now_ms(), "data": {"message": format!("test {n}")}})
            .to_string();
    }
    let mut body = example(&WEBHOOKS[n % WEBHOOKS.len()]);
    if let Some(data) = body["data"].as_object_mut() {
        data.insert("roomId".into(), format!("room-{}", n % rooms).into());
        data.insert("seq".into(), n.into());
    }
    body.to_string()
}

#[test]
fn many_deliveries_over_few_rooms_are_each_handled_exactly_once_with_one_attempt() {
    const N: usize = 1500;
    const SENDERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut options = InboxOptions::new(dir.path());
    options.concurrency = 8;
    let server = TestServer::with(Options { inbox: Some(options), ..Options::default() });
    let addr = server.addr;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            std::thread::spawn(move || {
                (s..N)
                    .step_by(SENDERS)
                    .map(|n| try_deliver(addr, &now_ms().to_string(), &mixed_delivery(n, 7)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for sender in senders {
        assert!(sender.join().unwrap().iter().all(|status| *status == Some(200)));
    }
    eventually("nothing pending", || block_on(admin(dir.path()).stats()).unwrap().pending == 0);
    std::thread::sleep(Duration::from_millis(300)); // a second run, if any, would show by now
    let runs = server.recorder().runs.lock().unwrap().clone();
    let mut per_delivery: HashMap<&str, Vec<u32>> = HashMap::new();
    for (id, attempt) in &runs {
        per_delivery.entry(id).or_default().push(*attempt);
    }
    let twice: Vec<_> = per_delivery.iter().filter(|(_, attempts)| attempts[..] != [1]).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(runs.len(), N, "one handler run per delivery");
    let stored = rows(dir.path());
    assert_eq!(stored.len(), N);
    assert!(stored.iter().all(|r| r.state == State::Done && r.attempts == 1), "every delivery done in one attempt");
}

#[test]
fn storage_that_cannot_take_outcomes_pauses_the_handlers_instead_of_running_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    let recorder = server.recorder();
    recorder.paused.store(true, Ordering::SeqCst);
    for n in 0..6 {
        accepted_id(&server.deliver(KEY, &now_ms().to_string(), mixed_delivery(n * 5, 6).as_bytes()));
    }
    eventually("4 handlers running (the concurrency)", || recorder.runs.lock().unwrap().len() == 4);

    // Outcomes cannot be committed while the file is read-only.
    let file = dir.path().join(meet_webhooks_runtime::inbox::sqlite::FILE_NAME);
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&file, permissions.clone()).unwrap();
    recorder.paused.store(false, Ordering::SeqCst);
    recorder.release.add_permits(4);
    eventually("the 4 handlers finished", || recorder.calls().len() == 4);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(recorder.runs.lock().unwrap().len(), 4, "nothing ran again, nothing new started");

    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&file, permissions).unwrap();
    eventually("all 6 done once storage is back", || rows(dir.path()).iter().all(|r| r.state == State::Done));
    let runs = recorder.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "{runs:?}");
}

#[test]
fn a_second_service_on_the_same_data_directory_refuses_to_start_and_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = Service::start_in(dir.path(), &[]);
    let path = dir.path().to_str().unwrap();
    let (code, _, stderr) = run(&["serve", "--bind", "127.0.0.1:0", "--key", KEY, "--data-dir", path], b"");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.child.id())) && stderr.contains("--data-dir"), "{stderr}");
    // The CLI still reads beside it.
    assert_eq!(run(&["inbox", "--data-dir", path, "stats"], b"").0, 0);
}

#[test]
fn an_inbox_file_deleted_while_serving_is_503_and_not_ready_until_a_restart() {
    for victim in [meet_webhooks_runtime::inbox::sqlite::FILE_NAME, "inbox.sqlite3-wal"] {
        let dir = tempfile::tempdir().unwrap();
        let service = Service::start_in(dir.path(), &[]);
        let send = |n: usize, timestamp: &str| try_deliver(service.addr, timestamp, &mixed_delivery(n * 5, 3));
        let first = now_ms().to_string();
        assert_eq!(send(0, &first), Some(200));
        assert_eq!(service.get("/readyz").status, 200);
        std::fs::remove_file(dir.path().join(victim)).unwrap();
        assert_eq!(send(1, &now_ms().to_string()), Some(503), "{victim}");
        assert_eq!(send(0, &first), Some(503), "{victim}: a retry of a stored delivery is not taken anew");
        let ready = service.get("/readyz");
        assert_eq!((ready.status, ready.error().as_str()), (503, "storage_unavailable"), "{victim}");
        assert!(!ready.body.contains(dir.path().to_str().unwrap()), "no paths to the client: {}", ready.body);
        assert!(
            victim != meet_webhooks_runtime::inbox::sqlite::FILE_NAME || !dir.path().join(victim).exists(),
            "no new empty inbox in its place"
        );
    }
}

#[test]
fn the_log_shrinks_back_once_a_reader_lets_go_and_is_emptied_on_shutdown() {
    use meet_webhooks_runtime::inbox::sqlite::{FILE_NAME, WAL_LIMIT};
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_in(dir.path(), &[]);
    let wal = dir.path().join(format!("{FILE_NAME}-wal"));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let padding = "x".repeat(16 * 1024);
    let send = |n: usize| {
        let mut body = serde_json::from_str::<serde_json::Value>(&mixed_delivery(n * 5, 50)).unwrap();
        body["data"]["padding"] = padding.clone().into();
        try_deliver(service.addr, &now_ms().to_string(), &body.to_string())
    };
    assert_eq!(send(0), Some(200));
    // Another process's read transaction keeps the log from being folded back.
    let reader = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
    reader.execute_batch("BEGIN; SELECT COUNT(*) FROM deliveries;").unwrap();
    let mut n = 1;
    while wal_size() <= WAL_LIMIT * 3 / 2 {
        assert_eq!(send(n), Some(200));
        n += 1;
        assert!(n < 5000, "the log never grew past its limit");
    }
    let grown = wal_size();
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    for m in 0..5 {
        assert_eq!(send(n + m), Some(200));
    }
    let shrunk = wal_size();
    assert!(shrunk <= WAL_LIMIT, "the log is cut back once the reader is gone: {shrunk} bytes (was {grown})");
    service.signal("TERM");
    let mut service = service;
    assert!(service.child.wait().unwrap().success());
    assert_eq!(wal_size(), 0, "emptied on shutdown");
    eprintln!("log: {} MiB with a reader, {} KiB after, 0 after shutdown", grown >> 20, shrunk >> 10);
}

#[test]
fn readiness_is_a_real_write_and_fails_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a small tmpfs needs root (CAP_SYS_ADMIN); run the tests as root to check this");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let service = Service::start_in(&mount.join("data"), &[]);
    assert_eq!(try_deliver(service.addr, &now_ms().to_string(), &mixed_delivery(0, 3)), Some(200));
    assert_eq!(service.get("/readyz").status, 200);
    // Fill the disk.
    let filler = mount.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).and_then(|()| file.sync_all()).is_ok() {}
    drop(file);
    let ready = service.get("/readyz");
    assert_eq!((ready.status, ready.error().as_str()), (503, "storage_unavailable"));
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(service.get("/readyz").status, 200, "ready again once there is room");
    assert_eq!(try_deliver(service.addr, &now_ms().to_string(), &mixed_delivery(5, 3)), Some(200));
}

/// The SQLite inbox, with claims that take `delay` to arrive (a paused process, a stalled
/// database), renewals `renew_delay`, and the first outcomes `outcome_delay` to be committed
/// (rows another replica holds).
struct SlowClaims {
    inner: SqliteInbox,
    delay: Duration,
    renew_delay: Duration,
    outcome_delay: Duration,
    outcomes_delayed: AtomicBool,
}

impl SlowClaims {
    fn new(inner: SqliteInbox) -> Self {
        let zero = Duration::ZERO;
        Self { inner, delay: zero, renew_delay: zero, outcome_delay: zero, outcomes_delayed: AtomicBool::new(false) }
    }
}

#[meet_webhooks_runtime::inbox::async_trait]
impl Inbox for SlowClaims {
    async fn append(&self, d: NewDelivery) -> Result<Appended, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.append(d).await
    }
    async fn claim(
        &self,
        r: ClaimRequest,
    ) -> Result<Vec<meet_webhooks_runtime::inbox::Claimed>, meet_webhooks_runtime::inbox::StoreError> {
        let claimed = self.inner.claim(r).await;
        tokio::time::sleep(self.delay).await;
        claimed
    }
    async fn renew(
        &self,
        c: &[meet_webhooks_runtime::inbox::Claim],
        l: Duration,
    ) -> Result<Vec<meet_webhooks_runtime::inbox::Claim>, meet_webhooks_runtime::inbox::StoreError> {
        let lost = self.inner.renew(c, l).await;
        tokio::time::sleep(self.renew_delay).await;
        lost
    }
    async fn complete(
        &self,
        c: &[Completion],
    ) -> Result<Vec<meet_webhooks_runtime::inbox::Completed>, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.complete(c).await
    }
    async fn complete_and_claim(
        &self,
        c: &[Completion],
        r: ClaimRequest,
    ) -> Result<
        (Vec<meet_webhooks_runtime::inbox::Completed>, Vec<meet_webhooks_runtime::inbox::Claimed>),
        meet_webhooks_runtime::inbox::StoreError,
    > {
        if !c.is_empty() && !self.outcomes_delayed.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(self.outcome_delay).await;
        }
        let settled = self.inner.complete_and_claim(c, r).await;
        tokio::time::sleep(self.delay).await;
        settled
    }
    async fn replay(
        &self,
        s: meet_webhooks_runtime::inbox::Selection,
    ) -> Result<usize, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.replay(s).await
    }
    async fn search(
        &self,
        q: &meet_webhooks_runtime::inbox::Query,
    ) -> Result<Vec<meet_webhooks_runtime::inbox::Stored>, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.search(q).await
    }
    async fn get(
        &self,
        id: i64,
    ) -> Result<Option<meet_webhooks_runtime::inbox::Stored>, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.get(id).await
    }
    async fn stats(&self) -> Result<meet_webhooks_runtime::inbox::Stats, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.stats().await
    }
    async fn depth(&self) -> Result<meet_webhooks_runtime::inbox::Depth, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.depth().await
    }
    async fn prune(&self, retention: Duration) -> Result<usize, meet_webhooks_runtime::inbox::StoreError> {
        self.inner.prune(retention).await
    }
    async fn check(&self) -> Result<(), meet_webhooks_runtime::inbox::StoreError> {
        self.inner.check().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn wakeups(&self) -> &meet_webhooks_runtime::inbox::Wakeups {
        self.inner.wakeups()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A fallback delivery `n` of `room` (its body: `body`, with the event and room put in).
fn test_delivery(n: u8, event: &str, room: Option<&str>, mut body: serde_json::Value) -> NewDelivery {
    body["event"] = event.into();
    body["creationDate"] = now_ms().into();
    body["data"] = json!({ "roomId": room });
    NewDelivery {
        signature: [n; 32],
        timestamp: n.to_string(),
        timestamp_ms: i64::from(n),
        event: Some(event.into()),
        kind: Kind::Fallback,
        room: room.map(Into::into),
        body: body.to_string().into(),
        received_at_ms: now_ms(),
        recording: None,
        created_us: None,
        hold: std::time::Duration::ZERO,
    }
}

/// A dispatcher of `concurrency` handlers on `inbox` with `lease`, the rest as the service has it.
fn dispatcher<H: meet_webhooks::WebhookHandler>(
    inbox: std::sync::Arc<dyn Inbox>,
    handler: std::sync::Arc<meet_webhooks::Receiver<H>>,
    concurrency: usize,
    lease: Duration,
) -> meet_webhooks_runtime::DispatcherHandle {
    meet_webhooks_runtime::Dispatcher { concurrency, lease, ..dispatcher_of(inbox, handler) }.spawn()
}

/// A dispatcher on `inbox` for `handler`, not started: the service's settings, but a retention
/// of an hour and a second's grace; a test changes what it needs, then spawns it.
pub(crate) fn dispatcher_of<H: meet_webhooks::WebhookHandler>(
    inbox: std::sync::Arc<dyn Inbox>,
    handler: std::sync::Arc<meet_webhooks::Receiver<H>>,
) -> meet_webhooks_runtime::Dispatcher<meet_webhooks::Receiver<H>> {
    meet_webhooks_runtime::Dispatcher {
        inbox,
        webhooks: handler,
        concurrency: meet_webhooks_runtime::defaults::CONCURRENCY,
        retry: meet_webhooks_runtime::RetryPolicy::default(),
        lease: meet_webhooks_runtime::defaults::LEASE,
        retention: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(1),
        poll: meet_webhooks_runtime::defaults::POLL,
    }
}

#[test]
fn claims_that_arrive_after_half_their_lease_are_not_started() {
    use std::sync::Arc;

    let lease = Duration::from_millis(200);
    let run = |delay: Duration| {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteInbox::open(dir.path(), "slow").unwrap();
        block_on(inner.append(test_delivery(7, "slowTest", None, json!({})))).unwrap();
        let recorder = Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default()));
        let inbox = Arc::new(SlowClaims { delay, ..SlowClaims::new(inner) });
        let dispatcher = dispatcher(inbox, recorder.clone(), 1, lease);
        std::thread::sleep(Duration::from_millis(800));
        block_on(dispatcher.stop());
        recorder.runs.lock().unwrap().len()
    };
    assert_eq!(run(Duration::from_millis(10)), 1, "a claim that arrives in time is handled");
    assert_eq!(run(Duration::from_millis(120)), 0, "one that took over half its lease is left to run out");
}

/// The process's metrics recorder (one per process), for tests that read a metric.
fn metrics() -> &'static meet_webhooks_runtime::metrics::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<meet_webhooks_runtime::metrics::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| meet_webhooks_runtime::metrics::install().unwrap())
}

/// An embedder that installs the recorder gets `GET /metrics` on the service's routes without
/// handing the recorder to the builder too.
#[test]
fn a_service_built_after_the_recorder_is_installed_serves_it_unasked() {
    metrics();
    let server = crate::common::TestServer::start();
    let response = server.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.body.contains("meet_webhooks_build_info{"), "{}", response.body);
}

#[test]
fn the_dead_letter_gauge_shows_a_delivery_as_it_dies_not_at_the_next_count() {
    let _gauges = crate::common::INBOX_GAUGES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let metrics = metrics();
    let dir = tempfile::tempdir().unwrap();
    let server = inbox_server(dir.path());
    server.recorder().failures_left.store(u32::MAX, Ordering::SeqCst);
    // Past the dispatcher's first count at start: the next one is 10 s away.
    std::thread::sleep(Duration::from_millis(200));
    let id = accepted_id(&server.deliver(KEY, &now_ms().to_string(), example(&WEBHOOKS[0]).to_string().as_bytes()));
    eventually("dead after the last attempt", || row(dir.path(), id).state == State::Dead);
    let died = std::time::Instant::now();
    eventually("the gauge says so", || metrics.render().contains("meet_webhooks_inbox_deliveries{state=\"dead\"} 1"));
    assert!(died.elapsed() < Duration::from_secs(5), "the gauge took {:?}", died.elapsed());
}

/// Records every run as (n, attempt), then takes as long as the delivery's body says:
/// `"block_ms"` blocking its thread (a handler that does: it happens), `"await_ms"` awaiting a
/// timer.
#[derive(Default)]
struct Paced {
    runs: std::sync::Mutex<Vec<(u64, u32)>>,
}

impl meet_webhooks::WebhookHandler for Paced {
    async fn fallback(
        &self,
        ctx: &meet_webhooks_runtime::DeliveryContext,
        event: meet_webhooks_runtime::UnmatchedEvent,
    ) -> meet_webhooks_runtime::HandlerResult {
        self.runs.lock().unwrap().push((event.body["n"].as_u64().unwrap(), ctx.attempt));
        // No `await` unless asked for: past one, a handler whose claim is no longer known to be
        // live is stopped.
        if let Some(ms) = event.body["block_ms"].as_u64() {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(ms) = event.body["await_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(())
    }
}

/// Appends a fallback delivery `n` (1, 2, …) of `event` to room `room-<n>` for each body, with
/// `"n"` put in.
fn append_one_per_room(inbox: &SqliteInbox, event: &str, bodies: impl IntoIterator<Item = serde_json::Value>) {
    for (n, mut body) in (1u8..).zip(bodies) {
        body["n"] = n.into();
        block_on(inbox.append(test_delivery(n, event, Some(&format!("room-{n}")), body))).unwrap();
    }
}

#[test]
fn a_claim_whose_handler_could_not_start_in_time_is_not_run_late() {
    use std::sync::Arc;

    // Two deliveries of two rooms, claimed together; the first handler blocks the dispatcher's
    // thread past half the lease, so the second's task only gets to run after that: by then its
    // claim may be another replica's. It is not run then; it runs after the claim ran out.
    let lease = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let inbox = SqliteInbox::open(dir.path(), "blocked").unwrap();
    append_one_per_room(&inbox, "blockTest", [json!({"block_ms": lease.as_millis()}), json!({})]);
    let handler = Arc::new(meet_webhooks::Receiver::new(Paced::default()));
    let dispatcher = dispatcher(Arc::new(inbox), handler.clone(), 2, lease);
    eventually("both handled", || handler.runs.lock().unwrap().iter().filter(|r| r.0 == 2).count() == 1);
    std::thread::sleep(Duration::from_millis(100));
    block_on(dispatcher.stop());
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs, [(1, 1), (2, 2)], "the second ran once, on its next claim");
}

/// On its first attempt, blocks its thread for `pause` (as a paused process would be paused)
/// between recording that it started and an `await`; records (attempt, "start" | "end").
struct PausedMidway {
    pause: Duration,
    runs: std::sync::Mutex<Vec<(u32, &'static str)>>,
}

impl meet_webhooks::WebhookHandler for PausedMidway {
    async fn fallback(
        &self,
        ctx: &meet_webhooks_runtime::DeliveryContext,
        _event: meet_webhooks_runtime::UnmatchedEvent,
    ) -> meet_webhooks_runtime::HandlerResult {
        self.runs.lock().unwrap().push((ctx.attempt, "start"));
        if ctx.attempt == 1 {
            std::thread::sleep(self.pause);
        }
        tokio::task::yield_now().await;
        self.runs.lock().unwrap().push((ctx.attempt, "end"));
        Ok(())
    }
}

#[test]
fn a_handler_paused_past_its_claim_does_not_go_on() {
    use std::sync::Arc;

    // The first attempt's process "pauses" mid-handler for two leases; meanwhile its claim runs
    // out and someone else claims the delivery (attempt 2, for 200 ms). When the process comes
    // back, the handler must not go on past its await: a renewal would say the claim is lost,
    // but only a round trip later (100 ms here), and the handler would have finished by then.
    // Once the other claim runs out, attempt 3 handles the delivery.
    let lease = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteInbox::open(dir.path(), "paused").unwrap();
    block_on(inner.append(test_delivery(9, "pauseTest", Some("room-1"), json!({})))).unwrap();
    let inbox = Arc::new(SlowClaims { renew_delay: Duration::from_millis(100), ..SlowClaims::new(inner) });
    let handler =
        Arc::new(meet_webhooks::Receiver::new(PausedMidway { pause: lease * 2, runs: std::sync::Mutex::default() }));
    let dispatcher = dispatcher(inbox.clone(), handler.clone(), 1, lease);
    eventually("the first attempt started", || !handler.runs.lock().unwrap().is_empty());
    std::thread::sleep(lease + Duration::from_millis(100));
    let request = ClaimRequest { limit: 1, lease: Duration::from_millis(200), max_attempts: 5 };
    let taken = block_on(inbox.claim(request)).unwrap();
    assert_eq!(taken.iter().map(|c| c.attempt).collect::<Vec<_>>(), [2], "claimed while the first was paused");
    eventually("a run ended", || handler.runs.lock().unwrap().iter().any(|(_, what)| *what == "end"));
    std::thread::sleep(Duration::from_millis(100));
    block_on(dispatcher.stop());
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs, [(1, "start"), (3, "start"), (3, "end")], "the paused attempt did not go on");
    let stored = block_on(inbox.list(Filter::All, None, 10)).unwrap();
    assert_eq!(stored.iter().map(|s| (s.state, s.attempts)).collect::<Vec<_>>(), [(State::Done, 3)]);
}

#[test]
fn claims_are_renewed_while_an_outcome_takes_longer_than_a_lease_to_commit() {
    use std::sync::Arc;

    // Two rooms' deliveries, claimed together: the first handler is done at once, the second
    // takes a lease and a half. The first's outcome takes three leases to commit (a database
    // that stalls; rows another replica holds). Meanwhile both claims are renewed: no one else
    // can take either delivery, and the second handler is not stopped half-way.
    let lease = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteInbox::open(dir.path(), "slow-outcome").unwrap();
    append_one_per_room(&inner, "slowOutcome", [json!({}), json!({"await_ms": (lease * 3 / 2).as_millis()})]);
    let inbox = Arc::new(SlowClaims { outcome_delay: lease * 3, ..SlowClaims::new(inner) });
    let handler = Arc::new(meet_webhooks::Receiver::new(Paced::default()));
    let dispatcher = dispatcher(inbox.clone(), handler.clone(), 2, lease);
    eventually("both started", || handler.runs.lock().unwrap().len() == 2);
    std::thread::sleep(lease * 2);
    let request = ClaimRequest { limit: 2, lease, max_attempts: 5 };
    let taken = block_on(inbox.claim(request)).unwrap();
    assert_eq!(
        taken.iter().map(|c| c.claim.id).collect::<Vec<i64>>(),
        Vec::<i64>::new(),
        "a claim ran out while its outcome waited"
    );
    eventually("both done", || {
        let stored = block_on(inbox.list(Filter::All, None, 10)).unwrap();
        stored.iter().all(|s| s.state == State::Done)
    });
    block_on(dispatcher.stop());
    let mut runs = handler.runs.lock().unwrap().clone();
    runs.sort_unstable();
    assert_eq!(runs, [(1, 1), (2, 1)], "each handler ran once");
    let stored = block_on(inbox.list(Filter::All, None, 10)).unwrap();
    assert_eq!(stored.iter().map(|s| (s.state, s.attempts)).collect::<Vec<_>>(), [(State::Done, 1), (State::Done, 1)]);
}

#[test]
fn deliveries_stored_before_the_clock_was_set_back_are_handled_at_once() {
    // Stored by this machine's clock when it ran two hours ahead: after it is set right, they
    // are due now, not in two hours.
    let dir = tempfile::tempdir().unwrap();
    {
        let inbox = meet_webhooks_runtime::inbox::SqliteInbox::open(dir.path(), "before").unwrap();
        for n in 0..3u8 {
            let delivery = meet_webhooks_runtime::inbox::NewDelivery {
                signature: [n; 32],
                timestamp: n.to_string(),
                timestamp_ms: i64::from(n),
                event: Some("testEvent".into()),
                kind: meet_webhooks_runtime::inbox::Kind::Fallback,
                room: Some("room".into()),
                body: format!(r#"{{"event":"testEvent","n":{n}}}"#).into(),
                received_at_ms: now_ms() + 2 * 3600 * 1000,
                recording: None,
                created_us: None,
                hold: std::time::Duration::ZERO,
            };
            block_on(inbox.append(delivery)).unwrap();
        }
        block_on(inbox.close());
    }
    let server = TestServer::with(Options { inbox: Some(InboxOptions::new(dir.path())), ..Options::default() });
    eventually("the three are handled", || server.recorder().runs.lock().unwrap().len() == 3);
}

#[test]
fn a_service_on_the_in_memory_inbox_handles_what_it_acknowledges() {
    let inbox = std::sync::Arc::new(meet_webhooks_runtime::inbox::MemoryInbox::new("test"));
    let server = TestServer::with(Options {
        inbox: Some(InboxOptions::new(std::path::Path::new("unused"))),
        storage: Some(meet_webhooks_runtime::Storage::Inbox(inbox.clone())),
        ..Options::default()
    });
    for n in 0..5 {
        assert_eq!(try_deliver(server.addr, &now_ms().to_string(), &mixed_delivery(n, 2)), Some(200));
    }
    eventually("all five handled", || server.recorder().runs.lock().unwrap().len() == 5);
    // A handler's run ends before its outcome is committed: the last may still be on its way.
    eventually("all five recorded done", || {
        let stats = block_on(meet_webhooks_runtime::inbox::Inbox::stats(&*inbox)).unwrap();
        (stats.pending, stats.done) == (0, 5)
    });
    assert_eq!(server.recorder().runs.lock().unwrap().len(), 5, "each handled once");
}

/// Deliveries arrive steadily for a few seconds while a dispatcher with a retention of 300 ms
/// handles and prunes them: the inbox holds about a retention's worth (and what waits for the
/// next pruning), never the whole run, and nothing pending is pruned.
pub(crate) fn pruning_under_load_keeps_the_inbox_bounded(inbox: std::sync::Arc<dyn Inbox>) {
    const RATE: u64 = 400;
    const SECONDS: u64 = 4;
    // Its dispatcher counts the inbox every 150 ms.
    let _gauges = crate::common::INBOX_GAUGES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let handler = std::sync::Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default()));
    let dispatcher = meet_webhooks_runtime::Dispatcher {
        concurrency: 16,
        retention: Duration::from_millis(300),
        ..dispatcher_of(inbox.clone(), handler.clone())
    }
    .spawn();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let total = |inbox: &dyn Inbox| {
        let stats = runtime.block_on(inbox.stats()).unwrap();
        stats.pending + stats.done + stats.dead
    };
    let started = std::time::Instant::now();
    let mut most = 0;
    for n in 0..RATE * SECONDS {
        let room = format!("room-{}", n % 50);
        let mut delivery = test_delivery(0, "pruneTest", Some(&room), json!({"n": n}));
        delivery.signature = signature_of(n);
        delivery.timestamp_ms = i64::try_from(n).unwrap();
        runtime.block_on(inbox.append(delivery)).unwrap();
        if n % 100 == 0 {
            most = most.max(total(&*inbox));
        }
        let due = started + Duration::from_micros(n * 1_000_000 / RATE);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    eventually("every delivery handled", || handler.runs.lock().unwrap().len() as u64 == RATE * SECONDS);
    eventually("the last ones pruned", || total(&*inbox) == 0);
    block_on(dispatcher.stop());
    // A retention and a pruning interval (150 ms) of arrivals, the handling in between and the
    // commits' batching; two seconds of arrivals leave room for other tests' commits holding up
    // the pruning, and unpruned it would hold all four.
    eprintln!("{} deliveries in {SECONDS} s, at most {most} in the inbox at once", RATE * SECONDS);
    assert!(most <= 2 * RATE, "the inbox held {most} deliveries at once");
}

/// 32 bytes that differ for every `n` (a delivery's identity in a test).
fn signature_of(n: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

#[test]
fn pruning_under_load_keeps_the_sqlite_inbox_bounded() {
    let dir = tempfile::tempdir().unwrap();
    pruning_under_load_keeps_the_inbox_bounded(std::sync::Arc::new(SqliteInbox::open(dir.path(), "test").unwrap()));
}

#[test]
fn a_failed_attempt_is_tried_again_when_its_retry_comes_due_not_at_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let inbox: std::sync::Arc<dyn Inbox> = std::sync::Arc::new(SqliteInbox::open(dir.path(), "test").unwrap());
    let handler = std::sync::Arc::new(meet_webhooks::Receiver::new(crate::common::Recorder::default()));
    handler.failures_left.store(1, Ordering::SeqCst);
    let retry = Duration::from_millis(300);
    let dispatcher = meet_webhooks_runtime::Dispatcher {
        concurrency: 1,
        retry: meet_webhooks_runtime::RetryPolicy { max_attempts: 3, base: retry, max: retry },
        // Whatever runs sooner, a wake-up started.
        poll: Duration::from_secs(60),
        ..dispatcher_of(inbox.clone(), handler.clone())
    }
    .spawn();
    block_on(inbox.append(test_delivery(9, "retryTest", Some("room"), json!({})))).unwrap();
    eventually("the first attempt ran and failed", || handler.runs.lock().unwrap().len() == 1);
    let failed = std::time::Instant::now();
    while handler.runs.lock().unwrap().len() < 2 {
        assert!(failed.elapsed() < Duration::from_secs(5), "the retry waited for the poll");
        std::thread::sleep(Duration::from_millis(2));
    }
    let waited = failed.elapsed();
    assert!(waited >= retry.saturating_sub(Duration::from_millis(50)), "tried again after {waited:?}");
    assert_eq!(handler.runs.lock().unwrap()[1].1, 2, "its second attempt");
    block_on(dispatcher.stop());
}
