"""Opening a database: WAL or the reason for a rollback journal, validated pragmas read back,
set-up that waits for other processes' locks within the budget.

:func:`open_database` does the work of :func:`~sqlite_resilient.connect` up to the wrapped
:class:`sqlite3.Connection`; what it found is kept in a :class:`SetUp`, which becomes the
connection's read-only state.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from ._caller import as_caller
from ._errors import (
    ConfigurationError,
    PragmaNotAppliedWarning,
    ReplicaError,
    ResilientError,
    UnreadableWALError,
    WALFallbackWarning,
    is_cantopen,
    is_lock_error,
    is_transient,
    restated,
)
from ._follower import is_follower_copy, prepare, refuse_writer
from ._journal import FileSystem, filesystem_of, is_wal_file, refuses_writers, wal_blocker, wal_content_bytes
from ._pragmas import PRAGMAS, PragmaValue, validate_all
from ._retry import busy_milliseconds, call_within_budget
from ._settings import DEFAULT_SETTINGS, Settings, _check_timeout
from ._uri import Target, parse_database, to_uri
from .instrumentation import WAL_FALLBACK, FallbackEvent, emit

__all__ = ["SetUp", "open_database"]

_MAX_BUSY_MS = 2**31 - 1
_UNSET: Any = object()


@dataclass
class SetUp:
    """What opening a connection found and did; becomes the connection's read-only state."""

    path: str | None
    read_only: bool
    timeout: float
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    """When connect() began: set-up waits for locks within one budget from here."""
    filesystem: FileSystem | None = None
    journal_mode: str = "memory"
    journal_mode_reason: str = ""
    pragmas: dict[str, PragmaValue] = field(default_factory=dict)
    fallback: str | None = None
    follower: tuple[int, int] | None = None
    """For a Litestream follower's copy (see ``_follower``): the (device, inode) of the file
    the connection opened."""
    mismatches: list[str] = field(default_factory=list)
    positional: int = 0
    """How many of :func:`sqlite3.connect`'s arguments after *database* the application
    gave by position."""


def open_database(
    database: object,
    *,
    timeout: float | None,
    read_only: bool,
    pragmas: Mapping[str, object] | None,
    settings: Settings | None,
    kwargs: dict[str, Any],
    args: tuple[Any, ...] = (),
) -> tuple[sqlite3.Connection, SetUp]:
    """Open and set up a database as :func:`~sqlite_resilient.connect` documents (*args*:
    :func:`sqlite3.connect`'s arguments after *database* given by position; the budget
    comes from *timeout* or the first of them); warn of a fallback and of pragmas SQLite
    did not take."""
    if len(args) > len(_POSITIONAL):
        raise TypeError(f"connect() takes at most {len(_POSITIONAL) + 1} positional arguments ({len(args) + 1} given)")
    for name, value in zip(_POSITIONAL, args):
        if name in kwargs or (name == "timeout" and timeout is not None):
            raise TypeError(f"connect() got multiple values for argument {name!r}")
        kwargs[name] = value
    if args:
        timeout = kwargs.pop("timeout")
    settings = DEFAULT_SETTINGS if settings is None else settings
    if not isinstance(settings, Settings):
        raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
    if not isinstance(read_only, bool):
        raise ConfigurationError(f"read_only must be a bool, not {type(read_only).__name__}")
    if timeout is None:
        timeout = settings.read_only_timeout if read_only else settings.timeout
    timeout = _check_timeout("timeout", timeout)
    explicit = validate_all(pragmas) if pragmas is not None else {}
    uri = kwargs.pop("uri", False)
    target = parse_database(database, bool(uri))
    read_only = read_only or target.param("mode") == "ro"
    # Python 3.12+: applied after set-up, since autocommit=False opens a transaction at once
    autocommit = kwargs.pop("autocommit", _UNSET) if sys.version_info >= (3, 12) else _UNSET
    if autocommit is _UNSET and "autocommit" not in kwargs:
        if read_only:  # every implicit BEGIN precedes a write, which fails: it would stay open
            kwargs.setdefault("isolation_level", None)
        elif settings.begin_immediate:
            kwargs.setdefault("isolation_level", "IMMEDIATE")

    setup = SetUp(path=target.path, read_only=read_only, timeout=timeout, settings=settings, positional=len(args))
    if target.path is not None and target.param("immutable") != "1" and is_follower_copy(target.path):
        if not read_only:
            raise refuse_writer(target.path)
        setup.follower = (0, 0)  # the file's, once opened
    wanted = {**settings.pragmas, **explicit}
    if read_only:
        for name in explicit:
            if not PRAGMAS[name].per_connection:
                raise ConfigurationError(
                    f"pragma {name!r} changes the database file and cannot be set on a read-only connection"
                )
        wanted = {name: value for name, value in wanted.items() if PRAGMAS[name].per_connection}
        wanted["query_only"] = True
        if setup.follower:  # the follower may shorten the file under a mapping
            wanted["mmap_size"] = 0

    try:
        raw = _open_and_set_up(database, uri, target, setup, wanted=wanted, explicit=explicit, kwargs=kwargs)
        try:
            if sys.version_info >= (3, 12) and autocommit is not _UNSET:
                raw.autocommit = autocommit
        except BaseException:
            raw.close()
            raise
    except sqlite3.Error as error:
        if isinstance(error, ResilientError) or target.path is None or target.path in str(error):
            raise
        raise restated(error, f"{error} (database {target.path!r})") from error

    try:  # warnings may be errors (-W error): the connection must not leak then
        if setup.fallback is not None:
            _report_fallback(setup)
        for mismatch in setup.mismatches:
            warnings.warn(mismatch, PragmaNotAppliedWarning, stacklevel=3)  # connect()'s caller
    except BaseException:
        raw.close()
        raise
    return raw, setup


