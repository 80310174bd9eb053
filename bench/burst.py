#!/usr/bin/env python3
"""A burst as a busy provider sends it: BURSTS (default "1000 5000") connections opened at once,
each sending one signed delivery of the provider's mix, against `meet-webhooks serve` on SQLite
started with `--max-connections` at least the burst. Reports each attempt's time from its own
start (connect) to its answer: p50, p99 and p100, and how many took longer than the provider's
5 s timeout (each of those is a retry, and six a lost event) or got no 200. ROUNDS (default 3)
of each. Bounded: 127.0.0.1 only; a fresh data directory per run, in a temporary directory.
"""

import asyncio
import hashlib
import hmac
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/meet-webhooks")
KEY = b"bench-key"
PORT = int(os.environ.get("PORT", "5490"))
BURSTS = [int(n) for n in os.environ.get("BURSTS", "1000 5000").split()]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TIMEOUT = 5.0
EVENTS = ["meetingStarted", "recordingStarted", "recordingUpdated", "recordingEnded", "meetingEnded"]


def request(n, now_ms):
    event = EVENTS[n % 5]
    room = f"room-{n // 5}"
    body = json.dumps({"event": event, "creationDate": now_ms + n % 5,
                       "data": {"roomId": room, "recordingId": f"{room}--EG_{n}--XX", "status": "active"}},
                      separators=(",", ":")).encode()
    timestamp = str(now_ms)
    signature = hmac.new(KEY, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    head = (f"POST /webhook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"x-timestamp: {timestamp}\r\nx-signature: {signature}\r\ncontent-length: {len(body)}\r\n"
            f"user-agent: node\r\n\r\n")
    return head.encode() + body


async def attempt(payload, start_gate, results):
    await start_gate.wait()
    started = time.monotonic()
    status = None
    try:
        async def exchange():
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            writer.write(payload)
            await writer.drain()
            line = await reader.readline()
            writer.close()
            return int(line.split()[1])
        status = await asyncio.wait_for(exchange(), TIMEOUT * 3)
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        pass
    results.append((time.monotonic() - started, status))


async def burst(size):
    now_ms = int(time.time() * 1000)
    payloads = [request(n, now_ms) for n in range(size)]
    gate = asyncio.Event()
    results = []
    tasks = [asyncio.create_task(attempt(p, gate, results)) for p in payloads]
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.gather(*tasks)
    return results


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(size, work):
    data = os.path.join(work, f"data-{size}-{time.monotonic_ns()}")
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--key", KEY.decode(), "--bind", f"127.0.0.1:{PORT}", "--data-dir", data,
                             "--max-connections", str(size)], stdout=subprocess.DEVNULL, stderr=log,
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        results = asyncio.run(burst(size))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    times = sorted(t for t, _ in results)
    return {
        "connections": size,
        "answered_200": sum(1 for _, s in results if s == 200),
        "other_or_none": sum(1 for _, s in results if s != 200),
        "over_5s": sum(1 for t in times if t > TIMEOUT),
        "p50_ms": round(quantile(times, 0.5) * 1000, 1),
        "p99_ms": round(quantile(times, 0.99) * 1000, 1),
        "p100_ms": round(times[-1] * 1000, 1),
    }


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release --locked --bin meet-webhooks")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(BURSTS) + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    somaxconn = open("/proc/sys/net/core/somaxconn").read().strip()
    print(f"# {os.cpu_count()} cores; {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
          f"net.core.somaxconn {somaxconn}; open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for _ in range(ROUNDS):
            for size in BURSTS:
                print(json.dumps(run(size, work)), flush=True)


if __name__ == "__main__":
    main()
