//! The crate's handler serves signed deliveries end to end: a real server on 127.0.0.1:0, the
//! SQLite inbox in a temporary directory, deliveries signed as the provider signs them.

use std::time::{Duration, Instant};

use meet_webhooks_runtime::{ServiceBuilder, Storage};
use meet_webhooks_sender::{Sender, Signing, provider_bytes};
use own_crate::{Receiver, RecordingCounter};
use serde_json::json;

const KEY: &str = "own-crate-key";

#[test]
fn signed_deliveries_reach_this_crates_handler_through_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceBuilder::new(Receiver::new(RecordingCounter::default()), [KEY])
        .storage(Storage::Sqlite(dir.path().to_owned()))
        .signals(false)
        .build()
        .unwrap();
    let running = service.bind("127.0.0.1:0".parse().unwrap(), Some(1)).unwrap().spawn().unwrap();
    let url = format!("http://{}/webhook", running.addr);
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let recording = |event: &str, id: &str, status: &str| {
        json!({"event": event, "creationDate": now(), "data": {
            "recordingId": id, "roomId": "room-1", "roomName": "Room 1", "status": status,
            "filename": format!("{id}.mp4"), "startDate": now()}})
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let send = |key: &str, body: serde_json::Value| {
        let sender = Sender::new(&url, Signing::new(key)).unwrap();
        runtime.block_on(sender.send(provider_bytes(&body))).unwrap()
    };

    for body in [
        recording("recordingStarted", "rec-1", "active"),
        recording("recordingEnded", "rec-1", "complete"),
        json!({"event": "testEvent", "creationDate": now(), "data": {"message": "hello"}}),
    ] {
        let delivered = send(KEY, body);
        assert_eq!(delivered.status.as_u16(), 200, "{}", delivered.body);
    }
    // A forgery is refused and reaches no handler.
    let forged = send("not-the-key", recording("recordingStarted", "rec-2", "active"));
    assert_eq!(forged.status.as_u16(), 401, "{}", forged.body);

    let handler = running.handler().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (handler.seen.lock().unwrap().len() < 2 || handler.fell_back.lock().unwrap().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(*handler.seen.lock().unwrap(), [("rec-1".to_owned(), "started"), ("rec-1".to_owned(), "ended")]);
    assert_eq!(*handler.fell_back.lock().unwrap(), [Some("testEvent".to_owned())]);
    running.stop().unwrap();
}
