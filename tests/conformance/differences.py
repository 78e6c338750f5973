"""What changes when you swap the import: the intended differences from :mod:`sqlite3`.

Each is a decision, with the README line that says it (the README's section "What changes
when you swap the import" has exactly these lines, in this order) and the tests of CPython's
own ``test.test_sqlite3`` that fail through the library because of it, as
``Class.test_name`` (3.9's ``CheckName`` methods are spelled ``test_name``), on every
interpreter where the test exists. ``tests/test_conformance.py`` fails on any other test
that passes with :mod:`sqlite3` and fails through the library, and on a test listed here
that passes through the library (remove it then).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    readme: str
    """The README line (Markdown, without the leading ``- ``)."""
    tests: tuple[str, ...] = ()
    """The ``test.test_sqlite3`` tests it makes fail, as ``Class.test_name``, followed by
    ``@`` and the Python versions where a test fails only there (its text changed)."""


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "**Implicit transactions begin `IMMEDIATE`**: `conn.isolation_level` reads `'IMMEDIATE'` "
        "(not `''`) and Python sends `BEGIN IMMEDIATE` before a write, unless you pass "
        "`isolation_level` or `autocommit`: the write lock is taken where waiting for it is safe.",
        (
            "ConnectionTests.test_connection_init_bad_isolation_level",
            "ConnectionTests.test_connection_init_good_isolation_levels",
            "IsolationLevelFromInit.test_isolation_level_default",
            "IsolationLevelPostInit.test_isolation_level_default",
            "RegressionTests.test_commit_cursor_reset",
            "TraceCallbackTests.test_trace_expanded_sql",
        ),
    ),
    Difference(
        "**WAL**: file databases switch to `journal_mode=WAL` (the `-wal` and `-shm` files appear "
        "beside them, and stay in WAL mode for every later connection): readers no longer "
        "block a writer, nor a writer readers.",
        ("MultiprocessTests.test_ctx_mgr_rollback_if_commit_failed",),
    ),
    Difference(
        "**`foreign_keys=ON`**: an insert or update that breaks a `FOREIGN KEY` constraint raises "
        "`IntegrityError`, where `sqlite3`'s default (off) accepted it.",
        ("DumpTests.test_table_dump @ 3.13",),
    ),
    Difference(
        "**`synchronous=NORMAL`** (with WAL): a committed transaction survives the application "
        'crashing, but the last ones before a power loss or an OS crash can be lost; pass `pragmas={"synchronous": '
        '"full"}` (or a `Settings`) where they must not.'
    ),
    Difference(
        "**The pragmas apply to `:memory:` too** (`busy_timeout`, `cache_size`, `foreign_keys`, "
        "...), all but `journal_mode`, which stays `memory`."
    ),
    Difference(
        "**A side file `<database>-writers`** holds the write queue (created with the database "
        "file's permissions; add `*-writers` to `.gitignore` beside `*-wal` and `*-shm`)."
    ),
    Difference(
        "**`type(conn)` is `ResilientConnection`**, a proxy: `isinstance(conn, sqlite3.Connection)` "
        "holds, `type(conn) is sqlite3.Connection` does not.",
        ("OpenTests.test_database_keyword",),
    ),
    Difference(
        "**`sqlite3.Cursor(conn)` refuses the proxy** (a C type check, which no proxy can pass): "
        "write `conn.cursor()` or `conn.cursor(MyCursor)`.",
        ("RecursiveUseOfCursors.test_recursive_cursor_init @ 3.10 3.11 3.12 3.13", "RegressionTests.test_bpo31770"),
    ),
    Difference(
        "**`conn.__init__(...)` does not reopen the connection in place** (the proxy's "
        "`__init__` is not `sqlite3`'s): open a new one with `connect()`.",
        ("ConnectionTests.test_connection_reinit", "ConnectionTests.test_connection_bad_reinit"),
    ),
    Difference(
        "**A `factory` connection class must call `sqlite3.Connection.__init__`**: `connect()` "
        "sets the connection up, so it raises `ProgrammingError` at once where `sqlite3` returned "
        "an unusable connection.",
        ("ConnectionFactoryTests.test_connection_factories @ 3.11 3.12",),
    ),
    Difference(
        "**`conn.cursor(factory)` with a function** (not a `Cursor` subclass): the cursor it "
        "returns is used as it is, and its statements go to SQLite without the library's lock "
        "waits; pass a `Cursor` subclass to have them."
    ),
)
