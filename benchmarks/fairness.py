"""Fairness: short writers beside a writer that comes straight back, strategy by strategy.

    python benchmarks/fairness.py [--seconds S] [--ingestion-ms MS] [--short-writers N]
                                  [--strategies A,B] [--json PATH]

The case the write queue exists for: one *ingestion* process runs long write transactions
back to back (``--ingestion-ms`` of work each, then it begins the next one at once), while
``--short-writers`` processes each write one row now and then (a web API's POST handler),
arriving at random (exponential gaps of ``--short-gap-ms`` on average). What matters is how
long a short write waits: with a first-come first-served queue, at most the ingestion
transaction in progress and the short writes queued ahead of it; without one, the ingestion
writer takes the lock again the moment it commits, before a waiting writer has even woken,
and a short write can wait many ingestion transactions, or its whole budget.

Each strategy runs on a fresh WAL database, one after the other in the same run, with every
process started by ``spawn``, released together by an event and stopped by another. The work
is ``time.sleep`` (never synchronisation).

Measured per strategy: ingestion commits, short writes committed and failed, and the waits
of short writes (from the start of the first attempt to the commit returned) as p50, p90,
max, and how many waited longer than 1.5 ingestion transactions (one in progress, and more
than half of the next).

Strategies:

- ``sqlite_resilient``: ``sqlite_resilient.connect(path)`` and ``db_transaction`` (queued at
  the write gate);
- ``sqlite_resilient-no-queue``: the same with ``Settings(writer_queue=False)``: SQLite's
  busy handler and the library's retries only;
- ``wal-begin-immediate``: plain :mod:`sqlite3`, WAL, ``BEGIN IMMEDIATE`` with a 30 s
  ``timeout`` (SQLite's busy handler).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_resilient

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

STRATEGIES = ("sqlite_resilient", "sqlite_resilient-no-queue", "wal-begin-immediate")
BUDGET = 30.0
START_TIMEOUT = 60.0


def connect(strategy: str, path: str) -> sqlite3.Connection:
    if strategy == "wal-begin-immediate":
        conn = sqlite3.connect(path, timeout=BUDGET, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    settings = sqlite_resilient.DEFAULT_SETTINGS
    if strategy == "sqlite_resilient-no-queue":
        settings = replace(settings, writer_queue=False)
    return sqlite_resilient.connect(path, timeout=BUDGET, settings=settings)


@contextlib.contextmanager
def transaction(strategy: str, conn: sqlite3.Connection) -> Any:
    """One write transaction of *strategy*."""
    if strategy == "wal-begin-immediate":
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    else:
        with sqlite_resilient.db_transaction(conn):
            yield


@dataclass
class Job:
    """What one process of a run does (pickled to it)."""

    role: str
    """``"ingestion"`` or ``"short"``."""
    strategy: str
    path: str
    seconds: float
    """Ingestion: work in one transaction; short: mean gap between two writes."""
    seed: int
    go: Event
    stop: Event
    out: Any


@dataclass
class Report:
    role: str
    commits: int = 0
    failures: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


def write(job: Job, conn: sqlite3.Connection, report: Report) -> None:
    """One transaction of *job*'s role; its wait counted, or its failure."""
    started = time.monotonic()
    try:
        with transaction(job.strategy, conn):
            if job.role == "ingestion":
                conn.execute("INSERT INTO batch(at) VALUES (?)", (time.time(),))
                time.sleep(job.seconds)
            else:
                conn.execute("INSERT INTO post(at) VALUES (?)", (time.time(),))
    except sqlite3.OperationalError as error:
        report.failures.append(str(error))
        return
    report.commits += 1
    report.waits.append(time.monotonic() - started)


def work(job: Job) -> None:
    """Ingestion: long transactions back to back (the writer that comes straight back).
    Short: one-row writes at random moments."""
    report = Report(job.role)
    rng = random.Random(job.seed)
    with contextlib.closing(connect(job.strategy, job.path)) as conn:
        job.out.put("ready")
        job.go.wait(START_TIMEOUT)
        if job.role == "ingestion":
            while not job.stop.is_set():
                write(job, conn, report)
        else:
            while not job.stop.wait(rng.expovariate(1 / job.seconds)):
                write(job, conn, report)
    job.out.put(report)


