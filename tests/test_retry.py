"""``@retry_on_lock``: the whole function is re-run on a real lock error, and only then.

Lock errors are real: another process holds the write lock (``lock_holder`` or the
``increment`` helper), another connection commits between a deferred transaction's read
and its write (``SQLITE_BUSY_SNAPSHOT``), or a connection drops a table under its own
pending statement (``SQLITE_LOCKED``). Hooks (``instrumentation.set_hooks``) show every
retry and let a test act when one is scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Callable, NamedTuple, TypeVar

import pytest
from conftest import (
    HELPER_TIMEOUT,
    Recorder,
    StartLockHolder,
    commit_elsewhere,
    counter,
    gate_is_free,
    helper_command,
    make_counter_database,
    query,
    rows,
    run_in_thread,
)

import sqlite_resilient
from sqlite_resilient import (
    DatabaseLockedError,
    ResilientConnection,
    db_transaction,
    is_lock_error,
    is_testing,
    retry_on_lock,
    set_testing,
)
from sqlite_resilient.instrumentation import LockEvent

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
LOCK_WAITED = "sqlite_resilient.lock_waited"
LOCK_ERROR = "sqlite_resilient.lock_error"

HAS_ERROR_CODES = sys.version_info >= (3, 11)
"""SQLite's own errors carry ``sqlite_errorname`` from Python 3.11 on."""

ConnectionT = TypeVar("ConnectionT", bound=sqlite3.Connection)
CloseLater = Callable[[ConnectionT], ConnectionT]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """``set_testing(True)`` for the test, ``set_testing(False)`` after."""
    set_testing(True)
    try:
        yield
    finally:
        set_testing(False)


@pytest.fixture
def close_later() -> Iterator[CloseLater[Any]]:
    """Register a connection to be closed at teardown; returns it."""
    with contextlib.ExitStack() as stack:

        def register(conn: ConnectionT) -> ConnectionT:
            stack.callback(conn.close)
            return conn

        yield register


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_counter_database(tmp_path / "app.db")


def bump_counter(conn: sqlite3.Connection, path: Path, *, interfere: bool) -> int:
    """One read-modify-write of ``counter.n`` in a deferred transaction; return the new value.

    With *interfere*, another connection adds 100 between the read and the write, so that
    the write fails with ``SQLITE_BUSY_SNAPSHOT`` (and the transaction is rolled back).
    """
    with db_transaction(conn, mode="deferred"):
        (value,) = conn.execute("SELECT n FROM counter").fetchone()
        if interfere:
            commit_elsewhere(path, "UPDATE counter SET n = n + 100")
        conn.execute("UPDATE counter SET n = ?", (value + 1,))
    return int(value) + 1


def assert_busy_snapshot(error: BaseException | None) -> None:
    """*error* is SQLite's lock error of a stale snapshot (by name where Python gives one)."""
    assert error is not None
    assert is_lock_error(error)
    if HAS_ERROR_CODES:
        assert getattr(error, "sqlite_errorname", None) == "SQLITE_BUSY_SNAPSHOT"


# -- many writer processes -----------------------------------------------------------------

PROCESSES = 4
INCREMENTS = 150


def run_incrementers(path: Path, mode: str) -> list[dict[str, Any]]:
    """Run ``PROCESSES`` ``increment`` helpers of *mode* together; return their reports."""
    processes = [
        subprocess.Popen(
            helper_command("increment", str(path), str(INCREMENTS), mode),
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
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=HELPER_TIMEOUT)
            assert process.returncode == 0, err
            reports.append(json.loads(out))
        return reports
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=HELPER_TIMEOUT)


@pytest.mark.parametrize("mode", ["deferred", "immediate"])
def test_writer_processes_lose_no_increment(db: Path, mode: str) -> None:
    """4 processes x 150 read-modify-write increments through ``@retry_on_lock`` and
    ``db_transaction``: the counter ends exactly at 600 and no exception reached a worker.
    In deferred mode the writers really collide and the decorator re-runs the reads with
    the writes. (Which lock error a collision raises, ``SQLITE_BUSY`` or
    ``SQLITE_BUSY_SNAPSHOT``, depends on the scheduling: the snapshot case is proven
    deterministically by ``test_busy_snapshot_reruns_the_whole_function``.)"""
    reports = run_incrementers(db, mode)
    assert [report["errors"] for report in reports] == [[]] * PROCESSES
    assert [report["done"] for report in reports] == [INCREMENTS] * PROCESSES
    assert counter(db) == PROCESSES * INCREMENTS
    if mode == "deferred":
        retried = [name for report in reports for name in report["retries"]]
        assert retried, "the deferred writers never collided"


