"""The dashboard API of ``benchmarks/server.py``, as a WSGI application served by gunicorn.

The seed's API: ``GET /dashboard`` reads the latest items and the enrichment progress (the
demo's panels), ``POST /events`` records an event. A connection per request, as the seed
has it. ``BENCH_DB`` names the database, ``BENCH_SCENARIO`` how the app connects:

- ``plain``: ``sqlite3.connect(path)`` with its defaults, for reads and writes;
- ``wal``: the hand-rolled fix (WAL, ``synchronous=NORMAL``, a 30 s timeout);
- ``resilient``: ``sqlite_resilient.connect(path, read_only=True)`` for GET, and the write
  as a ``@retry_on_lock`` unit of work in ``db_transaction``.

A request that fails on a database error answers 503 with the error's name; a dashboard
with no rows answers 200 with ``"rows": 0`` (an empty page).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any, Callable

import sqlite_resilient
from sqlite_resilient import _demo

DATABASE = os.environ.get("BENCH_DB", "")
SCENARIO = os.environ.get("BENCH_SCENARIO", "resilient")

Connection = Any
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


_CONNECT: dict[str, Callable[[str], Connection]] = {
    "plain": _demo.connect_plain,
    "wal": _demo.connect_handrolled_wal,
    "resilient": _demo.connect_resilient,
}
"""How each scenario connects for a write (and, but for the library's, for a read)."""
_INSERT_EVENT = "INSERT INTO events (kind) VALUES (?)"


def _reader() -> Connection:
    if SCENARIO == "resilient":
        return sqlite_resilient.connect(DATABASE, read_only=True)
    return _CONNECT[SCENARIO](DATABASE)


def _record_event(conn: Connection, kind: str) -> None:
    conn.execute(_INSERT_EVENT, (kind,))
    conn.commit()


@sqlite_resilient.retry_on_lock
def _record_event_resilient(conn: Connection, kind: str) -> None:
    with sqlite_resilient.db_transaction(conn):
        conn.execute(_INSERT_EVENT, (kind,))


def _dashboard() -> dict[str, int]:
    conn = _reader()
    try:
        return {"rows": _demo.dashboard_request(conn)}
    finally:
        conn.close()


def _event() -> dict[str, int]:
    conn = _CONNECT[SCENARIO](DATABASE)
    try:
        (_record_event_resilient if SCENARIO == "resilient" else _record_event)(conn, "click")
    finally:
        conn.close()
    return {"recorded": 1}


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``GET /dashboard`` and ``POST /events``; 404 otherwise, 503 on a database error."""
    route = (environ["REQUEST_METHOD"], environ["PATH_INFO"])
    handler = {("GET", "/dashboard"): _dashboard, ("POST", "/events"): _event}.get(route)
    body: dict[str, Any]
    if handler is None:
        status, body = "404 Not Found", {"error": "no such route"}
    else:
        try:
            status, body = "200 OK", handler()
        except sqlite3.Error as error:
            status, body = "503 Service Unavailable", {"error": _demo.error_key(error)}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]
