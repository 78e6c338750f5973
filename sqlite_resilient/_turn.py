"""Whose turn it is on a connection that threads share (``check_same_thread=False``).

A transaction belongs to the thread that began it. A thread has the turn for each call it
makes on the connection, and keeps it after the call while a transaction is open: until
that transaction ends, the other threads' calls wait (within their budget) instead of
joining, nesting in, committing or rolling back the transaction. A thread's calls may nest
(a function SQLite calls back during a statement may use the connection): the turn counts
them.

A thread that ended with a transaction still open can never end it: the next thread to take
the turn is told (:attr:`Turn.orphaned`) and rolls it back.

Connections that :mod:`sqlite3` keeps to one thread have no turn and pay nothing for it.
"""

from __future__ import annotations

import threading
import time
import weakref

__all__ = ["Turn"]


class _Thread:
    """A token for the thread that made it, alive as long as the thread (a thread-local
    value): a weak reference to it tells whether its thread has ended, which thread
    identifiers cannot (they are reused)."""

    __slots__ = ("__weakref__", "ref")

    def __init__(self) -> None:
        self.ref = weakref.ref(self)


_local = threading.local()


def _this_thread() -> _Thread:
    try:
        token: _Thread = _local.token
    except AttributeError:
        token = _local.token = _Thread()
    return token


class Turn:
    """The turn of one connection shared by threads."""

    __slots__ = ("_calls", "_changed", "_owner", "orphaned")

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._owner: weakref.ref[_Thread] | None = None
        self._calls = 0  # calls of the owner in progress (they may nest)
        self.orphaned = False
        """Set when the turn was taken over from a thread that ended with a transaction
        open; the taker rolls it back and clears it."""

    def take(self) -> bool:
        """Take the turn for a call of this thread if nobody else has it; say whether taken."""
        me = _this_thread()
        with self._changed:
            return self._take(me)

    def wait(self, deadline: float) -> bool:
        """Take the turn, waiting until ``time.monotonic()`` reaches *deadline* at most;
        say whether it was taken."""
        me = _this_thread()
        with self._changed:
            while not self._take(me):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _take(self, me: _Thread) -> bool:
        owner = self._owner
        if owner is not None:
            holder = owner()
            if holder is not None and holder is not me:
                return False
            if holder is None:  # its thread ended and left its transaction open
                self.orphaned = True
        self._owner = me.ref
        self._calls += 1
        return True

    def mine(self) -> bool:
        """Whether this thread has the turn (a call in progress, or a transaction open)."""
        owner = self._owner
        return owner is not None and owner() is _this_thread()

    def leave(self, transaction_open: bool) -> None:
        """A call of the thread that has the turn ended; it keeps the turn while
        *transaction_open*, else the next thread may take it."""
        with self._changed:
            self._calls -= 1
            if self._calls == 0 and not transaction_open:
                self._owner = None
                self._changed.notify_all()
