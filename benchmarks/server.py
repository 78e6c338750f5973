"""The seed's API through a real server: gunicorn worker processes on 127.0.0.1 serving the
dashboard API (``benchmarks/server_app.py``) while background jobs ingest and enrich.

    python benchmarks/server.py [--seconds S] [--workers N] [--clients C] [--rate R] [--json PATH]

Needs gunicorn (``pip install gunicorn``; in the ``bench`` and ``test`` extras). For each way
the application connects (plain ``sqlite3``, the hand-rolled WAL fix, ``sqlite_resilient``),
on a fresh database: the demo's background jobs (``sqlite_resilient._demo``: one ingestion
job importing 2.5 MB files in ~6 s transactions, two enrichment workers reading then
writing; in the library's scenario in ``db_transaction``), a gunicorn server with N sync
workers, and C client threads that send a fixed number of requests over the run (R per
second each, on a fixed schedule: a slow answer delays the client's next requests, never
drops them): one in five ``POST /events``, the others ``GET /dashboard``.

Measured per scenario: requests sent, failed (HTTP 503 by the database error that caused
it, and errors of the connection), empty dashboards (a 200 with no rows), latency in ms
(p50 and p99 of GET and of POST, the slowest of all; failed requests included), events
committed (counted in the database), items the jobs processed twice, job runs that failed
(in milliseconds; all times from the client, queueing for a gunicorn worker included).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlite_resilient import _demo

BENCHMARKS = Path(__file__).parent
SCENARIOS = {"plain": _demo.PLAIN, "wal": _demo.HANDROLLED_WAL, "resilient": _demo.RESILIENT_TRANSACTION}
"""The app's way of connecting, and the demo scenario its background jobs run as."""
LABELS = {"plain": "plain sqlite3", "wal": "hand-rolled WAL", "resilient": "sqlite_resilient"}
STARTUP_SECONDS = 20.0
REQUEST_TIMEOUT = 60.0
WRITE_SHARE = 0.2
EVENTS_TABLE = "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL)"


@dataclass(frozen=True)
class Load:
    """The run's shape: its length, the server's workers, the clients and their rate."""

    seconds: float
    workers: int
    clients: int
    rate: float


@dataclass
class Outcome:
    """One request: what it was, how long it took, and what came back."""

    write: bool
    latency_ms: float
    result: str
    """``ok``, ``empty`` (a dashboard with no rows), ``503 <error>`` or ``connection <error>``."""


