"""What ``tests/test_stateful.py`` runs in threads and in spawned worker processes.

The operations work on table ``t(txn, seq, n)``: a transaction tagged ``txn`` commits
exactly ``n`` rows, ``seq`` 0 to ``n - 1``. That makes every reader a checker that needs no
model (:func:`check_rows`): a transaction seen with fewer rows is a partial transaction, one
seen with a ``seq`` twice is a duplicated write, one seen with a ``seq`` of ``n`` or more
shows rows of a rolled-back savepoint, and a ``txn`` ending in :data:`DOOMED` (a
transaction planned to fail) must never be seen at all.

Processes are started with ``spawn`` and import this module by name; everything they
receive or send (:class:`Write`, :class:`Read`, :class:`Outcome`, :class:`Summary`) is
defined here so that it pickles. Each process (the test's included) keeps its connections
in a :class:`Connections` between the operations of one example.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar, Union

import sqlite_resilient
from sqlite_resilient import ResilientConnection, db_transaction, instrumentation, is_lock_error, retry_on_lock

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

SCHEMA = (
    "CREATE TABLE t(txn TEXT NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL);"
    "CREATE TABLE noise(id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
)
SELECT_T = "SELECT txn, seq, n FROM t"

DOOMED = "/doomed"
"""Suffix of the ``txn`` of a transaction that raises at its end: never visible to anyone."""

WRITE_BUDGET = 10.0
"""Lock-wait budget (seconds) of write connections and of their decorated transactions."""
READ_BUDGET = 5.0
"""The same for read-only connections (their default)."""
GATE_TIMEOUT = 20.0
"""How long a participant of a burst waits for the others at the start line."""
WORKER_IDLE = 300.0
"""A worker process with no command for this long exits (its parent is gone)."""
PAUSE = 0.002
"""Background processes wait this long for the word to stop between transactions, so that
they contend for locks without holding the write lock nearly all the time."""

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
LOCK_ERROR = "sqlite_resilient.lock_error"

Row = tuple[str, int, int]
T = TypeVar("T")


class Doomed(Exception):
    """The application error a doomed transaction raises at the end of its block."""


class InnerFailure(Exception):
    """The error raised inside a nested (savepoint) block whose rows must not remain."""


CONTROLS: tuple[str, ...] = ("legacy", "manual") + (
    ("autocommit-false", "autocommit-true") if sys.version_info >= (3, 12) else ()
)
"""Transaction control of a write connection: Python's legacy mode (the library's default,
implicit ``BEGIN IMMEDIATE``), ``isolation_level=None``, and on 3.12+ ``autocommit=False``
(a transaction always open) and ``autocommit=True``."""


@dataclass(frozen=True)
class Write:
    """One write transaction.

    It inserts ``seq`` 0 to ``n - in_savepoint - 1`` in the outer block; then, if
    ``doomed_rows``, a nested block inserts that many rows with ``seq`` from ``n`` and
    raises :class:`InnerFailure` (caught outside it, so the outer transaction goes on);
    then a nested block that succeeds inserts the last ``in_savepoint`` rows. With
    ``commit`` false the outer block finally raises :class:`Doomed`.
    """

    txn: str
    n: int
    in_savepoint: int
    doomed_rows: int
    commit: bool
    mode: str
    """``BEGIN`` mode: ``"immediate"``, ``"deferred"`` (read, then write: the upgrade can
    fail with ``SQLITE_BUSY``/``SQLITE_BUSY_SNAPSHOT``) or ``"exclusive"``; or
    ``"implicit"``: code written for :mod:`sqlite3` (legacy control only), whose first
    INSERT opens Python's implicit transaction inside ``with conn:`` (commit, or rollback
    on an exception); or ``"statement"``: a ``BEGIN IMMEDIATE`` statement, then
    ``commit()`` or ``rollback()``, as SQLAlchemy does (``isolation_level=None`` only); or
    ``"script"``: one ``executescript`` of ``BEGIN IMMEDIATE``, the INSERTs and (unless
    doomed) ``COMMIT``, as a migration or a batch job does it (legacy control only; no
    savepoints: ``in_savepoint`` and ``doomed_rows`` are ignored). Nested blocks are
    ``db_transaction``'s savepoints in every other mode."""
    sqlite_waits: bool
    """Keep SQLite's busy handler (``busy_timeout`` from the budget); otherwise
    ``busy_timeout=0`` and every wait is the library's."""
    control: str = "legacy"
    """One of :data:`CONTROLS`."""

    @property
    def kind(self) -> tuple[str, bool, str]:
        """Operations of the same kind share connections."""
        return ("write", self.sqlite_waits, self.control)


