"""``sqlite-resilient demo``: the motivating scenario, plain :mod:`sqlite3` and this library side by side.

Background writer *processes* ingest rows (batches of inserts) and enrich them (read rows
not enriched yet, compute, update them) while a dashboard in the main process polls the same
database file. The scenario runs twice, each time on a fresh database that starts with a
backlog of rows:

1. **plain sqlite3**: :func:`sqlite3.connect` defaults (rollback journal, Python's implicit
   deferred transactions) with ``timeout=0.1`` for writers and dashboard, as a web request
   would use. Enrichment is written the way typical code is: ``SELECT`` the rows, compute,
   ``UPDATE`` them (the implicit transaction begins at the first ``UPDATE``) and
   ``commit()``, so two writers can pick and process the same rows;
2. **sqlite_resilient**: :func:`sqlite_resilient.connect` with its defaults for the writers
   (WAL, a 30 s lock-wait budget: a background job can afford to wait), each batch in
   :func:`sqlite_resilient.db_transaction` inside a function decorated with
   :func:`sqlite_resilient.retry_on_lock`, so the ``SELECT`` and the ``UPDATE`` are one
   transaction and lock errors re-run it; ``read_only=True`` with the same 0.1 s budget as
   plain for the dashboard.

Every enrichment increments the row's ``enrich_count``; an audit query at the end of each
scenario counts the rows processed more than once. One table then compares the dashboard's
failed reads, empty dashboards and latency, rows processed twice, and the writers' longest
wait, committed and failed transactions; :func:`write_plot` draws the same comparison.

Writer processes start with the ``spawn`` method (never ``fork``: a SQLite connection must
not cross a fork) and synchronise with the main process through a queue and events only;
the short sleeps in the loops stand for work, never for synchronisation.
"""

from __future__ import annotations

import functools
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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, TextIO, Union

import sqlite_resilient

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

__all__ = [
    "DASHBOARD_PANELS",
    "DEFAULT_SECONDS",
    "DEFAULT_WRITERS",
    "PLAIN",
    "PLOT_EXTRA",
    "RESILIENT",
    "SCENARIOS",
    "SEED_ROWS",
    "Audit",
    "DemoError",
    "PlotUnavailableError",
    "Poll",
    "ReaderStats",
    "ScenarioResult",
    "WriterStats",
    "audit",
    "check_plotting",
    "create_database",
    "format_report",
    "poll_dashboard",
    "run_demo",
    "write_plot",
]

DEFAULT_SECONDS = 3.0
"""How long each scenario runs, in seconds."""
DEFAULT_WRITERS = 4
"""How many writer processes each scenario starts."""

PLAIN = "plain sqlite3"
RESILIENT = "sqlite_resilient"
SCENARIOS = (PLAIN, RESILIENT)
"""The scenarios, in the order they run and are reported."""

REQUEST_TIMEOUT = 0.1
"""Lock-wait budget in seconds of a dashboard read (both scenarios) and of a plain writer."""
SEED_ROWS = 50
"""Rows in the database when a scenario starts: a backlog to enrich, and a dashboard that
has something to show from its first poll."""
INSERT_BATCH = 50
"""Rows per ingestion transaction."""
ENRICH_BATCH = 10
"""Rows read and then updated per enrichment."""
WORK_SECONDS = 0.005
"""Simulated work of a writer between two transactions."""
ENRICH_SECONDS = 0.02
"""Mean simulated computation of an enrichment, between its read and its update;
exponentially distributed, with the long tail of calls to a model or a service."""
POLL_SECONDS = 0.005
"""Pause between two dashboard polls (the dashboard stands for many users)."""
STARTUP_SECONDS = 15.0
"""How long to wait for writer processes to start, or to report after being told to stop."""
PROGRESS_SECONDS = 0.1
"""How often the progress bar is redrawn."""
PLOT_EXTRA = "pip install 'sqlite_resilient[bench]'"
"""How to install what ``--plot`` needs."""

