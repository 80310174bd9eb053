//! Deleting handled deliveries past their retention, in bounded batches, and folding the log
//! back into the file.

use std::time::Duration;

use rusqlite::OptionalExtension;

use super::{BUSY_TIMEOUT, Store, WAL_LIMIT};
use crate::inbox::StoreError;

impl Store {
    /// Where pruning before `before_ms` stops reading: see [`PRUNE_BOUND`].
    pub fn prune_bound(&self, before_ms: i64) -> Result<i64, StoreError> {
        let bound = self
            .conn
            .prepare_cached(PRUNE_BOUND)
            .and_then(|mut s| s.query_row([before_ms], |r| r.get(0)).optional())
            .map_err(|e| self.failed(e))?;
        Ok(bound.unwrap_or(i64::MAX))
    }

    /// Deletes up to [`PRUNE_BATCH`] deliveries handled before `before_ms`, oldest first (done
    /// deliveries cluster at the low ids), among those before `bound` ([`Self::prune_bound`]).
    /// Fewer than [`PRUNE_BATCH`]: nothing is left to prune.
    pub fn prune_batch(&mut self, before_ms: i64, bound: i64) -> Result<usize, StoreError> {
        self.guard()?;
        self.conn.prepare_cached(PRUNE).and_then(|mut s| s.execute([before_ms, bound])).map_err(|e| self.failed(e))
    }

    /// Forgets the rooms' and recordings' latest handled events handled before `before_ms`, as
    /// their deliveries were (after a prune that deleted some: it reads the whole table).
    pub fn prune_handled(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        self.guard()?;
        self.conn
            .prepare_cached("DELETE FROM handled WHERE done_at < ?1")
            .and_then(|mut s| s.execute([before_ms]))
            .map_err(|e| self.failed(e))
    }

    /// Folds the write-ahead log back into the file and cuts it back, if it has outgrown
    /// [`WAL_LIMIT`] and no reader stands in the way (it never waits for one).
    pub fn fold_log(&mut self) {
        let oversized = std::fs::metadata(self.wal_path()).is_ok_and(|m| m.len() > WAL_LIMIT);
        if oversized {
            let _ = self.conn.busy_timeout(Duration::ZERO);
            let result = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
            let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
            if !matches!(result, Ok(0)) {
                log::warn!(
                    "the inbox's log {} is over {} MiB and cannot be folded back into the file: another process \
                     holds a read transaction open on it",
                    self.wal_path().display(),
                    WAL_LIMIT >> 20
                );
            }
        }
    }
}

/// The first delivery received at or after `?1`: none before it was handled after `?1` or
/// later (a delivery is handled after it is received, and ids follow arrival), so pruning reads
/// only the rows before it. Read in id order from the oldest, it stops at the first such row:
/// after the last prune that is within the last few seconds' deliveries.
pub(super) const PRUNE_BOUND: &str = "SELECT id FROM deliveries WHERE received_at >= ?1 ORDER BY id LIMIT 1";

macro_rules! prune_batch {
    () => {
        5000
    };
}

/// Most deliveries one [`PRUNE`] deletes: each is a writer query of its own, so what arrives
/// while a large backlog goes (a retention lowered on a big inbox) is committed between them.
pub const PRUNE_BATCH: usize = prune_batch!();

/// Up to [`PRUNE_BATCH`] deliveries handled before `?1` with ids below `?2`, oldest first, deleted.
/// Without the bound, finding nothing to delete read the whole table, every retained delivery,
/// at every maintenance (every 10 s, on the writer thread that every acknowledgement waits for):
/// 0.37 s for 1.9 million rows. A delivery received just before one with a lower id is left
/// for the next time.
pub(super) const PRUNE: &str = concat!(
    "DELETE FROM deliveries WHERE id IN
       (SELECT id FROM deliveries WHERE id < ?2 AND state = 'done' AND done_at < ?1
         ORDER BY id LIMIT ",
    prune_batch!(),
    ")"
);
