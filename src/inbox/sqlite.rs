//! The inbox in an SQLite file (WAL, `synchronous=FULL`): embedded, nothing to install.
//!
//! Before each commit the store checks that its file is still the one it opened and is not
//! marked read-only: SQLite would happily keep writing to a file whose directory was removed
//! (through the open descriptor), and acknowledging into a deleted file would lose deliveries.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Appended, Depth, NewDelivery, Outcome, State, Stats, Store, StoreError, Stored};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "inbox.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    signature       BLOB    NOT NULL,
    timestamp       TEXT    NOT NULL,
    timestamp_ms    INTEGER NOT NULL,
    event           TEXT,
    kind            TEXT    NOT NULL,
    room            TEXT,
    body            BLOB    NOT NULL,
    received_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    done_at         INTEGER,
    -- A delivery's identity is its signature. The timestamp goes first so that the index grows
    -- at its end (deliveries arrive in timestamp order) instead of at random pages: a commit
    -- then writes a few index pages, not one per delivery.
    UNIQUE (timestamp_ms, signature)
);
-- Only pending deliveries are looked up by the dispatcher, so only they are indexed: a handled
-- delivery leaves these indexes instead of moving within them.
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_pending_room ON deliveries (room, id) WHERE state = 'pending' AND room IS NOT NULL;
-- Dead deliveries are rare and wait for a replay: indexed so that counting them is cheap.
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (id) WHERE state = 'dead';
";

const COLUMNS: &str =
    "id, event, state, kind, attempts, received_at, timestamp, timestamp_ms, room, signature, body, last_error";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// (device, inode) of the file when it was opened.
    identity: Option<(u64, u64)>,
    /// What `PRAGMA synchronous` is set to: FULL (`true`) or NORMAL; `None` if unknown.
    sync_full: Option<bool>,
}

/// Which deliveries `inbox list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    State(State),
    /// Those that matched no typed webhook.
    Fallback,
    All,
}

/// Which deliveries `inbox replay` hands to the handlers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    One(i64),
    Dead,
    Fallback,
}

impl SqliteStore {
    /// Opens (creating if needed) the inbox in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create the data directory {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let conn = Self::connect(&path)?;
        let identity = identity(&path);
        Ok(Self { conn, path, identity, sync_full: Some(true) })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Every commit is fsynced: an acknowledged delivery survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The CLI may write (replay) while the service runs.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // 8 MiB of page cache keeps the hot ends of the table and its indexes in memory (16 MiB
        // measured no faster, and its resident memory counts against the 64 MiB budget).
        conn.pragma_update(None, "cache_size", -8 * 1024)?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `batch` and records `outcomes` in one transaction. It is fsynced if it stores
    /// anything: an acknowledged delivery must survive a power cut. Outcomes alone are not (a
    /// lost outcome only means handling a delivery again, at least once); the next fsync
    /// covers them.
    fn commit(&mut self, batch: &[NewDelivery], outcomes: &[Outcome]) -> Result<Vec<Appended>, StoreError> {
        self.guard()?;
        self.set_sync_full(!batch.is_empty())?;
        let tx = self.conn.transaction()?;
        let answers = insert(&tx, batch)?;
        update(&tx, outcomes)?;
        tx.commit()?;
        Ok(answers)
    }

    /// `PRAGMA synchronous`, set only when it changes (each one is parsed and run anew).
    fn set_sync_full(&mut self, full: bool) -> Result<(), StoreError> {
        if self.sync_full != Some(full) {
            self.sync_full = None; // unknown until it succeeds
            self.conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.sync_full = Some(full);
        }
        Ok(())
    }

