"""The pragmas the library can set: each a typed entry that validates values and renders SQL.

A pragma value given by a user is never interpolated into SQL: :func:`validate` turns it into
a canonical Python value (``bool``, ``int`` or one of a fixed set of lowercase keywords) and
only that canonical value is rendered, by :meth:`Pragma.literal`. Anything else raises
:class:`~sqlite_resilient.ConfigurationError` (a ``ValueError``) before any SQL runs.

See https://www.sqlite.org/pragma.html for what each pragma does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from ._errors import ConfigurationError

__all__ = ["PRAGMAS", "Pragma", "PragmaValue", "validate", "validate_all"]

PragmaValue = Union[bool, int, str]
"""A canonical pragma value: ``bool`` for flags, ``int`` for numbers, a keyword string."""

_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_DECIMAL = re.compile(r"[+-]?[0-9]{1,19}\Z")
_TRUE = frozenset({"1", "on", "true", "yes"})
_FALSE = frozenset({"0", "off", "false", "no"})


@dataclass(frozen=True)
class Pragma:
    """One pragma: its value domain and how SQLite reports it back."""

    name: str
    doc: str
    kind: str  # "bool", "int" or "enum"
    choices: tuple[str, ...] = ()
    """Keywords of an ``enum`` pragma, in the order of their numeric codes."""
    numeric: bool = False
    """Whether SQLite reports an ``enum`` pragma as the index of its keyword."""
    bounds: tuple[int, int] = _INT64
    per_connection: bool = True
    """False for pragmas that change the database file, never set on read-only connections."""

    def canonical(self, value: object) -> PragmaValue:  # noqa: PLR0911 - one return per accepted spelling
        """Return the canonical form of *value*, or raise ``ConfigurationError``."""
        value = _plain(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            return self._reject(value, "a bool (or 0/1, 'on'/'off')")
        if self.kind == "int":
            number: int | None = None
            if isinstance(value, int) and not isinstance(value, bool):
                number = value
            elif isinstance(value, str) and _DECIMAL.match(value):
                number = int(value)
            low, high = self.bounds
            if number is None or not low <= number <= high:
                return self._reject(value, f"an integer from {low} to {high}")
            return number
        if isinstance(value, str) and value.lower() in self.choices:
            return value.lower()
        if self.numeric and type(value) is int and 0 <= value < len(self.choices):
            return self.choices[value]
        expected = ", ".join(repr(c) for c in self.choices)
        if self.numeric:
            expected += f" (or 0 to {len(self.choices) - 1})"
        return self._reject(value, f"one of {expected}")

    def _reject(self, value: object, expected: str) -> PragmaValue:
        raise ConfigurationError(
            f"invalid value for pragma {self.name!r}: {value!r} ({type(value).__name__}); expected {expected}"
        )

    def literal(self, value: PragmaValue) -> str:
        """Render a canonical value as the SQL literal of ``PRAGMA name = literal``."""
        if isinstance(value, bool):
            return "ON" if value else "OFF"
        if isinstance(value, int):
            return str(value)
        if value not in self.choices:  # canonical values only; never user text
            raise ConfigurationError(f"{value!r} is not a keyword of pragma {self.name!r}")
        return value.upper()

    def set_sql(self, value: PragmaValue) -> str:
        """The statement that sets this pragma to a canonical value."""
        return f"PRAGMA {self.name} = {self.literal(value)}"

    def from_sqlite(self, reported: object) -> PragmaValue:
        """Turn the value SQLite reports (``PRAGMA name``) into the canonical form."""
        if self.kind == "bool":
            return bool(reported)
        if self.kind == "int":
            return reported if isinstance(reported, int) else int(str(reported))
        if self.numeric and isinstance(reported, int):
            return self.choices[reported]
        return str(reported).lower()


def _plain(value: object) -> object:
    """The value as a plain ``int``/``str``: a subclass's methods (``__str__``, ``lower``, ...)
    could say anything, and only plain values are ever rendered into SQL."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, str):
        return str.__str__(value)
    return value


def _flag(name: str, doc: str) -> Pragma:
    return Pragma(name=name, doc=doc, kind="bool")


def _number(name: str, doc: str, low: int, high: int) -> Pragma:
    return Pragma(name=name, doc=doc, kind="int", bounds=(low, high))


