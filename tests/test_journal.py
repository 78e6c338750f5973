"""Where WAL can and cannot work, on real filesystems: read-only bind mounts, tmpfs, a FUSE
mount of a network filesystem type, read-only files and directories seen by an unprivileged
process, and connection set-up while another process holds the write lock.

Databases are real files prepared with plain :mod:`sqlite3`; nothing of SQLite is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from conftest import HELPER_TIMEOUT, RunHelper, StartLockHolder, helper_command

import sqlite_resilient
from sqlite_resilient import (
    DatabaseLockedError,
    ResilientConnection,
    UnreadableWALError,
    WALFallbackWarning,
    is_lock_error,
)
from sqlite_resilient._journal import NETWORK_FILESYSTEMS, FileSystem, filesystem_of, refuses_writers, wal_blocker

ROWS = 3
"""Rows every prepared database holds in table ``t``."""

READ_ONLY = pytest.mark.parametrize("read_only", [True, False], ids=["read-only-conn", "write-conn"])


def create_database(path: Path, journal_mode: str = "delete", rows: int = ROWS) -> None:
    """Create *path* with table ``t`` of *rows* rows in *journal_mode*, and close it cleanly
    (for WAL: checkpointed, ``-wal`` and ``-shm`` removed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0] == journal_mode
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    finally:
        conn.close()


@contextlib.contextmanager
def open_wal_writer(path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL database at *path* whose table ``t`` (``ROWS`` rows) exists only in ``-wal``
    while the yielded connection stays open (no checkpoint has run)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(ROWS)])
        main_file_only = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)  # ignores -wal
        with contextlib.closing(main_file_only):
            assert main_file_only.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        yield conn
    finally:
        conn.close()


def count(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row is not None
    return int(row[0])


def expect_fallback(read_only: bool, reason: str) -> contextlib.AbstractContextManager[object]:
    """``pytest.warns`` for the ``WALFallbackWarning`` of a write connection; nothing for a
    read-only connection, which never switches journal modes and never warns."""
    if read_only:
        return contextlib.nullcontext()
    return pytest.warns(WALFallbackWarning, match=reason)


def connect(path: Path, read_only: bool, **kwargs: Any) -> ResilientConnection:
    return sqlite_resilient.connect(path, read_only=read_only, **kwargs)


# -- read-only bind mounts -------------------------------------------------------------------


@pytest.mark.mounts
@READ_ONLY
def test_ro_mount_delete_mode_database_is_readable(ro_mount: tuple[Path, Path], read_only: bool) -> None:
    """A rollback-journal database on a read-only filesystem opens and reads, keeps
    journal_mode=delete; a write connection says why (read-only filesystem) and warns."""
    src, ro = ro_mount
    create_database(src / "app.db")
    with expect_fallback(read_only, "read-only filesystem"):
        conn = connect(ro / "app.db", read_only)
    with contextlib.closing(conn):
        assert count(conn) == ROWS
        assert conn.journal_mode == "delete"
        assert conn.filesystem is not None
        assert conn.filesystem.read_only
        if not read_only:
            assert "read-only filesystem" in conn.journal_mode_reason
    assert sorted(os.listdir(src)) == ["app.db"]


@pytest.mark.mounts
@READ_ONLY
def test_ro_mount_insert_fails_as_readonly_not_as_lock_error(ro_mount: tuple[Path, Path], read_only: bool) -> None:
    """On a read-only filesystem an INSERT fails at once with SQLite's "attempt to write a
    readonly database", which is not a lock error (so never retried until the timeout)."""
    src, ro = ro_mount
    create_database(src / "app.db")
    with expect_fallback(read_only, "read-only filesystem"):
        conn = connect(ro / "app.db", read_only, timeout=30)
    with contextlib.closing(conn):
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database") as caught:
            conn.execute("INSERT INTO t VALUES (99)")
        assert not isinstance(caught.value, DatabaseLockedError)
        assert is_lock_error(caught.value) is False
        conn.rollback()
        assert count(conn) == ROWS


@pytest.mark.mounts
@READ_ONLY
@pytest.mark.parametrize("wal_file", ["absent", "empty"])
def test_ro_mount_wal_database_without_wal_content_is_read(
    ro_mount: tuple[Path, Path], read_only: bool, wal_file: str
) -> None:
    """A WAL database closed cleanly (no -shm; -wal absent or empty) on a read-only
    filesystem, where the -shm file cannot be created, still reads every row: nothing can
    change, nothing is missed."""
    src, ro = ro_mount
    create_database(src / "app.db", journal_mode="wal")
    assert sorted(os.listdir(src)) == ["app.db"]
    if wal_file == "empty":
        (src / "app.db-wal").touch()
    with expect_fallback(read_only, "read-only filesystem"):
        conn = connect(ro / "app.db", read_only)
    with contextlib.closing(conn):
        assert count(conn) == ROWS
        assert conn.execute("SELECT sum(x) FROM t").fetchone()[0] == sum(range(ROWS))
        if not read_only:
            assert "read-only filesystem" in conn.journal_mode_reason


@pytest.mark.mounts
@READ_ONLY
def test_ro_mount_wal_content_without_shm_raises_unreadable_wal(
    ro_mount: tuple[Path, Path], tmp_path: Path, read_only: bool
) -> None:
    """A WAL database whose committed rows live only in its -wal file, copied without -shm
    onto a read-only filesystem, raises UnreadableWALError naming the file: never the stale
    (here: empty) main database file."""
    src, ro = ro_mount
    origin = tmp_path / "origin"
    origin.mkdir()
    with open_wal_writer(origin / "app.db"):
        assert os.path.getsize(origin / "app.db-wal") > 32
        shutil.copyfile(origin / "app.db", src / "app.db")
        shutil.copyfile(origin / "app.db-wal", src / "app.db-wal")
    path = ro / "app.db"
    with pytest.raises(UnreadableWALError) as caught:
        connect(path, read_only)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, sqlite3.OperationalError)
    assert sorted(os.listdir(src)) == ["app.db", "app.db-wal"]


