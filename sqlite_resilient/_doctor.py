"""``sqlite-resilient doctor DB``: what a database file and its place need, read-only; and
``sqlite-resilient checkpoint DB``, which copies a WAL back into its database.

Doctor only reads: the file's header, the filesystem, the side files' sizes, who holds
SQLite's locks (``F_GETLK``, which takes none), and a read-only connection (``mode=ro`` +
``query_only``) for the pragmas and ``quick_check``. Nothing is switched to WAL or
checkpointed, and no file is created.

A read-only connection creates a WAL database's missing ``-wal`` or ``-shm``. So a WAL
database missing either, with nothing in its WAL, is read with ``immutable=1``, under a
SHARED lock of the file taken as SQLite's readers take theirs
(https://www.sqlite.org/lockingv3.html). While that lock is held no connection can delete a
``-wal`` or ``-shm``: finding both afterwards means that a writer started during the read
(its checkpoint may have torn what was read), and the read is done again through that
writer's files. Two exceptions: a ``-wal`` that holds frames without its ``-shm`` gets one
(SQLite needs it to read them), and without open file description locks (outside Linux)
the read-only connection creates the files as SQLite does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shlex
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ._connection import connect
from ._errors import ReplicaError, is_lock_error
from ._follower import applied
from ._gate import FLOCK, ofd_lock
from ._journal import FileSystem, filesystem_of, is_wal_file, wal_blocker, wal_content_bytes
from ._settings import DEFAULT_SETTINGS, Settings
from ._uri import to_uri
from ._wal import CheckpointMode, CheckpointResult, checkpoint, maintain_wal, wal_bytes

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Check",
    "CheckpointReport",
    "Diagnosis",
    "checkpoint_database",
    "diagnose",
    "format_checkpoint",
    "format_diagnosis",
]

Status = Literal["ok", "info", "warning", "problem"]
HEADER = b"SQLite format 3\x00"  # https://www.sqlite.org/fileformat.html#the_database_header
_PERSISTENT_PRAGMAS = ("page_size", "page_count", "freelist_count", "auto_vacuum", "encoding", "user_version")
_QUICK_CHECK_LINES = 5
_OPEN_TIMEOUT = 2.0  # a read-only open waits this long for a lock before it is reported
_LOCK_POLL = 0.01
CHECKPOINT_TIMEOUT = 5.0
"""How long, by default, ``sqlite-resilient checkpoint`` waits for each lock it needs."""

# Where SQLite's unix VFS keeps its locks: bytes of the database file's lock-byte page
# (https://www.sqlite.org/fileformat.html#the_lock_byte_page) and, in WAL mode, the write
# lock's byte of the -shm file (https://www.sqlite.org/walformat.html).
_PENDING_BYTE = 0x40000000
_RESERVED_BYTE = _PENDING_BYTE + 1
_SHARED_FIRST, _SHARED_SIZE = _PENDING_BYTE + 2, 510
_WAL_WRITE_LOCK = 120
_CAN_LOCK_QUIETLY = fcntl is not None and hasattr(fcntl, "F_OFD_SETLK")


@dataclass(frozen=True)
class Check:
    """One finding: what was looked at, how it is, and what it means."""

    name: str
    status: Status
    value: str
    detail: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """Every check of one database file."""

    database: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def problems(self) -> int:
        return sum(check.status == "problem" for check in self.checks)

    @property
    def warnings(self) -> int:
        return sum(check.status == "warning" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "ok": self.problems == 0,
            "problems": self.problems,
            "warnings": self.warnings,
            "checks": [asdict(check) for check in self.checks],
        }


def _size(num_bytes: int) -> str:
    if num_bytes < 1024:
        return f"{num_bytes} bytes"
    scaled, unit = float(num_bytes), "bytes"
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007 - the last unit is the one printed
        scaled /= 1024
        if scaled < 1024:
            break
    return f"{scaled:.1f} {unit}"


def diagnose(database: str | os.PathLike[str], settings: Settings = DEFAULT_SETTINGS) -> Diagnosis:
    """Look at *database* (a file path) and everything :func:`connect` depends on there.

    Call it where no connection to *database* is open in the same process: closing a file
    descriptor of a file drops every POSIX lock the process holds on it, SQLite's too.
    """
    path = os.path.abspath(os.fspath(database))
    found = _file_check(path)
    if found.status == "problem":
        return Diagnosis(path, (found,))
    filesystem = filesystem_of(path)
    checks = [found, _permissions_check(path, filesystem)]
    if found.value == "empty":
        return Diagnosis(path, tuple(checks))
    in_wal = is_wal_file(path)
    copy = _follower_check(path)
    if copy is not None:
        checks.append(copy)
    checks.append(_filesystem_check(filesystem, in_wal))
    wanted = settings.pragmas.get("journal_mode")
    blocker = wal_blocker(path, filesystem) if wanted == "wal" else None
    plan = _journal_plan(wanted, blocker, in_wal)
    checks.append(Check("journal mode", "info", "wal" if in_wal else "rollback journal", plan))
    checks.extend(_side_files(path, settings))
    checks.append(_lock_check(path, in_wal))
    checks.extend(_reading_checks(path, filesystem, settings, blocker))
    return Diagnosis(path, tuple(checks))


def _follower_check(path: str) -> Check | None:
    """The position of a Litestream follower's copy, and how long ago it last changed."""
    try:
        position = applied(path)
    except ReplicaError as error:
        return Check("follower", "problem", "unreadable position", str(error))
    if position is None:
        return None
    ago = max(0.0, time.time() - position.at)
    return Check(
        "follower",
        "info",
        f"position {position.txid} (applied {ago:.1f} s ago)",
        "a Litestream follower's copy (its -txid file says so): read it with read_only=True, which switches it "
        "to rollback-journal mode once if it is in WAL mode; connections that could write are refused; a "
        "follower writes the position only when it applies changes, so its age is not the copy's lag",
    )