    /// Refuses to write when the file is gone, replaced, or marked read-only; reopens when the
    /// data directory has come back without the file.
    fn guard(&mut self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| StoreError(format!("the data directory {} is unavailable: {e}", dir.display())))?;
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.permissions().readonly() || dir_meta.permissions().readonly() => {
                Err(StoreError(format!("the inbox {} is read-only", self.path.display())))
            }
            Ok(_) if identity(&self.path) == self.identity => Ok(()),
            Ok(_) => Err(StoreError(format!(
                "the inbox {} was replaced while the service ran; restart to use the new file",
                self.path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir_meta.permissions().readonly() => {
                log::warn!("the inbox {} disappeared; starting a new one there", self.path.display());
                self.conn = Self::connect(&self.path)?;
                self.sync_full = Some(true);
                self.identity = identity(&self.path);
                Ok(())
            }
            Err(e) => Err(StoreError(format!("the inbox {} is unavailable: {e}", self.path.display()))),
        }
    }

    pub fn list(&self, filter: Filter, event: Option<&str>, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let (condition, state) = match filter {
            Filter::State(state) => ("state = ?1", state.as_str()),
            Filter::Fallback => ("kind = ?1", "fallback"),
            Filter::All => ("?1 = ?1", ""),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries WHERE {condition} AND (?2 IS NULL OR event = ?2) ORDER BY id LIMIT ?3"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let rows = statement.query_map(params![state, event, limit as i64], stored)?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    pub fn get(&self, id: i64) -> Result<Option<Stored>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], stored).optional()?)
    }

    /// Makes the selected deliveries pending again, with a fresh count of attempts.
    pub fn replay(&self, selection: Selection) -> Result<usize, StoreError> {
        let reset = "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, last_error = NULL, done_at = NULL";
        let changed = match selection {
            Selection::One(id) => self.conn.execute(&format!("{reset} WHERE id = ?1"), [id])?,
            Selection::Dead => self.conn.execute(&format!("{reset} WHERE state = 'dead'"), [])?,
            Selection::Fallback => self.conn.execute(&format!("{reset} WHERE kind = 'fallback'"), [])?,
        };
        Ok(changed)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        let mut statement = self.conn.prepare("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let count = row.get::<_, i64>(1)? as u64;
            match row.get_ref(0)?.as_str().unwrap_or_default() {
                "pending" => stats.pending = count,
                "done" => stats.done = count,
                "dead" => stats.dead = count,
                _ => {}
            }
        }
        stats.fallback = self
            .conn
            .query_row("SELECT COUNT(*) FROM deliveries WHERE kind = 'fallback'", [], |r| r.get::<_, i64>(0))?
            as u64;
        stats.oldest_pending_received_at =
            self.conn.query_row("SELECT MIN(received_at) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))?;
        Ok(stats)
    }
}

impl Store for SqliteStore {
    fn append(&mut self, batch: &[NewDelivery]) -> Result<Vec<Appended>, StoreError> {
        self.commit(batch, &[])
    }

    fn append_and_record(
        &mut self,
        batch: &[NewDelivery],
        outcomes: &[Outcome],
    ) -> (Result<Vec<Appended>, StoreError>, Result<(), StoreError>) {
        // One transaction: the newest rows are the ones both write to, so their pages go to
        // the log once, and there is one set of locks and one fsync.
        match self.commit(batch, outcomes) {
            Ok(answers) => (Ok(answers), Ok(())),
            Err(error) => (Err(error.clone()), Err(error)),
        }
    }

    fn due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        // The first pending delivery of each room only: a room's later events wait until the
        // earlier ones are done or dead (even while an earlier one waits for its retry).
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries d
             WHERE state = 'pending' AND next_attempt_at <= ?1
               AND (room IS NULL OR id = (SELECT MIN(e.id) FROM deliveries e
                                          WHERE e.room = d.room AND e.state = 'pending' AND e.room IS NOT NULL))
             ORDER BY id LIMIT ?2"
        );
        let mut statement = self.conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params![now_ms, limit as i64], stored)?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    fn record(&mut self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        self.commit(&[], outcomes).map(drop)
    }

    fn prune(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        self.guard()?;
        // In bounded batches, oldest first (done deliveries cluster at the low ids), so a large
        // backlog never holds the writer, and with it the request path, for long.
        let mut pruned = 0;
        loop {
            let n = self.conn.execute(
                "DELETE FROM deliveries WHERE id IN
                   (SELECT id FROM deliveries WHERE state = 'done' AND done_at < ?1 ORDER BY id LIMIT 5000)",
                [before_ms],
            )?;
            pruned += n;
            if n < 5000 {
                return Ok(pruned);
            }
        }
    }

    fn depth(&mut self) -> Result<Depth, StoreError> {
        // Literal states, not parameters: only then can SQLite use the partial indexes.
        let count = |sql: &str| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(Depth {
            pending: count("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")? as u64,
            dead: count("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")? as u64,
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.guard()?;
        // Takes the write lock and gives it back: fails if the database cannot be written.
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }
}

fn stored(row: &Row<'_>) -> rusqlite::Result<Stored> {
    let state = match row.get_ref(2)?.as_str()? {
        "done" => State::Done,
        "dead" => State::Dead,
        _ => State::Pending,
    };
    let kind = if row.get_ref(3)?.as_str()? == "typed" { "typed" } else { "fallback" };
    let signature: Vec<u8> = row.get(9)?;
    Ok(Stored {
        id: row.get(0)?,
        event: row.get(1)?,
        state,
        kind,
        attempts: row.get(4)?,
        received_at: row.get(5)?,
        timestamp: row.get(6)?,
        timestamp_ms: row.get(7)?,
        room: row.get(8)?,
        signature: signature.try_into().unwrap_or([0; 32]),
        body: row.get(10)?,
        last_error: row.get(11)?,
    })
}

#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

fn insert(tx: &rusqlite::Transaction<'_>, batch: &[NewDelivery]) -> Result<Vec<Appended>, StoreError> {
    let mut answers = Vec::with_capacity(batch.len());
    if batch.is_empty() {
        return Ok(answers);
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (signature, timestamp, timestamp_ms, event, kind, room, body, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (timestamp_ms, signature) DO NOTHING RETURNING id",
    )?;
    let mut existing = tx.prepare_cached("SELECT id FROM deliveries WHERE timestamp_ms = ?1 AND signature = ?2")?;
    for d in batch {
        let kind = if d.typed { "typed" } else { "fallback" };
        let inserted = insert
            .query_row(
                params![
                    &d.signature[..],
                    d.timestamp,
                    d.timestamp_ms,
                    d.event,
                    kind,
                    d.room,
                    &d.body[..],
                    d.received_at_ms
                ],
                |r| r.get(0),
            )
            .optional()?;
        answers.push(match inserted {
            Some(id) => Appended::New(id),
            None => Appended::Duplicate(existing.query_row(params![d.timestamp_ms, &d.signature[..]], |r| r.get(0))?),
        });
    }
    Ok(answers)
}

fn update(tx: &rusqlite::Transaction<'_>, outcomes: &[Outcome]) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, kind = ?4, next_attempt_at = ?5, last_error = ?6, done_at = ?7
         WHERE id = ?1",
    )?;
    for o in outcomes {
        let (state, next, error, done_at) = match (&o.result, o.retry_at_ms) {
            (Ok(()), _) => (State::Done, 0, None, Some(o.now_ms)),
            (Err(e), Some(at)) => (State::Pending, at, Some(e.as_str()), None),
            (Err(e), None) => (State::Dead, 0, Some(e.as_str()), Some(o.now_ms)),
        };
        let kind = if o.typed { "typed" } else { "fallback" };
        update.execute(params![o.id, state.as_str(), o.attempts, kind, next, error, done_at])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8, room: Option<&str>) -> NewDelivery {
        NewDelivery {
            signature: [n; 32],
            timestamp: format!("{n}"),
            timestamp_ms: i64::from(n),
            event: Some("recordingStarted".into()),
            typed: true,
            room: room.map(Into::into),
            body: format!("{{\"n\":{n}}}").into(),
            received_at_ms: i64::from(n),
        }
    }

    fn outcome(id: i64, result: Result<(), String>, retry_at_ms: Option<i64>) -> Outcome {
        Outcome { id, attempts: 1, typed: true, result, retry_at_ms, now_ms: 100 }
    }

    #[test]
    fn append_is_idempotent_by_signature_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let answers = store.append(&[delivery(1, None), delivery(2, None), delivery(1, None)]).unwrap();
        assert_eq!(answers, [Appended::New(1), Appended::New(2), Appended::Duplicate(1)]);
        drop(store);
        let mut store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.append(&[delivery(2, None)]).unwrap(), [Appended::Duplicate(2)]);
    }

    #[test]
    fn appends_and_outcomes_commit_together_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.append(&[delivery(1, None), delivery(2, None)]).unwrap();
        let (appended, recorded) = store.append_and_record(
            &[delivery(3, None), delivery(1, None)],
            &[outcome(1, Ok(()), None), outcome(2, Err("boom".into()), None)],
        );
        assert_eq!(appended.unwrap(), [Appended::New(3), Appended::Duplicate(1)]);
        recorded.unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        let state = |id| store.get(id).unwrap().unwrap().state;
        assert_eq!((state(1), state(2), state(3)), (State::Done, State::Dead, State::Pending));
    }