@pytest.mark.mounts
@READ_ONLY
def test_ro_mount_wal_with_shm_reads_rows_only_in_wal(
    ro_mount: tuple[Path, Path], tmp_path: Path, read_only: bool
) -> None:
    """A WAL database copied with its -wal and -shm files onto a read-only filesystem reads
    every row, including those that exist only in the -wal file."""
    src, ro = ro_mount
    origin = tmp_path / "origin"
    origin.mkdir()
    with open_wal_writer(origin / "app.db"):
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(origin / f"app.db{suffix}", src / f"app.db{suffix}")
    with expect_fallback(read_only, "read-only filesystem"):
        conn = connect(ro / "app.db", read_only)
    with contextlib.closing(conn):
        assert count(conn) == ROWS
        if not read_only:
            assert "read-only filesystem" in conn.journal_mode_reason


@pytest.mark.mounts
def test_ro_mount_wal_reason_agrees_with_journal_mode(ro_mount: tuple[Path, Path], tmp_path: Path) -> None:
    """What a write connection says about its journal mode is consistent: a connection that
    reads through the WAL (journal_mode "wal") is not told "WAL not used"."""
    src, ro = ro_mount
    origin = tmp_path / "origin"
    origin.mkdir()
    with open_wal_writer(origin / "app.db"):
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(origin / f"app.db{suffix}", src / f"app.db{suffix}")
    with pytest.warns(WALFallbackWarning) as caught:
        conn = connect(ro / "app.db", read_only=False)
    with contextlib.closing(conn):
        assert conn.journal_mode == "wal"
        assert "read-only filesystem" in conn.journal_mode_reason
        assert "WAL not used" not in conn.journal_mode_reason
        assert "journal_mode stays 'wal'" not in str(caught[0].message)


