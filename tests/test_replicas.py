"""Read replicas: copies that a Litestream follower (``litestream restore -f``) keeps up to
date, read through ``connect(copy, read_only=True)`` and routed by ``replicas.Replicas``.

The first tests need no Litestream: a follower is played by a child process that writes
changed pages into the copy the way Litestream 0.5's follower does (under POSIX locks on
SQLite's PENDING byte and SHARED range, page 1 left alone when it did not change), and
shows what plain :mod:`sqlite3` readers get wrong. The others run the real binary (skipped
with the reason where it is missing): writer processes on the primary, ``litestream
replicate`` to a file replica, a follower in another directory standing for another
machine, reader processes on its copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import run_in_thread
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from litestream_workers import SCHEMA
from test_litestream import WAIT, Litestream, Writers, committed, find_litestream, litestream  # noqa: F401

import sqlite_resilient
from sqlite_resilient import (
    LITESTREAM_SETTINGS,
    ConfigurationError,
    DatabaseLockedError,
    ReplicaError,
    StaleReplicaError,
)
from sqlite_resilient.replicas import Replicas, replica_status

READERS = Path(__file__).with_name("replica_workers.py")

APPLY = """\
import fcntl, os, sys
copy, newer = sys.argv[1], sys.argv[2]
fd = os.open(copy, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0x40000000)    # PENDING: no new reader
fcntl.lockf(fd, fcntl.LOCK_EX, 510, 0x40000002)  # SHARED range: the readers have finished
with open(newer, "rb") as f:
    data = f.read()
size = 4096
for start in range(size, len(data), size):        # page 1 unchanged: left alone
    page = data[start:start + size]
    if os.pread(fd, size, start) != page:
        os.pwrite(fd, page, start)
os.fsync(fd)
"""
"""A follower's apply, as Litestream 0.5.17 does it (``applyLTXFile``): argv COPY NEWER."""


def make_copy(tmp_path: Path, rows: int = 200) -> tuple[Path, Path]:
    """A primary (WAL, checkpointed) with *rows* rows in ``t``, and a byte copy of it with a
    follower's ``-txid`` file beside it (position 1)."""
    primary, copy = tmp_path / "primary.db", tmp_path / "copy.db"
    with contextlib.closing(sqlite3.connect(primary)) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        conn.executemany("INSERT INTO t(v) VALUES (?)", [(0,)] * rows)
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(primary, copy)
    Path(f"{copy}-txid").write_text("0000000000000001\n")
    return primary, copy


def apply_newer(primary: Path, copy: Path, v: int) -> None:
    """On the primary, set every ``v`` (in place: the same pages); then play the follower:
    write the pages that changed into *copy* from another process."""
    with contextlib.closing(sqlite3.connect(primary)) as conn:
        conn.execute("UPDATE t SET v = ?", (v,))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    subprocess.run([sys.executable, "-c", APPLY, str(copy), str(primary)], check=True, timeout=WAIT)


