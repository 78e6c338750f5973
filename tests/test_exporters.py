"""Exporters: Prometheus metrics, OpenTelemetry span events and flat log fields, fed by real
lock waits.

Locks are real: a helper process holds the write lock (released from a hook to end a wait),
another connection commits under a reading transaction (``SQLITE_BUSY_SNAPSHOT``), a second
writer queues at the write gate, or a read-only bind mount forces a WAL fallback. Metrics
are read from a private ``CollectorRegistry``, spans from an ``InMemorySpanExporter``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest
from conftest import HELPER_TIMEOUT, StartLockHolder, run_in_thread

import sqlite_resilient
from sqlite_resilient import DatabaseLockedError, exporters, instrumentation
from sqlite_resilient.instrumentation import Event, FallbackEvent, LockEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry

RETRY_SCHEDULED = "sqlite_resilient.retry_scheduled"
LOCK_WAITED = "sqlite_resilient.lock_waited"
LOCK_ERROR = "sqlite_resilient.lock_error"
WRITER_QUEUED = "sqlite_resilient.writer_queued"
WAL_FALLBACK = "sqlite_resilient.wal_fallback"

LOCK_KEYS = {
    "sqlite_resilient.operation",
    "sqlite_resilient.database",
    "sqlite_resilient.attempt",
    "sqlite_resilient.waited_s",
    "sqlite_resilient.wait_s",
    "sqlite_resilient.budget_s",
    "sqlite_resilient.error",
    "sqlite_resilient.error_type",
    "sqlite_resilient.sqlite_errorname",
}

# sqlite3 errors carry their SQLite code name from Python 3.11 on.
BUSY = "SQLITE_BUSY" if sys.version_info >= (3, 11) else None


@pytest.fixture(autouse=True)
def _default_hooks() -> Iterator[None]:
    """Every test starts and ends with the library's default hooks."""
    instrumentation.set_hooks(None)
    try:
        yield
    finally:
        instrumentation.set_hooks(None)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private Prometheus registry (skipped without prometheus_client)."""
    prometheus_client = pytest.importorskip("prometheus_client")
    created: CollectorRegistry = prometheus_client.CollectorRegistry()
    return created


@dataclass
class Tracing:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    tracer: Tracer

    def spans(self) -> dict[str, ReadableSpan]:
        """The finished spans by name (each name once)."""
        finished = self.exporter.get_finished_spans()
        by_name = {span.name: span for span in finished}
        assert len(by_name) == len(finished), [span.name for span in finished]
        return by_name


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    """A tracer provider exporting to memory (skipped without opentelemetry-sdk)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield Tracing(provider, exporter, provider.get_tracer("tests"))
    finally:
        provider.shutdown()


def surface_lock_error(db: Path, lock_holder: StartLockHolder) -> DatabaseLockedError:
    """A statement that waits its whole budget (0.3 s) for a helper's write lock, which is
    released afterwards."""
    holder = lock_holder(db, "EXCLUSIVE")
    conn = sqlite_resilient.connect(db, timeout=0.3, pragmas={"busy_timeout": 0})
    with closing(conn), pytest.raises(DatabaseLockedError) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    holder.release()
    return caught.value


def wait_for_release(db: Path, lock_holder: StartLockHolder, *hooks: instrumentation.Hook) -> None:
    """A statement that meets a helper's write lock; a hook releases the lock on the first
    retry, so the statement succeeds: ``retry_scheduled`` then ``lock_waited``."""
    holder = lock_holder(db, "EXCLUSIVE")

    def release_on_first_retry(event: Event) -> None:
        if event.name == RETRY_SCHEDULED and holder.process.poll() is None:
            holder.release()

    instrumentation.set_hooks([*hooks, release_on_first_retry])
    with closing(sqlite_resilient.connect(db, timeout=20, pragmas={"busy_timeout": 0})) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()