Connection = Union[sqlite3.Connection, sqlite_resilient.ResilientConnection]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    value REAL NOT NULL,
    enriched INTEGER NOT NULL DEFAULT 0,
    enrich_count INTEGER NOT NULL DEFAULT 0,
    score REAL
)
"""
_INSERT = "INSERT INTO items (source, payload, value) VALUES (?, ?, ?)"
_SELECT_UNENRICHED = "SELECT id, value FROM items WHERE enriched = 0 ORDER BY id LIMIT ?"
# No "AND enriched = 0": enrich_count records every time a row was processed.
_UPDATE_ENRICHED = "UPDATE items SET enrich_count = enrich_count + 1, enriched = 1, score = ? WHERE id = ?"
_AUDIT = "SELECT count(*), total(enrich_count > 0), total(enrich_count), total(enrich_count > 1) FROM items"
DASHBOARD_PANELS = (
    "SELECT id, source, value, score FROM items ORDER BY id DESC LIMIT 20",
    "SELECT enriched, count(*), avg(score) FROM items GROUP BY enriched",
)
"""The dashboard's panels: the latest items and the enrichment progress, one query each."""

_READY = "ready"
_DONE = "done"


class DemoError(RuntimeError):
    """The demo could not run (e.g. its writer processes did not start)."""


class PlotUnavailableError(DemoError):
    """A plot was asked for, but matplotlib cannot be imported."""


# -- results ---------------------------------------------------------------------------------


@dataclass
class WriterStats:
    """What writer processes did; each sends its own back through the queue.

    Attributes:
        committed: Write transactions committed (batches of rows inserted or enriched).
        failed: Ingestions and enrichments that failed with an error, and writers that
            stopped on one.
        longest_wait_ms: Plain sqlite3: the longest time a writer spent in one span of SQLite
            calls (an enrichment's ``SELECT``, or a transaction's writes from its first
            statement to ``COMMIT`` or failure). sqlite_resilient: the longest
            ``conn.lock_stats.longest_wait``.
        lock_waits: sqlite_resilient: operations that waited for a lock (``lock_stats.waits``).
        total_wait_ms: sqlite_resilient: how long they waited in all (``lock_stats.total_wait``).
        retries: sqlite_resilient: attempts made again after a lock error.
        surfaced: sqlite_resilient: lock errors that reached the writer's code.
        errors: Errors by :func:`error_key`.
    """

    committed: int = 0
    failed: int = 0
    longest_wait_ms: float = 0.0
    lock_waits: int = 0
    total_wait_ms: float = 0.0
    retries: int = 0
    surfaced: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: WriterStats) -> None:
        """Add the counts of *other* to these (the longest wait is the longer of the two)."""
        self.committed += other.committed
        self.failed += other.failed
        self.longest_wait_ms = max(self.longest_wait_ms, other.longest_wait_ms)
        self.lock_waits += other.lock_waits
        self.total_wait_ms += other.total_wait_ms
        self.retries += other.retries
        self.surfaced += other.surfaced
        self.errors.update(other.errors)


class Poll(NamedTuple):
    """One dashboard poll: when it started (seconds into the scenario), how long it took,
    how many of its panel queries failed, and how many rows it had to show."""

    at: float
    latency_ms: float
    failed_reads: int
    rows: int

    @property
    def empty(self) -> bool:
        """Whether the dashboard had nothing to show: every panel failed or returned no row."""
        return self.rows == 0


@dataclass
class ReaderStats:
    """What the dashboard saw: every poll, failed ones included, and the errors it met."""

    polls: list[Poll] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def failed_reads(self) -> int:
        """Panel queries that failed."""
        return sum(poll.failed_reads for poll in self.polls)

    @property
    def empty(self) -> int:
        """Polls that had nothing to show (see :attr:`Poll.empty`)."""
        return sum(poll.empty for poll in self.polls)

    @property
    def latencies_ms(self) -> list[float]:
        """How long each poll took, in milliseconds."""
        return [poll.latency_ms for poll in self.polls]


@dataclass(frozen=True)
class Audit:
    """What the database holds at the end of a scenario, counted by one query."""

    rows: int = 0
    enriched: int = 0
    enrichments: int = 0
    processed_twice: int = 0
    """Rows enriched more than once (``enrich_count > 1``)."""


@dataclass
class ScenarioResult:
    """The outcome of one scenario."""

    name: str
    reader: ReaderStats
    writers: WriterStats
    audit: Audit = field(default_factory=Audit)


