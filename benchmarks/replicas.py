"""Read replicas: dashboard readers on a Litestream follower's copy against readers on the
primary, while the same writers run, and how far the copy lags.

    python benchmarks/replicas.py [--seconds S] [--readers M] [--writers N] [--rate R]
                                  [--pairs P] [--follow-interval MS] [--json PATH]

One run on a fresh temporary directory, with the real ``litestream`` binary (the one of the
``litestream`` extra beside this Python, else ``PATH``; without one the script says so on
stderr and exits 0):

- a primary database made with ``sqlite_resilient.connect`` (``LITESTREAM_SETTINGS``) and
  seeded with ``SEED_ROWS`` rows of ``items(id, body, at)``;
- ``litestream replicate`` shipping it to a file replica (``monitor-interval`` and
  ``sync-interval`` 100 ms, a control socket);
- a follower, ``litestream restore -f -follow-interval 100ms -o copy.db file://REPLICA``,
  which keeps ``copy.db`` up to date and writes its applied TXID to ``copy.db-txid``.

Two scenarios, paired and alternated (A B A B, ``--pairs``) so that drifting machine load
hits both alike; the table quotes the median of each scenario's runs (errors: their sum):

- ``primary``: M reader processes on ``connect(primary, read_only=True)``;
- ``follower``: M reader processes on ``connect(copy, read_only=True)``.

In both, N writer processes commit one small row each through ``db_transaction`` at a fixed
rate (``--rate`` per writer), storing their wall-clock time in ``at``; Litestream and the
follower run throughout. Each reader keeps one connection for the whole run and polls a
dashboard (``SELECT count(*), max(id) FROM items``, then the 20 newest rows) back to back.
Processes start with ``spawn``, are released together by a barrier and stopped by an event.

Measured: reads/s (polls completed in the run), read latency p50/p99/max (one poll, both
queries), errors (failed polls, commits and connections, and inconsistent polls: rows are never
deleted and ids are consecutive, so ``count(*)`` must equal ``max(id)`` and the 20 newest ids
must be consecutive; expected 0) and the writers' commits/s.
A probe process, one more long-lived connection on the scenario's database, reads the
newest row every 20 ms: on the copy, *lag* is the time of that read minus the row's ``at``
(how old the newest thing a reader sees is; a row from before the run counts as written at
its start), p50/p99/max. It includes the writers' own spacing (a copy with no delay still
shows up to one commit interval: the notes give the same probe's numbers on the primary),
so the notes also give *behind*: the age of the oldest commit the copy misses (0 when it has
them all), from the writers' log of commit times, and how the copy's ``-txid`` advanced (how
often, the longest stall), compared with the follow interval.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import queue
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import sqlite_resilient
from sqlite_resilient import LITESTREAM_SETTINGS, ConfigurationError
from sqlite_resilient.replicas import _find_litestream, replica_status

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier, Event

SEED_ROWS = 10_000
"""Rows in the primary before the first scenario, so that the dashboard reads real pages."""
BODY = "x" * 100
STARTUP_SECONDS = 60.0
"""How long worker processes may take to open their connections and meet at the barrier."""
STOP_SECONDS = 30.0
"""How long worker processes may take to report after the stop."""
LITESTREAM_SECONDS = 30.0
"""Bound of every wait for Litestream: its first sync, the follower's first ``-txid``, its exit."""
PROBE_SECONDS = 0.02
"""Interval between two looks of the lag probe."""
POLL_SECONDS = 0.05
"""Interval between two looks at an external process (Litestream) that should change state."""

WRITER, READER, PROBE = "writer", "reader", "probe"
PRIMARY, FOLLOWER = "primary", "follower"

SCHEMA = "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL, at REAL NOT NULL)"
INSERT = "INSERT INTO items (body, at) VALUES (?, ?)"
DASHBOARD = (
    "SELECT count(*), max(id) FROM items",
    "SELECT id, body, at FROM items ORDER BY id DESC LIMIT 20",
)
NEWEST = "SELECT id, at FROM items ORDER BY id DESC LIMIT 1"


class BenchmarkError(RuntimeError):
    """The set-up failed: Litestream did not start, or a worker process did not."""