def header(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(20)[18:20]


def test_a_copy_is_read_in_rollback_journal_mode_and_never_written(tmp_path: Path) -> None:
    """A copy restored from a WAL database says WAL in its header: ``connect(copy,
    read_only=True)`` switches it to rollback-journal mode (versions 1/1, as the follower
    does itself whenever page 1 changes) and creates no ``-wal`` or ``-shm`` file; a
    connection that could write to a copy is refused, naming the way out."""
    _, copy = make_copy(tmp_path)
    assert header(copy) == b"\x02\x02"
    conn = sqlite_resilient.connect(copy, read_only=True)
    assert conn.journal_mode == "delete"
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
    assert header(copy) == b"\x01\x01"
    assert not Path(f"{copy}-wal").exists()
    assert not Path(f"{copy}-shm").exists()
    assert conn.replica == replica_status(copy)
    assert conn.replica is not None
    assert conn.replica.txid == 1
    conn.close()

    before = copy.read_bytes()
    with pytest.raises(ConfigurationError, match=r"follower's copy .*read_only=True.*delete -txid"):
        sqlite_resilient.connect(copy)
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == ["copy.db", "copy.db-txid"]


def test_a_connection_holding_the_copy_in_wal_mode_is_waited_for(tmp_path: Path) -> None:
    """A plain :mod:`sqlite3` connection opened on the copy while it is in WAL mode holds its
    SHARED lock as long as it is open (and would stop the follower). Switching the copy to
    rollback-journal mode waits for it within the budget, then says what it waited for;
    once it is closed, the switch is made."""
    _, copy = make_copy(tmp_path)
    plain = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    assert plain.execute("SELECT count(*) FROM t").fetchone() == (200,)
    started = time.monotonic()
    with pytest.raises(DatabaseLockedError, match="connections that hold it in WAL mode"):
        sqlite_resilient.connect(copy, read_only=True, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert header(copy) == b"\x02\x02"
    plain.close()
    with contextlib.closing(sqlite_resilient.connect(copy, read_only=True)) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)
    assert header(copy) == b"\x01\x01"


@pytest.mark.parametrize("autocommit", [None, False])
def test_a_kept_connection_sees_every_change_the_follower_applies(tmp_path: Path, autocommit: bool | None) -> None:
    """The follower's writes do not change the file change counter (page 1 is not among
    them): a plain :mod:`sqlite3` connection kept open goes on reading the pages it cached
    before (stale, and mixed with new pages where it had not cached them). The library's
    connection reads what the follower applied, every time; under ``autocommit=False`` too,
    where Python begins the next transaction as soon as one is committed."""
    if autocommit is not None and sys.version_info < (3, 12):
        pytest.skip("autocommit is new in Python 3.12")
    primary, copy = make_copy(tmp_path)
    kwargs: dict[str, Any] = {} if autocommit is None else {"autocommit": autocommit}
    conn = sqlite_resilient.connect(copy, read_only=True, **kwargs)
    plain = sqlite3.connect(f"file:{copy}?mode=ro", uri=True, isolation_level=None)
    for v in (1, 2, 3):
        assert conn.execute("SELECT min(v), max(v) FROM t").fetchone() == (v - 1, v - 1)
        conn.commit()  # under autocommit=False, its read lock goes only so
        assert plain.execute("SELECT min(v), max(v) FROM t").fetchone() == (0, 0)  # its cache of before
        apply_newer(primary, copy, v)
    assert conn.execute("SELECT min(v), max(v) FROM t").fetchone() == (3, 3)
    assert plain.execute("SELECT min(v), max(v) FROM t").fetchone() == (0, 0)
    plain.close()
    conn.close()


HOLD = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0x40000000)
fcntl.lockf(fd, fcntl.LOCK_EX, 510, 0x40000002)
print("held", flush=True)
sys.stdin.readline()
"""
"""A follower in the middle of applying: its locks held until a line comes on stdin."""


def test_a_read_waits_for_the_follower_within_its_budget(tmp_path: Path) -> None:
    """While the follower holds its locks, a read on the copy waits: one with a short budget
    gets :class:`DatabaseLockedError` once the budget is spent, one with the default budget
    reads once the follower lets go; no lock error reaches it."""
    _, copy = make_copy(tmp_path)
    patient = sqlite_resilient.connect(copy, read_only=True, check_same_thread=False)
    hurried = sqlite_resilient.connect(copy, read_only=True, timeout=0.3)
    follower = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(copy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert follower.stdin is not None
    assert follower.stdout is not None
    try:
        assert follower.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(DatabaseLockedError, match="database is locked"):
            hurried.execute("SELECT count(*) FROM t").fetchone()
        assert 0.3 <= time.monotonic() - started < 5
        reading = threading.Event()

        def read() -> object:
            reading.set()
            return patient.execute("SELECT count(*) FROM t").fetchone()

        thread, outcome = run_in_thread(read)
        assert reading.wait(WAIT)
        follower.stdin.write("done\n")
        follower.stdin.flush()
        thread.join(WAIT)
        assert outcome == [(200,)]
    finally:
        follower.stdin.close()
        follower.wait(timeout=WAIT)
        follower.stdout.close()
        patient.close()
        hurried.close()


def test_a_copy_restored_again_is_not_read_through_an_old_connection(tmp_path: Path) -> None:
    """When the follower restores again, the copy is a new file: a connection to the old one
    would read it forever, unchanged. Its next read says so instead; a new connection reads
    the new copy."""
    primary, copy = make_copy(tmp_path)
    conn = sqlite_resilient.connect(copy, read_only=True)
    assert conn.execute("SELECT max(v) FROM t").fetchone() == (0,)
    with contextlib.closing(sqlite3.connect(primary)) as plain:
        plain.execute("UPDATE t SET v = 7")
        plain.commit()
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(primary, tmp_path / "restored.db")
    os.replace(tmp_path / "restored.db", copy)
    with pytest.raises(ReplicaError, match=r"was replaced .* open a new connection"):
        conn.execute("SELECT max(v) FROM t")
    conn.close()
    with contextlib.closing(sqlite_resilient.connect(copy, read_only=True)) as conn:
        assert conn.execute("SELECT max(v) FROM t").fetchone() == (7,)


def test_replicas_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """Bad arguments get a clear error naming the problem, before anything runs; a copy
    that no follower wrote yet is waited for within the budget, then reported."""
    with pytest.raises(ConfigurationError, match="non-empty list"):
        Replicas(str(tmp_path / "copy.db"))
    replicas = Replicas([tmp_path / "copy.db"])
    with pytest.raises(ConfigurationError, match="max_lag needs source="):
        replicas.choose(max_lag=1.0)
    with pytest.raises(ConfigurationError, match="min_position must be a TXID"):
        replicas.choose(min_position=-1)
    with pytest.raises(ConfigurationError, match="no primary"):
        replicas.writer()
    with pytest.raises(ConfigurationError, match=r"position\(\) needs primary= and socket="):
        replicas.position()
    started = time.monotonic()
    with pytest.raises(ReplicaError, match=r"no follower has written a copy yet .*litestream restore -f"):
        replicas.choose(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert Replicas([tmp_path / "copy.db"], primary=tmp_path / "primary.db").choose() == str(tmp_path / "primary.db")


APPLIER = """\
import fcntl, os, random, sys
for line in sys.stdin:
    copy, newer = line.split()
    fd = os.open(copy, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0x40000000)
    fcntl.lockf(fd, fcntl.LOCK_EX, 510, 0x40000002)
    with open(newer, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[16:18], "big")
    for start in range(0, len(data), size):
        page = bytearray(data[start:start + size])
        old = bytearray(os.pread(fd, size, start))
        if start == 0:  # page 1 as Litestream writes it: versions 1/1, a new change counter
            page[18:20] = b"\\x01\\x01"
            page[24:28], old[24:28] = old[24:28], old[24:28]
            if page == old:
                continue
            page[24:28] = random.randbytes(4)
        if page != old:
            os.pwrite(fd, bytes(page), start)
    os.ftruncate(fd, len(data))
    os.fsync(fd)
    os.close(fd)
    print("applied", flush=True)
