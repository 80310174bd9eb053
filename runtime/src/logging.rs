//! Logging: env_logger's filter (`RUST_LOG`, default `info`) and line format, with the lines
//! batched so that a log line does not cost a system call.
//!
//! env_logger writes each record with its own `write` to stderr: one syscall per delivery on
//! the request path. Here a record is formatted in a
//! reused per-thread `String` and appended to a shared buffer (one short lock, no syscall), and
//! a background thread writes the buffer out every 50 ms: lines appear at most that late, in
//! order. If stderr stops taking output and the buffer reaches 4 MiB, the logging thread writes
//! it out itself (so memory stays bounded and nothing is dropped). [`flush`] writes everything
//! out before exit; a SIGKILL can lose the last 50 ms of lines.
//!
//! Nothing here runs until [`init`] installs the logger: a binary's call, once.
//!
//! The line is env_logger's with milliseconds (`format_timestamp_millis`),
//! `[2026-11-27T09:15:22.123Z INFO  target] message`, so that a log pipeline can order and time
//! lines of the same second; the date and time up to the second are formatted once a second per
//! thread, not once a line. env_logger's own formatter
//! costs several times more a line: it formats through an `io::Write` adapter piece by piece,
//! wraps it again to indent multi-line messages, and takes a second lock to reach its target
//! (`bench/results/figures-in-code.md`, batched-log).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often buffered lines are written.
pub(crate) const INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes beyond which the logging thread writes them itself.
pub(crate) const MAX_BUFFER: usize = 4 * 1024 * 1024;
/// What the buffers start with (and what a flush keeps between rounds).
const INITIAL_BUFFER: usize = 256 * 1024;

/// Lines logged and not yet written.
static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
/// The buffer being written out: swapped with [`BUFFER`], so both keep their capacity.
static WRITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn buffer() -> &'static Mutex<Vec<u8>> {
    BUFFER.get_or_init(|| Mutex::new(Vec::with_capacity(INITIAL_BUFFER)))
}

/// env_logger decides which records pass; this writes them.
struct Batched {
    filter: env_logger::Logger,
}

impl log::Log for Batched {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.filter.matches(record) {
            format_line(record, append);
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// env_logger's: `[2026-11-27T09:15:22Z INFO  target] message`.
    #[default]
    Text,
    /// One JSON object a line, for log pipelines:
    /// `{"time":"2026-11-27T09:15:22Z","level":"INFO","target":"…","message":"…"}`.
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Installs the process's global logger: `RUST_LOG` filters (default `info`; actix-server's
/// start-up chatter only from `warn`, unless `RUST_LOG` names it), lines in `format`. For a
/// binary, once, first thing; the library never calls it.
pub fn init(format: Format) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info).filter_module("actix_server", log::LevelFilter::Warn);
    if let Ok(directives) = std::env::var("RUST_LOG") {
        builder.parse_filters(&directives);
    }
    let filter = builder.build();
    let max_level = filter.filter();
    let _ = FORMAT.set(format);
    if log::set_boxed_logger(Box::new(Batched { filter })).is_err() {
        return; // a logger is installed already (an embedding application's)
    }
    log::set_max_level(max_level);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(|| {
            loop {
                std::thread::sleep(INTERVAL);
                flush();
            }
        })
        .expect("spawning the log writer");
}

