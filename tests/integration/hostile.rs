//! Hostile and careless clients: slow heads on kept-alive connections, floods of large bodies,
//! `Expect: 100-continue`, log injection, and raw bytes of every shape (a bounded fuzz run).
//! Each test is bounded in count and time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meet_webhooks_runtime::verify::sign;

use crate::common::{KEY, Options, TestServer, now_ms};

/// Reads one answer off a kept-alive connection: its head and a `content-length` body.
fn read_one(stream: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-head: {:?}", String::from_utf8_lossy(&bytes));
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), String::from_utf8_lossy(&body).into_owned())
}

/// Reads until the server closes the connection (or `within` passes): what it sent, and
/// whether it closed.
fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = Instant::now() + within;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&bytes).into_owned(), true),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&bytes).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&bytes).into_owned(), false)
}

#[test]
fn a_kept_alive_connection_that_trickles_its_next_head_is_cut_off_within_the_timeout() {
    let timeout = Duration::from_millis(800);
    let server = TestServer::with(Options { timeout, ..Options::default() });
    let mut stream = server.connect();
    // Requests sent at a normal pace keep the connection, one after another.
    for _ in 0..3 {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert_eq!(read_one(&mut stream).0, 200);
    }
    // The next head, one byte every 50 ms: it would take 1.9 s, and never end.
    let started = Instant::now();
    let head = b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-padding: aaaa\r\n";
    let mut answer = String::new();
    let mut closed = false;
    for byte in head.iter().cycle().take(200) {
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let (got, gone) = read_to_close(&mut stream, Duration::from_millis(50));
        answer.push_str(&got);
        if gone {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "the connection was still open after {took:?}");
    assert!(took < timeout + Duration::from_millis(1500), "cut off after {took:?}, the timeout is {timeout:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""error":"head_timeout""#), "{answer:?}");

    // The server still serves.
    let mut fresh = server.connect();
    fresh.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut fresh).0, 200);
}

#[test]
fn a_slow_handler_after_a_complete_head_is_not_cut_off() {
    // Without the inbox the answer waits for the handler; no head timer may run meanwhile.
    let timeout = Duration::from_millis(300);
    let server = TestServer::with(Options { timeout, ..Options::default() });
    let recorder = server.recorder();
    recorder.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut stream = server.connect();
    for n in 0..2 {
        let mut body = crate::common::example(&meet_webhooks::WEBHOOKS[0]);
        body["data"]["roomId"] = format!("slow-{n}").into();
        let body = body.to_string();
        let timestamp = now_ms().to_string();
        let signature = sign(KEY.as_bytes(), &timestamp, body.as_bytes());
        std::thread::scope(|scope| {
            // The handler finishes 700 ms after the request: more than twice the timeout.
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(700));
                recorder.release.add_permits(1);
            });
            write!(
                stream,
                "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 x-timestamp: {timestamp}\r\nx-signature: {signature}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let (status, answer) = read_one(&mut stream);
            assert_eq!(status, 200, "{answer}");
        });
    }
    assert_eq!(recorder.calls().len(), 2);
}

#[test]
fn expect_100_continue_is_refused_before_the_body_when_the_body_would_be() {
    let server = TestServer::with(Options { body_limit: 64 * 1024, ..Options::default() });
    let timestamp = now_ms().to_string();
    let signature = sign(KEY.as_bytes(), &timestamp, b"{}");
    let head = |content_type: &str, length: usize| {
        format!(
            "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n\
             expect: 100-continue\r\nx-timestamp: {timestamp}\r\nx-signature: {signature}\r\n\r\n"
        )
    };
    for (content_type, length, status, code) in [
        ("application/json", 10_000_000, "413", "body_too_large"),
        ("text/plain", 100, "415", "unsupported_media_type"),
    ] {
        let mut stream = server.connect();
        stream.write_all(head(content_type, length).as_bytes()).unwrap();
        let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5));
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "no 100 Continue first: {answer:?}");
        assert!(answer.contains(code), "{answer:?}");
        assert!(closed, "the body was never invited, so the connection ends");
    }

    // A body that can be taken is invited, then verified as any other.
    let body = crate::common::example(&meet_webhooks::WEBHOOKS[0]).to_string();
    let timestamp = now_ms().to_string();
    let signature = sign(KEY.as_bytes(), &timestamp, body.as_bytes());
    let mut stream = server.connect();
    write!(
        stream,
        "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         expect: 100-continue\r\nx-timestamp: {timestamp}\r\nx-signature: {signature}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_one(&mut stream).0, 200);
}

