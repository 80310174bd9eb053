//! Issue 3 over real HTTP: every check of the verification middleware, at and around its
//! bounds, including what the provider's own reference receivers get wrong.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use meet_webhooks::WEBHOOKS;
use meet_webhooks_runtime::verify::{Policy, TimestampUnit, sign};
use proptest::prelude::*;

use crate::common::{KEY, Options, PATH, TestServer, example, now_ms, post_request, read_response};

fn body() -> Vec<u8> {
    example(&WEBHOOKS[0]).to_string().into_bytes()
}

#[test]
fn valid_deliveries_with_millisecond_and_second_timestamps_are_accepted() {
    let server = TestServer::start();
    let ms = server.deliver(KEY, &now_ms().to_string(), &body());
    assert_eq!(ms.status, 200, "{ms:?}");
    let s = server.deliver(KEY, &(now_ms() / 1000).to_string(), &body());
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(server.recorder().calls().len(), 2);
}

#[test]
fn a_configured_unit_is_obeyed() {
    // Seconds sent to a receiver fixed to milliseconds look like 1970: too old.
    let server = TestServer::with(Options {
        policy: Policy { unit: TimestampUnit::Milliseconds, ..Policy::default() },
        ..Options::default()
    });
    let response = server.deliver(KEY, &(now_ms() / 1000).to_string(), &body());
    assert_eq!((response.status, response.error().as_str()), (401, "timestamp_too_old"));
}

#[test]
fn a_wrong_key_is_refused_with_401() {
    let server = TestServer::start();
    let response = server.deliver("not-the-key", &now_ms().to_string(), &body());
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.error(), "invalid_signature");
    assert!(response.json()["message"].as_str().unwrap().contains("does not match"));
    assert!(server.recorder().calls().is_empty());
}

#[test]
fn the_second_of_two_keys_verifies() {
    let server = TestServer::with(Options { keys: vec!["old-key", "new-key"], ..Options::default() });
    assert_eq!(server.deliver("new-key", &now_ms().to_string(), &body()).status, 200);
    assert_eq!(server.deliver("old-key", &now_ms().to_string(), &body()).status, 200);
    assert_eq!(server.deliver("third-key", &now_ms().to_string(), &body()).status, 401);
}

fn with_signature(server: &TestServer, signature: &str) -> crate::common::Response {
    let timestamp = now_ms().to_string();
    server
        .post(&[("content-type", "application/json"), ("x-timestamp", &timestamp), ("x-signature", signature)], &body())
}

#[test]
fn upper_case_hex_is_accepted() {
    let server = TestServer::start();
    let (timestamp, body) = (now_ms().to_string(), body());
    let signature = sign(KEY.as_bytes(), &timestamp, &body).to_uppercase();
    let response = server
        .post(&[("content-type", "application/json"), ("x-timestamp", &timestamp), ("x-signature", &signature)], &body);
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn signatures_that_are_not_64_hex_digits_are_malformed() {
    let server = TestServer::start();
    let good = sign(KEY.as_bytes(), "1", b"");
    for bad in [&good[..63], &format!("{good}a"), &format!("{}z", &good[..63]), "sha256=abc"] {
        let response = with_signature(&server, bad);
        assert_eq!((response.status, response.error().as_str()), (400, "malformed_signature"), "{bad}");
    }
}

#[test]
fn old_and_future_timestamps_at_and_around_both_bounds() {
    let server = TestServer::start();
    let at = |offset_ms: i64| {
        let response = server.deliver(KEY, &(now_ms() + offset_ms).to_string(), &body());
        (response.status, response.error())
    };
    // A second of margin each side of a bound keeps this independent of the machine's speed.
    assert_eq!(at(-119_000).0, 200);
    assert_eq!(at(-120_000), (401, "timestamp_too_old".into()));
    assert_eq!(at(-121_000), (401, "timestamp_too_old".into()));
    assert_eq!(at(29_000).0, 200);
    assert_eq!(at(31_000), (401, "timestamp_in_future".into()));
    assert_eq!(
        at(86_400_000),
        (401, "timestamp_in_future".into()),
        "the provider's receivers accept any future timestamp"
    );
}

#[test]
fn missing_duplicated_and_malformed_headers_are_400() {
    let server = TestServer::start();
    let (timestamp, body) = (now_ms().to_string(), body());
    let signature = sign(KEY.as_bytes(), &timestamp, &body);
    let json = ("content-type", "application/json");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[json, ("x-signature", &signature)], "missing_header"),
        (&[json, ("x-timestamp", &timestamp)], "missing_header"),
        (
            &[json, ("x-timestamp", &timestamp), ("x-timestamp", &timestamp), ("x-signature", &signature)],
            "duplicate_header",
        ),
        (
            &[json, ("x-timestamp", &timestamp), ("x-signature", &signature), ("X-Signature", &signature)],
            "duplicate_header",
        ),
        (&[json, ("x-timestamp", "12:00"), ("x-signature", &signature)], "malformed_timestamp"),
    ];
    for (headers, code) in cases {
        let response = server.post(headers, &body);
        assert_eq!((response.status, response.error().as_str()), (400, code), "{headers:?}");
    }
    assert!(server.recorder().calls().is_empty());
}

