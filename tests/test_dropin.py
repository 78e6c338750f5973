"""Code written for :mod:`sqlite3` works unchanged with the import swapped: each case here
was a difference that CPython's own ``test.test_sqlite3`` found (see
``test_conformance.py``), checked side by side with plain :mod:`sqlite3` where it can be."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import sqlite_resilient
from sqlite_resilient import ResilientConnection

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3 warns of these from Python 3.12 on")
needs_313 = pytest.mark.skipif(sys.version_info < (3, 13), reason="sqlite3 warns of these from Python 3.13 on")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[ResilientConnection]:
    with contextlib.closing(sqlite_resilient.connect(tmp_path / "app.db")) as connection:
        connection.execute("CREATE TABLE t(x)")
        connection.commit()
        yield connection


class MyCursor(sqlite3.Cursor):
    pass


def test_the_connection_is_callable_as_in_sqlite3(conn: ResilientConnection) -> None:
    """``conn(sql)`` returns what :mod:`sqlite3` returns (a prepared statement object);
    ``inspect.signature(conn)`` is :mod:`sqlite3`'s."""
    plain = sqlite3.connect(":memory:")
    try:
        assert callable(conn)
        assert type(conn("SELECT 1")) is type(plain("SELECT 1"))
        if sys.version_info >= (3, 13):
            assert str(inspect.signature(conn)) == str(inspect.signature(plain)) == "(sql, /)"
    finally:
        plain.close()


def test_connect_takes_the_positional_arguments_of_sqlite3(tmp_path: Path) -> None:
    """``connect(database, timeout, detect_types, isolation_level, check_same_thread, ...)``
    by position, as :mod:`sqlite3` takes them (from 3.13 with its ``DeprecationWarning``,
    pointing at the caller); a name given twice, or too many, is a ``TypeError``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn = sqlite_resilient.connect(tmp_path / "app.db", 2.5, sqlite3.PARSE_DECLTYPES, None, False)
    try:
        assert conn.timeout == 2.5
        assert conn.isolation_level is None
        sqlite3.register_converter("RESILIENT_TEST_UPPER", lambda value: value.upper())
        conn.execute("CREATE TABLE words(word resilient_test_upper)")
        conn.execute("INSERT INTO words VALUES ('drop-in')")
        assert conn.execute("SELECT word FROM words").fetchone() == (b"DROP-IN",)  # detect_types took effect
    finally:
        conn.close()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning) and "positional" in str(w.message)]
    assert bool(deprecations) is (sys.version_info >= (3, 13))
    assert all(w.filename == __file__ for w in deprecations)
    with pytest.raises(TypeError, match="multiple values for argument 'timeout'"):
        sqlite_resilient.connect(tmp_path / "app.db", 1.0, timeout=2.0)
    with pytest.raises(TypeError, match="at most 8 positional arguments"):
        sqlite_resilient.connect(tmp_path / "app.db", 1.0, 0, None, True, sqlite3.Connection, 128, False, "extra")


@pytest.mark.parametrize(
    "factory",
    [MyCursor, lambda connection: MyCursor(connection)],  # noqa: PLW0108 - a function, not the class
    ids=["class", "function"],
)
def test_cursor_takes_any_cursor_factory(conn: ResilientConnection, factory: Callable[..., sqlite3.Cursor]) -> None:
    """``cursor(factory)`` takes a cursor class (whose instances get the library's lock
    handling) or any callable that makes a cursor, as :mod:`sqlite3` documents."""
    cursor = conn.cursor(factory)
    assert isinstance(cursor, MyCursor)
    assert isinstance(cursor, sqlite_resilient.ResilientCursor) is (factory is MyCursor)
    cursor.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


@pytest.mark.parametrize(
    "factory", [None, lambda: None, lambda connection: None], ids=["None", "no-args", "not-a-cursor"]
)
def test_cursor_refuses_what_sqlite3_refuses(conn: ResilientConnection, factory: Any) -> None:
    """A factory that is no callable making a cursor is a ``TypeError``, as in :mod:`sqlite3`."""
    plain = sqlite3.connect(":memory:")
    try:
        with pytest.raises(TypeError):
            plain.cursor(factory)
        with pytest.raises(TypeError):
            conn.cursor(factory)
    finally:
        plain.close()


def test_set_authorizer_by_keyword(conn: ResilientConnection) -> None:
    """``set_authorizer(authorizer_callback=...)``, by keyword as :mod:`sqlite3` takes it
    (deprecated from 3.13, with the warning pointing at the caller)."""
    calls: list[int] = []

    def authorizer(action: int, *args: object) -> int:
        calls.append(action)
        return sqlite3.SQLITE_OK

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn.set_authorizer(authorizer_callback=authorizer)
    conn.execute("SELECT x FROM t").fetchall()
    assert calls
    assert all(w.filename == __file__ for w in caught)


@needs_312
@pytest.mark.parametrize(
    ("sql", "parameters", "message"),
    [
        ("SELECT :a", (1,), "named parameter"),
        ("SELECT ?", (datetime.date(2026, 12, 3),), "default date adapter"),
        ("SELECT ?", (datetime.datetime(2026, 12, 3, 12, 0),), "default datetime adapter"),
    ],
    ids=["named-with-sequence", "date", "datetime"],
)
def test_sqlite3s_deprecation_warnings_point_at_the_caller(
    conn: ResilientConnection, sql: str, parameters: tuple[object, ...], message: str
) -> None:
    """:mod:`sqlite3`'s ``DeprecationWarning``\\ s of a statement point at the application's
    line, as with :mod:`sqlite3` (pointing at the library, the default filters hid them),
    for ``execute``, a cursor's ``execute`` and ``executemany``."""
    cursor = conn.cursor()
    calls: list[Callable[[], object]] = [
        lambda: conn.execute(sql, parameters),
        lambda: cursor.execute(sql, parameters),
        lambda: conn.executemany(sql.replace("SELECT", "INSERT INTO t SELECT"), [parameters]),
    ]
    for call in calls:
        with pytest.warns(DeprecationWarning, match=message) as caught:
            call()
        assert [w.filename for w in caught if issubclass(w.category, DeprecationWarning)] == [__file__]


