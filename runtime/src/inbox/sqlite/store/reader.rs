//! A read-only connection beside the writer's, for counts.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, count, failed};
use crate::inbox::{Counts, Depth, StoreError};

/// A read-only connection to the inbox in `path`, beside the writer's: for counts that read
/// an index whole, which on the writer's connection would hold back every acknowledgement for as
/// long as they read (`bench/results/figures-in-code.md`, counts-off-the-writer). In WAL mode it reads
/// the last commit without waiting for the writer, and keeps nothing open between queries.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| failed(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| failed(path, e))?;
    Ok(conn)
}

/// How many deliveries are pending and dead, read on `conn`.
pub fn depth(conn: &Connection, path: &Path) -> Result<Depth, StoreError> {
    // Literal states, not parameters: only then can SQLite use the partial indexes.
    let number = |sql: &str| {
        conn.prepare_cached(sql).and_then(|mut s| s.query_row([], |r| r.get(0).map(count))).map_err(|e| failed(path, e))
    };
    Ok(Depth {
        pending: number("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")?,
        dead: number("SELECT COUNT(*) FROM deliveries WHERE state = 'dead'")?,
    })
}

/// What waits, and who holds it, read on `conn` through the partial indexes of pending, dead
/// and fallback deliveries.
pub fn counts(conn: &Connection, path: &Path) -> Result<Counts, StoreError> {
    let Depth { pending, dead } = depth(conn, path)?;
    let read = || -> rusqlite::Result<Counts> {
        let fallback = conn
            .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE kind = 'fallback'")?
            .query_row([], |r| r.get(0).map(count))?;
        Ok(Counts { pending, dead, fallback, claimed_by: claims(conn)? })
    };
    read().map_err(|e| failed(path, e))
}

/// Claims by holder, through the pending index.
pub(super) fn claims(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut holders = conn.prepare_cached(
        "SELECT owner, COUNT(*) FROM deliveries WHERE state = 'pending' AND owner IS NOT NULL
         GROUP BY owner ORDER BY owner",
    )?;
    holders.query_map([], |r| Ok((r.get(0)?, count(r.get(1)?))))?.collect()
}
