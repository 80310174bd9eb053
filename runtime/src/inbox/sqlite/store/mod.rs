//! The inbox's SQL, on one connection that the writer thread owns: here the commit engine
//! (appends, claims, outcomes, renewals, and the schedule they keep); beside it the file guard
//! and lock (`file.rs`), the CLI's queries (`admin.rs`), pruning (`prune.rs`), readiness
//! (`ready.rs`) and the read-only connection for counts (`reader.rs`).
//!
//! - **The file is the inbox.** Before each write the store checks that its file and its
//!   write-ahead log are still the ones it opened: SQLite would happily keep writing into a
//!   deleted file through its open descriptor (acknowledging deliveries no one will ever
//!   find), and a new empty file in its place would forget what was stored. Either is an
//!   outage until an operator restarts the service, never a silent new inbox. A read-only file
//!   or a data directory moved away is refused until it is back.
//! - **One process per data directory** holds `inbox.lock` (an advisory lock the kernel drops
//!   when the process dies), so two services never dispatch from one file. The `inbox` CLI
//!   opens the file without it, beside a running service.
//! - **Durability.** A commit that stores deliveries is fsynced (`synchronous=FULL`) before
//!   they are acknowledged. Claims and outcomes alone are committed without an fsync: they
//!   survive a crash of the process (the log is in the OS's cache), and a power cut can only
//!   lose an attempt count or make a delivery run again.
//! - **Heads in memory.** Which delivery of each room may be claimed next is kept by the writer
//!   (`schedule.rs`), derived from the file: read when the service starts, read again when
//!   another process (the CLI) committed to the file or a transaction failed. What it stored and
//!   no claim has taken yet is held there too, so a claim does not read the row back; the
//!   claim's `UPDATE` checks the fence the row had, so a file that changed anyway is noticed.
//!   So are the deliveries waiting behind a room's head, when all of them arrived here: its
//!   next head is not read from the file either.
//! - **Bounded log.** The write-ahead log is truncated to [`WAL_LIMIT`] once it has been folded
//!   back into the file, and emptied when the inbox is closed. While another process holds a
//!   read transaction open, nothing can be folded back and the log grows; it shrinks again
//!   after that reader is gone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{CachedStatement, Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::schedule::{Advance, NotAHead, ROOMLESS_WINDOW, Schedule};
use super::schema::{self, Status};
use crate::clock::{millis, now_ms};
use crate::inbox::{
    Appended, Attempt, Claim, ClaimRequest, Claimed, Completed, Completion, Kind, Lateness, Later, NewDelivery,
    Outcome, State, StoreError, Stored, TakenOver,
};

mod admin;
mod file;
mod prune;
mod reader;
mod ready;

pub use admin::{get, search, stats};
use file::{FileId, file_id, lock};
pub use prune::PRUNE_BATCH;
#[cfg(test)]
use prune::{PRUNE, PRUNE_BOUND};
pub use reader::{counts, depth, open_reader};

/// The inbox's file name inside the data directory.
pub const FILE_NAME: &str = "inbox.sqlite3";
/// The lock file of the process that serves the data directory.
pub const LOCK_NAME: &str = "inbox.lock";
/// The write-ahead log is cut back to this size once it has been checkpointed.
pub const WAL_LIMIT: u64 = 16 * 1024 * 1024;
/// The columns a [`Stored`] is read from (a macro, so that statements can be `concat!`ed).
macro_rules! columns {
    () => {
        "id, event, state, kind, attempts, received_at, COALESCE(queued_at, received_at) AS queued_at, timestamp, \
         timestamp_ms, room, recording, created, late_id, late_event, late_created, signature, body, last_error, \
         owner, lease_until, done_at, history, due_at"
    };
}
const COLUMNS: &str = columns!();

/// The `SET` clause that adds the attempt ending now to the row's `history`: its outcome,
/// duration and error as SQL expressions (the claim's columns are read as they were before the
/// `UPDATE`).
macro_rules! ended {
    ($outcome:literal, $duration:literal, $error:literal) => {
        concat!(
            "history = json_insert(COALESCE(history, '[]'), '$[#]', json_object('attempt', attempts, 'replica', owner, \
             'started_at', claimed_at, 'duration_ms', ",
            $duration,
            ", 'outcome', ",
            $outcome,
            ", 'error', ",
            $error,
            "))"
        )
    };
}

/// What one writer cycle commits together.
#[derive(Default)]
pub struct Work {
    pub appends: Vec<NewDelivery>,
    pub completions: Vec<Vec<Completion>>,
    pub renewals: Vec<(Vec<Claim>, Duration)>,
    pub claims: Vec<ClaimRequest>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.completions.is_empty() && self.renewals.is_empty() && self.claims.is_empty()
    }
}

/// The answers to a [`Work`], in the same order.
pub struct Answers {
    pub appended: Vec<Appended>,
    pub completed: Vec<Vec<Completed>>,
    pub lost: Vec<Vec<Claim>>,
    pub claimed: Vec<Vec<Claimed>>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Who claims deliveries through this store.
    owner: String,
    db_id: Option<FileId>,
    /// The write-ahead log's identity, once it exists.
    wal_id: Option<FileId>,
    /// What `PRAGMA synchronous` is set to: FULL (`true`) or NORMAL; `None` if unknown.
    sync_full: Option<bool>,
    /// Which deliveries may be claimed next; `None` until it is read from the file (at the
    /// next commit).
    schedule: Option<Schedule>,
    /// The deliveries this store has claimed, carried over to the next reading of the schedule
    /// when the file changed under it; `None` if they are not known here (after a transaction
    /// failed): the reading then looks for them in the file.
    claims: Option<Vec<i64>>,
    /// The file's `PRAGMA data_version` at the last commit: it changes when another connection
    /// (the CLI's) commits, and then the schedule is read again.
    data_version: Option<i64>,
    /// The latest time this store has read off the clock or found stored: what it compares
    /// stored times with, so that a clock set back does not push the deliveries it stored
    /// before into the future (see [`Store::now`]).
    clock: i64,
    /// How many deliveries without a room the schedule holds ready ([`ROOMLESS_WINDOW`]; tests
    /// make it small to read them from the file often).
    roomless_window: usize,
    /// Held while the store lives (service mode only).
    _lock: Option<File>,
}

