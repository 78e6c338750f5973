"""Contention: writer processes and dashboard readers on one database, strategy by strategy.

    python benchmarks/contention.py [--writers N] [--readers M] [--seconds S] [--strategies A,B]
                                    [--journal {wal,delete}] [--json PATH]
    python benchmarks/contention.py --sweep [--sweep-writers 1,2,4,8,16] [--plot DIR] [--json PATH]

The motivating workload: background jobs write to one SQLite file while a dashboard reads it.
Each strategy runs on a fresh database, one after the other in the same run, with N writer
*processes* and M reader processes started with ``spawn``, released together by an event and
stopped by another after ``--seconds``.

Each writer (its own seeded RNG) runs transactions back to back:

- ingestion (25 %): insert a batch of ``--batch`` items;
- enrichment (73 %), in one transaction: select one unprocessed item, ~1 ms of work, mark it
  processed, insert an audit row into ``processed_log``, and increment a shared counter by
  read-modify-write (``SELECT n`` then ``UPDATE ... SET n = ?``);
- long enrichment (2 %, 1 in 50): the same for 4-8 items with 20-50 ms of work in all.

Readers poll dashboard queries (counts, recent items, aggregates over the last 1000 items,
the counter) in a loop. The work is ``time.sleep`` (work, as a call to a model or a service
would be, never synchronisation).

Measured per strategy: commits/s and reads/s (completed while the run was on), errors by
kind, lost counter updates (increments the writers saw committed minus the final counter),
items processed twice (``processed_log`` rows with the same item), write latency (from the
start of the transaction's first attempt, retries included, until its commit returned) and
read latency (one poll, all its queries) as p50/p99/p99.9/max. The longest single write wait
is the maximum write latency. Latencies count committed transactions and successful polls;
failed ones are counted as errors, with their longest duration.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, cast

import sqlite_resilient

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

WRITE_TIMEOUT = sqlite_resilient.DEFAULT_SETTINGS.timeout
"""Lock-wait budget of the configured writers (the library's default, 30 s, for all)."""
READ_TIMEOUT = sqlite_resilient.DEFAULT_SETTINGS.read_only_timeout
"""Lock-wait budget of the configured readers (the library's read-only default, 5 s)."""
SEED_ITEMS = 2000
"""Unprocessed items in each fresh database, so that enrichment has work from the start."""
P_LONG = 1 / 50
P_INGEST = 0.25
WORK_SECONDS = 0.001
"""Work per item of an enrichment transaction."""
LONG_ITEMS = (4, 8)
LONG_WORK_SECONDS = (0.020, 0.050)
"""Work of a long enrichment transaction, in all, spread over its items."""
STARTUP_SECONDS = 60.0
"""How long processes may take to open their connections and report ready."""
STOP_SECONDS = 2 * WRITE_TIMEOUT + 30.0
"""How long processes may take to report after the stop (a writer may be waiting for a lock)."""
SWEEP_STRATEGIES = ("wal-begin-immediate", "apsw", "sqlite_resilient", "ceiling")

WRITER, READER = "writer", "reader"
READY, DONE = "ready", "done"

SCHEMA = """
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    value REAL NOT NULL,
    payload TEXT NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    score REAL,
    processed_by TEXT
);
CREATE INDEX items_processed ON items(processed, id);
CREATE TABLE processed_log (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL, worker TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counters VALUES ('enriched', 0);
"""
INSERT_ITEM = "INSERT INTO items (source, value, payload) VALUES (?, ?, ?)"
SELECT_UNPROCESSED = "SELECT id, value FROM items WHERE processed = 0 ORDER BY id LIMIT ?"
MARK_PROCESSED = "UPDATE items SET processed = 1, score = ?, processed_by = ? WHERE id = ?"
INSERT_LOG = "INSERT INTO processed_log (item_id, worker) VALUES (?, ?)"
SELECT_COUNTER = "SELECT n FROM counters WHERE name = 'enriched'"
UPDATE_COUNTER = "UPDATE counters SET n = ? WHERE name = 'enriched'"
DASHBOARD = (
    "SELECT processed, count(*) FROM items GROUP BY processed",
    "SELECT id, source, value, processed FROM items ORDER BY id DESC LIMIT 20",
    "SELECT source, count(*), avg(value), max(value) FROM items"
    " WHERE id > (SELECT max(id) FROM items) - 1000 GROUP BY source",
    SELECT_COUNTER,
)


# -- connections: what the strategies share ----------------------------------------------------


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """What the workload needs of a connection: sqlite3's and APSW's both have it."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Rows: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows: ...
    def close(self) -> None: ...


class Outcome(NamedTuple):
    """What a committed transaction did."""

    items: int = 0
    """Items enriched."""
    increments: int = 0
    """Increments of the shared counter."""


Body = Callable[[Database], Outcome]
Opener = Callable[[str, str], Database]
"""(database path, journal mode) -> connection."""
Transact = Callable[[Database, Body], Outcome]
"""Run *body* as one transaction and commit it; raise if it fails."""


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    journal: str
    """The journal mode of its database in a ``--journal wal`` run."""
    open_writer: Opener
    open_reader: Opener
    transact: Transact
    single_writer: bool = False

    @property
    def lock_first(self) -> bool:
        """Whether its transactions take the write lock before the body runs (``BEGIN
        IMMEDIATE``): then the body's start to the commit is the time the lock is held."""
        return self.transact in (transact_begin_immediate, transact_resilient)


# -- the strategies: open a connection, run one transaction --------------------------------------


def open_plain(path: str, journal: str) -> Database:
    """``sqlite3.connect()`` defaults: 5 s timeout, deferred implicit transactions."""
    return sqlite3.connect(path)


def open_handrolled(path: str, journal: str, *, timeout: float = WRITE_TIMEOUT, **kwargs: Any) -> Database:
    """The common hand-rolled fix: WAL, ``synchronous=NORMAL`` and a long timeout."""
    conn: sqlite3.Connection = sqlite3.connect(path, timeout=timeout, **kwargs)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


open_handrolled_reader = functools.partial(open_handrolled, timeout=READ_TIMEOUT)
open_implicit_immediate = functools.partial(open_handrolled, isolation_level="IMMEDIATE")
open_begin_immediate = functools.partial(open_handrolled, isolation_level=None)


@functools.cache
def apply_apsw_bestpractice(journal: str) -> None:
    """``apsw.bestpractice.apply(recommended)``, once per process; without its WAL hook in a
    rollback-journal run (it would switch the file to WAL at every connect)."""
    import logging

    import apsw.bestpractice

    which = apsw.bestpractice.recommended
    if journal != "wal":
        which = tuple(f for f in which if f is not apsw.bestpractice.connection_wal)
    # bestpractice sends SQLite's log (a line per busy error) to logging; keep it off stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    apsw.bestpractice.apply(which)


def open_apsw(path: str, journal: str) -> Database:
    """APSW with its best practice (WAL, 100 ms busy timeout, ...); autocommit by default."""
    import apsw

    apply_apsw_bestpractice(journal)
    return cast("Database", apsw.Connection(path))


def open_resilient_writer(path: str, journal: str) -> Database:
    """``sqlite_resilient.connect()`` defaults (in a rollback-journal run: that journal mode)."""
    return sqlite_resilient.connect(path, pragmas={"journal_mode": journal} if journal != "wal" else None)


def open_resilient_reader(path: str, journal: str) -> Database:
    return sqlite_resilient.connect(path, read_only=True)


def transact_deferred(conn: Database, body: Body) -> Outcome:
    """An explicit deferred ``BEGIN``: the reads are in the transaction, but the write lock is
    taken only at the first write, which fails at once if another writer got in first."""
    conn.execute("BEGIN")
    outcome = body(conn)
    cast("sqlite3.Connection", conn).commit()
    return outcome


def transact_implicit(conn: Database, body: Body) -> Outcome:
    """Python's implicit transaction: it begins at the first INSERT/UPDATE, so a SELECT
    before it runs outside the transaction."""
    outcome = body(conn)
    cast("sqlite3.Connection", conn).commit()
    return outcome


def transact_begin_immediate(conn: Database, body: Body) -> Outcome:
    """Explicit ``BEGIN IMMEDIATE ... COMMIT`` (autocommit connection): the write lock first."""
    conn.execute("BEGIN IMMEDIATE")
    outcome = body(conn)
    conn.execute("COMMIT")
    return outcome


@sqlite_resilient.retry_on_lock
def _resilient_attempt(conn: sqlite3.Connection, body: Body) -> Outcome:
    with sqlite_resilient.db_transaction(conn):
        return body(cast("Database", conn))


def transact_resilient(conn: Database, body: Body) -> Outcome:
    """``@retry_on_lock`` around ``with db_transaction(conn):`` (BEGIN IMMEDIATE)."""
    return _resilient_attempt(cast("sqlite3.Connection", conn), body)


STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        Strategy(
            "plain",
            "sqlite3.connect() defaults: rollback journal, 5 s timeout, deferred BEGIN",
            "delete",
            open_plain,
            open_plain,
            transact_deferred,
        ),
        Strategy(
            "wal-handrolled",
            "WAL + synchronous=NORMAL + 30 s timeout (readers 5 s), deferred BEGIN",
            "wal",
            open_handrolled,
            open_handrolled_reader,
            transact_deferred,
        ),
        Strategy(
            "wal-implicit-immediate",
            'as wal-handrolled, isolation_level="IMMEDIATE", implicit transactions',
            "wal",
            open_implicit_immediate,
            open_handrolled_reader,
            transact_implicit,
        ),
        Strategy(
            "wal-begin-immediate",
            "as wal-handrolled, isolation_level=None, explicit BEGIN IMMEDIATE ... COMMIT",
            "wal",
            open_begin_immediate,
            open_handrolled_reader,
            transact_begin_immediate,
        ),
        Strategy(
            "apsw",
            "APSW, bestpractice.apply(recommended), BEGIN IMMEDIATE ... COMMIT",
            "wal",
            open_apsw,
            open_apsw,
            transact_begin_immediate,
        ),
        Strategy(
            "sqlite_resilient",
            "connect() defaults, @retry_on_lock + db_transaction; readers read_only=True",
            "wal",
            open_resilient_writer,
            open_resilient_reader,
            transact_resilient,
        ),
        Strategy(
            "sqlite_resilient-dropin",
            "as wal-implicit-immediate's code, only the import changed: sqlite_resilient.connect()",
            "wal",
            open_resilient_writer,
            open_resilient_reader,
            transact_implicit,
        ),
        Strategy(
            "ceiling",
            "wal-begin-immediate with one writer process, no rival writers",
            "wal",
            open_begin_immediate,
            open_handrolled_reader,
            transact_begin_immediate,
            single_writer=True,
        ),
    )
}


