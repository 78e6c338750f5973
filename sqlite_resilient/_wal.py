"""WAL health: checkpoints with a typed result, an escalating checkpoint for maintenance
jobs, and the warning for a WAL that keeps growing because checkpoints cannot finish.

SQLite copies the WAL back into the database (a checkpoint) after a commit once the WAL
holds 1000 pages, but only the frames no reader still needs: a connection that keeps a read
transaction open (a long query, a cursor never fully fetched, a transaction never ended)
pins its snapshot, and the WAL grows behind it without bound.
See https://www.sqlite.org/wal.html#avoiding_excessively_large_wal_files.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from dataclasses import dataclass
from typing import Literal, cast

from ._caller import caller_stacklevel
from ._errors import ConfigurationError, WALGrowthWarning, copy_sqlite_error_code, is_lock_error

__all__ = [
    "CHECKPOINT_MODES",
    "CheckpointMode",
    "CheckpointResult",
    "checkpoint",
    "maintain_wal",
]

logger = logging.getLogger("sqlite_resilient")

CheckpointMode = Literal["passive", "full", "restart", "truncate"]
CHECKPOINT_MODES: tuple[CheckpointMode, ...] = ("passive", "full", "restart", "truncate")
"""The modes of ``PRAGMA wal_checkpoint``, from the one that never waits to the one that
waits for every reader and then truncates the WAL file to zero bytes."""


@dataclass(frozen=True)
class CheckpointResult:
    """What one checkpoint did (the row of ``PRAGMA wal_checkpoint``).

    Attributes:
        mode: The mode it ran in.
        busy: SQLite could not finish: a reader (or, for ``full`` and stronger, a writer)
            was still in the way when the busy handler gave up.
        wal_pages: Frames in the WAL file; 0 when the database is not in WAL mode.
        checkpointed_pages: Frames copied back into the database, this time or before.
    """

    mode: CheckpointMode
    busy: bool
    wal_pages: int
    checkpointed_pages: int

    @property
    def complete(self) -> bool:
        """Whether every frame of the WAL is in the database now."""
        return not self.busy and self.checkpointed_pages >= self.wal_pages


def checkpoint(conn: sqlite3.Connection, mode: CheckpointMode = "passive") -> CheckpointResult:
    """Run ``PRAGMA wal_checkpoint(<mode>)`` on *conn* and return what it did.

    ``passive`` copies what it can without waiting; ``full`` waits (within the connection's
    busy timeout) for writers and then copies everything; ``restart`` also waits for readers
    so that the next writer starts the WAL over; ``truncate`` does that and truncates the WAL
    file to zero bytes. A database not in WAL mode has nothing to checkpoint: the result is
    complete with zero pages.

    Raises:
        ConfigurationError: *mode* is not one of :data:`CHECKPOINT_MODES`.
        sqlite3.OperationalError: *conn* is inside a transaction (SQLite refuses; the
            message says so), or another SQLite error.
    """
    if not isinstance(mode, str) or mode.lower() not in CHECKPOINT_MODES:
        raise ConfigurationError(f"checkpoint mode must be one of {', '.join(CHECKPOINT_MODES)}, not {mode!r}")
    mode = cast("CheckpointMode", mode.lower())
    try:
        row = conn.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchone()
    except sqlite3.OperationalError as error:
        if not (conn.in_transaction and is_lock_error(error)):
            raise
        refused = sqlite3.OperationalError(
            f"{error}: a checkpoint cannot run inside a transaction of the same connection; commit or roll back first"
        )
        copy_sqlite_error_code(error, refused)
        raise refused from error
    busy, wal_pages, checkpointed = row
    return CheckpointResult(mode, bool(busy), max(wal_pages, 0), max(checkpointed, 0))


def maintain_wal(conn: sqlite3.Connection) -> tuple[CheckpointResult, ...]:
    """Checkpoint with escalation, for a maintenance job: ``passive``, then, while the
    checkpoint is not complete, ``restart`` and ``truncate`` (which wait for readers within
    the connection's busy timeout). Return the result of each checkpoint run.

    The WAL file keeps its size after ``passive`` and ``restart`` (the next writer reuses
    it, and ``journal_size_limit`` caps what it keeps); ``checkpoint(conn, "truncate")``
    empties it whenever it can.
    """
    results = [checkpoint(conn, "passive")]
    escalation: tuple[CheckpointMode, ...] = ("restart", "truncate")
    for mode in escalation:
        if results[-1].complete:
            break
        results.append(checkpoint(conn, mode))
    return tuple(results)


def wal_bytes(database: str) -> int:
    """The size of the ``-wal`` file of *database* (0 if there is none)."""
    try:
        return os.stat(database + "-wal").st_size
    except OSError:
        return 0


_warned: set[str] = set()


def check_growth(conn: sqlite3.Connection, database: str, limit: int) -> CheckpointResult | None:
    """After a commit: if the WAL of *database* is over *limit* bytes and a passive
    checkpoint cannot copy all of it back, warn (once per database in a process) with the
    numbers and what to do. Return the checkpoint's result when one ran. A database that
    Litestream replicates is left to Litestream."""
    size = wal_bytes(database)
    if size <= limit or _replicated_by_litestream(database):
        return None
    result = checkpoint(conn, "passive")
    if result.complete or database in _warned:
        return result
    _warned.add(database)
    message = (
        f"{database!r}: the WAL has grown to {size / 2**20:.1f} MiB (warning at {limit / 2**20:.1f} MiB) and "
        f"a checkpoint copied back {result.checkpointed_pages} of its {result.wal_pages} pages: a connection "
        "keeps a read transaction open (a long query, a cursor not fully fetched, a transaction never "
        "committed or rolled back), so the WAL cannot start over. End it; from a maintenance job, "
        "sqlite_resilient.maintain_wal(conn) checkpoints with escalation."
    )
    logger.warning(message, extra={"database": database, "wal_bytes": size, "wal_pages": result.wal_pages})
    warnings.warn(message, WALGrowthWarning, stacklevel=caller_stacklevel())
    return result


def _replicated_by_litestream(database: str) -> bool:
    """Whether Litestream keeps its state beside *database*: then it holds a read transaction
    between its own checkpoints on purpose, and checkpoints the WAL itself (see
    ``LITESTREAM_SETTINGS``)."""
    directory, name = os.path.split(database)
    return os.path.isdir(os.path.join(directory, f".{name}-litestream"))
