"""The write gate: a first-come, first-served queue of the library's writers of one database.

SQLite's busy handler makes a writer that finds the database locked *sleep*, in steps of up
to 100 ms, while the writer that holds or just released the lock takes it again at once: one
writer can wait its whole timeout while another commits hundreds of times. The gate is taken
before ``BEGIN IMMEDIATE`` and let go when the transaction ends, and it passes to the writer
that has waited longest, the moment it is let go.

How, on the side file ``<database>-writers`` (every lock is the kernel's: a process that
dies lets go of what it held):

- The gate is an exclusive ``flock(2)`` of the file. While nobody queues, a writer takes it
  with one system call and lets it go with one.
- Otherwise the writer queues. Under a short lock of the file's first bytes (*the line*) it
  takes the next ticket from the counter kept there and locks the byte ``SLOTS + ticket``
  (open file description locks, ``F_OFD_SETLK``). Its turn comes when no byte below its own
  is locked: every writer that came before is done, or gave up. Then it takes the
  ``flock``, notes in the file that the queue is served up to its ticket, and keeps its
  byte locked until it lets the gate go, so that the next in line waits for all of its
  transaction.
- A newcomer reads the two counters (tickets handed out, tickets served) through a
  memory map, with no system call: when they differ, writers are queued and it queues
  behind them, also when it has just let the gate go itself. The counters are only a hint:
  a queued writer that died or gave up leaves them unequal until the next queued writer is
  served, and a newcomer that read them just before a writer queued may still go first.

The kernel's blocking lock calls have no time limit, so the queued part runs in a waiter
thread (a small pool shared by the process: a thread is started only when every one is
busy, never per wait), on a descriptor of its own that only it uses while it waits. The
writer waits for it within its budget; a writer that gives up, or is interrupted by an
exception, leaves the rest to the waiter thread, which lets everything go the moment its
call returns. Nothing is ever unlocked or closed by descriptor number from another thread.

The gate only orders the library's own writers. SQLite's lock stays the source of truth:
programs that do not use the library are as safe beside it as before, and a writer that
cannot use the gate (no side file can be opened for writing, a network filesystem where
locks are unreliable, a system without open file description locks) goes without it.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import signal
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import Callable, cast

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FLOCK", "GATE_SUFFIX", "WriteGate", "ofd_lock", "open_gate"]

GATE_SUFFIX = "-writers"

_PAGE = 4096
_COUNTERS = struct.Struct("=QQ")
"""At the start of the side file: tickets handed out, tickets served."""
_HANDED = struct.Struct("=Q")
_SERVED_AT = 8
_LINE = (0, _COUNTERS.size)
_SLOTS = _PAGE
"""The byte of ticket ``t`` is ``_SLOTS + t``."""
FLOCK = struct.Struct("hhqqi4x")
"""``struct flock``: type, whence, start, length, pid (0 for open file description locks)."""

_CAN_QUEUE = fcntl is not None and hasattr(fcntl, "F_OFD_SETLKW")


def open_gate(database: str) -> WriteGate | None:
    """The gate of *database* (a file path), or ``None`` where there can be none."""
    if not _CAN_QUEUE:  # pragma: no cover - Linux has open file description locks
        return None
    try:
        return WriteGate(database)
    except (OSError, ValueError):
        return None


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))


def _create(database: str) -> int:
    """Open the side file of *database*, creating it (with the database file's permission
    bits, as SQLite creates its own side files) and making it one page long if needed."""
    path = database + GATE_SUFFIX
    try:
        fd = _open(path)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # another writer made it meanwhile
            fd = _open(path)
        else:
            with contextlib.suppress(OSError):
                owner = os.stat(database)
                os.fchmod(fd, owner.st_mode & 0o666)
                if os.geteuid() == 0:  # as SQLite does for its -wal and -shm files
                    os.fchown(fd, owner.st_uid, owner.st_gid)
    try:
        if os.fstat(fd).st_size < _PAGE:
            os.ftruncate(fd, _PAGE)  # never shrinks: only ever made one page long
    except BaseException:
        os.close(fd)
        raise
    return fd


def ofd_lock(fd: int, kind: int, start: int, length: int, *, wait: bool = False) -> bool:
    """Lock (or unlock, ``F_UNLCK``) a byte range for *fd*'s open file description."""
    try:
        fcntl.fcntl(
            fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, FLOCK.pack(kind, os.SEEK_SET, start, length, 0)
        )
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held by another
        return False
    return True


