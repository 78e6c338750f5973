"""``sqlite-resilient demo``: the motivating scenario, plain :mod:`sqlite3` and this library side by side.

Background writer *processes* ingest rows (batches of inserts) and enrich them (read, then
update, in one transaction) while a dashboard in the main process polls the same database
file. The scenario runs twice, each time on a fresh database:

1. **plain sqlite3**: :func:`sqlite3.connect` defaults (rollback journal, deferred
   transactions) with ``timeout=0.1`` for writers and dashboard, as a web request would use;
2. **sqlite_resilient**: :func:`sqlite_resilient.connect` with its defaults for the writers
   (WAL, ``BEGIN IMMEDIATE``, a 30 s lock-wait budget: a background job can afford to wait)
   and ``read_only=True`` with the same 0.1 s budget as plain for the dashboard.

Then one table compares the dashboard reads that worked and failed, the write transactions
committed and failed, and the dashboard's latency.

Writer processes start with the ``spawn`` method (never ``fork``: a SQLite connection must
not cross a fork) and synchronise with the main process through a queue and events only;
the short sleeps in the loops stand for work, never for synchronisation.
"""

from __future__ import annotations

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TextIO, Union

import sqlite_resilient

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

__all__ = [
    "DEFAULT_SECONDS",
    "DEFAULT_WRITERS",
    "PLAIN",
    "RESILIENT",
    "SCENARIOS",
    "DemoError",
    "ReaderStats",
    "ScenarioResult",
    "WriterStats",
    "format_report",
    "run_demo",
]

DEFAULT_SECONDS = 3.0
"""How long each scenario runs, in seconds."""
DEFAULT_WRITERS = 2
"""How many writer processes each scenario starts."""

PLAIN = "plain sqlite3"
RESILIENT = "sqlite_resilient"
SCENARIOS = (PLAIN, RESILIENT)
"""The scenarios, in the order they run and are reported."""

REQUEST_TIMEOUT = 0.1
"""Lock-wait budget in seconds of a dashboard read (both scenarios) and of a plain writer."""
INSERT_BATCH = 50
"""Rows per ingestion transaction."""
ENRICH_BATCH = 10
"""Rows read and then updated per enrichment transaction."""
WORK_SECONDS = 0.005
"""Simulated work of a writer between two transactions."""
ENRICH_SECONDS = 0.02
"""Mean simulated computation inside an enrichment transaction, between its read and its
update; exponentially distributed, with the long tail of calls to a model or a service."""
POLL_SECONDS = 0.005
"""Pause between two dashboard polls (the dashboard stands for many users)."""
STARTUP_SECONDS = 15.0
"""How long to wait for writer processes to start, or to report after being told to stop."""
PROGRESS_SECONDS = 0.1
"""How often the progress bar is redrawn."""

