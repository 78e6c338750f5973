"""Faults: nothing acknowledged is ever lost, and every fault surfaces as a clear error at once.

Everything is real: writer processes (``tests/fault_workers.py``) killed with SIGKILL in the
middle of their transactions, a 1 MiB tmpfs that fills up, an ext4 filesystem on a loop
device that the kernel turns read-only under running writers, a tmpfs remounted read-only,
database files overwritten, truncated, or whose ``-wal`` is deleted. The tests wait for
lines that the workers print, never for time, and every wait is bounded. "Random" is a
seeded RNG choosing victims and how many acknowledgements to wait for.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import random
import selectors
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fault_workers
import pytest
from fault_workers import ROWS, SCHEMA

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, is_lock_error
from sqlite_resilient.instrumentation import LockEvent, LockStats

WORKERS = Path(__file__).with_name("fault_workers.py")

WAIT = 30.0
"""Upper bound in seconds of any wait for a worker process or a mount."""

BUDGET = 2.0
"""The lock budget of connections that meet a fault: a lock wait where an immediate error
belongs ends in ``DatabaseLockedError`` after it."""

WRITER_BUDGET = 10.0
"""The lock budget of writer processes that meet a fault (they also wait for each other)."""

JOURNALS = ["wal", "delete"]

JSON = dict[str, Any]


def worker_command(*args: str) -> list[str]:
    """The command line that runs ``tests/fault_workers.py`` with *args* in this interpreter."""
    return [sys.executable, str(WORKERS), *args]


def create_schema(db: Path, journal: str) -> None:
    """Create the writers' tables in a new database in *journal* mode."""
    with contextlib.closing(sqlite_resilient.connect(db, pragmas={"journal_mode": journal})) as conn:
        assert conn.journal_mode == journal
        conn.executescript(SCHEMA)


def committed(db: Path) -> tuple[dict[str, int], int]:
    """``({txn: rows}, counter)`` in the database file, read by plain :mod:`sqlite3`, after
    checking the file's integrity."""
    with contextlib.closing(sqlite3.connect(db, timeout=WAIT)) as plain:
        assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        txns = dict(plain.execute("SELECT txn, count(*) FROM rows GROUP BY txn").fetchall())
        (counter,) = plain.execute("SELECT n FROM counter").fetchone()
    return txns, counter


def probe(db: Path, *steps: str, timeout: float | None = None) -> list[JSON]:
    """Run ``fault_workers.py probe DB TIMEOUT MODE SQL...`` (*steps*: pairs of a mode,
    ``ro``, ``rw`` or ``write``, and an SQL statement; *timeout*: the connections' lock
    budget, default the library's) in a helper process, so that a hang or a crash cannot
    take the test with it; return its report for each pair."""
    budget = "-" if timeout is None else str(timeout)
    result = subprocess.run(
        worker_command("probe", str(db), budget, *steps), capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0, f"probe exited with {result.returncode}: {result.stderr}"
    reports: list[JSON] = json.loads(result.stdout)
    return reports


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT, check=False)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _unmount(directory: Path) -> None:
    if _run("umount", str(directory)).returncode != 0:
        _run("umount", "-l", str(directory))


def open_descriptors(*paths: Path) -> list[str]:
    """The files among *paths* that this process has a descriptor open on."""
    wanted = {str(path) for path in paths}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target in wanted:
                found.append(target)
    return sorted(found)


# -- worker processes ----------------------------------------------------------------------


