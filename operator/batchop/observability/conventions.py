"""Metrics under the names controller dashboards and alerts already query: controller-runtime's reconcile
metrics, client-go's workqueue metrics (as controller-runtime registers them) and client-go's REST client
counter, so that kubebuilder's generated Grafana dashboard and the alerts written for Go operators show batchop.

Names, label names, types and buckets are those of controller-runtime (``pkg/internal/controller/metrics``,
``pkg/metrics/workqueue.go``, ``pkg/metrics/client_go_adapter.go``). The label ``controller`` (and the
workqueue's ``name``) is ``batchjobschedule``: controller-runtime's builder names a controller after its
kind in lower case.

kopf has no workqueue: it runs one worker per object, which calls the handlers. For batchop the queue is the
stream of reconcile requests, each a reconcile or deletion step of one resource, whoever asked for it: a
kopf handler for a watch event (create, update, resume, delete), kopf's retry of a handler that asked to be
retried, an annotation change seen on a watch event, or the account poller (drift repair, SAS renewal,
backoff retry of a stuck resource). A request waits for one of the slots that bound the reconciles under
way (``controller_runtime_max_concurrent_reconciles``, as ``MaxConcurrentReconciles`` bounds a controller's
workers) and for its resource's lock, because the reconciles of one resource run one at a time, as a key is
never processed twice at once in a controller-runtime workqueue (:class:`QueueItem`). So, for batchop:

- ``workqueue_adds_total``: reconcile requests made;
- ``workqueue_depth``: requests made and not started (waiting for a slot or the resource's lock);
- ``controller_runtime_active_workers``: requests started and not ended;
- ``workqueue_queue_duration_seconds``: from the request to its start;
- ``workqueue_work_duration_seconds``: from its start to its end (the handler's time);
- ``workqueue_unfinished_work_seconds`` and ``workqueue_longest_running_processor_seconds``: the ages of the
  requests under way, summed and the largest, computed at each scrape;
- ``workqueue_retries_total``: reconciles that ended in an error batchop retries (the runtime's retry after
  the delay an outcome asks for, or the poller's backoff), counted when they end, as client-go counts
  ``AddRateLimited``.

What happens before a request exists is not in these numbers: kopf's own per-object event queue and its
batching window (0.1 s) come before the handler runs.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batchop.api import conditions as cond
from batchop.api.names import KIND

CONTROLLER: Final = KIND.lower()
"""The ``controller`` and workqueue ``name`` label: the kind in lower case, as controller-runtime names it."""

SUCCESS, ERROR, REQUEUE, REQUEUE_AFTER = "success", "error", "requeue", "requeue_after"
RESULTS: Final = (SUCCESS, ERROR, REQUEUE, REQUEUE_AFTER)
"""The values of ``controller_runtime_reconcile_total``'s ``result`` label."""

RECONCILE_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
)
"""``controller_runtime_reconcile_time_seconds``' buckets, as controller-runtime declares them."""

WORKQUEUE_BUCKETS: Final = (1e-08, 1e-07, 1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
"""The workqueue histograms' buckets: ``prometheus.ExponentialBuckets(10e-9, 10, 12)``."""

WAITING_REASONS: Final = frozenset({cond.REASON_DELETING})
"""``Synced=False`` reasons that are a planned wait, not an error: a deletion step waiting for Batch to let go
of the schedule comes back after ``retry_after`` (controller-runtime's ``Result{RequeueAfter: ...}``)."""


class Children:
    """The labelled children of one metric, looked up once per label values and then kept: prometheus-client's
    ``labels()`` checks and converts its arguments and takes a lock on every call, which came to 3% of the
    operator's CPU in a creation burst (a few calls per request). Only for metrics whose label values are few
    (statuses, operations, results), never per resource."""

    def __init__(self, metric: Counter | Histogram | Gauge) -> None:
        self._metric = metric
        self._bound: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._bound.get(values)
        if child is None:
            child = self._bound[values] = self._metric.labels(*values)
        return child


def result_of(synced_status: str | None, reason: str | None, retry_after: float | None) -> tuple[str, bool]:
    """The ``result`` label of a reconcile that ended with this ``Synced`` condition and ``retry_after``, and
    whether it is terminal (an error no retry mends; controller-runtime's ``reconcile.TerminalError``).

    An error is ``Synced=False`` (but for the planned waits of :data:`WAITING_REASONS`); a pass that is not
    done and comes back after a delay is ``requeue_after``; batchop never asks for an immediate, rate-limited
    requeue without an error, so ``requeue`` stays 0 (present, as controller-runtime initialises it)."""
    if synced_status == cond.FALSE and reason not in WAITING_REASONS:
        return ERROR, retry_after is None
    if retry_after is not None:
        return REQUEUE_AFTER, False
    return SUCCESS, False


class ControllerMetrics:
    """controller-runtime's reconcile and workqueue families and client-go's REST client counter, on
    ``registry``, their series initialised as controller-runtime's ``initMetrics`` does."""

    def __init__(self, registry: CollectorRegistry) -> None:
        per_controller = ["controller"]
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total", "Total number of reconciliations per controller",
            ["controller", "result"], registry=registry)
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors", "Total number of reconciliation errors per controller",
            per_controller, registry=registry)
        self.terminal_errors = Counter(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller", per_controller, registry=registry)
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller",
            per_controller, buckets=RECONCILE_BUCKETS, registry=registry)
        self.max_concurrent = Gauge(
            "controller_runtime_max_concurrent_reconciles", "Maximum number of concurrent reconciles per controller",
            per_controller, registry=registry)
        self.active_workers = Gauge(
            "controller_runtime_active_workers", "Number of currently used workers per controller",
            per_controller, registry=registry)
        self.queue = WorkQueue(registry, CONTROLLER, self.active_workers.labels(CONTROLLER))
        self.rest_requests = Counter(
            "rest_client_requests", "Number of HTTP requests, partitioned by status code, method, and host.",
            ["code", "method", "host"], registry=registry)
        self._reconcile_total = Children(self.reconcile_total)
        self._reconcile_time = Children(self.reconcile_time)
        self._rest_requests = Children(self.rest_requests)
        for result in RESULTS:
            self.reconcile_total.labels(CONTROLLER, result)
        self.reconcile_errors.labels(CONTROLLER)
        self.terminal_errors.labels(CONTROLLER)
        self.reconcile_time.labels(CONTROLLER)
        self.set_max_concurrent_reconciles(math.inf)

    def set_max_concurrent_reconciles(self, limit: float) -> None:
        """The bound on reconciles under way at once (the controller's in-flight slots); ``inf`` until one is
        set: kopf itself starts a worker per object."""
        self.max_concurrent.labels(CONTROLLER).set(limit)

    def reconciled(self, result: str, seconds: float, *, terminal: bool = False) -> None:
        """One reconcile ended with ``result`` after ``seconds`` of work."""
        self._reconcile_total(CONTROLLER, result).inc()
        self._reconcile_time(CONTROLLER).observe(seconds)
        if result == ERROR:
            self.reconcile_errors.labels(CONTROLLER).inc()
            if terminal:
                self.terminal_errors.labels(CONTROLLER).inc()
            else:
                self.queue.retries.inc()

    def rest_request(self, method: str, host: str, status: int | None) -> None:
        """One Kubernetes API request answered with ``status`` (None: no answer, client-go's ``<error>``)."""
        self._rest_requests("<error>" if status is None else str(status), method.upper(), host).inc()


