"""``sqlite-resilient demo``: the same application code, run four ways, side by side.

The application is the one the library exists for, written the way people write it:

- an **ingestion job** (one process) imports files: it stores each file (2.5 MB) and the
  items it parses from it (~15 ms each) in one transaction, so that nobody sees half a
  file, and commits at the end, about 6 s later;
- **enrichment workers** (processes) read the next items not enriched yet, work on them
  (~20 ms), and write the results back: read, then write;
- a **dashboard** (threads of the main process, one per client) shows the latest items and
  the enrichment progress, one request after the other.

Each scenario runs that code for the same time on a fresh database holding a backlog of
items; only the lines that :data:`SCENARIOS` name differ:

1. **plain sqlite3**, the "before": ``sqlite3.connect(path)`` with its defaults (rollback
   journal, 5 s timeout);
2. **hand-rolled WAL**, the usual fix: ``sqlite3.connect(path, timeout=30)`` and
   ``PRAGMA journal_mode=WAL`` / ``synchronous=NORMAL`` on every connection;
3. **sqlite_resilient**: ``import sqlite_resilient as sqlite3``, nothing else changed;
4. **+ db_transaction**: 3, and the enrichment's read-then-write in a
   :func:`sqlite_resilient.retry_on_lock` function around
   :func:`sqlite_resilient.db_transaction`, as the library recommends.

What counts is the work done, measured the same way for all: items ingested and enriched
(committed, counted in the database at the end), items processed twice (every enrichment
increments the item's ``enrich_count``), job runs that failed, and the dashboard's requests
served and failed and the slowest of them. :func:`format_report` prints one table and says
what went wrong in each scenario; :func:`write_plot` draws one panel per column.

Why plain sqlite3 fails here, every run: a file is larger than SQLite's default page cache
(2 MB), so SQLite writes it to the database file before ``COMMIT``; in the rollback journal
that takes the exclusive lock, and every reader waits for it until ``COMMIT``, ~6 s later:
longer than the 5 s default timeout.

Job processes start with the ``spawn`` method (never ``fork``: a SQLite connection must not
cross a fork) and synchronise with the main process through a queue and events only; the
sleeps in the jobs stand for work (parsing, calling a service), never for synchronisation.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import queue
import random
import signal
import sqlite3
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, TextIO, Union

import sqlite_resilient

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

__all__ = [
    "COLUMNS",
    "DASHBOARD_CLIENTS",
    "DEFAULT_SECONDS",
    "DEFAULT_WRITERS",
    "HANDROLLED_WAL",
    "PLAIN",
    "PLOT_EXTRA",
    "RESILIENT",
    "RESILIENT_TRANSACTION",
    "SCENARIOS",
    "Audit",
    "Column",
    "DashboardStats",
    "DemoError",
    "JobStats",
    "PlotUnavailableError",
    "Request",
    "ScenarioResult",
    "audit",
    "check_plotting",
    "create_database",
    "dashboard_request",
    "format_report",
    "run_demo",
    "write_plot",
]

DEFAULT_SECONDS = 7.5
"""How long each scenario runs, in seconds: one file import (~6 s) and the pause after it."""
DEFAULT_WRITERS = 2
"""How many enrichment workers (processes) each scenario starts, beside the ingestion job."""
DASHBOARD_CLIENTS = 3
"""Dashboard clients (threads of the main process), each sending one request after the other."""

PLAIN = "plain sqlite3"
HANDROLLED_WAL = "hand-rolled WAL"
RESILIENT = "sqlite_resilient"
RESILIENT_TRANSACTION = "+ db_transaction"
SCENARIOS = (PLAIN, HANDROLLED_WAL, RESILIENT, RESILIENT_TRANSACTION)
"""The scenarios, in the order they run and are reported."""

PLAIN_TIMEOUT = 5.0
""":func:`sqlite3.connect`'s default timeout, in seconds."""
HANDROLLED_TIMEOUT = 30.0
"""The timeout of the hand-rolled WAL setup."""
_CODE = {
    PLAIN: f"sqlite3.connect(path): the defaults, rollback journal and {PLAIN_TIMEOUT:g} s timeout (the 'before')",
    HANDROLLED_WAL: (
        f"sqlite3.connect(path, timeout={HANDROLLED_TIMEOUT:g}) + PRAGMA journal_mode=WAL, synchronous=NORMAL on "
        "every connection (the usual fix)"
    ),
    RESILIENT: "import sqlite_resilient as sqlite3, nothing else changed",
    RESILIENT_TRANSACTION: (
        f"as {RESILIENT}, and the enrichment's read-then-write in a @retry_on_lock function around "
        "db_transaction (the recommended form)"
    ),
}
"""What each scenario changes in the application, in one line."""
BACKLOG_ITEMS = 3000
"""Items in the database when a scenario starts, none enriched yet: work for the enrichment
from the first second, and a dashboard with something to show."""
FILE_BYTES = 2_500_000
"""Size of one imported file, stored with its items: more than SQLite's default page cache
(``cache_size=-2000``, 2 MB)."""
FILE_ITEMS = 400
"""Items parsed from one file."""
IMPORT_SECONDS = 6.0
"""Parsing time of one file's items in all (the import's transaction lasts as long): longer
than plain sqlite3's 5 s timeout."""
IMPORT_PAUSE = 0.5
"""How long the ingestion job waits for the next file after a commit."""
ENRICH_BATCH = 10
"""Items read and then written per enrichment."""
ENRICH_SECONDS = 0.02
"""Mean work of an enrichment, between its read and its write; exponentially distributed,
with the long tail of calls to a model or a service."""
JOB_PAUSE = 0.005
"""Pause of an enrichment worker between two runs."""
POLL_SECONDS = 0.01
"""Pause of a dashboard client between two requests."""
STARTUP_SECONDS = 15.0
"""How long to wait for job processes and dashboard clients to start, or to finish after
being told to stop."""
SETUP_SECONDS = 0.8
"""About how long a scenario takes beyond its run: a fresh database, job processes started
and stopped, the audit (measured on 2 CPUs)."""
PROGRESS_SECONDS = 0.1
"""How often the progress bar is redrawn."""
WAITING_SECONDS = 0.5
"""The progress bar counts a dashboard request in progress for longer than this as waiting."""
SLOW_REQUEST_MS = 1000.0
"""A dashboard request slower than this froze the page for its user."""
TIMELINE_BIN_SECONDS = 0.25
"""The plot counts the dashboard's requests served per interval of this length."""
PLOT_EXTRA = "pip install 'sqlite_resilient[bench]'"
"""How to install what ``--plot`` needs."""

