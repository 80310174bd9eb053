//! The operator's console: its own listener, its token, what its API answers, and the page in
//! a real headless Chromium (`tests/browser/console.test.mjs`, driven by playwright-core).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meet_webhooks::WEBHOOKS;
use meet_webhooks_runtime::RetryPolicy;
use meet_webhooks_runtime::inbox::State;

use crate::common::{
    InboxOptions, KEY, Options, Response, TestServer, block_on, eventually, example, now_ms, read_response,
};

const TOKEN: &str = "console-token-0123456789";

/// A request to `addr` with these headers (plus Host, Content-Length, Connection: close).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes()).unwrap();
    read_response(&mut stream)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[("authorization", &format!("Bearer {TOKEN}"))], "")
}

fn replay(addr: SocketAddr, body: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(addr, "POST", "/api/replay", &[("authorization", &auth), ("content-type", "application/json")], body)
}

/// A receiver on SQLite in `dir` whose handler fails `failures` calls, with one attempt each
/// (a failure is dead at once), and the console on.
fn server(dir: &Path, failures: u32) -> TestServer {
    let mut inbox = InboxOptions::new(dir);
    inbox.retry = RetryPolicy { max_attempts: 1, ..inbox.retry };
    let server = TestServer::with(Options { inbox: Some(inbox), console: Some(TOKEN), ..Options::default() });
    server.recorder().failures_left.store(failures, std::sync::atomic::Ordering::SeqCst);
    server
}

/// The first webhook's example, in room `room`, sent now: its inbox id once it is handled.
fn send(server: &TestServer, room: &str) -> i64 {
    let mut body = example(&WEBHOOKS[0]);
    body["data"]["roomId"] = room.into();
    let timestamp = now_ms().to_string();
    let response = server.deliver(KEY, &timestamp, body.to_string().as_bytes());
    assert_eq!(response.status, 200, "{response:?}");
    let console = server.console.unwrap();
    let mut id = None;
    eventually("the delivery is listed, handled", || {
        let page = get(console, &format!("/api/deliveries?room={room}")).json();
        let first = &page["deliveries"][0];
        id = first["id"].as_i64();
        first["state"] != "pending" && id.is_some()
    });
    id.unwrap()
}

#[test]
fn the_console_listens_on_its_own_port_and_the_webhook_s_port_has_none_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 0);
    let console = server.console.expect("the console listens");
    assert_ne!(console.port(), server.addr.port());
    send(&server, "room-a");
    for path in ["/", "/api/deliveries", "/assets/console.js"] {
        let on_webhook_port = get(server.addr, path);
        assert_eq!(on_webhook_port.status, 404, "{path} on the webhook's port: {on_webhook_port:?}");
        assert!(!on_webhook_port.body.contains("room-a"));
    }
    assert_eq!(get(console, "/api/deliveries").status, 200);
    // And the console takes no deliveries.
    let delivered = request(console, "POST", "/webhook", &[("content-type", "application/json")], "{}");
    assert_eq!(delivered.status, 404);
}

#[test]
fn without_the_token_the_console_shows_nothing_but_its_login_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 0);
    let console = server.console.unwrap();
    let id = send(&server, "room-secret");
    for (what, headers) in [
        ("no token", vec![]),
        ("a wrong token", vec![("authorization", "Bearer console-token-0123456780")]),
        ("a prefix of it", vec![("authorization", "Bearer console-token")]),
        ("it without Bearer", vec![("authorization", TOKEN)]),
        ("it as a cookie", vec![("cookie", "token=console-token-0123456789")]),
    ] {
        for path in ["/api/deliveries".to_owned(), format!("/api/deliveries/{id}")] {
            let answer = request(console, "GET", &path, &headers, "");
            assert_eq!((answer.status, answer.error()), (401, "a valid token is needed".to_owned()), "{what}");
            assert!(!answer.body.contains("room-secret"), "{what}");
        }
    }
    let token_in_query = request(console, "GET", &format!("/api/deliveries?token={TOKEN}"), &[], "");
    assert_eq!(token_in_query.status, 401);
    // The page is the same for everyone, and holds no delivery.
    let page = request(console, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Log in") && !page.body.contains("room-secret"));
}

