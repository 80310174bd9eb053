//! A fuzz run over the request path: proptest writes raw HTTP/1.1 bytes of every shape (odd
//! methods, paths and versions, framing that lies, duplicated and malformed headers, control
//! bytes, truncation, pipelining) to a real server on 127.0.0.1, one connection per case.
//!
//! Whatever arrives: the server answers with a well-formed status line or closes; it never
//! answers 500; it acknowledges a delivery only when the bytes it read were signed with the
//! key (a forgery, or a signed body changed on the way, is never accepted); no handler runs for
//! anything it did not acknowledge; and it keeps serving.
//!
//! `MEET_WEBHOOKS_FUZZ_CASES` sets how many cases (default 2,000: about 2 s, run by
//! `cargo test`); a longer run is `MEET_WEBHOOKS_FUZZ_CASES=20000 cargo test fuzz`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use meet_webhooks_runtime::verify::sign;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::{KEY, Options, TestServer, now_ms};

/// One request as written to the socket (twice when pipelined), and whether its body was
/// signed, intact, with the key.
#[derive(Debug, Clone)]
struct Case {
    bytes: Vec<u8>,
    requests: usize,
    signed_intact: bool,
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("POST".to_owned()),
        Just("GET".to_owned()),
        Just("PUT".to_owned()),
        Just("OPTIONS".to_owned()),
        "[A-Z]{1,12}",
        "[ -~]{0,8}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just("/webhook".to_owned()),
        1 => Just("/healthz".to_owned()),
        1 => Just("/metrics".to_owned()),
        1 => Just("/readyz".to_owned()),
        1 => Just("/webhook/".to_owned()),
        1 => Just("/webhook?x=1".to_owned()),
        1 => Just("*".to_owned()),
        1 => "/[ -~]{0,40}",
        1 => Just(format!("/{}", "a".repeat(10_000))),
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => Just("HTTP/1.1".to_owned()),
        1 => Just("HTTP/1.0".to_owned()),
        1 => Just("HTTP/2.0".to_owned()),
        1 => Just("HTTP/9".to_owned()),
        1 => "[ -~]{0,10}",
    ]
}

/// The body, and whether the case signs it (with the right key, at a fresh timestamp).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(()).prop_map(|()| crate::common::example(&meet_webhooks::WEBHOOKS[0]).to_string().into_bytes()),
        1 => Just(br#"{"event":"testEvent","creationDate":1,"data":{"message":"hi"}}"#.to_vec()),
        1 => Just(b"[1,2,3]".to_vec()),
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

#[derive(Debug, Clone)]
enum Signature {
    Valid,
    WrongKey,
    Garbage(String),
    Missing,
}

fn signature() -> impl Strategy<Value = Signature> {
    prop_oneof![
        8 => Just(Signature::Valid),
        1 => Just(Signature::WrongKey),
        1 => "[0-9a-fA-F]{0,70}".prop_map(Signature::Garbage),
        1 => Just(Signature::Missing),
    ]
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    WrongLength(i64),
    Chunked,
    BadChunked,
    Both,
    None,
    Duplicate,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        10 => Just(Framing::Length),
        1 => (-5i64..5).prop_map(Framing::WrongLength),
        1 => Just(Framing::Chunked),
        1 => Just(Framing::BadChunked),
        1 => Just(Framing::Both),
        1 => Just(Framing::None),
        1 => Just(Framing::Duplicate),
    ]
}