/// Formats `record` as one line, in a per-thread buffer, and hands it to `write`.
fn format_line(record: &log::Record<'_>, write: impl FnOnce(&[u8])) {
    struct Line {
        /// The second `stamp` shows.
        second: i64,
        /// `2026-11-27T09:15:22`
        stamp: String,
        text: String,
    }
    thread_local! {
        static LINE: RefCell<Line> =
            const { RefCell::new(Line { second: i64::MIN, stamp: String::new(), text: String::new() }) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, millis) = (now.as_secs() as i64, now.subsec_millis());
    LINE.with_borrow_mut(|line| {
        if line.second != second {
            line.second = second;
            line.stamp = jiff::Timestamp::from_second(second)
                .map_or_else(|_| second.to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string());
        }
        line.text.clear();
        if FORMAT.get() == Some(&Format::Json) {
            let message = record.args().to_string();
            let _ = writeln!(
                line.text,
                r#"{{"time":"{}.{millis:03}Z","level":"{}","target":{},"message":{}}}"#,
                line.stamp,
                record.level(),
                serde_json::Value::from(record.target()),
                serde_json::Value::from(message)
            );
            write(line.text.as_bytes());
            return;
        }
        // Writing to a String cannot fail.
        let _ = write!(line.text, "[{}.{millis:03}Z {:<5} {}] ", line.stamp, record.level(), record.target());
        let start = line.text.len();
        let _ = write!(line.text, "{}", record.args());
        // One record, one line: a newline or an escape sequence that came with a request (an
        // `event` name, a JSON key) must not forge lines or colours in the log.
        if let std::borrow::Cow::Owned(message) = escaped(&line.text[start..]) {
            line.text.truncate(start);
            line.text.push_str(&message);
        }
        line.text.push('\n');
        write(line.text.as_bytes());
        // A huge line should not pin its capacity for the thread's life.
        if line.text.capacity() > 16 * 1024 {
            line.text = String::new();
        }
    });
}

/// `text` with its control characters escaped as Rust writes them (`\n`, `\u{1b}`): for
/// whatever came from a request and is logged or printed.
pub(crate) fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !has_control(text) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Whether `text` holds a control character (`char::is_control`: C0, DEL and C1), read a byte
/// at a time: a C1 control's first byte in UTF-8 is 0xC2, which only a few letters share. The
/// bytes are folded without stopping early, which the compiler turns into vector instructions.
fn has_control(text: &str) -> bool {
    let suspect = text.bytes().fold(false, |seen, b| seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2));
    suspect && text.chars().any(char::is_control)
}

/// Whether `interval` has passed since the last time this returned `true` for `last` (which
/// holds milliseconds since the Unix epoch): for lines that would repeat under load.
pub(crate) fn every(last: &std::sync::atomic::AtomicU64, interval: Duration) -> bool {
    use std::sync::atomic::Ordering;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let previous = last.load(Ordering::Relaxed);
    (previous == 0 || now.saturating_sub(previous) >= interval.as_millis() as u64)
        && last.compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Whether this is the first time `name` (of `kind`) is seen by this process: for warnings
/// said once. Remembers up to 1,000 names (they may come from requests); past that, every
/// name counts as seen. Called per delivery: a name seen before costs a shared read lock, two
/// short hashes (foldhash: a thousand names cannot be made to collide much) and no allocation.
pub(crate) fn first_time(kind: &'static str, name: &str) -> bool {
    type Seen = foldhash::HashMap<&'static str, foldhash::HashSet<String>>;
    static SEEN: std::sync::RwLock<Option<Seen>> = std::sync::RwLock::new(None);
    let known = |seen: &Option<Seen>| {
        seen.as_ref().is_some_and(|seen| {
            seen.get(kind).is_some_and(|names| names.contains(name))
                || seen.values().map(|n| n.len()).sum::<usize>() >= 1000
        })
    };
    if known(&SEEN.read().unwrap_or_else(|p| p.into_inner())) {
        return false;
    }
    let mut seen = SEEN.write().unwrap_or_else(|p| p.into_inner());
    // Another thread may have come first.
    !known(&seen) && seen.get_or_insert_with(Default::default).entry(kind).or_default().insert(name.to_owned())
}

/// A delivery being stored whose line is not logged yet: its handler waits for that line
/// ([`accepted`]), so that the log says a delivery was accepted before anything its handler
/// does. The request that stores it holds this until its line is logged (or the request is
/// dropped); the dispatcher, on another thread, may claim it the moment it is committed.
pub(crate) struct Accepting([u8; 32]);

/// Signatures being accepted, with how many requests carry each (the provider's retries of a
/// delivery may arrive together), and how many handlers wait for one.
#[derive(Default)]
struct Pending {
    signatures: foldhash::HashMap<[u8; 32], u32>,
    waiting: usize,
}

static ACCEPTING: Mutex<Option<Pending>> = Mutex::new(None);
/// Told when a delivery's line has been logged while a handler waits.
static ACCEPTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn accepting() -> std::sync::MutexGuard<'static, Option<Pending>> {
    ACCEPTING.lock().unwrap_or_else(|p| p.into_inner())
}

