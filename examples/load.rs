//! A load generator for webhook receivers: signs distinct, realistic deliveries and drives a
//! receiver over keep-alive connections for a bounded time.
//!
//! ```sh
//! cargo run --release --example load -- --url http://127.0.0.1:5080/webhook --key secret \
//!     --connections 64 --seconds 10 [--pid <receiver pid>] [--threads 1]
//! ```
//!
//! Every delivery is new (a counter goes into its recording and room ids), uses a webhook of the
//! spec in turn, carries the current time in milliseconds, has its members in the provider's
//! order (`event` first), and is signed as the provider signs:
//! a repeated delivery would take the receiver's shorter duplicate path and flatter the figure.
//! It works against any receiver URL. With `--pid`, it also reports the receiver's CPU time per
//! delivery (from /proc) and its resident memory.
//!
//! Output: one JSON object on stdout (deliveries/s, latency percentiles, non-2xx, CPU, memory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use meet_webhooks::WEBHOOKS;
use meet_webhooks_signature::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Drives a receiver with distinct, freshly signed deliveries and reports what it saw.
#[derive(clap::Parser)]
struct Args {
    /// The receiver's webhook URL (http, 127.0.0.1); repeat it for several replicas: the
    /// connections are spread over them in turn.
    #[arg(long = "url", default_value = "http://127.0.0.1:5080/webhook")]
    urls: Vec<String>,
    /// The key to sign with.
    #[arg(long, env = "MEET_WEBHOOKS_KEY", hide_env_values = true)]
    key: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: u16,
    /// How long to send, at most 3 hours (a 10-million-delivery run at 1,000/s).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    seconds: f64,
    /// The receiver's process (repeat it for several): their CPU time per delivery is reported
    /// too.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Runtime threads of the load tool itself.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// What to send: `provider` (what OpenVidu Meet sends: every recording and meeting event
    /// over 1,000 rooms, and a `testEvent` every 50th; events the spec lacks go to the
    /// fallback, those it has but the handler does not implement to their default method) or
    /// `typed` (the spec's webhooks in turn, each room its own).
    #[arg(long, value_enum, default_value_t = Mix::Provider)]
    mix: Mix,
    /// Deliveries a second in all, spread evenly over the connections: a paced load rather than
    /// a flood (each connection sends its next on schedule, or at once if it fell behind).
    #[arg(long)]
    rate: Option<f64>,
    /// `provider` mix only: a room's events a thousand deliveries apart (each delivery to the next
    /// room), as a provider's meetings send them, rather than one after another (a room's five
    /// events at once: each waits for the one before it to be handled).
    #[arg(long)]
    spread: bool,
    /// A burst instead of a run: this many connections opened at once, each sending one
    /// delivery, as a busy provider fires each event on a task of its own. Reports each
    /// attempt's time from its own start (connect) to its answer, and those over the provider's
    /// 5 s timeout.
    #[arg(long)]
    burst: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mix {
    Provider,
    Typed,
}

/// The provider's events, in the order a recording and a meeting produce them.
const PROVIDER_EVENTS: [&str; 5] =
    ["meetingStarted", "recordingStarted", "recordingUpdated", "recordingEnded", "meetingEnded"];
/// Rooms the provider mix spreads over.
const ROOMS: u64 = 1000;

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 10_800.0 => Ok(s),
        _ => Err(format!("{text}: a number of seconds in (0, 10800]")),
    }
}