@dataclass(frozen=True)
class Read:
    """One read transaction on a read-only connection: the whole table, read twice."""

    sqlite_waits: bool

    @property
    def kind(self) -> tuple[str, bool, str]:
        return ("read", self.sqlite_waits, "legacy")


Operation = Union[Write, Read]


@dataclass
class Outcome:
    """What one operation did and saw."""

    operation: Operation
    committed: bool = False
    attempts: int = 0
    """How often the decorated function ran (1: no whole-transaction retry)."""
    seen: dict[str, int] = field(default_factory=dict)
    """Read: each ``txn`` visible, with its ``n``."""
    violations: list[str] = field(default_factory=list)
    """What the operation itself found wrong."""
    error: str | None = None
    """An exception that reached the caller and should not have."""
    retries: int = 0
    """``retry_scheduled`` events while it ran: lock errors the library retried."""
    lock_errors: list[str] = field(default_factory=list)
    """``lock_error`` events carrying a lock error: lock errors that reached the caller."""
    surfaced: int = 0
    """How much ``lock_stats.surfaced`` of the connection grew during the operation."""
    readonly_rollbacks: int = 0
    """See :func:`despite_readonly_rollback`."""
    reused: bool = False
    """Whether the connection had served an earlier operation."""
    journal_mode: str = ""


# -- observing the library's events --------------------------------------------------------


@dataclass
class Capture:
    """The events of interest seen by one thread while it runs an operation."""

    retries: int = 0
    lock_errors: list[str] = field(default_factory=list)
    readonly_rollbacks: int = 0
    """Reads run again after ``SQLITE_READONLY_ROLLBACK`` (:func:`despite_readonly_rollback`)."""


_local = threading.local()


def capture_hook(event: instrumentation.Event) -> None:
    """An instrumentation hook: counts the events of the calling thread's operation."""
    capture: Capture | None = getattr(_local, "capture", None)
    if capture is None or not isinstance(event, instrumentation.LockEvent):
        return
    if event.name == RETRY_SCHEDULED:
        capture.retries += 1
    elif event.name == LOCK_ERROR and event.error is not None and is_lock_error(event.error):
        capture.lock_errors.append(f"{event.operation}: {event.error!r}")


def install_hook() -> None:
    """Add :func:`capture_hook` to the library's hooks of this process (once)."""
    hooks = instrumentation.get_hooks()
    if capture_hook not in hooks:
        instrumentation.set_hooks([*hooks, capture_hook])


@contextlib.contextmanager
def capturing() -> Iterator[Capture]:
    """Count the events of the current thread inside the block."""
    capture = Capture()
    _local.capture = capture
    try:
        yield capture
    finally:
        _local.capture = None


# -- connections and checks ------------------------------------------------------------------