@dataclass(frozen=True)
class _WriterJob:
    """Everything a writer process needs; pickled to the child by ``spawn``."""

    scenario: str
    path: str
    index: int
    messages: Queue[tuple[str, int, WriterStats | None]]
    start: Event
    stop: Event


def error_key(exc: BaseException) -> str:
    """A short name for an error, the same for errors that differ only in their numbers.

    ``DatabaseLockedError("database is locked: execute gave up after 3 attempts ...")``
    becomes ``"DatabaseLockedError: database is locked"``.
    """
    return f"{type(exc).__name__}: {str(exc).split(':', 1)[0]}"


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of *values* by the nearest-rank method; 0.0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# -- the database ----------------------------------------------------------------------------


def open_writer(scenario: str, path: str) -> Connection:
    """Open a writer connection the way *scenario* prescribes."""
    if scenario == PLAIN:
        return sqlite3.connect(path, timeout=REQUEST_TIMEOUT)
    return sqlite_resilient.connect(path)


def open_dashboard(scenario: str, path: str) -> Connection:
    """Open the dashboard's connection the way *scenario* prescribes."""
    if scenario == PLAIN:
        return sqlite3.connect(path, timeout=REQUEST_TIMEOUT)
    return sqlite_resilient.connect(path, read_only=True, timeout=REQUEST_TIMEOUT)


def _new_rows(source: str, rng: random.Random, count: int) -> list[tuple[str, str, float]]:
    return [(source, "x" * rng.randint(50, 200), rng.random() * 100) for _ in range(count)]


def create_database(scenario: str, path: str) -> None:
    """Create the ``items`` table with ``SEED_ROWS`` rows not enriched yet (with
    sqlite_resilient, this also switches the file to WAL)."""
    conn = open_writer(scenario, path)
    try:
        conn.execute(_SCHEMA)
        conn.executemany(_INSERT, _new_rows("seed", random.Random(0), SEED_ROWS))
        conn.commit()
    finally:
        conn.close()


def audit(path: str) -> Audit:
    """Count the rows of the database at *path*, those enriched, the enrichments, and the
    rows enriched more than once (run when no writer is left)."""
    conn = sqlite3.connect(path)
    try:
        rows, enriched, enrichments, twice = conn.execute(_AUDIT).fetchone()
    finally:
        conn.close()
    return Audit(int(rows), int(enriched), int(enrichments), int(twice))


# -- the writer processes: plain sqlite3 ------------------------------------------------------


class _Span:
    """Times one span of SQLite calls of a plain writer into ``stats.longest_wait_ms``."""

    def __init__(self, stats: WriterStats) -> None:
        self._stats = stats
        self._started = time.perf_counter()

    def end(self) -> None:
        elapsed = (time.perf_counter() - self._started) * 1000
        self._stats.longest_wait_ms = max(self._stats.longest_wait_ms, elapsed)


def _fail(conn: Connection, stats: WriterStats, exc: sqlite3.Error) -> None:
    """Count a failed ingestion or enrichment and roll back what it opened; a failing
    rollback is counted, never raised (a background job logs and goes on)."""
    stats.failed += 1
    stats.errors[error_key(exc)] += 1
    try:
        conn.rollback()
    except sqlite3.Error as rollback_error:
        stats.errors[f"rollback {error_key(rollback_error)}"] += 1


def plain_ingest(conn: Connection, rows: Sequence[tuple[str, str, float]], stats: WriterStats) -> None:
    """Insert *rows* in Python's implicit transaction and commit it."""
    span = _Span(stats)
    try:
        conn.executemany(_INSERT, rows)
        conn.commit()
    except sqlite3.Error as exc:
        _fail(conn, stats, exc)
    else:
        stats.committed += 1
    finally:
        span.end()


