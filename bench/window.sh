#!/usr/bin/env bash
# What the reorder window costs: the inbox with its default window (2.5 s) and with
# `--reorder-window 0`, on SQLite and (if reachable) on one PostgreSQL replica, taking turns
# round after round. Each run floods the receiver for SECONDS_PER_RUN (default 5) with the
# provider's mix (examples/load.rs, 64 connections), then reads its /metrics: how many of the
# acknowledged deliveries were handled when the load stopped, and how long after it the last one
# was (every 20 ms, up to 60 s). Prints one JSON line per run, then a Markdown table of medians.
# BEFORE=<an older meet-webhooks binary> adds its runs to each round (without the flag, which it
# does not know): `bench/results/2026-12-05.md` compares the build before the ordering work.
# Bounded: ROUNDS (default 3) × 4 (or 6) runs; 127.0.0.1 only; a fresh data directory or
# database (`mw_bench_window`, dropped at the end) per run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
port=${PORT:-5098}
key=bench-key
work=$(mktemp -d)
pid=
pg_admin=${MEET_WEBHOOKS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
postgres=
if command -v psql >/dev/null && psql "$pg_admin" -qc 'SELECT 1' >/dev/null 2>&1; then postgres=1; fi
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$postgres" ] && psql "$pg_admin" -qc "DROP DATABASE IF EXISTS mw_bench_window WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked --quiet --bin meet-webhooks --example load
bin=target/release/meet-webhooks
load=target/release/examples/load

# handled: the deliveries whose handler finished, from the receiver's /metrics.
handled() {
  curl -s --max-time 2 "http://127.0.0.1:$port/metrics" |
    awk '/^meet_webhooks_handler_attempts_total\{.*outcome="done"/ {s += $NF} END {print s + 0}'
}

# run <label> <binary> <window seconds, or "" for the binary's own> <storage flags...>
run() {
  local label=$1 binary=$2 window=$3; shift 3
  local flags=()
  [ -n "$window" ] && flags=(--reorder-window "$window")
  "$binary" serve --key "$key" --bind "127.0.0.1:$port" "${flags[@]}" "$@" 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  local report at_stop deliveries stopped waited=-1
  report=$("$load" --url "http://127.0.0.1:$port/webhook" --key "$key" --seconds "$seconds" --pid "$pid")
  stopped=$(date +%s.%N)
  at_stop=$(handled)
  deliveries=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["deliveries"])' "$report")
  for _ in $(seq 3000); do
    if [ "$(handled)" -ge "$deliveries" ]; then
      waited=$(python3 -c "print(round($(date +%s.%N) - $stopped, 2))")
      break
    fi
    sleep 0.02
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "{\"run\":\"$label\",\"handled\":$at_stop,\"all_handled_after_s\":$waited,${report#\{}" | tee -a "$work/results.jsonl"
}

echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); $rounds rounds of ${seconds} s"
# both <label suffix> <binary> <window>: SQLite, then PostgreSQL if reachable.
both() {
  rm -rf "$work/data"
  run "SQLite, $1" "$2" "$3" --data-dir "$work/data"
  if [ -n "$postgres" ]; then
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS mw_bench_window WITH (FORCE)" -c "CREATE DATABASE mw_bench_window" >/dev/null
    run "PostgreSQL 1 replica, $1" "$2" "$3" --database-url "${pg_admin%/*}/mw_bench_window?sslmode=disable"
  fi
}
for _ in $(seq "$rounds"); do
  [ -n "${BEFORE:-}" ] && both "build before" "$BEFORE" ""
  both "window 2.5 s" "$bin" 2.5
  both "window 0" "$bin" 0
done

python3 - "$work/results.jsonl" <<'PY'
import json, sys
from statistics import median
runs = [json.loads(line) for line in open(sys.argv[1])]
print()
print("| configuration | runs | acknowledged/s | handled when the load stopped | all handled after the stop |")
print("|---|---|---|---|---|")
for label in dict.fromkeys(r["run"] for r in runs):
    rs = [r for r in runs if r["run"] == label]
    med = lambda f: median(f(r) for r in rs)
    print(f"| {label} | {len(rs)} | {med(lambda r: r['deliveries_per_second']):,.0f} "
          f"| {med(lambda r: r['handled'] / r['deliveries']):.0%} | {med(lambda r: r['all_handled_after_s']):.2f} s |")
PY
