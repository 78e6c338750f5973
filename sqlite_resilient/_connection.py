"""The :class:`ResilientConnection` proxy, its :class:`ResilientCursor`, and :func:`connect`.

A :class:`ResilientConnection` is a :class:`wrapt.BaseObjectProxy` around a real
:class:`sqlite3.Connection`: every attribute and method of the real connection works, and
``isinstance(conn, sqlite3.Connection)`` holds. It adds what :func:`connect` set up (WAL or
the reason for a rollback journal, validated pragmas read back from SQLite; see ``_setup``),
and hands every call to its dispatcher (see ``_dispatch``): the one path that waits for
locks where that is safe, takes turns between threads and settles the write gate.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, NoReturn, TypeVar, overload

import wrapt

from . import _fork
from ._caller import as_caller
from ._cursor import ResilientCursor, SharedCursor
from ._dispatch import ATTRIBUTE, Dispatcher, FollowerDispatcher
from ._journal import FileSystem
from ._pragmas import PragmaValue
from ._readonly import Authorizer
from ._settings import Settings
from ._setup import SetUp, open_database
from ._transaction import Transaction, TransactionMode
from ._wal import CheckpointMode, CheckpointResult, checkpoint
from .instrumentation import LockStats

__all__ = ["ResilientConnection", "ResilientCursor", "connect"]

CursorT = TypeVar("CursorT", bound=sqlite3.Cursor)

if TYPE_CHECKING:
    from .replicas import ReplicaStatus

    # Type checkers see the proxies as what they stand for at run time (isinstance holds).

    class _ConnectionProxy(sqlite3.Connection):
        __wrapped__: sqlite3.Connection

        def __init__(self, wrapped: sqlite3.Connection) -> None: ...
        def __self_setattr__(self, name: str, value: object) -> None: ...
else:
    _ConnectionProxy = wrapt.BaseObjectProxy


_fork.guard_fetches(ResilientCursor)
_fork.guard_fetches(SharedCursor)


class ResilientConnection(_ConnectionProxy):
    """A :class:`sqlite3.Connection` that waits for locks where that is safe.

    Made by :func:`connect`. Everything of the real connection is there; in addition:

    - ``execute``/``executemany``/``commit`` and the statements of cursors from
      :meth:`cursor` wait for a locked database within the connection's :attr:`timeout`,
      retrying only where nothing can have been applied: the connection was not in a
      transaction before the call and is not in one after the failure (``commit``: the
      transaction is still open). Inside a transaction a lock error propagates at once,
      since only re-running the whole transaction is correct then.
    - Shared by threads (``check_same_thread=False``), a transaction belongs to the thread
      that began it: the other threads' calls wait for it to end (within their budget)
      instead of running inside it.
    - :attr:`journal_mode`, :attr:`journal_mode_reason`, :attr:`pragmas`,
      :attr:`filesystem`, :attr:`read_only` tell what the connection runs with.
    """

    def __init__(self, connection: sqlite3.Connection, setup: SetUp, *, shared: bool = False) -> None:
        super().__init__(connection)
        dispatch = (FollowerDispatcher if setup.follower else Dispatcher)(self, connection, setup, shared=shared)
        setattr(self, ATTRIBUTE, dispatch)
        # The hot calls are the dispatcher's own methods, bound and kept in the proxy's
        # instance dictionary: found there before this class's methods of the same name,
        # they save a lookup through the proxy (costly with wrapt) on every call.
        for name in _BOUND:
            self.__self_setattr__(name, getattr(dispatch, name))
        _fork.track(self)

    if TYPE_CHECKING:
        _self_dispatch: Dispatcher

    # -- what connect() set up -------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether the connection was opened read-only (``mode=ro`` and ``query_only``)."""
        return self._self_dispatch.setup.read_only

    @property
    def timeout(self) -> float:
        """The lock-wait budget in seconds of one operation."""
        return self._self_dispatch.setup.timeout

    @property
    def settings(self) -> Settings:
        """The settings the connection was opened with."""
        return self._self_dispatch.setup.settings

    @property
    def journal_mode(self) -> str:
        """The journal mode SQLite reported after set-up (``"wal"``, ``"delete"``, ...)."""
        return self._self_dispatch.setup.journal_mode

    @property
    def journal_mode_reason(self) -> str:
        """Why the connection runs in :attr:`journal_mode`, e.g. ``"read-only filesystem"``."""
        return self._self_dispatch.setup.journal_mode_reason

    @property
    def pragmas(self) -> Mapping[str, PragmaValue]:
        """The pragmas set at connect, with the values SQLite reported back."""
        return MappingProxyType(self._self_dispatch.setup.pragmas)

    @property
    def filesystem(self) -> FileSystem | None:
        """The filesystem of the database file; ``None`` for in-memory databases."""
        return self._self_dispatch.setup.filesystem

    @property
    def database_path(self) -> str | None:
        """The absolute path of the database file; ``None`` for in-memory databases."""
        return self._self_dispatch.setup.path

    @property
    def replica(self) -> ReplicaStatus | None:
        """For a connection to a Litestream follower's copy, the position applied to it now
        (a read that begins after this sees at least that); None for any other database.
        See :class:`~sqlite_resilient.replicas.Replicas`."""
        if not self._self_dispatch.setup.follower:
            return None
        from .replicas import replica_status  # noqa: PLC0415 - its imports are for replicas only

        return replica_status(self._self_dispatch.setup.path or "")

    @property
    def lock_stats(self) -> LockStats:
        """How often and how long this connection met locks so far (a snapshot)."""
        return self._self_dispatch.counters.snapshot()

    # -- state of the real connection, read without the proxy's detour -------------------

    @property
    def in_transaction(self) -> bool:
        """:attr:`sqlite3.Connection.in_transaction`."""
        return self.__wrapped__.in_transaction

    @property
    def total_changes(self) -> int:
        """:attr:`sqlite3.Connection.total_changes`."""
        return self.__wrapped__.total_changes

    @property  # type: ignore[override]
    def isolation_level(self) -> str | None:
        """:attr:`sqlite3.Connection.isolation_level`; setting it (which may commit) is a call."""
        return self.__wrapped__.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        dispatch = self._self_dispatch
        dispatch.run(setattr, dispatch.raw, "isolation_level", value)

    if hasattr(sqlite3.Connection, "autocommit"):  # Python 3.12+

        @property
        def autocommit(self) -> int:
            """:attr:`sqlite3.Connection.autocommit`; setting it (which commits, and may open a
            transaction) is a call."""
            autocommit: int = getattr(self.__wrapped__, "autocommit")  # noqa: B009 - not typed before 3.12
            return autocommit

        @autocommit.setter
        def autocommit(self, value: int) -> None:
            self._self_dispatch.run(self._self_dispatch.set_autocommit, value)

    # -- calls -----------------------------------------------------------------------------

    @overload
    def cursor(self, factory: None = None) -> ResilientCursor: ...  # (typeshed's; None raises, as in sqlite3)
    @overload
    def cursor(self, factory: Callable[[sqlite3.Connection], CursorT]) -> CursorT: ...
    def cursor(self, factory: Any = ResilientCursor) -> sqlite3.Cursor:
        """Return a :class:`ResilientCursor` (making one runs no SQL). With *factory* a
        subclass of :class:`sqlite3.Cursor`, an instance of a subclass of both, whose
        statements get the library's lock handling and whose own methods run first. Any
        other callable is called with the wrapped :class:`sqlite3.Connection`, as
        :mod:`sqlite3` calls it, and the cursor it returns is used as it is: its statements
        go straight to SQLite, without the library's waits (pass a class to have them)."""
        return self._self_dispatch.cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> ResilientCursor:
        """Execute one statement on a new cursor and return the cursor.

        A lock error is retried within the budget only where nothing can have been
        applied; inside an open transaction it propagates at once.
        """
        return self._self_dispatch.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> ResilientCursor:
        """Execute a statement once per parameter set on a new cursor and return it.

        Retried on a lock error only where no row was changed and *parameters* is a
        list or tuple (an iterator cannot be replayed).
        """
        return self._self_dispatch.executemany(sql, parameters)

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
        self._self_dispatch.commit()

    def rollback(self) -> None:
        """Roll back, as :meth:`sqlite3.Connection.rollback`."""
        self._self_dispatch.rollback()

    def close(self) -> None:
        """:meth:`sqlite3.Connection.close`, and let go of the write gate's side file. On a
        connection that threads share, it waits for another thread's transaction to end."""
        self._self_dispatch.close()

    def interrupt(self) -> None:
        """:meth:`sqlite3.Connection.interrupt`: from any thread, at once (it never waits
        for a turn: it is how another thread stops a running statement)."""
        self.__wrapped__.interrupt()

    def set_authorizer(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`sqlite3.Connection.set_authorizer` (``authorizer_callback``); on a
        read-only connection, the callback is asked after the library's own guard, which it
        cannot lift."""
        dispatch = self._self_dispatch
        guard = dispatch.guard
        if guard is None:
            dispatch.run(functools.partial(as_caller, dispatch.raw.set_authorizer, *args, **kwargs))
        else:
            guard.chained = _authorizer_callback(*args, **kwargs)

    def backup(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`sqlite3.Connection.backup`; its ``target`` may be a :class:`ResilientConnection`."""
        if args:
            args = (getattr(args[0], "__wrapped__", args[0]), *args[1:])
        elif "target" in kwargs:
            kwargs["target"] = getattr(kwargs["target"], "__wrapped__", kwargs["target"])
        dispatch = self._self_dispatch
        dispatch.call(functools.partial(as_caller, dispatch.raw.backup, *args, **kwargs))

    def checkpoint(self, mode: CheckpointMode = "passive") -> CheckpointResult:
        """Checkpoint the WAL (see :func:`sqlite_resilient.checkpoint`)."""
        return checkpoint(self, mode)

    def transaction(self, mode: TransactionMode | None = None) -> Transaction[ResilientConnection]:
        """``with conn.transaction():`` is ``with db_transaction(conn):`` (see :func:`db_transaction`)."""
        return Transaction(self, mode)

    # -- protocols -------------------------------------------------------------------------

    if "__call__" in vars(sqlite3.Connection):

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            """``conn(sql)``, as :class:`sqlite3.Connection` (a prepared statement object)."""
            dispatch = self._self_dispatch
            return dispatch.run(functools.partial(dispatch.raw, *args, **kwargs))

    def __enter__(self) -> ResilientConnection:
        return self

    def __exit__(
        self, type: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None, /
    ) -> Literal[False]:
        dispatch = self._self_dispatch
        dispatch.run(dispatch.leave_with_block, type is not None)
        return False

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self.__wrapped__).__name__!r} object")

    __reduce__ = __reduce_ex__  # type: ignore[assignment]

    def __copy__(self) -> NoReturn:
        raise TypeError(f"cannot copy {type(self.__wrapped__).__name__!r} object")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__copy__()