def _journal_plan(wanted: object, blocker: str | None, in_wal: bool) -> str:
    """What connect() does about the journal mode (*wanted* by the settings, WAL kept from by
    *blocker*), as the pragmas row also says it."""
    if wanted is None:
        return "connect() keeps it"
    if blocker is None:
        return f"connect() sets journal_mode={wanted}"
    kept = "the file stays in WAL mode" if in_wal else "the rollback journal is kept"
    return f"connect() falls back from WAL: {blocker}; {kept}"


def _filesystem_check(filesystem: FileSystem, in_wal: bool) -> Check:
    where = f"{filesystem.type or 'unknown type'} at {filesystem.mount_point or '?'}"
    if filesystem.network and in_wal:
        return Check(
            "filesystem", "problem", where, "network filesystem: WAL's shared memory does not work across hosts"
        )
    if filesystem.network:
        return Check(
            "filesystem", "warning", where, "network filesystem: SQLite's locks are only as good as the server's"
        )
    return Check("filesystem", "ok", where, "mounted read-only" if filesystem.read_only else "read-write")


def _file_check(path: str) -> Check:
    """The file itself: there (or else what connect() would do), and a SQLite database."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(HEADER))
        size = os.path.getsize(path)
    except (FileNotFoundError, NotADirectoryError):
        return _missing_file(path)
    except OSError as error:
        return Check("file", "problem", "unreadable", str(error))
    if size == 0:
        return Check("file", "warning", "empty", "SQLite makes it a database at the first write")
    if header != HEADER:
        return Check("file", "problem", "not a SQLite database", f"header {header!r}, {_size(size)}")
    return Check("file", "ok", f"SQLite database, {_size(size)}")


def _missing_file(path: str) -> Check:
    """A missing file: connect() creates it where its directory exists and may be written,
    and fails anywhere else; say which, and why."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        why = "is not a directory" if os.path.exists(directory) else "does not exist"
    elif filesystem_of(directory).read_only:
        why = "is on a read-only filesystem"
    elif not os.access(directory, os.W_OK | os.X_OK):
        why = "is not writable"
    else:
        return Check("file", "problem", "missing", f"no such file; connect() would create it in {directory!r}")
    return Check(
        "file", "problem", "missing", f"no such file, and connect() would fail: its directory {directory!r} {why}"
    )


def _permissions_check(path: str, filesystem: FileSystem) -> Check:
    """Whether writers can write the file and create files beside it; a read-only
    filesystem is said as such (``os.access`` calls every file on it read-only)."""
    mode = f"file mode {stat.S_IMODE(os.stat(path).st_mode):04o}"
    if filesystem.read_only:
        return Check(
            "permissions",
            "warning",
            "read-only filesystem",
            f"{mode}, but the filesystem is mounted read-only: writers get SQLITE_READONLY; readers are fine",
        )
    if not os.access(path, os.W_OK):
        return Check(
            "permissions", "warning", "read-only file", f"{mode}: writers get SQLITE_READONLY; readers are fine"
        )
    if not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
        return Check(
            "permissions",
            "warning",
            "read-only directory",
            "-wal, -shm and journals cannot be created there: no WAL, and writes fail",
        )
    return Check("permissions", "ok", "file and directory writable")