# -- the workload ------------------------------------------------------------------------------


def ingest(conn: Database, rows: Sequence[tuple[str, float, str]]) -> Outcome:
    conn.executemany(INSERT_ITEM, rows)
    return Outcome()


def enrich(conn: Database, works: Sequence[float], worker: str) -> Outcome:
    """Process up to ``len(works)`` unprocessed items, one unit of work each."""
    rows = conn.execute(SELECT_UNPROCESSED, (len(works),)).fetchall()
    for (item_id, value), work in zip(rows, works):
        time.sleep(work)
        conn.execute(MARK_PROCESSED, (math.sqrt(value), worker, item_id))
        conn.execute(INSERT_LOG, (item_id, worker))
        (n,) = conn.execute(SELECT_COUNTER).fetchone()
        conn.execute(UPDATE_COUNTER, (n + 1,))
    return Outcome(items=len(rows), increments=len(rows))


def next_transaction(rng: random.Random, worker: str, batch: int) -> tuple[str, Body]:
    """The next transaction of a writer: its kind and its body. Everything random is drawn
    here, so a body that is run again does the same."""
    draw = rng.random()
    if draw < P_LONG:
        count = rng.randint(*LONG_ITEMS)
        total = rng.uniform(*LONG_WORK_SECONDS)
        return "long", functools.partial(enrich, works=[total / count] * count, worker=worker)
    if draw < P_LONG + P_INGEST:
        rows = [(worker, rng.random() * 100, "x" * rng.randint(50, 200)) for _ in range(batch)]
        return "ingest", functools.partial(ingest, rows=rows)
    return "enrich", functools.partial(enrich, works=[WORK_SECONDS], worker=worker)


