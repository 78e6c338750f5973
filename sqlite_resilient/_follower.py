"""A Litestream follower's copy: the database that ``litestream restore -f`` keeps applying
new transactions to, with the applied position in a ``-txid`` file beside it.

The follower writes pages straight into the database file, under the same file locks as a
SQLite writer in rollback-journal mode (the PENDING byte and the SHARED range), and it does
not change the file change counter unless a change touches page 1. Read as SQLite reads a
database it owns, such a copy fails in two ways, both measured with Litestream 0.5.17:

- When its header says WAL (a copy starts so, restored from a WAL database), every SQLite
  connection opened on it holds a SHARED lock for as long as it is open, and the follower
  waits for all of them: one idle connection stops replication for every reader.
- In rollback-journal mode, a connection keeps its page cache from one read transaction to
  the next as long as the change counter is unchanged: it reads pages it cached before the
  follower's write together with pages written after it.

So :func:`prepare` turns the copy's header to rollback-journal mode once, under the
follower's own locks, and a connection to a copy (``_dispatch.FollowerDispatcher``) begins
every read transaction with an empty page cache. :func:`applied` reads the position.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass

from ._errors import ConfigurationError, DatabaseLockedError, ReplicaError
from ._gate import ofd_lock
from ._journal import WAL_HEADER_SIZE

__all__ = ["TXID_SUFFIX", "Applied", "applied", "is_follower_copy", "prepare", "refuse_writer"]

TXID_SUFFIX = "-txid"
"""Litestream's follower writes its applied position to the database's path + this."""

_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510
_HEADER = 28
"""The header bytes read: file format versions at 18-19 (2: WAL), change counter at 24-27."""


@dataclass(frozen=True)
class Applied:
    """What the follower's ``-txid`` file says."""

    txid: int
    """The Litestream transaction ID of the newest change applied to the copy."""
    at: float
    """When the follower last wrote it (seconds since the epoch, the file's mtime)."""


def is_follower_copy(path: str) -> bool:
    """Whether *path* has a follower's ``-txid`` file beside it."""
    return os.path.exists(path + TXID_SUFFIX)


def applied(path: str) -> Applied | None:
    """The position the follower says it applied to the copy at *path*, None without a
    ``-txid`` file. The follower writes it after the pages, so a read that begins after this
    call sees at least this position."""
    try:
        with open(path + TXID_SUFFIX, "rb") as f:
            text = f.read(64)
            at = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        return Applied(int(text.strip(), 16), at)
    except ValueError:
        raise ReplicaError(f"cannot read the follower's position: {path + TXID_SUFFIX!r} holds {text[:32]!r}") from None


_held: dict[tuple[int, int], int] = {}
"""A descriptor of each copy's file, by (device, inode), kept open for the life of the process:
closing a descriptor of a file lets go of every POSIX lock this process holds on it, its
SQLite connections' included, and the follower could then write under their reads."""
_spare: list[int] = []
"""Descriptors opened while the file was replaced: never closed either, for the same reason."""
_held_lock = threading.Lock()


def _descriptor(path: str) -> tuple[int, tuple[int, int]]:
    """This process's descriptor of the file at *path* (read-write where it can be), and the
    (device, inode) that *path* named when this was called."""
    with _held_lock:
        stat = os.stat(path)
        identity = (stat.st_dev, stat.st_ino)
        known = _held.get(identity)
        if known is not None:
            return known, identity
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd = os.open(path, os.O_RDONLY)
        stat = os.fstat(fd)
        known = _held.setdefault((stat.st_dev, stat.st_ino), fd)
        if known != fd:
            _spare.append(fd)
        return known, identity


