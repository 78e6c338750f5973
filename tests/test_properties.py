"""Property-based tests (Hypothesis) of validation, URIs and ``connect()`` keyword handling.

Every example opens real SQLite files in a fresh ``tempfile.TemporaryDirectory()`` (not
``tmp_path``: a function-scoped fixture would be shared by all examples of a test). Expected
values are computed here, from SQLite's documentation, not from the library's own tables,
so a wrong table in ``_pragmas.py`` is caught too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Union, cast

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sqlite_resilient
from sqlite_resilient import PRAGMAS, ConfigurationError, Settings
from sqlite_resilient._uri import parse_database, to_uri

# Files are opened in every example: no per-example deadline, a modest number of examples.
FILE_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PURE_SETTINGS = settings(max_examples=200, deadline=None)

Database = Union[str, bytes, pathlib.Path]

# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A fresh, empty directory for one Hypothesis example."""
    with tempfile.TemporaryDirectory(prefix="sqlite-resilient-prop-") as directory:
        yield directory


def make_database(path: str, marker: str = "marker") -> None:
    """Create a rollback-journal (DELETE mode) database at *path* with one marker row."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE marker(value TEXT)")
        conn.execute("INSERT INTO marker VALUES (?)", (marker,))
        conn.commit()


def digest(path: str) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def as_form(path: str, form: str) -> Database:
    """*path* as ``connect()`` may be given it: str, bytes or a path-like object."""
    if form == "bytes":
        return os.fsencode(path)
    if form == "pathlib":
        return pathlib.Path(path)
    return path


# -- pragma values, from https://www.sqlite.org/pragma.html ----------------------------------

# The numeric codes SQLite reports for the keyword pragmas of property 1.
ENUM_CODES: dict[str, dict[str, int]] = {
    "secure_delete": {"off": 0, "on": 1, "fast": 2},
    "synchronous": {"off": 0, "normal": 1, "full": 2, "extra": 3},
    "temp_store": {"default": 0, "file": 1, "memory": 2},
}
KEYWORD_PRAGMAS: dict[str, tuple[str, ...]] = {
    **{name: tuple(codes) for name, codes in ENUM_CODES.items()},
    "journal_mode": ("delete", "truncate", "persist", "memory", "wal", "off"),
    "locking_mode": ("normal", "exclusive"),
}
TRUE_WORDS = ("1", "on", "true", "yes")
FALSE_WORDS = ("0", "off", "false", "no")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "busy_timeout": (0, INT32[1]),
    "cache_size": INT32,
    "journal_size_limit": (-1, INT64[1]),
    "mmap_size": (0, INT64[1]),
    # SQLite stores any N <= 0 as "off" and reports 0, so the library's domain starts at 0
    # (-1 read back as 0 and raised PragmaNotAppliedWarning before 993eb7f).
    "wal_autocheckpoint": (0, INT32[1]),
}

# Left out of property 1, because setting them and reading them back is not a plain
# round trip on a normal write connection:
# - journal_mode: switching away from WAL is property 4's subject, and "memory"/"off" change
#   what a crash does to the file; the default (WAL) is checked in property 4.
# - locking_mode: "exclusive" keeps the file locked after the first read, so any other
#   connection in the same test would block.
# - query_only: makes the connection refuse writes; it is the read-only path's business.
# - mmap_size: SQLite clamps it to the compile-time SQLITE_MAX_MMAP_SIZE (platform-dependent,
#   0 where mmap is disabled), so the read-back value legitimately differs.
# Every other pragma is drawn over its whole domain, extremes included: SQLite stores
# busy_timeout, cache_size, journal_size_limit and wal_autocheckpoint as given there.
SKIPPED_IN_ROUND_TRIP = frozenset({"journal_mode", "locking_mode", "query_only", "mmap_size"})


def kind_of(name: str) -> str:
    """``"int"``, ``"enum"`` or ``"bool"``, from the tables above (not the library's)."""
    if name in INT_BOUNDS:
        return "int"
    if name in KEYWORD_PRAGMAS:
        return "enum"
    return "bool"


def test_the_tables_above_cover_every_pragma() -> None:
    """The independent tables of this module describe exactly the pragmas of ``PRAGMAS``
    (so a new pragma cannot silently escape the properties below)."""
    bools = set(PRAGMAS) - set(INT_BOUNDS) - set(KEYWORD_PRAGMAS)
    assert set(INT_BOUNDS) <= set(PRAGMAS)
    assert set(KEYWORD_PRAGMAS) <= set(PRAGMAS)
    for name in bools:
        assert PRAGMAS[name].kind == "bool", name
    for name, bounds in INT_BOUNDS.items():
        assert (PRAGMAS[name].kind, PRAGMAS[name].bounds) == ("int", bounds), name
    for name, choices in KEYWORD_PRAGMAS.items():
        assert (PRAGMAS[name].kind, set(PRAGMAS[name].choices)) == ("enum", set(choices)), name


@st.composite
def case_varied(draw: st.DrawFn, word: str) -> str:
    """*word* with each letter independently upper- or lowercase."""
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if flip else c for c, flip in zip(word, flips))


