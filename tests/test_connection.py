"""connect() and ResilientConnection: every sqlite3 keyword, the proxy's protocols, pragmas."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import os
import pickle
import sqlite3
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import StartLockHolder

import sqlite_resilient
from sqlite_resilient import (
    ConfigurationError,
    DatabaseLockedError,
    PragmaNotAppliedWarning,
    ResilientConnection,
    ResilientCursor,
    Settings,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


def table(conn: sqlite3.Connection) -> list[Any]:
    return conn.execute("SELECT x FROM t ORDER BY x").fetchall()


# -- every sqlite3.connect keyword ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike"])
def test_database_as_str_bytes_and_pathlike(db: Path, kind: str) -> None:
    """The database may be named as str, bytes or os.PathLike, as for sqlite3.connect."""
    names: dict[str, str | bytes | Path] = {"str": str(db), "bytes": os.fsencode(db), "pathlike": db}
    name = names[kind]
    conn = sqlite_resilient.connect(name)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    assert conn.database_path == str(db)
    assert conn.journal_mode == "wal"
    conn.close()
    assert db.exists()


def test_memory_database_keeps_memory_journal_without_warning() -> None:
    """``:memory:`` needs no WAL: journal_mode stays "memory", the reason says why, no warning."""
    conn = sqlite_resilient.connect(":memory:")
    assert conn.journal_mode == "memory"
    assert conn.journal_mode_reason == "in-memory database"
    assert conn.database_path is None
    assert conn.filesystem is None
    assert conn.pragmas["foreign_keys"] is True
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert table(conn) == [(1,)]


def test_uri_file_database_with_parameters(tmp_path: Path) -> None:
    """``uri=True`` with a ``file:`` URI opens that file, keeping its parameters."""
    path = tmp_path / "a b#c.db"
    conn = sqlite_resilient.connect("file:" + str(tmp_path / "a%20b%23c.db") + "?cache=private", uri=True)
    assert conn.database_path == str(path)
    assert conn.journal_mode == "wal"
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["a b#c.db"]


def test_uri_memory_database() -> None:
    """A ``file::memory:`` URI and a ``mode=memory`` URI are in-memory databases."""
    for uri in ("file::memory:", "file:shared?mode=memory&cache=shared"):
        conn = sqlite_resilient.connect(uri, uri=True)
        assert conn.journal_mode_reason == "in-memory database"
        assert conn.journal_mode == "memory"
        conn.close()


def test_detect_types_converts_declared_types(db: Path) -> None:
    """``detect_types`` reaches sqlite3: registered converters run on declared types."""
    sqlite3.register_converter("STAMP", lambda b: datetime.date.fromisoformat(b.decode()))
    conn = sqlite_resilient.connect(db, detect_types=sqlite_resilient.PARSE_DECLTYPES)
    conn.execute("CREATE TABLE t(d STAMP)")
    conn.execute("INSERT INTO t VALUES ('2026-11-27')")
    assert conn.execute("SELECT d FROM t").fetchone()[0] == datetime.date(2026, 11, 27)


def test_implicit_transactions_begin_immediate(db: Path) -> None:
    """Without isolation_level/autocommit, the implicit BEGIN of DML is ``BEGIN IMMEDIATE``."""
    conn = sqlite_resilient.connect(db)
    assert conn.isolation_level == "IMMEDIATE"
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert "BEGIN IMMEDIATE" in statements


def test_read_only_connections_have_no_implicit_transactions(db: Path) -> None:
    """A read-only connection's statements that would open an implicit transaction are
    writes, which it refuses: no ``BEGIN`` is left open behind them, so later reads see
    later commits (an open one would pin a stale snapshot, and the WAL behind it)."""
    with contextlib.closing(sqlite_resilient.connect(db)) as writer:
        writer.execute("CREATE TABLE t(x)")
        writer.commit()
        with contextlib.closing(sqlite_resilient.connect(db, read_only=True)) as reader:
            assert reader.isolation_level is None
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.execute("INSERT INTO t VALUES (1)")
            assert not reader.in_transaction
            assert table(reader) == []
            writer.execute("INSERT INTO t VALUES (2)")
            writer.commit()
            assert table(reader) == [(2,)]
        with contextlib.closing(sqlite_resilient.connect(db, read_only=True, isolation_level="")) as chosen:
            level: str | None = chosen.isolation_level
            assert level == ""  # the caller's choice is kept


@pytest.mark.parametrize("level", [None, "DEFERRED", "EXCLUSIVE", ""])
def test_explicit_isolation_level_is_kept(db: Path, level: str | None) -> None:
    """An isolation_level chosen by the caller is used as given, never replaced."""
    conn = sqlite_resilient.connect(db, isolation_level=level)
    assert conn.isolation_level == level
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert table(conn) == [(1,)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit is new in Python 3.12")
@pytest.mark.parametrize("autocommit", [True, False])
def test_autocommit_is_applied_after_set_up(db: Path, autocommit: bool) -> None:
    """``autocommit`` (3.12+) takes effect, and set-up still switched the file to WAL."""
    conn = sqlite_resilient.connect(db, autocommit=autocommit)
    assert conn.autocommit is autocommit  # type: ignore[attr-defined,unused-ignore]
    assert conn.in_transaction is (not autocommit)
    assert conn.journal_mode == "wal"
    assert conn.pragmas["foreign_keys"] is True  # a no-op inside a transaction: set before it
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert table(sqlite3.connect(db)) == [(1,)]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="autocommit exists on Python 3.12+")
def test_autocommit_is_refused_where_sqlite3_refuses_it(db: Path) -> None:
    """Before 3.12, ``autocommit`` is an unknown keyword, as it is to sqlite3.connect."""
    with pytest.raises(TypeError):
        sqlite_resilient.connect(db, autocommit=True)


def test_check_same_thread_false_allows_other_threads(db: Path) -> None:
    """``check_same_thread=False`` reaches sqlite3: another thread may use the connection."""
    conn = sqlite_resilient.connect(db, check_same_thread=False)
    conn.execute("CREATE TABLE t(x)")
    errors: list[BaseException] = []

    def insert() -> None:
        try:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
        except BaseException as error:  # reported to the test thread
            errors.append(error)

    worker = threading.Thread(target=insert)
    worker.start()
    worker.join(10)
    assert errors == []
    assert table(conn) == [(1,)]


def test_check_same_thread_default_refuses_other_threads(db: Path) -> None:
    """By default, as in sqlite3, another thread gets ProgrammingError."""
    conn = sqlite_resilient.connect(db)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            conn.execute("SELECT 1")
        except sqlite3.ProgrammingError as error:
            errors.append(error)

    worker = threading.Thread(target=use)
    worker.start()
    worker.join(10)
    assert len(errors) == 1


class MyConnection(sqlite3.Connection):
    marker = "mine"


def test_factory_and_cached_statements(db: Path) -> None:
    """``factory`` and ``cached_statements`` reach sqlite3; the proxy wraps the subclass."""
    conn = sqlite_resilient.connect(db, factory=MyConnection, cached_statements=5)
    assert isinstance(conn, MyConnection)
    assert conn.marker == "mine"
    assert conn.journal_mode == "wal"


def test_unknown_keyword_is_a_type_error_and_creates_nothing(db: Path) -> None:
    """A keyword sqlite3.connect does not know raises TypeError and opens no file."""
    with pytest.raises(TypeError):
        sqlite_resilient.connect(db, no_such_keyword=1)
    assert not db.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"read_only": "yes"}, "read_only"),
        ({"settings": {"timeout": 1}}, "settings"),
        ({"pragmas": [("cache_size", 1)]}, "pragmas"),
        ({"pragmas": {"cache_size": "-2000; DROP TABLE t"}}, "cache_size"),
        ({"pragmas": {"no_such_pragma": 1}}, "no_such_pragma"),
        ({"read_only": True, "pragmas": {"journal_mode": "wal"}}, "journal_mode"),
    ],
)
def test_invalid_arguments_raise_configuration_error_before_opening(
    db: Path, kwargs: dict[str, Any], message: str
) -> None:
    """Bad arguments raise ConfigurationError (a ValueError) naming the problem; no file appears."""
    with pytest.raises(ConfigurationError, match=message):
        sqlite_resilient.connect(db, **kwargs)
    assert list(db.parent.iterdir()) == []


def test_database_of_wrong_type_is_a_type_error() -> None:
    """As for sqlite3.connect, a database that is not str/bytes/path-like is a TypeError."""
    with pytest.raises(TypeError, match="database"):
        sqlite_resilient.connect(42)  # type: ignore[arg-type]


# -- pragmas and timeouts ------------------------------------------------------------------


def test_default_pragmas_are_applied_and_read_back(db: Path) -> None:
    """The defaults are in effect and ``conn.pragmas`` is what SQLite reports."""
    conn = sqlite_resilient.connect(db)
    expected = {
        "journal_mode": "wal",
        "synchronous": "normal",
        "cache_size": -64000,
        "foreign_keys": True,
        "journal_size_limit": 64 * 1024 * 1024,
        "busy_timeout": 30000,
    }
    assert dict(conn.pragmas) == expected
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_pragma_overrides_extend_and_replace_defaults(db: Path) -> None:
    """``pragmas=`` overrides a default and adds new pragmas, all read back."""
    conn = sqlite_resilient.connect(db, pragmas={"synchronous": "FULL", "temp_store": 2, "cache_size": "-2000"})
    assert conn.pragmas["synchronous"] == "full"
    assert conn.pragmas["temp_store"] == "memory"
    assert conn.pragmas["cache_size"] == -2000
    assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2


def test_settings_pragmas_and_timeouts(db: Path) -> None:
    """A Settings object chooses pragmas and budgets; ``timeout=`` wins over it."""
    settings = dataclasses.replace(
        sqlite_resilient.DEFAULT_SETTINGS, timeout=7, pragmas={"journal_mode": "delete", "foreign_keys": 0}
    )
    conn = sqlite_resilient.connect(db, settings=settings)
    assert conn.timeout == 7.0
    assert conn.journal_mode == "delete"
    assert conn.journal_mode_reason == "as configured"
    assert conn.pragmas == {"journal_mode": "delete", "foreign_keys": False, "busy_timeout": 7000}
    assert sqlite_resilient.connect(db, timeout=2.5, settings=settings).pragmas["busy_timeout"] == 2500


def test_default_budgets_are_30_and_5_seconds(db: Path) -> None:
    """Write connections wait up to 30 s for locks, read-only ones 5 s."""
    assert sqlite_resilient.connect(db).timeout == 30.0
    assert sqlite_resilient.connect(db, read_only=True).timeout == 5.0


def test_clamped_pragma_warns(db: Path) -> None:
    """A value SQLite does not take as given (mmap_size above its compile-time maximum) is
    reported with PragmaNotAppliedWarning, and ``conn.pragmas`` shows the real value."""
    with pytest.warns(PragmaNotAppliedWarning, match="mmap_size"):
        conn = sqlite_resilient.connect(db, pragmas={"mmap_size": 2**60})
    assert conn.pragmas["mmap_size"] == conn.execute("PRAGMA mmap_size").fetchone()[0] < 2**60


LIBRARY = os.path.dirname(sqlite_resilient.__file__) + os.sep


@pytest.mark.parametrize("call", ["execute", "executemany", "cursor", "commit"])
def test_an_error_from_sqlite_shows_few_frames_of_the_library(db: Path, call: str) -> None:
    """A constraint error (or any other error SQLite raises) reaches the application with at
    most two frames of the library in its traceback, none a line of bookkeeping or a lint
    comment: the frame of the method called, and the one that raises."""
    conn = sqlite_resilient.connect(db)
    conn.executescript("CREATE TABLE k(x PRIMARY KEY); CREATE TABLE c(x REFERENCES k(x) DEFERRABLE INITIALLY DEFERRED)")
    conn.execute("INSERT INTO k VALUES (1)")
    conn.commit()
    failing: dict[str, Callable[[], object]] = {
        "execute": lambda: conn.execute("INSERT INTO k VALUES (1)"),
        "executemany": lambda: conn.executemany("INSERT INTO k VALUES (?)", [(1,)]),
        "cursor": lambda: conn.cursor().execute("INSERT INTO k VALUES (1)"),
        "commit": conn.commit,
    }
    if call == "commit":
        conn.execute("INSERT INTO c VALUES (2)")  # checked at COMMIT
    with pytest.raises(sqlite3.IntegrityError) as caught:
        failing[call]()
    ours = [frame for frame in traceback.extract_tb(caught.value.__traceback__) if frame.filename.startswith(LIBRARY)]
    assert len(ours) <= 2, traceback.format_list(ours)
    assert not any("noqa" in (frame.line or "") for frame in ours), traceback.format_list(ours)
    conn.rollback()
    conn.close()


def test_pragma_sqlite_reports_nothing_for_warns() -> None:
    """A pragma that does not apply to the database (``mmap_size`` on an in-memory one:
    SQLite reports no value for it) is reported with PragmaNotAppliedWarning saying so,
    and left out of ``conn.pragmas``; the connection works."""
    with pytest.warns(PragmaNotAppliedWarning, match=r"mmap_size was set to 268435456 but SQLite reports no value"):
        conn = sqlite_resilient.connect(":memory:", pragmas={"mmap_size": 2**28})
    assert "mmap_size" not in conn.pragmas
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_settings_is_frozen_and_validated() -> None:
    """Settings is immutable and validates its pragmas and timeouts when made."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        sqlite_resilient.DEFAULT_SETTINGS.timeout = 1  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="synchronous"):
        Settings(pragmas={"synchronous": "sometimes"})
    with pytest.raises(ConfigurationError, match="read_only_timeout"):
        Settings(read_only_timeout=-1)
    assert Settings(pragmas={"synchronous": 2}).pragmas == {"synchronous": "full"}


