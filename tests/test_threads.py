"""One connection shared by threads (``check_same_thread=False``): a transaction belongs to
the thread that began it.

While it is open, the other threads' statements and transactions on that connection wait
their turn (within their budget) and never join, nest in, commit or roll back it. The write
gate of the connection is settled from SQLite's own state after every call, so it is never
held when no transaction is open, whichever thread ended the transaction and however.

Threads are real threads on one real connection; contention comes from other connections
and helper processes holding real locks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import Recorder, StartLockHolder, counter, gate_is_free, make_counter_database, run_in_thread

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, ResilientConnection, db_transaction, retry_on_lock

THREADS = 4
JOIN_TIMEOUT = 30.0
THREAD_QUEUED = "sqlite_resilient.thread_queued"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_counter_database(tmp_path / "app.db")


@pytest.fixture
def shared() -> Iterator[Callable[..., ResilientConnection]]:
    """``shared(db, **kwargs)``: a connection that threads may share; closed at teardown."""
    opened: list[ResilientConnection] = []

    def open_shared(database: Path, **kwargs: Any) -> ResilientConnection:
        conn = sqlite_resilient.connect(database, check_same_thread=False, **kwargs)
        opened.append(conn)
        return conn

    try:
        yield open_shared
    finally:
        for conn in opened:
            conn.close()


def run_threads(count: int, work: Callable[[int], object]) -> list[BaseException]:
    """Run ``work(i)`` in *count* threads started together; return what they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            start.wait(JOIN_TIMEOUT)
            work(index)
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "a thread did not finish"
    return errors


def test_shared_connection_loses_no_acknowledged_write(db: Path, shared: Callable[..., ResilientConnection]) -> None:
    """The common global-connection pattern: threads each run ``@retry_on_lock`` around
    ``db_transaction`` reading a counter and writing it + 1. Every call that returned is
    committed exactly once, and nothing is left open (a second thread's block used to
    become a savepoint inside the first's transaction, so nothing was ever committed)."""
    conn = shared(db)
    increments = 40
    returned = [0] * THREADS

    @retry_on_lock
    def bump() -> None:
        with db_transaction(conn):
            (value,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (value + 1,))

    def work(index: int) -> None:
        for _ in range(increments):
            bump()
            returned[index] += 1

    assert run_threads(THREADS, work) == []
    assert sum(returned) == THREADS * increments
    assert counter(db) == THREADS * increments
    assert not conn.in_transaction
    assert gate_is_free(db)


def test_shared_connection_with_contention_leaves_the_gate_free(
    db: Path, shared: Callable[..., ResilientConnection], lock_holder: StartLockHolder
) -> None:
    """Threads sharing a connection write while another process holds SQLite's write lock
    for longer than their budget (so that their waits, for their turn, at the gate and for
    the lock, are given up), then once it is gone, retried by ``@retry_on_lock``:
    afterwards no transaction is open, the gate is free, and the counter holds exactly the
    increments whose calls returned."""
    conn = shared(db, timeout=0.3)
    committed = [0] * THREADS
    holder = lock_holder(db, "IMMEDIATE")
    between_rounds = threading.Barrier(THREADS + 1)

    def bump() -> None:
        with db_transaction(conn):
            (value,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (value + 1,))

    def work(index: int) -> None:
        for _ in range(3):
            with contextlib.suppress(DatabaseLockedError):
                bump()
                committed[index] += 1
        between_rounds.wait(JOIN_TIMEOUT)  # the test thread checks, then releases the lock
        between_rounds.wait(JOIN_TIMEOUT)
        for _ in range(10):
            retry_on_lock(timeout=JOIN_TIMEOUT)(bump)()
            committed[index] += 1

    thread, outcome = run_in_thread(lambda: run_threads(THREADS, work))
    between_rounds.wait(JOIN_TIMEOUT)
    assert not conn.in_transaction
    assert gate_is_free(db)
    holder.release()
    between_rounds.wait(JOIN_TIMEOUT)
    thread.join(JOIN_TIMEOUT)
    assert outcome == [[]]
    assert counter(db) == sum(committed) >= THREADS * 10
    assert not conn.in_transaction
    assert gate_is_free(db)


def queued_event(hook: Recorder) -> threading.Event:
    """An event set once a call waits for another thread's transaction (``thread_queued``)."""
    queued = threading.Event()
    hook.on_event = lambda event: queued.set() if event.name == THREAD_QUEUED else None
    return queued


def test_another_threads_statement_waits_for_the_transaction_to_end(
    db: Path, shared: Callable[..., ResilientConnection], hook: Recorder
) -> None:
    """While one thread's transaction is open, another thread's statement on the shared
    connection waits for it to end (reported as ``thread_queued``) instead of running
    inside it, where it would read the row that the transaction then rolls back."""
    conn = shared(db)
    queued = queued_event(hook)
    with contextlib.suppress(ZeroDivisionError), db_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        thread, outcome = run_in_thread(lambda: conn.execute("SELECT count(*) FROM t").fetchone())
        assert queued.wait(JOIN_TIMEOUT), outcome
        raise ZeroDivisionError  # roll the transaction back
    thread.join(JOIN_TIMEOUT)
    assert outcome == [(0,)]
    assert hook.failures == []


