"""The one frozen settings object and its defaults.

Variants are made with :func:`dataclasses.replace`, e.g.
``replace(DEFAULT_SETTINGS, timeout=10.0)``; per-connection pragma overrides are given to
:func:`~sqlite_resilient.connect` as ``pragmas={...}``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._errors import ConfigurationError
from ._pragmas import PragmaValue, validate_all

__all__ = ["DEFAULT_PRAGMAS", "DEFAULT_SETTINGS", "Settings"]

DEFAULT_PRAGMAS: Mapping[str, PragmaValue] = MappingProxyType(
    {
        "journal_mode": "wal",
        "synchronous": "normal",
        "cache_size": -64_000,
        "foreign_keys": True,
        "journal_size_limit": 64 * 1024 * 1024,
    }
)
"""Pragmas applied to every connection (``journal_mode`` to file databases only: an in-memory
one keeps its ``memory`` journal). ``busy_timeout`` comes from the timeout."""

# keyword-only and slotted where the running Python supports it (3.10+)
_DATACLASS_OPTIONS: dict[str, Any] = {"kw_only": True, "slots": True} if sys.version_info >= (3, 10) else {}


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, **_DATACLASS_OPTIONS)
class Settings:
    """How connections are opened and how long they wait for locks.

    Attributes:
        timeout: Total lock-wait budget in seconds of one operation on a write connection,
            whatever the number of attempts. Also SQLite's ``busy_timeout``.
        read_only_timeout: The same budget for read-only connections.
        pragmas: Pragmas applied to every connection (``journal_mode`` only to file
            databases), validated on creation. The default is
            :data:`DEFAULT_PRAGMAS`; to extend rather than replace it, pass
            ``{**DEFAULT_PRAGMAS, "name": value}``.
        begin_immediate: Start the implicit transactions of Python's legacy transaction
            control with ``BEGIN IMMEDIATE`` unless the caller chose ``isolation_level`` or
            ``autocommit``. Taking the write lock at the start is what makes waiting and
            retrying safe.
        writer_queue: Queue the write transactions that :func:`db_transaction` begins
            (``IMMEDIATE``/``EXCLUSIVE``), those a ``BEGIN IMMEDIATE``/``EXCLUSIVE``
            statement begins, and the legacy mode's implicit ones, first come first served
            across processes, on the side file ``<database>-writers``: the write lock
            passes to the writer that has waited longest the moment it is released,
            instead of after SQLite's busy handler has slept (while the writer that just
            committed takes it again). Skipped where it cannot work (network filesystems,
            no side file can be opened for writing, no open file description locks).
        warn_on_fallback: Emit :class:`WALFallbackWarning` (once per database and reason in
            a process) when WAL cannot be used. The fallback is logged either way.
        wal_warn_bytes: After a commit (at most once a second per connection), a ``-wal``
            file larger than this many bytes is checkpointed (``passive``); if that cannot
            copy it all back, a reader is pinning an old snapshot and
            :class:`WALGrowthWarning` says so, once per database in a process. ``None``
            turns the check off.
    """

    timeout: float = 30.0
    read_only_timeout: float = 5.0
    pragmas: Mapping[str, PragmaValue] = field(default_factory=lambda: DEFAULT_PRAGMAS, hash=False)
    begin_immediate: bool = True
    writer_queue: bool = True
    warn_on_fallback: bool = True
    wal_warn_bytes: int | None = 256 * 2**20

    def __post_init__(self) -> None:
        limit = self.wal_warn_bytes
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigurationError(f"wal_warn_bytes must be a whole number of bytes >= 0 or None, not {limit!r}")
        object.__setattr__(self, "timeout", _check_timeout("timeout", self.timeout))
        object.__setattr__(self, "read_only_timeout", _check_timeout("read_only_timeout", self.read_only_timeout))
        object.__setattr__(self, "pragmas", MappingProxyType(validate_all(self.pragmas)))


DEFAULT_SETTINGS = Settings()
"""The settings used when ``connect()`` is given none."""


LITESTREAM_SETTINGS = Settings(pragmas={**DEFAULT_PRAGMAS, "wal_autocheckpoint": 0}, wal_warn_bytes=None)
"""For a database that ``litestream replicate`` watches: Litestream alone checkpoints the WAL
(it ships every frame to the replica before checkpointing it), so the application's
connections make no automatic checkpoints, and the WAL growth check is off (its checkpoint
cannot pass the read transaction Litestream keeps open between its own checkpoints)."""
