"""``connect()``, the ``ResilientConnection`` proxy and its ``ResilientCursor``.

A :class:`ResilientConnection` is a :class:`wrapt.BaseObjectProxy` around a real
:class:`sqlite3.Connection`: every attribute and method of the real connection works, and
``isinstance(conn, sqlite3.Connection)`` holds. It adds what :func:`connect` set up (WAL or
the reason for a rollback journal, validated pragmas read back from SQLite) and routes every
statement through one place, :func:`_run_statement`, which waits for locks where that is
safe.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sqlite3
import sys
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn, TypeVar, overload

import wrapt

from ._errors import (
    ConfigurationError,
    ForkedConnectionError,
    PragmaNotAppliedWarning,
    ResilientError,
    UnreadableWALError,
    WALFallbackWarning,
    copy_sqlite_error_code,
    is_lock_error,
    is_transient,
)
from ._gate import WriteGate, open_gate
from ._journal import FileSystem, filesystem_of, is_wal_file, wal_blocker, wal_content_bytes
from ._pragmas import PRAGMAS, PragmaValue, validate_all
from ._readonly import Authorizer, guard_read_only
from ._retry import (
    BUSY_SLACK_MS,
    Scope,
    _current,
    busy_milliseconds,
    call_within_budget,
    current_scope,
    report_lock_error,
    report_queued,
    retry_after_lock_error,
)
from ._settings import DEFAULT_SETTINGS, Settings, _check_timeout
from ._transaction import Transaction, TransactionMode
from ._uri import Target, parse_database, to_uri
from ._wal import CheckpointMode, CheckpointResult, check_growth, checkpoint
from .instrumentation import WAL_FALLBACK, FallbackEvent, LockCounters, LockStats, emit

__all__ = ["ResilientConnection", "ResilientCursor", "connect"]

logger = logging.getLogger("sqlite_resilient")

T = TypeVar("T")
CursorT = TypeVar("CursorT", bound=sqlite3.Cursor)
ErrorT = TypeVar("ErrorT", bound=sqlite3.Error)

if TYPE_CHECKING:
    from typing_extensions import Self

    # Type checkers see the proxies as what they stand for at run time (isinstance holds).

    class _ConnectionProxy(sqlite3.Connection):
        __wrapped__: sqlite3.Connection

        def __init__(self, wrapped: sqlite3.Connection) -> None: ...
else:
    _ConnectionProxy = wrapt.BaseObjectProxy

SQLITE_CANTOPEN = 14
_MAX_BUSY_MS = 2**31 - 1
_UNSET: Any = object()


class ResilientCursor(sqlite3.Cursor):
    """A :class:`sqlite3.Cursor` whose statements get the lock handling of its connection.

    Made by :meth:`ResilientConnection.cursor` and :meth:`ResilientConnection.execute`; a
    real cursor of the wrapped connection (fetching rows costs what it costs in
    :mod:`sqlite3`), whose :attr:`connection` is the :class:`ResilientConnection`.
    """

    __slots__ = ("_resilient",)
    _resilient: ResilientConnection

    @property
    def connection(self) -> ResilientConnection:
        """The :class:`ResilientConnection` this cursor belongs to."""
        return self._resilient

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        """Execute one statement (see :meth:`ResilientConnection.execute`)."""
        proxy = self._resilient
        _run_statement(proxy, proxy.__wrapped__, self, sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Self:
        """Execute a statement once per parameter set (see :meth:`ResilientConnection.executemany`)."""
        proxy = self._resilient
        try:
            proxy._self_run_many(self, sql, seq_of_parameters)
        except sqlite3.DatabaseError as error:
            proxy._self_statement_ended()  # SQLite may have rolled the transaction back
            raise proxy._self_clearer(error) or error  # noqa: B904 - the cause is set
        return self

    def executescript(self, sql_script: str, /) -> Self:
        """Execute a script (see :meth:`ResilientConnection.executescript`)."""
        proxy = self._resilient
        proxy._self_check_fork()
        proxy._self_fresh = False
        try:
            _executescript(self, sql_script)
        except sqlite3.DatabaseError as error:
            raise proxy._self_clearer(error) or error  # noqa: B904 - the cause is set
        finally:  # the script commits first in the legacy mode, and may end a transaction
            proxy._self_statement_ended()
        return self

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    __reduce__ = __reduce_ex__  # type: ignore[assignment]


_execute = sqlite3.Cursor.execute
_executemany = sqlite3.Cursor.executemany
_executescript = sqlite3.Cursor.executescript


def _run_statement(
    proxy: ResilientConnection, connection: sqlite3.Connection, cursor: sqlite3.Cursor, sql: str, parameters: Any
) -> None:
    """Run one statement of *proxy* on *cursor*: the common case (no transaction open, no
    decorated call) straight through, everything else by :meth:`ResilientConnection._self_run`."""
    try:
        in_transaction = connection.in_transaction
        if not in_transaction and sql[:1] in _MAYBE_WRITE:
            begin = _write_begin(proxy, connection, sql)
            if begin is sql:
                proxy._self_begin_statement(sql)
                return
            if begin is not None:
                proxy._self_begin_implicitly(begin, lambda: proxy._self_run(cursor, sql, parameters))
                return
        if in_transaction or _current.get() is not None:
            proxy._self_run(cursor, sql, parameters)
            return
        started = time.monotonic()
        try:
            _execute(cursor, sql, parameters)
        except sqlite3.OperationalError as error:
            if not proxy._self_retried(error, started, cursor, sql, parameters):
                raise
    except sqlite3.DatabaseError as error:
        raise proxy._self_clearer(error) or error  # noqa: B904 - the cause is set


_MAYBE_WRITE = "bBiIuUdDrR \t\n\r"
"""The first characters of a statement worth a closer look by :func:`_write_begin`."""
_DML = frozenset({"INSERT", "UPDATE", "DELETE"})  # and REPLACE
_LOCKING_LEVELS = ("IMMEDIATE", "EXCLUSIVE")
_BEGIN = {level: f"BEGIN {level}" for level in _LOCKING_LEVELS}
_LEGACY: int = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)


def _write_begin(proxy: ResilientConnection, connection: sqlite3.Connection, sql: str) -> str | None:
    """The statement that begins a write transaction for *sql*, outside a transaction:
    *sql* itself if it is one (see :func:`_begins_writing`), or the ``BEGIN`` that
    :mod:`sqlite3`'s legacy transaction mode sends before a DML statement (INSERT, UPDATE,
    DELETE, REPLACE), when its ``isolation_level`` takes the write lock and the database has
    a write gate. ``None`` for anything else, which :mod:`sqlite3` runs as it would.

    The DML test is :mod:`sqlite3`'s own (the first word after blanks) without its skipping
    of leading comments on 3.11+: a statement missed here only goes without the gate."""
    stripped = sql.lstrip(" \t\n\r")
    if stripped[:1] in "bB":
        return sql if _begins_writing(sql) else None
    if stripped[:6].upper() not in _DML and stripped[:7].upper() != "REPLACE":
        return None
    level = connection.isolation_level
    if level is None or level.upper() not in _LOCKING_LEVELS:
        return None
    if getattr(connection, "autocommit", _LEGACY) != _LEGACY:  # Python 3.12+
        return None
    gate = proxy._self_gate
    if gate is False or (gate is None and proxy._self_writer_gate() is None):
        return None
    return _BEGIN.get(level) or f"BEGIN {level}"


def _begins_writing(sql: str) -> bool:
    """Whether *sql* is ``BEGIN IMMEDIATE`` or ``BEGIN EXCLUSIVE`` (any case, ``TRANSACTION``
    and a ``;`` allowed): a write transaction begun by a statement, as SQLAlchemy sends."""
    words = sql.replace(";", " ").upper().split()
    return len(words) in (2, 3) and words[0] == "BEGIN" and words[1] in ("IMMEDIATE", "EXCLUSIVE")


@functools.lru_cache(maxsize=64)
def _cursor_class(factory: type[sqlite3.Cursor]) -> type[ResilientCursor]:
    """A subclass of the caller's cursor class whose statements go through the proxy
    (theirs first, so their overrides still run, then :class:`ResilientCursor`'s)."""
    return type(factory.__name__, (factory, ResilientCursor), {"__module__": factory.__module__, "__slots__": ()})


@dataclass
class _SetUp:
    """What opening a connection found and did; becomes the connection's read-only state."""

    path: str | None
    read_only: bool
    timeout: float
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    """When connect() began: set-up waits for locks within one budget from here."""
    filesystem: FileSystem | None = None
    journal_mode: str = "memory"
    journal_mode_reason: str = ""
    pragmas: dict[str, PragmaValue] = field(default_factory=dict)
    fallback: str | None = None
    mismatches: list[str] = field(default_factory=list)


class ResilientConnection(_ConnectionProxy):
    """A :class:`sqlite3.Connection` that waits for locks where that is safe.

    Made by :func:`connect`. Everything of the real connection is there; in addition:

    - ``execute``/``executemany``/``commit`` and the statements of cursors from
      :meth:`cursor` wait for a locked database within the connection's :attr:`timeout`,
      retrying only where nothing can have been applied: the connection was not in a
      transaction before the call and is not in one after the failure (``commit``: the
      transaction is still open). Inside a transaction a lock error propagates at once,
      since only re-running the whole transaction is correct then.
    - :attr:`journal_mode`, :attr:`journal_mode_reason`, :attr:`pragmas`,
      :attr:`filesystem`, :attr:`read_only` tell what the connection runs with.
    """

    def __init__(self, connection: sqlite3.Connection, setup: _SetUp) -> None:
        super().__init__(connection)
        self._self_setup = setup
        self._self_guard = guard_read_only(connection) if setup.read_only else None
        self._self_busy_ms = int(setup.pragmas["busy_timeout"])  # SQLite's own handler, at most
        self._self_busy_now = self._self_busy_ms  # what it is set to now
        self._self_fresh = True  # nothing ran since the transaction (autocommit=False) opened
        self._self_ended = 0  # transactions ended through this proxy (commit, rollback)
        self._self_counters = LockCounters()
        self._self_gate: WriteGate | Literal[False] | None = None  # False: none for this database
        self._self_wal_check_at = 0.0  # when the next commit looks at the WAL's size
        self._self_gate_by_statement = False  # the gate is held for a BEGIN statement's transaction
        _live_connections.add(self)

    # -- what connect() set up -------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether the connection was opened read-only (``mode=ro`` and ``query_only``)."""
        return self._self_setup.read_only

    @property
    def timeout(self) -> float:
        """The lock-wait budget in seconds of one operation."""
        return self._self_setup.timeout

    @property
    def settings(self) -> Settings:
        """The settings the connection was opened with."""
        return self._self_setup.settings

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported after set-up (``"wal"``, ``"delete"``, ...)."""
        return self._self_setup.journal_mode

    @property
    def journal_mode_reason(self) -> str:
        """Why the connection runs in :attr:`journal_mode`, e.g. ``"read-only filesystem"``."""
        return self._self_setup.journal_mode_reason

    @property
    def pragmas(self) -> Mapping[str, PragmaValue]:
        """The pragmas set at connect, with the values SQLite reported back."""
        return MappingProxyType(self._self_setup.pragmas)

    @property
    def filesystem(self) -> FileSystem | None:
        """The filesystem of the database file; ``None`` for in-memory databases."""
        return self._self_setup.filesystem

    @property
    def database_path(self) -> str | None:
        """The absolute path of the database file; ``None`` for in-memory databases."""
        return self._self_setup.path

    @property
    def lock_stats(self) -> LockStats:
        """How often and how long this connection met locks so far (a snapshot)."""
        return self._self_counters.snapshot()

    # -- statements ----------------------------------------------------------------------

    def _self_check_fork(self) -> None:
        """Raise ``ForkedConnectionError`` in a forked child (the wrapped object raises)."""
        self.__wrapped__.in_transaction  # noqa: B018 - the attribute access is the check

    def _self_run(self, cursor: sqlite3.Cursor, sql: str, parameters: Any) -> None:
        """Run one statement inside a transaction or a decorated call (see
        :func:`_run_statement` for the rest): inside a transaction a lock error propagates."""
        connection = self.__wrapped__
        scope = current_scope()
        if scope is not None:
            scope.touch(connection, self)
        started = time.monotonic()
        if connection.in_transaction:
            self._self_fresh = False
            try:
                _execute(cursor, sql, parameters)
            except sqlite3.OperationalError as error:
                if is_transient(error):
                    self._self_lock_error_in_transaction(error, started, scope)
                raise
            finally:
                if self._self_gate_by_statement:
                    self._self_statement_ended()  # a COMMIT, ROLLBACK or SQLite's own rollback
            return
        try:
            _execute(cursor, sql, parameters)
        except sqlite3.OperationalError as error:
            if not self._self_retried(error, started, cursor, sql, parameters):
                raise

    def _self_retried(
        self, error: sqlite3.OperationalError, started: float, cursor: sqlite3.Cursor, sql: str, parameters: Any
    ) -> bool:
        """A statement begun outside a transaction failed: retry it while nothing was applied.
        Return ``False`` when *error* is to propagate as it is (the caller re-raises it, so
        that no frame of the library keeps it, and the cursor, alive in a reference cycle)."""
        connection = self.__wrapped__
        if not is_transient(error):
            return False
        if connection.in_transaction:
            self._self_lock_error_in_transaction(error, started, current_scope())
            return False
        self._self_retry(
            error, started, "execute", lambda: _execute(cursor, sql, parameters), lambda: not connection.in_transaction
        )
        return True

    def _self_run_many(self, cursor: sqlite3.Cursor, sql: str, seq_of_parameters: Iterable[Any]) -> None:
        """Like :meth:`_self_run` for ``executemany``: retried only if no row was changed
        and the parameters can be iterated again (a list or tuple, not an iterator)."""
        connection = self.__wrapped__
        if not connection.in_transaction and sql[:1] in _MAYBE_WRITE:
            begin = _write_begin(self, connection, sql)
            if begin is not None and begin is not sql:
                self._self_begin_implicitly(begin, lambda: self._self_run_many_now(cursor, sql, seq_of_parameters))
                return
        self._self_run_many_now(cursor, sql, seq_of_parameters)

    def _self_run_many_now(self, cursor: sqlite3.Cursor, sql: str, seq_of_parameters: Iterable[Any]) -> None:
        connection = self.__wrapped__
        scope = current_scope()
        if scope is not None:
            scope.touch(connection, self)
        started = time.monotonic()
        changes = connection.total_changes
        replayable = not connection.in_transaction and isinstance(seq_of_parameters, Sequence)
        self._self_fresh = False
        try:
            _executemany(cursor, sql, seq_of_parameters)
        except sqlite3.OperationalError as error:
            if not is_transient(error):
                raise
            if not replayable or connection.in_transaction or connection.total_changes != changes:
                self._self_lock_error_in_transaction(error, started, scope)
                raise
            first = error
        else:
            return

        def nothing_applied() -> bool:
            return not connection.in_transaction and connection.total_changes == changes

        self._self_retry(
            first, started, "executemany", lambda: _executemany(cursor, sql, seq_of_parameters), nothing_applied
        )

    def _self_clearer(self, error: sqlite3.DatabaseError) -> sqlite3.DatabaseError | None:
        """The error to raise instead of *error* (caused by it), or ``None``: for a statement
        a read-only connection refused, one that says what and why; for a damaged or vanished
        file, one that names it (and says when its filesystem now refuses writes, as after
        the kernel turned it read-only)."""
        guard = self._self_guard
        clear = guard.explain(error) if guard is not None else None
        path = self._self_setup.path
        if clear is None and path is not None and _file_error(error) and path not in str(error):
            clear = _naming(error, path, " on a filesystem that is read-only now" if _refuses_writers(path) else "")
        if clear is not None:
            clear.__cause__, clear.__suppress_context__ = error, True
        return clear

    def _self_lock_error_in_transaction(self, error: BaseException, started: float, scope: Scope | None) -> None:
        """A lock error that cannot be retried here propagates: report it, and tell the
        decorated call (if any) whose error it is."""
        if scope is not None:
            scope.lock_error_in(self)
        report_lock_error(
            "execute",
            error,
            started=started,
            budget=self.timeout,
            database=self.database_path,
            counters=self._self_counters,
        )

    def _self_retry(
        self,
        first: sqlite3.OperationalError,
        started: float,
        what: str,
        again: Callable[[], T],
        safe: Callable[[], bool],
    ) -> T:
        """The slow path: retry within what is left of the budget (and of the decorated
        call's, if any), with SQLite's busy handler bounded by that rest."""
        scope = current_scope()
        budget = self.timeout if scope is None else min(self.timeout, scope.deadline - started)
        try:
            return retry_after_lock_error(
                first,
                again,
                started=started,
                timeout=budget,
                what=what,
                retry_if=safe,
                before_retry=self._self_bound_busy,
                database=self.database_path,
                counters=self._self_counters,
            )
        except BaseException:
            if scope is not None:
                scope.lock_error_in(self)
            raise
        finally:
            self._self_set_busy(self._self_busy_ms)

    def _self_begin(self, sql: str, *, write: bool) -> bool:
        """Run ``BEGIN`` (*sql*) within the budget; write transactions first queue on the
        database's write gate, when there is one. Return whether the gate is held (the
        caller releases it with :meth:`_self_leave_gate` when the transaction ends)."""
        connection = self.__wrapped__
        scope = current_scope()
        if scope is not None:
            scope.touch(connection, self)
        started = time.monotonic()
        budget = self.timeout if scope is None else min(self.timeout, scope.deadline - started)
        gate = self._self_writer_gate() if write else None
        try:
            if gate is not None and not gate.try_acquire():
                self._self_queue(gate, started, budget)
            try:
                connection.execute(sql)
            except sqlite3.OperationalError as error:
                if not is_transient(error) or connection.in_transaction:
                    raise
                self._self_retry(
                    error, started, "BEGIN", lambda: connection.execute(sql), lambda: not connection.in_transaction
                )
        except sqlite3.DatabaseError as error:
            self._self_leave_gate()
            raise self._self_clearer(error) or error  # noqa: B904 - the cause is set
        except BaseException:
            self._self_leave_gate()
            raise
        finally:
            self._self_set_busy(self._self_busy_ms)
        return gate is not None and gate.held

    def _self_begin_statement(self, sql: str) -> None:
        """Run a ``BEGIN IMMEDIATE``/``EXCLUSIVE`` statement like :func:`db_transaction`'s:
        queued at the write gate, within the budget. The gate is let go when the transaction
        ends: at ``commit()``/``rollback()``, or at the first statement that finds it ended."""
        self._self_gate_by_statement = self._self_begin(sql, write=True)

    def _self_begin_implicitly(self, begin: str, run: Callable[[], None]) -> None:
        """Run a DML statement outside a transaction (*run*), whose implicit transaction
        (:mod:`sqlite3`'s legacy mode sends *begin* first) takes its turn at the write gate
        like a ``BEGIN`` statement's (see :meth:`_self_begin_statement`).

        With the gate free, the statement runs as in :mod:`sqlite3`, its ``BEGIN`` included,
        and the gate is held until the transaction ends. Otherwise *begin* is sent here,
        queued at the gate within the budget, before the statement; if the statement then
        fails having changed nothing (it may not even have compiled, and then
        :mod:`sqlite3` would have begun nothing), that transaction is rolled back: it holds
        no change, only the lock."""
        gate = self._self_gate
        if gate and gate.try_acquire():
            self._self_gate_by_statement = True
            try:
                run()
            finally:
                self._self_statement_ended()  # nothing began: let the gate go
            return
        connection = self.__wrapped__
        self._self_begin_statement(begin)
        changes = connection.total_changes
        try:
            run()
        except BaseException:
            if connection.in_transaction and connection.total_changes == changes:
                connection.rollback()
            self._self_statement_ended()
            raise

    def _self_statement_ended(self) -> None:
        """Let the next writer in if the transaction a ``BEGIN`` statement opened has ended."""
        if self._self_gate_by_statement and not self.__wrapped__.in_transaction:
            self._self_gate_by_statement = False
            self._self_leave_gate()

    def _self_queue(self, gate: WriteGate, started: float, budget: float) -> None:
        """Wait at the write gate within *budget*: reported as a queued writer and, when the
        wait ends, as a lock wait (counted in :attr:`lock_stats`). Without the gate in time,
        SQLite's lock decides (with what is left)."""
        queued = report_queued(started, budget, self.database_path, self._self_counters)
        gate.acquire(budget)
        queued.done(None, surfaced=False)
        waited = time.monotonic() - started
        if waited * 1000 > BUSY_SLACK_MS:
            self._self_bound_busy(budget - waited)

    def _self_writer_gate(self) -> WriteGate | None:
        """The write gate of this connection's database, opened on first use."""
        gate = self._self_gate
        if gate is None:
            setup = self._self_setup
            usable = (
                setup.settings.writer_queue
                and not setup.read_only
                and setup.path is not None
                and setup.filesystem is not None
                and not setup.filesystem.network
                and not setup.filesystem.read_only
            )
            gate = (open_gate(setup.path) if usable and setup.path is not None else None) or False
            if gate:
                weakref.finalize(self, gate.close)
            self._self_gate = gate
        return gate or None

    def _self_leave_gate(self) -> None:
        if self._self_gate:
            self._self_gate.release()

    def _self_bound_busy(self, seconds: float) -> None:
        """Let SQLite's busy handler wait at most *seconds* (and at most its own setting)."""
        self._self_set_busy(busy_milliseconds(seconds, self._self_busy_ms))

    def _self_set_busy(self, milliseconds: int) -> None:
        if milliseconds != self._self_busy_now:
            self.__wrapped__.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
            self._self_busy_now = milliseconds

    @overload
    def cursor(self, factory: None = None) -> ResilientCursor: ...
    @overload
    def cursor(self, factory: Callable[[sqlite3.Connection], CursorT]) -> CursorT: ...
    def cursor(self, factory: Callable[[sqlite3.Connection], sqlite3.Cursor] | None = None) -> sqlite3.Cursor:
        """Return a :class:`ResilientCursor`; with *factory*, which must be a subclass of
        :class:`sqlite3.Cursor` (not any callable, as :mod:`sqlite3` allows), an instance of
        a subclass of both."""
        if factory is None:
            cursor = self.__wrapped__.cursor(ResilientCursor)
        elif isinstance(factory, type) and issubclass(factory, sqlite3.Cursor):
            cursor = self.__wrapped__.cursor(_cursor_class(factory))
        else:
            raise TypeError(f"cursor factory must be a subclass of sqlite3.Cursor, not {factory!r}")
        cursor._resilient = self
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> ResilientCursor:
        """Execute one statement on a new cursor and return the cursor.

        A lock error is retried within the budget only where nothing can have been
        applied; inside an open transaction it propagates at once.
        """
        connection = self.__wrapped__
        cursor = connection.cursor(ResilientCursor)
        cursor._resilient = self
        _run_statement(self, connection, cursor, sql, parameters)
        return cursor

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> ResilientCursor:
        """Execute a statement once per parameter set on a new cursor and return it.

        Retried on a lock error only where no row was changed and *seq_of_parameters* is a
        list or tuple (an iterator cannot be replayed).
        """
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str, /) -> ResilientCursor:
        """Execute a script of several statements on a new cursor and return it.

        Never retried: when a statement of the script meets a lock after SQLite's busy
        handler gave up, earlier statements may have taken effect. To make a script
        atomic and retryable, run its statements in a transaction inside a function
        decorated with ``@retry_on_lock``.
        """
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        """Commit; a ``COMMIT`` that meets a lock keeps the transaction open and is retried
        within the budget."""
        try:
            self._self_finish(self.__wrapped__.commit)
        finally:
            self._self_statement_ended()
        self._self_fresh = True

    def rollback(self) -> None:
        """Roll back, as :meth:`sqlite3.Connection.rollback`."""
        try:
            self.__wrapped__.rollback()
        finally:
            self._self_statement_ended()
        self._self_fresh = True
        self._self_ended += 1

    def _self_finish(self, commit: Callable[[], object]) -> None:
        """Run *commit*; while it meets a lock and the transaction stays open, retry it."""
        connection = self.__wrapped__
        scope = current_scope()
        if scope is not None:
            scope.touch(connection, self)
        started = time.monotonic()
        try:
            commit()
        except sqlite3.OperationalError as error:
            if not is_transient(error):
                raise
            if not connection.in_transaction:
                self._self_lock_error_in_transaction(error, started, scope)
                raise
            self._self_retry(error, started, "commit", commit, lambda: connection.in_transaction)
        self._self_ended += 1
        self._self_watch_wal()

    def _self_watch_wal(self) -> None:
        """After a commit, at most once a second: warn if the WAL keeps growing (see
        ``Settings.wal_warn_bytes``). A failing check never fails the commit before it."""
        now = time.monotonic()
        if now < self._self_wal_check_at:
            return
        self._self_wal_check_at = now + 1.0
        setup = self._self_setup
        if setup.settings.wal_warn_bytes is None or setup.path is None or setup.read_only:
            return
        try:  # on the wrapped connection: not a statement of the caller's transaction
            check_growth(self.__wrapped__, setup.path, setup.settings.wal_warn_bytes)
        except sqlite3.Error as error:
            logger.debug("WAL check of %r failed: %s", setup.path, error)

    def set_authorizer(self, authorizer_callback: Authorizer | None, /) -> None:
        """:meth:`sqlite3.Connection.set_authorizer`; on a read-only connection, the callback
        is asked after the library's own guard, which it cannot lift."""
        if self._self_guard is None:
            self.__wrapped__.set_authorizer(authorizer_callback)
        else:
            self._self_guard.chained = authorizer_callback

    def checkpoint(self, mode: CheckpointMode = "passive") -> CheckpointResult:
        """Checkpoint the WAL (see :func:`sqlite_resilient.checkpoint`)."""
        return checkpoint(self, mode)

    def close(self) -> None:
        """:meth:`sqlite3.Connection.close`, and let go of the write gate's side file."""
        gate = self._self_gate
        self._self_gate, self._self_gate_by_statement = False, False
        if gate:
            gate.close()
        self.__wrapped__.close()

    def transaction(self, mode: TransactionMode | None = None) -> Transaction[ResilientConnection]:
        """``with conn.transaction():`` is ``with db_transaction(conn):`` (see :func:`db_transaction`)."""
        return Transaction(self, mode)

    # -- protocols -------------------------------------------------------------------------

    def __enter__(self) -> ResilientConnection:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> Literal[False]:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.rollback()
                raise
        self._self_fresh = True
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)  # with exc: rolls back
        finally:
            self._self_statement_ended()

    def backup(self, target: sqlite3.Connection, **kwargs: Any) -> None:
        """:meth:`sqlite3.Connection.backup`; *target* may be a :class:`ResilientConnection`."""
        if isinstance(target, ResilientConnection):
            target = target.__wrapped__
        self.__wrapped__.backup(target, **kwargs)

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self.__wrapped__).__name__!r} object")

    __reduce__ = __reduce_ex__  # type: ignore[assignment]

    def __copy__(self) -> NoReturn:
        raise TypeError(f"cannot copy {type(self.__wrapped__).__name__!r} object")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__copy__()


