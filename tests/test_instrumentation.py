"""Visibility: events handed to hooks, the logging hook's records, per-connection statistics.

Locks are real: another connection commits under a reading transaction
(``SQLITE_BUSY_SNAPSHOT``), or a helper process holds the write lock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from conftest import StartLockHolder

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, ResilientConnection, instrumentation, is_lock_error
from sqlite_resilient.instrumentation import FallbackEvent, LockEvent

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
LOCK_WAITED = "sqlite_resilient.lock_waited"
LOCK_ERROR = "sqlite_resilient.lock_error"


@pytest.fixture
def conn(db: Path) -> Iterator[ResilientConnection]:
    with closing(sqlite_resilient.connect(db)) as connection:
        yield connection


def write_after_another_commit(conn: ResilientConnection, db: Path) -> None:
    """Read in a deferred transaction, let another connection commit, then write: the write
    meets ``SQLITE_BUSY_SNAPSHOT``, a lock error inside a transaction."""
    with conn.transaction("deferred"):
        conn.execute("SELECT count(*) FROM t").fetchone()
        with closing(sqlite3.connect(db)) as other:
            other.execute("INSERT INTO t VALUES ('other')")
            other.commit()
        conn.execute("INSERT INTO t VALUES ('mine')")


def test_set_hooks_validates_and_restores() -> None:
    """Hooks must be callable; ``None`` restores the logging hook, ``[]`` silences."""
    with pytest.raises(TypeError, match="hook must be callable, not int"):
        instrumentation.set_hooks([print, 3])  # type: ignore[list-item]
    try:
        instrumentation.set_hooks([])
        assert instrumentation.get_hooks() == ()
    finally:
        instrumentation.set_hooks(None)
    (hook,) = instrumentation.get_hooks()
    assert isinstance(hook, instrumentation.LoggingHook)


def test_decorated_retry_is_reported_and_counted(
    conn: ResilientConnection, db: Path, events: list[instrumentation.Event]
) -> None:
    """A decorated call re-run after BUSY_SNAPSHOT: the hook sees the statement's lock
    error, the scheduled retry and the success; the connection counts one retry."""
    calls = 0

    @sqlite_resilient.retry_on_lock
    def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            write_after_another_commit(conn, db)
        else:
            with conn.transaction():
                conn.execute("INSERT INTO t VALUES ('mine')")

    work()
    assert calls == 2
    lock_events = [event for event in events if isinstance(event, LockEvent)]
    assert [(event.name, event.operation) for event in lock_events] == [
        (RETRY_SCHEDULED, work.__qualname__),
        (LOCK_WAITED, work.__qualname__),
    ]
    scheduled, waited = lock_events
    assert scheduled.attempt == 1
    assert waited.attempt == 2
    assert scheduled.database == conn.database_path
    assert scheduled.budget == sqlite_resilient.DEFAULT_SETTINGS.timeout
    assert 0 <= scheduled.wait <= 0.1
    assert scheduled.error is not None
    assert is_lock_error(scheduled.error)
    assert waited.error is None
    stats = conn.lock_stats
    assert stats.retries == 1
    assert stats.surfaced == 0
    assert stats.waits >= 1
    assert stats.longest_wait <= stats.total_wait
    with pytest.raises(FrozenInstanceError):
        stats.retries = 0  # type: ignore[misc]


def test_lock_error_in_a_transaction_is_surfaced(
    conn: ResilientConnection, db: Path, events: list[instrumentation.Event]
) -> None:
    """Without a decorator, a lock error inside a transaction reaches the caller: reported
    as ``lock_error`` and counted as surfaced."""
    with pytest.raises(sqlite3.OperationalError) as caught:
        write_after_another_commit(conn, db)
    assert is_lock_error(caught.value)
    (event,) = events
    assert isinstance(event, LockEvent)
    assert (event.name, event.operation, event.error) == (LOCK_ERROR, "execute", caught.value)
    assert conn.lock_stats.surfaced == 1


def test_statement_waits_are_reported(
    db: Path, lock_holder: StartLockHolder, events: list[instrumentation.Event]
) -> None:
    """A statement that waits for another process's lock reports each retry, then the
    DatabaseLockedError it raises when the budget is spent."""
    lock_holder(db, "IMMEDIATE")
    with closing(sqlite_resilient.connect(db, timeout=0.3, pragmas={"busy_timeout": 0})) as conn:
        with pytest.raises(DatabaseLockedError) as caught:
            conn.execute("INSERT INTO t VALUES (1)")
        stats = conn.lock_stats
    names = [event.name for event in events]
    assert names[-1] == LOCK_ERROR
    assert set(names[:-1]) == {RETRY_SCHEDULED}
    assert len(names) == caught.value.attempts
    last = events[-1]
    assert isinstance(last, LockEvent)
    assert last.error is caught.value
    assert last.database == str(db)
    assert (stats.waits, stats.attempts, stats.surfaced) == (1, caught.value.attempts, 1)
    assert stats.retries == caught.value.attempts - 1
    assert caught.value.waited <= stats.longest_wait < 0.3 + 0.5


def test_released_lock_reports_the_wait(
    db: Path, lock_holder: StartLockHolder, events: list[instrumentation.Event]
) -> None:
    """When the lock is released during the waits, the statement succeeds and reports
    ``lock_waited`` with the attempts it took."""
    holder = lock_holder(db, "IMMEDIATE")

    def release_on_first_retry(event: instrumentation.Event) -> None:
        if event.name == RETRY_SCHEDULED and holder.process.poll() is None:
            holder.release()

    instrumentation.set_hooks([events.append, release_on_first_retry])
    with closing(sqlite_resilient.connect(db, timeout=20, pragmas={"busy_timeout": 0})) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert conn.lock_stats.surfaced == 0
        assert conn.lock_stats.retries >= 1
    assert [event.name for event in events] == [RETRY_SCHEDULED, LOCK_WAITED]


def test_logging_hook_writes_structured_records(
    conn: ResilientConnection, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default hook logs retries at DEBUG and surfaced lock errors at WARNING on the
    ``sqlite_resilient`` logger, with the event's fields as ``extra``."""
    caplog.set_level(logging.DEBUG, logger="sqlite_resilient")
    with pytest.raises(sqlite3.OperationalError):
        write_after_another_commit(conn, db)
    (record,) = caplog.records
    assert record.name == "sqlite_resilient"
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"{LOCK_ERROR}: execute on {conn.database_path}")
    fields = vars(record)
    assert fields["event"] == LOCK_ERROR
    assert fields["operation"] == "execute"
    assert fields["database"] == conn.database_path
    assert fields["attempt"] == 1
    assert "OperationalError" in fields["error"]


