"""``db_transaction`` / ``conn.transaction()``: BEGIN ... COMMIT, or ROLLBACK and re-raise.

Every test checks what reached the database file through a separate plain :mod:`sqlite3`
connection. Locks are held by other connections or by helper processes (``lock_holder``);
where the library's own retry loop is under test, ``busy_timeout=0`` turns SQLite's sleeping
busy handler off so that every wait is the library's.
"""

# Most tests raise inside the block that pytest.raises() watches: the block is what is tested.
# ruff: noqa: PT012

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import StartLockHolder, run_in_thread

import sqlite_resilient
from sqlite_resilient import (
    ConfigurationError,
    DatabaseLockedError,
    ResilientConnection,
    TransactionEndedError,
    db_transaction,
    instrumentation,
    is_lock_error,
)
from sqlite_resilient.instrumentation import LockEvent

NO_SQLITE_WAIT = {"busy_timeout": 0}
ROLLBACK_JOURNAL = {"journal_mode": "delete"}

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit is new in Python 3.12")

# Every transaction-control mode of sqlite3, as keyword arguments of connect().
CONTROL_MODES = [
    pytest.param({}, id="legacy-immediate"),  # connect() sets isolation_level="IMMEDIATE"
    pytest.param({"isolation_level": "DEFERRED"}, id="legacy-deferred"),
    pytest.param({"isolation_level": None}, id="isolation-none"),
    pytest.param({"autocommit": True}, id="autocommit-true", marks=needs_312),
    pytest.param({"autocommit": False}, id="autocommit-false", marks=needs_312),
]


class Boom(Exception):
    """An application error raised inside a block."""


