#!/usr/bin/env python3
"""What the replicas' own metrics say under a paced load: N (default 3) replicas on one
PostgreSQL (MEET_WEBHOOKS_TEST_DATABASE_URL, default the local server; database
mw_bench_paced, dropped at the end), the reorder window off, paced at RATE (default 1650) for
SECONDS_PER_RUN (default 10) with the provider's mix, rooms spread; then, summed over the replicas, the
histograms of a batch's commit (`meet_webhooks_inbox_commit_seconds`), its size, and the lag from
storing to the handler's start: count, mean, and the bucket bounds of p50, p90 and p99.
MEET_WEBHOOKS_BIN runs another build (to compare two, alternate them). Bounded: 127.0.0.1 only.
"""

import json
import os
import subprocess
import time

from benchlib import BIN, KEY, LOAD, drop_database, fresh_database, header, histogram, metrics, require, \
    stop_receivers, wait_ready

N = int(os.environ.get("N", "3"))
RATE = os.environ.get("RATE", "1650")
SECONDS = os.environ.get("SECONDS_PER_RUN", "10")
PORT = int(os.environ.get("PORT", "5390"))
DB = "mw_bench_paced"
HISTOGRAMS = ["meet_webhooks_inbox_commit_seconds", "meet_webhooks_inbox_commit_batch_size",
              "meet_webhooks_handler_lag_seconds"]


def main():
    require(BIN, LOAD)
    print(header(f"{N} replicas paced at {RATE}/s for {SECONDS} s, window off, rooms spread"))
    url = fresh_database(DB)
    procs = []
    try:
        for i in range(N):
            procs.append(subprocess.Popen(
                [BIN, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT + i}", "--reorder-window", "0",
                 "--replica-id", f"paced-{i}", "--database-url", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn")))
        for i, p in enumerate(procs):
            if not wait_ready(PORT + i, p):
                raise SystemExit(f"replica {i} did not start")
        args = [LOAD, "--key", KEY, "--seconds", SECONDS, "--rate", RATE, "--spread"]
        for i, p in enumerate(procs):
            args += ["--url", f"http://127.0.0.1:{PORT + i}/webhook", "--pid", str(p.pid)]
        report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        time.sleep(2)  # the last handlers
        summed = {name: ({}, 0.0, 0.0) for name in HISTOGRAMS}
        for i in range(N):
            text = metrics(PORT + i)
            for name in HISTOGRAMS:
                buckets, count, total = histogram(text, name)
                b, c, t = summed[name]
                for le, n in buckets.items():
                    b[le] = b.get(le, 0) + n
                summed[name] = (b, c + count, t + total)
        print("acknowledged", report["deliveries"] - report["non_2xx"])
        for name, (buckets, count, total) in summed.items():
            def bound(q):
                return next((le for le in sorted(buckets) if buckets[le] >= q * count), None)
            mean = total / count if count else 0
            print(f"{name}: count {count:.0f} mean {mean:.5f} p50<= {bound(0.5)} p90<= {bound(0.9)} "
                  f"p99<= {bound(0.99)}")
    finally:
        stop_receivers(procs)
        drop_database(DB)


if __name__ == "__main__":
    main()
