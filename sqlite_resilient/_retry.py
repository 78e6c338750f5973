"""Waiting for locks inside one time budget: statement retries and ``@retry_on_lock``.

Two layers retry, and only where nothing can be applied twice:

- :func:`call_within_budget` / :func:`retry_after_lock_error` re-run *one statement* while it
  fails with a lock error (see :func:`~sqlite_resilient.is_lock_error`) and the caller
  says a retry is safe, after a jittered exponential backoff (tenacity).
- :func:`retry_on_lock` re-runs *a whole function*. Each call of it opens a
  :class:`Scope` (a context variable, so threads and asyncio tasks each have their own) in
  which every connection the function uses is noted with whether it was already in a
  transaction. After a lock error the transactions the attempt opened are rolled back; a
  transaction that was open before the call stops the retry. Statements inside a scope
  keep to its budget: SQLite's busy handler is bounded by what is left of it.

A scope belongs to the thread that opened it. :mod:`sqlite_resilient.aio` runs statements in
a worker thread per connection while the decorated coroutine awaits them: it lends the
scope to that thread for each call (:func:`run_lent`), and tells the scope how to run a
rollback there (:meth:`Scope.worker`), since :mod:`sqlite3` refuses it from another thread.

When the budget is spent, :class:`~sqlite_resilient.DatabaseLockedError` is raised.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol, TypeVar, cast, overload

import tenacity

from ._errors import DatabaseLockedError, copy_sqlite_error_code, is_lock_error, is_transient, transient_cause
from ._settings import DEFAULT_SETTINGS, _check_timeout
from .instrumentation import LOCK_ERROR, LOCK_WAITED, RETRY_SCHEDULED, LockCounters, LockEvent, emit

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")

__all__ = [
    "Member",
    "PlainMember",
    "Scope",
    "call_within_budget",
    "current_scope",
    "exhausted",
    "is_testing",
    "retry_after_lock_error",
    "retry_on_lock",
    "run_lent",
    "set_testing",
]

T = TypeVar("T")

# Backoff between attempts: uniformly random in [0, min(MAX, MIN * 2**n)] seconds. The
# jitter keeps competing processes from retrying in lock step (tenacity's own advice).
BACKOFF_MULTIPLIER = 0.002
BACKOFF_MAX = 0.1

# SQLite's busy handler is lowered to what is left of a decorated call's budget once it
# would overrun it by more than this; a smaller slack would mean a PRAGMA per statement.
BUSY_SLACK_MS = 20

_testing = False


def busy_milliseconds(seconds: float, cap: int) -> int:
    """SQLite's ``busy_timeout`` for a wait of at most *seconds*, and at most *cap* ms."""
    return int(min(max(seconds, 0.0) * 1000, cap))


def set_testing(testing: bool) -> None:
    """Remove (``True``) or restore (``False``) the backoff waits between attempts.

    For test suites: lock errors are still retried within the budget, without sleeping
    between attempts.
    """
    global _testing  # noqa: PLW0603 - one process-wide switch, as stamina's
    _testing = bool(testing)


def is_testing() -> bool:
    """Whether :func:`set_testing` removed the backoff waits."""
    return _testing


def backoff(failures: int) -> float:
    """Seconds to wait after the *failures*-th failed attempt: uniformly random in
    ``[0, min(BACKOFF_MAX, BACKOFF_MULTIPLIER * 2 ** (failures - 1))]``, or 0 under
    :func:`set_testing`."""
    if _testing:
        return 0.0
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_MULTIPLIER * 2 ** (failures - 1)))  # noqa: S311 - jitter


def _tenacity_backoff(state: tenacity.RetryCallState) -> float:
    """:func:`backoff` for a tenacity loop that starts after the first failure."""
    return backoff(state.attempt_number + 1)


def _upcoming_sleep(state: tenacity.RetryCallState) -> float:
    return state.next_action.sleep if state.next_action is not None else 0.0


def exhausted(what: str, attempts: int, waited: float, budget: float, last: BaseException) -> DatabaseLockedError:
    """The error for a spent budget, carrying the SQLite code of the last lock error."""
    last = transient_cause(last) or last  # the driver's error inside a wrapper's
    if isinstance(last, DatabaseLockedError) and last.__cause__ is not None:
        last = last.__cause__  # an inner budget gave up first: SQLite's error is the cause
    state = "database is locked" if is_lock_error(last) else f"{last} (waiting for a writer to recover the database)"
    error = DatabaseLockedError(
        f"{state}: {what} gave up after {attempts} attempt"
        f"{'s' if attempts != 1 else ''} over {waited:.2f} s (lock-wait budget {budget:g} s)",
        attempts=attempts,
        waited=waited,
        budget=budget,
    )
    copy_sqlite_error_code(last, error)
    error.__cause__ = last
    return error