@st.composite
def decimal_spelling(draw: st.DrawFn, number: int) -> str:
    """A decimal string of *number*: optional ``+`` and leading zeros, at most 19 digits."""
    digits = str(abs(number))
    padded = digits.rjust(draw(st.integers(len(digits), max(len(digits), 19))), "0")
    if number < 0:
        return "-" + padded
    return draw(st.sampled_from(["", "+"])) + padded


def valid_value(name: str) -> st.SearchStrategy[tuple[object, object]]:
    """(a spelling the library accepts for pragma *name*, its canonical value)."""
    kind = kind_of(name)
    if kind == "bool":
        return st.booleans().flatmap(
            lambda flag: st.one_of(
                st.just(flag),
                st.just(int(flag)),
                st.sampled_from(TRUE_WORDS if flag else FALSE_WORDS).flatmap(case_varied),
            ).map(lambda spelling: (spelling, flag))
        )
    if kind == "int":
        low, high = INT_BOUNDS[name]
        return st.integers(low, high).flatmap(
            lambda n: st.one_of(st.just(n), decimal_spelling(n)).map(lambda spelling: (spelling, n))
        )
    choices = KEYWORD_PRAGMAS[name]
    codes = ENUM_CODES.get(name)
    return st.sampled_from(choices).flatmap(
        lambda word: st.one_of(
            case_varied(word),
            *([st.just(codes[word])] if codes is not None else []),
        ).map(lambda spelling: (spelling, word))
    )


def same_value(actual: object, expected: object) -> bool:
    """Equal and of the same type (``True == 1`` must not pass for ``int`` vs ``bool``)."""
    return type(actual) is type(expected) and actual == expected


# -- property 1: valid pragma settings are applied and read back -----------------------------


@st.composite
def valid_pragma_settings(draw: st.DrawFn) -> dict[str, tuple[object, object]]:
    """A subset of the round-trip pragmas, each with an accepted spelling and its canonical value."""
    names = sorted(set(PRAGMAS) - SKIPPED_IN_ROUND_TRIP)
    return draw(st.fixed_dictionaries({}, optional={name: valid_value(name) for name in names}))


@FILE_SETTINGS
@given(drawn=valid_pragma_settings())
def test_valid_pragmas_are_applied_and_read_back(drawn: dict[str, tuple[object, object]]) -> None:
    """Any accepted spelling of a valid value (bools as bool, 0/1 or case-varied words; ints as
    int or decimal string; keywords case-varied or as their numeric code) canonicalises to
    the value SQLite's documentation gives, is applied without a warning, is what
    ``conn.pragmas`` reports, and is what a direct ``PRAGMA name`` query on the connection
    returns."""
    pragmas = {name: spelling for name, (spelling, _) in drawn.items()}
    for name, (spelling, expected) in drawn.items():
        assert same_value(PRAGMAS[name].canonical(spelling), expected), (name, spelling)
    with scratch_dir() as directory:
        conn = sqlite_resilient.connect(os.path.join(directory, "db.sqlite"), pragmas=pragmas)
        try:
            assert conn.journal_mode == "wal"
            for name, (_, expected) in drawn.items():
                assert same_value(conn.pragmas[name], expected), (name, conn.pragmas[name], expected)
                reported = conn.execute(f"PRAGMA {name}").fetchone()[0]
                kind = kind_of(name)
                if kind == "enum":
                    assert reported == ENUM_CODES[name][str(expected)], (name, reported, expected)
                else:
                    assert isinstance(expected, int)
                    assert reported == int(expected), (name, reported, expected)
        finally:
            conn.close()