@pytest.fixture
def rollback_db(tmp_path: Path) -> Path:
    """A rollback-journal (``journal_mode=delete``) database with an empty table ``t(x)``."""
    path = tmp_path / "rollback.db"
    with contextlib.closing(sqlite_resilient.connect(path, pragmas=ROLLBACK_JOURNAL)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
    return path


OpenConn = Callable[..., ResilientConnection]


@pytest.fixture
def open_conn() -> Iterator[OpenConn]:
    """``open_conn(db, **kwargs)`` is ``sqlite_resilient.connect``; closed at teardown."""
    opened: list[ResilientConnection] = []

    def open_(database: Path, **kwargs: Any) -> ResilientConnection:
        conn = sqlite_resilient.connect(database, **kwargs)
        opened.append(conn)
        return conn

    try:
        yield open_
    finally:
        for conn in opened:
            conn.close()


@pytest.fixture
def events() -> Iterator[list[LockEvent]]:
    """The lock events the library emits during the test (hooks restored after)."""
    seen: list[LockEvent] = []
    previous = instrumentation.get_hooks()

    def hook(event: object) -> None:
        if isinstance(event, LockEvent):
            seen.append(event)

    instrumentation.set_hooks([hook])
    try:
        yield seen
    finally:
        instrumentation.set_hooks(previous)


def rows(path: Path) -> list[Any]:
    """The committed rows of ``t``, read by a separate plain sqlite3 connection."""
    with contextlib.closing(sqlite3.connect(path)) as plain:
        return plain.execute("SELECT x FROM t ORDER BY x").fetchall()


def writer_is_locked_out(path: Path) -> bool:
    """Whether another connection cannot take the write lock now (``BEGIN IMMEDIATE``,
    no waiting); if it can, it gives the lock back at once."""
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as plain:
        try:
            plain.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            message = str(error)
        else:
            plain.execute("ROLLBACK")
            return False
    assert message == "database is locked"
    return True


def reader_is_locked_out(path: Path) -> bool:
    """Whether another connection cannot read now (no waiting)."""
    with contextlib.closing(sqlite3.connect(path, timeout=0)) as plain:
        try:
            plain.execute("SELECT count(*) FROM t").fetchone()
        except sqlite3.OperationalError as error:
            message = str(error)
        else:
            return False
    assert message == "database is locked"
    return True


def traced(conn: sqlite3.Connection) -> list[str]:
    """The statements *conn* runs from now on."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    return statements


def in_transaction_after_block(kwargs: dict[str, Any]) -> bool:
    """Under ``autocommit=False`` Python keeps a transaction open at all times."""
    return kwargs.get("autocommit") is False


# -- 1. commit / rollback in every transaction-control mode --------------------------------


@pytest.mark.parametrize("kwargs", CONTROL_MODES)
def test_block_commits_on_success(db: Path, open_conn: OpenConn, kwargs: dict[str, Any]) -> None:
    """A block that ends normally commits: nothing is visible to others inside it,
    everything after it; ``with`` gives the connection itself."""
    conn = open_conn(db, **kwargs)
    if not kwargs:
        assert conn.isolation_level == "IMMEDIATE"  # what connect() chose for legacy mode
    with conn.transaction() as inside:
        assert inside is conn
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("INSERT INTO t VALUES (2)")
        assert rows(db) == []
    assert rows(db) == [(1,), (2,)]
    assert conn.in_transaction is in_transaction_after_block(kwargs)


@pytest.mark.parametrize("kwargs", CONTROL_MODES)
def test_block_rolls_back_and_reraises_the_same_exception(
    db: Path, open_conn: OpenConn, kwargs: dict[str, Any]
) -> None:
    """An exception inside a block rolls back all its work and propagates as the very
    same object; the connection then runs the next block normally."""
    conn = open_conn(db, **kwargs)
    boom = Boom("application error")
    with pytest.raises(Boom) as caught, db_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise boom
    assert caught.value is boom
    assert rows(db) == []
    assert conn.in_transaction is in_transaction_after_block(kwargs)
    with db_transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert rows(db) == [(2,)]


@pytest.mark.parametrize("kwargs", CONTROL_MODES)
def test_block_takes_the_write_lock_at_entry(db: Path, open_conn: OpenConn, kwargs: dict[str, Any]) -> None:
    """In every mode the block begins IMMEDIATE: before it has written anything, another
    connection cannot take the write lock; after it, it can."""
    conn = open_conn(db, **kwargs)
    assert not writer_is_locked_out(db)
    with conn.transaction():
        assert writer_is_locked_out(db)
        conn.execute("INSERT INTO t VALUES (1)")
    assert not writer_is_locked_out(db)
    assert rows(db) == [(1,)]


@needs_312
def test_autocommit_false_block_replaces_the_empty_transaction(db: Path, open_conn: OpenConn) -> None:
    """Under ``autocommit=False`` with nothing pending (or only reads: a half-read cursor
    reads on), each block replaces Python's empty transaction by ``BEGIN IMMEDIATE`` (the
    write lock is taken at entry, every time) and commits; afterwards a transaction is open
    again, as that mode promises."""
    conn = open_conn(db, autocommit=False)
    assert conn.in_transaction
    statements = traced(conn)
    for value in (1, 2):
        reading = conn.execute("SELECT 1 UNION ALL SELECT 2")
        assert reading.fetchone() == (1,)
        with conn.transaction():
            assert writer_is_locked_out(db)
            conn.execute("INSERT INTO t VALUES (?)", (value,))
        assert rows(db) == [(v,) for v in range(1, value + 1)]
        assert conn.in_transaction
        assert reading.fetchall() == [(2,)]
    assert statements.count("BEGIN IMMEDIATE") == 2
    assert not writer_is_locked_out(db)


@needs_312
def test_autocommit_false_block_nests_in_pending_work(db: Path, open_conn: OpenConn) -> None:
    """Under ``autocommit=False`` work the caller did before the block is still pending
    when the block ends: the block nests as a savepoint and commits nothing. A failing
    block rolls back only its own rows."""
    conn = open_conn(db, autocommit=False)
    conn.execute("INSERT INTO t VALUES (1)")  # the caller's, not committed
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (2)")
    assert conn.in_transaction
    assert rows(db) == []
    boom = Boom()
    with pytest.raises(Boom) as caught, conn.transaction():
        conn.execute("INSERT INTO t VALUES (3)")
        raise boom
    assert caught.value is boom
    assert conn.in_transaction
    assert rows(db) == []
    conn.commit()
    assert rows(db) == [(1,), (2,)]
    assert conn.in_transaction


# -- 2. modes of the block -----------------------------------------------------------------


def test_deferred_mode_takes_the_write_lock_only_when_writing(db: Path, open_conn: OpenConn) -> None:
    """``mode="deferred"`` begins without the write lock: another writer can still take
    it until the block writes."""
    conn = open_conn(db)
    statements = traced(conn)
    with conn.transaction("deferred"):
        assert not writer_is_locked_out(db)
        conn.execute("SELECT count(*) FROM t").fetchone()
        assert not writer_is_locked_out(db)
        conn.execute("INSERT INTO t VALUES (1)")
        assert writer_is_locked_out(db)
    assert statements[0] == "BEGIN DEFERRED"
    assert rows(db) == [(1,)]


def test_default_mode_is_immediate(db: Path, open_conn: OpenConn) -> None:
    """``mode=None`` (the default) runs ``BEGIN IMMEDIATE`` and ``COMMIT``."""
    conn = open_conn(db, isolation_level=None)
    statements = traced(conn)
    with conn.transaction(None):
        conn.execute("INSERT INTO t VALUES (1)")
    assert statements == [
        "BEGIN IMMEDIATE",
        'SAVEPOINT "sqlite_resilient"',
        "INSERT INTO t VALUES (1)",
        'RELEASE "sqlite_resilient"',
        "COMMIT",
    ]


def test_exclusive_mode_locks_out_readers_in_rollback_journal_mode(rollback_db: Path, open_conn: OpenConn) -> None:
    """``mode="exclusive"`` takes the EXCLUSIVE lock at entry (in rollback-journal mode no
    other connection can even read), where ``immediate`` lets readers in; both commit."""
    conn = open_conn(rollback_db, pragmas=ROLLBACK_JOURNAL)
    with conn.transaction("immediate"):
        assert not reader_is_locked_out(rollback_db)
        assert writer_is_locked_out(rollback_db)
        conn.execute("INSERT INTO t VALUES (1)")
    with conn.transaction("exclusive"):
        assert reader_is_locked_out(rollback_db)
        conn.execute("INSERT INTO t VALUES (2)")
    assert not reader_is_locked_out(rollback_db)
    assert rows(rollback_db) == [(1,), (2,)]


@pytest.mark.parametrize("bad", ["IMMEDIATE ", "", "immediate; DROP TABLE t", "savepoint", 3, b"immediate"])
def test_bad_mode_raises_configuration_error_before_any_sql(db: Path, open_conn: OpenConn, bad: Any) -> None:
    """A mode that is not deferred/immediate/exclusive raises ConfigurationError (a
    ValueError) naming it, as soon as the block is made, before any SQL runs."""
    conn = open_conn(db)
    statements = traced(conn)
    for make in (conn.transaction, lambda mode: db_transaction(conn, mode)):
        with pytest.raises(ConfigurationError) as caught:
            make(bad)
        assert isinstance(caught.value, ValueError)
        assert repr(bad) in str(caught.value)
    assert statements == []
    assert not conn.in_transaction
    assert rows(db) == []


@pytest.mark.parametrize("not_a_connection", [None, "app.db", object()], ids=["None", "str", "object"])
def test_non_connection_raises_type_error(not_a_connection: Any) -> None:
    """``db_transaction`` needs a sqlite3.Connection: anything else is a TypeError that
    names what it got."""
    with pytest.raises(TypeError, match=type(not_a_connection).__name__):
        db_transaction(not_a_connection)


def test_cursor_is_not_a_connection(db: Path, open_conn: OpenConn) -> None:
    """A cursor is refused with TypeError too (a common slip)."""
    conn = open_conn(db)
    with pytest.raises(TypeError, match="Cursor"):
        db_transaction(conn.cursor())  # type: ignore[type-var]


# -- 3. nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", CONTROL_MODES)
def test_inner_error_rolls_back_only_the_inner_block(db: Path, open_conn: OpenConn, kwargs: dict[str, Any]) -> None:
    """A nested block is a savepoint: its error rolls back its rows only, and the outer
    block commits the rest."""
    conn = open_conn(db, **kwargs)
    boom = Boom()
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(Boom) as caught, conn.transaction():
            conn.execute("INSERT INTO t VALUES (2)")
            raise boom
        assert caught.value is boom
        assert conn.in_transaction
        conn.execute("INSERT INTO t VALUES (3)")
    assert rows(db) == [(1,), (3,)]
    assert conn.in_transaction is in_transaction_after_block(kwargs)


@pytest.mark.parametrize("kwargs", CONTROL_MODES)
def test_outer_error_rolls_back_a_finished_inner_block(db: Path, open_conn: OpenConn, kwargs: dict[str, Any]) -> None:
    """A nested block that succeeded commits nothing by itself: the outer block's error
    rolls back everything."""
    conn = open_conn(db, **kwargs)
    boom = Boom()
    with pytest.raises(Boom) as caught, conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (2)")
        assert rows(db) == []
        raise boom
    assert caught.value is boom
    assert rows(db) == []
    assert conn.in_transaction is in_transaction_after_block(kwargs)


def test_three_levels_deep(db: Path, open_conn: OpenConn) -> None:
    """Three nested blocks: the innermost failing one is undone alone, a failing middle
    one takes its finished inner block with it, and nothing is visible before the
    outermost block ends."""
    conn = open_conn(db)
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (2)")
            with pytest.raises(Boom), conn.transaction():
                conn.execute("INSERT INTO t VALUES (3)")
                raise Boom
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES (4)")
        with pytest.raises(Boom), conn.transaction():
            conn.execute("INSERT INTO t VALUES (5)")
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES (6)")
                with conn.transaction():
                    conn.execute("INSERT INTO t VALUES (7)")
            raise Boom
        assert rows(db) == []
    assert rows(db) == [(1,), (2,), (4,)]
    assert not conn.in_transaction


def test_block_inside_an_implicit_legacy_transaction_is_a_savepoint(db: Path, open_conn: OpenConn) -> None:
    """After a plain ``conn.execute("INSERT ...")`` (an implicit transaction of the legacy
    mode) a block nests as a SAVEPOINT and commits nothing: the caller's ``commit()``
    does, and then both rows appear together."""
    conn = open_conn(db)
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    statements = traced(conn)
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(Boom), conn.transaction():
        conn.execute("INSERT INTO t VALUES (3)")
        raise Boom
    assert conn.in_transaction
    assert rows(db) == []
    assert [s.split()[0] for s in statements if not s.startswith("INSERT")] == [
        "SAVEPOINT",
        "RELEASE",
        "SAVEPOINT",
        "ROLLBACK",
        "RELEASE",
    ]
    conn.commit()
    assert rows(db) == [(1,), (2,)]


# -- 4. read-only connections --------------------------------------------------------------


def test_read_only_block_is_a_consistent_snapshot(db: Path, open_conn: OpenConn) -> None:
    """On a read-only connection the default mode is deferred, and the block reads one
    snapshot: a row another connection commits between two SELECTs is not seen until the
    block ends."""
    with contextlib.closing(sqlite3.connect(db)) as writer:
        writer.execute("INSERT INTO t VALUES (1)")
        writer.commit()
        reader = open_conn(db, read_only=True)
        statements = traced(reader)
        with reader.transaction():
            first = reader.execute("SELECT x FROM t ORDER BY x").fetchall()
            writer.execute("INSERT INTO t VALUES (2)")
            writer.commit()
            second = reader.execute("SELECT x FROM t ORDER BY x").fetchall()
        assert first == second == [(1,)]
        assert statements[0] == "BEGIN DEFERRED"
        assert reader.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        assert not reader.in_transaction


# -- 5. plain sqlite3 connections ----------------------------------------------------------

PLAIN_MODES = [
    pytest.param({}, id="legacy"),
    pytest.param({"isolation_level": None}, id="isolation-none"),
    pytest.param({"autocommit": True}, id="autocommit-true", marks=needs_312),
]


@pytest.mark.parametrize("kwargs", PLAIN_MODES)
def test_plain_connection_commits_rolls_back_and_nests(db: Path, kwargs: dict[str, Any]) -> None:
    """``db_transaction`` works on a plain sqlite3.Connection: it takes the write lock at
    entry, commits, rolls back (re-raising the same object) and nests as savepoints."""
    with contextlib.closing(sqlite3.connect(db, **kwargs)) as plain:
        with db_transaction(plain) as inside:
            assert inside is plain
            assert writer_is_locked_out(db)
            plain.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(Boom), db_transaction(plain):
                plain.execute("INSERT INTO t VALUES (2)")
                raise Boom
            with db_transaction(plain):
                plain.execute("INSERT INTO t VALUES (3)")
            assert rows(db) == []
        assert rows(db) == [(1,), (3,)]
        boom = Boom()
        with pytest.raises(Boom) as caught, db_transaction(plain):
            plain.execute("INSERT INTO t VALUES (4)")
            raise boom
        assert caught.value is boom
        assert rows(db) == [(1,), (3,)]
        assert not plain.in_transaction


@needs_312
def test_plain_autocommit_false_connection_never_commits_pending_work(db: Path) -> None:
    """On a plain connection with ``autocommit=False`` a block cannot know whether the open
    transaction holds the caller's work: it must not commit it; the caller's commit()
    does."""
    kwargs: dict[str, Any] = {"autocommit": False}
    with contextlib.closing(sqlite3.connect(db, **kwargs)) as plain:
        plain.execute("INSERT INTO t VALUES (1)")
        with db_transaction(plain):
            plain.execute("INSERT INTO t VALUES (2)")
        with pytest.raises(Boom), db_transaction(plain):
            plain.execute("INSERT INTO t VALUES (3)")
            raise Boom
        assert plain.in_transaction
        assert rows(db) == []
        plain.commit()
        assert rows(db) == [(1,), (2,)]


# -- 6. BEGIN waits for the write lock within the budget -----------------------------------


@pytest.mark.parametrize("pragmas", [NO_SQLITE_WAIT, {}], ids=["library-waits", "sqlite-waits"])
def test_begin_waits_for_a_lock_released_mid_wait(
    db: Path, open_conn: OpenConn, lock_holder: StartLockHolder, events: list[LockEvent], pragmas: dict[str, int]
) -> None:
    """Entering a block while another process holds the write lock waits (in the library's
    retry loop, or in SQLite's busy handler) and goes on once the lock is released: the
    block's row lands exactly once."""
    holder = lock_holder(db, "IMMEDIATE")
    conn = open_conn(db, timeout=20, pragmas=pragmas, check_same_thread=False)
    at_begin = threading.Event()
    retrying = threading.Event()
    conn.set_trace_callback(lambda sql: at_begin.set() if sql.startswith("BEGIN") else None)

    def hook(event: object) -> None:
        if isinstance(event, LockEvent):
            events.append(event)
            if event.name == "sqlite_resilient.retry_scheduled":
                retrying.set()

    instrumentation.set_hooks([hook])

    def block() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (1)")

    thread, outcome = run_in_thread(block)
    assert at_begin.wait(10)
    if pragmas:  # the library's loop: it has met the lock and scheduled a retry
        assert retrying.wait(10)
    holder.release()
    thread.join(20)
    assert not thread.is_alive()
    assert outcome == [None]
    assert rows(db) == [(1,)]
    assert not conn.in_transaction
    assert conn.lock_stats.surfaced == 0
    if pragmas:
        assert conn.lock_stats.waits == 1
        assert conn.lock_stats.retries >= 1
        assert [e.name for e in events][-1] == "sqlite_resilient.lock_waited"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="legacy-immediate"),
        pytest.param({"isolation_level": None}, id="isolation-none"),
        pytest.param({"autocommit": False}, id="autocommit-false", marks=needs_312),
    ],
)
def test_begin_gives_up_when_the_budget_is_spent(
    db: Path, open_conn: OpenConn, lock_holder: StartLockHolder, events: list[LockEvent], kwargs: dict[str, Any]
) -> None:
    """A lock that outlives the budget: entering the block raises DatabaseLockedError (the
    last SQLite lock error as ``__cause__``), the body never runs, and no transaction is
    left open (under ``autocommit=False``: Python's empty one is, as that mode promises)."""
    holder = lock_holder(db, "IMMEDIATE")
    conn = open_conn(db, timeout=0.3, **kwargs)
    ran: list[bool] = []
    with pytest.raises(DatabaseLockedError) as caught, conn.transaction():
        ran.append(True)
    error = caught.value
    assert isinstance(error, sqlite3.OperationalError)
    assert is_lock_error(error.__cause__)  # type: ignore[arg-type]
    assert error.budget == 0.3
    assert ran == []
    assert conn.in_transaction is in_transaction_after_block(kwargs)
    assert conn.lock_stats.surfaced == 1
    holder.release()
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
    assert rows(db) == [(1,)]