def plain_enrich(conn: Connection, rng: random.Random, stats: WriterStats) -> None:
    """Enrich the way typical code does: read rows not enriched yet, compute, then update
    them; the implicit transaction begins only at the first ``UPDATE``, so another writer
    may read and process the same rows meanwhile."""
    span = _Span(stats)
    try:
        rows = conn.execute(_SELECT_UNENRICHED, (ENRICH_BATCH,)).fetchall()
    except sqlite3.Error as exc:
        _fail(conn, stats, exc)
        return
    finally:
        span.end()
    if not rows:
        return
    scores = [(math.sqrt(value), item_id) for item_id, value in rows]
    time.sleep(rng.expovariate(1 / ENRICH_SECONDS))  # the enrichment computation
    span = _Span(stats)
    try:
        for score in scores:
            conn.execute(_UPDATE_ENRICHED, score)
        conn.commit()
    except sqlite3.Error as exc:
        _fail(conn, stats, exc)
    else:
        stats.committed += 1
    finally:
        span.end()


# -- the writer processes: sqlite_resilient ---------------------------------------------------


@sqlite_resilient.retry_on_lock
def resilient_ingest(conn: sqlite_resilient.ResilientConnection, rows: Sequence[tuple[str, str, float]]) -> int:
    """Insert *rows* in one transaction; a lock error re-runs it. Return how many rows were
    inserted."""
    with sqlite_resilient.db_transaction(conn):
        conn.executemany(_INSERT, rows)
    return len(rows)


@sqlite_resilient.retry_on_lock
def resilient_enrich(conn: sqlite_resilient.ResilientConnection, rng: random.Random) -> int:
    """Read rows not enriched yet, compute, and update them in one transaction (no other
    writer can pick the same rows meanwhile); a lock error re-runs all of it. Return how
    many rows were enriched."""
    with sqlite_resilient.db_transaction(conn):
        rows = conn.execute(_SELECT_UNENRICHED, (ENRICH_BATCH,)).fetchall()
        if rows:
            time.sleep(rng.expovariate(1 / ENRICH_SECONDS))  # the enrichment computation
        for item_id, value in rows:
            conn.execute(_UPDATE_ENRICHED, (math.sqrt(value), item_id))
    return len(rows)


def _resilient_step(step: Callable[[], int], stats: WriterStats) -> None:
    """Run one decorated ingestion or enrichment; count it committed (if it wrote rows) or
    failed (an error that survived the retries)."""
    try:
        wrote = step()
    except sqlite3.Error as exc:
        stats.failed += 1
        stats.errors[error_key(exc)] += 1
    else:
        stats.committed += wrote > 0


def _write_loop(conn: Connection, job: _WriterJob, stats: WriterStats) -> None:
    """Alternate ingestion and enrichment until ``job.stop`` is set."""
    rng = random.Random(job.index)
    source = f"writer-{job.index}"
    while not job.stop.is_set():
        rows = _new_rows(source, rng, INSERT_BATCH)
        if isinstance(conn, sqlite_resilient.ResilientConnection):
            _resilient_step(functools.partial(resilient_ingest, conn, rows), stats)
            time.sleep(WORK_SECONDS)
            _resilient_step(functools.partial(resilient_enrich, conn, rng), stats)
        else:
            plain_ingest(conn, rows, stats)
            time.sleep(WORK_SECONDS)
            plain_enrich(conn, rng, stats)
        time.sleep(WORK_SECONDS)


