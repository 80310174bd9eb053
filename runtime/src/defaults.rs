//! Every default of the service, once: the library's builder, the dispatcher, the verifier
//! and the CLI's `--help` all read them from here.

use std::time::Duration;

/// The provider's own receivers refuse a timestamp this old.
pub const MAX_AGE: Duration = meet_webhooks_signature::verify::MAX_AGE;
/// Clock skew allowed for a timestamp in the future.
pub const MAX_FUTURE: Duration = meet_webhooks_signature::verify::MAX_FUTURE;
/// How long a claim on a delivery lasts unless renewed. Renewed every quarter of it until its
/// outcome is committed; a handler goes on only while a renewal asked for within the last half of it
/// succeeded, so a process that stopped (or froze) for half of this stops its handlers at their
/// next `await`, and one stopped for all of it loses its claims.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often the dispatcher looks for due deliveries when nothing woke it: claims whose lease
/// ran out (another replica's, taken over), and what it was not told of (a replay by the CLI in
/// another process, a lost announcement from another replica).
pub const POLL: Duration = Duration::from_millis(250);

pub const BIND: &str = "127.0.0.1:5080";
/// The one path the provider posts every event to.
pub const PATH: &str = "/webhook";
pub const DATA_DIR: &str = "./data";
/// The provider's deliveries are a few KB.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// For each request head, and again for its body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of request bodies being received at once (before they are verified), across every
/// connection: what a flood of large unsigned bodies can make the receiver hold.
pub const BODY_MEMORY: usize = 64 * 1024 * 1024;
/// Client connections open at once; more wait in the kernel's queue.
pub const MAX_CONNECTIONS: usize = 1000;
/// Without the inbox: deliveries remembered to recognise retries.
pub const REPLAY_CAPACITY: usize = 200_000;
/// Handlers running at once. Each turn of the dispatcher (outcomes recorded, free slots claimed)
/// waits for a commit, which it shares with the deliveries arriving, so a turn takes at most this
/// many: with 4 slots, a flood of the provider's mix was handled at 7-8k deliveries/s while 29k/s
/// were acknowledged (the rest waited in the inbox; bench/results/2026-12-01-c.md). With 64, 5 s
/// floods had 72-100% handled when they stopped (SQLite) and 60-62% (PostgreSQL, one replica);
/// with 128, 100% and 87-88% (bench/results/2026-12-01-h.md, runs alternated). What a crash can
/// run a second time is at most this many.
pub const CONCURRENCY: usize = 128;
pub const MAX_ATTEMPTS: u32 = 8;
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(300);
/// How long a delivery of a room waits, once stored, before it may be handled. The provider
/// retries a refused event after 0.3, 0.6, 1.2, 2.4 and 4.8 s, so after an outage of up to 4.5 s
/// an earlier event arrives at most 2.4 s after a later one (the gap between its retries): it
/// still arrives within the later one's window and is handled first (README, "Order").
pub const REORDER_WINDOW: Duration = Duration::from_millis(2500);
/// The longest reorder window taken.
pub const REORDER_WINDOW_MAX: Duration = Duration::from_secs(60);
/// A week.
pub const RETENTION: Duration = Duration::from_secs(168 * 3600);
/// For running handlers on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// For requests in flight on shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections are closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);
/// The shortest token the console (`--admin-token`) takes.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;
