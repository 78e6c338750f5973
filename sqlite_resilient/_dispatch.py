"""The one path every call on a :class:`~sqlite_resilient.ResilientConnection` takes.

A :class:`Dispatcher` belongs to one connection. Every call of the connection, of its
cursors, of ``with conn:``, of :func:`~sqlite_resilient.db_transaction` and of a retry's
rollback goes through :meth:`Dispatcher._dispatch` (statements, the hot path, through
:meth:`Dispatcher.statement`, the same steps with the statement written in):

1. take the thread's turn on a connection that threads share (see ``_turn``): while another
   thread's transaction is open, the call waits within its budget;
2. join the current ``@retry_on_lock`` call, if any (see ``_retry``);
3. make the call, waiting for locks where that is safe (see :meth:`Dispatcher._run`);
4. settle what follows from SQLite's own state (:meth:`Dispatcher._settle`): the write gate
   is let go once no transaction is open, however it ended (``commit()``, a COMMIT
   statement, SQLite's own rollback after an error, ``executescript``'s COMMIT, ``with
   conn:``, a retry's rollback), and the turn passes on.

Nothing is mirrored in flags but one thing SQLite cannot tell: under ``autocommit=False``
(Python 3.12+) a transaction is always open, and whether anything but plain ``SELECT``
statements ran in it since Python opened it (a blob write or a ``CREATE TABLE`` changes no
row count) is noted at the one place every call passes (:attr:`Dispatcher.unused`). Reads
alone leave it to whichever thread writes first: a thread that only reads never commits.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import sqlite3
import sys
import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ._caller import as_caller, caller_stacklevel
from ._cursor import ResilientCursor, SharedCursor, cursor_class
from ._errors import (
    SQLITE_BUSY,
    SQLITE_BUSY_SNAPSHOT,
    AbandonedTransactionWarning,
    DatabaseLockedError,
    ReplicaError,
    is_file_error,
    is_lock_error,
    is_transient,
    restated,
)
from ._gate import WriteGate, open_gate
from ._journal import refuses_writers
from ._readonly import ReadOnlyGuard, guard_read_only
from ._retry import (
    BUSY_SLACK_MS,
    _current,
    busy_milliseconds,
    current_scope,
    is_pep249,
    report_lock_error,
    report_queued,
    retry_after_lock_error,
    rollback,
)
from ._statements import MAYBE_WRITE, is_query, write_begin
from ._turn import Turn
from ._wal import check_growth
from .instrumentation import THREAD_QUEUED, WRITER_QUEUED, LockCounters

if TYPE_CHECKING:
    from ._connection import ResilientConnection
    from ._setup import SetUp

__all__ = ["ATTRIBUTE", "Dispatcher", "FollowerDispatcher", "dispatcher_of"]

logger = logging.getLogger("sqlite_resilient")

T = TypeVar("T")

ATTRIBUTE = "_self_dispatch"
"""Where a :class:`~sqlite_resilient.ResilientConnection` keeps its :class:`Dispatcher`."""

_execute = sqlite3.Cursor.execute
_executemany = sqlite3.Cursor.executemany
_executescript = sqlite3.Cursor.executescript
_LEGACY: int = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
_DATES = frozenset({datetime.date, datetime.datetime})


def _may_warn(sql: str, parameters: Any) -> bool:
    """Whether :mod:`sqlite3` (3.12+) may warn of *parameters*: named placeholders given a
    sequence, or a date or datetime for its deprecated default adapters."""
    if isinstance(parameters, dict):
        values: Iterable[Any] = parameters.values()
    elif not isinstance(parameters, (tuple, list)) or ":" in sql or "@" in sql or "$" in sql:
        return True  # (another kind of sequence or mapping is sqlite3's to read, once)
    else:
        values = parameters
    return not _DATES.isdisjoint(map(type, values))


def _execute_as_application(cursor: sqlite3.Cursor, sql: str, parameters: Any = ()) -> object:
    """:meth:`sqlite3.Cursor.execute`, made from the application's frame when it may warn
    (see ``_caller``)."""
    if parameters and _may_warn(sql, parameters):
        return as_caller(_execute, cursor, sql, parameters)
    return _execute(cursor, sql, parameters)


def _executemany_as_application(cursor: sqlite3.Cursor, sql: str, parameters: Any) -> object:
    """:meth:`sqlite3.Cursor.executemany`, made from the application's frame."""
    return as_caller(_executemany, cursor, sql, parameters)


