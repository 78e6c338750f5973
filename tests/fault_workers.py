"""Processes that the fault tests start, kill and watch: ``python tests/fault_workers.py COMMAND ARGS...``.

Every command talks to the test through lines: it reads commands on stdin and writes one
line per event on stdout, flushed at once, so that the test waits for lines, never for time.

Commands:

``writer DB NAME JOURNAL [TIMEOUT [go]]``
    Commit transactions in a loop through :mod:`sqlite_resilient`: ``connect(DB)`` with
    ``journal_mode=JOURNAL``, the lock budget *TIMEOUT* (``-``: the library's default), and
    a tiny page cache, so that a transaction's pages reach the files before its ``COMMIT``.
    With ``go``, it first prints ``ready`` and waits for a line ``go``. Each transaction is a
    function decorated with ``@retry_on_lock`` around ``db_transaction``: it inserts
    :data:`ROWS` rows ``(txn, i, payload)`` tagged with its id ``NAME.SEQ`` and adds 1 to
    ``counter.n``. Once ``COMMIT`` returned it prints ``ack TXN``. After the last insert of
    each transaction, before its ``UPDATE``, it looks, without waiting, for command lines
    on stdin: ``hold`` makes it print ``holding TXN`` and wait there, inside the
    transaction, until stdin ends (the test kills it meanwhile); ``stop``, or the end of
    stdin, makes it exit after that transaction. An exception ends it: it prints
    ``error JSON`` (see :func:`describe`) and exits with status 0.

``reader DB``
    Open *DB* read-only, print ``ready``; for each line ``read`` on stdin print
    ``rows JSON``, ``{"txns": {txn: rows}, "counter": n}`` read in one snapshot, or
    ``error JSON``. Exits at the end of stdin.

``probe DB TIMEOUT MODE SQL [MODE SQL]...``
    For each pair, connect to *DB* with the lock budget *TIMEOUT* (``-``: the library's
    default) and run *SQL*: *MODE* ``ro`` on a read-only connection, ``rw`` on a write
    connection, ``write`` on a write connection inside ``db_transaction``. Print one JSON
    list with, per pair, ``{"mode", "stage", "error", "rows", "warnings"}``: ``stage`` is
    where it failed (``"connect"`` or ``"statement"``; ``null`` if it did not), ``error``
    the exception (see :func:`describe`).

``wal-holder DB``
    Create table ``t(x)`` in the WAL database *DB*, commit rows 0-99, checkpoint them into
    the database file, commit rows 100-199 into the ``-wal`` file only (no automatic
    checkpoints), print ``ready`` and keep the connection open. Lines on stdin: ``count``
    prints ``count N``; ``write`` commits rows 200-299 and prints ``wrote``; ``close``
    closes the connection, prints ``closed`` and exits.
"""

from __future__ import annotations

import json
import os
import select
import sqlite3
import sys
import time
import warnings
from typing import Any

ROWS = 12
"""Rows per transaction of a writer."""

PAYLOAD = 4000
"""Bytes of each row's payload: a table page per row, so a transaction dirties more pages
than a writer's page cache holds and spills them to the files before its COMMIT."""

WRITER_CACHE_PAGES = 10
"""Pages in a writer's page cache (see :data:`PAYLOAD`)."""

SCHEMA = """
CREATE TABLE rows(txn TEXT NOT NULL, i INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (txn, i));
CREATE TABLE counter(n INTEGER NOT NULL);
INSERT INTO counter VALUES (0);
"""
"""The tables the writers fill (created by the test)."""

CHECKPOINTED_ROWS = range(100)
WAL_ONLY_ROWS = range(100, 200)
LATER_ROWS = range(200, 300)


def describe(error: BaseException, **extra: Any) -> dict[str, Any]:
    """What the test needs to know of an exception, as JSON-ready values."""
    import sqlite_resilient

    return {
        "type": type(error).__name__,
        "message": str(error),
        "errorname": getattr(error, "sqlite_errorname", None),
        "operational": isinstance(error, sqlite3.OperationalError),
        "database_error": isinstance(error, sqlite3.DatabaseError),
        "lock_error": sqlite_resilient.is_lock_error(error),
        "locked": isinstance(error, sqlite_resilient.DatabaseLockedError),
        **extra,
    }


def say(line: str) -> None:
    print(line, flush=True)


class Commands:
    """Command lines on stdin: ``hold``, ``stop`` and ``go`` set flags."""

    def __init__(self) -> None:
        self.buffer = b""
        self.ended = False
        self.hold = False
        self.stop = False
        self.go = False

    def _read(self, *, block: bool) -> None:
        """Read what arrived (*block*: wait for at least one line); the end of stdin means
        ``stop``."""
        lines: list[str] = []
        while not self.ended and (block or select.select([0], [], [], 0)[0]):
            chunk = os.read(0, 4096)
            if not chunk:
                self.ended = self.stop = True
            *complete, self.buffer = (self.buffer + chunk).split(b"\n")
            lines += [line.decode().strip() for line in complete]
            if block and lines:
                break
        self.hold = self.hold or "hold" in lines
        self.stop = self.stop or "stop" in lines
        self.go = "go" in lines

    def poll(self) -> None:
        """Read the lines that arrived so far, without waiting."""
        self._read(block=False)

    def wait_for_go(self) -> None:
        """Block until a line ``go`` (or the end of stdin)."""
        self.go = False
        while not self.go and not self.ended:
            self._read(block=True)

    def wait_for_end(self) -> None:
        """Block until stdin ends."""
        while not self.ended:
            self.ended = os.read(0, 4096) == b""


