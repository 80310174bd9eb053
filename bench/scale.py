#!/usr/bin/env python3
"""Do replicas add capacity? 1, 2 and 3 replicas on one PostgreSQL, each replica in a CPU
cgroup of its own with the same quota (QUOTA of a core, default 0.3), PostgreSQL and the load
uncapped: on two shared cores, small replicas leave the machine room to spare, so that what
the replicas share is the database, not the CPU.

Each run floods the replicas for SECONDS (default 8) with the provider's mix (examples/load.rs,
CONNECTIONS (default 576) spread over the replicas round-robin, as a load balancer would),
then waits until every acknowledged delivery is handled. Its rate is the deliveries
acknowledged, divided by the time from the load's start to the last one's handling; it checks
that each was handled once (runs, from every replica's /metrics, == deliveries stored ==
deliveries acknowledged).
In the same run it reads what the database spent: the CPU time of PostgreSQL's processes, the
WAL it wrote and the transactions it committed, per delivery.

The configurations take turns, ROUNDS (default 3) times, in the order REPLICAS gives (default
"1 2 3"; "1 2 3 3 2 1" runs each twice, mirrored, against a machine that drifts); the ratios are
taken within a round, from each count's mean rate in it.
Prints a JSON line per run, then a Markdown table of medians. Needs root for the cgroups
(/sys/fs/cgroup/cpu, cgroup v1; created and removed here) and PostgreSQL at
MEET_WEBHOOKS_TEST_DATABASE_URL (default the local server; database mw_bench_scale, dropped at
the end). Without writable cgroups it says so and runs uncapped. Bounded: 127.0.0.1 only.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, KEY, LOAD, attempts, database_url, drop_database, fresh_database, handled, \
    header, histogram, metrics, psql, require, stop_receivers, wait_ready

PORT = int(os.environ.get("PORT", "5190"))
SECONDS = float(os.environ.get("SECONDS_PER_RUN", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
QUOTA = float(os.environ.get("QUOTA", "0.3"))
# The CFS period the quota is enforced over, in µs (the kernel's default, 100 ms: a replica at
# 0.1 core runs 10 ms, then is held 90 ms, locks and all).
PERIOD = int(os.environ.get("PERIOD_US", "100000"))
REPLICAS = [int(n) for n in os.environ.get("REPLICAS", "1 2 3").split()]
# The same for every count, and enough for the most: 192 each for three replicas. A replica's
# batches are as large as the requests it has in flight, so with fewer three replicas commit
# smaller batches than one and the bench measures that, not their capacity (2026-12-06-f.md,
# 2026-12-07-b.md). The provider opens a connection per event in flight, unbounded.
CONNECTIONS = int(os.environ.get("CONNECTIONS", "576"))
DB = "mw_bench_scale"
URL = database_url(DB)
CGROUP = "/sys/fs/cgroup/cpu"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError):
        return 0.0


def postgres_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def postgres_cpu():
    """CPU seconds of every PostgreSQL process now, by pid."""
    return {pid: cpu_seconds(pid) for pid in postgres_pids()}


def handled_by(ports):
    return sum(handled(metrics(p)) for p in ports)


def attempts_by(ports):
    return sum(attempts(metrics(p)) for p in ports)


def append_commits_by(ports):
    """The appends' commits (group commits of acknowledged deliveries), from every replica."""
    return sum(histogram(metrics(p), "meet_webhooks_inbox_commit_batch_size")[1] for p in ports)


class Cgroups:
    """One cpu cgroup per replica, with the quota; removed at the end."""

    def __init__(self):
        self.made = []
        self.usable = os.access(CGROUP, os.W_OK)
        if not self.usable:
            print(f"# {CGROUP} is not writable: replicas run uncapped (not what this bench measures)",
                  file=sys.stderr)

    def place(self, name, pid):
        if not self.usable:
            return
        path = os.path.join(CGROUP, name)
        os.makedirs(path, exist_ok=True)
        if path not in self.made:
            self.made.append(path)
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write(str(PERIOD))
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(QUOTA * PERIOD)))
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def remove(self):
        for path in self.made:
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)
        self.made = []


def start_replicas(count, work, cgroups):
    procs = []
    for i in range(count):
        log = open(os.path.join(work, f"serve-{i}.log"), "w")
        proc = subprocess.Popen(
            [BIN, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT + i}", "--database-url", URL,
             "--replica-id", f"bench-{i}"] + os.environ.get("SERVE_FLAGS", "").split(),
            stdout=subprocess.DEVNULL, stderr=log)
        cgroups.place(f"mw-scale-{i}", proc.pid)
        procs.append(proc)
    for i, proc in enumerate(procs):
        if not wait_ready(PORT + i, proc):
            sys.exit(f"replica {i} did not start: see {work}/serve-{i}.log")
    return procs