def is_readonly_rollback(error: BaseException) -> bool:
    """Whether *error* is ``SQLITE_READONLY_ROLLBACK`` (by its message where Python < 3.11
    gives no code; ``connect()`` appends the database's name to it): a read-only connection
    took a journal for a hot one."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    name = getattr(error, "sqlite_errorname", None)
    if name is not None:
        return bool(name == "SQLITE_READONLY_ROLLBACK")
    return str(error).startswith("attempt to write a readonly database")


def despite_readonly_rollback(call: Callable[[], T]) -> T:
    """``call()``, called again while it fails with ``SQLITE_READONLY_ROLLBACK`` (within
    the read budget); each such failure is counted in the thread's :class:`Capture`.

    With a rollback journal, a read-only connection meets ``SQLITE_READONLY_ROLLBACK`` when
    a writer rolls back as it starts reading (SQLite takes the vanishing journal for a hot
    one, which a read-only connection cannot roll back). The library waits that out only
    where the error carries its code (Python 3.11+); on older Pythons it reaches the caller
    (``test_read_only_connection_survives_rollbacks_of_writers`` in ``test_stateful.py``,
    ``xfail`` there), and the tests' readers wait it out themselves. The tests require the
    count to stay 0 on 3.11+ and in WAL mode.
    """
    deadline = time.monotonic() + READ_BUDGET
    while True:
        try:
            return call()
        except sqlite3.OperationalError as error:  # noqa: PERF203 - a passing race, tried again
            if not is_readonly_rollback(error) or time.monotonic() > deadline:
                raise
            capture: Capture | None = getattr(_local, "capture", None)
            if capture is not None:
                capture.readonly_rollbacks += 1


def busy_pragmas(sqlite_waits: bool) -> dict[str, object]:
    return {} if sqlite_waits else {"busy_timeout": 0}


def open_writer(
    database: str, journal: Mapping[str, object], *, sqlite_waits: bool, control: str = "legacy"
) -> ResilientConnection:
    kwargs: dict[str, Any] = {}
    if control == "manual":
        kwargs["isolation_level"] = None
    elif control.startswith("autocommit-"):
        kwargs["autocommit"] = control == "autocommit-true"
    return sqlite_resilient.connect(
        database,
        timeout=WRITE_BUDGET,
        pragmas={**journal, **busy_pragmas(sqlite_waits)},
        check_same_thread=False,  # reused by later operations, which may run in other threads
        **kwargs,
    )


def open_reader(database: str, *, sqlite_waits: bool) -> ResilientConnection:
    """A read-only connection (it cannot set journal_mode: it uses the database's own);
    see :func:`despite_readonly_rollback`."""
    return despite_readonly_rollback(
        lambda: sqlite_resilient.connect(
            database, read_only=True, pragmas=busy_pragmas(sqlite_waits), check_same_thread=False
        )
    )


class Connections:
    """The connections of one process, kept open between the operations of one example:
    an operation takes an idle connection of its kind or opens one, and gives it back
    when it is done. Thread-safe; :meth:`close` ends them all (the machine's teardown).

    With ``shared``, every operation of a kind gets the same connection, whichever thread
    runs it and while others use it (threads sharing one connection, as a web application
    with a global connection does); kinds are then only writes of each transaction control,
    and reads, whatever their ``sqlite_waits``."""

    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._lock = threading.Lock()
        self._idle: defaultdict[tuple[object, ...], list[ResilientConnection]] = defaultdict(list)
        self._open: list[ResilientConnection] = []

    def take(self, database: str, journal: Mapping[str, object], op: Operation) -> tuple[ResilientConnection, bool]:
        """A connection for *op*, and whether it served an earlier operation."""
        kind = (op.kind[0], op.kind[2]) if self.shared else op.kind
        with self._lock:
            idle = self._idle[(database, *kind)]
            if idle:
                return (idle[0], True) if self.shared else (idle.pop(), True)
            if isinstance(op, Write):
                conn = open_writer(database, journal, sqlite_waits=op.sqlite_waits, control=op.control)
            else:
                conn = open_reader(database, sqlite_waits=op.sqlite_waits)
            self._open.append(conn)
            if self.shared:
                idle.append(conn)
        return conn, False

    def give_back(self, database: str, op: Operation, conn: ResilientConnection) -> None:
        if not self.shared:
            with self._lock:
                self._idle[(database, *op.kind)].append(conn)

    def close(self) -> int:
        """Close every connection; return how many there were."""
        with self._lock:
            conns, self._open = self._open, []
            self._idle.clear()
        for conn in conns:
            conn.close()
        return len(conns)


def check_rows(rows: list[Row]) -> tuple[dict[str, int], list[str]]:
    """Each ``txn`` in *rows* with its ``n``, and what is wrong with them: a doomed
    transaction visible, or a transaction without exactly ``seq`` 0 to ``n - 1`` once each."""
    groups: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
    for txn, seq, n in rows:
        groups[txn].append((seq, n))
    seen: dict[str, int] = {}
    violations: list[str] = []
    for txn, pairs in sorted(groups.items()):
        seqs = sorted(seq for seq, _ in pairs)
        counts = sorted({n for _, n in pairs})
        n = counts[0]
        if txn.endswith(DOOMED):
            violations.append(f"rows {seqs} of rolled-back transaction {txn!r} are visible")
        if len(counts) != 1 or seqs != list(range(n)):
            violations.append(f"transaction {txn!r} should show seq 0..{n - 1} once each, shows {seqs} (n {counts})")
        seen[txn] = n
    return seen, violations


def read_snapshot(conn: ResilientConnection, on_attempt: Callable[[], object] = lambda: None) -> list[Row]:
    """The rows of ``t`` in one read transaction, retried on lock errors. The table is read
    twice in the transaction; a difference is reported as an :class:`AssertionError`.
    ``SQLITE_READONLY_ROLLBACK`` is retried: see :func:`despite_readonly_rollback`."""

    @retry_on_lock(timeout=READ_BUDGET)
    def snapshot() -> tuple[list[Row], list[Row]]:
        on_attempt()
        with db_transaction(conn):
            first: list[Row] = conn.execute(SELECT_T).fetchall()
            second: list[Row] = conn.execute(SELECT_T).fetchall()
        return first, second

    first, second = despite_readonly_rollback(snapshot)
    if sorted(first) != sorted(second):
        raise AssertionError(f"two reads in one read transaction differ: {sorted(first)} != {sorted(second)}")
    return first


# -- the operations ----------------------------------------------------------------------------


def _insert(conn: ResilientConnection, txn: str, seqs: range, n: int) -> None:
    for seq in seqs:  # one statement per row: the transaction passes through partial states
        conn.execute("INSERT INTO t(txn, seq, n) VALUES (?, ?, ?)", (txn, seq, n))


def _count(conn: ResilientConnection, txn: str) -> int:
    count: int = conn.execute("SELECT count(*) FROM t WHERE txn = ?", (txn,)).fetchone()[0]
    return count


def _failing_savepoint(conn: ResilientConnection, op: Write) -> None:
    """A nested block that inserts rows with ``seq`` from ``n`` on, then fails."""
    with db_transaction(conn):
        _insert(conn, op.txn, range(op.n, op.n + op.doomed_rows), op.n)
        raise InnerFailure


@contextlib.contextmanager
def _begin_statement(conn: ResilientConnection) -> Iterator[None]:
    """A transaction begun by a ``BEGIN IMMEDIATE`` statement and ended by ``commit()``,
    or ``rollback()`` on an exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _script(conn: ResilientConnection, op: Write) -> None:
    """The transaction as one script: ``BEGIN IMMEDIATE``, the rows, ``COMMIT`` (a doomed
    one leaves its transaction open, and is rolled back)."""
    values = ", ".join(f"('{op.txn}', {seq}, {op.n})" for seq in range(op.n))
    commit = "COMMIT;" if op.commit else ""
    conn.executescript(f"BEGIN IMMEDIATE; INSERT INTO t(txn, seq, n) VALUES {values}; {commit}")
    if not op.commit:
        conn.rollback()


def _outer_block(conn: ResilientConnection, mode: str) -> contextlib.AbstractContextManager[object]:
    """The outer transaction of a write in *mode* (see :attr:`Write.mode`)."""
    if mode == "implicit":
        return conn
    if mode == "statement":
        return _begin_statement(conn)
    return db_transaction(conn, mode)  # type: ignore[arg-type]  # a TransactionMode string


def _write(conn: ResilientConnection, op: Write, outcome: Outcome) -> None:
    doomed = Doomed(op.txn)
    outer = op.n - op.in_savepoint

    @retry_on_lock(timeout=WRITE_BUDGET)
    def transaction() -> None:
        outcome.attempts += 1
        if op.mode == "script":
            left = _count(conn, op.txn)
            if left:
                outcome.violations.append(f"attempt {outcome.attempts} found {left} rows of an earlier attempt")
            _script(conn, op)
            if not op.commit:
                raise doomed
            return
        with _outer_block(conn, op.mode):
            # Read first: "deferred" then upgrades its read to a write, and an earlier
            # attempt's rows, had they not been rolled back, show here.
            left = _count(conn, op.txn)
            if left:
                outcome.violations.append(f"attempt {outcome.attempts} found {left} rows of an earlier attempt")
            _insert(conn, op.txn, range(outer), op.n)
            if op.doomed_rows:
                with contextlib.suppress(InnerFailure):
                    _failing_savepoint(conn, op)
                if _count(conn, op.txn) != outer:
                    outcome.violations.append("rows of the failed savepoint remain in the transaction")
            if op.in_savepoint:
                with db_transaction(conn):
                    _insert(conn, op.txn, range(outer, op.n), op.n)
            if not op.commit:
                raise doomed

    try:
        transaction()
    except Doomed as error:
        if error is not doomed:
            outcome.violations.append(f"the caller got another exception object than was raised: {error!r}")
        return
    outcome.committed = True


def _read(conn: ResilientConnection, outcome: Outcome) -> None:
    def attempt() -> None:
        outcome.attempts += 1

    outcome.seen, found = check_rows(read_snapshot(conn, attempt))
    outcome.violations.extend(found)


def run(
    connections: Connections, database: str, journal: Mapping[str, object], op: Operation, gate: Callable[[], object]
) -> Outcome:
    """Take a connection for *op*, call *gate* (the start line of a burst), run *op* and
    give the connection back (or close it if anything went wrong). Every exception is
    reported in the outcome, never raised; *gate* is called exactly once, whatever fails."""
    outcome = Outcome(op)
    gated = False
    with capturing() as capture:
        conn: ResilientConnection | None = None
        try:
            conn, outcome.reused = connections.take(database, journal, op)
            outcome.journal_mode = conn.journal_mode
            # Under autocommit=False Python always keeps a transaction open; a shared
            # connection may be in another thread's transaction right now.
            if conn.in_transaction and getattr(conn, "autocommit", None) is not False and not connections.shared:
                outcome.violations.append("the connection was left in a transaction by its previous operation")
            surfaced = conn.lock_stats.surfaced
            gated = True
            gate()
            if isinstance(op, Write):
                _write(conn, op, outcome)
            else:
                _read(conn, outcome)
            outcome.surfaced = conn.lock_stats.surfaced - surfaced
        except Exception as error:  # reported to the test, which fails on it
            outcome.error = f"{type(error).__name__}: {error}"
        finally:
            if not gated:
                gate()
            if conn is not None:
                if outcome.error is None or connections.shared:  # (others may be using a shared one)
                    connections.give_back(database, op, conn)
                else:
                    conn.close()
    outcome.retries = capture.retries
    outcome.lock_errors = capture.lock_errors
    outcome.readonly_rollbacks = capture.readonly_rollbacks
    return outcome


# -- processes -------------------------------------------------------------------------------------


def serve(commands: Connection) -> None:
    """A persistent worker process: run ``(database, journal, operation)`` commands.

    For each command it sends ``("ready", None)`` once it has its connection, waits for
    ``"go"``, runs the operation and sends ``("done", outcome)``. ``"close"`` closes its
    connections and answers ``("closed", how_many)``. ``None`` or a closed pipe ends it.
    Only pipes connect it to the test (no shared lock or event), so killing it can leave
    nothing locked.
    """
    install_hook()
    connections = Connections()

    def gate() -> None:
        commands.send(("ready", None))
        if not commands.poll(GATE_TIMEOUT) or commands.recv() != "go":
            raise TimeoutError("the burst did not start")

    try:
        while commands.poll(WORKER_IDLE):
            message = commands.recv()
            if message is None:
                return
            if message == "go":  # late, for a burst the test gave up on
                continue
            if message == "close":
                commands.send(("closed", connections.close()))
                continue
            database, journal, op = message
            commands.send(("done", run(connections, database, journal, op, gate)))
    except EOFError:
        return
    finally:
        connections.close()


@dataclass
class Summary:
    """What a background process did until it was stopped."""

    role: str
    loops: int = 0
    """Transactions done."""
    attempts: int = 0
    """Runs of the decorated transaction functions (more than ``loops``: whole retries)."""
    retries: int = 0
    """``retry_scheduled`` events."""
    readonly_rollbacks: int = 0
    """See :func:`despite_readonly_rollback`."""
    lock_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    journal_mode: str = ""


def _background(role: str, control: Connection, body: Callable[[Summary], None]) -> None:
    install_hook()
    summary = Summary(role)
    with capturing() as capture:
        try:
            body(summary)
        except Exception as error:  # reported to the test, which fails on it
            summary.errors.append(f"{type(error).__name__}: {error}")
    summary.retries = capture.retries
    summary.lock_errors = capture.lock_errors
    summary.readonly_rollbacks = capture.readonly_rollbacks
    control.send(summary)
    control.close()


def noise_writer(database: str, journal: Mapping[str, object], control: Connection) -> None:
    """Until told to stop through *control*: short retried write transactions on table
    ``noise``, every other one ``deferred`` (read, then write); then send a
    :class:`Summary` back."""

    def body(summary: Summary) -> None:
        with contextlib.closing(open_writer(database, journal, sqlite_waits=False)) as conn:
            summary.journal_mode = conn.journal_mode

            @retry_on_lock(timeout=WRITE_BUDGET)
            def write(i: int) -> None:
                summary.attempts += 1
                with db_transaction(conn, "deferred" if i % 2 else "immediate"):
                    conn.execute("SELECT count(*) FROM noise").fetchone()
                    conn.executemany("INSERT INTO noise(v) VALUES (?)", [(f"noise {i}.{k}",) for k in range(8)])
                    conn.execute("DELETE FROM noise WHERE id < (SELECT max(id) FROM noise) - 64")

            while not control.poll(PAUSE):
                write(summary.loops)
                summary.loops += 1

    _background("noise writer", control, body)


def table_reader(database: str, control: Connection) -> None:
    """Until told to stop through *control*: read transactions on a read-only connection,
    each checked with :func:`check_rows`; then send a :class:`Summary` back, with the
    first 20 violations found."""

    def body(summary: Summary) -> None:
        with contextlib.closing(open_reader(database, sqlite_waits=False)) as conn:
            summary.journal_mode = conn.journal_mode

            def attempt() -> None:
                summary.attempts += 1

            while not control.poll(PAUSE):
                try:
                    _, found = check_rows(read_snapshot(conn, attempt))
                except AssertionError as error:
                    found = [str(error)]
                if len(summary.violations) < 20:
                    summary.violations.extend(found)
                summary.loops += 1

    _background("table reader", control, body)


def rollback_writer(database: str, journal: Mapping[str, object], control: Connection) -> None:
    """Until told to stop through *control*: write transactions on ``noise`` that roll back;
    then send a :class:`Summary` back."""

    def body(summary: Summary) -> None:
        with contextlib.closing(open_writer(database, journal, sqlite_waits=True)) as conn:
            summary.journal_mode = conn.journal_mode
            control.send("started")
            while not control.poll(0):
                with contextlib.suppress(Doomed), db_transaction(conn):
                    conn.execute("INSERT INTO noise(v) VALUES ('rolled back')")
                    raise Doomed
                summary.loops += 1

    _background("rollback writer", control, body)
