"""WAL health: ``checkpoint()`` with a typed result, ``maintain_wal()`` escalating past a
reader that pins the WAL, and the warning for a WAL that keeps growing behind one.

A reader that pins a snapshot is a real second connection with a read transaction open,
which is exactly what stops SQLite's checkpoints.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sqlite_resilient
from sqlite_resilient import (
    CHECKPOINT_MODES,
    DEFAULT_SETTINGS,
    CheckpointResult,
    ConfigurationError,
    ResilientConnection,
    Settings,
    WALGrowthWarning,
)


@pytest.fixture
def opened() -> Iterator[Callable[..., ResilientConnection]]:
    """Open connections that are closed at teardown."""
    connections: list[ResilientConnection] = []

    def open_connection(*args: Any, **kwargs: Any) -> ResilientConnection:
        conn = sqlite_resilient.connect(*args, **kwargs)
        connections.append(conn)
        return conn

    try:
        yield open_connection
    finally:
        for conn in connections:
            conn.close()


def write_rows(conn: sqlite3.Connection, count: int, size: int = 1000) -> None:
    """Commit *count* rows of *size* bytes (a table ``t`` is made if needed)."""
    conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * size,)] * count)
    conn.commit()


@contextlib.contextmanager
def pinned_snapshot(db: Path) -> Iterator[None]:
    """A second connection with a read transaction open: no checkpoint can pass it."""
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        yield
    finally:
        reader.close()


def wal_size(db: Path) -> int:
    return db.with_name(db.name + "-wal").stat().st_size


def test_checkpoint_modes_report_what_they_did(tmp_path: Path, opened: Callable[..., ResilientConnection]) -> None:
    """A passive checkpoint copies every frame back (complete); truncate also empties the
    WAL file; the numbers are SQLite's own."""
    db = tmp_path / "app.db"
    conn = opened(db, settings=Settings(wal_warn_bytes=None))
    write_rows(conn, 50)
    result = conn.checkpoint()
    assert result.mode == "passive"
    assert not result.busy
    assert result.wal_pages > 0
    assert result.checkpointed_pages == result.wal_pages
    assert result.complete
    assert wal_size(db) > 0
    truncated = conn.checkpoint("truncate")
    assert truncated.complete
    assert (truncated.wal_pages, truncated.checkpointed_pages) == (0, 0)
    assert wal_size(db) == 0
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (50,)


def test_checkpoint_without_wal_has_nothing_to_do(tmp_path: Path, opened: Callable[..., ResilientConnection]) -> None:
    """In a rollback-journal database the result is complete with zero pages (SQLite's -1
    is not passed on), and a plain sqlite3 connection works with the function too."""
    conn = opened(tmp_path / "app.db", pragmas={"journal_mode": "delete"})
    write_rows(conn, 5)
    assert conn.checkpoint("full") == CheckpointResult("full", busy=False, wal_pages=0, checkpointed_pages=0)
    with contextlib.closing(sqlite3.connect(tmp_path / "plain.db")) as plain:
        assert sqlite_resilient.checkpoint(plain, "restart").complete


@given(mode=st.text(max_size=12))
def test_checkpoint_takes_exactly_the_four_modes_in_any_case(mode: str) -> None:
    """Every mode name is taken in any letter case; everything else is refused with a
    ConfigurationError naming the modes, before any SQL runs."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        if mode.lower() in CHECKPOINT_MODES:
            assert sqlite_resilient.checkpoint(conn, mode).mode == mode.lower()  # type: ignore[arg-type]
        else:
            with pytest.raises(ConfigurationError, match="passive, full, restart, truncate"):
                sqlite_resilient.checkpoint(conn, mode)  # type: ignore[arg-type]
            assert statements == []


@pytest.mark.parametrize("mode", [None, 1, b"passive", ["truncate"]])
def test_checkpoint_refuses_modes_that_are_not_strings(mode: object) -> None:
    """A mode of another type is a ConfigurationError too."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn, pytest.raises(ConfigurationError):
        sqlite_resilient.checkpoint(conn, mode)  # type: ignore[arg-type]


def test_checkpoint_inside_a_transaction_says_why_it_cannot(
    tmp_path: Path, opened: Callable[..., ResilientConnection]
) -> None:
    """SQLite refuses a checkpoint while the same connection reads in a transaction; the
    error says so instead of a bare "database table is locked", and is not waited on."""
    conn = opened(tmp_path / "app.db", timeout=5)
    write_rows(conn, 5)
    with conn.transaction():
        conn.execute("SELECT count(*) FROM t").fetchone()
        with pytest.raises(sqlite3.OperationalError, match="inside a transaction of the same connection"):
            conn.checkpoint("truncate")
    assert conn.lock_stats.retries == 0


