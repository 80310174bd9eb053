#!/usr/bin/env bash
# Where PostgreSQL's time goes, statement by statement: REPLICAS (default 1) replicas flooded for
# SECONDS_PER_RUN (default 8) with the provider's mix, spread over them (LOAD_FLAGS, e.g. --spread
# or --rate 3600, go to examples/load.rs; SERVE_FLAGS, e.g. --reorder-window 0, to the replicas), then
# drained; prints pg_stat_statements' top statements (calls, execution and planning time, rows,
# WAL), the totals per delivery, how many of the tables' row updates were HOT, and who claimed
# (the dispatcher, or a batch as it stored) and the server's commits. Runs on a
# throwaway cluster of its own (initdb into a temporary directory, port PG_PORT (default 5433),
# pg_stat_statements preloaded, removed at the end): the machine's server is never touched.
# MEET_WEBHOOKS_BIN runs another build of the receiver (to compare two). Needs PostgreSQL's
# server binaries (/usr/lib/postgresql/*/bin) and root or the postgres user to run them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-8}
pg_port=${PG_PORT:-5433}
port=${PORT:-5301}
bin_dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 755 "$work"
pids=()
replicas=${REPLICAS:-1}
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  as_postgres "$bin_dir/pg_ctl -D $work/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$work"

cargo build --release --locked --quiet --bin meet-webhooks --example load
bin=${MEET_WEBHOOKS_BIN:-target/release/meet-webhooks}
as_postgres "$bin_dir/initdb -D $work/data -A trust -U postgres" >/dev/null
as_postgres "$bin_dir/pg_ctl -D $work/data -l $work/log -o \"-p $pg_port -k $work -c listen_addresses=127.0.0.1 \
  -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on\" start" >/dev/null
url=postgres://postgres@127.0.0.1:$pg_port
psql "$url/postgres" -qc "CREATE DATABASE mw" >/dev/null
psql "$url/mw" -qc "CREATE EXTENSION pg_stat_statements" >/dev/null

urls=()
for i in $(seq 0 $((replicas - 1))); do
  # shellcheck disable=SC2086
  "$bin" serve --key k --bind "127.0.0.1:$((port + i))" --replica-id "r$i" \
    --database-url "$url/mw?sslmode=disable" ${SERVE_FLAGS:-} 2>"$work/serve-$i.log" &
  pids+=($!)
  urls+=(--url "http://127.0.0.1:$((port + i))/webhook")
done
for i in $(seq 0 $((replicas - 1))); do
  for _ in $(seq 100); do grep -q "listening on" "$work/serve-$i.log" && break; sleep 0.1; done
done
psql "$url/mw" -qc "SELECT pg_stat_statements_reset()" >/dev/null
wal=$(psql "$url/mw" -tAc "SELECT pg_current_wal_lsn()")
# shellcheck disable=SC2086
target/release/examples/load "${urls[@]}" --key k --seconds "$seconds" ${LOAD_FLAGS:-} |
  python3 -c "import json, sys; r = json.load(sys.stdin); print('acknowledged', r['deliveries'] - r['non_2xx'], 'at', r['deliveries_per_second'], '/s')"
n=$(psql "$url/mw" -tAc "SELECT count(*) FROM deliveries")
for _ in $(seq 120); do
  [ "$(psql "$url/mw" -tAc "SELECT count(*) FROM deliveries WHERE state = 'pending'")" = 0 ] && break
  sleep 1
done
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do wait "$pid" || true; done
pids=()
psql "$url/mw" -tAc "SELECT 'WAL bytes per delivery: ' || round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal') / $n)"
psql "$url/mw" -c "SELECT calls, round(total_exec_time::numeric) AS exec_ms, round(total_plan_time::numeric) AS plan_ms,
                          rows, round((total_exec_time / calls)::numeric * 1000) AS exec_us_per_call,
                          round(wal_bytes / 1e6, 1) AS wal_mb, left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS statement
                     FROM pg_stat_statements WHERE calls > 0 AND query NOT LIKE '%count(*)%'
                    ORDER BY total_exec_time + total_plan_time DESC LIMIT 12"
psql "$url/mw" -tAc "SELECT 'execution and planning, µs per delivery: ' || round(sum(total_exec_time + total_plan_time)::numeric * 1000 / $n)
                       FROM pg_stat_statements WHERE query NOT LIKE '%count(*)%'"
# Row versions: an update that changes no indexed column (nor one an index's predicate reads),
# and finds room on its row's page, is HOT (no index entries written).
psql "$url/mw" -c "SELECT relname, n_tup_ins AS inserted, n_tup_upd AS updated, n_tup_hot_upd AS hot
                     FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'handled', 'rooms') ORDER BY relname"
# Claims by the statement that made them (the dispatcher's takes any due head; a batch's, what
# it stored or what came due unheld), and the server's commits (every connection's).
psql "$url/mw" -c "SELECT CASE WHEN query LIKE '%id = ANY(\$5) AND head%' THEN 'a batch, what it stored'
                               WHEN query LIKE '%owner IS NULL AND head%' THEN 'a batch, due and unheld'
                               ELSE 'the dispatcher' END AS claim, calls, rows AS claimed
                     FROM pg_stat_statements WHERE query LIKE 'WITH due AS%' ORDER BY rows DESC"
psql "$url/mw" -tAc "SELECT 'commits per delivery: ' || round(xact_commit::numeric / $n, 2)
                       FROM pg_stat_database WHERE datname = 'mw'"