@pytest.mark.parametrize("value", [-1, "-1", -(2**31)], ids=["int", "str", "int32-min"])
def test_negative_wal_autocheckpoint_is_rejected(value: object) -> None:
    """A negative ``wal_autocheckpoint`` (SQLite's "off", which it reports back as 0, so it
    could never be read back as set) is refused before anything runs; 0 is the way to say
    "off"."""
    with scratch_dir() as directory:
        with pytest.raises(ConfigurationError, match="wal_autocheckpoint"):
            sqlite_resilient.connect(os.path.join(directory, "db.sqlite"), pragmas={"wal_autocheckpoint": value})
        assert os.listdir(directory) == []


# -- property 2: invalid pragma input is rejected before anything runs -----------------------

HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430\u03b1",  # Cyrillic a, Greek alpha
    "c": "\u0441\u03f2",
    "d": "\u0501",
    "e": "\u0435\u03b5",
    "f": "\uff46",  # fullwidth
    "h": "\u04bb",
    "i": "\u0456\u0131",  # Cyrillic i, dotless i
    "l": "\u04cf",
    "m": "\uff4d",
    "n": "\u0578\uff4e",
    "o": "\u043e\u03bf\uff4f",
    "p": "\u0440",
    "r": "\uff52",
    "s": "\u0455\u017f",  # Cyrillic dze, long s
    "t": "\uff54",
    "u": "\u057d",
    "w": "\u051d",
    "x": "\u0445",
    "y": "\u0443",
    "_": "\uff3f",
    "-": "\u2212\u2010\ufe63",
    "+": "\uff0b\u2795",
    # digits: fullwidth, Arabic-Indic, extended Arabic-Indic, Devanagari
    **{str(d): "".join(chr(base + d) for base in (0xFF10, 0x0660, 0x06F0, 0x0966)) for d in range(10)},
}
SQL_TAILS = ("; DROP TABLE t", ";", " --", "--", " OR 1", " /* */", ")", "\n", "\x00", " ", "\t", ",1")
PADDING = (" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u200b", "\ufeff")


@st.composite
def lookalike(draw: st.DrawFn, word: str) -> str:
    """*word* with at least one character replaced by a Unicode lookalike."""
    positions = [i for i, c in enumerate(word) if c.lower() in HOMOGLYPHS]
    assume(positions)
    chosen = draw(st.lists(st.sampled_from(positions), min_size=1, max_size=3, unique=True))
    chars = list(word)
    for i in chosen:
        chars[i] = draw(st.sampled_from(HOMOGLYPHS[chars[i].lower()]))
    return "".join(chars)


def padded(valid: str) -> st.SearchStrategy[str]:
    """*valid* with whitespace (ASCII or Unicode, zero-width included) before and/or after it."""
    pad = st.text(st.sampled_from(PADDING), min_size=1, max_size=2)
    return st.one_of(
        pad.map(lambda p: p + valid),
        pad.map(lambda p: valid + p),
        st.tuples(pad, pad).map(lambda pp: pp[0] + valid + pp[1]),
    )


def with_sql_tail(valid: str) -> st.SearchStrategy[str]:
    """*valid* followed by something that would continue the SQL statement."""
    return st.sampled_from(SQL_TAILS).map(lambda tail: valid + tail)


