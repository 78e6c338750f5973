"""Code that ``tests/test_aio.py`` runs in helper processes: ``python tests/aio_workers.py COMMAND ARGS...``.

Commands:

``increment DB TASKS COUNT MODE``
    Open *TASKS* :mod:`sqlite_resilient.aio` connections to *DB*, print ``ready``, wait for
    a line on stdin, then run *TASKS* asyncio tasks at once, each adding 1 to ``counter.n``
    *COUNT* times on its own connection: a read-modify-write (``SELECT n`` then ``UPDATE``)
    in ``conn.transaction(mode=MODE)`` (``deferred`` or ``immediate``) inside a coroutine
    decorated with ``@retry_on_lock``. Print one JSON object: ``done`` (increments
    committed), ``errors`` (the exceptions that reached a task, as ``"Type: message"``) and
    ``retries`` (the error names, or messages, of the ``retry_scheduled`` events).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_resilient import TransactionMode, aio


async def bump(conn: aio.Connection, mode: TransactionMode) -> None:
    """One read-modify-write increment of ``counter.n`` (the coroutine is decorated by the caller)."""
    async with conn.transaction(mode):
        async with conn.execute("SELECT n FROM counter") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        await conn.execute("UPDATE counter SET n = ?", (row[0] + 1,))


async def run_tasks(connections: list[aio.Connection], count: int, mode: TransactionMode, errors: list[str]) -> int:
    """*count* increments on each connection, one task per connection; return how many committed."""
    import sqlite_resilient

    increment = sqlite_resilient.retry_on_lock(bump)

    async def one(conn: aio.Connection) -> int:
        try:
            await increment(conn, mode)
        except Exception as error:  # reported to the test, which decides
            errors.append(f"{type(error).__name__}: {error}")
            return 0
        return 1

    async def task(conn: aio.Connection) -> int:
        return sum([await one(conn) for _ in range(count)])

    return sum(await asyncio.gather(*(task(conn) for conn in connections)))


async def increment(database: str, tasks: int, count: int, mode: TransactionMode) -> dict[str, Any]:
    """Open the connections, wait for the go on stdin, run the tasks; return the report."""
    from sqlite_resilient import aio, instrumentation

    retries: list[str] = []

    def note(event: instrumentation.Event) -> None:
        if isinstance(event, instrumentation.LockEvent) and event.name == "sqlite_resilient.retry_scheduled":
            retries.append(getattr(event.error, "sqlite_errorname", str(event.error)))

    instrumentation.set_hooks([note])
    connections = [await aio.connect(database) for _ in range(tasks)]
    errors: list[str] = []
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        done = await run_tasks(connections, count, mode, errors)
    finally:
        for conn in connections:
            await conn.close()
    return {"done": done, "errors": errors, "retries": retries}


def main(argv: list[str]) -> int:
    """Run one helper command (see the module docstring)."""
    command, *args = argv
    if command == "increment":
        database, tasks, count, mode = args
        modes: dict[str, TransactionMode] = {"deferred": "deferred", "immediate": "immediate"}
        if mode not in modes:
            raise SystemExit(f"bad mode {mode!r}")
        report = asyncio.run(increment(database, int(tasks), int(count), modes[mode]))
        print(json.dumps(report), flush=True)
        return 0
    raise SystemExit(f"unknown helper command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