# -- fork safety ---------------------------------------------------------------------------

_live_connections: weakref.WeakSet[ResilientConnection] = weakref.WeakSet()
_inherited: list[sqlite3.Connection] = []  # kept open, never closed, in a forked child


class _ForkedConnection:
    """Stands in for a connection inherited through ``fork()``: every use raises."""

    def __init__(self, parent: int) -> None:
        self._parent = parent

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # protocol lookups (wrapt's, copy's, ...) find nothing
            raise AttributeError(name)
        raise ForkedConnectionError(
            f"this connection was opened in process {self._parent} and cannot be used in "
            f"process {os.getpid()} after fork(); open a new connection in the child"
        )


def _guard_fetch(name: str) -> Callable[..., Any]:
    unguarded = getattr(sqlite3.Cursor, name)

    def fetch(self: ResilientCursor, *args: Any) -> Any:
        self._resilient._self_check_fork()
        return unguarded(self, *args)

    fetch.__name__ = name
    fetch.__doc__ = f"``{name}`` of the cursor, refused in a child for an inherited connection."
    return fetch


def _after_fork_in_child() -> None:
    """Make every connection inherited through ``fork()`` raise on use, cursors included.

    Only the child pays: its cursor fetches start checking their connection from now on;
    the parent's code paths are unchanged.
    """
    parent = os.getppid()
    inherited = list(_live_connections)
    _live_connections.clear()
    for conn in inherited:
        # Closing the inherited connection here could disturb the parent's locks and WAL
        # files, so it is kept, unused, for the life of the child.
        _inherited.append(conn.__wrapped__)
        conn.__wrapped__ = _ForkedConnection(parent)  # type: ignore[assignment]  # raises on use
        if conn._self_gate:  # its locks are the parent's: close this copy, never unlock
            conn._self_gate.forget()
            conn._self_gate = False
    if inherited:
        for name in ("fetchone", "fetchmany", "fetchall", "__next__"):
            setattr(ResilientCursor, name, _guard_fetch(name))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- connect -------------------------------------------------------------------------------