def _open_and_set_up(
    database: object,
    uri: object,
    target: Target,
    setup: SetUp,
    *,
    wanted: dict[str, PragmaValue],
    explicit: dict[str, PragmaValue],
    kwargs: dict[str, Any],
) -> sqlite3.Connection:
    """Open the database and apply the pragmas; close it again if set-up fails."""
    if target.path is None:
        if "journal_mode" not in explicit:
            wanted.pop("journal_mode", None)
        setup.journal_mode_reason = "in-memory database"
        raw = _open(database, uri, setup, kwargs)
    else:
        setup.filesystem = filesystem_of(target.path)
        if wanted.get("journal_mode") == "wal" and not setup.read_only:
            setup.fallback = wal_blocker(target.path, setup.filesystem)
        raw = _open_file(database, uri, target, setup, kwargs)
    try:
        _apply_pragmas(raw, wanted, setup)
    except BaseException:
        raw.close()
        raise
    return raw


_sqlite3_connect: Callable[..., sqlite3.Connection] = sqlite3.connect
"""The stdlib's, as it was when the library was imported: an application (or a test suite)
may put :func:`~sqlite_resilient.connect` in its place afterwards."""


_POSITIONAL = ("timeout", "detect_types", "isolation_level", "check_same_thread", "factory", "cached_statements", "uri")
"""The parameters of :func:`sqlite3.connect` after *database*, in their positional order."""


def _open(database: object, uri: object, setup: SetUp, kwargs: dict[str, Any]) -> sqlite3.Connection:
    """:func:`sqlite3.connect` with the budget as its timeout. Arguments the application gave
    by position go by position, so that :mod:`sqlite3` (and a ``factory``) take them as
    they would have (from 3.13 on, with their deprecation warnings, pointing at the
    application)."""
    given = {**kwargs, "timeout": setup.timeout, "uri": uri}
    positional = [given.pop(name) for name in _POSITIONAL[: setup.positional]]
    return as_caller(_sqlite3_connect, database, *positional, **given)


