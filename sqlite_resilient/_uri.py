"""What a ``database`` argument names, and correctly encoded ``file:`` URIs for it.

SQLite's URI rules (https://www.sqlite.org/uri.html): after ``file:`` an optional
``//authority`` (empty or ``localhost``), then the path up to ``?`` or ``#``, then
``&``-separated ``key=value`` parameters up to ``#``; ``%HH`` escapes are decoded in both.
A path containing ``?``, ``#``, ``%`` or ``&`` must therefore be percent-encoded, or the
URI silently names another file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union
from urllib.parse import quote, unquote_to_bytes

from ._errors import ConfigurationError

__all__ = ["Database", "Target", "parse_database", "to_uri"]

Database = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# Characters left unencoded in a URI path or parameter: unreserved ones and "/" in paths.
_SAFE_PATH = "/-._~"
_SAFE_PARAM = "-._~"


@dataclass(frozen=True)
class Target:
    """The database a ``connect()`` call opens.

    Attributes:
        path: Absolute filesystem path of the main database file; ``None`` for in-memory
            and temporary databases.
        memory: An in-memory (``:memory:``, ``mode=memory``, ``vfs=memdb``) or temporary
            (``""``) database: nothing for WAL to do.
        params: The URI parameters, in order (empty for plain file names).
    """

    path: str | None
    memory: bool
    params: tuple[tuple[str, str], ...] = ()

    def param(self, key: str) -> str | None:
        """The last value of a URI parameter, as SQLite reads it."""
        value = None
        for k, v in self.params:
            if k == key:
                value = v
        return value


def _decode(text: str) -> str:
    return os.fsdecode(unquote_to_bytes(text))


def parse_database(database: object, uri: bool) -> Target:
    """Describe the database *database* names (as ``sqlite3.connect(database, uri=uri)``).

    Raises:
        TypeError: *database* is not a str, bytes or path-like object (as ``sqlite3``).
        ConfigurationError: a ``file:`` URI names a remote host.
    """
    if not isinstance(database, (str, bytes, os.PathLike)):
        raise TypeError(f"database must be str, bytes or os.PathLike, not {type(database).__name__}")
    name = os.fsdecode(os.fspath(database))
    if "\0" in name:
        raise ConfigurationError(f"database name contains a NUL character: {name!r}")
    if not (uri and name[:5].lower() == "file:"):
        if name in ("", ":memory:"):
            return Target(path=None, memory=True)
        return Target(path=os.path.abspath(name), memory=False)
    rest = name[5:].split("#", 1)[0]
    if rest.startswith("//"):
        authority, slash, rest = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            raise ConfigurationError(f"file: URI names a remote host {authority!r}: {name!r}")
        rest = slash + rest
    raw_path, _, query = rest.partition("?")
    params = tuple(
        (_decode(key), _decode(value)) for key, _, value in (item.partition("=") for item in query.split("&") if item)
    )
    path = _decode(raw_path)
    target = Target(path=path, memory=False, params=params)
    if path in ("", ":memory:") or target.param("mode") == "memory" or target.param("vfs") == "memdb":
        return Target(path=None, memory=True, params=params)
    return Target(path=os.path.abspath(path), memory=False, params=params)


def to_uri(path: str, params: dict[str, str]) -> str:
    """Build a ``file:`` URI that names exactly *path*, with the given parameters.

    Every byte of the path outside the unreserved set is percent-encoded, so ``?``, ``#``,
    ``%``, ``&``, spaces and non-ASCII characters name that file and nothing else.
    """
    encoded = quote(os.fsencode(path), safe=_SAFE_PATH)
    # An empty authority first, so that a path starting with "//" is not read as a host.
    query = "&".join(f"{quote(k, safe=_SAFE_PARAM)}={quote(v, safe=_SAFE_PARAM)}" for k, v in params.items())
    return f"file://{encoded}?{query}" if query else f"file://{encoded}"