def test_plain_sqlite3_writer_processes_fail_increments(db: Path) -> None:
    """The same deferred read-modify-write with plain ``sqlite3`` does not reach the exact
    count without errors: increments fail with "database is locked" (whatever the
    timeout), and only the successful ones are counted."""
    reports = run_incrementers(db, "plain-deferred")
    errors = [error for report in reports for error in report["errors"]]
    done = sum(report["done"] for report in reports)
    assert errors
    assert all(error == "OperationalError: database is locked" for error in errors), set(errors)
    assert counter(db) == done < PROCESSES * INCREMENTS


# -- SQLITE_BUSY_SNAPSHOT ------------------------------------------------------------------


def test_busy_snapshot_reruns_the_whole_function(
    db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection]
) -> None:
    """Another connection commits between a deferred transaction's read and write: the
    write fails with SQLITE_BUSY_SNAPSHOT, the decorator rolls back and re-runs the whole
    function, whose second attempt reads the new value and succeeds."""
    conn = close_later(sqlite_resilient.connect(db))
    calls = 0

    @retry_on_lock
    def bump() -> int:
        nonlocal calls
        calls += 1
        return bump_counter(conn, db, interfere=calls == 1)

    assert bump() == 101
    assert calls == 2
    assert not conn.in_transaction
    assert counter(db) == 101
    (retry,) = hook.named(RETRY_SCHEDULED)
    assert retry.operation == bump.__qualname__
    assert retry.attempt == 1
    assert retry.database == conn.database_path
    assert_busy_snapshot(retry.error)
    (waited,) = hook.named(LOCK_WAITED)
    assert waited.attempt == 2
    assert hook.named(LOCK_ERROR) == []
    stats = conn.lock_stats
    assert stats.retries == 1
    assert stats.surfaced == 0


# -- the time budget -----------------------------------------------------------------------


def test_spent_budget_raises_database_locked_error(
    db: Path, lock_holder: StartLockHolder, hook: Recorder, close_later: CloseLater[ResilientConnection]
) -> None:
    """A write lock held by another process for longer than the decorator's 1 s budget ends
    in DatabaseLockedError after about 1 s, although the connection's own timeout is 30 s;
    its message gives attempts, seconds and the budget, its cause is a lock error."""
    lock_holder(db, "IMMEDIATE")
    conn = close_later(sqlite_resilient.connect(db))
    assert conn.timeout == 30
    calls = 0

    @retry_on_lock(timeout=1)
    def insert() -> None:
        nonlocal calls
        calls += 1
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()

    started = time.monotonic()
    with pytest.raises(DatabaseLockedError) as caught:
        insert()
    elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 1 + 2
    error = caught.value
    assert isinstance(error, sqlite3.OperationalError)
    assert error.budget == 1
    assert 0.5 < error.waited <= elapsed
    assert error.attempts == calls >= 1
    message = str(error)
    assert f"after {error.attempts} attempt" in message
    assert re.search(r"over \d+\.\d+ s", message), message
    assert "budget 1 s" in message
    assert error.__cause__ is not None
    assert is_lock_error(error.__cause__)
    assert not conn.in_transaction
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (30_000,)  # its own again
    (surfaced,) = hook.named(LOCK_ERROR)
    assert surfaced.error is error
    assert rows(db) == []


def test_spent_budget_cause_is_the_sqlite_error(
    db: Path, lock_holder: StartLockHolder, close_later: CloseLater[ResilientConnection]
) -> None:
    """The DatabaseLockedError of a spent budget has the last *SQLite* error as
    ``__cause__``, not another DatabaseLockedError wrapping it."""
    lock_holder(db, "IMMEDIATE")
    conn = close_later(sqlite_resilient.connect(db))

    @retry_on_lock(timeout=0.3)
    def insert() -> None:
        conn.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(DatabaseLockedError) as caught:
        insert()
    assert is_lock_error(caught.value.__cause__)  # type: ignore[arg-type]
    assert not isinstance(caught.value.__cause__, DatabaseLockedError)


