"""asyncio: :func:`connect` returns an :mod:`aiosqlite` connection with the library's guarantees.

``pip install 'sqlite_resilient[aio]'``, then::

    from sqlite_resilient import aio, retry_on_lock

    @retry_on_lock                                   # re-runs the whole coroutine on a lock error
    async def mark_seen(conn: aio.Connection, item_id: int) -> None:
        async with conn.transaction():               # BEGIN IMMEDIATE ... COMMIT, or ROLLBACK
            async with conn.execute("SELECT seen FROM items WHERE id = ?", (item_id,)) as cursor:
                (seen,) = await cursor.fetchone()
            await conn.execute("UPDATE items SET seen = ? WHERE id = ?", (seen + 1, item_id))

    async with aio.connect("app.db") as conn:        # or read_only=True for API reads
        await mark_seen(conn, 1)

How it works, and why:

- An :class:`aio.Connection <Connection>` *is* an :class:`aiosqlite.Connection` (a
  subclass: code written for aiosqlite accepts it) whose connector is
  :func:`sqlite_resilient.connect`. The :class:`~sqlite_resilient.ResilientConnection` is
  opened, used and closed only in aiosqlite's worker thread, one per connection, so every
  statement gets the library's lock handling there: WAL and validated pragmas, waits
  within the budget where nothing can have been applied, a lock error inside a transaction
  propagating at once. Blocking waits (SQLite's busy handler, the write queue, backoff
  between a statement's attempts) block the worker thread, never the event loop.
- Each call runs in the worker inside a copy of the calling task's
  :mod:`contextvars` context, with the task's :func:`~sqlite_resilient.retry_on_lock` call
  (if any) lent to the worker for that call: its statements keep to the decorated call's
  budget, and a transaction open before the call is seen as such. Hooks are called in the
  worker thread and see the task's context (an OpenTelemetry span, for instance). This
  goes through ``aiosqlite.Connection._execute``, through which aiosqlite 0.20 to 0.22 run
  every call of a connection and its cursors.
- ``@retry_on_lock`` on an ``async def`` rolls back the transactions a failed attempt
  opened on aio connections, and gives their busy handler its own value back at the end,
  *in their worker threads* (:mod:`sqlite3` refuses both from the event loop's thread).
- Not the library's to change: an aiosqlite connection runs one call at a time, in order;
  tasks that share one connection share its transaction. Give each task that writes its
  own connection (as with threads), or serialise them yourself.
- Cancelling a task stops its waiting, not the worker thread: a statement, ``COMMIT`` or
  ``ROLLBACK`` already queued still runs, in order. A :meth:`Connection.transaction` whose
  ``BEGIN`` was cancelled (a timeout while it waited for the lock) is ended, rolled back,
  in the worker right after it began; the task is not kept waiting for that.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Generator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

try:
    import aiosqlite
except ImportError as error:  # the extra is not installed
    raise ModuleNotFoundError(
        "sqlite_resilient.aio needs aiosqlite: pip install 'sqlite_resilient[aio]'", name="aiosqlite"
    ) from error

from . import replicas as _replicas
from ._connection import ResilientConnection
from ._connection import connect as _connect
from ._dispatch import dispatcher_of
from ._pragmas import PragmaValue
from ._retry import current_scope, run_lent
from ._settings import Settings
from ._transaction import Transaction as _SyncTransaction
from ._transaction import TransactionMode, db_transaction
from ._wal import CheckpointMode, CheckpointResult
from .instrumentation import LockStats

if TYPE_CHECKING:
    from typing_extensions import Concatenate, ParamSpec

    from ._journal import FileSystem

    P = ParamSpec("P")
else:
    P = TypeVar("P")

__all__ = ["Connection", "Replicas", "Transaction", "connect"]

T = TypeVar("T")

logger = logging.getLogger("sqlite_resilient")

_STOP_TIMEOUT = 10.0
"""Seconds to wait for a worker thread to end after its connection failed to open."""


class Connection(aiosqlite.Connection):
    """An :class:`aiosqlite.Connection` whose connection is a
    :class:`~sqlite_resilient.ResilientConnection` (made by :func:`connect`).

    Everything of aiosqlite's connection works (``execute``, cursors, ``commit``,
    ``async with``, ...); statements run with the library's lock handling in the worker
    thread. In addition:

    - :meth:`transaction`: ``async with conn.transaction():`` is ``db_transaction``.
    - :meth:`run_sync`: run a function of the :class:`~sqlite_resilient.ResilientConnection`
      in the worker thread, e.g. a whole transaction in one hop.
    - :meth:`checkpoint`, and what the connection runs with: :attr:`read_only`,
      :attr:`timeout`, :attr:`settings`, :attr:`journal_mode`,
      :attr:`journal_mode_reason`, :attr:`pragmas`, :attr:`filesystem`,
      :attr:`database_path`, :attr:`lock_stats` (state read at connect or kept by
      counters: reading them from the event loop runs no SQL), and :attr:`resilient`, the
      connection itself, for use in the worker thread only.
    """

    def __init__(self, connector: Callable[[], ResilientConnection], iter_chunk_size: int = 64) -> None:
        """Wrap *connector*, a function that returns a :class:`~sqlite_resilient.ResilientConnection`,
        run in the worker thread when the connection is awaited (as :class:`aiosqlite.Connection`)."""
        super().__init__(connector, iter_chunk_size)

    # -- opening -----------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Connection]:
        """Start the worker thread and open the database in it.

        When opening fails, wait for the worker thread to end before raising: aiosqlite
        (0.22) stops it without waiting, and a worker that outlives the event loop dies with
        "Event loop is closed".
        """
        try:
            yield from super().__await__()
        except asyncio.CancelledError:
            raise  # the connector may still wait for a lock: do not keep the task waiting
        except BaseException:
            yield from self._sr_worker_ended().__await__()
            raise
        return self

    async def _sr_worker_ended(self) -> None:
        thread = cast("threading.Thread", getattr(self, "_thread", self))  # aiosqlite < 0.22: self is the thread
        await asyncio.get_running_loop().run_in_executor(None, thread.join, _STOP_TIMEOUT)

    async def __aenter__(self) -> Connection:
        """Open the connection (``async with aio.connect(...) as conn:``); closed at exit."""
        return await self

    # -- the worker thread -------------------------------------------------------------------

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the worker thread, inside a copy of the calling
        task's context with its retry scope lent to the worker (see the module docstring);
        every call of aiosqlite's connection and cursors comes through here."""
        function = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
        scope = current_scope()
        dispatcher = dispatcher_of(self._connection)
        if scope is not None and dispatcher is not None:
            scope.worker(dispatcher, self._sr_in_worker)
        context = contextvars.copy_context()
        result = await super()._execute(context.run, run_lent, function)  # type: ignore[no-untyped-call]
        return cast("T", result)

    async def _sr_in_worker(self, fn: Callable[[], None]) -> None:
        """Run *fn* in the worker thread for a retry scope (a rollback, the busy handler's
        own value); nothing once the connection is closed."""
        if self._running and self._connection is not None:
            await super()._execute(fn)  # type: ignore[no-untyped-call]

    def _sr_queue(self, fn: Callable[[], object]) -> None:
        """Queue *fn* for the worker thread, after every call queued so far, without
        waiting for it; an error it raises is logged."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._tx.put_nowait((future, fn))  # aiosqlite 0.20-0.22: the worker's queue of (future, function)

    @property
    def resilient(self) -> ResilientConnection:
        """The :class:`~sqlite_resilient.ResilientConnection` of this connection.

        :mod:`sqlite3` lets it be used only in the worker thread (pass it to a function
        with :meth:`run_sync`); the read-only attributes of what :func:`connect` set up may
        be read anywhere.

        Raises:
            ValueError: the connection is not open (not awaited yet, or closed).
        """
        return cast("ResilientConnection", self._conn)

    async def run_sync(
        self, fn: Callable[Concatenate[ResilientConnection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call ``fn(resilient_connection, *args, **kwargs)`` in the worker thread and return
        its result: several statements, a whole ``db_transaction``, or a function of the
        library that takes a connection (``sqlite_resilient.maintain_wal``) in one hop.

        Inside a coroutine decorated with :func:`~sqlite_resilient.retry_on_lock`, *fn* is
        part of that call (a decorated *fn* is then nested: the coroutine's decorator
        retries); otherwise a decorated *fn* retries in the worker thread.
        """
        return await self._execute(fn, self.resilient, *args, **kwargs)

    # -- transactions ------------------------------------------------------------------------

    def transaction(self, mode: TransactionMode | None = None) -> Transaction:
        """``async with conn.transaction():`` — :func:`~sqlite_resilient.db_transaction`
        for asyncio: ``BEGIN IMMEDIATE`` (waiting for the write lock within the budget, in
        the worker thread), ``COMMIT`` on success, ``ROLLBACK`` and the same exception
        re-raised on error; nested blocks become savepoints. Read-only connections
        default to ``mode="deferred"``.

        Raises:
            ConfigurationError: *mode* is not ``"deferred"``, ``"immediate"`` or ``"exclusive"``.
            ValueError: the connection is not open.
        """
        return Transaction(self, mode)

    async def checkpoint(self, mode: CheckpointMode = "passive") -> CheckpointResult:
        """Checkpoint the WAL (see :func:`sqlite_resilient.checkpoint`)."""
        return await self._execute(self.resilient.checkpoint, mode)

    # -- what connect() set up (no SQL: safe to read from the event loop) --------------------

    @property
    def read_only(self) -> bool:
        """Whether the connection was opened read-only (``mode=ro`` and ``query_only``)."""
        return self.resilient.read_only

    @property
    def timeout(self) -> float:
        """The lock-wait budget in seconds of one operation."""
        return self.resilient.timeout

    @property
    def settings(self) -> Settings:
        """The settings the connection was opened with."""
        return self.resilient.settings

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported after set-up (``"wal"``, ``"delete"``, ...)."""
        return self.resilient.journal_mode

    @property
    def journal_mode_reason(self) -> str:
        """Why the connection runs in :attr:`journal_mode`, e.g. ``"read-only filesystem"``."""
        return self.resilient.journal_mode_reason

    @property
    def pragmas(self) -> Mapping[str, PragmaValue]:
        """The pragmas set at connect, with the values SQLite reported back."""
        return self.resilient.pragmas

    @property
    def filesystem(self) -> FileSystem | None:
        """The filesystem of the database file; ``None`` for in-memory databases."""
        return self.resilient.filesystem

    @property
    def database_path(self) -> str | None:
        """The absolute path of the database file; ``None`` for in-memory databases."""
        return self.resilient.database_path

    @property
    def lock_stats(self) -> LockStats:
        """How often and how long this connection met locks so far (a snapshot)."""
        return self.resilient.lock_stats


class Transaction:
    """The async context manager returned by :meth:`Connection.transaction`: a
    :func:`~sqlite_resilient.db_transaction` whose ``__enter__`` and ``__exit__`` run in the
    connection's worker thread. ``async with`` returns the :class:`Connection`.
    """

    __slots__ = ("_connection", "_entered", "_sync")

    def __init__(self, connection: Connection, mode: TransactionMode | None = None) -> None:
        self._connection = connection
        self._sync: _SyncTransaction[ResilientConnection] = db_transaction(connection.resilient, mode)
        self._entered = False  # set in the worker thread once BEGIN (or SAVEPOINT) succeeded

    def _enter(self) -> None:
        self._sync.__enter__()
        self._entered = True

    def _end_cancelled(self, error: BaseException) -> None:
        if self._entered:
            self._entered = False
            self._sync.__exit__(type(error), error, None)

    async def __aenter__(self) -> Connection:
        """Begin the transaction (or a ``SAVEPOINT`` inside one) in the worker thread."""
        if self._entered:
            raise RuntimeError("this transaction block is already open; call conn.transaction() for another")
        try:
            await self._connection._execute(self._enter)
        except asyncio.CancelledError as error:
            # The worker begins the transaction all the same (perhaps after a long wait for
            # the lock): end it right after, without keeping the cancelled task waiting.
            self._connection._sr_queue(functools.partial(self._end_cancelled, error))
            raise
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``COMMIT`` (or ``RELEASE``) without *exc*, else ``ROLLBACK`` (or ``ROLLBACK TO``);
        *exc* propagates."""
        self._entered = False
        await self._connection._execute(self._sync.__exit__, exc_type, exc, tb)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("sqlite_resilient.aio: ending a cancelled transaction failed", exc_info=future.exception())