@pytest.mark.mounts
@READ_ONLY
def test_ro_mount_hot_journal_raises_never_half_written_rows(
    ro_mount: tuple[Path, Path], run_helper: RunHelper, read_only: bool
) -> None:
    """A rollback-journal database left by a writer that died mid-transaction (a hot
    -journal beside a half-written file) cannot be rolled back on a read-only filesystem:
    connecting raises SQLite's read-only error, not a lock error, and never returns the
    half-written rows."""
    src, ro = ro_mount
    path = src / "app.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as setup:
        setup.execute("CREATE TABLE t (x INTEGER, pad BLOB)")
        setup.execute("BEGIN")
        setup.executemany("INSERT INTO t VALUES (?, zeroblob(500))", [(i,) for i in range(2000)])
        setup.execute("COMMIT")
    result = run_helper("crash-mid-write", str(path))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(src)) == ["app.db", "app.db-journal"]
    with pytest.raises(sqlite3.OperationalError, match="readonly") as caught:
        connect(ro / "app.db", read_only)
    assert is_lock_error(caught.value) is False
    with contextlib.closing(sqlite3.connect(path)) as check:  # where it is writable: rolled back
        assert check.execute("SELECT count(*), max(x) FROM t").fetchone() == (2000, 1999)


# -- read-only connections on a writable filesystem --------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_read_only_connection_sees_later_commits(tmp_path: Path, journal_mode: str) -> None:
    """A read-only connection on a writable filesystem is not immutable: it sees rows that
    another connection commits after it was opened."""
    path = tmp_path / "app.db"
    create_database(path, journal_mode=journal_mode)
    writer = sqlite3.connect(path, isolation_level=None)
    reader = sqlite_resilient.connect(path, read_only=True)
    with contextlib.closing(writer), contextlib.closing(reader):
        assert reader.journal_mode == journal_mode
        assert count(reader) == ROWS
        writer.execute("INSERT INTO t VALUES (100)")
        assert count(reader) == ROWS + 1
        writer.execute("DELETE FROM t")
        assert count(reader) == 0


@pytest.mark.parametrize("name", ["missing.db", "what? #1 100% sure & ünïcode.db"])
def test_read_only_connection_to_missing_file_creates_nothing(tmp_path: Path, name: str) -> None:
    """``connect(missing, read_only=True)`` raises OperationalError naming the path and
    creates no file (not the database, not a -journal, -wal or -shm), whatever characters
    the name holds."""
    path = tmp_path / name
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite_resilient.connect(path, read_only=True)
    assert str(path) in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_read_only_connection_refuses_writes(tmp_path: Path, journal_mode: str) -> None:
    """INSERT, UPDATE and CREATE on a read-only connection fail with SQLite's read-only
    error (not a lock error) and change nothing."""
    path = tmp_path / "app.db"
    create_database(path, journal_mode=journal_mode)
    with contextlib.closing(sqlite_resilient.connect(path, read_only=True)) as conn:
        assert conn.read_only
        assert conn.pragmas["query_only"] is True
        for statement in ("INSERT INTO t VALUES (99)", "UPDATE t SET x = x + 1", "CREATE TABLE u (y)"):
            with pytest.raises(sqlite3.OperationalError, match="readonly") as caught:
                conn.execute(statement)
            assert is_lock_error(caught.value) is False
            conn.rollback()
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT group_concat(x) FROM t").fetchone()[0] == "0,1,2"
        assert check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 1


# -- read-only file and directory (seen by an unprivileged process) -----------------------------


def _probe(run_helper: RunHelper, path: Path, read_only: bool = False) -> dict[str, Any]:
    """Connect to *path* in a helper process running as ``nobody``; return its report."""
    result = run_helper("probe-journal", str(path), *(["--read-only"] if read_only else []))
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    if "skip" in report:
        pytest.skip(report["skip"])
    assert report["euid"] == 65534
    return report


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop privileges to nobody"
)