def prepare(path: str, timeout: float) -> tuple[int, int]:
    """Make the copy at *path* one that SQLite reads in rollback-journal mode: header file
    format versions 1/1 and no ``-wal`` file. Done once per copy, as the follower itself does
    whenever a change touches page 1, under the follower's locks (which also keep out every
    connection in WAL mode): within *timeout* seconds, else :class:`DatabaseLockedError`.
    A ``-wal`` file with frames in it was not written by a follower: :class:`ReplicaError`.

    Returns the (device, inode) that *path* named before anything was opened: a connection
    opened afterwards reads that file or, if the follower replaced it meanwhile, a newer one,
    which its first read then reports (never the other way round)."""
    wal = path + "-wal"
    fd, identity = _descriptor(path)
    if not _needs_change(fd, wal):
        return identity
    if not os.access(path, os.W_OK) or not os.access(os.path.dirname(path) or ".", os.W_OK):
        raise ReplicaError(
            f"cannot read the follower's copy {path!r}: it is in WAL mode, where every open connection stops "
            "the follower, and this process may not write it to switch it to rollback-journal mode (the "
            "follower does the same when a change touches page 1); run the readers as a user that may"
        )
    deadline = time.monotonic() + timeout
    with _switching:  # this process's threads share the descriptor, and so its locks
        _switch(path, fd, wal, deadline, timeout)
    return identity


_switching = threading.Lock()


def _switch(path: str, fd: int, wal: str, deadline: float, timeout: float) -> None:
    """:func:`prepare`'s change, under the follower's locks."""
    if not _lock(fd, _PENDING_BYTE, 1, deadline):
        raise _busy(path, timeout)
    try:
        if not _lock(fd, _SHARED_FIRST, _SHARED_SIZE, deadline):
            raise _busy(path, timeout)
        if not _needs_change(fd, wal):
            return
        header = os.pread(fd, _HEADER, 0)
        if header[18:20] == b"\x02\x02":
            counter = (int.from_bytes(header[24:28], "big") + 1) & 0xFFFFFFFF
            os.pwrite(fd, b"\x01\x01", 18)
            os.pwrite(fd, counter.to_bytes(4, "big"), 24)  # other connections' caches are void
            os.fsync(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(wal)
    finally:
        ofd_lock(fd, fcntl.F_UNLCK, _SHARED_FIRST, _SHARED_SIZE)
        ofd_lock(fd, fcntl.F_UNLCK, _PENDING_BYTE, 1)


def _needs_change(fd: int, wal: str) -> bool:
    """Whether SQLite would open the copy in WAL mode (a WAL header, or a ``-wal`` file at
    all); :class:`ReplicaError` if that file holds frames."""
    try:
        wal_size = os.stat(wal).st_size
    except FileNotFoundError:
        wal_size = -1
    if wal_size > WAL_HEADER_SIZE:
        raise ReplicaError(
            f"the follower's copy {wal[:-4]!r} has a -wal file with {wal_size - WAL_HEADER_SIZE} bytes of changes, "
            "which a follower never writes: something opened the copy for writing; restore it again"
        )
    header = os.pread(fd, _HEADER, 0)
    if len(header) < _HEADER:
        raise ReplicaError(f"the follower's copy {wal[:-4]!r} is not a database yet ({len(header)} bytes)")
    return wal_size >= 0 or header[18:20] == b"\x02\x02"


def _lock(fd: int, start: int, length: int, deadline: float) -> bool:
    """Take a write lock on the range for *fd*'s open file description before *deadline*
    (an open file description's lock conflicts with this process's SQLite connections too)."""
    pause = 0.001
    while not ofd_lock(fd, fcntl.F_WRLCK, start, length):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
    return True


def _busy(path: str, timeout: float) -> DatabaseLockedError:
    return DatabaseLockedError(
        f"database is locked: switching the follower's copy {path!r} to rollback-journal mode waited {timeout:g} s "
        "for connections that hold it in WAL mode (opened without sqlite_resilient?) to close",
        attempts=1,
        waited=timeout,
        budget=timeout,
    )


def refuse_writer(path: str) -> ConfigurationError:
    """The error for a connection that could write to a follower's copy."""
    return ConfigurationError(
        f"{path!r} is a Litestream follower's copy ({path + TXID_SUFFIX!r} says so): the follower overwrites "
        "what is written to it, so open it with read_only=True; to promote it, stop the follower and "
        f"delete {TXID_SUFFIX} first"
    )
