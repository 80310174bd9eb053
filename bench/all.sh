#!/usr/bin/env bash
# Every benchmark of the replicas, the lag, the bursts and the minutes, one after the other, in one
# go: builds release once, then runs scale.py, lag.py, burst.py and flat.py with their defaults
# (override them through their own variables, e.g. DURATION=120 for shorter minutes), each
# printing its JSON lines and table. About 25 minutes with the defaults (flat.py's two 10-minute
# floods are most of it). The floods of run.sh and window.sh are separate scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin meet-webhooks --example load --example lag
for script in scale lag burst flat; do
  echo "## bench/$script.py"
  python3 "bench/$script.py"
  echo
done