@needs_root
def test_read_only_database_file_keeps_rollback_journal(shared_dir: Path, run_helper: RunHelper) -> None:
    """A database file its user cannot write (0444) is not switched to WAL: the connection
    keeps journal_mode=delete, reads, says "read-only database file" and warns once."""
    path = shared_dir / "app.db"
    create_database(path)
    path.chmod(0o444)
    report = _probe(run_helper, path)
    assert "error" not in report, report
    assert report["journal_mode"] == "delete"
    assert "read-only database file" in report["journal_mode_reason"]
    assert report["rows"] == ROWS
    fallbacks = [message for category, message in report["warnings"] if category == "WALFallbackWarning"]
    assert len(fallbacks) == 1, report["warnings"]
    assert "read-only database file" in fallbacks[0]
    assert sorted(os.listdir(shared_dir)) == ["app.db"]


@needs_root
def test_read_only_directory_keeps_rollback_journal(shared_dir: Path, run_helper: RunHelper) -> None:
    """A writable database file in a directory its user cannot write (0555), where -wal and
    -shm cannot be created, keeps journal_mode=delete and says "read-only directory"."""
    directory = shared_dir / "ro-dir"
    directory.mkdir()
    path = directory / "app.db"
    create_database(path)
    path.chmod(0o666)
    directory.chmod(0o555)
    report = _probe(run_helper, path)
    assert "error" not in report, report
    assert report["journal_mode"] == "delete"
    assert "read-only directory" in report["journal_mode_reason"]
    assert report["rows"] == ROWS
    categories = [category for category, _message in report["warnings"]]
    assert categories == ["WALFallbackWarning"], report["warnings"]
    assert sorted(os.listdir(directory)) == ["app.db"]


@needs_root
@READ_ONLY
def test_wal_database_in_read_only_directory_error_names_file(
    shared_dir: Path, run_helper: RunHelper, read_only: bool
) -> None:
    """A WAL database whose -shm cannot be created (read-only directory, no -wal/-shm yet)
    cannot be read; connect() says so with an OperationalError naming the file."""
    directory = shared_dir / "ro-dir"
    directory.mkdir()
    path = directory / "app.db"
    create_database(path, journal_mode="wal")
    directory.chmod(0o555)
    report = _probe(run_helper, path, read_only=read_only)
    assert "error" in report, report
    assert report["error"].startswith("OperationalError"), report
    assert str(path) in report["error"], report
    assert sorted(os.listdir(directory)) == ["app.db"]


# -- network filesystems -----------------------------------------------------------------------


@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "cifs", "smb3", "9p", "fuse.sshfs", "ceph"])
def test_network_filesystem_types_are_network(fstype: str) -> None:
    """Network filesystem types (as /proc/self/mountinfo names them) are recognised."""
    assert FileSystem(type=fstype, read_only=False).network
    assert fstype in NETWORK_FILESYSTEMS


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "fuse", None])
def test_local_filesystem_types_are_not_network(fstype: str | None) -> None:
    """Local filesystems, plain FUSE and an unknown type are not taken for network ones."""
    assert not FileSystem(type=fstype, read_only=False).network


def test_wal_blocker_names_network_filesystem(tmp_path: Path) -> None:
    """``wal_blocker`` refuses WAL on a network filesystem and names its type; a read-only
    filesystem is named first; a writable local one lets WAL through."""
    path = str(tmp_path / "app.db")
    reason = wal_blocker(path, FileSystem(type="nfs4", read_only=False))
    assert reason is not None
    assert "network filesystem" in reason
    assert "nfs4" in reason
    assert wal_blocker(path, FileSystem(type="nfs4", read_only=True)) == "read-only filesystem"
    assert wal_blocker(path, FileSystem(type="ext4", read_only=False)) is None