@pytest.mark.parametrize("where", ["statement", "transaction"])
def test_lock_released_mid_wait_lets_the_call_succeed_once(
    db: Path,
    lock_holder: StartLockHolder,
    hook: Recorder,
    close_later: CloseLater[ResilientConnection],
    where: str,
) -> None:
    """The holder releases its write lock when the first retry is scheduled: the decorated
    INSERT then succeeds, and its row is there exactly once.

    ``statement``: the INSERT's implicit ``BEGIN IMMEDIATE`` meets the lock (SQLite's busy
    handler off, so the library waits). ``transaction``: the INSERT follows a read in a
    deferred transaction, fails at once, and the decorator re-runs the function.
    """
    holder = lock_holder(db, "IMMEDIATE")
    conn = close_later(sqlite_resilient.connect(db, pragmas={"busy_timeout": 0}))
    released: list[LockEvent] = []

    def release(event: LockEvent) -> None:
        if not released:
            released.append(event)
            holder.release()

    hook.on_retry = release
    calls = 0

    @retry_on_lock(timeout=20)
    def insert() -> None:
        nonlocal calls
        calls += 1
        if where == "statement":
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
            return
        with db_transaction(conn, mode="deferred"):
            conn.execute("SELECT count(*) FROM t").fetchone()
            conn.execute("INSERT INTO t VALUES (1)")

    insert()
    assert hook.failures == []
    assert len(released) == 1
    if where == "statement":
        assert calls == 1
        assert released[0].operation == "execute"
    else:
        assert calls == 2
        assert released[0].operation == insert.__qualname__
    assert is_lock_error(released[0].error)  # type: ignore[arg-type]
    assert rows(db) == [(1,)]
    assert not conn.in_transaction


# -- a transaction open before the call ----------------------------------------------------


@pytest.mark.parametrize("how", ["resilient-in-closure", "resilient-argument", "plain-argument"])
def test_outer_transaction_is_left_to_its_owner(
    db: Path, hook: Recorder, close_later: CloseLater[sqlite3.Connection], how: str
) -> None:
    """A transaction open before the call (with a read snapshot) is not the decorator's:
    the decorated write's SQLITE_BUSY_SNAPSHOT propagates at once (one call, no
    DatabaseLockedError, well within the 30 s budget), the transaction is neither rolled
    back nor committed, and its owner rolls it back. The same whether the function reaches
    the connection through a closure or an argument, a resilient or a plain one."""
    opener = sqlite3.connect if how == "plain-argument" else sqlite_resilient.connect
    conn = close_later(opener(db, isolation_level=None))
    conn.execute("CREATE TEMP TABLE scratch(x)")
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()  # the snapshot
    conn.execute("INSERT INTO scratch VALUES ('outer')")  # the owner's pending work
    commit_elsewhere(db, "INSERT INTO t VALUES (1)")
    calls = 0

    @retry_on_lock
    def write(target: sqlite3.Connection) -> None:
        nonlocal calls
        calls += 1
        target.execute("INSERT INTO t VALUES (2)")

    @retry_on_lock
    def write_in_closure() -> None:
        nonlocal calls
        calls += 1
        conn.execute("INSERT INTO t VALUES (2)")

    call: Callable[[], None] = write_in_closure if how == "resilient-in-closure" else lambda: write(conn)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError) as caught:
        call()
    assert time.monotonic() - started < 5
    assert calls == 1
    assert not isinstance(caught.value, DatabaseLockedError)
    assert_busy_snapshot(caught.value)
    assert hook.named(RETRY_SCHEDULED) == []
    assert conn.in_transaction
    assert conn.execute("SELECT x FROM scratch").fetchall() == [("outer",)]  # not rolled back
    conn.execute("ROLLBACK")
    assert not conn.in_transaction
    assert conn.execute("SELECT x FROM scratch").fetchall() == []  # and it was not committed
    assert rows(db) == [(1,)]


# -- nested decorated calls ----------------------------------------------------------------


def test_only_the_outermost_decorated_call_retries(db: Path, close_later: CloseLater[ResilientConnection]) -> None:
    """A decorated function called by another: the inner body's real lock error
    (SQLITE_BUSY_SNAPSHOT on its first run) is not retried by the inner decorator; it
    reaches the outer one, which re-runs the whole outer function, and that succeeds."""
    conn = close_later(sqlite_resilient.connect(db))
    inner_calls = outer_calls = 0
    inner_errors: list[BaseException] = []

    @retry_on_lock
    def inner() -> int:
        nonlocal inner_calls
        inner_calls += 1
        try:
            return bump_counter(conn, db, interfere=inner_calls == 1)
        except sqlite3.OperationalError as error:
            inner_errors.append(error)
            raise

    @retry_on_lock
    def outer() -> int:
        nonlocal outer_calls
        outer_calls += 1
        return inner() * 10

    assert outer() == 1010
    assert outer_calls == 2
    assert inner_calls == outer_calls
    (error,) = inner_errors
    assert_busy_snapshot(error)
    assert counter(db) == 101