#[test]
fn the_page_forbids_inline_scripts_and_other_origins() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 0);
    let page = request(server.console.unwrap(), "GET", "/", &[], "");
    let head = page.head.to_ascii_lowercase();
    let policy = head.lines().find_map(|l| l.strip_prefix("content-security-policy: ")).expect("a policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    // The page's own markup has no inline script or handler for the policy to block.
    assert!(!page.body.contains("<script>") && !page.body.contains(" onclick="), "{}", page.body);
}

#[test]
fn a_cross_site_post_cannot_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 1);
    let console = server.console.unwrap();
    let id = send(&server, "room-dead");
    assert_eq!(get(console, &format!("/api/deliveries/{id}")).json()["state"], "dead");
    // What a form on another site can send: no Authorization header, a form's content type.
    let form = format!("ids={id}");
    let cross_site = [
        vec![("content-type", "application/x-www-form-urlencoded"), ("origin", "https://evil.example")],
        vec![("content-type", "text/plain"), ("origin", "https://evil.example")],
    ];
    for headers in cross_site {
        let answer = request(console, "POST", "/api/replay", &headers, &form);
        assert_eq!(answer.status, 401, "{answer:?}");
    }
    // Even with the token, a form's body is no request to replay.
    let auth = format!("Bearer {TOKEN}");
    let as_form = request(
        console,
        "POST",
        "/api/replay",
        &[("authorization", &auth), ("content-type", "application/x-www-form-urlencoded")],
        &form,
    );
    assert_eq!(as_form.status, 415, "{as_form:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(console, &format!("/api/deliveries/{id}")).json()["state"], "dead", "not replayed");
    assert_eq!(server.recorder().runs.lock().unwrap().len(), 1, "its handler ran once, before");
}