class _Report:
    """Events and counters for one operation that met a lock."""

    __slots__ = ("attempts", "budget", "counters", "database", "started", "what")

    def __init__(
        self, what: str, started: float, budget: float, database: str | None, counters: LockCounters | None
    ) -> None:
        self.what, self.started, self.budget = what, started, budget
        self.database, self.counters = database, counters
        self.attempts = 1

    def event(self, name: str, error: BaseException | None, wait: float = 0.0) -> None:
        emit(
            LockEvent(
                name=name,
                operation=self.what,
                database=self.database,
                attempt=self.attempts,
                waited=time.monotonic() - self.started,
                wait=wait,
                budget=self.budget,
                error=error,
            )
        )

    def retry_scheduled(self, state: tenacity.RetryCallState) -> None:
        self.event(RETRY_SCHEDULED, state.outcome.exception() if state.outcome else None, _upcoming_sleep(state))

    def done(self, error: BaseException | None, *, surfaced: bool) -> None:
        """The operation ended: successfully (*error* None) or with *error* raised."""
        if error is None:
            self.event(LOCK_WAITED, None)
        elif surfaced:
            self.event(LOCK_ERROR, error)
        if self.counters is not None:
            self.counters.record(
                attempts=self.attempts,
                retries=self.attempts - 1,
                waited=time.monotonic() - self.started,
                surfaced=error is not None and surfaced,
            )


def report_lock_error(
    what: str,
    error: BaseException,
    *,
    started: float,
    budget: float,
    database: str | None,
    counters: LockCounters | None,
) -> None:
    """Report a lock error that propagates at once, since retrying it is unsafe."""
    _Report(what, started, budget, database, counters).done(error, surfaced=current_scope() is None)


def report_queued(
    name: str, what: str, *, started: float, budget: float, database: str | None, counters: LockCounters
) -> _Report:
    """Report an operation that waits for another's turn (*name*: ``writer_queued`` at the
    write gate, ``thread_queued`` behind another thread's transaction); the caller reports
    the end of the wait with ``.done(None, surfaced=False)``, or ``.done(error, ...)``."""
    report = _Report(what, started, budget, database, counters)
    report.event(name, None)
    return report


def call_within_budget(
    fn: Callable[[], T],
    *,
    timeout: float,
    what: str,
    retry_if: Callable[[], bool] | None = None,
    before_retry: Callable[[float], object] | None = None,
    started: float | None = None,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call *fn*; on a lock error, call it again with backoff until *timeout* seconds pass.

    Args:
        fn: The operation.
        timeout: The budget in seconds for all attempts and waits together.
        what: Names the operation in the error message.
        retry_if: Asked after each lock error whether another attempt is safe (nothing was
            applied); when it says no, the lock error propagates unchanged.
        before_retry: Called with the seconds left before each new attempt, e.g. to bound
            SQLite's own busy handler by what is left of the budget.
        started: When the budget started (``time.monotonic()``), if before this call: one
            budget can then span several calls, as in connection set-up.
        retryable: Which errors are worth waiting for (default: :func:`is_transient`).

    Raises:
        DatabaseLockedError: the budget is spent; ``__cause__`` is the last lock error.
        Exception: any other error of *fn*, unchanged and at once.
    """
    if started is None:
        started = time.monotonic()
    try:
        return fn()
    except sqlite3.OperationalError as error:
        if not retryable(error) or (retry_if is not None and not retry_if()):
            raise
        first = error
    return retry_after_lock_error(
        first,
        fn,
        started=started,
        timeout=timeout,
        what=what,
        retry_if=retry_if,
        before_retry=before_retry,
        retryable=retryable,
    )


def retry_after_lock_error(
    first: sqlite3.OperationalError,
    fn: Callable[[], T],
    *,
    started: float,
    timeout: float,
    what: str,
    retry_if: Callable[[], bool] | None = None,
    before_retry: Callable[[float], object] | None = None,
    database: str | None = None,
    counters: LockCounters | None = None,
    retryable: Callable[[BaseException], bool] = is_transient,
) -> T:
    """The slow path of :func:`call_within_budget`: *fn* failed with *first*, a lock error
    that is safe to retry, after starting at *started* (``time.monotonic()``). Events go
    to the hooks and, given *counters*, are counted for *database*'s connection."""
    report = _Report(what, started, timeout, database, counters)
    surfaced = current_scope() is None

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        last = state.outcome.exception() if state.outcome else None
        raise exhausted(what, report.attempts, time.monotonic() - started, timeout, last or first)

    def give_up_at_once() -> NoReturn:
        raise exhausted(what, 1, time.monotonic() - started, timeout, first)

    def may_retry(error: BaseException) -> bool:
        return retryable(error) and (retry_if is None or retry_if())

    def attempt() -> T:
        report.attempts += 1
        if before_retry is not None:
            before_retry(started + timeout - time.monotonic())
        return fn()

    left = started + timeout - time.monotonic()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(may_retry),
        stop=tenacity.stop_before_delay(max(left, 0.0)),
        wait=_tenacity_backoff,
        before_sleep=report.retry_scheduled,
        retry_error_callback=give_up,
        reraise=True,
    )
    try:
        wait = backoff(1)
        if left <= wait:
            give_up_at_once()
        report.event(RETRY_SCHEDULED, first, wait)
        time.sleep(wait)
        result = retrying(attempt)
    except BaseException as error:
        report.done(error, surfaced=surfaced and retryable(error))
        raise
    report.done(None, surfaced=False)
    return result


