//! What the `inbox` CLI asks of the file: lists, one delivery, replays, counts.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{COLUMNS, Store, count, failed, forget, stored};
use crate::inbox::{Query, Selection, State, Stats, StoreError, Stored, Value};

/// The deliveries `query` asks for, newest first, read on `conn` (the reader's, or the store's).
pub fn search(conn: &Connection, path: &Path, query: &Query) -> Result<Vec<Stored>, StoreError> {
    let (condition, values) = query.conditions(|n| format!("?{n}"));
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE {condition} ORDER BY id DESC LIMIT {}", query.limit);
    let values = values.into_iter().map(|v| match v {
        Value::Text(text) => rusqlite::types::Value::Text(text.to_owned()),
        Value::Int(n) => rusqlite::types::Value::Integer(n),
    });
    let run = || -> rusqlite::Result<Vec<Stored>> {
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), stored)?;
        rows.collect()
    };
    run().map_err(|e| failed(path, e))
}

/// One delivery, read on `conn`.
pub fn get(conn: &Connection, path: &Path, id: i64) -> Result<Option<Stored>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1");
    conn.query_row(&sql, [id], stored).optional().map_err(|e| failed(path, e))
}

/// The counts of `inbox stats`, read on `conn`.
pub fn stats(conn: &Connection, path: &Path) -> Result<Stats, StoreError> {
    let query = || -> rusqlite::Result<Stats> {
        let mut stats = Stats::default();
        let mut statement = conn.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let count = count(row.get(1)?);
            match State::parse(row.get_ref(0)?.as_str()?) {
                Some(State::Pending) => stats.pending = count,
                Some(State::Done) => stats.done = count,
                Some(State::Dead) => stats.dead = count,
                None => {}
            }
        }
        stats.fallback =
            conn.query_row("SELECT COUNT(*) FROM deliveries WHERE kind = 'fallback'", [], |r| r.get(0).map(count))?;
        stats.oldest_pending_received_at =
            conn.query_row("SELECT MIN(received_at) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))?;
        stats.claimed_by = super::reader::claims(conn)?;
        Ok(stats)
    };
    query().map_err(|e| failed(path, e))
}

#[cfg(test)]
impl Store {
    pub fn get(&self, id: i64) -> Result<Option<Stored>, StoreError> {
        get(&self.conn, &self.path, id)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        stats(&self.conn, &self.path)
    }
}

impl Store {
    /// Makes the selected done or dead deliveries pending again, each behind whatever of its
    /// room is pending already, with a fresh count of attempts.
    pub fn replay(&mut self, selection: Selection) -> Result<usize, StoreError> {
        self.guard()?;
        let now = self.now();
        let condition = match selection {
            Selection::One(_) => "id = ?2",
            Selection::Dead => "state = 'dead' AND ?2 IS NULL",
            Selection::Fallback => "kind = 'fallback' AND ?2 IS NULL",
        };
        let id = match selection {
            Selection::One(id) => Some(id),
            _ => None,
        };
        let path = self.path.clone();
        let mut replay = || -> rusqlite::Result<usize> {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let selected: Vec<i64> = tx
                .prepare(&format!("SELECT id FROM deliveries WHERE {condition} AND state != 'pending' ORDER BY id"))?
                .query_map(params![now, id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // One at a time, in their order: each goes past whatever of its room is pending (the
            // ones replayed before it included) and past now, so before what arrives later.
            let mut one = tx.prepare(
                "UPDATE deliveries SET state = 'pending', attempts = 0, due_at = ?1, queued_at = ?1, last_error = NULL,
                        done_at = NULL, owner = NULL, lease_until = NULL,
                        ord = CASE WHEN room IS NULL THEN NULL ELSE MAX(
                                ?1 * 1000,
                                1 + COALESCE((SELECT MAX(p.ord) FROM deliveries p
                                               WHERE p.room = deliveries.room AND p.state = 'pending'), 0)) END
                  WHERE id = ?2",
            )?;
            for id in &selected {
                one.execute(params![now, id])?;
            }
            drop(one);
            tx.commit()?;
            Ok(selected.len())
        };
        let replayed = replay().map_err(|e| failed(&path, e))?;
        // Each replayed delivery is back in its room; the room's oldest pending delivery is its
        // next head, after the one being handled if there is one (the schedule is read again,
        // keeping this store's claims; a service beside this CLI reads it again too, seeing the
        // file's `data_version` change).
        if replayed > 0 {
            forget(&mut self.schedule, &mut self.claims);
        }
        Ok(replayed)
    }
}
