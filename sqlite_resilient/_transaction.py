"""``db_transaction``: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK and re-raise; SAVEPOINTs when nested.

It works the same in every transaction-control mode of :mod:`sqlite3`: the legacy mode
(``isolation_level`` a string), ``isolation_level=None``, and on Python 3.12+
``autocommit=True`` and ``autocommit=False``. Transactions are begun and ended with SQL
statements (``commit()`` does nothing under ``autocommit=True``), except under
``autocommit=False``, where Python must open the next transaction itself.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from ._errors import ConfigurationError, TransactionEndedError
from ._retry import current_scope, is_pep249, rollback

if TYPE_CHECKING:
    from ._connection import ResilientConnection

__all__ = ["Transaction", "TransactionMode", "db_transaction"]

TransactionMode = Literal["deferred", "immediate", "exclusive"]
MODES: tuple[str, ...] = ("deferred", "immediate", "exclusive")

ConnectionT = TypeVar("ConnectionT", bound=sqlite3.Connection)

_depths: dict[int, int] = {}
"""How many blocks are open on each connection (by ``id`` of the :mod:`sqlite3` one): a
block's savepoint is named after its depth, so that its statements are the same text each
time (kept in :mod:`sqlite3`'s statement cache, instead of prepared anew and evicting the
caller's statements). A block inside is always deeper, so a name is never that of a
savepoint the block does not own, while blocks are left in the order they were entered."""


def _no_such_savepoint(error: sqlite3.Error) -> bool:
    return str(error).startswith("no such savepoint")


class Transaction(Generic[ConnectionT]):
    """The context manager returned by :func:`db_transaction`.

    Every block sets a ``SAVEPOINT``: nested blocks to roll back to, the outermost (after
    its ``BEGIN``) as a marker whose ``RELEASE`` at the end proves that the transaction
    is still the block's own, not one that began after it ended inside the block.
    """

    __slots__ = ("_began", "_connection", "_gated", "_mode", "_proxy", "_raw", "_savepoint")

    def __init__(self, connection: ConnectionT, mode: TransactionMode | None = None) -> None:
        if not isinstance(connection, sqlite3.Connection):
            raise TypeError(f"db_transaction needs a sqlite3.Connection, not {type(connection).__name__}")
        raw: sqlite3.Connection = getattr(connection, "__wrapped__", connection)
        self._connection = connection
        self._raw = raw
        self._proxy: ResilientConnection | None = connection if raw is not connection else None  # type: ignore[assignment]
        if mode is None:
            mode = "deferred" if self._proxy is not None and self._proxy.read_only else "immediate"
        elif not isinstance(mode, str) or mode.lower() not in MODES:
            raise ConfigurationError(f"transaction mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._mode = mode.upper()
        self._savepoint = ""
        self._began = False
        self._gated = False  # holds the write gate of the database (see Settings.writer_queue)

    def _owns_open_transaction(self) -> bool:
        """Under ``autocommit=False`` Python keeps a transaction open; one in which nothing
        ran since it was opened (the proxy knows) is not anybody's work yet."""
        proxy = self._proxy
        return proxy is not None and proxy._self_fresh and is_pep249(self._raw)

    def __enter__(self) -> ConnectionT:
        raw, proxy = self._raw, self._proxy
        scope = current_scope()
        if scope is not None:
            scope.touch(raw, proxy)
        self._began = not raw.in_transaction or self._owns_open_transaction()
        if self._began:
            self._begin()
        depth = _depths.get(id(raw), 0) + 1
        _depths[id(raw)] = depth
        self._savepoint = f"sqlite_resilient_{depth}"
        try:
            raw.execute(f'SAVEPOINT "{self._savepoint}"')
        except BaseException as error:
            if self._began:
                self._undo(error)
            self._leave()
            raise
        return self._connection

    def _begin(self) -> None:
        raw, proxy = self._raw, self._proxy
        pep249 = raw.in_transaction  # autocommit=False, nothing ran yet: ours replaces it
        if pep249:
            raw.execute("ROLLBACK")
        begin = f"BEGIN {self._mode}"
        try:
            if proxy is None:
                raw.execute(begin)
            else:
                self._gated = proxy._self_begin(begin, write=self._mode != "DEFERRED")
                proxy._self_fresh = False
        except BaseException:
            if pep249 and not raw.in_transaction:
                raw.execute("BEGIN")  # what autocommit=False promises: a transaction is open
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        try:
            if exc is None:
                self._commit()
            else:
                self._undo(exc)
        finally:
            self._leave()
        return False

    def _leave(self) -> None:
        """The block is over: one level less on the connection, and the write gate let go."""
        key = id(self._raw)
        depth = _depths.pop(key, 1) - 1
        if depth > 0:
            _depths[key] = depth
        if self._gated and self._proxy is not None:
            self._gated = False
            self._proxy._self_leave_gate()

    def _commit(self) -> None:
        raw, proxy = self._raw, self._proxy
        try:
            raw.execute(f'RELEASE "{self._savepoint}"')
        except sqlite3.OperationalError as error:
            if not _no_such_savepoint(error):
                self._undo(error)
                raise
            ended = TransactionEndedError(
                "the transaction of this db_transaction block ended inside it (by commit() or "
                "rollback(), or by SQLite after an error the block caught, such as a full disk "
                "or INSERT OR ROLLBACK); statements after that were not part of it: a "
                "transaction they opened was rolled back, in autocommit mode they took effect"
            )
            self._undo(ended)
            raise ended from None
        if not self._began:
            return
        try:
            if proxy is None:
                raw.execute("COMMIT")
            elif is_pep249(raw):
                proxy.commit()
            else:
                proxy._self_finish(lambda: raw.execute("COMMIT"))
        except BaseException as error:
            self._undo(error)
            raise

    def _undo(self, error: BaseException) -> None:
        """Roll back what the block did; *error*, the reason, is what propagates."""
        raw = self._raw
        try:
            if self._began:
                if raw.in_transaction:
                    rollback(raw, self._proxy)
                elif is_pep249(raw):
                    raw.execute("BEGIN")  # autocommit=False keeps a transaction open
            elif self._savepoint:
                raw.execute(f'ROLLBACK TO "{self._savepoint}"')
                raw.execute(f'RELEASE "{self._savepoint}"')
        except sqlite3.Error as failure:
            if isinstance(failure, sqlite3.OperationalError) and _no_such_savepoint(failure):
                return  # the transaction ended inside the block; its owner is told
            if hasattr(error, "add_note"):  # Python 3.11+
                error.add_note(f"sqlite_resilient: rolling back failed too: {failure!r}")


def db_transaction(connection: ConnectionT, mode: TransactionMode | None = None) -> Transaction[ConnectionT]:
    """A transaction as a context manager: ``BEGIN IMMEDIATE`` on entry, ``COMMIT`` on
    success, ``ROLLBACK`` and re-raise (the same exception object) on error::

        with db_transaction(conn):
            row = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (row[0] + 1,))

    - ``BEGIN`` waits for the write lock within the connection's budget (a
      :class:`~sqlite_resilient.ResilientConnection`; a plain :class:`sqlite3.Connection`
      waits as its own ``timeout`` says). Taking the lock first means no
      ``SQLITE_BUSY_SNAPSHOT`` later: a read-then-write transaction cannot fail halfway
      because another writer committed in between.
    - Nested in an open transaction (another ``db_transaction``, or an implicit transaction
      of the legacy mode), it becomes a ``SAVEPOINT``: an error rolls back only the inner
      block, and nothing is committed until the outer transaction is.
    - An error that made SQLite roll the transaction back itself (a full disk, an I/O
      error) propagates unchanged, never as "cannot rollback - no transaction is active";
      the connection stays usable.
    - Under ``autocommit=False`` (Python 3.12+) Python keeps a transaction open at all
      times. On a :class:`~sqlite_resilient.ResilientConnection` in which nothing ran since
      it was opened, it is replaced by ``BEGIN <mode>``; otherwise (and always on a plain
      :class:`sqlite3.Connection`, which cannot tell) it may hold the caller's work, and
      the block nests in it as a ``SAVEPOINT``.

    Args:
        connection: The connection to run the transaction on; returned by ``with``.
        mode: ``"deferred"``, ``"immediate"`` or ``"exclusive"``
            (https://www.sqlite.org/lang_transaction.html). Default: ``"immediate"``, and
            ``"deferred"`` on read-only connections (a consistent snapshot for several
            reads).

    Raises:
        ConfigurationError: *mode* is not one of the three.
        TypeError: *connection* is not a :class:`sqlite3.Connection`.
        TransactionEndedError: the block ended its transaction itself (``commit()``
            inside it) or SQLite did after an error the block swallowed.
    """
    return Transaction(connection, mode)
