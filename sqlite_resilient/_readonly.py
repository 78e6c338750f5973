"""Read-only connections stay read-only against hostile SQL.

``mode=ro`` keeps the database file itself from being written, and ``query_only`` refuses
changes, but SQL alone can still leave the file: ``ATTACH 'file:x?mode=rwc'`` creates (and
then writes) another database, ``VACUUM INTO 'path'`` writes a copy anywhere the process
may write, and ``PRAGMA query_only = 0`` lifts the refusal. A read-only connection serving
user-supplied queries (an API endpoint, a dashboard) gets an authorizer that refuses every
statement that could change a file or the connection's safeguards, and no room for attached
databases where Python can set that limit (3.11+).
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Optional

from ._errors import copy_sqlite_error_code

__all__ = ["ReadOnlyGuard", "guard_read_only"]

Authorizer = Callable[[int, Optional[str], Optional[str], Optional[str], Optional[str]], int]

_READ_PRAGMAS = frozenset(
    {
        "application_id", "auto_vacuum", "cache_size", "collation_list", "compile_options", "data_version",
        "database_list", "encoding", "foreign_keys", "freelist_count", "function_list", "journal_mode",
        "journal_size_limit", "max_page_count", "mmap_size", "module_list", "page_count", "page_size",
        "pragma_list", "query_only", "read_uncommitted", "schema_version", "shrink_memory", "synchronous",
        "temp_store", "user_version", "wal_autocheckpoint",
    }
)  # fmt: skip
"""Pragmas that only report (``shrink_memory`` only frees memory), allowed without a value."""
_ARGUMENT_PRAGMAS = frozenset(
    {
        "busy_timeout", "foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
        "integrity_check", "quick_check", "table_info", "table_list", "table_xinfo",
    }
)  # fmt: skip
"""Pragmas allowed with an argument: it names what to report on (``busy_timeout``: how long
this connection waits for a lock, which the library itself sets within its budget)."""

_WRITES = {
    sqlite3.SQLITE_INSERT: "INSERT INTO",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE FROM",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    **{
        getattr(sqlite3, f"SQLITE_{verb}_{temp}{kind}"): f"{verb} {temp.replace('_', ' ')}{kind.replace('_', ' ')}"
        for verb in ("CREATE", "DROP")
        for temp in ("", "TEMP_")
        for kind in ("INDEX", "TABLE", "TRIGGER", "VIEW")
    },
}
"""Actions that change a database or attach one, by authorizer code."""
_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
"""Only ``PRAGMA writable_schema`` (refused) lets a statement change these."""


def _refusal(action: int, first: str | None, second: str | None, database: str | None) -> tuple[str, str] | None:
    """What a read-only connection refuses of this authorizer request and why, or ``None``.

    Changes to the main database are left to ``mode=ro``, which refuses them with SQLite's
    usual "attempt to write a readonly database"; the temporary database has no such guard.
    """
    if action == sqlite3.SQLITE_PRAGMA:
        name = (first or "").lower()
        if (name in _READ_PRAGMAS and second is None) or name in _ARGUMENT_PRAGMAS:
            return None
        return f"PRAGMA {name}" + ("" if second is None else f" = {second}"), "only pragmas that report are allowed"
    if action == sqlite3.SQLITE_FUNCTION:
        loads = (second or "").lower() in _FUNCTIONS
        return (f"the function {second}()", "it can load code into the process") if loads else None
    verb = _WRITES.get(action)
    attach = action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH)
    if verb is None or (database == "main" and not attach):
        return None
    if action == sqlite3.SQLITE_UPDATE and first in _SCHEMA_TABLES:
        return None  # SQLite asks this while it sets up a table-valued function
    why = "it would open another database file" if attach else "temporary tables, views and indexes are writes too"
    return (f"{verb} {first}" if first else verb), why


_READONLY = "attempt to write a readonly database"
"""SQLite's message for a write that ``mode=ro`` refuses (``SQLITE_READONLY``)."""


class ReadOnlyGuard:
    """The authorizer of a read-only connection; a caller's own authorizer (set through
    the connection's ``set_authorizer``) is asked after it."""

    def __init__(self) -> None:
        self.denied: tuple[str, str] | None = None
        self.chained: Authorizer | None = None

    def __call__(
        self, action: int, first: str | None, second: str | None, database: str | None, source: str | None
    ) -> int:
        refused = _refusal(action, first, second, database)
        if refused is not None:
            self.denied = refused
            return sqlite3.SQLITE_DENY
        if self.chained is not None:
            return self.chained(action, first, second, database, source)
        return sqlite3.SQLITE_OK

    def explain(self, error: sqlite3.DatabaseError, sql: str | None, path: str | None) -> sqlite3.DatabaseError | None:
        """The error to raise for *error*, raised by the statement *sql* (``None``: a
        script), if the read-only connection to *path* refused it (``None`` otherwise):
        SQLite's reason, what the application wrote, that the read-only connection refuses
        it, and why where SQLite's reason does not say."""
        denied, self.denied = self.denied, None
        if denied is not None:
            reason, (action, why) = "not authorized", denied
        elif str(error).startswith(_READONLY):
            reason, action, why = _READONLY, "", ""
        else:
            return None
        what = _shown(sql) if sql is not None else (action or "the script")
        to = f" to {path!r}" if path is not None else ""
        why = f": {why}" if why else ""
        clear = type(error)(f"{reason}: {what} is refused on the read-only connection{to}{why}")
        copy_sqlite_error_code(error, clear)
        return clear


def _shown(sql: str) -> str:
    """The statement as an error message quotes it: on one line, at most 200 characters."""
    text = " ".join(sql.split())
    return repr(text if len(text) <= 200 else text[:197] + "...")


def guard_read_only(raw: sqlite3.Connection) -> ReadOnlyGuard:
    """Install the guard on *raw*, and allow it no attached database where possible."""
    guard = ReadOnlyGuard()
    raw.set_authorizer(guard)
    if hasattr(raw, "setlimit"):  # Python 3.11+
        raw.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return guard
