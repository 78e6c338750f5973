"""Exporters: Prometheus metrics and OpenTelemetry span events, built on the hook API.

Each exporter is a hook (see :mod:`sqlite_resilient.instrumentation`) to register next to
the default :class:`~sqlite_resilient.instrumentation.LoggingHook`::

    from sqlite_resilient import instrumentation
    from sqlite_resilient.exporters import OpenTelemetryHook, PrometheusHook

    instrumentation.set_hooks([instrumentation.LoggingHook(), PrometheusHook(), OpenTelemetryHook()])

The exporters need optional extras, imported only when a hook is created, so this module
imports without them:

- :class:`PrometheusHook`: ``pip install 'sqlite_resilient[prometheus]'`` (``prometheus_client``).
- :class:`OpenTelemetryHook`: ``pip install 'sqlite_resilient[otel]'`` (``opentelemetry-api``;
  an SDK or distribution of the application's choice records and exports the spans).

:func:`event_fields` turns an event into flat, JSON-serialisable fields with prefixed keys,
for structured loggers such as structlog::

    log = structlog.get_logger()
    instrumentation.set_hooks([lambda event: log.info(event.name, **event_fields(event))])
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Union

from ._errors import DatabaseLockedError
from .instrumentation import (
    LOCK_ERROR,
    LOCK_WAITED,
    RETRY_SCHEDULED,
    WAL_FALLBACK,
    WRITER_QUEUED,
    Event,
    FallbackEvent,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

__all__ = [
    "LOCK_WAIT_BUCKETS",
    "OTHER_DATABASES",
    "UNKNOWN_DATABASE",
    "FieldValue",
    "OpenTelemetryHook",
    "PrometheusHook",
    "event_fields",
]

FieldValue = Union[str, int, float, bool, None]
"""The value of one field of :func:`event_fields`."""

LOCK_WAIT_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Default buckets in seconds of the lock-wait histogram: from a retry that succeeded at
once to a whole default budget (30 s) and beyond; ``+Inf`` is added by prometheus_client."""

UNKNOWN_DATABASE = "unknown"
"""The ``database`` label of events whose database is not a file (``:memory:``, unknown)."""

OTHER_DATABASES = "other"
"""The ``database`` label of every database past :class:`PrometheusHook`'s ``max_databases``."""


def event_fields(event: Event, *, prefix: str = "sqlite_resilient.") -> dict[str, FieldValue]:
    """The fields of *event*: flat, JSON-serialisable, every key starting with *prefix*.

    The event's name is left out: it is the log message, span event or metric. Keys (with
    the default prefix):

    - a :class:`~sqlite_resilient.instrumentation.LockEvent`: ``sqlite_resilient.operation``,
      ``.database``, ``.attempt``, ``.waited_s``, ``.wait_s``, ``.budget_s``, ``.error``
      (the error's message), ``.error_type`` (its class name, e.g. ``DatabaseLockedError``)
      and ``.sqlite_errorname`` (e.g. ``SQLITE_BUSY``; Python 3.11+);
    - a :class:`~sqlite_resilient.instrumentation.FallbackEvent`: ``sqlite_resilient.database``,
      ``.reason``, ``.journal_mode`` and ``.first``.

    Every key is always present; a value that is not known is ``None``.

    Args:
        event: An event handed to a hook.
        prefix: Put before every key; ``""`` gives bare keys (``operation``, ``database``…).

    Returns:
        A new dictionary of ``str``, ``int``, ``float``, ``bool`` and ``None`` values.
    """
    fields: dict[str, FieldValue]
    if isinstance(event, FallbackEvent):
        fields = {
            "database": event.database,
            "reason": event.reason,
            "journal_mode": event.journal_mode,
            "first": event.first,
        }
    else:
        error = event.error
        errorname = getattr(error, "sqlite_errorname", None)
        fields = {
            "operation": event.operation,
            "database": event.database,
            "attempt": event.attempt,
            "waited_s": event.waited,
            "wait_s": event.wait,
            "budget_s": event.budget,
            "error": None if error is None else str(error),
            "error_type": None if error is None else type(error).__name__,
            "sqlite_errorname": errorname if isinstance(errorname, str) else None,
        }
    return {prefix + key: value for key, value in fields.items()}


def _missing(hook: str, module: str, distribution: str, extra: str) -> ImportError:
    return ImportError(f"{hook} needs the {distribution} package: pip install 'sqlite_resilient[{extra}]'", name=module)


