"""The Django backend (``ENGINE: "sqlite_resilient.django"``) with a real Django project
(``tests/django_project``: models, migrations, a read-only alias and a router) in helper
processes (``tests/django_workers.py``): the ORM's everyday operations, ``atomic()`` blocks
that begin ``IMMEDIATE``, several processes incrementing through the ORM while another
reads through the read-only alias, and ``@retry_on_lock`` around units of work."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django", reason="the django extra is not installed (Django 5.2+ needs Python 3.10+)")

DJANGO_APPS = ("backends", "transactions", "select_for_update", "transaction_hooks", "bulk_create", "get_or_create")
"""The parts of Django's own test suite run through the backend in the suite (a wider run,
15 apps and 2,927 tests, differed in the same two tests; see the README)."""
DJANGO_DIFFERENCES = {
    "backends.sqlite.tests.TestTransactionMode.test_default_transaction_mode":
        "atomic() begins IMMEDIATE by default, where Django's backend begins DEFERRED",
    "backends.base.test_base.DatabaseWrapperLoggingTests.test_commit_debug_log":
        "the same: the logged BEGIN is BEGIN IMMEDIATE",
}  # fmt: skip
"""Django's tests that fail through the backend, and why: each a decision of the backend's."""
DJANGO_SETTINGS = """\
DATABASES = {"default": {"ENGINE": "sqlite_resilient.django"}, "other": {"ENGINE": "sqlite_resilient.django"}}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
"""
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
    assert (report["vendor"], report["display_name"]) == ("sqlite", "SQLite")  # Django's messages name SQLite
    assert report["value"] == 11
    assert report["names"] == ["a", "inner"]
    assert report["entries"] == [[n, "updated"] for n in range(1, 6)]
    assert report["begins"]
    assert set(report["begins"]) == {begin}
    assert (report["foreign_keys"], report["legacy_alter_table"]) == (1, 0)


@pytest.mark.parametrize("transaction_mode", [None, "DEFERRED"])
def test_processes_writing_through_the_orm_lose_no_increment_while_a_replica_reads(
    tmp_path: Path, transaction_mode: str | None
) -> None:
    """Three processes increment one counter through the ORM (read it, add one, record an
    entry with the new value: a read-then-write unit in ``atomic()`` under
    ``@retry_on_lock``) while a fourth reads the counter and its entries through the
    read-only alias: every increment lands once (the counter equals the number of
    increments, the entries are numbered 1..N without a gap or a repeat), no error reaches
    the code, and the reader saw values that never went back, each with its entries. With
    ``transaction_mode`` DEFERRED the blocks' snapshots go stale under the other writers:
    ``@retry_on_lock`` finds SQLite's lock error inside django.db.OperationalError, the
    failed attempt is rolled back, and the unit runs again, with the same result."""
    db = tmp_path / "app.db"
    options = {} if transaction_mode is None else {"transaction_mode": transaction_mode}
    assert run(db, "setup", "c") == {"ready": True}
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(
            subprocess.Popen(
                [sys.executable, str(WORKERS), "read", "c"],
                env=environment(db, LEDGER_OPTIONS=json.dumps(options)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        writers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, str(WORKERS), "increment", "c", str(INCREMENTS), f"w{n}"],
                    env=environment(db, LEDGER_OPTIONS=json.dumps(options)),
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


def django_tests() -> Path:
    """The ``tests`` directory of the installed Django's source distribution, downloaded once
    into the user's cache; skip the test where it cannot be had."""
    import django

    version = django.get_version()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sqlite_resilient-tests"
    tests = cache / f"django-{version}" / "tests"
    if tests.is_dir():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(cache), f"django=={version}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    archives = list(cache.glob(f"[dD]jango-{version}.tar.gz"))
    if download.returncode != 0 or not archives:
        pytest.skip(f"Django {version}'s source distribution could not be downloaded: {download.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(f"{archives[0].name[:-7]}/tests/")]
        extract: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(cache, members=members, **extract)  # noqa: S202 - the index's own Django, its tests only
    extracted = cache / archives[0].name[:-7] / "tests"
    if extracted != tests:
        extracted.parent.rename(tests.parent)
    return tests


@pytest.mark.once  # Django's tests, not the interpreter's: make test runs them
def test_djangos_own_tests_through_the_backend(tmp_path: Path) -> None:
    """Django's own tests of its backends, transactions, select_for_update, on-commit hooks,
    bulk_create and get_or_create, run with the backend: they pass but for the listed
    differences (:data:`DJANGO_DIFFERENCES`), each a decision of the backend's; a listed one
    that passes fails this test (remove it from the list)."""
    tests = django_tests()
    (tmp_path / "resilient_settings.py").write_text(DJANGO_SETTINGS)
    result = subprocess.run(
        [sys.executable, str(tests / "runtests.py"), "--settings=resilient_settings", "--parallel=1", *DJANGO_APPS],
        cwd=tests,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert re.search(r"^Ran \d+ tests", output, re.MULTILINE), output[-3000:]
    failed = {
        path if path.endswith(f".{name}") else f"{path}.{name}"  # unittest's form before 3.11: no method
        for name, path in re.findall(r"^(?:FAIL|ERROR): (\S+) \((\S+)\)$", output, re.MULTILINE)
    }
    assert failed == set(DJANGO_DIFFERENCES), output[-3000:]