# -- async ---------------------------------------------------------------------------------


def test_async_function_is_retried(db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection]) -> None:
    """An ``async def`` decorated function that meets SQLITE_BUSY_SNAPSHOT is re-run and
    succeeds."""
    conn = close_later(sqlite_resilient.connect(db))
    calls = 0

    @retry_on_lock
    async def bump() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return bump_counter(conn, db, interfere=calls == 1)

    assert asyncio.run(bump()) == 101
    assert calls == 2
    assert not conn.in_transaction
    assert counter(db) == 101
    (retry,) = hook.named(RETRY_SCHEDULED)
    assert_busy_snapshot(retry.error)


def test_concurrent_tasks_have_their_own_retry_scope(
    db: Path, tmp_path: Path, close_later: CloseLater[ResilientConnection]
) -> None:
    """Two tasks run decorated functions at once. Task A fails once with a real lock
    error while task B has a transaction open (on another database): A is re-run alone,
    and A's failed attempt does not roll back B's transaction, which commits; B runs once."""
    other_db = make_counter_database(tmp_path / "other.db")
    conn_a = close_later(sqlite_resilient.connect(db))
    conn_b = close_later(sqlite_resilient.connect(other_db))
    calls = {"a": 0, "b": 0}

    async def main() -> list[int | None]:
        b_in_transaction = asyncio.Event()
        a_rerun = asyncio.Event()

        @retry_on_lock
        async def task_a() -> int:
            calls["a"] += 1
            if calls["a"] == 1:
                await asyncio.wait_for(b_in_transaction.wait(), 10)
            else:
                a_rerun.set()
            return bump_counter(conn_a, db, interfere=calls["a"] == 1)

        @retry_on_lock
        async def task_b() -> None:
            calls["b"] += 1
            with db_transaction(conn_b):
                conn_b.execute("INSERT INTO t VALUES ('b')")
                b_in_transaction.set()
                await asyncio.wait_for(a_rerun.wait(), 10)

        return list(await asyncio.gather(task_a(), task_b()))

    assert asyncio.run(main()) == [101, None]
    assert calls == {"a": 2, "b": 1}
    assert counter(db) == 101
    assert rows(other_db) == [("b",)]


def test_wraps_keeps_metadata() -> None:
    """The decorated function keeps ``__name__``, ``__doc__`` and ``__wrapped__`` (sync and
    async, with and without arguments); an ``async def`` stays a coroutine function."""

    def sync_function() -> int:
        """Sync docstring."""
        return 1

    async def async_function() -> int:
        """Async docstring."""
        return 2

    for function in (sync_function, async_function):
        for decorated in (retry_on_lock(function), retry_on_lock(timeout=5, attempts=3)(function)):
            assert decorated.__name__ == function.__name__
            assert decorated.__qualname__ == function.__qualname__
            assert decorated.__doc__ == function.__doc__
            assert vars(decorated)["__wrapped__"] is function
            assert inspect.iscoroutinefunction(decorated) is (function is async_function)
    assert retry_on_lock(sync_function)() == 1
    assert asyncio.run(retry_on_lock(async_function)()) == 2


# -- errors that are not lock errors -------------------------------------------------------


class NonLockCase(NamedTuple):
    """How to provoke an error that must not be retried, and what it is."""

    prepare: Callable[[Path, pytest.FixtureRequest, CloseLater[Any]], Callable[[], object]]
    error: type[BaseException]
    match: str