def _version() -> str | None:
    from importlib import metadata  # noqa: PLC0415 - its import takes longer than the library's

    try:
        return metadata.version("sqlite_resilient")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None


def _path_or_unknown(database: str | None) -> str:
    return UNKNOWN_DATABASE if database is None else database


class PrometheusHook:
    """Count the library's lock waits as Prometheus metrics.

    Metrics (with the default *namespace*):

    - ``sqlite_resilient_retries_total{operation, database}``: lock errors retried after a
      backoff wait (``retry_scheduled`` events). A statement retried inside a decorated
      function counts under both operations.
    - ``sqlite_resilient_lock_errors_total{operation, database, reason}``: lock errors that
      reached the application (``lock_error`` events); ``reason`` is ``budget_spent`` (a
      :class:`~sqlite_resilient.DatabaseLockedError`) or ``not_retried`` (retrying was
      unsafe: a lock error inside a transaction).
    - ``sqlite_resilient_lock_wait_seconds{operation, database, outcome}``: histogram of the
      time operations that met a lock took, from their start until they succeeded
      (``outcome="acquired"``, ``lock_waited`` events) or gave up (``outcome="error"``,
      ``lock_error`` events).
    - ``sqlite_resilient_writers_queued_total{operation, database}``: write transactions that
      queued behind another of the library's writers before their ``BEGIN``
      (``writer_queued`` events, see ``Settings.writer_queue``; ``operation`` is ``BEGIN``).
    - ``sqlite_resilient_wal_fallbacks_total{database, journal_mode}``: connections opened
      where WAL cannot be used (``wal_fallback`` events); ``journal_mode`` is the mode they
      run with: a rollback journal, or ``wal`` for a database already in WAL mode and left
      so. The reason is logged, not a label.

    Waits that SQLite's busy handler (``busy_timeout``) ends in success are not seen (see
    :class:`~sqlite_resilient.instrumentation.LockStats`): the metrics count what the library
    itself retried, waited for or gave up on.

    Labels stay few: ``operation`` is ``execute``, ``executemany``, ``commit``, ``BEGIN``,
    ``connection set-up`` or the qualified name of a function decorated with
    :func:`~sqlite_resilient.retry_on_lock`, all fixed by the code. ``database`` is the
    database file's path (``unknown`` when there is none); an application that opens
    databases without bound (one per tenant, temporary files) should pass
    *database_label* to map paths onto a few names, and at most *max_databases* distinct
    labels are used in any case, every later database counting as ``other``.

    Create one hook per registry: the metrics are registered when the hook is created, and
    a second hook of the same *namespace* in the same registry raises ``ValueError``
    (duplicated time series). The metrics are also the hook's attributes
    (:attr:`retries`, :attr:`lock_errors`, :attr:`lock_wait`, :attr:`writers_queued`,
    :attr:`wal_fallbacks`), e.g. to unregister them.

    Args:
        registry: The ``prometheus_client.CollectorRegistry`` to register the metrics in;
            by default prometheus_client's global ``REGISTRY``.
        namespace: The prefix of the metric names.
        buckets: Upper bounds in seconds of the lock-wait histogram's buckets.
        database_label: Maps an event's database path (``None`` when unknown) to the value
            of the ``database`` label; by default the path itself.
        max_databases: The most distinct ``database`` labels used; later ones are ``other``.

    Raises:
        ImportError: prometheus_client is not installed (the ``prometheus`` extra).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "sqlite_resilient",
        buckets: Sequence[float] = LOCK_WAIT_BUCKETS,
        database_label: Callable[[str | None], str] | None = None,
        max_databases: int = 32,
    ) -> None:
        try:
            import prometheus_client  # noqa: PLC0415 - an optional extra, imported on use
        except ImportError as error:
            raise _missing("PrometheusHook", "prometheus_client", "prometheus_client", "prometheus") from error
        if max_databases < 1:
            raise ValueError(f"max_databases must be at least 1, not {max_databases!r}")
        if registry is None:
            registry = prometheus_client.REGISTRY
        lock_labels = ("operation", "database")
        self.retries = prometheus_client.Counter(
            "retries",
            "Lock errors retried after a backoff wait.",
            lock_labels,
            namespace=namespace,
            registry=registry,
        )
        self.lock_errors = prometheus_client.Counter(
            "lock_errors",
            "Lock errors that reached the application.",
            (*lock_labels, "reason"),
            namespace=namespace,
            registry=registry,
        )
        self.lock_wait = prometheus_client.Histogram(
            "lock_wait_seconds",
            "Time operations that met a lock took until they succeeded or gave up.",
            (*lock_labels, "outcome"),
            namespace=namespace,
            registry=registry,
            buckets=tuple(buckets),
        )
        self.writers_queued = prometheus_client.Counter(
            "writers_queued",
            "Write transactions that queued behind another writer.",
            lock_labels,
            namespace=namespace,
            registry=registry,
        )
        self.wal_fallbacks = prometheus_client.Counter(
            "wal_fallbacks",
            "Connections opened where WAL cannot be used, by the journal mode they run with.",
            ("database", "journal_mode"),
            namespace=namespace,
            registry=registry,
        )
        self._database_label = database_label or _path_or_unknown
        self._max_databases = max_databases
        self._databases: set[str] = set()
        self._lock = threading.Lock()

    def _database(self, database: str | None) -> str:
        label = self._database_label(database)
        with self._lock:
            if label in self._databases:
                return label
            if len(self._databases) < self._max_databases:
                self._databases.add(label)
                return label
        return OTHER_DATABASES

    def __call__(self, event: Event, /) -> None:
        """Count *event*."""
        database = self._database(event.database)
        if isinstance(event, FallbackEvent):
            self.wal_fallbacks.labels(database=database, journal_mode=event.journal_mode).inc()
            return
        operation = event.operation
        if event.name == RETRY_SCHEDULED:
            self.retries.labels(operation=operation, database=database).inc()
        elif event.name == LOCK_WAITED:
            self.lock_wait.labels(operation=operation, database=database, outcome="acquired").observe(event.waited)
        elif event.name == LOCK_ERROR:
            reason = "budget_spent" if isinstance(event.error, DatabaseLockedError) else "not_retried"
            self.lock_errors.labels(operation=operation, database=database, reason=reason).inc()
            self.lock_wait.labels(operation=operation, database=database, outcome="error").observe(event.waited)
        elif event.name == WRITER_QUEUED:
            self.writers_queued.labels(operation=operation, database=database).inc()


class OpenTelemetryHook:
    """Add every event to the current OpenTelemetry span, as a span event.

    The span event's name is the event's name (``sqlite_resilient.retry_scheduled``…) and
    its attributes are :func:`event_fields` without the ``None`` values:
    ``sqlite_resilient.operation``, ``.database``, ``.attempt``, ``.waited_s``,
    ``.wait_s``, ``.budget_s``, ``.error``, ``.error_type``, ``.sqlite_errorname`` for lock
    events; ``sqlite_resilient.database``, ``.reason``, ``.journal_mode``, ``.first`` for a
    WAL fallback. The hook runs in the thread that met the lock, so the event lands on the
    span of the request or job that met it.

    Without a recording span, ``lock_error`` and ``wal_fallback`` events, which an operator
    must not miss, get a short span of their own, named after the event, with the same
    attributes and span event; a ``lock_error`` span has status ``ERROR``. (It is a child
    of the current context, so a trace that is sampled out stays so.) Retries, waits and
    queued writers outside any span are dropped (:class:`PrometheusHook` counts them).
    The hook never sets the status of the application's spans: a lock error reaching the
    application may be handled there.

    Args:
        tracer_provider: The ``opentelemetry.trace.TracerProvider`` of the short spans; by
            default the global one.

    Raises:
        ImportError: opentelemetry-api is not installed (the ``otel`` extra).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - an optional extra, imported on use
        except ImportError as error:
            raise _missing("OpenTelemetryHook", "opentelemetry", "opentelemetry-api", "otel") from error
        self._tracer = trace.get_tracer("sqlite_resilient", _version(), tracer_provider)
        self._current_span = trace.get_current_span
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR

    def __call__(self, event: Event, /) -> None:
        """Record *event* on the current span, or on a span of its own (see above)."""
        attributes = {key: value for key, value in event_fields(event).items() if value is not None}
        span = self._current_span()
        if span.is_recording():
            span.add_event(event.name, attributes)
            return
        if event.name not in (LOCK_ERROR, WAL_FALLBACK):
            return
        with self._tracer.start_span(event.name, attributes=attributes) as own:
            own.add_event(event.name, attributes)
            if event.name == LOCK_ERROR:
                own.set_status(self._status(self._error, str(attributes.get("sqlite_resilient.error", ""))))