fn extra_header() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        Just(("expect".to_owned(), "100-continue".to_owned())),
        Just(("connection".to_owned(), "keep-alive".to_owned())),
        Just(("content-type".to_owned(), "text/plain".to_owned())),
        Just(("x-timestamp".to_owned(), "1".to_owned())),
        Just(("content-length".to_owned(), "18446744073709551616".to_owned())),
        Just(("transfer-encoding".to_owned(), "gzip, chunked".to_owned())),
        ("[a-zA-Z-]{1,20}", "[ -~]{0,40}"),
        ("[\\x00-\\x1f:]{1,4}", "[\\x00-\\xff]{0,10}"),
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut the bytes off here (a fraction of the length, in thousandths).
    Truncate(u16),
    /// Flip a byte (position in thousandths).
    Flip(u16, u8),
    /// Send it twice on the connection (pipelined).
    Twice,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        10 => Just(Damage::None),
        1 => (0u16..1000).prop_map(Damage::Truncate),
        1 => (0u16..1000, 1u8..=255).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        1 => Just(Damage::Twice),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (token(), path(), version()),
        (body(), signature(), framing()),
        proptest::collection::vec(extra_header(), 0..2),
        prop::bool::weighted(0.85),
        damage(),
    )
        .prop_map(|((method, path, version), (body, signature, framing), extras, json, damage)| {
            let timestamp = now_ms().to_string();
            let mut head = format!("{method} {path} {version}\r\nhost: x\r\n");
            if json {
                head.push_str("content-type: application/json\r\n");
            }
            head.push_str(&format!("x-timestamp: {timestamp}\r\n"));
            match &signature {
                Signature::Valid => {
                    head.push_str(&format!("x-signature: {}\r\n", sign(KEY.as_bytes(), &timestamp, &body)))
                }
                Signature::WrongKey => {
                    head.push_str(&format!("x-signature: {}\r\n", sign(b"not-the-key", &timestamp, &body)))
                }
                Signature::Garbage(s) => head.push_str(&format!("x-signature: {s}\r\n")),
                Signature::Missing => {}
            }
            let mut payload = body.clone();
            match framing {
                Framing::Length => head.push_str(&format!("content-length: {}\r\n", body.len())),
                Framing::WrongLength(d) => head.push_str(&format!("content-length: {}\r\n", body.len() as i64 + d)),
                Framing::Chunked | Framing::Both => {
                    if matches!(framing, Framing::Both) {
                        head.push_str(&format!("content-length: {}\r\n", body.len()));
                    }
                    head.push_str("transfer-encoding: chunked\r\n");
                    payload = format!("{:x}\r\n", body.len()).into_bytes();
                    payload.extend_from_slice(&body);
                    payload.extend_from_slice(b"\r\n0\r\n\r\n");
                }
                Framing::BadChunked => {
                    head.push_str("transfer-encoding: chunked\r\n");
                    payload = b"zz\r\n".to_vec();
                    payload.extend_from_slice(&body);
                }
                Framing::None => {}
                Framing::Duplicate => {
                    head.push_str(&format!("content-length: {}\r\ncontent-length: {}\r\n", body.len(), body.len() + 1));
                }
            }
            for (name, value) in &extras {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            let body_start = bytes.len();
            bytes.extend_from_slice(&payload);
            let mut intact = true;
            let mut requests = 1;
            match damage {
                Damage::None => {}
                Damage::Truncate(at) => {
                    let at = bytes.len() * usize::from(at) / 1000;
                    intact = at >= bytes.len();
                    bytes.truncate(at);
                }
                Damage::Flip(at, bits) => {
                    let at = (bytes.len() * usize::from(at) / 1000).min(bytes.len().saturating_sub(1));
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= bits;
                        intact = at < body_start;
                    }
                }
                Damage::Twice => {
                    bytes = [bytes.clone(), bytes].concat();
                    requests = 2;
                }
            }
            let signed_intact = matches!(signature, Signature::Valid) && intact;
            Case { bytes, requests, signed_intact }
        })
}

/// What came back on the connection until the server closed it, or until a pause after an
/// answer to each of the `requests` written.
fn exchange(addr: std::net::SocketAddr, bytes: &[u8], requests: usize) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    // An answer may take a while (a body being waited for, a commit on a loaded machine), so
    // each is waited for; once every request has its final one, what else comes comes at once.
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if final_answers(&answer) >= requests {
            stream.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        }
    }
    answer
}

/// How many final (not 1xx, such as `100 Continue`) status lines `answer` holds.
fn final_answers(answer: &[u8]) -> usize {
    let text = String::from_utf8_lossy(answer);
    // A status line cut off before its code is not counted yet.
    text.match_indices("HTTP/1.")
        .filter(|(at, _)| text.as_bytes().get(at + 8..at + 10).is_some_and(|code| code != b" 1"))
        .count()
}

#[test]
fn raw_requests_of_every_shape_never_break_the_server_nor_get_a_forgery_accepted() {
    let cases: u32 = std::env::var("MEET_WEBHOOKS_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    // The default service: deliveries go to the inbox, handlers run from there.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with(Options {
        timeout: Duration::from_millis(500),
        body_limit: 4096,
        inbox: Some(crate::common::InboxOptions::new(dir.path())),
        ..Options::default()
    });
    let addr = server.addr;
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    runner
        .run(&case(), |case| {
            let answer = exchange(addr, &case.bytes, case.requests);
            let text = String::from_utf8_lossy(&answer);
            if !answer.is_empty() {
                prop_assert!(text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "), "not HTTP: {text:?}");
                let status: u16 = text[9..12].parse().map_err(|_| TestCaseError::fail(format!("status: {text:?}")))?;
                prop_assert!(status != 500, "500: {text:?}");
            }
            let acknowledged = text.matches(r#""status":"accepted""#).count();
            if acknowledged > 0 {
                prop_assert!(case.signed_intact, "a delivery not signed with the key was acknowledged: {text:?}");
                accepted.fetch_add(acknowledged, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    // Every acknowledged delivery is handled once, nothing else is, and the server still serves.
    let accepted = accepted.load(std::sync::atomic::Ordering::Relaxed);
    crate::common::eventually("every acknowledged delivery handled", || {
        server.recorder().runs.lock().unwrap().len() >= accepted
    });
    std::thread::sleep(Duration::from_millis(200));
    let runs = server.recorder().runs.lock().unwrap().clone();
    let deliveries: std::collections::HashSet<_> = runs.iter().map(|(id, _)| id).collect();
    assert_eq!(deliveries.len(), runs.len(), "no delivery handled twice");
    assert_eq!(runs.len(), accepted, "handler runs == deliveries acknowledged");
    let health = exchange(addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 1);
    assert!(String::from_utf8_lossy(&health).starts_with("HTTP/1.1 200"));
    eprintln!("fuzz: {cases} cases in {:?}, {} acknowledged and handled once", started.elapsed(), runs.len());
}