@pytest.mark.mounts
def test_real_fuse_mount_of_network_type_blocks_wal(tmp_path: Path) -> None:
    """On a real FUSE mount whose type is ``fuse.sshfs`` (served by a helper process, no
    network needed), ``filesystem_of`` reads the type from /proc/self/mountinfo, calls it a
    network filesystem, and ``wal_blocker`` refuses WAL there."""
    if not os.path.exists("/proc/self/mountinfo"):
        pytest.skip("no /proc/self/mountinfo: not Linux")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to mount a FUSE filesystem")
    mountpoint = tmp_path / "sshfs"
    mountpoint.mkdir()
    server = subprocess.Popen(helper_command("fuse-serve", str(mountpoint), "sshfs"), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        status = server.stdout.readline().strip()
        if status != "mounted":
            pytest.skip(f"cannot mount a FUSE filesystem here: {status}")
        path = str(mountpoint / "app.db")
        fs = filesystem_of(path)
        assert fs == FileSystem(type="fuse.sshfs", read_only=False, mount_point=str(mountpoint))
        assert fs.network
        reason = wal_blocker(path, fs)
        assert reason is not None
        assert "network filesystem (fuse.sshfs)" in reason
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False, timeout=HELPER_TIMEOUT)
        try:
            server.wait(timeout=HELPER_TIMEOUT)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            if server.stdout is not None:
                server.stdout.close()


# -- filesystem_of on real mounts --------------------------------------------------------------


@pytest.mark.mounts
def test_filesystem_of_tmpfs(tmpfs_mount: Path) -> None:
    """``filesystem_of`` reports a real tmpfs mount as type "tmpfs", writable, mounted at
    its directory, for an existing file and for a path that does not exist yet."""
    existing = tmpfs_mount / "app.db"
    create_database(existing)
    expected = FileSystem(type="tmpfs", read_only=False, mount_point=str(tmpfs_mount))
    assert filesystem_of(str(existing)) == expected
    assert filesystem_of(str(tmpfs_mount / "not-yet" / "app.db")) == expected
    assert wal_blocker(str(existing), expected) is None


@pytest.mark.mounts
def test_filesystem_of_read_only_bind_mount(ro_mount: tuple[Path, Path]) -> None:
    """``filesystem_of`` reports a read-only bind mount as read-only, of the type of the
    filesystem it binds, mounted at its own directory; ``wal_blocker`` says why."""
    src, ro = ro_mount
    create_database(src / "app.db")
    fs = filesystem_of(str(ro / "app.db"))
    assert fs.read_only
    assert fs.mount_point == str(ro)
    assert fs.type == filesystem_of(str(src / "app.db")).type
    assert not filesystem_of(str(src / "app.db")).read_only
    assert wal_blocker(str(ro / "app.db"), fs) == "read-only filesystem"


# -- connection set-up while another process holds the lock -------------------------------------


@pytest.mark.parametrize("mode", ["EXCLUSIVE", "DEFERRED"])
def test_connect_waits_for_held_write_lock(tmp_path: Path, lock_holder: StartLockHolder, mode: str) -> None:
    """``connect()`` on a rollback-journal database while another process holds a lock
    (EXCLUSIVE, or SHARED from a read transaction) waits instead of failing, and once the
    lock is released switches the database to WAL.

    (RESERVED, from BEGIN IMMEDIATE, is in
    ``test_connect_retried_through_lock_keeps_configured_busy_timeout``.)"""
    path = tmp_path / "app.db"
    create_database(path)
    holder = lock_holder(path, mode)
    outcome: list[object] = []
    finished = threading.Event()

    def open_connection() -> None:
        try:
            outcome.append(sqlite_resilient.connect(path, timeout=10, check_same_thread=False))
        except BaseException as error:  # handed to the test thread
            outcome.append(error)
        finally:
            finished.set()

    thread = threading.Thread(target=open_connection)
    thread.start()
    try:
        assert not finished.is_set(), f"connect() returned while the lock was held: {outcome}"
        holder.release()
    finally:
        thread.join(timeout=HELPER_TIMEOUT)
    assert not thread.is_alive()
    [result] = outcome
    assert isinstance(result, ResilientConnection), result
    with contextlib.closing(result) as conn:
        assert conn.journal_mode == "wal"
        assert conn.journal_mode_reason == "as configured"
        assert count(conn) == ROWS


