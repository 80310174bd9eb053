//! The inbox's tables, and how a file written by an older version is brought up to date.
//!
//! The version is SQLite's `user_version`. Each migration runs once, in order, all of them in
//! one transaction with the version bump: a crash or an error leaves the file as it was. A
//! file from a newer version is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use crate::inbox::StoreError;
use crate::inbox::migrations::Migrations;

/// Migration `n` (1-based) brings a file from version `n - 1` to `n`.
pub(crate) const MIGRATIONS: Migrations = Migrations(&[
    // 1: the first inbox (no version was written then: a file with the table and version 0 is
    // at version 1, and this statement leaves it as it is).
    "
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
        -- A delivery's identity is its signature. The timestamp goes first so that the index
        -- grows at its end (deliveries arrive in timestamp order), not at random pages.
        UNIQUE (timestamp_ms, signature)
    );
    CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (id) WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS deliveries_pending_room ON deliveries (room, id)
        WHERE state = 'pending' AND room IS NOT NULL;
    CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (id) WHERE state = 'dead';
    ",
    // 2: claims. `due_at` is when a delivery may next be claimed: on arrival its arrival time,
    // after a failure its retry time. A claim sets `owner`, a new `fence` (claims are counted
    // and never reset: a claim's token) and `lease_until`; a claim whose lease has run out is
    // simply claimable again. `head` marks the one delivery of each room that may be claimed
    // (its oldest pending one; every pending delivery without a room): claiming reads the due
    // heads through their own small index instead of scanning a room's backlog, and taking a
    // claim changes no index.
    "
    ALTER TABLE deliveries RENAME COLUMN next_attempt_at TO due_at;
    ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN owner TEXT;
    ALTER TABLE deliveries ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
    UPDATE deliveries SET fence = attempts;
    UPDATE deliveries SET due_at = received_at WHERE state = 'pending' AND due_at < received_at;
    UPDATE deliveries SET head = 1
     WHERE state = 'pending'
       AND (room IS NULL OR id = (SELECT MIN(e.id) FROM deliveries e
                                  WHERE e.room = deliveries.room AND e.state = 'pending'));
    CREATE INDEX deliveries_ready ON deliveries (due_at, id) WHERE head = 1;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    ",
    // 3: one index of pending deliveries instead of two. Every pending delivery is in it by
    // (room, id), those without a room first (NULL sorts first): a room's backlog is a range of
    // it, and so is the whole pending set (counts, the oldest, claims to release). Each index
    // a delivery passes through costs its arrival and its outcome an insert and a delete, and
    // each commit a page of the log; this one index serves the same lookups
    // (`bench/results/figures-in-code.md`, one-pending-index).
    "
    DROP INDEX deliveries_pending;
    DROP INDEX deliveries_pending_room;
    CREATE INDEX deliveries_pending ON deliveries (room, id) WHERE state = 'pending';
    ",
    // 4: the heads are kept in the writer's memory (`schedule.rs`), read from the pending
    // index when the service starts: the `head` column is no longer written or read (left in
    // place: dropping a column rewrites every row), and its index goes. A delivery's arrival, its
    // outcome and each claim no longer maintain it.
    "
    DROP INDEX deliveries_ready;
    ",
    // 5: a room's order is `COALESCE(seq, id)`: the order its deliveries arrived in, except
    // that a replayed one gets a `seq` past every delivery of the file, so that it is handled
    // after whatever of its room is pending already (ties, with a later arrival, go by id).
    "
    ALTER TABLE deliveries ADD COLUMN seq INTEGER;
    DROP INDEX deliveries_pending;
    CREATE INDEX deliveries_pending ON deliveries (room, COALESCE(seq, id)) WHERE state = 'pending';
    ",
    // 6: the provider's order. A room's order is `ord` (microseconds), then `id`: the body's
    // `creationDate`, or its arrival when it has none; a replay puts a delivery past whatever
    // of its room is pending, and past now (`seq` is no longer written). A room's pending
    // deliveries from before the upgrade keep their order, before anything created after
    // it. `created` and `recording` come from the body; `late_*` name the later event of its
    // room that was handled before its last claim. `handled` keeps the latest event handled
    // in each room (`recording` '') and each recording, by `creationDate`.
    "
    ALTER TABLE deliveries ADD COLUMN ord INTEGER;
    ALTER TABLE deliveries ADD COLUMN created INTEGER;
    ALTER TABLE deliveries ADD COLUMN recording TEXT;
    ALTER TABLE deliveries ADD COLUMN late_id INTEGER;
    ALTER TABLE deliveries ADD COLUMN late_event TEXT;
    ALTER TABLE deliveries ADD COLUMN late_created INTEGER;
    UPDATE deliveries
       SET ord = COALESCE(seq, id) - (SELECT MAX(COALESCE(seq, id)) FROM deliveries) - 1
                 + CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
     WHERE state = 'pending' AND room IS NOT NULL;
    DROP INDEX deliveries_pending;
    CREATE INDEX deliveries_pending ON deliveries (room, ord, id) WHERE state = 'pending';
    CREATE TABLE handled (
        room      TEXT    NOT NULL,
        recording TEXT    NOT NULL,
        id        INTEGER NOT NULL,
        event     TEXT,
        created   INTEGER NOT NULL,
        done_at   INTEGER NOT NULL,
        PRIMARY KEY (room, recording)
    ) WITHOUT ROWID;
    ",
    // 7: what the operator's console shows. `claimed_at` is when the last claim was taken;
    // `history` (a JSON array) gets one entry as each attempt ends: its replica, start,
    // duration, outcome and error. The fallbacks are counted, and listed, through an index of
    // their own (few deliveries are). Rooms and recordings have none: each index costs every
    // delivery's arrival and outcome (`bench/results/2026-12-06.md`, console-indexes).
    "
    ALTER TABLE deliveries ADD COLUMN claimed_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN history TEXT;
    CREATE INDEX deliveries_fallback ON deliveries (id) WHERE kind = 'fallback';
    ",
    // 8: `queued_at` is when the transaction that stored a delivery, or replayed it, began: its
    // handler's lag is measured from there, not from its receipt. Rows stored before have none
    // and are read with their receipt.
    "
    ALTER TABLE deliveries ADD COLUMN queued_at INTEGER;
    ",
]);

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.version();

