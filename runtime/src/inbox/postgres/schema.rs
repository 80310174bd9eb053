//! The PostgreSQL inbox's tables, created and brought up to date at start: versioned, in one
//! transaction, and safe when several replicas start at once (they take turns on a
//! transaction-level advisory lock; a newer version than this build knows is refused).

use deadpool_postgres::Client;

use crate::inbox::StoreError;
use crate::inbox::migrations::Migrations;

/// Migration `n` (1-based) brings the database from version `n - 1` to `n`.
const MIGRATIONS: Migrations = Migrations(&[
    // 1: deliveries, their rooms, and a row to prove writes with.
    //
    // `room_seq` orders a room's deliveries as they were committed, which with several replicas
    // is not `id` order (an id is taken at insert, visible at commit): every transaction that
    // adds to a room holds that room's row in `rooms` (and takes the next number from it) until
    // it commits. `head` marks the one delivery of each room that may be claimed (its first
    // pending one; every pending delivery without a room); the room's row lock guards every
    // change of it. `due_at` (ms, the database's clock) is when it may next be claimed; a claim
    // sets `owner`, a new `fence` and `lease_until` (the database's clock too).
    "
    CREATE TABLE deliveries (
        id           bigserial PRIMARY KEY,
        signature    bytea   NOT NULL,
        timestamp    text    NOT NULL,
        timestamp_ms bigint  NOT NULL,
        event        text,
        kind         text    NOT NULL,
        room         text,
        room_seq     bigint,
        body         bytea   NOT NULL,
        received_at  bigint  NOT NULL,
        state        text    NOT NULL DEFAULT 'pending',
        attempts     integer NOT NULL DEFAULT 0,
        due_at       bigint  NOT NULL,
        last_error   text,
        done_at      bigint,
        head         boolean NOT NULL DEFAULT false,
        owner        text,
        fence        bigint  NOT NULL DEFAULT 0,
        lease_until  timestamptz,
        UNIQUE (timestamp_ms, signature)
    ) WITH (fillfactor = 80);
    CREATE INDEX deliveries_ready ON deliveries (due_at, id) WHERE head;
    CREATE INDEX deliveries_pending ON deliveries (id) WHERE state = 'pending';
    CREATE INDEX deliveries_pending_room ON deliveries (room, room_seq) WHERE state = 'pending' AND room IS NOT NULL;
    CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
    CREATE INDEX deliveries_done ON deliveries (done_at) WHERE state = 'done';
    CREATE TABLE rooms (room text PRIMARY KEY, last_seq bigint NOT NULL);
    CREATE TABLE meta (key text PRIMARY KEY, value bigint);
    ",
    // 2: the provider's order. A room's order is `ord` (microseconds), then `room_seq`: the
    // body's `creationDate`, or its arrival when it has none; a replay puts a delivery past
    // whatever of its room is pending, and past now. A room's pending deliveries from before the
    // upgrade keep their order, before anything created after it. A room's head is its first
    // pending delivery in that order unless a claim holds another (`deliveries_head_room` finds
    // the one it has). `created` and `recording` come from the body; `late_*` name the later
    // event of its room that was handled before its last claim. `handled` keeps the latest
    // event handled in each room (`recording` '') and each recording, by `creationDate`; each
    // handled delivery rewrites its rows, kept in place (HOT) by the room left in their pages.
    "
    ALTER TABLE deliveries ADD COLUMN ord bigint, ADD COLUMN created bigint, ADD COLUMN recording text,
        ADD COLUMN late_id bigint, ADD COLUMN late_event text, ADD COLUMN late_created bigint;
    UPDATE deliveries
       SET ord = room_seq - (SELECT MAX(room_seq) FROM deliveries) - 1 + (extract(epoch from now()) * 1000000)::bigint
     WHERE state = 'pending' AND room IS NOT NULL;
    DROP INDEX deliveries_pending_room;
    CREATE INDEX deliveries_pending_room ON deliveries (room, ord, room_seq) WHERE state = 'pending' AND room IS NOT NULL;
    CREATE INDEX deliveries_head_room ON deliveries (room) WHERE head AND room IS NOT NULL;
    CREATE TABLE handled (
        room      text   NOT NULL,
        recording text   NOT NULL,
        id        bigint NOT NULL,
        event     text,
        created   bigint NOT NULL,
        done_at   bigint NOT NULL,
        PRIMARY KEY (room, recording)
    ) WITH (fillfactor = 50);
    ",
    // 3: vacuumed as a queue. Every handled delivery leaves dead versions of its row, and their
    // entries in the index that claims scan from its oldest end: until a vacuum removes them
    // each claim steps over more, and the rate falls (`bench/results/2026-12-05-b.md`). By
    // default autovacuum waits for a fifth of the table to be dead, which for a table that keeps
    // days of deliveries is millions of rows; here it comes at its next round (every minute by
    // default) once ten thousand are, without pausing for I/O credits.
    "
    ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                                autovacuum_vacuum_cost_delay = 0);
    ",
    // 4: what the operator's console shows. `claimed_at` (ms) is when the last claim was taken;
    // `history` gets one entry as each attempt ends: its replica, start, duration, outcome and
    // error. The fallbacks are counted, and listed, through an index of their own (few
    // deliveries are). Rooms and recordings have none: every version of a delivery's row
    // (3 to 4 of them) adds to each index (`bench/results/2026-12-06.md`, console-indexes).
    "
    ALTER TABLE deliveries ADD COLUMN claimed_at bigint, ADD COLUMN history jsonb;
    CREATE INDEX deliveries_fallback ON deliveries (id) WHERE kind = 'fallback';
    ",
    // 5: `queued_at` (ms) is when a delivery was stored, by the transaction that then commits
    // and acknowledges it (its row's insert, after its room's lock), or replayed: its handler's
    // lag is measured from there, not from its receipt. Rows stored before have none and are
    // read with their receipt (no rewrite of the table).
    "
    ALTER TABLE deliveries ADD COLUMN queued_at bigint;
    ",
    // 6: analyzed from a small sample. The pruning round analyzes a young table every round (10 s),
    // and at the server's default target an analysis reads 30,000 rows: up to a second of a core,
    // while handlers that came due waited (`bench/results/2026-12-07-g.md`). The statements plan
    // on a few columns' rough shape (how many rows are heads, pending, of a room), which 3,000
    // rows show; bodies and histories are never searched, and get none. A column added later
    // needs a target too.
    "
    ALTER TABLE deliveries
        ALTER id SET STATISTICS 10, ALTER signature SET STATISTICS 10, ALTER timestamp SET STATISTICS 10,
        ALTER timestamp_ms SET STATISTICS 10, ALTER event SET STATISTICS 10, ALTER kind SET STATISTICS 10,
        ALTER room SET STATISTICS 10, ALTER room_seq SET STATISTICS 10, ALTER body SET STATISTICS 0,
        ALTER received_at SET STATISTICS 10, ALTER state SET STATISTICS 10, ALTER attempts SET STATISTICS 10,
        ALTER due_at SET STATISTICS 10, ALTER last_error SET STATISTICS 10, ALTER done_at SET STATISTICS 10,
        ALTER head SET STATISTICS 10, ALTER owner SET STATISTICS 10, ALTER fence SET STATISTICS 10,
        ALTER lease_until SET STATISTICS 10, ALTER ord SET STATISTICS 10, ALTER created SET STATISTICS 10,
        ALTER recording SET STATISTICS 10, ALTER late_id SET STATISTICS 10, ALTER late_event SET STATISTICS 10,
        ALTER late_created SET STATISTICS 10, ALTER claimed_at SET STATISTICS 10, ALTER history SET STATISTICS 0,
        ALTER queued_at SET STATISTICS 10;
    ALTER TABLE handled
        ALTER room SET STATISTICS 10, ALTER recording SET STATISTICS 10, ALTER id SET STATISTICS 10,
        ALTER event SET STATISTICS 10, ALTER created SET STATISTICS 10, ALTER done_at SET STATISTICS 10;
    ",
    // 7: rooms pruned. A room's row numbers its deliveries (`room_seq`) and is locked by whatever
    // adds to it; a row per room ever seen would grow with every meeting. `touched_at` (ms) is
    // when something was last added to the room; the pruning round deletes the rooms with
    // nothing pending that were not touched for a retention, and a room that comes back starts
    // its numbering again (only its pending deliveries are ordered by it).
    "
    ALTER TABLE rooms ADD COLUMN touched_at bigint NOT NULL DEFAULT 0;
    ",
]);

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.version() as i32;

/// Serializes replicas that migrate at once (any constant will do; this one spells "meet").
const MIGRATION_LOCK: i64 = 0x6d65_6574;

/// Brings the database up to [`VERSION`] in one transaction; refuses a newer one.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let failed = |e: tokio_postgres::Error| {
        StoreError::unavailable(format!("cannot set up the inbox's tables: {}", super::reason(&e)))
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(failed)?;
    // "already exists, skipping" is no news.
    tx.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(failed)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS meet_webhooks_schema (version integer NOT NULL)")
        .await
        .map_err(failed)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM meet_webhooks_schema", &[])
        .await
        .map_err(failed)?
        .map_or(0, |row| row.get(0));
    const STORE: &str = "the database's inbox";
    for migration in MIGRATIONS.pending(STORE, version.into())? {
        tx.batch_execute(migration).await.map_err(failed)?;
    }
    if version != VERSION {
        tx.execute("DELETE FROM meet_webhooks_schema", &[]).await.map_err(failed)?;
        tx.execute("INSERT INTO meet_webhooks_schema (version) VALUES ($1)", &[&VERSION]).await.map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    MIGRATIONS.upgraded(STORE, version.into());
    Ok(())
}