def _no_such_table(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    conn = close_later(sqlite_resilient.connect(db))
    return lambda: conn.execute("SELECT * FROM missing")


def _constraint(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    conn = close_later(sqlite_resilient.connect(db))
    return lambda: conn.execute("INSERT INTO pk VALUES (1)")


def _read_only(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    conn = close_later(sqlite_resilient.connect(db, read_only=True))
    return lambda: conn.execute("INSERT INTO t VALUES (1)")


def _disk_full(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    tmpfs: Path = request.getfixturevalue("tmpfs_mount")
    conn = close_later(sqlite_resilient.connect(tmpfs / "full.db"))
    conn.execute("CREATE TABLE big(b)")
    conn.commit()

    def fill() -> None:
        conn.execute("INSERT INTO big VALUES (zeroblob(4 * 1024 * 1024))")
        conn.commit()  # WAL: the pages reach the file (and the full disk) at the latest here

    return fill


def _interrupted(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    conn = close_later(sqlite_resilient.connect(db))

    def interrupt() -> int:
        conn.interrupt()
        return 0

    conn.set_progress_handler(interrupt, 100)
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
    return lambda: conn.execute(endless).fetchone()


def _closed(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
    conn = sqlite_resilient.connect(db)
    conn.close()
    return lambda: conn.execute("SELECT 1")


def _raise(error: BaseException) -> Callable[[Path, pytest.FixtureRequest, CloseLater[Any]], Callable[[], object]]:
    def prepare(db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any]) -> Callable[[], object]:
        def fail() -> object:
            raise error

        return fail

    return prepare


NON_LOCK_CASES = {
    "no-such-table": NonLockCase(_no_such_table, sqlite3.OperationalError, "no such table"),
    "constraint": NonLockCase(_constraint, sqlite3.IntegrityError, "UNIQUE constraint failed"),
    "read-only": NonLockCase(_read_only, sqlite3.OperationalError, "readonly database"),
    "disk-full": NonLockCase(_disk_full, sqlite3.OperationalError, "database or disk is full"),
    "interrupted": NonLockCase(_interrupted, sqlite3.OperationalError, "interrupted"),
    "closed-connection": NonLockCase(_closed, sqlite3.ProgrammingError, "closed database"),
    "value-error": NonLockCase(_raise(ValueError("from user code")), ValueError, "from user code"),
    "keyboard-interrupt": NonLockCase(_raise(KeyboardInterrupt("stop")), KeyboardInterrupt, "stop"),
    "system-exit": NonLockCase(_raise(SystemExit("exit")), SystemExit, "exit"),
}


@pytest.mark.parametrize("case", list(NON_LOCK_CASES))
def test_non_lock_errors_are_never_retried(
    db: Path, request: pytest.FixtureRequest, close_later: CloseLater[Any], hook: Recorder, case: str
) -> None:
    """Errors other than lock errors (BaseExceptions included) propagate at once as the
    same object: the function is called once and no retry is scheduled."""
    spec = NON_LOCK_CASES[case]
    operation = spec.prepare(db, request, close_later)
    raised: list[BaseException] = []

    @retry_on_lock
    def call() -> None:
        try:
            operation()
        except BaseException as error:
            raised.append(error)
            raise

    with pytest.raises(spec.error, match=spec.match) as caught:
        call()
    assert len(raised) == 1
    assert caught.value is raised[0]
    assert not is_lock_error(caught.value)
    assert not isinstance(caught.value, DatabaseLockedError)
    assert hook.events == []


# -- what can be decorated, and with what --------------------------------------------------


def test_generator_functions_are_refused() -> None:
    """A generator (or async generator) function cannot be re-run: TypeError at decoration."""

    def numbers() -> Iterator[int]:
        yield 1

    async def async_numbers() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        retry_on_lock(numbers)
    with pytest.raises(TypeError, match="generator"):
        retry_on_lock(timeout=5)(numbers)
    with pytest.raises(TypeError, match="generator"):
        retry_on_lock(async_numbers)


@pytest.mark.parametrize("argument", [5, 2.5, "fast"])
def test_a_positional_argument_that_is_not_a_function_is_refused(argument: object) -> None:
    """``@retry_on_lock(5)`` is refused at once with a TypeError saying that ``timeout``
    (and ``attempts``) are keyword-only, not an AttributeError from inside."""
    with pytest.raises(TypeError, match=rf"keyword-only.*@retry_on_lock\(timeout={argument!r}\)"):
        retry_on_lock(argument)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", -1),
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("timeout", "1"),
        ("attempts", 0),
        ("attempts", -1),
        ("attempts", True),
        ("attempts", 1.5),
    ],
)
def test_invalid_arguments_raise_value_error(name: str, value: object) -> None:
    """An invalid ``timeout`` or ``attempts`` is refused with a ValueError naming it."""
    arguments: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        retry_on_lock(**arguments)


def test_attempts_caps_the_attempts(db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection]) -> None:
    """With ``attempts=2`` a function that meets a lock error every time is run exactly
    twice, then DatabaseLockedError says so, with SQLite's error as its cause."""
    conn = close_later(sqlite_resilient.connect(db))
    calls = 0

    @retry_on_lock(attempts=2)
    def bump() -> int:
        nonlocal calls
        calls += 1
        return bump_counter(conn, db, interfere=True)

    started = time.monotonic()
    with pytest.raises(DatabaseLockedError) as caught:
        bump()
    assert time.monotonic() - started < 5  # not the 30 s budget
    assert calls == 2
    error = caught.value
    assert error.attempts == 2
    assert "after 2 attempts" in str(error)
    assert_busy_snapshot(error.__cause__)
    if HAS_ERROR_CODES:
        assert vars(error)["sqlite_errorname"] == "SQLITE_BUSY_SNAPSHOT"
    assert len(hook.named(RETRY_SCHEDULED)) == 1
    assert not conn.in_transaction
    assert counter(db) == 200  # only the other connection's commits


# -- backoff and set_testing ---------------------------------------------------------------


def three_failures_then_success(conn: sqlite3.Connection, path: Path) -> Callable[[], int]:
    """A decorated function whose first three runs meet SQLITE_BUSY_SNAPSHOT."""
    calls = 0

    @retry_on_lock
    def bump() -> int:
        nonlocal calls
        calls += 1
        return bump_counter(conn, path, interfere=calls <= 3)

    return bump


@pytest.mark.usefixtures("no_backoff")
def test_set_testing_removes_the_backoff(
    db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection]
) -> None:
    """Under ``set_testing(True)`` retries are scheduled without any wait."""
    assert is_testing()
    conn = close_later(sqlite_resilient.connect(db))
    assert three_failures_then_success(conn, db)() == 301
    waits = [event.wait for event in hook.named(RETRY_SCHEDULED)]
    assert waits == [0, 0, 0]


def test_backoff_waits_are_short_and_jittered(
    db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection]
) -> None:
    """Without ``set_testing`` each retry waits a little: more than 0 and at most 0.1 s."""
    assert not is_testing()
    conn = close_later(sqlite_resilient.connect(db))
    assert three_failures_then_success(conn, db)() == 301
    waits = [event.wait for event in hook.named(RETRY_SCHEDULED)]
    assert len(waits) == 3
    assert all(0 < wait <= 0.1 for wait in waits), waits