@pytest.mark.skipif(sys.version_info < (3, 10), reason="keyword-only dataclasses need Python 3.10")
def test_settings_is_keyword_only() -> None:
    """Settings takes keywords only, so a new field never shifts a positional argument."""
    with pytest.raises(TypeError):
        Settings(10.0)  # type: ignore[misc,unused-ignore]


# -- the proxy -------------------------------------------------------------------------------


def test_with_block_yields_the_proxy_and_commits_or_rolls_back(db: Path) -> None:
    """``with conn:`` yields the proxy, commits on success and rolls back on error."""
    conn = sqlite_resilient.connect(db)
    conn.execute("CREATE TABLE t(x)")
    with conn as inside:
        assert inside is conn
        inside.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), conn:  # noqa: PT012 - the block is what is tested
        conn.execute("INSERT INTO t VALUES (2)")
        _ = 1 / 0
    assert table(sqlite3.connect(db)) == [(1,)]


def test_cursors_are_resilient_and_behave_like_sqlite3_cursors(db: Path) -> None:
    """``cursor()`` and ``execute`` give ResilientCursors: iteration, fetch, rowcount, lastrowid,
    row_factory, description, executemany and executescript all work, and ``cursor.connection``
    is the proxy."""
    conn = sqlite_resilient.connect(db)
    cur = conn.cursor()
    assert isinstance(cur, ResilientCursor)
    assert isinstance(cur, sqlite3.Cursor)
    assert cur.connection is conn
    assert cur.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);") is cur
    assert cur.executemany("INSERT INTO t VALUES (?)", [(2,), (3,)]) is cur
    assert cur.rowcount == 2
    cur.execute("INSERT INTO t VALUES (?)", (4,))
    assert cur.lastrowid == 4
    conn.commit()
    assert list(conn.execute("SELECT x FROM t ORDER BY x")) == [(1,), (2,), (3,), (4,)]
    cur = conn.execute("SELECT x FROM t WHERE x > :low ORDER BY x", {"low": 2})
    assert cur.description[0][0] == "x"
    assert next(cur) == (3,)
    assert cur.fetchall() == [(4,)]
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT x FROM t").fetchone()
    assert isinstance(row, sqlite3.Row)
    assert row["x"] == 1
    assert isinstance(conn.executemany("INSERT INTO t VALUES (?)", iter([(5,)])), ResilientCursor)
    assert isinstance(conn.executescript("SELECT 1"), ResilientCursor)


