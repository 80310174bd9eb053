#!/usr/bin/env bash
# Builds release, starts the receiver, and drives it with the load tool (examples/load.rs) in
# each configuration; prints one JSON line per run. Bounded: SECONDS_PER_RUN (default 10) each,
# 64 keep-alive connections, on 127.0.0.1 only.
#
#   bench/run.sh                 # verification only, inbox on, inbox on with pinned cores
#   LONG=60 bench/run.sh         # adds a 60 s inbox run, for memory over time
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

cargo build --release --locked --quiet --bin meet-webhooks --example load
bin=target/release/meet-webhooks
load=target/release/examples/load

# run <label> <receiver cpu list or ""> <load cpu list or ""> <serve flags...>
run() {
  local label=$1 server_cpus=$2 load_cpus=$3; shift 3
  rm -rf "$work/data"
  local pin_server=() pin_load=()
  [ -n "$server_cpus" ] && pin_server=(taskset -c "$server_cpus")
  [ -n "$load_cpus" ] && pin_load=(taskset -c "$load_cpus")
  "${pin_server[@]}" "$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data" "$@" 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  local report
  report=$("${pin_load[@]}" "$load" --url "http://127.0.0.1:$port/webhook" --key "$key" \
    --connections "$connections" --seconds "${RUN_SECONDS:-$seconds}" --pid "$pid")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "{\"run\":\"$label\",${report#\{}"
}

echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ)"
run "verification only (--no-inbox)" "" "" --no-inbox --replay-capacity 4000000
run "verification only, 1 HTTP worker" "" "" --no-inbox --replay-capacity 4000000 --workers 1
run "inbox on" "" ""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  run "inbox on, receiver on cpu 0, load on cpu 1" 0 1
fi
if [ -n "${LONG:-}" ]; then
  RUN_SECONDS=$LONG run "inbox on, ${LONG} s" "" ""
fi
