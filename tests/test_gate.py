"""The write gate: the library's write transactions queue at ``<db>-writers``, first come,
first served.

Its purpose, fair and prompt hand-off of the write lock, is measured by
``benchmarks/contention.py`` and ``benchmarks/fairness.py``; these tests prove what it must
never break: transactions wait for it in the order they came and go on when it is released,
a gate held too long never outlasts the budget (SQLite's lock decides then), an exception
while waiting leaves nothing held, and databases where it cannot exist work without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import LockHolder, gate_is_free, run_in_thread

import sqlite_resilient
from sqlite_resilient import DEFAULT_SETTINGS, ResilientConnection, _gate, instrumentation
from sqlite_resilient._gate import WriteGate, _signals_deferred, open_gate

GATE_THREAD = "sqlite_resilient write gate"
WRITER_QUEUED = "sqlite_resilient.writer_queued"


@pytest.fixture
def connections() -> Iterator[Callable[..., ResilientConnection]]:
    """Open connections that are closed at teardown."""
    opened: list[ResilientConnection] = []

    def open_connection(*args: Any, **kwargs: Any) -> ResilientConnection:
        conn = sqlite_resilient.connect(*args, check_same_thread=False, **kwargs)
        opened.append(conn)
        return conn

    try:
        yield open_connection
    finally:
        for conn in opened:
            conn.close()


@pytest.fixture
def gate(db: Path) -> Iterator[WriteGate]:
    """A handle on the write gate of ``db``, as another connection of this process has."""
    handle = open_gate(str(db))
    assert handle is not None
    try:
        yield handle
    finally:
        handle.close()


def gate_of(db: Path) -> Path:
    return db.with_name(db.name + "-writers")


def is_free(gate: WriteGate) -> bool:
    """Whether *gate* could be taken now (it is let go again at once)."""
    taken = gate.try_acquire()
    gate.release()
    return taken


def rows(db: Path) -> list[Any]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT x FROM t ORDER BY x").fetchall()


def test_side_file_only_for_write_transactions(db: Path, connections: Callable[..., ResilientConnection]) -> None:
    """The side file appears with the first IMMEDIATE transaction, not for read-only
    connections, deferred transactions, or with ``writer_queue=False``."""
    reader = connections(db, read_only=True)
    with reader.transaction():
        reader.execute("SELECT count(*) FROM t").fetchone()
    unqueued = connections(db, settings=replace(DEFAULT_SETTINGS, writer_queue=False))
    with unqueued.transaction():
        unqueued.execute("INSERT INTO t VALUES (1)")
    writer = connections(db)
    with writer.transaction("deferred"):
        writer.execute("INSERT INTO t VALUES (2)")
    assert not gate_of(db).exists()
    with writer.transaction():
        writer.execute("INSERT INTO t VALUES (3)")
    assert gate_of(db).exists()
    assert rows(db) == [(1,), (2,), (3,)]


def test_second_writer_queues_at_the_gate_and_goes_on(
    db: Path, connections: Callable[..., ResilientConnection], events: list[instrumentation.Event]
) -> None:
    """While one connection's transaction holds the gate, another's queues *before* its
    BEGIN (reported as ``writer_queued``, counted as a lock wait) and begins once the first
    has committed."""
    first, second = connections(db), connections(db)
    statements: list[str] = []
    first.set_trace_callback(lambda sql: statements.append(f"first: {sql}"))
    second.set_trace_callback(lambda sql: statements.append(f"second: {sql}"))
    queued = threading.Event()
    instrumentation.set_hooks([events.append, lambda event: queued.set() if event.name == WRITER_QUEUED else None])
    outcome: list[object] = []

    def write() -> None:
        try:
            with second.transaction():
                second.execute("INSERT INTO t VALUES (2)")
            outcome.append("committed")
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=write)
    with first.transaction():
        first.execute("INSERT INTO t VALUES (1)")
        thread.start()
        assert queued.wait(10), outcome
    thread.join(20)
    assert outcome == ["committed"]
    assert statements.index("second: BEGIN IMMEDIATE") > statements.index("first: COMMIT")
    assert rows(db) == [(1,), (2,)]
    (event,) = [event for event in events if event.name == WRITER_QUEUED]
    assert isinstance(event, instrumentation.LockEvent)
    assert (event.operation, event.database) == ("BEGIN", str(db))
    stats = second.lock_stats
    assert (stats.waits, stats.retries, stats.surfaced) == (1, 0, 0)
    assert first.lock_stats.waits == 0


def test_gate_held_past_the_budget_leaves_it_to_sqlite(
    db: Path, connections: Callable[..., ResilientConnection], gate_holder: Callable[[Path], LockHolder]
) -> None:
    """A gate held by a process that does not hold SQLite's lock (stuck, or not a writer)
    delays a transaction by at most its budget; then SQLite's lock decides and, being free,
    lets it commit. The given-up waits leave nothing behind once the gate is released."""
    holder = gate_holder(db)
    conn = connections(db, timeout=0.3)
    for value in (1, 2, 3):
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (?)", (value,))
    assert rows(db) == [(1,), (2,), (3,)]
    holder.release()
    other = open_gate(str(db))
    assert other is not None
    try:
        assert other.acquire(10)  # queued behind the given-up waits, which let go of their places
    finally:
        other.close()
    with conn.transaction():  # and the gate works again
        conn.execute("INSERT INTO t VALUES (4)")
    assert rows(db) == [(1,), (2,), (3,), (4,)]


def test_waits_at_the_gate_reuse_the_waiter_threads(db: Path, connections: Callable[..., ResilientConnection]) -> None:
    """Writers that queue one after the other are served by the waiter threads already
    there: no thread is started per wait (a blocking lock call with a time limit needs one
    thread per wait in progress, not per wait)."""
    first, second = connections(db), connections(db)
    queued = threading.Event()
    instrumentation.set_hooks([lambda event: queued.set() if event.name == WRITER_QUEUED else None])
    counts = []
    for value in range(4):
        queued.clear()

        def write_second(value: int = value) -> None:
            with second.transaction():
                second.execute("INSERT INTO t VALUES (?)", (-value,))

        with first.transaction():
            first.execute("INSERT INTO t VALUES (?)", (value,))
            thread, outcome = run_in_thread(write_second)
            assert queued.wait(10), outcome
        thread.join(20)
        assert outcome == [None]
        counts.append(sum(thread.name == GATE_THREAD for thread in threading.enumerate()))
    assert counts[1:] == counts[:1] * 3


def test_no_gate_where_the_side_file_cannot_be_opened(
    db: Path, connections: Callable[..., ResilientConnection]
) -> None:
    """Where ``<db>-writers`` cannot be opened (here a directory is in the way), writers go
    without the gate; transactions work as before."""
    gate_of(db).mkdir()
    conn = connections(db)
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
    assert rows(db) == [(1,)]
    assert gate_of(db).is_dir()


def test_gate_is_released_when_begin_fails(
    db: Path, connections: Callable[..., ResilientConnection], lock_holder: Callable[[Path, str], LockHolder]
) -> None:
    """A BEGIN that cannot get SQLite's lock within the budget releases the gate: the next
    writer is not blocked by a transaction that never began."""
    holder = lock_holder(db, "IMMEDIATE")
    failing = connections(db, timeout=0.2)
    with pytest.raises(sqlite_resilient.DatabaseLockedError), failing.transaction():
        pass  # pragma: no cover - never entered
    holder.release()
    other = connections(db, timeout=5)
    thread_started = threading.active_count()
    with other.transaction():
        other.execute("INSERT INTO t VALUES (1)")
    assert threading.active_count() == thread_started  # taken at once: no waiter thread
    assert rows(db) == [(1,)]


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        ("BEGIN IMMEDIATE", "commit()"),
        ("begin exclusive transaction;", "rollback()"),
        ("  BEGIN IMMEDIATE", "COMMIT"),
        ("BEGIN IMMEDIATE", "END"),
    ],
)
def test_begin_statements_queue_at_the_gate_too(
    db: Path, connections: Callable[..., ResilientConnection], begin: str, end: str, gate: WriteGate
) -> None:
    """A write transaction begun by a statement (as SQLAlchemy sends ``BEGIN IMMEDIATE``)
    holds the gate like ``db_transaction``'s, and lets it go when it ends, whether by
    ``commit()``/``rollback()`` or by a COMMIT/END statement."""
    writer = connections(db, isolation_level=None)
    writer.execute(begin)
    assert writer.in_transaction
    assert not is_free(gate)
    writer.execute("INSERT INTO t VALUES (1)")
    if end.endswith("()"):
        getattr(writer, end[:-2])()
    else:
        writer.execute(end)
    assert not writer.in_transaction
    assert is_free(gate)


def test_a_begin_statement_seen_before_begins_again(
    db: Path, connections: Callable[..., ResilientConnection], gate: WriteGate
) -> None:
    """Statements are classified once per text: the same ``BEGIN IMMEDIATE`` again, as
    another string object (built at run time), begins the transaction again."""
    writer = connections(db, isolation_level=None)
    for n in range(2):
        writer.execute(" ".join(["BEGIN", "IMMEDIATE"]))
        assert not is_free(gate)
        writer.execute("INSERT INTO t VALUES (?)", (n,))
        writer.commit()
        assert is_free(gate)
    assert rows(db) == [(0,), (1,)]


def test_deferred_begin_statements_do_not_queue(
    db: Path, connections: Callable[..., ResilientConnection], gate: WriteGate
) -> None:
    """``BEGIN`` and ``BEGIN DEFERRED`` take no write lock at first, so no gate either."""
    writer = connections(db, isolation_level=None)
    for begin in ("BEGIN", "BEGIN DEFERRED", "BEGIN TRANSACTION"):
        writer.execute(begin)
        assert is_free(gate)
        writer.rollback()


@pytest.mark.parametrize(
    ("level", "begin"), [(None, "BEGIN IMMEDIATE"), ("IMMEDIATE", None)], ids=["statement", "implicit"]
)
def test_transactions_begun_by_statements_take_turns(
    db: Path,
    connections: Callable[..., ResilientConnection],
    events: list[instrumentation.Event],
    level: str | None,
    begin: str | None,
) -> None:
    """Two connections writing through ``BEGIN IMMEDIATE`` statements (as SQLAlchemy does),
    or through the legacy mode's implicit ``BEGIN IMMEDIATE`` (code written for
    :mod:`sqlite3`: an INSERT, then ``commit()``; the library sends that BEGIN itself), take
    turns at the gate: the second queues (``writer_queued``) and begins once the first has
    committed; both let the gate go at ``commit()``."""
    first, second = connections(db, isolation_level=level), connections(db, isolation_level=level)
    statements: list[str] = []
    first.set_trace_callback(lambda sql: statements.append(f"first: {sql}"))
    second.set_trace_callback(lambda sql: statements.append(f"second: {sql}"))
    queued = threading.Event()
    instrumentation.set_hooks([events.append, lambda event: queued.set() if event.name == WRITER_QUEUED else None])

    def write(conn: ResilientConnection, value: int) -> None:
        if begin is not None:
            conn.execute(begin)
        conn.execute("INSERT INTO t VALUES (?)", (value,))

    def write_second() -> None:
        write(second, 2)
        second.commit()

    write(first, 1)
    assert first.in_transaction
    thread, outcome = run_in_thread(write_second)
    assert queued.wait(10), outcome
    first.commit()
    thread.join(20)
    assert outcome == [None]
    assert statements.index("second: BEGIN IMMEDIATE") > statements.index("first: COMMIT")
    assert rows(db) == [(1,), (2,)]
    assert gate_is_free(db)


@pytest.mark.parametrize("level", [None, "", "DEFERRED"])
def test_implicit_transactions_that_take_no_write_lock_do_not_queue(
    db: Path, connections: Callable[..., ResilientConnection], level: str | None, gate: WriteGate
) -> None:
    """Autocommit (``isolation_level=None``) and deferred implicit transactions take no write
    lock at their BEGIN: they run as :mod:`sqlite3` runs them, without the gate."""
    writer = connections(db, isolation_level=level)
    writer.execute("INSERT INTO t VALUES (1)")
    assert writer.in_transaction is (level is not None)
    assert is_free(gate)
    writer.commit()


def test_a_failed_implicit_transaction_leaves_no_transaction_nor_gate(
    db: Path, connections: Callable[..., ResilientConnection], gate: WriteGate
) -> None:
    """A DML statement that fails having changed nothing (here it does not even compile,
    so :mod:`sqlite3` would have sent no BEGIN) leaves no transaction open and the gate
    free; one that failed after changing rows (``INSERT OR FAIL``) keeps its transaction
    open with those rows, as in :mod:`sqlite3`, and the gate until it ends."""
    conn = connections(db)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        conn.execute("INSERT INTO missing VALUES (1)")
    assert not conn.in_transaction
    assert is_free(gate)

    conn.execute("CREATE UNIQUE INDEX t_x ON t(x)")
    plain = sqlite3.connect(":memory:")
    plain.execute("CREATE TABLE t(x UNIQUE)")
    failing = "INSERT OR FAIL INTO t SELECT column1 FROM (VALUES (1), (2), (1))"
    for each in (conn, plain):
        with pytest.raises(sqlite3.IntegrityError):
            each.execute(failing)
        assert each.in_transaction
        assert each.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    plain.close()
    assert not is_free(gate)
    conn.commit()
    assert is_free(gate)
    assert rows(db) == [(1,), (2,)]


def test_implicit_transactions_of_executemany_queue_too(
    db: Path, connections: Callable[..., ResilientConnection], gate: WriteGate
) -> None:
    """``executemany`` of a DML statement begins its implicit transaction at the gate as
    well, and lets it go at ``commit()``."""
    writer = connections(db)
    writer.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    assert writer.in_transaction
    assert not is_free(gate)
    writer.commit()
    assert is_free(gate)
    assert rows(db) == [(1,), (2,)]


def test_a_queued_implicit_transaction_whose_statement_fails_is_rolled_back(
    db: Path, connections: Callable[..., ResilientConnection]
) -> None:
    """A writer that queued for the gate sends the implicit ``BEGIN`` itself; when its
    statement then fails having changed nothing, that transaction (no change, only the
    lock) is rolled back and the gate let go, as if :mod:`sqlite3` had begun nothing."""
    first, second = connections(db), connections(db)
    queued = threading.Event()
    instrumentation.set_hooks([lambda event: queued.set() if event.name == WRITER_QUEUED else None])
    first.execute("INSERT INTO t VALUES (1)")

    def fail() -> None:
        second.execute("INSERT INTO missing VALUES (2)")

    thread, outcome = run_in_thread(fail)
    assert queued.wait(10), outcome
    first.commit()
    thread.join(20)
    (error,) = outcome
    assert isinstance(error, sqlite3.OperationalError)
    assert "no such table" in str(error)
    assert not second.in_transaction
    assert gate_is_free(db)


@pytest.mark.parametrize(("level", "begin"), [("IMMEDIATE", "INSERT INTO t VALUES (1)"), (None, "BEGIN IMMEDIATE")])
def test_a_script_that_ends_the_transaction_lets_the_gate_go(
    db: Path, connections: Callable[..., ResilientConnection], level: str | None, begin: str, gate: WriteGate
) -> None:
    """``executescript`` commits a pending transaction first: the gate that transaction
    held is let go with it."""
    writer = connections(db, isolation_level=level)
    writer.execute(begin)
    assert not is_free(gate)
    writer.executescript("SELECT 1;")
    assert not writer.in_transaction
    assert is_free(gate)


@pytest.mark.parametrize("begin", ["implicit", "statement"])
def test_a_failed_attempt_lets_the_gate_of_its_transaction_go(
    tmp_path: Path,
    connections: Callable[..., ResilientConnection],
    lock_holder: Callable[[Path, str], LockHolder],
    begin: str,
) -> None:
    """A decorated call whose transaction (begun implicitly, or by a ``BEGIN IMMEDIATE``
    statement) fails on a lock rolls it back, and lets its turn at the gate go with it.
    Here a reader in the rollback journal keeps the COMMIT from getting its exclusive lock
    past the budget."""
    db = tmp_path / "app.db"
    writer = connections(
        db,
        timeout=0.3,
        pragmas={"journal_mode": "delete"},
        isolation_level=("IMMEDIATE" if begin == "implicit" else None),
    )
    writer.execute("CREATE TABLE t(x)")
    writer.commit()
    lock_holder(db, "DEFERRED")  # a read transaction: a shared lock

    @sqlite_resilient.retry_on_lock(timeout=0.3)
    def write() -> None:
        if begin == "statement":
            writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO t VALUES (1)")
        writer.commit()

    with pytest.raises(sqlite_resilient.DatabaseLockedError):
        write()
    assert not writer.in_transaction
    gate = open_gate(str(db))
    assert gate is not None
    assert gate.try_acquire()
    gate.close()


def test_with_conn_lets_the_gate_go_when_it_rolls_back(
    db: Path, connections: Callable[..., ResilientConnection], gate: WriteGate
) -> None:
    """``with conn:`` around an implicit transaction commits it, or rolls it back on an
    exception: either way the transaction's turn at the gate ends with it."""
    writer = connections(db)

    def write() -> None:
        with writer:
            writer.execute("INSERT INTO t VALUES (1)")
            assert not is_free(gate)
            raise ZeroDivisionError  # the application's error

    with pytest.raises(ZeroDivisionError):
        write()
    assert not writer.in_transaction
    assert is_free(gate)
    assert rows(db) == []


