"""SQLAlchemy engines set up as the README recipe says, and the processes that
``tests/test_sqlalchemy.py`` runs with them: ``python tests/sqlalchemy_workers.py COMMAND ARGS...``.

Every command talks to the test through lines: it writes one line per event on stdout,
flushed at once, and waits for command lines on stdin, so that the test waits for lines,
never for time. An exception ends a command with a traceback on stderr and a non-zero exit.

Setups (how a worker makes its engine, see :func:`make_engine`):

``recipe-module`` / ``recipe-creator``
    The recipe: ``module=sqlite_resilient`` (or ``creator=``) with ``isolation_level=None``
    and a ``begin`` event that emits ``BEGIN IMMEDIATE``; units of work decorated with
    ``@retry_on_lock`` (which finds the lock error inside SQLAlchemy's own).
``module``
    ``create_engine(url, module=sqlite_resilient)`` and nothing else.
``sqlite3``
    ``create_engine(url)``: SQLAlchemy's defaults on plain :mod:`sqlite3`.

Commands:

``stepped SETUP DB``
    Print ``ready``; on the line ``read`` open a Session transaction, read the counter and
    print ``read N``; on the line ``write`` set it to N + 1, commit and print
    ``committed N+1``; exit.

``increment SETUP DB COUNT NAME``
    Print ``ready``; on the line ``go`` run COUNT units of work, each a read-modify-write
    through the ORM: read the counter, record the value read as a :class:`Seen` row of
    *NAME* (its primary key: a value read twice could not be recorded twice), write the
    counter + 1. Then print ``done COUNT SURFACED``: SURFACED is the sum of the lock errors
    that reached the application on the engine's connections (``lock_stats.surfaced``).

``watch DB TARGET``
    Print ``ready``; on the line ``go`` read the counter through a read-only engine until it
    reaches TARGET, checking that it never goes back; print ``watched READS``.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sqlite_resilient

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.pool import ConnectionPoolEntry
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")

T = TypeVar("T")

SETUPS = ("recipe-module", "recipe-creator", "module", "sqlite3")

WATCH_LIMIT = 60.0
"""Seconds after which a watcher gives up (the test's own waits are shorter)."""

WATCH_PACE = 0.002
"""Seconds between a watcher's reads: a dashboard's pace, which leaves the writers CPU time
on small machines (only a pace; nothing waits for anything by sleeping)."""


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "counter"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


class Seen(Base):
    """One value of the counter that a unit of work read (and incremented)."""

    __tablename__ = "seen"

    value: Mapped[int] = mapped_column(primary_key=True)
    worker: Mapped[str]


# -- the recipe ------------------------------------------------------------------------------


def begin_immediate(engine: Engine) -> None:
    """Make every transaction of *engine* begin with ``BEGIN IMMEDIATE`` (its connections
    must be opened with ``isolation_level=None``, so that :mod:`sqlite3` emits no BEGIN)."""

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def recipe_engine(database: str, how: str = "module", **connect_args: Any) -> Engine:
    """The README recipe: an engine whose pooled connections are ``ResilientConnection``s
    and whose transactions take the write lock at BEGIN. *how*: ``"module"``
    (``module=sqlite_resilient``) or ``"creator"`` (``creator=``); *connect_args* go to
    :func:`sqlite_resilient.connect`."""
    connect_args = {"isolation_level": None, **connect_args}
    if how == "module":
        engine = create_engine(f"sqlite:///{database}", module=sqlite_resilient, connect_args=connect_args)
    elif how == "creator":
        engine = create_engine(
            f"sqlite:///{database}",  # a file URL: SQLAlchemy pools with QueuePool
            creator=lambda: sqlite_resilient.connect(database, check_same_thread=False, **connect_args),
        )
    else:
        raise ValueError(f"how must be 'module' or 'creator', not {how!r}")
    begin_immediate(engine)
    return engine


def read_only_engine(database: str, how: str = "module") -> Engine:
    """An engine of read-only connections (``read_only=True``) for reads (SQLAlchemy's
    dialect reads ``PRAGMA read_uncommitted`` at the first connection: the guard lets that
    plain read through)."""
    if how == "module":
        engine = create_engine(f"sqlite:///{database}", module=sqlite_resilient, connect_args={"read_only": True})
    else:
        engine = create_engine(
            f"sqlite:///{database}",
            creator=lambda: sqlite_resilient.connect(database, read_only=True, check_same_thread=False),
        )
    return engine


def make_engine(setup: str, database: str) -> Engine:
    """The engine of one of :data:`SETUPS`."""
    if setup == "recipe-module":
        return recipe_engine(database, "module")
    if setup == "recipe-creator":
        return recipe_engine(database, "creator")
    if setup == "module":
        return create_engine(f"sqlite:///{database}", module=sqlite_resilient)
    if setup == "sqlite3":
        return create_engine(f"sqlite:///{database}")
    raise SystemExit(f"unknown setup {setup!r}")


def create_schema(engine: Engine) -> None:
    """Create the tables and the counter row (value 0)."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Counter(id=1, value=0))


def counter_value(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(Counter.value).where(Counter.id == 1)).scalar_one()


# -- the commands ----------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, flush=True)


def expect(wanted: str) -> None:
    """Wait for the line *wanted* on stdin (the test bounds the wait)."""
    line = sys.stdin.readline().strip()
    if line != wanted:
        raise SystemExit(f"expected {wanted!r} on stdin, got {line!r}")


def stepped(setup: str, database: str) -> int:
    """One read-modify-write unit of work, paced by the test: ``read``, then ``write``."""
    engine = make_engine(setup, database)

    def unit_of_work() -> int:
        with Session(engine) as session, session.begin():
            counter = session.get(Counter, 1)
            assert counter is not None
            say(f"read {counter.value}")
            expect("write")
            counter.value += 1
            return counter.value

    run = unit_of_work
    if setup.startswith("recipe"):
        run = sqlite_resilient.retry_on_lock(unit_of_work)
    try:
        with engine.connect():  # the pool's first connection, and the dialect set up
            pass
        say("ready")
        expect("read")
        say(f"committed {run()}")
    finally:
        engine.dispose()
    return 0


def increment(setup: str, database: str, count: int, name: str) -> int:
    """*count* read-modify-write units of work through the ORM, on the line ``go``."""
    if not setup.startswith("recipe"):
        raise SystemExit(f"increment runs the recipe's setups only, not {setup!r}")
    engine = make_engine(setup, database)
    connections: list[sqlite_resilient.ResilientConnection] = []

    @event.listens_for(engine, "connect")
    def _opened(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        connections.append(dbapi_connection)

    @sqlite_resilient.retry_on_lock
    def bump() -> None:
        with Session(engine) as session, session.begin():
            counter = session.get(Counter, 1)
            assert counter is not None
            session.add(Seen(value=counter.value, worker=name))
            counter.value += 1

    try:
        with engine.connect():
            pass
        say("ready")
        expect("go")
        for _ in range(count):
            bump()
        surfaced = sum(connection.lock_stats.surfaced for connection in connections)
        say(f"done {count} {surfaced}")
    finally:
        engine.dispose()
    return 0


def watch(database: str, target: int) -> int:
    """Read the counter through a read-only engine until it reaches *target*."""
    engine = read_only_engine(database)
    try:
        counter_value(engine)
        say("ready")
        expect("go")
        reads, last = 0, 0
        deadline = time.monotonic() + WATCH_LIMIT
        while last < target:
            value = counter_value(engine)
            reads += 1
            if value < last:
                raise SystemExit(f"the counter went back from {last} to {value}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the counter is still {value} after {WATCH_LIMIT} s")
            last = value
            time.sleep(WATCH_PACE)
        say(f"watched {reads}")
    finally:
        engine.dispose()
    return 0


def main(argv: list[str]) -> int:
    """Run one command (see the module docstring)."""
    command, *args = argv
    if command == "stepped":
        return stepped(args[0], args[1])
    if command == "increment":
        return increment(args[0], args[1], int(args[2]), args[3])
    if command == "watch":
        return watch(args[0], int(args[1]))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
