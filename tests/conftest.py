"""Shared fixtures: real read-only bind mounts, a small tmpfs, helper processes that hold
SQLite locks, and a directory that an unprivileged user can reach.

Nothing here mocks SQLite or the filesystem: mounts are made with mount(8) (root only, the
tests that need them are skipped otherwise) and helper processes run ``tests/helpers.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable

import pytest

import sqlite_resilient
from sqlite_resilient.instrumentation import LockEvent

HELPERS = Path(__file__).with_name("helpers.py")
"""The helper-process script (see its docstring for the commands it runs)."""

HELPER_TIMEOUT = 30.0
"""Upper bound in seconds for any helper process to answer or finish."""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False)


def _unmount(directory: Path) -> None:
    """Unmount *directory*; lazily if it is still busy (e.g. a test left a file open)."""
    if _run("umount", str(directory)).returncode != 0:
        _run("umount", "-l", str(directory))


def _mount_or_skip(*args: str) -> None:
    if not _is_root():
        pytest.skip("needs root to mount (mount --bind / mount -t tmpfs)")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    result = _run("mount", *args)
    if result.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} failed: {' '.join(result.stderr.split())}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A WAL database (made by ``connect()``) with an empty table ``t(x)``; test files that
    need another one define their own ``db``."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
    return path


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(src_dir, ro_dir)``: files prepared in ``src_dir`` appear in ``ro_dir``, a
    read-only bind mount of it (``statvfs`` reports ``ST_RDONLY`` there).

    Unmounted at teardown, even when the test failed. Skipped when not root or when the
    machine does not allow the mount.
    """
    src = tmp_path / "src"
    ro = tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    _mount_or_skip("--bind", str(src), str(ro))
    try:
        result = _run("mount", "-o", "remount,bind,ro", str(ro))
        if result.returncode != 0:
            pytest.skip(f"cannot remount the bind mount read-only: {result.stderr.strip()}")
        if not os.statvfs(ro).f_flag & os.ST_RDONLY:
            pytest.skip("the read-only bind mount is not reported read-only by statvfs")
        yield src, ro
    finally:
        _unmount(ro)