# -- rollback of what a failed attempt opened ----------------------------------------------


@pytest.mark.parametrize("how", ["resilient-in-closure", "plain-argument"])
def test_failed_attempt_implicit_transaction_is_rolled_back(
    db: Path, close_later: CloseLater[sqlite3.Connection], how: str
) -> None:
    """Without db_transaction, an INSERT opens a legacy implicit transaction; a later
    statement then fails with a real lock error (SQLITE_LOCKED: DROP TABLE under a pending
    SELECT of the same connection). The decorator rolls the INSERT back before the re-run
    (which finds no transaction and no row), so after success the row is there once."""
    conn = close_later(sqlite3.connect(db) if how == "plain-argument" else sqlite_resilient.connect(db))
    assert conn.isolation_level is not None  # the legacy mode: implicit transactions
    seen_at_start: list[tuple[bool, int]] = []
    errors: list[BaseException] = []

    def insert_then_drop(target: sqlite3.Connection) -> None:
        seen_at_start.append((target.in_transaction, target.execute("SELECT count(*) FROM t").fetchone()[0]))
        target.execute("INSERT INTO t VALUES (1)")
        if len(seen_at_start) == 1:
            pending = target.execute("SELECT x FROM seed")
            pending.fetchone()
            try:
                target.execute("DROP TABLE doomed")
            except sqlite3.OperationalError as error:
                errors.append(error)
                raise
            finally:
                pending.close()
        target.commit()

    @retry_on_lock
    def with_argument(target: sqlite3.Connection) -> None:
        insert_then_drop(target)

    @retry_on_lock
    def in_closure() -> None:
        insert_then_drop(conn)

    if how == "plain-argument":
        with_argument(conn)
    else:
        in_closure()
    (error,) = errors
    assert is_lock_error(error)
    if HAS_ERROR_CODES:
        assert getattr(error, "sqlite_errorname", None) == "SQLITE_LOCKED"
    assert seen_at_start == [(False, 0), (False, 0)]
    assert rows(db) == [(1,)]
    assert not conn.in_transaction
    assert query(db, "SELECT count(*) FROM doomed") == [(0,)]


# -- threads -------------------------------------------------------------------------------