class Worker:
    """One worker process and everything it printed."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.stderr"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                worker_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.pending = b""
        self.ended = False  # its stdout reached EOF: everything it printed was read
        self.ready = False
        self.acks: list[str] = []
        self.holding: str | None = None
        self.error: JSON | None = None
        self.replies: list[JSON] = []
        self.said: list[str] = []  # every other line

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.process.kill()
        self.process.wait(timeout=WAIT)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def take(self, line: str) -> None:
        """Note one line it printed."""
        word, _, rest = line.partition(" ")
        if word == "ack":
            self.acks.append(rest)
        elif word == "holding":
            self.holding = rest
        elif word == "error":
            self.error = json.loads(rest)
        elif word == "rows":
            self.replies.append(json.loads(rest))
        elif word == "ready":
            self.ready = True
        else:
            self.said.append(line)


class Fleet:
    """The worker processes of one test: started, read from and stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self.acks: list[tuple[Worker, str]] = []  # every acknowledgement, in the order read
        self.errors_expected = False

    def start(self, name: str, *args: str) -> Worker:
        worker = Worker(name, args, self.log_dir)
        self.workers.append(worker)
        self.selector.register(worker.fd, selectors.EVENT_READ, worker)
        return worker

    def start_writer(self, db: Path, name: str, journal: str) -> Worker:
        return self.start(name, "writer", str(db), name, journal)

    def _pump(self, timeout: float) -> None:
        """Read what the workers printed within *timeout* seconds."""
        for key, _ in self.selector.select(max(timeout, 0.0)):
            worker: Worker = key.data
            try:
                chunk = os.read(worker.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                worker.ended = True
                self.selector.unregister(worker.fd)
                continue
            *lines, worker.pending = (worker.pending + chunk).split(b"\n")
            for raw in lines:
                before = len(worker.acks)
                worker.take(raw.decode())
                self.acks.extend((worker, txn) for txn in worker.acks[before:])

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Read the workers' lines until *condition* holds; fail after *timeout* seconds,
        or as soon as a worker reports an error that the test does not expect."""
        deadline = time.monotonic() + timeout
        while not condition():
            failed = [w for w in self.workers if w.error is not None]
            if failed and not self.errors_expected:
                raise AssertionError(f"{failed[0].name} failed: {failed[0].error}\n{failed[0].stderr()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            if not self.selector.get_map():
                raise AssertionError(f"every worker ended while waiting for {what}\n{self.diagnostics()}")
            self._pump(left)

    def ask(self, worker: Worker, command: str) -> str:
        """Send *command* to *worker* and return the next line it says."""
        said = len(worker.said)
        worker.send(command)
        self.wait(lambda: len(worker.said) > said, f"{worker.name} to answer {command!r}")
        return worker.said[said]

    def wait_ended(self, worker: Worker) -> None:
        """Wait until *worker* exited and everything it printed was read."""
        worker.process.wait(timeout=WAIT)
        self.wait(lambda: worker.ended, f"the last lines of {worker.name}")

    def diagnostics(self) -> str:
        return "\n".join(
            f"{w.name}: exit {w.process.poll()}, {len(w.acks)} acks, error {w.error}\n{w.stderr()}"
            for w in self.workers
        )

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.kill()
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.selector.close()


@contextlib.contextmanager
def worker_fleet(log_dir: Path) -> Iterator[Fleet]:
    fleet = Fleet(log_dir)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Start worker processes; every one still running is killed at teardown."""
    with worker_fleet(tmp_path) as started:
        yield started


# -- 1. writers killed with SIGKILL --------------------------------------------------------

WRITERS = 3
ROUNDS = 8  # kills per run: half of them inside a transaction that holds the write lock
SURVIVOR_ACKS = 3  # commits of the other writers after each kill, before the restart


@pytest.mark.parametrize("journal", JOURNALS)
def test_sigkilled_writers_lose_no_acknowledged_transaction(tmp_path: Path, fleet: Fleet, journal: str) -> None:
    """Three writer processes commit transactions of :data:`ROWS` rows plus a counter
    update; one of them at a time is killed with SIGKILL, either at whatever point it has
    reached after a random number of acknowledgements, or (every other kill, in random
    order) inside a transaction that holds the write lock and the ``-writers`` gate, whose
    pages already reached the files (a hot journal, or uncommitted WAL frames). After each
    kill the survivors commit before the victim is restarted; several rounds.

    Then every acknowledged transaction is in the database with all its rows, no
    transaction is partial, the counter equals the number of transactions, the held
    transactions were rolled back, a transaction committed but not acknowledged can only be
    the last one of a killed writer, the file passes ``integrity_check``, and a fresh
    connection takes the write lock (and the gate) at once."""
    db = tmp_path / "app.db"
    create_schema(db, journal)
    rng = random.Random(f"sigkill-{journal}")  # noqa: S311 - seeded choices, no secrets
    generation = [0] * WRITERS
    writers = [fleet.start_writer(db, f"w{slot}g0", journal) for slot in range(WRITERS)]
    killed: list[Worker] = []
    held: list[str] = []
    kinds = ["hold", "anytime"] * (ROUNDS // 2)
    rng.shuffle(kinds)

    for kind in kinds:
        slot = rng.randrange(WRITERS)
        victim = writers[slot]
        target = len(fleet.acks) + rng.randint(1, 8)

        def victim_runs(target: int = target, victim: Worker = victim) -> bool:
            return len(fleet.acks) >= target and bool(victim.acks)

        def victim_holds(victim: Worker = victim) -> bool:
            return victim.holding is not None

        fleet.wait(victim_runs, f"acknowledgements, one of them by {victim.name}")
        if kind == "hold":
            victim.send("hold")
            fleet.wait(victim_holds, f"{victim.name} to hold its transaction")
            assert victim.holding is not None
            held.append(victim.holding)
            if journal == "delete":  # the kill leaves a hot journal behind
                assert db.with_name(db.name + "-journal").stat().st_size > 0
        victim.kill()
        killed.append(victim)
        fleet.wait_ended(victim)
        mark = len(fleet.acks)

        def survivors_committed(mark: int = mark, victim: Worker = victim) -> bool:
            return sum(worker is not victim for worker, _ in fleet.acks[mark:]) >= SURVIVOR_ACKS

        fleet.wait(survivors_committed, f"the survivors to commit after {victim.name} was killed")
        generation[slot] += 1
        writers[slot] = fleet.start_writer(db, f"w{slot}g{generation[slot]}", journal)

    mark = len(fleet.acks)
    fleet.wait(lambda: {worker for worker, _ in fleet.acks[mark:]} >= set(writers), "every restarted writer to commit")
    for worker in writers:
        worker.send("stop")
    for worker in writers:
        fleet.wait_ended(worker)
        assert worker.process.returncode == 0, worker.stderr()

    txns, counter = committed(db)
    acknowledged = {txn for _, txn in fleet.acks}
    assert {txn: rows for txn, rows in txns.items() if rows != ROWS} == {}  # no partial transaction
    assert acknowledged - txns.keys() == set()  # nothing acknowledged is lost
    assert counter == len(txns)
    assert set(held) & txns.keys() == set()
    # Committed but never acknowledged: killed between its COMMIT and its "ack" line.
    last_of_killed = {f"{worker.name}.{len(worker.acks)}" for worker in killed}
    assert txns.keys() - acknowledged <= last_of_killed
    assert len(held) == ROUNDS // 2

    with contextlib.closing(sqlite_resilient.connect(db, timeout=2.0, pragmas={"journal_mode": journal})) as fresh:
        with fresh.transaction():
            fresh.execute("UPDATE counter SET n = n + 1")
        assert fresh.lock_stats == LockStats()  # no wait at the gate nor for SQLite's lock


# -- 2. a full disk ------------------------------------------------------------------------

BLOB = bytes(8000)
RESERVE = 128 * 1024  # bytes of a file on the tmpfs, deleted to free space


def fill_disk(directory: Path) -> Path:
    """Fill the filesystem of *directory* to the last block with a file; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def fill_until_full(attempt: Callable[[int], None], txns: Iterable[int]) -> tuple[list[int], BaseException, float]:
    """Run ``attempt(txn)`` for each txn until one fails: the txns acknowledged before, the
    failure (SQLite's "database or disk is full", not a lock error) and how long it took."""
    acknowledged: list[int] = []
    for txn in txns:
        started = time.monotonic()
        try:
            attempt(txn)
        except sqlite3.OperationalError as error:
            failure, seconds = error, time.monotonic() - started
            break
        acknowledged.append(txn)
    else:
        raise AssertionError("the disk never filled up")
    assert str(failure) == "database or disk is full"
    assert not is_lock_error(failure)
    return acknowledged, failure, seconds


@pytest.mark.mounts
@pytest.mark.parametrize("journal", JOURNALS)
def test_full_disk_fails_at_once_and_keeps_every_acknowledged_commit(
    tmpfs_mount: Path, events: list[Any], journal: str
) -> None:
    """Transactions of a function decorated with ``@retry_on_lock`` fill a 1 MiB tmpfs
    until one fails with SQLite's "database or disk is full". That error is no lock error:
    the function ran once, no retry, wait or lock error is counted or reported, and it came
    well within the lock budget. Every acknowledged transaction is complete in the file,
    nothing of the failed one is, the file is intact, and once space is freed the same
    connection and function commit again."""
    reserve = tmpfs_mount / "reserve"
    reserve.write_bytes(bytes(RESERVE))
    path = tmpfs_mount / "full.db"
    with contextlib.closing(sqlite_resilient.connect(path, pragmas={"journal_mode": journal})) as conn:
        conn.execute("CREATE TABLE t(txn INTEGER NOT NULL, i INTEGER NOT NULL, blob BLOB NOT NULL)")
        conn.commit()
        calls = 0

        @sqlite_resilient.retry_on_lock
        def add(txn: int) -> None:
            nonlocal calls
            calls += 1
            with sqlite_resilient.db_transaction(conn):
                for i in range(4):
                    conn.execute("INSERT INTO t VALUES (?, ?, ?)", (txn, i, BLOB))

        def attempt(txn: int) -> None:
            nonlocal calls
            calls = 0
            add(txn)

        acknowledged, failure, seconds = fill_until_full(attempt, range(200))  # 200 * 32 KB: far more than 1 MiB
        assert getattr(failure, "sqlite_errorname", "SQLITE_FULL") == "SQLITE_FULL"
        assert not isinstance(failure, DatabaseLockedError)
        assert calls == 1
        assert conn.lock_stats == LockStats()
        assert [event for event in events if isinstance(event, LockEvent)] == []
        assert seconds < conn.timeout
        assert not conn.in_transaction
        assert len(acknowledged) >= 10

        def groups() -> dict[int, int]:
            with contextlib.closing(sqlite3.connect(path)) as plain:
                assert plain.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                return dict(plain.execute("SELECT txn, count(*) FROM t GROUP BY txn").fetchall())

        assert groups() == dict.fromkeys(acknowledged, 4)

        reserve.unlink()
        add(len(acknowledged))
        assert groups() == dict.fromkeys([*acknowledged, len(acknowledged)], 4)


AUTOCHECKPOINT_PAGES = 20


@pytest.mark.mounts
def test_wal_pinned_by_a_reader_fills_the_disk_and_a_checkpoint_frees_it(tmpfs_mount: Path, events: list[Any]) -> None:
    """A reader keeps a snapshot open, so no checkpoint can reset the WAL: small
    transactions (a counter update and a log row each) make the ``-wal`` file grow until
    it fills the 1 MiB tmpfs. The failing commit raises "database or disk is full" at
    once, never retried; every acknowledged transaction is there and the failed one is not;
    the reader still reads its snapshot. When the reader's snapshot ends, a
    ``wal_checkpoint(TRUNCATE)`` on the same connection copies the WAL back (into pages the
    database file already has) and empties it, and the same connection commits again."""
    path = tmpfs_mount / "wal.db"
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(
            contextlib.closing(sqlite_resilient.connect(path, pragmas={"wal_autocheckpoint": AUTOCHECKPOINT_PAGES}))
        )
        assert conn.journal_mode == "wal"
        conn.executescript(
            """
            CREATE TABLE counter(n INTEGER NOT NULL);
            INSERT INTO counter VALUES (0);
            CREATE TABLE log(txn INTEGER PRIMARY KEY, pad BLOB NOT NULL);
            CREATE TABLE spare(b BLOB);
            INSERT INTO spare VALUES (zeroblob(65536));
            DELETE FROM spare;
            """
        )  # the free pages left by "spare" take the log rows: the checkpoint needs no new space
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        reader = stack.enter_context(contextlib.closing(sqlite_resilient.connect(path, read_only=True)))
        calls = 0

        @sqlite_resilient.retry_on_lock
        def bump(txn: int) -> None:
            nonlocal calls
            calls += 1
            with conn.transaction():
                conn.execute("UPDATE counter SET n = n + 1")
                conn.execute("INSERT INTO log VALUES (?, ?)", (txn, bytes(200)))

        def attempt(txn: int) -> None:
            nonlocal calls
            calls = 0
            bump(txn)

        with reader.transaction():
            assert reader.execute("SELECT n FROM counter").fetchone() == (0,)
            acknowledged, _, seconds = fill_until_full(attempt, range(1, 2000))
            assert calls == 1
            assert seconds < conn.timeout
            assert conn.lock_stats == LockStats()
            assert [event for event in events if isinstance(event, LockEvent)] == []
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            assert os.path.getsize(f"{path}-wal") > 10 * AUTOCHECKPOINT_PAGES * page_size  # the reader pinned it
            count = len(acknowledged)
            assert conn.execute("SELECT n, (SELECT count(*) FROM log) FROM counter").fetchone() == (count, count)
            assert reader.execute("SELECT n, (SELECT count(*) FROM log) FROM counter").fetchone() == (0, 0)

        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        assert os.path.getsize(f"{path}-wal") == 0
        bump(len(acknowledged) + 1)
        acknowledged.append(len(acknowledged) + 1)
        for seen_by in (conn, reader):
            assert seen_by.execute("SELECT n FROM counter").fetchone() == (len(acknowledged),)
            assert [txn for (txn,) in seen_by.execute("SELECT txn FROM log ORDER BY txn")] == acknowledged
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.mounts
def test_connect_on_a_full_disk_fails_at_once_naming_the_file(tmpfs_mount: Path) -> None:
    """A WAL database whose connections are all closed has no ``-shm`` file; on a full
    disk SQLite cannot create it (``SQLITE_IOERR_SHMSIZE``, "disk I/O error"): ``connect()``
    raises that at once, read-only or not, naming the file, never as a lock wait. Once
    space is freed, connections open and see every row."""
    path = tmpfs_mount / "app.db"
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in range(100)])
        conn.commit()
    assert not Path(f"{path}-shm").exists()
    filler = fill_disk(tmpfs_mount)
    for read_only in (True, False):
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as caught:
            sqlite_resilient.connect(path, read_only=read_only).close()
        assert time.monotonic() - started < 30.0
        assert not isinstance(caught.value, DatabaseLockedError)
        assert not is_lock_error(caught.value)
        assert str(path) in str(caught.value)
    filler.unlink()
    for read_only in (True, False):
        with contextlib.closing(sqlite_resilient.connect(path, read_only=read_only)) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)