def _keyword(name: str, doc: str, *choices: str, numeric: bool, per_connection: bool = True) -> Pragma:
    return Pragma(name=name, doc=doc, kind="enum", choices=choices, numeric=numeric, per_connection=per_connection)


_LINK = "https://www.sqlite.org/pragma.html#pragma_"

PRAGMAS: Mapping[str, Pragma] = {
    p.name: p
    for p in (
        _flag("automatic_index", f"Automatic indexes for queries without one. {_LINK}automatic_index"),
        _number("busy_timeout", f"Milliseconds SQLite's own busy handler waits. {_LINK}busy_timeout", 0, _INT32[1]),
        _number("cache_size", f"Page cache: pages, or KiB when negative. {_LINK}cache_size", *_INT32),
        _flag("cell_size_check", f"Extra checks of b-tree cells on read. {_LINK}cell_size_check"),
        _flag("checkpoint_fullfsync", f"F_FULLFSYNC on checkpoints (macOS). {_LINK}checkpoint_fullfsync"),
        _flag("defer_foreign_keys", f"Check foreign keys at COMMIT only. {_LINK}defer_foreign_keys"),
        _flag("foreign_keys", f"Enforce foreign key constraints. {_LINK}foreign_keys"),
        _flag("fullfsync", f"F_FULLFSYNC on commits (macOS). {_LINK}fullfsync"),
        _flag("ignore_check_constraints", f"Skip CHECK constraints. {_LINK}ignore_check_constraints"),
        _keyword(
            "journal_mode",
            f"Rollback journal or write-ahead log. {_LINK}journal_mode",
            "delete",
            "truncate",
            "persist",
            "memory",
            "wal",
            "off",
            numeric=False,
            per_connection=False,
        ),
        _number("journal_size_limit", f"Bytes kept of a journal or WAL file. {_LINK}journal_size_limit", -1, _INT64[1]),
        _keyword(
            "locking_mode",
            f"Keep the file lock between transactions. {_LINK}locking_mode",
            "normal",
            "exclusive",
            numeric=False,
        ),
        _number("mmap_size", f"Bytes of the file to memory-map. {_LINK}mmap_size", 0, _INT64[1]),
        _flag("query_only", f"Refuse every change to the database. {_LINK}query_only"),
        _flag("recursive_triggers", f"Let triggers fire triggers. {_LINK}recursive_triggers"),
        _flag(
            "reverse_unordered_selects", f"Reverse unordered SELECT output (testing). {_LINK}reverse_unordered_selects"
        ),
        _keyword(
            "secure_delete", f"Overwrite deleted content. {_LINK}secure_delete", "off", "on", "fast", numeric=True
        ),
        _keyword("synchronous", f"When to fsync. {_LINK}synchronous", "off", "normal", "full", "extra", numeric=True),
        _keyword(
            "temp_store", f"Where temporary tables live. {_LINK}temp_store", "default", "file", "memory", numeric=True
        ),
        _flag("trusted_schema", f"Let schema SQL call functions with side effects. {_LINK}trusted_schema"),
        _number("wal_autocheckpoint", f"WAL pages per checkpoint, 0: none. {_LINK}wal_autocheckpoint", 0, _INT32[1]),
    )
}
"""Every pragma the library can set, by name."""


def validate(name: object, value: object) -> tuple[Pragma, PragmaValue]:
    """Check one pragma name and value; return its entry and the canonical value.

    Raises:
        ConfigurationError: the name is not a supported pragma or the value is outside its
            domain. The message names the pragma, the value and what is expected.
    """
    pragma = PRAGMAS.get(name) if isinstance(name, str) else None
    if pragma is None:
        raise ConfigurationError(f"unknown or unsupported pragma {name!r}; supported: {', '.join(sorted(PRAGMAS))}")
    return pragma, pragma.canonical(value)


def validate_all(pragmas: Mapping[str, object]) -> dict[str, PragmaValue]:
    """Validate a mapping of pragma names to values; return the canonical mapping."""
    if not isinstance(pragmas, Mapping):
        raise ConfigurationError(f"pragmas must be a mapping of names to values, not {type(pragmas).__name__}")
    return {name: validate(name, value)[1] for name, value in pragmas.items()}