def writer_main(job: _WriterJob) -> None:
    """Entry point of a writer process: connect, report ready, write until told to stop.

    Never raises: whatever happens, its :class:`WriterStats` go back through the queue, an
    unexpected error counted in them. Ctrl-C is left to the main process, which stops the
    writers through ``job.stop``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stats = WriterStats()
    conn: Connection | None = None
    try:
        conn = open_writer(job.scenario, job.path)
        job.messages.put((_READY, job.index, None))
        job.start.wait()
        _write_loop(conn, job, stats)
    except Exception as exc:  # a demo writer reports its errors, never crashes
        stats.failed += 1
        stats.errors[f"writer stopped: {error_key(exc)}"] += 1
    finally:
        if isinstance(conn, sqlite_resilient.ResilientConnection):
            lock_stats = conn.lock_stats
            stats.longest_wait_ms = lock_stats.longest_wait * 1000
            stats.total_wait_ms = lock_stats.total_wait * 1000
            stats.lock_waits, stats.retries, stats.surfaced = lock_stats.waits, lock_stats.retries, lock_stats.surfaced
        if conn is not None:
            conn.close()
        job.messages.put((_DONE, job.index, stats))


# -- the main process ------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal; elsewhere one line per scenario start."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._label = ""
        self._total = 0.0
        self._drawn = -math.inf

    def begin(self, label: str, seconds: float, writers: int) -> None:
        """Announce a scenario of *seconds* with *writers* writer processes."""
        self._label, self._total, self._drawn = label, seconds, -math.inf
        if self._tty:
            self.update(0.0)
        else:
            plural = "es" if writers != 1 else ""
            self._stream.write(f"demo: running {label} for {seconds:g} s with {writers} writer process{plural}\n")
            self._stream.flush()

    def update(self, elapsed: float, *, force: bool = False) -> None:
        """Redraw the bar for *elapsed* seconds (at most every ``PROGRESS_SECONDS``)."""
        if not self._tty or (not force and elapsed - self._drawn < PROGRESS_SECONDS):
            return
        self._drawn = elapsed
        done = min(elapsed / self._total, 1.0) if self._total > 0 else 1.0
        filled = round(done * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(f"\r{self._label:<16} [{bar}] {elapsed:4.1f}/{self._total:g} s")
        self._stream.flush()

    def end(self) -> None:
        """Finish the scenario's line."""
        if self._tty:
            self.update(self._total, force=True)
            self._stream.write("\n")
            self._stream.flush()


def _receive(
    messages: Queue[tuple[str, int, WriterStats | None]],
    processes: Sequence[SpawnProcess],
    kind: str,
    done: dict[int, WriterStats],
) -> None:
    """Wait until every writer has sent *kind* (a finished writer counts as ready), recording
    the stats of finished ones in *done*.

    Raises:
        DemoError: a writer exited without sending *kind*, or ``STARTUP_SECONDS`` passed.
    """
    seen: set[int] = set(done)
    deadline = time.monotonic() + STARTUP_SECONDS
    exited: set[int] = set()
    while len(seen) < len(processes):
        try:
            message, index, stats = messages.get(timeout=PROGRESS_SECONDS)
        except queue.Empty:
            # A writer found dead at two checks in a row had nothing left in the queue.
            exited = _check_writers(processes, seen, exited, "start" if kind == _READY else "stop", deadline)
            continue
        if message == _DONE and stats is not None:
            done[index] = stats
        if message in (kind, _DONE):
            seen.add(index)


def _check_writers(
    processes: Sequence[SpawnProcess], seen: set[int], exited: set[int], what: str, deadline: float
) -> set[int]:
    """Raise :class:`DemoError` if writers not *seen* were already found exited, or time is up;
    return the writers not seen that have exited now."""
    dead = sorted(exited - seen)
    if dead:
        raise DemoError(
            f"writer process {dead[0]} exited with status {processes[dead[0]].exitcode} before it could {what}"
        )
    missing = len(processes) - len(seen)
    if time.monotonic() > deadline:
        raise DemoError(f"{missing} writer process(es) did not {what} within {STARTUP_SECONDS:g} s")
    return {index for index, process in enumerate(processes) if index not in seen and process.exitcode is not None}


def _panel(conn: Connection, sql: str, errors: Counter[str]) -> int | None:
    """Run one panel's query; return its number of rows, or ``None`` (the error counted in
    *errors*) if it failed."""
    try:
        return len(conn.execute(sql).fetchall())
    except sqlite3.Error as exc:
        errors[error_key(exc)] += 1
        return None


def poll_dashboard(conn: Connection, started: float, errors: Counter[str]) -> Poll:
    """Run every panel query once, each on its own (a failed panel does not blank the
    others), and time the whole poll from *started*; errors are counted in *errors*."""
    polled = time.perf_counter()
    counts = [_panel(conn, sql, errors) for sql in DASHBOARD_PANELS]
    latency_ms = (time.perf_counter() - polled) * 1000
    return Poll(polled - started, latency_ms, counts.count(None), sum(count or 0 for count in counts))


def _dashboard(conn: Connection, seconds: float, progress: Progress) -> ReaderStats:
    """Poll the dashboard for *seconds*."""
    stats = ReaderStats()
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        progress.update(now - started)
        stats.polls.append(poll_dashboard(conn, started, stats.errors))
        time.sleep(POLL_SECONDS)
    return stats


