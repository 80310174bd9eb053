#!/usr/bin/env bash
# Builds release, then drives each receiver configuration with the load tool
# (examples/load.rs) in turn, in one run, so that the figures can be compared with each other:
#
#   axum floor / axum bare verifier   the provider's two reference points, rebuilt here
#                                     (bench/axum-baseline): an axum server that checks
#                                     nothing, and one that only checks the HMAC
#   actix bare verifier               the same on actix-web, one worker: our framework's floor
#   verification only                 meet-webhooks --no-inbox (verify, deduplicate, typed
#                                     parse, handler, metrics, info logs), default workers
#                                     and one worker
#   inbox on                          meet-webhooks as it ships: every 2xx after an fsynced
#                                     commit; then pinned (receiver on cpu 0, load on cpu 1)
#
# Prints one JSON line per run, then a Markdown table with the ratios. Bounded:
# SECONDS_PER_RUN (default 10) each, CONNECTIONS (default 64) keep-alive connections,
# 127.0.0.1 only. LONG=60 adds a 60 s inbox run (memory over time).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_PER_RUN:-10}
connections=${CONNECTIONS:-64}
port=${PORT:-5099}
key=bench-key
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --locked --quiet --bin meet-webhooks --example load --example baseline
cargo build --release --locked --quiet --manifest-path bench/axum-baseline/Cargo.toml
bin=target/release/meet-webhooks
load=target/release/examples/load
axum=bench/axum-baseline/target/release/axum-baseline
actix=target/release/examples/baseline

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
    --connections "$connections" --seconds "${RUN_SECONDS:-$seconds}" --pid "$pid")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "{\"run\":\"$label\",${report#\{}" | tee -a "$work/results.jsonl"
}

serve=("$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data")
# Verification only must remember every delivery for the replay window: at ~100k/s, a
# 10 s run needs about a million entries, above the default cap (see README).
inline=("${serve[@]}" --no-inbox --replay-capacity 4000000)

echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ)"
run "axum floor (checks nothing)" "" "" "$axum" --mode floor --key "$key" --bind "127.0.0.1:$port"
run "axum bare verifier" "" "" "$axum" --mode verify --key "$key" --bind "127.0.0.1:$port"
run "actix bare verifier, 1 worker" "" "" "$actix" --mode verify --key "$key" --bind "127.0.0.1:$port" --workers 1
run "verification only" "" "" "${inline[@]}"
run "verification only, 1 worker" "" "" "${inline[@]}" --workers 1
run "inbox on" "" "" "${serve[@]}"
run "inbox on, 1 worker" "" "" "${serve[@]}" --workers 1
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  run "inbox on, receiver on cpu 0, load on cpu 1" 0 1 "${serve[@]}"
fi
if [ -n "${LONG:-}" ]; then
  RUN_SECONDS=$LONG run "inbox on, ${LONG} s" "" "" "${serve[@]}"
fi

python3 - "$work/results.jsonl" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
bare = next(r for r in runs if r["run"] == "axum bare verifier")
# The provider measured its Rust receiver at 106k/s where its bare axum verifier did 120k/s.
provider = bare["deliveries_per_second"] * 106 / 120
print()
print("| configuration | deliveries/s | × axum bare verifier | × provider's receiver (est.) | p50 | p99 | p99.9 | non-2xx | receiver CPU µs/delivery | load CPU µs/delivery | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    rate = r["deliveries_per_second"]
    lat = r["latency_us"]
    print(f"| {r['run']} | {rate:,.0f} | {rate / bare['deliveries_per_second']:.2f} | {rate / provider:.2f} "
          f"| {lat['p50'] / 1000:.2f} ms | {lat['p99'] / 1000:.2f} ms | {lat['p99.9'] / 1000:.2f} ms | {r['non_2xx']} "
          f"| {r.get('receiver_cpu_us_per_delivery', '-')} | {r.get('load_cpu_us_per_delivery', '-')} "
          f"| {r.get('receiver_rss_mib', '-')} (peak {r.get('receiver_peak_rss_mib', '-')}) |")
EOF
