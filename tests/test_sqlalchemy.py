"""SQLAlchemy 2 on sqlite_resilient: ``create_engine(url, module=sqlite_resilient)`` and
``creator=``, Core and ORM transactions, read-only engines, lock errors, and the README
recipe (``isolation_level=None``, a ``begin`` event emitting ``BEGIN IMMEDIATE``, units of
work retried with ``@retry_on_lock``) under real writer processes.

SQLAlchemy's ``sqlite`` dialect passes ``check_same_thread=False`` (file databases) to
``connect()``, pools file databases with ``QueuePool``, and emits no ``BEGIN`` itself: in
:mod:`sqlite3`'s legacy mode a ``SELECT`` runs outside any transaction, which is why the
recipe takes over ``BEGIN``. Engines and processes are real; nothing is mocked.
"""

from __future__ import annotations

import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable

import pytest

pytest.importorskip("sqlalchemy")

import sqlalchemy_workers
from sqlalchemy import Engine, ForeignKey, create_engine, delete, event, exc, func, insert, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import QueuePool
from sqlalchemy_workers import Counter, Seen, counter_value, create_schema, read_only_engine, recipe_engine

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, ResilientConnection, instrumentation, is_lock_error

WORKERS = Path(__file__).with_name("sqlalchemy_workers.py")
WAIT = 30.0
"""Upper bound in seconds for a worker process to say its next line or to finish."""

HOWS = ("module", "creator")


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


@pytest.fixture
def engines() -> Iterator[Callable[[Engine], Engine]]:
    """``engines(engine)`` returns *engine*, disposed of (its pooled connections closed) at teardown."""
    made: list[Engine] = []

    def keep(engine: Engine) -> Engine:
        made.append(engine)
        return engine

    yield keep
    for engine in made:
        engine.dispose()


def dbapi_of(connection: Any) -> ResilientConnection:
    """The pooled DBAPI connection of a SQLAlchemy ``Connection``, checked to be ours."""
    dbapi = connection.connection.dbapi_connection
    assert isinstance(dbapi, ResilientConnection), type(dbapi)
    return dbapi


def statements_of(engine: Engine) -> list[str]:
    """The SQL statements *engine* sends to its DBAPI cursors from now on."""
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _note(_conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool) -> None:
        seen.append(statement)

    return seen


def plain_values(database: str) -> list[int]:
    """The values of table ``item``, read with plain :mod:`sqlite3`."""
    conn = sqlite3.connect(database)
    try:
        return [value for (value,) in conn.execute("SELECT value FROM item ORDER BY value")]
    finally:
        conn.close()


class Model(DeclarativeBase):
    pass


class Item(Model):
    __tablename__ = "item"

    value: Mapped[int] = mapped_column(primary_key=True)


# -- pool and connections --------------------------------------------------------------------


@pytest.mark.parametrize("how", HOWS)
def test_pool_hands_out_resilient_connections_with_wal(
    database: str, engines: Callable[[Engine], Engine], how: str
) -> None:
    """Both ways of plugging the library in give a QueuePool of ``ResilientConnection``s with
    WAL and the library's pragmas, reused across checkouts and across threads (SQLAlchemy
    passes ``check_same_thread=False`` with ``module=``, the recipe's ``creator`` does)."""
    engine = engines(recipe_engine(database, how))
    assert isinstance(engine.pool, QueuePool)
    with engine.connect() as connection:
        first = dbapi_of(connection)
        assert first.journal_mode == "wal"
        assert first.isolation_level is None
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    with engine.connect() as connection:
        assert dbapi_of(connection) is first

    used: list[object] = []

    def in_thread() -> None:
        with engine.begin() as connection:
            used.append(dbapi_of(connection))
            connection.exec_driver_sql("CREATE TABLE t(x)")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(WAIT)
    assert used == [first]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0


@pytest.mark.parametrize("how", HOWS)
def test_core_transactions_begin_immediate_commit_and_roll_back(
    database: str, engines: Callable[[Engine], Engine], how: str
) -> None:
    """``engine.begin()`` and commit-as-you-go ``engine.connect()`` begin with ``BEGIN
    IMMEDIATE``, commit what they should and roll back the rest; no transaction stays open
    on the pooled connection."""
    engine = engines(recipe_engine(database, how))
    Model.metadata.create_all(engine)
    sent = statements_of(engine)
    with engine.begin() as connection:
        connection.execute(insert(Item).values(value=1))
    assert sent[0] == "BEGIN IMMEDIATE"
    assert plain_values(database) == [1]

    def abandoned() -> None:
        with engine.begin() as connection:
            connection.execute(insert(Item).values(value=2))
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        abandoned()
    assert plain_values(database) == [1]

    with engine.connect() as connection:
        connection.execute(insert(Item).values(value=3))
        connection.rollback()
        connection.execute(insert(Item).values(value=4))
        connection.commit()
        dbapi = dbapi_of(connection)
    assert plain_values(database) == [1, 4]
    assert not dbapi.in_transaction
    assert sent.count("BEGIN IMMEDIATE") == 4