@dataclass
class ScenarioResult:
    name: str
    requests: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    empty: int = 0
    get_ms: tuple[float, float] = (0.0, 0.0)
    """``GET /dashboard``: p50, p99."""
    post_ms: tuple[float, float] = (0.0, 0.0)
    """``POST /events``: p50, p99."""
    max_ms: float = 0.0
    writes_ok: int = 0
    events_committed: int = 0
    processed_twice: int = 0
    job_runs_failed: int = 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_server(port: int, server: subprocess.Popen[bytes]) -> None:
    """Return once the server accepts connections; raise if it exits or does not within
    ``STARTUP_SECONDS``."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)  # a readiness check, bounded by the deadline
    raise RuntimeError(f"gunicorn did not listen on port {port} within {STARTUP_SECONDS:g} s")


def request(port: int, write: bool) -> Outcome:
    sent = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("POST" if write else "GET", "/events" if write else "/dashboard")
            response = conn.getresponse()
            body = json.loads(response.read() or b"{}")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as error:
        result = f"connection {type(error).__name__}"
    else:
        if response.status != 200:
            result = f"{response.status} {body.get('error', '')}".strip()
        else:
            result = "empty" if not write and body.get("rows") == 0 else "ok"
    return Outcome(write, (time.perf_counter() - sent) * 1000, result)


def client(port: int, load: Load, seed: int, started: float, outcomes: list[Outcome]) -> None:
    """Send ``seconds * rate`` requests, the i-th at ``started + i / rate`` or as soon as the
    previous one answered, whichever is later."""
    rng = random.Random(seed)
    for i in range(int(load.seconds * load.rate)):
        delay = started + i / load.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the load's schedule, not a synchronisation
        outcomes.append(request(port, rng.random() < WRITE_SHARE))


def run_scenario(key: str, load: Load, directory: str) -> ScenarioResult:
    scenario = SCENARIOS[key]
    path = os.path.join(directory, f"{key}.db")
    _demo.create_database(scenario, path)
    setup = _demo._CONNECT[scenario](path)
    try:
        setup.execute(EVENTS_TABLE)
        setup.commit()
    finally:
        setup.close()

    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    start, stop = context.Event(), context.Event()
    kinds = [_demo._INGESTION, _demo._ENRICHMENT, _demo._ENRICHMENT]
    jobs = [
        context.Process(
            target=_demo.job_main, args=(_demo._Job(scenario, kind, path, index, messages, start, stop),), daemon=True
        )
        for index, kind in enumerate(kinds)
    ]
    port = free_port()
    env = {**os.environ, "BENCH_DB": path, "BENCH_SCENARIO": key, "PYTHONPATH": str(BENCHMARKS.parent)}
    command = [sys.executable, "-m", "gunicorn", "--workers", str(load.workers), "--bind", f"127.0.0.1:{port}"]
    command += ["--chdir", str(BENCHMARKS), "--log-level", "warning", "--timeout", "120", "server_app:app"]
    done: dict[int, _demo.JobStats] = {}
    outcomes: list[Outcome] = []
    server = subprocess.Popen(command, env=env)  # noqa: S603 - this interpreter's gunicorn, fixed arguments
    try:
        for job in jobs:
            job.start()
        _demo._receive(messages, jobs, _demo._READY, done)
        wait_for_server(port, server)
        started = time.perf_counter()
        start.set()
        threads = [
            threading.Thread(target=client, args=(port, load, n, started, outcomes)) for n in range(load.clients)
        ]
        for thread in threads:
            thread.start()
        stop.wait(load.seconds)  # the scenario's length
        stop.set()
        for thread in threads:
            thread.join()
        _demo._receive(messages, jobs, _demo._DONE, done)
    finally:
        _demo._stop(jobs, start, stop)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    result = ScenarioResult(key, requests=len(outcomes))
    result.failed = Counter(o.result for o in outcomes if o.result not in ("ok", "empty"))
    result.empty = sum(o.result == "empty" for o in outcomes)
    result.get_ms = percentiles([o.latency_ms for o in outcomes if not o.write])
    result.post_ms = percentiles([o.latency_ms for o in outcomes if o.write])
    result.max_ms = max((o.latency_ms for o in outcomes), default=0.0)
    result.writes_ok = sum(o.write and o.result == "ok" for o in outcomes)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (result.events_committed,) = conn.execute("SELECT count(*) FROM events").fetchone()
    result.processed_twice = _demo.audit(path).processed_twice
    result.job_runs_failed = sum(stats.failed for stats in done.values())
    return result


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 of *latencies* (0 if there are none)."""
    if not latencies:
        return 0.0, 0.0
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def print_table(results: list[ScenarioResult]) -> None:
    header = (
        f"{'scenario':<17} {'requests':>8} {'failed':>7} {'empty':>6} {'GET p50':>8} {'GET p99':>8} "
        f"{'POST p50':>8} {'POST p99':>8} {'max ms':>8} {'events':>7} {'twice':>6} {'jobs failed':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{LABELS[r.name]:<17} {r.requests:>8} {sum(r.failed.values()):>7} {r.empty:>6} {r.get_ms[0]:>8.1f} "
            f"{r.get_ms[1]:>8.1f} {r.post_ms[0]:>8.1f} {r.post_ms[1]:>8.1f} {r.max_ms:>8.1f} "
            f"{r.events_committed:>7} {r.processed_twice:>6} {r.job_runs_failed:>11}"
        )
    print()
    for r in results:
        if r.failed:
            reasons = ", ".join(f"{reason} x{count}" for reason, count in r.failed.most_common())
            print(f"{LABELS[r.name]}: failed requests: {reasons}")
        if r.events_committed != r.writes_ok:
            print(f"{LABELS[r.name]}: {r.writes_ok} POST answered 200, {r.events_committed} events in the database")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each scenario (default 15)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes (default 4)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second per client (default 10)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of " + ", ".join(SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.scenarios.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    print(
        f"{args.seconds:g} s per scenario, gunicorn with {args.workers} workers, {args.clients} clients x "
        f"{args.rate:g} requests/s ({int(args.seconds * args.rate) * args.clients} requests), "
        f"{WRITE_SHARE:.0%} POST; jobs: 1 ingestion, 2 enrichment",
        flush=True,
    )
    load = Load(args.seconds, args.workers, args.clients, args.rate)
    results = []
    with tempfile.TemporaryDirectory(prefix="server-bench-") as directory:
        for key in keys:
            print(f"running {LABELS[key]}...", file=sys.stderr, flush=True)
            results.append(run_scenario(key, load, directory))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