# -- retry scopes: @retry_on_lock ----------------------------------------------------------


class Member(Protocol):
    """What a scope needs of a connection its attempt uses (a
    :class:`~sqlite_resilient.ResilientConnection`'s dispatcher, or :class:`PlainMember`)."""

    @property
    def raw(self) -> sqlite3.Connection: ...
    @property
    def database_path(self) -> str | None: ...
    @property
    def counters(self) -> LockCounters | None: ...
    @property
    def busy_now(self) -> int: ...

    def owns_transaction(self) -> bool:
        """Whether a transaction of this thread's is open (for a scope: one open before
        the call, which it must leave to its owner)."""

    def rollback_attempt(self) -> None:
        """Roll back the transaction of this thread's, if one is open."""

    def bound_busy(self, milliseconds: int) -> None:
        """Let SQLite's busy handler wait at most *milliseconds*."""

    def restore_busy(self) -> None:
        """Give SQLite's busy handler its own value back."""


Runner = Callable[[Callable[[], None]], Awaitable[object]]
"""``await run(fn)`` calls ``fn()`` in the thread that owns a connection (see :meth:`Scope.worker`)."""


def is_pep249(raw: sqlite3.Connection) -> bool:
    """Whether *raw* runs with ``autocommit=False`` (Python 3.12+): a transaction is
    always open, so "in a transaction" says nothing of pending work."""
    return getattr(raw, "autocommit", None) is False


def rollback(raw: sqlite3.Connection) -> None:
    """Roll back the transaction of *raw* if one is open, in every transaction mode (under
    ``autocommit=False`` Python opens the next one, as that mode wants)."""
    if not raw.in_transaction:
        return
    if is_pep249(raw):
        raw.rollback()
    else:
        raw.execute("ROLLBACK")


class PlainMember:
    """A plain :class:`sqlite3.Connection` as a scope sees it: its transactions, and no
    busy handler or statistics of the library's."""

    __slots__ = ("raw",)

    counters: LockCounters | None = None
    database_path: str | None = None
    busy_now = 0

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def owns_transaction(self) -> bool:
        return self.raw.in_transaction

    def rollback_attempt(self) -> None:
        rollback(self.raw)

    def bound_busy(self, milliseconds: int) -> None:  # pragma: no cover - busy_now is 0
        pass

    def restore_busy(self) -> None:  # pragma: no cover - never bounded
        pass


