"""Connections to a database file used in a child after ``fork()`` raise
:class:`ForkedConnectionError` (closing them is allowed, and does nothing). An in-memory
database has no file and no lock: the child has its own copy and uses it.

SQLite forbids carrying an open connection across ``fork()``
(https://www.sqlite.org/howtocorrupt.html#_carrying_an_open_database_connection_across_a_fork_);
with plain :mod:`sqlite3` the child's use silently corrupts locks and the WAL. Here, in the
child, every inherited connection stands in for one that raises on use, its cursors' fetches
included, and its write gate's descriptors (which share the parent's locks) are closed
without unlocking. Only the child pays: the parent's code paths are unchanged.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from typing import Any, Callable, NoReturn

from ._dispatch import dispatcher_of
from ._errors import ForkedConnectionError

__all__ = ["guard_fetches", "track"]

_live: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
_inherited: list[sqlite3.Connection] = []  # kept open, never closed, in a forked child
_cursor_classes: list[type[sqlite3.Cursor]] = []
_FETCHES = ("fetchone", "fetchmany", "fetchall", "__next__")


def track(connection: sqlite3.Connection) -> None:
    """Make *connection* (a :class:`~sqlite_resilient.ResilientConnection`) raise in a child."""
    _live.add(connection)


def guard_fetches(cursor_class: type[sqlite3.Cursor]) -> None:
    """Make the fetches of *cursor_class* (whose instances have ``_dispatch``) check, in a
    child that inherited connections, that theirs was not inherited."""
    _cursor_classes.append(cursor_class)


class _ForkedConnection:
    """Stands in for a connection inherited through ``fork()``: every use raises, but
    ``close()``, which code that tidies up after ``fork()`` calls: it does nothing (the
    inherited handle is kept open, unused)."""

    def __init__(self, parent: int) -> None:
        self._parent = parent

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # protocol lookups (wrapt's, copy's, ...) find nothing
            raise AttributeError(name)
        raise ForkedConnectionError(
            f"this connection was opened in process {self._parent} and cannot be used in "
            f"process {os.getpid()} after fork(); open a new connection in the child"
        )


def _guarded(name: str, unguarded: Callable[..., Any]) -> Callable[..., Any]:
    def fetch(self: Any, *args: Any) -> Any:
        self._dispatch.raw.in_transaction  # noqa: B018 - raises for an inherited connection
        return unguarded(self, *args)

    fetch.__name__ = name
    fetch.__doc__ = f"``{name}`` of the cursor, refused in a child for an inherited connection."
    return fetch


def _after_fork_in_child() -> None:
    parent = os.getppid()
    inherited = list(_live)
    _live.clear()
    for connection in inherited:
        dispatcher = dispatcher_of(connection)
        if dispatcher is not None and dispatcher.database_path is None:
            continue  # in memory: no file, no lock; the child has its own copy
        # Closing the inherited connection here could disturb the parent's locks and WAL
        # files, so it is kept, unused, for the life of the child.
        stand_in: Any = _ForkedConnection(parent)
        _inherited.append(connection.__wrapped__)  # type: ignore[attr-defined]
        connection.__wrapped__ = stand_in  # type: ignore[attr-defined]
        if dispatcher is not None:
            dispatcher.forked(stand_in)
    if inherited:
        for cursor_class in _cursor_classes:
            for name in _FETCHES:
                setattr(cursor_class, name, _guarded(name, getattr(sqlite3.Cursor, name)))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