def test_failing_hook_does_not_break_the_operation(
    conn: ResilientConnection, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a hook is logged; later hooks still run and the retry goes on."""
    seen: list[str] = []

    def broken(event: instrumentation.Event) -> None:
        raise RuntimeError("exporter down")

    instrumentation.set_hooks([broken, lambda event: seen.append(event.name)])
    calls = 0

    @sqlite_resilient.retry_on_lock
    def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            write_after_another_commit(conn, db)

    try:
        work()
    finally:
        instrumentation.set_hooks(None)
    assert calls == 2
    assert seen == [RETRY_SCHEDULED, LOCK_WAITED]
    failures = [record for record in caplog.records if record.exc_info]
    assert len(failures) == 2
    assert "exporter down" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_wal_fallback_is_an_event(ro_mount: tuple[Path, Path], events: list[instrumentation.Event]) -> None:
    """A WAL fallback reaches the hooks as a FallbackEvent, marked first only once per
    database and reason."""
    src, ro = ro_mount
    with closing(sqlite3.connect(src / "app.db")) as setup:
        setup.execute("CREATE TABLE t(x)")
    with pytest.warns(sqlite_resilient.WALFallbackWarning), closing(sqlite_resilient.connect(ro / "app.db")):
        pass
    with closing(sqlite_resilient.connect(ro / "app.db")) as conn:  # no second warning (they are errors here)
        assert conn.journal_mode == "delete"
    first, second = events
    assert isinstance(first, FallbackEvent)
    assert isinstance(second, FallbackEvent)
    assert (first.name, first.database, first.journal_mode, first.first) == (
        "sqlite_resilient.wal_fallback",
        str(ro / "app.db"),
        "delete",
        True,
    )
    assert "read-only filesystem" in first.reason
    assert not second.first


def test_logging_hook_gives_fallback_records_every_field(caplog: pytest.LogCaptureFixture) -> None:
    """A WAL fallback is logged at WARNING the first time and at DEBUG after, with every
    field of the event as ``extra`` (``first`` included)."""
    caplog.set_level(logging.DEBUG, logger="sqlite_resilient")
    hook = instrumentation.LoggingHook()
    for first in (True, False):
        hook(
            FallbackEvent(
                name="sqlite_resilient.wal_fallback",
                database="/srv/app.db",
                reason="read-only filesystem",
                journal_mode="delete",
                first=first,
            )
        )
    warning, debug = caplog.records
    assert (warning.levelno, debug.levelno) == (logging.WARNING, logging.DEBUG)
    fields = vars(warning)
    assert (fields["event"], fields["database"], fields["reason"], fields["journal_mode"], fields["first"]) == (
        "sqlite_resilient.wal_fallback",
        "/srv/app.db",
        "read-only filesystem",
        "delete",
        True,
    )
    assert vars(debug)["first"] is False