Connection = Union[sqlite3.Connection, sqlite_resilient.ResilientConnection]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    value REAL NOT NULL,
    enriched INTEGER NOT NULL DEFAULT 0,
    enrich_count INTEGER NOT NULL DEFAULT 0,
    score REAL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (enriched, id);
"""
_BACKLOG = "backlog"
_INSERT_FILE = "INSERT INTO files (name, raw) VALUES (?, ?)"
_INSERT_ITEM = "INSERT INTO items (file, value, payload) VALUES (?, ?, ?)"
_SELECT_UNENRICHED = "SELECT id, value FROM items WHERE enriched = 0 ORDER BY id LIMIT ?"
# No "AND enriched = 0": enrich_count records every time an item was processed.
_UPDATE_ENRICHED = "UPDATE items SET enrich_count = enrich_count + 1, enriched = 1, score = ? WHERE id = ?"
_AUDIT = (
    "SELECT total(file != ?), total(enrich_count > 0), total(enrich_count), total(enrich_count > 1), "
    "(SELECT count(*) FROM files) FROM items"
)
DASHBOARD_PANELS = (
    "SELECT id, file, value, score FROM items ORDER BY id DESC LIMIT 20",
    "SELECT enriched, count(*) FROM items GROUP BY enriched",
)
"""The dashboard's panels, one query each: the latest items and the enrichment progress."""

_READY = "ready"
_DONE = "done"
_INGESTION = "ingestion"
_ENRICHMENT = "enrichment"


class DemoError(RuntimeError):
    """The demo could not run (e.g. its job processes did not start)."""


class PlotUnavailableError(DemoError):
    """A plot was asked for, but matplotlib cannot be imported."""


class _Stopped(Exception):
    """The scenario ended in the middle of a file import (which is then rolled back)."""


# -- the application: the same code in every scenario ----------------------------------------


def connect_plain(path: str) -> Connection:
    """Scenario 1: :func:`sqlite3.connect` with its defaults."""
    return sqlite3.connect(path)


def connect_handrolled_wal(path: str) -> Connection:
    """Scenario 2: the usual hand-rolled fix, WAL and a longer timeout, still plain sqlite3."""
    conn = sqlite3.connect(path, timeout=HANDROLLED_TIMEOUT)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def connect_resilient(path: str) -> Connection:
    """Scenarios 3 and 4: ``sqlite3.connect(path)`` after ``import sqlite_resilient as sqlite3``."""
    return sqlite_resilient.connect(path)


_CONNECT: dict[str, Callable[[str], Connection]] = {
    PLAIN: connect_plain,
    HANDROLLED_WAL: connect_handrolled_wal,
    RESILIENT: connect_resilient,
    RESILIENT_TRANSACTION: connect_resilient,
}


def import_file(conn: Connection, name: str, raw: bytes, records: Iterator[tuple[str, float, str]]) -> int:
    """The ingestion job: store the file and the items parsed from it in one transaction
    (Python's implicit one, from the first ``INSERT``), commit, and return how many items."""
    conn.execute(_INSERT_FILE, (name, raw))
    count = 0
    for record in records:  # parsing each record takes a while
        conn.execute(_INSERT_ITEM, record)
        count += 1
    conn.commit()
    return count


def enrich_next(conn: Connection, work_seconds: float) -> int:
    """The enrichment: read the next items not enriched yet, work on them, write the results
    back; return how many items. It does not commit."""
    rows = conn.execute(_SELECT_UNENRICHED, (ENRICH_BATCH,)).fetchall()
    if rows:
        time.sleep(work_seconds)  # the enrichment's work: a model, a service
    for item_id, value in rows:
        conn.execute(_UPDATE_ENRICHED, (math.sqrt(value), item_id))
    return len(rows)


def enrich_as_written(conn: Connection, work_seconds: float) -> int:
    """Scenarios 1-3: :func:`enrich_next`, then ``commit()``. Python begins the transaction at
    the first ``UPDATE``: the ``SELECT`` runs before it, so two workers can take the same items."""
    count = enrich_next(conn, work_seconds)
    conn.commit()
    return count


@sqlite_resilient.retry_on_lock
def enrich_in_transaction(conn: Connection, work_seconds: float) -> int:
    """Scenario 4: :func:`enrich_next` in ``db_transaction`` (``BEGIN IMMEDIATE``: the
    ``SELECT`` is in the transaction), the whole of it re-run on a lock error."""
    with sqlite_resilient.db_transaction(conn):
        return enrich_next(conn, work_seconds)