"""
"""A follower that stays up: each line ``COPY NEWER`` applies what changed, as Litestream does
(under its locks; page 1 only when it changed, with a random change counter; the size)."""


class FollowerCopyMachine(RuleBasedStateMachine):
    """A primary that changes (rows updated, inserted, deleted, a table created), a follower
    that applies it to a copy when told, and readers on kept connections: one of a thread's
    own, one shared by threads (reading from several at once), one under ``autocommit=False``
    where Python has it; each read after an apply sees exactly the applied state."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="follower-machine-"))
        self.primary, self.copy = make_copy(self.directory, rows=50)
        self.writer = sqlite3.connect(self.primary)
        self.applied = self.state()
        self.applier = subprocess.Popen(
            [sys.executable, "-c", APPLIER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.own = sqlite_resilient.connect(self.copy, read_only=True)
        self.shared = sqlite_resilient.connect(self.copy, read_only=True, check_same_thread=False)
        self.pep249 = (
            sqlite_resilient.connect(self.copy, read_only=True, autocommit=False)
            if sys.version_info >= (3, 12)
            else None
        )

    def state(self, conn: Any = None) -> tuple[Any, ...]:
        conn = self.writer if conn is None else conn
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        return (tables, *conn.execute("SELECT count(*), total(v), max(id) FROM t").fetchone())

    @rule(v=st.integers(0, 1000), where=st.integers(0, 3))
    def update(self, v: int, where: int) -> None:
        self.writer.execute("UPDATE t SET v = ? WHERE id % 4 = ?", (v, where))
        self.writer.commit()

    @rule(rows=st.integers(1, 300))
    def insert(self, rows: int) -> None:
        self.writer.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(rows)])
        self.writer.commit()

    @rule(keep=st.integers(0, 40))
    def delete(self, keep: int) -> None:
        self.writer.execute("DELETE FROM t WHERE id > (SELECT min(id) FROM t) + ?", (keep,))
        self.writer.commit()
        self.writer.execute("VACUUM")  # the file shrinks: the follower truncates the copy

    @rule()
    def create_table(self) -> None:
        (tables,) = self.writer.execute("SELECT count(*) FROM sqlite_master").fetchone()
        self.writer.execute(f"CREATE TABLE extra{tables}(x)")
        self.writer.commit()

    @rule()
    def apply(self) -> None:
        self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert self.applier.stdin is not None
        assert self.applier.stdout is not None
        self.applier.stdin.write(f"{self.copy} {self.primary}\n")
        self.applier.stdin.flush()
        assert self.applier.stdout.readline() == "applied\n"
        self.applied = self.state()

    @invariant()
    def kept_connections_read_the_applied_state(self) -> None:
        assert self.state(self.own) == self.applied
        if self.pep249 is not None:
            assert self.state(self.pep249) == self.applied
            self.pep249.commit()  # its read lock goes only so

    @rule(threads=st.integers(1, 4))
    def read_from_threads(self, threads: int) -> None:
        seen: list[tuple[Any, ...]] = []
        start = threading.Barrier(threads)

        def read_shared() -> None:
            start.wait(timeout=WAIT)
            seen.append(self.state(self.shared))

        workers = [threading.Thread(target=read_shared) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=WAIT)
        assert seen == [self.applied] * threads

    def teardown(self) -> None:
        for conn in (self.own, self.shared, self.pep249, self.writer):
            if conn is not None:
                conn.close()
        if self.applier.stdin is not None:
            self.applier.stdin.close()
        self.applier.wait(timeout=WAIT)
        if self.applier.stdout is not None:
            self.applier.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def test_kept_connections_read_exactly_what_the_follower_applied() -> None:
    run_state_machine_as_test(
        FollowerCopyMachine,
        settings=settings(max_examples=15, stateful_step_count=15, deadline=None, phases=[Phase.generate]),
    )