def _let_go(fd: int) -> None:
    """Let go of everything *fd*'s open file description holds of the gate, and close it.

    Unlocked explicitly rather than by closing: a child made by ``fork()`` may hold a copy
    of the descriptor, which would keep the locks alive."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
        ofd_lock(fd, fcntl.F_UNLCK, 0, 0)  # length 0: every byte
    finally:
        os.close(fd)


_sigmask = cast(  # (where there is none, there are no OFD locks, and so no queue)
    "Callable[[int, Iterable[int]], AbstractSet[int]]",
    getattr(sys.modules.get("_signal"), "pthread_sigmask", None) or getattr(signal, "pthread_sigmask", None),
)
"""The C function under :func:`signal.pthread_sigmask`: the public one turns every signal
number of the mask it returns into a :class:`signal.Signals` (an exception caught for each
real-time signal), which made blocking and restoring all signals cost about 200 µs of CPU
per queued write."""

_ALL_SIGNALS = frozenset(int(number) for number in signal.valid_signals())


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back signals (so the exceptions their handlers raise) for a few system calls that
    must all run: Python runs signal handlers in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
    try:
        yield
    finally:
        _sigmask(signal.SIG_SETMASK, previous)


# -- the queued part, in a waiter thread -----------------------------------------------------

_WAITING, _GRANTED, _ABANDONED, _ENDED = "waiting", "granted", "abandoned", "ended"


class _Place:
    """One writer's place in the queue: a descriptor of the side file of its own (so its
    own locks), opened and queued by a waiter thread.

    It belongs to the waiter thread until the writer's turn has come (``granted``), then to
    the writer until it lets the gate go. A writer that stops waiting first (``abandoned``)
    leaves it to the waiter thread, which lets go of it when its blocking call returns.
    """

    __slots__ = ("_done", "_lock", "_state", "fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self._state = _WAITING
        self._lock = threading.Lock()
        self._done = threading.Lock()  # held until the waiter thread is done with the place
        self._done.acquire()

    def wait(self, timeout: float) -> bool:
        """Queue, and wait at most *timeout* seconds for the turn; say whether it came.
        Whatever ends the wait early (the timeout, an exception), the place is given up."""
        try:
            _waiters.submit(self)
            self._done.acquire(timeout=max(timeout, 0.0))
        finally:
            with self._lock:
                if self._state is _WAITING:
                    self._state = _ABANDONED
        return self._state is _GRANTED

    def end(self) -> None:
        """The writer lets the gate go (nothing if its turn never came)."""
        with _signals_deferred():
            with self._lock:
                if self._state is not _GRANTED:
                    if self._state is _WAITING:
                        self._state = _ABANDONED
                    return
                self._state = _ENDED
            _let_go(self.fd)

    def forget(self) -> None:
        """In a child after ``fork()``: close the copy of a granted place's descriptor
        without unlocking (the locks are the parent's)."""
        if self._state is _GRANTED:
            self._state = _ENDED
            os.close(self.fd)

    def queue(self, finishing: Callable[[], object]) -> None:
        """In the waiter thread: take a ticket, wait for the writers before it, then for the
        ``flock``; hand the place to the writer, or let go of it if it left. *finishing* is
        called before the writer can learn the outcome."""
        granted = False
        try:
            if not self._left():
                self.fd = _open(self.path)
                granted = self._take_turn()
        except Exception:  # noqa: S110 - an I/O error: the writer goes without the gate
            pass
        finally:
            finishing()
            with self._lock:
                mine = not (granted and self._state is _WAITING)
                self._state = _ENDED if mine else _GRANTED
                self._done.release()
            if mine and self.fd >= 0:
                _let_go(self.fd)

    def _take_turn(self) -> bool:
        fd = self.fd
        ofd_lock(fd, fcntl.F_WRLCK, *_LINE, wait=True)
        try:
            (ticket,) = _HANDED.unpack(os.pread(fd, _HANDED.size, 0))
            if not ofd_lock(fd, fcntl.F_WRLCK, _SLOTS + ticket, 1):
                return False  # another holds this ticket's byte: the counter was tampered with
            os.pwrite(fd, _HANDED.pack(ticket + 1), 0)
        finally:
            ofd_lock(fd, fcntl.F_UNLCK, *_LINE)
        if ticket and not self._left():
            ofd_lock(fd, fcntl.F_RDLCK, _SLOTS, ticket, wait=True)  # every earlier byte let go
        if self._left():
            return False
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, _HANDED.pack(ticket + 1), _SERVED_AT)
        return True

    def _left(self) -> bool:
        return self._state is not _WAITING