_ENRICH: dict[str, Callable[[Connection, float], int]] = {
    PLAIN: enrich_as_written,
    HANDROLLED_WAL: enrich_as_written,
    RESILIENT: enrich_as_written,
    RESILIENT_TRANSACTION: enrich_in_transaction,
}


def dashboard_request(conn: Connection) -> int:
    """One dashboard request: every panel's query; return how many rows it shows."""
    return sum(len(conn.execute(sql).fetchall()) for sql in DASHBOARD_PANELS)


# -- results ---------------------------------------------------------------------------------


@dataclass
class JobStats:
    """What job processes of one kind did; each sends its own back through the queue.

    Attributes:
        runs: File imports or enrichments committed.
        failed: File imports and enrichments that failed with an error, and jobs that stopped
            on one.
        errors: Errors by :func:`error_key`.
        lock_waits: sqlite_resilient: operations that waited for a lock (``lock_stats.waits``).
        longest_wait_ms: sqlite_resilient: the longest of those waits.
        retries: sqlite_resilient: attempts made again after a lock error.
        surfaced: sqlite_resilient: lock errors that reached the job's code.
    """

    runs: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock_waits: int = 0
    longest_wait_ms: float = 0.0
    retries: int = 0
    surfaced: int = 0

    def add(self, other: JobStats) -> None:
        """Add the counts of *other* to these (the longest wait is the longer of the two)."""
        self.runs += other.runs
        self.failed += other.failed
        self.errors.update(other.errors)
        self.lock_waits += other.lock_waits
        self.longest_wait_ms = max(self.longest_wait_ms, other.longest_wait_ms)
        self.retries += other.retries
        self.surfaced += other.surfaced


class Request(NamedTuple):
    """One dashboard request: when it started (seconds into the scenario), how long it took,
    and its error (:func:`error_key`), ``None`` if it was served."""

    at: float
    latency_ms: float
    error: str | None = None


@dataclass
class DashboardStats:
    """What the dashboard's clients saw: every request, failed ones included."""

    requests: list[Request] = field(default_factory=list)
    in_flight: dict[int, float] = field(default_factory=dict)
    """When each client's request in progress was sent (``time.perf_counter()``), by client."""

    @property
    def served(self) -> int:
        """Requests answered."""
        return sum(request.error is None for request in self.requests)

    @property
    def failed(self) -> int:
        """Requests that failed: the user saw an error or an empty page."""
        return sum(request.error is not None for request in self.requests)

    @property
    def slowest_ms(self) -> float:
        """How long the slowest request took, failed ones included."""
        return max((request.latency_ms for request in self.requests), default=0.0)

    @property
    def errors(self) -> Counter[str]:
        """The failed requests' errors."""
        return Counter(request.error for request in self.requests if request.error is not None)


@dataclass(frozen=True)
class Audit:
    """What the database holds at the end of a scenario, counted by one query."""

    ingested: int = 0
    """Items committed by the ingestion job."""
    enriched: int = 0
    """Items enriched at least once."""
    enrichments: int = 0
    """Enrichments in all (``enrich_count`` summed)."""
    processed_twice: int = 0
    """Items enriched more than once (``enrich_count > 1``)."""
    files: int = 0
    """Files committed by the ingestion job."""


@dataclass
class ScenarioResult:
    """The outcome of one scenario."""

    name: str
    dashboard: DashboardStats = field(default_factory=DashboardStats)
    ingestion: JobStats = field(default_factory=JobStats)
    enrichment: JobStats = field(default_factory=JobStats)
    audit: Audit = field(default_factory=Audit)

    @property
    def jobs_failed(self) -> int:
        """Job runs (file imports, enrichments) that failed."""
        return self.ingestion.failed + self.enrichment.failed


@dataclass(frozen=True)
class _Job:
    """Everything a job process needs; pickled to the child by ``spawn``."""

    scenario: str
    kind: str
    path: str
    index: int
    messages: Queue[tuple[str, int, JobStats | None]]
    start: Event
    stop: Event


def error_key(exc: BaseException) -> str:
    """A short name for an error, the same for errors that differ only in their numbers.

    ``DatabaseLockedError("database is locked: execute gave up after 3 attempts ...")``
    becomes ``"DatabaseLockedError: database is locked"``.
    """
    return f"{type(exc).__name__}: {str(exc).split(':', 1)[0]}"


# -- the database ----------------------------------------------------------------------------


def _payload(rng: random.Random) -> str:
    return "x" * rng.randint(80, 240)


def create_database(scenario: str, path: str) -> None:
    """Create the tables with ``BACKLOG_ITEMS`` items not enriched yet, through *scenario*'s
    connection (so the hand-rolled and library scenarios switch the file to WAL)."""
    rng = random.Random(0)
    conn = _CONNECT[scenario](path)
    try:
        conn.executescript(_SCHEMA)
        conn.executemany(_INSERT_ITEM, [(_BACKLOG, rng.random() * 100, _payload(rng)) for _ in range(BACKLOG_ITEMS)])
        conn.commit()
    finally:
        conn.close()


def audit(path: str) -> Audit:
    """Count what the database at *path* holds (run when no job is left): items ingested,
    enriched, enrichments, items enriched more than once, files."""
    conn = sqlite3.connect(path)
    try:
        ingested, enriched, enrichments, twice, files = conn.execute(_AUDIT, (_BACKLOG,)).fetchone()
    finally:
        conn.close()
    return Audit(int(ingested), int(enriched), int(enrichments), int(twice), int(files))