def test_cursor_factory(db: Path, lock_holder: StartLockHolder) -> None:
    """``cursor(factory)`` builds a subclass of the caller's Cursor subclass and
    ResilientCursor: the caller's overrides run first, then the proxy's statement path
    (a lock is waited for and reported as the library's error). Any other callable is
    :mod:`sqlite3`'s (see ``test_dropin.py``)."""
    seen: list[str] = []

    class MyCursor(sqlite3.Cursor):
        marker = "mine"

        def execute(self, sql: str, parameters: Any = (), /) -> MyCursor:
            seen.append(sql)
            return super().execute(sql, parameters)

    conn = sqlite_resilient.connect(db)
    cur = conn.cursor(MyCursor)
    assert isinstance(cur, MyCursor)
    assert isinstance(cur, ResilientCursor)
    assert cur.marker == "mine"
    assert cur.connection is conn
    assert cur.execute("CREATE TABLE t(x)") is cur
    cur.execute("INSERT INTO t VALUES (1)")
    assert seen == ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"]
    conn.commit()
    assert type(conn.cursor(MyCursor)) is type(cur)  # one subclass per factory
    holder = lock_holder(db, "EXCLUSIVE")
    impatient = sqlite_resilient.connect(db, timeout=0.2)
    with pytest.raises(DatabaseLockedError, match="gave up after"):
        impatient.cursor(MyCursor).execute("INSERT INTO t VALUES (2)")
    assert impatient.lock_stats.waits == 1
    holder.release()
    assert table(sqlite3.connect(db)) == [(1,)]


