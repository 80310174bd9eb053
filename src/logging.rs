//! env_logger, with its output batched so that a log line does not cost a system call.
//!
//! env_logger writes each record with its own `write` to stderr: one syscall per delivery on
//! the request path (about 10% of the throughput, measured). Here a record is appended to a
//! shared buffer (a short, uncontended lock, no syscall) and a background thread writes the
//! buffer out every [`INTERVAL`]: lines appear at most that late, in order. If stderr stops
//! taking output and the buffer reaches [`MAX_BUFFER`], the logging thread writes it out
//! itself (so memory stays bounded and nothing is dropped). [`flush`] writes everything out
//! before exit; a SIGKILL can lose the last [`INTERVAL`] of lines. (env_logger's `color`
//! feature is off: with it, every line written to a pipe is scanned to strip colours.)

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often buffered lines are written.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes beyond which the logging thread writes them itself.
pub const MAX_BUFFER: usize = 4 * 1024 * 1024;

static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    BUFFER.get_or_init(|| Mutex::new(Vec::with_capacity(64 * 1024)))
}

struct Batched;

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = buffer().lock().unwrap_or_else(|p| p.into_inner());
        buffer.extend_from_slice(line);
        if buffer.len() >= MAX_BUFFER {
            write_out(&mut buffer);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs env_logger (`RUST_LOG`, default `info`) writing through the batching buffer.
pub fn init() {
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(|| {
            loop {
                std::thread::sleep(INTERVAL);
                flush();
            }
        })
        .expect("spawning the log writer");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(Batched)))
        .init();
}

/// Writes every line logged so far.
pub fn flush() {
    // Swap the buffer out under the lock; write without holding it.
    let mut pending = {
        let mut buffer = buffer().lock().unwrap_or_else(|p| p.into_inner());
        if buffer.is_empty() {
            return;
        }
        std::mem::replace(&mut *buffer, Vec::with_capacity(64 * 1024))
    };
    write_out(&mut pending);
}

fn write_out(bytes: &mut Vec<u8>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(bytes);
    let _ = stderr.flush();
    bytes.clear();
}