# -- worker processes ----------------------------------------------------------------------------


@dataclass
class Stats:
    """What one worker process did; sent back to the main process as a dict."""

    role: str
    index: int
    ok: int = 0
    """Commits or polls that worked, in all."""
    ok_in_window: int = 0
    """Of those, the ones that ended before the stop."""
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    commits: list[tuple[int, float]] = field(default_factory=list)
    """Writer: (row id, wall-clock time its commit returned) of each commit."""
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    """Probe: (wall-clock time the read began, newest row id, that row's ``at``)."""
    txids: list[tuple[float, int]] = field(default_factory=list)
    """Probe on a copy: (wall-clock time, TXID of ``-txid``) at each change seen."""
    lock_waits: int = 0
    """Operations of its connection that met a lock (``lock_stats.waits``), and how long
    the longest of them took: what the other side's locks cost it."""
    lock_wait_longest_ms: float = 0.0

    def count_error(self, exc: BaseException, prefix: str = "") -> None:
        first_line = (str(exc).splitlines() or [""])[0][:100]
        kind = f"{prefix}{type(exc).__name__}: {first_line}"
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs; pickled to the child by ``spawn``."""

    role: str
    index: int
    path: str
    interval: float
    """Writer: seconds between two commits; probe: between two looks."""
    phase: float
    """Writer: seconds from the start to its first commit (the writers take turns)."""
    barrier: Barrier
    stop: Event
    reports: Queue[dict[str, Any]]


def write_loop(conn: sqlite_resilient.ResilientConnection, job: Job, stats: Stats) -> None:
    """Commit one row every ``job.interval`` seconds, on a fixed schedule (one that falls
    behind commits at once and does not catch up with a burst)."""
    due = time.monotonic() + job.phase
    number = 0
    while True:
        delay = due - time.monotonic()
        if job.stop.wait(delay) if delay > 0 else job.stop.is_set():  # the pacing, not synchronisation
            return
        due = max(due + job.interval, time.monotonic())
        number += 1
        started = time.perf_counter()
        try:
            with sqlite_resilient.db_transaction(conn):
                row_id = conn.execute(INSERT, (f"w{job.index} #{number} {BODY}", time.time())).lastrowid
        except Exception as exc:  # counted; the writer goes on
            stats.count_error(exc)
            continue
        stats.commits.append((int(row_id or 0), time.time()))
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        stats.ok += 1
        stats.ok_in_window += not job.stop.is_set()


def consistent(count: int, top: int, recent: list[int]) -> bool:
    """Whether a dashboard poll saw a possible state: rows are never deleted and ids are
    consecutive, so a read that mixes pages of two states of the database (a stale page
    cache) shows a count that is not the largest id, or a gap among the newest ids. The
    second query may see a newer state than the first, never an older one."""
    if count < SEED_ROWS or count != top or len(recent) != 20:
        return False
    return recent[0] >= top and recent == list(range(recent[0], recent[0] - 20, -1))


def read_loop(conn: sqlite_resilient.ResilientConnection, job: Job, stats: Stats) -> None:
    """Poll the dashboard back to back until the stop."""
    while not job.stop.is_set():
        started = time.perf_counter()
        try:
            count, top = conn.execute(DASHBOARD[0]).fetchone()
            recent = [row[0] for row in conn.execute(DASHBOARD[1])]
        except Exception as exc:  # counted; the reader goes on
            stats.count_error(exc)
            continue
        if not consistent(count, top, recent):
            stats.count_error(AssertionError(f"inconsistent read: count {count}, max(id) {top}, newest {recent[:3]}"))
            continue
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        stats.ok += 1
        stats.ok_in_window += not job.stop.is_set()


def probe_loop(conn: sqlite_resilient.ResilientConnection, job: Job, stats: Stats) -> None:
    """Every ``job.interval`` seconds: the newest row this connection sees and, on a copy,
    the follower's position when it changed."""
    last_txid: int | None = None
    while not job.stop.wait(job.interval):
        try:
            replica = conn.replica  # read before the query: the query sees at least this
            began = time.time()
            row = conn.execute(NEWEST).fetchone()
        except Exception as exc:  # counted; the probe goes on
            stats.count_error(exc)
            continue
        if replica is not None and replica.txid is not None and replica.txid != last_txid:
            last_txid = replica.txid
            stats.txids.append((began, replica.txid))
        if not job.stop.is_set():
            stats.samples.append((began, int(row[0]), float(row[1])))
            stats.ok += 1
            stats.ok_in_window += 1


