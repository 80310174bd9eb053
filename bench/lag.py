#!/usr/bin/env python3
"""How long a delivery waits for its handler, at a steady rate: SQLite, one PostgreSQL replica
and three, each with the reorder window off and at its default (2.5 s), and with two orders of
the provider's mix: each room's five events one after another (a room's next event waits for
the one before it to be handled: the load's usual order), and spread (`--spread`: a room's
events a thousand deliveries apart, as meetings send them).

For each receiver and order, with the window off: a flood (SECONDS, default 6, the provider's
mix, over FLOOD_CONNECTIONS, default 576: with fewer, three replicas commit smaller batches than
one, as in scale.py) bounds the most it handles (deliveries acknowledged / time until the last
is handled), and paced runs below that bound (SEARCH_STEPS halvings, default 5, of
SEARCH_SECONDS, default 8) find the most it keeps up with: its load paced as asked, every
delivery handled, lag p99 under 250 ms. Then for each window a fresh instance takes a paced load
at half that rate (PACED_SECONDS, default 15, examples/load.rs --rate) and reports how long each
delivery waited, from its storing in the transaction that acknowledged it to its handler's
start, as `meet_webhooks_handler_lag_seconds` counts it, and from its receipt (the answer's wait
for that transaction included) (examples/lag.rs: whole milliseconds of each, so up to 1 ms long;
merged over replicas: with three and the window on, a delivery is handled by whichever replica
claims it first when it comes due). With the window on, the figures beyond the window are what
counts. Every acknowledged delivery must be handled once (checked). Beside each paced run, how
much the wait was for a CPU: the share of the time during which some task of the machine waited
for one (`/proc/pressure/cpu`), and the receivers' threads' mean wait each time they ran
(`/proc/<pid>/task/*/schedstat`); and the commits that stored the deliveries (from the
receivers' `meet_webhooks_inbox_commit_seconds`): how many per delivery, and their mean time.
Last for each receiver, a room's five events alone: sent at once into a receiver with nothing
else to do, forty times (`alone`): what the turns that record a room's earlier events cost its
later ones, without a load. ROUNDS (default 1) times; a JSON line per run, then a Markdown table.

To compare builds at one rate: RATE paces every run at it (no flood first); ONLY keeps some
configurations (`sqlite`, `postgres1`, `postgres3`, comma-separated), SHAPES some orders and
windows (`spread-0`, `spread-2.5`, `once-0`, `alone`); MEET_WEBHOOKS_LAG_BIN runs another build's
examples/lag.
Bounded: 127.0.0.1 only; data directories in a temporary directory, databases mw_bench_lag*
dropped at the end.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from benchlib import KEY, LAG, LOAD, drop_database, fresh_database, header, histogram, metrics, \
    postgres_reachable, require, stop_receivers, wait_ready

PORT = int(os.environ.get("PORT", "5290"))
SECONDS = float(os.environ.get("SECONDS_PER_RUN", "6"))
PACED = float(os.environ.get("PACED_SECONDS", "15"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
RATE = os.environ.get("RATE")
FLOOD_CONNECTIONS = int(os.environ.get("FLOOD_CONNECTIONS", "576"))
ONLY = os.environ.get("ONLY")
SHAPES = os.environ.get("SHAPES")
WINDOW = 2.5


class Instance:
    """Receivers (examples/lag.rs) on SQLite or one PostgreSQL database, fresh."""

    def __init__(self, work, storage, replicas, window, tag):
        self.files, self.procs, self.db = [], [], None
        if storage == "postgres":
            self.db = f"mw_bench_lag_{tag}"
            where = ["--database-url", fresh_database(self.db)]
        else:
            where = ["--data-dir", os.path.join(work, f"data-{tag}")]
        for i in range(replicas):
            lag_file = os.path.join(work, f"lag-{tag}-{i}.json")
            log = open(os.path.join(work, f"serve-{tag}-{i}.log"), "w")
            env = dict(os.environ, MEET_WEBHOOKS_LAG_FILE=lag_file, RUST_LOG="warn")
            self.procs.append(subprocess.Popen(
                [LAG, "serve", "--key", KEY, "--bind", f"127.0.0.1:{PORT + i}", "--reorder-window", str(window),
                 "--replica-id", f"lag-{i}"] + where, env=env, stdout=subprocess.DEVNULL, stderr=log))
            self.files.append(lag_file)
        self.ports = [PORT + i for i in range(replicas)]
        for port, proc in zip(self.ports, self.procs):
            if not wait_ready(port, proc):
                sys.exit(f"a receiver did not start on {port}: see {work}")

    def load(self, seconds, spread, rate=None):
        """The load's own figures, with the share of the time some task waited for a CPU meanwhile
        (`cpu_pressure`) and the receivers' threads' mean wait each time they ran
        (`receiver_cpu_wait_us`)."""
        before = cpu_waits(self.procs)
        args = [LOAD, "--key", KEY, "--seconds", str(seconds)] + (["--spread"] if spread else [])
        for port, proc in zip(self.ports, self.procs):
            args += ["--url", f"http://127.0.0.1:{port}/webhook", "--pid", str(proc.pid)]
        args += ["--rate", str(rate)] if rate else ["--connections", str(FLOOD_CONNECTIONS)]
        figures = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        figures.update(cpu_waited(before, cpu_waits(self.procs)))
        return figures

    def figures(self, key="values"):
        values = {}
        for path in self.files:
            try:
                with open(path) as f:
                    for value, count in json.load(f)[key]:
                        values[value] = values.get(value, 0) + count
            except (OSError, ValueError):
                pass
        return values

    def commits(self):
        """The receivers' commits of deliveries (`meet_webhooks_inbox_commit_seconds`): how many,
        and their mean time in ms."""
        count = total = 0
        for port in self.ports:
            _, n, seconds = histogram(metrics(port), "meet_webhooks_inbox_commit_seconds")
            count, total = count + n, total + seconds
        return int(count), round(total / count * 1000, 2) if count else None

    def handled(self):
        return sum(self.figures().values())

    def wait_handled(self, count, limit=120):
        deadline = time.monotonic() + limit
        while self.handled() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the last figures written
        return self.handled()

    def stop(self):
        stop_receivers(self.procs)
        if self.db:
            drop_database(self.db)


def cpu_waits(procs):
    """The clock, the machine's CPU pressure (`/proc/pressure/cpu`: µs during which some task
    waited for a CPU) and, per thread of `procs`, its waits for a CPU (ns) and times it ran
    (`/proc/<pid>/task/<tid>/schedstat`); None for what this kernel does not show."""
    try:
        with open("/proc/pressure/cpu") as f:
            pressure = int(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        pressure = None
    threads = {}
    for proc in procs:
        try:
            tids = os.listdir(f"/proc/{proc.pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/schedstat") as f:
                    _, waited, slices = (int(x) for x in f.read().split())
                threads[tid] = (waited, slices)
            except (OSError, ValueError):
                pass
    return time.monotonic(), pressure, threads


def cpu_waited(before, after):
    """Between two `cpu_waits`: the share of the time some task waited for a CPU, and the mean
    wait of the receivers' threads each time they ran (threads that started meanwhile counted
    from zero)."""
    (t0, p0, threads0), (t1, p1, threads1) = before, after
    waited = slices = 0
    for tid, (w, n) in threads1.items():
        w0, n0 = threads0.get(tid, (0, 0))
        waited, slices = waited + w - w0, slices + n - n0
    return {
        "cpu_pressure": round((p1 - p0) / 1e6 / (t1 - t0), 2) if p0 is not None and p1 is not None else None,
        "receiver_cpu_wait_us": round(waited / slices / 1000, 1) if slices else None,
    }


def quantile(values, q):
    total = sum(values.values())
    seen = 0
    for value in sorted(values):
        seen += values[value]
        if seen >= q * total:
            return value
    return 0


MOSTS = {}
SEARCH_SECONDS = float(os.environ.get("SEARCH_SECONDS", "8"))
SEARCH_STEPS = int(os.environ.get("SEARCH_STEPS", "5"))
# A paced run keeps up when its load reached 97% of its rate and its deliveries' lag p99 stayed
# under this: a backlog that grows makes the lag grow with the run.
KEEPS_UP_MS = 250


def flood_most(work, storage, replicas, spread):
    """A flood with the window off, then the time until the last delivery is handled: an upper
    bound of what the receiver sustains, since no append competes with the handlers once the
    flood ends."""
    inst = Instance(work, storage, replicas, 0, "max")
    try:
        started = time.monotonic()
        flood = inst.load(SECONDS, spread)
        acknowledged = flood["deliveries"] - flood["non_2xx"]
        inst.wait_handled(acknowledged)
        return acknowledged / max(time.monotonic() - started - 0.3, SECONDS)
    finally:
        inst.stop()


def keeps_up(work, storage, replicas, spread, rate):
    """Whether a receiver with the window off takes `rate` deliveries a second and handles them
    as they come (SEARCH_SECONDS of it)."""
    inst = Instance(work, storage, replicas, 0, "max")
    try:
        paced = inst.load(SEARCH_SECONDS, spread, rate)
        acknowledged = paced["deliveries"] - paced["non_2xx"]
        handled = inst.wait_handled(acknowledged)
        p99_ms = quantile(inst.figures(), 0.99) / 1000
    finally:
        inst.stop()
    return paced["deliveries_per_second"] >= 0.97 * rate and handled == acknowledged and p99_ms <= KEEPS_UP_MS


def most_handled(work, storage, replicas, spread):
    """The most a receiver handles as it comes, with the window off: the highest paced rate it
    keeps up with, searched (SEARCH_STEPS halvings) below the flood's bound. The flood alone
    overstates it: its handlers drain the backlog after the last append, and three replicas kept
    up with 0.59 of it (`bench/results/2026-12-07-j.md`). Measured once for each
    receiver and order of a room's events; the paced runs with the window on go at half of it
    too (a flood with the window on only acknowledges for the window's first seconds)."""
    key = (storage, replicas, spread)
    if key not in MOSTS:
        bound = flood_most(work, storage, replicas, spread)
        low, high = 0.0, bound
        for _ in range(SEARCH_STEPS):
            rate = (low + high) / 2
            if keeps_up(work, storage, replicas, spread, round(rate)):
                low = rate
            else:
                high = rate
        above = f", not with {high:,.0f}/s" if high < bound else ""
        print(f"# {storage} x{replicas} {'spread' if spread else 'at once'}: flood {bound:,.0f}/s, "
              f"kept up with {low:,.0f}/s{above}", file=sys.stderr, flush=True)
        if not low:
            # Behind at every rate tried: paced below the lowest, and said so above.
            low = high / 2
        MOSTS[key] = (bound, low)
    return MOSTS[key]


def run(work, label, storage, replicas, window, spread):
    if RATE:
        bound, most, rate = 0, 0, int(RATE)
    else:
        bound, most = most_handled(work, storage, replicas, spread)
        rate = round(most / 2)
    inst = Instance(work, storage, replicas, window, "paced")
    try:
        paced = inst.load(PACED, spread, rate)
        acknowledged = paced["deliveries"] - paced["non_2xx"]
        handled = inst.wait_handled(acknowledged)
        values = inst.figures()
        receipt = inst.figures("from_receipt")
        commits, commit_ms = inst.commits()
    finally:
        inst.stop()
    beyond = lambda us: round((us - window * 1e6) / 1000, 1)
    return {
        "run": label,
        "rooms": "spread" if spread else "at once",
        "window_s": window,
        "flood_per_second": round(bound),
        "most_per_second": round(most),
        "paced_per_second": paced["deliveries_per_second"],
        "acknowledged": acknowledged,
        "handled": handled,
        "once": handled == acknowledged,
        "ack_p99_ms": round(paced["latency_us"]["p99"] / 1000, 1),
        "commits_per_delivery": round(commits / acknowledged, 2) if acknowledged else None,
        "commit_mean_ms": commit_ms,
        "cpu_pressure": paced["cpu_pressure"],
        "receiver_cpu_wait_us": paced["receiver_cpu_wait_us"],
        "lag_p50_ms": round(quantile(values, 0.5) / 1000, 1),
        "lag_p99_ms": round(quantile(values, 0.99) / 1000, 1),
        "lag_max_ms": round(max(values, default=0) / 1000, 1),
        "from_receipt_p99_ms": round(quantile(receipt, 0.99) / 1000, 1),
        # Past the window, for the deliveries it held (a room's events): what the dispatcher adds.
        "beyond_window_p50_ms": beyond(quantile(values, 0.5)) if window else None,
        "beyond_window_p99_ms": beyond(quantile(values, 0.99)) if window else None,
    }


BURSTS = 40


def alone(work, label, storage, replicas):
    """A room's five events sent at once (five connections opened together, `load --burst 5`),
    BURSTS times 50 ms apart, into a receiver with nothing else to do: how long the later ones
    wait for the turns that record the earlier ones' outcomes, without a load around them."""
    inst = Instance(work, storage, replicas, 0, "alone")
    try:
        urls = [arg for port in inst.ports for arg in ("--url", f"http://127.0.0.1:{port}/webhook")]
        for _ in range(BURSTS):
            subprocess.run([LOAD, "--key", KEY, "--burst", "5"] + urls, check=True, capture_output=True)
            time.sleep(0.05)
        handled = inst.wait_handled(5 * BURSTS)
        values = inst.figures()
    finally:
        inst.stop()
    return {
        "run": label,
        "rooms": "alone",
        "window_s": 0,
        "flood_per_second": 0,
        "most_per_second": 0,
        "paced_per_second": 0,
        "acknowledged": 5 * BURSTS,
        "handled": handled,
        "once": handled == 5 * BURSTS,
        "ack_p99_ms": None,
        "commits_per_delivery": None,
        "commit_mean_ms": None,
        "cpu_pressure": None,
        "receiver_cpu_wait_us": None,
        "lag_p50_ms": round(quantile(values, 0.5) / 1000, 1),
        "lag_p99_ms": round(quantile(values, 0.99) / 1000, 1),
        "lag_max_ms": round(max(values, default=0) / 1000, 1),
        "from_receipt_p99_ms": None,
        "beyond_window_p50_ms": None,
        "beyond_window_p99_ms": None,
    }


def main():
    require(LAG, LOAD)
    configs = [("SQLite", "sqlite", 1)]
    if postgres_reachable():
        configs += [("PostgreSQL, 1 replica", "postgres", 1), ("PostgreSQL, 3 replicas", "postgres", 3)]
    else:
        print("# no PostgreSQL: SQLite only", file=sys.stderr)
    if ONLY:
        keep = ONLY.split(",")
        configs = [c for c in configs if (c[1] if c[1] == "sqlite" else f"{c[1]}{c[2]}") in keep]
    shapes = [(True, 0), (True, WINDOW), (False, 0)]
    if SHAPES:
        keep = SHAPES.split(",")
        shapes = [s for s in shapes if f"{'spread' if s[0] else 'once'}-{s[1]:g}" in keep]
    print(header(f"floods of {SECONDS} s, paced runs of {PACED} s at half the most kept up with"), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(ROUNDS):
            MOSTS.clear()
            for label, storage, replicas in configs:
                for spread, window in shapes:
                    result = run(work, label, storage, replicas, window, spread)
                    results.append(result)
                    print(json.dumps(result), flush=True)
                if not SHAPES or "alone" in SHAPES.split(","):
                    result = alone(work, label, storage, replicas)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    print()
    print("| receiver | a room's events | window | kept up with /s | paced at /s | each once | lag p50 | lag p99 | lag max "
          "| p99 beyond the window | answer p99 | p99 from the receipt | commits a delivery | commit mean "
          "| CPU pressure | a thread's wait to run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    dash = lambda v, unit="": "-" if v is None else f"{v}{unit}"
    ms = lambda v: "-" if v is None else f"{v} ms"
    rate = lambda v: f"{v:,.0f}" if v else "-"
    for r in results:
        beyond = ms(r["beyond_window_p99_ms"]) if r["window_s"] else "-"
        print(f"| {r['run']} | {r['rooms']} | {r['window_s']} s | {rate(r['most_per_second'])} "
              f"| {rate(r['paced_per_second'])} | {'yes' if r['once'] else 'NO'} | {ms(r['lag_p50_ms'])} "
              f"| {ms(r['lag_p99_ms'])} | {ms(r['lag_max_ms'])} | {beyond} | {ms(r['ack_p99_ms'])} "
              f"| {ms(r['from_receipt_p99_ms'])} | {dash(r['commits_per_delivery'])} | {ms(r['commit_mean_ms'])} "
              f"| {dash(r['cpu_pressure'])} | {dash(r['receiver_cpu_wait_us'], ' µs')} |")


if __name__ == "__main__":
    main()
