//! Deleting handled deliveries past their retention, by the database's clock, and vacuuming
//! the deliveries table as a queue.
//!
//! Every handled delivery leaves dead versions of its row behind, and entries for them in the
//! index that claims scan from its oldest end: until a vacuum removes them, each claim steps
//! over more of them, and the rate falls (`bench/results/2026-12-05-b.md`, "Over minutes").
//! Autovacuum, where it runs, waits for a fifth of
//! the table to be dead (millions of rows for a table that keeps days of deliveries); schema 3
//! asks it to come sooner, and the pruning round vacuums the table itself once ten thousand rows
//! are dead, one replica at a time.

use std::time::Duration;

use deadpool_postgres::Client;

use super::{NOW_MS, PgInbox, failed};
use crate::inbox::StoreError;

/// Dead rows in the deliveries table that make a pruning round vacuum it.
const DEAD_ENOUGH: i64 = 10_000;
/// The advisory lock one replica vacuums under (any constant will do: "vacu").
const VACUUM_LOCK: i64 = 0x7661_6375;

pub(super) async fn prune(inbox: &PgInbox, retention: Duration) -> Result<usize, StoreError> {
    let retention_ms = crate::clock::millis(retention);
    inbox
        .run(move |client, _| async move {
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
                    vacuum(&client).await?;
                    return Ok(pruned);
                }
            }
        })
        .await
}

/// Vacuums the deliveries table when enough of it is dead and no other replica is vacuuming it;
/// whether it did. A role that does not own the table is told so by the server (a warning), and
/// the table is left to autovacuum.
async fn vacuum(client: &Client) -> Result<bool, StoreError> {
    let dead: i64 = client
        .query_opt("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'deliveries'::regclass", &[])
        .await
        .map_err(failed)?
        .map_or(0, |row| row.get(0));
    if dead < DEAD_ENOUGH {
        return Ok(false);
    }
    let locked: bool =
        client.query_one("SELECT pg_try_advisory_lock($1)", &[&VACUUM_LOCK]).await.map_err(failed)?.get(0);
    if !locked {
        return Ok(false);
    }
    let vacuumed = client.batch_execute("VACUUM deliveries").await.map_err(failed);
    client.execute("SELECT pg_advisory_unlock($1)", &[&VACUUM_LOCK]).await.map_err(failed)?;
    vacuumed.map(|()| true)
}