def test_another_threads_transaction_is_not_nested(
    db: Path, shared: Callable[..., ResilientConnection], hook: Recorder
) -> None:
    """A second thread's ``db_transaction`` begins its own transaction after the first
    thread's has ended, instead of becoming a savepoint inside it: the first thread's
    rollback does not take the second thread's row with it, and the second thread's
    commit does not commit the first thread's row."""
    conn = shared(db)
    queued = queued_event(hook)

    def write_two() -> None:
        with db_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")

    with contextlib.suppress(ZeroDivisionError), db_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        thread, outcome = run_in_thread(write_two)
        assert queued.wait(JOIN_TIMEOUT), outcome
        raise ZeroDivisionError  # the first thread's block fails: its transaction rolls back
    thread.join(JOIN_TIMEOUT)
    assert outcome == [None]
    assert [row[0] for row in conn.execute("SELECT x FROM t")] == [2]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit is new in Python 3.12")
def test_under_autocommit_false_reads_leave_the_transaction_to_the_first_writer(
    db: Path, shared: Callable[..., ResilientConnection], hook: Recorder
) -> None:
    """Under ``autocommit=False`` Python keeps a transaction open all the time: a thread
    that only reads (a dashboard, which never commits) does not make it its own, or every
    other thread would wait for it until its budget ran out. The first thread that writes
    makes it its own: the others wait until it commits."""
    conn = shared(db, autocommit=False, timeout=5)
    queued = queued_event(hook)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    thread, outcome = run_in_thread(lambda: conn.execute("SELECT count(*) FROM t").fetchone())
    thread.join(JOIN_TIMEOUT)
    assert outcome == [(0,)]
    assert not queued.is_set()  # it did not wait

    conn.execute("INSERT INTO t VALUES (1)")
    thread, outcome = run_in_thread(lambda: conn.execute("SELECT count(*) FROM t").fetchone())
    assert queued.wait(JOIN_TIMEOUT), outcome
    conn.commit()
    thread.join(JOIN_TIMEOUT)
    assert outcome == [(1,)]
    assert hook.failures == []


def test_plain_sqlite3_code_on_a_shared_connection(db: Path, shared: Callable[..., ResilientConnection]) -> None:
    """Code written for :mod:`sqlite3` (an INSERT opens the legacy mode's implicit
    transaction, ``commit()`` ends it) on a connection shared by threads: each thread's
    INSERT and commit are one transaction of its own."""
    conn = shared(db)
    increments = 50

    def work(index: int) -> None:
        for i in range(increments):
            conn.execute("INSERT INTO t VALUES (?)", (index * 1000 + i,))
            conn.commit()

    assert run_threads(THREADS, work) == []
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == THREADS * increments
    assert not conn.in_transaction
    assert gate_is_free(db)


def test_a_transaction_left_by_an_ended_thread_is_rolled_back(
    db: Path, shared: Callable[..., ResilientConnection]
) -> None:
    """A thread that ended with its transaction open can never commit it: the next thread
    that uses the connection rolls it back (and says so) instead of waiting its whole
    budget for it, or joining it."""
    conn = shared(db, timeout=5)

    def leave_open() -> None:
        conn.execute("INSERT INTO t VALUES (1)")

    thread, outcome = run_in_thread(leave_open)
    thread.join(JOIN_TIMEOUT)
    assert outcome == [None]
    with pytest.warns(sqlite_resilient.ResilientWarning, match="ended"):
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not conn.in_transaction
    assert gate_is_free(db)


def test_unshared_connections_are_refused_in_other_threads_as_in_sqlite3(db: Path) -> None:
    """With ``check_same_thread=True`` (the default) nothing changes: :mod:`sqlite3`
    refuses the connection in another thread."""
    with contextlib.closing(sqlite_resilient.connect(db)) as conn:
        thread, outcome = run_in_thread(lambda: conn.execute("SELECT 1"))
        thread.join(JOIN_TIMEOUT)
        (error,) = outcome
        assert isinstance(error, sqlite3.ProgrammingError)


def test_another_threads_rollback_leaves_a_half_read_cursor_readable(
    db: Path, shared: Callable[..., ResilientConnection]
) -> None:
    """One thread reads a query half-way; another thread writes and rolls back on the same
    connection: the first thread reads the rest. (:mod:`sqlite3` before 3.11 resets every
    cursor of the connection at ``rollback()``; a shared connection rolls back with a
    ``ROLLBACK`` statement, which SQLite lets pending reads survive.)"""
    conn = shared(db)
    cursor = conn.execute("SELECT x FROM seed ORDER BY x")
    assert cursor.fetchone() == (1,)

    def write_and_roll_back() -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.rollback()

    thread, outcome = run_in_thread(write_and_roll_back)
    thread.join(JOIN_TIMEOUT)
    assert outcome == [None]
    assert cursor.fetchall() == [(2,), (3,), (4,), (5,)]
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_another_threads_half_read_cursor_waits_for_the_transaction_to_end(
    db: Path, shared: Callable[..., ResilientConnection], hook: Recorder
) -> None:
    """A thread reading a query half-way goes on reading only when another thread's
    transaction on the connection has ended: it never reads that transaction's uncommitted
    rows (here appended to the table it reads, then rolled back). Fetching takes the
    thread's turn like a statement."""
    conn = shared(db)
    queued = queued_event(hook)
    cursor = conn.execute("SELECT x FROM seed ORDER BY rowid")
    assert cursor.fetchone() == (1,)
    with contextlib.suppress(ZeroDivisionError), db_transaction(conn):
        conn.execute("INSERT INTO seed VALUES (6)")
        thread, outcome = run_in_thread(cursor.fetchall)
        assert queued.wait(JOIN_TIMEOUT), outcome
        raise ZeroDivisionError  # roll back: row 6 never existed for anyone else
    thread.join(JOIN_TIMEOUT)
    assert outcome == [[(2,), (3,), (4,), (5,)]]