def test_maintain_wal_escalates_past_a_pinning_reader(
    tmp_path: Path, opened: Callable[..., ResilientConnection]
) -> None:
    """While a reader pins the WAL, passive, restart and truncate all run and none
    completes (restart and truncate waiting only the connection's budget); once the reader
    is gone, one passive checkpoint completes and nothing stronger runs."""
    db = tmp_path / "app.db"
    conn = opened(db, timeout=0.2, settings=Settings(wal_warn_bytes=None))
    write_rows(conn, 5)
    conn.checkpoint("truncate")
    with pinned_snapshot(db):
        write_rows(conn, 50)
        results = sqlite_resilient.maintain_wal(conn)
        assert [result.mode for result in results] == ["passive", "restart", "truncate"]
        assert not any(result.complete for result in results)
        assert results[0].wal_pages > results[0].checkpointed_pages
    after = sqlite_resilient.maintain_wal(conn)
    assert [result.mode for result in after] == ["passive"]
    assert after[0].complete


def test_growing_wal_behind_a_reader_warns_once_with_the_numbers(
    tmp_path: Path, opened: Callable[..., ResilientConnection], caplog: pytest.LogCaptureFixture
) -> None:
    """A commit that leaves the WAL above ``wal_warn_bytes`` while a reader pins it warns
    (WALGrowthWarning and a WARNING log record) with the sizes and what to do; a second
    connection's commits to the same database do not warn again."""
    db = tmp_path / "app.db"
    settings = Settings(wal_warn_bytes=64 * 1024)
    with contextlib.closing(sqlite3.connect(db)) as setup:
        write_rows(setup, 1)
    conn = opened(db, settings=settings)  # its first commit is checked (then at most once a second)
    with pinned_snapshot(db):
        with pytest.warns(WALGrowthWarning, match=r"grown to .* MiB .*maintain_wal") as caught:
            write_rows(conn, 200)
        assert len(caught) == 1
        assert caught[0].filename == __file__  # points at the caller's commit
        assert any(record.levelname == "WARNING" and "read transaction" in record.message for record in caplog.records)
        other = opened(db, settings=settings)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            write_rows(other, 200)


def test_a_large_wal_that_checkpoints_does_not_warn(tmp_path: Path, opened: Callable[..., ResilientConnection]) -> None:
    """A WAL above the threshold that a checkpoint can copy back (no reader pins it) is no
    starvation: no warning (warnings are errors in this suite), and the check can be off."""
    conn = opened(tmp_path / "app.db", settings=Settings(wal_warn_bytes=16 * 1024))
    write_rows(conn, 300)
    assert wal_size(tmp_path / "app.db") > 16 * 1024
    with pinned_snapshot(tmp_path / "app.db"):
        quiet = opened(tmp_path / "app.db", settings=Settings(wal_warn_bytes=None))
        write_rows(quiet, 300)
        assert not quiet.checkpoint().complete  # starving indeed, but nobody asked to be told


def test_a_wal_replicated_by_litestream_is_left_to_it(
    tmp_path: Path, opened: Callable[..., ResilientConnection]
) -> None:
    """Litestream keeps a read transaction open between its own checkpoints, on purpose: with
    its state directory beside the database (``.app.db-litestream``), a WAL pinned past the
    threshold is not reported as a stuck reader (warnings are errors here)."""
    db = tmp_path / "app.db"
    (tmp_path / ".app.db-litestream").mkdir()
    with contextlib.closing(sqlite3.connect(db)) as setup:
        write_rows(setup, 1)
    conn = opened(db, settings=Settings(wal_warn_bytes=16 * 1024))
    with pinned_snapshot(db):
        write_rows(conn, 300)
        assert wal_size(db) > 16 * 1024
        assert not conn.checkpoint().complete


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit is new in Python 3.12")
def test_wal_check_leaves_a_pep249_transaction_untouched(
    tmp_path: Path, opened: Callable[..., ResilientConnection]
) -> None:
    """Under ``autocommit=False`` the check runs in the fresh transaction Python opens after
    the commit, without making it the caller's: ``db_transaction`` still replaces it."""
    db = tmp_path / "app.db"
    conn = opened(db, autocommit=False, settings=Settings(wal_warn_bytes=0))
    write_rows(conn, 5)
    assert conn.in_transaction
    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (1)")
    with contextlib.closing(sqlite3.connect(db)) as plain:
        assert plain.execute("SELECT count(*) FROM t").fetchone() == (6,)


@pytest.mark.parametrize("limit", [-1, 1.5, True, "1"])
def test_wal_warn_bytes_is_validated(limit: object) -> None:
    """``wal_warn_bytes`` takes a whole number of bytes >= 0 or None."""
    with pytest.raises(ConfigurationError, match="wal_warn_bytes"):
        Settings(wal_warn_bytes=limit)  # type: ignore[arg-type]
    assert Settings(wal_warn_bytes=None).wal_warn_bytes is None
    assert DEFAULT_SETTINGS.wal_warn_bytes == 256 * 2**20
