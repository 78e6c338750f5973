"""Soak: writers and readers killed with SIGKILL and restarted at random, then an audit.

    python benchmarks/soak.py [--seconds 60] [--writers 3] [--readers 2] [--journal wal|delete] [--seed N]

Not part of the test suite (tests/test_faults.py has the bounded version). Writer processes
run ``@retry_on_lock`` + ``db_transaction`` transactions, each inserting ``ROWS_PER_TXN``
rows tagged with its transaction id and adding 1 to a counter, and print the id once
``COMMIT`` has returned (an acknowledged transaction). Readers check, in a read
transaction, that every transaction they see is whole. The main process kills a random
worker with SIGKILL at random moments (after a random number of acknowledgements, so the
kills land everywhere in a transaction) and starts a new one in its place.

The audit at the end: every acknowledged transaction is in the database with all its rows,
no transaction is partial, the counter equals the number of transactions, ``PRAGMA
integrity_check`` is ok, and a fresh connection takes the write lock at once. Exit status
1 if any of that fails.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_resilient

ROWS_PER_TXN = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS rows(txn TEXT NOT NULL, part INTEGER NOT NULL, payload BLOB, PRIMARY KEY (txn, part));
CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


# -- the workers (this file run with --worker) ---------------------------------------------------


def journal_pragmas(journal: str) -> dict[str, str] | None:
    return None if journal == "wal" else {"journal_mode": journal}


def writer(database: str, name: str, journal: str) -> None:
    conn = sqlite_resilient.connect(database, pragmas=journal_pragmas(journal))
    rng = random.Random(name)

    @sqlite_resilient.retry_on_lock
    def transact(txn: str) -> None:
        with sqlite_resilient.db_transaction(conn):
            for part in range(ROWS_PER_TXN):
                conn.execute("INSERT INTO rows VALUES (?, ?, ?)", (txn, part, os.urandom(rng.randint(10, 2000))))
            conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")

    for number in range(sys.maxsize):
        txn = f"{name}-{number}"
        transact(txn)
        print(f"ack {txn}", flush=True)


def reader(database: str, name: str, journal: str) -> None:
    conn = sqlite_resilient.connect(database, read_only=True)
    while True:
        with sqlite_resilient.db_transaction(conn):
            partial = conn.execute(
                "SELECT count(*) FROM (SELECT txn FROM rows GROUP BY txn HAVING count(*) != ?)", (ROWS_PER_TXN,)
            ).fetchone()[0]
            (transactions,) = conn.execute("SELECT count(DISTINCT txn) FROM rows").fetchone()
            (counter,) = conn.execute("SELECT n FROM counter").fetchone()
        if partial or counter != transactions:
            print(f"violation partial={partial} counter={counter} transactions={transactions}", flush=True)
        print("read", flush=True)


# -- the main process ------------------------------------------------------------------------------


@dataclass
class Worker:
    role: str
    name: str
    process: subprocess.Popen[str]


@dataclass
class Tally:
    acknowledged: set[str] = field(default_factory=set)
    reads: int = 0
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)


def start(role: str, name: str, database: str, journal: str, log_dir: Path) -> Worker:
    stderr = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - the worker's lifetime, closed with it
    process = subprocess.Popen(  # noqa: S603 - this very script, as a worker
        [sys.executable, __file__, "--worker", role, database, name, journal],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    return Worker(role, name, process)


def audit(database: str, tally: Tally) -> list[str]:
    """What is wrong with the database after the run (empty: nothing)."""
    failures = []
    conn = sqlite3.connect(database, timeout=30)
    committed: dict[str, int] = dict(conn.execute("SELECT txn, count(*) FROM rows GROUP BY txn"))
    missing = sorted(tally.acknowledged - committed.keys())
    if missing:
        failures.append(f"{len(missing)} acknowledged transactions missing, e.g. {missing[:3]}")
    partial = {txn: count for txn, count in committed.items() if count != ROWS_PER_TXN}
    if partial:
        failures.append(f"{len(partial)} partial transactions, e.g. {list(partial.items())[:3]}")
    (counter,) = conn.execute("SELECT n FROM counter").fetchone()
    if counter != len(committed):
        failures.append(f"counter {counter} != {len(committed)} transactions")
    (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    if integrity != "ok":
        failures.append(f"integrity_check: {integrity}")
    conn.close()
    fresh = sqlite_resilient.connect(database, timeout=1.0)
    try:
        with sqlite_resilient.db_transaction(fresh):
            fresh.execute("UPDATE counter SET n = n WHERE id = 1")
    except sqlite3.Error as error:
        failures.append(f"a fresh connection cannot write: {error}")
    finally:
        fresh.close()
    failures.extend(tally.violations[:5])
    return failures


def run(args: argparse.Namespace, directory: Path) -> int:
    database = str(directory / "soak.db")
    setup = sqlite_resilient.connect(
        database, pragmas=None if args.journal == "wal" else {"journal_mode": args.journal}
    )
    setup.executescript(SCHEMA)
    setup.close()
    rng = random.Random(args.seed)
    selector = selectors.DefaultSelector()
    workers: dict[str, Worker] = {}
    generation = collections.Counter[str]()
    tally = Tally()

    def spawn(role: str, slot: str) -> None:
        generation[slot] += 1
        worker = start(role, f"{slot}.{generation[slot]}", database, args.journal, directory)
        workers[slot] = worker
        assert worker.process.stdout is not None
        selector.register(worker.process.stdout, selectors.EVENT_READ, slot)

    for index in range(args.writers):
        spawn("writer", f"w{index}")
    for index in range(args.readers):
        spawn("reader", f"r{index}")
    deadline = time.monotonic() + args.seconds
    until_kill = rng.randint(1, 40)
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            slot = key.data
            if workers[slot].process.stdout is not key.fileobj:  # killed earlier in this batch
                continue
            line = key.fileobj.readline()
            if not line:  # the worker died on its own: note it and replace it
                worker = workers[slot]
                selector.unregister(key.fileobj)
                worker.process.wait(timeout=10)
                tally.exits.append(f"{worker.name} exited with {worker.process.returncode}")
                spawn(worker.role, slot)
                continue
            kind, _, rest = line.strip().partition(" ")
            if kind == "ack":
                tally.acknowledged.add(rest)
            elif kind == "read":
                tally.reads += 1
            elif kind == "violation":
                tally.violations.append(f"{slot}: {rest}")
            until_kill -= 1
            if until_kill == 0:
                until_kill = rng.randint(1, 40)
                victim_slot = rng.choice(sorted(workers))
                victim = workers[victim_slot]
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(timeout=10)
                assert victim.process.stdout is not None
                for line in victim.process.stdout:  # acknowledgements printed before the kill count
                    if line.startswith("ack "):
                        tally.acknowledged.add(line.split()[1])
                selector.unregister(victim.process.stdout)
                tally.kills[victim.role] += 1
                spawn(victim.role, victim_slot)
    for worker in workers.values():
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        assert worker.process.stdout is not None
        tally.acknowledged.update(line.split()[1] for line in worker.process.stdout if line.startswith("ack "))
    failures = audit(database, tally)
    print(
        f"{args.seconds:g} s, {args.writers} writers, {args.readers} readers, journal {args.journal}, seed {args.seed}"
    )
    print(f"  acknowledged transactions  {len(tally.acknowledged)}")
    print(f"  reader checks              {tally.reads}")
    print(f"  kills                      {tally.kills['writer']} writers, {tally.kills['reader']} readers")
    print(f"  unexpected exits           {len(tally.exits)} {tally.exits[:3]}")
    print(f"  audit                      {'ok' if not failures else 'FAILED'}")
    for failure in failures:
        print(f"    {failure}")
    return 1 if failures or tally.exits else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--journal", choices=["wal", "delete"], default="wal")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where the database is made (default: a temporary directory)")
    parser.add_argument("--worker", nargs=4, metavar=("ROLE", "DB", "NAME", "JOURNAL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        role, database, name, journal = args.worker
        (writer if role == "writer" else reader)(database, name, journal)
        return 0
    with tempfile.TemporaryDirectory(prefix="soak-", dir=args.dir) as directory:
        return run(args, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
