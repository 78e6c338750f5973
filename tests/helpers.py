"""Code that tests run in helper processes: ``python tests/helpers.py COMMAND ARGS...``.

Commands:

``hold-lock DB MODE``
    Open *DB* with plain :mod:`sqlite3`, ``BEGIN MODE`` (``EXCLUSIVE``, ``IMMEDIATE``),
    print ``locked``, wait for a line (or EOF) on stdin, ``COMMIT``, print ``released``.

``hold-gate DB``
    Take the write gate of *DB* (the library's queue of writers, see
    ``sqlite_resilient._gate``) without touching SQLite's lock, print ``locked``, wait for a
    line (or EOF) on stdin, let it go and print ``released``.

``crash-mid-write DB``
    Start a large UPDATE of table ``t`` in *DB* with a tiny page cache, so that changed
    pages reach the database file, and die before COMMIT: a hot ``-journal`` is left.

``probe-journal DB [--read-only]``
    Import :mod:`sqlite_resilient`, drop root privileges to ``nobody`` (uid/gid 65534),
    ``connect(DB)`` and print one JSON object: the journal mode, its reason, the warnings
    emitted, or the error raised. As root ``os.access`` says every file is writable, so the
    read-only file and directory checks can only be seen from an unprivileged process.

``fuse-serve MOUNTPOINT TYPE``
    Mount a minimal, empty FUSE filesystem of type ``fuse.TYPE`` (e.g. ``fuse.sshfs``,
    a network filesystem type) on *MOUNTPOINT*, print ``mounted`` and answer the kernel's
    requests until the filesystem is unmounted. It has only an empty root directory: enough
    for ``stat``, ``statvfs`` and ``/proc/self/mountinfo``, with no server behind it.

``increment DB COUNT MODE``
    Print ``ready``, wait for a line on stdin, then add 1 to ``counter.n`` in *DB* *COUNT*
    times, each a read-modify-write transaction (``SELECT n`` then ``UPDATE ... SET n = ?``),
    and print one JSON object: ``done`` (increments committed), ``errors`` (the exceptions
    that reached the loop, as ``"Type: message"``) and ``retries`` (the error names, or
    messages, of the ``retry_scheduled`` events). *MODE*: ``deferred`` or ``immediate``
    run each increment as a function decorated with ``@retry_on_lock`` around
    ``db_transaction(conn, mode=MODE)`` of :mod:`sqlite_resilient`; ``plain-deferred``
    uses plain :mod:`sqlite3` (``BEGIN DEFERRED`` ... ``COMMIT``), counts an error and
    goes on.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import struct
import sys
import warnings
from typing import Any, Callable

NOBODY = 65534


def hold_lock(database: str, mode: str) -> int:
    """``BEGIN <mode>`` on *database*, hold it until stdin says so, then ``COMMIT``."""
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise SystemExit(f"bad mode {mode!r}")
    conn = sqlite3.connect(database, isolation_level=None, timeout=0)
    try:
        conn.execute(f"BEGIN {mode}")
        if mode == "DEFERRED":
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        print("locked", flush=True)
        sys.stdin.readline()
        conn.execute("COMMIT")
    finally:
        conn.close()
    print("released", flush=True)
    return 0


def hold_gate(database: str) -> int:
    """Hold the write gate of *database* until stdin says so."""
    from sqlite_resilient._gate import open_gate

    gate = open_gate(database)
    if gate is None:
        raise SystemExit(f"no write gate for {database!r}")
    try:
        if not gate.try_acquire():
            raise SystemExit("the write gate is taken")
        print("locked", flush=True)
        sys.stdin.readline()
    finally:
        gate.close()
    print("released", flush=True)
    return 0


def crash_mid_write(database: str) -> int:
    """Leave *database* as a writer that died mid-transaction leaves it: with a hot journal."""
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA cache_size = 5")
    conn.execute("PRAGMA synchronous = OFF")  # only speed: the journal is written all the same
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET x = x + 1000000")
    sys.stdout.flush()
    os._exit(0)  # no COMMIT, no ROLLBACK, no close: as if the process were killed


def probe_journal(database: str, read_only: bool) -> int:
    """Connect as ``nobody`` and report what the connection says about its journal mode."""
    import sqlite_resilient  # imported before dropping privileges: every module loaded

    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except PermissionError as error:  # root without CAP_SETUID/CAP_SETGID
        print(json.dumps({"skip": f"cannot drop privileges to nobody: {error}"}), flush=True)
        return 0
    report: dict[str, Any] = {"euid": os.geteuid()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            conn = sqlite_resilient.connect(database, read_only=read_only)
        except Exception as error:  # reported to the test, which decides
            report["error"] = f"{type(error).__name__}: {error}"
        else:
            try:
                report["journal_mode"] = conn.journal_mode
                report["journal_mode_reason"] = conn.journal_mode_reason
                report["rows"] = conn.execute("SELECT count(*) FROM t").fetchone()[0]
            finally:
                conn.close()
    report["warnings"] = [[type(w.message).__name__, str(w.message)] for w in caught]
    print(json.dumps(report), flush=True)
    return 0


# -- a minimal FUSE filesystem ---------------------------------------------------------------
# The FUSE wire protocol of <linux/fuse.h>: a request is a fuse_in_header followed by the
# opcode's arguments; a reply is a fuse_out_header (its error negative errno) and a body.

_IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, padding
_OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
_LOOKUP, _FORGET, _GETATTR, _STATFS, _INIT = 1, 2, 3, 17, 26
_INTERRUPT, _BATCH_FORGET = 36, 42
_NO_REPLY = frozenset({_FORGET, _INTERRUPT, _BATCH_FORGET})
_ROOT = 1


def _root_attr() -> bytes:
    """fuse_attr_out of an empty, world-readable root directory."""
    # attr_valid, attr_valid_nsec, dummy; then fuse_attr: ino, size, blocks, atime, mtime,
    # ctime, atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
    return struct.pack("<QII", 0, 0, 0) + struct.pack(
        "<QQQQQQIIIIIIIIII", _ROOT, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0
    )


def _statfs() -> bytes:
    """fuse_statfs_out: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]."""
    return struct.pack("<QQQQQIIII6I", 1024, 1024, 1024, 16, 16, 4096, 255, 4096, 0, *([0] * 6))


def _init_reply(request: bytes) -> bytes:
    """fuse_init_out for protocol 7.31, echoing the kernel's max_readahead."""
    _major, _minor, max_readahead, _flags = struct.unpack_from("<IIII", request, _IN_HEADER.size)
    return struct.pack("<IIIIHHIIHH8I", 7, 31, max_readahead, 0, 0, 0, 65536, 1, 0, 0, *([0] * 8))


