"""The exceptions and warnings of the library, and the lock-error predicate.

Every exception the library raises itself derives from :class:`ResilientError` *and* from
the standard class that code written for :mod:`sqlite3` already catches::

    Exception
    ├── ResilientError
    │   ├── ConfigurationError(ValueError)        bad pragma, setting or connect() argument
    │   ├── DatabaseLockedError(sqlite3.OperationalError)
    │   │                                          the lock-wait budget is spent
    │   ├── TransactionEndedError(sqlite3.OperationalError)
    │   │                                          a db_transaction block's transaction ended early
    │   ├── UnreadableWALError(sqlite3.OperationalError)
    │   │                                          WAL content exists that cannot be read
    │   └── ForkedConnectionError(sqlite3.ProgrammingError)
    │                                              a connection used in a forked child
    Warning
    └── ResilientWarning(UserWarning)
        ├── WALFallbackWarning                    WAL cannot be used; rollback journal kept
        ├── WALGrowthWarning                      the WAL keeps growing: a reader pins it
        ├── PragmaNotAppliedWarning               SQLite reports another value than was set
        └── AbandonedTransactionWarning           a thread ended with its transaction open

This module imports nothing of the package.
"""

from __future__ import annotations

import sqlite3
from typing import TypeVar

__all__ = [
    "AbandonedTransactionWarning",
    "ConfigurationError",
    "DatabaseLockedError",
    "ForkedConnectionError",
    "PragmaNotAppliedWarning",
    "ReplicaError",
    "ResilientError",
    "ResilientWarning",
    "StaleReplicaError",
    "TransactionEndedError",
    "UnreadableWALError",
    "WALFallbackWarning",
    "WALGrowthWarning",
    "is_lock_error",
]

# https://www.sqlite.org/rescode.html: the primary code is the low byte of an extended code.
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_BUSY_SNAPSHOT = SQLITE_BUSY | (2 << 8)
_LOCK_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED})

# The messages SQLite gives BUSY and LOCKED (and every extended code of theirs), used where
# the exception carries no code (Python < 3.11, or an error raised by Python code). The
# library's own lock errors start with "database is locked: ".
_LOCK_MESSAGES = frozenset({"database is locked", "database table is locked"})
_LOCK_MESSAGE_PREFIXES = ("database is locked: ", "database table is locked: ", "database schema is locked: ")


def is_lock_error(exc: BaseException) -> bool:
    """Tell whether *exc* is SQLite's ``SQLITE_BUSY``/``SQLITE_LOCKED`` (or an extended code).

    Only such errors are ever retried: they mean another connection holds a lock, and the
    same work can succeed later. Usable as a predicate anywhere, e.g. with tenacity's
    ``retry_if_exception(is_lock_error)``.

    The code is read from ``sqlite_errorcode`` where the exception carries one (SQLite's own
    errors do on Python 3.11+); otherwise SQLite's exact messages decide.
    See https://www.sqlite.org/rescode.html#busy and #locked.
    """
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    if isinstance(exc, DatabaseLockedError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _LOCK_CODES
    message = str(exc)
    return message in _LOCK_MESSAGES or message.startswith(_LOCK_MESSAGE_PREFIXES)


# Read-only connections meet these while a writer recovers the database (rolls a journal
# back, or rebuilds the WAL index); a read-only connection cannot do that itself and may only
# wait, like for a lock. Nothing can have been written through it. Only seen by code (3.11+):
# their message is that of any SQLITE_READONLY.
SQLITE_READONLY_RECOVERY = 8 | (1 << 8)
SQLITE_READONLY_ROLLBACK = 8 | (3 << 8)
_WAIT_FOR_WRITER_CODES = frozenset({SQLITE_READONLY_RECOVERY, SQLITE_READONLY_ROLLBACK})


def is_transient(exc: BaseException) -> bool:
    """Whether waiting may clear *exc*: a lock error, or a read-only connection waiting for
    a writer to recover the database (``SQLITE_READONLY_ROLLBACK``/``_RECOVERY``)."""
    if is_lock_error(exc):
        return True
    return (
        isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in _WAIT_FOR_WRITER_CODES
    )


def transient_cause(exc: BaseException) -> BaseException | None:
    """The error that makes *exc* transient (see :func:`is_transient`): *exc* itself, or the
    driver error a wrapper carries as ``.orig`` (PEP 249 wrappers such as SQLAlchemy's) or
    as its ``__cause__`` (``raise ... from``), a few levels deep; ``None`` if there is none.
    ``__context__`` is not followed: an error raised while handling a lock error is another
    error."""
    for _ in range(4):
        if is_transient(exc):
            return exc
        wrapped = getattr(exc, "orig", None)
        following = wrapped if isinstance(wrapped, BaseException) else exc.__cause__
        if following is None:
            return None
        exc = following
    return None


def copy_sqlite_error_code(source: BaseException, target: BaseException) -> None:
    """Give *target* the ``sqlite_errorcode``/``sqlite_errorname`` that *source* carries."""
    for name in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))


