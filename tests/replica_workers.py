"""Reader processes for the read-replica tests: ``python tests/replica_workers.py reader COPY``.

Reads the follower's copy *COPY* of the Litestream tests' database (``litestream_workers``'
tables) until its standard input closes, on one connection kept from read to read, opened
through :class:`~sqlite_resilient.replicas.Replicas` (which waits for the follower's copy);
when the follower replaced the copy (it restored again), it opens a new one. Each read is
one statement, so one read transaction: the rows and the counter the writers increment in
the same transactions. At the end it prints one line of JSON: ``{"reads", "reconnects",
"last", "went_back", "torn", "errors"}`` (``went_back``: reads that saw fewer transactions
than an earlier read; ``torn``: reads whose row count is not the counter times the rows per
transaction; ``errors``: every other exception, as text).
"""

from __future__ import annotations

import json
import sys
import threading

from litestream_workers import ROWS

from sqlite_resilient import ReplicaError
from sqlite_resilient.replicas import Replicas

PACE = 0.002
"""Seconds between two reads of one reader (so that readers leave the CPUs to the rest)."""


def reader(copy: str) -> None:
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    replicas = Replicas([copy])
    reads = reconnects = last = went_back = torn = 0
    errors: list[str] = []
    conn = replicas.reader(timeout=30)
    print("ready", flush=True)
    while not stop.wait(PACE):
        try:
            rows, n = conn.execute("SELECT (SELECT count(*) FROM rows), (SELECT n FROM counter)").fetchone()
        except ReplicaError:  # replaced: the follower restored again
            conn.close()
            conn = replicas.reader(timeout=30)
            reconnects += 1
            continue
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
            continue
        reads += 1
        torn += rows != n * ROWS
        went_back += n < last
        last = max(last, n)
    conn.close()
    report = {"reads": reads, "reconnects": reconnects, "last": last, "went_back": went_back, "torn": torn}
    print(json.dumps({**report, "errors": errors}), flush=True)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command != "reader":
        raise SystemExit(f"unknown command {command!r}")
    reader(*arguments)