def write_after_another_commit(db: Path) -> sqlite3.OperationalError:
    """A write in a deferred transaction after another connection committed: a lock error
    (``SQLITE_BUSY_SNAPSHOT``) that cannot be retried, so it reaches the caller at once."""

    def write(conn: sqlite_resilient.ResilientConnection) -> None:
        with conn.transaction("deferred"):
            conn.execute("SELECT count(*) FROM t").fetchone()
            try:
                with closing(sqlite3.connect(db, timeout=0)) as other:
                    other.execute("INSERT INTO t VALUES ('other')")
                    other.commit()
            except sqlite3.OperationalError as error:  # not the error this helper is about
                raise AssertionError(f"the other connection could not commit: {error}") from error
            conn.execute("INSERT INTO t VALUES ('mine')")

    conn = sqlite_resilient.connect(db)
    with closing(conn), pytest.raises(sqlite3.OperationalError) as caught:
        write(conn)
    return caught.value


def queue_a_writer(
    db: Path, *hooks: instrumentation.Hook, in_thread: Callable[[], AbstractContextManager[object]] | None = None
) -> None:
    """A transaction that queues at the write gate behind another one of this process,
    which commits once the queued one is reported. *in_thread* (a context manager factory)
    wraps the queued transaction in its thread."""
    queued = threading.Event()
    instrumentation.set_hooks([*hooks, lambda event: queued.set() if event.name == WRITER_QUEUED else None])
    first = sqlite_resilient.connect(db, check_same_thread=False)
    second = sqlite_resilient.connect(db, check_same_thread=False)
    with closing(first), closing(second):

        def write() -> None:
            with in_thread() if in_thread is not None else nullcontext(), second.transaction():
                second.execute("INSERT INTO t VALUES (2)")

        with first.transaction():
            first.execute("INSERT INTO t VALUES (1)")
            thread, outcome = run_in_thread(write)
            assert queued.wait(HELPER_TIMEOUT), outcome
        thread.join(HELPER_TIMEOUT)
        assert not thread.is_alive()
        assert outcome == [None]


# Prometheus


def test_prometheus_counts_retries_and_the_surfaced_error(
    db: Path, lock_holder: StartLockHolder, registry: CollectorRegistry
) -> None:
    """A statement that spends its budget: every retry counted, one ``budget_spent`` lock
    error, and its wait observed in the histogram with ``outcome="error"``."""
    seen: list[Event] = []
    instrumentation.set_hooks([exporters.PrometheusHook(registry), seen.append])
    error = surface_lock_error(db, lock_holder)
    assert error.attempts > 1
    labels = {"operation": "execute", "database": str(db)}
    assert registry.get_sample_value("sqlite_resilient_retries_total", labels) == error.attempts - 1
    assert registry.get_sample_value("sqlite_resilient_lock_errors_total", {**labels, "reason": "budget_spent"}) == 1
    failed = {**labels, "outcome": "error"}
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_count", failed) == 1
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_sum", failed) == seen[-1].waited  # type: ignore[union-attr]
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_bucket", {**failed, "le": "0.1"}) == 0
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_bucket", {**failed, "le": "2.5"}) == 1
    acquired = {**labels, "outcome": "acquired"}
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_count", acquired) is None


def test_prometheus_observes_a_wait_that_ends(
    db: Path, lock_holder: StartLockHolder, registry: CollectorRegistry
) -> None:
    """A statement that succeeds after the lock is released: one retry, one wait observed
    with ``outcome="acquired"``, no lock error."""
    seen: list[Event] = []
    wait_for_release(db, lock_holder, exporters.PrometheusHook(registry), seen.append)
    assert [event.name for event in seen] == [RETRY_SCHEDULED, LOCK_WAITED]
    labels = {"operation": "execute", "database": str(db)}
    assert registry.get_sample_value("sqlite_resilient_retries_total", labels) == 1
    acquired = {**labels, "outcome": "acquired"}
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_count", acquired) == 1
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_sum", acquired) == seen[-1].waited  # type: ignore[union-attr]
    assert registry.get_sample_value("sqlite_resilient_lock_errors_total", {**labels, "reason": "budget_spent"}) is None


def test_prometheus_labels_an_unretried_lock_error(db: Path, registry: CollectorRegistry) -> None:
    """A lock error inside a transaction, which nothing may retry, counts with
    ``reason="not_retried"`` and no retries."""
    instrumentation.set_hooks([exporters.PrometheusHook(registry)])
    write_after_another_commit(db)
    labels = {"operation": "execute", "database": str(db)}
    assert registry.get_sample_value("sqlite_resilient_lock_errors_total", {**labels, "reason": "not_retried"}) == 1
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_count", {**labels, "outcome": "error"}) == 1
    assert registry.get_sample_value("sqlite_resilient_retries_total", labels) is None


