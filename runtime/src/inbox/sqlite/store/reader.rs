//! A read-only connection beside the writer's, for counts.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, count, failed};
use crate::inbox::{Depth, StoreError};

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