class Scope:
    """One call of a function decorated with :func:`retry_on_lock`: its budget, and the
    connections its current attempt used."""

    def __init__(self, operation: str, budget: float) -> None:
        self.operation = operation
        self.budget = budget
        self.started = time.monotonic()
        self.deadline = self.started + budget
        # id(raw connection) -> (member, whether a transaction of its was open before the call)
        self.members: dict[int, tuple[Member, bool]] = {}
        self.bounded: dict[int, Member] = {}  # members whose busy handler was lowered
        self.failed_on: Member | None = None  # whose lock error ended the last attempt
        self.thread = threading.get_ident()
        # id(raw connection) -> (member, runner) of connections used in worker threads (see worker())
        self.workers: dict[int, tuple[Member, Runner]] = {}

    def join(self, member: Member) -> None:
        """Note that the attempt uses *member*, and keep SQLite's busy handler of it within
        what is left of the budget."""
        key = id(member.raw)
        if key not in self.members:
            self.members[key] = (member, member.owns_transaction())
        if member.busy_now:
            left_ms = int((self.deadline - time.monotonic()) * 1000)
            if left_ms < member.busy_now - BUSY_SLACK_MS:
                member.bound_busy(max(left_ms, 0))
                self.bounded[key] = member

    def join_arguments(self, values: Iterable[object]) -> None:
        """Note the plain connections among a call's arguments before the function runs
        (a :class:`~sqlite_resilient.ResilientConnection` joins with its first call)."""
        for value in values:
            if isinstance(value, sqlite3.Connection) and getattr(value, "__wrapped__", value) is value:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed: the function will say
                    self.join(PlainMember(value))

    @property
    def outer_transaction(self) -> bool:
        """Whether the attempt used a connection whose transaction was open before the call."""
        return any(outer for _, outer in self.members.values())

    def lock_error_in(self, member: Member) -> None:
        self.failed_on = member

    def worker(self, member: Member, run: Runner) -> None:
        """Note that *member* is used in a worker thread, in which ``await run(fn)`` calls
        ``fn()`` (:mod:`sqlite_resilient.aio`): the async decorator rolls it back and restores
        its busy handler there, since :mod:`sqlite3` refuses both from another thread."""
        self.workers[id(member.raw)] = (member, run)

    def _runner(self, member: Member) -> Runner | None:
        worker = self.workers.get(id(member.raw))
        return worker[1] if worker is not None and worker[0] is member else None

    def _undo_attempt(self) -> Iterator[tuple[Member, Callable[[], None]]]:
        """The rollbacks of the transactions this attempt opened: never one open before
        the call, nor one of another thread (a pool, such as SQLAlchemy's, may have rolled
        back the attempt's transaction and handed the connection to another thread)."""
        for member, outer in list(self.members.values()):
            if not outer:
                yield member, member.rollback_attempt

    def _undo_bounds(self) -> Iterator[tuple[Member, Callable[[], None]]]:
        for member in list(self.bounded.values()):
            yield member, member.restore_busy

    def attempt_failed(self) -> None:
        """Roll back the transactions this attempt opened (see :meth:`_undo_attempt`)."""
        for _, undo in self._undo_attempt():
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed by the function itself
                undo()

    async def attempt_failed_async(self) -> None:
        """:meth:`attempt_failed`, each rollback in the thread of its connection."""
        await self._run_all(self._undo_attempt())

    def next_attempt(self) -> None:
        self.members.clear()

    def close(self) -> None:
        """Give the connections whose busy handler was lowered their own back."""
        for _, undo in self._undo_bounds():
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
                undo()

    async def close_async(self) -> None:
        """:meth:`close`, each in the thread of its connection."""
        await self._run_all(self._undo_bounds())

    async def _run_all(self, calls: Iterable[tuple[Member, Callable[[], None]]]) -> None:
        for member, call in calls:
            run = self._runner(member)
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
                if run is None:
                    call()
                else:
                    await run(call)


_current: ContextVar[Scope | None] = ContextVar("sqlite_resilient_retry_scope", default=None)
_lent_to: ContextVar[int] = ContextVar("sqlite_resilient_scope_lent_to", default=0)
"""The thread to which the context's scope is lent for one call (see :func:`run_lent`)."""


def current_scope() -> Scope | None:
    """The decorated call running in this thread (or asyncio task), if any.

    A thread that inherited the context of its creator (free-threaded Python 3.14 does so
    by default) runs its own calls: a scope belongs to the thread that opened it, or to
    the one it is lent to for a call (:func:`run_lent`).
    """
    scope = _current.get()
    if scope is not None and scope.thread != threading.get_ident() and _lent_to.get() != threading.get_ident():
        return None
    return scope