def test_prometheus_counts_queued_writers(db: Path, registry: CollectorRegistry) -> None:
    """A write transaction queued at the write gate counts once, under ``BEGIN``, and its
    wait at the gate is observed in the lock-wait histogram when its turn comes."""
    queue_a_writer(db, exporters.PrometheusHook(registry))
    labels = {"operation": "BEGIN", "database": str(db)}
    assert registry.get_sample_value("sqlite_resilient_writers_queued_total", labels) == 1
    waited = {**labels, "outcome": "acquired"}
    assert registry.get_sample_value("sqlite_resilient_lock_wait_seconds_count", waited) == 1


def test_prometheus_database_labels_are_bounded(tmp_path: Path, registry: CollectorRegistry) -> None:
    """``database_label`` maps paths to label values, and databases past ``max_databases``
    share the label ``other``."""
    paths: list[str | None] = []

    def label(path: str | None) -> str:
        paths.append(path)
        return Path(path or "unknown").name

    instrumentation.set_hooks([exporters.PrometheusHook(registry, database_label=label, max_databases=1)])
    for name in ("one.db", "two.db", "one.db"):
        database = tmp_path / name
        with closing(sqlite_resilient.connect(database)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
            conn.commit()
        write_after_another_commit(database)
    assert paths == [str(tmp_path / "one.db"), str(tmp_path / "two.db"), str(tmp_path / "one.db")]

    def errors(database: str) -> float | None:
        labels = {"operation": "execute", "database": database, "reason": "not_retried"}
        return registry.get_sample_value("sqlite_resilient_lock_errors_total", labels)

    assert (errors("one.db"), errors("other"), errors("two.db")) == (2, 1, None)


def test_prometheus_counts_wal_fallbacks(ro_mount: tuple[Path, Path], registry: CollectorRegistry) -> None:
    """Every connection opened without WAL counts, labelled with its journal mode."""
    src, ro = ro_mount
    with closing(sqlite3.connect(src / "app.db")) as setup:
        setup.execute("CREATE TABLE t(x)")
    instrumentation.set_hooks([exporters.PrometheusHook(registry)])
    with pytest.warns(sqlite_resilient.WALFallbackWarning), closing(sqlite_resilient.connect(ro / "app.db")):
        pass
    with closing(sqlite_resilient.connect(ro / "app.db")):  # reported again, without a warning
        pass
    labels = {"database": str(ro / "app.db"), "journal_mode": "delete"}
    assert registry.get_sample_value("sqlite_resilient_wal_fallbacks_total", labels) == 2


def test_prometheus_registers_once_per_registry(registry: CollectorRegistry) -> None:
    """The metrics are registered with the hook: a second hook in the same registry needs
    another namespace; ``max_databases`` must allow one database."""
    exporters.PrometheusHook(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        exporters.PrometheusHook(registry)
    other = exporters.PrometheusHook(registry, namespace="other_app")
    other.retries.labels(operation="execute", database="x").inc()
    assert registry.get_sample_value("other_app_retries_total", {"operation": "execute", "database": "x"}) == 1
    with pytest.raises(ValueError, match="max_databases must be at least 1"):
        exporters.PrometheusHook(registry, namespace="third", max_databases=0)


# OpenTelemetry


def test_otel_adds_events_to_the_current_span(db: Path, lock_holder: StartLockHolder, tracing: Tracing) -> None:
    """Inside an application span, a wait becomes two span events on that span with the
    prefixed attributes, and no span of the hook's own."""
    with tracing.tracer.start_as_current_span("job"):
        wait_for_release(db, lock_holder, exporters.OpenTelemetryHook(tracing.provider))
    (job,) = tracing.spans().values()
    scheduled, waited = job.events
    assert (scheduled.name, waited.name) == (RETRY_SCHEDULED, LOCK_WAITED)
    retry = dict(scheduled.attributes or {})
    assert set(retry) == LOCK_KEYS - ({"sqlite_resilient.sqlite_errorname"} if BUSY is None else set())
    assert retry["sqlite_resilient.operation"] == "execute"
    assert retry["sqlite_resilient.database"] == str(db)
    assert retry["sqlite_resilient.attempt"] == 1
    assert retry["sqlite_resilient.budget_s"] == 20.0
    assert retry["sqlite_resilient.error"] == "database is locked"
    assert retry["sqlite_resilient.error_type"] == "OperationalError"
    assert retry.get("sqlite_resilient.sqlite_errorname") == BUSY
    success = dict(waited.attributes or {})
    assert set(success) == LOCK_KEYS - {
        "sqlite_resilient.error",
        "sqlite_resilient.error_type",
        "sqlite_resilient.sqlite_errorname",
    }
    assert success["sqlite_resilient.attempt"] == 2
    assert 0 < float(success["sqlite_resilient.waited_s"]) < 20  # type: ignore[arg-type]


def test_otel_lock_error_outside_a_span_gets_a_span(db: Path, lock_holder: StartLockHolder, tracing: Tracing) -> None:
    """Without a current span, retries are dropped but the surfaced lock error gets a span
    of its own, with status ERROR and the event."""
    from opentelemetry.trace import StatusCode

    instrumentation.set_hooks([exporters.OpenTelemetryHook(tracing.provider)])
    error = surface_lock_error(db, lock_holder)
    assert error.attempts > 1
    (span,) = tracing.spans().values()
    assert span.name == LOCK_ERROR
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == str(error)
    attributes = dict(span.attributes or {})
    assert attributes["sqlite_resilient.error_type"] == "DatabaseLockedError"
    assert attributes["sqlite_resilient.attempt"] == error.attempts
    assert attributes.get("sqlite_resilient.sqlite_errorname") == BUSY
    (event,) = span.events
    assert (event.name, dict(event.attributes or {})) == (LOCK_ERROR, attributes)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "sqlite_resilient"


def test_otel_leaves_the_application_span_status(db: Path, tracing: Tracing) -> None:
    """A lock error inside an application span is an event there; the span's status is
    the application's to set."""
    from opentelemetry.trace import StatusCode

    instrumentation.set_hooks([exporters.OpenTelemetryHook(tracing.provider)])
    with tracing.tracer.start_as_current_span("request"):
        error = write_after_another_commit(db)
    (request,) = tracing.spans().values()
    assert request.status.status_code is StatusCode.UNSET
    (event,) = request.events
    assert event.name == LOCK_ERROR
    assert (event.attributes or {})["sqlite_resilient.error"] == str(error)


def test_otel_event_lands_on_the_span_of_the_waiting_thread(db: Path, tracing: Tracing) -> None:
    """Hooks run in the thread that waits: a queued writer's event lands on that thread's
    span, not on the span of the thread holding the lock."""
    with tracing.tracer.start_as_current_span("holder"):
        queue_a_writer(
            db,
            exporters.OpenTelemetryHook(tracing.provider),
            in_thread=lambda: tracing.tracer.start_as_current_span("writer"),
        )
    spans = tracing.spans()
    assert set(spans) == {"holder", "writer"}
    assert spans["holder"].events == ()
    queued, waited = spans["writer"].events
    assert (queued.name, waited.name) == (WRITER_QUEUED, LOCK_WAITED)
    assert (queued.attributes or {})["sqlite_resilient.operation"] == "BEGIN"
    assert (waited.attributes or {})["sqlite_resilient.operation"] == "BEGIN"


def test_otel_wal_fallback_outside_a_span_gets_a_span(ro_mount: tuple[Path, Path], tracing: Tracing) -> None:
    """A WAL fallback outside any span gets a span of its own naming the reason; its status
    stays unset (the connection works)."""
    from opentelemetry.trace import StatusCode

    src, ro = ro_mount
    with closing(sqlite3.connect(src / "app.db")) as setup:
        setup.execute("CREATE TABLE t(x)")
    instrumentation.set_hooks([exporters.OpenTelemetryHook(tracing.provider)])
    with pytest.warns(sqlite_resilient.WALFallbackWarning), closing(sqlite_resilient.connect(ro / "app.db")):
        pass
    (span,) = tracing.spans().values()
    assert span.name == WAL_FALLBACK
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["sqlite_resilient.database"] == str(ro / "app.db")
    assert attributes["sqlite_resilient.journal_mode"] == "delete"
    assert attributes["sqlite_resilient.first"] is True
    assert "read-only filesystem" in str(attributes["sqlite_resilient.reason"])


# Log fields


def test_event_fields_are_flat_json_and_prefixed(db: Path, lock_holder: StartLockHolder) -> None:
    """Every kind of lock event gives the same flat keys with JSON-serialisable values,
    under the default prefix or the one given."""
    seen: list[Event] = []
    instrumentation.set_hooks([seen.append])
    surface_lock_error(db, lock_holder)
    write_after_another_commit(db)
    assert {event.name for event in seen} == {RETRY_SCHEDULED, LOCK_ERROR}
    for event in seen:
        fields = exporters.event_fields(event)
        assert set(fields) == LOCK_KEYS
        assert json.loads(json.dumps(fields)) == fields
        assert isinstance(event, LockEvent)
        bare = exporters.event_fields(event, prefix="")
        assert set(bare) == {key[len("sqlite_resilient.") :] for key in fields}
        assert bare["attempt"] == fields["sqlite_resilient.attempt"] == event.attempt


def test_structlog_renders_event_fields_and_logging_hook_records(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """structlog takes :func:`event_fields` as keyword arguments, and its stdlib formatter
    (with ``ExtraAdder``) renders the logging hook's records as flat JSON."""
    structlog = pytest.importorskip("structlog")
    log = structlog.get_logger()
    seen: list[Event] = []
    instrumentation.set_hooks([seen.append, lambda event: log.warning(event.name, **exporters.event_fields(event))])
    with structlog.testing.capture_logs() as captured:
        write_after_another_commit(db)
    (entry,) = captured
    (event,) = seen
    assert entry == {"event": LOCK_ERROR, "log_level": "warning", **exporters.event_fields(event)}

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("sqlite_resilient")
    logger.addHandler(handler)
    instrumentation.set_hooks(None)
    capsys.readouterr()
    try:
        error = write_after_another_commit(db)
    finally:
        logger.removeHandler(handler)
    record = json.loads(capsys.readouterr().out)
    assert record["level"] == "warning"
    assert record["event"] == LOCK_ERROR  # LoggingHook's "event" extra replaces the message
    assert (record["operation"], record["database"], record["attempt"]) == ("execute", str(db), 1)
    assert record["error"] == repr(error)


# Without the extras


def test_module_imports_without_the_extras() -> None:
    """With prometheus_client and opentelemetry unimportable, the module imports and
    formats fields; only creating a hook fails, with an ImportError naming the extra."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        BLOCKED = {"prometheus_client", "opentelemetry"}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        from sqlite_resilient import exporters, instrumentation

        assert not BLOCKED & {name.partition(".")[0] for name in sys.modules}
        event = instrumentation.FallbackEvent(
            name="sqlite_resilient.wal_fallback", database="x.db", reason="r", journal_mode="delete", first=True
        )
        print(sorted(exporters.event_fields(event)))
        for hook in (exporters.PrometheusHook, exporters.OpenTelemetryHook):
            try:
                hook()
            except ImportError as error:
                print(f"{error} ({error.name})")
            else:
                raise SystemExit(f"{hook.__name__} was created")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['sqlite_resilient.database', 'sqlite_resilient.first', 'sqlite_resilient.journal_mode', "
        "'sqlite_resilient.reason']",
        "PrometheusHook needs the prometheus_client package: pip install 'sqlite_resilient[prometheus]' "
        "(prometheus_client)",
        "OpenTelemetryHook needs the opentelemetry-api package: pip install 'sqlite_resilient[otel]' (opentelemetry)",
    ]


def test_fields_of_a_fallback_event() -> None:
    """A fallback event's fields: database, reason, journal mode and whether it is the first."""
    event = FallbackEvent(
        name=WAL_FALLBACK, database="/data/app.db", reason="read-only filesystem", journal_mode="delete", first=False
    )
    assert exporters.event_fields(event, prefix="db.") == {
        "db.database": "/data/app.db",
        "db.reason": "read-only filesystem",
        "db.journal_mode": "delete",
        "db.first": False,
    }