TAMPERINGS: dict[str, Callable[[str], st.SearchStrategy[str]]] = {
    "sql-tail": with_sql_tail,
    "padding": padded,
    "lookalike": lookalike,
}


class Opaque:
    """An object of no type the library knows."""

    def __repr__(self) -> str:
        return "Opaque()"


WRONG_TYPES: st.SearchStrategy[object] = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -1.0, 5.0, -2000.0]),
    st.none(),
    st.binary(max_size=8),
    st.sampled_from([b"1", b"on", b"wal", b"normal"]),
    st.lists(st.integers(-2, 2), max_size=2),
    st.sampled_from([Decimal(1), Fraction(1, 1), complex(1, 0), Opaque(), ("on",), {"on": 1}]),
)

_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
INT_STRINGS = ("", "+", "-", "--1", "+-1", "0x10", "1e3", "1_000", "1.0", "1,000", "(1)", "'1'", "NaN", "inf")
SQL_VALUES = ("-2000; DROP TABLE t", "wal --", "1 OR 1", "1; ATTACH 'x' AS y", "on --", "delete; DROP TABLE t")
VALUE_CATEGORIES = ("wrong-type", "outside-domain", "sql-tail", "padding", "lookalike")


def outside_domain(name: str) -> st.SearchStrategy[object]:
    """A value of an accepted type that is outside pragma *name*'s domain."""
    kind = kind_of(name)
    if kind == "bool":
        words = set(TRUE_WORDS) | set(FALSE_WORDS)
        return st.one_of(
            st.integers().filter(lambda n: n not in (0, 1)),
            st.sampled_from(["", "2", "-1", "y", "n", "t", "f", "enable", "disable", "onn", "oui"]),
            st.text(max_size=6).filter(lambda s: s.lower() not in words),
        )
    if kind == "int":
        low, high = INT_BOUNDS[name]
        outside = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1))
        return st.one_of(outside, outside.map(str), st.sampled_from(INT_STRINGS))
    choices = KEYWORD_PRAGMAS[name]
    other_words = sorted({w for ws in KEYWORD_PRAGMAS.values() for w in ws} | {"wal2", "on", "yes", "x"})
    numeric = name in ENUM_CODES
    return st.one_of(
        # a numeric code out of range; any number for a keyword-only pragma
        st.one_of(st.integers(max_value=-1), st.integers(min_value=len(choices))) if numeric else st.integers(),
        st.sampled_from(other_words).filter(lambda w: w not in choices).flatmap(case_varied),
        # (a numeric code as a string, e.g. "1" for synchronous, is left undecided here)
        st.text(max_size=8).filter(lambda s: s.lower() not in choices and not (numeric and _NUMBER.match(s))),
    )


def invalid_value(name: str, category: str) -> st.SearchStrategy[object]:
    """A value pragma *name* must reject, of the given category (built from the SQLite
    domain, not from the library)."""
    if category == "wrong-type":
        return WRONG_TYPES if kind_of(name) == "bool" else st.one_of(WRONG_TYPES, st.booleans())
    if category == "outside-domain":
        return outside_domain(name)
    valid_text = valid_value(name).map(lambda pair: pair[0]).filter(lambda v: isinstance(v, str))
    tampered = valid_text.flatmap(lambda v: TAMPERINGS[category](str(v)))
    return st.one_of(tampered, st.sampled_from(SQL_VALUES)) if category == "sql-tail" else tampered


UNSUPPORTED_PRAGMAS = (
    "page_size", "auto_vacuum", "user_version", "application_id", "writable_schema", "key", "rekey",
    "legacy_alter_table", "integrity_check", "wal_checkpoint(TRUNCATE)", "table_info(t)", "main.cache_size",
    "cache_size; DROP TABLE t", "journal_mode=delete", "cache_size = 1", "cache_size--", "cache_size\x00", "",
)  # fmt: skip
NON_STR_KEYS: tuple[object, ...] = (None, 1, 1.5, True, b"cache_size", ("cache_size",), frozenset({"cache_size"}))
NAME_CATEGORIES = ("unsupported-name", "non-str-name", "sql-tail-name", "padded-name", "lookalike-name", "text-name")


