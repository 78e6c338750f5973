"""``sqlite-resilient doctor DB``: what a database file and its place need, read-only.

Every check only reads: the file's header, the filesystem, the side files' sizes, and a
read-only connection (``mode=ro`` + ``query_only``) for the pragmas and ``quick_check``.
Nothing is created, switched to WAL or checkpointed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ._connection import connect
from ._journal import FileSystem, filesystem_of, is_wal_file, wal_blocker
from ._settings import DEFAULT_SETTINGS, Settings

__all__ = ["Check", "Diagnosis", "diagnose", "format_diagnosis"]

Status = Literal["ok", "info", "warning", "problem"]
HEADER = b"SQLite format 3\x00"  # https://www.sqlite.org/fileformat.html#the_database_header
_PERSISTENT_PRAGMAS = ("page_size", "page_count", "freelist_count", "auto_vacuum", "encoding", "user_version")
_QUICK_CHECK_LINES = 5
_OPEN_TIMEOUT = 2.0  # a read-only open waits this long for a lock before it is reported


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
    """Look at *database* (a file path) and everything :func:`connect` depends on there."""
    path = os.path.abspath(os.fspath(database))
    checks: list[Check] = []
    if not _check_file(path, checks):
        return Diagnosis(path, tuple(checks))
    filesystem = filesystem_of(path)
    in_wal = is_wal_file(path)
    checks.append(_filesystem_check(filesystem, in_wal))
    wanted = settings.pragmas.get("journal_mode")
    blocker = wal_blocker(path, filesystem) if wanted == "wal" else None
    plan = f"connect() falls back from WAL: {blocker}" if blocker else f"connect() sets journal_mode={wanted}"
    if wanted is None:
        plan = "connect() keeps it"
    checks.append(Check("journal mode", "info", "wal" if in_wal else "rollback journal", plan))
    checks.extend(_side_files(path, settings))
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(contextlib.closing(connect(path, read_only=True, timeout=_OPEN_TIMEOUT)))
        except sqlite3.Error as error:
            checks.append(Check("read-only open", "problem", "failed", str(error)))
            return Diagnosis(path, tuple(checks))
        checks.append(Check("read-only open", "ok", "works", conn.journal_mode_reason))
        checks.extend(_pragmas(conn, settings))
        checks.append(_quick_check(conn))
    return Diagnosis(path, tuple(checks))


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


def _check_file(path: str, checks: list[Check]) -> bool:
    """The file itself: there, a SQLite database, who may write it. Whether to go on."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(HEADER))
        size = os.path.getsize(path)
    except FileNotFoundError:
        checks.append(Check("file", "problem", "missing", "no such file; connect() would create it"))
        return False
    except OSError as error:
        checks.append(Check("file", "problem", "unreadable", str(error)))
        return False
    if size == 0:
        checks.append(Check("file", "warning", "empty", "SQLite makes it a database at the first write"))
    elif header != HEADER:
        checks.append(Check("file", "problem", "not a SQLite database", f"header {header!r}, {_size(size)}"))
        return False
    else:
        checks.append(Check("file", "ok", f"SQLite database, {_size(size)}"))
    directory = os.path.dirname(path)
    if not os.access(path, os.W_OK):
        checks.append(
            Check("permissions", "warning", "read-only file", "writers get SQLITE_READONLY; readers are fine")
        )
    elif not os.access(directory, os.W_OK | os.X_OK):
        checks.append(
            Check(
                "permissions",
                "warning",
                "read-only directory",
                "-wal, -shm and journals cannot be created there: no WAL, and writes fail",
            )
        )
    else:
        checks.append(Check("permissions", "ok", "file and directory writable"))
    return size > 0


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
                "sqlite_resilient.maintain_wal(conn) checkpoints with escalation"
            )
        elif suffix == "-journal":
            detail = "a hot journal if no writer is active: the next connection rolls it back"
        checks.append(Check(suffix, status, _size(size), detail))
    return checks


def _pragmas(conn: sqlite3.Connection, settings: Settings) -> list[Check]:
    values = []
    for name in _PERSISTENT_PRAGMAS:
        (value,) = conn.execute(f"PRAGMA {name}").fetchone()
        values.append(f"{name}={value}")
    applied = ", ".join(f"{name}={value}" for name, value in settings.pragmas.items())
    return [
        Check("pragmas", "info", "in the file", ", ".join(values)),
        Check("pragmas", "info", "connect() sets", f"{applied}, busy_timeout from the timeout"),
    ]


def _quick_check(conn: sqlite3.Connection) -> Check:
    try:
        lines = [row[0] for row in conn.execute(f"PRAGMA quick_check({_QUICK_CHECK_LINES})")]
    except sqlite3.Error as error:
        return Check("quick_check", "problem", "failed", str(error))
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