# -- 3. the filesystem turns read-only -----------------------------------------------------


@dataclass
class Ext4:
    """An ext4 filesystem on a loop device, mounted with ``errors=remount-ro``."""

    image: Path
    directory: Path
    trigger: Path  # writing to it makes the kernel record an error and turn the filesystem read-only

    def turn_read_only(self) -> None:
        self.trigger.write_text("sqlite_resilient fault test\n")

    def mount_again(self) -> None:
        """Unmount the filesystem and mount it again, writable."""
        unmounted = _run("umount", str(self.directory))
        assert unmounted.returncode == 0, unmounted.stderr
        mounted = _run("mount", "-o", "loop", str(self.image), str(self.directory))
        assert mounted.returncode == 0, mounted.stderr


def _source_of(directory: Path) -> str:
    """The device mounted on *directory*, from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            left, _, right = line.partition(" - ")
            if left.split()[4] == str(directory):
                return right.split()[1]
    return ""


@contextlib.contextmanager
def ext4_loop_mount(where: Path) -> Iterator[Ext4]:
    """Mount a fresh 64 MiB ext4 image (a sparse file) on ``where/ext4``; skip where that
    cannot be done."""
    if not _is_root():
        pytest.skip("needs root to mount a loop device")
    if shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        pytest.skip("mkfs.ext4 or mount(8) is not installed")
    image = where / "ext4.img"
    with image.open("wb") as f:
        f.truncate(64 * 2**20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    directory = where / "ext4"
    directory.mkdir()
    mounted = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(directory))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount an ext4 loop device: {mounted.stderr.strip()}")
    try:
        trigger = Path("/sys/fs/ext4") / os.path.basename(_source_of(directory)) / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip("the kernel has no /sys/fs/ext4/<device>/trigger_fs_error")
        yield Ext4(image, directory, trigger)
    finally:
        _unmount(directory)


@dataclass
class ReadOnlyOutcome:
    """What the processes saw when the filesystem turned read-only under them."""

    acknowledged: set[str]
    held: str
    writer_error: JSON
    reader_before: JSON
    reader_after: JSON
    new_reader: JSON
    new_writer: JSON
    after_mount_again: tuple[dict[str, int], int]


def turn_read_only_under_load(where: Path, journal: str) -> ReadOnlyOutcome:
    """On an ext4 filesystem, a reader process holds a read-only connection and two
    writer processes commit; one of them stops inside a transaction whose pages reached
    the files (a hot journal, or uncommitted WAL frames). The kernel then turns the
    filesystem read-only, as ``errors=remount-ro`` does on an I/O error, and the writer
    that held its transaction is killed. Wait until the other writer reports the error
    that ended it, then ask the reader, a new read-only and a new write connection what
    they see, and finally mount the filesystem again to see what reached it."""
    with ext4_loop_mount(where) as ext4:
        with worker_fleet(where) as fleet:
            db = ext4.directory / "app.db"
            create_schema(db, journal)
            reader = fleet.start("reader", "reader", str(db))
            fleet.wait(lambda: reader.ready, "the reader to connect")
            holder, writer = (
                fleet.start(name, "writer", str(db), name, journal, str(WRITER_BUDGET), "go") for name in ("w0", "w1")
            )
            fleet.wait(lambda: holder.ready and writer.ready, "the writers to connect")
            for started in (holder, writer):  # together: a few transactions, no automatic checkpoint
                started.send("go")
            fleet.wait(lambda: len(holder.acks) >= 2 and len(writer.acks) >= 2, "both writers to commit")
            reader.send("read")
            fleet.wait(lambda: len(reader.replies) == 1, "the reader to read")
            holder.send("hold")
            fleet.wait(lambda: holder.holding is not None, "a writer to hold its transaction")
            assert holder.holding is not None
            fleet.errors_expected = True
            ext4.turn_read_only()
            holder.kill()
            fleet.wait(lambda: writer.error is not None, "the other writer to fail")
            fleet.wait_ended(writer)
            fleet.wait_ended(holder)
            reader.send("read")
            fleet.wait(lambda: len(reader.replies) == 2 or reader.error is not None, "the reader to read again")
            reader_after = reader.replies[1] if reader.error is None else {"error": reader.error}
            new_reader, new_writer = probe(
                db,
                "ro",
                "SELECT txn, count(*) FROM rows GROUP BY txn",
                "write",
                "UPDATE counter SET n = n + 1",
                timeout=BUDGET,
            )
            acknowledged = {txn for _, txn in fleet.acks}
            assert writer.error is not None
            writer_error = writer.error
        ext4.mount_again()
        return ReadOnlyOutcome(
            acknowledged=acknowledged,
            held=holder.holding,
            writer_error=writer_error,
            reader_before=reader.replies[0],
            reader_after=reader_after,
            new_reader=new_reader,
            new_writer=new_writer,
            after_mount_again=committed(db),
        )


@pytest.fixture(scope="module")
def read_only_outcome(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ReadOnlyOutcome]:
    """``read_only_outcome(journal)``: :func:`turn_read_only_under_load`, run once per
    journal mode for the tests that check different parts of it."""
    outcomes: dict[str, ReadOnlyOutcome | Exception] = {}

    def outcome(journal: str) -> ReadOnlyOutcome:
        if journal not in outcomes:
            try:
                outcomes[journal] = turn_read_only_under_load(tmp_path_factory.mktemp(f"ro-{journal}"), journal)
            except Exception as error:  # every test of the scenario fails with it, without a new run
                outcomes[journal] = error
        found = outcomes[journal]
        if isinstance(found, Exception):
            raise found
        return found

    return outcome


ReadOnly = Callable[[str], ReadOnlyOutcome]


def assert_immediate_read_only_error(report: JSON) -> None:
    """*report* (of a probe or a worker) is SQLite's read-only error, raised at once."""
    error = report.get("error", report)
    assert error is not None, report
    assert error["operational"], report
    assert not error["lock_error"], report
    assert not error["locked"], report
    assert error.get("retries", 0) == 0, report
    assert "readonly" in error["message"], report