# -- 7. disk full --------------------------------------------------------------------------

DISK_LEFT = 200 * 1024  # bytes the filler leaves free on the 1 MiB tmpfs
BLOB = bytes(8192)
BLOBS = 100  # 800 KiB: well past what is left


@pytest.mark.mounts
@pytest.mark.parametrize("journal", [{}, ROLLBACK_JOURNAL], ids=["wal", "delete"])
@pytest.mark.parametrize("where", ["inside", "commit"])
def test_disk_full_rolls_back_and_reraises_sqlites_error(
    tmpfs_mount: Path, journal: dict[str, str], where: str
) -> None:
    """On a full disk SQLite raises SQLITE_FULL, inside the block (a small page cache
    spills to disk) or at COMMIT (everything fits in the cache), and rolls the transaction
    back itself: the block re-raises that very error (never "cannot rollback - no
    transaction is active"), nothing of the block is in the file, the file is intact, and
    once space is freed the same connection commits a new block."""
    path = tmpfs_mount / "full.db"
    pragmas: dict[str, Any] = {**journal, **({"cache_size": 20} if where == "inside" else {})}
    with contextlib.closing(sqlite_resilient.connect(path, pragmas=pragmas)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
        filler = tmpfs_mount / "filler"
        stats = os.statvfs(tmpfs_mount)
        filler.write_bytes(bytes(stats.f_bavail * stats.f_frsize - DISK_LEFT))

        raised_inside: list[sqlite3.OperationalError] = []
        with pytest.raises(sqlite3.OperationalError) as caught, conn.transaction():
            conn.execute("INSERT INTO t VALUES ('small')")
            try:
                conn.executemany("INSERT INTO t VALUES (?)", [(BLOB,)] * BLOBS)
            except sqlite3.OperationalError as error:
                raised_inside.append(error)
                raise
        full = caught.value
        assert str(full) == "database or disk is full"
        assert getattr(full, "sqlite_errorname", "SQLITE_FULL") == "SQLITE_FULL"
        assert getattr(full, "__notes__", []) == []  # rolling back did not fail
        if where == "inside":
            assert raised_inside
            assert full is raised_inside[0]
        else:
            assert raised_inside == []
        assert not conn.in_transaction

        with contextlib.closing(sqlite3.connect(path)) as plain:
            assert plain.execute("SELECT count(*) FROM t").fetchone() == (0,)
            assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

        filler.unlink()
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES ('after')")
        assert rows(path) == [("after",)]
        with contextlib.closing(sqlite3.connect(path)) as plain:
            assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- 8. the transaction ended inside the block ---------------------------------------------

END_CASES = ["commit", "commit-then-write", "rollback", "swallowed-rollback", "swallowed-rollback-then-write"]


def _end_cases() -> list[Any]:
    """(connect kwargs, case) pairs."""
    params: list[Any] = []
    modes: list[tuple[str, dict[str, Any], list[Any]]] = [
        ("legacy-immediate", {}, []),
        ("legacy-deferred", {"isolation_level": "DEFERRED"}, []),
        ("isolation-none", {"isolation_level": None}, []),
        ("autocommit-true", {"autocommit": True}, [needs_312]),
        ("autocommit-false", {"autocommit": False}, [needs_312]),
    ]
    for name, kwargs, marks in modes:
        for case in END_CASES:
            if name == "autocommit-true" and case in ("commit", "commit-then-write", "rollback"):
                continue  # commit()/rollback() do nothing there (see the test below)
            params.append(pytest.param(kwargs, case, id=f"{name}-{case}", marks=marks))
    return params


@pytest.fixture
def unique_db(tmp_path: Path) -> Path:
    """A WAL database with a table ``t(x INTEGER PRIMARY KEY)`` holding the row 0."""
    path = tmp_path / "unique.db"
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (0)")
        conn.commit()
    return path


@pytest.mark.parametrize(("kwargs", "case"), _end_cases())
def test_transaction_ended_inside_the_block(
    unique_db: Path, open_conn: OpenConn, kwargs: dict[str, Any], case: str
) -> None:
    """A block whose transaction ended inside it (``commit()``/``rollback()`` called in it,
    or SQLite rolled back after an error the block swallowed: here ``INSERT OR ROLLBACK``
    on a duplicate key) cannot commit what it was meant to: it ends with
    TransactionEndedError, an OperationalError that says what happened. A write after the
    end that opened a new transaction (legacy mode, ``autocommit=False`` after ``commit()``)
    is rolled back; one that ran in autocommit mode was committed on its own already."""
    conn = open_conn(unique_db, **kwargs)
    with pytest.raises(TransactionEndedError) as caught, conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        if case.startswith("commit"):
            conn.commit()
        elif case == "rollback":
            conn.rollback()
        else:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute("INSERT OR ROLLBACK INTO t VALUES (0)")
        if case.endswith("-then-write"):
            conn.execute("INSERT INTO t VALUES (2)")
    error = caught.value
    assert isinstance(error, sqlite3.OperationalError)
    message = str(error)
    assert "transaction of this db_transaction block ended inside it" in message
    assert "commit()" in message
    assert "rollback()" in message
    assert "error" in message
    committed = [(0,), (1,)] if case.startswith("commit") else [(0,)]
    autocommitting = kwargs.get("isolation_level", "") is None or kwargs.get("autocommit") is True
    # Python reopens the transaction of autocommit=False after commit(), not after SQLite's rollback
    autocommitting |= kwargs.get("autocommit") is False and case.startswith("swallowed")
    if case.endswith("-then-write") and autocommitting:
        committed.append((2,))
    assert rows(unique_db) == committed
    assert conn.in_transaction == (kwargs.get("autocommit") is False)


@needs_312
def test_autocommit_true_commit_inside_the_block_does_nothing(unique_db: Path, open_conn: OpenConn) -> None:
    """Under ``autocommit=True`` ``commit()`` does nothing (Python's rule), so calling it
    inside a block ends nothing: the block commits everything at its end."""
    conn = open_conn(unique_db, autocommit=True)
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert conn.in_transaction
        assert rows(unique_db) == [(0,)]
        conn.execute("INSERT INTO t VALUES (2)")
    assert rows(unique_db) == [(0,), (1,), (2,)]


@needs_312
def test_autocommit_false_keeps_a_transaction_open_after_transaction_ended_error(
    unique_db: Path, open_conn: OpenConn
) -> None:
    """Under ``autocommit=False`` a transaction is open again after TransactionEndedError,
    as after any other end of a block."""
    conn = open_conn(unique_db, autocommit=False)
    with pytest.raises(TransactionEndedError), conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT OR ROLLBACK INTO t VALUES (0)")
    assert conn.in_transaction


# -- 9. KeyboardInterrupt ------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_keyboard_interrupt_rolls_back_and_propagates(db: Path, open_conn: OpenConn, nested: bool) -> None:
    """A KeyboardInterrupt (not an Exception) inside a block, nested or not, rolls
    everything back and propagates as the same object."""
    conn = open_conn(db)
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught, conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
        if nested:
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES (2)")
                raise interrupt
        raise interrupt
    assert caught.value is interrupt
    assert rows(db) == []
    assert not conn.in_transaction


# -- 10. COMMIT meeting a reader in rollback-journal mode ----------------------------------


def test_commit_meeting_a_reader_waits_and_commits(
    rollback_db: Path, open_conn: OpenConn, lock_holder: StartLockHolder, events: list[LockEvent]
) -> None:
    """In rollback-journal mode the block's COMMIT waits for a reader's SHARED lock: the
    library retries it with the transaction kept, and commits once the reader is gone."""
    conn = open_conn(rollback_db, timeout=20, pragmas={**ROLLBACK_JOURNAL, **NO_SQLITE_WAIT}, check_same_thread=False)
    reader = lock_holder(rollback_db, "DEFERRED")  # SHARED: COMMIT cannot take EXCLUSIVE
    retrying = threading.Event()

    def hook(event: object) -> None:
        if isinstance(event, LockEvent):
            events.append(event)
            if event.name == "sqlite_resilient.retry_scheduled" and event.operation == "commit":
                retrying.set()

    instrumentation.set_hooks([hook])

    def block() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (1)")

    thread, outcome = run_in_thread(block)
    assert retrying.wait(10)
    assert thread.is_alive()
    reader.release()
    thread.join(20)
    assert not thread.is_alive()
    assert outcome == [None]
    assert rows(rollback_db) == [(1,)]
    assert not conn.in_transaction
    assert conn.lock_stats.surfaced == 0
    assert [e.name for e in events][-1] == "sqlite_resilient.lock_waited"


def test_commit_meeting_a_reader_past_the_budget_rolls_back(
    rollback_db: Path, open_conn: OpenConn, lock_holder: StartLockHolder
) -> None:
    """A COMMIT that a reader blocks for longer than the budget ends in
    DatabaseLockedError; the block's work is rolled back, not left pending."""
    conn = open_conn(rollback_db, timeout=0.3, pragmas=ROLLBACK_JOURNAL)
    reader = lock_holder(rollback_db, "DEFERRED")
    with pytest.raises(DatabaseLockedError) as caught, conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
    assert is_lock_error(caught.value.__cause__)  # type: ignore[arg-type]
    assert not conn.in_transaction
    reader.release()
    assert rows(rollback_db) == []
    assert not writer_is_locked_out(rollback_db)


def test_savepoints_have_one_name(db: Path, open_conn: OpenConn) -> None:
    """Every block's savepoint has the same name, so every transaction sends the same
    statements (which :mod:`sqlite3` keeps prepared in its statement cache, and which do not
    push the caller's statements out of it); each block still releases its own (the
    innermost of that name), also on a plain :mod:`sqlite3` connection."""
    statements: list[str] = []
    conn = open_conn(db)
    conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
    conn.commit()
    plain = sqlite3.connect(db, isolation_level=None)
    try:
        for each in (conn, plain):
            each.set_trace_callback(statements.append)
            for value in (1, 2):
                with db_transaction(each):
                    each.execute("INSERT INTO t VALUES (?)", (value,))
                    with db_transaction(each):
                        each.execute("INSERT INTO t VALUES (?)", (value * 10,))
            each.set_trace_callback(None)
    finally:
        plain.close()
    savepoints = [sql for sql in statements if sql.startswith(("SAVEPOINT", "RELEASE"))]
    once = [
        'SAVEPOINT "sqlite_resilient"',
        'SAVEPOINT "sqlite_resilient"',
        'RELEASE "sqlite_resilient"',
        'RELEASE "sqlite_resilient"',
    ]
    assert savepoints == once * 4
    assert sorted(row[0] for row in conn.execute("SELECT x FROM t")) == [1, 1, 2, 2, 10, 10, 20, 20]


@needs_312
def test_autocommit_false_block_keeps_a_blob_write_made_before_it(db: Path, open_conn: OpenConn) -> None:
    """Under ``autocommit=False`` a blob written through ``blobopen`` is pending work of
    Python's open transaction (no row count shows it): a block after it nests in that
    transaction instead of replacing it, and ``commit()`` keeps both."""
    conn = open_conn(db, autocommit=False)
    conn.execute("CREATE TABLE b(data BLOB)")
    conn.execute("INSERT INTO b VALUES (zeroblob(4))")
    conn.commit()
    with conn.blobopen("b", "data", 1) as blob:
        blob.write(b"abcd")
    with db_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    with contextlib.closing(sqlite3.connect(db)) as plain:
        assert plain.execute("SELECT data FROM b").fetchall() == [(b"abcd",)]
    assert rows(db) == [(1,)]


@needs_312
@pytest.mark.parametrize("fails", [False, True], ids=["commits", "rolls-back"])
def test_with_conn_under_autocommit_false_ends_the_transaction_once(db: Path, open_conn: OpenConn, fails: bool) -> None:
    """``with conn:`` under ``autocommit=False`` sends what :mod:`sqlite3` sends: one
    COMMIT (or ROLLBACK) and the BEGIN of the next transaction."""
    sent: dict[str, list[str]] = {}
    autocommit: dict[str, Any] = {"autocommit": False}  # (typeshed before 3.12 has no autocommit)
    plain = sqlite3.connect(db, **autocommit)
    for name, conn in (("plain", plain), ("resilient", open_conn(db, autocommit=False))):
        statements = traced(conn)
        with contextlib.suppress(Boom), conn:
            conn.execute("INSERT INTO t VALUES (1)")
            if fails:
                raise Boom
        conn.set_trace_callback(None)
        sent[name] = statements
        if name == "plain":
            conn.close()
    assert sent["resilient"] == sent["plain"]
    assert sent["plain"][1:] == ["ROLLBACK" if fails else "COMMIT", "BEGIN"]