_warned: set[tuple[str | None, str]] = set()


def connect(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    timeout: float | None = None,
    *,
    read_only: bool = False,
    pragmas: Mapping[str, object] | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> ResilientConnection:
    """Open a SQLite database, as :func:`sqlite3.connect`, and return a :class:`ResilientConnection`.

    A file database is switched to WAL with the pragmas of *settings* (see
    :data:`DEFAULT_PRAGMAS`) unless WAL cannot work there (read-only or network
    filesystem, read-only file or directory): then a rollback-journal mode is kept and one
    :class:`WALFallbackWarning` names the reason. Every pragma is validated before any SQL
    runs and read back after it is set. Set-up waits for other processes' locks within the
    budget.

    Args:
        database: A file name (str, bytes or path-like), ``":memory:"``, or with
            ``uri=True`` a ``file:`` URI.
        timeout: Total lock-wait budget in seconds of one operation; defaults to
            ``settings.timeout`` (30 s), or ``settings.read_only_timeout`` (5 s) for
            read-only connections.
        read_only: Open with ``mode=ro`` and ``query_only``; never creates a file. For API
            and dashboard reads.
        pragmas: Pragmas overriding or extending those of *settings*.
        settings: A :class:`Settings`; default :data:`DEFAULT_SETTINGS`.
        **kwargs: Everything else :func:`sqlite3.connect` accepts (``uri``,
            ``detect_types``, ``isolation_level``, ``check_same_thread``, ``factory``,
            ``cached_statements``, ``autocommit``). Unless ``isolation_level`` or
            ``autocommit`` is given, implicit transactions begin ``IMMEDIATE`` on write
            connections, and read-only connections have none (``isolation_level=None``:
            the statements that would open one are writes, which are refused, and the
            transaction would stay open, pinning a stale snapshot).

    Raises:
        ConfigurationError: a pragma, setting or argument is invalid (nothing was opened).
        DatabaseLockedError: set-up could not get a lock within the budget.
        UnreadableWALError: a WAL database on a read-only filesystem has changes in its
            ``-wal`` file that cannot be read.
        sqlite3.OperationalError: SQLite could not open the database; the message names it.
    """
    settings = DEFAULT_SETTINGS if settings is None else settings
    if not isinstance(settings, Settings):
        raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
    if not isinstance(read_only, bool):
        raise ConfigurationError(f"read_only must be a bool, not {type(read_only).__name__}")
    if timeout is None:
        timeout = settings.read_only_timeout if read_only else settings.timeout
    timeout = _check_timeout("timeout", timeout)
    explicit = validate_all(pragmas) if pragmas is not None else {}
    uri = kwargs.pop("uri", False)
    target = parse_database(database, bool(uri))
    read_only = read_only or target.param("mode") == "ro"
    # Python 3.12+: applied after set-up, since autocommit=False opens a transaction at once
    autocommit = kwargs.pop("autocommit", _UNSET) if sys.version_info >= (3, 12) else _UNSET
    if autocommit is _UNSET and "autocommit" not in kwargs:
        if read_only:  # every implicit BEGIN precedes a write, which fails: it would stay open
            kwargs.setdefault("isolation_level", None)
        elif settings.begin_immediate:
            kwargs.setdefault("isolation_level", "IMMEDIATE")

    setup = _SetUp(path=target.path, read_only=read_only, timeout=timeout, settings=settings)
    wanted = {**settings.pragmas, **explicit}
    if read_only:
        for name in explicit:
            if not PRAGMAS[name].per_connection:
                raise ConfigurationError(
                    f"pragma {name!r} changes the database file and cannot be set on a read-only connection"
                )
        wanted = {name: value for name, value in wanted.items() if PRAGMAS[name].per_connection}
        wanted["query_only"] = True

    try:
        raw = _open_and_set_up(database, uri, target, setup, wanted=wanted, explicit=explicit, kwargs=kwargs)
        try:
            if sys.version_info >= (3, 12) and autocommit is not _UNSET:
                raw.autocommit = autocommit
        except BaseException:
            raw.close()
            raise
    except sqlite3.Error as error:
        if isinstance(error, ResilientError) or target.path is None or target.path in str(error):
            raise
        raise _naming(error, target.path) from error

    try:  # warnings may be errors (-W error): the connection must not leak then
        if setup.fallback is not None:
            _report_fallback(setup)
        for mismatch in setup.mismatches:
            warnings.warn(mismatch, PragmaNotAppliedWarning, stacklevel=2)
    except BaseException:
        raw.close()
        raise
    return ResilientConnection(raw, setup)


def _open_and_set_up(
    database: object,
    uri: object,
    target: Target,
    setup: _SetUp,
    *,
    wanted: dict[str, PragmaValue],
    explicit: dict[str, PragmaValue],
    kwargs: dict[str, Any],
) -> sqlite3.Connection:
    """Open the database and apply the pragmas; close it again if set-up fails."""
    if target.path is None:
        if "journal_mode" not in explicit:
            wanted.pop("journal_mode", None)
        setup.journal_mode_reason = "in-memory database"
        raw = _open(database, uri, setup.timeout, kwargs)
    else:
        setup.filesystem = filesystem_of(target.path)
        if wanted.get("journal_mode") == "wal" and not setup.read_only:
            setup.fallback = wal_blocker(target.path, setup.filesystem)
        raw = _open_file(database, uri, target, setup, kwargs)
    try:
        _apply_pragmas(raw, wanted, setup)
    except BaseException:
        raw.close()
        raise
    return raw


def _naming(error: ErrorT, path: str, why: str = "") -> ErrorT:
    """The same kind of error, with the database file named in its message (and *why*)."""
    named = type(error)(f"{error} (database {path!r}{why})")
    copy_sqlite_error_code(error, named)
    return named


def _open(database: object, uri: object, timeout: float, kwargs: dict[str, Any]) -> sqlite3.Connection:
    sqlite3_connect: Callable[..., sqlite3.Connection] = sqlite3.connect
    return sqlite3_connect(database, timeout=timeout, uri=uri, **kwargs)


def _open_file(
    database: object, uri: object, target: Target, setup: _SetUp, kwargs: dict[str, Any]
) -> sqlite3.Connection:
    """Open a file database; read-only ones (and any on a read-only filesystem) through a
    correctly encoded ``mode=ro`` URI, with ``immutable=1`` only where that cannot miss
    WAL content."""
    path, filesystem = target.path, setup.filesystem
    if path is None or filesystem is None:  # pragma: no cover - in-memory targets never get here
        raise AssertionError("a file target has a path and a filesystem")
    if not (setup.read_only or filesystem.read_only):
        return _open(database, uri, setup.timeout, kwargs)
    params = {**{k: v for k, v in target.params if k != "mode"}, "mode": "ro"}
    try:
        return _open_and_read(to_uri(path, params), setup, kwargs)
    except sqlite3.OperationalError as error:
        if not _is_cantopen(error):
            raise
        _check_immutable_is_safe(path, filesystem, error)
    setup.journal_mode_reason = "read-only filesystem, WAL database without -shm or WAL content: opened immutable"
    return _open_and_read(to_uri(path, {**params, "immutable": "1"}), setup, kwargs)


def _open_and_read(uri: str, setup: _SetUp, kwargs: dict[str, Any]) -> sqlite3.Connection:
    """Open *uri* and read the schema: a read-only open that cannot work fails here."""
    raw = _open(uri, True, setup.timeout, kwargs)
    try:
        call_within_budget(
            lambda: raw.execute("PRAGMA schema_version").fetchone(),
            timeout=setup.timeout,
            started=setup.started,
            what="connection set-up",
            retryable=functools.partial(_worth_a_wait, setup),
        )
    except BaseException:
        raw.close()
        raise
    return raw


def _worth_a_wait(setup: _SetUp, error: BaseException) -> bool:
    """Whether connection set-up waits after *error*: a lock, or a database that a writer
    must recover first (a hot journal) where a writer can. Not on a read-only filesystem,
    even one that ``statvfs`` does not call so (the kernel turned it read-only after an I/O
    error): there, SQLite's read-only error is raised at once."""
    if is_lock_error(error):
        return True
    if not is_transient(error):
        return False
    return not (setup.filesystem is not None and setup.filesystem.read_only) and not _refuses_writers(setup.path)


def _refuses_writers(path: str | None) -> bool:
    """Whether the filesystem of *path* refuses to open it for writing (``EROFS``)."""
    if path is None:
        return False
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as error:
        return error.errno == errno.EROFS
    return False


def _check_immutable_is_safe(path: str, filesystem: FileSystem, error: sqlite3.OperationalError) -> None:
    """Raise a clear error for a read-only open that failed, unless the file is a WAL
    database on a read-only filesystem with no WAL content, which ``immutable=1`` reads."""
    if not os.path.exists(path):
        raise sqlite3.OperationalError(
            f"unable to open database file {path!r}: it does not exist, and a read-only connection never creates it"
        ) from error
    if not (filesystem.read_only and is_wal_file(path)):
        raise error
    pending = wal_content_bytes(path)
    if pending:
        raise UnreadableWALError(
            f"cannot read WAL database {path!r} on a read-only filesystem: its -wal file holds "
            f"{pending} bytes of changes, and without a usable -shm file they cannot be read; "
            "checkpoint it where it is writable (PRAGMA wal_checkpoint(TRUNCATE))"
        ) from error


_CANTOPEN = {SQLITE_CANTOPEN: "unable to open database file"}
_FILE_ERRORS = {**_CANTOPEN, 10: "disk I/O error", 11: "database disk image is malformed", 26: "file is not a database"}
"""SQLite's primary codes (and messages) that are about the file itself: CANTOPEN, IOERR,
CORRUPT, NOTADB (https://www.sqlite.org/rescode.html)."""


def _has_primary_code(error: sqlite3.Error, codes: Mapping[int, str]) -> bool:
    """Whether *error* is one of *codes* (primary result codes): by its code where it
    carries one (Python 3.11+), else by SQLite's message for the code."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in codes
    return str(error) in codes.values()


def _file_error(error: sqlite3.Error) -> bool:
    """Whether *error* is about the database file (damaged, vanished, unreadable)."""
    return _has_primary_code(error, _FILE_ERRORS)


def _is_cantopen(error: sqlite3.Error) -> bool:
    return _has_primary_code(error, _CANTOPEN)


_reported: dict[tuple[str, PragmaValue], PragmaValue] = {}
"""What SQLite reported back for a per-connection pragma set to a value in this process:
the same library reports the same again, so later connections skip the read-back."""


def _apply_pragmas(raw: sqlite3.Connection, wanted: dict[str, PragmaValue], setup: _SetUp) -> None:
    """Set each pragma (busy_timeout first, then journal_mode), read it back, record it.

    Per-connection pragmas whose read-back this process has seen are set together in one
    script after journal_mode, without reading them back again.
    """
    busy_ms = int(min(setup.timeout * 1000, _MAX_BUSY_MS))
    bounded = False

    def bound_busy_handler(left: float) -> None:
        nonlocal bounded
        bounded = True
        raw.execute(f"PRAGMA busy_timeout = {busy_milliseconds(left, busy_ms)}")

    def first_value(sql: str) -> Any:
        row = raw.execute(sql).fetchone()
        return row[0] if row else None

    def run(sql: str, *, script: bool = False) -> Any:
        return call_within_budget(
            (lambda: raw.executescript(sql)) if script else (lambda: first_value(sql)),
            timeout=setup.timeout,
            started=setup.started,
            what="connection set-up",
            retryable=functools.partial(_worth_a_wait, setup),
            before_retry=bound_busy_handler,
        )

    wanted = {"busy_timeout": busy_ms, **wanted}
    journal = PRAGMAS["journal_mode"]
    requested = wanted.pop("journal_mode", None)
    known: list[str] = []
    for name, value in wanted.items():
        pragma = PRAGMAS[name]
        reported = _reported.get((name, value)) if pragma.per_connection else None
        if reported is None or name == "busy_timeout":
            run(pragma.set_sql(value))
        if reported is None:
            reported = pragma.from_sqlite(run(f"PRAGMA {name}"))
            if pragma.per_connection:
                _reported[(name, value)] = reported
        elif name != "busy_timeout":
            known.append(pragma.set_sql(value))
        setup.pragmas[name] = reported
        if reported != value:
            setup.mismatches.append(f"pragma {name} was set to {value!r} but SQLite reports {reported!r}")
        if name == "busy_timeout":  # journal_mode next: it is the one that waits for locks
            _set_journal_mode(setup, requested, journal.from_sqlite(run("PRAGMA journal_mode")), run)
    if known:
        run(";".join(known), script=True)  # setting a pragma again is harmless: retryable
    if bounded:
        raw.execute(f"PRAGMA busy_timeout = {int(setup.pragmas['busy_timeout'])}")


def _set_journal_mode(
    setup: _SetUp, requested: PragmaValue | None, current: PragmaValue, run: Callable[[str], Any]
) -> None:
    """Switch to the requested journal mode where that can work, and say why it is what it is."""
    journal = PRAGMAS["journal_mode"]
    if requested is not None and current != requested and setup.fallback is None and not setup.read_only:
        current = journal.from_sqlite(run(journal.set_sql(requested)))
    setup.journal_mode = str(current)
    setup.pragmas["journal_mode"] = current
    if setup.journal_mode_reason:
        pass
    elif setup.read_only:
        setup.journal_mode_reason = "read-only connection: the database's own journal mode"
    elif setup.fallback is not None and current == "wal":
        setup.journal_mode_reason = f"{setup.fallback}; the database was in WAL mode already and is left so"
    elif setup.fallback is not None:
        setup.journal_mode_reason = f"WAL not used: {setup.fallback}"
    elif requested is None:
        setup.journal_mode_reason = "the database's own journal mode (none configured)"
    elif current == requested:
        setup.journal_mode_reason = "as configured"
    else:
        setup.fallback = f"SQLite kept journal_mode={current} when {requested} was requested"
        setup.journal_mode_reason = f"WAL not used: {setup.fallback}"


def _report_fallback(setup: _SetUp) -> None:
    """Report a WAL fallback to the hooks, and warn once per database and reason in this
    process."""
    key = (setup.path, setup.journal_mode_reason)
    first = key not in _warned
    _warned.add(key)
    emit(
        FallbackEvent(
            name=WAL_FALLBACK,
            database=setup.path,
            reason=setup.journal_mode_reason,
            journal_mode=setup.journal_mode,
            first=first,
        )
    )
    if first and setup.settings.warn_on_fallback:
        warnings.warn(
            f"{setup.path!r}: {setup.journal_mode_reason}; journal_mode is {setup.journal_mode!r}",
            WALFallbackWarning,
            stacklevel=3,
        )