#[test]
fn a_content_type_that_is_not_json_is_415() {
    let server = TestServer::start();
    let (timestamp, body) = (now_ms().to_string(), body());
    let signature = sign(KEY.as_bytes(), &timestamp, &body);
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut headers = vec![("x-timestamp", timestamp.as_str()), ("x-signature", signature.as_str())];
        headers.extend(content_type.map(|c| ("content-type", c)));
        let response = server.post(&headers, &body);
        assert_eq!((response.status, response.error().as_str()), (415, "unsupported_media_type"), "{content_type:?}");
    }
    let response = server.post(
        &[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("x-timestamp", &timestamp),
            ("x-signature", &signature),
        ],
        &body,
    );
    assert_eq!(response.status, 200, "parameters and case are allowed: {response:?}");
}

#[test]
fn a_declared_body_over_the_limit_is_413_before_it_is_sent() {
    let server = TestServer::with(Options { body_limit: 1024, ..Options::default() });
    let timestamp = now_ms().to_string();
    let mut stream = server.connect();
    // Announce 10 MiB and send none of it: the answer must come without reading the body.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-timestamp: {timestamp}\r\nx-signature: {}\r\ncontent-length: {}\r\n\r\n",
        "0".repeat(64),
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    let response = read_response(&mut stream);
    assert_eq!((response.status, response.json()["error"].as_str().unwrap()), (413, "body_too_large"));
    assert!(response.head.to_ascii_lowercase().contains("connection: close"), "{}", response.head);
}

#[test]
fn a_chunked_body_over_the_limit_is_413_and_the_connection_is_closed() {
    let server = TestServer::with(Options { body_limit: 1024, ..Options::default() });
    let timestamp = now_ms().to_string();
    let mut stream = server.connect();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-timestamp: {timestamp}\r\nx-signature: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Two chunks of 600 bytes cross the 1024-byte limit; the stream is never terminated, so
    // only a server that stops reading can answer.
    for _ in 0..2 {
        stream.write_all(format!("258\r\n{}\r\n", "x".repeat(600)).as_bytes()).unwrap();
    }
    let response = read_response(&mut stream);
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.error(), "body_too_large");
}