#[test]
fn bodies_in_flight_beyond_the_memory_set_aside_get_503_and_the_rest_are_served() {
    // 256 KiB for bodies in flight; each client declares 64 KiB and sends 40 KiB of it, then
    // waits: four fit, the others are refused, and the memory does not grow with them.
    let server = TestServer::with(Options {
        body_limit: 64 * 1024,
        body_memory: 256 * 1024,
        timeout: Duration::from_secs(10),
        ..Options::default()
    });
    let timestamp = now_ms().to_string();
    let signature = sign(KEY.as_bytes(), &timestamp, b"x");
    let mut streams = Vec::new();
    for _ in 0..12 {
        let mut stream = server.connect();
        write!(
            stream,
            "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 65536\r\n\
             x-timestamp: {timestamp}\r\nx-signature: {signature}\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&vec![b' '; 40 * 1024]).unwrap();
        streams.push(stream);
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut refused = 0;
    let mut waiting = 0;
    for stream in &mut streams {
        let (answer, closed) = read_to_close(stream, Duration::from_millis(300));
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains(r#""error":"overloaded""#) && answer.contains("retry-after: 1"), "{answer}");
            assert!(closed, "{answer}");
            refused += 1;
        } else {
            assert_eq!(answer, "", "still reading its body");
            waiting += 1;
        }
    }
    assert!(waiting >= 4, "bodies that fit are read on: {waiting} waiting, {refused} refused");
    assert!(refused >= 4, "the rest are refused: {waiting} waiting, {refused} refused");
    // The memory comes back: once the waiting ones are gone, a delivery is taken again.
    drop(streams);
    crate::common::eventually("the memory of closed bodies is let go", || {
        let body = crate::common::example(&meet_webhooks::WEBHOOKS[0]).to_string();
        server.deliver(KEY, &now_ms().to_string(), body.as_bytes()).status == 200
    });
}

/// The head of a webhook delivery declaring a body of `length` bytes, signed with a signature
/// that verifies for no key.
fn unsigned_head(length: usize) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\
         x-timestamp: {}\r\nx-signature: {}\r\n\r\n",
        now_ms(),
        "0".repeat(64)
    )
}

