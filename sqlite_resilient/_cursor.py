"""``ResilientCursor``: a real :class:`sqlite3.Cursor` whose statements take the dispatch path."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

from ._caller import as_caller

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._connection import ResilientConnection
    from ._dispatch import Dispatcher

__all__ = ["ResilientCursor", "SharedCursor", "cursor_class"]

T = TypeVar("T")


class ResilientCursor(sqlite3.Cursor):
    """A :class:`sqlite3.Cursor` whose statements get the lock handling of its connection.

    Made by :meth:`ResilientConnection.cursor <sqlite_resilient.ResilientConnection.cursor>`
    and :meth:`~sqlite_resilient.ResilientConnection.execute`; a real cursor of the wrapped
    connection (fetching rows costs what it costs in :mod:`sqlite3`), whose
    :attr:`connection` is the :class:`~sqlite_resilient.ResilientConnection`.
    """

    __slots__ = ("_dispatch", "_resilient")
    _dispatch: Dispatcher
    _resilient: ResilientConnection

    @property
    def connection(self) -> ResilientConnection:
        """The :class:`~sqlite_resilient.ResilientConnection` this cursor belongs to."""
        return self._resilient

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        """Execute one statement (see
        :meth:`ResilientConnection.execute <sqlite_resilient.ResilientConnection.execute>`)."""
        self._dispatch.statement(self, sql, parameters, False)
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Self:
        """Execute a statement once per parameter set (see
        :meth:`ResilientConnection.executemany <sqlite_resilient.ResilientConnection.executemany>`)."""
        self._dispatch.statement(self, sql, seq_of_parameters, True)
        return self

    def executescript(self, sql_script: str, /) -> Self:
        """Execute a script (see
        :meth:`ResilientConnection.executescript <sqlite_resilient.ResilientConnection.executescript>`)."""
        self._dispatch.script(self, sql_script)
        return self

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    __reduce__ = __reduce_ex__  # type: ignore[assignment]


_fetchone = sqlite3.Cursor.fetchone
_fetchmany = sqlite3.Cursor.fetchmany
_fetchall = sqlite3.Cursor.fetchall
_next = sqlite3.Cursor.__next__
_close = sqlite3.Cursor.close


def _directly(fn: Callable[..., T], /, *args: Any) -> T:
    return fn(*args)


_fetching: Callable[..., Any] = as_caller if sys.version_info >= (3, 12) else _directly
"""How a shared cursor fetches in the turn: from 3.12 on, :mod:`sqlite3`'s default converters
warn while rows are fetched, and the warning must point at the application."""


class SharedCursor(ResilientCursor):
    """The cursor of a connection that threads share: fetching rows and closing take the
    thread's turn as well (see ``_turn``), so that no two threads use the connection at the
    same moment. SQLite keeps one error code per connection, which :mod:`sqlite3` reads
    after a call failed: a fetch in one thread could overwrite the error of another
    thread's failing statement before it is read (a ``SystemError`` instead, or the wrong
    error)."""

    __slots__ = ()

    def fetchone(self) -> Any:
        """:meth:`sqlite3.Cursor.fetchone`, in the thread's turn."""
        return self._dispatch.run(_fetching, _fetchone, self)

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        """:meth:`sqlite3.Cursor.fetchmany`, in the thread's turn."""
        rows: list[Any] = self._dispatch.run(_fetching, functools.partial(_fetchmany, self, *args, **kwargs))
        return rows

    def fetchall(self) -> list[Any]:
        """:meth:`sqlite3.Cursor.fetchall`, in the thread's turn."""
        rows: list[Any] = self._dispatch.run(_fetching, _fetchall, self)
        return rows

    def __next__(self) -> Any:
        return self._dispatch.run(_fetching, _next, self)

    def close(self) -> None:
        """:meth:`sqlite3.Cursor.close`, in the thread's turn."""
        self._dispatch.run(_close, self)


@functools.lru_cache(maxsize=128)
def cursor_class(factory: type[sqlite3.Cursor], base: type[ResilientCursor]) -> type[ResilientCursor]:
    """A subclass of the caller's cursor class whose statements take the dispatch path
    (theirs first, so their overrides still run, then *base*'s)."""
    return type(factory.__name__, (factory, base), {"__module__": factory.__module__, "__slots__": ()})