impl Accepting {
    pub(crate) fn begin(signature: [u8; 32]) -> Self {
        *accepting().get_or_insert_with(Pending::default).signatures.entry(signature).or_default() += 1;
        Self(signature)
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        let mut pending = accepting();
        let Some(pending) = pending.as_mut() else { return };
        if let Some(count) = pending.signatures.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                pending.signatures.remove(&self.0);
            }
        }
        // Almost always nobody waits: no wake-up to send.
        if pending.waiting > 0 {
            ACCEPTED.notify_waiters();
        }
    }
}

/// Returns once no request is still to log that it accepted the delivery signed `signature`.
pub(crate) async fn accepted(signature: &[u8; 32]) {
    loop {
        let told = ACCEPTED.notified();
        let mut told = std::pin::pin!(told);
        let _waiting = {
            let mut pending = accepting();
            let Some(pending) = pending.as_mut().filter(|p| p.signatures.contains_key(signature)) else { return };
            pending.waiting += 1;
            // Registered under the lock: the line logged next wakes it.
            told.as_mut().enable();
            Waiting
        };
        told.await;
    }
}

/// A handler counted as waiting in [`Pending`], until dropped (woken, or its task stopped).
struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(pending) = accepting().as_mut() {
            pending.waiting -= 1;
        }
    }
}

fn append(line: &[u8]) {
    let mut buffer = buffer().lock().unwrap_or_else(|p| p.into_inner());
    buffer.extend_from_slice(line);
    if buffer.len() >= MAX_BUFFER {
        write_out(&mut buffer);
    }
}

/// Writes every line logged so far.
pub fn flush() {
    // One flush at a time; the lines are swapped out under the buffer's lock and written
    // without holding it.
    let mut writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    {
        let mut buffer = buffer().lock().unwrap_or_else(|p| p.into_inner());
        if buffer.is_empty() {
            return;
        }
        std::mem::swap(&mut *buffer, &mut *writing);
    }
    write_out(&mut writing);
}

/// Writes `bytes` to stderr and empties it (keeping its capacity, up to a limit).
fn write_out(bytes: &mut Vec<u8>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(bytes);
    let _ = stderr.flush();
    bytes.clear();
    if bytes.capacity() > MAX_BUFFER {
        bytes.shrink_to(INITIAL_BUFFER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_whatever_their_encoding() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let text = format!("é{c}x");
            assert_eq!(has_control(&text), c.is_control(), "{:?}", c);
        }
    }

    #[test]
    fn a_line_looks_like_env_loggers_default() {
        let mut line = String::new();
        format_line(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("meet_webhooks_runtime::route")
                .args(format_args!("delivery {} refused", 7))
                .build(),
            |bytes| line = String::from_utf8(bytes.to_vec()).unwrap(),
        );
        // [2026-11-27T09:15:22.123Z WARN  meet_webhooks_runtime::route] delivery 7 refused
        let (stamp, rest) = line.strip_prefix('[').unwrap().split_once(' ').unwrap();
        let time: jiff::Timestamp = stamp.parse().unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == "2026-11-27T09:15:22.123Z".len(), "{stamp}");
        let now = jiff::Timestamp::now();
        assert!(time <= now && now.duration_since(time).as_secs_f64() < 60.0, "{stamp}");
        assert_eq!(rest, "WARN  meet_webhooks_runtime::route] delivery 7 refused\n");
    }
}