def _stop(processes: Sequence[SpawnProcess], start: Event, stop: Event) -> None:
    """Tell writers to stop and wait for them; terminate any that do not exit."""
    stop.set()
    start.set()
    for process in processes:
        process.join(STARTUP_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join()


def run_scenario(scenario: str, seconds: float, writers: int, directory: str, progress: Progress) -> ScenarioResult:
    """Run *scenario* on a fresh database in *directory*: *writers* writer processes and
    the dashboard in this process, for *seconds*; then audit the database."""
    path = os.path.join(directory, "items.db")
    create_database(scenario, path)
    context = multiprocessing.get_context("spawn")
    messages: Queue[tuple[str, int, WriterStats | None]] = context.Queue()
    start, stop = context.Event(), context.Event()
    processes = [
        context.Process(
            target=writer_main,
            args=(_WriterJob(scenario, path, index, messages, start, stop),),
            name=f"demo-writer-{index}",
            daemon=True,
        )
        for index in range(writers)
    ]
    done: dict[int, WriterStats] = {}
    progress.begin(scenario, seconds, writers)
    try:
        for process in processes:
            process.start()
        _receive(messages, processes, _READY, done)
        conn = open_dashboard(scenario, path)
        try:
            start.set()
            reader = _dashboard(conn, seconds, progress)
        finally:
            stop.set()
            conn.close()
        _receive(messages, processes, _DONE, done)
    finally:
        _stop(processes, start, stop)
        progress.end()
    total = WriterStats()
    for stats in done.values():
        total.add(stats)
    return ScenarioResult(scenario, reader, total, audit(path))


# -- the report ------------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str, Callable[[ScenarioResult], str]], ...] = (
    ("dashboard", "polls", lambda r: str(len(r.reader.polls))),
    ("dashboard", "failed reads", lambda r: str(r.reader.failed_reads)),
    ("dashboard", "empty", lambda r: str(r.reader.empty)),
    ("rows processed", "twice", lambda r: str(r.audit.processed_twice)),
    ("read p99", "ms", lambda r: f"{percentile(r.reader.latencies_ms, 99):.1f}"),
    ("longest write", "wait ms", lambda r: f"{r.writers.longest_wait_ms:.1f}"),
    ("writes", "committed", lambda r: str(r.writers.committed)),
    ("writes", "failed", lambda r: str(r.writers.failed)),
)
"""The table's columns after the scenario name: group title, label, cell."""
_GAP = "  "


def _groups() -> list[tuple[str, int, int]]:
    """The column groups as (title, first, last) indexes into a row (the name is index 0)."""
    groups: list[tuple[str, int, int]] = []
    for index, (title, _, _) in enumerate(_COLUMNS, start=1):
        if groups and groups[-1][0] == title:
            groups[-1] = (title, groups[-1][1], index)
        else:
            groups.append((title, index, index))
    return groups


def format_table(results: Sequence[ScenarioResult]) -> str:
    """The comparison table: one row per scenario under a two-line header, numbers right-aligned."""
    labels = ["scenario", *(label for _, label, _ in _COLUMNS)]
    rows = [[result.name, *(cell(result) for _, _, cell in _COLUMNS)] for result in results]
    widths = [max(len(row[i]) for row in (labels, *rows)) for i in range(len(labels))]

    def span(first: int, last: int) -> int:
        return sum(widths[first : last + 1]) + len(_GAP) * (last - first)

    for title, first, last in _groups():  # widen a group's columns evenly to fit its title
        for extra in range(len(title) - span(first, last)):
            widths[first + extra % (last - first + 1)] += 1

    def line(cells: Sequence[str]) -> str:
        name, *numbers = cells
        return _GAP.join([name.ljust(widths[0]), *(c.rjust(w) for c, w in zip(numbers, widths[1:]))])

    def title_cell(title: str, first: int, last: int) -> str:  # one column: over its numbers
        width = span(first, last)
        return title.rjust(width) if first == last else title.center(width)

    titles = _GAP.join([" " * widths[0], *(title_cell(*group) for group in _groups())])
    rule = _GAP.join("-" * width for width in widths)
    return "\n".join([titles.rstrip(), line(labels), rule, *(line(row) for row in rows)])