Connection = Union[sqlite3.Connection, sqlite_resilient.ResilientConnection]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    payload TEXT NOT NULL,
    value REAL NOT NULL,
    enriched INTEGER NOT NULL DEFAULT 0,
    score REAL
)
"""
_INSERT = "INSERT INTO items (source, payload, value) VALUES (?, ?, ?)"
_SELECT_UNENRICHED = "SELECT id, value FROM items WHERE enriched = 0 ORDER BY id LIMIT ?"
_UPDATE_ENRICHED = "UPDATE items SET enriched = 1, score = ? WHERE id = ? AND enriched = 0"
_DASHBOARD_QUERIES = (
    "SELECT count(*), max(id) FROM items",
    "SELECT enriched, count(*), avg(value) FROM items GROUP BY enriched",
)

_READY = "ready"
_DONE = "done"


class DemoError(RuntimeError):
    """The demo could not run (e.g. its writer processes did not start)."""


# -- results ---------------------------------------------------------------------------------


@dataclass
class WriterStats:
    """What writer processes did; each sends its own back through the queue."""

    committed: int = 0
    failed: int = 0
    rows_inserted: int = 0
    rows_enriched: int = 0
    longest_ms: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: WriterStats) -> None:
        """Add the counts of *other* to these."""
        self.committed += other.committed
        self.failed += other.failed
        self.rows_inserted += other.rows_inserted
        self.rows_enriched += other.rows_enriched
        self.longest_ms = max(self.longest_ms, other.longest_ms)
        self.errors.update(other.errors)


@dataclass
class ReaderStats:
    """What the dashboard saw: one latency per poll, failed polls included."""

    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class ScenarioResult:
    """The outcome of one scenario."""

    name: str
    reader: ReaderStats
    writers: WriterStats


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


# -- connections -----------------------------------------------------------------------------


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


def begin_statement(scenario: str) -> str:
    """How a read-then-update transaction starts: plain code writes ``BEGIN`` (deferred, like
    the stdlib's implicit transactions); with sqlite_resilient it takes the write lock first."""
    return "BEGIN" if scenario == PLAIN else "BEGIN IMMEDIATE"


def create_database(scenario: str, path: str) -> None:
    """Create the ``items`` table (with sqlite_resilient, this also switches the file to WAL)."""
    conn = open_writer(scenario, path)
    try:
        conn.execute(_SCHEMA)
        conn.commit()
    finally:
        conn.close()


# -- the writer processes --------------------------------------------------------------------


@contextmanager
def _write_transaction(conn: Connection, stats: WriterStats) -> Iterator[None]:
    """Commit the transaction of the block and count it as committed or failed.

    A SQLite error is counted, the transaction rolled back, and the error swallowed: a
    background job logs it and goes on.
    """
    started = time.perf_counter()
    try:
        yield
        conn.commit()
    except sqlite3.Error as exc:
        stats.failed += 1
        stats.errors[error_key(exc)] += 1
        _rollback_quietly(conn, stats)
    else:
        stats.committed += 1
    finally:
        stats.longest_ms = max(stats.longest_ms, (time.perf_counter() - started) * 1000)


def _rollback_quietly(conn: Connection, stats: WriterStats) -> None:
    """Roll back after a failure; a failing rollback is counted, never raised."""
    try:
        conn.rollback()
    except sqlite3.Error as exc:
        stats.errors[f"rollback {error_key(exc)}"] += 1


def ingest(conn: Connection, source: str, rng: random.Random, stats: WriterStats) -> None:
    """Insert one batch of rows in one transaction (an implicit one, as most code does)."""
    rows = [(source, "x" * rng.randint(50, 200), rng.random() * 100) for _ in range(INSERT_BATCH)]
    committed = stats.committed
    with _write_transaction(conn, stats):
        conn.executemany(_INSERT, rows)
    if stats.committed > committed:
        stats.rows_inserted += len(rows)


def enrich(conn: Connection, scenario: str, rng: random.Random, stats: WriterStats) -> None:
    """Read rows not enriched yet and update them, in one explicit transaction."""
    committed = stats.committed
    enriched = 0
    with _write_transaction(conn, stats):
        conn.execute(begin_statement(scenario))
        rows = conn.execute(_SELECT_UNENRICHED, (ENRICH_BATCH,)).fetchall()
        time.sleep(rng.expovariate(1 / ENRICH_SECONDS))  # the enrichment computation
        for item_id, value in rows:
            enriched += conn.execute(_UPDATE_ENRICHED, (math.sqrt(value), item_id)).rowcount
    if stats.committed > committed:
        stats.rows_enriched += enriched


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
        rng = random.Random(job.index)
        source = f"writer-{job.index}"
        while not job.stop.is_set():
            ingest(conn, source, rng, stats)
            time.sleep(WORK_SECONDS)
            enrich(conn, job.scenario, rng, stats)
            time.sleep(WORK_SECONDS)
    except Exception as exc:  # a demo writer reports its errors, never crashes
        stats.failed += 1
        stats.errors[f"writer stopped: {error_key(exc)}"] += 1
    finally:
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


def _dashboard(conn: Connection, seconds: float, progress: Progress) -> ReaderStats:
    """Poll the dashboard queries for *seconds*; time every poll, failed ones included."""
    stats = ReaderStats()
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        progress.update(now - started)
        polled = time.perf_counter()
        try:
            for sql in _DASHBOARD_QUERIES:
                conn.execute(sql).fetchall()
        except sqlite3.Error as exc:
            stats.failed += 1
            stats.errors[error_key(exc)] += 1
        else:
            stats.ok += 1
        stats.latencies_ms.append((time.perf_counter() - polled) * 1000)
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
    the dashboard in this process, for *seconds*."""
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
    return ScenarioResult(scenario, reader, total)


# -- the report ------------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str, Callable[[ScenarioResult], str]], ...] = (
    ("dashboard reads", "ok", lambda r: str(r.reader.ok)),
    ("dashboard reads", "failed", lambda r: str(r.reader.failed)),
    ("writes", "committed", lambda r: str(r.writers.committed)),
    ("writes", "failed", lambda r: str(r.writers.failed)),
    ("read latency ms", "p50", lambda r: f"{percentile(r.reader.latencies_ms, 50):.1f}"),
    ("read latency ms", "p99", lambda r: f"{percentile(r.reader.latencies_ms, 99):.1f}"),
    ("read latency ms", "max", lambda r: f"{max(r.reader.latencies_ms, default=0.0):.1f}"),
    ("write ms", "max", lambda r: f"{r.writers.longest_ms:.1f}"),
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

    titles = _GAP.join([" " * widths[0], *(title.center(span(first, last)) for title, first, last in _groups())])
    rule = _GAP.join("-" * width for width in widths)
    return "\n".join([titles.rstrip(), line(labels), rule, *(line(row) for row in rows)])


def _errors_text(counter: Counter[str]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in counter.most_common()) or "none"


def format_report(results: Sequence[ScenarioResult], seconds: float, writers: int) -> str:
    """The table and the footer lines that say how it was measured."""
    budget = sqlite_resilient.DEFAULT_SETTINGS.timeout
    notes = [
        f"Each scenario: a fresh database, {seconds:g} s, {writers} writer process{'es' if writers != 1 else ''} and a "
        "dashboard polling 2 queries in the main process. Writers alternate ingestion "
        f"({INSERT_BATCH}-row insert transactions) and enrichment (read {ENRICH_BATCH} rows, "
        f"~{ENRICH_SECONDS * 1000:g} ms of work, update them, in one transaction); writes are transactions.",
        f"{PLAIN}: stdlib defaults (rollback journal, deferred transactions), plain sqlite3 with a "
        f"{REQUEST_TIMEOUT:g} s timeout, as a web request would use, for writers and dashboard alike.",
        f"{RESILIENT}: writers use its defaults (WAL, BEGIN IMMEDIATE, {budget:g} s lock-wait budget: a background "
        "job can afford to wait, and write ms max shows how long one did); the dashboard uses read_only=True with "
        f"the same {REQUEST_TIMEOUT:g} s budget as plain.",
        "Read latency counts every dashboard poll, failed ones included; write ms max is the longest write "
        "transaction, its lock waits and work included.",
    ]
    notes.extend(
        f"{result.name}: {result.writers.rows_inserted} rows ingested, {result.writers.rows_enriched} enriched; "
        f"read errors: {_errors_text(result.reader.errors)}; write errors: {_errors_text(result.writers.errors)}."
        for result in results
    )
    wrapped = [textwrap.fill(note, width=100, subsequent_indent="  ") for note in notes]
    return "\n".join([format_table(results), "", *wrapped]) + "\n"


def run_demo(
    seconds: float = DEFAULT_SECONDS,
    writers: int = DEFAULT_WRITERS,
    directory: str | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[ScenarioResult]:
    """Run both scenarios, each on a fresh database in a temporary directory, and print the report.

    Args:
        seconds: How long each scenario runs.
        writers: How many writer processes each scenario starts.
        directory: Where the temporary directory is made; default the system's.
        out: Where the report goes; default ``sys.stdout``.
        err: Where progress goes; default ``sys.stderr``.

    Returns:
        The result of each scenario, in the order of :data:`SCENARIOS`.

    Raises:
        DemoError: writer processes did not start or stop in time.
    """
    out = sys.stdout if out is None else out
    progress = Progress(sys.stderr if err is None else err)
    results = []
    with tempfile.TemporaryDirectory(prefix="sqlite-resilient-demo-", dir=directory) as tmp:
        for number, scenario in enumerate(SCENARIOS):
            scenario_dir = os.path.join(tmp, f"{number}-{scenario.replace(' ', '-')}")
            os.mkdir(scenario_dir)
            results.append(run_scenario(scenario, seconds, writers, scenario_dir, progress))
    out.write(format_report(results, seconds, writers))
    out.flush()
    return results