class Interrupted(Exception):
    """Raised by a signal handler, as a task queue's soft time limit or Ctrl-C would."""


def test_an_exception_while_queued_leaves_the_gate_free(
    db: Path, connections: Callable[..., ResilientConnection], gate_holder: Callable[[Path], LockHolder]
) -> None:
    """A signal handler that raises while a transaction waits at the gate (here SIGUSR1, sent
    once the wait is reported): the exception propagates, no transaction is open, and once
    the writer ahead lets the gate go it is free for every other writer: the given-up wait
    left nothing behind that takes it later."""
    holder = gate_holder(db)
    conn = connections(db)
    queued = threading.Event()
    instrumentation.set_hooks([lambda event: queued.set() if event.name == WRITER_QUEUED else None])
    main = threading.get_ident()

    def interrupt() -> None:
        if queued.wait(10):
            signal.pthread_kill(main, signal.SIGUSR1)

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        sender = threading.Thread(target=interrupt)
        sender.start()
        with pytest.raises(Interrupted), conn.transaction():
            pass  # pragma: no cover - never entered
        sender.join(10)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert queued.is_set()
    assert not conn.in_transaction
    holder.release()
    other = open_gate(str(db))
    assert other is not None
    try:
        assert other.acquire(10), "the gate stayed taken after the interrupted wait"
    finally:
        other.close()
    with conn.transaction():  # and the interrupted connection writes as before
        conn.execute("INSERT INTO t VALUES (1)")
    assert rows(db) == [(1,)]


