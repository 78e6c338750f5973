"""``sqlite_resilient.aio``: aiosqlite connections with the library's guarantees.

Every test runs its coroutines with ``asyncio.run`` on real database files. Lock errors are
real: a helper process holds the write lock (``lock_holder``), another connection commits
between a deferred transaction's read and its write (``SQLITE_BUSY_SNAPSHOT``), or a
connection drops a table under its own pending statement (``SQLITE_LOCKED``). Waits are
bounded (``wait_for``, helper timeouts); nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

aiosqlite = pytest.importorskip("aiosqlite", reason="sqlite_resilient.aio needs aiosqlite (the 'aio' extra)")

from conftest import (  # noqa: E402
    HELPER_TIMEOUT,
    Recorder,
    StartLockHolder,
    commit_elsewhere,
    counter,
    make_counter_database,
    query,
    rows,
)

import sqlite_resilient  # noqa: E402
from sqlite_resilient import (  # noqa: E402
    ConfigurationError,
    DatabaseLockedError,
    ResilientConnection,
    aio,
    is_lock_error,
    retry_on_lock,
)

AIO_WORKERS = Path(__file__).with_name("aio_workers.py")

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
WRITER_QUEUED = "sqlite_resilient.writer_queued"
LOCK_ERROR = "sqlite_resilient.lock_error"

HAS_ERROR_CODES = sys.version_info >= (3, 11)
"""SQLite's own errors carry ``sqlite_errorname`` from Python 3.11 on."""

WAIT = 20.0
"""Upper bound in seconds for any event a test waits for."""


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_counter_database(tmp_path / "app.db")


@contextlib.asynccontextmanager
async def opened(*args: Any, **kwargs: Any) -> AsyncIterator[aio.Connection]:
    """``aio.connect(*args, **kwargs)``, closed at the end."""
    async with aio.connect(*args, **kwargs) as conn:
        yield conn


async def fetchall(conn: aio.Connection, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    return list(await conn.execute_fetchall(sql, parameters))


def in_transaction(conn: aio.Connection | sqlite3.Connection) -> bool:
    """``conn.in_transaction``, asked anew (type checkers would keep what an assert said)."""
    return conn.in_transaction


def run(coroutine: Any) -> Any:
    """``asyncio.run`` with a bound on the whole test's coroutine."""
    return asyncio.run(asyncio.wait_for(coroutine, 90))


# -- the connection ------------------------------------------------------------------------


def test_round_trip(db: Path) -> None:
    """Statements, cursors and fetches of aiosqlite work on an aio connection, which is an
    ``aiosqlite.Connection`` around a ResilientConnection set up by ``connect()``; its set-up
    state is readable from the event loop; after ``close()`` it is gone."""

    async def main() -> None:
        conn = await aio.connect(db)
        try:
            assert isinstance(conn, aiosqlite.Connection)
            assert isinstance(conn, aio.Connection)
            assert isinstance(conn.resilient, ResilientConnection)
            assert conn.journal_mode == "wal"
            assert conn.journal_mode_reason
            assert conn.pragmas["journal_mode"] == "wal"
            assert conn.timeout == 30
            assert not conn.read_only
            assert conn.settings is sqlite_resilient.DEFAULT_SETTINGS
            assert conn.database_path == str(db)
            assert conn.filesystem is not None
            assert conn.lock_stats.waits == 0

            await conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
            await conn.commit()
            async with conn.execute("SELECT x FROM t ORDER BY x") as cursor:
                assert await cursor.fetchone() == (1,)
                assert list(await cursor.fetchall()) == [(2,), (3,)]
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT count(*) FROM t")
                assert await cursor.fetchone() == (3,)
            assert [row async for row in await conn.execute("SELECT x FROM t ORDER BY x")] == [(1,), (2,), (3,)]
            assert await fetchall(conn, "PRAGMA busy_timeout") == [(30_000,)]
            assert await conn.run_sync(lambda c, n: c.execute("SELECT ?", (n,)).fetchone(), 7) == (7,)
            assert (await conn.checkpoint()).complete
        finally:
            await conn.close()
        with pytest.raises(ValueError, match="no active connection"):
            conn.resilient  # noqa: B018 - the access is the check

    run(main())
    assert rows(db) == [(1,), (2,), (3,)]


def test_async_context_manager(db: Path) -> None:
    """``async with aio.connect(...)`` yields the opened connection and closes it at the end;
    an uncommitted implicit transaction of the legacy mode is not committed by closing."""

    async def main() -> aio.Connection:
        async with aio.connect(db) as conn:
            assert isinstance(conn, aio.Connection)
            await conn.execute("INSERT INTO t VALUES ('committed')")
            await conn.commit()
            await conn.execute("INSERT INTO t VALUES ('pending')")
            assert in_transaction(conn)
        return conn

    conn = run(main())
    with pytest.raises(ValueError, match="no active connection"):
        conn.resilient  # noqa: B018 - the access is the check
    assert rows(db) == [("committed",)]


def test_connect_errors_are_raised_when_awaited(tmp_path: Path) -> None:
    """Errors of ``connect()`` (a bad pragma; a read-only open of a missing file) are
    raised by ``await``, as the library's and SQLite's own; nothing is created."""

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="synchronous"):
            await aio.connect(tmp_path / "a.db", pragmas={"synchronous": "sometimes"})
        with pytest.raises(sqlite3.OperationalError, match=r"missing\.db"):
            await aio.connect(tmp_path / "missing.db", read_only=True)

    run(main())
    assert not (tmp_path / "a.db").exists()
    assert not (tmp_path / "missing.db").exists()


