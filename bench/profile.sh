#!/usr/bin/env bash
# Instruction counts per delivery (callgrind) for the two request paths: verification only
# (--no-inbox) and the inbox (SQLite, as it ships), with the provider's mix (MIX=typed for the
# typed one). Counts do not depend on what else the machine is doing, so two builds can be
# compared on a shared machine where wall-clock figures cannot.
#
# Builds release with line tables into target/prof, runs the receiver (one HTTP worker)
# under callgrind, collects only while the load runs (DELIVERIES_SECONDS, default 5; CONNECTIONS,
# default 64, so that the inbox commits in batches as it does under load), and prints the inclusive instructions per delivery of the functions that
# matter, then the total. Under valgrind sha2 takes its portable path (valgrind hides the SHA
# extensions), so HMAC counts are several times what the machine runs natively.
#
# KEEP=dir keeps the callgrind files; SKIP_BASELINE=1 leaves out the bare actix verifier. Also
# records a perf profile of a real-speed run when PERF=1 (needs perf): the share of kernel,
# receiver and libc time.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-5098}
key=bench-key
seconds=${DELIVERIES_SECONDS:-5}
connections=${CONNECTIONS:-64}
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked --quiet --target-dir target/prof \
  --bin meet-webhooks --example load --example baseline
bin=target/prof/release/meet-webhooks
load=target/prof/release/examples/load
actix=target/prof/release/examples/baseline

# profile <label> <receiver command...>
profile() {
  local label=$1; shift
  rm -rf "$work/data" "$work/callgrind.out"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" "$@" 2>"$work/serve.log" &
  server=$!
  for _ in $(seq 300); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  callgrind_control -i on "$server" >/dev/null
  local report deliveries
  report=$("$load" --url "http://127.0.0.1:$port/webhook" --key "$key" --connections "$connections" --seconds "$seconds" \
    --mix "${MIX:-provider}")
  # The inbox's dispatcher finishes what was acknowledged before counting stops.
  sleep 2
  callgrind_control -i off "$server" >/dev/null
  kill -TERM "$server"; wait "$server" || true; server=
  # KEEP=dir keeps each profile there, for callgrind_annotate.
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$work/callgrind.out" "$KEEP/${label%% (*}.callgrind"
  deliveries=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["deliveries"])' "$report")
  echo
  echo "## $label: $deliveries deliveries, instructions per delivery (inclusive)"
  callgrind_annotate --inclusive=yes --threshold=100 "$work/callgrind.out" 2>/dev/null | python3 -c '
import re, sys
n = int(sys.argv[1])
wanted = [
    ("PROGRAM TOTALS", "all threads"),
    ("InnerDispatcher<T,S,B,X,U>::poll_response", "the request, from its parsed head to its answer"),
    ("Codec as tokio_util::codec::decoder::Decoder>::decode", "HTTP/1 parsing (actix-http)"),
    ("meet_webhooks_signature::verify::Verifier::verify", "verification (HMAC: portable SHA-256 here)"),
    ("baseline::verifies", "verification (HMAC: portable SHA-256 here)"),
    ("meet_webhooks_runtime::route::handle_inline", "no inbox: replay check, handler"),
    ("meet_webhooks_runtime::webhooks::envelope", "the envelope read (event, roomId)"),
    ("meet_webhooks::generated::Event::parse", "typed parse"),
    ("serde_json::value::de::<impl serde_core::de::Deserialize for serde_json::value::Value>::deserialize", "JSON trees (serde_json::Value)"),
    ("meet_webhooks_runtime::logging::Batched as log::Log>::log", "log lines"),
    ("meet_webhooks_runtime::metrics::delivered", "metrics"),
    ("SqliteInbox as meet_webhooks_runtime::inbox::Inbox>::append", "inbox append (request side)"),
    ("meet_webhooks_runtime::inbox::sqlite", "inbox storage (SQLite writer)"),
    ("sqlite3VdbeExec", "SQLite statements"),
    ("meet_webhooks_runtime::inbox::sqlite::store::Store::commit", "inbox transactions (appends, claims, outcomes)"),
    ("sqlite3Reprepare", "statements planned again"),
    ("sqlite3BtreeOpen", "temporary tables opened"),
]
seen = set()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*?(\S+:.*)$", line)
    total = re.match(r"\s*([\d,]+) .*PROGRAM TOTALS", line)
    for pattern, name in wanted:
        if name in seen:
            continue
        if (total and pattern == "PROGRAM TOTALS") or (m and pattern != "PROGRAM TOTALS" and pattern in m.group(2)):
            count = int((total or m).group(1).replace(",", ""))
            print(f"{count / n:>10,.0f}  {name}")
            seen.add(name)
' "$deliveries"
}

serve=("$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data" --workers 1)
if [ -z "${SKIP_BASELINE:-}" ]; then
  profile "actix bare verifier (examples/baseline.rs)" "$actix" --mode verify --key "$key" --bind "127.0.0.1:$port" \
    --workers 1
fi
profile "verification only (--no-inbox)" "${serve[@]}" --no-inbox --replay-capacity 4000000
profile "inbox on (SQLite)" "${serve[@]}"

if [ -n "${PERF:-}" ]; then
  "$bin" serve --key "$key" --bind "127.0.0.1:$port" --data-dir "$work/data-perf" --no-inbox \
    --replay-capacity 4000000 2>"$work/serve.log" &
  server=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
  perf record -q -F 999 -p "$server" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null &
  "$load" --url "http://127.0.0.1:$port/webhook" --key "$key" --connections 64 --seconds "$seconds" >/dev/null
  wait %2 2>/dev/null || true
  kill -TERM "$server"; wait "$server" || true; server=
  echo
  echo "## perf, verification only, by object"
  perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep '%' | head -5
fi