def run_lent(fn: Callable[[], T]) -> T:
    """Call *fn* with the scope of the current context lent to this thread.

    For a worker thread that runs one call on behalf of a task or thread that waits for it
    (:mod:`sqlite_resilient.aio`), inside a copy of that caller's context
    (``contextvars.copy_context().run(run_lent, fn)``): statements of *fn* then belong to
    the caller's decorated call, if any, as if the caller ran them.
    """
    _lent_to.set(threading.get_ident())
    return fn()


class _Retrier:
    """The retry loop of one decorated call: the first attempt runs plainly, tenacity
    takes over only after a lock error."""

    def __init__(self, scope: Scope, attempts: int | None) -> None:
        self.scope = scope
        self.max_attempts = attempts
        self.attempts = 0

    def may_retry(self, error: BaseException) -> bool:
        return transient_cause(error) is not None and not self.scope.outer_transaction

    def start_attempt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.attempts += 1
        self.scope.next_attempt()
        self.scope.join_arguments((*args, *kwargs.values()))

    def failed(self, error: BaseException) -> None:
        if transient_cause(error) is not None:
            self.scope.attempt_failed()

    def first_failed(self, error: BaseException, wait: float) -> dict[str, Any]:
        """The first attempt failed with *error*, a lock error that may be retried: give up
        at once if the budget or attempts do not allow another after *wait* seconds, else
        return the keywords of the tenacity loop of the next attempts (the caller waits
        first)."""
        left = self.scope.deadline - time.monotonic()
        if left <= wait or self.max_attempts == 1:
            raise exhausted(
                self.scope.operation, self.attempts, time.monotonic() - self.scope.started, self.scope.budget, error
            )
        self.report(RETRY_SCHEDULED, error, wait)
        stop: tenacity.stop.stop_base = tenacity.stop_before_delay(left - wait)
        if self.max_attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.max_attempts - 1)
        return {
            "retry": tenacity.retry_if_exception(self.may_retry),
            "stop": stop,
            "wait": _tenacity_backoff,
            "before_sleep": self.retry_scheduled,
            "retry_error_callback": self.give_up,
            "reraise": True,
        }

    def report(self, name: str, error: BaseException | None, wait: float = 0.0) -> None:
        member = self.scope.failed_on
        emit(
            LockEvent(
                name=name,
                operation=self.scope.operation,
                database=member.database_path if member is not None else None,
                attempt=self.attempts,
                waited=time.monotonic() - self.scope.started,
                wait=wait,
                budget=self.scope.budget,
                error=error,
            )
        )

    def retry_scheduled(self, state: tenacity.RetryCallState) -> None:
        self.report(RETRY_SCHEDULED, state.outcome.exception() if state.outcome else None, _upcoming_sleep(state))

    def give_up(self, state: tenacity.RetryCallState) -> NoReturn:
        last = state.outcome.exception() if state.outcome else None
        waited = time.monotonic() - self.scope.started
        if last is None:  # pragma: no cover - tenacity gives up only after an attempt failed
            raise AssertionError("gave up without an error")
        raise exhausted(self.scope.operation, self.attempts, waited, self.scope.budget, last)

    def finished(self, error: BaseException | None) -> None:
        """Report the call, if it met a lock: *error* is what the caller gets, or None."""
        lock_error = error is not None and transient_cause(error) is not None
        if self.attempts == 1 and not lock_error:
            return
        if error is None:
            self.report(LOCK_WAITED, None)
        elif lock_error:
            self.report(LOCK_ERROR, error)
        member = self.scope.failed_on
        counters = member.counters if member is not None else None
        if counters is not None:
            counters.record(
                attempts=self.attempts,
                retries=self.attempts - 1,
                waited=time.monotonic() - self.scope.started,
                surfaced=lock_error,
            )


