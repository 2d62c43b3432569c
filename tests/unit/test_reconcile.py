"""Reconcile decisions against a fake gateway, with the real model (batchop.spec)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY
from batchop.batch.gateway import BatchError, classify
from batchop.controller.finalizer import FinalizerHold
from batchop.controller.reconcile.apply import apply
from batchop.controller.reconcile.delete import delete
from batchop.controller.reconcile.ports import Model, default_model
from batchop.controller.reconcile.view import ObjectView
from batchop.controller.tracking import Tracker

UID = "0b8f6a52-uid"


def spec(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {
            "poolInfo": {"poolId": "pool-1"},
            "jobManagerTask": {"id": "main", "commandLine": "/bin/true"},
        },
    }
    out.update(extra)
    return out


def view(**kw: Any) -> ObjectView:
    defaults: dict[str, Any] = {
        "namespace": "team",
        "name": "report",
        "uid": UID,
        "generation": 1,
        "spec": spec(),
        "annotations": {},
        "status": {},
    }
    defaults.update(kw)
    return ObjectView(**defaults)


class FakeGateway:
    """Stores schedules like Batch (read-time defaults, normalised durations) and records every call."""

    def __init__(self) -> None:
        self.schedules: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, BatchError] = {}
        self.etag = 0
        self.no_etag_on_create = False

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise self.fail.pop(op)

    def _stored(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from batchwire import defaults, durations

        out = copy.deepcopy(dict(body))
        out["jobSpecification"] = defaults.apply_job_specification_defaults(out.get("jobSpecification") or {})
        sched = out.get("schedule") or {}
        for key in ("recurrenceInterval", "startWindow"):
            if key in sched:
                sched[key] = durations.normalize(sched[key])
        self.etag += 1
        out["eTag"] = f"0x{self.etag}"
        return out

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None:
        self.calls.append(("get", schedule_id))
        self._check("get")
        found = self.schedules.get(schedule_id.lower())
        return (copy.deepcopy(found), found["eTag"]) if found else None

    async def create_schedule(self, body: Mapping[str, Any]) -> str | None:
        self.calls.append(("create", body["id"]))
        self._check("create")
        if body["id"].lower() in self.schedules:
            raise BatchError("exists", reason="AlreadyExists", terminal=False, status=409, code="JobScheduleExists")
        stored = self._stored(body)
        stored["state"] = "active"
        self.schedules[body["id"].lower()] = stored
        return None if self.no_etag_on_create else str(stored["eTag"])

    async def patch_schedule(self, schedule_id: str, properties: Mapping[str, Any], etag: str | None) -> None:
        self.calls.append(("patch", (schedule_id, sorted(properties), etag)))
        self._check("patch")
        current = self.schedules[schedule_id.lower()]
        if etag and etag != current["eTag"]:
            raise BatchError("moved", reason="Conflict", terminal=False, status=412)
        merged = {**current, **copy.deepcopy(dict(properties))}
        stored = self._stored(merged)
        self.schedules[schedule_id.lower()] = stored

    async def disable_schedule(self, schedule_id: str) -> None:
        self.calls.append(("disable", schedule_id))
        self.schedules[schedule_id.lower()]["state"] = "disabled"

    async def enable_schedule(self, schedule_id: str) -> None:
        self.calls.append(("enable", schedule_id))
        self.schedules[schedule_id.lower()]["state"] = "active"

    async def terminate_schedule(self, schedule_id: str) -> None:
        self.calls.append(("terminate", schedule_id))
        self._check("terminate")
        self.schedules[schedule_id.lower()]["state"] = "terminating"

    async def delete_schedule(self, schedule_id: str) -> None:
        self.calls.append(("delete", schedule_id))
        self.schedules[schedule_id.lower()]["state"] = "deleting"

    def ops(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def model() -> Model:
    return default_model()


async def test_create_with_owner_marks_then_nothing_to_do(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(), gw, model=model)
    assert out.synced["status"] == cond.TRUE and out.synced["reason"] == cond.REASON_SYNCED
    assert out.writes == ["create"]
    assert out.status["scheduleId"] == "team_report"
    stored = gw.schedules["team_report"]
    marks = {m["name"]: m["value"] for m in stored["metadata"]}
    assert marks == {"azurebatch.dev/owner": "team/report", "azurebatch.dev/uid": UID}
    # a second pass against Batch's normalised, defaulted copy writes nothing
    gw.calls.clear()
    again = await apply(view(status=out.status), gw, model=model)
    assert again.writes == [] and gw.ops() == ["get"]


async def test_crash_between_create_and_status_continues_without_duplicate(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(), gw, model=model)  # status never written (crash)
    gw.calls.clear()
    gw.schedules["team_report"]["state"] = "active"
    out = await apply(view(), gw, model=model)  # the re-run after the restart
    assert out.synced["status"] == cond.TRUE
    assert gw.ops()[:2] == ["create", "get"], "no id recorded: create first, Batch's JobScheduleExists answers"
    assert "create" not in out.writes and out.status["scheduleId"] == "team_report"
    assert len(gw.schedules) == 1


async def test_create_race_answered_by_marks(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(), gw, model=model)
    existing = gw.schedules.pop("team_report")

    async def get_then_appear(schedule_id: str) -> Any:
        gw.schedules["team_report"] = existing  # appears between our GET and our POST
        return None

    gw.get_schedule = get_then_appear  # type: ignore[method-assign]
    original = FakeGateway.get_schedule

    async def create(body: Mapping[str, Any]) -> None:
        gw.get_schedule = lambda sid: original(gw, sid)  # type: ignore[method-assign]
        await FakeGateway.create_schedule(gw, body)

    gw.create_schedule = create  # type: ignore[method-assign]
    out = await apply(view(), gw, model=model)
    assert out.synced["status"] == cond.TRUE
    assert len(gw.schedules) == 1


async def test_foreign_schedule_is_terminal_even_with_adopt(model: Model) -> None:
    gw = FakeGateway()
    await apply(
        view(namespace="other", name="thing", uid="other-uid", spec=spec(scheduleId="shared")), gw, model=model
    )
    etag = gw.schedules["shared"]["eTag"]
    out = await apply(
        view(spec=spec(scheduleId="shared"), annotations={ANNOTATION_ADOPT: "true"}), gw, model=model
    )
    assert out.synced["reason"] == "AlreadyExists" and out.terminal
    assert "other/thing" in out.synced["message"]
    assert "scheduleId" not in out.status
    assert gw.schedules["shared"]["eTag"] == etag


async def test_unowned_schedule_adopted_only_when_asked(model: Model) -> None:
    gw = FakeGateway()
    gw.schedules["legacy"] = {
        **gw._stored(
            {
                "id": "legacy",
                "schedule": {"recurrenceInterval": "PT2H"},
                "jobSpecification": {"poolInfo": {"poolId": "p"}},
            }
        ),
        "state": "active",
    }
    refused = await apply(view(spec=spec(scheduleId="legacy")), gw, model=model)
    assert refused.synced["reason"] == "AlreadyExists"
    assert "adopt" in refused.synced["message"]
    adopted = await apply(
        view(spec=spec(scheduleId="legacy"), annotations={ANNOTATION_ADOPT: "true"}), gw, model=model
    )
    assert adopted.synced["status"] == cond.TRUE
    assert "adopt" in adopted.writes
    marks = {m["name"]: m["value"] for m in gw.schedules["legacy"]["metadata"]}
    assert marks["azurebatch.dev/uid"] == UID
    assert gw.schedules["legacy"]["schedule"]["recurrenceInterval"] == "PT1H"


async def test_update_patches_only_changed_properties_with_etag(model: Model) -> None:
    gw = FakeGateway()
    first = await apply(view(), gw, model=model)
    etag = gw.schedules["team_report"]["eTag"]
    gw.calls.clear()
    changed = spec()
    changed["schedule"]["recurrenceInterval"] = "PT02H00M00S"
    out = await apply(view(spec=changed, generation=2, status=first.status), gw, model=model)
    assert gw.calls[-1] == ("patch", ("team_report", ["schedule"], etag))
    assert out.status["observedGeneration"] == 2


async def test_412_is_recoverable(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(), gw, model=model)
    gw.fail["patch"] = BatchError("moved", reason="Conflict", terminal=False, status=412)
    changed = spec(schedule={"recurrenceInterval": "PT3H"})
    out = await apply(view(spec=changed), gw, model=model)
    assert out.synced["reason"] == "Conflict" and out.retry_after is not None


async def test_suspend_and_resume(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(), gw, model=model)
    out = await apply(view(spec=spec(suspend=True)), gw, model=model)
    assert out.writes == ["disable"] and gw.schedules["team_report"]["state"] == "disabled"
    out = await apply(view(spec=spec(suspend=True)), gw, model=model)
    assert out.writes == []
    out = await apply(view(spec=spec(suspend=False)), gw, model=model)
    assert out.writes == ["enable"]


async def test_invalid_spec_sends_no_request(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(spec=spec(schedule={"recurrenceInterval": "PT30S"})), gw, model=model)
    assert out.synced["reason"] == "InvalidSpec" and out.terminal
    assert "spec.schedule.recurrenceInterval" in out.synced["message"]
    assert gw.calls == []


async def test_changed_schedule_id_refused(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(spec=spec(scheduleId="new-id"), status={"scheduleId": "team_report"}), gw, model=model)
    assert out.synced["reason"] == cond.REASON_ID_IMMUTABLE and out.terminal
    assert "team_report" in out.synced["message"] and "new-id" in out.synced["message"]
    assert gw.calls == []


async def test_skip_policy_never_writes(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(annotations={ANNOTATION_RECONCILE_POLICY: "skip"}), gw, model=model)
    assert gw.ops() == ["get"]
    assert out.synced["status"] == cond.UNKNOWN and out.ready and out.ready["reason"] == cond.REASON_NOT_FOUND


async def test_unavailable_is_recoverable_with_retry_after(model: Model) -> None:
    for op, status in (("create", {}), ("get", {"scheduleId": "team_report"})):
        gw = FakeGateway()
        gw.fail[op] = BatchError("busy", reason="Throttled", terminal=False, status=429, retry_after=7)
        out = await apply(view(status=status), gw, model=model)
        assert out.synced["reason"] == "Throttled" and out.retry_after == 7, op


async def test_delete_policy_delete_terminates_deletes_and_waits(model: Model) -> None:
    gw = FakeGateway()
    created = await apply(view(), gw, model=model)
    obj = view(status=created.status)
    step = await delete(obj, gw)
    assert not step.done and step.writes == ["terminate"]
    gw.schedules["team_report"]["state"] = "completed"
    step = await delete(obj, gw)
    assert not step.done and step.writes == ["delete"]
    del gw.schedules["team_report"]
    step = await delete(obj, gw)
    assert step.done


async def test_delete_orphan_strips_marks(model: Model) -> None:
    gw = FakeGateway()
    s = spec(deletionPolicy="Orphan", metadata=[{"name": "team", "value": "x"}])
    created = await apply(view(spec=s), gw, model=model)
    step = await delete(view(spec=s, status=created.status), gw)
    assert step.done and step.writes == ["orphan"]
    assert gw.schedules["team_report"]["metadata"] == [{"name": "team", "value": "x"}]


async def test_delete_releases_at_once_when_nothing_exists(model: Model) -> None:
    gw = FakeGateway()
    assert (await delete(view(), gw)).done and gw.calls == []
    assert (await delete(view(status={"scheduleId": "team_report"}), gw)).done


async def test_delete_waits_while_batch_unreachable(model: Model) -> None:
    gw = FakeGateway()
    created = await apply(view(), gw, model=model)
    gw.fail["get"] = classify(OSError("connection refused"))
    step = await delete(view(status=created.status), gw)
    assert not step.done and step.retry_after
    assert step.synced["reason"] == cond.REASON_DELETION_PENDING
    assert "team_report" in step.synced["message"]


async def test_delete_never_touches_someone_elses_schedule(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(uid="someone-else"), gw, model=model)
    step = await delete(view(status={"scheduleId": "team_report"}), gw)
    assert step.done and "terminate" not in gw.ops()


async def test_force_patches_job_specification_for_sas_renewal(model: Model) -> None:
    gw = FakeGateway()
    await apply(view(), gw, model=model)
    out = await apply(view(), gw, model=model, force=("jobSpecification",))
    assert out.writes == ["patch:jobSpecification"]


async def test_marks_removed_behind_our_back_are_restored_not_treated_as_foreign(model: Model) -> None:
    gw = FakeGateway()
    created = await apply(view(), gw, model=model)
    gw.schedules["team_report"]["metadata"] = []
    out = await apply(view(status=created.status), gw, model=model)
    assert out.synced["status"] == cond.TRUE, out.synced
    assert out.writes == ["patch:metadata"]
    marks = {m["name"]: m["value"] for m in gw.schedules["team_report"]["metadata"]}
    assert marks["azurebatch.dev/uid"] == UID
    # without our status record the same unmarked schedule is not ours
    refused = await apply(view(uid="new-uid"), gw, model=model)
    assert refused.synced["reason"] == "AlreadyExists"


class RecordingHold:
    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.calls: list[str] = []

    async def acquire(self) -> bool:
        self.calls.append("acquire")
        return self.allow

    async def release(self) -> None:
        self.calls.append("release")


async def test_finalizer_is_held_before_the_create_and_released_when_batch_refuses(model: Model) -> None:
    gw = FakeGateway()
    hold = RecordingHold()
    out = await apply(view(), gw, model=model, hold=hold)
    assert hold.calls == ["acquire"] and out.writes == ["create"]
    # a resource already being deleted creates nothing
    gw = FakeGateway()
    gone = RecordingHold(allow=False)
    out = await apply(view(), gw, model=model, hold=gone)
    assert gw.ops() == [] and not out.done
    # Batch refuses the create for good: the finalizer goes again; a recoverable failure keeps it
    gw = FakeGateway()
    gw.fail["create"] = BatchError("bad", reason="InvalidSpec", terminal=True, status=400, code="InvalidPropertyValue")
    hold = RecordingHold()
    out = await apply(view(), gw, model=model, hold=hold)
    assert out.synced["reason"] == "InvalidSpec" and hold.calls == ["acquire", "release"]
    gw.fail["create"] = BatchError("busy", reason="BatchUnavailable", terminal=False, status=503)
    hold = RecordingHold()
    await apply(view(), gw, model=model, hold=hold)
    assert hold.calls == ["acquire"]


class FailingKube:
    """The API server cannot be reached when the finalizer is to be added."""

    async def add_finalizer(self, *_: Any, **__: Any) -> bool:
        raise OSError("connection refused")


async def test_no_create_without_the_finalizer_when_the_api_server_fails(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(), gw, model=model, hold=FinalizerHold(FailingKube(), view()))
    assert "create" not in gw.ops(), "created a schedule that a deletion in the same moment would orphan"
    assert out.synced["reason"] == cond.REASON_KUBERNETES_UNAVAILABLE and out.retry_after and not out.done


async def test_new_resource_creates_first_and_lets_go_of_a_foreign_collision(model: Model) -> None:
    gw = FakeGateway()
    hold = RecordingHold()
    out = await apply(view(), gw, model=model, hold=hold)
    assert gw.ops() == ["create"] and out.writes == ["create"]  # no GET before the create, nor after it
    other = view(uid="someone-else")
    hold = RecordingHold()
    gw.calls.clear()
    out = await apply(other, gw, model=model, hold=hold)
    assert gw.ops() == ["create", "get"] and out.synced["reason"] == "AlreadyExists"
    assert hold.calls == ["acquire", "release"], "a finalizer stayed on a resource that owns nothing in Batch"


async def test_locks_of_deleted_resources_are_dropped() -> None:
    """One lock per resource ever seen would grow with churn: a DELETED event drops it, unless a reconcile
    or delete still holds it, which then drops it when it ends."""
    import asyncio

    tracker = Tracker()
    key = ("ns", "gone")
    tracker.observe({"metadata": {"namespace": "ns", "name": "gone", "uid": "u1"}}, {})
    async with tracker.locked(key):
        pass
    assert key in tracker.locks, "the lock of a tracked resource is kept"
    tracker.forget(key)
    assert key not in tracker.locks

    entered, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with tracker.locked(key):
            entered.set()
            await release.wait()

    second = asyncio.Event()

    async def waiter() -> None:
        async with tracker.locked(key):
            await second.wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is queued on the lock
    tracker.forget(key)
    assert key in tracker.locks, "dropped a lock that a running reconcile holds"
    lock = tracker.locks[key]
    release.set()
    await task  # the holder ended; the waiter holds the lock now: it must stay the one lock for the key
    assert tracker.locks.get(key) is lock and lock.locked()
    second.set()
    await waiting
    assert key not in tracker.locks and not tracker.lock_users


async def test_created_schedule_is_not_compared_and_its_etag_is_known_in_sync(model: Model) -> None:
    """The pass that creates a schedule does not compare it with the body it was made from; the ETag under
    which a pass left the schedule equal to the desired body is handed to the poller's drift check, and none
    after a PATCH or an enable/disable (the schedule changed after the read)."""
    from dataclasses import replace

    from batchop.controller.runtime import in_sync_etag

    compared: list[str] = []

    def counting(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
        compared.append(str(desired.get("id")))
        return model.changed_properties(desired, observed)

    spy = replace(model, changed_properties=counting)
    gw = FakeGateway()
    created = await apply(view(), gw, model=spy)
    assert created.writes == ["create"] and compared == []
    assert in_sync_etag(created) == gw.schedules["team_report"]["eTag"]

    again = await apply(view(status=created.status), gw, model=spy)
    assert again.writes == [] and compared == ["team_report"]
    assert in_sync_etag(again) == gw.schedules["team_report"]["eTag"]

    crashed = await apply(view(), gw, model=spy)  # no id recorded, the schedule exists: JobScheduleExists
    assert "create" not in crashed.writes and len(compared) == 2

    changed = spec(schedule={"recurrenceInterval": "PT2H"})
    patched = await apply(view(spec=changed, generation=2, status=created.status), gw, model=spy)
    assert patched.writes == ["patch:schedule"] and in_sync_etag(patched) is None
    suspended = await apply(view(spec=spec(suspend=True, schedule={"recurrenceInterval": "PT2H"}),
                                 status=created.status), gw, model=spy)
    assert suspended.writes == ["disable"] and in_sync_etag(suspended) is None
    gw.fail["get"] = BatchError("down", reason=cond.REASON_BATCH_UNAVAILABLE, terminal=False, status=503)
    failed = await apply(view(status=created.status), gw, model=spy)
    assert failed.synced["status"] != cond.TRUE and in_sync_etag(failed) is None


async def test_a_new_schedule_is_taken_from_the_create_answer_not_read_back(model: Model) -> None:
    """The ``201 Created`` carries the ETag: the pass reports the body it sent, ``active``, under that ETag (the
    drift check's in-sync mark), with no GET; an answer without an ETag is followed by one."""
    gw = FakeGateway()
    out = await apply(view(), gw, model=model)
    assert gw.ops() == ["create"]
    stored = gw.schedules["team_report"]
    assert out.observed is not None
    assert out.observed["state"] == "active" and out.observed["eTag"] == stored["eTag"]
    assert out.observed["metadata"] == stored["metadata"], "the owner marks the create sent"
    assert out.synced["status"] == cond.TRUE and out.status["scheduleId"] == "team_report"

    bare = FakeGateway()
    bare.no_etag_on_create = True
    out = await apply(view(), bare, model=model)
    assert bare.ops() == ["create", "get"] and out.observed is not None
    assert out.observed["eTag"] == bare.schedules["team_report"]["eTag"]


async def test_a_suspended_new_resource_is_created_then_disabled_without_a_read(model: Model) -> None:
    gw = FakeGateway()
    out = await apply(view(spec=spec(suspend=True)), gw, model=model)
    assert gw.ops() == ["create", "disable"] and out.writes == ["create", "disable"]
    assert gw.schedules["team_report"]["state"] == "disabled"
