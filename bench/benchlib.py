"""What the Python benchmarks share: the release binaries, the key they sign with, PostgreSQL
through psql, a receiver's readiness and handler counts, and the line naming the machine."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# MEET_WEBHOOKS_BIN runs another build (an older one, to compare).
BIN = os.environ.get("MEET_WEBHOOKS_BIN", os.path.join(ROOT, "target/release/meet-webhooks"))
LOAD = os.path.join(ROOT, "target/release/examples/load")
# Another build's, to compare with (MEET_WEBHOOKS_LAG_BIN, as MEET_WEBHOOKS_BIN).
LAG = os.environ.get("MEET_WEBHOOKS_LAG_BIN", os.path.join(ROOT, "target/release/examples/lag"))
KEY = "bench-key"
ADMIN = os.environ.get("MEET_WEBHOOKS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


def require(*paths):
    """Exits saying how to build what is missing."""
    for path in paths:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release --locked --bin meet-webhooks --example load "
                     "--example lag")


def database_url(db):
    """The URL of database `db` on the PostgreSQL server at ADMIN (no TLS on loopback)."""
    return ADMIN.rsplit("/", 1)[0] + f"/{db}?sslmode=disable"


def psql(sql, url=ADMIN):
    """One statement's output, tuples only."""
    return subprocess.run(["psql", url.split("?")[0], "-qtAc", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


def postgres_reachable():
    try:
        psql("SELECT 1")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def fresh_database(db):
    """Database `db`, dropped if it was there and made anew; its URL."""
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(f"CREATE DATABASE {db}")
    return database_url(db)


def drop_database(db):
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def metrics(port):
    """A receiver's /metrics, or "" when it does not answer."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def histogram(text, name):
    """Buckets (upper bound -> count), count and sum of `name`, over every label set."""
    buckets, count, total = {}, 0.0, 0.0
    for line in text.splitlines():
        if m := re.match(name + r'_bucket\{.*le="([^"]+)"\} (\S+)', line):
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] = buckets.get(le, 0) + float(m.group(2))
        elif m := re.match(name + r"_count(?:\{.*\})? (\S+)", line):
            count += float(m.group(1))
        elif m := re.match(name + r"_sum(?:\{.*\})? (\S+)", line):
            total += float(m.group(1))
    return buckets, count, total


def handled(text):
    """Handler attempts that succeeded, from a /metrics text."""
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if re.match(r'meet_webhooks_handler_attempts_total\{.*outcome="done"', l))


def attempts(text):
    """Handler attempts, from a /metrics text."""
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("meet_webhooks_handler_attempts_total{"))


def wait_ready(port, proc=None, seconds=30):
    """Whether the receiver on `port` answers /healthz within `seconds` (False at once if `proc`,
    its process, has exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop_receivers(procs):
    """Stops the receivers `procs` as an operator would (SIGTERM: they finish what they hold), and
    kills any that take more than 30 s."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def header(what):
    """`# <cores> (<cpu>); <UTC time>; <what>`: the first line of a benchmark's output."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"# {os.cpu_count()} cores ({cpu}); {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; {what}"
