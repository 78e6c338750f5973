"""The Django backend (``ENGINE: "sqlite_resilient.django"``) with a real Django project
(``tests/django_project``: models, migrations, a read-only alias and a router) in helper
processes (``tests/django_workers.py``): the ORM's everyday operations, ``atomic()`` blocks
that begin ``IMMEDIATE``, several processes incrementing through the ORM while another
reads through the read-only alias, and ``@retry_on_lock`` around units of work."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django", reason="the django extra is not installed (Django 5.2+ needs Python 3.10+)")

WORKERS = Path(__file__).with_name("django_workers.py")
ROOT = Path(__file__).parent.parent
TIMEOUT = 120
WRITERS = 3
INCREMENTS = 60


def environment(db: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LEDGER_DB": str(db), "PYTHONPATH": str(ROOT), **extra}


def run(db: Path, *args: str, **extra: str) -> dict[str, Any]:
    """Run one command of the workers to its end; its JSON report."""
    result = subprocess.run(
        [sys.executable, str(WORKERS), *args],
        env=environment(db, **extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("options", "begin"),
    [
        ({}, "BEGIN IMMEDIATE"),
        ({"transaction_mode": "EXCLUSIVE"}, "BEGIN EXCLUSIVE"),
        ({"timeout": 3}, "BEGIN IMMEDIATE"),
    ],
)
def test_everyday_orm_through_the_backend(tmp_path: Path, options: dict[str, Any], begin: str) -> None:
    """Migrations, get_or_create with select_for_update (which Django ignores on SQLite: the
    block's BEGIN IMMEDIATE takes the write lock instead), F() updates, bulk_create,
    bulk_update, delete, nested atomic blocks (savepoints, one rolled back): the results are
    Django's, on a library connection in WAL mode, with Django's set-up (foreign keys,
    legacy_alter_table off), and every transaction begins as OPTIONS say (IMMEDIATE unless
    they name a transaction_mode)."""
    report = run(tmp_path / "app.db", "basics", LEDGER_OPTIONS=json.dumps(options))
    assert report["connection_type"] == "ResilientConnection"
    assert report["journal_mode"] == "wal"
    assert (report["vendor"], report["display_name"]) == ("sqlite", "SQLite (sqlite_resilient)")
    assert report["value"] == 11
    assert report["names"] == ["a", "inner"]
    assert report["entries"] == [[n, "updated"] for n in range(1, 6)]
    assert report["begins"]
    assert set(report["begins"]) == {begin}
    assert (report["foreign_keys"], report["legacy_alter_table"]) == (1, 0)


def test_processes_writing_through_the_orm_lose_no_increment_while_a_replica_reads(tmp_path: Path) -> None:
    """Three processes increment one counter through the ORM (read it, add one, record an
    entry with the new value: a read-then-write unit in ``atomic()`` under
    ``@retry_on_lock``) while a fourth reads the counter and its entries through the
    read-only alias: every increment lands once (the counter equals the number of
    increments, the entries are numbered 1..N without a gap or a repeat), no error reaches
    the code, and the reader saw values that never went back, each with its entries."""
    db = tmp_path / "app.db"
    assert run(db, "setup", "c") == {"ready": True}
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(
            subprocess.Popen(
                [sys.executable, str(WORKERS), "read", "c"],
                env=environment(db),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        writers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, str(WORKERS), "increment", "c", str(INCREMENTS), f"w{n}"],
                    env=environment(db),
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            for n in range(WRITERS)
        ]
        reports = [json.loads(writer.communicate(timeout=TIMEOUT)[0]) for writer in writers]
        seen = json.loads(reader.communicate("stop\n", timeout=TIMEOUT)[0])
    for report in reports:
        assert (report["done"], report["errors"]) == (INCREMENTS, []), report
    total = WRITERS * INCREMENTS
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM ledger_counter WHERE name = 'c'").fetchone() == (total,)
        numbers = [n for (n,) in conn.execute("SELECT n FROM ledger_entry ORDER BY n")]
    assert numbers == list(range(1, total + 1))
    assert seen["errors"] == [], seen
    assert seen["monotonic"], seen
    assert seen["reads"] > 0


def test_a_read_only_alias_refuses_writes_clearly(tmp_path: Path) -> None:
    """A write through the ``read_only`` alias fails with django.db.OperationalError whose
    message is the library's: the statement, and that the read-only connection refuses it."""
    db = tmp_path / "app.db"
    run(db, "setup", "c")
    report = run(db, "refused-write")
    assert report["cause"] == "OperationalError"
    assert report["error"].startswith('attempt to write a readonly database: \'INSERT INTO "ledger_counter"')
    assert f"is refused on the read-only connection to {str(db)!r}" in report["error"]


def test_retry_on_lock_leaves_an_outer_atomic_block_to_its_owner(tmp_path: Path) -> None:
    """``@retry_on_lock`` called inside an ``atomic()`` block that was open before the call
    (``DEFERRED``, its snapshot made stale by another connection's commit) runs once: the
    lock error reaches the block's owner as django.db.OperationalError, caused by SQLite's."""
    db = tmp_path / "app.db"
    run(db, "setup", "c")
    report = run(db, "nested-retry", LEDGER_OPTIONS=json.dumps({"transaction_mode": "DEFERRED"}))
    assert report == {"calls": 1, "error": "OperationalError", "cause": "OperationalError"}