def unknown_name(category: str) -> st.SearchStrategy[object]:
    """A pragma name the library must refuse, of the given category."""
    names = st.sampled_from(sorted(PRAGMAS))
    if category == "unsupported-name":
        return st.sampled_from(UNSUPPORTED_PRAGMAS)
    if category == "non-str-name":
        return st.sampled_from(NON_STR_KEYS)
    if category == "sql-tail-name":
        return names.flatmap(with_sql_tail)
    if category == "padded-name":
        return names.flatmap(padded)
    if category == "lookalike-name":
        return names.flatmap(lookalike)
    return st.text(max_size=20).filter(lambda s: s not in PRAGMAS)


@st.composite
def invalid_pragmas(draw: st.DrawFn) -> tuple[object, dict[Any, object]]:
    """(the offending key, a pragma mapping with valid entries and exactly one invalid one).

    The kind of fault is drawn first, so every kind gets its share of examples."""
    names = sorted(PRAGMAS)
    valid = draw(
        st.fixed_dictionaries({}, optional={name: valid_value(name).map(lambda pair: pair[0]) for name in names})
    )
    category = draw(st.sampled_from(NAME_CATEGORIES + VALUE_CATEGORIES))
    if category in NAME_CATEGORIES:
        key: object = draw(unknown_name(category))
        value: object = draw(st.sampled_from([1, "on", "wal", -2000]))
    else:  # the kind first: flags would otherwise crowd out the five numbers
        kind = draw(st.sampled_from(["bool", "int", "enum"]))
        key = draw(st.sampled_from([name for name in names if kind_of(name) == kind]))
        value = draw(invalid_value(str(key), category))
    items: list[tuple[Any, object]] = [(k, v) for k, v in valid.items() if k != key]
    items.insert(draw(st.integers(0, len(items))), (key, value))
    return key, dict(items)


def assert_names(error: BaseException, key: object) -> None:
    """The message of *error* names the offending pragma."""
    assert repr(key) in str(error), (key, str(error))


@FILE_SETTINGS
@given(case=invalid_pragmas(), existing=st.booleans(), form=st.sampled_from(["str", "bytes", "pathlib"]))
def test_invalid_pragmas_are_rejected_before_anything_runs(
    case: tuple[object, dict[Any, object]], existing: bool, form: str
) -> None:
    """Unknown or non-str pragma names (SQL-like, lookalike, padded), values of the wrong type,
    out-of-bounds numbers, values with SQL tails or padding, lookalikes and keywords outside
    the choices all make ``connect()`` raise ``ConfigurationError`` (a ``ValueError``) naming
    the pragma, before anything runs: a missing database is not created, an existing one
    keeps its bytes and gets no -wal/-shm/-journal. ``Settings(pragmas=...)`` rejects the
    same input the same way."""
    key, pragmas = case
    with scratch_dir() as directory:
        path = os.path.join(directory, "db.sqlite")
        if existing:
            make_database(path)
        before = {name: digest(os.path.join(directory, name)) for name in os.listdir(directory)}
        with pytest.raises(ConfigurationError) as caught:
            sqlite_resilient.connect(as_form(path, form), pragmas=pragmas)
        assert isinstance(caught.value, ValueError)
        assert_names(caught.value, key)
        after = {name: digest(os.path.join(directory, name)) for name in os.listdir(directory)}
        assert after == before
    with pytest.raises(ConfigurationError) as caught:
        Settings(pragmas=cast(Any, pragmas))
    assert_names(caught.value, key)


@settings(max_examples=300, deadline=None)
@given(case=invalid_pragmas())
def test_invalid_pragmas_are_rejected_by_validation(case: tuple[object, dict[Any, object]]) -> None:
    """The same inputs as above, many more of them, without files: ``Settings(pragmas=...)``
    raises ``ConfigurationError`` naming the pragma, and ``PRAGMAS[name].canonical()`` rejects
    an invalid value of a known pragma."""
    key, pragmas = case
    with pytest.raises(ConfigurationError) as caught:
        Settings(pragmas=cast(Any, pragmas))
    assert_names(caught.value, key)
    if isinstance(key, str) and key in PRAGMAS:
        with pytest.raises(ConfigurationError):
            PRAGMAS[key].canonical(pragmas[key])