# -- transactions --------------------------------------------------------------------------


def test_transaction_commits_rolls_back_and_nests(db: Path) -> None:
    """``async with conn.transaction()``: COMMIT on success; ROLLBACK and the same error
    re-raised on failure; an inner block is a SAVEPOINT whose error rolls back only what it
    did; BEGIN IMMEDIATE takes the write lock at the start."""

    class Boom(Exception):
        pass

    async def main() -> None:
        async with opened(db) as conn:
            async with conn.transaction() as same:
                assert same is conn
                assert in_transaction(conn)
                with (
                    contextlib.closing(sqlite3.connect(db, timeout=0)) as other,
                    pytest.raises(sqlite3.OperationalError, match="locked"),
                ):
                    other.execute("BEGIN IMMEDIATE")  # IMMEDIATE: the write lock is ours already
                await conn.execute("INSERT INTO t VALUES ('one')")
            assert not in_transaction(conn)
            assert rows(db) == [("one",)]

            boom = Boom("from the block")

            async def fail(value: str) -> None:
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (?)", (value,))
                    raise boom

            with pytest.raises(Boom) as caught:
                await fail("two")
            assert caught.value is boom
            assert not in_transaction(conn)
            assert rows(db) == [("one",)]

            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES ('outer')")
                with pytest.raises(Boom):
                    await fail("inner")
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES ('kept')")
                assert rows(db) == [("one",)]  # nothing committed before the outer block ends
            assert not in_transaction(conn)
            with pytest.raises(ConfigurationError, match="mode"):
                conn.transaction("sometimes")  # type: ignore[arg-type]

    run(main())
    assert rows(db) == [("kept",), ("one",), ("outer",)]


def test_statement_in_transaction_is_not_retried_singly(db: Path, hook: Recorder) -> None:
    """Another connection commits between a deferred transaction's read and its write: the
    write fails at once with SQLITE_BUSY_SNAPSHOT (not after the 30 s budget, not as
    DatabaseLockedError), the block rolls back, and no retry was scheduled."""

    async def main() -> None:
        async with opened(db) as conn:

            async def read_then_write() -> None:
                async with conn.transaction("deferred"):
                    await fetchall(conn, "SELECT n FROM counter")
                    commit_elsewhere(db, "UPDATE counter SET n = n + 100")
                    await conn.execute("UPDATE counter SET n = 1")

            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError) as caught:
                await read_then_write()
            assert time.monotonic() - started < 5
            assert not isinstance(caught.value, DatabaseLockedError)
            assert_busy_snapshot(caught.value)
            assert not in_transaction(conn)

    run(main())
    assert counter(db) == 100
    assert hook.named(RETRY_SCHEDULED) == []


