//! Replicas wake each other: a commit that stored deliveries (or replayed some) is announced
//! with `NOTIFY`, and every replica `LISTEN`s on a connection of its own, so that a delivery
//! one replica acknowledged is claimed at once by another that is idle, not at its next poll.
//!
//! An announcement is the delays, in milliseconds from its commit, after which the deliveries
//! it stored come due (`0`, or the reorder window): a listener wakes its dispatcher then. It is
//! sent after the commit, in a transaction of its own that does not wait for its WAL flush:
//! `NOTIFY` in the appends' own transaction would serialize every replica's commits, fsync
//! included, on the server's notification lock. A lost announcement (the connection dropped)
//! costs a wait for the poll, never a delivery.
//!
//! Each announcement ends with its replica's token (`r` and a random number, which replicas
//! before it skip as not a delay): a replica that hears others knows it shares the inbox, and
//! only then spaces its dispatcher's turns ([`Peers`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::connect::reason;
use crate::inbox::Wakeups;

/// The channel every replica of an inbox listens on (one database holds one inbox).
const CHANNEL: &str = "meet_webhooks_inbox";

/// Announcements go at most this often from one replica: the first after a quiet spell at
/// once, those that follow it within this gap together at its end. Under a flood every replica
/// is woken by its own commits; the others need a wake-up every few milliseconds, not one per
/// commit (each is a transaction, on every replica's database connection).
const ANNOUNCE_GAP: Duration = Duration::from_millis(5);

/// How long after the last announcement of another replica this one counts as sharing the
/// inbox: a replica that stops announcing is idle, and competes for no turns.
const PEERS_FORGOTTEN: Duration = Duration::from_secs(1);

/// This replica's token in announcements, and when it last heard another replica's.
pub(super) struct Peers {
    token: String,
    start: Instant,
    /// Milliseconds after `start`, plus one (0: never).
    heard: AtomicU64,
}

impl Peers {
    pub(super) fn new() -> Self {
        use std::hash::BuildHasher;
        // Random keys, different for every `RandomState` made: distinct even for inboxes of one
        // process.
        let me = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self { token: format!("r{me:x}"), start: Instant::now(), heard: AtomicU64::new(0) }
    }

    /// Whether another replica announced a commit within [`PEERS_FORGOTTEN`].
    pub(super) fn recently(&self) -> bool {
        let heard = self.heard.load(Ordering::Relaxed);
        heard > 0
            && (self.start.elapsed().as_millis() as u64 + 1).saturating_sub(heard) < PEERS_FORGOTTEN.as_millis() as u64
    }

    fn heard(&self) {
        self.heard.store(self.start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }
}

/// Sends the announcements queued on `queue`, those that queue while one is sent, or within
/// [`ANNOUNCE_GAP`] of the last, together.
pub(super) async fn announcer(pool: Pool, mut queue: mpsc::UnboundedReceiver<Vec<u64>>, peers: Arc<Peers>) {
    let mut batch = Vec::new();
    let mut last: Option<tokio::time::Instant> = None;
    while queue.recv_many(&mut batch, 64).await > 0 {
        if let Some(last) = last {
            tokio::time::sleep_until(last + ANNOUNCE_GAP).await;
            while let Ok(more) = queue.try_recv() {
                batch.push(more);
            }
        }
        last = Some(tokio::time::Instant::now());
        let delays: BTreeSet<u64> = batch.drain(..).flatten().collect();
        // Digits, commas and the token (`r` and hex digits) only: safe in a literal.
        let delays = delays.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let payload = format!("{delays},{}", peers.token);
        let sql = format!("BEGIN; SET LOCAL synchronous_commit = off; NOTIFY {CHANNEL}, '{payload}'; COMMIT");
        let sent = match pool.get().await {
            Ok(client) => client.batch_execute(&sql).await.map_err(|e| reason(&e)),
            Err(e) => Err(reason(&e)),
        };
        if let Err(e) = sent {
            log::debug!("cannot tell the other replicas about new deliveries: {e}");
        }
    }
}

/// Listens for the announcements of every replica (this one's too) and wakes `wakeups` for
/// them, on a connection of its own, made again whenever it is lost; notes in `peers` those of
/// other replicas. Runs until the inbox's runtime ends.
pub(super) async fn listener(
    config: tokio_postgres::Config,
    tls: postgres_native_tls::MakeTlsConnector,
    wakeups: Arc<Wakeups>,
    peers: Arc<Peers>,
) {
    let mut delay = Duration::from_millis(100);
    let mut failing = false;
    loop {
        match listen(&config, &tls, &wakeups, &peers, &mut failing).await {
            // Listened, then lost: connect again at once.
            Ok(lost) => {
                log::warn!(
                    "lost the connection that hears other replicas' deliveries ({lost}); until it is back they are \
                     found by polling"
                );
                failing = true;
                delay = Duration::from_millis(100);
            }
            Err(e) => {
                if !failing {
                    log::warn!(
                        "cannot listen for other replicas' deliveries: {e}; they are found by polling until it works"
                    );
                }
                failing = true;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Connects, listens and wakes `wakeups` until the connection is lost (`Ok`, with why), or
/// fails to listen (`Err`).
async fn listen(
    config: &tokio_postgres::Config,
    tls: &postgres_native_tls::MakeTlsConnector,
    wakeups: &Wakeups,
    peers: &Peers,
    failing: &mut bool,
) -> Result<String, String> {
    let (client, mut connection) = config.connect(tls.clone()).await.map_err(|e| reason(&e))?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&listen);
    tokio::pin!(listening);
    // The connection is driven by reading its messages, the LISTEN's answer among them.
    let mut listened = false;
    loop {
        tokio::select! {
            done = &mut listening, if !listened => {
                done.map_err(|e| reason(&e))?;
                listened = true;
                if std::mem::take(failing) {
                    log::info!("hearing other replicas' deliveries again");
                }
                // Whatever was announced before this connection listened.
                wakeups.wake();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(note))) => heard(wakeups, peers, note.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) if listened => return Ok(reason(&e)),
                Some(Err(e)) => return Err(reason(&e)),
                None if listened => return Ok("the server closed it".into()),
                None => return Err("the server closed the connection".into()),
            }
        }
    }
}

/// Wakes `wakeups` for each delay in an announcement, and notes in `peers` one that is not this
/// replica's (a replica of a build before tokens sends none).
fn heard(wakeups: &Wakeups, peers: &Peers, payload: &str) {
    let mut mine = false;
    for token in payload.split(',') {
        match token.parse::<u64>() {
            Ok(delay) => wakeups.wake_after(Duration::from_millis(delay)),
            Err(_) => mine |= token == peers.token,
        }
    }
    if !mine {
        peers.heard();
    }
}