impl Store {
    /// Opens the inbox in `dir` to serve it: creates it if needed, takes the data directory's
    /// lock, brings the schema up to date, and releases the claims of the process that ran
    /// before (the lock proves it is gone; its attempts stay counted).
    pub fn open_service(dir: &Path, owner: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::unavailable(format!("cannot create the data directory {}", dir.display())).caused_by(e)
        })?;
        let lock = lock(dir, owner)?;
        let path = dir.join(FILE_NAME);
        let mut conn = connect(&path)?;
        schema::migrate(&mut conn, &path)?;
        let released = conn
            .execute(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL WHERE state = 'pending' AND owner IS NOT NULL",
                [],
            )
            .map_err(|e| failed(&path, e))?;
        if released > 0 {
            log::warn!(
                "{released} delivery(ies) were being handled when the service last stopped without finishing: \
                 they are handled again (that attempt counts)"
            );
        }
        let mut store = Self::new(conn, path, owner, Some(lock));
        store.claims = Some(Vec::new()); // just released
        store.note_wal();
        Ok(store)
    }

    /// Opens an existing inbox beside a running service (the `inbox` CLI).
    pub fn open_admin(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::invalid(format!(
                "no inbox in {} (has the service run with this data directory?)",
                dir.display()
            )));
        }
        let conn = connect(&path)?;
        match schema::status(&conn)? {
            Status::Current => {}
            Status::Newer(version) => return Err(schema::newer(&path, version)),
            Status::Older(version) => {
                return Err(StoreError::invalid(format!(
                    "the inbox {} has schema version {version}; start this version's service once to upgrade it to {}",
                    path.display(),
                    schema::VERSION
                )));
            }
        }
        Ok(Self::new(conn, path, "cli", None))
    }

    fn new(conn: Connection, path: PathBuf, owner: &str, lock: Option<File>) -> Self {
        let db_id = file_id(&path);
        // The newest deliveries' arrival and handling times: the clock never reads earlier.
        let stored = conn
            .query_row(
                "SELECT MAX(MAX(received_at, COALESCE(done_at, 0))) FROM
                   (SELECT received_at, done_at FROM deliveries ORDER BY id DESC LIMIT 1000)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
            .unwrap_or(0);
        Self {
            conn,
            path,
            owner: owner.to_owned(),
            db_id,
            wal_id: None,
            sync_full: Some(true),
            schedule: None,
            claims: None,
            data_version: None,
            clock: stored,
            roomless_window: ROOMLESS_WINDOW,
            _lock: lock,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Now, by this process's clock, but never earlier than a time this store has read or
    /// found stored: a clock set back (by hand, or by a time sync) leaves due deliveries due
    /// and leases as long as they were, instead of pushing them into the future.
    pub fn now(&mut self) -> i64 {
        self.clock = self.clock.max(now_ms());
        self.clock
    }

    fn wal_path(&self) -> PathBuf {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// Remembers the write-ahead log's identity once it exists (after the first write).
    fn note_wal(&mut self) {
        if self.wal_id.is_none() {
            self.wal_id = file_id(&self.wal_path());
        }
    }

    fn failed(&self, e: rusqlite::Error) -> StoreError {
        failed(&self.path, e)
    }

    /// Commits `work` in one transaction: appends, then outcomes, then renewals, then claims
    /// (which see the rooms those outcomes unblocked). Fsynced if it stores a delivery. (The
    /// writer commits a cycle's appends alone, then the rest.) The schedule follows each step;
    /// if the transaction fails, it is read again from the file at the next commit.
    pub fn commit(&mut self, work: &Work) -> Result<Answers, StoreError> {
        self.guard()?;
        self.set_sync_full(!work.appends.is_empty())?;
        let now = self.now();
        let result = self.try_commit(work, now);
        if result.is_err() {
            self.schedule = None;
            self.claims = None;
        }
        result.map_err(|e| failed(&self.path, e))
    }

    fn try_commit(&mut self, work: &Work, now: i64) -> rusqlite::Result<Answers> {
        // IMMEDIATE: no other connection can commit between the `data_version` read here and
        // this transaction's end.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = tx.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        if self.data_version.replace(version).is_some_and(|seen| seen != version) {
            forget(&mut self.schedule, &mut self.claims);
        }
        let owner = self.owner.as_str();
        let schedule = match &mut self.schedule {
            Some(schedule) => schedule,
            empty => empty.insert(read_schedule(&tx, owner, self.claims.take(), self.roomless_window)?),
        };
        let appended = insert(&tx, schedule, now, &work.appends)?;
        let completed = work
            .completions
            .iter()
            .map(|batch| complete(&tx, schedule, owner, now, batch))
            .collect::<Result<_, _>>()?;
        let lost = work
            .renewals
            .iter()
            .map(|(claims, lease)| renew(&tx, schedule, owner, now, claims, *lease))
            .collect::<Result<_, _>>()?;
        let claimed =
            work.claims.iter().map(|request| claim(&tx, schedule, owner, now, request)).collect::<Result<_, _>>()?;
        if schedule.out_of_step() {
            // Not even its claims are trusted: the next reading looks for them in the file.
            log::warn!("the inbox's schedule no longer matched the file {}: read again", self.path.display());
            self.schedule = None;
            self.claims = None;
        }
        tx.commit()?;
        self.note_wal();
        Ok(Answers { appended, completed, lost, claimed })
    }

    /// `PRAGMA synchronous`, set only when it changes (each one is parsed and run anew).
    fn set_sync_full(&mut self, full: bool) -> Result<(), StoreError> {
        if self.sync_full != Some(full) {
            self.sync_full = None; // unknown until it succeeds
            self.conn
                .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
                .map_err(|e| failed(&self.path, e))?;
            self.sync_full = Some(full);
        }
        Ok(())
    }

    /// Runs `sql` on the store's own connection (tests that break the file on purpose).
    #[cfg(test)]
    pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.execute_batch(sql)
    }

    /// Folds the log back into the file and empties it (on shutdown).
    pub fn close(&mut self) {
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
            log::warn!("cannot fold the inbox's log back into {}: {e}", self.path.display());
        }
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let configure = || -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit that stores a delivery is fsynced: an acknowledged delivery survives a
        // power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)?;
        // The CLI may write (replay) while the service runs.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // 8 MiB of page cache keeps the hot ends of the table and its indexes in memory.
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        Ok(conn)
    };
    configure().map_err(|e| failed(path, e))
}

/// A `COUNT(*)`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn failed(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(format!("the inbox {}", path.display())).caused_by(e)
}

/// A [`Stored`] from the [`COLUMNS`] of `row`, read by name.
fn stored(row: &Row<'_>) -> rusqlite::Result<Stored> {
    let text = |name: &str| row.get_ref(name).and_then(|v| v.as_str().map_err(Into::into));
    let signature: Vec<u8> = row.get("signature")?;
    let claimed_by: Option<String> = row.get("owner")?;
    let state = State::parse(text("state")?).unwrap_or(State::Pending);
    Ok(Stored {
        id: row.get("id")?,
        event: row.get("event")?,
        state,
        kind: Kind::parse(text("kind")?).unwrap_or(Kind::Fallback),
        attempts: row.get("attempts")?,
        received_at: row.get("received_at")?,
        queued_at: row.get("queued_at")?,
        timestamp: row.get("timestamp")?,
        timestamp_ms: row.get("timestamp_ms")?,
        room: row.get("room")?,
        recording: row.get("recording")?,
        created_us: row.get("created")?,
        late: match row.get::<_, Option<i64>>("late_id")? {
            Some(id) => Some(Later { id, event: row.get("late_event")?, created_us: row.get("late_created")? }),
            None => None,
        },
        signature: signature.try_into().unwrap_or([0; 32]),
        body: row.get("body")?,
        last_error: row.get("last_error")?,
        claimed_until: if claimed_by.is_some() { row.get("lease_until")? } else { None },
        claimed_by,
        done_at: row.get("done_at")?,
        due_at: if state == State::Pending { row.get("due_at")? } else { None },
        history: Attempt::parse_history(row.get_ref("history")?.as_str_or_null()?),
    })
}

/// The row a delivery stored as `id` at `now` got, as [`stored`] reads it back before any claim.
fn unread(id: i64, now: i64, new: &NewDelivery) -> Stored {
    Stored {
        id,
        event: new.event.clone(),
        state: State::Pending,
        kind: new.kind,
        attempts: 0,
        received_at: new.received_at_ms,
        queued_at: now,
        timestamp: new.timestamp.clone(),
        timestamp_ms: new.timestamp_ms,
        room: new.room.clone(),
        recording: new.recording.clone(),
        created_us: new.created_us,
        late: None,
        signature: new.signature,
        body: new.body.to_vec(),
        last_error: None,
        claimed_by: None,
        claimed_until: None,
        done_at: None,
        due_at: Some(new.received_at_ms.saturating_add(millis(new.hold))),
        history: Vec::new(),
    }
}

/// Stores `batch` in the transaction that began at `now`.
fn insert(
    tx: &Transaction<'_>,
    schedule: &mut Schedule,
    now: i64,
    batch: &[NewDelivery],
) -> rusqlite::Result<Vec<Appended>> {
    let mut answers = Vec::with_capacity(batch.len());
    if batch.is_empty() {
        return Ok(answers);
    }
    // (No `RETURNING`: SQLite gathers what a statement returns in a temporary table that it
    // opens and closes at each run, where the connection already knows the new row's id, or a
    // lookup by id costs a fraction: `bench/results/figures-in-code.md`, no-returning.)
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, event, kind, room, body, received_at, due_at,
                                 ord, created, recording, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (timestamp_ms, signature) DO NOTHING",
    )?;
    let mut existing = tx.prepare_cached("SELECT id FROM deliveries WHERE timestamp_ms = ?1 AND signature = ?2")?;
    for d in batch {
        let due_at = d.received_at_ms.saturating_add(millis(d.hold));
        // Only a room's deliveries are ordered (those without one, by id).
        let order = d.room.as_ref().map(|_| d.order());
        let inserted = insert.execute(params![
            &d.signature[..],
            d.timestamp,
            d.timestamp_ms,
            d.event,
            d.kind.as_str(),
            d.room,
            &d.body[..],
            d.received_at_ms,
            due_at,
            order,
            d.created_us,
            d.recording,
            now,
        ])?;
        answers.push(match inserted {
            1 => {
                let id = tx.last_insert_rowid();
                schedule.arrived(id, d.room.as_deref(), order.unwrap_or(id), due_at);
                schedule.keep_unread(id, d.body.len(), || unread(id, now, d));
                Appended::New(id)
            }
            _ => Appended::Duplicate(existing.query_row(params![d.timestamp_ms, &d.signature[..]], |r| r.get(0))?),
        });
    }
    Ok(answers)
}