if sys.version_info >= (3, 12):  # sqlite3 warns of deprecated parameters from 3.12 on
    _run_sql: Callable[[sqlite3.Cursor, str, Any], object] = _execute_as_application
    _run_many: Callable[[sqlite3.Cursor, str, Any], object] = _executemany_as_application
else:
    _run_sql = _execute
    _run_many = _executemany


def dispatcher_of(connection: object) -> Dispatcher | None:
    """The dispatcher of a :class:`~sqlite_resilient.ResilientConnection`; ``None`` for
    anything else."""
    dispatcher = getattr(connection, ATTRIBUTE, None)
    return dispatcher if isinstance(dispatcher, Dispatcher) else None


class Dispatcher:
    """The calls of one connection, and what follows from them."""

    __slots__ = (
        "__weakref__",
        "busy_ms",
        "busy_now",
        "counters",
        "cursor_type",
        "gate",
        "gate_looked_up",
        "guard",
        "proxy",
        "raw",
        "setup",
        "turn",
        "unused",
        "wal_check_at",
    )

    def __init__(self, proxy: ResilientConnection, raw: sqlite3.Connection, setup: SetUp, *, shared: bool) -> None:
        self.proxy = weakref.ref(proxy)
        self.raw = raw
        self.setup = setup
        self.guard: ReadOnlyGuard | None = guard_read_only(raw) if setup.read_only else None
        self.busy_ms = int(setup.pragmas["busy_timeout"])  # SQLite's own handler, at most
        self.busy_now = self.busy_ms  # what it is set to now
        self.counters = LockCounters()
        self.gate: WriteGate | None = None  # opened with the first write transaction
        self.gate_looked_up = False
        self.turn = Turn() if shared else None
        self.cursor_type = SharedCursor if shared else ResilientCursor
        self.unused = is_pep249(raw)
        """Under ``autocommit=False``: nothing but plain ``SELECT`` statements ran in the
        transaction Python opened."""
        self.wal_check_at = 0.0  # when the next commit looks at the WAL's size

    @property
    def database_path(self) -> str | None:
        return self.setup.path

    @property
    def read_only(self) -> bool:
        return self.setup.read_only

    # -- the application's hot calls (each proxy has them bound, see ``_connection``) ------

    def cursor(self, factory: Any = ResilientCursor) -> sqlite3.Cursor:
        """A :class:`ResilientCursor` (making one runs no SQL); with *factory* a subclass of
        :class:`sqlite3.Cursor`, an instance of a subclass of both (theirs first, so that
        their methods run, then the library's). Any other callable is :mod:`sqlite3`'s to
        call with the wrapped connection, and the cursor it returns is the application's:
        its statements go straight to SQLite."""
        if factory is ResilientCursor:
            cursor = self.raw.cursor(self.cursor_type)
        elif isinstance(factory, type) and issubclass(factory, sqlite3.Cursor):
            cursor = self.raw.cursor(cursor_class(factory, self.cursor_type))
        else:
            theirs: sqlite3.Cursor = self.raw.cursor(factory)
            return theirs
        cursor._resilient = self.proxy()  # type: ignore[assignment]
        cursor._dispatch = self
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> ResilientCursor:
        """Execute one statement on a new cursor and return the cursor."""
        cursor = self.raw.cursor(self.cursor_type)
        cursor._resilient = self.proxy()  # type: ignore[assignment]
        cursor._dispatch = self
        self.statement(cursor, sql, parameters, False)
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> ResilientCursor:
        """Execute a statement once per parameter set on a new cursor and return it."""
        cursor = self.raw.cursor(self.cursor_type)
        cursor._resilient = self.proxy()  # type: ignore[assignment]
        cursor._dispatch = self
        self.statement(cursor, sql, parameters, True)
        return cursor

    def commit(self) -> None:
        """Commit (a ``COMMIT`` that meets a lock keeps the transaction open and is retried)."""
        self._dispatch(False, self.commit_transaction, (False,))

    def rollback(self) -> None:
        """Roll back, as :meth:`sqlite3.Connection.rollback`."""
        self._dispatch(False, self._rollback, ())

    # -- the path --------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Make a call of the application's: it may use the open transaction."""
        return self._dispatch(True, fn, args)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Make a call that decides about the open transaction itself (the library's
        transaction control), or that does not touch it (configuring the connection)."""
        return self._dispatch(False, fn, args)

    def _dispatch(self, uses: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        turn = self.turn
        if turn is not None:
            self._take_turn(turn)
        try:
            if _current.get() is not None:
                self._join_scope()
            if uses:
                self.unused = False
            return fn(*args)
        except sqlite3.DatabaseError as error:
            raise self._for_caller(error, None)
        finally:
            self._settle(turn)

    def statement(self, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
        """Run one statement of the application (``many``: once per parameter set): the
        steps of :meth:`_dispatch`, with the commonest statement written in: a read outside
        a transaction runs straight through."""
        turn = self.turn
        if turn is not None:
            self._take_turn(turn)
        try:
            if _current.get() is not None:
                self._join_scope()
            if self.unused and not is_query(sql):  # a read leaves it to the first writer
                self.unused = False
            if many or sql[:1] in MAYBE_WRITE or self.raw.in_transaction:
                self._statement(cursor, sql, parameters, many)
                return
            started = time.monotonic()
            try:
                _run_sql(cursor, sql, parameters)
            except sqlite3.OperationalError as error:
                if not self._retry_outside(error, started, cursor, sql, parameters, many=False, changes=-1):
                    raise  # from here: no frame of ours keeps it alive (and the cursor) in a cycle
        except sqlite3.DatabaseError as error:
            raise self._for_caller(error, sql)
        finally:  # a read outside a transaction takes no gate: only a held one is settled
            if turn is not None or (self.gate is not None and self.gate.held):
                self._settle(turn)

    def script(self, cursor: sqlite3.Cursor, sql_script: str) -> None:
        """Run a script (never retried: earlier statements may have taken effect)."""
        self._dispatch(True, _executescript, (cursor, sql_script))

    def _take_turn(self, turn: Turn) -> None:
        """Step 1: take the turn, waiting within the budget for another thread's transaction
        to end; roll back one whose thread ended without ending it."""
        if not turn.take():
            started = time.monotonic()
            budget = self._budget(started)
            queued = report_queued(
                THREAD_QUEUED,
                "call",
                started=started,
                budget=budget,
                database=self.database_path,
                counters=self.counters,
            )
            if not turn.wait(started + budget):
                waited = time.monotonic() - started
                error = DatabaseLockedError(
                    f"database is locked: a call waited {waited:.2f} s (lock-wait budget {budget:g} s) for "
                    "another thread's transaction on this connection (shared by threads) to end",
                    attempts=1,
                    waited=waited,
                    budget=budget,
                )
                queued.done(error, surfaced=current_scope() is None)
                raise error
            queued.done(None, surfaced=False)
        if turn.orphaned:
            turn.orphaned = False
            try:
                if self.transaction_open():
                    self.rollback_transaction()
                    warnings.warn(
                        "a thread ended with a transaction open on this connection (shared by threads); "
                        "it was rolled back, since only the thread that begins a transaction may end it",
                        AbandonedTransactionWarning,
                        stacklevel=caller_stacklevel(),
                    )
            except BaseException:
                self._settle(turn)
                raise

    def _join_scope(self) -> None:
        """Step 2: join the decorated call of this thread, if any (before anything runs, so
        that it sees whether a transaction was open before)."""
        scope = current_scope()
        if scope is not None:
            scope.join(self)

    def _settle(self, turn: Turn | None) -> None:
        """Step 4: let the write gate go if no transaction is open, and the turn pass on."""
        gate = self.gate
        if gate is not None and gate.held and not self.transaction_open():
            gate.release()
        if turn is not None:
            try:
                still_open = self.transaction_open()
            except sqlite3.ProgrammingError:  # closed
                still_open = False
            turn.leave(still_open)

    def transaction_open(self) -> bool:
        """Whether a transaction with work in it is open (not the empty one that Python
        keeps open under ``autocommit=False``)."""
        return self.raw.in_transaction and not self.unused

    # -- statements ------------------------------------------------------------------------

    def _statement(self, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
        """A statement that may begin a write transaction, or runs inside one."""
        raw = self.raw
        if not raw.in_transaction and sql[:1] in MAYBE_WRITE:
            legacy = getattr(raw, "autocommit", _LEGACY) == _LEGACY  # Python 3.12+
            begin = write_begin(sql, raw.isolation_level if legacy else None)
            if begin == sql:  # a BEGIN statement
                self._begin(sql, write=True)
                return
            if begin is not None and self._writer_gate() is not None:
                self._run_implicitly(begin, cursor, sql, parameters, many)
                return
        self._run(cursor, sql, parameters, many)

    def _run_implicitly(self, begin: str, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
        """Run a DML statement whose implicit transaction takes its turn at the write gate
        like a ``BEGIN`` statement's.

        With the gate free, the statement runs as in :mod:`sqlite3`, its ``BEGIN``
        included. Otherwise *begin* is sent here, queued at the gate within the budget,
        before the statement; if the statement then fails having changed nothing (it may
        not even have compiled, and then :mod:`sqlite3` would have begun nothing), that
        transaction is rolled back: it holds no change, only the lock."""
        gate = self.gate
        if gate is not None and gate.try_acquire():
            self._run(cursor, sql, parameters, many)
            return
        raw = self.raw
        self._begin(begin, write=True)
        changes = raw.total_changes
        try:
            self._run(cursor, sql, parameters, many)
        except BaseException:
            if raw.in_transaction and raw.total_changes == changes:
                raw.execute("ROLLBACK")
            raise

    def _run(self, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
        """Run a statement. Inside a transaction a lock error propagates at once: only
        re-running the whole transaction is correct then. Outside one, see
        :meth:`_retry_outside`."""
        raw = self.raw
        in_transaction = raw.in_transaction
        changes = raw.total_changes if many else 0
        started = time.monotonic()
        try:
            if many:
                _run_many(cursor, sql, parameters)
            else:
                _run_sql(cursor, sql, parameters)
        except sqlite3.OperationalError as error:
            if in_transaction:
                if is_transient(error):
                    self._surfaced(error, started)
                raise
            if not self._retry_outside(error, started, cursor, sql, parameters, many=many, changes=changes):
                raise  # from here: no frame of ours keeps it alive (and the cursor) in a cycle

    def _retry_outside(
        self,
        error: sqlite3.OperationalError,
        started: float,
        cursor: sqlite3.Cursor,
        sql: str,
        parameters: Any,
        *,
        many: bool,
        changes: int,
    ) -> bool:
        """A statement begun outside a transaction failed with *error*: retry it within the
        budget if it was a lock error and nothing can have been applied (no transaction is
        open after the failure; for ``executemany``, no row changed since *changes*, and the
        parameters can be iterated again), and if waiting can help (see :meth:`_cannot_wait`).
        Return whether it was retried, and succeeded; ``False``: the caller re-raises *error*."""
        if not is_transient(error):
            return False
        raw = self.raw
        if raw.in_transaction or (many and not (isinstance(parameters, Sequence) and raw.total_changes == changes)):
            self._surfaced(error, started)
            return False
        if self._cannot_wait(error, started):
            raise self._not_waited(error, started)
        if many:
            again = functools.partial(_run_many, cursor, sql, parameters)
            safe = lambda: not raw.in_transaction and raw.total_changes == changes  # noqa: E731
        else:
            again = functools.partial(_run_sql, cursor, sql, parameters)
            safe = lambda: not raw.in_transaction  # noqa: E731
        self._retry(error, started, "executemany" if many else "execute", again, safe)
        return True

    # -- transactions (called under the turn) ----------------------------------------------

    def begin_transaction(self, mode: str) -> None:
        """``BEGIN <mode>`` for :func:`~sqlite_resilient.db_transaction`: write transactions
        queue at the write gate, and the empty transaction that Python keeps open under
        ``autocommit=False`` is replaced."""
        raw = self.raw
        pep249 = raw.in_transaction  # autocommit=False, nothing ran yet: ours replaces it
        if pep249:
            raw.execute("ROLLBACK")
        try:
            self._begin(f"BEGIN {mode}", write=mode != "DEFERRED")
        except BaseException:
            if pep249 and not raw.in_transaction:
                raw.execute("BEGIN")  # what autocommit=False promises: a transaction is open
            raise
        self.unused = False

    def _begin(self, sql: str, *, write: bool) -> None:
        """Run ``BEGIN`` (*sql*) within the budget; write transactions queue at the database's
        write gate first, when it has one (settled after the call: let go if no transaction
        began)."""
        raw = self.raw
        started = time.monotonic()
        budget = self._budget(started)
        gate = self._writer_gate() if write else None
        try:
            if gate is not None and not gate.try_acquire():
                self._queue(gate, started, budget)
            attempt = time.monotonic()
            try:
                raw.execute(sql)
            except sqlite3.OperationalError as error:
                if not is_transient(error) or raw.in_transaction:
                    raise
                if self._cannot_wait(error, attempt):
                    raise self._not_waited(error, attempt)
                self._retry(error, started, "BEGIN", lambda: raw.execute(sql), lambda: not raw.in_transaction)
        finally:
            self.restore_busy()

    def _queue(self, gate: WriteGate, started: float, budget: float) -> None:
        """Wait at the write gate within *budget*: reported as a queued writer and, when the
        wait ends, as a lock wait (counted in the statistics). Without the gate in time,
        SQLite's lock decides (with what is left)."""
        queued = report_queued(
            WRITER_QUEUED, "BEGIN", started=started, budget=budget, database=self.database_path, counters=self.counters
        )
        gate.acquire(budget)
        queued.done(None, surfaced=False)
        waited = time.monotonic() - started
        if waited * 1000 > BUSY_SLACK_MS:
            self._bound_busy_seconds(budget - waited)

    def commit_transaction(self, statement: bool = False) -> None:
        """Commit: a ``COMMIT`` that meets a lock keeps the transaction open and is retried
        within the budget. *statement*: send ``COMMIT`` itself (a ``db_transaction`` under
        ``autocommit=True``, where ``commit()`` does nothing)."""
        raw = self.raw
        pep249 = is_pep249(raw)
        end: Callable[[], object] = (lambda: raw.execute("COMMIT")) if statement and not pep249 else raw.commit
        started = time.monotonic()
        try:
            end()
        except sqlite3.OperationalError as error:
            if not is_transient(error):
                raise
            if not raw.in_transaction:
                self._surfaced(error, started)
                raise
            self._retry(error, started, "commit", end, lambda: raw.in_transaction)
        self.unused = pep249  # Python opened the next transaction
        self._watch_wal()

    def _rollback(self) -> None:
        """``rollback()``: :mod:`sqlite3`'s, or on a connection that threads share a
        ``ROLLBACK`` statement, since :mod:`sqlite3` before 3.11 resets every cursor of the
        connection at ``rollback()``, other threads' half-read ones included."""
        if self.turn is None:
            self.raw.rollback()
        else:
            rollback(self.raw)
        self.unused = is_pep249(self.raw)

    def rollback_transaction(self) -> None:
        """Roll back the open transaction in every transaction-control mode."""
        rollback(self.raw)
        self.unused = is_pep249(self.raw)

    def leave_with_block(self, failed: bool) -> None:
        """End ``with conn:`` as :mod:`sqlite3` does: commit (rolling back if that fails),
        or roll back when the block failed."""
        if failed:
            self._rollback()
            return
        try:
            self.commit_transaction()
        except BaseException:
            self._rollback()
            raise

    def set_autocommit(self, value: int) -> None:
        """Set ``autocommit`` (Python 3.12+): Python commits, and under ``False`` opens a
        transaction, which nothing ran in yet."""
        raw: Any = self.raw
        raw.autocommit = value
        self.unused = is_pep249(raw)

    def close(self) -> None:
        """Close the connection and the write gate's side file (on a connection shared by
        threads, once no other thread's transaction is open)."""
        self._dispatch(False, self._close, ())

    def _close(self) -> None:
        gate, self.gate = self.gate, None
        self.gate_looked_up = True
        if gate is not None:
            gate.close()
        self.raw.close()

    # -- what a retry scope needs (``_retry.Member``) --------------------------------------

    def owns_transaction(self) -> bool:
        return self.transaction_open()

    def rollback_attempt(self) -> None:
        turn = self.turn
        if turn is None or turn.mine():  # another thread's transaction is not the attempt's
            self.run(self.rollback_transaction)

    def bound_busy(self, milliseconds: int) -> None:
        if milliseconds != self.busy_now:
            self.raw.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
            self.busy_now = milliseconds

    def restore_busy(self) -> None:
        self.bound_busy(self.busy_ms)

    def _bound_busy_seconds(self, seconds: float) -> None:
        self.bound_busy(busy_milliseconds(seconds, self.busy_ms))

    # -- waiting for locks -----------------------------------------------------------------

    def _budget(self, started: float) -> float:
        """What is left at *started* of the budget: the connection's, or the decorated
        call's if that is less."""
        scope = current_scope()
        timeout = self.setup.timeout
        return timeout if scope is None else min(timeout, scope.deadline - started)

    def _retry(
        self,
        first: sqlite3.OperationalError,
        started: float,
        what: str,
        again: Callable[[], object],
        safe: Callable[[], bool],
    ) -> None:
        """Retry within what is left of the budget, with SQLite's busy handler bounded by
        that rest."""
        scope = current_scope()
        try:
            retry_after_lock_error(
                first,
                again,
                started=started,
                timeout=self._budget(started),
                what=what,
                retry_if=safe,
                before_retry=self._bound_busy_seconds,
                database=self.database_path,
                counters=self.counters,
            )
        except BaseException:
            if scope is not None:
                scope.lock_error_in(self)
            raise
        finally:
            self.restore_busy()

    def _cannot_wait(self, error: sqlite3.OperationalError, since: float) -> bool:
        """Whether waiting cannot clear *error*, a lock error met outside a transaction.

        SQLite does not wait for the write lock (its busy handler is not called) while this
        connection has a read of its own open: an unfinished cursor. In WAL mode that
        read's snapshot is older than another connection's commit (``SQLITE_BUSY_SNAPSHOT``)
        or will be by the time the lock is free; with a rollback journal another writer
        waits for that read to end. Either way nothing changes until the cursor is done,
        so retrying would only spin (and hold the write gate) for the whole budget. Where
        the error carries no code (Python < 3.11), that SQLite returned without waiting
        tells the same."""
        code = getattr(error, "sqlite_errorcode", None)
        if code == SQLITE_BUSY_SNAPSHOT:
            return True
        return (code is None or code == SQLITE_BUSY) and self._did_not_wait(error, since)

    def _not_waited(self, error: sqlite3.OperationalError, since: float) -> sqlite3.OperationalError:
        """The error (caused by *error*, reported) for a lock that waiting cannot clear."""
        name = getattr(error, "sqlite_errorname", "SQLITE_BUSY")
        clear = restated(
            error,
            f"database is locked: not retried ({name}): this connection has an unfinished read of its "
            "own (a cursor whose rows were not all fetched) holding a snapshot older than the last "
            "commit, or a lock another writer waits for, and SQLite cannot give it the write lock "
            "until that read ends; fetch or close the cursor first, or read and write in one "
            "db_transaction",
        )
        self._surfaced(clear, since)
        return clear

    def _did_not_wait(self, error: sqlite3.OperationalError, since: float) -> bool:
        """Whether SQLite gave up on the lock of *error* well before its busy handler would."""
        return (
            is_lock_error(error)
            and str(error) == "database is locked"
            and self.busy_now >= 2
            and (time.monotonic() - since) * 1000 < self.busy_now / 2
        )

    def _surfaced(self, error: BaseException, started: float) -> None:
        """A lock error that is not retried here propagates: report it, and tell the
        decorated call (if any) whose error it is."""
        scope = current_scope()
        if scope is not None:
            scope.lock_error_in(self)
        report_lock_error(
            "execute",
            error,
            started=started,
            budget=self.setup.timeout,
            database=self.database_path,
            counters=self.counters,
        )

    # -- the rest --------------------------------------------------------------------------

    def _writer_gate(self) -> WriteGate | None:
        """The write gate of this connection's database, opened on first use."""
        if not self.gate_looked_up:
            self.gate_looked_up = True
            setup = self.setup
            filesystem = setup.filesystem
            if (
                setup.settings.writer_queue
                and not setup.read_only
                and setup.path is not None
                and filesystem is not None
                and not filesystem.network
                and not filesystem.read_only
            ):
                self.gate = open_gate(setup.path)
                if self.gate is not None:
                    weakref.finalize(self, self.gate.close)
        return self.gate

    def _for_caller(self, error: sqlite3.DatabaseError, sql: str | None) -> sqlite3.DatabaseError:
        """The error the application sees for *error*, raised by the statement *sql*: for a
        statement a read-only connection refused, one that says what and why; for a damaged
        or vanished file, one that names it (and says when its filesystem now refuses
        writes, as after the kernel turned it read-only). Both are caused by *error*.
        Tracebacks start at the raise: the library's frames between the application's
        call and SQLite are plumbing."""
        error = error.with_traceback(None)
        guard, path = self.guard, self.setup.path
        clear = guard.explain(error, sql, path) if guard is not None else None
        if clear is not None:
            clear.__cause__, clear.__suppress_context__ = error, True
            return clear
        if path is not None and is_file_error(error) and path not in str(error):
            why = " on a filesystem that is read-only now" if refuses_writers(path) else ""
            return restated(error, f"{error} (database {path!r}{why})")
        return error

    def _watch_wal(self) -> None:
        """After a commit, at most once a second: warn if the WAL keeps growing (see
        ``Settings.wal_warn_bytes``). A failing check never fails the commit before it."""
        now = time.monotonic()
        if now < self.wal_check_at:
            return
        self.wal_check_at = now + 1.0
        setup = self.setup
        if setup.settings.wal_warn_bytes is None or setup.path is None or setup.read_only:
            return
        try:
            check_growth(self.raw, setup.path, setup.settings.wal_warn_bytes)
        except sqlite3.Error as error:
            logger.debug("WAL check of %r failed: %s", setup.path, error)

    def forked(self, stand_in: sqlite3.Connection) -> None:
        """In a child after ``fork()``: every use raises (through *stand_in*), and the write
        gate's descriptors, which share the parent's locks, are closed without unlocking."""
        self.raw = stand_in
        self.turn = None
        gate, self.gate = self.gate, None
        self.gate_looked_up = True
        if gate is not None:
            gate.forget()


