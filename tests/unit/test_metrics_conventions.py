"""The controller-runtime, workqueue and REST client metrics (batchop.observability.conventions): results from
outcomes, the queue fed by the controller's real per-resource locks, the REST counter over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from batchop.api import conditions as cond
from batchop.controller.tracking import Tracker
from batchop.observability import metrics
from batchop.observability.conventions import (
    CONTROLLER,
    ERROR,
    RECONCILE_BUCKETS,
    REQUEUE_AFTER,
    RESULTS,
    SUCCESS,
    WORKQUEUE_BUCKETS,
    result_of,
)
from batchop.observability.metrics import Metrics

CTRL = {"controller": CONTROLLER}
QUEUE = {"name": CONTROLLER, "controller": CONTROLLER}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float:
    return registry.get_sample_value(metric, labels) or 0.0


def synced(status: str, reason: str) -> dict[str, str]:
    return {"type": cond.SYNCED, "status": status, "reason": reason}


@pytest.mark.parametrize(("status", "reason", "retry", "expected"), [
    (cond.TRUE, cond.REASON_SYNCED, None, (SUCCESS, False)),
    (cond.UNKNOWN, cond.REASON_SKIPPED, None, (SUCCESS, False)),
    (cond.FALSE, cond.REASON_INVALID_SPEC, None, (ERROR, True)),  # terminal: only a spec change mends it
    (cond.FALSE, cond.REASON_THROTTLED, 30.0, (ERROR, False)),  # retried after Batch's Retry-After
    (cond.FALSE, cond.REASON_DELETING, 1.0, (REQUEUE_AFTER, False)),  # a deletion waiting for Batch: planned
    (cond.TRUE, cond.REASON_SYNCED, 5.0, (REQUEUE_AFTER, False)),
])
def test_result_of_outcomes(status: str, reason: str, retry: float | None, expected: tuple[str, bool]) -> None:
    assert result_of(status, reason, retry) == expected


def test_series_exist_from_the_start_as_controller_runtime_initialises_them(m: Metrics,
                                                                            registry: CollectorRegistry) -> None:
    for result in RESULTS:
        assert registry.get_sample_value("controller_runtime_reconcile_total", {**CTRL, "result": result}) == 0
    for name in ("controller_runtime_reconcile_errors_total", "controller_runtime_terminal_reconcile_errors_total",
                 "controller_runtime_active_workers", "controller_runtime_reconcile_time_seconds_count"):
        assert registry.get_sample_value(name, CTRL) == 0, name
    assert registry.get_sample_value("controller_runtime_max_concurrent_reconciles", CTRL) == float("inf")
    for name in ("workqueue_adds_total", "workqueue_retries_total", "workqueue_unfinished_work_seconds",
                 "workqueue_longest_running_processor_seconds", "workqueue_queue_duration_seconds_count",
                 "workqueue_work_duration_seconds_count"):
        assert registry.get_sample_value(name, QUEUE) == 0, name
    assert registry.get_sample_value("workqueue_depth", {**QUEUE, "priority": ""}) == 0
    # controller-runtime's buckets, exactly
    les = [s.labels["le"] for f in registry.collect() if f.name == "controller_runtime_reconcile_time_seconds"
           for s in f.samples if s.name.endswith("_bucket")]
    assert [float(le) for le in les[:-1]] == [float(b) for b in RECONCILE_BUCKETS] and les[-1] == "+Inf"
    les = [s.labels["le"] for f in registry.collect() if f.name == "workqueue_work_duration_seconds"
           for s in f.samples if s.name.endswith("_bucket")]
    assert [float(le) for le in les[:-1]] == list(WORKQUEUE_BUCKETS)


def test_reconcile_timer_counts_results_errors_terminal_and_retries(m: Metrics, registry: CollectorRegistry) -> None:
    with m.reconcile_timer("reconcile"):
        pass
    with m.reconcile_timer("reconcile") as run:
        run.settle(synced(cond.FALSE, cond.REASON_INVALID_SPEC), None)
    with m.reconcile_timer("reconcile") as run:
        run.settle(synced(cond.FALSE, cond.REASON_THROTTLED), 10.0)
    with m.reconcile_timer("delete") as run:
        run.settle(synced(cond.FALSE, cond.REASON_DELETING), 1.0)
    with pytest.raises(RuntimeError), m.reconcile_timer("reconcile"):
        raise RuntimeError("boom")

    def total(result: str) -> float:
        return value(registry, "controller_runtime_reconcile_total", **CTRL, result=result)

    assert (total(SUCCESS), total(ERROR), total(REQUEUE_AFTER), total("requeue")) == (1, 3, 1, 0)
    assert value(registry, "controller_runtime_reconcile_errors_total", **CTRL) == 3
    assert value(registry, "controller_runtime_terminal_reconcile_errors_total", **CTRL) == 1
    # the throttled one and the exception are retried; the invalid spec is not
    assert value(registry, "workqueue_retries_total", **QUEUE) == 2
    assert value(registry, "controller_runtime_reconcile_time_seconds_count", **CTRL) == 5
    # the batchop_* families keep their meaning beside them
    assert value(registry, "batchop_reconcile_duration_seconds_count", handler="reconcile") == 4
    assert value(registry, "batchop_reconcile_errors_total", handler="reconcile", error="RuntimeError") == 1


async def test_a_cancelled_reconcile_counts_in_no_result(m: Metrics, registry: CollectorRegistry) -> None:
    async def body() -> None:
        with m.reconcile_timer("reconcile"):
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sum(value(registry, "controller_runtime_reconcile_total", **CTRL, result=r) for r in RESULTS) == 0


def sample(metric: str, /, **labels: str) -> float:
    """A sample of the operator's own metrics (the default registry the controller's hooks feed)."""
    return REGISTRY.get_sample_value(metric, {**QUEUE, **labels}) or 0.0


async def test_the_trackers_locks_are_the_queue() -> None:
    """Two reconciles of one resource and one of another through the controller's real Tracker: the second of
    the same resource waits (depth 1, a queue duration), the other resource runs at once."""
    tracker = Tracker(max_in_flight=8)
    assert REGISTRY.get_sample_value("controller_runtime_max_concurrent_reconciles", CTRL) == 8
    adds, waited = sample("workqueue_adds_total"), sample("workqueue_queue_duration_seconds_sum")
    worked = sample("workqueue_work_duration_seconds_count")
    depth = sample("workqueue_depth", priority="")
    active = REGISTRY.get_sample_value("controller_runtime_active_workers", CTRL) or 0.0
    first_in, release = asyncio.Event(), asyncio.Event()

    async def hold(key: tuple[str, str]) -> None:
        async with tracker.locked(key):
            first_in.set()
            await release.wait()

    first = asyncio.create_task(hold(("ns", "a")))
    await first_in.wait()
    second = asyncio.create_task(hold(("ns", "a")))
    other = asyncio.create_task(hold(("ns", "b")))
    for _ in range(5):
        await asyncio.sleep(0.02)
    assert sample("workqueue_adds_total") - adds == 3
    assert sample("workqueue_depth", priority="") - depth == 1  # the second request for ns/a waits for its lock
    assert REGISTRY.get_sample_value("controller_runtime_active_workers", CTRL) == active + 2
    assert sample("workqueue_longest_running_processor_seconds") >= 0.08
    assert sample("workqueue_unfinished_work_seconds") >= sample("workqueue_longest_running_processor_seconds")
    release.set()
    await asyncio.gather(first, second, other)
    assert sample("workqueue_depth", priority="") == depth
    assert REGISTRY.get_sample_value("controller_runtime_active_workers", CTRL) == active
    assert sample("workqueue_work_duration_seconds_count") - worked == 3
    assert sample("workqueue_queue_duration_seconds_sum") - waited >= 0.08  # the second one's wait


async def test_a_request_given_up_while_waiting_leaves_the_queue(m: Metrics, registry: CollectorRegistry) -> None:
    item = m.controller.queue.add()
    assert value(registry, "workqueue_depth", **QUEUE, priority="") == 1
    item.done()
    item.done()  # idempotent
    assert value(registry, "workqueue_depth", **QUEUE, priority="") == 0
    assert value(registry, "controller_runtime_active_workers", **CTRL) == 0
    assert value(registry, "workqueue_work_duration_seconds_count", **QUEUE) == 0


@pytest.fixture
async def api_server() -> AsyncIterator[str]:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status"})

    async def missing(_request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status"}, status=404)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_patch("/ok", ok)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_rest_client_requests_count_code_method_and_host(m: Metrics, registry: CollectorRegistry,
                                                               api_server: str) -> None:
    async with aiohttp.ClientSession(trace_configs=[metrics.rest_client_trace(m)]) as session:
        for method, path in (("GET", "/ok"), ("GET", "/ok"), ("PATCH", "/ok"), ("GET", "/missing")):
            async with session.request(method, f"http://{api_server}{path}") as response:
                await response.read()
        refused = f"127.0.0.1:{closed_port()}"
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://{refused}/ok")

    def count(code: str, method: str, host: str) -> float:
        return value(registry, "rest_client_requests_total", code=code, method=method, host=host)

    assert count("200", "GET", api_server) == 2
    assert count("200", "PATCH", api_server) == 1
    assert count("404", "GET", api_server) == 1
    assert count("<error>", "GET", refused) == 1


def test_bound_children_are_the_metrics_own_and_looked_up_once() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from batchop.observability.conventions import Children

    registry = CollectorRegistry()
    counter = Counter("things", "x", ["a", "b"], registry=registry)
    children = Children(counter)
    children("1", "2").inc()
    children("1", "2").inc()
    children("1", "3").inc()
    assert children("1", "2") is counter.labels("1", "2")
    assert registry.get_sample_value("things_total", {"a": "1", "b": "2"}) == 2
    assert registry.get_sample_value("things_total", {"a": "1", "b": "3"}) == 1