@pytest.mark.mounts
@pytest.mark.parametrize("journal", JOURNALS)
def test_filesystem_turned_read_only_fails_a_running_writer_at_once(read_only_outcome: ReadOnly, journal: str) -> None:
    """When the kernel turns the filesystem read-only under a running writer, its next
    transaction fails at once with an ``OperationalError`` that is no lock error: the
    decorated function ran once, no retry or lock error was counted, no
    ``DatabaseLockedError``.

    (The filesystem cannot simply be remounted read-only here: the kernel refuses while
    files are open for writing, as every SQLite writer's are. ``trigger_fs_error`` makes
    ext4 do what it does on an I/O error with ``errors=remount-ro``.)"""
    error = read_only_outcome(journal).writer_error
    assert error["operational"], error
    assert not error["lock_error"], error
    assert not error["locked"], error
    assert (error["calls"], error["retries"], error["surfaced"]) == (1, 0, 0), error
    assert error["seconds"] < WRITER_BUDGET, error


@pytest.mark.mounts
@pytest.mark.parametrize("journal", JOURNALS)
def test_filesystem_turned_read_only_error_says_read_only(read_only_outcome: ReadOnly, journal: str) -> None:
    """The error that ends a running writer when its filesystem turns read-only says so
    ("readonly" or "read-only"), as a new writer's does: SQLite's own is an I/O error
    ('disk I/O error' in WAL mode; 'unable to open database file' in rollback-journal mode,
    where the hot journal cannot be rolled back), which the library completes."""
    message = read_only_outcome(journal).writer_error["message"]
    assert "readonly" in message or "read-only" in message, message