class _LyingInt(int):
    """An ``int`` subclass whose text is not its digits (like ``IntEnum`` on Python < 3.11)."""

    def __str__(self) -> str:
        return f"{int(self)}; DROP TABLE t"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)


class _LyingStr(str):
    """A ``str`` subclass whose methods say something else than its characters."""

    __slots__ = ()

    def lower(self) -> str:  # a valid flag word: accepted if the library trusted it
        return "on"

    def upper(self) -> str:
        return "WAL; DROP TABLE t"

    def __str__(self) -> str:
        return "-2000; DROP TABLE t"

    def strip(self, chars: str | None = None) -> str:
        return "1"

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def lying(spelling: object) -> object:
    """*spelling* as an instance of a subclass that lies about it (bools stay: no subclass)."""
    if isinstance(spelling, bool):
        return spelling
    if isinstance(spelling, int):
        return _LyingInt(spelling)
    if isinstance(spelling, str):
        return _LyingStr(spelling)
    return spelling


@FILE_SETTINGS
@given(drawn=valid_pragma_settings())
def test_subclassed_values_are_judged_by_their_plain_value(drawn: dict[str, tuple[object, object]]) -> None:
    """A value given as an ``int`` or ``str`` subclass whose ``__str__``, ``lower``, ``upper``,
    ``__eq__``... say something else is judged and applied by its plain value: the text its
    methods return never becomes part of a ``PRAGMA`` statement ("no user string is ever
    interpolated into SQL unvalidated"), and the connection runs with the plain value's
    canonical form, without a warning."""
    pragmas = {name: lying(spelling) for name, (spelling, _) in drawn.items()}
    with scratch_dir() as directory:
        conn = sqlite_resilient.connect(os.path.join(directory, "db.sqlite"), pragmas=pragmas)
        try:
            for name, (_, expected) in drawn.items():
                assert same_value(conn.pragmas[name], expected), (name, conn.pragmas[name], expected)
        finally:
            conn.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cache_size", _LyingStr("wal")),
        ("busy_timeout", _LyingStr(" 5")),
        ("synchronous", _LyingStr("fullish")),
        ("journal_mode", _LyingStr("WAL ")),
        ("foreign_keys", _LyingStr("enable")),
        ("foreign_keys", _LyingInt(3)),
        ("secure_delete", _LyingInt(7)),
    ],
    ids=lambda v: v if isinstance(v, str) and not isinstance(v, _LyingStr) else None,
)
def test_subclassed_invalid_values_are_rejected(name: str, value: object) -> None:
    """A subclass instance whose plain value is invalid is rejected, whatever its methods
    claim (``_LyingStr("wal")`` is no cache size, though its ``__eq__`` says yes to all)."""
    with pytest.raises(ConfigurationError, match=name):
        Settings(pragmas={name: cast(Any, value)})


# -- property 3: read-only URIs name exactly the file ----------------------------------------

NAME_PIECES: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(
        ["?", "#", "%", "&", "=", " ", ":", "%20", "%2F", "%00", "%%", "?mode=rwc", "&mode=rw", "#x", "?vfs=memdb",
         "file:", "\u00e9", "e\u0301", "\U0001f600", "\u00df", "\u03a3", "\u65e5\u672c", "\u200b", "'", '"', ";",
         "\\", "\n", "\t", "-", "..", ".", "~", "+", "*", "[", "]", "@", "!", "$", "(", ")", ","]
    ),
    st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"),
)  # fmt: skip


