#!/usr/bin/env bash
# Two builds of the receiver against each other, interleaved, with the provider's mix:
#
#   bench/compare.sh <old meet-webhooks binary> <new meet-webhooks binary>
#
# Each round runs, in turn, old and new with the inbox (as shipped) and old and new without it
# (--no-inbox), SECONDS_PER_RUN (default 5) each, 64 connections; ROUNDS (default 5). Prints
# each run, then per mode the median deliveries/s and receiver CPU per delivery of each build,
# and the median of each round's new/old ratio. For a change's own effect on a shared machine:
# the two builds see the same minute.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-5}
port=${PORT:-5097}
key=bench-key
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --locked --quiet --example load
load=target/release/examples/load

# run <label> <binary> <serve args...>
run() {
  local label=$1 bin=$2; shift 2
  rm -rf "$work/data"
  "$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data" "$@" 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  local report
  report=$("$load" --url "http://127.0.0.1:$port/webhook" --key "$key" --connections 64 --seconds "$seconds" \
    --pid "$pid" --mix "${MIX:-provider}")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "{\"run\":\"$label\",${report#\{}" | tee -a "$work/results.jsonl"
}

for _ in $(seq "$rounds"); do
  run "old inbox" "$old"
  run "new inbox" "$new"
  run "old no-inbox" "$old" --no-inbox --replay-capacity 4000000
  run "new no-inbox" "$new" --no-inbox --replay-capacity 4000000
done

python3 - "$work/results.jsonl" <<'PY'
import json, sys
from statistics import median
runs = [json.loads(line) for line in open(sys.argv[1])]
print()
print("| mode | old deliveries/s | new deliveries/s | new/old (median of rounds) | old CPU µs/delivery | new CPU µs/delivery |")
print("|---|---|---|---|---|---|")
for mode in ("inbox", "no-inbox"):
    old = [r for r in runs if r["run"] == f"old {mode}"]
    new = [r for r in runs if r["run"] == f"new {mode}"]
    rate = lambda rs: median(r["deliveries_per_second"] for r in rs)
    cpu = lambda rs: median(r["receiver_cpu_us_per_delivery"] for r in rs)
    ratio = median(n["deliveries_per_second"] / o["deliveries_per_second"] for o, n in zip(old, new))
    print(f"| {mode} | {rate(old):,.0f} | {rate(new):,.0f} | {ratio:.2f} | {cpu(old):.1f} | {cpu(new):.1f} |")
PY