# -- with the real binary -----------------------------------------------------------------


class Output:
    """What a process writes, read by a thread as it comes: copied to a log file, and waited
    on line by line."""

    def __init__(self, stream: IO[str], log: Path) -> None:
        self.lines: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(stream, log), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str], log: Path) -> None:
        with stream, log.open("a") as out:
            for line in stream:
                out.write(line)
                out.flush()
                with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def join(self) -> None:
        """Once the process ended: until all it wrote is read (and its pipe closed)."""
        self.reader.join(timeout=WAIT)

    def wait_for(self, seen: Callable[[list[str]], bool], what: str) -> None:
        """Until *seen* holds of the lines so far (at most :data:`WAIT` seconds)."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.ended or seen(self.lines), timeout=WAIT), f"no {what} in {WAIT} s"
            assert seen(self.lines), f"no {what}: the process ended\n{''.join(self.lines)}"


def followed(line: str) -> int:
    """The position a follower's log line says it reached (0 if none)."""
    found = re.search(r'msg="(?:entering follow mode|follow: applied updates)".*?\b(?:to_)?txid=([0-9a-f]{16})', line)
    return int(found.group(1), 16) if found else 0


@dataclass
class Follower:
    """``litestream restore -f`` keeping *copy* up to date from the file replica."""

    binary: str
    copy: Path
    source: str
    log: Path
    config: Path | None = None
    """A Litestream configuration naming the replica (*source* is then its database path)."""
    process: subprocess.Popen[str] | None = None
    output: Output | None = None

    def start(self) -> None:
        where = [] if self.config is None else ["-config", str(self.config)]
        command = [self.binary, "restore", *where, "-f", "-follow-interval", "50ms", "-o", str(self.copy), self.source]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        self.output = Output(self.process.stdout, self.log)
        self.wait_for(1)

    def wait_for(self, txid: int) -> None:
        """Until the copy's position is *txid* or later: the follower logs each position it
        reaches after it wrote it to the ``-txid`` file."""
        assert self.output is not None
        self.output.wait_for(lambda lines: max(map(followed, lines), default=0) >= txid, f"the copy at {txid}")
        assert (replica_status(self.copy).txid or 0) >= txid

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)
        if self.output is not None:
            self.output.join()