def fuse_serve(mountpoint: str, fstype: str) -> int:
    """Mount an empty FUSE filesystem of type ``fuse.<fstype>`` and serve it until unmounted."""
    import ctypes

    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as error:
        print(f"error: cannot open /dev/fuse: {error}", flush=True)
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},allow_other"
    if libc.mount(b"sqlite-resilient-test", os.fsencode(mountpoint), f"fuse.{fstype}".encode(), 0, options.encode()):
        code = ctypes.get_errno()
        print(f"error: mount failed: {os.strerror(code)}", flush=True)
        return 0
    print("mounted", flush=True)
    while True:
        try:
            request = os.read(fd, 1 << 20)
        except OSError as error:
            if error.errno == errno.EINTR:
                continue
            if error.errno == errno.ENOENT:  # the request was interrupted; go on
                continue
            return 0 if error.errno == errno.ENODEV else 1  # ENODEV: unmounted
        _length, opcode, unique, nodeid, *_ = _IN_HEADER.unpack_from(request)
        if opcode in _NO_REPLY:
            continue
        status, body = 0, b""
        if opcode == _INIT:
            body = _init_reply(request)
        elif opcode == _GETATTR:
            if nodeid == _ROOT:
                body = _root_attr()
            else:
                status = -errno.ENOENT
        elif opcode == _STATFS:
            body = _statfs()
        elif opcode == _LOOKUP:
            status = -errno.ENOENT
        else:
            status = -errno.ENOSYS
        try:
            os.write(fd, _OUT_HEADER.pack(_OUT_HEADER.size + len(body), status, unique) + body)
        except OSError as error:
            if error.errno == errno.ENOENT:  # the kernel gave up on that request
                continue
            return 0 if error.errno == errno.ENODEV else 1


def _error_of(call: Callable[[], object]) -> str | None:
    """Run *call*; return its exception as ``"Type: message"``, or None if it succeeded."""
    try:
        call()
    except Exception as error:  # reported to the test, which decides
        return f"{type(error).__name__}: {error}"
    return None


def increment(database: str, count: int, mode: str) -> int:
    """Read-modify-write increments of ``counter.n``, started together on a line of stdin."""
    import sqlite_resilient
    from sqlite_resilient import instrumentation

    if mode not in ("deferred", "immediate", "plain-deferred"):
        raise SystemExit(f"bad mode {mode!r}")
    retries: list[str] = []

    def note(event: instrumentation.Event) -> None:
        if isinstance(event, instrumentation.LockEvent) and event.name == "sqlite_resilient.retry_scheduled":
            retries.append(getattr(event.error, "sqlite_errorname", str(event.error)))

    instrumentation.set_hooks([note])
    if mode == "plain-deferred":
        conn = sqlite3.connect(database, isolation_level=None)

        def bump() -> None:
            try:
                conn.execute("BEGIN DEFERRED")
                (value,) = conn.execute("SELECT n FROM counter").fetchone()
                conn.execute("UPDATE counter SET n = ?", (value + 1,))
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    else:
        conn = sqlite_resilient.connect(database)

        @sqlite_resilient.retry_on_lock
        def bump() -> None:
            with sqlite_resilient.db_transaction(conn, mode="deferred" if mode == "deferred" else "immediate"):
                (value,) = conn.execute("SELECT n FROM counter").fetchone()
                conn.execute("UPDATE counter SET n = ?", (value + 1,))

    print("ready", flush=True)
    sys.stdin.readline()
    try:
        outcomes = [_error_of(bump) for _ in range(count)]
    finally:
        conn.close()
    errors = [error for error in outcomes if error is not None]
    print(json.dumps({"done": count - len(errors), "errors": errors, "retries": retries}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run one helper command (see the module docstring)."""
    command, *args = argv
    if command == "hold-lock":
        return hold_lock(args[0], args[1])
    if command == "hold-gate":
        return hold_gate(args[0])
    if command == "crash-mid-write":
        return crash_mid_write(args[0])
    if command == "probe-journal":
        return probe_journal(args[0], read_only="--read-only" in args[1:])
    if command == "fuse-serve":
        return fuse_serve(args[0], args[1])
    if command == "increment":
        return increment(args[0], int(args[1]), args[2])
    raise SystemExit(f"unknown helper command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
