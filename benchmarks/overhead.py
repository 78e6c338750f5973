"""Proxy overhead: sqlite_resilient against raw sqlite3, same process, same run.

    python benchmarks/overhead.py [--repeat N]

Each operation runs on a fresh WAL database with the same pragmas for both sides (so only
the proxy differs), best of ``--repeat`` timings, and a table of microseconds per operation
and the ratio is printed. ``connect()`` is measured with each side's own set-up.
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import tempfile
import timeit
from pathlib import Path
from typing import Callable

import sqlite_resilient

Operation = Callable[[sqlite3.Connection], object]
PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-64000; PRAGMA foreign_keys=ON;"


def prepare(conn: sqlite3.Connection) -> None:
    """A table of 100 rows, the same for both sides before each operation."""
    conn.executescript("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT); DELETE FROM items;")
    conn.executemany("INSERT INTO items(name) VALUES (?)", [(f"item {i}",) for i in range(100)])
    conn.commit()


def select_one(conn: sqlite3.Connection) -> object:
    return conn.execute("SELECT 1").fetchone()


def fetch_100(conn: sqlite3.Connection) -> object:
    return conn.execute("SELECT id, name FROM items LIMIT 100").fetchall()


def insert_transaction(conn: sqlite3.Connection) -> object:
    conn.execute("INSERT INTO items(name) VALUES (?)", ("new",))
    conn.commit()
    return None


ROWS = [(f"bulk {i}",) for i in range(10_000)]


def executemany_10k(conn: sqlite3.Connection) -> object:
    conn.executemany("INSERT INTO items(name) VALUES (?)", ROWS)
    conn.commit()
    return None


OPERATIONS: dict[str, tuple[Operation, int]] = {
    "execute('SELECT 1')": (select_one, 20_000),
    "100-row fetch": (fetch_100, 5_000),
    "one-row insert transaction": (insert_transaction, 2_000),
    "executemany 10 000 rows": (executemany_10k, 5),
}


def best(statement: Callable[[], object], number: int, repeat: int) -> float:
    """Best time per call in microseconds."""
    return min(timeit.repeat(statement, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timings per operation; the best is kept")
    args = parser.parse_args(argv)
    results: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        raw_path, ours_path = Path(directory) / "raw.db", Path(directory) / "ours.db"
        raw = sqlite3.connect(raw_path, isolation_level="IMMEDIATE")
        raw.executescript(PRAGMAS)
        ours = sqlite_resilient.connect(ours_path)
        for name, (operation, number) in OPERATIONS.items():
            timings = []
            for conn in (raw, ours):
                prepare(conn)
                timings.append(best(functools.partial(operation, conn), number, args.repeat))
            results.append((name, timings[0], timings[1]))

        def connect_raw() -> None:
            conn = sqlite3.connect(raw_path, isolation_level="IMMEDIATE")
            conn.executescript(PRAGMAS)
            conn.close()

        def connect_ours() -> None:
            sqlite_resilient.connect(ours_path).close()

        results.append(
            ("connect() with set-up", best(connect_raw, 200, args.repeat), best(connect_ours, 200, args.repeat))
        )
    print(f"{'operation':<28} {'sqlite3 µs':>12} {'resilient µs':>13} {'ratio':>7}")
    print(f"{'-' * 28} {'-' * 12} {'-' * 13} {'-' * 7}")
    for name, raw_us, ours_us in results:
        print(f"{name:<28} {raw_us:>12.2f} {ours_us:>13.2f} {ours_us / raw_us:>6.2f}x")


if __name__ == "__main__":
    main()
