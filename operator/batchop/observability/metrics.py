"""Prometheus metrics of the operator: per-resource gauges, Batch API calls, reconciles, SAS expiry.

Everything is registered on one :class:`Metrics` object (module default :data:`METRICS`, on
prometheus-client's default registry, so process metrics come along). The operator calls:

- :func:`observe_resource` after each status write (or poll) with the resource's spec and status:
  sets ``batchop_schedule_ready``, ``_suspended``, ``_last_job_succeeded``, ``_next_run_timestamp_seconds``,
  ``batchop_sas_expiry_timestamp_seconds``; :func:`forget_resource` when the resource is gone;
- :class:`MetricsPolicy` installed in the Batch client pipeline (``per_retry_policies=[MetricsPolicy()]``):
  ``batchop_batch_requests_total{operation,status}``, ``batchop_batch_request_duration_seconds{operation}``,
  ``batchop_batch_throttled_total{operation}`` (429 and 503 answers), one sample per HTTP attempt;
- :func:`reconcile_timer` around a handler body (``with reconcile_timer("reconcile"): ...``):
  ``batchop_reconcile_duration_seconds{handler}``, ``batchop_reconcile_errors_total{handler,error}`` (an
  exception's class, or a condition reason given to :func:`count_error`);
- :func:`start_metrics_server` to serve ``/metrics`` (``batchop run --metrics-port``).

Beside them, under the names controller dashboards already query (:mod:`batchop.observability.conventions`):
controller-runtime's ``controller_runtime_reconcile_*`` (fed by :func:`reconcile_timer`, whose run is told how
the reconcile ended with :meth:`ReconcileRun.settle`), client-go's ``workqueue_*`` (:func:`reconcile_requested`
for each reconcile request) and ``rest_client_requests_total`` (:func:`rest_client_trace` on the operator's
Kubernetes client's session).

Label values are bounded: ``operation`` is the HTTP method and the URL path with ids replaced by
``{id}`` (``GET /jobschedules/{id}``), never an id or a query string.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from batchop.api import conditions as cond
from batchop.observability import memory
from batchop.observability.conventions import ERROR, SUCCESS, Children, ControllerMetrics, QueueItem, result_of
from batchwire import timestamps

#: HTTP statuses counted as throttling: 429 Too Many Requests, and 503 Server Busy (Batch sends both).
THROTTLE_STATUSES = frozenset({429, 503})

_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_START_KEY = "batchop_metrics_start"


class Metrics:
    """The operator's metric families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.resources = ResourceGauges()
        registry.register(self.resources)
        self.batch_requests = Counter(
            "batchop_batch_requests",
            "Azure Batch HTTP requests (each attempt) by operation and HTTP status ('error': no answer).",
            ["operation", "status"], registry=registry)
        self.batch_latency = Histogram(
            "batchop_batch_request_duration_seconds",
            "Azure Batch HTTP request latency by operation.",
            ["operation"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.batch_throttled = Counter(
            "batchop_batch_throttled",
            "Azure Batch answers telling the operator to slow down (429, 503) by operation.",
            ["operation"], registry=registry)
        self.reconcile_duration = Histogram(
            "batchop_reconcile_duration_seconds",
            "Duration of reconcile handlers (create, update, delete, resume, poll ...).",
            ["handler"], buckets=_RECONCILE_BUCKETS, registry=registry)
        self.reconcile_errors = Counter(
            "batchop_reconcile_errors",
            "Reconcile handler runs that raised, by handler and exception class.",
            ["handler", "error"], registry=registry)
        self.controller = ControllerMetrics(registry)
        registry.register(CollectorTime(memory.GC_CLOCK))
        self._batch_requests = Children(self.batch_requests)
        self._batch_latency = Children(self.batch_latency)
        self._batch_throttled = Children(self.batch_throttled)
        self._reconcile_duration = Children(self.reconcile_duration)

    # -- per resource ---------------------------------------------------------------------------------

    def observe_resource(self, namespace: str, name: str, *, spec: Mapping[str, Any] | None,
                         status: Mapping[str, Any] | None) -> None:
        """Set the per-resource gauges from the resource's ``spec`` and ``status`` (as stored in Kubernetes)."""
        spec = spec or {}
        status = status or {}
        ready = cond.find(status.get("conditions"), cond.READY)
        suspended = bool(spec.get("suspend")) or str(status.get("state", "")).lower() == "disabled"
        recent = status.get("recentJob") or {}
        result = str(recent.get("result") or "").lower()
        sas = status.get("sas") or {}
        self.resources.set(namespace, name, (
            1.0 if ready is not None and ready.get("status") == cond.TRUE else 0.0,
            1.0 if suspended else 0.0,
            (1.0 if result == "success" else 0.0) if result in ("success", "failure")
            else self.resources.value(namespace, name, LAST_JOB_SUCCEEDED),
            _timestamp(status.get("nextRunTime")),
            _timestamp(sas.get("expiresAt")),
        ))

    def forget_resource(self, namespace: str, name: str) -> None:
        """Remove every per-resource series of a deleted resource."""
        self.resources.forget(namespace, name)

    # -- Batch requests -------------------------------------------------------------------------------

    def observe_request(self, operation: str, status: int | None, seconds: float) -> None:
        """Record one Batch HTTP attempt; ``status`` None means no answer (connection error, timeout)."""
        self._batch_requests(operation, "error" if status is None else str(status)).inc()
        self._batch_latency(operation).observe(seconds)
        if status in THROTTLE_STATUSES:
            self._batch_throttled(operation).inc()

    # -- reconciles -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reconcile_timer(self, handler: str) -> Iterator[ReconcileRun]:
        """Time the ``with`` body as one run of ``handler``; an exception also counts as an error (re-raised).
        The body tells how the run ended with :meth:`ReconcileRun.settle` (default: success); a cancelled run
        (the operator stopping) counts in no controller-runtime result."""
        run = ReconcileRun()
        start = time.perf_counter()
        ended = False
        try:
            yield run
            ended = True
        except Exception as exc:
            self.reconcile_errors.labels(handler, type(exc).__name__).inc()
            run.result, run.terminal = ERROR, False
            ended = True
            raise
        finally:
            seconds = time.perf_counter() - start
            self._reconcile_duration(handler).observe(seconds)
            if ended:
                self.controller.reconciled(run.result, seconds, terminal=run.terminal)

    def count_error(self, handler: str, error: str) -> None:
        """Count a handler run that ended in an error without raising (e.g. a ``Synced=False`` reason)."""
        self.reconcile_errors.labels(handler, error).inc()


class ReconcileRun:
    """How one reconcile under :meth:`Metrics.reconcile_timer` ended (controller-runtime's ``result`` label)."""

    def __init__(self) -> None:
        self.result = SUCCESS
        self.terminal = False

    def settle(self, synced: Mapping[str, Any] | None, retry_after: float | None) -> None:
        """The run ended with this ``Synced`` condition, to be run again after ``retry_after`` seconds (None:
        not unless something changes); see :func:`batchop.observability.conventions.result_of`."""
        synced = synced or {}
        self.result, self.terminal = result_of(synced.get("status"), synced.get("reason"), retry_after)


def operation_name(method: str, url: str) -> str:
    """A bounded label for a Batch request: ``"GET /jobschedules/{id}"``, ``"POST /jobschedules/{id}/disable"``.

    Batch paths alternate collection names and ids (``/jobs/{id}/tasks/{id}``) and end with an action
    name (``/disable``, ``/taskcounts``) at a collection position, so every odd segment is an id.
    """
    segments = [s for s in urlsplit(url).path.split("/") if s]
    template = ["{id}" if index % 2 else segment.lower() for index, segment in enumerate(segments)]
    return f"{method.upper()} /{'/'.join(template)}"


class MetricsPolicy(SansIOHTTPPolicy):
    """An azure-core pipeline policy recording every Batch HTTP attempt into :class:`Metrics`.

    Works in sync and async pipelines. Install it per retry, so that each attempt (and each 429) counts:
    ``BatchClient(endpoint, credential, per_retry_policies=[MetricsPolicy()])``.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    @property
    def metrics(self) -> Metrics:
        return self._metrics if self._metrics is not None else METRICS

    def on_request(self, request: PipelineRequest) -> None:
        request.context[_START_KEY] = time.perf_counter()

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        self._record(request, response.http_response.status_code)

    def on_exception(self, request: PipelineRequest) -> None:
        self._record(request, None)

    def _record(self, request: PipelineRequest, status: int | None) -> None:
        start = request.context.get(_START_KEY)
        seconds = time.perf_counter() - start if isinstance(start, float) else 0.0
        http = request.http_request
        self.metrics.observe_request(operation_name(http.method, http.url), status, seconds)


def _timestamp(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (``2025-01-01T00:00:00Z``) or datetime; None if absent/invalid."""
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str) or not value:
        return None
    try:
        return timestamps.parse(value).timestamp()
    except ValueError:
        return None


PER_RESOURCE = (
    ("batchop_schedule_ready",
     "1 when the resource's Ready condition is True (its Batch schedule exists as declared), else 0."),
    ("batchop_schedule_suspended", "1 when the schedule is suspended (spec.suspend) or disabled in Batch, else 0."),
    ("batchop_schedule_last_job_succeeded",
     "Result of the schedule's most recent completed job: 1 success, 0 failure; absent before the first."),
    ("batchop_schedule_next_run_timestamp_seconds",
     "When Batch will create the schedule's next job (Unix time); absent when none is planned."),
    ("batchop_sas_expiry_timestamp_seconds",
     "Expiry (Unix time) of the SAS tokens currently in the schedule's job specification."),
)
"""The per-resource gauges (labels ``namespace``, ``name``), in the order of :class:`ResourceGauges`' rows."""
LAST_JOB_SUCCEEDED = 2


class ResourceGauges(Collector):
    """The per-resource gauges of :data:`PER_RESOURCE` as one row of values per resource, exported at scrape time.

    prometheus-client's labelled gauges keep an object with its own lock per series: five series per resource
    took about 3.5 KiB per resource (35 MiB at 10,000), and every update took five label lookups. A row is a
    tuple of five floats (None: no series), so memory and updates stay small whatever N; a scrape builds
    the families from the rows."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[float | None, ...]] = {}

    def set(self, namespace: str, name: str, row: tuple[float | None, ...]) -> None:
        self._rows[(namespace, name)] = row

    def value(self, namespace: str, name: str, column: int) -> float | None:
        row = self._rows.get((namespace, name))
        return None if row is None else row[column]

    def forget(self, namespace: str, name: str) -> None:
        self._rows.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [GaugeMetricFamily(metric, text, labels=["namespace", "name"]) for metric, text in PER_RESOURCE]
        for (namespace, name), row in self._rows.copy().items():  # a copy: updates go on in the event loop
            for family, value in zip(families, row, strict=True):
                if value is not None:
                    family.add_metric([namespace, name], value)
        yield from families


class CollectorTime(Collector):
    """``batchop_gc_seconds_total{generation}``: time spent in garbage collections (:class:`memory.CollectorClock`;
    prometheus-client's own ``python_gc_collections_total`` counts them but does not time them)."""

    def __init__(self, clock: memory.CollectorClock) -> None:
        self.clock = clock

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        family = CounterMetricFamily(
            "batchop_gc_seconds", "Seconds spent in the garbage collector's collections, by generation.",
            labels=["generation"])
        for generation, seconds in enumerate(self.clock.seconds):
            family.add_metric([str(generation)], seconds)
        yield family
        yield GaugeMetricFamily(
            "batchop_gc_frozen_objects",
            "Objects frozen out of garbage collections (the modules at start, the resources' state at rest).",
            value=gc.get_freeze_count())


#: The operator's metrics, on prometheus-client's default registry.
METRICS = Metrics()


def observe_resource(namespace: str, name: str, *, spec: Mapping[str, Any] | None,
                     status: Mapping[str, Any] | None) -> None:
    """:meth:`Metrics.observe_resource` on :data:`METRICS`."""
    METRICS.observe_resource(namespace, name, spec=spec, status=status)


def forget_resource(namespace: str, name: str) -> None:
    """:meth:`Metrics.forget_resource` on :data:`METRICS`."""
    METRICS.forget_resource(namespace, name)


def reconcile_timer(handler: str) -> contextlib.AbstractContextManager[ReconcileRun]:
    """:meth:`Metrics.reconcile_timer` on :data:`METRICS`."""
    return METRICS.reconcile_timer(handler)


def count_error(handler: str, error: str) -> None:
    """:meth:`Metrics.count_error` on :data:`METRICS`."""
    METRICS.count_error(handler, error)


def reconcile_requested() -> QueueItem:
    """A reconcile request is made (``workqueue_*`` on :data:`METRICS`): call ``start()`` on the item once it
    may run (a slot and its resource's lock are held) and ``done()`` when it ended, or was given up."""
    return METRICS.controller.queue.add()


def rest_client_trace(metrics: Metrics | None = None) -> aiohttp.TraceConfig:
    """An aiohttp trace for a Kubernetes API client's session (``ClientSession(trace_configs=[...])``): each
    request counts in ``rest_client_requests_total{code,method,host}`` as client-go counts it (``host`` the API
    server's ``host:port``, ``code`` the HTTP status or ``<error>`` when no answer came)."""

    def target() -> ControllerMetrics:
        return (metrics or METRICS).controller

    async def on_end(_session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        target().rest_request(params.method, params.url.authority, params.response.status)

    async def on_exception(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        target().rest_request(params.method, params.url.authority, None)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace


def set_max_concurrent_reconciles(limit: float) -> None:
    """``controller_runtime_max_concurrent_reconciles`` on :data:`METRICS`: the bound on reconciles at once."""
    METRICS.controller.set_max_concurrent_reconciles(limit)


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> int:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread; returns the bound port (``port=0``: any free)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_address[1])