def test_backup_accepts_a_proxy_as_target(db: Path, tmp_path: Path) -> None:
    """``conn.backup(target)`` works when the target is itself a ResilientConnection."""
    source = sqlite_resilient.connect(db)
    source.execute("CREATE TABLE t(x)")
    source.execute("INSERT INTO t VALUES (1)")
    source.commit()
    target = sqlite_resilient.connect(tmp_path / "copy.db")
    source.backup(target)
    assert table(target) == [(1,)]
    raw_target = sqlite3.connect(":memory:")
    source.backup(raw_target, pages=1)
    assert table(raw_target) == [(1,)]


def test_pickle_and_copy_fail_like_sqlite3(db: Path) -> None:
    """Connections and cursors cannot be pickled or copied: TypeError, as in sqlite3."""
    conn = sqlite_resilient.connect(db)
    for thing in (conn, conn.cursor()):
        with pytest.raises(TypeError, match="cannot pickle"):
            pickle.dumps(thing)
    with pytest.raises(TypeError):
        copy.copy(conn)
    with pytest.raises(TypeError):
        copy.deepcopy(conn)


def test_attributes_pass_through_to_the_real_connection(db: Path) -> None:
    """Attributes of sqlite3.Connection read and write through the proxy."""
    conn = sqlite_resilient.connect(db)
    assert isinstance(conn, ResilientConnection)
    conn.text_factory = bytes
    assert conn.__wrapped__.text_factory is bytes
    conn.create_function("twice", 1, lambda v: v * 2)
    assert conn.execute("SELECT twice(21)").fetchone() == (42,)
    assert conn.total_changes == 0
    assert "ResilientConnection" in repr(conn) or "Connection" in repr(conn)


def test_statements_on_a_closed_connection_raise_programming_error(db: Path) -> None:
    """After close(), use raises sqlite3.ProgrammingError as in sqlite3."""
    conn = sqlite_resilient.connect(db)
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