@st.composite
def file_names(draw: st.DrawFn) -> str:
    """A file name of text that URIs treat specially: no ``/`` or NUL, not ``.``/``..``, at
    most 100 bytes of UTF-8."""
    prefix = draw(st.sampled_from(["", "", "", "-", "--", "file:", "file:x", ":memory:", "file:x?mode=rw", "%41"]))
    name = prefix + "".join(draw(st.lists(NAME_PIECES, min_size=0 if prefix else 1, max_size=12)))
    assume(name not in (".", "..") and len(name.encode("utf-8")) <= 100)
    return name


@FILE_SETTINGS
@given(name=file_names(), form=st.sampled_from(["str", "bytes", "pathlib"]))
def test_read_only_connect_opens_exactly_that_file(name: str, form: str) -> None:
    """A read-only connection to a file whose name holds ``?``, ``#``, ``%``, ``&``, ``=``,
    spaces, ``:``, unicode or a leading dash reads that very file (its marker row, which
    holds the name) and leaves the directory exactly as it was: no file created, none
    changed."""
    with scratch_dir() as directory:
        path = os.path.join(directory, name)
        make_database(path, marker=name)
        before = {n: digest(os.path.join(directory, n)) for n in os.listdir(directory)}
        assert list(before) == [name]
        conn = sqlite_resilient.connect(as_form(path, form), read_only=True)
        try:
            assert conn.read_only
            assert conn.execute("SELECT value FROM marker").fetchall() == [(name,)]
            with pytest.raises(sqlite3.OperationalError):
                conn.execute("INSERT INTO marker VALUES ('written')")
        finally:
            conn.close()
        after = {n: digest(os.path.join(directory, n)) for n in os.listdir(directory)}
        assert after == before


@FILE_SETTINGS
@given(name=file_names(), form=st.sampled_from(["str", "bytes", "pathlib"]))
def test_read_only_connect_to_missing_file_creates_nothing(name: str, form: str) -> None:
    """A read-only connection to a file that does not exist raises
    ``sqlite3.OperationalError`` and creates nothing, whatever the name."""
    with scratch_dir() as directory:
        path = os.path.join(directory, name)
        with pytest.raises(sqlite3.OperationalError):
            sqlite_resilient.connect(as_form(path, form), read_only=True)
        assert os.listdir(directory) == []


PATH_TEXT: st.SearchStrategy[str] = st.text(
    alphabet=st.one_of(
        st.sampled_from("/?#%&=:;. -~+@!$'\"\\"),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # undecodable bytes (surrogateescape)
    ),
    max_size=40,
)


@PURE_SETTINGS
@given(text=PATH_TEXT, extra=st.dictionaries(st.sampled_from(["cache", "psow", "nolock"]), st.text(max_size=5)))
def test_to_uri_round_trips_through_parse_database(text: str, extra: dict[str, str]) -> None:
    """For any absolute path (a leading ``//`` included) and parameters, parsing the URI that
    ``to_uri`` builds gives back that path, normalised as ``os.path.abspath`` does, and
    ``mode=ro`` (with the other parameters unchanged)."""
    path = "/" + text
    params = {**extra, "mode": "ro"}
    target = parse_database(to_uri(path, params), True)
    assert target.path is not None
    # Compared as the bytes the OS gets: "\udcc2\udc80" and "\x80" are the same file name.
    assert os.fsencode(target.path) == os.fsencode(os.path.abspath(path))
    assert not target.memory
    assert target.param("mode") == "ro"
    assert dict(target.params) == params


@FILE_SETTINGS
@given(name=file_names())
def test_read_only_connect_with_double_slash_path(name: str) -> None:
    """A path spelled with a leading ``//`` (which ``os.path.abspath`` keeps, and which names
    the same file as ``/`` on Linux and macOS) opens that file read-only, and its ``file:``
    URI parses back to the same path (it used to be read as a URI authority: 'file://tmp/...')."""
    with scratch_dir() as directory:
        path = "/" + os.path.join(directory, name)
        make_database(path, marker=name)
        conn = sqlite_resilient.connect(path, read_only=True)
        try:
            assert conn.execute("SELECT value FROM marker").fetchall() == [(name,)]
        finally:
            conn.close()
        assert parse_database(to_uri(path, {"mode": "ro"}), True).path == os.path.abspath(path)


