#!/usr/bin/env python3
"""A burst as a busy provider sends it: BURSTS (default "1000 5000") connections opened at once,
each sending one signed delivery of the provider's mix (examples/load.rs --burst), against
`meet-webhooks serve` on SQLite. Each burst runs against a receiver whose `--max-connections`
(and so its listen queue) is the burst, and against one with the default (1,000). Reports each
attempt's time from its own start (connect) to its answer: p50, p99 and p100, and how many
took longer than the provider's 5 s timeout (each of those is a retry, and six a lost event) or
got no 2xx. ROUNDS (default 3) of each. Bounded: 127.0.0.1 only; a fresh data directory per
run, in a temporary directory.
"""

import json
import os
import resource
import signal
import subprocess
import tempfile
import time

from benchlib import BIN, KEY, LOAD, header, require, wait_ready

PORT = int(os.environ.get("PORT", "5490"))
BURSTS = [int(n) for n in os.environ.get("BURSTS", "1000 5000").split()]
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def run(size, max_connections, work):
    data = os.path.join(work, f"data-{time.monotonic_ns()}")
    args = [BIN, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT}", "--data-dir", data]
    if max_connections:
        args += ["--max-connections", str(max_connections)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        wait_ready(PORT, proc)
        out = subprocess.run([LOAD, "--url", f"http://127.0.0.1:{PORT}/webhook", "--key", KEY,
                              "--burst", str(size), "--threads", "2"], check=True, capture_output=True, text=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {"max_connections": max_connections or "default (1000)", **json.loads(out.stdout)}


def main():
    require(BIN, LOAD)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(BURSTS) + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    somaxconn = open("/proc/sys/net/core/somaxconn").read().strip()
    print(header(f"net.core.somaxconn {somaxconn}; open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"),
          flush=True)
    with tempfile.TemporaryDirectory() as work:
        for _ in range(ROUNDS):
            for size in BURSTS:
                for max_connections in (size, None):
                    print(json.dumps(run(size, max_connections, work)), flush=True)


if __name__ == "__main__":
    main()