def connect(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    timeout: float | None = None,
    *,
    read_only: bool = False,
    pragmas: Mapping[str, object] | None = None,
    settings: Settings | None = None,
    iter_chunk_size: int = 64,
    **kwargs: Any,
) -> Connection:
    """Open a SQLite database for asyncio: :func:`sqlite_resilient.connect` in aiosqlite's
    worker thread. Like :func:`aiosqlite.connect`, the result is awaited
    (``conn = await aio.connect("app.db")``) or used with ``async with``; errors of
    opening (``ConfigurationError``, ``DatabaseLockedError``, ...) are raised there.

    Args:
        database: A file name (str, bytes or path-like), ``":memory:"``, or with
            ``uri=True`` a ``file:`` URI.
        timeout: Total lock-wait budget in seconds of one operation; default 30 s, or 5 s
            for read-only connections (see :func:`sqlite_resilient.connect`).
        read_only: Open with ``mode=ro`` and ``query_only``; for API and dashboard reads.
        pragmas: Pragmas overriding or extending those of *settings*.
        settings: A :class:`~sqlite_resilient.Settings`; default ``DEFAULT_SETTINGS``.
        iter_chunk_size: Rows fetched per worker call by ``async for row in cursor``.
        **kwargs: Everything else :func:`sqlite3.connect` accepts.
    """
    context = contextvars.copy_context()  # the caller's: hooks of set-up events see it
    connector = functools.partial(
        context.run,
        _connect,
        database,
        timeout=timeout,
        read_only=read_only,
        pragmas=pragmas,
        settings=settings,
        **kwargs,
    )
    return Connection(connector, iter_chunk_size)


