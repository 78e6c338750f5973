"""Waiting for locks inside one time budget.

:func:`call_within_budget` runs a callable and, while it fails with a lock error (see
:func:`~sqlite_resilient.is_lock_error`) and the caller says a retry is safe, runs it again
after a jittered exponential backoff (tenacity), until the budget of the whole operation is
spent; then it raises :class:`~sqlite_resilient.DatabaseLockedError`.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable, NoReturn, TypeVar

import tenacity

from ._errors import DatabaseLockedError, copy_sqlite_error_code, is_lock_error

__all__ = ["call_within_budget", "exhausted", "retry_after_lock_error"]

T = TypeVar("T")

# Backoff between attempts: uniformly random in [0, min(MAX, MIN * 2**n)] seconds. The
# jitter keeps competing processes from retrying in lock step (tenacity's own advice).
BACKOFF_MULTIPLIER = 0.002
BACKOFF_MAX = 0.1


def exhausted(what: str, attempts: int, waited: float, budget: float, last: BaseException) -> DatabaseLockedError:
    """The error for a spent budget, carrying the SQLite code of the last lock error."""
    error = DatabaseLockedError(
        f"database is locked: {what} gave up after {attempts} attempt"
        f"{'s' if attempts != 1 else ''} over {waited:.2f} s (lock-wait budget {budget:g} s)",
        attempts=attempts,
        waited=waited,
        budget=budget,
    )
    copy_sqlite_error_code(last, error)
    error.__cause__ = last
    return error


def call_within_budget(
    fn: Callable[[], T],
    *,
    timeout: float,
    what: str,
    retry_if: Callable[[], bool] | None = None,
    before_retry: Callable[[float], object] | None = None,
    started: float | None = None,
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

    Raises:
        DatabaseLockedError: the budget is spent; ``__cause__`` is the last lock error.
        Exception: any other error of *fn*, unchanged and at once.
    """
    if started is None:
        started = time.monotonic()
    try:
        return fn()
    except sqlite3.OperationalError as error:
        if not is_lock_error(error) or (retry_if is not None and not retry_if()):
            raise
        first = error
    return retry_after_lock_error(
        first, fn, started=started, timeout=timeout, what=what, retry_if=retry_if, before_retry=before_retry
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
) -> T:
    """The slow path of :func:`call_within_budget`: *fn* failed with *first*, a lock error
    that is safe to retry, after starting at *started* (``time.monotonic()``)."""
    attempts = 1

    def give_up(last: BaseException | None) -> NoReturn:
        raise exhausted(what, attempts, time.monotonic() - started, timeout, last or first)

    def retryable(error: BaseException) -> bool:
        return is_lock_error(error) and (retry_if is None or retry_if())

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        if before_retry is not None:
            before_retry(started + timeout - time.monotonic())
        return fn()

    left = started + timeout - time.monotonic()
    if left <= 0:
        give_up(first)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        stop=tenacity.stop_before_delay(left),
        wait=tenacity.wait_random_exponential(multiplier=BACKOFF_MULTIPLIER, max=BACKOFF_MAX),
        retry_error_callback=lambda state: give_up(state.outcome.exception() if state.outcome else None),
        reraise=True,
    )
    return retrying(attempt)