#[test]
fn the_api_lists_filters_pages_shows_and_replays_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 1);
    let console = server.console.unwrap();
    let dead = send(&server, "room-1");
    let done: Vec<i64> = (2..=4).map(|n| send(&server, &format!("room-{n}"))).collect();

    let page = get(console, "/api/deliveries").json();
    let ids: Vec<i64> = page["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [done[2], done[1], done[0], dead], "newest first");
    assert_eq!(page["next"], serde_json::Value::Null, "one page");
    // The handled ones are counted apart, every few seconds.
    eventually("the counts", || {
        get(console, "/api/deliveries").json()["counts"]
            == serde_json::json!({"pending": 0, "done": 3, "dead": 1, "fallback": 0})
    });

    let dead_only = get(console, "/api/deliveries?state=dead").json();
    assert_eq!(dead_only["deliveries"][0]["id"], dead);
    assert_eq!(dead_only["deliveries"].as_array().unwrap().len(), 1);
    let event = WEBHOOKS[0].event;
    assert_eq!(
        get(console, &format!("/api/deliveries?event={event}")).json()["deliveries"].as_array().unwrap().len(),
        4
    );
    assert!(get(console, "/api/deliveries?event=noSuchEvent").json()["deliveries"].as_array().unwrap().is_empty());
    assert_eq!(get(console, &format!("/api/deliveries?q={}", done[1])).json()["deliveries"][0]["id"], done[1]);

    let first = get(console, "/api/deliveries?limit=2").json();
    assert_eq!(first["next"], done[1]);
    let second = get(console, &format!("/api/deliveries?limit=2&before={}", done[1])).json();
    let ids: Vec<i64> = second["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [done[0], dead]);

    for (path, status) in [
        ("/api/deliveries?state=sleeping", 400),
        ("/api/deliveries?limit=0", 400),
        ("/api/deliveries?limit=201", 400),
        ("/api/deliveries?before=x", 400),
        ("/api/deliveries?colour=red", 400),
        ("/api/deliveries/x", 400),
        ("/api/deliveries/999999", 404),
        ("/api/nothing", 404),
    ] {
        let answer = get(console, path);
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        assert!(!answer.error().is_empty(), "{path}: a reason");
    }

    let shown = get(console, &format!("/api/deliveries/{dead}")).json();
    assert_eq!(shown["state"], "dead");
    assert_eq!(shown["body"]["data"]["roomId"], "room-1", "the body, as JSON");
    assert_eq!(
        hex::decode(shown["body_hex"].as_str().unwrap()).unwrap(),
        shown["body_text"].as_str().unwrap().as_bytes()
    );
    assert_eq!(shown["headers"]["X-Signature"].as_str().unwrap().len(), 64);
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((&history[0]["outcome"], &history[0]["replica"]), (&"dead".into(), &"test".into()));
    assert_eq!(history[0]["error"], "the test handler fails on purpose");

    for bad in [r#"{"ids": []}"#, r#"{"ids": [1], "dead": true}"#, r#"{"id": 1}"#, "not json"] {
        assert_eq!(replay(console, bad).status, 400, "{bad}");
    }
    assert_eq!(replay(console, &format!(r#"{{"ids": [{dead}, {}]}}"#, done[0])).json()["replayed"], 2);
    eventually("both handled again", || server.recorder().runs.lock().unwrap().len() == 6);
    std::thread::sleep(Duration::from_millis(200));
    let runs = server.recorder().runs.lock().unwrap().clone();
    assert_eq!(runs.iter().filter(|(id, _)| *id == dead.to_string()).count(), 2, "once more: {runs:?}");
    let again = get(console, &format!("/api/deliveries/{dead}")).json();
    assert_eq!(again["state"], "done");
    let outcomes: Vec<&str> =
        again["history"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["dead", "done"]);
    assert_eq!(replay(console, r#"{"dead": true}"#).json()["replayed"], 0, "none dead any more");
}

/// On PostgreSQL, each replica's console shows every replica's deliveries, and who holds
/// which claim.
#[test]
fn on_postgres_each_replica_s_console_shows_every_delivery_and_the_claims() {
    let Some(db) = crate::postgres::TestDatabase::create() else { return };
    let ((a, _a), (b, _b)) = (pg_replica(&db, "replica-a", None), pg_replica(&db, "replica-b", None));
    let on_a = send(&a, "room-a");
    let on_b = send(&b, "room-b");
    for server in [&a, &b] {
        let page = get(server.console.unwrap(), "/api/deliveries").json();
        let ids: Vec<i64> = page["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [on_b, on_a]);
    }
    // A claim held right now, by whichever replica took it, shows on both consoles.
    a.recorder().paused.store(true, std::sync::atomic::Ordering::SeqCst);
    b.recorder().paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut body = example(&WEBHOOKS[0]);
    body["data"]["roomId"] = "room-held".into();
    assert_eq!(a.deliver(KEY, &now_ms().to_string(), body.to_string().as_bytes()).status, 200);
    let mut holder = String::new();
    eventually("a replica holds the claim", || {
        let page = get(b.console.unwrap(), "/api/deliveries?room=room-held").json();
        holder = page["deliveries"][0]["claimed_by"].as_str().unwrap_or_default().to_owned();
        !holder.is_empty()
    });
    assert!(["replica-a", "replica-b"].contains(&holder.as_str()), "{holder}");
    for server in [&a, &b] {
        let claims = get(server.console.unwrap(), "/api/deliveries").json()["claims"].clone();
        assert_eq!(claims, serde_json::json!([{"replica": holder, "claims": 1}]));
    }
    for server in [&a, &b] {
        server.recorder().paused.store(false, std::sync::atomic::Ordering::SeqCst);
        server.recorder().release.add_permits(10);
    }
    eventually("handled", || {
        block_on(a.inbox().search(&meet_webhooks_runtime::inbox::Query::newest(1))).unwrap()[0].state == State::Done
    });
}

/// The page in headless Chromium: log in, see a delivery arrive without a reload, filter,
/// open one, replay a dead one from its page and another as a selection (each handler runs
/// once more), hostile text stays text, and a cross-site POST changes nothing. Skipped (said
/// once) without Node.js or Chromium, unless `MEET_WEBHOOKS_REQUIRE_BROWSER=1` (CI).
#[test]
fn the_page_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 0);
    browse(&[&server], &server);
}

/// The same page on PostgreSQL, two replicas: deliveries go to one, the page is the other's.
#[test]
fn the_page_in_a_browser_on_postgres_with_two_replicas() {
    let Some(db) = crate::postgres::TestDatabase::create() else { return };
    let one_attempt = Some(1);
    let ((a, _a), (b, _b)) = (pg_replica(&db, "replica-a", one_attempt), pg_replica(&db, "replica-b", one_attempt));
    browse(&[&a, &b], &b);
}

/// A replica named `name` with its console, on `db`; `max_attempts` when given.
fn pg_replica(
    db: &crate::postgres::TestDatabase,
    name: &str,
    max_attempts: Option<u32>,
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut inbox = InboxOptions::new(dir.path());
    inbox.replica = name.into();
    if let Some(max_attempts) = max_attempts {
        inbox.retry = RetryPolicy { max_attempts, ..inbox.retry };
    }
    let storage = meet_webhooks_runtime::Storage::Postgres(db.url.clone());
    let options = Options { inbox: Some(inbox), storage: Some(storage), console: Some(TOKEN), ..Options::default() };
    (TestServer::with(options), dir)
}

/// Runs `tests/browser/console.test.mjs` against `page`'s console, deliveries sent to the
/// first of `servers` (each has one attempt per delivery), and checks what the page did
/// through their handlers.
fn browse(servers: &[&TestServer], page: &TestServer) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(chromium) = browser(&root.join("tests/browser")) else { return };
    // Two dead deliveries: every handler fails until they are dead.
    let fail =
        |n| servers.iter().for_each(|s| s.recorder().failures_left.store(n, std::sync::atomic::Ordering::SeqCst));
    fail(u32::MAX);
    let dead = send(servers[0], "room-dead");
    let second_dead = send(servers[0], "room-dead-2");
    fail(0);
    let screenshots = std::env::var_os("MEET_WEBHOOKS_SCREENSHOTS");
    let status = Command::new("node")
        .arg(root.join("tests/browser/console.test.mjs"))
        .env("CHROMIUM", chromium)
        .env("CONSOLE_URL", format!("http://{}", page.console.unwrap()))
        .env("WEBHOOK_URL", servers[0].url())
        .env("TOKEN", TOKEN)
        .env("KEY", KEY)
        .env("SEND", env!("CARGO_BIN_EXE_meet-webhooks"))
        .env("DEAD_ID", dead.to_string())
        .env("SECOND_DEAD_ID", second_dead.to_string())
        .env("EVENT", WEBHOOKS[0].event)
        .env("DATA", example(&WEBHOOKS[0])["data"].to_string())
        .env("SCREENSHOTS", screenshots.unwrap_or_default())
        .status()
        .expect("running node");
    assert!(status.success(), "the browser test failed: {status}");
    // What the page did, seen from the receivers: each dead delivery's handler ran once more,
    // and the hostile room's once.
    let runs: Vec<(String, u32)> = servers.iter().flat_map(|s| s.recorder().runs.lock().unwrap().clone()).collect();
    for id in [dead, second_dead] {
        assert_eq!(runs.iter().filter(|(run, _)| *run == id.to_string()).count(), 2, "{id}: {runs:?}");
    }
    let hostile = block_on(page.inbox().search(&meet_webhooks_runtime::inbox::Query {
        room: Some("<img src=x onerror=window.pwned=1>".into()),
        ..meet_webhooks_runtime::inbox::Query::newest(10)
    }))
    .unwrap();
    assert_eq!(hostile.len(), 1, "the page's `send` stored one");
    assert_eq!(runs.iter().filter(|(id, _)| *id == hostile[0].id.to_string()).count(), 1);
}

/// Chromium's path, with playwright-core installed from `dir`'s lockfile; `None` (said) where
/// either is missing and they are not required.
fn browser(dir: &Path) -> Option<std::path::PathBuf> {
    let required = std::env::var_os("MEET_WEBHOOKS_REQUIRE_BROWSER").is_some();
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(Path::new).find(|p| p.exists());
    // The browser tests run at once: one `npm ci` in the folder at a time.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let installed = dir.join("node_modules/playwright-core").exists()
        || Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success());
    match chromium {
        Some(chromium) if installed => Some(chromium.to_path_buf()),
        _ => {
            assert!(!required, "MEET_WEBHOOKS_REQUIRE_BROWSER: Chromium (apt install chromium) and npm are needed");
            eprintln!("the browser test is skipped: it needs Chromium (apt install chromium) and npm");
            None
        }
    }
}
