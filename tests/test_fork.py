"""A connection carried across ``fork()``: every use in the child raises
``ForkedConnectionError`` (SQLite forbids it, the stdlib would silently corrupt), while the
parent's connection, the database and new connections opened in the child all keep working.

The child is a real ``os.fork()`` of the test process; it reports through a pipe and ends
with ``os._exit`` so that none of pytest's state runs twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

import sqlite_resilient
from sqlite_resilient import ForkedConnectionError, ResilientConnection
from sqlite_resilient._gate import open_gate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is not available on this platform")


def run_in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *work* in a forked child and return the JSON-able dict it returned (or the
    traceback it died with, as ``{"crash": ...}``)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking a process with threads; the child here only
        # touches SQLite and the pipe.
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        status = 1
        try:
            os.close(read_end)
            try:
                outcome = work()
            except BaseException:
                outcome = {"crash": traceback.format_exc()}
            os.write(write_end, json.dumps(outcome).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, data
    report: dict[str, Any] = json.loads(data)
    assert "crash" not in report, report["crash"]
    return report


def describe(action: Callable[[], object]) -> dict[str, Any]:
    """What *action* raised: class name, whether it is a ForkedConnectionError and a
    sqlite3.ProgrammingError, and the message; or ``{"returned": ...}``."""
    try:
        result = action()
    except BaseException as error:
        return {
            "raised": type(error).__name__,
            "forked_error": isinstance(error, ForkedConnectionError),
            "programming_error": isinstance(error, sqlite3.ProgrammingError),
            "message": str(error),
        }
    return {"returned": repr(result)}


def calling(obj: object, name: str, *args: object) -> Callable[[], object]:
    """``obj.name(*args)``, with the attribute looked up only when called (in the child)."""
    return lambda: getattr(obj, name)(*args)


def make_database(path: Path) -> ResilientConnection:
    """A WAL database with table ``t`` (rows 1 and 2), committed; the open connection."""
    conn = sqlite_resilient.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    conn.commit()
    assert conn.journal_mode == "wal"
    return conn


def test_inherited_connection_raises_in_child(tmp_path: Path) -> None:
    """In a forked child, ``execute``, ``commit``, ``cursor()`` and ``.execute`` of a cursor
    created before the fork all raise ForkedConnectionError, a sqlite3.ProgrammingError
    naming the parent process; the parent's connection and cursor keep working and the
    database passes ``PRAGMA integrity_check``."""
    conn = make_database(tmp_path / "app.db")
    with contextlib.closing(conn):
        cursor = conn.cursor()
        parent = os.getpid()

        def child() -> dict[str, Any]:
            return {
                "execute": describe(lambda: conn.execute("SELECT 1").fetchone()),
                "commit": describe(calling(conn, "commit")),
                "cursor": describe(calling(conn, "cursor")),
                "cursor.execute": describe(lambda: cursor.execute("SELECT x FROM t").fetchall()),
                "insert": describe(lambda: conn.execute("INSERT INTO t VALUES (3)")),
            }

        report = run_in_child(child)
        for action, outcome in report.items():
            assert outcome.get("raised") == "ForkedConnectionError", (action, outcome)
            assert outcome["forked_error"], (action, outcome)
            assert outcome["programming_error"], (action, outcome)
            assert str(parent) in outcome["message"], (action, outcome)

        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert cursor.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        conn.execute("INSERT INTO t VALUES (4)")
        conn.commit()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,), (4,)]


def test_an_inherited_in_memory_connection_keeps_working_in_the_child() -> None:
    """An in-memory database has no file, no lock and no WAL: ``fork()`` gives the child
    its own copy, which it may use (Django's parallel test runner relies on that). The
    child's changes stay in the child."""
    conn = sqlite_resilient.connect(":memory:")
    with contextlib.closing(conn):
        conn.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);")

        def child() -> dict[str, Any]:
            conn.execute("INSERT INTO t VALUES (2)")
            conn.commit()
            return {"rows": conn.execute("SELECT x FROM t ORDER BY x").fetchall()}

        assert run_in_child(child) == {"rows": [[1], [2]]}
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_closing_an_inherited_connection_in_the_child_is_allowed_and_harmless(tmp_path: Path) -> None:
    """``close()`` of an inherited connection in a forked child succeeds, as code that
    tidies up after ``fork()`` expects (Django's parallel test runner does): the child drops
    its copy without closing SQLite's handle, which could checkpoint or delete the parent's
    WAL; any later use raises ForkedConnectionError. The parent's connection keeps working,
    its WAL file still there."""
    conn = make_database(tmp_path / "app.db")
    with contextlib.closing(conn):

        def child() -> dict[str, Any]:
            return {"close": describe(conn.close), "after": describe(lambda: conn.execute("SELECT 1"))}

        report = run_in_child(child)
        assert report["close"] == {"returned": "None"}
        assert report["after"]["forked_error"], report
        assert (tmp_path / "app.db-wal").exists()
        conn.execute("INSERT INTO t VALUES (3)")
        conn.commit()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_inherited_connection_raises_in_child_mid_transaction(tmp_path: Path) -> None:
    """A connection forked while it holds an open write transaction raises in the child
    (``rollback`` too), and the parent can still commit that transaction afterwards."""
    conn = make_database(tmp_path / "app.db")
    with contextlib.closing(conn):
        conn.execute("INSERT INTO t VALUES (3)")
        assert conn.in_transaction

        def child() -> dict[str, Any]:
            return {
                "rollback": describe(calling(conn, "rollback")),
                "commit": describe(calling(conn, "commit")),
                "in_transaction": describe(lambda: conn.in_transaction),
            }

        report = run_in_child(child)
        for action, outcome in report.items():
            assert outcome.get("raised") == "ForkedConnectionError", (action, outcome)
            assert outcome["programming_error"], (action, outcome)

        assert conn.in_transaction
        conn.commit()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_new_connection_in_child_works(tmp_path: Path) -> None:
    """A connection opened in the child after the fork reads and writes the database; the
    parent sees the child's commit and the database passes ``PRAGMA integrity_check``."""
    path = tmp_path / "app.db"
    conn = make_database(path)
    with contextlib.closing(conn):

        def child() -> dict[str, Any]:
            with contextlib.closing(sqlite_resilient.connect(path)) as own:
                own.execute("INSERT INTO t VALUES (10)")
                own.commit()
                rows = own.execute("SELECT x FROM t ORDER BY x").fetchall()
                return {"journal_mode": own.journal_mode, "rows": [row[0] for row in rows]}

        report = run_in_child(child)
        assert report == {"journal_mode": "wal", "rows": [1, 2, 10]}
        assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,), (10,)]
        conn.execute("INSERT INTO t VALUES (11)")
        conn.commit()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (4,)
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_every_open_connection_raises_in_child(tmp_path: Path) -> None:
    """With several connections open in the parent (to one database and to others), every
    one of them raises ForkedConnectionError in the child, not only one."""
    conns = [make_database(tmp_path / f"app{i}.db") for i in range(3)]
    conns.append(sqlite_resilient.connect(tmp_path / "app0.db"))
    try:

        def child() -> dict[str, Any]:
            return {str(i): describe(calling(c, "execute", "SELECT 1")) for i, c in enumerate(conns)}

        report = run_in_child(child)
        assert {i: outcome.get("raised") for i, outcome in report.items()} == dict.fromkeys(
            report, "ForkedConnectionError"
        )
        for conn in conns:  # the parent's connections are unaffected either way
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("fetch", ["fetchone", "fetchall", "fetchmany", "next"])
def test_pre_fork_cursor_fetch_raises_in_child(tmp_path: Path, fetch: str) -> None:
    """Fetching rows in the child from a cursor whose SELECT ran in the parent uses the
    parent's SQLite connection (``sqlite3_step``) and raises ForkedConnectionError."""
    conn = make_database(tmp_path / "app.db")
    with contextlib.closing(conn):
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        conn.commit()
        cursor = conn.execute("SELECT x FROM t")
        actions: dict[str, Callable[[], object]] = {
            "fetchone": calling(cursor, "fetchone"),
            "fetchall": calling(cursor, "fetchall"),
            "fetchmany": calling(cursor, "fetchmany", 10),
            "next": lambda: next(cursor),
        }
        report = run_in_child(lambda: describe(actions[fetch]))
        assert report.get("raised") == "ForkedConnectionError", report
        assert len(cursor.fetchall()) == 102  # the parent's cursor is intact


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc/self/fd")
def test_child_closes_its_copy_of_the_write_gate_and_the_parent_keeps_it(tmp_path: Path) -> None:
    """A connection forked while it holds the write gate: the child closes its copy of the
    gate's descriptor without unlocking it (the lock is shared with the parent's), so the
    parent's transaction keeps the gate until it ends."""
    conn = make_database(tmp_path / "app.db")
    gate = f"{tmp_path / 'app.db'}-writers"

    def open_on_gate() -> int:
        return sum(
            os.path.realpath(f"/proc/self/fd/{fd}") == gate for fd in os.listdir("/proc/self/fd") if fd.isdigit()
        )

    with conn.transaction():
        conn.execute("INSERT INTO t VALUES (3)")
        report = run_in_child(lambda: {"descriptors on the gate": open_on_gate()})
        assert report == {"descriptors on the gate": 0}
        rival_gate = open_gate(str(tmp_path / "app.db"))
        assert rival_gate is not None
        assert not rival_gate.try_acquire()  # still the parent's
        rival_gate.close()
    rival_gate = open_gate(str(tmp_path / "app.db"))
    assert rival_gate is not None
    assert rival_gate.try_acquire()
    rival_gate.close()
    conn.close()
