//! What `/readyz` asks of the database: the path a delivery takes, rolled back.

use super::{NOW_MS, PgInbox, failed};
use crate::inbox::StoreError;

/// Takes the path a delivery takes: a row stored in `deliveries` and its room's row in
/// `rooms` (rolled back), within a second of waiting for a lock. A table that is locked, or
/// that the role may not write, fails it, as it fails deliveries.
pub(super) async fn check(inbox: &PgInbox) -> Result<(), StoreError> {
    inbox.run(|mut client, owner| async move {
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute("SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '2s'").await.map_err(failed)?;
        let probe = format!("readiness probe of {owner}");
        tx.execute(
            &format!(
                "INSERT INTO deliveries (timestamp_ms, signature, timestamp, kind, room, room_seq, body, received_at, due_at)
                 VALUES (-1, $1, $2, 'fallback', $2, 0, ''::bytea, {NOW_MS}, {NOW_MS})"
            ),
            &[&probe.as_bytes(), &probe],
        )
        .await
        .map_err(failed)?;
        tx.execute(
            "INSERT INTO rooms AS r (room, last_seq) VALUES ($1, 0)
             ON CONFLICT (room) DO UPDATE SET last_seq = r.last_seq",
            &[&probe],
        )
        .await
        .map_err(failed)?;
        tx.rollback().await.map_err(failed)?;
        Ok(())
    })
    .await
}