@dataclass
class Readers:
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @classmethod
    def start(cls, copy: Path, count: int) -> Readers:
        readers = cls()
        for _ in range(count):
            process = subprocess.Popen(
                [sys.executable, str(READERS), "reader", str(copy)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            readers.processes.append(process)
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        return readers

    def finish(self) -> list[dict[str, object]]:
        reports = []
        for process in self.processes:
            out, _ = process.communicate(timeout=WAIT)
            assert process.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT)


@pytest.fixture
def follower(litestream: Litestream, tmp_path: Path) -> Iterator[Follower]:  # noqa: F811 - the fixture
    """A follower of the Litestream fixture's replica, in another directory, not started."""
    (tmp_path / "reader-machine").mkdir()
    copy = tmp_path / "reader-machine" / "app.db"
    following = Follower(litestream.binary, copy, (tmp_path / "replica").as_uri(), tmp_path / "follower.log")
    try:
        yield following
    finally:
        following.kill()


def test_readers_on_a_follower_see_every_synced_write_and_survive_its_restart(
    litestream: Litestream,  # noqa: F811 - the fixture
    follower: Follower,
    tmp_path: Path,
) -> None:
    """Writer processes commit under contention on the primary; reader processes read the
    follower's copy on kept connections. After each ``litestream sync -wait``, every
    transaction acknowledged before it is on the copy once the follower reaches the synced
    position. Midway the follower is killed, and restarted as Litestream says (its copy and
    ``-txid`` deleted, restored again). The readers never saw a count go back or a torn
    transaction, and no error reached them; the final copy holds exactly what the primary
    holds."""
    litestream.start()
    follower.start()
    readers = Readers.start(follower.copy, 2)
    writers = Writers.start(litestream.database, LITESTREAM_SETTINGS, 2, 150)
    try:
        for step in (1, 2, 3):
            before = writers.wait_for_acks(100 * step)
            follower.wait_for(litestream.sync()["replica_txid"])
            assert before <= committed(follower.copy)
            if step == 1:
                follower.kill()
                Path(f"{follower.copy}-txid").unlink()
                follower.copy.unlink()
                follower.start()
        acked = writers.finish()
        follower.wait_for(litestream.sync()["replica_txid"])
        reports = readers.finish()
    finally:
        writers.kill()
        readers.kill()
    assert committed(follower.copy) == acked == committed(litestream.database)
    for report in reports:
        assert (report["errors"], report["went_back"], report["torn"]) == ([], 0, 0), report
        assert (report["reconnects"], report["last"]) == (1, len(acked)), report
        assert isinstance(report["reads"], int)
        assert report["reads"] > 100, report
    assert "ERROR" not in follower.log.read_text(errors="replace")


def test_a_freshness_bound_is_met_or_raises_within_the_budget(
    litestream: Litestream,  # noqa: F811 - the fixture
    follower: Follower,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the follower stopped, a write on the primary is shipped (``Replicas.position()``,
    for read-your-writes): a read that needs its position, or a lag bound, raises
    :class:`StaleReplicaError` once its budget is spent, or goes to the primary where there
    is one. Started again, the follower reaches the position, and the read goes to the copy,
    whose status reports the position and a lag within the bound."""
    litestream.start()
    follower.start()
    follower.kill()
    with contextlib.closing(sqlite_resilient.connect(litestream.database)) as conn, conn:
        conn.execute("INSERT INTO counter VALUES (1)")
    monkeypatch.chdir(tmp_path)  # the socket's path is relative to it
    source = (tmp_path / "replica").as_uri()
    on_reader = Replicas([follower.copy], source=source)
    on_primary = Replicas([follower.copy], primary=litestream.database, source=source, socket=litestream.socket.name)
    position = on_primary.position()
    assert position > (replica_status(follower.copy).txid or 0)
    for bound in ({"min_position": position}, {"max_lag": 0.2}):
        started = time.monotonic()
        with pytest.raises(StaleReplicaError, match=r"no copy met .* within 0.5 s"):
            on_reader.choose(timeout=0.5, **bound)
        assert 0.5 <= time.monotonic() - started < 5
        assert on_primary.choose(timeout=0.5, **bound) == str(litestream.database)

    Path(f"{follower.copy}-txid").unlink()
    follower.copy.unlink()
    follower.start()
    with contextlib.closing(on_reader.reader(min_position=position, max_lag=5.0, timeout=WAIT)) as conn:
        assert conn.database_path == str(follower.copy)
        assert conn.execute("SELECT count(*) FROM counter").fetchone() == (2,)
        assert conn.replica is not None
        assert conn.replica.txid is not None
        assert conn.replica.txid >= position
    (status,) = on_reader.status()
    assert status.txid is not None
    assert status.txid >= position
    assert status.shipped_txid == status.txid
    assert status.lag is not None
    assert 0 <= status.lag <= 5.0


def test_reads_go_to_the_copies_that_meet_the_bound_in_turn(tmp_path: Path) -> None:
    """Of two copies, a bound on the position sends reads to the one that has it; without a
    bound they take turns; a copy whose follower has not written its position yet is left
    out."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, ahead = make_copy(tmp_path / "a")
    _, behind = make_copy(tmp_path / "b")
    Path(f"{ahead}-txid").write_text("0000000000000009\n")
    missing = tmp_path / "c.db"
    replicas = Replicas([ahead, behind, missing])
    assert {replicas.choose(min_position=5) for _ in range(4)} == {str(ahead)}
    assert sorted(replicas.choose() for _ in range(4)) == sorted([str(ahead), str(behind)] * 2)
    assert [s.txid for s in replicas.status()] == [9, 1, None]
    with contextlib.closing(replicas.reader(min_position=9)) as conn:
        assert conn.database_path == str(ahead)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (200,)


def test_asyncio_replicas_read_a_copy(tmp_path: Path) -> None:
    """``aio.Replicas`` chooses in a worker thread and gives an aio connection to the copy."""
    aio = pytest.importorskip("sqlite_resilient.aio")
    primary, copy = make_copy(tmp_path)

    async def main() -> None:
        replicas = aio.Replicas([copy])
        with pytest.raises(ConfigurationError, match="no primary"):
            replicas.writer()
        conn = await replicas.reader(min_position=1)
        try:
            async with conn.execute("SELECT count(*) FROM t") as cursor:
                assert await cursor.fetchone() == (200,)
        finally:
            await conn.close()
        (status,) = await replicas.status()
        assert (status.txid, status.lag) == (1, None)
        writer = await aio.Replicas([copy], primary=primary).writer()
        try:
            await writer.execute("UPDATE t SET v = 1")
            await writer.commit()
        finally:
            await writer.close()

    asyncio.run(main())


# -- over SFTP, to an OpenSSH server on 127.0.0.1 --------------------------------------------

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An OpenSSH server (``sshd``, its own configuration and keys) on a free port of
    127.0.0.1, taking the client key it made; the ``replica`` settings of a Litestream
    configuration that reaches ``tmp_path/sftp-replica`` through it."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("no OpenSSH server: apt-get install openssh-server (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("sshd runs as root here (its privilege separation directory is /run/sshd)")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True, timeout=WAIT
        )
    shutil.copyfile(keys / "client.pub", keys / "authorized_keys")
    (keys / "host.authorized").write_text(" ".join((keys / "host.pub").read_text().split()[:2]) + "\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    (keys / "sshd_config").write_text(
        f"""\
ListenAddress 127.0.0.1:{port}
HostKey {keys / "host"}
AuthorizedKeysFile {keys / "authorized_keys"}
PidFile {keys / "sshd.pid"}
UsePAM no
StrictModes no
PasswordAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
"""
    )
    command = [str(SSHD), "-D", "-e", "-f", str(keys / "sshd_config")]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert server.stdout is not None
    output = Output(server.stdout, tmp_path / "sshd.log")
    try:
        output.wait_for(
            lambda lines: any(f"Server listening on 127.0.0.1 port {port}." in line for line in lines), "sshd listening"
        )
        yield {
            "type": "sftp",
            "host": f"127.0.0.1:{port}",
            "user": getpass.getuser(),
            "key-path": str(keys / "client"),
            "host-key-path": str(keys / "host.authorized"),
            "path": str(tmp_path / "sftp-replica"),
        }
    finally:
        server.terminate()
        server.wait(timeout=WAIT)
        output.join()


def test_a_follower_over_sftp_has_every_synced_write(
    sftp_server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through a real SFTP server: ``litestream replicate`` ships to it, the follower
    restores from it (with a configuration carrying the key), a reader process on a kept
    connection never sees a count go back or a torn transaction, every transaction
    acknowledged before a sync is on the copy once it reaches the synced position, and
    ``Replicas`` lists the storage through the same configuration for the copy's lag."""
    binary = find_litestream()
    monkeypatch.chdir(tmp_path)  # the control socket's path is relative to it
    database = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(database, settings=LITESTREAM_SETTINGS)) as conn:
        conn.executescript(SCHEMA)
    replica = "\n".join(f"      {key}: {json.dumps(value)}" for key, value in sftp_server.items())
    entry = f"  - path: {json.dumps(str(database))}\n    monitor-interval: 100ms\n    replica:\n{replica}\n"
    config, follow = tmp_path / "litestream.yml", tmp_path / "follow.yml"
    config.write_text('socket:\n  enabled: true\n  path: "control.sock"\ndbs:\n' + entry)
    follow.write_text("dbs:\n" + entry)
    replication = Litestream(binary, database, config, Path("control.sock"), tmp_path / "litestream.log")
    (tmp_path / "reader-machine").mkdir()
    copy = tmp_path / "reader-machine" / "app.db"
    following = Follower(binary, copy, str(database), tmp_path / "follower.log", config=follow)
    readers = Readers()
    writers: Writers | None = None
    try:
        replication.start()
        following.start()
        readers = Readers.start(copy, 1)
        writers = Writers.start(database, LITESTREAM_SETTINGS, 2, 60)
        before = writers.wait_for_acks(60)
        following.wait_for(replication.sync()["replica_txid"])
        assert before <= committed(copy)
        acked = writers.finish()
        following.wait_for(replication.sync()["replica_txid"])
        (report,) = readers.finish()
        (status,) = Replicas([copy], source=database, config=follow).status()
    finally:
        if writers is not None:
            writers.kill()
        readers.kill()
        following.kill()
        replication.kill()
    assert committed(copy) == acked == committed(database)
    assert (report["errors"], report["went_back"], report["torn"], report["last"]) == ([], 0, 0, len(acked))
    assert status.txid is not None
    assert status.shipped_txid == status.txid
    assert status.lag is not None
    assert 0 <= status.lag < WAIT
