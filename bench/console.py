#!/usr/bin/env python3
"""How fast the console answers with a full inbox: COUNT (default 100,000) deliveries of the
provider's mix stored (examples/load.rs floods until there are), on SQLite and on PostgreSQL
(STORAGE=sqlite | postgres, default both), then each of the console's requests timed REPEAT
times (default 50) from loopback: the page, the newest page of the list (with its counts), a
room, an event, dead ones, a recording, a page deep in the past, and an event that is not
there (the one filter with no index: it reads the whole table). Then the first paint of the
list in headless Chromium (bench/console_paint.mjs, with tests/browser's playwright-core): from
navigation to the list's rows on screen, logged in, REPEAT times.

Prints a JSON line per request (p50/p99/max ms) and per paint. Bounded: 127.0.0.1 only; the
data in a temporary directory, the database mw_bench_console dropped at the end.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import BIN, KEY, LOAD, ROOT, drop_database, fresh_database, header, postgres_reachable, require, \
    wait_ready

PORT = int(os.environ.get("PORT", "5490"))
CONSOLE = PORT + 1
COUNT = int(os.environ.get("COUNT", "100000"))
REPEAT = int(os.environ.get("REPEAT", "50"))
TOKEN = "bench-console-token-0123456789"
DB = "mw_bench_console"


def api(path):
    request = urllib.request.Request(f"http://127.0.0.1:{CONSOLE}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def stored():
    """Deliveries in the inbox (the handled ones are counted in the background: waited for)."""
    while True:
        counts = api("/api/deliveries?limit=1")["counts"]
        if counts["done"] is not None:
            return counts["pending"] + counts["done"] + counts["dead"]
        time.sleep(0.2)


def timed(path, auth=True):
    """Milliseconds per request, REPEAT times."""
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{CONSOLE}{path}", headers=headers),
                               timeout=30).read()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p99_ms": round(times[int(len(times) * 0.99) - 1], 1),
            "max_ms": round(times[-1], 1)}


def run(storage, work):
    db_args = ["--database-url", fresh_database(DB)] if storage == "postgres" else ["--data-dir", work]
    log = open(os.path.join(work, f"serve-{storage}.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT}", "--reorder-window", "0",
                             "--admin-bind", f"127.0.0.1:{CONSOLE}", "--admin-token", TOKEN] + db_args,
                            stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="warn"))
    try:
        if not wait_ready(PORT, proc):
            sys.exit(f"the receiver did not start: see {log.name}")
        while stored() < COUNT:
            subprocess.run([LOAD, "--url", f"http://127.0.0.1:{PORT}/webhook", "--key", KEY, "--seconds", "5"],
                           check=True, stdout=subprocess.DEVNULL)
        newest = api("/api/deliveries?limit=50")["deliveries"]
        room = next(d["room"] for d in newest if d["room"])
        recording = next(d["recording"] for d in newest if d["recording"])
        middle = newest[0]["id"] // 2
        total = stored()
        for name, path, auth in [
            ("page (login prompt)", "/", False),
            ("script", "/assets/console.js", False),
            ("newest 50, with counts", "/api/deliveries?limit=50", True),
            ("a room", f"/api/deliveries?limit=50&room={room}", True),
            ("an event", "/api/deliveries?limit=50&event=recordingEnded", True),
            ("dead", "/api/deliveries?limit=50&state=dead", True),
            ("a recording", f"/api/deliveries?limit=50&q={recording}", True),
            ("a page half way back", f"/api/deliveries?limit=50&before={middle}", True),
            ("one delivery", f"/api/deliveries/{middle}", True),
            ("an event that is not there (reads every row)", "/api/deliveries?limit=50&event=noSuchEvent", True),
        ]:
            print(json.dumps({"storage": storage, "deliveries": total, "request": name, **timed(path, auth)}),
                  flush=True)
        paint = subprocess.run(["node", os.path.join(ROOT, "bench/console_paint.mjs")],
                               env=dict(os.environ, CONSOLE_URL=f"http://127.0.0.1:{CONSOLE}", TOKEN=TOKEN,
                                        REPEAT=str(REPEAT)),
                               capture_output=True, text=True)
        if paint.returncode != 0:
            print(f"# the paint measurement failed: {paint.stderr.strip()[:500]}", flush=True)
        else:
            print(json.dumps({"storage": storage, "deliveries": total, **json.loads(paint.stdout)}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if storage == "postgres":
            drop_database(DB)


def main():
    require(BIN, LOAD)
    print(header(f"console, {COUNT} deliveries, {REPEAT} requests each"), flush=True)
    storages = os.environ.get("STORAGE", "sqlite postgres").split()
    if "postgres" in storages and not postgres_reachable():
        print("# PostgreSQL is unreachable: SQLite only", flush=True)
        storages = [s for s in storages if s != "postgres"]
    for storage in storages:
        with tempfile.TemporaryDirectory() as work:
            run(storage, work)


if __name__ == "__main__":
    main()