#[test]
fn a_chunked_body_without_content_length_is_verified_over_its_bytes() {
    let server = TestServer::start();
    let timestamp = now_ms().to_string();
    let body = body();
    let signature = sign(KEY.as_bytes(), &timestamp, &body);
    let (a, b) = body.split_at(body.len() / 2);
    let mut request = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-timestamp: {timestamp}\r\nx-signature: {signature}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in [a, b] {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = server.raw(&request);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(server.recorder().calls().len(), 1);
}

#[test]
fn bodies_the_providers_own_receivers_would_reject_are_accepted_when_validly_signed() {
    // Node's and Python's reference receivers re-serialize the parsed JSON before checking;
    // all of these differ from their re-serialization, and all are validly signed.
    let server = TestServer::start();
    let event = WEBHOOKS[0].event;
    let creation = now_ms();
    let bodies = [
        format!("{{ \"event\" : \"{event}\" ,\n  \"creationDate\" : {creation} , \"data\" : {{ }} }}"),
        format!("{{\"data\":{{}},\"creationDate\":{creation},\"event\":\"{event}\"}}"),
        format!("{{\"event\":\"{event}\",\"creationDate\":{creation},\"data\":{{\"roomName\":\"caf\\u00e9\"}}}}"),
        format!("{{\"event\":\"{event}\",\"creationDate\":{creation},\"data\":{{\"roomName\":\"café Jürgen 会議\"}}}}"),
    ];
    for body in &bodies {
        let response = server.deliver(KEY, &now_ms().to_string(), body.as_bytes());
        assert_eq!(response.status, 200, "{body}: {response:?}");
    }
    assert_eq!(server.recorder().calls().len(), bodies.len());
}

#[test]
fn a_body_that_arrives_in_pieces_is_read_whole() {
    // The first piece comes with the headers (read without a timer), the rest later (read
    // under the time limit): the signature must cover both.
    let server = TestServer::with(Options { timeout: Duration::from_secs(5), ..Options::default() });
    let timestamp = now_ms().to_string();
    let body = body();
    let signature = sign(KEY.as_bytes(), &timestamp, &body);
    let request = post_request(
        "x",
        &[("content-type", "application/json"), ("x-timestamp", &timestamp), ("x-signature", &signature)],
        &body,
    );
    // The head and a third of the body at once, the rest in two later pieces.
    let (first, rest) = request.split_at(request.len() - body.len() * 2 / 3);
    let mut stream = server.connect();
    stream.write_all(first).unwrap();
    for piece in rest.chunks(rest.len() / 2 + 1) {
        std::thread::sleep(Duration::from_millis(150));
        stream.write_all(piece).unwrap();
    }
    let response = read_response(&mut stream);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(server.recorder().calls().len(), 1);
}

#[test]
fn a_client_that_stalls_mid_body_is_cut_off() {
    let server = TestServer::with(Options { timeout: Duration::from_millis(500), ..Options::default() });
    let timestamp = now_ms().to_string();
    let mut stream = server.connect();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-timestamp: {timestamp}\r\nx-signature: {}\r\ncontent-length: 100\r\n\r\n{{\"event\":",
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream);
    assert_eq!((response.status, response.error().as_str()), (408, "body_timeout"), "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "cut off by the timeout, not by the test's own");
}

#[test]
fn a_client_that_stalls_mid_head_is_cut_off() {
    let server = TestServer::with(Options { timeout: Duration::from_millis(500), ..Options::default() });
    let mut stream = server.connect();
    stream.write_all(format!("POST {PATH} HTTP/1.1\r\nhost: x\r\n").as_bytes()).unwrap();
    let mut rest = Vec::new();
    // actix answers 408 or just closes; either way the connection ends (the read reaches the
    // end of the stream instead of running into the test's own 20 s read timeout).
    let read = stream.read_to_end(&mut rest);
    let reset = matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(read.is_ok() || reset, "the connection was not closed: {read:?}");
    let text = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Property: any single-byte change to the body, the timestamp or the signature of a valid
/// delivery is refused (never 2xx), and never reaches the handler.
mod tampering {
    use super::*;
    use std::sync::OnceLock;

    fn server() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(TestServer::start)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_single_byte_change_is_refused(part in 0usize..3, position in any::<prop::sample::Index>(), replacement in any::<u8>()) {
            let server = server();
            let timestamp = now_ms().to_string();
            let mut body = body();
            let mut signature = sign(KEY.as_bytes(), &timestamp, &body).into_bytes();
            let mut timestamp = timestamp.into_bytes();
            let target = match part { 0 => &mut body, 1 => &mut timestamp, _ => &mut signature };
            let i = position.index(target.len());
            prop_assume!(target[i] != replacement);
            // Header values cannot hold CR/LF; such a change is not a delivery at all.
            prop_assume!(part == 0 || !matches!(replacement, b'\r' | b'\n'));
            // A case change of a hex digit is the same signature.
            prop_assume!(!(part == 2 && target[i].eq_ignore_ascii_case(&replacement)));
            target[i] = replacement;
            let before = server.recorder().calls().len();
            let response = server.post(
                &[
                    ("content-type", "application/json"),
                    ("x-timestamp", &String::from_utf8_lossy(&timestamp)),
                    ("x-signature", &String::from_utf8_lossy(&signature)),
                ],
                &body,
            );
            prop_assert!(!(200..300).contains(&response.status), "{:?}", response);
            prop_assert_eq!(server.recorder().calls().len(), before);
        }
    }
}
