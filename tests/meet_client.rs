//! The generated OpenVidu Meet REST client, against a mock of the API that no one here wrote:
//! Stoplight Prism serves the shipped spec and validates every request against it (a wrong
//! path, parameter, header or body is answered with an error, which fails the test). What
//! Prism cannot serve (retries after `429`, a server too slow to answer) is served by a test
//! server on 127.0.0.1:0.
//!
//! Prism is installed from `tests/prism/package-lock.json` on first use (`npm ci`). Without
//! npm these tests say so in one line and pass, unless `MEET_WEBHOOKS_REQUIRE_PRISM=1` (CI).
//!
//! A test target of its own: it names operations of the shipped spec, which the older fixtures
//! the integration tests are also built against do not have.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use meet_webhooks::{WEBHOOKS, client, types};
use meet_webhooks_runtime::meet::Settings;

const KEY: &str = "meet-api-key";

/// A Prism mock of the shipped spec on a port of its own, stopped on drop.
struct Prism {
    child: Child,
    url: String,
}

impl Prism {
    /// `None` (said once) where npm is missing and Prism is not required.
    fn start() -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let prism = install(&root.join("tests/prism"))?;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(prism)
            .args(["mock", "--host", "127.0.0.1", "--port", &port.to_string(), "--errors"])
            .arg(root.join("openapi/openvidu-meet-api.yaml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting prism");
        // It says when it listens; until then a call would be refused.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.expect("prism's output").contains("Prism is listening") {
                break;
            }
        }
        // Keep reading, so that Prism never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Some(Self { child, url: format!("http://127.0.0.1:{port}") })
    }

    fn client(&self) -> client::Client {
        client::Client::from_settings(&Settings::new(&self.url, KEY).unwrap())
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prism's binary, installed from the lockfile when it is not yet.
fn install(dir: &Path) -> Option<PathBuf> {
    static INSTALLED: Mutex<()> = Mutex::new(());
    let _once = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let binary = dir.join("node_modules/.bin/prism");
    if binary.exists() {
        return Some(binary);
    }
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .is_ok_and(|status| status.success());
    if installed && binary.exists() {
        return Some(binary);
    }
    assert!(
        std::env::var_os("MEET_WEBHOOKS_REQUIRE_PRISM").is_none(),
        "Prism is required (MEET_WEBHOOKS_REQUIRE_PRISM) and `npm ci` in {} did not install it",
        dir.display()
    );
    eprintln!("skipped: no npm to install Prism (tests/prism), the Meet API's mock");
    None
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

#[test]
fn a_room_read_through_the_api_and_one_from_a_webhook_are_one_type() {
    let Some(prism) = Prism::start() else { return };
    let rooms = block_on(prism.client().get_rooms().max_items(5).send())
        .expect("getRooms, as Prism validated it")
        .into_inner()
        .rooms;
    let webhook = WEBHOOKS.iter().find(|w| w.event == "meetingStarted").unwrap();
    let body: types::MeetingStartedWebhookBody = serde_json::from_str(webhook.example).unwrap();
    // Both are `types::MeetRoom`: no conversion between what a webhook brings and the API answers.
    fn room_id(room: &types::MeetRoom) -> &str {
        room.room_id.as_deref().unwrap_or_default()
    }
    assert!(!room_id(&rooms[0]).is_empty());
    assert!(!room_id(&body.data).is_empty());
}

#[test]
fn the_operations_a_handler_uses_pass_the_mocks_validation_with_the_key() {
    let Some(prism) = Prism::start() else { return };
    let client = prism.client();
    block_on(async {
        let room = client.get_room().room_id("room-123").send().await.expect("getRoom").into_inner();
        assert_eq!(room.room_id.as_deref(), Some("room-123"));
        let recording = client.get_recording().recording_id("room-123--EG_XYZ--XX445").send().await;
        assert!(recording.expect("getRecording").into_inner().recording_id.is_some());
        let media = client.get_recording_media().recording_id("room-123--EG_XYZ--XX445").range("bytes=0-").send().await;
        let media = media.expect("getRecordingMedia");
        assert!(media.status().is_success(), "{}", media.status());
        client.delete_recording().recording_id("room-123--EG_XYZ--XX445").call().await.expect("deleteRecording");
    });
    // Prism refuses a call without the key: the client's success above is the key's doing.
    let without_key = block_on(reqwest_get(&format!("{}/rooms/room-123", prism.url)));
    assert_eq!(without_key, 401);
}

async fn reqwest_get(url: &str) -> u16 {
    meet_webhooks_runtime::__private::reqwest::get(url).await.unwrap().status().as_u16()
}

/// A server that answers each request with the next of `answers` (raw HTTP responses), and
/// counts them.
fn scripted(answers: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for (stream, answer) in listener.incoming().zip(answers) {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            count.fetch_add(1, Ordering::SeqCst);
            if answer.is_empty() {
                // Never answers: the client's timeout must end the call.
                std::thread::sleep(Duration::from_secs(5));
            } else {
                let _ = stream.write_all(answer.as_bytes());
            }
        }
    });
    (url, served)
}

