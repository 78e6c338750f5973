"""Helper processes for ``test_django.py``: a Django project (``tests/django_project``) on the
database file ``LEDGER_DB``, with the library's backend unless ``LEDGER_ENGINE`` says
otherwise. Each command prints one JSON line with what it saw.

    python django_workers.py basics
    python django_workers.py setup NAME
    python django_workers.py increment NAME COUNT WRITER
    python django_workers.py read NAME        (until a line arrives on stdin)
    python django_workers.py nested-retry
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sqlite3
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).with_name("django_project")))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import OperationalError, connections, transaction  # noqa: E402
from django.db.models import F  # noqa: E402
from ledger.models import Counter, Entry  # noqa: E402

import sqlite_resilient  # noqa: E402


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def basics() -> None:
    """Migrate, then the ORM's everyday operations; report what the connection is and did."""
    call_command("migrate", verbosity=0)
    connection = connections["default"]
    connection.ensure_connection()
    raw = connection.connection
    statements: list[str] = []
    raw.set_trace_callback(statements.append)
    with transaction.atomic():
        counter = Counter.objects.select_for_update().get_or_create(name="a")[0]
        counter.value = F("value") + 1
        counter.save()
    Entry.objects.bulk_create([Entry(counter=counter, n=n, writer="bulk") for n in range(1, 11)])
    entries = list(Entry.objects.filter(counter=counter).order_by("n"))
    for entry in entries:
        entry.writer = "updated"
    Entry.objects.bulk_update(entries, ["writer"])
    Entry.objects.filter(n__gt=5).delete()
    with transaction.atomic():
        Counter.objects.filter(name="a").update(value=F("value") + 10)
        with transaction.atomic():  # a savepoint
            Counter.objects.create(name="inner")
        with contextlib.suppress(RuntimeError), transaction.atomic():
            Counter.objects.create(name="rolled back")
            raise RuntimeError("roll the savepoint back")
    raw.set_trace_callback(None)
    report(
        connection_type=type(raw).__name__,
        journal_mode=raw.journal_mode,
        vendor=connection.vendor,
        display_name=connection.display_name,
        value=Counter.objects.get(name="a").value,
        names=sorted(Counter.objects.values_list("name", flat=True)),
        entries=list(Entry.objects.order_by("n").values_list("n", "writer")),
        begins=[sql for sql in statements if sql.upper().startswith("BEGIN")],
        foreign_keys=raw.execute("PRAGMA foreign_keys").fetchone()[0],
        legacy_alter_table=raw.execute("PRAGMA legacy_alter_table").fetchone()[0],
    )


def setup(name: str) -> None:
    """Migrate and create the counter *name*."""
    call_command("migrate", verbosity=0)
    Counter.objects.create(name=name)
    report(ready=True)


def increment(name: str, count: int, writer: str) -> None:
    """*count* increments of the counter *name*, each a unit of work: read the counter, add
    one, record an entry with the new value."""
    errors: list[str] = []
    attempts = 0

    @sqlite_resilient.retry_on_lock
    def one() -> None:
        nonlocal attempts
        attempts += 1
        with transaction.atomic():
            counter = Counter.objects.get(name=name)
            counter.value += 1
            counter.save(update_fields=["value"])
            Entry.objects.create(counter=counter, n=counter.value, writer=writer)

    for _ in range(count):
        try:
            one()
        except Exception as error:  # noqa: PERF203 - counted, the test says which
            errors.append(f"{type(error).__module__}.{type(error).__name__}: {error}")
    report(writer=writer, done=count - len(errors), attempts=attempts, errors=errors)


def read(name: str) -> None:
    """Read the counter and its entries through the read-only alias until a line arrives on
    stdin; report the values seen (never going back) and any error."""
    seen: list[int] = []
    errors: list[str] = []
    while not select.select([sys.stdin], [], [], 0)[0]:
        try:
            with transaction.atomic(using="replica"):  # one snapshot for both reads
                value = Counter.objects.using("replica").get(name=name).value
                entries = Entry.objects.using("replica").filter(counter__name=name).count()
            if value != entries:
                errors.append(f"counter {value} but {entries} entries")
            seen.append(value)
        except Exception as error:  # noqa: PERF203 - counted, the test says which
            errors.append(f"{type(error).__module__}.{type(error).__name__}: {error}")
    report(reads=len(seen), monotonic=seen == sorted(seen), last=seen[-1] if seen else None, errors=errors)


def refused_write() -> None:
    """A write through the read-only alias."""
    try:
        Counter.objects.using("replica").create(name="refused")
    except OperationalError as error:
        report(error=str(error), cause=type(error.__cause__).__name__)
    else:
        report(error=None)


def nested_retry() -> None:
    """``@retry_on_lock`` called inside an ``atomic()`` block opened before the call, whose
    snapshot another connection's commit made stale (``DEFERRED``): the lock error reaches
    the block's owner after one attempt, as django.db.OperationalError."""
    Counter.objects.get_or_create(name="n")
    calls = 0

    @sqlite_resilient.retry_on_lock(timeout=5)
    def write() -> None:
        nonlocal calls
        calls += 1
        Counter.objects.filter(name="n").update(value=F("value") + 1)

    try:
        with transaction.atomic():
            Counter.objects.get(name="n")  # the block's snapshot
            other = sqlite3.connect(os.environ["LEDGER_DB"], isolation_level=None)
            other.execute("UPDATE ledger_counter SET value = value + 100 WHERE name = 'n'")
            other.close()
            write()
    except OperationalError as error:
        report(calls=calls, error=type(error).__name__, cause=type(error.__cause__).__name__)
    else:
        report(calls=calls, error=None)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "basics":
        basics()
    elif command == "setup":
        setup(args[0])
    elif command == "increment":
        increment(args[0], int(args[1]), args[2])
    elif command == "read":
        read(args[0])
    elif command == "refused-write":
        refused_write()
    elif command == "nested-retry":
        nested_retry()
    else:
        raise SystemExit(f"unknown command {command!r}")