class FollowerDispatcher(Dispatcher):
    """The dispatcher of a connection to a Litestream follower's copy (see ``_follower``):
    every call of the application first empties the page cache, since the follower's
    writes do not tell SQLite that cached pages are out of date, and fails if the follower
    replaced the file since the connection opened it. Inside a transaction too: one that has
    read nothing yet (``BEGIN``, or Python's under ``autocommit=False``) holds no lock, and
    emptying the cache of one that holds its lock only costs reads (the pages of an
    unfinished statement stay, and the follower cannot write meanwhile)."""

    __slots__ = ()

    def _begin_read(self) -> None:
        turn = self.turn  # shared by threads: the connection is used in turns, this too
        if turn is not None:
            self._take_turn(turn)
        try:
            self._forget_pages()
        finally:
            if turn is not None:
                self._settle(turn)

    def _forget_pages(self) -> None:
        try:
            self.raw.execute("PRAGMA shrink_memory")
        except sqlite3.ProgrammingError:  # closed, or another thread's: the call says so
            return
        path = self.setup.path or ""
        try:
            now = os.stat(path)
            replaced = (now.st_dev, now.st_ino) != self.setup.follower
        except FileNotFoundError:
            replaced = True
        if replaced:
            raise ReplicaError(
                f"the follower's copy {path!r} was replaced (restored again) since this connection opened it: "
                "it reads the old file, which no longer changes; open a new connection"
            )

    def statement(self, cursor: sqlite3.Cursor, sql: str, parameters: Any, many: bool) -> None:
        self._begin_read()
        super().statement(cursor, sql, parameters, many)

    def _dispatch(self, uses: bool, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if uses:  # the application's call (not transaction control, configuration or close)
            self._begin_read()
        return super()._dispatch(uses, fn, args)