#[test]
fn the_rest_of_a_refused_body_is_not_read() {
    // One client holds the memory set aside for bodies; the next is refused with 503 after
    // 128 KiB of the megabyte it declared.
    let limit = meet_webhooks_runtime::defaults::BODY_LIMIT;
    let server = TestServer::with(Options { body_limit: limit, body_memory: limit, ..Options::default() });
    let mut holder = server.connect();
    holder.write_all(unsigned_head(limit - 1).as_bytes()).unwrap();
    holder.write_all(&vec![b' '; limit - 64 * 1024]).unwrap();
    let mut refused = server.connect();
    refused.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // Time for the receiver to read the first body into the memory it sets aside.
    std::thread::sleep(Duration::from_millis(300));
    refused.write_all(unsigned_head(limit - 1).as_bytes()).unwrap();
    refused.write_all(&[b' '; 128 * 1024]).unwrap();
    let (status, answer) = read_one(&mut refused);
    assert_eq!(status, 503, "{answer}");
    // The client goes on sending the rest of its body, a piece every 50 ms: the receiver closed
    // the connection with its answer, and the second piece already finds it closed. (Before,
    // actix went on reading, and threw away, whatever came for another second.)
    let piece = [b' '; 16 * 1024];
    let mut sent = 0;
    let error = loop {
        std::thread::sleep(Duration::from_millis(50));
        match refused.write(&piece) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(sent < 4 * piece.len(), "the receiver still reads the refused body: {sent} bytes more");
    };
    assert!(
        matches!(error.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
        "{error} after {sent} more bytes"
    );
    drop(holder);
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn many_large_unsigned_bodies_do_not_grow_the_process_past_the_memory_set_aside() {
    // 400 clients each declare a body one byte under the limit and send 1 MiB of it; 8 MiB is
    // set aside. Without the bound, the receiver held 400 MiB (the issue measured 17 → 910 MB
    // with 1,000).
    const CLIENTS: usize = 400;
    let service = crate::binary::Service::start(&[
        "--body-memory",
        "8388608",
        "--max-connections",
        "2000",
        "--request-timeout",
        "20",
    ]);
    assert_eq!(service.get("/healthz").status, 200);
    let before = rss_kib(service.child.id());
    let limit = meet_webhooks_runtime::defaults::BODY_LIMIT;
    let chunk = vec![b' '; 64 * 1024];
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(service.addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let head = unsigned_head(limit - 1);
        if stream.write_all(head.as_bytes()).is_err() {
            refused += 1;
            continue;
        }
        for _ in 0..(limit - 1) / chunk.len() {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        streams.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(service.child.id());
    for stream in &mut streams {
        let (answer, _) = read_to_close(stream, Duration::from_millis(5));
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
        }
    }
    eprintln!(
        "{CLIENTS} clients with ~1 MiB bodies: RSS {} → {} MiB, {refused} refused with 503",
        before / 1024,
        during / 1024
    );
    assert!(refused > CLIENTS / 2, "most are refused: {refused}");
    // The 8 MiB set aside, plus what actix and the allocator keep per connection (measured:
    // about 200 KiB): far from the 420 MiB this took without the bound.
    let allowance = 8 * 1024 + CLIENTS as u64 * 256;
    assert!(during < before + allowance, "RSS grew from {before} KiB to {during} KiB");
    drop(streams);
}

#[test]
fn an_injected_event_name_stays_one_line_in_the_log_and_in_inbox_list_and_values_stay_out() {
    let data = tempfile::tempdir().unwrap();
    let service = crate::binary::Service::start_in(data.path(), &[]);
    let forged = "[2026-01-01T00:00:00Z INFO  meet_webhooks] forged";
    let event = format!("recordingStarted\n{forged} \u{1b}[31mred");
    let body = serde_json::json!({"event": event, "creationDate": now_ms(), "data": {"roomId": "r"}}).to_string();
    assert_eq!(crate::inbox::try_deliver(service.addr, &now_ms().to_string(), &body), Some(200));
    // A typed webhook with a field of the wrong type: the reason names the field, not the value.
    let mut mistyped = crate::common::example(&meet_webhooks::WEBHOOKS[0]);
    mistyped["creationDate"] = "alice@example.com".into();
    let mistyped = mistyped.to_string();
    assert_eq!(crate::inbox::try_deliver(service.addr, &now_ms().to_string(), &mistyped), Some(200));

    // Both are handled (logged), then the log is read up to the second's handling.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && lines.iter().filter(|l: &&String| l.contains("delivery ")).count() < 2 {
        if let Ok(line) = service.log.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    lines.extend(service.log.try_iter());
    let log = lines.join("\n");
    assert!(lines.iter().all(|l| l.starts_with('[')), "every line is a log record: {log}");
    assert!(!lines.iter().any(|l| l.starts_with(forged)), "no forged line: {log}");
    assert!(!log.contains('\u{1b}'), "no escape sequence reaches the terminal: {log:?}");
    assert!(log.contains(r"recordingStarted\n[2026-01-01T00:00:00Z"), "the name is shown, escaped: {log}");
    assert!(log.contains("`creationDate`"), "the reason names the field: {log}");
    assert!(!log.contains("alice@example.com"), "the provider's values stay out of the log: {log}");

    let (code, stdout, _) = crate::binary::run(&["inbox", "--data-dir", data.path().to_str().unwrap(), "list"], b"");
    assert_eq!(code, 0);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(rows.len(), 1, "one row, one line: {stdout}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains("alice@example.com"), "{stdout:?}");
    // A header, when each came, and why each went to the fallback.
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.trim_start().starts_with("ID") && header.contains("RECEIVED (UTC)") && header.contains("NOTE"),
        "{stdout}"
    );
    assert!(rows[0].contains("the spec has no webhook of this name"), "{stdout}");
    // Columns line up whatever the widths: the forged event name is longer than any header.
    let note_at = header.find("NOTE").unwrap();
    for line in stdout.lines().skip(1) {
        let chars: Vec<char> = line.chars().collect();
        assert!(chars[note_at - 2..note_at] == [' ', ' '] && chars[note_at] != ' ', "NOTE at {note_at}: {stdout}");
    }
    let mistyped = lines.find(|l| l.contains("creationDate")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(mistyped.contains("does not fit the spec at `creationDate`"), "{stdout}");
    let year = jiff::Timestamp::now().strftime("%Y-").to_string();
    assert!(mistyped.contains(&year), "a readable time: {stdout}");
}

#[test]
fn a_key_flag_is_one_key_even_with_a_comma_and_the_variable_is_a_list() {
    let body = crate::common::example(&meet_webhooks::WEBHOOKS[0]).to_string();
    let deliver = |service: &crate::binary::Service, key: &str| crate::common::signed_status(service.addr, key, &body);
    let flag = crate::binary::Service::start(&["--key", "a,b"]);
    assert_eq!(deliver(&flag, "b"), 401, "`b` alone is no key of --key a,b");
    assert_eq!(deliver(&flag, "a,b"), 200);
    let variable = crate::binary::Service::start_with_env(&[], &[("MEET_WEBHOOKS_KEY", "c,d")]);
    assert_eq!(deliver(&variable, "d"), 200, "the variable lists keys");
    assert_eq!(deliver(&variable, "c"), 200);
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let server = TestServer::with(Options { max_connections: 4, ..Options::default() });
    let mut held: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
    // Make sure all four are accepted (each answers).
    for stream in &mut held {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert_eq!(read_one(stream).0, 200);
    }
    let mut fifth = server.connect();
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let (answer, _) = read_to_close(&mut fifth, Duration::from_millis(700));
    assert_eq!(answer, "", "the fifth waits while four are open");
    held.pop();
    let (answer, _) = read_to_close(&mut fifth, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "then it is served: {answer:?}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive() {
    let keep_alive = Duration::from_millis(400);
    let server = TestServer::with(Options { keep_alive, ..Options::default() });
    let mut stream = server.connect();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut stream).0, 200);
    let idle = Instant::now();
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(5));
    assert!(closed && answer.is_empty(), "closed without a word: {answer:?}");
    let after = idle.elapsed();
    assert!(after < keep_alive + Duration::from_secs(2), "closed after {after:?}");
}