@pytest.fixture
def ticketed(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a queued writer holds its ticket, its place in the line: its waiter thread
    takes it a moment after the writer is reported queued, under the lock of the counters'
    bytes (the line), which it lets go once the counter shows the ticket handed out."""
    event = threading.Event()
    real_ofd_lock = _gate.ofd_lock

    def ofd_lock(fd: int, kind: int, start: int, length: int, *, wait: bool = False) -> bool:
        done = real_ofd_lock(fd, kind, start, length, wait=wait)
        if kind == fcntl.F_UNLCK and (start, length) == _gate._LINE:
            event.set()
        return done

    monkeypatch.setattr(_gate, "ofd_lock", ofd_lock)
    return event


def test_a_writer_that_comes_straight_back_queues_behind_the_waiting_one(
    db: Path, connections: Callable[..., ResilientConnection], ticketed: threading.Event
) -> None:
    """First come, first served: while one writer holds the gate another queues; the first
    commits and at once begins its next transaction, which waits for the queued one
    instead of taking the gate again before the woken writer runs."""
    first, second = connections(db), connections(db)
    statements: list[str] = []
    first.set_trace_callback(lambda sql: statements.append(f"first: {sql}"))
    second.set_trace_callback(lambda sql: statements.append(f"second: {sql}"))
    queued = threading.Event()
    instrumentation.set_hooks([lambda event: queued.set() if event.name == WRITER_QUEUED else None])

    def write_second() -> None:
        with second.transaction():
            second.execute("INSERT INTO t VALUES (2)")

    with first.transaction():
        first.execute("INSERT INTO t VALUES (1)")
        thread, outcome = run_in_thread(write_second)
        assert queued.wait(10), outcome
        assert ticketed.wait(10), outcome  # until then, the first could still go first
    with first.transaction():  # straight back
        first.execute("INSERT INTO t VALUES (3)")
    thread.join(20)
    assert outcome == [None]
    begins = [sql for sql in statements if sql.endswith("BEGIN IMMEDIATE")]
    assert begins == ["first: BEGIN IMMEDIATE", "second: BEGIN IMMEDIATE", "first: BEGIN IMMEDIATE"]
    assert rows(db) == [(1,), (2,), (3,)]


def test_signals_are_held_back_while_the_gate_is_let_go() -> None:
    """The few system calls that let a queued writer's gate go run with signals blocked: a
    real signal sent meanwhile (its handler raises) is delivered when they are done, and
    the mask is as before."""
    delivered: list[str] = []

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    def let_go() -> None:
        with _signals_deferred():
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
            delivered.append("not yet")  # the handler has not run
        delivered.append("never: the signal arrives as the block ends")  # pragma: no cover

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(Interrupted):
            let_go()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert delivered == ["not yet"]
    assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
