//! Deleting handled deliveries past their retention, by the database's clock, and the rooms
//! that have had nothing pending as long; vacuuming and analyzing the inbox's tables as a
//! queue's.
//!
//! Every handled delivery leaves dead versions of its row behind, and entries for them in the
//! index that claims scan from its oldest end: until a vacuum removes them, each claim steps
//! over more of them, and the rate falls (`bench/results/2026-12-05-b.md`, "Over minutes").
//! Autovacuum, where it runs, waits for a fifth of
//! the table to be dead (millions of rows for a table that keeps days of deliveries); schema 3
//! asks it to come sooner, and the pruning round vacuums the table itself once ten thousand rows
//! are dead, one replica at a time.
//!
//! The planner needs statistics too: a table never analyzed (autovacuum off, or not yet come)
//! is planned blind, and such plans can grow with the table (`bench/results/2026-12-06-d.md`).
//! The pruning round analyzes a table once a tenth of it
//! (and at least [`CHANGED_ENOUGH`] rows) changed since its last analysis, as autovacuum would,
//! from a sample of 3,000 rows (schema 6; the server's default reads 30,000:
//! `bench/results/2026-12-07-g.md`).

use std::time::Duration;

use deadpool_postgres::Client;

use super::{NOW_MS, PgInbox, failed};
use crate::inbox::StoreError;

/// Dead rows in the deliveries table that make a pruning round vacuum it.
const DEAD_ENOUGH: i64 = 10_000;
/// Rows changed in a table since it was last analyzed that make a pruning round analyze it,
/// beside a tenth of its rows.
const CHANGED_ENOUGH: i64 = 1_000;
/// Most rooms a pruning round deletes.
const ROOMS_A_ROUND: usize = 5000;
/// The advisory lock one replica vacuums and analyzes under (any constant will do: "vacu").
const VACUUM_LOCK: i64 = 0x7661_6375;

pub(super) async fn prune(inbox: &PgInbox, retention: Duration) -> Result<usize, StoreError> {
    let retention_ms = crate::clock::millis(retention);
    inbox
        .run(move |mut client, _| async move {
            // Small batches, skipping rows another replica is pruning: never a long lock.
            let mut pruned = 0;
            loop {
                let n = client
                    .execute(
                        &format!(
                            "DELETE FROM deliveries WHERE id = ANY(ARRAY(
                            SELECT id FROM deliveries WHERE state = 'done' AND done_at < {NOW_MS} - $1
                             LIMIT 5000 FOR UPDATE SKIP LOCKED))"
                        ),
                        &[&retention_ms],
                    )
                    .await
                    .map_err(failed)?;
                pruned += usize::try_from(n).unwrap_or(0);
                if n < 5000 {
                    if pruned > 0 {
                        // What was handled as long ago is no longer a room's latest to compare with.
                        client
                            .execute(&format!("DELETE FROM handled WHERE done_at < {NOW_MS} - $1"), &[&retention_ms])
                            .await
                            .map_err(failed)?;
                    }
                    prune_rooms(&mut client, retention_ms).await?;
                    upkeep(&client).await?;
                    return Ok(pruned);
                }
            }
        })
        .await
}

/// Deletes the rooms that have nothing pending and had nothing added for `retention_ms`, up to
/// [`ROOMS_A_ROUND`]: the candidates locked first (skipping those a transaction holds), then
/// looked at again by a statement of its own, which sees whatever was added to them before the
/// locks were taken; nothing can be added to them after it, until the deletion commits.
async fn prune_rooms(client: &mut Client, retention_ms: i64) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(failed)?;
    let rooms: Vec<String> = tx
        .query(
            &format!(
                "SELECT room FROM rooms r
                  WHERE touched_at < {NOW_MS} - $1
                    AND NOT EXISTS (SELECT 1 FROM deliveries WHERE room = r.room AND state = 'pending')
                  ORDER BY room LIMIT {ROOMS_A_ROUND} FOR UPDATE SKIP LOCKED"
            ),
            &[&retention_ms],
        )
        .await
        .map_err(failed)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !rooms.is_empty() {
        tx.execute(
            "DELETE FROM rooms r WHERE room = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM deliveries WHERE room = r.room AND state = 'pending')",
            &[&rooms],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// Vacuums the deliveries table when enough of it is dead, and analyzes the inbox's tables whose
/// statistics are stale, unless another replica is doing so. A role that does not own the tables
/// is told so by the server (a warning), and they are left to autovacuum.
async fn upkeep(client: &Client) -> Result<(), StoreError> {
    let stale = client
        .query(
            "SELECT relname::text, n_dead_tup, n_mod_since_analyze >= $1 + n_live_tup / 10
               FROM pg_stat_user_tables WHERE relid IN ('deliveries'::regclass, 'handled'::regclass)",
            &[&CHANGED_ENOUGH],
        )
        .await
        .map_err(failed)?;
    // One statement a table (VACUUM runs outside a transaction); a vacuum analyzes on the way.
    let statements: Vec<String> = stale
        .iter()
        .filter_map(|row| {
            let (table, dead, changed) = (row.get::<_, &str>(0), row.get::<_, i64>(1), row.get::<_, bool>(2));
            if table == "deliveries" && dead >= DEAD_ENOUGH {
                Some(format!("VACUUM (ANALYZE) {table}"))
            } else {
                changed.then(|| format!("ANALYZE {table}"))
            }
        })
        .collect();
    if statements.is_empty() {
        return Ok(());
    }
    let locked: bool =
        client.query_one("SELECT pg_try_advisory_lock($1)", &[&VACUUM_LOCK]).await.map_err(failed)?.get(0);
    if !locked {
        return Ok(());
    }
    let done = async {
        for statement in &statements {
            client.batch_execute(statement).await.map_err(failed)?;
        }
        Ok(())
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&VACUUM_LOCK]).await.map_err(failed)?;
    done
}