/// The schedule as the file has it: the heads this store has claimed (`claims`, or all claimed
/// pending deliveries when they are not known), each other room's oldest pending delivery, and
/// the first window of pending deliveries without a room. At start-up and after another process
/// changed the file: the rooms are read from the pending index alone, one row read per room.
fn read_schedule(
    tx: &Transaction<'_>,
    owner: &str,
    claims: Option<Vec<i64>>,
    window: usize,
) -> rusqlite::Result<Schedule> {
    let mut schedule = Schedule::reading(window);
    let mut claimed = |row: &Row<'_>| -> rusqlite::Result<()> {
        let room: Option<String> = row.get(1)?;
        let (id, order): (i64, Option<i64>) = (row.get(0)?, row.get(4)?);
        schedule.claimed_head(id, room.as_deref(), order.unwrap_or(id), row.get(2)?, row.get(3)?);
        Ok(())
    };
    const CLAIMED: &str = "SELECT id, room, due_at, lease_until, ord FROM deliveries
                            WHERE state = 'pending' AND owner = ?1 AND lease_until IS NOT NULL";
    match claims {
        Some(ids) => {
            let mut one = tx.prepare(&format!("{CLAIMED} AND id = ?2"))?;
            for id in ids {
                one.query_row(params![owner, id], &mut claimed).optional()?;
            }
        }
        None => {
            let mut all = tx.prepare(CLAIMED)?;
            let mut rows = all.query([owner])?;
            while let Some(row) = rows.next()? {
                claimed(row)?;
            }
        }
    }
    let mut next = tx.prepare_cached(NEXT_HEAD)?;
    let mut rooms = tx.prepare("SELECT DISTINCT room FROM deliveries WHERE state = 'pending' AND room IS NOT NULL")?;
    let mut rows = rooms.query([])?;
    while let Some(row) = rows.next()? {
        let room = row.get_ref(0)?.as_str()?;
        if !schedule.has_room(room)
            && let Some((id, order, due_at)) =
                next.query_row([room], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?
        {
            schedule.room_head(room, id, order, due_at);
        }
    }
    drop(rows);
    load_roomless(tx, &mut schedule)?;
    Ok(schedule)
}

/// Drops the schedule, to be read again at the next commit, keeping the claims it holds.
fn forget(schedule: &mut Option<Schedule>, claims: &mut Option<Vec<i64>>) {
    if let Some(schedule) = schedule.take() {
        *claims = Some(schedule.claimed_ids());
    }
}

/// A room's first pending delivery in its order, `(id, ord, due_at)`: its next head.
const NEXT_HEAD: &str =
    "SELECT id, ord, due_at FROM deliveries WHERE room = ?1 AND state = 'pending' ORDER BY ord, id LIMIT 1";

/// The pending deliveries without a room after `?1`, oldest first. No `LIMIT ?`: SQLite reads a
/// bound LIMIT when it plans a statement, and then any new binding of it makes the statement be
/// planned again (`bench/results/figures-in-code.md`, bound-limit). The index gives the rows in
/// order, one step at a time: the caller takes as many as it wants.
const ROOMLESS: &str =
    "SELECT id, due_at FROM deliveries WHERE room IS NULL AND ord IS NULL AND state = 'pending' AND id > ?1
      ORDER BY id";

/// Tops the schedule's window of deliveries without a room up from the file, if it asks;
/// whether any were read.
fn load_roomless(tx: &Transaction<'_>, schedule: &mut Schedule) -> rusqlite::Result<bool> {
    let Some((after, wanted)) = schedule.wants_roomless() else { return Ok(false) };
    let mut statement = tx.prepare_cached(ROOMLESS)?;
    let loaded: Vec<(i64, i64)> =
        statement.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?.take(wanted).collect::<Result<_, _>>()?;
    schedule.roomless_loaded(&loaded, wanted);
    Ok(!loaded.is_empty())
}

/// The head `id` left `pending`: its room's next pending delivery becomes the room's head,
/// read from the file with `next` ([`NEXT_HEAD`]) unless the schedule knows it.
fn advance(next: &mut CachedStatement<'_>, schedule: &mut Schedule, id: i64) -> rusqlite::Result<()> {
    match schedule.left(id) {
        Ok(advance) => follow(next, schedule, advance),
        Err(NotAHead) => {
            schedule.lost_step();
            Ok(())
        }
    }
}

/// Reads a room's first pending delivery from the file with `next` ([`NEXT_HEAD`]) when the
/// schedule asks for it.
fn follow(next: &mut CachedStatement<'_>, schedule: &mut Schedule, advance: Advance) -> rusqlite::Result<()> {
    if let Advance::Read(room) = advance {
        let head = next.query_row([&*room], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
        schedule.advanced(room, head);
    }
    Ok(())
}

/// A head as a claim reads it. Its lease is read too: the schedule says it is free, and the
/// file must agree.
const HEAD: &str = concat!("SELECT fence, ", columns!(), " FROM deliveries WHERE id = ?1 AND state = 'pending'");

fn claim(
    tx: &Transaction<'_>,
    schedule: &mut Schedule,
    owner: &str,
    now: i64,
    request: &ClaimRequest,
) -> rusqlite::Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    let until = now.saturating_add(millis(request.lease));
    // Once a claim: a head it takes is not due again within it, however short its lease.
    schedule.expire(now);
    load_roomless(tx, schedule)?;
    let mut head = tx.prepare_cached(HEAD)?;
    let mut take = tx.prepare_cached(
        // The fence it had is checked: a delivery taken from memory was not read from the file.
        "UPDATE deliveries SET owner = ?2, fence = ?3, attempts = ?4, lease_until = ?5,
                               late_id = ?6, late_event = ?7, late_created = ?8, claimed_at = ?9
          WHERE id = ?1 AND state = 'pending' AND fence = ?3 - 1",
    )?;
    let mut later = tx.prepare_cached(LATER)?;
    let mut next = tx.prepare_cached(NEXT_HEAD)?;
    let mut bury = tx.prepare_cached(concat!(
        "UPDATE deliveries SET state = 'dead', owner = NULL, lease_until = NULL, done_at = ?2, last_error = ?3, ",
        ended!("'unfinished'", "NULL", "?3"),
        " WHERE id = ?1"
    ))?;
    while claimed.len() < request.limit {
        let id = match schedule.take_due(now) {
            Some(id) => id,
            // The window of deliveries without a room ran dry: more may be in the file.
            None if load_roomless(tx, schedule)? => match schedule.take_due(now) {
                Some(id) => id,
                None => break,
            },
            None => break,
        };
        let row = match schedule.take_unread(id) {
            // Never claimed: its row is as it was inserted (fence 0).
            Some(row) => Some((0, row)),
            None => head.query_row([id], |r| Ok((r.get::<_, i64>("fence")?, stored(r)?))).optional()?,
        };
        let Some((fence, mut delivery)) = row.filter(|(_, d)| d.claimed_until.is_none_or(|until| until <= now)) else {
            // Not pending, or claimed, in the file: the schedule is out of step with it.
            schedule.lost_step();
            continue;
        };
        let attempts = delivery.attempts;
        if attempts >= request.max_attempts {
            // Its last claim ran out: the process that ran it stopped (or froze) mid-handler.
            bury.execute(params![id, now, crate::inbox::never_finished(request.max_attempts)])?;
            advance(&mut next, schedule, id)?;
        } else {
            // The row as this claim leaves it.
            let fence = fence + 1;
            let lateness = lateness(&mut later, &delivery)?;
            delivery.attempts += 1;
            let took_over = TakenOver::take(&mut delivery, now);
            delivery.claimed_by = Some(owner.to_owned());
            delivery.claimed_until = Some(until);
            delivery.late = lateness.room.clone();
            let late = delivery.late.as_ref();
            let (late_id, late_event, late_created) =
                (late.map(|l| l.id), late.and_then(|l| l.event.as_deref()), late.map(|l| l.created_us));
            if take.execute(params![
                id,
                owner,
                fence,
                delivery.attempts,
                until,
                late_id,
                late_event,
                late_created,
                now
            ])? == 0
            {
                // Changed in the file since it was stored: the schedule is out of step with it.
                schedule.lost_step();
                continue;
            }
            schedule.claimed(id, until);
            let claim = Claim { id, fence };
            claimed.push(Claimed { claim, attempt: delivery.attempts, delivery, lateness, took_over });
        }
    }
    Ok(claimed)
}

/// The latest handled event of room `?1` (`?2` '') or of its recording `?2`, created after `?3`.
const LATER: &str = "SELECT id, event, created FROM handled WHERE room = ?1 AND recording = ?2 AND created > ?3";

/// What of `delivery`'s room and recording was handled although created after it.
fn lateness(later: &mut CachedStatement<'_>, delivery: &Stored) -> rusqlite::Result<Lateness> {
    let (Some(room), Some(created)) = (&delivery.room, delivery.created_us) else { return Ok(Lateness::default()) };
    let mut find = |recording: &str| {
        later
            .query_row(params![room, recording, created], |r| {
                Ok(Later { id: r.get(0)?, event: r.get(1)?, created_us: r.get(2)? })
            })
            .optional()
    };
    Ok(Lateness { room: find("")?, recording: delivery.recording.as_deref().map(&mut find).transpose()?.flatten() })
}