def test_cancelled_begin_ends_its_transaction(db: Path, lock_holder: StartLockHolder, hook: Recorder) -> None:
    """A task cancelled while its ``transaction()`` waits for the write lock (held by
    another process) ends at once; the BEGIN that the worker thread still completes once
    the lock is free is rolled back right after, so the connection is not left holding the
    write lock."""
    holder = lock_holder(db, "IMMEDIATE")
    waiting = threading.Event()
    hook.on_event = lambda event: waiting.set() if event.name == RETRY_SCHEDULED else None

    async def main() -> None:
        # busy_timeout 0: the library waits (and says so in a retry event), not SQLite
        async with opened(db, pragmas={"busy_timeout": 0}) as conn:

            async def write() -> None:
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES ('cancelled')")

            task = asyncio.ensure_future(write())
            assert await asyncio.to_thread(waiting.wait, WAIT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)  # at once: the lock is still held
            await asyncio.to_thread(holder.release)
            assert await fetchall(conn, "SELECT count(*) FROM t") == [(0,)]  # queued after the rollback
            assert not in_transaction(conn)
            with contextlib.closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")  # the write lock is free
                other.execute("ROLLBACK")
            async with conn.transaction():  # and so is the write queue
                await conn.execute("INSERT INTO t VALUES ('after')")

    run(main())
    assert rows(db) == [("after",)]


# -- read-only connections -----------------------------------------------------------------


def test_read_only_connection_reads_and_refuses_writes(db: Path) -> None:
    """``read_only=True``: reads work and see later commits of writers; a transaction
    defaults to a deferred snapshot; a write is refused by SQLite; the budget is 5 s."""

    async def main() -> None:
        async with opened(db, read_only=True) as reader, opened(db) as writer:
            assert reader.read_only
            assert reader.timeout == 5
            assert await fetchall(reader, "SELECT count(*) FROM t") == [(0,)]
            async with writer.transaction():
                await writer.execute("INSERT INTO t VALUES (1)")
            assert await fetchall(reader, "SELECT count(*) FROM t") == [(1,)]
            async with reader.transaction():  # deferred: a snapshot for several reads
                assert await fetchall(reader, "SELECT count(*) FROM t") == [(1,)]
                commit_elsewhere(db, "INSERT INTO t VALUES (3)")
                assert await fetchall(reader, "SELECT count(*) FROM t") == [(1,)]
            assert await fetchall(reader, "SELECT count(*) FROM t") == [(2,)]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.execute("INSERT INTO t VALUES (2)")

    run(main())
    assert rows(db) == [(1,), (3,)]


# -- @retry_on_lock on coroutines ----------------------------------------------------------


def assert_busy_snapshot(error: BaseException | None) -> None:
    """*error* is SQLite's lock error of a stale snapshot (by name where Python gives one)."""
    assert error is not None
    assert is_lock_error(error)
    if HAS_ERROR_CODES:
        assert getattr(error, "sqlite_errorname", None) == "SQLITE_BUSY_SNAPSHOT"


def test_busy_snapshot_reruns_the_whole_coroutine(db: Path, hook: Recorder) -> None:
    """A decorated coroutine's deferred read-then-write meets SQLITE_BUSY_SNAPSHOT (another
    connection committed in between): the whole coroutine is re-run, reads included, and
    its second attempt succeeds; the retry is the coroutine's, not the statement's."""
    calls = 0

    async def main() -> int:
        async with opened(db) as conn:

            @retry_on_lock
            async def bump() -> int:
                nonlocal calls
                calls += 1
                async with conn.transaction("deferred"):
                    ((value,),) = await fetchall(conn, "SELECT n FROM counter")
                    if calls == 1:
                        commit_elsewhere(db, "UPDATE counter SET n = n + 100")
                    await conn.execute("UPDATE counter SET n = ?", (value + 1,))
                return int(value) + 1

            result = await bump()
            assert not in_transaction(conn)
            assert conn.lock_stats.retries == 1
            return result

    assert run(main()) == 101
    assert calls == 2
    assert counter(db) == 101
    (retry,) = hook.named(RETRY_SCHEDULED)
    assert retry.operation.endswith("bump")
    assert_busy_snapshot(retry.error)
    assert hook.named(LOCK_ERROR) == []


