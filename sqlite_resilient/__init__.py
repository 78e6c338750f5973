"""SQLite that survives real concurrency: change one import.

``import sqlite_resilient as sqlite3`` gives every public name of the running Python's
:mod:`sqlite3` (the same objects), with :func:`connect` returning a
:class:`ResilientConnection`: WAL and validated pragmas, a fallback where WAL cannot work,
read-only connections for API reads, and lock waits within one time budget.
"""

from __future__ import annotations

import sqlite3 as _sqlite3
import types as _types
import warnings as _warnings
from sqlite3 import *  # noqa: F403 - the drop-in surface: every public name of sqlite3
from typing import Any as _Any

from ._connection import ResilientConnection, ResilientCursor, connect
from ._errors import (
    ConfigurationError,
    DatabaseLockedError,
    ForkedConnectionError,
    PragmaNotAppliedWarning,
    ResilientError,
    ResilientWarning,
    UnreadableWALError,
    WALFallbackWarning,
    is_lock_error,
)
from ._journal import NETWORK_FILESYSTEMS, FileSystem
from ._pragmas import PRAGMAS, Pragma, PragmaValue
from ._settings import DEFAULT_PRAGMAS, DEFAULT_SETTINGS, Settings


def _offered_with_deprecation(name: str) -> bool:
    """Whether the running sqlite3 offers *name* only through its module ``__getattr__``
    (OptimizedUnicode on 3.10-3.11, version and version_info on 3.12-3.13)."""
    if name in vars(_sqlite3):
        return False
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)
        return hasattr(_sqlite3, name)


_DEPRECATED_SQLITE3_NAMES = frozenset(
    name for name in ("OptimizedUnicode", "version", "version_info") if _offered_with_deprecation(name)
)

_SQLITE3_NAMES = frozenset(
    name
    for name in ("OptimizedUnicode", "version", "version_info")
    if name not in vars(_sqlite3) and hasattr(_sqlite3.dbapi2, f"_deprecated_{name}") | (name == "OptimizedUnicode" and hasattr(_sqlite3, "__getattr__"))
)

# Every public name of the running sqlite3 but its submodule dbapi2 (re-exporting that would
# hand out the stdlib connect()).
_SQLITE3_NAMES = frozenset(
    name
    for name, value in vars(_sqlite3).items()
    if not name.startswith("_") and not isinstance(value, _types.ModuleType)
) | _DEPRECATED_SQLITE3_NAMES

_OWN_NAMES = frozenset(
    {
        "DEFAULT_PRAGMAS",
        "DEFAULT_SETTINGS",
        "NETWORK_FILESYSTEMS",
        "PRAGMAS",
        "ConfigurationError",
        "DatabaseLockedError",
        "FileSystem",
        "ForkedConnectionError",
        "Pragma",
        "PragmaNotAppliedWarning",
        "PragmaValue",
        "ResilientConnection",
        "ResilientCursor",
        "ResilientError",
        "ResilientWarning",
        "Settings",
        "UnreadableWALError",
        "WALFallbackWarning",
        "connect",
        "is_lock_error",
    }
)

__all__ = sorted(_SQLITE3_NAMES | _OWN_NAMES)  # noqa: PLE0605 - computed: follows the interpreter


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("sqlite_resilient")
    if name in _DEPRECATED_SQLITE3_NAMES:
        # Let sqlite3 warn as it does, but point the warning at our caller.
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            value = getattr(_sqlite3, name)
        for warning in caught:
            _warnings.warn(warning.message, warning.category, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