@pytest.mark.parametrize(
    ("setup", "write_locked"), [("recipe-module", True), ("recipe-creator", True), ("module", False)]
)
def test_write_lock_is_taken_at_begin_only_with_the_recipe(
    database: str, engines: Callable[[Engine], Engine], setup: str, write_locked: bool
) -> None:
    """Inside the recipe's transaction, after nothing but a read, another connection cannot
    take the write lock: a read-modify-write is one atomic transaction. With
    ``module=sqlite_resilient`` alone the read runs outside any transaction (sqlite3's
    legacy mode begins one only before a write), so the write lock is still free."""
    engine = engines(sqlalchemy_workers.make_engine(setup, database))
    create_schema(engine)
    other = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        with engine.begin() as connection:
            assert connection.execute(select(Counter.value)).scalar_one() == 0
            if write_locked:
                with pytest.raises(sqlite3.OperationalError) as info:
                    other.execute("BEGIN IMMEDIATE")
                assert is_lock_error(info.value)
            else:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
    finally:
        other.close()


# -- the ORM ---------------------------------------------------------------------------------


class Parent(Model):
    __tablename__ = "parent"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    children: Mapped[list[Child]] = relationship(back_populates="parent", order_by="Child.id")


class Child(Model):
    __tablename__ = "child"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parent.id"))
    name: Mapped[str]
    parent: Mapped[Parent] = relationship(back_populates="children")


@pytest.mark.parametrize("how", HOWS)
def test_orm_session_round_trip(database: str, engines: Callable[[Engine], Engine], how: str) -> None:
    """A declarative model goes through Sessions: objects with a relationship are
    committed, loaded back in a new Session, changed and deleted; a failed ``begin()`` block
    leaves nothing behind; and SQLite enforces the foreign key (the library's
    ``foreign_keys=ON``), which plain sqlite3 would not."""
    engine = engines(recipe_engine(database, how))
    Model.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Parent(id=1, name="p", children=[Child(id=1, name="a"), Child(id=2, name="b")]))

    with Session(engine) as session:
        parent = session.get(Parent, 1)
        assert parent is not None
        assert [child.name for child in parent.children] == ["a", "b"]
        parent.name = "renamed"
        session.delete(parent.children[0])
        session.commit()

    def abandoned() -> None:
        with Session(engine) as session, session.begin():
            session.add(Parent(id=2, name="never"))
            session.flush()
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        abandoned()

    with Session(engine) as session:
        with pytest.raises(exc.IntegrityError, match="FOREIGN KEY constraint failed"):
            session.execute(delete(Parent).where(Parent.id == 1))
        session.rollback()
        assert session.scalars(select(Parent.name)).all() == ["renamed"]
        assert session.scalars(select(Child.name)).all() == ["b"]


# -- read-only engines -----------------------------------------------------------------------


@pytest.mark.parametrize("how", HOWS)
def test_read_only_engine_reads_and_refuses_writes(
    database: str, tmp_path: Path, engines: Callable[[Engine], Engine], how: str
) -> None:
    """An engine of ``read_only=True`` connections reads, sees what a writer commits later
    on its pooled connection, and refuses writes through Core and the ORM with SQLite's
    read-only error; nothing is written, and a missing database is not created."""
    writer = engines(recipe_engine(database, "module"))
    create_schema(writer)
    reader = engines(read_only_engine(database, how))
    assert counter_value(reader) == 0
    with writer.begin() as connection:
        connection.execute(update(Counter).values(value=5))
    with reader.connect() as connection:
        assert dbapi_of(connection).read_only
        assert connection.execute(select(Counter.value)).scalar_one() == 5

    refused = "attempt to write a readonly database"
    with pytest.raises(exc.OperationalError, match=refused), reader.begin() as connection:
        connection.execute(update(Counter).values(value=99))
    with Session(reader) as session:
        session.add(Seen(value=0, worker="reader"))
        with pytest.raises(exc.OperationalError, match=refused):
            session.commit()
    assert counter_value(writer) == 5
    with Session(writer) as session:
        assert session.scalar(select(func.count()).select_from(Seen)) == 0

    missing = tmp_path / "missing.db"
    nowhere = engines(read_only_engine(str(missing), how))
    with pytest.raises(exc.OperationalError), nowhere.connect():
        pass
    assert not missing.exists()


# -- lock errors and retries -----------------------------------------------------------------


