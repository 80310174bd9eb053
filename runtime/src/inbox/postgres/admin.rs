//! What the `inbox` CLI asks of the database: replays, lists, one delivery, counts.

use super::{ADD_TO_ROOMS, COLUMNS, NOW_MS, PgInbox, execute, failed, stored};
use tokio_postgres::types::ToSql;

use crate::inbox::{Counts, Query, Selection, State, Stats, StoreError, Stored, Value};

pub(super) async fn replay(inbox: &PgInbox, selection: Selection) -> Result<usize, StoreError> {
    let replayed = inbox
        .run(move |mut client, _| async move {
            let tx = client.transaction().await.map_err(failed)?;
            let (condition, id) = match selection {
                Selection::One(id) => ("id = $1", Some(id)),
                Selection::Dead => ("state = 'dead' AND $1::bigint IS NULL", None),
                Selection::Fallback => ("kind = 'fallback' AND $1::bigint IS NULL", None),
            };
            let mut rooms: Vec<String> = tx
                .query(&format!("SELECT room FROM deliveries WHERE {condition} AND state != 'pending' AND room IS NOT NULL"), &[&id])
                .await
                .map_err(failed)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Their rooms locked, and made again where the pruning round deleted them (advanced
            // by nothing here: the statement below numbers the replayed deliveries).
            rooms.sort_unstable();
            rooms.dedup();
            let nothing = vec![0i64; rooms.len()];
            execute(&tx, &ADD_TO_ROOMS, &[&rooms, &nothing]).await?;
            // Each replayed delivery is numbered past its room's last (its row in `rooms`
            // advanced by as many, as an append does): it is handled after whatever of its
            // room is pending already; replayed ones of one room keep the order they arrived
            // in (by id, as on SQLite: a room's numbers start again after it was pruned).
            let replayed = tx
                .execute(
                    &format!(
                        "WITH picked AS (
                             SELECT id, room, row_number() OVER (PARTITION BY room ORDER BY id) AS n
                               FROM deliveries WHERE {condition} AND state != 'pending'),
                         bumped AS (
                             UPDATE rooms r SET last_seq = r.last_seq + c.added
                               FROM (SELECT room, count(*) AS added FROM picked WHERE room IS NOT NULL GROUP BY room) c
                              WHERE r.room = c.room
                             RETURNING r.room, r.last_seq - c.added AS base)
                         UPDATE deliveries d SET state = 'pending', attempts = 0, due_at = {NOW_MS}, queued_at = {NOW_MS},
                                last_error = NULL, done_at = NULL, owner = NULL, lease_until = NULL, head = d.room IS NULL,
                                room_seq = COALESCE(b.base + p.n, d.room_seq),
                                ord = CASE WHEN d.room IS NULL THEN NULL
                                           ELSE GREATEST((extract(epoch from now()) * 1000000)::bigint,
                                                         last.ord + 1) + p.n END
                           FROM picked p LEFT JOIN bumped b ON b.room = p.room
                                LEFT JOIN LATERAL (SELECT MAX(ord) AS ord FROM deliveries
                                                    WHERE room = p.room AND state = 'pending') last ON true
                          WHERE d.id = p.id"
                    ),
                    &[&id],
                )
                .await
                .map_err(failed)?;
            // The first pending delivery of each room is its head again, unless one of the
            // room's deliveries is claimed right now: that one stays the head.
            execute(&tx,
                "UPDATE deliveries d SET head = (d.id = (SELECT id FROM deliveries WHERE room = d.room AND state = 'pending' ORDER BY ord, room_seq LIMIT 1))
                  WHERE room = ANY($1) AND state = 'pending'
                    AND NOT EXISTS (SELECT 1 FROM deliveries c WHERE c.room = d.room AND c.state = 'pending' AND c.owner IS NOT NULL)",
                &[&rooms],
            )
            .await?;
            tx.commit().await.map_err(failed)?;
            Ok(usize::try_from(replayed).unwrap_or(usize::MAX))
        })
        .await?;
    if replayed > 0 {
        inbox.wake.wake();
        let _ = inbox.announce.send(vec![0]);
    }
    Ok(replayed)
}

pub(super) async fn search(inbox: &PgInbox, query: &Query) -> Result<Vec<Stored>, StoreError> {
    let (condition, values) = query.conditions(|n| format!("${n}"));
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE {condition} ORDER BY id DESC LIMIT {}", query.limit);
    let values: Vec<Box<dyn ToSql + Sync + Send>> = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Text(text) => Box::new(text.to_owned()),
                Value::Int(n) => Box::new(n),
            }
        })
        .collect();
    inbox
        .run(move |client, _| async move {
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&sql, &params).await.map_err(failed)?;
            Ok(rows.iter().map(stored).collect())
        })
        .await
}

pub(super) async fn get(inbox: &PgInbox, id: i64) -> Result<Option<Stored>, StoreError> {
    inbox
        .run(move |client, _| async move {
            let row = client
                .query_opt(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1"), &[&id])
                .await
                .map_err(failed)?;
            Ok(row.map(|r| stored(&r)))
        })
        .await
}

pub(super) async fn stats(inbox: &PgInbox) -> Result<Stats, StoreError> {
    inbox
        .run(|client, _| async move {
            let mut stats = Stats::default();
            for row in
                client.query("SELECT state, COUNT(*) FROM deliveries GROUP BY state", &[]).await.map_err(failed)?
            {
                let count = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
                match State::parse(row.get(0)) {
                    Some(State::Pending) => stats.pending = count,
                    Some(State::Done) => stats.done = count,
                    Some(State::Dead) => stats.dead = count,
                    None => {}
                }
            }
            let row = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM deliveries WHERE kind = 'fallback'),
                        (SELECT MIN(received_at) FROM deliveries WHERE state = 'pending')",
                    &[],
                )
                .await
                .map_err(failed)?;
            stats.fallback = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            stats.oldest_pending_received_at = row.get(1);
            stats.claimed_by = claims(&client).await?;
            Ok(stats)
        })
        .await
}

/// What waits, and who holds it, through the partial indexes of pending, dead and fallback
/// deliveries.
pub(super) async fn counts(inbox: &PgInbox) -> Result<Counts, StoreError> {
    inbox
        .run(|client, _| async move {
            let number = |row: &tokio_postgres::Row, i| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            let row = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'pending'),
                            (SELECT COUNT(*) FROM deliveries WHERE state = 'dead'),
                            (SELECT COUNT(*) FROM deliveries WHERE kind = 'fallback')",
                    &[],
                )
                .await
                .map_err(failed)?;
            let claimed_by = claims(&client).await?;
            Ok(Counts { pending: number(&row, 0), dead: number(&row, 1), fallback: number(&row, 2), claimed_by })
        })
        .await
}

/// Claims by holder, through the pending index.
async fn claims(client: &deadpool_postgres::Client) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = client
        .query(
            "SELECT owner, COUNT(*) FROM deliveries WHERE state = 'pending' AND owner IS NOT NULL
              GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .map_err(failed)?;
    Ok(rows.iter().map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0))).collect())
}