_WRITERS_FILE = (
    "the write queue of sqlite_resilient's writers, made by the library: safe to leave (keep it out of version "
    "control, as -wal and -shm); if deleted, the next writer makes it again, and writers connected before then "
    "lose their place in the queue until they reconnect (SQLite's lock keeps every write correct)"
)


def _side_files(path: str, settings: Settings) -> list[Check]:
    """``-wal``, ``-shm``, ``-journal`` and the write queue's file, with their sizes."""
    checks = []
    for suffix in ("-wal", "-shm", "-journal", "-writers"):
        try:
            size = os.path.getsize(path + suffix)
        except OSError:
            continue
        status: Status = "info"
        detail = ""
        limit = settings.wal_warn_bytes
        if suffix == "-wal" and limit is not None and size > limit:
            status = "warning"
            detail = (
                f"over {_size(limit)}: if it stays there, a connection keeps a read transaction open; "
                f"sqlite-resilient checkpoint {shlex.quote(path)} (or sqlite_resilient.maintain_wal(conn) in the "
                "application) checkpoints with escalation"
            )
        elif suffix == "-journal":
            detail = "a hot journal if no writer is active: the next connection rolls it back"
        elif suffix == "-writers":
            detail = _WRITERS_FILE
        checks.append(Check(suffix, status, _size(size), detail))
    return checks


def _lock_check(path: str, in_wal: bool) -> Check:
    """Whether another process holds SQLite's exclusive or write lock on the database now, as
    the kernel records it (``F_GETLK``, which takes no lock). Information, never a problem:
    a lock is let go when its transaction ends."""
    exclusive = ("", _SHARED_FIRST, _SHARED_SIZE, "exclusive lock")
    if in_wal:
        probes = [
            (*exclusive, "a connection has the database to itself (locking_mode=EXCLUSIVE, or the last one closing)"),
            ("-shm", _WAL_WRITE_LOCK, 1, "write lock", "a write transaction is open; readers go on (WAL)"),
        ]
    else:
        probes = [
            (*exclusive, "a writer is committing, or holds BEGIN EXCLUSIVE: readers wait for it"),
            ("", _RESERVED_BYTE, 1, "write lock", "a write transaction is open; readers go on until it commits"),
        ]
    for suffix, start, length, lock, meaning in probes:
        pid = _write_lock_holder(path + suffix, start, length)
        if pid is not None:
            holder = f"pid {pid}" if pid > 0 else "another process"
            return Check("locks", "info", f"{lock}, {holder}", f"{meaning}: transient, not a defect")
    return Check("locks", "ok", "none held")


def _write_lock_holder(path: str, start: int, length: int) -> int | None:
    """The process id of a holder of a write lock on bytes of *path* (0 or less where the
    kernel does not know it, as for open file description locks), or ``None``."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _whence, _start, _length, pid = FLOCK.unpack(answer)
    return int(pid) if kind == fcntl.F_WRLCK else None


_TRANSIENT = "another process holds a lock (a writer committing, or BEGIN EXCLUSIVE): transient, not a defect"
_IMMUTABLE_READ = (
    "read with immutable=1 under a shared lock, as nothing is in the WAL: a read-only connection "
    "would create the missing -wal or -shm here"
)


def _reading_checks(path: str, filesystem: FileSystem, settings: Settings, blocker: str | None) -> list[Check]:
    """Open a read-only connection and run the checks that need one, creating no file: see
    the module's docstring."""
    if not _would_create_side_files(path, filesystem):
        return _connected_checks(path, settings, blocker, immutable=False)
    try:
        with _shared_lock(path, _OPEN_TIMEOUT) as held:
            if not held:
                return [
                    Check(
                        "read-only open",
                        "info",
                        "locked",
                        f"no shared lock of the file within {_OPEN_TIMEOUT:g} s: {_TRANSIENT}; run doctor again",
                    )
                ]
            checks = _connected_checks(path, settings, blocker, immutable=True)
            if _has_side_files(path):  # a writer started meanwhile: read again through its files
                checks = _connected_checks(path, settings, blocker, immutable=False)
            return checks
    except OSError:  # the file or its filesystem refuses the lock: read as any reader does
        return _connected_checks(path, settings, blocker, immutable=False)


