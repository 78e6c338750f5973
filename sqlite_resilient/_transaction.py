"""``db_transaction``: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK and re-raise; SAVEPOINTs when nested.

It works the same in every transaction-control mode of :mod:`sqlite3`: the legacy mode
(``isolation_level`` a string), ``isolation_level=None``, and on Python 3.12+
``autocommit=True`` and ``autocommit=False``. Transactions are begun and ended with SQL
statements (``commit()`` does nothing under ``autocommit=True``), except under
``autocommit=False``, where Python must open the next transaction itself.

A block talks to its connection through a small interface (:class:`Link`): a
:class:`~sqlite_resilient.ResilientConnection`'s dispatcher (so that the block's decisions
and statements are made in the thread's turn and settle the write gate), or
:class:`PlainLink` for a plain :class:`sqlite3.Connection`.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Any, Callable, Generic, Literal, Protocol, TypeVar

from ._dispatch import dispatcher_of
from ._errors import ConfigurationError, TransactionEndedError
from ._retry import PlainMember, current_scope, is_pep249, rollback

__all__ = ["Transaction", "TransactionMode", "db_transaction"]

TransactionMode = Literal["deferred", "immediate", "exclusive"]
MODES: tuple[str, ...] = ("deferred", "immediate", "exclusive")

ConnectionT = TypeVar("ConnectionT", bound=sqlite3.Connection)
T = TypeVar("T")

SAVEPOINT = "sqlite_resilient"
"""The name of every block's savepoint: ``RELEASE`` and ``ROLLBACK TO`` act on the innermost
savepoint of a name, which is the block's own while blocks are left in the order they were
entered; one name keeps the statements the same text (kept prepared in :mod:`sqlite3`'s
statement cache, instead of pushing the caller's statements out of it)."""


class Link(Protocol):
    """What a block needs of its connection."""

    @property
    def raw(self) -> sqlite3.Connection: ...

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` as one step of the connection's transaction control."""

    def transaction_open(self) -> bool:
        """Whether a transaction with (possibly) work in it is open."""

    def begin_transaction(self, mode: str) -> None:
        """``BEGIN <mode>``, within the connection's budget."""

    def commit_transaction(self, statement: bool = False) -> None:
        """Commit the block's transaction (*statement*: by a ``COMMIT`` statement)."""

    def rollback_transaction(self) -> None:
        """Roll the open transaction back."""


class PlainLink(PlainMember):
    """A plain :class:`sqlite3.Connection`: its own waits (``timeout``), no write gate, no
    turns; a decorated call's scope sees it."""

    __slots__ = ()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        scope = current_scope()
        if scope is not None:
            scope.join(self)
        return fn(*args)

    def transaction_open(self) -> bool:
        return self.raw.in_transaction

    def begin_transaction(self, mode: str) -> None:
        self.raw.execute(f"BEGIN {mode}")

    def commit_transaction(self, statement: bool = False) -> None:
        raw = self.raw
        if is_pep249(raw):
            raw.commit()
        else:
            raw.execute("COMMIT")

    def rollback_transaction(self) -> None:
        rollback(self.raw)


def _no_such_savepoint(error: sqlite3.Error) -> bool:
    return str(error).startswith("no such savepoint")


class Transaction(Generic[ConnectionT]):
    """The context manager returned by :func:`db_transaction`.

    Every block sets a ``SAVEPOINT``: nested blocks to roll back to, the outermost (after
    its ``BEGIN``) as a marker whose ``RELEASE`` at the end proves that the transaction
    is still the block's own, not one that began after it ended inside the block.
    """

    __slots__ = ("_began", "_connection", "_link", "_mode")

    def __init__(self, connection: ConnectionT, mode: TransactionMode | None = None) -> None:
        if not isinstance(connection, sqlite3.Connection):
            raise TypeError(f"db_transaction needs a sqlite3.Connection, not {type(connection).__name__}")
        dispatcher = dispatcher_of(connection)
        if mode is None:
            mode = "deferred" if dispatcher is not None and dispatcher.read_only else "immediate"
        elif not isinstance(mode, str) or mode.lower() not in MODES:
            raise ConfigurationError(f"transaction mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._connection = connection
        self._link: Link = dispatcher if dispatcher is not None else PlainLink(connection)
        self._mode = mode.upper()
        self._began = False

    def __enter__(self) -> ConnectionT:
        self._link.run(self._enter)
        return self._connection

    def _enter(self) -> None:
        link = self._link
        self._began = not link.transaction_open()
        if self._began:
            link.begin_transaction(self._mode)
        try:
            link.raw.execute(f'SAVEPOINT "{SAVEPOINT}"')
        except BaseException as error:
            if self._began:  # (a nested block has nothing to undo: its savepoint was not set)
                self._undo(error)
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self._link.run(self._exit, exc)
        return False

    def _exit(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._undo(exc)
            return
        link = self._link
        try:
            link.raw.execute(f'RELEASE "{SAVEPOINT}"')
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
        if self._began:
            try:
                link.commit_transaction(statement=True)
            except BaseException as error:
                self._undo(error)
                raise

    def _undo(self, error: BaseException) -> None:
        """Roll back what the block did; *error*, the reason, is what propagates."""
        link = self._link
        raw = link.raw
        try:
            if self._began:
                if raw.in_transaction:
                    link.rollback_transaction()
                elif is_pep249(raw):
                    raw.execute("BEGIN")  # autocommit=False keeps a transaction open
            else:
                raw.execute(f'ROLLBACK TO "{SAVEPOINT}"')
                raw.execute(f'RELEASE "{SAVEPOINT}"')
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
    - Nested in an open transaction of the same thread (another ``db_transaction``, or an
      implicit transaction of the legacy mode), it becomes a ``SAVEPOINT``: an error rolls
      back only the inner block, and nothing is committed until the outer transaction is.
    - On a :class:`~sqlite_resilient.ResilientConnection` that threads share, a block
      never nests in another thread's transaction: it waits, within the budget, for that
      transaction to end and then begins its own.
    - An error that made SQLite roll the transaction back itself (a full disk, an I/O
      error) propagates unchanged, never as "cannot rollback - no transaction is active";
      the connection stays usable.
    - Under ``autocommit=False`` (Python 3.12+) Python keeps a transaction open at all
      times. On a :class:`~sqlite_resilient.ResilientConnection` on which nothing was
      called since that transaction was opened, it is replaced by ``BEGIN <mode>``;
      otherwise (and always on a plain :class:`sqlite3.Connection`, which cannot tell) it
      may hold the caller's work, and the block nests in it as a ``SAVEPOINT``.

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
