"""Read-only connections stay read-only against hostile SQL (user-supplied queries of an
API endpoint): every attempt to write a file, attach one, or lift the connection's
safeguards fails with an error that says what was refused, and no file changes."""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_resilient
from sqlite_resilient import PRAGMAS, ResilientConnection

ATTEMPTS = [
    "ATTACH DATABASE '{dir}/other.db' AS other",
    "ATTACH DATABASE 'file:{dir}/other.db?mode=rwc' AS other",
    "ATTACH DATABASE ':memory:' AS scratch",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",
    "PRAGMA query_only = 0",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA schema_version = 99",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "PRAGMA optimize",
    "PRAGMA incremental_vacuum",
    "PRAGMA temp_store_directory = '{dir}'",
    "PRAGMA locking_mode = EXCLUSIVE",
    "SELECT load_extension('{dir}/evil')",
    "CREATE TEMP TABLE scratch(x)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "INSERT INTO t VALUES (99)",
    "UPDATE t SET x = 0",
    "DELETE FROM t",
    "DROP TABLE t",
    "CREATE TABLE u(x)",
    "CREATE INDEX i ON t(x)",
    "ALTER TABLE t ADD COLUMN y",
    "ANALYZE",
]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A WAL database with table ``t`` (rows 1-3), no connection left open."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        conn.commit()
    return path


@pytest.fixture
def reader(database: Path) -> Iterator[ResilientConnection]:
    with contextlib.closing(sqlite_resilient.connect(database, read_only=True)) as conn:
        yield conn


def files(directory: Path) -> dict[str, str]:
    """Every file of *directory* with a hash of its content (``-shm``, where readers record
    what they read, only by name)."""
    return {
        path.name: "" if path.name.endswith("-shm") else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_hostile_statement_fails_clearly_and_changes_no_file(
    attempt: str, database: Path, reader: ResilientConnection
) -> None:
    """Each attempt raises a sqlite3.DatabaseError whose message says, in one wording, what
    the application wrote and that it is refused on the read-only connection to the file
    (after SQLite's reason: "attempt to write a readonly database" for the database itself,
    "not authorized" for what the connection's guard refuses), the reads go on as before,
    and no file is created or changed."""
    reader.execute("SELECT count(*) FROM t").fetchone()
    before = files(database.parent)
    sql = attempt.format(dir=database.parent)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        reader.execute(sql).fetchall()
    message = str(caught.value)
    refused = f"{sql!r} is refused on the read-only connection to {str(database)!r}"
    assert re.match(rf"(attempt to write a readonly database|not authorized): {re.escape(refused)}", message), message
    assert "sqlite_temp_master" not in message
    assert not reader.in_transaction
    assert files(database.parent) == before
    assert reader.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,), (3,)]
    assert reader.execute("PRAGMA query_only").fetchone() == (1,)


def test_the_same_attempts_through_scripts_and_cursors(database: Path, reader: ResilientConnection) -> None:
    """``executescript``, ``executemany`` and a cursor's ``execute`` are guarded the same way."""
    before = files(database.parent)
    with pytest.raises(sqlite3.DatabaseError, match=r"ATTACH .* refused"):
        reader.executescript(f"SELECT 1; ATTACH DATABASE '{database.parent}/s.db' AS s;")
    with pytest.raises(sqlite3.DatabaseError, match="'PRAGMA query_only = 0' is refused"):
        reader.cursor().execute("PRAGMA query_only = 0")
    with pytest.raises(sqlite3.DatabaseError, match=r"'CREATE TEMP TABLE IF NOT EXISTS z\(x\)' is refused"):
        reader.executemany("CREATE TEMP TABLE IF NOT EXISTS z(x)", [()])
    assert files(database.parent) == before


def test_reads_and_introspection_still_work(database: Path, reader: ResilientConnection) -> None:
    """Everything a dashboard or a schema browser needs works: SELECT with recursive CTEs,
    introspection pragmas with and without arguments, their table-valued forms,
    quick_check, and read transactions (db_transaction on a read-only connection)."""
    assert reader.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT sum(i) FROM n"
    ).fetchone() == (6,)
    assert [row[1] for row in reader.execute("PRAGMA table_info(t)")] == ["x"]
    assert [row[1] for row in reader.execute("SELECT * FROM pragma_table_info('t')")] == ["x"]
    assert reader.execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert reader.execute("PRAGMA user_version").fetchone() == (0,)
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with reader.transaction():
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_callers_authorizer_is_asked_after_the_guard(database: Path, reader: ResilientConnection) -> None:
    """A caller's authorizer runs after the guard: it can refuse more (with SQLite's own
    message) but allowing everything does not lift the guard."""
    asked: list[int] = []

    def allow_everything_but_t(action: int, first: str | None, *rest: str | None) -> int:
        asked.append(action)
        return sqlite3.SQLITE_DENY if first == "t" else sqlite3.SQLITE_OK

    reader.set_authorizer(allow_everything_but_t)
    with pytest.raises(sqlite3.DatabaseError, match=r"ATTACH .* refused"):
        reader.execute(f"ATTACH DATABASE '{database.parent}/o.db' AS o")
    with pytest.raises(sqlite3.DatabaseError, match=r"access to t\.x is prohibited") as caught:
        reader.execute("SELECT x FROM t")
    assert "is refused on the read-only connection" not in str(caught.value)
    assert asked
    reader.set_authorizer(None)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)
    with pytest.raises(sqlite3.DatabaseError, match=r"ATTACH .* refused"):
        reader.execute(f"ATTACH DATABASE '{database.parent}/o.db' AS o")


def test_write_connections_are_not_guarded(database: Path) -> None:
    """The guard is for read-only connections only: a write connection attaches and
    writes as sqlite3 does."""
    with contextlib.closing(sqlite_resilient.connect(database)) as writer:
        writer.execute(f"ATTACH DATABASE '{database.parent}/other.db' AS other")
        writer.execute("CREATE TABLE other.u(x)")
        writer.execute("PRAGMA user_version = 3")
        writer.commit()
    assert (database.parent / "other.db").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted({*PRAGMAS, "table_info", "index_list", "data_version", "shrink_memory", "optimize"})),
    value=st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["ON", "OFF", "DELETE", "WAL", "t", "'x'"])),
)
def test_no_pragma_changes_a_file_on_a_read_only_connection(
    name: str, value: int | str | None, database: Path, reader: ResilientConnection
) -> None:
    """Any pragma, read or set to any value, on a read-only connection either works or is
    refused with a DatabaseError; the files stay as they were and query_only stays on."""
    before = files(database.parent)
    statement = f"PRAGMA {name}" if value is None else f"PRAGMA {name} = {value}"
    with contextlib.suppress(sqlite3.DatabaseError):
        reader.execute(statement).fetchall()
    assert not reader.in_transaction
    assert files(database.parent) == before
    assert reader.execute("PRAGMA query_only").fetchone() == (1,)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)