def test_spent_budget_surfaces_as_operational_error_wrapping_database_locked_error(
    database: str, engines: Callable[[Engine], Engine], lock_holder: Any
) -> None:
    """When another process keeps the write lock past the connection's budget, SQLAlchemy
    raises its ``OperationalError`` whose ``.orig`` (and ``__cause__``) is the library's
    ``DatabaseLockedError``, counted as surfaced in the connection's ``lock_stats``. The
    pooled connection stays usable once the lock is released."""
    engine = engines(recipe_engine(database, "module", timeout=0.3))
    create_schema(engine)
    with engine.connect() as connection:
        pooled = dbapi_of(connection)
    holder = lock_holder(Path(database), "IMMEDIATE")

    with pytest.raises(exc.OperationalError) as info, engine.begin() as connection:
        connection.execute(update(Counter).values(value=1))
    error = info.value
    assert isinstance(error.orig, DatabaseLockedError)
    assert error.__cause__ is error.orig
    assert is_lock_error(error.orig)
    assert pooled.lock_stats.surfaced == 1

    holder.release()
    with engine.begin() as connection:
        assert dbapi_of(connection) is pooled
        connection.execute(update(Counter).values(value=2))
    assert counter_value(engine) == 2


def deferred_engine(database: str) -> Engine:
    """Library connections whose transactions begin DEFERRED: a read-then-write transaction
    meets ``SQLITE_BUSY_SNAPSHOT`` when another connection committed after its read, a lock
    error that only re-running the whole unit of work can clear."""
    engine = create_engine(f"sqlite:///{database}", module=sqlite_resilient, connect_args={"isolation_level": None})

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def test_retry_on_lock_reruns_a_session_unit_of_work(database: str, engines: Callable[[Engine], Engine]) -> None:
    """A Session unit of work whose first attempt meets ``SQLITE_BUSY_SNAPSHOT`` (another
    connection commits between its read and its write) is rolled back and re-run whole by
    ``@retry_on_lock``, which finds the lock error inside SQLAlchemy's ``OperationalError``
    (``.orig``): the second attempt reads the new value, and no update is lost."""
    engine = engines(deferred_engine(database))
    create_schema(engine)
    other = sqlite3.connect(database, isolation_level=None)
    reads: list[int] = []

    def unit_of_work() -> int:
        with Session(engine) as session, session.begin():
            counter = session.get(Counter, 1)
            assert counter is not None
            reads.append(counter.value)
            if len(reads) == 1:
                other.execute("UPDATE counter SET value = value + 100")
            counter.value += 1
            session.flush()
            return counter.value

    bump = sqlite_resilient.retry_on_lock(timeout=10, attempts=3)(unit_of_work)
    try:
        assert bump() == 101
    finally:
        other.close()
    assert reads == [0, 100]
    assert counter_value(engine) == 101


def test_recipe_retries_a_unit_of_work_past_the_connection_budget(
    database: str, engines: Callable[[Engine], Engine], lock_holder: Any
) -> None:
    """With the recipe, a lock held longer than a connection's budget fails an attempt at
    ``BEGIN IMMEDIATE`` (``DatabaseLockedError`` inside SQLAlchemy's error);
    ``@retry_on_lock`` re-runs the unit of work within its own,
    longer budget, and it commits once the other process lets go."""
    engine = engines(recipe_engine(database, "creator", timeout=0.2))
    create_schema(engine)
    holder = lock_holder(Path(database), "IMMEDIATE")
    attempts: list[int] = []

    @sqlite_resilient.retry_on_lock(timeout=WAIT)
    def bump() -> int:
        attempts.append(1)
        with Session(engine) as session, session.begin():
            counter = session.get(Counter, 1)
            assert counter is not None
            counter.value += 1
            return counter.value

    retried = threading.Event()

    def hook(event: instrumentation.Event) -> None:
        if (
            isinstance(event, instrumentation.LockEvent)
            and event.name == instrumentation.RETRY_SCHEDULED
            and event.operation == bump.__qualname__
        ):
            retried.set()

    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(bump())
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    instrumentation.set_hooks([hook])
    try:
        thread = threading.Thread(target=run)
        thread.start()
        assert retried.wait(WAIT), "the unit of work was not retried"
        holder.release()
        thread.join(WAIT)
    finally:
        instrumentation.set_hooks(None)
    assert outcome == [1]
    assert len(attempts) >= 2
    assert counter_value(engine) == 1


# -- processes -------------------------------------------------------------------------------