def run(count, work, cgroups):
    fresh_database(DB)
    procs = start_replicas(count, work, cgroups)
    ports = [PORT + i for i in range(count)]
    try:
        wal_before = psql("SELECT pg_current_wal_lsn()", URL)
        xact_before = int(psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'", URL))
        pg_before = postgres_cpu()
        replicas_before = sum(cpu_seconds(p.pid) for p in procs)
        started = time.monotonic()
        args = [LOAD, "--key", KEY, "--connections", str(CONNECTIONS), "--seconds", str(SECONDS)]
        for p, port in zip(procs, ports):
            args += ["--url", f"http://127.0.0.1:{port}/webhook", "--pid", str(p.pid)]
        report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        acknowledged = report["deliveries"] - report["non_2xx"]
        # Every acknowledged delivery handled (60 s at most after the load).
        deadline = time.monotonic() + 60
        while handled_by(ports) < acknowledged and time.monotonic() < deadline:
            time.sleep(0.02)
        finished = time.monotonic()
        done = handled_by(ports)
        pg_after = postgres_cpu()
        pg_cpu = sum(t - pg_before.get(pid, 0.0) for pid, t in pg_after.items())
        replicas_cpu = sum(cpu_seconds(p.pid) for p in procs) - replicas_before
        time.sleep(1)  # the statistics collector's flush
        wal = int(psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal_before}')", URL))
        xacts = int(psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'", URL)) - xact_before
        stored = int(psql("SELECT count(*) FROM deliveries", URL))
        runs = attempts_by(ports)
        appends = append_commits_by(ports)
    finally:
        stop_receivers(procs)
    elapsed = finished - started
    return {
        "replicas": count,
        "quota": QUOTA if cgroups.usable else None,
        "acknowledged": acknowledged,
        "acknowledged_per_second": round(acknowledged / report["seconds"]),
        "handled": int(done),
        "handled_per_second": round(done / elapsed),
        "drained_after_s": round(elapsed - report["seconds"], 2),
        "stored": stored,
        "runs": int(runs),
        "once": int(runs) == stored == acknowledged == int(done),
        "p99_ms": round(report["latency_us"]["p99"] / 1000, 1),
        "replicas_cpu_cores": round(replicas_cpu / elapsed, 2),
        "postgres_cpu_cores": round(pg_cpu / elapsed, 2),
        "postgres_cpu_us_per_delivery": round(pg_cpu * 1e6 / max(acknowledged, 1), 1),
        "wal_bytes_per_delivery": round(wal / max(acknowledged, 1)),
        "transactions_per_delivery": round(xacts / max(acknowledged, 1), 3),
        "append_commits_per_delivery": round(appends / max(acknowledged, 1), 3),
        "load_cpu_us_per_delivery": report["load_cpu_us_per_delivery"],
    }


def main():
    require(BIN, LOAD)
    cgroups = Cgroups()
    results = []
    print(header(f"{ROUNDS} rounds of {SECONDS} s; quota {QUOTA} core per replica over {PERIOD} µs"), flush=True)
    with tempfile.TemporaryDirectory() as work:
        try:
            for r in range(ROUNDS):
                for count in REPLICAS:
                    result = {"round": r, **run(count, work, cgroups)}
                    results.append(result)
                    print(json.dumps(result), flush=True)
        finally:
            cgroups.remove()
            drop_database(DB)
    table(results)


def table(results):
    # Within a round, each count's runs averaged (REPLICAS may name a count twice, e.g.
    # "1 2 3 3 2 1", so that a machine that drifts during a round weighs on every count alike).
    def rate(rnd, count):
        rates = [r["handled_per_second"] for r in results if r["round"] == rnd and r["replicas"] == count]
        return statistics.mean(rates)

    counts = list(dict.fromkeys(REPLICAS))
    rounds = sorted({r["round"] for r in results})
    print()
    print(f"| replicas (each {QUOTA} core) | handled/s | × {counts[0]} replica (per round) | acknowledged/s | each once "
          "| replicas' CPU (cores) | PostgreSQL CPU (cores) | PostgreSQL µs/delivery | WAL B/delivery "
          "| transactions/delivery |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for count in counts:
        rows = [r for r in results if r["replicas"] == count]
        med = lambda key: statistics.median(r[key] for r in rows)
        ratios = [rate(n, count) / rate(n, counts[0]) for n in rounds]
        each = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"| {count} | {med('handled_per_second'):,.0f} | {statistics.median(ratios):.2f}× ({each}) "
              f"| {med('acknowledged_per_second'):,.0f} "
              f"| {'yes' if all(r['once'] for r in rows) else 'NO'} | {med('replicas_cpu_cores'):.2f} "
              f"| {med('postgres_cpu_cores'):.2f} | {med('postgres_cpu_us_per_delivery'):.0f} "
              f"| {med('wal_bytes_per_delivery'):,.0f} | {med('transactions_per_delivery'):.3f} |")


if __name__ == "__main__":
    main()