@pytest.fixture
def tmpfs_mount(tmp_path: Path) -> Iterator[Path]:
    """A fresh 1 MiB tmpfs mounted on a directory; unmounted at teardown."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    _mount_or_skip("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    try:
        yield where
    finally:
        _unmount(where)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under ``/tmp`` whose every parent an unprivileged user can traverse.

    ``tmp_path`` lives under a 0700 directory of root's, out of reach of the ``nobody``
    user that privilege-dropping helpers run as. Removed at teardown.
    """
    path = Path(tempfile.mkdtemp(prefix="sqlite-resilient-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # root: whatever modes a test left


def helper_command(*args: str) -> list[str]:
    """The command line that runs ``tests/helpers.py`` with *args* in this interpreter."""
    return [sys.executable, str(HELPERS), *args]


def run_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``call()`` in a started thread; the list gets its result or the exception it
    raised (handed to the test thread, which asserts on it)."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


RunHelper = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_helper() -> RunHelper:
    """Run ``tests/helpers.py COMMAND ARGS...`` to completion and return the result."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            helper_command(*args), capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
        )

    return run


class LockHolder:
    """A helper process that holds a lock until :meth:`release`: a SQLite lock
    (``hold-lock DB MODE``: plain :mod:`sqlite3`, ``BEGIN <mode>``) or the library's write
    gate (``hold-gate DB``).

    The helper writes one line to its stdout once it holds the lock; :meth:`wait_locked`
    returns only after reading it. :meth:`release` makes it let go (``COMMIT``) and waits
    for it to exit.
    """

    def __init__(self, *command: str) -> None:
        self.process = subprocess.Popen(
            helper_command(*command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def wait_locked(self) -> None:
        """Block until the helper holds the lock (it says so on its stdout)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "locked":
            _out, err = self.process.communicate(timeout=HELPER_TIMEOUT)
            raise AssertionError(f"lock helper did not take the lock: {line!r} {err}")

    def release(self) -> None:
        """Let the helper commit and exit; raise if it failed."""
        self._stdin().write("release\n")
        self._stdin().flush()
        out, err = self.process.communicate(timeout=HELPER_TIMEOUT)
        assert self.process.returncode == 0, f"lock helper failed: {out} {err}"
        assert out.strip() == "released", out

    def stop(self) -> None:
        """End the helper whatever its state (teardown)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=HELPER_TIMEOUT)


StartLockHolder = Callable[[Path, str], LockHolder]


@contextlib.contextmanager
def _holders() -> Iterator[Callable[..., LockHolder]]:
    """Start lock-holding helpers (``hold(*command)``), each stopped at the end."""
    started: list[LockHolder] = []

    def hold(*command: str) -> LockHolder:
        holder = LockHolder(*command)
        started.append(holder)
        holder.wait_locked()
        return holder

    try:
        yield hold
    finally:
        for holder in started:
            holder.stop()


@pytest.fixture
def lock_holder() -> Iterator[StartLockHolder]:
    """Start helper processes that hold a lock: ``lock_holder(db_path, "EXCLUSIVE")``.

    Returns once the lock is held. Every helper is stopped at teardown.
    """
    with _holders() as hold:

        def start(database: Path, mode: str = "EXCLUSIVE") -> LockHolder:
            return hold("hold-lock", str(database), mode)

        yield start


@pytest.fixture
def gate_holder() -> Iterator[Callable[[Path], LockHolder]]:
    """Start a helper process that holds the write gate of a database:
    ``gate_holder(db_path)``.

    Returns once the gate is held; ``.release()`` lets it go. Stopped at teardown.
    """
    with _holders() as hold:
        yield lambda database: hold("hold-gate", str(database))


@pytest.fixture
def events() -> Iterator[list[Any]]:
    """Every event handed to the library's hooks during the test, in order (the default
    hooks are restored afterwards)."""
    from sqlite_resilient import instrumentation

    seen: list[Any] = []
    instrumentation.set_hooks([seen.append])
    try:
        yield seen
    finally:
        instrumentation.set_hooks(None)


# -- the database of the retry tests (sync and asyncio) ----------------------------------


def make_counter_database(path: Path) -> Path:
    """A WAL database with ``counter(n)`` = 0, an empty ``t(x)`` and ``pk`` holding id 1."""
    with contextlib.closing(sqlite_resilient.connect(path)) as conn:
        conn.executescript(
            """
            CREATE TABLE counter(n INTEGER NOT NULL);
            INSERT INTO counter VALUES (0);
            CREATE TABLE t(x);
            CREATE TABLE pk(id INTEGER PRIMARY KEY);
            INSERT INTO pk VALUES (1);
            CREATE TABLE seed(x);
            INSERT INTO seed VALUES (1), (2), (3), (4), (5);
            CREATE TABLE doomed(x);
            """
        )
    return path


def query(path: Path, sql: str) -> list[Any]:
    """Rows of *sql* read with a fresh plain connection."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def rows(path: Path) -> list[Any]:
    return query(path, "SELECT x FROM t ORDER BY x")


def counter(path: Path) -> int:
    value: int = query(path, "SELECT n FROM counter")[0][0]
    return value


def commit_elsewhere(path: Path, sql: str) -> None:
    """Run *sql* and commit it on another (plain) connection."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute(sql)
        other.commit()


def gate_is_free(database: Path) -> bool:
    """Whether a new handle on the write gate of *database* can take it at once (it is let
    go again)."""
    from sqlite_resilient._gate import open_gate

    gate = open_gate(str(database))
    assert gate is not None
    try:
        return gate.try_acquire()
    finally:
        gate.close()


class Recorder:
    """A hook that keeps every lock event (from whatever thread), calls ``on_event`` for
    each and ``on_retry`` for each ``retry_scheduled`` one.

    The library logs and swallows a hook's exceptions; this one keeps those of its
    callbacks in ``failures`` for the test to check.
    """

    def __init__(self) -> None:
        self.events: list[LockEvent] = []
        self.on_event: Callable[[LockEvent], object] | None = None
        self.on_retry: Callable[[LockEvent], object] | None = None
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()

    def __call__(self, event: object, /) -> None:
        if not isinstance(event, LockEvent):
            return
        with self._lock:
            self.events.append(event)
        for callback in (self.on_event, self.on_retry if event.name == "sqlite_resilient.retry_scheduled" else None):
            if callback is not None:
                try:
                    callback(event)
                except BaseException as error:  # checked by the test
                    self.failures.append(error)

    def named(self, name: str) -> list[LockEvent]:
        with self._lock:
            return [event for event in self.events if event.name == name]


@pytest.fixture
def hook() -> Iterator[Recorder]:
    """A :class:`Recorder`, the only hook while the test runs; the default hooks are
    restored after."""
    from sqlite_resilient import instrumentation

    recorder = Recorder()
    instrumentation.set_hooks([recorder])
    try:
        yield recorder
    finally:
        instrumentation.set_hooks(None)


def run_module(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``python -W error -m sqlite_resilient *args`` (the command line, as a user runs
    it) and capture its output."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "sqlite_resilient", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