def test_threads_have_their_own_retry_scope(db: Path, close_later: CloseLater[ResilientConnection]) -> None:
    """A decorated call in another thread is not nested in this thread's decorated call:
    its lock error is retried by its own decorator."""
    conn = close_later(sqlite_resilient.connect(db, check_same_thread=False))
    calls = 0
    outcome: list[object] = []

    @retry_on_lock
    def bump() -> int:
        nonlocal calls
        calls += 1
        return bump_counter(conn, db, interfere=calls == 1)

    @retry_on_lock
    def bump_in_another_thread() -> None:
        thread, results = run_in_thread(bump)
        thread.join(20)
        assert not thread.is_alive()
        outcome.extend(results)

    bump_in_another_thread()
    assert outcome == [101]
    assert calls == 2


# -- lock errors inside other errors ----------------------------------------------------------


class DriverError(Exception):
    """A PEP 249 wrapper in the manner of SQLAlchemy's: the driver's error is ``.orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(f"(wrapped) {orig}")
        self.orig = orig


@pytest.mark.parametrize("carried", ["orig", "cause", "context"])
def test_lock_errors_inside_wrappers_are_retried(
    tmp_path: Path,
    lock_holder: StartLockHolder,
    no_backoff: None,
    close_later: CloseLater[ResilientConnection],
    carried: str,
) -> None:
    """A lock error that another error carries as ``.orig`` (PEP 249 wrappers such as
    SQLAlchemy's) or as its ``__cause__`` re-runs the function like the lock error itself;
    one that is only the ``__context__`` of another error (raised while handling it) is not a
    lock error, and propagates after one attempt."""
    locked = make_counter_database(tmp_path / "locked.db")
    lock_holder(locked, "EXCLUSIVE")
    conn = close_later(sqlite_resilient.connect(locked, timeout=0.05))
    attempts: list[int] = []

    @retry_on_lock(timeout=30, attempts=3)
    def through_a_wrapper() -> str:
        attempts.append(1)
        if len(attempts) == 3:
            return "done"
        try:
            conn.execute("INSERT INTO t VALUES (1)")
        except sqlite3.OperationalError as error:
            if carried == "orig":
                raise DriverError(error) from None
            if carried == "cause":
                raise RuntimeError("wrapped") from error
            raise RuntimeError("raised while handling a lock error")  # noqa: B904 - the point of the case
        raise AssertionError("the insert met no lock")

    if carried == "context":
        with pytest.raises(RuntimeError, match="while handling"):
            through_a_wrapper()
        assert len(attempts) == 1
    else:
        assert through_a_wrapper() == "done"
        assert len(attempts) == 3


def test_spent_budget_through_a_wrapper_gives_the_sqlite_error(
    tmp_path: Path, lock_holder: StartLockHolder, no_backoff: None, close_later: CloseLater[ResilientConnection]
) -> None:
    """When the attempts run out on wrapped lock errors, the caller gets
    ``DatabaseLockedError`` whose cause is SQLite's own error (with its code), not the
    wrapper."""
    locked = make_counter_database(tmp_path / "locked.db")
    lock_holder(locked, "EXCLUSIVE")
    conn = close_later(sqlite_resilient.connect(locked, timeout=0.05))

    @retry_on_lock(timeout=30, attempts=2)
    def always_locked() -> None:
        try:
            conn.execute("INSERT INTO t VALUES (1)")
        except sqlite3.OperationalError as error:
            raise DriverError(error) from None

    with pytest.raises(DatabaseLockedError, match="gave up after 2 attempts") as caught:
        always_locked()
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert not isinstance(caught.value.__cause__, DriverError)
    if sys.version_info >= (3, 11):
        assert caught.value.sqlite_errorname.startswith("SQLITE_BUSY")


def test_a_transaction_begun_after_the_attempts_own_ended_is_left_alone(
    db: Path, tmp_path: Path, lock_holder: StartLockHolder, close_later: CloseLater[ResilientConnection]
) -> None:
    """A pool (SQLAlchemy's) rolls back an attempt's transaction on error and may hand the
    connection to another thread, which begins its own, before the decorator cleans up: the
    decorator rolls back only transactions still the attempt's (its thread's), so the other
    thread's transaction survives, and that thread commits it."""
    shared = close_later(sqlite_resilient.connect(db, isolation_level=None, check_same_thread=False))
    locked = make_counter_database(tmp_path / "locked.db")
    lock_holder(locked, "EXCLUSIVE")
    impatient = close_later(sqlite_resilient.connect(locked, timeout=0.05))
    began = threading.Event()
    cleaned_up = threading.Event()

    def other_thread() -> None:
        shared.execute("BEGIN IMMEDIATE")
        shared.execute("INSERT INTO t VALUES ('other thread')")
        began.set()
        assert cleaned_up.wait(HELPER_TIMEOUT)
        shared.commit()

    started: list[tuple[threading.Thread, list[object]]] = []

    @retry_on_lock(timeout=30, attempts=1)
    def unit_of_work() -> None:
        shared.execute("BEGIN IMMEDIATE")
        shared.execute("INSERT INTO t VALUES ('attempt')")
        try:
            impatient.execute("INSERT INTO t VALUES (1)")
        except sqlite3.OperationalError:
            shared.rollback()  # what the pool does with a connection whose unit of work failed
            started.append(run_in_thread(other_thread))
            assert began.wait(HELPER_TIMEOUT)
            raise

    with pytest.raises(DatabaseLockedError):
        unit_of_work()
    cleaned_up.set()
    ((thread, outcome),) = started
    thread.join(HELPER_TIMEOUT)
    assert outcome == [None]
    assert query(db, "SELECT x FROM t") == [("other thread",)]


# -- what cannot succeed is not retried ----------------------------------------------------


@pytest.mark.parametrize("how", ["statement", "db_transaction", "begin-statement"])
def test_a_write_behind_an_unfinished_cursor_of_an_old_snapshot_is_not_retried(
    db: Path, hook: Recorder, close_later: CloseLater[ResilientConnection], how: str
) -> None:
    """A connection whose unfinished SELECT (a loop over rows that updates each) holds a
    snapshot older than another connection's commit cannot write while that cursor is
    open: SQLite says ``SQLITE_BUSY_SNAPSHOT`` at once. Waiting cannot change that, so the
    lock error is raised at once, saying why, and the write gate is let go, instead of
    spinning for the whole budget while holding it; once the cursor is done, the write
    works."""
    conn = close_later(sqlite_resilient.connect(db, timeout=5, isolation_level="IMMEDIATE"))
    cursor = conn.execute("SELECT x FROM seed")
    assert cursor.fetchone() == (1,)  # unfinished: its read keeps the snapshot
    commit_elsewhere(db, "UPDATE counter SET n = n + 100")

    def write() -> None:
        if how == "statement":
            conn.execute("UPDATE counter SET n = n + 1")
        elif how == "begin-statement":
            conn.execute("BEGIN IMMEDIATE")
        else:
            with db_transaction(conn):
                pass  # pragma: no cover - never entered

    with pytest.raises(sqlite3.OperationalError) as caught:
        write()
    error = caught.value
    assert not isinstance(error, DatabaseLockedError)
    assert is_lock_error(error)
    assert "unfinished" in str(error)
    assert "snapshot" in str(error)
    if HAS_ERROR_CODES:
        assert error.sqlite_errorname == "SQLITE_BUSY_SNAPSHOT"
    assert hook.named(RETRY_SCHEDULED) == []
    assert not conn.in_transaction
    assert gate_is_free(db)
    assert cursor.fetchall() == [(2,), (3,), (4,), (5,)]
    conn.execute("UPDATE counter SET n = n + 1")
    conn.commit()
    assert counter(db) == 101


def test_a_failed_script_attempt_is_rolled_back_not_committed_by_the_next(
    tmp_path: Path, lock_holder: StartLockHolder, hook: Recorder, close_later: CloseLater[ResilientConnection]
) -> None:
    """``executescript`` inside ``@retry_on_lock``: the script's COMMIT cannot get its lock
    past the budget (a reader holds a shared lock, rollback journal), so the attempt fails
    with its transaction open. The decorator rolls that transaction back before the re-run,
    which must not find it and commit it (``executescript`` commits a pending transaction
    first): the increment is applied once."""
    db = make_counter_database(tmp_path / "rollback.db")
    conn = close_later(sqlite_resilient.connect(db, timeout=0.3, pragmas={"journal_mode": "delete"}))
    reader = lock_holder(db, "DEFERRED")
    hook.on_retry = lambda event: reader.release() if reader.process.poll() is None else None

    @retry_on_lock(timeout=30)
    def bump() -> None:
        conn.executescript("BEGIN IMMEDIATE; UPDATE counter SET n = n + 1; COMMIT;")

    bump()
    assert hook.failures == []
    assert len(hook.named(RETRY_SCHEDULED)) == 1
    assert not conn.in_transaction
    assert counter(db) == 1
