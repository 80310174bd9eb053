#!/usr/bin/env python3
"""Does the rate stay flat for minutes? One receiver flooded for DURATION seconds (default 600)
with the provider's mix (examples/load.rs, 64 connections), a retention short enough that
pruning runs for most of it (RETENTION_S, default 180 s: the shortest the receiver takes is
its replay window, 150 s), on SQLite or PostgreSQL (STORAGE=sqlite |
postgres, default both, one after the other).

RATE paces the load instead (deliveries a second).

Every 10 s it reads the deliveries handled so far (the receiver's /metrics), its resident
memory, and the inbox's size on disk (SQLite: the database file and its WAL; PostgreSQL: the
deliveries table with its indexes and TOAST). Writes a CSV per run and, with matplotlib
(`pip install matplotlib`), a PNG of the figures over time, into OUT (default bench/results);
prints each interval and, at the end, the last minute's rate against the first's. Afterwards
every delivery acknowledged must be handled, once (checked). Bounded: 127.0.0.1 only, the data
in a temporary directory, the database mw_bench_flat dropped at the end.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, KEY, LOAD, ROOT, attempts, drop_database, fresh_database, handled, metrics, psql, \
    require, wait_ready

PORT = int(os.environ.get("PORT", "5390"))
DURATION = int(os.environ.get("DURATION", "600"))
# Deliveries a second (a paced load, examples/load.rs --rate); unset: a flood.
RATE = os.environ.get("RATE")
RETENTION = float(os.environ.get("RETENTION_S", "180"))
STEP = 10
OUT = os.environ.get("OUT", os.path.join(ROOT, "bench/results"))
DB = "mw_bench_flat"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


def run(storage, work):
    flags = ["--retention-hours", str(RETENTION / 3600)]
    if storage == "postgres":
        url = fresh_database(DB)
        flags += ["--database-url", url]

        def size():
            return {"inbox_mib": int(psql("SELECT pg_total_relation_size('deliveries')", url)) / 2**20,
                    "wal_mib": 0.0}
    else:
        data = os.path.join(work, "data")
        flags += ["--data-dir", data]

        def size():
            mib = lambda name: os.path.getsize(os.path.join(data, name)) / 2**20 if os.path.exists(
                os.path.join(data, name)) else 0.0
            return {"inbox_mib": mib("inbox.sqlite3"), "wal_mib": mib("inbox.sqlite3-wal")}
    log = open(os.path.join(work, f"serve-{storage}.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT}"] + flags,
                            stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="warn"))
    rows = []
    try:
        if not wait_ready(PORT, proc):
            log.close()
            sys.exit(f"the receiver did not start: {open(log.name).read()}")
        load = subprocess.Popen([LOAD, "--url", f"http://127.0.0.1:{PORT}/webhook", "--key", KEY,
                                 "--seconds", str(DURATION), "--pid", str(proc.pid)]
                                + (["--rate", RATE] if RATE else []),
                                stdout=subprocess.PIPE, text=True)
        started, last = time.monotonic(), 0.0
        for step in range(1, DURATION // STEP + 1):
            time.sleep(max(0.0, started + step * STEP - time.monotonic()))
            now = handled(metrics(PORT))
            row = {"t_s": step * STEP, "handled_per_s": round((now - last) / STEP), "rss_mib": round(rss_mib(proc.pid), 1),
                   **{k: round(v, 1) for k, v in size().items()}}
            last = now
            rows.append(row)
            print(json.dumps({"storage": storage, **row}), flush=True)
        report = json.loads(load.communicate()[0])
        acknowledged = report["deliveries"] - report["non_2xx"]
        deadline = time.monotonic() + 120
        while handled(metrics(PORT)) < acknowledged and time.monotonic() < deadline:
            time.sleep(0.1)
        text = metrics(PORT)
        done, runs = handled(text), attempts(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if storage == "postgres":
            drop_database(DB)
    first = sum(r["handled_per_s"] for r in rows[:6]) / 6
    final = sum(r["handled_per_s"] for r in rows[-6:]) / 6
    summary = {"storage": storage, "seconds": DURATION, "rate": RATE or "flood", "retention_s": RETENTION,
               "acknowledged": acknowledged,
               # A flood the handlers cannot keep up with leaves a backlog: all handled only if
               # it drained within the 120 s waited after the load.
               "handled_within_120_s_after": int(done), "runs": int(runs), "each_handled_once": done == runs == acknowledged, "first_minute_per_s": round(first), "last_minute_per_s": round(final),
               "last_over_first": round(final / first, 2),
               "rss_mib_first_last": [rows[5]["rss_mib"], rows[-1]["rss_mib"]],
               "inbox_mib_first_last": [rows[5]["inbox_mib"], rows[-1]["inbox_mib"]],
               "inbox_mib_max": max(r["inbox_mib"] for r in rows)}
    print(json.dumps(summary), flush=True)
    return rows, summary


def save(storage, rows, stamp):
    os.makedirs(OUT, exist_ok=True)
    name = os.path.join(OUT, f"flat-{stamp}-{storage}")
    with open(name + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# no matplotlib: CSV only (pip install matplotlib for the plot)", file=sys.stderr)
        return
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, [r["handled_per_s"] for r in rows])
    axes[0].set_ylabel("handled / s")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["rss_mib"] for r in rows])
    axes[1].set_ylabel("RSS (MiB)")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(t, [r["inbox_mib"] for r in rows], label="inbox")
    if any(r["wal_mib"] for r in rows):
        axes[2].plot(t, [r["wal_mib"] for r in rows], label="WAL")
    axes[2].set_ylabel("on disk (MiB)")
    axes[2].set_ylim(bottom=0)
    axes[2].legend()
    axes[2].set_xlabel("seconds")
    load = f"paced at {RATE}/s" if RATE else "flood"
    fig.suptitle(f"{storage}: {DURATION} s, {load}, retention {RETENTION:g} s ({stamp})")
    fig.tight_layout()
    fig.savefig(name + ".png", dpi=80)


def main():
    require(BIN, LOAD)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    storages = os.environ.get("STORAGE", "sqlite postgres").split()
    with tempfile.TemporaryDirectory() as work:
        for storage in storages:
            rows, _ = run(storage, work)
            save(storage, rows, stamp)


if __name__ == "__main__":
    main()