def _errors_text(counter: Counter[str]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in counter.most_common()) or "none"


def _outcome_note(result: ScenarioResult) -> str:
    audit, writers = result.audit, result.writers
    text = (
        f"{result.name}: {audit.rows - SEED_ROWS} rows ingested, {audit.enriched} enriched by "
        f"{audit.enrichments} enrichments; read errors: {_errors_text(result.reader.errors)}; "
        f"write errors: {_errors_text(writers.errors)}"
    )
    if result.name == RESILIENT:
        text += (
            f"; lock_stats: {writers.lock_waits} waits ({writers.total_wait_ms / 1000:.2f} s in all), "
            f"{writers.retries} retries, {writers.surfaced} lock errors surfaced"
        )
    return text + "."


def format_report(results: Sequence[ScenarioResult], seconds: float, writers: int) -> str:
    """The table and the footer lines that say how it was measured."""
    budget = sqlite_resilient.DEFAULT_SETTINGS.timeout
    notes = [
        f"Each scenario: a fresh database with {SEED_ROWS} rows, {seconds:g} s, {writers} writer "
        f"process{'es' if writers != 1 else ''} and a dashboard in the main process. Writers alternate "
        f"ingestion ({INSERT_BATCH}-row insert transactions) and enrichment (read {ENRICH_BATCH} rows not "
        f"enriched yet, ~{ENRICH_SECONDS * 1000:g} ms of work, update them).",
        f"{PLAIN}: stdlib defaults (rollback journal, implicit deferred transactions), plain sqlite3 with a "
        f"{REQUEST_TIMEOUT:g} s timeout, as a web request would use, for writers and dashboard alike; "
        "enrichment as typical code writes it: SELECT, work, then UPDATE (the implicit transaction begins "
        "there) and commit().",
        f"{RESILIENT}: writers use its defaults (WAL, {budget:g} s lock-wait budget: a background job can "
        "afford to wait), each ingestion and enrichment in db_transaction (BEGIN IMMEDIATE: the SELECT and "
        "the UPDATE in one transaction) inside a @retry_on_lock function; the dashboard uses read_only=True "
        f"with the same {REQUEST_TIMEOUT:g} s budget as plain.",
        f"dashboard: a poll runs its {len(DASHBOARD_PANELS)} panel queries (latest items, enrichment progress), "
        "each on its own; failed reads counts panel queries that raised an error; empty counts polls with "
        "nothing to show, every panel failed or returned no row (the database is never empty, so a poll "
        "that worked has rows). Read p99 is over whole polls, failed ones included.",
        "rows processed twice: rows whose enrich_count (incremented by every enrichment) is above 1, "
        "counted by a query once the writers have stopped.",
        f"longest write wait: {PLAIN}: the longest time a writer spent in one span of SQLite calls, an "
        "enrichment's SELECT or a transaction's writes from its first statement to COMMIT or failure (its "
        f"work is outside); {RESILIENT}: the largest lock_stats.longest_wait of the writers, their queueing "
        "for the write lock included: a writer waits for the whole transaction of the one before it, an "
        "enrichment's work included, which is what keeps two writers from processing the same rows.",
        "writes: ingestion and enrichment transactions committed, and ingestions and enrichments failed.",
    ]
    notes.extend(_outcome_note(result) for result in results)
    wrapped = [textwrap.fill(note, width=100, subsequent_indent="  ") for note in notes]
    return "\n".join([format_table(results), "", *wrapped]) + "\n"


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


_COLOURS = {PLAIN: "tab:orange", RESILIENT: "tab:blue"}
_COUNTS: tuple[tuple[str, Callable[[ScenarioResult], float]], ...] = (
    ("failed\nreads", lambda r: r.reader.failed_reads),
    ("empty\ndashboards", lambda r: r.reader.empty),
    ("rows processed\ntwice", lambda r: r.audit.processed_twice),
    ("failed\nwrites", lambda r: r.writers.failed),
)
_MILLISECONDS: tuple[tuple[str, Callable[[ScenarioResult], float]], ...] = (
    ("read p99", lambda r: percentile(r.reader.latencies_ms, 99)),
    ("longest\nwrite wait", lambda r: r.writers.longest_wait_ms),
)


