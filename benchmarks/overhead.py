"""Proxy overhead: sqlite_resilient against raw sqlite3, same process, same run.

    python benchmarks/overhead.py [--rounds N] [--json PATH] [--plot PATH]

Both sides work on their own WAL database file with the same pragmas (so only the library
differs). Each operation runs in short rounds that alternate between the two sides (the
order flips every round), so drifting machine load hits both alike; the table shows the best
round of each side in microseconds per operation, and the ratio is the median of the
ratios of paired rounds (on a busy or virtual machine, single timings drift by tens of
percent; paired rounds drift together).

``connect()`` is measured with each side's own set-up: raw ``sqlite3.connect`` followed by
the same pragmas as a script, against ``sqlite_resilient.connect``. "per-request" is what a
web API that opens a connection per request pays: connect, one small query, close, while
another connection keeps the database open (as a running application does); "kept
connection" the same query on a connection the thread keeps open between requests (the
README's recipe), what a request pays instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import timeit
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import sqlite_resilient

PRAGMAS = (
    "PRAGMA busy_timeout=30000; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
    "PRAGMA cache_size=-64000; PRAGMA foreign_keys=ON; PRAGMA journal_size_limit=67108864;"
)
ROWS = [(f"bulk {i}",) for i in range(10_000)]


@dataclass
class Result:
    operation: str
    raw_us: float
    resilient_us: float
    ratio: float


class Side:
    """One side of the comparison: a database file and how to connect to it."""

    def __init__(
        self,
        path: Path,
        connect: Callable[[Path], sqlite3.Connection],
        transaction: Callable[[sqlite3.Connection], AbstractContextManager[object]],
    ) -> None:
        self.path = path
        self.connect = connect
        self.transaction = transaction
        self.conn = connect(path)
        self.conn.executescript(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT); DELETE FROM items;"
        )
        self.conn.executemany("INSERT INTO items(name) VALUES (?)", [(f"item {i}",) for i in range(100)])
        self.conn.commit()

    def reset(self) -> None:
        """Back to 100 rows, so every round of every operation starts alike."""
        self.conn.execute("DELETE FROM items WHERE id > 100")
        self.conn.commit()

    def operations(self) -> dict[str, tuple[Callable[[], object], int]]:
        """Each measured operation and how many calls make one round."""
        conn, path, connect, transaction = self.conn, self.path, self.connect, self.transaction

        def select_one() -> object:
            return conn.execute("SELECT 1").fetchone()

        def fetch_100() -> object:
            return conn.execute("SELECT id, name FROM items LIMIT 100").fetchall()

        def insert_transaction() -> None:
            conn.execute("INSERT INTO items(name) VALUES (?)", ("new",))
            conn.commit()

        def two_statement_transaction() -> None:
            with transaction(conn):
                conn.execute("INSERT INTO items(name) VALUES (?)", ("new",))
                conn.execute("UPDATE items SET name = ? WHERE id = 1", ("first",))

        def executemany_10k() -> None:
            conn.executemany("INSERT INTO items(name) VALUES (?)", ROWS)
            conn.commit()

        def connect_only() -> None:
            connect(path).close()

        def per_request() -> None:
            request = connect(path)
            request.execute("SELECT count(*) FROM items").fetchone()
            request.close()

        def kept_per_thread() -> object:
            return conn.execute("SELECT count(*) FROM items").fetchone()

        return {
            "execute('SELECT 1')": (select_one, 2_000),
            "100-row fetch": (fetch_100, 200),
            "one-row insert transaction": (insert_transaction, 100),
            "db_transaction, 2 statements": (two_statement_transaction, 100),
            "executemany 10 000 rows": (executemany_10k, 1),
            "connect() with set-up": (connect_only, 20),
            "per-request connect+query+close": (per_request, 20),
            "query on a kept connection": (kept_per_thread, 200),
        }


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level="IMMEDIATE")
    conn.executescript(PRAGMAS)
    return conn


def resilient_connect(path: Path) -> sqlite3.Connection:
    return sqlite_resilient.connect(path)


@contextlib.contextmanager
def raw_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """What ``db_transaction`` stands for in plain :mod:`sqlite3`: ``BEGIN IMMEDIATE``,
    then ``COMMIT``, or ``ROLLBACK`` on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def measure(rounds: int, directory: Path) -> list[Result]:
    raw = Side(directory / "raw.db", raw_connect, raw_transaction)
    ours = Side(directory / "resilient.db", resilient_connect, sqlite_resilient.db_transaction)
    results = []
    for name, (raw_call, number) in raw.operations().items():
        ours_call, _ = ours.operations()[name]
        timings: dict[str, list[float]] = {"raw": [], "ours": []}
        for round_number in range(rounds):
            order = [("raw", raw, raw_call), ("ours", ours, ours_call)]
            for side_name, side, call in order if round_number % 2 == 0 else reversed(order):
                side.reset()
                timings[side_name].append(timeit.timeit(call, number=number) / number * 1e6)
        ratios = [ours_us / raw_us for raw_us, ours_us in zip(timings["raw"], timings["ours"])]
        results.append(Result(name, min(timings["raw"]), min(timings["ours"]), statistics.median(ratios)))
    raw.conn.close()
    ours.conn.close()
    return results


def print_table(results: list[Result]) -> None:
    print(f"{'operation':<32} {'sqlite3 µs':>12} {'resilient µs':>13} {'ratio':>7}")  # ratio: median of pairs
    print(f"{'-' * 32} {'-' * 12} {'-' * 13} {'-' * 7}")
    for result in results:
        print(f"{result.operation:<32} {result.raw_us:>12.2f} {result.resilient_us:>13.2f} {result.ratio:>6.2f}x")


def plot(results: list[Result], path: Path) -> None:
    """A bar chart of the ratios (needs matplotlib: the ``bench`` extra)."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [result.operation for result in results]
    ax.barh(names, [result.ratio for result in results], color="#4c72b0")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("time relative to raw sqlite3 (1.0 = same; median of paired rounds)")
    ax.set_title("sqlite_resilient overhead")
    ax.set_xlim(0, max(result.ratio for result in results) * 1.15)
    for index, result in enumerate(results):
        ax.text(result.ratio, index, f" {result.ratio:.2f}x", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="alternating rounds per operation (default 100)")
    parser.add_argument("--json", type=Path, help="write the numbers to this JSON file")
    parser.add_argument("--plot", type=Path, help="write a PNG bar chart here (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'sqlite_resilient[bench]'")
    with tempfile.TemporaryDirectory() as directory:
        results = measure(args.rounds, Path(directory))
    print_table(results)
    if args.json is not None:
        machine = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}
        report = {"machine": machine, "rounds": args.rounds, "results": [asdict(result) for result in results]}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot is not None:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