class WorkQueue:
    """client-go's workqueue metrics for one queue (``name`` = ``controller`` = :data:`CONTROLLER`), fed by
    :class:`QueueItem` as requests are made, started and finished."""

    def __init__(self, registry: CollectorRegistry, name: str, active: Gauge) -> None:
        labels = ["name", "controller"]
        self.depth = Gauge(
            "workqueue_depth", "Current depth of workqueue by workqueue and priority",
            [*labels, "priority"], registry=registry).labels(name, name, "")
        self.adds = Counter(
            "workqueue_adds", "Total number of adds handled by workqueue", labels, registry=registry
        ).labels(name, name)
        self.latency = Histogram(
            "workqueue_queue_duration_seconds", "How long in seconds an item stays in workqueue before being requested",
            labels, buckets=WORKQUEUE_BUCKETS, registry=registry).labels(name, name)
        self.work = Histogram(
            "workqueue_work_duration_seconds", "How long in seconds processing an item from workqueue takes.",
            labels, buckets=WORKQUEUE_BUCKETS, registry=registry).labels(name, name)
        self.retries = Counter(
            "workqueue_retries", "Total number of retries handled by workqueue", labels, registry=registry
        ).labels(name, name)
        Gauge("workqueue_unfinished_work_seconds",
              "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. "
              "Large values indicate stuck threads. One can deduce the number of stuck threads by observing the "
              "rate at which this increases.", labels, registry=registry
              ).labels(name, name).set_function(lambda: sum(self._ages()))
        Gauge("workqueue_longest_running_processor_seconds",
              "How many seconds has the longest running processor for workqueue been running.",
              labels, registry=registry).labels(name, name).set_function(lambda: max(self._ages(), default=0.0))
        self.active = active
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()  # the scrape runs in the metrics server's thread

    def _ages(self) -> list[float]:
        now = time.monotonic()
        with self._lock:
            return [now - start for start in self._started.values()]

    def add(self) -> QueueItem:
        """A reconcile request is made."""
        self.adds.inc()
        self.depth.inc()
        return QueueItem(self)


class QueueItem:
    """One reconcile request: made (:meth:`WorkQueue.add`), started, done."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue
        self.added = time.monotonic()
        self.started: float | None = None
        self.finished = False

    def start(self) -> None:
        """The request's work begins (its resource's lock is held)."""
        if self.started is not None or self.finished:
            return
        queue = self.queue
        self.started = time.monotonic()
        queue.depth.dec()
        queue.latency.observe(self.started - self.added)
        queue.active.inc()
        with queue._lock:
            queue._started[id(self)] = self.started

    def done(self) -> None:
        """The request ended: its work is over, or it was given up before it started (cancelled)."""
        if self.finished:
            return
        self.finished = True
        queue = self.queue
        if self.started is None:
            queue.depth.dec()
            return
        with queue._lock:
            queue._started.pop(id(self), None)
        queue.active.dec()
        queue.work.observe(time.monotonic() - self.started)