    #[test]
    fn a_failed_commit_fails_the_appends_and_the_outcomes_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.append(&[delivery(1, None)]).unwrap();
        let file = dir.path().join(FILE_NAME);
        let mut permissions = std::fs::metadata(&file).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&file, permissions).unwrap();
        let (appended, recorded) = store.append_and_record(&[delivery(2, None)], &[outcome(1, Ok(()), None)]);
        assert!(appended.is_err() && recorded.is_err(), "{appended:?} {recorded:?}");
    }

    #[test]
    fn due_keeps_each_room_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store
            .append(&[delivery(1, Some("a")), delivery(2, Some("a")), delivery(3, Some("b")), delivery(4, None)])
            .unwrap();
        let ids = |store: &mut SqliteStore, now| store.due(now, 10).unwrap().iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(&mut store, 0), [1, 3, 4]);
        // 1 fails and waits for its retry: room a's later event waits too.
        store.record(&[outcome(1, Err("boom".into()), Some(50))]).unwrap();
        assert_eq!(ids(&mut store, 0), [3, 4]);
        assert_eq!(ids(&mut store, 50), [1, 3, 4]);
        store.record(&[outcome(1, Ok(()), None)]).unwrap();
        assert_eq!(ids(&mut store, 50), [2, 3, 4]);
    }

    #[test]
    fn dead_deliveries_are_kept_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.append(&[delivery(1, None), delivery(2, None)]).unwrap();
        store.record(&[outcome(1, Err("boom".into()), None), outcome(2, Ok(()), None)]).unwrap();
        assert_eq!(store.prune(1000).unwrap(), 1, "done ones are pruned");
        let dead = store.list(Filter::State(State::Dead), None, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("boom"));
        assert_eq!(store.replay(Selection::Dead).unwrap(), 1);
        assert_eq!(store.due(0, 10).unwrap()[0].id, 1);
        assert_eq!(store.stats().unwrap().pending, 1);
        assert_eq!(store.depth().unwrap(), Depth { pending: 1, dead: 0 });
    }

    #[test]
    fn a_read_only_or_removed_inbox_refuses_writes_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut store = SqliteStore::open(&data).unwrap();
        let file = data.join(FILE_NAME);
        let mut permissions = std::fs::metadata(&file).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&file, permissions.clone()).unwrap();
        assert!(store.append(&[delivery(1, None)]).unwrap_err().0.contains("read-only"));
        assert!(store.check().is_err());
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&file, permissions).unwrap();
        assert_eq!(store.append(&[delivery(1, None)]).unwrap(), [Appended::New(1)]);

        let moved = dir.path().join("moved");
        std::fs::rename(&data, &moved).unwrap();
        assert!(store.append(&[delivery(2, None)]).unwrap_err().0.contains("unavailable"));
        std::fs::rename(&moved, &data).unwrap();
        assert_eq!(store.append(&[delivery(2, None)]).unwrap(), [Appended::New(2)]);
    }
}
