"""The backend's connection wrapper: Django's SQLite ``DatabaseWrapper`` with connections
made by :func:`sqlite_resilient.connect`.

``OPTIONS`` takes what Django's SQLite backend takes (``transaction_mode``,
``init_command``, :func:`sqlite3.connect`'s keywords) and the library's ``timeout``,
``pragmas``, ``settings`` and ``read_only``. Set-up happens once: the library's pragmas
(``foreign_keys`` among them, which Django would set again) are applied and read back by
:func:`~sqlite_resilient.connect`; Django's own SQL functions and ``legacy_alter_table =
OFF`` are added as Django does (not on a read-only connection, which refuses pragma
changes; it never alters a table).
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base

from .._connection import ResilientConnection, connect

__all__ = ["DatabaseWrapper"]

_DEFAULT_TRANSACTION_MODE = "IMMEDIATE"
"""What ``atomic()`` begins with unless ``OPTIONS`` say otherwise, on a write alias: the
write lock first."""


class DatabaseWrapper(base.DatabaseWrapper):  # type: ignore[misc]  # Django has no type hints
    """Django's SQLite wrapper, connecting through :func:`sqlite_resilient.connect`."""

    transaction_mode: str | None

    def get_connection_params(self) -> dict[str, Any]:
        """Django's parameters; ``transaction_mode`` defaults to ``IMMEDIATE`` (on a
        read-only alias to Django's own ``BEGIN``: a read transaction)."""
        params: dict[str, Any] = super().get_connection_params()
        if self.transaction_mode is None and not params.get("read_only"):
            self.transaction_mode = _DEFAULT_TRANSACTION_MODE
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> ResilientConnection:
        """Connect as :func:`sqlite_resilient.connect` does, then add what Django's backend
        adds to a connection."""
        conn = connect(**conn_params)
        base.register_functions(conn)
        if not conn.read_only:
            if not conn.pragmas.get("foreign_keys"):
                conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                conn.execute(init_command)
        return conn
