#!/usr/bin/env bash
# Builds release, then drives each receiver configuration with the load tool
# (examples/load.rs), all in one run, so that the figures can be compared with each other:
#
#   axum floor / axum bare verifier   the provider's two reference points, rebuilt here
#                                     (bench/axum-baseline): an axum server that checks
#                                     nothing, and one that only checks the HMAC
#   actix bare verifier               the same on actix-web, one worker: our framework's floor
#   verification only                 meet-webhooks --no-inbox (verify, deduplicate, typed
#                                     parse, handler, metrics, info logs), with the default
#                                     workers (a core is left for others) and one per core
#   inbox on                          meet-webhooks as it ships: every 2xx after an fsynced
#                                     commit; also pinned (receiver on cpu 0, load on cpu 1)
#   durable floor                     the axum baseline that verifies, appends the delivery to
#                                     a file and answers after the group fdatasync: the limit
#                                     of this disk for any receiver that acknowledges only what
#                                     is on it
#
# The load is the provider's mix (examples/load.rs --mix provider: every recording and meeting
# event over 1,000 rooms, a testEvent every 50th: typed, default-method, unknown-event and test
# deliveries); "(typed mix)" runs send only the spec's typed webhooks, for comparison.
#
# The configurations take turns, round after round, so that a slow minute on a shared machine
# hits all of them alike. Prints one JSON line per run, then a Markdown table of medians, with
# each run's ratio taken against the axum bare verifier of its own round, and for receivers with
# the inbox the share of acknowledged deliveries already handled when the load stopped. Bounded: ROUNDS
# (default 3) of every configuration, SECONDS_PER_RUN (default 5) each, CONNECTIONS (default
# 64) keep-alive connections, 127.0.0.1 only. LONG=60 adds 60 s runs of verification only, the
# inbox and (if reachable) one PostgreSQL replica (memory over time).
#
# With PostgreSQL reachable (MEET_WEBHOOKS_TEST_DATABASE_URL, default the local server), each
# round also runs: the PostgreSQL floor (examples/pg_floor.rs: the inbox's batched insert driven
# straight at the database, nothing else), and 1, 2 and 3 replicas on one database, the load's
# connections spread over them. Each on a fresh database `mw_bench`. POSTGRES_ONLY=1 runs just
# those and the SQLite inbox.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-64}
port=${PORT:-5099}
key=bench-key
work=$(mktemp -d)
pid=
replicas=()
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; [ ${#replicas[@]} -gt 0 ] && kill "${replicas[@]}" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --locked --quiet --bin meet-webhooks --example load --example baseline --example pg_floor
cargo build --release --locked --quiet --manifest-path bench/axum-baseline/Cargo.toml
bin=target/release/meet-webhooks
load=target/release/examples/load
axum=bench/axum-baseline/target/release/axum-baseline
actix=target/release/examples/baseline
pg_floor=target/release/examples/pg_floor
pg_admin=${MEET_WEBHOOKS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
postgres=
if command -v psql >/dev/null && psql "$pg_admin" -qc 'SELECT 1' >/dev/null 2>&1; then postgres=1; fi

# run <label> <receiver cpu list or ""> <load cpu list or ""> <receiver command...>
run() {
  local label=$1 server_cpus=$2 load_cpus=$3; shift 3
  rm -rf "$work/data"
  local pin_server=() pin_load=()
  [ -n "$server_cpus" ] && pin_server=(taskset -c "$server_cpus")
  [ -n "$load_cpus" ] && pin_load=(taskset -c "$load_cpus")
  "${pin_server[@]}" "$@" 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  local report
  report=$("${pin_load[@]}" "$load" --url "http://127.0.0.1:$port/webhook" --key "$key" \
    --connections "$connections" --seconds "${RUN_SECONDS:-$seconds}" --pid "$pid" --mix "${MIX:-provider}")
  report=$(with_handled "$report" "$port")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "{\"run\":\"$label\",${report#\{}" | tee -a "$work/results.jsonl"
}

# with_handled <report> <port...>: the report with "handled", the deliveries whose handler had
# finished (done) when the load stopped, read from each receiver's /metrics at once: with the
# inbox, a delivery is acknowledged when stored and handled after; what is acknowledged faster
# than it is handled waits in the inbox. Receivers without those metrics add nothing.
with_handled() {
  local report=$1 port handled=0 any=
  shift
  for port in "$@"; do
    local n
    n=$(curl -s --max-time 2 "http://127.0.0.1:$port/metrics" \
      | awk '/^meet_webhooks_handler_attempts_total\{.*outcome="done"/ {s += $NF; f = 1} END {if (f) print s}') || true
    [ -n "$n" ] && handled=$((handled + n)) && any=1
  done
  if [ -n "$any" ]; then echo "{\"handled\":$handled,${report#\{}"; else echo "$report"; fi
}

# A fresh, empty database for one run; prints its URL (no TLS on loopback).
pg_database() {
  psql "$pg_admin" -qc "DROP DATABASE IF EXISTS mw_bench WITH (FORCE)" -c "CREATE DATABASE mw_bench" >/dev/null
  echo "${pg_admin%/*}/mw_bench?sslmode=disable"
}

# run_postgres <label> <replicas>: that many `serve --database-url` on one fresh database, on
# ports from $port up, the load spread over them.
run_postgres() {
  local label=$1 count=$2 url report i
  local load_args=()
  url=$(pg_database)
  replicas=()
  for i in $(seq 0 $((count - 1))); do
    "$bin" serve --key "$key" --bind "127.0.0.1:$((port + i))" --database-url "$url" --replica-id "bench-$i" \
      2>"$work/serve-$i.log" &
    replicas+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$work/serve-$i.log" && break; sleep 0.1; done
    load_args+=(--url "http://127.0.0.1:$((port + i))/webhook" --pid "$!")
  done
  report=$("$load" --key "$key" --connections "$connections" --seconds "${RUN_SECONDS:-$seconds}" "${load_args[@]}")
  report=$(with_handled "$report" $(seq "$port" $((port + count - 1))))
  kill -TERM "${replicas[@]}"; wait "${replicas[@]}" || true; replicas=()
  echo "{\"run\":\"$label\",${report#\{}" | tee -a "$work/results.jsonl"
}

run_postgres_floor() {
  local report
  report=$("$pg_floor" --database-url "$(pg_database)" --in-flight "$connections" --seconds "$seconds")
  echo "{\"run\":\"postgres floor (batched insert, no HTTP)\",${report#\{}" | tee -a "$work/results.jsonl"
}

serve=("$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data")
# Verification only remembers every delivery until its timestamp is too old to be accepted
# (120 s): at ~100k/s a 5 s run needs about half a million entries, above the default cap.
inline=("${serve[@]}" --no-inbox --replay-capacity 4000000)

echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); $rounds rounds of ${seconds} s"
for _ in $(seq "$rounds"); do
  if [ -n "${POSTGRES_ONLY:-}" ]; then
    run "axum bare verifier" "" "" "$axum" --mode verify --key "$key" --bind "127.0.0.1:$port"
    run "inbox on" "" "" "${serve[@]}"
  else
  run "axum floor (checks nothing)" "" "" "$axum" --mode floor --key "$key" --bind "127.0.0.1:$port"
  run "axum bare verifier" "" "" "$axum" --mode verify --key "$key" --bind "127.0.0.1:$port"
  rm -f "$work/durable.log"
  run "durable floor (verify, append, group fdatasync)" "" "" "$axum" --mode durable --key "$key" \
    --bind "127.0.0.1:$port" --file "$work/durable.log"
  run "actix bare verifier, 1 worker" "" "" "$actix" --mode verify --key "$key" --bind "127.0.0.1:$port" --workers 1
  MIX=typed run "verification only (typed mix)" "" "" "${inline[@]}"
  MIX=typed run "inbox on (typed mix)" "" "" "${serve[@]}"
  run "verification only" "" "" "${inline[@]}"
  run "verification only, a worker per core" "" "" "${inline[@]}" --workers "$(nproc)"
  run "inbox on" "" "" "${serve[@]}"
  # The reorder window holds each room's delivery 2.5 s: in a 5 s flood the last 2.5 s wait.
  run "inbox on, --reorder-window 0" "" "" "${serve[@]}" --reorder-window 0
  run "inbox on, a worker per core" "" "" "${serve[@]}" --workers "$(nproc)"
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    run "inbox on, receiver on cpu 0, load on cpu 1" 0 1 "${serve[@]}"
  fi
  fi
  if [ -n "$postgres" ]; then
    run_postgres_floor
    run_postgres "postgres, 1 replica" 1
    run_postgres "postgres, 2 replicas" 2
    run_postgres "postgres, 3 replicas" 3
  fi
done
if [ -n "${LONG:-}" ]; then
  # Memory over a long run, in every mode: RSS at the end beside its peak.
  # (its replay memory holds every delivery of the last 120 s: room for 60 s at ~100k/s)
  RUN_SECONDS=$LONG run "verification only, ${LONG} s" "" "" "${serve[@]}" --no-inbox --replay-capacity 12000000
  RUN_SECONDS=$LONG run "inbox on, ${LONG} s" "" "" "${serve[@]}"
  if [ -n "$postgres" ]; then
    RUN_SECONDS=$LONG run_postgres "postgres, 1 replica, ${LONG} s" 1
  fi
fi
if [ -z "${POSTGRES_ONLY:-}" ] && [ -z "${NO_DRAIN:-}" ]; then
  # How fast a backlog drains, one room and 1,000 rooms (criterion, benches/inbox.rs).
  cargo bench --locked --quiet --bench inbox 2>/dev/null | grep -E "^drain|time:|thrpt:" || true
fi

python3 - "$work/results.jsonl" <<'PY'
import json, sys
from statistics import median

runs = [json.loads(line) for line in open(sys.argv[1])]
# Each run's ratio to the axum bare verifier and to the durable floor of its round (the last
# ones before it).
bare = durable = None
for r in runs:
    if r["run"] == "axum bare verifier":
        bare = r["deliveries_per_second"]
    if r["run"].startswith("durable floor"):
        durable = r["deliveries_per_second"]
    r["ratio"] = r["deliveries_per_second"] / bare if bare else float("nan")
    r["durable_ratio"] = r["deliveries_per_second"] / durable if durable else float("nan")
def handled(rs):
    """Of the acknowledged deliveries, the share handled when the load stopped (median); "-" for
    receivers that handle before answering or have no such metric."""
    shares = [r["handled"] / r["deliveries"] for r in rs if "handled" in r and r["deliveries"]]
    return f"{median(shares):.0%}" if shares else "-"
# The provider measured its Rust receiver at 106k/s where its bare axum verifier did 120k/s.
provider = 106 / 120
print()
print("| configuration | runs | deliveries/s | × axum bare verifier | × durable floor | × provider's receiver (est.) "
      "| p50 | p99 | p99.9 | non-2xx | receiver CPU µs/delivery | load CPU µs/delivery | RSS MiB (peak) "
      "| handled when the load stopped |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for label in dict.fromkeys(r["run"] for r in runs):
    rs = [r for r in runs if r["run"] == label]
    med = lambda f: median(f(r) for r in rs)
    ratio = med(lambda r: r["ratio"])
    latency = lambda q: med(lambda r: r["latency_us"][q]) / 1000
    print(f"| {label} | {len(rs)} | {med(lambda r: r['deliveries_per_second']):,.0f} | {ratio:.2f} "
          f"| {med(lambda r: r['durable_ratio']):.2f} | {ratio / provider:.2f} | {latency('p50'):.2f} ms | {latency('p99'):.2f} ms "
          f"| {latency('p99.9'):.2f} ms | {sum(r['non_2xx'] for r in rs)} "
          f"| {med(lambda r: r.get('receiver_cpu_us_per_delivery', 0)):.1f} "
          f"| {med(lambda r: r.get('load_cpu_us_per_delivery', 0)):.1f} "
          f"| {max(r.get('receiver_rss_mib', 0) for r in rs)} ({max(r.get('receiver_peak_rss_mib', 0) for r in rs)}) "
          f"| {handled(rs)} |")

# PostgreSQL: each run against the floor of its own round.
floor = None
for r in runs:
    if r["run"].startswith("postgres floor"):
        floor = r["deliveries_per_second"]
    r["floor_ratio"] = r["deliveries_per_second"] / floor if floor else float("nan")
pg = [label for label in dict.fromkeys(r["run"] for r in runs) if label.startswith("postgres")]
if pg:
    print()
    print("| PostgreSQL | runs | acknowledged/s | × the floor | p50 | p99 | receiver CPU µs/delivery (all replicas) "
          "| handled when the load stopped |")
    print("|---|---|---|---|---|---|---|---|")
    for label in pg:
        rs = [r for r in runs if r["run"] == label]
        med = lambda f: median(f(r) for r in rs)
        print(f"| {label} | {len(rs)} | {med(lambda r: r['deliveries_per_second']):,.0f} "
              f"| {med(lambda r: r['floor_ratio']):.2f} | {med(lambda r: r['latency_us']['p50']) / 1000:.2f} ms "
              f"| {med(lambda r: r['latency_us']['p99']) / 1000:.2f} ms "
              f"| {med(lambda r: r.get('receiver_cpu_us_per_delivery', 0)):.1f} | {handled(rs)} |")
PY
[ -z "$postgres" ] || psql "$pg_admin" -qc "DROP DATABASE IF EXISTS mw_bench WITH (FORCE)" >/dev/null
