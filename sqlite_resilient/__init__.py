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
from typing import Any as _Any

# isort: off
# The drop-in surface: every public name of sqlite3, but connect. The order matters: type
# checkers keep the first `connect` they see (ours); at run time the star import replaces it
# and the second import puts ours back.
from ._connection import connect
from sqlite3 import *  # type: ignore[assignment]  # noqa: F403
from ._connection import connect  # noqa: F811

# isort: on
from . import exporters, instrumentation
from ._connection import ResilientConnection, ResilientCursor
from ._errors import (
    AbandonedTransactionWarning,
    ConfigurationError,
    DatabaseLockedError,
    ForkedConnectionError,
    PragmaNotAppliedWarning,
    ReplicaError,
    ResilientError,
    ResilientWarning,
    StaleReplicaError,
    TransactionEndedError,
    UnreadableWALError,
    WALFallbackWarning,
    WALGrowthWarning,
    is_lock_error,
)
from ._journal import NETWORK_FILESYSTEMS, FileSystem
from ._pragmas import PRAGMAS, Pragma, PragmaValue
from ._retry import is_testing, retry_on_lock, set_testing
from ._settings import DEFAULT_PRAGMAS, DEFAULT_SETTINGS, LITESTREAM_SETTINGS, Settings
from ._transaction import Transaction, TransactionMode, db_transaction
from ._wal import CHECKPOINT_MODES, CheckpointMode, CheckpointResult, checkpoint, maintain_wal
from .instrumentation import LockStats


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

# Every public name of the running sqlite3 but its submodule dbapi2 (re-exporting that would
# hand out the stdlib connect()). Deprecated names stay out of __all__, as they are out of
# sqlite3's own star-export, and are reached through __getattr__ below.
_SQLITE3_NAMES = frozenset(
    name
    for name, value in vars(_sqlite3).items()
    if not name.startswith("_") and not isinstance(value, _types.ModuleType)
)

__all__ = [
    "CHECKPOINT_MODES",
    "DEFAULT_PRAGMAS",
    "DEFAULT_SETTINGS",
    "LITESTREAM_SETTINGS",
    "NETWORK_FILESYSTEMS",
    "PRAGMAS",
    "AbandonedTransactionWarning",
    "CheckpointMode",
    "CheckpointResult",
    "ConfigurationError",
    "DatabaseLockedError",
    "FileSystem",
    "ForkedConnectionError",
    "LockStats",
    "Pragma",
    "PragmaNotAppliedWarning",
    "PragmaValue",
    "ReplicaError",
    "ResilientConnection",
    "ResilientCursor",
    "ResilientError",
    "ResilientWarning",
    "Settings",
    "StaleReplicaError",
    "Transaction",
    "TransactionEndedError",
    "TransactionMode",
    "UnreadableWALError",
    "WALFallbackWarning",
    "WALGrowthWarning",
    "checkpoint",
    "connect",
    "db_transaction",
    "exporters",
    "instrumentation",
    "is_lock_error",
    "is_testing",
    "maintain_wal",
    "retry_on_lock",
    "set_testing",
]
__all__ = sorted({*__all__, *_SQLITE3_NAMES})  # noqa: PLE0605 - the drop-in surface follows the interpreter


def __getattr__(name: str) -> _Any:
    if name == "__version__":
        from importlib import metadata  # noqa: PLC0415 - its import takes longer than the library's

        return metadata.version("sqlite_resilient")
    if name in _DEPRECATED_SQLITE3_NAMES:
        # Let sqlite3 warn as it does, but point the warning at our caller.
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            value = getattr(_sqlite3, name)
        for warning in caught:
            _warnings.warn(warning.message, warning.category, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