@pytest.mark.parametrize(
    "control",
    [
        "legacy",
        pytest.param(
            "autocommit-false",
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit is new in Python 3.12"),
        ),
    ],
)
def test_failed_attempt_is_rolled_back_in_the_worker_thread(db: Path, control: str) -> None:
    """Without ``transaction()``, an INSERT opens an implicit transaction (legacy mode) or
    runs in the one Python keeps open (``autocommit=False``); a later statement then fails
    with a real lock error (SQLITE_LOCKED: DROP TABLE under a pending SELECT of the same
    connection). The decorator rolls the INSERT back before the re-run, in the connection's
    worker thread (sqlite3 refuses a ROLLBACK from the event loop's): the re-run finds no
    row (and, in the legacy mode, no transaction), and after success the row is there once."""
    legacy = control == "legacy"
    kwargs: dict[str, Any] = {} if legacy else {"autocommit": False}
    seen_at_start: list[tuple[bool, int]] = []
    errors: list[BaseException] = []

    async def main() -> None:
        async with opened(db, **kwargs) as conn:

            @retry_on_lock
            async def insert_then_drop() -> None:
                ((count,),) = await fetchall(conn, "SELECT count(*) FROM t")
                seen_at_start.append((conn.in_transaction, count))
                await conn.execute("INSERT INTO t VALUES (1)")
                if len(seen_at_start) == 1:
                    async with conn.execute("SELECT x FROM seed") as pending:
                        await pending.fetchone()
                        try:
                            await conn.execute("DROP TABLE doomed")
                        except sqlite3.OperationalError as error:
                            errors.append(error)
                            raise
                await conn.commit()

            await insert_then_drop()
            assert in_transaction(conn) is not legacy

    run(main())
    (error,) = errors
    assert is_lock_error(error)
    if HAS_ERROR_CODES:
        assert getattr(error, "sqlite_errorname", None) == "SQLITE_LOCKED"
    assert seen_at_start == [(not legacy, 0)] * 2
    assert rows(db) == [(1,)]
    assert query(db, "SELECT count(*) FROM doomed") == [(0,)]


def test_failed_attempt_rolls_back_every_connection_it_used(db: Path, tmp_path: Path, hook: Recorder) -> None:
    """One attempt uses two aio connections (two worker threads): it inserts a row on the
    first (an implicit transaction, the write lock held), then its deferred read-then-write
    on the second meets SQLITE_BUSY_SNAPSHOT. Both transactions are rolled back before the
    re-run, each in its own worker thread: the row is there once and the counter was
    bumped once."""
    other_db = make_counter_database(tmp_path / "other.db")
    calls = 0

    async def main() -> None:
        async with opened(other_db) as first, opened(db, isolation_level=None) as second:

            @retry_on_lock
            async def both() -> None:
                nonlocal calls
                calls += 1
                assert not in_transaction(first)
                assert not in_transaction(second)
                await first.execute("INSERT INTO t VALUES (1)")
                await second.execute("BEGIN DEFERRED")
                ((value,),) = await fetchall(second, "SELECT n FROM counter")
                if calls == 1:
                    commit_elsewhere(db, "UPDATE counter SET n = n + 100")
                await second.execute("UPDATE counter SET n = ?", (value + 1,))
                await second.execute("COMMIT")
                await first.commit()

            await both()

    run(main())
    assert calls == 2
    assert rows(other_db) == [(1,)]
    assert counter(db) == 101
    (retry,) = hook.named(RETRY_SCHEDULED)
    assert_busy_snapshot(retry.error)


def test_outer_transaction_is_left_to_its_owner(db: Path, hook: Recorder) -> None:
    """A transaction open before the decorated call (with a read snapshot) is not the
    decorator's: the decorated write's SQLITE_BUSY_SNAPSHOT propagates at once (one call,
    no DatabaseLockedError), the transaction is neither rolled back nor committed, and its
    owner rolls it back."""
    calls = 0

    async def main() -> None:
        async with opened(db, isolation_level=None) as conn:
            await conn.execute("CREATE TEMP TABLE scratch(x)")
            await conn.execute("BEGIN")
            await fetchall(conn, "SELECT count(*) FROM t")  # the snapshot
            await conn.execute("INSERT INTO scratch VALUES ('outer')")  # the owner's pending work
            commit_elsewhere(db, "INSERT INTO t VALUES (1)")

            @retry_on_lock
            async def write() -> None:
                nonlocal calls
                calls += 1
                async with conn.transaction():  # a SAVEPOINT in the owner's transaction
                    await conn.execute("INSERT INTO t VALUES (2)")

            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError) as caught:
                await write()
            assert time.monotonic() - started < 5
            assert not isinstance(caught.value, DatabaseLockedError)
            assert_busy_snapshot(caught.value)
            assert in_transaction(conn)
            assert await fetchall(conn, "SELECT x FROM scratch") == [("outer",)]  # not rolled back
            await conn.execute("ROLLBACK")
            assert await fetchall(conn, "SELECT x FROM scratch") == []  # and it was not committed

    run(main())
    assert calls == 1
    assert hook.named(RETRY_SCHEDULED) == []
    assert rows(db) == [(1,)]