@dataclass
class Result:
    strategy: str
    ingestion_commits: int
    short_commits: int
    short_failures: int
    wait_p50_ms: float
    wait_p90_ms: float
    wait_max_ms: float
    waits_over_1_5_ingestions: int
    failures: list[str]


def run(strategy: str, args: argparse.Namespace, directory: Path) -> Result:
    path = str(directory / f"{strategy}.db")
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.executescript("CREATE TABLE batch(at REAL); CREATE TABLE post(at REAL);")
    context = multiprocessing.get_context("spawn")
    go, stop, out = context.Event(), context.Event(), context.Queue()
    ingestion = args.ingestion_ms / 1000
    gap = args.short_gap_ms / 1000
    jobs = [Job("ingestion", strategy, path, ingestion, args.seed, go, stop, out)]
    jobs += [Job("short", strategy, path, gap, args.seed * 1000 + i, go, stop, out) for i in range(args.short_writers)]
    processes = [context.Process(target=work, args=(job,)) for job in jobs]
    try:
        for process in processes:
            process.start()
        for _ in processes:
            if out.get(timeout=START_TIMEOUT) != "ready":
                raise RuntimeError("a process did not start")
        go.set()
        stop.wait(args.seconds)
        stop.set()
        reports: list[Report] = [out.get(timeout=BUDGET + START_TIMEOUT) for _ in processes]
    finally:
        stop.set()
        for process in processes:
            process.join(START_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join(START_TIMEOUT)
    shorts = [report for report in reports if report.role == "short"]
    waits = sorted(wait for report in shorts for wait in report.waits)

    def quantile(q: float) -> float:
        return waits[min(len(waits) - 1, int(q * len(waits)))] * 1000 if waits else 0.0

    failures = [failure for report in reports for failure in report.failures]
    return Result(
        strategy=strategy,
        ingestion_commits=sum(report.commits for report in reports if report.role == "ingestion"),
        short_commits=sum(report.commits for report in shorts),
        short_failures=sum(len(report.failures) for report in shorts),
        wait_p50_ms=statistics.median(waits) * 1000 if waits else 0.0,
        wait_p90_ms=quantile(0.9),
        wait_max_ms=waits[-1] * 1000 if waits else 0.0,
        waits_over_1_5_ingestions=sum(wait > 1.5 * ingestion for wait in waits),
        failures=sorted(set(failures))[:5],
    )


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"{args.short_writers} short writers (one row each, every {args.short_gap_ms:g} ms on average) beside one "
        f"ingestion writer ({args.ingestion_ms:g} ms transactions back to back), {args.seconds:g} s per strategy"
    )
    print()
    header = (
        f"{'strategy':<27} {'ingestions':>10} {'short ok':>8} {'failed':>6} "
        f"{'wait p50 ms':>11} {'p90':>8} {'max':>8} {'> 1.5 ingestions':>17}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.strategy:<27} {r.ingestion_commits:>10} {r.short_commits:>8} {r.short_failures:>6} "
            f"{r.wait_p50_ms:>11.1f} {r.wait_p90_ms:>8.1f} {r.wait_max_ms:>8.1f} {r.waits_over_1_5_ingestions:>17}"
        )
        for failure in r.failures:
            print(f"    failed: {failure}")
    print()
    print("wait = first attempt to commit of a short write (lower is better); > 1.5 ingestions = short")
    print("writes that waited longer than one and a half ingestion transactions (fewer is better).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each run (default 6)")
    parser.add_argument("--ingestion-ms", type=float, default=100.0, help="work in one ingestion transaction")
    parser.add_argument("--short-writers", type=int, default=3, help="short writer processes (default 3)")
    parser.add_argument("--short-gap-ms", type=float, default=150.0, help="mean gap between a short writer's writes")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"from {', '.join(STRATEGIES)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the numbers to this JSON file")
    args = parser.parse_args(argv)
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory() as directory:
        results = [run(strategy, args, Path(directory)) for strategy in strategies]
    print_table(results, args)
    if args.json is not None:
        machine = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
        report = {"machine": machine, "arguments": vars(args) | {"json": None}, "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
