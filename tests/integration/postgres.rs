//! The PostgreSQL inbox on a real server: each test makes a database of its own and drops it.
//!
//! The server is `MEET_WEBHOOKS_TEST_DATABASE_URL` (default: the local one,
//! `postgres://postgres@127.0.0.1:5432/test`). Without one these tests say so in one line and
//! pass; with `MEET_WEBHOOKS_REQUIRE_POSTGRES=1` (CI) they fail instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meet_webhooks::inbox::{
    Appended, ClaimRequest, Completed, Completion, Filter, Inbox, Kind, NewDelivery, Outcome, PgInbox, State,
};
use meet_webhooks::service::Storage;

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
    }
}

fn request(limit: usize, lease: Duration) -> ClaimRequest {
    ClaimRequest { limit, lease, max_attempts: 3 }
}

fn ids(claimed: &[meet_webhooks::inbox::Claimed]) -> Vec<i64> {
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
        assert_eq!(b.replay(meet_webhooks::inbox::Selection::Dead).await.unwrap(), 1);
        let again = b.claim(request(10, lease)).await.unwrap();
        assert_eq!((ids(&again), again[0].attempt), (vec![third], 1));
        a.close().await;
        b.close().await;
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
    let mut inbox = InboxOptions::new(std::path::Path::new("unused"));
    inbox.concurrency = concurrency;
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