def _bars(
    axes: Any,
    results: Sequence[ScenarioResult],
    metrics: Sequence[tuple[str, Callable[[ScenarioResult], float]]],
    fmt: str,
) -> None:
    """Grouped bars: one group per metric, one bar per scenario, each labelled with its value."""
    width = 0.8 / max(len(results), 1)
    for number, result in enumerate(results):
        offsets = [index + (number - (len(results) - 1) / 2) * width for index in range(len(metrics))]
        values = [metric(result) for _, metric in metrics]
        bars = axes.bar(offsets, values, width, label=result.name, color=_COLOURS.get(result.name))
        axes.bar_label(bars, labels=[fmt.format(value) for value in values], fontsize=8, padding=2)
    axes.set_xticks(range(len(metrics)))
    axes.set_xticklabels([name for name, _ in metrics], fontsize=8)
    axes.margins(y=0.15)


def write_plot(results: Sequence[ScenarioResult], path: str) -> None:
    """Write a PNG comparing the scenarios to *path*: the dashboard's poll latency over time
    (empty dashboards marked), and bars of the table's counts and milliseconds.

    Raises:
        PlotUnavailableError: matplotlib cannot be imported.
        OSError: the file cannot be written.
    """
    check_plotting()
    figure_module: Any = importlib.import_module("matplotlib.figure")
    agg: Any = importlib.import_module("matplotlib.backends.backend_agg")
    figure = figure_module.Figure(figsize=(14, 4.5), layout="constrained")
    agg.FigureCanvasAgg(figure)
    timeline, counts, milliseconds = figure.subplots(1, 3, gridspec_kw={"width_ratios": (2.2, 1.6, 1)})
    for result in results:
        polls = result.reader.polls
        colour = _COLOURS.get(result.name)
        timeline.plot([p.at for p in polls], [p.latency_ms for p in polls], ".", ms=3, color=colour, label=result.name)
        empty = [p for p in polls if p.empty]
        if empty:
            timeline.plot([p.at for p in empty], [p.latency_ms for p in empty], "x", ms=7, color="tab:red")
    if any(result.reader.empty for result in results):
        timeline.plot([], [], "x", color="tab:red", label="empty dashboard")
    timeline.set(yscale="log", xlabel="seconds into the scenario", ylabel="poll latency (ms)")
    timeline.set_title("Dashboard polls while writers run", fontsize=10)
    timeline.legend(fontsize=8, loc="best")
    _bars(counts, results, _COUNTS, "{:g}")
    counts.set_title("Counts", fontsize=10)
    counts.legend(fontsize=8)
    _bars(milliseconds, results, _MILLISECONDS, "{:.0f}")
    milliseconds.set_title("Milliseconds", fontsize=10)
    figure.suptitle("sqlite-resilient demo: a dashboard during ingestion")
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
    """Run both scenarios, each on a fresh database in a temporary directory, print the
    report and, if asked, write the plot.

    Args:
        seconds: How long each scenario runs.
        writers: How many writer processes each scenario starts.
        directory: Where the temporary directory is made; default the system's.
        plot: Where to write a PNG comparing the scenarios (see :func:`write_plot`).
        out: Where the report goes; default ``sys.stdout``.
        err: Where progress goes; default ``sys.stderr``.

    Returns:
        The result of each scenario, in the order of :data:`SCENARIOS`.

    Raises:
        PlotUnavailableError: *plot* is given but matplotlib cannot be imported (raised
            before any scenario runs).
        DemoError: writer processes did not start or stop in time, or the plot could not
            be written.
    """
    if plot is not None:
        check_plotting()
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    progress = Progress(err)
    results = []
    with tempfile.TemporaryDirectory(prefix="sqlite-resilient-demo-", dir=directory) as tmp:
        for number, scenario in enumerate(SCENARIOS):
            scenario_dir = os.path.join(tmp, f"{number}-{scenario.replace(' ', '-')}")
            os.mkdir(scenario_dir)
            results.append(run_scenario(scenario, seconds, writers, scenario_dir, progress))
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