# -- the job processes -----------------------------------------------------------------------


def _failed(conn: Connection, stats: JobStats, exc: sqlite3.Error) -> None:
    """Count a failed run and roll back what it opened, as a background job does (log it and
    go on); a failing rollback is counted, never raised."""
    stats.failed += 1
    stats.errors[error_key(exc)] += 1
    try:
        conn.rollback()
    except sqlite3.Error as rollback_error:
        stats.errors[f"rollback {error_key(rollback_error)}"] += 1


def _parse(name: str, rng: random.Random, stop: Event) -> Iterator[tuple[str, float, str]]:
    """The records of file *name*, each after its parsing time; :class:`_Stopped` once the
    scenario is over."""
    for _ in range(FILE_ITEMS):
        if stop.is_set():
            raise _Stopped
        time.sleep(IMPORT_SECONDS / FILE_ITEMS)  # parsing one record
        yield (name, rng.random() * 100, _payload(rng))


def _ingestion_loop(conn: Connection, job: _Job, stats: JobStats) -> None:
    """Import files until ``job.stop`` is set; the file being imported then is rolled back."""
    rng = random.Random(job.index)
    number = 0
    while not job.stop.is_set():
        number += 1
        name, raw = f"file-{number}", rng.randbytes(FILE_BYTES)
        try:
            import_file(conn, name, raw, _parse(name, rng, job.stop))
        except _Stopped:
            conn.rollback()
            return
        except sqlite3.Error as exc:
            _failed(conn, stats, exc)
        else:
            stats.runs += 1
        job.stop.wait(IMPORT_PAUSE)  # waiting for the next file


def _enrichment_loop(conn: Connection, job: _Job, stats: JobStats) -> None:
    """Enrich items until ``job.stop`` is set."""
    rng = random.Random(1000 + job.index)
    enrich = _ENRICH[job.scenario]
    while not job.stop.is_set():
        try:
            count = enrich(conn, rng.expovariate(1 / ENRICH_SECONDS))
        except sqlite3.Error as exc:
            _failed(conn, stats, exc)
        else:
            stats.runs += count > 0
        job.stop.wait(JOB_PAUSE)


def job_main(job: _Job) -> None:
    """Entry point of a job process: connect, report ready, work until told to stop.

    Never raises: whatever happens, its :class:`JobStats` go back through the queue, an
    unexpected error counted in them. Ctrl-C is left to the main process, which stops the
    jobs through ``job.stop``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stats = JobStats()
    conn: Connection | None = None
    try:
        conn = _CONNECT[job.scenario](job.path)
        job.messages.put((_READY, job.index, None))
        job.start.wait()
        if job.kind == _INGESTION:
            _ingestion_loop(conn, job, stats)
        else:
            _enrichment_loop(conn, job, stats)
    except Exception as exc:  # a demo job reports its errors, never crashes
        stats.failed += 1
        stats.errors[f"job stopped: {error_key(exc)}"] += 1
    finally:
        if isinstance(conn, sqlite_resilient.ResilientConnection):
            lock_stats = conn.lock_stats
            stats.lock_waits, stats.retries, stats.surfaced = lock_stats.waits, lock_stats.retries, lock_stats.surfaced
            stats.longest_wait_ms = lock_stats.longest_wait * 1000
        if conn is not None:
            conn.close()
        job.messages.put((_DONE, job.index, stats))


# -- the dashboard: threads of the main process ----------------------------------------------


class _Dashboard:
    """The dashboard's clients (threads) for one scenario, and what they saw."""

    def __init__(self, path: str, connect: Callable[[str], Connection]) -> None:
        self.path = path
        self.connect = connect
        self.stats = DashboardStats()
        self.ready = threading.Barrier(DASHBOARD_CLIENTS + 1, timeout=STARTUP_SECONDS)
        self.go = threading.Event()
        self.halt = threading.Event()
        self.started = 0.0
        """When the scenario started (``time.perf_counter()``), set before :attr:`go`."""
        self.failures: list[str] = []
        """Errors of clients that could not connect."""

    def client(self, index: int) -> None:
        """One client: connect, wait for the start, send requests until :attr:`halt`. An
        error in connecting is put in :attr:`failures` and breaks :attr:`ready`."""
        try:
            conn = self.connect(self.path)
        except Exception as exc:  # reported by the main thread
            self.failures.append(error_key(exc))
            self.ready.abort()
            return
        try:
            try:
                self.ready.wait()
            except threading.BrokenBarrierError:
                return
            self.go.wait()
            while not self.halt.is_set():
                sent = self.stats.in_flight[index] = time.perf_counter()
                error = None
                try:
                    dashboard_request(conn)
                except sqlite3.Error as exc:  # the page shows an error, or nothing
                    error = error_key(exc)
                del self.stats.in_flight[index]
                latency_ms = (time.perf_counter() - sent) * 1000
                self.stats.requests.append(Request(sent - self.started, latency_ms, error))
                self.halt.wait(POLL_SECONDS)
        finally:
            conn.close()

    def run(self, seconds: float, jobs: tuple[Callable[[], None], Callable[[], None]], progress: Progress) -> None:
        """Start the clients, then the jobs (``jobs[0]()``), let them run for *seconds*, and
        stop both at once (``jobs[1]()``): a client waiting for a job's lock is released
        when the job stops.

        Raises:
            DemoError: a client could not connect.
        """
        start_jobs, stop_jobs = jobs
        clients = [
            threading.Thread(target=self.client, args=(index,), name=f"demo-dashboard-{index}", daemon=True)
            for index in range(DASHBOARD_CLIENTS)
        ]
        try:
            for client in clients:
                client.start()
            try:
                self.ready.wait()
            except threading.BrokenBarrierError:
                reason = self.failures[0] if self.failures else f"not within {STARTUP_SECONDS:g} s"
                raise DemoError(f"the dashboard's clients could not connect: {reason}") from None
            self.started = time.perf_counter()
            start_jobs()
            self.go.set()
            while (elapsed := time.perf_counter() - self.started) < seconds:
                progress.update(elapsed, self.stats)
                time.sleep(min(PROGRESS_SECONDS, seconds - elapsed))  # the scenario's length, not a synchronisation
        finally:
            stop_jobs()
            self.halt.set()
            self.go.set()
            for client in clients:
                client.join(STARTUP_SECONDS)


