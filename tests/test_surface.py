"""The drop-in surface: every public name of the running sqlite3, the same objects."""

from __future__ import annotations

import sqlite3
import sys
import types
import warnings
from importlib import metadata

import pytest

import sqlite_resilient

OWN_NAMES = {
    "AbandonedTransactionWarning",
    "CHECKPOINT_MODES",
    "CheckpointMode",
    "CheckpointResult",
    "DEFAULT_PRAGMAS",
    "DEFAULT_SETTINGS",
    "LITESTREAM_SETTINGS",
    "NETWORK_FILESYSTEMS",
    "PRAGMAS",
    "ConfigurationError",
    "DatabaseLockedError",
    "FileSystem",
    "ForkedConnectionError",
    "Pragma",
    "PragmaNotAppliedWarning",
    "PragmaValue",
    "ReplicaError",
    "ResilientConnection",
    "ResilientCursor",
    "ResilientError",
    "ResilientWarning",
    "LockStats",
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
}

STDLIB_NAMES = {
    name
    for name, value in vars(sqlite3).items()
    if not name.startswith("_") and not isinstance(value, types.ModuleType)
}


def test_all_is_exactly_the_public_surface() -> None:
    """``__all__`` is sorted and is sqlite3's public names plus the library's own, nothing else."""
    assert sqlite_resilient.__all__ == sorted(sqlite_resilient.__all__)
    assert set(sqlite_resilient.__all__) == STDLIB_NAMES | OWN_NAMES


@pytest.mark.parametrize("name", sorted(STDLIB_NAMES - {"connect"}))
def test_sqlite3_names_are_the_same_objects(name: str) -> None:
    """Every public sqlite3 name is re-exported as the very same object."""
    assert getattr(sqlite_resilient, name) is getattr(sqlite3, name)


def test_exceptions_are_catchable_as_sqlite3_exceptions() -> None:
    """``except sqlite3.OperationalError`` catches what the library raises, and vice versa."""
    assert sqlite_resilient.OperationalError is sqlite3.OperationalError
    assert issubclass(sqlite_resilient.DatabaseLockedError, sqlite3.OperationalError)
    assert issubclass(sqlite_resilient.UnreadableWALError, sqlite3.OperationalError)
    assert issubclass(sqlite_resilient.ForkedConnectionError, sqlite3.ProgrammingError)
    assert issubclass(sqlite_resilient.ConfigurationError, ValueError)


def test_connect_is_the_librarys_own() -> None:
    """Only ``connect`` differs from sqlite3: it returns a ResilientConnection."""
    assert sqlite_resilient.connect is not sqlite3.connect
    conn = sqlite_resilient.connect(":memory:")
    assert isinstance(conn, sqlite_resilient.ResilientConnection)
    assert isinstance(conn, sqlite3.Connection)
    conn.close()


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    DEPRECATED = [
        name
        for name in ("OptimizedUnicode", "version", "version_info")
        if name not in vars(sqlite3) and hasattr(sqlite3, name)
    ]


@pytest.mark.skipif(not DEPRECATED, reason=f"Python {sys.version_info[:2]} sqlite3 deprecates no names")
@pytest.mark.parametrize("name", DEPRECATED)
def test_deprecated_names_warn_as_the_interpreter_does(name: str) -> None:
    """Names the running sqlite3 deprecates are there, with the same DeprecationWarning,
    attributed to the caller; they stay out of ``__all__`` like sqlite3's star-export."""
    with pytest.warns(DeprecationWarning, match=name) as expected:
        stdlib_value = getattr(sqlite3, name)
    with pytest.warns(DeprecationWarning, match=name) as ours:
        value = getattr(sqlite_resilient, name)
    assert value == stdlib_value
    assert str(ours[0].message) == str(expected[0].message)
    assert ours[0].filename == __file__
    assert name not in sqlite_resilient.__all__


def test_star_import_emits_no_warning() -> None:
    """``from sqlite_resilient import *`` is silent, as ``from sqlite3 import *`` is."""
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from sqlite_resilient import *", namespace)  # noqa: S102 - the statement under test
    assert namespace["OperationalError"] is sqlite3.OperationalError


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name that sqlite3 does not have either is an AttributeError."""
    with pytest.raises(AttributeError, match="no_such_name"):
        sqlite_resilient.no_such_name  # noqa: B018


def test_version_comes_from_metadata() -> None:
    """``__version__`` is the installed distribution's version."""
    assert sqlite_resilient.__version__ == metadata.version("sqlite_resilient")