/// Each body the load sends, serialized once with markers where the per-delivery values go,
/// so that a delivery costs a few copies, not a JSON round trip.
struct Templates {
    mix: Mix,
    /// A room's events spread over the run (`--spread`).
    spread: bool,
    /// By the event they are for.
    bodies: Vec<(&'static str, Vec<Part>)>,
}

enum Part {
    Text(String),
    Value(Slot),
}

/// The per-delivery values.
#[derive(Clone, Copy)]
enum Slot {
    CreationDate,
    Room,
    Recording,
    /// The delivery's number: what makes a meeting or test event distinct from the last one of
    /// its room (the room's creation date, the test message).
    Unique,
}

const MARKERS: [(&str, Slot); 4] = [
    ("@@CREATION@@", Slot::CreationDate),
    ("@@ROOM@@", Slot::Room),
    ("@@RECORDING@@", Slot::Recording),
    ("@@UNIQUE@@", Slot::Unique),
];

impl Templates {
    fn new(mix: Mix) -> Self {
        let bodies = match mix {
            Mix::Typed => WEBHOOKS.iter().map(|w| (w.event, Self::parts(w.example))).collect(),
            // The spec's example where it has the event, else what the provider sends for it.
            Mix::Provider => PROVIDER_EVENTS
                .iter()
                .chain(&["testEvent"])
                .map(|&event| {
                    let example = WEBHOOKS.iter().find(|w| w.event == event).map_or_else(
                        || match event {
                            "testEvent" => serde_json::json!({"event": event, "creationDate": 0,
                                "data": {"message": "Test webhook from OpenVidu Meet"}})
                            .to_string(),
                            e if e.starts_with("meeting") => serde_json::json!({"event": e, "creationDate": 0,
                                "data": {"roomId": "r", "roomName": "room", "creationDate": 1796040000000u64,
                                         "status": "active_meeting", "config": {"chat": {"enabled": true}}}})
                            .to_string(),
                            e => serde_json::json!({"event": e, "creationDate": 0,
                                "data": {"recordingId": "x", "roomId": "r", "roomName": "room", "status": "active",
                                         "filename": "room.mp4", "startDate": 1796048768000u64}})
                            .to_string(),
                        },
                        |w| w.example.to_owned(),
                    );
                    (event, Self::parts(&example))
                })
                .collect(),
        };
        Self { mix, bodies, spread: false }
    }

    fn parts(example: &str) -> Vec<Part> {
        let mut body: serde_json::Value = serde_json::from_str(example).expect("spec examples are JSON");
        body["creationDate"] = "@@CREATION@@".into();
        if let Some(data) = body.get_mut("data").and_then(|d| d.as_object_mut()) {
            if data.contains_key("message") {
                data.insert("message".into(), "test @@UNIQUE@@".into());
            } else {
                data.insert("roomId".into(), "@@ROOM@@".into());
            }
            if data.contains_key("recordingId") {
                data.insert("recordingId".into(), "@@RECORDING@@".into());
            } else if data.get("creationDate").is_some_and(serde_json::Value::is_number) {
                data.insert("creationDate".into(), "@@UNIQUE@@".into());
            }
        }
        // The provider's member order: `event` first, then the rest (the receiver must not
        // depend on it, but its fast path for that order is what production traffic takes).
        let object = body.as_object_mut().expect("spec examples are objects");
        let event = object.remove("event").unwrap_or_default();
        let rest = serde_json::Value::Object(std::mem::take(object)).to_string();
        let text = match rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some("") | None => format!("{{\"event\":{event}}}"),
            Some(members) => format!("{{\"event\":{event},{members}}}"),
        };
        // The dates are numbers: drop the quotes the marker strings got.
        let mut text = text
            .replace("\"@@CREATION@@\"", "@@CREATION@@")
            .replace("\"@@UNIQUE@@\"", "@@UNIQUE@@")
            .replace("test @@UNIQUE@@", "Test webhook @@UNIQUE@@");
        let mut parts = Vec::new();
        while let Some((at, marker, slot)) =
            MARKERS.iter().filter_map(|(m, slot)| text.find(m).map(|at| (at, *m, *slot))).min_by_key(|(at, ..)| *at)
        {
            parts.push(Part::Text(text[..at].to_owned()));
            parts.push(Part::Value(slot));
            text = text[at + marker.len()..].to_owned();
        }
        parts.push(Part::Text(text));
        parts
    }

    /// Delivery number `n`: an event in turn (`typed`: a room of its own; `provider`: the five
    /// events of a room's meeting in order, over 1,000 rooms, a `testEvent` every 50th), a
    /// recording no other delivery has.
    fn body(&self, n: u64, now_ms: u64, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let (index, room) = match self.mix {
            Mix::Typed => ((n % self.bodies.len() as u64) as usize, n),
            // A room's meeting and recording, five events in order, then the next room's.
            Mix::Provider if n % 50 == 49 => (PROVIDER_EVENTS.len(), 0),
            Mix::Provider if self.spread => {
                (((n / ROOMS) % PROVIDER_EVENTS.len() as u64) as usize, n % ROOMS + n / (ROOMS * 5) * ROOMS)
            }
            Mix::Provider => ((n % PROVIDER_EVENTS.len() as u64) as usize, (n / PROVIDER_EVENTS.len() as u64) % ROOMS),
        };
        for part in &self.bodies[index].1 {
            let _ = match part {
                Part::Text(text) => std::io::Write::write_all(out, text.as_bytes()),
                Part::Value(Slot::CreationDate) => write!(out, "{now_ms}"),
                Part::Value(Slot::Room) => write!(out, "room-{room}"),
                Part::Value(Slot::Recording) => write!(out, "room-{room}--EG_{n:x}--XX445"),
                Part::Value(Slot::Unique) => write!(out, "{}", 1_796_040_000_000u64 + n),
            };
        }
    }
}