/// A handled delivery (`?1`, at `?2`) becomes the latest of its room, and of its recording, if
/// it was created after what they had.
const MARK_HANDLED: &str = "INSERT INTO handled (room, recording, id, event, created, done_at)
     SELECT room, r.recording, id, event, created, ?2
       FROM deliveries, (SELECT '' AS recording UNION ALL SELECT recording FROM deliveries WHERE id = ?1) r
      WHERE id = ?1 AND room IS NOT NULL AND created IS NOT NULL AND r.recording IS NOT NULL
     ON CONFLICT (room, recording) DO UPDATE
        SET id = excluded.id, event = excluded.event, created = excluded.created, done_at = excluded.done_at
      WHERE excluded.created >= handled.created";

/// Records each outcome if its claim still holds the delivery; a room whose head leaves
/// `pending` gets its next head. Each statement is taken from the connection's cache once a
/// batch, not once an outcome: a lookup hashes the statement's text to take it out of the
/// cache and again to put it back (`bench/results/figures-in-code.md`, statement-cache).
fn complete(
    tx: &Transaction<'_>,
    schedule: &mut Schedule,
    owner: &str,
    now: i64,
    batch: &[Completion],
) -> rusqlite::Result<Vec<Completed>> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut next = tx.prepare_cached(NEXT_HEAD)?;
    let mut mark = tx.prepare_cached(MARK_HANDLED)?;
    let mut statements: [Option<CachedStatement<'_>>; 4] = Default::default();
    for c in batch {
        let (id, fence, kind) = (c.claim.id, c.claim.fence, c.kind.as_str());
        let (slot, sql) = outcome_statement(&c.outcome);
        let statement = match &mut statements[slot] {
            Some(statement) => statement,
            empty => empty.insert(tx.prepare_cached(sql)?),
        };
        let updated = match &c.outcome {
            Outcome::Done => statement.execute(params![id, fence, owner, kind, now])?,
            Outcome::Retry { after, error } => {
                statement.execute(params![id, fence, owner, kind, error, now.saturating_add(millis(*after)), now])?
            }
            Outcome::Dead { error } => statement.execute(params![id, fence, owner, kind, error, now])?,
            Outcome::Interrupted => statement.execute(params![id, fence, owner, now])?,
        };
        if updated == 0 {
            answers.push(Completed::Fenced);
            continue;
        }
        match &c.outcome {
            Outcome::Done => {
                mark.execute(params![id, now])?;
                advance(&mut next, schedule, id)?;
            }
            Outcome::Dead { .. } => advance(&mut next, schedule, id)?,
            Outcome::Retry { after, .. } => {
                let released = schedule.released(id, Some(now.saturating_add(millis(*after))));
                follow(&mut next, schedule, released)?;
            }
            Outcome::Interrupted => {
                let released = schedule.released(id, None);
                follow(&mut next, schedule, released)?;
            }
        }
        answers.push(Completed::Recorded);
    }
    Ok(answers)
}

/// The statement that records `outcome` for the claim `?1` (id), `?2` (fence) of `?3` (owner),
/// and its place among [`complete`]'s statements.
fn outcome_statement(outcome: &Outcome) -> (usize, &'static str) {
    match outcome {
        Outcome::Done => (
            0,
            concat!(
                "UPDATE deliveries SET state = 'done', owner = NULL, lease_until = NULL, kind = ?4, last_error = NULL,
                        done_at = ?5, ",
                ended!("'done'", "?5 - claimed_at", "NULL"),
                " WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'pending'"
            ),
        ),
        Outcome::Retry { .. } => (
            1,
            concat!(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL, kind = ?4, last_error = ?5, due_at = ?6, ",
                ended!("'retry'", "?7 - claimed_at", "?5"),
                " WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'pending'"
            ),
        ),
        Outcome::Dead { .. } => (
            2,
            concat!(
                "UPDATE deliveries SET state = 'dead', owner = NULL, lease_until = NULL, kind = ?4, last_error = ?5,
                        done_at = ?6, ",
                ended!("'dead'", "?6 - claimed_at", "?5"),
                " WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'pending'"
            ),
        ),
        // Not the handler's doing: the attempt is given back.
        Outcome::Interrupted => (
            3,
            concat!(
                "UPDATE deliveries SET owner = NULL, lease_until = NULL, attempts = attempts - 1, ",
                ended!("'interrupted'", "?4 - claimed_at", "NULL"),
                " WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'pending'"
            ),
        ),
    }
}

