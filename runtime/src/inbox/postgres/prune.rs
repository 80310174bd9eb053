//! Deleting handled deliveries past their retention, by the database's clock.

use std::time::Duration;

use super::{NOW_MS, PgInbox, failed};
use crate::inbox::StoreError;

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
                    return Ok(pruned);
                }
            }
        })
        .await
}