def test_busy_handler_keeps_to_the_budget_and_is_restored(db: Path, lock_holder: StartLockHolder) -> None:
    """Inside a decorated coroutine SQLite's busy handler of the connection (30 s) is
    lowered to what is left of the budget: a write lock held by another process ends in
    DatabaseLockedError after about the 1 s budget. After every decorated call, failed or
    not, the connection has its own busy timeout back (restored in its worker thread)."""
    holder = lock_holder(db, "IMMEDIATE")

    async def main() -> None:
        async with opened(db) as conn:

            @retry_on_lock(timeout=5)
            async def busy_timeout() -> int:
                ((milliseconds,),) = await fetchall(conn, "PRAGMA busy_timeout")
                return int(milliseconds)

            @retry_on_lock(timeout=1)
            async def insert() -> None:
                await conn.execute("INSERT INTO t VALUES (1)")
                await conn.commit()

            assert 4000 < await busy_timeout() <= 5000
            assert await fetchall(conn, "PRAGMA busy_timeout") == [(30_000,)]

            started = time.monotonic()
            with pytest.raises(DatabaseLockedError) as caught:
                await insert()
            elapsed = time.monotonic() - started
            assert 0.5 < elapsed < 1 + 2
            assert caught.value.budget == 1
            assert is_lock_error(caught.value.__cause__)  # type: ignore[arg-type]
            assert not in_transaction(conn)
            assert await fetchall(conn, "PRAGMA busy_timeout") == [(30_000,)]
            await asyncio.to_thread(holder.release)
            await insert()

    run(main())
    assert rows(db) == [(1,)]


def test_decorated_sync_function_in_the_worker_is_nested(db: Path, hook: Recorder) -> None:
    """A sync function decorated with ``@retry_on_lock`` run by ``run_sync`` inside a
    decorated coroutine is nested in the coroutine's call: its lock error is retried by the
    coroutine's decorator (the outermost), which re-runs the coroutine."""
    outer_calls = inner_calls = 0

    @retry_on_lock
    def bump(conn: ResilientConnection) -> int:
        nonlocal inner_calls
        inner_calls += 1
        with conn.transaction("deferred"):
            (value,) = conn.execute("SELECT n FROM counter").fetchone()
            if inner_calls == 1:
                commit_elsewhere(db, "UPDATE counter SET n = n + 100")
            conn.execute("UPDATE counter SET n = ?", (value + 1,))
        return int(value) + 1

    async def main() -> int:
        async with opened(db) as conn:

            @retry_on_lock
            async def outer() -> int:
                nonlocal outer_calls
                outer_calls += 1
                return await conn.run_sync(bump)

            return await outer()

    assert run(main()) == 101
    assert (outer_calls, inner_calls) == (2, 2)
    (retry,) = hook.named(RETRY_SCHEDULED)
    assert retry.operation.endswith("outer")


# -- concurrency: tasks, worker threads, processes -----------------------------------------

TASKS = 8
INCREMENTS = 20