# -- the main process ------------------------------------------------------------------------


class Progress:
    """A one-line progress bar per scenario on a terminal; elsewhere a line at each start and end."""

    WIDTH = 24

    def __init__(self, stream: TextIO, scenarios: int) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._scenarios = scenarios
        self._label = ""
        self._total = 0.0
        self._drawn = -math.inf

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def announce(self, seconds: float, writers: int) -> None:
        """Say what is about to run and for how long."""
        workers = f"{writers} enrichment worker{'s' if writers != 1 else ''}"
        total = self._scenarios * (seconds + SETUP_SECONDS)
        self._write(
            f"demo: the same app code (1 ingestion job, {workers}, {DASHBOARD_CLIENTS} dashboard clients) "
            f"run {self._scenarios} ways, {seconds:g} s each: about {total:.0f} s\n"
        )

    def begin(self, number: int, label: str, seconds: float) -> None:
        """Announce scenario *number* (from 1), *label*, of *seconds*."""
        self._label, self._total, self._drawn = f"[{number}/{self._scenarios}] {label}", seconds, -math.inf
        if self._tty:
            self.update(0.0, DashboardStats())
        else:
            self._write(f"demo: {self._label}: running for {seconds:g} s\n")

    def update(self, elapsed: float, dashboard: DashboardStats, *, force: bool = False) -> None:
        """Redraw the bar for *elapsed* seconds (at most every ``PROGRESS_SECONDS``)."""
        if not self._tty or (not force and elapsed - self._drawn < PROGRESS_SECONDS):
            return
        self._drawn = elapsed
        done = min(elapsed / self._total, 1.0) if self._total > 0 else 1.0
        filled = round(done * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        requests = list(dashboard.requests)  # the clients append meanwhile
        failed = sum(request.error is not None for request in requests)
        now = time.perf_counter()
        waiting = sum(now - sent > WAITING_SECONDS for sent in list(dashboard.in_flight.values()))
        counts = f"dashboard: {len(requests) - failed} served, {failed} failed, {waiting} waiting"
        self._write(f"\r{self._label:<26} [{bar}] {min(elapsed, self._total):4.1f}/{self._total:g} s  {counts}\x1b[K")

    def end(self, dashboard: DashboardStats) -> None:
        """Finish the scenario's line."""
        if self._tty:
            self.update(self._total, dashboard, force=True)
            self._write("\n")
        else:
            self._write(f"demo: {self._label}: done, dashboard: {dashboard.served} served, {dashboard.failed} failed\n")


def _receive(
    messages: Queue[tuple[str, int, JobStats | None]],
    processes: Sequence[SpawnProcess],
    kind: str,
    done: dict[int, JobStats],
) -> None:
    """Wait until every job has sent *kind* (a finished job counts as ready), recording the
    stats of finished ones in *done*.

    Raises:
        DemoError: a job exited without sending *kind*, or ``STARTUP_SECONDS`` passed.
    """
    seen: set[int] = set(done)
    deadline = time.monotonic() + STARTUP_SECONDS
    exited: set[int] = set()
    while len(seen) < len(processes):
        try:
            message, index, stats = messages.get(timeout=PROGRESS_SECONDS)
        except queue.Empty:
            # A job found dead at two checks in a row had nothing left in the queue.
            exited = _check_jobs(processes, seen, exited, "start" if kind == _READY else "stop", deadline)
            continue
        if message == _DONE and stats is not None:
            done[index] = stats
        if message in (kind, _DONE):
            seen.add(index)


def _check_jobs(
    processes: Sequence[SpawnProcess], seen: set[int], exited: set[int], what: str, deadline: float
) -> set[int]:
    """Raise :class:`DemoError` if jobs not *seen* were already found exited, or time is up;
    return the jobs not seen that have exited now."""
    dead = sorted(exited - seen)
    if dead:
        raise DemoError(
            f"job process {dead[0]} exited with status {processes[dead[0]].exitcode} before it could {what}"
        )
    missing = len(processes) - len(seen)
    if time.monotonic() > deadline:
        raise DemoError(f"{missing} job process(es) did not {what} within {STARTUP_SECONDS:g} s")
    return {index for index, process in enumerate(processes) if index not in seen and process.exitcode is not None}


def _stop(processes: Sequence[SpawnProcess], start: Event, stop: Event) -> None:
    """Tell jobs to stop and wait for them; terminate any that do not exit."""
    stop.set()
    start.set()
    for process in processes:
        if process.pid is None:  # never started
            continue
        process.join(STARTUP_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join()


def run_scenario(scenario: str, seconds: float, writers: int, directory: str, progress: Progress) -> ScenarioResult:
    """Run *scenario* on a fresh database in *directory*: the ingestion job and *writers*
    enrichment workers (processes) and the dashboard's clients (threads), for *seconds*;
    then audit the database."""
    path = os.path.join(directory, "items.db")
    create_database(scenario, path)
    context = multiprocessing.get_context("spawn")
    messages: Queue[tuple[str, int, JobStats | None]] = context.Queue()
    start, stop = context.Event(), context.Event()
    kinds = [_INGESTION] + [_ENRICHMENT] * writers
    processes = [
        context.Process(
            target=job_main,
            args=(_Job(scenario, kind, path, index, messages, start, stop),),
            name=f"demo-{kind}-{index}",
            daemon=True,
        )
        for index, kind in enumerate(kinds)
    ]
    done: dict[int, JobStats] = {}
    try:
        for process in processes:
            process.start()
        _receive(messages, processes, _READY, done)
        dashboard = _Dashboard(path, _CONNECT[scenario])
        dashboard.run(seconds, (start.set, stop.set), progress)
        _receive(messages, processes, _DONE, done)
    finally:
        _stop(processes, start, stop)
    result = ScenarioResult(scenario, dashboard.stats, audit=audit(path))
    for index, stats in done.items():
        (result.ingestion if kinds[index] == _INGESTION else result.enrichment).add(stats)
    return result


# -- the report ------------------------------------------------------------------------------


class Column(NamedTuple):
    """A column of the table, and a panel of the plot."""

    group: str
    label: tuple[str, str]
    better: str
    """Which way is better: ``"more"``, ``"fewer"`` or ``"lower"``."""
    value: Callable[[ScenarioResult], float]
    fmt: str = "{:.0f}"


COLUMNS: tuple[Column, ...] = (
    Column("jobs", ("items", "ingested"), "more", lambda r: r.audit.ingested),
    Column("jobs", ("items", "enriched"), "more", lambda r: r.audit.enriched),
    Column("jobs", ("processed", "twice"), "fewer", lambda r: r.audit.processed_twice),
    Column("jobs", ("runs", "failed"), "fewer", lambda r: r.jobs_failed),
    Column("dashboard", ("requests", "served"), "more", lambda r: r.dashboard.served),
    Column("dashboard", ("requests", "failed"), "fewer", lambda r: r.dashboard.failed),
    Column("dashboard", ("slowest", "ms"), "lower", lambda r: r.dashboard.slowest_ms),
)
"""The table's columns after the scenario name, in order; the plot's panels."""
_GAP = "  "


def _group_titles(writers: int) -> dict[str, str]:
    workers = f"{writers} enrichment worker{'s' if writers != 1 else ''}"
    return {"jobs": f"jobs: 1 ingestion, {workers}", "dashboard": f"dashboard: {DASHBOARD_CLIENTS} clients"}


def _groups() -> list[tuple[str, int, int]]:
    """The column groups as (group, first, last) indexes into a row (the name is index 0)."""
    groups: list[tuple[str, int, int]] = []
    for index, column in enumerate(COLUMNS, start=1):
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1], index)
        else:
            groups.append((column.group, index, index))
    return groups