#[test]
fn a_429_is_tried_again_after_its_retry_after_and_a_long_one_is_answered_as_it_came() {
    let (url, served) = scripted(vec![
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nmedia",
    ]);
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let bytes = block_on(async {
        let media = client.get_recording_media().recording_id("r").send().await.expect("answered after the retry");
        let mut stream = media.into_inner_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    });
    assert_eq!(bytes, b"media");
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // A 503 without Retry-After is tried again after a second.
    let (url, served) = scripted(vec![
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nmedia",
    ]);
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let answered = block_on(client.get_recording_media().recording_id("r").send());
    assert!(answered.is_ok_and(|media| media.status().is_success()));
    assert_eq!(served.load(Ordering::SeqCst), 2);

    let (url, served) = scripted(vec![
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Type: application/json\r\nContent-Length: 42\r\nConnection: close\r\n\r\n{\"error\":\"Too Many\",\"message\":\"slow down\"}",
    ]);
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let answered = block_on(client.get_recording_media().recording_id("r").send());
    assert_eq!(answered.err().and_then(|e| e.status()).map(|s| s.as_u16()), Some(429));
    assert_eq!(served.load(Ordering::SeqCst), 1, "an hour is past the bound: not waited for");
}

#[test]
fn a_call_that_takes_longer_than_the_timeout_ends_in_an_error() {
    let (url, _) = scripted(vec![""]);
    let settings = Settings::new(&url, KEY).unwrap().timeout(Duration::from_millis(200)).unwrap();
    let client = client::Client::from_settings(&settings);
    let error = block_on(client.get_recording_media().recording_id("r").send()).err().expect("no answer in time");
    assert!(matches!(&error, client::Error::CommunicationError(e) if e.is_timeout()), "{error}");
}

/// A media server of the test's own: `media` with `Range` (`206`, `Content-Range`), the first
/// answer broken off after `break_after` bytes when given, and `DELETE` answered as the API does.
/// Records the `Range` of each request (`delete` for a `DELETE`).
fn media_server(media: Vec<u8>, break_after: Option<usize>) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    paced_media_server(media, break_after, None)
}

/// [`media_server`], its first answer sent 64 KiB at a time, `pace` apart.
fn paced_media_server(
    media: Vec<u8>,
    break_after: Option<usize>,
    pace: Option<Duration>,
) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            if head.starts_with("delete ") {
                seen.lock().unwrap().push(Some("delete".to_owned()));
                let body = r#"{"message":"deleted"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                continue;
            }
            let range = head.lines().find_map(|l| l.strip_prefix("range: ")).map(|r| r.trim().to_owned());
            seen.lock().unwrap().push(range.clone());
            let start: usize = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok())
                .unwrap_or(0);
            let body = &media[start..];
            let status = if range.is_some() {
                format!("206 Partial Content\r\nContent-Range: bytes {start}-{}/{}", media.len() - 1, media.len())
            } else {
                "200 OK".to_owned()
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let cut = if n == 0 { break_after.unwrap_or(body.len()) } else { body.len() };
            match pace {
                Some(pace) if n == 0 => {
                    for chunk in body[..cut].chunks(64 * 1024) {
                        if stream.write_all(chunk).is_err() {
                            break;
                        }
                        std::thread::sleep(pace);
                    }
                }
                _ => {
                    let _ = stream.write_all(&body[..cut]);
                }
            }
        }
    });
    (url, ranges)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn a_download_broken_off_resumes_where_it_stopped_and_a_second_run_asks_for_nothing() {
    use meet_webhooks_runtime::meet::{DownloadError, Downloaded, download};
    let media: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let (url, ranges) = media_server(media.clone(), Some(1_200_000));
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recording.mp4");
    let fetch = |range: String| client.get_recording_media().recording_id("rec-1").range(range).send();
    // The first attempt ends early: nothing in place, what arrived kept for the next.
    let first = block_on(download(&file, fetch));
    assert!(matches!(first, Err(DownloadError::Short { .. }) | Err(DownloadError::BrokenOff { .. })), "{first:?}");
    assert!(!file.exists(), "a file in place is always whole");
    let kept = std::fs::metadata(dir.path().join("recording.mp4.partial")).unwrap().len();
    assert!(kept > 0 && kept < media.len() as u64, "{kept}");

    let second = block_on(download(&file, fetch)).unwrap();
    assert_eq!(second, Downloaded::Complete { bytes: media.len() as u64, resumed_at: kept });
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&media));
    assert_eq!(*ranges.lock().unwrap(), [Some("bytes=0-".to_owned()), Some(format!("bytes={kept}-"))]);

    assert_eq!(block_on(download(&file, fetch)).unwrap(), Downloaded::AlreadyThere);
    assert_eq!(ranges.lock().unwrap().len(), 2, "nothing asked once the file is in place");
}