class Worker:
    """A ``tests/sqlalchemy_workers.py`` process: lines to its stdin, lines from its stdout
    (read by a thread, so every wait is bounded), stderr kept for failure messages."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, str(WORKERS), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str | None] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.errors.append), daemon=True),
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: IO[str], put: Callable[[Any], None]) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def _stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def send(self, line: str) -> None:
        self._stdin().write(line + "\n")
        self._stdin().flush()

    def line(self) -> str:
        """The next line the worker prints; fails after :data:`WAIT` seconds or at its end."""
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"worker {self.args} said nothing for {WAIT} s; stderr: {self.stderr()}") from None
        if line is None:
            self.process.wait(WAIT)
            raise AssertionError(f"worker {self.args} ended ({self.process.returncode}): {self.stderr()}")
        return line

    def stderr(self) -> str:
        return "\n".join(line for line in self.errors if line is not None)

    def finish(self) -> None:
        """Close its stdin and wait for it to exit successfully."""
        self._stdin().close()
        self.process.wait(WAIT)
        for pump in self.pumps:
            pump.join(WAIT)
        assert self.process.returncode == 0, f"worker {self.args} failed: {self.stderr()}"

    def stop(self) -> None:
        """End it whatever its state (teardown) and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        for pump in self.pumps:
            pump.join(WAIT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """``start_worker(COMMAND, ARGS...)`` starts a worker process; all are stopped at teardown."""
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(*args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.mark.parametrize(
    ("setup", "final"),
    [("sqlite3", 1), ("module", 1), ("recipe-module", 2)],
)
def test_two_processes_read_modify_write(
    database: str, engines: Callable[[Engine], Engine], start_worker: Callable[..., Worker], setup: str, final: int
) -> None:
    """Two processes, the test's and a worker, each add 1 to a counter in a Session (read,
    then write), the worker's read issued while the test's unit of work is open. SQLAlchemy's
    defaults, on plain sqlite3 or on ``module=sqlite_resilient`` alone, let the worker read
    0 meanwhile, and its write loses the test's update (the counter ends at 1). With the
    recipe the worker's read waits at ``BEGIN IMMEDIATE`` until the test commits, reads 1,
    and the counter ends at 2. The steps are paced by lines, not by time, so each outcome is
    deterministic."""
    create_schema(engines(recipe_engine(database)))
    engine = engines(sqlalchemy_workers.make_engine(setup, database))
    worker = start_worker("stepped", setup, database)
    assert worker.line() == "ready"
    with Session(engine) as session, session.begin():
        counter = session.get(Counter, 1)
        assert counter is not None
        assert counter.value == 0
        worker.send("read")
        if final == 1:
            assert worker.line() == "read 0"  # while the test's unit of work is still open
        counter.value += 1
    if final == 2:
        assert worker.line() == "read 1"
    worker.send("write")
    assert worker.line() == f"committed {final}"
    worker.finish()
    assert counter_value(engine) == final


INCREMENTS = 100


def test_writer_processes_increment_exactly_through_the_orm(
    database: str, engines: Callable[[Engine], Engine], start_worker: Callable[..., Worker]
) -> None:
    """Three writer processes (``module=`` and ``creator=`` engines) each run
    :data:`INCREMENTS` read-modify-write units of work through the ORM at the same time,
    while a fourth reads through a read-only engine: every increment counts (the counter is
    exact), every value was read by exactly one unit of work, no lock error reached a
    writer, and the reader saw the counter only go forward."""
    engine = engines(recipe_engine(database))
    create_schema(engine)
    total = 3 * INCREMENTS
    writers = {
        name: start_worker("increment", setup, database, str(INCREMENTS), name)
        for name, setup in (("w1", "recipe-module"), ("w2", "recipe-creator"), ("w3", "recipe-module"))
    }
    watcher = start_worker("watch", database, str(total))
    everyone = [*writers.values(), watcher]
    for worker in everyone:
        assert worker.line() == "ready"
    for worker in everyone:
        worker.send("go")
    for worker in writers.values():
        assert worker.line() == f"done {INCREMENTS} 0"
    assert watcher.line().startswith("watched ")
    for worker in everyone:
        worker.finish()

    assert counter_value(engine) == total
    with Session(engine) as session:
        seen = session.execute(select(Seen.value, Seen.worker)).all()
    assert sorted(value for value, _ in seen) == list(range(total))
    assert sorted(worker for _, worker in seen) == sorted(name for name in writers for _ in range(INCREMENTS))


def test_url_query_arguments_reach_connect(database: str, engines: Callable[[Engine], Engine]) -> None:
    """The sqlite URL's query arguments that SQLAlchemy's dialect knows (here ``timeout``)
    become ``connect()`` keywords: the library's lock-wait budget."""
    engine = engines(create_engine(f"sqlite:///{database}?timeout=2.5", module=sqlite_resilient))
    with engine.connect() as connection:
        assert dbapi_of(connection).timeout == 2.5
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 2500