def _open_file(
    database: object, uri: object, target: Target, setup: SetUp, kwargs: dict[str, Any]
) -> sqlite3.Connection:
    """Open a file database; read-only ones (and any on a read-only filesystem) through a
    correctly encoded ``mode=ro`` URI, with ``immutable=1`` only where that cannot miss
    WAL content."""
    path, filesystem = target.path, setup.filesystem
    if path is None or filesystem is None:  # pragma: no cover - in-memory targets never get here
        raise AssertionError("a file target has a path and a filesystem")
    if not (setup.read_only or filesystem.read_only):
        return _open(database, uri, setup, kwargs)
    params = {**{k: v for k, v in target.params if k != "mode"}, "mode": "ro"}
    if setup.follower:
        return _open_copy(path, params, setup, kwargs)
    try:
        return _open_and_read(to_uri(path, params), setup, kwargs)
    except sqlite3.OperationalError as error:
        if not is_cantopen(error):
            raise
        _check_immutable_is_safe(path, filesystem, error)
    setup.journal_mode_reason = "read-only filesystem, WAL database without -shm or WAL content: opened immutable"
    return _open_and_read(to_uri(path, {**params, "immutable": "1"}), setup, kwargs)


def _open_copy(path: str, params: dict[str, str], setup: SetUp, kwargs: dict[str, Any]) -> sqlite3.Connection:
    """Open a follower's copy: in rollback-journal mode, never ``immutable`` (it changes),
    noting which file the connection reads (the follower may replace it when it restores
    again)."""
    try:
        identity = prepare(path, max(0.0, setup.timeout - (time.monotonic() - setup.started)))
    except FileNotFoundError:
        raise ReplicaError(
            f"no database at {path!r} yet: its follower writes it once its first restore is done"
        ) from None
    raw = _open_and_read(to_uri(path, params), setup, kwargs)
    setup.follower = identity
    return raw


def _open_and_read(uri: str, setup: SetUp, kwargs: dict[str, Any]) -> sqlite3.Connection:
    """Open *uri* and read the schema: a read-only open that cannot work fails here."""
    raw = _open(uri, True, setup, kwargs)
    try:
        call_within_budget(
            lambda: raw.execute("PRAGMA schema_version").fetchone(),
            timeout=setup.timeout,
            started=setup.started,
            what="connection set-up",
            retryable=functools.partial(_worth_a_wait, setup),
        )
    except BaseException:
        raw.close()
        raise
    return raw


def _worth_a_wait(setup: SetUp, error: BaseException) -> bool:
    """Whether connection set-up waits after *error*: a lock, or a database that a writer
    must recover first (a hot journal) where a writer can. Not on a read-only filesystem,
    even one that ``statvfs`` does not call so (the kernel turned it read-only after an I/O
    error): there, SQLite's read-only error is raised at once."""
    if is_lock_error(error):
        return True
    if not is_transient(error):
        return False
    return not (setup.filesystem is not None and setup.filesystem.read_only) and not refuses_writers(setup.path)


def _check_immutable_is_safe(path: str, filesystem: FileSystem, error: sqlite3.OperationalError) -> None:
    """Raise a clear error for a read-only open that failed, unless the file is a WAL
    database on a read-only filesystem with no WAL content, which ``immutable=1`` reads."""
    if not os.path.exists(path):
        raise sqlite3.OperationalError(
            f"unable to open database file {path!r}: it does not exist, and a read-only connection never creates it"
        ) from error
    if not (filesystem.read_only and is_wal_file(path)):
        raise error
    pending = wal_content_bytes(path)
    if pending:
        raise UnreadableWALError(
            f"cannot read WAL database {path!r} on a read-only filesystem: its -wal file holds "
            f"{pending} bytes of changes, and without a usable -shm file they cannot be read; "
            "checkpoint it where it is writable (PRAGMA wal_checkpoint(TRUNCATE))"
        ) from error


_warned: set[tuple[str | None, str]] = set()
"""The (database, reason) pairs of fallbacks warned of in this process."""

_reported: dict[tuple[str, PragmaValue, bool], PragmaValue] = {}
"""What SQLite reported back for a per-connection pragma set to a value (in memory or not)
in this process: the same library reports the same again, so later connections skip the
read-back."""