fn renew(
    tx: &Transaction<'_>,
    schedule: &mut Schedule,
    owner: &str,
    now: i64,
    claims: &[Claim],
    lease: Duration,
) -> rusqlite::Result<Vec<Claim>> {
    let mut statement = tx.prepare_cached(
        "UPDATE deliveries SET lease_until = ?4 WHERE id = ?1 AND fence = ?2 AND owner = ?3 AND state = 'pending'",
    )?;
    let until = now.saturating_add(millis(lease));
    let mut lost = Vec::new();
    for claim in claims {
        if statement.execute(params![claim.id, claim.fence, owner, until])? == 0 {
            lost.push(*claim);
        } else {
            schedule.renewed(claim.id, until);
        }
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{Query, Selection};

    const LEASE: Duration = Duration::from_secs(30);

    fn delivery(n: u8, room: Option<&str>) -> NewDelivery {
        NewDelivery {
            signature: [n; 32],
            timestamp: format!("{n}"),
            timestamp_ms: i64::from(n),
            event: Some("recordingStarted".into()),
            kind: Kind::Typed,
            room: room.map(Into::into),
            body: format!("{{\"n\":{n}}}").into(),
            received_at_ms: i64::from(n),
            recording: None,
            created_us: None,
            hold: std::time::Duration::ZERO,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open_service(dir, "me").unwrap()
    }

    fn append(store: &mut Store, batch: Vec<NewDelivery>) -> Vec<Appended> {
        store.commit(&Work { appends: batch, ..Work::default() }).unwrap().appended
    }

    fn claim_with(store: &mut Store, limit: usize, lease: Duration, max_attempts: u32) -> Vec<Claimed> {
        let request = ClaimRequest { limit, lease, max_attempts };
        store.commit(&Work { claims: vec![request], ..Work::default() }).unwrap().claimed.remove(0)
    }

    fn claim(store: &mut Store, limit: usize) -> Vec<Claimed> {
        claim_with(store, limit, LEASE, 8)
    }

    fn ids(claimed: &[Claimed]) -> Vec<i64> {
        claimed.iter().map(|c| c.claim.id).collect()
    }

    /// The claims among `claim` that were lost.
    fn renew(store: &mut Store, claim: Claim) -> Vec<Claim> {
        store.commit(&Work { renewals: vec![(vec![claim], LEASE)], ..Work::default() }).unwrap().lost.remove(0)
    }

    fn complete(store: &mut Store, claim: Claim, outcome: Outcome) -> Completed {
        let completion = Completion { claim, kind: Kind::Typed, outcome };
        store.commit(&Work { completions: vec![vec![completion]], ..Work::default() }).unwrap().completed[0][0]
    }

    /// `n` deliveries without a room, received at `n`.
    fn roomless(range: std::ops::RangeInclusive<u32>) -> Vec<NewDelivery> {
        range
            .map(|n| {
                let mut d = delivery(0, None);
                d.signature[..4].copy_from_slice(&n.to_be_bytes());
                d.timestamp_ms = i64::from(n);
                d.received_at_ms = i64::from(n);
                d
            })
            .collect()
    }

    #[test]
    fn a_head_whose_claim_ran_out_keeps_its_place_when_another_process_changes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        // One dead delivery without a room, for the CLI to replay.
        append(&mut store, vec![delivery(1, None)]);
        let dead = claim(&mut store, 1).remove(0).claim;
        assert_eq!(complete(&mut store, dead, Outcome::Dead { error: "boom".into() }), Completed::Recorded);
        // Room a's head is claimed, and its process freezes: the lease runs out, and the next
        // claim finds it so (and holds it ready to be taken over).
        let created = |n: u8, at_ms: i64| NewDelivery { created_us: Some(at_ms * 1000), ..delivery(n, Some("a")) };
        let [Appended::New(head)] = append(&mut store, vec![created(2, 30)])[..] else { panic!("stored") };
        assert_eq!(ids(&claim_with(&mut store, 1, Duration::ZERO, 8)), [head]);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(claim_with(&mut store, 0, LEASE, 8).len(), 0);
        // An event of room a created before it arrives: it waits behind the head a claim holds.
        let [Appended::New(earlier)] = append(&mut store, vec![created(3, 10)])[..] else { panic!("stored") };
        // The CLI replays on a connection of its own: the schedule is read from the file again.
        assert_eq!(Store::open_admin(dir.path()).unwrap().replay(Selection::Dead).unwrap(), 1);
        let taken = ids(&claim(&mut store, 5));
        assert!(taken.contains(&head) && !taken.contains(&earlier), "took {taken:?}: {head} is room a's head");
    }

    #[test]
    fn a_backlog_without_rooms_beyond_the_schedule_s_window_is_claimed_in_order_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let total = u32::try_from(ROOMLESS_WINDOW).unwrap() * 2 + 100;
        append(&mut store, roomless(1..=total));
        let held = |store: &Store| store.schedule.as_ref().unwrap().len().0;
        assert_eq!(held(&store), ROOMLESS_WINDOW, "the rest stay in the file");
        let mut seen = Vec::new();
        loop {
            let claimed = claim(&mut store, 1000);
            if claimed.is_empty() {
                break;
            }
            assert!(held(&store) <= ROOMLESS_WINDOW);
            let completions = claimed
                .iter()
                .map(|c| Completion { claim: c.claim, kind: Kind::Typed, outcome: Outcome::Done })
                .collect();
            store.commit(&Work { completions: vec![completions], ..Work::default() }).unwrap();
            seen.extend(ids(&claimed));
        }
        assert_eq!(seen, (1..=i64::from(total)).collect::<Vec<_>>(), "each once, oldest first");
        // Topping the window up does not plan its statement again each time (a bound LIMIT would).
        let statement = store.conn.prepare_cached(ROOMLESS).unwrap();
        assert!(statement.get_status(rusqlite::StatementStatus::Run) >= 3, "the window was topped up");
        assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0, "planned once");
    }

    /// What a test does to a running inbox, in [`the_schedule_keeps_each_room_in_order_whatever_happens`].
    #[derive(Debug, Clone)]
    enum Step {
        /// A delivery to one of three rooms, or without a room, created at one of ten times (or
        /// without a `creationDate`: its arrival orders it, at 5).
        Append(Option<u8>, Option<u8>),
        Claim(usize),
        /// A claim whose lease runs out at once (its process froze): what it took may be claimed
        /// again, and until then its own outcome still counts.
        ClaimExpiring(usize),
        /// An outcome for one of the live claims (by position), of one of four kinds.
        Complete(usize, u8),
        /// A renewal of one of the live claims (by position), whose lease may have run out.
        Renew(usize),
        /// A renewal and an outcome for a claim taken over since (by position): they change
        /// nothing.
        Late(usize),
        /// `inbox replay --dead`, on a connection of its own (as the CLI, another process, does).
        Replay,
        /// The service stops and starts again.
        Restart,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (proptest::option::weighted(0.8, 0..3u8), proptest::option::weighted(0.9, 0..10u8))
                .prop_map(|(room, created)| Step::Append(room, created)),
            3 => (1..5usize).prop_map(Step::Claim),
            1 => (1..3usize).prop_map(Step::ClaimExpiring),
            4 => (0..64usize, 0..4u8).prop_map(|(i, kind)| Step::Complete(i, kind)),
            1 => (0..64usize).prop_map(Step::Renew),
            1 => (0..64usize).prop_map(Step::Late),
            1 => Just(Step::Replay),
            1 => Just(Step::Restart),
        ]
    }

    /// The file's truth as the test keeps it: what is pending (and its room), what is dead,
    /// each room's claimed head (the one delivery of the room that a claim holds until its
    /// outcome; a room without one may have its first pending delivery claimed), the live claims
    /// (and whether their lease ran out), the claims taken over since, and each room's latest
    /// handled event.
    #[derive(Default)]
    struct Model {
        pending: std::collections::BTreeMap<i64, Option<u8>>,
        dead: Vec<i64>,
        heads: std::collections::HashMap<u8, i64>,
        live: Vec<(Claim, Option<u8>, bool)>,
        taken_over: Vec<Claim>,
        appended: usize,
        /// Each delivery's place in its room (`ord`), its `creationDate`, and replays so far.
        places: std::collections::HashMap<i64, i64>,
        created: std::collections::HashMap<i64, i64>,
        replays: i64,
        /// `(creationDate, id)` of each room's latest handled event.
        handled: std::collections::HashMap<u8, (i64, i64)>,
    }

    impl Model {
        fn place(&self, id: i64) -> (i64, i64) {
            (self.places[&id], id)
        }

        fn oldest(&self, room: u8) -> Option<i64> {
            self.pending.iter().filter(|(_, r)| **r == Some(room)).map(|(id, _)| *id).min_by_key(|id| self.place(*id))
        }

        /// Replayed: past now (after every `creationDate` of the test), and behind whatever of its
        /// room is pending.
        fn replayed(&mut self, id: i64, room: Option<u8>) {
            self.replays += 1;
            self.places.insert(id, (i64::MAX >> 1) + self.replays);
            self.pending.insert(id, room);
        }

        /// Claimed, with a lease that has not run out.
        fn is_live(&self, id: i64) -> bool {
            self.live.iter().any(|(c, _, expired)| c.id == id && !expired)
        }

        /// What a claim may take now: each room's head (or oldest), each pending delivery
        /// without a room, that is not claimed already.
        fn claimable(&self) -> usize {
            let roomless = self.pending.iter().filter(|(id, r)| r.is_none() && !self.is_live(**id)).count();
            let rooms = (0..3u8)
                .filter_map(|room| self.heads.get(&room).copied().or_else(|| self.oldest(room)))
                .filter(|id| !self.is_live(*id))
                .count();
            roomless + rooms
        }

        /// A claim of `id` is the one the model allows.
        fn claimed(&mut self, claim: Claim, expiring: bool) {
            let room = *self.pending.get(&claim.id).expect("claimed a delivery that is not pending");
            assert!(!self.is_live(claim.id), "claimed {} twice", claim.id);
            if let Some(at) = self.live.iter().position(|(c, _, _)| c.id == claim.id) {
                let (old, _, _) = self.live.remove(at);
                assert!(claim.fence > old.fence, "a claim taken over gets a new fence");
                self.taken_over.push(old);
            }
            if let Some(room) = room {
                let oldest = self.oldest(room).unwrap();
                let head = *self.heads.entry(room).or_insert(oldest);
                assert_eq!(claim.id, head, "room {room}: claimed {} out of turn", claim.id);
            }
            self.live.push((claim, room, expiring));
        }

        /// The latest handled event of `id`'s room, if created after it: what its claim says.
        fn later(&self, id: i64, room: Option<u8>) -> Option<i64> {
            let created = self.created.get(&id)?;
            let (latest, by) = self.handled.get(&room?)?;
            (latest > created).then_some(*by)
        }

        fn left(&mut self, id: i64, room: Option<u8>) {
            self.pending.remove(&id);
            if let Some(room) = room {
                self.heads.remove(&room);
            }
        }

        fn done(&mut self, id: i64, room: Option<u8>) {
            if let (Some(room), Some(&created)) = (room, self.created.get(&id)) {
                let latest = self.handled.entry(room).or_insert((created, id));
                if created >= latest.0 {
                    *latest = (created, id);
                }
            }
            self.left(id, room);
        }

        /// A claim ended with it pending: its room's first pending delivery goes next.
        fn released(&mut self, room: Option<u8>) {
            if let Some(room) = room {
                self.heads.remove(&room);
            }
        }
    }

    fn run_steps(steps: &[Step]) {
        let dir = tempfile::tempdir().unwrap();
        // A window of three deliveries without a room: they are read from the file often.
        let open = |dir: &Path| Store { roomless_window: 3, ..open(dir) };
        let mut store = open(dir.path());
        let mut model = Model::default();
        let mut next_signature = 0u32;
        let claim_up_to = |store: &mut Store, model: &mut Model, limit: usize, lease: Duration| {
            let claimable = model.claimable();
            let claimed = claim_with(store, limit, lease, 1000);
            assert_eq!(claimed.len(), limit.min(claimable), "a claim took what it could, no more");
            for c in &claimed {
                // What the claim handed out is the file's row as the claim left it, whether it
                // was read from there or held since it was stored.
                let row = store.get(c.claim.id).unwrap().unwrap();
                assert_eq!(format!("{:?}", c.delivery), format!("{row:?}"));
                let fence: i64 = store
                    .conn
                    .query_row("SELECT fence FROM deliveries WHERE id = ?1", [c.claim.id], |r| r.get(0))
                    .unwrap();
                assert_eq!((c.claim.fence, c.attempt), (fence, row.attempts));
                let room = model.pending.get(&c.claim.id).copied().flatten();
                assert_eq!(c.lateness.room.as_ref().map(|l| l.id), model.later(c.claim.id, room), "{}", c.claim.id);
                model.claimed(c.claim, lease.is_zero());
            }
            claimed.len()
        };
        for step in steps {
            match step {
                Step::Append(room, created) => {
                    next_signature += 1;
                    let mut d = delivery(0, room.map(|r| ["a", "b", "c"][usize::from(r)]));
                    d.signature[..4].copy_from_slice(&next_signature.to_be_bytes());
                    d.received_at_ms = 5;
                    d.created_us = created.map(|c| i64::from(c) * 1000);
                    let [Appended::New(id)] = append(&mut store, vec![d.clone()])[..] else { panic!("stored once") };
                    model.pending.insert(id, *room);
                    model.places.insert(id, if room.is_some() { d.order() } else { id });
                    if let Some(created) = d.created_us {
                        model.created.insert(id, created);
                    }
                    model.appended += 1;
                }
                Step::Claim(limit) => {
                    claim_up_to(&mut store, &mut model, *limit, LEASE);
                }
                Step::ClaimExpiring(limit) => {
                    claim_up_to(&mut store, &mut model, *limit, Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(1)); // the lease is over
                }
                Step::Renew(i) => {
                    if !model.live.is_empty() {
                        let at = i % model.live.len();
                        let claim = model.live[at].0;
                        assert_eq!(renew(&mut store, claim), [], "its claim still holds");
                        model.live[at].2 = false; // live again, if its lease had run out
                    }
                }
                Step::Late(i) => {
                    if !model.taken_over.is_empty() {
                        let claim = model.taken_over[i % model.taken_over.len()];
                        assert_eq!(renew(&mut store, claim), [claim]);
                        assert_eq!(complete(&mut store, claim, Outcome::Done), Completed::Fenced);
                    }
                }
                Step::Complete(i, kind) => {
                    if model.live.is_empty() {
                        continue;
                    }
                    let (claim, room, _) = model.live.remove(i % model.live.len());
                    let outcome = match kind {
                        0 => Outcome::Done,
                        1 => Outcome::Dead { error: "boom".into() },
                        2 => Outcome::Retry { after: Duration::ZERO, error: "again".into() },
                        _ => Outcome::Interrupted,
                    };
                    assert_eq!(complete(&mut store, claim, outcome), Completed::Recorded);
                    match kind {
                        0 => model.done(claim.id, room),
                        1 => {
                            model.left(claim.id, room);
                            model.dead.push(claim.id);
                        }
                        _ => model.released(room), // still pending
                    }
                }
                Step::Replay => {
                    let mut cli = Store::open_admin(dir.path()).unwrap();
                    assert_eq!(cli.replay(Selection::Dead).unwrap(), model.dead.len());
                    if model.dead.is_empty() {
                        continue; // nothing changed
                    }
                    let mut dead: Vec<i64> = model.dead.drain(..).collect();
                    dead.sort_unstable();
                    for id in dead {
                        let room = store.get(id).unwrap().unwrap().room.map(|r| r.as_bytes()[0] - b'a');
                        model.replayed(id, room);
                    }
                    // A room whose head is being handled keeps it; the others start again from
                    // their oldest pending delivery.
                    let live: Vec<i64> = model.live.iter().map(|(c, _, _)| c.id).collect();
                    model.heads.retain(|_, head| live.contains(head));
                }
                Step::Restart => {
                    drop(store);
                    store = open(dir.path());
                    model.live.clear();
                    model.taken_over.clear();
                    model.heads.clear();
                }
            }
        }
        // Everything left is handled, each room in turn.
        loop {
            for (claim, room, _) in std::mem::take(&mut model.live) {
                assert_eq!(complete(&mut store, claim, Outcome::Done), Completed::Recorded);
                model.done(claim.id, room);
            }
            if claim_up_to(&mut store, &mut model, 100, LEASE) == 0 {
                break;
            }
        }
        assert!(model.pending.is_empty(), "left pending: {:?}", model.pending);
        let stats = store.stats().unwrap();
        assert_eq!((stats.pending, stats.done + stats.dead), (0, model.appended as u64));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 48, ..Default::default() })]

        /// The heads kept in memory against the file's truth: whatever arrives, is claimed (and
        /// its claim runs out, is renewed, is taken over, answers late), finishes, dies, is
        /// replayed on another connection or survives a restart, each claim takes its room's
        /// head (never two of a room at once, never one out of turn), takes all it can, and
        /// hands out the file's row as the claim left it (also one held in memory since it was
        /// stored); in the end every delivery is handled.
        #[test]
        fn the_schedule_keeps_each_room_in_order_whatever_happens(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            run_steps(&steps);
        }
    }

    #[test]
    fn a_replay_by_another_process_reaches_the_running_service_s_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("b")), delivery(3, Some("b"))]);
        let claimed = claim_with(&mut store, 10, LEASE, 1);
        assert_eq!(ids(&claimed), [1, 2]);
        complete(&mut store, claimed[0].claim, Outcome::Dead { error: "boom".into() });
        complete(&mut store, claimed[1].claim, Outcome::Dead { error: "boom".into() });
        let [c3] = &claim(&mut store, 10)[..] else { panic!() };
        assert_eq!(c3.claim.id, 3);
        // The CLI, on the same file: 1 goes back to its empty room, 2 behind 3 (being handled).
        let mut cli = Store::open_admin(dir.path()).unwrap();
        assert_eq!(cli.replay(Selection::Dead).unwrap(), 2);
        drop(cli);
        assert_eq!(ids(&claim(&mut store, 10)), [1], "room a's replayed head; room b's waits for 3");
        complete(&mut store, c3.claim, Outcome::Done);
        assert_eq!(ids(&claim(&mut store, 10)), [2], "then b's replayed one");
    }

    #[test]
    fn a_room_whose_deliveries_arrived_here_goes_on_without_reading_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let runs =
            |store: &Store| store.conn.prepare_cached(NEXT_HEAD).unwrap().get_status(rusqlite::StatementStatus::Run);
        let handle_all = |store: &mut Store| {
            let mut order = Vec::new();
            loop {
                let claimed = claim(store, 10);
                if claimed.is_empty() {
                    return order;
                }
                assert_eq!(claimed.len(), 1, "one of the room at a time");
                order.push(claimed[0].claim.id);
                assert_eq!(complete(store, claimed[0].claim, Outcome::Done), Completed::Recorded);
            }
        };
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("a")), delivery(3, Some("a"))]);
        assert_eq!(handle_all(&mut store), [1, 2, 3]);
        assert_eq!(runs(&store), 0, "each next head was known here");
        // After a restart the room's deliveries are the file's: their next heads are read there.
        append(&mut store, vec![delivery(4, Some("a")), delivery(5, Some("a"))]);
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(handle_all(&mut store), [4, 5]);
        assert!(runs(&store) >= 2, "read from the file");
    }

    #[test]
    fn a_schedule_that_no_longer_matches_the_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("a")), delivery(3, Some("b"))]);
        // Changed behind the schedule's back, on its own connection (`data_version` does not
        // see it): room a's head is no longer pending.
        store.conn.execute("UPDATE deliveries SET state = 'done' WHERE id = 1", []).unwrap();
        assert_eq!(ids(&claim(&mut store, 10)), [3], "room a's head is not claimed: the file says it is done");
        assert_eq!(ids(&claim(&mut store, 10)), [2], "read again: room a goes on");
    }

    #[test]
    fn a_transaction_that_fails_leaves_the_schedule_as_the_file_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(
            &mut store,
            vec![delivery(1, Some("a")), delivery(2, Some("b")), delivery(3, Some("a")), delivery(4, Some("b"))],
        );
        let heads = claim(&mut store, 10);
        assert_eq!(ids(&heads), [1, 2]);
        // 1's outcome is written and room a advanced (here), then 2's fails: nothing of it stays.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER fail AFTER UPDATE OF state ON deliveries WHEN NEW.id = 2
                 BEGIN SELECT RAISE(ABORT, 'the disk is gone'); END",
            )
            .unwrap();
        let done = |c: &Claimed| Completion { claim: c.claim, kind: Kind::Typed, outcome: Outcome::Done };
        let completions = vec![done(&heads[0]), done(&heads[1])];
        let request = ClaimRequest { limit: 10, lease: LEASE, max_attempts: 8 };
        let failed = store.commit(&Work { completions: vec![completions], claims: vec![request], ..Work::default() });
        assert!(failed.is_err());
        store.conn.execute_batch("DROP TRIGGER fail").unwrap();
        assert_eq!(store.get(1).unwrap().unwrap().state, State::Pending, "rolled back");
        assert!(claim(&mut store, 10).is_empty(), "1 and 2 are still being handled: their rooms wait");
        assert_eq!(complete(&mut store, heads[0].claim, Outcome::Done), Completed::Recorded);
        assert_eq!(complete(&mut store, heads[1].claim, Outcome::Done), Completed::Recorded);
        assert_eq!(ids(&claim(&mut store, 10)), [3, 4]);
    }

    /// One batch of pruning (these tests prune fewer than [`PRUNE_BATCH`]).
    fn prune(store: &mut Store, before_ms: i64) -> usize {
        let bound = store.prune_bound(before_ms).unwrap();
        store.prune_batch(before_ms, bound).unwrap()
    }

    #[test]
    fn pruning_deletes_the_deliveries_handled_before_the_cutoff_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, (1..=5).map(|n| delivery(n, None)).collect());
        let claimed = claim_with(&mut store, 4, LEASE, 1);
        for (c, outcome) in claimed.iter().zip([Outcome::Done, Outcome::Done, Outcome::Dead { error: "x".into() }]) {
            complete(&mut store, c.claim, outcome);
        }
        // Handled a moment ago: kept until the cutoff passes them.
        assert_eq!(prune(&mut store, now_ms() - 60_000), 0);
        assert_eq!(prune(&mut store, now_ms() + 60_000), 2, "the two done");
        let left: Vec<(i64, State)> =
            search(&store.conn, &store.path, &Query::newest(10)).unwrap().iter().map(|d| (d.id, d.state)).collect();
        assert_eq!(left, [(5, State::Pending), (4, State::Pending), (3, State::Dead)]);
    }

    #[test]
    fn pruning_reads_the_old_end_of_the_table_not_every_retained_delivery() {
        // Maintenance prunes every 10 s on the writer thread: with a week of handled deliveries
        // retained and none old enough yet, it must not read them all to find that out.
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let now = now_ms();
        let batch: Vec<NewDelivery> = (0..3000u32)
            .map(|n| {
                let mut d = delivery(0, None);
                d.signature[..4].copy_from_slice(&n.to_be_bytes());
                d.received_at_ms = now;
                d
            })
            .collect();
        append(&mut store, batch);
        let claimed = claim(&mut store, 3000);
        let completions =
            claimed.iter().map(|c| Completion { claim: c.claim, kind: Kind::Typed, outcome: Outcome::Done }).collect();
        store.commit(&Work { completions: vec![completions], ..Work::default() }).unwrap();

        assert_eq!(prune(&mut store, now - 60_000), 0);
        let steps = |sql: &str| store.conn.prepare_cached(sql).unwrap().get_status(rusqlite::StatementStatus::VmStep);
        let (bound, delete) = (steps(PRUNE_BOUND), steps(PRUNE));
        assert!(bound < 100 && delete < 100, "{bound} and {delete} steps for 3,000 retained deliveries");
        // And the old ones do go, however many.
        assert_eq!(prune(&mut store, now + 60_000), 3000);
    }

    #[test]
    fn append_is_idempotent_by_signature_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let answers = append(&mut store, vec![delivery(1, None), delivery(2, None), delivery(1, None)]);
        assert_eq!(answers, [Appended::New(1), Appended::New(2), Appended::Duplicate(1)]);
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(append(&mut store, vec![delivery(2, None)]), [Appended::Duplicate(2)]);
    }

    #[test]
    fn a_claimed_delivery_is_not_claimed_again_and_its_room_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(
            &mut store,
            vec![delivery(1, Some("a")), delivery(2, Some("a")), delivery(3, Some("b")), delivery(4, None)],
        );
        let first = claim(&mut store, 10);
        assert_eq!(ids(&first), [1, 3, 4], "the head of each room, and the one without a room");
        assert!(first.iter().all(|c| c.attempt == 1 && c.delivery.attempts == 1), "counted at claim time");
        assert!(claim(&mut store, 10).is_empty(), "nothing is claimed twice while its claim is live");
        assert_eq!(complete(&mut store, first[0].claim, Outcome::Done), Completed::Recorded);
        assert_eq!(ids(&claim(&mut store, 10)), [2], "room a goes on once its head is done");
        let row = store.get(1).unwrap().unwrap();
        assert_eq!((row.state, row.attempts, row.claimed_by), (State::Done, 1, None));
    }

    #[test]
    fn a_claim_whose_lease_ends_at_once_takes_each_delivery_once() {
        // Found by the property test below: the lease ran out within the claim that took it,
        // and the same claim took the delivery again.
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, None), delivery(2, Some("a"))]);
        assert_eq!(ids(&claim_with(&mut store, 10, Duration::ZERO, 8)), [1, 2]);
        std::thread::sleep(Duration::from_millis(2));
        let again = claim_with(&mut store, 10, Duration::ZERO, 8);
        assert_eq!(ids(&again), [1, 2], "taken over once each, the lease having run out");
        assert!(again.iter().all(|c| c.attempt == 2));
    }

    #[test]
    fn a_retry_keeps_its_room_waiting_and_counts_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("a"))]);
        let [first] = &claim(&mut store, 10)[..] else { panic!() };
        let retry = Outcome::Retry { after: Duration::ZERO, error: "boom".into() };
        assert_eq!(complete(&mut store, first.claim, retry), Completed::Recorded);
        let [again] = &claim(&mut store, 10)[..] else { panic!("the retry, not the next of its room") };
        assert_eq!((again.claim.id, again.attempt), (1, 2));
        assert!(again.claim.fence > first.claim.fence);
        assert_eq!(store.get(1).unwrap().unwrap().last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn outcomes_and_renewals_of_a_lost_claim_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, None)]);
        // A lease that runs out at once: the next claim takes the delivery over.
        let [stale] = &claim_with(&mut store, 1, Duration::ZERO, 8)[..] else { panic!() };
        std::thread::sleep(Duration::from_millis(5));
        let [current] = &claim(&mut store, 1)[..] else { panic!("an expired claim is due again") };
        assert_eq!(current.attempt, 2);
        let lost = store.commit(&Work { renewals: vec![(vec![stale.claim, current.claim], LEASE)], ..Work::default() });
        assert_eq!(lost.unwrap().lost[0], [stale.claim]);
        assert_eq!(complete(&mut store, stale.claim, Outcome::Done), Completed::Fenced);
        assert_eq!(store.get(1).unwrap().unwrap().state, State::Pending, "the late outcome changed nothing");
        assert_eq!(complete(&mut store, current.claim, Outcome::Done), Completed::Recorded);
        assert_eq!(complete(&mut store, current.claim, Outcome::Done), Completed::Fenced, "recorded once");
    }

    #[test]
    fn a_claim_that_ran_out_on_its_last_attempt_is_dead_and_its_room_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("a"))]);
        for attempt in 1..=2 {
            let [c] = &claim_with(&mut store, 1, Duration::ZERO, 2)[..] else { panic!() };
            assert_eq!((c.claim.id, c.attempt), (1, attempt));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ids(&claim_with(&mut store, 1, LEASE, 2)), [2]);
        let dead = store.get(1).unwrap().unwrap();
        assert_eq!((dead.state, dead.attempts), (State::Dead, 2));
        assert!(dead.last_error.unwrap().contains("never finished"));
    }

    #[test]
    fn a_batch_of_mixed_outcomes_records_each_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        // Two deliveries in each of six rooms: a head, and the next behind it.
        let rooms = ["a", "b", "c", "d", "e", "f"];
        let deliveries = (0..12u8).map(|n| delivery(n + 1, Some(rooms[usize::from(n % 6)]))).collect();
        append(&mut store, deliveries);
        let heads = claim(&mut store, 12);
        assert_eq!(ids(&heads), [1, 2, 3, 4, 5, 6]);
        let outcomes = [
            Outcome::Done,
            Outcome::Retry { after: Duration::from_secs(60), error: "later".into() },
            Outcome::Dead { error: "boom".into() },
            Outcome::Interrupted,
            Outcome::Done,
            Outcome::Done,
        ];
        let mut completions: Vec<Completion> = heads
            .iter()
            .zip(outcomes)
            .map(|(c, outcome)| Completion { claim: c.claim, kind: Kind::Typed, outcome })
            .collect();
        completions[5].claim.fence += 1; // no longer its claim
        let answers = store.commit(&Work { completions: vec![completions], ..Work::default() }).unwrap().completed;
        use Completed::{Fenced, Recorded};
        assert_eq!(answers, [vec![Recorded, Recorded, Recorded, Recorded, Recorded, Fenced]]);
        let row = |id: i64| {
            let d = store.get(id).unwrap().unwrap();
            (d.state, d.attempts, d.claimed_by.is_some(), d.last_error)
        };
        assert_eq!(row(1), (State::Done, 1, false, None));
        assert_eq!(row(2), (State::Pending, 1, false, Some("later".into())));
        assert_eq!(row(3), (State::Dead, 1, false, Some("boom".into())));
        assert_eq!(row(4), (State::Pending, 0, false, None));
        assert_eq!(row(5), (State::Done, 1, false, None));
        assert_eq!(row(6), (State::Pending, 1, true, None), "fenced: still its claim's");
        // The rooms whose head is done or dead go on; the one retrying and the interrupted one
        // are claimable again (the retry only when it is due).
        assert_eq!(ids(&claim(&mut store, 12)), [4, 7, 9, 11]);
    }

    #[test]
    fn an_interrupted_attempt_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a"))]);
        let [c] = &claim(&mut store, 1)[..] else { panic!() };
        assert_eq!(complete(&mut store, c.claim, Outcome::Interrupted), Completed::Recorded);
        let row = store.get(1).unwrap().unwrap();
        assert_eq!((row.state, row.attempts, row.claimed_by), (State::Pending, 0, None));
        assert_eq!(claim(&mut store, 1)[0].attempt, 1);
    }

    #[test]
    fn claims_of_a_process_that_died_are_released_at_the_next_start_and_stay_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, None)]);
        claim(&mut store, 1);
        drop(store);
        let mut store = open(dir.path());
        assert_eq!(claim(&mut store, 1)[0].attempt, 2, "due at once, not after the lease");
    }

    #[test]
    fn replay_puts_a_dead_delivery_back_in_its_room_and_leaves_pending_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        append(&mut store, vec![delivery(1, Some("a")), delivery(2, Some("a")), delivery(3, Some("a"))]);
        let [c] = &claim(&mut store, 1)[..] else { panic!() };
        complete(&mut store, c.claim, Outcome::Dead { error: "boom".into() });
        let [c2] = &claim(&mut store, 1)[..] else { panic!() };
        assert_eq!(c2.claim.id, 2);
        // 2 runs while 1 is replayed: 2 stays the head, 3 follows it, then 1.
        assert_eq!(store.replay(Selection::Dead).unwrap(), 1);
        assert_eq!(store.replay(Selection::One(2)).unwrap(), 0, "a pending delivery is not replayed");
        assert!(claim(&mut store, 10).is_empty());
        complete(&mut store, c2.claim, Outcome::Done);
        let [c3] = &claim(&mut store, 10)[..] else { panic!() };
        assert_eq!(c3.claim.id, 3, "behind whatever of its room was pending already");
        complete(&mut store, c3.claim, Outcome::Done);
        let [c1] = &claim(&mut store, 10)[..] else { panic!() };
        assert_eq!((c1.claim.id, c1.attempt), (1, 1), "a replay counts attempts afresh");
        assert_eq!(store.stats().unwrap().claimed_by, [("me".to_owned(), 1)]);
    }

    #[test]
    fn claiming_and_advancing_a_room_read_indexes_not_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let plan = |sql: &str| -> String {
            let mut statement = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = statement.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let head = plan(&HEAD.replace("?1", "5"));
        assert!(head.contains("INTEGER PRIMARY KEY"), "{head}");
        let later = plan(&LATER.replace("?1", "'a'").replace("?2", "''").replace("?3", "5"));
        assert!(later.contains("PRIMARY KEY (room=? AND recording=?)"), "{later}");
        let next = plan(&NEXT_HEAD.replace("?1", "'a'"));
        assert!(next.contains("deliveries_pending (room=?") && !next.contains("TEMP B-TREE"), "{next}");
        let window = plan(&ROOMLESS.replace("?1", "5"));
        assert!(
            window.contains("deliveries_pending (room=? AND ord=? AND id>?)") && !window.contains("TEMP B-TREE"),
            "{window}"
        );
        // The whole pending set, deliveries without a room included, is the same index (a
        // backlog of done deliveries is never read to count or release what is pending).
        for sql in [
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
            "SELECT MIN(received_at) FROM deliveries WHERE state = 'pending'",
            "SELECT DISTINCT room FROM deliveries WHERE state = 'pending' AND room IS NOT NULL",
            "UPDATE deliveries SET owner = NULL, lease_until = NULL WHERE state = 'pending' AND owner IS NOT NULL",
        ] {
            let whole = plan(sql);
            assert!(whole.contains("USING") && whole.contains("INDEX deliveries_pending"), "{sql}: {whole}");
        }
    }

    #[test]
    fn a_second_process_on_the_directory_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let error = Store::open_service(dir.path(), "other").err().unwrap();
        let text = error.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("(me)"), "{text}");
        assert_eq!(error.kind, crate::inbox::ErrorKind::Invalid);
    }

    #[test]
    fn a_deleted_file_or_log_is_an_outage_never_a_new_inbox() {
        for victim in [FILE_NAME, "inbox.sqlite3-wal"] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            append(&mut store, vec![delivery(1, None)]);
            std::fs::remove_file(dir.path().join(victim)).unwrap();
            let error = store.commit(&Work { appends: vec![delivery(2, None)], ..Work::default() }).err().unwrap();
            assert!(error.is_unavailable() && error.to_string().contains("deleted"), "{victim}: {error}");
            assert!(store.check().is_err(), "{victim}: not ready");
            assert!(!dir.path().join(FILE_NAME).exists() || victim != FILE_NAME, "no new file");
        }
    }

    #[test]
    fn a_file_from_today_s_first_schema_is_upgraded_and_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The inbox as version 0.1.0 wrote it: its schema, no version, two rooms pending.
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(schema::MIGRATIONS.0[0]).unwrap();
            for (id, room, state) in [(1, "a", "done"), (2, "a", "pending"), (3, "a", "pending"), (4, "b", "pending")] {
                conn.execute(
                    "INSERT INTO deliveries (id, signature, timestamp, timestamp_ms, event, kind, room, body,
                                             received_at, state, attempts)
                     VALUES (?1, ?2, '1', ?1, 'recordingStarted', 'typed', ?3, x'7b7d', ?1, ?4, 0)",
                    params![id, vec![id as u8; 32], room, state],
                )
                .unwrap();
            }
        }
        let mut store = open(dir.path());
        assert_eq!(schema::status(&store.conn).unwrap(), Status::Current);
        let first = claim(&mut store, 10);
        assert_eq!(ids(&first), [2, 4]);
        complete(&mut store, first[0].claim, Outcome::Done);
        assert_eq!(ids(&claim(&mut store, 10)), [3]);
        assert_eq!(append(&mut store, vec![delivery(2, None)]), [Appended::Duplicate(2)], "identities kept");
    }

    #[test]
    fn a_file_at_version_2_is_brought_up_to_date_and_keeps_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Version 2: two indexes of pending deliveries; room a has a backlog behind its head,
            // one delivery has no room, one is done.
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(schema::MIGRATIONS.0[0]).unwrap();
            conn.execute_batch(schema::MIGRATIONS.0[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            for (id, room, state, head) in [
                (1, Some("a"), "pending", 1),
                (2, Some("a"), "pending", 0),
                (3, None, "pending", 1),
                (4, Some("b"), "done", 0),
            ] {
                conn.execute(
                    "INSERT INTO deliveries (id, signature, timestamp, timestamp_ms, event, kind, room, body,
                                             received_at, due_at, state, head)
                     VALUES (?1, ?2, '1', ?1, 'recordingStarted', 'typed', ?3, x'7b7d', ?1, ?1, ?4, ?5)",
                    params![id, vec![id as u8; 32], room, state, head],
                )
                .unwrap();
            }
        }
        let mut store = open(dir.path());
        let indexes: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // One index of pending deliveries (version 3), none of heads (version 4), fallbacks'
        // (version 7).
        assert_eq!(indexes, ["deliveries_dead", "deliveries_fallback", "deliveries_pending"]);
        assert_eq!(depth(&store.conn, &store.path).unwrap().pending, 3, "pending with and without a room");
        let first = claim(&mut store, 10);
        assert_eq!(ids(&first), [1, 3]);
        assert!(first.iter().all(|c| c.delivery.queued_at == c.delivery.received_at), "queued at their receipt");
        complete(&mut store, first[0].claim, Outcome::Done);
        assert_eq!(ids(&claim(&mut store, 10)), [2], "the room's backlog follows its head");
        assert_eq!(append(&mut store, vec![delivery(9, Some("a"))]), [Appended::New(5)]);
        assert!(claim(&mut store, 10).is_empty(), "behind 2, which runs");
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        Connection::open(dir.path().join(FILE_NAME)).unwrap().pragma_update(None, "user_version", 99).unwrap();
        for error in
            [Store::open_service(dir.path(), "me").err().unwrap(), Store::open_admin(dir.path()).err().unwrap()]
        {
            assert!(error.to_string().contains("schema version 99") && error.to_string().contains("newer"), "{error}");
        }
    }
}