def _cell(column: Column, result: ScenarioResult) -> str:
    return column.fmt.format(column.value(result))


def format_table(results: Sequence[ScenarioResult], writers: int = DEFAULT_WRITERS) -> str:
    """The comparison table: one row per scenario under a header of group titles, column
    labels and which way is better; numbers right-aligned."""
    titles = _group_titles(writers)
    header = [
        ["", *(column.label[0] for column in COLUMNS)],
        ["scenario", *(column.label[1] for column in COLUMNS)],
        ["better if", *(column.better for column in COLUMNS)],
    ]
    rows = [
        [f"{number} {result.name}", *(_cell(c, result) for c in COLUMNS)] for number, result in enumerate(results, 1)
    ]
    widths = [max(len(row[i]) for row in (*header, *rows)) for i in range(len(COLUMNS) + 1)]

    def span(first: int, last: int) -> int:
        return sum(widths[first : last + 1]) + len(_GAP) * (last - first)

    for group, first, last in _groups():  # widen a group's columns evenly to fit its title
        for extra in range(len(titles[group]) - span(first, last)):
            widths[first + extra % (last - first + 1)] += 1

    def line(cells: Sequence[str]) -> str:
        name, *numbers = cells
        return _GAP.join([name.ljust(widths[0]), *(c.rjust(w) for c, w in zip(numbers, widths[1:]))]).rstrip()

    group_line = _GAP.join([" " * widths[0], *(titles[group].center(span(*ends)) for group, *ends in _groups())])
    rule = _GAP.join("-" * width for width in widths)
    return "\n".join([group_line.rstrip(), *(line(cells) for cells in header), rule, *(line(row) for row in rows)])


def _errors_text(counter: Counter[str]) -> str:
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in counter.most_common())


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


