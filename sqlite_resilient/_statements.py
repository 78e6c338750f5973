"""Which statements begin a write transaction: what queues at the write gate.

Two kinds do, outside a transaction:

- ``BEGIN IMMEDIATE`` / ``BEGIN EXCLUSIVE`` sent as a statement (as SQLAlchemy sends it);
- a DML statement (INSERT, UPDATE, DELETE, REPLACE) in :mod:`sqlite3`'s legacy transaction
  mode, before which :mod:`sqlite3` sends ``BEGIN <isolation_level>`` itself, when that
  level takes the write lock (``IMMEDIATE``, the library's default, or ``EXCLUSIVE``).

The DML test is :mod:`sqlite3`'s own (the first word after blanks) without its skipping of
leading comments on 3.11+: a statement missed here only goes without the gate.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAYBE_WRITE", "is_query", "write_begin"]

MAYBE_WRITE = "bBiIuUdDrR \t\n\r"
"""The first characters of a statement worth a closer look: a cheap test on every statement
run outside a transaction."""

_DML = frozenset({"INSERT", "UPDATE", "DELETE"})  # and REPLACE
_LOCKING_LEVELS = ("IMMEDIATE", "EXCLUSIVE")
_BEGIN = {level: f"BEGIN {level}" for level in _LOCKING_LEVELS}


_seen: dict[tuple[str, str | None], str | None] = {}
"""Each (statement, isolation level) classified so far: applications run the same few
statements again and again. Cleared when full, like :mod:`sqlite3`'s statement cache."""

_MISS: Any = object()


def write_begin(sql: str, isolation_level: str | None) -> str | None:
    """The statement that begins a write transaction for *sql*, run outside a transaction:
    *sql* (an equal string) if it is ``BEGIN IMMEDIATE`` or ``BEGIN EXCLUSIVE`` (any case,
    ``TRANSACTION`` and a ``;`` allowed), or the ``BEGIN`` that :mod:`sqlite3`'s legacy mode
    sends before a DML statement when *isolation_level* takes the write lock (pass ``None``
    where there are no implicit transactions); else ``None``."""
    key = (sql, isolation_level)
    begin: str | None = _seen.get(key, _MISS)
    if begin is _MISS:
        begin = _classify(sql, isolation_level)
        if len(sql) <= 1000:  # not a generated bulk statement, kept in memory for nothing
            if len(_seen) >= 512:
                _seen.clear()
            _seen[key] = begin
    return begin


def _classify(sql: str, isolation_level: str | None) -> str | None:
    stripped = sql.lstrip(" \t\n\r")
    if stripped[:1] in "bB":
        words = stripped.replace(";", " ").upper().split()
        writing = len(words) in (2, 3) and words[0] == "BEGIN" and words[1] in _LOCKING_LEVELS
        return sql if writing else None
    if isolation_level is None or isolation_level.upper() not in _LOCKING_LEVELS:
        return None
    if stripped[:6].upper() not in _DML and stripped[:7].upper() != "REPLACE":
        return None
    return _BEGIN.get(isolation_level) or f"BEGIN {isolation_level.upper()}"


def is_query(sql: str) -> bool:
    """Whether *sql* is a plain ``SELECT``, which reads only (a ``WITH`` may write)."""
    return sql.lstrip(" \t\n\r")[:6].upper() == "SELECT"