ErrorT = TypeVar("ErrorT", bound=sqlite3.Error)


def restated(error: ErrorT, message: str) -> ErrorT:
    """An error of the same type and SQLite code as *error*, saying *message*, caused by it."""
    clear = type(error)(message)
    copy_sqlite_error_code(error, clear)
    clear.__cause__, clear.__suppress_context__ = error, True
    return clear


_CANTOPEN = {14: "unable to open database file"}
_FILE_ERRORS = {**_CANTOPEN, 10: "disk I/O error", 11: "database disk image is malformed", 26: "file is not a database"}
"""SQLite's primary codes (and messages) that are about the file itself: CANTOPEN, IOERR,
CORRUPT, NOTADB (https://www.sqlite.org/rescode.html)."""


def _has_primary_code(error: sqlite3.Error, codes: dict[int, str]) -> bool:
    """Whether *error* is one of *codes* (primary result codes): by its code where it
    carries one (Python 3.11+), else by SQLite's message for the code."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in codes
    return str(error) in codes.values()


def is_file_error(error: sqlite3.Error) -> bool:
    """Whether *error* is about the database file (damaged, vanished, unreadable)."""
    return _has_primary_code(error, _FILE_ERRORS)


def is_cantopen(error: sqlite3.Error) -> bool:
    """Whether *error* is SQLite's ``SQLITE_CANTOPEN``."""
    return _has_primary_code(error, _CANTOPEN)


class ResilientError(Exception):
    """Base of every exception raised by :mod:`sqlite_resilient` itself."""


class ConfigurationError(ResilientError, ValueError):
    """A pragma, setting or ``connect()`` argument is invalid; nothing was executed."""


class DatabaseLockedError(ResilientError, sqlite3.OperationalError):
    """The lock-wait budget of an operation was spent while the database stayed locked.

    A subclass of :class:`sqlite3.OperationalError`, so ``except sqlite3.OperationalError``
    keeps working. ``__cause__`` is the last SQLite error, whose ``sqlite_errorcode`` and
    ``sqlite_errorname`` this exception carries too.
    """

    def __init__(self, message: str, *, attempts: int, waited: float, budget: float) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.waited = waited
        self.budget = budget


class TransactionEndedError(ResilientError, sqlite3.OperationalError):
    """The transaction of a ``db_transaction`` block ended inside the block (``commit()``
    or ``rollback()`` called in it, or SQLite rolled back after an error the block
    swallowed), so the block cannot commit it."""


class UnreadableWALError(ResilientError, sqlite3.OperationalError):
    """A WAL database holds committed changes in its ``-wal`` file that cannot be read.

    Raised instead of returning stale results, e.g. on a read-only filesystem where the
    ``-shm`` file is missing and cannot be created.
    """


class ReplicaError(ResilientError, sqlite3.OperationalError):
    """A Litestream follower's copy cannot be read as asked: there is no database yet, its
    position cannot be read, or it is in a state a follower never leaves it in."""


class StaleReplicaError(ReplicaError):
    """No copy met the freshness bound of a read (``max_lag``, ``min_position``) within its
    budget, and there was no primary to read from instead."""


class ForkedConnectionError(ResilientError, sqlite3.ProgrammingError):
    """A connection opened in a parent process was used in a child after ``fork()``.

    SQLite forbids carrying a connection across ``fork()``
    (https://www.sqlite.org/howtocorrupt.html#_carrying_an_open_database_connection_across_a_fork_).
    """


class ResilientWarning(UserWarning):
    """Base of the warnings emitted by :mod:`sqlite_resilient`."""


class WALFallbackWarning(ResilientWarning):
    """WAL cannot be used for this database; a rollback-journal mode is kept."""


class WALGrowthWarning(ResilientWarning):
    """The WAL of a database grew past ``Settings.wal_warn_bytes`` and a checkpoint could
    not copy all of it back: a connection keeps an old snapshot open."""


class PragmaNotAppliedWarning(ResilientWarning):
    """SQLite reports another value for a pragma than the one that was set."""


class AbandonedTransactionWarning(ResilientWarning):
    """A thread ended with a transaction open on a connection that threads share; the next
    thread to use the connection rolled it back (nobody else may end it)."""