_WHY = {
    "a": (
        f"A file ({FILE_BYTES / 1e6:g} MB) is larger than SQLite's default page cache (2 MB), so SQLite writes it to "
        "the database file before COMMIT; in the rollback journal that takes the exclusive lock, and every reader "
        f"(and every other writer) waits for the COMMIT, ~{IMPORT_SECONDS:g} s later: longer than the "
        f"{PLAIN_TIMEOUT:g} s timeout. In WAL, readers read the last commit meanwhile, and writers wait within "
        "their longer timeout."
    ),
    "b": (
        "Python begins the transaction at the enrichment's first UPDATE, not at its SELECT: two workers read the "
        "same items before either writes them. db_transaction (BEGIN IMMEDIATE) begins it before the SELECT: the "
        "second worker waits for the first, then reads what is left."
    ),
}
"""Why things went wrong, referred to as [a] and [b] by the verdicts."""


def _verdict(result: ScenarioResult, results: Sequence[ScenarioResult]) -> tuple[str, set[str]]:
    """What went wrong in *result*, with the numbers, in one sentence; and the keys of
    :data:`_WHY` it refers to."""
    dashboard, problems, why = result.dashboard, [], set()
    locked_out = " [a]" if result.name == PLAIN else ""
    if dashboard.failed:
        problems.append(
            f"the dashboard failed {_times(dashboard.failed)} ({_errors_text(dashboard.errors)}, after waiting up "
            f"to {dashboard.slowest_ms / 1000:.1f} s){locked_out}"
        )
    elif dashboard.slowest_ms >= SLOW_REQUEST_MS:
        problems.append(f"the dashboard froze for up to {dashboard.slowest_ms / 1000:.1f} s{locked_out}")
    if result.jobs_failed:
        errors = _errors_text(result.ingestion.errors + result.enrichment.errors)
        problems.append(f"{result.jobs_failed} job runs failed ({errors}){locked_out}")
    if locked_out and problems:
        why.add("a")
    if result.audit.processed_twice:
        problems.append(f"{result.audit.processed_twice} items were processed twice [b]")
        why.add("b")
    text = "; ".join(problems) if problems else "nothing failed, and no item was processed twice"
    others = [other.audit.enriched for other in results if other is not result]
    if not result.audit.processed_twice and others and result.audit.enriched < max(others):
        text += (
            f"; fewer items enriched than the best ({max(others)}): a worker keeps the write lock during its work, "
            "which is what keeps the other from taking the same items"
        )
    if result.name in (RESILIENT, RESILIENT_TRANSACTION):
        jobs = JobStats()
        jobs.add(result.ingestion)
        jobs.add(result.enrichment)
        text += (
            f"; lock errors that reached the app: {jobs.surfaced} (lock_stats: {jobs.lock_waits} waits, the longest "
            f"{jobs.longest_wait_ms / 1000:.1f} s, behind a file import; {jobs.retries} retries)"
        )
    return f"{text}.", why


def format_report(results: Sequence[ScenarioResult], seconds: float, writers: int) -> str:
    """The table; for each scenario, what it changes in the code and what went wrong; why;
    and how it was measured."""
    lines = [format_table(results, writers), ""]
    why: set[str] = set()
    width = max(len(f"{number} {result.name}") for number, result in enumerate(results, 1))
    for number, result in enumerate(results, 1):
        verdict, reasons = _verdict(result, results)
        why |= reasons
        name = f"{number} {result.name}"
        code = textwrap.fill(_CODE.get(result.name, ""), width=100 - width - 2, subsequent_indent=" " * (width + 2))
        lines.append(f"{name.ljust(width)}  {code}")
        lines.append(textwrap.fill(verdict, width=100, initial_indent="  -> ", subsequent_indent="     "))
    if why:
        lines.append("")
        lines.extend(textwrap.fill(f"[{key}] {_WHY[key]}", width=100, subsequent_indent="    ") for key in sorted(why))
    workers = f"{writers} enrichment worker{'s' if writers != 1 else ''}"
    notes = (
        f"How: the same app code in every scenario, {seconds:g} s each, on a fresh database with {BACKLOG_ITEMS} "
        f"items to enrich. An ingestion job imports files ({FILE_BYTES / 1e6:g} MB and {FILE_ITEMS} items each, "
        f"~{IMPORT_SECONDS:g} s of parsing, one transaction per file); {workers} read {ENRICH_BATCH} items, work "
        f"~{ENRICH_SECONDS * 1000:g} ms and write them back; {DASHBOARD_CLIENTS} dashboard clients request the "
        f"latest items and the progress, one request after the other, {POLL_SECONDS * 1000:g} ms apart.",
        "Items ingested and enriched: committed, counted in the database at the end. Processed twice: items whose "
        "enrich_count, incremented by every enrichment, is above 1. Runs failed: file imports and enrichments "
        "that raised an error (the job logs it and goes on). Requests failed: the user sees an error or an empty "
        "page; slowest: failed requests included.",
    )
    lines.append("")
    lines.extend(textwrap.fill(note, width=100) for note in notes)
    return "\n".join(lines) + "\n"


# -- the plot --------------------------------------------------------------------------------


def check_plotting() -> None:
    """Import what :func:`write_plot` needs (matplotlib's Agg canvas).

    Raises:
        PlotUnavailableError: matplotlib cannot be imported; the message says how to install it.
    """
    try:
        importlib.import_module("matplotlib.figure")
        importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError as exc:
        raise PlotUnavailableError(f"--plot needs matplotlib, which cannot be imported ({exc}): {PLOT_EXTRA}") from exc


_COLOURS = {
    PLAIN: "tab:red",
    HANDROLLED_WAL: "tab:orange",
    RESILIENT: "tab:cyan",
    RESILIENT_TRANSACTION: "tab:blue",
}


