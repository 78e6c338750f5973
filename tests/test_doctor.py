"""``sqlite-resilient doctor DB``: read-only checks of a database file and its place, a
table or JSON, exit status 1 on a problem, and nothing changed on the way."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import sqlite_resilient
from sqlite_resilient import Settings
from sqlite_resilient._doctor import Diagnosis, diagnose


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqlite_resilient", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_wal_database(path: Path, rows: int = 10) -> None:
    """A WAL database with a table ``t`` of *rows* rows."""
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
        conn.commit()


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of *directory* and a hash of its content; the -shm file (WAL's shared
    memory, where every reader records what it reads) only by name."""
    return {
        path.name: "" if path.name.endswith("-shm") else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def by_name(diagnosis: Diagnosis) -> dict[str, list[tuple[str, str, str]]]:
    checks: dict[str, list[tuple[str, str, str]]] = {}
    for check in diagnosis.checks:
        checks.setdefault(check.name, []).append((check.status, check.value, check.detail))
    return checks


def test_healthy_wal_database_reports_everything_and_changes_nothing(tmp_path: Path) -> None:
    """A healthy WAL database with a live writer: every check runs, quick_check is ok, the
    -wal and -shm sizes are listed, exit status 0, and no file is created or changed."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(db)) as writer:
        writer.execute("CREATE TABLE t(x)")
        writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        writer.commit()
        before = snapshot(tmp_path)
        result = doctor(str(db), "--json")
        assert snapshot(tmp_path) == before
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["database"] == str(db)
    checks = {check["name"]: check for check in report["checks"]}
    assert {
        "file",
        "permissions",
        "filesystem",
        "journal mode",
        "-wal",
        "-shm",
        "read-only open",
        "quick_check",
    } <= set(checks)
    assert checks["journal mode"]["value"] == "wal"
    assert checks["quick_check"]["status"] == "ok"
    assert checks["read-only open"]["status"] == "ok"
    assert all(check["status"] != "problem" for check in report["checks"])


def test_table_output_ends_with_the_verdict(tmp_path: Path) -> None:
    """Without ``--json`` the report is a table under the database's path, one line per
    check, and a verdict line."""
    db = tmp_path / "app.db"
    make_wal_database(db)
    result = doctor(str(db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(db)
    assert lines[1].split()[:3] == ["check", "status", "value"]
    assert any(line.split()[:3] == ["quick_check", "ok", "ok"] for line in lines)
    assert lines[-1] == "no problem, 0 warning(s)"


def test_missing_file_is_a_problem_and_is_not_created(tmp_path: Path) -> None:
    """A path with no file: exit status 1, "missing", and doctor does not create it."""
    db = tmp_path / "nothing.db"
    result = doctor(str(db), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(check["name"], check["value"]) for check in report["checks"]] == [("file", "missing")]
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_problem(tmp_path: Path) -> None:
    """A file that is not SQLite's: exit status 1 with its first bytes shown."""
    db = tmp_path / "notes.db"
    db.write_text("these are notes, not a database\n")
    result = doctor(str(db))
    assert result.returncode == 1
    assert "not a SQLite database" in result.stdout
    assert "these are notes" in result.stdout


def test_damaged_page_is_found_by_quick_check(tmp_path: Path) -> None:
    """A database whose table pages were overwritten: quick_check's findings are the
    problem, exit status 1."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(200),) for _ in range(200)])
        conn.commit()
    with open(db, "r+b") as f:  # keep page 1 (header and schema), wreck the b-tree pages after it
        f.seek(4096 + 8)
        f.write(b"\xff" * 4096 * 3)
    checks = by_name(diagnose(db))
    assert checks["quick_check"][0][0] == "problem"
    result = doctor(str(db))
    assert result.returncode == 1


def test_large_wal_is_a_warning(tmp_path: Path) -> None:
    """A -wal larger than ``wal_warn_bytes`` is a warning that says what to do; not a
    problem (the exit status stays 0)."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(db, settings=Settings(wal_warn_bytes=None))) as writer:
        writer.execute("CREATE TABLE t(x)")
        writer.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(100)])
        writer.commit()
        diagnosis = diagnose(db, Settings(wal_warn_bytes=1024))
    (wal,) = by_name(diagnosis)["-wal"]
    assert wal[0] == "warning"
    assert "maintain_wal" in wal[2]
    assert diagnosis.problems == 0
    assert diagnosis.warnings == 1


def test_read_only_filesystem_says_connect_falls_back(ro_mount: tuple[Path, Path]) -> None:
    """On a read-only bind mount: the filesystem is reported read-only, the journal mode
    check says connect() falls back from WAL and why, and reading works (exit 0)."""
    source, mounted = ro_mount
    with contextlib.closing(sqlite3.connect(source / "app.db")) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
    checks = by_name(diagnose(mounted / "app.db"))
    assert checks["filesystem"][0][2] == "mounted read-only"
    assert "falls back from WAL: read-only filesystem" in checks["journal mode"][0][2]
    assert checks["quick_check"][0][0] == "ok"
    assert doctor(str(mounted / "app.db")).returncode == 0


@pytest.mark.parametrize("argv", [[], ["--json"]])
def test_doctor_needs_a_database_argument(argv: list[str]) -> None:
    """Without DB it is a usage error: exit status 2 and argparse's message."""
    result = doctor(*argv)
    assert result.returncode == 2
    assert "DB" in result.stderr