/// The example handler (`examples/archive.rs`), run here as the service runs it.
#[allow(dead_code)]
#[path = "../examples/archive.rs"]
mod archive;

#[test]
fn a_signed_recording_ended_is_archived_by_the_example_handler_and_deleted_from_meet() {
    use meet_webhooks_runtime::{ServiceBuilder, Storage};
    use meet_webhooks_sender::{Sender, Signing, provider_bytes};

    let media: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    let (meet_url, requests) = media_server(media.clone(), None);
    let data = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let settings = Settings::new(&meet_url, KEY).unwrap();
    let handler = archive::Archiver::new(Some(settings), archive.path().to_owned());
    let service = ServiceBuilder::new(meet_webhooks::Receiver::new(handler), [KEY])
        .storage(Storage::Sqlite(data.path().to_owned()))
        .signals(false)
        .build()
        .unwrap();
    let running = service.bind("127.0.0.1:0".parse().unwrap(), Some(1)).unwrap().spawn().unwrap();

    let webhook = WEBHOOKS.iter().find(|w| w.event == "recordingEnded").unwrap();
    let mut body: serde_json::Value = serde_json::from_str(webhook.example).unwrap();
    body["data"]["recordingId"] = "room-1--EG_1--A1".into();
    body["data"]["status"] = "complete".into();
    let sender = Sender::new(&format!("http://{}/webhook", running.addr), Signing::new(KEY)).unwrap();
    let delivered = block_on(sender.send(provider_bytes(&body))).unwrap();
    assert_eq!(delivered.status.as_u16(), 200, "{}", delivered.body);

    let file = archive.path().join("room-1--EG_1--A1.mp4");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !requests.lock().unwrap().contains(&Some("delete".to_owned())) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&media));
    assert_eq!(*requests.lock().unwrap(), [Some("bytes=0-".to_owned()), Some("delete".to_owned())]);
    running.stop().unwrap();
}

#[test]
fn a_failed_call_says_the_operation_the_status_and_the_apis_message_and_never_the_key() {
    let body = r#"{"error":"Not Found","message":"Room 'x' does not exist"}"#;
    let answer: &'static str = Box::leak(
        format!("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            .into_boxed_str(),
    );
    let (url, _) = scripted(vec![answer]);
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let error = block_on(client.get_room().room_id("x").call()).expect_err("a 404");
    assert_eq!(error.to_string(), "meet api getRoom: 404 Not Found: Room 'x' does not exist (Not Found)");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(error.body().unwrap()["error"], "Not Found");

    // No answer at all: still the operation, and neither the key nor the URL.
    let refused = block_on(
        client::Client::from_settings(&Settings::new("http://127.0.0.1:9/meet", KEY).unwrap())
            .get_room()
            .room_id("x")
            .call(),
    );
    let text = refused.expect_err("refused").to_string();
    assert!(text.starts_with("meet api getRoom: "), "{text}");
    assert!(!text.contains(KEY) && !text.contains("127.0.0.1:9"), "{text}");
    assert!(!format!("{:?}", Settings::new(&url, KEY).unwrap()).contains(KEY));
}

