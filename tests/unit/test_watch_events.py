"""What a watch event asks of the controller (Runtime.handle_event), whichever watch delivers it: reconciles by
generation and by our annotations, retries, deletion steps and our finalizer (batchop.controller.deletions)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import kopf

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RUN_NOW, FINALIZER
from batchop.batch.settings import Settings
from batchop.controller import handlers
from batchop.controller.diffbase import NoDiffBase
from batchop.controller.reconcile.outcome import Outcome
from batchop.controller.runtime import Runtime
from tests.unit.test_controller import FakeKube, body
from tests.unit.test_workqueue import until

SYNCED = cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok")


def event(*, generation: int = 1, finalizers: tuple[str, ...] = (FINALIZER,), labels: Mapping[str, str] | None = None,
          **kw: Any) -> dict[str, Any]:
    obj = body(**kw)
    obj["metadata"].update(generation=generation, finalizers=list(finalizers), labels=dict(labels or {}))
    return obj


class Recorder:
    """Stands in for the runtime's reconcile (``outcome``: what each pass returns; None: parked)."""

    def __init__(self, outcome: Outcome | None = None, error: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.outcome, self.error = outcome, error

    async def __call__(self, obj: Mapping[str, Any]) -> Outcome | None:
        self.calls.append(int(obj["metadata"]["generation"]))
        if self.error is not None:
            raise self.error
        return self.outcome


def runtime_with(recorder: Recorder, kube: FakeKube | None = None) -> Runtime:
    runtime = Runtime(Settings(), kube or FakeKube(), storage={})
    runtime.reconcile_or_park = recorder  # type: ignore[method-assign]
    return runtime


async def test_a_reconcile_is_asked_for_each_new_generation_and_our_annotations_only() -> None:
    recorder = Recorder()
    runtime = runtime_with(recorder)
    await runtime.handle_event(event(), None)  # the initial listing: resumed
    await runtime.handle_event(event(status={"scheduleId": "s", "conditions": [SYNCED]}), "MODIFIED")  # status
    await runtime.handle_event(event(labels={"team": "a"}, annotations={"note": "x"}), "MODIFIED")
    assert recorder.calls == [1], "status, labels and other annotations are not the reconcile's inputs"
    await runtime.handle_event(event(generation=2), "MODIFIED")  # an edit of the spec
    await runtime.handle_event(event(generation=2), "MODIFIED")
    assert recorder.calls == [1, 2]
    await runtime.handle_event(event(generation=2, annotations={ANNOTATION_ADOPT: "true"}), "MODIFIED")
    await runtime.handle_event(event(generation=2, annotations={ANNOTATION_ADOPT: "true", ANNOTATION_RUN_NOW: "1"}),
                               "MODIFIED")
    assert recorder.calls == [1, 2, 2, 2]
    await runtime.handle_event(event(generation=2, deleting=True, finalizers=()), "DELETED")
    await runtime.handle_event(event(uid="u2"), "ADDED")  # re-created under the same name: a new resource
    assert recorder.calls == [1, 2, 2, 2, 1]
    await runtime.close()


async def test_a_recoverable_outcome_and_an_unexpected_error_are_tried_again() -> None:
    runtime = runtime_with(Recorder(Outcome(synced=SYNCED, retry_after=30.0, done=False)))
    await runtime.handle_event(event(), "ADDED")
    assert ("ns", "r") in runtime._retries, "retried after the delay the outcome asked for"
    await runtime.close()
    failing = runtime_with(Recorder(error=RuntimeError("boom")))
    await failing.handle_event(event(), "ADDED")
    assert ("ns", "r") in failing._retries, "an unexpected error is retried too"
    await failing.close()
    done = runtime_with(Recorder(Outcome(synced=SYNCED)))
    await done.handle_event(event(), "ADDED")
    assert not done._retries
    await done.close()


async def test_a_schedule_without_our_finalizer_gets_it_back() -> None:
    kube = FakeKube()
    runtime = runtime_with(Recorder(), kube)
    await runtime.handle_event(event(finalizers=()), "ADDED")  # the reconcile adds it before a create
    assert kube.finalizers == []
    await runtime.handle_event(event(finalizers=(), status={"scheduleId": "s"}), "MODIFIED")
    assert kube.finalizers == [f"add {FINALIZER} 7"]
    await runtime.close()


async def test_deletion_steps_run_one_at_a_time_until_done_then_our_finalizer_goes() -> None:
    kube = FakeKube()
    runtime = runtime_with(Recorder(), kube)
    steps: list[str] = []
    gate = asyncio.Event()
    outcomes = [Outcome(synced=SYNCED, retry_after=0.05, done=False), Outcome(synced=SYNCED, done=True)]

    async def step(obj: Mapping[str, Any]) -> Outcome:
        steps.append(obj["metadata"]["resourceVersion"])
        await gate.wait()
        return outcomes.pop(0)

    runtime.deletions._step = step
    deleting = event(deleting=True, status={"scheduleId": "s"})
    await runtime.handle_event(deleting, "MODIFIED")
    newer = copy.deepcopy(deleting)
    newer["metadata"]["resourceVersion"] = "8"
    await runtime.handle_event(newer, "MODIFIED")  # while the first step runs: no second one beside it
    await until(lambda: steps == ["7"])
    gate.set()
    await until(lambda: len(steps) == 2)  # retried after the delay asked for, from the newest body
    assert steps == ["7", "8"]
    await until(lambda: kube.finalizers == [f"remove {FINALIZER} 8"])  # from the newest body seen, no GET
    assert ("ns", "r") not in runtime.deletions
    await runtime.close()


async def test_a_deletion_stops_when_the_resource_is_gone_and_needs_our_finalizer() -> None:
    kube = FakeKube()
    runtime = runtime_with(Recorder(), kube)
    steps: list[int] = []

    async def step(obj: Mapping[str, Any]) -> Outcome:
        steps.append(1)
        return Outcome(synced=SYNCED, retry_after=0.02, done=False)

    runtime.deletions._step = step
    await runtime.handle_event(event(deleting=True, finalizers=("other.dev/keep",)), "MODIFIED")
    assert ("ns", "r") not in runtime.deletions, "without our finalizer or a schedule there is nothing to delete"
    await runtime.handle_event(event(deleting=True, finalizers=("other.dev/keep",), status={"scheduleId": "s"}),
                               "MODIFIED")  # our finalizer removed by hand: the schedule goes while the object lasts
    await until(lambda: len(steps) == 1)
    await runtime.handle_event(event(deleting=True, finalizers=()), "DELETED")
    steps.clear()
    await runtime.handle_event(event(deleting=True), "MODIFIED")
    await until(lambda: len(steps) == 2)  # a step, then its retry
    await runtime.handle_event(event(deleting=True, finalizers=()), "DELETED")
    count = len(steps)
    await asyncio.sleep(0.1)
    assert len(steps) == count and ("ns", "r") not in runtime.deletions
    assert kube.finalizers == []
    await runtime.close()


async def test_an_unexpected_error_in_a_deletion_step_is_retried() -> None:
    runtime = runtime_with(Recorder())
    calls: list[int] = []

    async def step(obj: Mapping[str, Any]) -> Outcome:
        calls.append(1)
        raise RuntimeError("boom")

    runtime.deletions._step = step
    await runtime.handle_event(event(deleting=True), "MODIFIED")
    await until(lambda: calls == [1])
    await until(lambda: ("ns", "r") in runtime.deletions._timers)
    await runtime.close()
    assert not runtime.deletions._timers


async def test_with_batchops_own_watch_kopf_watches_nothing_and_the_watch_runs_from_startup_to_cleanup() -> None:
    from batchop.kube.watch import ResourceWatch, WatchScope

    runtime = Runtime(Settings(), FakeKube(), storage={})

    class Streamer:
        requests = 0

        async def request(self, method: str, path: str) -> dict[str, Any] | None:
            self.requests += 1
            return {"items": [event()], "metadata": {"resourceVersion": "5"}}

        async def stream(self, path: str, *, read_timeout: float) -> Any:
            await asyncio.Event().wait()
            yield {}

    seen: list[tuple[str, str | None]] = []

    async def handle(obj: Mapping[str, Any], event_type: str | None) -> None:
        seen.append((obj["metadata"]["name"], event_type))

    watcher = ResourceWatch(Streamer(), WatchScope(), handle)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime, watcher)
    assert not registry._watching.get_all_handlers(), "kopf's on.event is not registered: kopf watches nothing"
    assert not registry._changing.get_all_handlers()
    settings = kopf.OperatorSettings()
    for handler in registry._activities.get_all_handlers():
        if handler.activity.value == "startup":
            await handler.fn(settings=settings)
    assert settings.persistence.finalizer != FINALIZER, "kopf's settings applied at startup"
    await until(lambda: seen == [("r", None)])
    for handler in registry._activities.get_all_handlers():
        if handler.activity.value == "cleanup":
            await handler.fn()
    assert all(task.done() for task in watcher._tasks) or not watcher._tasks, "the watch stopped at cleanup"


def test_kopf_is_the_watch_only_and_never_touches_our_finalizer() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.persistence.finalizer != FINALIZER
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Runtime(Settings(), FakeKube(), storage={}))
    assert not registry._changing.get_all_handlers(), "no change detection: no create/update/resume/delete"
    assert len(registry._watching.get_all_handlers()) == 1
    storage = NoDiffBase()
    obj = kopf.Body(event(spec={"schedule": {"recurrenceInterval": "P1D"}}))
    patch = kopf.Patch()
    storage.store(body=obj, patch=patch, essence=storage.build(body=obj))
    assert storage.build(body=obj) == {} and storage.fetch(body=obj) is None and not patch