/// Where a file stands against this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Current,
    /// Older: [`migrate`] brings it up to date.
    Older(i64),
    /// Newer than this build knows.
    Newer(i64),
}

pub fn status(conn: &Connection) -> Result<Status, StoreError> {
    let version = version(conn)?;
    Ok(match version.cmp(&VERSION) {
        std::cmp::Ordering::Equal => Status::Current,
        std::cmp::Ordering::Less => Status::Older(version),
        std::cmp::Ordering::Greater => Status::Newer(version),
    })
}

/// Brings the file up to [`VERSION`] in one transaction; refuses a newer one.
pub fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| {
        StoreError::unavailable(format!("cannot bring the inbox {} up to date", path.display())).caused_by(e)
    };
    // IMMEDIATE: two processes starting at once migrate one after the other, and the second
    // sees the first one's version.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
    let from = version(&tx)?;
    let store = format!("the inbox {}", path.display());
    for migration in MIGRATIONS.pending(&store, from)? {
        tx.execute_batch(migration).map_err(failed)?;
    }
    tx.pragma_update(None, "user_version", VERSION).map_err(failed)?;
    tx.commit().map_err(failed)?;
    MIGRATIONS.upgraded(&store, from);
    Ok(())
}

/// The refusal of a file this build does not know.
pub fn newer(path: &std::path::Path, version: i64) -> StoreError {
    MIGRATIONS.newer(&format!("the inbox {}", path.display()), version)
}

/// The version of the file; a file with the first inbox's table but no version is version 1.
fn version(conn: &Connection) -> Result<i64, StoreError> {
    let read = || -> rusqlite::Result<i64> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != 0 {
            return Ok(version);
        }
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'",
            [],
            |r| r.get(0),
        )?;
        Ok(tables)
    };
    read().map_err(|e| StoreError::unavailable("cannot read the inbox's schema version").caused_by(e))
}