def _would_create_side_files(path: str, filesystem: FileSystem) -> bool:
    """Whether a read-only connection would create a ``-wal`` or ``-shm`` file that doctor can
    do without: a WAL database missing one of them and with nothing in its WAL, in a
    directory where files can be created (elsewhere SQLite creates none)."""
    return (
        _CAN_LOCK_QUIETLY
        and not filesystem.read_only
        and is_wal_file(path)
        and not _has_side_files(path)
        and wal_content_bytes(path) == 0
        and os.access(os.path.dirname(path), os.W_OK | os.X_OK)
    )


def _has_side_files(path: str) -> bool:
    """Whether both the ``-wal`` and the ``-shm`` file of *path* exist, as they do while a
    connection has the database open in WAL mode."""
    return os.path.exists(path + "-wal") and os.path.exists(path + "-shm")


@contextlib.contextmanager
def _shared_lock(path: str, timeout: float) -> Iterator[bool]:
    """Hold a SHARED lock of the database file *path* as SQLite's unix VFS takes one (a read
    lock of the SHARED range, taken while holding a read lock of the PENDING byte, so that a
    writer waiting to commit goes first), as an open file description lock; wait at most
    *timeout* seconds for it, and say whether it is held.

    While it is held, no connection gets the EXCLUSIVE lock that deleting the ``-wal`` and
    ``-shm`` files and writing a rollback-journal database take.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while not _try_shared_lock(fd):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(_LOCK_POLL)
        yield True
    finally:
        os.close(fd)  # the only descriptor of its open file description: its locks go with it


def _try_shared_lock(fd: int) -> bool:
    if not ofd_lock(fd, fcntl.F_RDLCK, _PENDING_BYTE, 1):
        return False
    try:
        return ofd_lock(fd, fcntl.F_RDLCK, _SHARED_FIRST, _SHARED_SIZE)
    finally:
        ofd_lock(fd, fcntl.F_UNLCK, _PENDING_BYTE, 1)


def _connected_checks(path: str, settings: Settings, blocker: str | None, *, immutable: bool) -> list[Check]:
    """Open *path* read-only (``immutable=1`` if asked) and check the pragmas and quick_check."""
    database = to_uri(path, {"immutable": "1"}) if immutable else path
    try:
        conn = connect(database, uri=immutable, read_only=True, timeout=_OPEN_TIMEOUT)
    except sqlite3.Error as error:
        return [_failed("read-only open", error)]
    with contextlib.closing(conn):
        checks = [Check("read-only open", "ok", "works", _IMMUTABLE_READ if immutable else conn.journal_mode_reason)]
        try:
            checks.extend(_pragmas(conn, settings, blocker))
        except sqlite3.Error as error:
            checks.append(_failed("pragmas", error))
        checks.append(_quick_check(conn))
    return checks


def _failed(name: str, error: sqlite3.Error) -> Check:
    """The check *name* that *error* stopped: information when it is another process's lock,
    else a problem."""
    if is_lock_error(error):
        return Check(name, "info", "locked", f"{error}: {_TRANSIENT}; run doctor again to read the rest")
    return Check(name, "problem", "failed", str(error))


def _pragmas(conn: sqlite3.Connection, settings: Settings, blocker: str | None) -> list[Check]:
    values = []
    for name in _PERSISTENT_PRAGMAS:
        (value,) = conn.execute(f"PRAGMA {name}").fetchone()
        values.append(f"{name}={value}")
    applied = [
        f"no journal_mode (falls back from WAL: {blocker})" if name == "journal_mode" and blocker else f"{name}={value}"
        for name, value in settings.pragmas.items()
    ]
    return [
        Check("pragmas", "info", "in the file", ", ".join(values)),
        Check("pragmas", "info", "connect() sets", f"{', '.join(applied)}, busy_timeout from the timeout"),
    ]


def _quick_check(conn: sqlite3.Connection) -> Check:
    try:
        lines = [row[0] for row in conn.execute(f"PRAGMA quick_check({_QUICK_CHECK_LINES})")]
    except sqlite3.Error as error:
        return _failed("quick_check", error)
    if lines == ["ok"]:
        return Check("quick_check", "ok", "ok")
    return Check("quick_check", "problem", f"{len(lines)} finding(s)", "; ".join(lines))


def format_diagnosis(diagnosis: Diagnosis) -> str:
    """The human table: one line per check, then the verdict."""
    rows = [("check", "status", "value", "detail"), *((c.name, c.status, c.value, c.detail) for c in diagnosis.checks)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [diagnosis.database]
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths))
        lines.append(f"  {cells}  {row[3]}".rstrip())
    verdict = "no problem" if diagnosis.problems == 0 else f"{diagnosis.problems} problem(s)"
    lines.append(f"{verdict}, {diagnosis.warnings} warning(s)")
    return "\n".join(lines) + "\n"


# -- sqlite-resilient checkpoint -------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointReport:
    """What ``sqlite-resilient checkpoint`` did to one database.

    Attributes:
        database: The database file.
        journal_mode: The journal mode it was opened in: only in ``wal`` is there anything
            to checkpoint.
        journal_mode_reason: Why (a WAL database on a read-only filesystem is read without
            its WAL).
        results: Each checkpoint run, in order.
        timeout: How long each checkpoint could wait for other connections, in seconds.
        wal_bytes_before: The size of the ``-wal`` file before (0 when there was none).
        wal_bytes_after: Its size after, the connection closed (the last connection to close
            deletes it).
    """

    database: str
    journal_mode: str
    journal_mode_reason: str
    results: tuple[CheckpointResult, ...]
    timeout: float
    wal_bytes_before: int
    wal_bytes_after: int

    @property
    def complete(self) -> bool:
        """Whether the last checkpoint left every frame of the WAL in the database."""
        return self.results[-1].complete

    def incomplete_reason(self) -> str:
        """Why the checkpoint could not complete, with the numbers (empty when it did)."""
        if self.complete:
            return ""
        last = self.results[-1]
        modes = ", ".join(result.mode for result in self.results)
        return (
            f"{self.database}: the checkpoint could not complete: {last.checkpointed_pages} of {last.wal_pages} "
            f"WAL frames checkpointed after {modes} (waiting up to {self.timeout:g} s for other connections): "
            "another connection keeps a read transaction open (a long query, a cursor not fully fetched, a "
            "transaction never ended) or holds the write lock; end it and run the checkpoint again"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "journal_mode": self.journal_mode,
            "journal_mode_reason": self.journal_mode_reason,
            "complete": self.complete,
            "wal_bytes_before": self.wal_bytes_before,
            "wal_bytes_after": self.wal_bytes_after,
            "checkpoints": [{**asdict(result), "complete": result.complete} for result in self.results],
        }


def checkpoint_database(
    database: str | os.PathLike[str], mode: CheckpointMode | None = None, timeout: float = CHECKPOINT_TIMEOUT
) -> CheckpointReport:
    """Checkpoint the WAL of the database file *database*: one checkpoint in *mode*, or without
    one :func:`~sqlite_resilient.maintain_wal`'s escalation (passive, then restart and
    truncate while it is not complete), each waiting at most *timeout* seconds for other
    connections. The file is never created, and its journal mode never changed.

    Raises:
        FileNotFoundError: There is no such file.
        sqlite3.Error: It cannot be opened or checkpointed (not a database, a read-only
            filesystem, a lock held past *timeout*, ...).
    """
    path = os.path.abspath(os.fspath(database))
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such database file", path)
    pragmas = {name: value for name, value in DEFAULT_SETTINGS.pragmas.items() if name != "journal_mode"}
    settings = dataclasses.replace(DEFAULT_SETTINGS, timeout=timeout, pragmas=pragmas)
    before = wal_bytes(path)
    with contextlib.closing(connect(to_uri(path, {"mode": "rw"}), uri=True, settings=settings)) as conn:
        results = maintain_wal(conn) if mode is None else (checkpoint(conn, mode),)
        journal_mode, reason = conn.journal_mode, conn.journal_mode_reason
    return CheckpointReport(path, journal_mode, reason, results, timeout, before, wal_bytes(path))


def format_checkpoint(report: CheckpointReport) -> str:
    """The human report: the database, one line per checkpoint run, the ``-wal`` file's size
    before and after."""
    lines = [report.database]
    if report.journal_mode != "wal" and is_wal_file(report.database):
        lines.append(f"  nothing to checkpoint: {report.journal_mode_reason}")
        return "\n".join(lines) + "\n"
    if report.journal_mode != "wal":
        lines.append(f"  not in WAL mode (journal_mode={report.journal_mode}): nothing to checkpoint")
        return "\n".join(lines) + "\n"
    width = max(len(result.mode) for result in report.results)
    for result in report.results:
        state = "complete" if result.complete else "busy" if result.busy else "incomplete"
        frames = f"{result.checkpointed_pages} of {result.wal_pages} WAL frames checkpointed"
        lines.append(f"  {result.mode.ljust(width)}  {state.ljust(10)}  {frames}")
    lines.append(f"  -wal: {_size(report.wal_bytes_before)} before, {_size(report.wal_bytes_after)} after")
    return "\n".join(lines) + "\n"