@pytest.mark.mounts
@pytest.mark.parametrize("journal", JOURNALS)
def test_filesystem_turned_read_only_connected_reader(read_only_outcome: ReadOnly, journal: str) -> None:
    """The reader connected before the filesystem turned read-only: in WAL mode it keeps
    reading, and sees every acknowledged transaction, complete, and nothing of the one
    that was interrupted. In rollback-journal mode the interrupted transaction left a hot
    journal beside half-written pages, which nobody can roll back on a read-only
    filesystem: the reader gets SQLite's read-only error at once, never those pages."""
    outcome = read_only_outcome(journal)
    before, after = outcome.reader_before, outcome.reader_after
    assert before["txns"]
    assert set(before["txns"].values()) == {ROWS}
    if journal == "wal":
        assert "error" not in after, after
        assert after["txns"].items() >= before["txns"].items()
        assert set(after["txns"].values()) == {ROWS}
        assert after["txns"].keys() >= outcome.acknowledged
        assert outcome.held not in after["txns"]
        assert after["counter"] == len(after["txns"])
    else:
        assert_immediate_read_only_error(after)


@pytest.mark.mounts
@pytest.mark.parametrize("journal", JOURNALS)
def test_filesystem_turned_read_only_new_connections(read_only_outcome: ReadOnly, journal: str) -> None:
    """Connections opened after the filesystem turned read-only: in WAL mode a read-only
    one opens and sees what the connected reader sees, and a write connection fails at
    once with SQLite's "attempt to write a readonly database", not as a lock wait. In
    rollback-journal mode, where a hot journal cannot be rolled back, both fail at once
    with SQLite's read-only error."""
    outcome = read_only_outcome(journal)
    if journal == "wal":
        assert outcome.new_reader["error"] is None, outcome.new_reader
        assert dict(outcome.new_reader["rows"]) == outcome.reader_after["txns"]
    else:
        assert_immediate_read_only_error(outcome.new_reader)
        assert outcome.new_reader["rows"] is None
    assert_immediate_read_only_error(outcome.new_writer)