# These take what sqlite3's take (and let it check): inspect.signature shows sqlite3's.
for _name in ("backup", "set_authorizer"):
    setattr(vars(ResilientConnection)[_name], "__wrapped__", getattr(sqlite3.Connection, _name))  # noqa: B010

_BOUND = ("cursor", "execute", "executemany", "commit", "rollback")
"""The calls each proxy takes straight to its dispatcher (see ``__init__``)."""


def _authorizer_callback(authorizer_callback: Authorizer | None) -> Authorizer | None:
    """The argument of ``set_authorizer``, given by position or keyword."""
    return authorizer_callback


_CONFIGURING = frozenset(
    {
        "create_aggregate",
        "create_collation",
        "create_function",
        "create_window_function",
        "enable_load_extension",
        "getconfig",
        "getlimit",
        "load_extension",
        "set_progress_handler",
        "set_trace_callback",
        "setconfig",
        "setlimit",
    }
)
"""Methods that configure the connection: they do nothing to its transaction (under
``autocommit=False``, Python's empty transaction stays replaceable by a
``db_transaction``). Every other method may read or write in it."""


def _forwarded(name: str) -> Callable[..., Any]:
    """A method that calls the real connection's method *name* through the dispatcher."""
    method = getattr(sqlite3.Connection, name)
    uses = name not in _CONFIGURING

    @functools.wraps(method)
    def forward(self: ResilientConnection, *args: Any, **kwargs: Any) -> Any:
        dispatch = self._self_dispatch
        bound = functools.partial(as_caller, getattr(dispatch.raw, name), *args, **kwargs)
        return dispatch.call(bound) if uses else dispatch.run(bound)

    forward.__qualname__ = f"ResilientConnection.{name}"
    return forward