@READ_ONLY
def test_connect_gives_up_with_database_locked_error(
    tmp_path: Path, lock_holder: StartLockHolder, read_only: bool
) -> None:
    """While another process keeps an EXCLUSIVE lock, ``connect(timeout=0.5)`` raises
    DatabaseLockedError (an OperationalError) whose cause is SQLite's lock error."""
    path = tmp_path / "app.db"
    create_database(path)
    lock_holder(path, "EXCLUSIVE")
    with pytest.raises(DatabaseLockedError) as caught:
        sqlite_resilient.connect(path, timeout=0.5, read_only=read_only)
    error = caught.value
    assert isinstance(error, sqlite3.OperationalError)
    assert isinstance(error.__cause__, sqlite3.OperationalError)
    assert is_lock_error(error.__cause__)
    assert is_lock_error(error)
    if hasattr(error.__cause__, "sqlite_errorname"):
        assert error.__cause__.sqlite_errorname.startswith("SQLITE_BUSY")
        assert error.sqlite_errorname == error.__cause__.sqlite_errorname


@READ_ONLY
def test_connect_to_wal_database_needs_no_write_lock(
    tmp_path: Path, lock_holder: StartLockHolder, read_only: bool
) -> None:
    """Set-up of a connection to a database already in WAL needs no lock that a writer
    holds: with another process inside a write transaction, ``connect(timeout=0)`` succeeds
    and reads the last committed rows."""
    path = tmp_path / "app.db"
    create_database(path, journal_mode="wal")
    holder = lock_holder(path, "EXCLUSIVE")
    with contextlib.closing(sqlite_resilient.connect(path, timeout=0, read_only=read_only)) as conn:
        assert conn.journal_mode == "wal"
        assert count(conn) == ROWS
    holder.release()


def test_connect_retried_through_lock_keeps_configured_busy_timeout(
    tmp_path: Path, lock_holder: StartLockHolder
) -> None:
    """``connect()`` that had to back off and retry because another process held RESERVED
    (BEGIN IMMEDIATE; switching to WAL fails at once, SQLite's busy handler is not used)
    succeeds once the lock is released, in WAL, with exactly the configured busy_timeout and
    no warning.

    The test releases the lock only after the connecting thread has started to back off: a
    profile hook on that thread sets an Event when it calls ``time.sleep``."""
    path = tmp_path / "app.db"
    create_database(path)
    holder = lock_holder(path, "IMMEDIATE")
    outcome: list[object] = []
    backing_off = threading.Event()
    progress = threading.Event()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and arg is time.sleep:
            backing_off.set()
            progress.set()

    def open_connection() -> None:
        sys.setprofile(hook)
        try:
            outcome.append(sqlite_resilient.connect(path, timeout=10, check_same_thread=False))
        except BaseException as error:  # handed to the test thread
            outcome.append(error)
        finally:
            sys.setprofile(None)
            progress.set()

    thread = threading.Thread(target=open_connection)
    thread.start()
    try:
        assert progress.wait(timeout=HELPER_TIMEOUT)
        assert backing_off.is_set(), f"connect() did not wait for the lock: {outcome}"
        holder.release()
    finally:
        thread.join(timeout=HELPER_TIMEOUT)
    assert not thread.is_alive()
    [result] = outcome
    assert isinstance(result, ResilientConnection), repr(result)
    with contextlib.closing(result) as conn:
        assert conn.journal_mode == "wal"
        assert conn.pragmas["busy_timeout"] == 10_000
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_asking_whether_the_filesystem_refuses_writers_keeps_this_processs_locks(tmp_path: Path) -> None:
    """Asking whether a database's filesystem refuses writers (done after an I/O error) must
    not open the file in this process: closing any descriptor of a file lets go of every
    POSIX lock the process holds on it, SQLite's connections' included, and another process
    could then write under a connection that believes it holds a lock. Here a connection of
    this process holds SHARED (a read transaction, rollback journal): after the question,
    another process still cannot take EXCLUSIVE."""
    db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(db)) as setup:
        setup.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]  # SHARED is held
        assert refuses_writers(str(db)) is False
        probe = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
            "try:\n"
            "    c.execute('BEGIN EXCLUSIVE')\n"
            "except sqlite3.OperationalError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    print('exclusive')\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe, str(db)], capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=True
        )
        assert result.stdout.strip() == "database is locked"
    finally:
        reader.close()