@pytest.mark.parametrize("mode", ["deferred", "immediate"])
def test_concurrent_tasks_wait_out_a_lock_holding_process(
    db: Path, lock_holder: StartLockHolder, hook: Recorder, mode: sqlite_resilient.TransactionMode
) -> None:
    """8 tasks, each with its own aio connection, do 20 read-modify-write increments each
    through ``@retry_on_lock`` and ``transaction(mode)``, while another process holds the
    write lock until every task has started and a lock wait was seen. The counter ends
    exactly at 160 and no exception reached a task. In deferred mode the tasks also
    collide with each other (SQLITE_BUSY_SNAPSHOT included) and are re-run whole."""
    holder = lock_holder(db, "IMMEDIATE")
    started = 0
    waited = threading.Event()
    hook.on_event = lambda event: waited.set() if event.name in (RETRY_SCHEDULED, WRITER_QUEUED) else None
    errors: list[str] = []

    @retry_on_lock
    async def increment(conn: aio.Connection) -> None:
        async with conn.transaction(mode):
            ((value,),) = await fetchall(conn, "SELECT n FROM counter")
            await conn.execute("UPDATE counter SET n = ?", (value + 1,))

    async def task(conn: aio.Connection, all_started: asyncio.Event) -> None:
        nonlocal started
        for number in range(INCREMENTS):
            if number == 0:
                started += 1
                if started == TASKS:
                    all_started.set()
            try:
                await increment(conn)
            except Exception as error:  # reported below
                errors.append(f"{type(error).__name__}: {error}")

    async def main() -> None:
        all_started = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(opened(db)) for _ in range(TASKS)]
            tasks = asyncio.gather(*(task(conn, all_started) for conn in connections))
            try:
                await asyncio.wait_for(all_started.wait(), WAIT)
                assert await asyncio.to_thread(waited.wait, WAIT), "no task met the held lock"
                await asyncio.to_thread(holder.release)
            finally:
                await asyncio.wait_for(tasks, 60)
            stats = [conn.lock_stats for conn in connections]
        assert sum(stat.waits for stat in stats) > 0
        assert sum(stat.surfaced for stat in stats) == 0

    run(main())
    assert errors == []
    assert counter(db) == TASKS * INCREMENTS
    assert hook.named(LOCK_ERROR) == []
    if mode == "deferred":
        retried = [getattr(event.error, "sqlite_errorname", "") for event in hook.named(RETRY_SCHEDULED)]
        assert retried, "the deferred writers never collided"
        if HAS_ERROR_CODES:
            assert "SQLITE_BUSY_SNAPSHOT" in retried


PROCESSES = 2
PROCESS_TASKS = 4
PROCESS_INCREMENTS = 25


@pytest.mark.parametrize("mode", ["deferred", "immediate"])
def test_processes_of_concurrent_tasks_lose_no_increment(db: Path, mode: str) -> None:
    """2 processes x 4 tasks (each its own aio connection) x 25 read-modify-write
    increments, started together: the counter ends exactly at 200 and no exception reached
    a task."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(AIO_WORKERS),
                "increment",
                str(db),
                str(PROCESS_TASKS),
                str(PROCESS_INCREMENTS),
                mode,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for process in processes:  # all set up: "go" starts them at the same time
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if line != "ready":
                _out, err = process.communicate(timeout=HELPER_TIMEOUT)
                raise AssertionError(f"aio worker did not start: {line!r} {err}")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=HELPER_TIMEOUT * 2)
            assert process.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=HELPER_TIMEOUT)
    assert [report["errors"] for report in reports] == [[]] * PROCESSES
    assert [report["done"] for report in reports] == [PROCESS_TASKS * PROCESS_INCREMENTS] * PROCESSES
    assert counter(db) == PROCESSES * PROCESS_TASKS * PROCESS_INCREMENTS


# -- the optional dependency ---------------------------------------------------------------


def test_import_without_aiosqlite() -> None:
    """``import sqlite_resilient`` does not import aiosqlite; without aiosqlite,
    ``import sqlite_resilient.aio`` raises ModuleNotFoundError (an ImportError) that says
    how to install the extra."""
    script = """
import sys
import sqlite_resilient
assert "aiosqlite" not in sys.modules, "import sqlite_resilient imported aiosqlite"
sys.modules["aiosqlite"] = None  # as if it were not installed
try:
    import sqlite_resilient.aio
except ImportError as error:
    print(type(error).__name__, error.name, error, sep="|")
else:
    print("imported")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    kind, name, message = result.stdout.strip().split("|")
    assert kind == "ModuleNotFoundError"
    assert name == "aiosqlite"
    assert "pip install 'sqlite_resilient[aio]'" in message