def _panel(axes: Any, results: Sequence[ScenarioResult], column: Column) -> None:
    """One column of the table as horizontal bars on its own scale, every bar labelled with
    its value (so a 0, 1 or 2 shows beside a 900), the direction in the title."""
    names = [f"{number} {result.name}" for number, result in enumerate(results, 1)]
    values = [column.value(result) for result in results]
    positions = list(range(len(results)))
    bars = axes.barh(positions, values, color=[_COLOURS.get(result.name, "tab:gray") for result in results])
    axes.bar_label(bars, labels=[column.fmt.format(value) for value in values], fontsize=9, padding=3)
    axes.set_yticks(positions)
    axes.set_yticklabels(names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, max([*values, 1]) * 1.3)
    axes.tick_params(axis="x", labelsize=7)
    axes.set_title(f"{' '.join(column.label)} ({column.better} is better)", fontsize=10)


def _timeline(axes: Any, results: Sequence[ScenarioResult]) -> None:
    """The dashboard's requests served per second over time, one line per scenario (a stall
    shows as a drop to 0), failed requests marked where they ended."""
    ends = [[r.at + r.latency_ms / 1000 for r in result.dashboard.requests] for result in results]
    last = max((max(times, default=0.0) for times in ends), default=0.0)
    bins = max(math.ceil(last / TIMELINE_BIN_SECONDS), 1)
    edges = [index * TIMELINE_BIN_SECONDS for index in range(bins + 1)]
    for number, (result, times) in enumerate(zip(results, ends), 1):
        colour = _COLOURS.get(result.name, "tab:gray")
        served = [0] * bins
        for request, end in zip(result.dashboard.requests, times):
            if request.error is None:
                served[min(int(end / TIMELINE_BIN_SECONDS), bins - 1)] += 1
        rates = [count / TIMELINE_BIN_SECONDS for count in served]
        axes.step(edges, [*rates, rates[-1]], where="post", color=colour, label=f"{number} {result.name}")
        failed = [end for request, end in zip(result.dashboard.requests, times) if request.error is not None]
        if failed:
            axes.plot(failed, [0] * len(failed), "x", ms=10, mew=2, color=colour, clip_on=False)
    if any(result.dashboard.failed for result in results):
        axes.plot([], [], "x", ms=10, mew=2, color="black", label="failed request")
    axes.set(xlabel="seconds into the scenario", ylabel="requests served per second")
    axes.set_ylim(bottom=0)
    axes.set_title("dashboard over time (more is better)", fontsize=10)
    axes.legend(fontsize=7, loc="center right")


def write_plot(results: Sequence[ScenarioResult], path: str) -> None:
    """Write a PNG comparing the scenarios to *path*: the dashboard's requests served per
    second over time (failed requests marked), and one panel per column of the table, each on
    its own scale with its bars labelled.

    Raises:
        PlotUnavailableError: matplotlib cannot be imported.
        OSError: the file cannot be written.
    """
    check_plotting()
    figure_module: Any = importlib.import_module("matplotlib.figure")
    agg: Any = importlib.import_module("matplotlib.backends.backend_agg")
    figure = figure_module.Figure(figsize=(16, 7.5), layout="constrained")
    agg.FigureCanvasAgg(figure)
    axes = figure.subplots(2, 4).flatten()
    _timeline(axes[0], results)
    for panel, column in zip(axes[1:], COLUMNS):
        _panel(panel, results, column)
    for unused in axes[1 + len(COLUMNS) :]:
        unused.set_axis_off()
    figure.suptitle(f"sqlite-resilient demo: the same app code, run {len(results)} ways")
    figure.savefig(path, format="png", dpi=100)


def run_demo(
    seconds: float = DEFAULT_SECONDS,
    writers: int = DEFAULT_WRITERS,
    directory: str | None = None,
    *,
    plot: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[ScenarioResult]:
    """Run every scenario, each on a fresh database in a temporary directory, print the
    report and, if asked, write the plot.

    Args:
        seconds: How long each scenario runs.
        writers: How many enrichment workers each scenario starts.
        directory: Where the temporary directory is made; default the system's.
        plot: Where to write a PNG comparing the scenarios (see :func:`write_plot`).
        out: Where the report goes; default ``sys.stdout``.
        err: Where progress goes; default ``sys.stderr``.

    Returns:
        The result of each scenario, in the order of :data:`SCENARIOS`.

    Raises:
        PlotUnavailableError: *plot* is given but matplotlib cannot be imported (raised
            before any scenario runs).
        DemoError: job processes did not start or stop in time, or the plot could not
            be written.
    """
    if plot is not None:
        check_plotting()
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    progress = Progress(err, len(SCENARIOS))
    progress.announce(seconds, writers)
    results = []
    with tempfile.TemporaryDirectory(prefix="sqlite-resilient-demo-", dir=directory) as tmp:
        for number, scenario in enumerate(SCENARIOS, 1):
            scenario_dir = os.path.join(tmp, str(number))
            os.mkdir(scenario_dir)
            progress.begin(number, scenario, seconds)
            results.append(run_scenario(scenario, seconds, writers, scenario_dir, progress))
            progress.end(results[-1].dashboard)
    out.write(format_report(results, seconds, writers))
    out.flush()
    if plot is not None:
        try:
            write_plot(results, plot)
        except OSError as exc:
            raise DemoError(f"cannot write the plot to {plot!r}: {exc.strerror or exc}") from exc
        err.write(f"demo: plot written to {plot}\n")
        err.flush()
    return results