@pytest.mark.mounts
@pytest.mark.parametrize(
    "journal",
    [
        pytest.param(
            "wal",
            marks=pytest.mark.xfail(
                strict=True,
                reason="library default: synchronous=NORMAL in WAL mode acknowledges a COMMIT before the -wal is "
                "synced; when the kernel fails the filesystem, every transaction since the last checkpoint is lost "
                "(synchronous=FULL keeps them)",
            ),
        ),
        "delete",
    ],
)
def test_acknowledged_transactions_survive_the_filesystem_turning_read_only(
    read_only_outcome: ReadOnly, journal: str
) -> None:
    """Mounted again after the kernel turned it read-only, the filesystem holds every
    acknowledged transaction, complete, and nothing of the interrupted one, in a file that
    passes ``integrity_check``."""
    outcome = read_only_outcome(journal)
    txns, counter = outcome.after_mount_again
    assert outcome.acknowledged - txns.keys() == set()
    assert set(txns.values()) == {ROWS}
    assert outcome.held not in txns
    assert counter == len(txns)


@pytest.fixture
def remountable_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs (64 MiB at most) that the test may remount read-only; unmounted at teardown."""
    if not _is_root() or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a tmpfs")
    where = tmp_path / "tmpfs"
    where.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        _unmount(where)


@pytest.mark.mounts
def test_remounted_read_only_readers_go_on_and_writers_fail_at_once(remountable_tmpfs: Path, fleet: Fleet) -> None:
    """A rollback-journal database on a tmpfs: writer processes commit, then finish (the
    kernel refuses a read-only remount while files are open for writing), while a reader
    process stays connected. After ``mount -o remount,ro`` the reader keeps reading every
    acknowledged transaction, a new read-only connection opens and reads the same, and a
    new write connection fails at once with "attempt to write a readonly database", not as
    a lock wait.

    A WAL database cannot be remounted so with readers attached: they keep its ``-shm``
    file open for writing."""
    db = remountable_tmpfs / "app.db"
    create_schema(db, "delete")
    reader = fleet.start("reader", "reader", str(db))
    writers = [fleet.start_writer(db, f"w{slot}", "delete") for slot in range(2)]
    fleet.wait(lambda: reader.ready and all(len(w.acks) >= 3 for w in writers), "the writers to commit")
    for writer in writers:
        writer.send("stop")
    for writer in writers:
        fleet.wait_ended(writer)
        assert writer.process.returncode == 0, writer.stderr()
    acknowledged = {txn for _, txn in fleet.acks}

    remounted = _run("mount", "-o", "remount,ro", str(remountable_tmpfs))
    assert remounted.returncode == 0, remounted.stderr
    assert os.statvfs(remountable_tmpfs).f_flag & os.ST_RDONLY

    reader.send("read")
    fleet.wait(lambda: bool(reader.replies) or reader.error is not None, "the reader to read")
    assert reader.error is None, reader.error
    assert reader.replies[0] == {"txns": dict.fromkeys(acknowledged, ROWS), "counter": len(acknowledged)}
    new_reader, new_writer = probe(
        db, "ro", "SELECT txn, count(*) FROM rows GROUP BY txn", "write", "UPDATE counter SET n = n + 1", timeout=BUDGET
    )
    assert new_reader["error"] is None, new_reader
    assert dict(new_reader["rows"]) == dict.fromkeys(acknowledged, ROWS)
    assert new_writer["stage"] == "statement", new_writer
    error = new_writer["error"]
    assert error["message"] == "attempt to write a readonly database", error
    assert (error["operational"], error["lock_error"], error["locked"], error["retries"]) == (True, False, False, 0)
    assert error["seconds"] < 30.0


def _fail() -> None:
    raise ValueError("a failing user-defined function")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize(
    "after",
    ["transaction", "failed-statement"],
)
def test_close_releases_every_file_of_the_database(tmp_path: Path, after: str) -> None:
    """``close()`` releases every file of the database at once, as :mod:`sqlite3` does,
    after a write transaction and after a statement that failed: a closed connection holds
    no descriptor (and so no lock) that would keep the filesystem busy or keep another
    connection from being the last one, which checkpoints the WAL. (The garbage collector
    is paused, so that only what ``close()`` does counts.)"""
    db = tmp_path / "app.db"
    files = [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal", "-writers"))]
    gc.collect()
    gc.disable()
    try:
        conn = sqlite_resilient.connect(db)
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
        if after == "transaction":
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES (1)")
        else:
            conn.create_function("fail", 0, _fail)
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("SELECT fail()")
        conn.close()
        assert open_descriptors(*files) == []
    finally:
        gc.enable()
        gc.collect()


# -- 4. hostile files ----------------------------------------------------------------------


def make_database(db: Path) -> None:
    """A WAL database of about 60 pages, closed (its ``-wal`` checkpointed and removed)."""
    with contextlib.closing(sqlite_resilient.connect(db)) as conn:
        conn.execute("CREATE TABLE t(x INTEGER, y TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(x, "y" * 100) for x in range(2000)])
        conn.commit()
    assert not db.with_name(db.name + "-wal").exists()


def spoil(db: Path, case: str) -> None:
    """Make *db* the hostile file of *case*."""
    if case == "text-file":
        db.write_text("id,name\n1,not a database\n" * 50)
        return
    make_database(db)
    if case == "truncated":
        os.truncate(db, db.stat().st_size // 2)
        return
    with db.open("r+b") as f:
        if case == "header-overwritten":
            f.write(b"\xa5" * 100)  # the 100-byte database header of the first page
        elif case == "data-page-overwritten":
            f.seek(20 * 4096)
            f.write(b"\xa5" * 4096)
        else:
            raise AssertionError(case)


HOSTILE_SQL = "SELECT count(*), sum(length(y)) FROM t"  # reads every page of the table


def start_wal_holder(fleet: Fleet, db: Path) -> Worker:
    """Start ``fault_workers.py wal-holder DB``; return once its frames are in the ``-wal``
    file, and delete that file."""
    holder = fleet.start("wal-holder", "wal-holder", str(db))
    fleet.wait(lambda: holder.ready, "the WAL holder to commit")
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 32  # committed frames that were not checkpointed
    wal.unlink()
    return holder


@contextlib.contextmanager
def hostile(where: Path, case: str) -> Iterator[Path]:
    """The database file of *case*; for ``wal-deleted``, while a writer process keeps
    committed but not checkpointed frames in the ``-wal`` file that was deleted."""
    db = where / "app.db"
    if case != "wal-deleted":
        spoil(db, case)
        yield db
        return
    with worker_fleet(where) as fleet:
        start_wal_holder(fleet, db)
        yield db


HOSTILE_CASES = ["text-file", "truncated", "header-overwritten", "data-page-overwritten", "wal-deleted"]


@pytest.fixture(scope="module")
def hostile_probe(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, list[JSON], bytes]]:
    """``hostile_probe(case)``: ``(db, reports, contents)``: the reports of a read-only and
    a write connection running :data:`HOSTILE_SQL` on the hostile file (in a helper
    process), and the file's contents before; run once per case."""
    done: dict[str, tuple[Path, list[JSON], bytes] | Exception] = {}

    def run(case: str) -> tuple[Path, list[JSON], bytes]:
        if case not in done:
            sql = HOSTILE_SQL if case != "wal-deleted" else "SELECT count(*) FROM t"
            try:
                with hostile(tmp_path_factory.mktemp(case), case) as db:
                    contents = db.read_bytes()
                    done[case] = (db, probe(db, "ro", sql, "rw", sql, timeout=BUDGET), contents)
            except Exception as error:  # every test of the case fails with it, without a new run
                done[case] = error
        found = done[case]
        if isinstance(found, Exception):
            raise found
        return found

    return run


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_file_raises_a_database_error_at_once(
    hostile_probe: Callable[[str], tuple[Path, list[JSON], bytes]], case: str
) -> None:
    """A text file named ``app.db``, a database truncated to half its size, one whose
    header or one of whose data pages is overwritten, and a WAL database whose ``-wal``
    file another process deleted while a writer still has committed frames in it: a
    read-only and a write connection (in a helper process, so a hang is caught) fail at
    ``connect()`` or at the first statement with a ``sqlite3.DatabaseError`` that is no
    lock error and was not retried (a wait would end in ``DatabaseLockedError`` after the
    connections' 2 s budget), never with a result, and the file is left as it was."""
    db, reports, contents = hostile_probe(case)
    for report in reports:
        assert report["rows"] is None, report
        assert report["stage"] in ("connect", "statement"), report
        error = report["error"]
        assert error["database_error"], report
        assert not error["lock_error"], report
        assert not error["locked"], report
        assert error.get("retries", 0) == 0, report
    if case != "wal-deleted":  # (the writer of that case still writes)
        assert db.read_bytes() == contents


