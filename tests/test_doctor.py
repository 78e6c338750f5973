"""``sqlite-resilient doctor DB``: read-only checks of a database file and its place, a
table or JSON, exit status 1 on a problem, nothing changed or created on the way, another
process's lock reported as information; and ``sqlite-resilient checkpoint DB``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import StartLockHolder

import sqlite_resilient
from sqlite_resilient import Settings
from sqlite_resilient._doctor import Diagnosis, _shared_lock, diagnose


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
    assert f"sqlite-resilient checkpoint {db}" in wal[2]
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


def checkpoint_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "sqlite_resilient", "checkpoint", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_rollback_database(path: Path) -> None:
    """A rollback-journal database (plain ``sqlite3``) with a table ``t`` of 10 rows."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
        conn.commit()


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The checks of a JSON report by name (the first of each name)."""
    checks: dict[str, dict[str, str]] = {}
    for check in report["checks"]:
        checks.setdefault(check["name"], check)
    return checks


# -- a missing file: what connect() would do -------------------------------------------------


def test_missing_file_in_a_writable_directory_would_be_created(tmp_path: Path) -> None:
    """A missing file whose directory is writable: doctor says connect() would create it,
    and so connect() does."""
    db = tmp_path / "new.db"
    result = doctor(str(db), "--json")
    assert result.returncode == 1
    (check,) = json.loads(result.stdout)["checks"]
    assert "connect() would create it" in check["detail"]
    assert list(tmp_path.iterdir()) == []
    with contextlib.closing(sqlite_resilient.connect(db)):
        pass
    assert db.exists()


def test_missing_directory_says_connect_would_fail(tmp_path: Path) -> None:
    """A path whose directory does not exist: doctor says connect() would fail and why
    (the directory, named), and connect() does fail there; nothing is created."""
    db = tmp_path / "no" / "such" / "x.db"
    result = doctor(str(db), "--json")
    assert result.returncode == 1
    (check,) = json.loads(result.stdout)["checks"]
    assert check["value"] == "missing"
    assert "would create" not in check["detail"]
    assert "connect() would fail" in check["detail"]
    assert f"{str(db.parent)!r} does not exist" in check["detail"]
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        sqlite_resilient.connect(db)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_on_a_read_only_filesystem_says_connect_would_fail(ro_mount: tuple[Path, Path]) -> None:
    """A missing file on a read-only bind mount: connect() would fail (read-only
    filesystem), as it does."""
    _source, mounted = ro_mount
    db = mounted / "new.db"
    (check,) = diagnose(db).checks
    assert "connect() would fail" in check.detail
    assert "read-only filesystem" in check.detail
    with pytest.raises(sqlite3.OperationalError):
        sqlite_resilient.connect(db)


# -- doctor creates no file ------------------------------------------------------------------


def test_closed_wal_database_gets_no_side_files(tmp_path: Path) -> None:
    """A WAL database whose connections all closed (checkpointed, no -wal or -shm left):
    doctor reads it (quick_check ok) and the directory listing is unchanged: no -wal, no
    -shm, no content changed."""
    db = tmp_path / "app.db"
    make_wal_database(db)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.db", "app.db-writers"]
    with open(db, "rb") as f:
        assert f.read(20)[18:20] == b"\x02\x02"  # the header says WAL
    before = snapshot(tmp_path)
    result = doctor(str(db), "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before
    checks = checks_of(json.loads(result.stdout))
    assert checks["read-only open"]["status"] == "ok"
    assert checks["quick_check"]["status"] == "ok"
    assert "page_count=" in checks["pragmas"]["detail"]


@pytest.mark.parametrize("leftover", ["-wal", "-shm"])
def test_wal_database_with_one_empty_side_file_gets_no_other(tmp_path: Path, leftover: str) -> None:
    """A WAL database with only an empty ``-wal``, or only a ``-shm`` (nothing to read in
    the WAL either way): the missing one is not created."""
    db = tmp_path / "app.db"
    make_wal_database(db)
    (tmp_path / f"app.db{leftover}").touch()
    before = snapshot(tmp_path)
    diagnosis = diagnose(db)
    assert diagnosis.problems == 0
    assert snapshot(tmp_path) == before


def run_python(database: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* in another Python process, with ``sqlite3`` imported and ``db`` the path."""
    return subprocess.run(
        [sys.executable, "-c", f"import sqlite3; db = {str(database)!r}; {code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shared_lock_keeps_a_writers_side_files(tmp_path: Path) -> None:
    """While doctor holds the shared lock its immutable read relies on, a writer process
    that starts, commits and closes cannot delete its -wal and -shm (so doctor sees that a
    writer came and reads again), and a rollback-journal writer cannot commit; once it is
    let go, the last connection to close deletes them as usual."""
    wal_db = tmp_path / "wal.db"
    make_wal_database(wal_db)
    rollback_db = tmp_path / "rollback.db"
    make_rollback_database(rollback_db)
    write = "c = sqlite3.connect(db, timeout={}); c.execute('INSERT INTO t VALUES (1)'); c.commit(); c.close()"
    with _shared_lock(str(wal_db), 1.0) as held, _shared_lock(str(rollback_db), 1.0) as also_held:
        assert held
        assert also_held
        assert run_python(wal_db, write.format(0)).returncode == 0
        assert (tmp_path / "wal.db-wal").exists()
        assert (tmp_path / "wal.db-shm").exists()
        refused = run_python(rollback_db, write.format(0))
        assert "database is locked" in refused.stderr
    assert (
        run_python(wal_db, "c = sqlite3.connect(db); c.execute('SELECT 1 FROM t').fetchall(); c.close()").returncode
        == 0
    )
    assert not (tmp_path / "wal.db-wal").exists()
    assert not (tmp_path / "wal.db-shm").exists()
    assert run_python(rollback_db, write.format(0)).returncode == 0


@pytest.mark.timeout(60)
def test_shared_lock_waits_at_most_its_timeout(tmp_path: Path, lock_holder: StartLockHolder) -> None:
    """Another process's exclusive lock (``BEGIN EXCLUSIVE``): the shared lock is not
    taken, after the timeout; once the holder has let go, it is."""
    db = tmp_path / "app.db"
    make_rollback_database(db)
    holder = lock_holder(db, "EXCLUSIVE")
    with _shared_lock(str(db), 0.1) as held:
        assert not held
    holder.release()
    with _shared_lock(str(db), 0.1) as held:
        assert held


# -- another process's lock is information ---------------------------------------------------


@pytest.mark.timeout(60)
def test_exclusive_lock_of_another_process_is_information(tmp_path: Path, lock_holder: StartLockHolder) -> None:
    """A rollback-journal database that another process holds with ``BEGIN EXCLUSIVE``
    (readers must wait): doctor says so as information, names the process, exits 0 and
    writes nothing on stderr (no log line)."""
    db = tmp_path / "app.db"
    make_rollback_database(db)
    holder = lock_holder(db, "EXCLUSIVE")
    result = doctor(str(db), "--json")
    holder.release()
    assert result.returncode == 0, result.stdout
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["problems"] == 0
    checks = checks_of(report)
    assert checks["locks"]["status"] == "info"
    assert f"pid {holder.process.pid}" in checks["locks"]["value"]
    assert "exclusive" in checks["locks"]["value"]
    assert checks["read-only open"]["status"] == "info"
    assert checks["read-only open"]["value"] == "locked"
    assert "not a defect" in checks["read-only open"]["detail"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("journal", ["wal", "rollback"])
def test_write_transaction_of_another_process_is_information(
    tmp_path: Path, lock_holder: StartLockHolder, journal: str
) -> None:
    """Another process inside ``BEGIN IMMEDIATE`` (a write transaction open): doctor names
    the process holding the write lock as information, still reads everything
    (quick_check ok), exits 0 and writes nothing on stderr."""
    db = tmp_path / "app.db"
    (make_wal_database if journal == "wal" else make_rollback_database)(db)
    holder = lock_holder(db, "IMMEDIATE")
    result = doctor(str(db), "--json")
    holder.release()
    assert result.returncode == 0, result.stdout
    assert result.stderr == ""
    checks = checks_of(json.loads(result.stdout))
    assert checks["locks"]["status"] == "info"
    assert checks["locks"]["value"] == f"write lock, pid {holder.process.pid}"
    assert "not a defect" in checks["locks"]["detail"]
    assert checks["quick_check"]["status"] == "ok"


def test_no_lock_held_is_said(tmp_path: Path) -> None:
    """With no other process on the database, the locks row says none is held."""
    db = tmp_path / "app.db"
    make_rollback_database(db)
    checks = by_name(diagnose(db))
    assert checks["locks"] == [("ok", "none held", "")]


# -- a read-only filesystem ------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["wal", "rollback"])
def test_read_only_filesystem_rows_agree_with_connect(ro_mount: tuple[Path, Path], journal: str) -> None:
    """On a read-only bind mount, a 0644 file: the permissions row says the filesystem is
    read-only (not the file, whose mode is shown), and the journal mode and pragmas rows
    both say connect() falls back from WAL, which is what connect() does."""
    source, mounted = ro_mount
    (make_wal_database if journal == "wal" else make_rollback_database)(source / "app.db")
    (source / "app.db").chmod(0o644)
    checks = by_name(diagnose(mounted / "app.db"))
    ((_status, value, detail),) = checks["permissions"]
    assert value == "read-only filesystem"
    assert "0644" in detail
    assert "read-only file " not in value
    (journal_row,) = checks["journal mode"]
    assert "falls back from WAL: read-only filesystem" in journal_row[2]
    sets = next(row for row in checks["pragmas"] if row[1] == "connect() sets")
    assert "journal_mode=wal" not in sets[2]
    assert "falls back from WAL" in sets[2]
    with pytest.warns(sqlite_resilient.WALFallbackWarning, match="read-only filesystem"):
        conn = sqlite_resilient.connect(mounted / "app.db")
    with contextlib.closing(conn):
        assert "read-only filesystem" in conn.journal_mode_reason
        assert conn.journal_mode == "delete"  # a WAL file with no -wal or -shm is opened immutable there


# -- the -writers side file ------------------------------------------------------------------


def test_writers_file_is_explained(tmp_path: Path) -> None:
    """The write queue's side file is listed with what it is and what deleting it does."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(db)) as conn, sqlite_resilient.db_transaction(conn):
        conn.execute("CREATE TABLE t(x)")
    assert (tmp_path / "app.db-writers").exists()
    ((status, _value, detail),) = by_name(diagnose(db))["-writers"]
    assert status == "info"
    assert "write queue" in detail
    assert "sqlite_resilient" in detail
    assert "safe to leave" in detail
    assert "deleted" in detail


# -- sqlite-resilient checkpoint -------------------------------------------------------------


def test_checkpoint_copies_the_wal_back(tmp_path: Path) -> None:
    """A WAL holding frames (a writer with automatic checkpoints off keeps it open):
    ``checkpoint`` (maintain_wal: passive is enough) copies every frame back and says so,
    then ``--mode truncate`` empties the -wal file; exit status 0 both times."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(db, pragmas={"wal_autocheckpoint": 0})) as writer:
        writer.execute("CREATE TABLE t(x)")
        writer.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(100)])
        writer.commit()
        wal_size = (tmp_path / "app.db-wal").stat().st_size
        assert wal_size > 0
        result = checkpoint_command(str(db), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["complete"] is True
        assert report["wal_bytes_before"] == wal_size
        (passive,) = report["checkpoints"]
        assert passive["mode"] == "passive"
        assert passive["wal_pages"] > 0
        assert passive["checkpointed_pages"] == passive["wal_pages"]
        result = checkpoint_command(str(db), "--mode", "truncate")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == str(db)
        assert "truncate" in result.stdout
        assert f"-wal: {wal_size / 1024:.1f} KiB before, 0 bytes after" in result.stdout
        assert (tmp_path / "app.db-wal").stat().st_size == 0
        assert writer.execute("SELECT count(*) FROM t").fetchone() == (100,)


@pytest.mark.timeout(60)
def test_checkpoint_behind_a_reader_fails_with_the_numbers(tmp_path: Path, lock_holder: StartLockHolder) -> None:
    """Another process keeps a read transaction open while frames are written after its
    snapshot: the checkpoint escalates (passive, restart, truncate), cannot complete, exits
    1 and says why with the frames; once the reader is gone it completes (exit 0)."""
    db = tmp_path / "app.db"
    make_wal_database(db)
    reader = lock_holder(db, "DEFERRED")
    with contextlib.closing(sqlite3.connect(db)) as writer:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        writer.commit()
    result = checkpoint_command(str(db), "--timeout", "0.2")
    assert result.returncode == 1, result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()[1:4]] == ["passive", "restart", "truncate"]
    assert "could not complete" in result.stderr
    assert str(db) in result.stderr
    assert "read transaction" in result.stderr
    reader.release()
    result = checkpoint_command(str(db), "--timeout", "0.2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_checkpoint_never_creates_a_database(tmp_path: Path) -> None:
    """A path with no file: exit status 1, a message naming it, and no file created."""
    db = tmp_path / "nothing.db"
    result = checkpoint_command(str(db))
    assert result.returncode == 1
    assert result.stdout == ""
    assert str(db) in result.stderr
    assert "no such" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_leaves_a_rollback_journal_database_alone(tmp_path: Path) -> None:
    """A database not in WAL mode: nothing to checkpoint (exit 0, said), and it is not
    switched to WAL."""
    db = tmp_path / "app.db"
    make_rollback_database(db)
    before = snapshot(tmp_path)
    result = checkpoint_command(str(db), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["journal_mode"] == "delete"
    assert report["complete"] is True
    assert snapshot(tmp_path) == before
    result = checkpoint_command(str(db))
    assert "not in WAL mode" in result.stdout


@pytest.mark.parametrize("frames", [False, True])
def test_checkpoint_on_a_read_only_filesystem(ro_mount: tuple[Path, Path], frames: bool) -> None:
    """A WAL database on a read-only bind mount: with nothing in its WAL there is nothing to
    checkpoint (exit 0, and why); with frames in its -wal (copied there while a writer had
    it open) the checkpoint cannot be done there, exit 1 and the reason."""
    source, mounted = ro_mount
    live = source / "live.db"
    with contextlib.closing(sqlite3.connect(live)) as writer:
        writer.execute("PRAGMA journal_mode = wal")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("CREATE TABLE t(x)")
        writer.commit()
        (source / "app.db").write_bytes(live.read_bytes())
        if frames:
            (source / "app.db-wal").write_bytes((source / "live.db-wal").read_bytes())
    result = checkpoint_command(str(mounted / "app.db"))
    if frames:
        assert result.returncode == 1
        assert str(mounted / "app.db") in result.stderr
        assert "read-only filesystem" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "nothing to checkpoint: read-only filesystem" in result.stdout


@pytest.mark.parametrize("argv", [[], ["app.db", "--mode", "sometimes"], ["app.db", "--timeout", "0"]])
def test_checkpoint_usage_errors(argv: list[str]) -> None:
    """No DB, an unknown mode or a timeout that is not > 0: exit status 2 and argparse's message."""
    result = checkpoint_command(*argv)
    assert result.returncode == 2
    assert "usage: sqlite-resilient checkpoint" in result.stderr


def test_a_followers_copy_shows_its_position_and_is_left_as_it_is(tmp_path: Path) -> None:
    """A Litestream follower's copy (a ``-txid`` file beside it): doctor shows the position
    the follower applied and how long ago, reads the copy (quick_check ok) and changes
    nothing, its WAL header included."""
    primary, copy = tmp_path.parent / f"{tmp_path.name}-primary.db", tmp_path / "app.db"
    make_wal_database(primary)
    copy.write_bytes(primary.read_bytes())
    Path(f"{copy}-txid").write_text("00000000000000a1\n")
    before = snapshot(tmp_path)
    result = doctor(str(copy), "--json")
    assert result.returncode == 0, result.stderr
    assert snapshot(tmp_path) == before
    checks = checks_of(json.loads(result.stdout))
    assert checks["follower"]["status"] == "info"
    assert checks["follower"]["value"].startswith("position 161 (applied ")
    assert "read it with read_only=True" in checks["follower"]["detail"]
    assert checks["quick_check"]["status"] == "ok"