@needs_313
def test_keyword_deprecations_of_sqlite3_point_at_the_caller(conn: ResilientConnection) -> None:
    """Methods :mod:`sqlite3` deprecates keywords of in 3.13 (``create_function``,
    ``set_trace_callback``, ...) warn as it does, pointing at the application's line."""
    with pytest.warns(DeprecationWarning, match="keyword") as caught:
        conn.create_function(name="one", narg=0, func=lambda: 1)
    assert [w.filename for w in caught] == [__file__]
    assert conn.execute("SELECT one()").fetchone() == (1,)


def test_replacing_sqlite3_connect_by_the_librarys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An application (or a test suite) may put ``sqlite_resilient.connect`` in the place of
    ``sqlite3.connect``: the library still opens databases with the stdlib's."""
    monkeypatch.setattr(sqlite3, "connect", sqlite_resilient.connect)
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as conn:
        assert isinstance(conn, ResilientConnection)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_library_prints_nothing_unless_the_application_configures_logging(tmp_path: Path) -> None:
    """With no logging configured, the library's log records (here a lock error's, at
    WARNING) are not printed: the application decides, as the logging HOWTO asks of
    libraries (Python's last-resort handler printed them before)."""
    script = f"""
import sqlite3, sqlite_resilient
path = {str(tmp_path / "app.db")!r}
sqlite_resilient.connect(path).close()
holder = sqlite3.connect(path, isolation_level=None)
holder.execute("BEGIN IMMEDIATE")
try:
    sqlite_resilient.connect(path, timeout=0.1).execute("CREATE TABLE t(x)")
except sqlite_resilient.DatabaseLockedError:
    print("locked")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "locked"
    assert result.stderr == ""


def parameters(method: Callable[..., object]) -> list[tuple[str, Any]] | None:
    """The names and kinds of *method*'s parameters; ``None`` where Python cannot tell."""
    try:
        return [(parameter.name, parameter.kind) for parameter in inspect.signature(method).parameters.values()]
    except (TypeError, ValueError):
        return None


def test_methods_take_what_sqlite3s_take(conn: ResilientConnection) -> None:
    """Every method of the connection and of its cursors takes the parameters of
    :mod:`sqlite3`'s of the running Python, by the same names and kinds (positional,
    keyword, ...), where the running Python tells them (3.10+)."""
    plain = sqlite3.connect(":memory:")
    try:
        pairs = [(plain, conn), (plain.cursor(), conn.cursor())]
        compared = 0
        for theirs, ours in pairs:
            for name in dir(type(theirs)):
                if name.startswith("_") and name not in ("__call__", "__enter__", "__exit__", "__next__"):
                    continue
                method = getattr(theirs, name)
                expected = parameters(method) if callable(method) else None
                if expected is None:
                    continue
                assert parameters(getattr(ours, name)) == expected, name
                compared += 1
        assert compared > 20 or sys.version_info < (3, 10)
    finally:
        plain.close()