class Replicas:
    """:class:`sqlite_resilient.replicas.Replicas` for asyncio: the same arguments; waiting
    for a fresh enough copy, and ``litestream`` runs, happen in a worker thread."""

    def __init__(self, replicas: Sequence[str | os.PathLike[str]], **kwargs: Any) -> None:
        self.sync = _replicas.Replicas(replicas, **kwargs)
        """The synchronous router this one runs."""

    def writer(self, **kwargs: Any) -> Connection:
        """A connection to the primary, as :func:`connect` (awaited, or ``async with``)."""
        return connect(self.sync._primary(), settings=self.sync.settings, **kwargs)

    async def reader(
        self,
        *,
        max_lag: float | None = None,
        min_position: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Connection:
        """A read-only connection to the copy (or primary) that
        :meth:`Replicas.choose <sqlite_resilient.replicas.Replicas.choose>` chooses."""
        path = await asyncio.to_thread(self.sync.choose, max_lag=max_lag, min_position=min_position, timeout=timeout)
        return await connect(path, read_only=True, settings=self.sync.settings, **kwargs)

    async def position(self, *, timeout: float | None = None) -> int:
        """:meth:`Replicas.position <sqlite_resilient.replicas.Replicas.position>`."""
        return await asyncio.to_thread(self.sync.position, timeout=timeout)

    async def status(self) -> list[_replicas.ReplicaStatus]:
        """:meth:`Replicas.status <sqlite_resilient.replicas.Replicas.status>`."""
        return await asyncio.to_thread(self.sync.status)