def _apply_pragmas(raw: sqlite3.Connection, wanted: dict[str, PragmaValue], setup: SetUp) -> None:
    """Set each pragma (busy_timeout first, then journal_mode), read it back, record it.

    Per-connection pragmas whose read-back this process has seen are set together in one
    script after journal_mode, without reading them back again.
    """
    busy_ms = int(min(setup.timeout * 1000, _MAX_BUSY_MS))
    bounded = False

    def bound_busy_handler(left: float) -> None:
        nonlocal bounded
        bounded = True
        raw.execute(f"PRAGMA busy_timeout = {busy_milliseconds(left, busy_ms)}")

    def first_value(sql: str) -> Any:
        row = raw.execute(sql).fetchone()
        return row[0] if row else None

    def run(sql: str, *, script: bool = False) -> Any:
        return call_within_budget(
            (lambda: raw.executescript(sql)) if script else (lambda: first_value(sql)),
            timeout=setup.timeout,
            started=setup.started,
            what="connection set-up",
            retryable=functools.partial(_worth_a_wait, setup),
            before_retry=bound_busy_handler,
        )

    wanted = {"busy_timeout": busy_ms, **wanted}
    journal = PRAGMAS["journal_mode"]
    requested = wanted.pop("journal_mode", None)
    known: list[str] = []
    for name, value in wanted.items():
        pragma = PRAGMAS[name]
        key = (name, value, setup.path is None)
        reported = _reported.get(key) if pragma.per_connection else None
        if reported is None or name == "busy_timeout":
            run(pragma.set_sql(value))
        if reported is None:
            answer = run(f"PRAGMA {name}")
            if answer is None:  # it does not apply here (mmap_size in memory)
                setup.mismatches.append(f"pragma {name} was set to {value!r} but SQLite reports no value for it here")
                continue
            reported = pragma.from_sqlite(answer)
            if pragma.per_connection:
                _reported[key] = reported
        elif name != "busy_timeout":
            known.append(pragma.set_sql(value))
        setup.pragmas[name] = reported
        if reported != value:
            setup.mismatches.append(f"pragma {name} was set to {value!r} but SQLite reports {reported!r}")
        if name == "busy_timeout":  # journal_mode next: it is the one that waits for locks
            _set_journal_mode(setup, requested, journal.from_sqlite(run("PRAGMA journal_mode")), run)
    if known:
        run(";".join(known), script=True)  # setting a pragma again is harmless: retryable
    if bounded:
        raw.execute(f"PRAGMA busy_timeout = {int(setup.pragmas['busy_timeout'])}")


def _set_journal_mode(
    setup: SetUp, requested: PragmaValue | None, current: PragmaValue, run: Callable[[str], Any]
) -> None:
    """Switch to the requested journal mode where that can work, and say why it is what it is."""
    journal = PRAGMAS["journal_mode"]
    if requested is not None and current != requested and setup.fallback is None and not setup.read_only:
        current = journal.from_sqlite(run(journal.set_sql(requested)))
    setup.journal_mode = str(current)
    setup.pragmas["journal_mode"] = current
    if setup.journal_mode_reason:
        pass
    elif setup.read_only:
        setup.journal_mode_reason = "read-only connection: the database's own journal mode"
    elif setup.fallback is not None and current == "wal":
        setup.journal_mode_reason = f"{setup.fallback}; the database was in WAL mode already and is left so"
    elif setup.fallback is not None:
        setup.journal_mode_reason = f"WAL not used: {setup.fallback}"
    elif requested is None:
        setup.journal_mode_reason = "the database's own journal mode (none configured)"
    elif current == requested:
        setup.journal_mode_reason = "as configured"
    else:
        setup.fallback = f"SQLite kept journal_mode={current} when {requested} was requested"
        setup.journal_mode_reason = f"WAL not used: {setup.fallback}"


def _report_fallback(setup: SetUp) -> None:
    """Report a WAL fallback to the hooks, and warn once per database and reason in this
    process."""
    key = (setup.path, setup.journal_mode_reason)
    first = key not in _warned
    _warned.add(key)
    emit(
        FallbackEvent(
            name=WAL_FALLBACK,
            database=setup.path,
            reason=setup.journal_mode_reason,
            journal_mode=setup.journal_mode,
            first=first,
        )
    )
    if first and setup.settings.warn_on_fallback:
        warnings.warn(
            f"{setup.path!r}: {setup.journal_mode_reason}; journal_mode is {setup.journal_mode!r}",
            WALFallbackWarning,
            stacklevel=4,  # connect()'s caller
        )
