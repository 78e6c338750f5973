"""``ResilientCursor``: a real :class:`sqlite3.Cursor` whose statements take the dispatch path."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._connection import ResilientConnection
    from ._dispatch import Dispatcher

__all__ = ["ResilientCursor", "cursor_class"]


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


@functools.lru_cache(maxsize=64)
def cursor_class(factory: type[sqlite3.Cursor]) -> type[ResilientCursor]:
    """A subclass of the caller's cursor class whose statements take the dispatch path
    (theirs first, so their overrides still run, then :class:`ResilientCursor`'s)."""
    return type(factory.__name__, (factory, ResilientCursor), {"__module__": factory.__module__, "__slots__": ()})
