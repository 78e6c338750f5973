"""The application's call: where warnings raised on its behalf point.

A warning names the file, line and module of a frame: ``warnings.warn(..., stacklevel=N)``
the *N*-th frame up, and :mod:`sqlite3`'s C code (its ``DeprecationWarning``\\ s: named
placeholders given a sequence, the default date adapters, keyword arguments deprecated in
3.13) the innermost Python frame, which is the library's when the library makes the call.
With Python's default filters a ``DeprecationWarning`` is shown only where it points at
``__main__``, so pointing at the library hides it (and ``-W error`` tests it in the wrong
place). Both helpers here make warnings point at the first frame outside this package.

This module imports nothing of the package.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable, TypeVar

__all__ = ["as_caller", "caller_stacklevel"]

T = TypeVar("T")

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the calling function point at the
    first frame outside this package (the application's call)."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    return level


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)  # one line below the ``def``: copies move it to the caller's line


_copies: dict[tuple[str, int, str], types.CodeType] = {}


def as_caller(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` from a frame that carries the file, line and module
    globals of the application's call (the first frame outside this package): a warning
    that C code called by *fn* raises at its own level points there, as it would have
    had the application called *fn* itself."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    name = getattr(fn, "__name__", "call")
    key = (frame.f_code.co_filename, frame.f_lineno or 1, name)
    code = _copies.get(key)
    if code is None:
        if len(_copies) > 256:
            _copies.clear()
        line = max(key[1] - 1, 1)
        code = _copies[key] = _call.__code__.replace(co_filename=key[0], co_firstlineno=line, co_name=name)
    call: Callable[..., T] = types.FunctionType(code, frame.f_globals)
    return call(fn, args, kwargs)