def writer(database: str, name: str, journal: str, timeout: float | None, *, wait_for_go: bool) -> int:
    """Commit acknowledged transactions until told to stop (see the module docstring)."""
    import sqlite_resilient

    pragmas = {"journal_mode": journal, "cache_size": WRITER_CACHE_PAGES}
    conn = sqlite_resilient.connect(database, timeout, pragmas=pragmas)
    commands = Commands()
    if wait_for_go:
        say("ready")
        commands.wait_for_go()
    payload = bytes(PAYLOAD)
    calls = 0

    @sqlite_resilient.retry_on_lock
    def commit(txn: str) -> None:
        nonlocal calls
        calls += 1
        with sqlite_resilient.db_transaction(conn):
            for i in range(ROWS):
                conn.execute("INSERT INTO rows(txn, i, payload) VALUES (?, ?, ?)", (txn, i, payload))
            commands.poll()
            if commands.hold:
                say(f"holding {txn}")
                commands.wait_for_end()
                os._exit(1)  # no ROLLBACK, no close: as if killed
            conn.execute("UPDATE counter SET n = n + 1")

    try:
        seq = 0
        while not commands.stop:
            txn = f"{name}.{seq}"
            calls = 0
            started = time.monotonic()
            try:
                commit(txn)
            except Exception as error:  # reported to the test, which decides
                stats = conn.lock_stats
                say(
                    "error "
                    + json.dumps(
                        describe(
                            error,
                            txn=txn,
                            calls=calls,
                            retries=stats.retries,
                            waits=stats.waits,
                            surfaced=stats.surfaced,
                            seconds=time.monotonic() - started,
                        )
                    )
                )
                return 0
            say(f"ack {txn}")
            seq += 1
            commands.poll()
    finally:
        conn.close()
    return 0


def reader(database: str) -> int:
    """Answer ``read`` lines with what a read-only connection sees (one snapshot each)."""
    import sqlite_resilient

    conn = sqlite_resilient.connect(database, read_only=True)
    try:
        say("ready")
        for line in iter(sys.stdin.readline, ""):
            if line.strip() != "read":
                continue
            try:
                with conn.transaction():  # deferred on a read-only connection: one snapshot
                    txns = dict(conn.execute("SELECT txn, count(*) FROM rows GROUP BY txn").fetchall())
                    (counter,) = conn.execute("SELECT n FROM counter").fetchone()
            except Exception as error:  # reported to the test, which decides
                say("error " + json.dumps(describe(error)))
            else:
                say("rows " + json.dumps({"txns": txns, "counter": counter}))
    finally:
        conn.close()
    return 0


def probe_one(database: str, timeout: float | None, mode: str, sql: str) -> dict[str, Any]:
    """Connect in *mode* and run *sql* (see the module docstring)."""
    import sqlite_resilient

    report: dict[str, Any] = {"mode": mode, "stage": None, "error": None, "rows": None}
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            conn = sqlite_resilient.connect(database, timeout, read_only=mode == "ro")
        except Exception as error:  # reported to the test, which decides
            report.update(stage="connect", error=describe(error, seconds=time.monotonic() - started))
            report["warnings"] = [f"{type(w.message).__name__}: {w.message}" for w in caught]
            return report
        try:
            if mode == "write":
                with sqlite_resilient.db_transaction(conn):
                    report["rows"] = conn.execute(sql).fetchall()
            else:
                report["rows"] = conn.execute(sql).fetchall()
        except Exception as error:  # reported to the test, which decides
            stats = conn.lock_stats
            report.update(
                stage="statement",
                error=describe(error, retries=stats.retries, waits=stats.waits, seconds=time.monotonic() - started),
            )
        finally:
            conn.close()
    report["warnings"] = [f"{type(w.message).__name__}: {w.message}" for w in caught]
    return report


def probe(database: str, timeout: float | None, steps: list[str]) -> int:
    pairs = zip(steps[::2], steps[1::2])
    say(json.dumps([probe_one(database, timeout, mode, sql) for mode, sql in pairs], default=repr))
    return 0


def wal_holder(database: str) -> int:
    """Keep committed frames in the ``-wal`` file of an open connection (see the module docstring)."""
    import sqlite_resilient

    conn = sqlite_resilient.connect(database, pragmas={"wal_autocheckpoint": 0})
    try:
        conn.execute("CREATE TABLE t(x INTEGER PRIMARY KEY)")
        conn.commit()
        with conn.transaction():
            conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in CHECKPOINTED_ROWS])
        busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise SystemExit("the checkpoint did not complete")
        with conn.transaction():
            conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in WAL_ONLY_ROWS])
        say("ready")
        for line in iter(sys.stdin.readline, ""):
            command = line.strip()
            if command == "count":
                say(f"count {conn.execute('SELECT count(*) FROM t').fetchone()[0]}")
            elif command == "write":
                with conn.transaction():
                    conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in LATER_ROWS])
                say("wrote")
            elif command == "close":
                break
    finally:
        conn.close()
    say("closed")
    return 0


def main(argv: list[str]) -> int:
    """Run one command (see the module docstring)."""
    command, *args = argv
    if command == "writer":
        timeout = None if len(args) < 4 or args[3] == "-" else float(args[3])
        return writer(args[0], args[1], args[2], timeout, wait_for_go=args[4:] == ["go"])
    if command == "reader":
        return reader(args[0])
    if command == "probe":
        return probe(args[0], None if args[1] == "-" else float(args[1]), args[2:])
    if command == "wal-holder":
        return wal_holder(args[0])
    raise SystemExit(f"unknown fault worker command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