# Every other method of the running Python's connection goes through the dispatcher too
# (blobopen, create_function, iterdump, serialize, ...): a call on a connection shared by
# threads waits for its turn, and what it does to a transaction is settled after it.
for _name in dir(sqlite3.Connection):
    if (
        not _name.startswith("_")
        and callable(getattr(sqlite3.Connection, _name))
        and _name not in vars(ResilientConnection)
    ):
        setattr(ResilientConnection, _name, _forwarded(_name))
del _name


# -- connect -------------------------------------------------------------------------------


def connect(
    database: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *args: Any,
    timeout: float | None = None,
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
        *args: :func:`sqlite3.connect`'s other parameters by position (``timeout``,
            ``detect_types``, ``isolation_level``, ``check_same_thread``, ``factory``,
            ``cached_statements``, ``uri``), as the running Python takes them (with its
            ``DeprecationWarning`` from 3.13 on); better by keyword.
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
            transaction would stay open, pinning a stale snapshot). With
            ``check_same_thread=False`` threads may share the connection, and a
            transaction belongs to the thread that began it: the other threads' calls wait
            for it to end, within their budget.

    Raises:
        ConfigurationError: a pragma, setting or argument is invalid (nothing was opened).
        DatabaseLockedError: set-up could not get a lock within the budget.
        UnreadableWALError: a WAL database on a read-only filesystem has changes in its
            ``-wal`` file that cannot be read.
        sqlite3.OperationalError: SQLite could not open the database; the message names it.
    """
    shared = not (args[3] if len(args) > 3 else kwargs.get("check_same_thread", True))
    raw, setup = open_database(
        database, timeout=timeout, read_only=read_only, pragmas=pragmas, settings=settings, kwargs=kwargs, args=args
    )
    return ResilientConnection(raw, setup, shared=shared)