/// The service with the example handler, in a process of its own: this test binary run again,
/// with `--ignored` and `MEET_TEST_ARCHIVE_SERVICE` set (it writes its port into the file that
/// names, then serves until killed). Not a test of its own.
#[test]
#[ignore = "the child process of a_service_killed_mid_download_resumes_it_after_a_restart_and_deletes_once"]
fn archive_service_process() {
    let settings = std::env::var("MEET_TEST_ARCHIVE_SERVICE").expect("run by archive_service()");
    let [data, archive_dir, meet_url, port_file]: [&str; 4] =
        settings.split('|').collect::<Vec<_>>().try_into().unwrap();
    let handler = archive::Archiver::new(Some(Settings::new(meet_url, KEY).unwrap()), archive_dir.into());
    let service = meet_webhooks_runtime::ServiceBuilder::new(meet_webhooks::Receiver::new(handler), [KEY])
        .storage(meet_webhooks_runtime::Storage::Sqlite(data.into()))
        .signals(false)
        .build()
        .unwrap();
    let bound = service.bind("127.0.0.1:0".parse().unwrap(), Some(1)).unwrap();
    std::fs::write(port_file, bound.addr().unwrap().port().to_string()).unwrap();
    bound.run().unwrap();
}

/// A child process, killed (SIGKILL) when dropped: a failing test leaves none behind.
struct Killed(Child);

impl Killed {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts [`archive_service_process`] as a child process; returns it and its webhook URL.
fn archive_service(data: &Path, archive_dir: &Path, meet_url: &str) -> (Killed, String) {
    let port_file = data.join("port");
    let _ = std::fs::remove_file(&port_file);
    let settings = format!("{}|{}|{meet_url}|{}", data.display(), archive_dir.display(), port_file.display());
    let child = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "archive_service_process", "--ignored", "--test-threads=1", "--nocapture"])
            .env("MEET_TEST_ARCHIVE_SERVICE", settings)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(port) = std::fs::read_to_string(&port_file)
            && !port.is_empty()
        {
            return (child, format!("http://127.0.0.1:{port}/webhook"));
        }
        assert!(std::time::Instant::now() < deadline, "the service process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_service_killed_mid_download_resumes_it_after_a_restart_and_deletes_once() {
    use meet_webhooks_sender::{Sender, Signing, provider_bytes};

    let media: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    // 31 chunks of 64 KiB, 100 ms apart: about 3 s, long enough to be killed in the middle.
    let (meet_url, requests) = paced_media_server(media.clone(), None, Some(Duration::from_millis(100)));
    let data = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let (mut first, url) = archive_service(data.path(), archive_dir.path(), &meet_url);

    let webhook = WEBHOOKS.iter().find(|w| w.event == "recordingEnded").unwrap();
    let mut body: serde_json::Value = serde_json::from_str(webhook.example).unwrap();
    body["data"]["recordingId"] = "room-2--EG_2--B2".into();
    body["data"]["status"] = "complete".into();
    let delivered = block_on(Sender::new(&url, Signing::new(KEY)).unwrap().send(provider_bytes(&body))).unwrap();
    assert_eq!(delivered.status.as_u16(), 200, "{}", delivered.body);

    // Killed (SIGKILL) once part of the media is on disk.
    let partial = archive_dir.path().join("room-2--EG_2--B2.mp4.partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 200_000 {
        assert!(std::time::Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept < media.len() as u64, "killed mid-download: {kept}");

    let (mut second, _) = archive_service(data.path(), archive_dir.path(), &meet_url);
    let file = archive_dir.path().join("room-2--EG_2--B2.mp4");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !requests.lock().unwrap().contains(&Some("delete".to_owned())) {
        assert!(std::time::Instant::now() < deadline, "not archived after the restart: {:?}", requests.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    second.kill();
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&media));
    let seen = requests.lock().unwrap().clone();
    // The first attempt from the start; the second resumed at or past what the first had flushed.
    assert_eq!(seen[0].as_deref(), Some("bytes=0-"));
    let resumed: u64 =
        seen[1].as_deref().and_then(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok()).unwrap();
    assert!(resumed >= kept && resumed > 0, "resumed at {resumed}, {kept} kept");
    assert_eq!(seen.len(), 3, "one download resumed, one delete: {seen:?}");
    assert_eq!(seen[2].as_deref(), Some("delete"));
}

/// An https server with a certificate of the test's own (for 127.0.0.1), answering one `getRoom`.
fn tls_server() -> (String, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = certified.cert.pem();
    let identity =
        native_tls::Identity::from_pkcs8(cert.as_bytes(), certified.signing_key.serialize_pem().as_bytes()).unwrap();
    let acceptor = native_tls::TlsAcceptor::new(identity).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            // A client that does not trust the certificate hangs up in the handshake.
            let Ok(mut stream) = acceptor.accept(stream.unwrap()) else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = r#"{"roomId":"tls-room","roomName":"room"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, cert.into_bytes())
}

#[test]
fn https_is_verified_and_a_private_authority_can_be_trusted() {
    let (url, cert) = tls_server();
    let untrusted = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let refused = block_on(untrusted.get_room().room_id("tls-room").call()).expect_err("an unknown certificate");
    assert!(refused.status().is_none(), "no answer over an unverified connection: {refused}");
    let trusted = Settings::new(&url, KEY).unwrap().root_certificate(&cert).unwrap();
    let room = block_on(client::Client::from_settings(&trusted).get_room().room_id("tls-room").call()).unwrap();
    assert_eq!(room.into_inner().room_id.as_deref(), Some("tls-room"));
}

/// The byte at `i` of the media [`lazy_media_server`] serves.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Serves `len` bytes of [`pattern`] to any GET, made as they are sent (the server holds none).
fn lazy_media_server(len: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let mut chunk = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < len {
                let n = chunk.len().min((len - at) as usize);
                for (k, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(at + k as u64);
                }
                if stream.write_all(&chunk[..n]).is_err() {
                    break;
                }
                at += n as u64;
            }
        }
    });
    url
}

