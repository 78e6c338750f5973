"""Statement-level lock handling: retried only where nothing can have been applied.

Another *process* holds the lock (``lock_holder``). Where the library's own retry loop is
under test, ``busy_timeout=0`` turns SQLite's sleeping busy handler off so that every wait
is the library's.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import StartLockHolder, run_in_thread

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, ResilientConnection, is_lock_error

NO_SQLITE_WAIT = {"busy_timeout": 0}


def rows(path: Path) -> list[Any]:
    return sqlite3.connect(path).execute("SELECT x FROM t ORDER BY x").fetchall()


def run_in_thread_traced(
    conn: ResilientConnection, call: Callable[[], object]
) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Run ``call()`` in a thread; the event is set once the connection started a statement."""
    started = threading.Event()
    conn.set_trace_callback(lambda _sql: started.set())
    thread, outcome = run_in_thread(call)
    return thread, started, outcome


@pytest.mark.parametrize("pragmas", [NO_SQLITE_WAIT, {}], ids=["library-waits", "sqlite-waits"])
def test_insert_waits_for_a_lock_released_mid_wait(
    db: Path, lock_holder: StartLockHolder, pragmas: dict[str, int]
) -> None:
    """Outside a transaction, an INSERT that meets another process's write lock waits and
    succeeds once the lock is released, applied exactly once."""
    holder = lock_holder(db, "IMMEDIATE")
    conn = sqlite_resilient.connect(db, timeout=20, pragmas=pragmas, check_same_thread=False)

    def insert() -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()

    thread, started, outcome = run_in_thread_traced(conn, insert)
    assert started.wait(10)
    holder.release()
    thread.join(20)
    assert outcome == [None]
    assert rows(db) == [(1,)]


def test_spent_budget_raises_database_locked_error(db: Path, lock_holder: StartLockHolder) -> None:
    """A lock that outlives the budget ends in DatabaseLockedError: an OperationalError that
    says attempts, seconds and budget, with the last SQLite lock error as ``__cause__``."""
    lock_holder(db, "IMMEDIATE")
    conn = sqlite_resilient.connect(db, timeout=0.3, pragmas=NO_SQLITE_WAIT)
    with pytest.raises(DatabaseLockedError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    error = caught.value
    assert isinstance(error, sqlite3.OperationalError)
    assert is_lock_error(error)
    assert is_lock_error(error.__cause__)  # type: ignore[arg-type]
    assert error.attempts > 1
    assert error.budget == 0.3
    assert f"after {error.attempts} attempts" in str(error)
    assert "budget 0.3 s" in str(error)
    codes = vars(error.__cause__)  # SQLite's code and name, on Python 3.11+
    assert {k: v for k, v in vars(error).items() if k.startswith("sqlite_")} == codes
    assert codes.get("sqlite_errorname", "SQLITE_BUSY") == "SQLITE_BUSY"
    assert not conn.in_transaction
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)  # restored after the wait


def test_lock_inside_a_transaction_is_raised_at_once(db: Path) -> None:
    """Inside an open transaction a lock error is never retried: after SQLITE_BUSY_SNAPSHOT
    (another connection committed since this transaction read) the original error propagates
    at once, even with a 30 s budget, and the transaction stays the caller's to roll back."""
    conn = sqlite_resilient.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()
    other = sqlite3.connect(db)
    other.execute("INSERT INTO t VALUES (1)")
    other.commit()
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("INSERT INTO t VALUES (2)")
    assert is_lock_error(caught.value)
    assert not isinstance(caught.value, DatabaseLockedError)
    assert vars(caught.value).get("sqlite_errorname", "SQLITE_BUSY_SNAPSHOT") == "SQLITE_BUSY_SNAPSHOT"
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert rows(db) == [(1,)]


def test_commit_meeting_a_reader_is_retried_with_the_transaction_kept(
    tmp_path: Path, lock_holder: StartLockHolder
) -> None:
    """In rollback-journal mode a COMMIT waits for a reader's SHARED lock: the transaction
    stays open while the library retries, and commits once the reader is gone."""
    db = tmp_path / "rollback.db"
    setup = sqlite_resilient.connect(db, pragmas={"journal_mode": "delete"})
    setup.execute("CREATE TABLE t(x)")
    setup.commit()
    conn = sqlite_resilient.connect(
        db, timeout=20, pragmas={"journal_mode": "delete", **NO_SQLITE_WAIT}, check_same_thread=False
    )
    reader = lock_holder(db, "DEFERRED")  # holds SHARED: the COMMIT cannot take EXCLUSIVE
    committing = threading.Event()
    conn.set_trace_callback(lambda sql: committing.set() if sql == "COMMIT" else None)

    def write() -> None:  # in one thread: a transaction belongs to the thread that began it
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()

    thread, outcome = run_in_thread(write)
    assert committing.wait(10)
    reader.release()
    thread.join(20)
    assert outcome == [None]
    assert rows(db) == [(1,)]


def test_executemany_with_a_list_is_retried(db: Path, lock_holder: StartLockHolder) -> None:
    """``executemany`` over a list is retried when no row was changed; all rows land once."""
    holder = lock_holder(db, "IMMEDIATE")
    conn = sqlite_resilient.connect(db, timeout=20, pragmas=NO_SQLITE_WAIT, check_same_thread=False)

    def insert() -> None:
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        conn.commit()

    thread, started, outcome = run_in_thread_traced(conn, insert)
    assert started.wait(10)
    holder.release()
    thread.join(20)
    assert outcome == [None]
    assert rows(db) == [(1,), (2,), (3,)]


def test_executemany_with_an_iterator_is_not_retried(db: Path, lock_holder: StartLockHolder) -> None:
    """An iterator of parameters cannot be replayed: its lock error propagates unretried."""
    lock_holder(db, "IMMEDIATE")
    conn = sqlite_resilient.connect(db, timeout=30, pragmas=NO_SQLITE_WAIT)
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.executemany("INSERT INTO t VALUES (?)", iter([(1,), (2,)]))
    assert is_lock_error(caught.value)
    assert not isinstance(caught.value, DatabaseLockedError)


def test_executescript_is_never_retried(db: Path, lock_holder: StartLockHolder) -> None:
    """A script's earlier statements may have taken effect: its lock error propagates."""
    lock_holder(db, "IMMEDIATE")
    conn = sqlite_resilient.connect(db, timeout=30, pragmas=NO_SQLITE_WAIT)
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.executescript("CREATE TABLE u(y); INSERT INTO t VALUES (1);")
    assert is_lock_error(caught.value)
    assert not isinstance(caught.value, DatabaseLockedError)


def test_non_lock_errors_propagate_unchanged(db: Path) -> None:
    """Errors that are not lock errors are raised as they are, never retried or wrapped."""
    conn = sqlite_resilient.connect(db)
    with pytest.raises(sqlite3.OperationalError, match="no such table") as caught:
        conn.execute("SELECT * FROM missing")
    assert type(caught.value) is sqlite3.OperationalError
    conn.execute("CREATE TABLE u(id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO u VALUES (1)")
