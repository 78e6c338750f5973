"""A queue for the library's writers of one database: an advisory lock on a side file.

SQLite's busy handler makes a writer that finds the database locked *sleep*, in steps of up
to 100 ms, while the writers that hold or just released the lock take it again at once: one
writer can wait its whole timeout while others commit hundreds of times. The gate fixes that
hand-off: before ``BEGIN IMMEDIATE``, a writer takes an exclusive ``flock(2)`` on the file
``<database>-writers``; a writer that finds it taken blocks in the kernel, which wakes it the
moment the lock is released.

The gate only orders the library's own writers. SQLite's lock stays the source of truth:
programs that do not use the library are as safe beside it as before, and a writer that
cannot use the gate (no side file can be opened, a network filesystem where ``flock`` is
unreliable or emulated by the locks SQLite itself uses) simply goes without it.
"""

from __future__ import annotations

import os
import threading

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["GATE_SUFFIX", "WriteGate", "open_gate"]

GATE_SUFFIX = "-writers"


def open_gate(database: str) -> WriteGate | None:
    """The gate of *database* (a file path), or ``None`` where there can be none."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        return WriteGate(database + GATE_SUFFIX)
    except OSError:
        return None


def _open(path: str) -> int:
    flags = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except PermissionError:  # created by another user: a read-only descriptor locks as well
        return os.open(path, os.O_RDONLY | flags)


class WriteGate:
    """One connection's handle on the gate of a database (its own open file description,
    so that connections exclude each other even within a process).

    Not thread-safe: like a transaction, it belongs to one connection at a time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = _open(path)
        self.held = False

    def try_acquire(self) -> bool:
        """Take the gate if it is free; say whether it was taken."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def acquire(self, timeout: float) -> bool:
        """Take the gate, waiting at most *timeout* seconds; say whether it was taken."""
        if not self.try_acquire():
            self.held = self._wait(timeout)
        return self.held

    def _wait(self, timeout: float) -> bool:
        """Block in the kernel (in a helper thread, since ``flock`` has no timeout) until
        the gate is ours or *timeout* passes. A wait given up hands its descriptor to the
        helper thread, which releases and closes it once it gets the lock; this handle
        continues with a new descriptor."""
        fd = self._fd
        taken = threading.Event()
        lock = threading.Lock()
        outcome = {"abandoned": False}

        def wait() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                return
            with lock:
                if not outcome["abandoned"]:
                    taken.set()
                    return
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        threading.Thread(target=wait, name="sqlite_resilient write gate", daemon=True).start()
        if taken.wait(max(timeout, 0.0)):
            return True
        with lock:
            if taken.is_set():
                return True
            outcome["abandoned"] = True
        self._fd = _open(self.path)
        return False

    def release(self) -> None:
        """Let the next writer in (nothing if the gate is not held)."""
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the gate and close the descriptor (once: later calls do nothing)."""
        if self._fd >= 0:
            self.release()
            self.forget()

    def forget(self) -> None:
        """Close the descriptor without unlocking: in a child after ``fork()``, whose copy
        shares the lock with the parent's descriptor (closing a copy leaves it held)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
