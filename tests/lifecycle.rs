//! A service started and stopped many times in one process leaves no thread behind (a test
//! binary of its own: the threads it counts are its own).

use std::time::{Duration, Instant};

use meet_webhooks::Receiver;
use meet_webhooks::handler::ServiceHandler;
use meet_webhooks_runtime::{ServiceBuilder, Storage};

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Threads once those that end soon after a service stops (a runtime's idle ones) have ended.
fn settled() -> usize {
    std::thread::sleep(Duration::from_millis(500));
    threads()
}

/// Waits (bounded) for the thread count to come back to `at_most`; the count it ended at.
fn settle(at_most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    while threads() > at_most && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    threads()
}

fn builder(storage: Storage) -> ServiceBuilder<Receiver<ServiceHandler>> {
    ServiceBuilder::new(Receiver::new(ServiceHandler::default()), ["lifecycle-key"])
        .storage(storage)
        .signals(false)
        .shutdown_grace(Duration::ZERO)
}

/// Starts and stops 50 services on the storage `storage(n)` gives; the threads before and after.
fn fifty(storage: impl Fn(usize) -> Storage) -> (usize, usize) {
    let start = |n: usize| {
        let service = builder(storage(n)).build().unwrap();
        service.bind("127.0.0.1:0".parse().unwrap(), Some(1)).unwrap().spawn().unwrap()
    };
    // One round first: whatever a first use starts once for the process is not a leak.
    start(0).stop().unwrap();
    let before = settled();
    for n in 1..=50 {
        start(n).stop().unwrap();
    }
    (before, settle(before))
}

#[test]
fn fifty_services_started_and_stopped_leave_no_thread_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = fifty(|n| Storage::Sqlite(dir.path().join(n.to_string())));
    assert!(after <= before, "SQLite: {before} threads before 50 services, {after} after");
    drop(dir);
    on_postgres();
}

/// The same on PostgreSQL (a database of the test's own), when there is a server.
fn on_postgres() {
    let admin = std::env::var("MEET_WEBHOOKS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("mw_lifecycle_{}", std::process::id());
    let psql = |sql: &str| {
        std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &admin, "-c", sql])
            .output()
            .map(|o| o.status.success())
    };
    if !matches!(psql(&format!("CREATE DATABASE {name}")), Ok(true)) {
        assert!(std::env::var_os("MEET_WEBHOOKS_REQUIRE_POSTGRES").is_none(), "PostgreSQL at {admin} is required");
        eprintln!("skipped: no PostgreSQL at {admin}");
        return;
    }
    let base = admin.split('?').next().unwrap();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    let (before, after) = fifty(|_| Storage::Postgres(url.clone()));
    let _ = psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
    assert!(after <= before, "PostgreSQL: {before} threads before 50 services, {after} after");
}

#[test]
fn a_service_shuts_down_from_inside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        for n in 0..3 {
            let service = builder(Storage::Sqlite(dir.path().join(n.to_string()))).build().unwrap();
            assert!(service.inbox().is_some());
            service.shut_down().await;
        }
    });
}