/// A download in a process of its own: this test binary run again, with `--ignored` and
/// `MEET_TEST_DOWNLOAD` set to `<api url>|<file>`; prints the process's peak resident memory.
/// Not a test of its own.
#[test]
#[ignore = "the child process of a_download_holds_no_more_of_the_media_in_memory_than_a_chunk"]
fn download_process() {
    let settings = std::env::var("MEET_TEST_DOWNLOAD").expect("run by the memory test");
    let (url, file) = settings.split_once('|').unwrap();
    let client = client::Client::from_settings(&Settings::new(url, KEY).unwrap());
    let fetch = |range: String| client.get_recording_media().recording_id("big").range(range).send();
    block_on(meet_webhooks_runtime::meet::download(Path::new(file), fetch)).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    println!("peak {}", peak.trim_start_matches("VmHWM:").trim());
}

#[test]
fn a_download_holds_no_more_of_the_media_in_memory_than_a_chunk() {
    const LEN: u64 = 512 << 20;
    let url = lazy_media_server(LEN);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.mp4");
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "download_process", "--ignored", "--test-threads=1", "--nocapture"])
        .env("MEET_TEST_DOWNLOAD", format!("{url}|{}", file.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let peak_kib: u64 = stdout
        .lines()
        .find_map(|l| l.split("peak ").nth(1)?.trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {stdout}"));
    // A 512 MiB recording through a process that stays under 128 MiB: streamed, not held.
    assert!(peak_kib < 128 * 1024, "peak {peak_kib} KiB for a {LEN}-byte download");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), LEN);
    let mut sampled = std::fs::File::open(&file).unwrap();
    let mut head = [0u8; 4096];
    sampled.read_exact(&mut head).unwrap();
    assert!(head.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)), "the bytes are the media's");
}

#[test]
fn an_answer_that_does_not_continue_what_was_kept_drops_it_and_the_next_attempt_starts_over() {
    use meet_webhooks_runtime::meet::{DownloadError, Downloaded, download};
    let (url, served) = scripted(vec![
        "HTTP/1.1 206 Partial Content\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-4/5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nmedia",
        "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nmedia",
    ]);
    let client = client::Client::from_settings(&Settings::new(&url, KEY).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.mp4");
    let partial = dir.path().join("r.mp4.partial");
    std::fs::write(&partial, b"me").unwrap();
    let fetch = |range: String| client.get_recording_media().recording_id("r").range(range).send();
    let first = block_on(download(&file, fetch));
    assert!(matches!(&first, Err(DownloadError::Range { asked: 2, .. })), "{first:?}");
    assert!(first.unwrap_err().to_string().contains("the next attempt starts the file again"));
    assert!(!partial.exists(), "what was kept is dropped");
    assert_eq!(block_on(download(&file, fetch)).unwrap(), Downloaded::Complete { bytes: 5, resumed_at: 0 });
    assert_eq!(std::fs::read(&file).unwrap(), b"media");
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[test]
fn the_example_names_a_file_only_after_a_recording_id_that_names_no_path() {
    assert_eq!(archive::file_name("room-1--EG_1--A1").unwrap(), "room-1--EG_1--A1.mp4");
    for hostile in ["", "../etc/passwd", "a/b", ".hidden", "room 1", "r\n1"] {
        assert!(archive::file_name(hostile).is_err(), "{hostile:?}");
    }
}