def error_kind(exc: BaseException) -> str:
    """Exception class and message, with numbers replaced by N so that similar errors count together."""
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+(?:[.][0-9]+)?', 'N', str(exc))}"


@dataclass
class WorkerStats:
    """What one writer or reader process did; sent back to the main process as a dict."""

    role: str
    index: int
    ok: int = 0
    """Transactions committed or polls that worked, in all."""
    ok_in_window: int = 0
    """Of those, the ones that ended before the stop."""
    failed: int = 0
    failed_ms_max: float = 0.0
    items: int = 0
    """Items enriched in committed transactions."""
    items_in_window: int = 0
    increments: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    held: list[tuple[float, float]] = field(default_factory=list)
    """(start of the body's last attempt, commit returned), ``time.monotonic()``, per
    committed transaction: the clock is the system's, comparable between processes."""
    errors: dict[str, int] = field(default_factory=dict)
    failed_by_transaction: dict[str, int] = field(default_factory=dict)
    committed_by_transaction: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str, exc: BaseException, elapsed_ms: float) -> None:
        self.failed += 1
        self.failed_ms_max = max(self.failed_ms_max, elapsed_ms)
        self.count_error(exc)
        self.failed_by_transaction[what] = self.failed_by_transaction.get(what, 0) + 1

    def count_error(self, exc: BaseException, prefix: str = "") -> None:
        kind = prefix + error_kind(exc)
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs; pickled to the child by ``spawn``."""

    strategy: str
    role: str
    index: int
    path: str
    journal: str
    seed: int
    batch: int
    read_pause: float
    messages: Queue[tuple[str, str, int, dict[str, Any] | None]]
    start: Event
    stop: Event


def rollback_quietly(conn: Database, stats: WorkerStats) -> None:
    """Roll back what a failed transaction left open; a failing rollback is counted."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception as exc:  # counted; the worker goes on
        stats.count_error(exc, prefix="rollback ")


