"""Writer processes for the Litestream tests: ``python tests/litestream_workers.py writer DB NAME COUNT SETTINGS``.

``writer DB NAME COUNT SETTINGS``
    Open *DB* with :func:`sqlite_resilient.connect` and ``Settings(**json.loads(SETTINGS))``
    and commit *COUNT* transactions, each a function decorated with ``@retry_on_lock``
    around ``db_transaction``: it reads ``counter.n``, inserts :data:`ROWS` rows ``(txn, i,
    payload)`` tagged with its id ``NAME.SEQ`` and writes ``counter.n + 1`` back. Once
    ``COMMIT`` returned it prints ``ack TXN`` (flushed). At the end it prints ``done JSON``:
    ``{"warnings": [[category, message], ...], "lock_stats": {...}, "pragmas": {...}}``,
    every warning raised in the process recorded. An exception ends it: it prints ``error
    JSON`` (``{"type", "message", "warnings"}``) and exits with status 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from typing import Any

import sqlite_resilient

ROWS = 4
"""Rows per transaction."""

PAYLOAD = 1500
"""Bytes of each row's payload: a transaction writes a few pages, so that the WAL passes
Litestream's checkpoint threshold within a short test."""

SCHEMA = """
CREATE TABLE rows(txn TEXT NOT NULL, i INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (txn, i));
CREATE TABLE counter(n INTEGER NOT NULL);
INSERT INTO counter VALUES (0);
"""
"""The tables the writers fill (created by the test)."""


def payload(txn: str, i: int) -> bytes:
    """The payload of row *i* of transaction *txn*: derived from both, so that a restored
    row can be checked byte for byte."""
    seed = f"{txn}/{i}/".encode()
    return (seed * (PAYLOAD // len(seed) + 1))[:PAYLOAD]


def writer(database: str, name: str, count: int, settings: sqlite_resilient.Settings) -> int:
    """Commit *count* transactions of this writer and acknowledge each after its COMMIT."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            conn = sqlite_resilient.connect(database, settings=settings)

            @sqlite_resilient.retry_on_lock
            def commit(txn: str) -> None:
                with sqlite_resilient.db_transaction(conn):
                    (n,) = conn.execute("SELECT n FROM counter").fetchone()
                    conn.executemany(
                        "INSERT INTO rows(txn, i, payload) VALUES (?, ?, ?)",
                        [(txn, i, payload(txn, i)) for i in range(ROWS)],
                    )
                    conn.execute("UPDATE counter SET n = ?", (n + 1,))

            for seq in range(count):
                txn = f"{name}.{seq}"
                commit(txn)
                print(f"ack {txn}", flush=True)
            report: dict[str, Any] = {
                "lock_stats": dataclasses.asdict(conn.lock_stats),
                "pragmas": dict(conn.pragmas),
            }
            conn.close()
        except Exception as error:  # reported to the test, which fails on it
            failure = {"type": type(error).__name__, "message": str(error), "warnings": _warnings(caught)}
            print(f"error {json.dumps(failure)}", flush=True)
            return 1
    report["warnings"] = _warnings(caught)
    print(f"done {json.dumps(report)}", flush=True)
    return 0


def _warnings(caught: list[warnings.WarningMessage]) -> list[list[str]]:
    return [[w.category.__name__, str(w.message)] for w in caught]


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "writer":
        settings = sqlite_resilient.Settings(**json.loads(argv[4]))
        return writer(argv[1], argv[2], int(argv[3]), settings)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