@overload
def retry_on_lock(fn: Callable[P, T], /) -> Callable[P, T]: ...
@overload
def retry_on_lock(
    *, timeout: float | None = None, attempts: int | None = None
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...
def retry_on_lock(
    fn: Callable[P, T] | None = None, /, *, timeout: float | None = None, attempts: int | None = None
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Re-run the whole decorated function (sync or ``async def``) when it fails with a
    lock error, with jittered exponential backoff, within one time budget.

    Use it around a transaction, so that a lock error (``SQLITE_BUSY_SNAPSHOT`` included)
    re-runs the reads as well as the writes::

        @retry_on_lock
        def enrich(conn, item_id):
            with db_transaction(conn):
                ...

    Rules:

    - Only lock errors (:func:`~sqlite_resilient.is_lock_error`) are retried, also inside
      another error that carries one as ``.orig`` (PEP 249 wrappers: SQLAlchemy's
      ``OperationalError``) or as its ``__cause__``; any other exception,
      ``KeyboardInterrupt`` and ``SystemExit`` included, propagates at once as the same
      object.
    - Before a re-run, the transactions the failed attempt opened are rolled back, unless
      one already ended through the connection (a pool rolled it back; the connection may
      be another thread's by then).
    - A transaction that was already open on a connection before the call is neither
      retried, rolled back nor committed: the lock error propagates to its owner.
    - Both rules apply to the connections the library sees: every
      :class:`~sqlite_resilient.ResilientConnection`, and plain :class:`sqlite3.Connection`
      objects passed as arguments or used with :func:`db_transaction`. A plain connection
      reached otherwise (e.g. through a closure) is invisible to it.
    - Nested decorated calls: only the outermost retries.
    - Statements inside keep to the budget: SQLite's busy handler of the connections used
      is lowered to what is left of it, and restored after the call.

    Args:
        timeout: The budget in seconds for all attempts and waits; default
            ``DEFAULT_SETTINGS.timeout`` (30 s).
        attempts: At most this many attempts (default: as many as the budget allows).

    Raises:
        DatabaseLockedError: the budget (or *attempts*) is spent; ``__cause__`` is the last
            lock error.
        TypeError: *fn* is a generator function, which cannot be re-run, or not a function
            (``@retry_on_lock(5)``: *timeout* is keyword-only).
    """
    if fn is not None and not callable(fn):
        raise TypeError(
            f"retry_on_lock takes the function to decorate, not {fn!r}: timeout and attempts are "
            f"keyword-only (@retry_on_lock(timeout={fn!r}))"
        )
    budget = DEFAULT_SETTINGS.timeout if timeout is None else _check_timeout("timeout", timeout)
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
        raise ValueError(f"attempts must be a positive int or None, not {attempts!r}")

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"retry_on_lock cannot re-run generator function {fn.__qualname__!r}")
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, T]", _decorate_async(cast("Callable[P, Awaitable[Any]]", fn), budget, attempts))
        return _decorate_sync(fn, budget, attempts)

    return decorate if fn is None else decorate(fn)


def _decorate_sync(fn: Callable[P, T], budget: float, attempts: int | None) -> Callable[P, T]:
    operation = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if current_scope() is not None:  # an outer decorated call retries
            return fn(*args, **kwargs)
        retrier = _Retrier(Scope(operation, budget), attempts)
        token = _current.set(retrier.scope)

        def attempt() -> T:
            retrier.start_attempt(args, kwargs)
            try:
                return fn(*args, **kwargs)
            except BaseException as error:
                retrier.failed(error)
                raise

        try:
            try:
                result = attempt()
            except Exception as error:
                if not retrier.may_retry(error):
                    raise
                wait = backoff(1)
                retrying = tenacity.Retrying(**retrier.first_failed(error, wait))
                time.sleep(wait)
                result = retrying(attempt)
        except BaseException as error:
            retrier.finished(error)
            raise
        finally:
            _current.reset(token)
            retrier.scope.close()
        retrier.finished(None)
        return result

    return wrapper


def _decorate_async(fn: Callable[P, Awaitable[T]], budget: float, attempts: int | None) -> Callable[P, Awaitable[T]]:
    import asyncio  # noqa: PLC0415 - only programs with coroutines pay for importing it

    operation = fn.__qualname__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if current_scope() is not None:
            return await fn(*args, **kwargs)
        retrier = _Retrier(Scope(operation, budget), attempts)
        token = _current.set(retrier.scope)

        async def attempt() -> T:
            retrier.start_attempt(args, kwargs)
            try:
                return await fn(*args, **kwargs)
            except BaseException as error:
                if transient_cause(error) is not None:
                    await retrier.scope.attempt_failed_async()
                raise

        try:
            try:
                result = await attempt()
            except Exception as error:
                if not retrier.may_retry(error):
                    raise
                wait = backoff(1)
                retrying = tenacity.AsyncRetrying(**retrier.first_failed(error, wait))
                await asyncio.sleep(wait)
                result = await retrying(attempt)
        except BaseException as error:
            retrier.finished(error)
            raise
        finally:
            _current.reset(token)
            await retrier.scope.close_async()
        retrier.finished(None)
        return result

    return wrapper