def write_loop(conn: Database, strategy: Strategy, job: Job, stats: WorkerStats) -> None:
    rng = random.Random(job.seed * 1000 + job.index)
    worker = f"w{job.index}"
    while not job.stop.is_set():
        what, body = next_transaction(rng, worker, job.batch)
        entered = 0.0

        def timed(conn: Database, body: Body = body) -> Outcome:
            nonlocal entered
            entered = time.monotonic()
            return body(conn)

        started = time.perf_counter()
        try:
            outcome = strategy.transact(conn, timed)
        except Exception as exc:  # counted by kind; the worker goes on
            stats.fail(what, exc, (time.perf_counter() - started) * 1000)
            rollback_quietly(conn, stats)
            continue
        stats.held.append((entered, time.monotonic()))
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        in_window = not job.stop.is_set()
        stats.ok += 1
        stats.ok_in_window += in_window
        stats.items += outcome.items
        stats.items_in_window += outcome.items if in_window else 0
        stats.increments += outcome.increments
        stats.committed_by_transaction[what] = stats.committed_by_transaction.get(what, 0) + 1


def read_loop(conn: Database, job: Job, stats: WorkerStats) -> None:
    while not job.stop.is_set():
        started = time.perf_counter()
        try:
            for sql in DASHBOARD:
                conn.execute(sql).fetchall()
        except Exception as exc:  # counted by kind; the reader goes on
            stats.fail("poll", exc, (time.perf_counter() - started) * 1000)
            rollback_quietly(conn, stats)
        else:
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            stats.ok += 1
            stats.ok_in_window += not job.stop.is_set()
        if job.read_pause:
            time.sleep(job.read_pause)  # the pause between two polls of the dashboard


def worker_main(job: Job) -> None:
    """Entry point of a worker process. Never raises: its stats always go back, errors counted."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    stats = WorkerStats(job.role, job.index)
    conn: Database | None = None
    try:
        strategy = STRATEGIES[job.strategy]
        opener = strategy.open_writer if job.role == WRITER else strategy.open_reader
        try:
            conn = opener(job.path, job.journal)
        except Exception as exc:  # reported; the run goes on without this worker
            stats.count_error(exc, prefix="connect: ")
        job.messages.put((READY, job.role, job.index, None))
        if conn is not None and job.start.wait(STARTUP_SECONDS):
            if job.role == WRITER:
                write_loop(conn, strategy, job, stats)
            else:
                read_loop(conn, job, stats)
    except Exception as exc:  # never expected (the loops count their errors), but reported
        stats.count_error(exc, prefix="worker stopped: ")
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # counted
                stats.count_error(exc, prefix="close: ")
        job.messages.put((DONE, job.role, job.index, dataclasses.asdict(stats)))


# -- one run -------------------------------------------------------------------------------------


class BenchmarkError(RuntimeError):
    """A worker process could not start."""


def percentile(ordered: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of sorted *ordered*, by nearest rank; 0.0 if empty."""
    if not ordered:
        return 0.0
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))


