"""Seeing every retry, lock wait and fallback: events, hooks and per-connection statistics.

The library reports what it does as frozen event records handed to *hooks*, callables that
take one event. The default hook, :class:`LoggingHook`, logs each event on the
``sqlite_resilient`` logger with a dotted event name and structured ``extra`` fields::

    import sqlite_resilient.instrumentation as instrumentation

    seen = []
    instrumentation.set_hooks([instrumentation.LoggingHook(), seen.append])

Event names:

- ``sqlite_resilient.retry_scheduled``: a lock error will be retried after ``wait`` seconds
  of backoff.
- ``sqlite_resilient.lock_waited``: an operation that met a lock succeeded after
  ``attempt`` attempts and ``waited`` seconds.
- ``sqlite_resilient.writer_queued``: a write transaction waits for the writer ahead of it
  (see ``Settings.writer_queue``) before its ``BEGIN``; a ``lock_waited`` event for
  ``BEGIN`` follows when its turn comes, and the wait counts in :class:`LockStats`.
- ``sqlite_resilient.thread_queued``: a call on a connection that threads share waits for
  another thread's transaction on it to end; a ``lock_waited`` event follows when its turn
  comes, and the wait counts in :class:`LockStats`.
- ``sqlite_resilient.lock_error``: a lock error reaches the caller: the budget is spent (the
  error is a :class:`~sqlite_resilient.DatabaseLockedError`), or retrying was unsafe (inside
  a transaction, or a transaction was open before a decorated call).
- ``sqlite_resilient.wal_fallback``: WAL cannot be used for a database; a rollback journal
  is kept (:class:`FallbackEvent`).

Each :class:`~sqlite_resilient.ResilientConnection` also counts its lock waits in
:attr:`~sqlite_resilient.ResilientConnection.lock_stats` (a :class:`LockStats`).

This module imports nothing of the package.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, Union

__all__ = [
    "FallbackEvent",
    "Hook",
    "LockEvent",
    "LockStats",
    "LoggingHook",
    "get_hooks",
    "set_hooks",
]

logger = logging.getLogger("sqlite_resilient")
logger.addHandler(logging.NullHandler())  # the application decides what is printed (the logging HOWTO)

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
LOCK_WAITED = "sqlite_resilient.lock_waited"
LOCK_ERROR = "sqlite_resilient.lock_error"
WRITER_QUEUED = "sqlite_resilient.writer_queued"
THREAD_QUEUED = "sqlite_resilient.thread_queued"
WAL_FALLBACK = "sqlite_resilient.wal_fallback"

_DATACLASS_OPTIONS: dict[str, Any] = {"kw_only": True, "slots": True} if sys.version_info >= (3, 10) else {}


@dataclass(frozen=True, **_DATACLASS_OPTIONS)
class LockEvent:
    """A lock met by one operation: a statement, a ``COMMIT``, a ``BEGIN`` or a whole
    function decorated with :func:`~sqlite_resilient.retry_on_lock`.

    Attributes:
        name: ``sqlite_resilient.retry_scheduled``, ``.lock_waited``, ``.writer_queued``,
            ``.thread_queued`` or ``.lock_error``.
        operation: ``"execute"``, ``"executemany"``, ``"commit"``, ``"connection set-up"``,
            or the qualified name of a decorated function.
        database: The database file of the connection that met the lock, if known.
        attempt: Attempts made so far, the failed one included.
        waited: Seconds since the operation started.
        wait: Seconds of backoff before the next attempt (``retry_scheduled``), else 0.
        budget: The operation's lock-wait budget in seconds.
        error: The lock error (for ``lock_error``, the exception the caller gets), or
            ``None`` for ``lock_waited``, ``writer_queued`` and ``thread_queued``.
    """

    name: str
    operation: str
    database: str | None
    attempt: int
    waited: float
    wait: float
    budget: float
    error: BaseException | None


@dataclass(frozen=True, **_DATACLASS_OPTIONS)
class FallbackEvent:
    """WAL cannot be used for a database; it keeps a rollback journal.

    Attributes:
        name: ``sqlite_resilient.wal_fallback``.
        database: The database file.
        reason: Why WAL cannot be used, e.g. ``"read-only filesystem"``.
        journal_mode: The journal mode the connection runs with.
        first: Whether this is the first report of this database and reason in the process.
    """

    name: str
    database: str | None
    reason: str
    journal_mode: str
    first: bool


Event = Union[LockEvent, FallbackEvent]
"""What a hook receives."""


class Hook(Protocol):
    """Anything callable with one event; what it returns is ignored."""

    def __call__(self, event: Event, /) -> object: ...


@dataclass(frozen=True, **_DATACLASS_OPTIONS)
class LockStats:
    """A connection's lock waits so far (a snapshot: later waits do not change it).

    Attributes:
        waits: Operations (statements, commits, decorated calls) that met a lock error.
        attempts: Attempts those operations made, their first ones included.
        retries: Attempts made again after a lock error.
        surfaced: Lock errors that reached the application (``DatabaseLockedError``, or a
            lock error inside a transaction that nothing could retry).
        total_wait: Seconds those operations took in all.
        longest_wait: Seconds the longest of them took.

    Waits inside SQLite's busy handler that end in success are not seen (Python's
    :mod:`sqlite3` offers no busy-handler callback); every lock error and every wait of the
    library itself is.
    """

    waits: int = 0
    attempts: int = 0
    retries: int = 0
    surfaced: int = 0
    total_wait: float = 0.0
    longest_wait: float = 0.0


class LockCounters:
    """The mutable counters behind :class:`LockStats`, one per connection."""

    __slots__ = ("_lock", "attempts", "longest_wait", "retries", "surfaced", "total_wait", "waits")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waits = self.attempts = self.retries = self.surfaced = 0
        self.total_wait = self.longest_wait = 0.0

    def record(self, *, attempts: int, retries: int, waited: float, surfaced: bool, new_wait: bool = True) -> None:
        """Count one operation that met a lock (``new_wait=False``: more of one already counted)."""
        with self._lock:
            self.waits += new_wait
            self.attempts += attempts
            self.retries += retries
            self.surfaced += surfaced
            self.total_wait += waited
            self.longest_wait = max(self.longest_wait, waited)

    def snapshot(self) -> LockStats:
        with self._lock:
            return LockStats(
                waits=self.waits,
                attempts=self.attempts,
                retries=self.retries,
                surfaced=self.surfaced,
                total_wait=self.total_wait,
                longest_wait=self.longest_wait,
            )


class LoggingHook:
    """Log events on the ``sqlite_resilient`` logger.

    Retries and waits are logged at DEBUG (they are normal under contention), lock errors
    that reach the caller at WARNING, a WAL fallback at WARNING the first time and at DEBUG
    after. The message starts with the event name; ``extra`` carries ``event`` and the
    event's fields, for structured log handlers.
    """

    def __call__(self, event: Event, /) -> None:
        if isinstance(event, FallbackEvent):
            logger.log(
                logging.WARNING if event.first else logging.DEBUG,
                "%s: %s: %s; journal_mode is %s",
                event.name,
                event.database,
                event.reason,
                event.journal_mode,
                extra={
                    "event": event.name,
                    "database": event.database,
                    "reason": event.reason,
                    "journal_mode": event.journal_mode,
                    "first": event.first,
                },
            )
            return
        level = logging.WARNING if event.name == LOCK_ERROR else logging.DEBUG
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "%s: %s on %s, attempt %d, %.3f s of %g s%s",
            event.name,
            event.operation,
            event.database or "an unknown database",
            event.attempt,
            event.waited,
            event.budget,
            f", next in {event.wait:.3f} s" if event.name == RETRY_SCHEDULED else "",
            extra={
                "event": event.name,
                "operation": event.operation,
                "database": event.database,
                "attempt": event.attempt,
                "waited": event.waited,
                "wait": event.wait,
                "budget": event.budget,
                "error": repr(event.error) if event.error is not None else None,
            },
        )


DEFAULT_HOOKS: tuple[Hook, ...] = (LoggingHook(),)
_hooks: tuple[Hook, ...] = DEFAULT_HOOKS


def set_hooks(hooks: Iterable[Hook] | None) -> None:
    """Replace the hooks every event is handed to; ``None`` restores the default
    (a :class:`LoggingHook`). Pass ``[]`` to silence the library.

    Hooks run in the thread that met the lock, in order. An exception of a hook is logged
    and does not disturb the database operation.
    """
    global _hooks  # noqa: PLW0603 - the one process-wide registry
    if hooks is None:
        _hooks = DEFAULT_HOOKS
        return
    hooks = tuple(hooks)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"a hook must be callable, not {type(hook).__name__}")
    _hooks = hooks


def get_hooks() -> tuple[Hook, ...]:
    """The hooks events are handed to, in order."""
    return _hooks


def emit(event: Event) -> None:
    """Hand *event* to every hook."""
    for hook in _hooks:
        try:
            hook(event)
        except Exception:  # noqa: PERF203 - a failing hook must not fail the others
            logger.exception("sqlite_resilient hook %r failed on %s", hook, event.name)