def worker_main(job: Job) -> None:
    """Entry point of a worker process. Never raises: its stats always go back, errors counted."""
    stats = Stats(job.role, job.index)
    conn: sqlite_resilient.ResilientConnection | None = None
    try:
        try:
            if job.role == WRITER:
                conn = sqlite_resilient.connect(job.path, settings=LITESTREAM_SETTINGS)
            else:
                conn = sqlite_resilient.connect(job.path, read_only=True)
        except Exception as exc:  # reported; the run goes on without this worker
            stats.count_error(exc, prefix="connect: ")
        job.barrier.wait(STARTUP_SECONDS)
        if conn is not None:
            loop = {WRITER: write_loop, READER: read_loop, PROBE: probe_loop}[job.role]
            loop(conn, job, stats)
            lock_stats = conn.lock_stats
            stats.lock_waits, stats.lock_wait_longest_ms = lock_stats.waits, lock_stats.longest_wait * 1000
    except Exception as exc:  # a broken barrier (the main process gave up), else never expected
        stats.count_error(exc, prefix="worker stopped: ")
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # counted
                stats.count_error(exc, prefix="close: ")
        job.reports.put(dataclasses.asdict(stats))


# -- Litestream ------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A long-running ``litestream`` command, its output in a log file."""

    name: str
    command: list[str]
    cwd: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            # Its own session: Ctrl-C reaches this process only, which stops it in its turn.
            self.process = subprocess.Popen(  # noqa: S603
                self.command, cwd=self.cwd, stdout=log, stderr=log, start_new_session=True
            )

    def check(self, timeout: float = 0.0) -> None:
        """Raise :class:`BenchmarkError` if it has exited (waiting at most *timeout* seconds
        for it to: a bounded look at an external process, also the caller's pause)."""
        if self.process is None:
            raise BenchmarkError(f"{self.name} was not started")
        try:
            code = self.process.wait(timeout) if timeout > 0 else self.process.poll()
        except subprocess.TimeoutExpired:
            return
        if code is not None:
            raise BenchmarkError(f"{self.name} exited with status {code}:\n{self.tail()}")

    def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it; SIGKILL if it has not exited within
        :data:`LITESTREAM_SECONDS`. Its exit status (None if it was never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(LITESTREAM_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(LITESTREAM_SECONDS)
        return process.returncode

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Its log lines above INFO."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "level=WARN" in line or "level=ERROR" in line]


@dataclass
class Replication:
    """The primary, ``litestream replicate`` shipping it to a file replica, and a follower
    keeping a copy of that replica, all in *directory*."""

    binary: str
    directory: Path
    follow_interval_ms: int
    replicate: Daemon = field(init=False)
    follower: Daemon = field(init=False)

    def __post_init__(self) -> None:
        self.primary = self.directory / "primary.db"
        self.copy = self.directory / "copy.db"
        self.replica = self.directory / "replica"
        self.config = self.directory / "litestream.yml"
        # A Unix socket path has at most 107 bytes: relative to the directory, the working
        # directory of every litestream command, however long the directory's own path is.
        self.socket = "control.sock"
        self.replicate = Daemon(
            "litestream replicate",
            [self.binary, "replicate", "-config", str(self.config)],
            self.directory,
            self.directory / "replicate.log",
        )
        follow = [self.binary, "restore", "-f", "-follow-interval", f"{self.follow_interval_ms}ms"]
        self.follower = Daemon(
            "litestream restore -f",
            [*follow, "-o", str(self.copy), self.replica.as_uri()],
            self.directory,
            self.directory / "follower.log",
        )

    def start(self) -> None:
        """Create and seed the primary, start replication, wait (bounded) until a forced sync
        reached the replica, start the follower and wait (bounded) for its ``-txid``."""
        with contextlib.closing(sqlite_resilient.connect(self.primary, settings=LITESTREAM_SETTINGS)) as conn:
            conn.execute(SCHEMA)
            with sqlite_resilient.db_transaction(conn):
                conn.executemany(INSERT, [(f"seed #{n} {BODY}", time.time()) for n in range(SEED_ROWS)])
        self.config.write_text(
            f"""\
socket:
  enabled: true
  path: {json.dumps(self.socket)}
dbs:
  - path: {json.dumps(str(self.primary))}
    monitor-interval: 100ms
    replica:
      type: file
      path: {json.dumps(str(self.replica))}
      sync-interval: 100ms
"""
        )
        self.replicate.start()
        deadline = time.monotonic() + LITESTREAM_SECONDS
        while True:
            done = self.litestream("sync", "-wait", "-json", "-socket", self.socket, str(self.primary))
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"litestream sync did not succeed within {LITESTREAM_SECONDS:g} s: {done.stderr.strip()}\n"
                    f"{self.replicate.tail()}"
                )
            self.replicate.check(POLL_SECONDS)
        self.follower.start()
        deadline = time.monotonic() + LITESTREAM_SECONDS
        while replica_status(str(self.copy)).txid is None:
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"the follower wrote no {self.copy.name}-txid within {LITESTREAM_SECONDS:g} s\n"
                    f"{self.follower.tail()}"
                )
            self.follower.check(POLL_SECONDS)

    def litestream(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [self.binary, *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=LITESTREAM_SECONDS,
            check=False,
        )

    def check(self, timeout: float = 0.0) -> None:
        """Raise if either daemon exited; wait up to *timeout* seconds on the follower."""
        self.replicate.check()
        self.follower.check(timeout)

    def stop(self) -> dict[str, int | None]:
        """Stop the follower, then replication (each bounded; the second also if stopping
        the first failed); their exit statuses."""
        try:
            follower = self.follower.stop()
        finally:
            replicate = self.replicate.stop()
        return {self.follower.name: follower, self.replicate.name: replicate}


@contextlib.contextmanager
def replication(binary: str, directory: Path, follow_interval_ms: int) -> Iterator[Replication]:
    """A started :class:`Replication`, stopped on the way out whatever happened."""
    setup = Replication(binary, directory, follow_interval_ms)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


# -- one scenario ----------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of sorted *ordered*, by nearest rank; 0.0 if empty."""
    if not ordered:
        return 0.0
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(percentile(ordered, 50), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(percentile(ordered, 100), 3),
        "count": len(ordered),
    }


@dataclass
class RunResult:
    scenario: str
    pair: int
    seconds: float
    workers: list[Stats]
    missing: list[str]
    started: float
    """Wall-clock time the workers were let go."""

    def of(self, role: str) -> list[Stats]:
        return [w for w in self.workers if w.role == role]

    def rate(self, role: str) -> float:
        return sum(w.ok_in_window for w in self.of(role)) / self.seconds

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update({f"{worker.role}: {kind}": n for kind, n in worker.errors.items()})
        total.update({f"{name}: did not report": 1 for name in self.missing})
        return total

    def read_latency(self) -> dict[str, float]:
        return summary(ms for w in self.of(READER) for ms in w.latencies_ms)

    def lag(self) -> dict[str, float]:
        """Probe read time minus the newest visible row's ``at``, in ms; a row written
        before the run counts as written at its start (nothing was written in between)."""
        return summary((t - max(at, self.started)) * 1000 for w in self.of(PROBE) for t, _, at in w.samples)

    def behind(self) -> dict[str, float]:
        """Age in ms of the oldest commit the probe's read missed (0 when it missed none):
        the first commit after the newest row it saw, if that commit had returned before
        the read began."""
        commits = sorted((row_id, at) for w in self.of(WRITER) for row_id, at in w.commits)
        ids = [row_id for row_id, _ in commits]
        ages = []
        for w in self.of(PROBE):
            for began, newest, _ in w.samples:
                index = bisect_right(ids, newest)
                missed = commits[index][1] if index < len(commits) else math.inf
                ages.append(max(0.0, began - missed) * 1000)
        return summary(ages)

    def txid_progress(self) -> dict[str, Any]:
        """How the copy's ``-txid`` moved during the run: advances seen by the probe, and the
        intervals between them (the longest one is the longest stall)."""
        changes = [(t, txid) for w in self.of(PROBE) for t, txid in w.txids]
        if not changes:
            return {}
        times = [t for t, _ in changes]
        gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
        return {
            "first": f"{changes[0][1]:016x}",
            "last": f"{changes[-1][1]:016x}",
            "advances": len(changes) - 1,
            "interval_ms": summary(gaps),
            "series": [[round(t - self.started, 3), f"{txid:016x}"] for t, txid in changes],
        }

    def to_json(self) -> dict[str, Any]:
        follower = self.scenario == FOLLOWER
        return {
            "scenario": self.scenario,
            "pair": self.pair,
            "seconds": round(self.seconds, 3),
            "reads": sum(w.ok_in_window for w in self.of(READER)),
            "reads_per_s": round(self.rate(READER), 1),
            "read_latency_ms": self.read_latency(),
            "reads_per_reader": [w.ok_in_window for w in self.of(READER)],
            "commits_per_s": round(self.rate(WRITER), 1),
            "commit_latency_ms": summary(ms for w in self.of(WRITER) for ms in w.latencies_ms),
            "reader_lock_waits": sum(w.lock_waits for w in self.of(READER)),
            "reader_lock_wait_longest_ms": round(
                max((w.lock_wait_longest_ms for w in self.of(READER)), default=0.0), 3
            ),
            "writer_lock_waits": sum(w.lock_waits for w in self.of(WRITER)),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "newest_row_age_ms": self.lag(),
            "lag_ms": self.lag() if follower else None,
            "behind_ms": self.behind() if follower else None,
            "txid": self.txid_progress() if follower else None,
        }


def collect(
    reports: Queue[dict[str, Any]], processes: dict[tuple[str, int], SpawnProcess], timeout: float
) -> tuple[list[Stats], list[str]]:
    """Every process's report, for at most *timeout* seconds; and the processes that sent
    none (exited without one, or out of time)."""
    deadline = time.monotonic() + timeout
    got: dict[tuple[str, int], Stats] = {}
    while len(got) < len(processes) and time.monotonic() < deadline:
        try:
            stats = Stats(**reports.get(timeout=0.1))
        except queue.Empty:
            if all(key in got or process.exitcode is not None for key, process in processes.items()):
                with contextlib.suppress(queue.Empty):  # a report put just before the exit
                    stats = Stats(**reports.get(timeout=1.0))
                    got[(stats.role, stats.index)] = stats
                    continue
                break
            continue
        got[(stats.role, stats.index)] = stats
    missing = [f"{role} {index}" for role, index in processes if (role, index) not in got]
    return sorted(got.values(), key=lambda w: (w.role, w.index)), missing


def run_scenario(scenario: str, pair: int, setup: Replication, args: argparse.Namespace) -> RunResult:
    """Writers on the primary and readers plus the probe on the scenario's database, for
    ``args.seconds``, in fresh ``spawn`` processes released together by a barrier."""
    target = str(setup.primary if scenario == PRIMARY else setup.copy)
    context = multiprocessing.get_context("spawn")
    reports: Queue[dict[str, Any]] = context.Queue()
    stop = context.Event()
    barrier = context.Barrier(args.writers + args.readers + 2)  # + the probe + this process
    interval = 1 / args.rate
    jobs = [
        Job(WRITER, n, str(setup.primary), interval, interval * n / args.writers, barrier, stop, reports)
        for n in range(args.writers)
    ]
    jobs += [Job(READER, n, target, 0.0, 0.0, barrier, stop, reports) for n in range(args.readers)]
    jobs.append(Job(PROBE, 0, target, PROBE_SECONDS, 0.0, barrier, stop, reports))
    processes = {
        (job.role, job.index): context.Process(
            target=worker_main, args=(job,), name=f"{scenario}-{job.role}-{job.index}", daemon=True
        )
        for job in jobs
    }
    try:
        # Ctrl-C is this process's to handle: the workers start with SIGINT ignored (spawn
        # execs a new interpreter, which keeps an ignored signal ignored from its first line).
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in processes.values():
                process.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        try:
            barrier.wait(STARTUP_SECONDS)
        except threading.BrokenBarrierError:
            raise BenchmarkError(f"{scenario}: the workers did not start within {STARTUP_SECONDS:g} s") from None
        started, begun = time.time(), time.monotonic()
        while (left := args.seconds - (time.monotonic() - begun)) > 0:
            setup.check(min(left, 0.1))  # Litestream must run throughout; this is also the run's clock
        stop.set()
        window = time.monotonic() - begun
        workers, missing = collect(reports, processes, STOP_SECONDS)
    finally:
        stop.set()
        barrier.abort()  # releases workers still at the barrier if this process gave up
        for process in processes.values():
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
    return RunResult(scenario, pair, window, workers, missing, started)


# -- output ----------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = list(values)
    return round(statistics.median(values), 3) if values else 0.0


def rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario: the median of its runs (errors and reads: their sum)."""
    table = []
    for scenario in (PRIMARY, FOLLOWER):
        mine = [run for run in runs if run["scenario"] == scenario]
        if not mine:
            continue
        row: dict[str, Any] = {
            "scenario": scenario,
            "runs": len(mine),
            "reads": sum(run["reads"] for run in mine),
            "reads_per_s": median(run["reads_per_s"] for run in mine),
            "read_ms": {k: median(run["read_latency_ms"][k] for run in mine) for k in ("p50", "p99", "max")},
            "commits_per_s": median(run["commits_per_s"] for run in mine),
            "errors": sum(run["errors"] for run in mine),
            "reader_lock_waits": sum(run["reader_lock_waits"] for run in mine),
            "reader_lock_wait_longest_ms": max(run["reader_lock_wait_longest_ms"] for run in mine),
            "newest_row_age_ms": {
                k: median(run["newest_row_age_ms"][k] for run in mine) for k in ("p50", "p99", "max")
            },
            "lag_ms": None,
            "behind_ms": None,
        }
        if scenario == FOLLOWER:
            for key in ("lag_ms", "behind_ms"):
                row[key] = {k: median(run[key][k] for run in mine) for k in ("p50", "p99", "max")}
            row["txid_advances_per_s"] = median(
                run["txid"].get("advances", 0) / run["seconds"] for run in mine if run["txid"] is not None
            )
            row["txid_longest_stall_ms"] = max(
                (run["txid"]["interval_ms"]["max"] for run in mine if run["txid"]), default=0.0
            )
        table.append(row)
    return table


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def print_table(table: Sequence[dict[str, Any]]) -> None:
    head = (
        f"{'scenario':<9} {'reads/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}"
        f" {'commits/s':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in table:
        read, lag = row["read_ms"], row["lag_ms"]
        lags = [ms(lag[k]) for k in ("p50", "p99", "max")] if lag is not None else ["-"] * 3
        print(
            f"{row['scenario']:<9} {row['reads_per_s']:>8.0f} {ms(read['p50']):>7} {ms(read['p99']):>7}"
            f" {ms(read['max']):>7} {row['errors']:>6} {row['commits_per_s']:>9.1f}"
            f" {lags[0]:>8} {lags[1]:>8} {lags[2]:>8}"
        )


def print_notes(table: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    by_scenario = {row["scenario"]: row for row in table}
    follower, primary = by_scenario.get(FOLLOWER), by_scenario.get(PRIMARY)
    interval = args.follow_interval
    print()
    print(
        f"medians of {args.pairs} run(s) per scenario, {args.seconds:g} s each; {args.readers} readers,"
        f" {args.writers} writers x {args.rate:g} commits/s (one commit every {1000 / (args.rate * args.writers):.0f}"
        " ms in all); errors: sum"
    )
    if follower is not None:
        lag, behind = follower["lag_ms"], follower["behind_ms"]
        print(
            "lag (follower): now - `at` of the newest row a reader on the copy sees;"
            f" p50 = {lag['p50'] / interval:.1f}x, p99 = {lag['p99'] / interval:.1f}x"
            f" the follow interval ({interval} ms)"
        )
        if primary is not None:
            age = primary["newest_row_age_ms"]
            print(
                f"  the same probe on the primary (no replication, only the writers' spacing):"
                f" p50 {ms(age['p50'])}, p99 {ms(age['p99'])}, max {ms(age['max'])} ms"
            )
        print(
            f"behind (follower): age of the oldest commit the copy missed (0: none), p50 {ms(behind['p50'])},"
            f" p99 {ms(behind['p99'])}, max {ms(behind['max'])} ms"
        )
        print(
            f"copy's -txid: {follower['txid_advances_per_s']:.1f} advances/s (median),"
            f" longest time without one {ms(follower['txid_longest_stall_ms'])} ms"
        )
    for row in table:
        if not row["reader_lock_waits"]:  # lock errors the library saw; SQLite's own busy waits are not seen
            continue
        print(
            f"readers on the {row['scenario']} met a lock {row['reader_lock_waits']} time(s) in all"
            f" (longest {ms(row['reader_lock_wait_longest_ms'])} ms)"
        )
    kinds: Counter[str] = Counter()
    for run in runs:
        kinds.update({f"{run['scenario']} {kind}": n for kind, n in run["error_kinds"].items()})
    for kind, n in kinds.most_common(10):
        print(f"  error x{n}: {kind}")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_resilient": sqlite_resilient.__version__,
    }


def litestream_version(binary: str) -> str | None:
    """``litestream version``, None if the binary does not run here."""
    try:
        done = subprocess.run(  # noqa: S603
            [binary, "version"], capture_output=True, text=True, timeout=LITESTREAM_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave as Ctrl-C does, through every ``finally`` (the processes are stopped)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each scenario run (default 8)")
    parser.add_argument("--readers", type=int, default=4, help="reader processes (default 4)")
    parser.add_argument("--writers", type=int, default=2, help="writer processes (default 2)")
    parser.add_argument("--rate", type=float, default=20.0, help="commits per second of each writer (default 20)")
    parser.add_argument("--pairs", type=int, default=2, help="primary/follower pairs of runs (default 2)")
    parser.add_argument(
        "--follow-interval", type=int, default=100, help="the follower's -follow-interval in ms (default 100)"
    )
    parser.add_argument("--json", type=Path, help="write the table's rows and every run to this JSON file")
    args = parser.parse_args(argv)
    if args.readers < 1 or args.writers < 1 or args.pairs < 1 or args.seconds <= 0 or args.rate <= 0:
        parser.error("need --readers, --writers, --pairs >= 1 and --seconds, --rate > 0")
    if args.follow_interval < 1:
        parser.error("need --follow-interval >= 1")

    try:
        binary = _find_litestream(None)
    except ConfigurationError as error:
        print(f"replicas benchmark skipped: {error}", file=sys.stderr)
        return
    version = litestream_version(binary)
    if version is None:
        print(f"replicas benchmark skipped: {binary} does not run on this machine", file=sys.stderr)
        return
    signal.signal(signal.SIGTERM, terminate)
    info = machine() | {"litestream": version}
    print(
        f"{info['cpus']} CPUs, Python {info['python']}, SQLite {info['sqlite']}, Litestream {version};"
        f" {args.readers} readers, {args.writers} writers, {args.seconds:g} s per run, {args.pairs} pair(s)",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="replicas-") as directory:
        with replication(binary, Path(directory), args.follow_interval) as setup:
            for pair in range(args.pairs):
                for scenario in (PRIMARY, FOLLOWER):
                    print(f"  pair {pair + 1}: {scenario} ...", file=sys.stderr, flush=True)
                    runs.append(run_scenario(scenario, pair, setup, args).to_json())
            codes = setup.stop()
        problems = setup.replicate.problems() + setup.follower.problems()
    table = rows(runs)
    print()
    print_table(table)
    print_notes(table, runs, args)
    if problems:
        print(f"Litestream logged {len(problems)} line(s) above INFO, e.g.: {problems[0]}")
    if args.json:
        report = {
            "machine": info,
            "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "litestream_exit": codes,
            "litestream_problems": problems,
            "rows": table,
            "runs": runs,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process stopped")
    except BenchmarkError as error:
        sys.exit(f"replicas benchmark failed: {error}")