@pytest.mark.parametrize(
    "case",
    [
        "text-file",
        "truncated",
        "header-overwritten",
        "data-page-overwritten",
        "wal-deleted",
    ],
)
def test_hostile_file_error_names_the_file(
    hostile_probe: Callable[[str], tuple[Path, list[JSON], bytes]], case: str
) -> None:
    """The error a hostile file raises names the database file, whether ``connect()`` or
    the first statement raised it."""
    db, reports, _ = hostile_probe(case)
    for report in reports:
        assert str(db) in report["error"]["message"], report


@pytest.mark.parametrize("end", ["killed", "closed"])
def test_deleted_wal_keeps_checkpointed_data(tmp_path: Path, fleet: Fleet, end: str) -> None:
    """A writer process commits rows 0-99 and checkpoints them into the database file,
    then commits rows 100-199 into the ``-wal`` file, which another process deletes while
    the writer keeps its connection open. What SQLite does, and what must hold:

    - other connections fail at their first statement with "disk I/O error"
      (``SQLITE_IOERR_SHORT_READ``: the ``-shm`` index points into a ``-wal`` file that is
      now empty), at once, never with a stale or empty result;
    - the writer itself goes on reading and committing into the deleted file it still
      has open;
    - if it is killed, the frames of the deleted file are gone: the next connection sees
      the checkpointed rows 0-99, intact;
    - if it closes as the last connection, SQLite checkpoints the deleted file it still
      has open, so every row it committed (0-299) is in the database file.
    """
    db = tmp_path / "app.db"
    holder = start_wal_holder(fleet, db)
    count = "SELECT count(*) FROM t"
    for report in probe(db, "ro", count, "rw", count, timeout=BUDGET):
        assert report["stage"] == "statement", report
        assert report["error"]["message"].startswith("disk I/O error"), report
        assert not report["error"]["lock_error"], report
        assert not report["error"]["locked"], report
        assert report["rows"] is None, report

    assert fleet.ask(holder, "count") == "count 200"
    assert fleet.ask(holder, "write") == "wrote"
    if end == "killed":
        holder.kill()
        expected = list(fault_workers.CHECKPOINTED_ROWS)
    else:
        assert fleet.ask(holder, "close") == "closed"
        expected = [*fault_workers.CHECKPOINTED_ROWS, *fault_workers.WAL_ONLY_ROWS, *fault_workers.LATER_ROWS]
    fleet.wait_ended(holder)

    rows, check = probe(db, "rw", "SELECT x FROM t ORDER BY x", "rw", "PRAGMA integrity_check", timeout=BUDGET)
    assert rows["error"] is None, rows
    assert [x for (x,) in rows["rows"]] == expected
    assert check["rows"] == [["ok"]]