class _Waiters:
    """The waiter threads of the process: each queues one place at a time; one is started
    only when every one is busy, and they stay for the next waits. A thread counts as idle
    from just before it hands a place over, so that a writer that queues again at once
    finds it."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._places: collections.deque[_Place] = collections.deque()
        self._idle = 0

    def submit(self, place: _Place) -> None:
        with self._ready:
            self._places.append(place)
            if self._idle:
                self._idle -= 1
                self._ready.notify()
                return
        threading.Thread(target=self._serve, name="sqlite_resilient write gate", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._places:
                    self._ready.wait()
                place = self._places.popleft()
            place.queue(self._finishing)

    def _finishing(self) -> None:
        with self._ready:
            self._idle += 1


_waiters = _Waiters()


def _new_waiters() -> None:
    global _waiters  # noqa: PLW0603 - a child after fork() has none of the parent's threads
    _waiters = _Waiters()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_waiters)


# -- one connection's handle -----------------------------------------------------------------


class WriteGate:
    """One connection's handle on the gate of a database: its own open file description of
    the side file (so that connections exclude each other within a process, too), and a
    memory map of the queue's counters.

    Used by one connection at a time, like a transaction (a connection shared by threads
    takes turns, see ``_turn``); the waiter threads touch only places of their own. Every
    method is safe against an exception at any point: :attr:`held` is set before anything
    is taken and cleared after everything is let go, and :meth:`release` can always be
    called again.
    """

    def __init__(self, database: str) -> None:
        self.path = database + GATE_SUFFIX
        self._fd = _create(database)
        try:
            self._counters = mmap.mmap(self._fd, _COUNTERS.size, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(self._fd)
            raise
        self._place: _Place | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the gate if it is free and nobody queues for it; say whether it is held."""
        if self.held:
            return True
        handed, served = _COUNTERS.unpack_from(self._counters)
        if handed != served:
            return False
        self.held = True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.held = False
            return False
        return True

    def acquire(self, timeout: float) -> bool:
        """Take the gate, queueing at most *timeout* seconds behind the writers that came
        first; say whether it was taken."""
        if self.try_acquire():
            return True
        if timeout <= 0:
            return False
        place = self._place = _Place(self.path)
        self.held = True
        try:
            if place.wait(timeout):
                return True
        except BaseException:
            self.release()
            raise
        self.release()
        return False

    def release(self) -> None:
        """Let the next writer in (nothing if the gate is not held)."""
        if not self.held:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        place = self._place
        if place is not None:
            place.end()
            self._place = None
        self.held = False

    def close(self) -> None:
        """Release the gate and close the handle (once: later calls do nothing)."""
        if self._fd >= 0:
            self.release()
            self._counters.close()
            fd, self._fd = self._fd, -1
            os.close(fd)

    def forget(self) -> None:
        """Close the handle without letting anything go: in a child after ``fork()``, whose
        copies of the descriptors share the parent's locks."""
        if self._fd >= 0:
            if self._place is not None:
                self._place.forget()
                self._place = None
            self.held = False
            self._counters.close()
            fd, self._fd = self._fd, -1
            os.close(fd)
