"""The work queue of reconciles that found no free slot (batchop.controller.workqueue), on its own and in the
runtime: parked as small views, one entry per resource, run in order, dropped when the resource goes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from batchop.api import conditions as cond
from batchop.batch.settings import Settings
from batchop.controller.reconcile.view import ObjectView
from batchop.controller.runtime import Runtime
from batchop.controller.workqueue import Parked, WorkQueue
from tests.unit.test_controller import FakeKube, body


def view(name: str, generation: int = 1, **spec: Any) -> ObjectView:
    return ObjectView("ns", name, f"uid-{name}", generation, spec)  # type: ignore[arg-type]


async def until(condition: Any, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s")
        await asyncio.sleep(0.001)


async def test_a_resource_is_queued_once_with_its_newest_view_and_keeps_its_place() -> None:
    gate = asyncio.Event()
    ran: list[tuple[str, int, tuple[str, ...]]] = []

    async def run(parked: Parked) -> None:
        await gate.wait()
        ran.append((parked.view.name, parked.view.generation, parked.force))
        parked.request.done()

    queue = WorkQueue(run, workers=1)
    queue.put(view("a"))
    await until(lambda: queue.holds(("ns", "a")) and len(queue) == 0)  # a is running (waiting on the gate)
    queue.put(view("b", 1), ("runnow",))
    queue.put(view("c"))
    queue.put(view("b", 2), ("adopt",))  # b keeps its place before c, with the newer view and both forces
    queue.put(view("a", 2))  # a again while its first pass runs: queued behind it, not beside it
    assert len(queue) == 3
    gate.set()
    await until(lambda: len(ran) == 4)
    assert ran == [("a", 1, ()), ("b", 2, ("runnow", "adopt")), ("c", 1, ()), ("a", 2, ())]
    assert not queue.holds(("ns", "a"))
    await queue.close()


async def test_drain_tasks_are_bounded_and_a_failure_does_not_stop_them() -> None:
    running = 0
    peak = 0
    done: list[str] = []

    async def run(parked: Parked) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        if parked.view.name == "r3":
            raise RuntimeError("boom")
        done.append(parked.view.name)

    queue = WorkQueue(run, workers=3)
    for i in range(10):
        queue.put(view(f"r{i}"))
    await until(lambda: len(done) == 9)
    assert peak == 3 and "r3" not in done
    await queue.close()


async def test_a_dropped_resource_is_not_run() -> None:
    gate = asyncio.Event()
    ran: list[str] = []

    async def run(parked: Parked) -> None:
        await gate.wait()
        ran.append(parked.view.name)

    queue = WorkQueue(run, workers=1)
    queue.put(view("a"))
    queue.put(view("b"))
    queue.drop(("ns", "b"))
    gate.set()
    await until(lambda: ran == ["a"])
    await asyncio.sleep(0.01)
    assert ran == ["a"] and len(queue) == 0
    await queue.close()


async def test_the_runtime_parks_when_no_slot_is_free_and_runs_it_when_one_is() -> None:
    kube = FakeKube({("ns", "r"): body()})
    runtime = Runtime(Settings(), kube, storage={})  # no operator default account: a pass is a status write
    runtime.tracker.slots = asyncio.Semaphore(0)  # every slot busy
    runtime.observe(body(), "ADDED")
    assert await runtime.reconcile_or_park(body()) is None
    assert runtime.queue.holds(("ns", "r")) and kube.patches == []
    runtime.tracker.slots.release()  # a slot frees: the parked pass runs from the queue
    await until(lambda: bool(kube.patches))
    assert kube.patches[-1]["conditions"][0]["reason"] == cond.REASON_ACCOUNT_NOT_CONFIGURED
    await until(lambda: not runtime.queue.holds(("ns", "r")))
    assert ("ns", "r") in runtime._retries, "a recoverable outcome is retried after the delay it asks for"
    outcome = await runtime.reconcile_or_park(body())  # a slot is free and nothing queued: at once
    assert outcome is not None and outcome.retry_after is not None
    await runtime.close()
    assert not runtime._retries


async def test_the_runtime_skips_a_parked_pass_that_is_stale_or_gone() -> None:
    kube = FakeKube({("ns", "r"): body()})
    runtime = Runtime(Settings(), kube, storage={})
    runtime.tracker.slots = asyncio.Semaphore(0)
    runtime.observe(body(), "ADDED")
    assert await runtime.reconcile_or_park(body()) is None
    newer = body()
    newer["metadata"]["generation"] = 2
    runtime.observe(newer, "MODIFIED")  # a newer spec seen, its own pass not parked yet: the old one is stale
    runtime.tracker.slots.release()
    await until(lambda: not runtime.queue.holds(("ns", "r")))
    assert kube.patches == []
    runtime.tracker.slots = asyncio.Semaphore(0)
    assert await runtime.reconcile_or_park(newer) is None
    runtime.observe(newer, "DELETED")  # gone: dropped
    runtime.tracker.slots.release()
    await asyncio.sleep(0.02)
    assert kube.patches == [] and not runtime.queue.holds(("ns", "r"))
    await runtime.close()


async def test_a_retry_reads_the_object_afresh_and_reconciles_it() -> None:
    kube = FakeKube({("ns", "r"): body()})
    runtime = Runtime(Settings(), kube, storage={})
    runtime.observe(body(), "ADDED")
    runtime._retry_later(("ns", "r"), 0.01)
    await until(lambda: bool(kube.patches))
    assert kube.patches[-1]["conditions"][0]["reason"] == cond.REASON_ACCOUNT_NOT_CONFIGURED
    await runtime.close()