impl Templates {
    /// Into `request`: delivery `n` timestamped now and signed with `key`, after `request_line`
    /// (its request line and fixed headers); `body` is scratch space.
    fn request(&self, n: u64, key: &[u8], request_line: &str, body: &mut Vec<u8>, request: &mut Vec<u8>) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        body.clear();
        self.body(n, now_ms, body);
        let timestamp = now_ms.to_string();
        let signature = sign(key, &timestamp, body);
        request.clear();
        request.extend_from_slice(request_line.as_bytes());
        request.extend_from_slice(
            format!("x-timestamp: {timestamp}\r\nx-signature: {signature}\r\ncontent-length: {}\r\n\r\n", body.len())
                .as_bytes(),
        );
        request.extend_from_slice(body);
    }
}

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let targets: Vec<(SocketAddr, Arc<String>)> = args
        .urls
        .iter()
        .map(|url| {
            let (addr, host, path) = split_url(url).unwrap_or_else(|e| {
                eprintln!("error: --url {url}: {e}");
                std::process::exit(2)
            });
            (addr, Arc::new(format!("POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n")))
        })
        .collect();
    let runtime = if args.threads == 1 {
        // One thread: no wake-ups across threads.
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
            .unwrap()
    };
    let templates = Arc::new(Templates { spread: args.spread, ..Templates::new(args.mix) });
    let totals = Arc::new(Totals::default());
    let counter = Arc::new(AtomicU64::new(0));
    let key = Arc::new(args.key.clone().into_bytes());
    let receivers_cpu = || args.pids.iter().map(|&pid| cpu_ticks(pid)).sum::<u64>();
    let cpu_before = receivers_cpu();
    let own_cpu_before = cpu_ticks(std::process::id());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    // Each connection's interval between sends, when paced.
    let interval = args.rate.map(|rate| Duration::from_secs_f64(f64::from(args.connections) / rate));
    if let Some(size) = args.burst {
        let report = runtime.block_on(burst(size, targets, templates, key));
        println!("{report}");
        return;
    }
    let histograms = runtime.block_on(async {
        let tasks: Vec<_> = (0..usize::from(args.connections))
            .map(|i| {
                let (addr, request_line) = targets[i % targets.len()].clone();
                let (templates, totals, counter, key) =
                    (templates.clone(), totals.clone(), counter.clone(), key.clone());
                // Paced connections start a share of the interval apart, not all at once.
                let pace = interval
                    .map(|every| Pace { next: started + every.mul_f64(i as f64 / f64::from(args.connections)), every });
                tokio::spawn(async move {
                    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    let mut pace = pace;
                    while Instant::now() < deadline {
                        if let Err(e) = connection(
                            addr,
                            deadline,
                            &mut pace,
                            &templates,
                            &totals,
                            &counter,
                            &key,
                            &request_line,
                            &mut histogram,
                        )
                        .await
                        {
                            totals.errors.fetch_add(1, Ordering::Relaxed);
                            if totals.errors.load(Ordering::Relaxed) < 5 {
                                eprintln!("connection error: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    histogram
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for task in tasks {
            all.add(task.await.unwrap()).unwrap();
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok = totals.ok.load(Ordering::Relaxed);
    let non_2xx = totals.non_2xx.load(Ordering::Relaxed);
    let delivered = ok + non_2xx;
    let mut report = serde_json::json!({
        "url": args.urls.join(" "),
        "mix": match args.mix { Mix::Provider => "provider", Mix::Typed => "typed" },
        "connections": args.connections,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "deliveries": delivered,
        "deliveries_per_second": (delivered as f64 / elapsed).round(),
        "rate": args.rate,
        "non_2xx": non_2xx,
        "connection_errors": totals.errors.load(Ordering::Relaxed),
        "latency_us": {
            "p50": histograms.value_at_quantile(0.50),
            "p99": histograms.value_at_quantile(0.99),
            "p99.9": histograms.value_at_quantile(0.999),
            "max": histograms.max(),
        },
    });
    let per_second = clock_ticks_per_second();
    let us_per_delivery = |ticks: u64| {
        let us = ticks as f64 / per_second * 1e6 / delivered.max(1) as f64;
        (us * 10.0).round() / 10.0
    };
    // What the load itself costs: on shared cores it is taken from the receiver.
    report["load_cpu_us_per_delivery"] = us_per_delivery(cpu_ticks(std::process::id()) - own_cpu_before).into();
    if !args.pids.is_empty() {
        let ticks = receivers_cpu() - cpu_before;
        report["receiver_cpu_us_per_delivery"] = us_per_delivery(ticks).into();
        report["receiver_cpu_cores"] = (((ticks as f64 / per_second / elapsed) * 100.0).round() / 100.0).into();
        let memory: Vec<(u64, u64)> = args.pids.iter().filter_map(|&pid| memory_kib(pid)).collect();
        if !memory.is_empty() {
            report["receiver_rss_mib"] = (memory.iter().map(|m| m.0).sum::<u64>() / 1024).into();
            report["receiver_peak_rss_mib"] = (memory.iter().map(|m| m.1).sum::<u64>() / 1024).into();
        }
    }
    println!("{report}");
}

/// `size` connections at once, one delivery each; the report.
async fn burst(
    size: u32,
    targets: Vec<(SocketAddr, Arc<String>)>,
    templates: Arc<Templates>,
    key: Arc<Vec<u8>>,
) -> serde_json::Value {
    let (open, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..size)
        .map(|n| {
            let (addr, request_line) = targets[n as usize % targets.len()].clone();
            let (templates, key, mut gate) = (templates.clone(), key.clone(), gate.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                templates.request(u64::from(n), &key, &request_line, &mut Vec::new(), &mut request);
                let _ = gate.wait_for(|open| *open).await;
                let started = Instant::now();
                let answer = async {
                    let mut stream = TcpStream::connect(addr).await?;
                    stream.write_all(&request).await?;
                    read_response(&mut stream, &mut Vec::new()).await
                };
                let status = tokio::time::timeout(Duration::from_secs(30), answer).await;
                (started.elapsed(), matches!(status, Ok(Ok((200..=299, _)))))
            })
        })
        .collect();
    // Every request made, then all at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = open.send(true);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut ok, mut over) = (0u64, 0u64);
    for task in tasks {
        let (took, answered) = task.await.unwrap();
        histogram.saturating_record(took.as_micros() as u64);
        ok += u64::from(answered);
        over += u64::from(took > Duration::from_secs(5));
    }
    serde_json::json!({
        "burst": size,
        "answered_2xx": ok,
        "not_answered_2xx": u64::from(size) - ok,
        "over_5_s": over,
        "latency_ms": {
            "p50": histogram.value_at_quantile(0.5) as f64 / 1000.0,
            "p99": histogram.value_at_quantile(0.99) as f64 / 1000.0,
            "p100": histogram.max() as f64 / 1000.0,
        },
    })
}

/// When a paced connection sends its next delivery.
struct Pace {
    next: Instant,
    every: Duration,
}

/// One keep-alive connection, sending deliveries until the deadline (on schedule when paced).
#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    deadline: Instant,
    pace: &mut Option<Pace>,
    templates: &Templates,
    totals: &Totals,
    counter: &AtomicU64,
    key: &[u8],
    request_line: &str,
    histogram: &mut Histogram<u64>,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(2048);
    let mut body = Vec::with_capacity(2048);
    let mut buffer = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        if let Some(pace) = pace.as_mut() {
            if pace.next >= deadline {
                return Ok(());
            }
            tokio::time::sleep_until(pace.next.into()).await;
            pace.next += pace.every;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed);
        templates.request(n, key, request_line, &mut body, &mut request);
        let sent = Instant::now();
        stream.write_all(&request).await?;
        let (status, close) = read_response(&mut stream, &mut buffer).await?;
        histogram.saturating_record(sent.elapsed().as_micros() as u64);
        if (200..300).contains(&status) {
            totals.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            totals.non_2xx.fetch_add(1, Ordering::Relaxed);
        }
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one response; returns its status and whether the server closes the connection.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) =
            response.parse(buffer).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
        {
            let status = response.code.unwrap_or(0);
            let header =
                |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let length: usize =
                header("content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok()).unwrap_or(0);
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            let total = head + length;
            while buffer.len() < total {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..total);
            return Ok((status, close));
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn split_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    Ok((addr, host.to_owned(), path))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value =
        |name: &str| status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<u64>().ok();
    Some((value("VmRSS:")?, value("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typed_delivery_is_new_typed_and_in_the_providers_order() {
        let templates = Templates::new(Mix::Typed);
        let mut seen = std::collections::HashSet::new();
        for n in 0..(10 * WEBHOOKS.len() as u64) {
            let mut body = Vec::new();
            templates.body(n, 1_795_769_705_355, &mut body);
            assert!(body.starts_with(b"{\"event\":"), "{}", String::from_utf8_lossy(&body));
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let event = json["event"].as_str().unwrap();
            assert_eq!(event, WEBHOOKS[(n % WEBHOOKS.len() as u64) as usize].event, "the webhooks in turn");
            assert_eq!(json["creationDate"], 1_795_769_705_355u64);
            assert!(meet_webhooks::Event::parse(event, &body).is_ok(), "typed: {json}");
            assert!(seen.insert(body), "delivery {n} repeats an earlier one");
        }
    }

    #[test]
    fn spread_rooms_get_their_five_events_in_order_a_thousand_deliveries_apart() {
        let templates = Templates { spread: true, ..Templates::new(Mix::Provider) };
        let mut by_room = std::collections::HashMap::<String, Vec<(u64, String)>>::new();
        for n in 0..10_000 {
            let mut body = Vec::new();
            templates.body(n, 1_795_769_705_355, &mut body);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if let Some(room) = json["data"]["roomId"].as_str() {
                by_room.entry(room.to_owned()).or_default().push((n, json["event"].as_str().unwrap().to_owned()));
            }
        }
        assert!(by_room.len() >= 1900, "new rooms as the meetings go on: {}", by_room.len());
        for (room, events) in by_room {
            let names: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
            assert!(PROVIDER_EVENTS.starts_with(&names), "{room}: {names:?}");
            assert!(events.windows(2).all(|w| w[1].0 - w[0].0 == ROOMS), "{room}: {events:?}");
        }
    }

    #[test]
    fn the_provider_mix_sends_every_event_and_test_events_over_a_thousand_rooms_never_twice() {
        let templates = Templates::new(Mix::Provider);
        let mut seen = std::collections::HashSet::new();
        let mut events = std::collections::BTreeMap::<String, u64>::new();
        let mut rooms = std::collections::HashSet::new();
        for n in 0..5000 {
            let mut body = Vec::new();
            templates.body(n, 1_795_769_705_355, &mut body);
            assert!(body.starts_with(b"{\"event\":"), "{}", String::from_utf8_lossy(&body));
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            *events.entry(json["event"].as_str().unwrap().to_owned()).or_default() += 1;
            rooms.insert(json["data"]["roomId"].as_str().map(str::to_owned));
            assert!(seen.insert(body), "delivery {n} repeats an earlier one");
        }
        assert_eq!(events["testEvent"], 100);
        for event in PROVIDER_EVENTS {
            assert!(events[event] >= 900, "{event}: {events:?}");
        }
        assert_eq!(rooms.len(), 1001, "1,000 rooms, and the test event's none");
        // What the receiver will make of them: typed where the spec has the event.
        for (event, _) in &templates.bodies {
            let mut body = Vec::new();
            let n = (0..60).find(|n| {
                body.clear();
                templates.body(*n, 1, &mut body);
                body.starts_with(format!("{{\"event\":\"{event}\"").as_bytes())
            });
            assert!(n.is_some(), "{event} is sent");
            let typed = meet_webhooks::Event::parse(event, &body).is_ok();
            assert_eq!(
                typed,
                WEBHOOKS.iter().any(|w| w.event == *event),
                "{event}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