# -- property 4: connect() keyword combinations ----------------------------------------------

ISOLATION_LEVELS: tuple[str | None, ...] = (None, "", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
AUTOCOMMIT_VALUES: tuple[object, ...] = ()
if sys.version_info >= (3, 12):
    AUTOCOMMIT_VALUES = (True, False, sqlite3.LEGACY_TRANSACTION_CONTROL)
LEGACY = -1  # the value of sqlite3.LEGACY_TRANSACTION_CONTROL (3.12+), sqlite3's default


@st.composite
def connect_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of ``sqlite3.connect`` in any combination (``autocommit`` on 3.12+,
    only when ``isolation_level`` is absent)."""
    kwargs: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "detect_types": st.sampled_from(
                    [
                        0,
                        sqlite3.PARSE_DECLTYPES,
                        sqlite3.PARSE_COLNAMES,
                        sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES,
                    ]
                ),
                "isolation_level": st.sampled_from(ISOLATION_LEVELS),
                "check_same_thread": st.booleans(),
                "cached_statements": st.integers(0, 200),
                "uri": st.booleans(),
            },
        )
    )
    if AUTOCOMMIT_VALUES and "isolation_level" not in kwargs and draw(st.booleans()):
        kwargs["autocommit"] = draw(st.sampled_from(AUTOCOMMIT_VALUES))
    return kwargs


def run_in_thread(function: Callable[[], object]) -> BaseException | None:
    """Run *function* in another thread (bounded) and return what it raised, if anything."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:  # handed back to the test
            raised.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return raised[0] if raised else None


@FILE_SETTINGS
@given(kwargs=connect_kwargs(), form=st.sampled_from(["str", "bytes", "pathlib"]), marker=st.text(max_size=10))
def test_connect_keyword_combinations(kwargs: dict[str, Any], form: str, marker: str) -> None:
    """Any combination of ``detect_types``, ``isolation_level``, ``check_same_thread``,
    ``cached_statements``, ``uri`` (with a plain path) and, on 3.12+, ``autocommit`` is
    accepted: ``isolation_level`` is the one given, or ``"IMMEDIATE"`` when neither it nor
    ``autocommit`` was given (the stdlib default ``""`` when only ``autocommit`` was);
    ``autocommit`` is the one given; a write is inside a transaction exactly when the
    transaction mode says so and is visible to another connection after ``commit()``;
    ``check_same_thread`` is honoured; the journal is WAL."""
    if "isolation_level" in kwargs:
        expected_level = kwargs["isolation_level"]
    elif "autocommit" in kwargs:
        expected_level = ""
    else:
        expected_level = "IMMEDIATE"
    autocommit = kwargs.get("autocommit", LEGACY)
    writes_open_transaction = autocommit is False or (autocommit == LEGACY and expected_level is not None)

    with scratch_dir() as directory:
        path = os.path.join(directory, "db.sqlite")
        conn = sqlite_resilient.connect(as_form(path, form), **kwargs)
        try:
            assert conn.journal_mode == "wal"
            assert conn.isolation_level == expected_level
            if sys.version_info >= (3, 12):
                assert conn.autocommit == autocommit
            conn.execute("CREATE TABLE t(x TEXT)")
            conn.commit()
            conn.execute("INSERT INTO t VALUES (?)", (marker,))
            assert conn.in_transaction == writes_open_transaction
            with contextlib.closing(sqlite3.connect(path)) as other:
                seen = other.execute("SELECT x FROM t").fetchall()
                assert seen == ([] if writes_open_transaction else [(marker,)])
                conn.commit()
                assert other.execute("SELECT x FROM t").fetchall() == [(marker,)]
            assert conn.execute("SELECT x FROM t").fetchall() == [(marker,)]

            error = run_in_thread(lambda: conn.execute("SELECT count(*) FROM t").fetchone())
            if kwargs.get("check_same_thread", True):
                assert isinstance(error, sqlite3.ProgrammingError)
            else:
                assert error is None
        finally:
            conn.close()