def summary(latencies: Iterable[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {name: round(percentile(ordered, q), 3) for name, q in PERCENTILES} | {"count": len(ordered)}


@dataclass
class RunResult:
    strategy: str
    writers: int
    readers: int
    journal: str
    seconds: float
    workers: list[WorkerStats]
    missing: list[str]
    counter_final: int
    log_rows: int
    processed_twice: int
    extra_processings: int
    started: float = 0.0
    """``time.monotonic()`` when the writers were let go."""

    def _of(self, role: str) -> list[WorkerStats]:
        return [w for w in self.workers if w.role == role]

    def rate(self, role: str) -> float:
        return sum(w.ok_in_window for w in self._of(role)) / self.seconds

    @property
    def items_rate(self) -> float:
        return sum(w.items_in_window for w in self._of(WRITER)) / self.seconds

    @property
    def spread(self) -> str:
        """Commits of the least and the most served writer: how fairly the lock went round."""
        commits = [w.ok_in_window for w in self._of(WRITER)]
        return f"{min(commits)}-{max(commits)}" if commits else "-"

    def failed(self, role: str) -> int:
        return sum(w.failed for w in self._of(role))

    def errors(self, role: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self._of(role):
            total.update(worker.errors)
        return total

    def latency(self, role: str) -> dict[str, float]:
        return summary(ms for w in self._of(role) for ms in w.latencies_ms)

    def failed_ms_max(self, role: str) -> float:
        return max((w.failed_ms_max for w in self._of(role)), default=0.0)

    def lock_time(self) -> dict[str, float] | None:
        """Where the write lock's time went in the run, for strategies that take it at
        ``BEGIN``: the share of the run it was held, the transactions' hold times, and the
        idle gaps (one transaction's commit returned to the next one's body starting: the
        hand-off, each process's own loop, and ``BEGIN`` itself)."""
        if not STRATEGIES[self.strategy].lock_first:
            return None
        end = self.started + self.seconds
        spans = sorted(
            (max(a, self.started), min(b, end))
            for w in self._of(WRITER)
            for a, b in w.held
            if b > self.started and a < end
        )
        if not spans:
            return None
        held, covered = 0.0, self.started
        for a, b in spans:  # their union: a commit releases the lock before it returns
            held += max(0.0, b - max(a, covered))
            covered = max(covered, b)
        gaps = [max(0.0, b[0] - a[1]) * 1000 for a, b in zip(spans, spans[1:])]
        holds = [(b - a) * 1000 for a, b in spans]
        return {
            "held_share": round(held / self.seconds, 4),
            "hold_ms_p50": round(percentile(sorted(holds), 50), 3),
            "gap_ms_p50": round(percentile(sorted(gaps), 50), 3) if gaps else 0.0,
            "gap_ms_p99": round(percentile(sorted(gaps), 99), 3) if gaps else 0.0,
            "gap_ms_total": round(sum(gaps), 1),
            "overlaps": sum(b[0] < a[1] for a, b in zip(spans, spans[1:])),
        }

    @property
    def counter_expected(self) -> int:
        return sum(w.increments for w in self._of(WRITER))

    @property
    def lost_updates(self) -> int:
        return self.counter_expected - self.counter_final

    @property
    def items_committed(self) -> int:
        return sum(w.items for w in self._of(WRITER))

    def to_json(self) -> dict[str, Any]:
        def worker(w: WorkerStats) -> dict[str, Any]:
            fields = dataclasses.asdict(w)
            del fields["latencies_ms"], fields["held"]
            return fields

        return {
            "strategy": self.strategy,
            "summary": STRATEGIES[self.strategy].summary,
            "writers": self.writers,
            "readers": self.readers,
            "journal": self.journal,
            "seconds": round(self.seconds, 3),
            "commits": sum(w.ok for w in self._of(WRITER)),
            "commits_in_window": sum(w.ok_in_window for w in self._of(WRITER)),
            "commits_per_s": round(self.rate(WRITER), 1),
            "commits_per_writer": [w.ok_in_window for w in self._of(WRITER)],
            "items_enriched_per_s": round(self.items_rate, 1),
            "reads": sum(w.ok for w in self._of(READER)),
            "reads_per_s": round(self.rate(READER), 1),
            "write_failures": self.failed(WRITER),
            "read_failures": self.failed(READER),
            "write_errors": dict(self.errors(WRITER)),
            "read_errors": dict(self.errors(READER)),
            "longest_failed_write_ms": round(self.failed_ms_max(WRITER), 3),
            "longest_failed_read_ms": round(self.failed_ms_max(READER), 3),
            "counter_expected": self.counter_expected,
            "counter_final": self.counter_final,
            "lost_updates": self.lost_updates,
            "items_processed_committed": self.items_committed,
            "processed_log_rows": self.log_rows,
            "items_processed_twice": self.processed_twice,
            "extra_processings": self.extra_processings,
            "write_latency_ms": self.latency(WRITER),
            "read_latency_ms": self.latency(READER),
            "longest_write_wait_ms": self.latency(WRITER)["max"],
            "write_lock": self.lock_time(),
            "missing_workers": self.missing,
            "per_worker": [worker(w) for w in self.workers],
        }


def create_database(path: str, journal: str, seed: int) -> None:
    """A fresh database in *journal* mode with ``SEED_ITEMS`` unprocessed items."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(INSERT_ITEM, [("seed", rng.random() * 100, "x" * 100) for _ in range(SEED_ITEMS)])
        conn.execute("COMMIT")
    finally:
        conn.close()


def audit(path: str) -> tuple[int, int, int, int]:
    """Final counter, audit rows, items processed more than once, and extra processings."""
    conn = sqlite3.connect(path, timeout=WRITE_TIMEOUT)
    try:
        (counter,) = conn.execute(SELECT_COUNTER).fetchone()
        (rows,) = conn.execute("SELECT count(*) FROM processed_log").fetchone()
        twice, extra = conn.execute(
            "SELECT count(*), coalesce(sum(c - 1), 0) FROM"
            " (SELECT count(*) AS c FROM processed_log GROUP BY item_id HAVING count(*) > 1)"
        ).fetchone()
    finally:
        conn.close()
    return counter, rows, twice, extra


def receive(
    messages: Queue[tuple[str, str, int, dict[str, Any] | None]],
    processes: dict[tuple[str, int], SpawnProcess],
    kind: str,
    timeout: float,
) -> tuple[dict[tuple[str, int], dict[str, Any] | None], list[str]]:
    """Collect the *kind* message of every process, for at most *timeout* seconds; return
    them by process and the processes that sent none (exited, or out of time)."""
    deadline = time.monotonic() + timeout
    got: dict[tuple[str, int], dict[str, Any] | None] = {}
    strikes: Counter[tuple[str, int]] = Counter()
    while len(got) < len(processes) and time.monotonic() < deadline:
        try:
            message, role, index, payload = messages.get(timeout=0.1)
        except queue.Empty:
            # a process found exited at two checks in a row has nothing left in the queue
            for key, process in processes.items():
                if key not in got and process.exitcode is not None:
                    strikes[key] += 1
            if all(key in got or strikes[key] > 1 for key in processes):
                break
            continue
        if message == kind:
            got[(role, index)] = payload
    return got, [f"{role} {index}" for role, index in processes if (role, index) not in got]


def run_strategy(name: str, writers: int, args: argparse.Namespace, directory: str) -> RunResult:
    """Run strategy *name* with *writers* writer processes and ``args.readers`` readers for
    ``args.seconds`` on a fresh database in *directory*, and audit the result."""
    strategy = STRATEGIES[name]
    writers = 1 if strategy.single_writer else writers
    readers, seconds = args.readers, args.seconds
    journal = "delete" if args.journal == "delete" else strategy.journal
    path = os.path.join(directory, f"{name}-{writers}w{readers}r.db")
    create_database(path, journal, args.seed)
    context = multiprocessing.get_context("spawn")
    messages: Queue[tuple[str, str, int, dict[str, Any] | None]] = context.Queue()
    start, stop = context.Event(), context.Event()
    processes: dict[tuple[str, int], SpawnProcess] = {}
    for role, count in ((WRITER, writers), (READER, readers)):
        for index in range(count):
            job = Job(name, role, index, path, journal, args.seed, args.batch, args.read_pause, messages, start, stop)
            processes[(role, index)] = context.Process(
                target=worker_main, args=(job,), name=f"{name}-{role}-{index}", daemon=True
            )
    try:
        for process in processes.values():
            process.start()
        _, not_ready = receive(messages, processes, READY, STARTUP_SECONDS)
        if not_ready:
            raise BenchmarkError(f"{name}: {', '.join(not_ready)} did not start within {STARTUP_SECONDS:g} s")
        started = time.monotonic()
        start.set()
        time.sleep(seconds)  # the run itself
        stop.set()
        window = time.monotonic() - started
        done, missing = receive(messages, processes, DONE, STOP_SECONDS)
    finally:
        stop.set()
        start.set()
        for process in processes.values():
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.terminate()
                process.join(10)
    stats = [WorkerStats(**payload) for payload in done.values() if payload is not None]
    stats.sort(key=lambda w: (w.role, w.index))
    return RunResult(name, writers, readers, journal, window, stats, missing, *audit(path), started=started)


# -- output --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_resilient": sqlite_resilient.__version__,
        "apsw": apsw_version(),
    }
    return info


def apsw_version() -> str | None:
    try:
        import apsw
    except ImportError:
        return None
    return f"{apsw.apsw_version()} (SQLite {apsw.sqlite_lib_version()})"


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


NOTES = """\
W = writer processes; commits/s, items/s (items enriched), reads/s (dashboard polls): completed in the run;
w.err/r.err = failed write transactions/polls; lost = counter increments committed - final counter;
twice = items with more than one audit row; per writer = fewest-most commits of one writer
in the run (how fairly the write lock went round); write ms = start of the first attempt to the commit
returned (retries included), committed transactions only; write max = longest write wait."""


LOCK_NOTES = """\
write lock (strategies that take it at BEGIN): held % = share of the run some writer was inside a committed
transaction (its body's start to its commit returned); hold = one transaction's; gap = from one commit returned
to the next transaction's body starting (the hand-off, the writer's own loop, BEGIN); gaps ms = all of them
in the run; overlaps = transactions whose body started before the previous commit returned (SQLite had
released the lock; the gap counts 0)."""


def print_table(results: Sequence[RunResult]) -> None:
    head = (
        f"{'strategy':<23} {'W':>2} {'commits/s':>9} {'items/s':>7} {'reads/s':>8} {'w.err':>6} {'r.err':>6}"
        f" {'lost':>5} {'twice':>6} {'per writer':>10} | {'write ms: p50':>13} {'p99':>7} {'p99.9':>7} {'max':>7}"
        f" | {'read ms: p50':>12} {'p99':>7} {'p99.9':>7} {'max':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        w, rd = r.latency(WRITER), r.latency(READER)
        print(
            f"{r.strategy:<23} {r.writers:>2} {r.rate(WRITER):>9.1f} {r.items_rate:>7.1f} {r.rate(READER):>8.1f}"
            f" {r.failed(WRITER):>6} {r.failed(READER):>6} {r.lost_updates:>5} {r.processed_twice:>6} {r.spread:>10}"
            f" | {ms(w['p50']):>13} {ms(w['p99']):>7} {ms(w['p99.9']):>7} {ms(w['max']):>7}"
            f" | {ms(rd['p50']):>12} {ms(rd['p99']):>7} {ms(rd['p99.9']):>7} {ms(rd['max']):>7}"
        )
    print_details(results)


def print_lock_time(results: Sequence[RunResult]) -> None:
    """Where the write lock's time went, for the runs whose transactions take it at BEGIN."""
    rows = [(r, lock) for r in results if (lock := r.lock_time()) is not None]
    if not rows:
        return
    print()
    head = (
        f"{'write lock':<23} {'W':>2} {'held %':>7} {'hold p50 ms':>11} {'gap p50 ms':>10} {'gap p99 ms':>10}"
        f" {'gaps ms':>8} {'overlaps':>8}"
    )
    print(head)
    print("-" * len(head))
    for r, lock in rows:
        print(
            f"{r.strategy:<23} {r.writers:>2} {lock['held_share'] * 100:>7.1f} {lock['hold_ms_p50']:>11.2f}"
            f" {lock['gap_ms_p50']:>10.3f} {lock['gap_ms_p99']:>10.3f} {lock['gap_ms_total']:>8.0f}"
            f" {lock['overlaps']:>8.0f}"
        )
    print(LOCK_NOTES)


def print_details(results: Sequence[RunResult]) -> None:
    """Errors by kind and anything amiss, per run; then what the columns mean."""
    print_lock_time(results)
    print()
    for r in results:
        lines: list[str] = []
        for role, label in ((WRITER, "write"), (READER, "read")):
            lines.extend(f"    {label}: {count} x {kind}" for kind, count in r.errors(role).most_common())
            if r.failed(role):
                lines.append(f"    longest failed {label}: {ms(r.failed_ms_max(role))} ms")
        if r.missing:
            lines.append(f"    no result from: {', '.join(r.missing)}")
        if r.log_rows != r.items_committed:
            lines.append(f"    processed_log has {r.log_rows} rows, writers committed {r.items_committed} items")
        if lines:
            print(f"{r.strategy} ({r.writers} writers, {r.journal}):")
            print("\n".join(lines))
    print(NOTES)


def print_sweep(results: Sequence[RunResult]) -> None:
    head = (
        f"{'strategy':<23} {'W':>2} {'commits/s':>9} {'items/s':>7} {'w.err':>6} {'lost':>5} {'twice':>6}"
        f" {'per writer':>10}"
        f" {'write p50':>9} {'p99':>7} {'max':>7} {'reads/s':>8} {'read p99':>8} {'max':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        w, rd = r.latency(WRITER), r.latency(READER)
        print(
            f"{r.strategy:<23} {r.writers:>2} {r.rate(WRITER):>9.1f} {r.items_rate:>7.1f} {r.failed(WRITER):>6}"
            f" {r.lost_updates:>5}"
            f" {r.processed_twice:>6} {r.spread:>10} {ms(w['p50']):>9} {ms(w['p99']):>7} {ms(w['max']):>7}"
            f" {r.rate(READER):>8.1f} {ms(rd['p99']):>8} {ms(rd['max']):>7}"
        )
    print_details(results)


def plot_sweep(results: Sequence[RunResult], directory: Path) -> list[Path]:
    """Throughput and write p99/max against writers, one line per strategy (the ceiling flat)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        print("--plot: matplotlib is not importable (pip install matplotlib); no plots")
        return []
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    ticker: Any = importlib.import_module("matplotlib.ticker")
    directory.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(r.strategy for r in results))
    all_writers = sorted({r.writers for r in results})
    written = []

    def writer_ticks(axes: Any) -> None:
        axes.xaxis.set_major_locator(ticker.FixedLocator(all_writers))
        axes.xaxis.set_major_formatter(ticker.FixedFormatter([str(w) for w in all_writers]))
        axes.xaxis.set_minor_locator(ticker.NullLocator())

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in names:
        runs = [r for r in results if r.strategy == name]
        if STRATEGIES[name].single_writer:
            axes.axhline(runs[0].rate(WRITER), linestyle="--", color="grey", label=f"{name} (1 writer)")
        else:
            axes.plot([r.writers for r in runs], [r.rate(WRITER) for r in runs], marker="o", label=name)
    axes.set(xscale="log", xlabel="writer processes", ylabel="commits/s", title="Write throughput")
    axes.set_ylim(0, max(r.rate(WRITER) for r in results) * 1.15)
    writer_ticks(axes)
    axes.legend()
    written.append(directory / "throughput.png")
    figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, name in enumerate(names):
        runs = [r for r in results if r.strategy == name]
        color = f"C{index}"
        xs = [r.writers for r in runs] if not STRATEGIES[name].single_writer else all_writers
        p99 = [r.latency(WRITER)["p99"] for r in runs] * (len(xs) if STRATEGIES[name].single_writer else 1)
        top = [r.latency(WRITER)["max"] for r in runs] * (len(xs) if STRATEGIES[name].single_writer else 1)
        axes.plot(xs, p99, marker="o", color=color, label=f"{name} p99")
        axes.plot(xs, top, marker="^", linestyle=":", color=color, label=f"{name} max")
    axes.set(xscale="log", yscale="log", xlabel="writer processes", ylabel="ms", title="Write latency")
    writer_ticks(axes)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    written.append(directory / "write_latency.png")
    figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    return written


def strategy_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    return names


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("writer counts must be >= 1")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4, help="writer processes (default 4)")
    parser.add_argument("--readers", type=int, default=2, help="reader processes (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run (default 5)")
    parser.add_argument(
        "--strategies",
        type=strategy_list,
        help=f"comma-separated, from {', '.join(STRATEGIES)}"
        f" (default: all; with --sweep: {','.join(SWEEP_STRATEGIES)})",
    )
    parser.add_argument(
        "--journal",
        choices=("wal", "delete"),
        default="wal",
        help="wal: each strategy's own journal mode (plain keeps the rollback journal); delete: rollback journal"
        " everywhere, as where WAL is unavailable",
    )
    parser.add_argument("--batch", type=int, default=20, help="items per ingestion transaction (default 20)")
    parser.add_argument("--read-pause", type=float, default=0.002, help="seconds between two polls (default 0.002)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the writers' RNGs (default 1)")
    parser.add_argument("--dir", type=Path, help="where the databases are made (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write all numbers to this JSON file")
    parser.add_argument("--sweep", action="store_true", help="run each strategy with each of --sweep-writers")
    parser.add_argument("--sweep-writers", type=int_list, default=[1, 2, 4, 8, 16], help="default 1,2,4,8,16")
    parser.add_argument("--plot", type=Path, help="with --sweep and matplotlib: write PNGs to this directory")
    args = parser.parse_args(argv)
    if args.writers < 1 or args.readers < 0 or args.seconds <= 0:
        parser.error("need --writers >= 1, --readers >= 0 and --seconds > 0")

    names: list[str] = args.strategies or (list(SWEEP_STRATEGIES) if args.sweep else list(STRATEGIES))
    if "apsw" in names and apsw_version() is None:
        print("apsw: skipped (apsw is not importable; pip install apsw)")
        names.remove("apsw")
    info = machine()
    mode = "rollback journal everywhere" if args.journal == "delete" else "WAL (plain: rollback journal)"
    print(
        f"{info['cpus']} CPUs, Python {info['python']}, SQLite {info['sqlite']},"
        f" apsw {info['apsw'] or 'not installed'}; {args.readers} readers, {args.seconds:g} s per run, {mode}"
    )
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="contention-", dir=args.dir) as directory:
        if args.sweep:
            for name in names:
                counts = [1] if STRATEGIES[name].single_writer else args.sweep_writers
                for writers in counts:
                    print(f"  {name}, {writers} writers ...", file=sys.stderr, flush=True)
                    results.append(run_strategy(name, writers, args, directory))
            print()
            print_sweep(results)
        else:
            print(f"{args.writers} writer processes per run (ceiling: 1)")
            for name in names:
                print(f"  {name} ...", file=sys.stderr, flush=True)
                results.append(run_strategy(name, args.writers, args, directory))
            print()
            print_table(results)
    if args.sweep and args.plot:
        for path in plot_sweep(results, args.plot):
            print(f"wrote {path}")
    if args.json:
        report = {
            "machine": info,
            "config": {
                key: str(value) if isinstance(value, Path) else value
                for key, value in vars(args).items()
                if key not in ("strategies",)
            }
            | {"strategies": names},
            "runs": [r.to_json() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
