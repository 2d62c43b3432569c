"""The runtime's parts, each on its own against fakes: tracking, Events, outcome writing, SAS bookkeeping, retry
backoff, drift repair, orphan clean-up, pollers, and the runtime composing them (no Batch, no API server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY, ANNOTATION_RUN_NOW, FINALIZER
from batchop.batch.credentials import SecretSource
from batchop.batch.gateway import BatchError
from batchop.batch.settings import Settings
from batchop.controller import blobs
from batchop.controller.cleanup import OrphanCleanup
from batchop.controller.events import EventPoster
from batchop.controller.finalizer import FinalizerHold
from batchop.controller.outcomes import OutcomeWriter, mirror_created
from batchop.controller.pollers import Pollers
from batchop.controller.reconcile.outcome import Outcome
from batchop.controller.reconcile.view import ObjectView
from batchop.controller.retry import MAX_BACKOFF, Repairer, RetryScheduler
from batchop.controller.runtime import Runtime
from batchop.controller.status import EventSpec
from batchop.controller.tracking import Tracked, Tracker
from batchop.kube.status_writer import StatusWriter


def body(*, uid: str = "u1", annotations: Mapping[str, str] | None = None, deleting: bool = False,
         spec: Mapping[str, Any] | None = None, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ns", "name": "r", "uid": uid, "generation": 1, "resourceVersion": "7",
                            "annotations": dict(annotations or {})}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": dict(spec or {}), "status": dict(status or {})}


def view(**kw: Any) -> ObjectView:
    return ObjectView.from_body(body(**kw))


class FakeKube:
    """The Kubernetes calls of the runtime, recorded."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = objects if objects is not None else {}
        self.events: list[tuple[str, str, str]] = []
        self.patches: list[dict[str, Any]] = []
        self.finalizers: list[str] = []
        self.secrets: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
        self.closed = False

    async def get_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        self.patches.append(dict(patch))
        return {} if (namespace, name) in self.objects else None

    async def add_finalizer(self, namespace: str, name: str, uid: str, finalizer: str, *,
                            seen: Mapping[str, Any] | None = None) -> bool:
        self.finalizers.append(f"add {finalizer} {(seen or {}).get('resourceVersion')}")
        return True

    async def remove_finalizer(self, namespace: str, name: str, uid: str, finalizer: str, *,
                               seen: Mapping[str, Any] | None = None) -> None:
        self.finalizers.append(f"remove {finalizer}" + (f" {seen.get('resourceVersion')}" if seen else ""))

    async def post_event(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        return self.secrets.get((namespace, name))

    async def close(self) -> None:
        self.closed = True


# -- tracking ----------------------------------------------------------------------------------------------------


def test_tracker_reports_changed_adopt_and_policy_annotations_only_after_the_first_event() -> None:
    tracker = Tracker()
    assert not tracker.observe(body(), {})  # first sight: a new generation, which handle_event reconciles
    assert not tracker.observe(body(), {})
    assert tracker.observe(body(annotations={ANNOTATION_ADOPT: "true"}), {})
    entry = tracker.get(("ns", "r"))
    assert entry is not None and entry.adopt
    assert tracker.observe(body(annotations={ANNOTATION_ADOPT: "true", ANNOTATION_RECONCILE_POLICY: "skip"}), {})
    assert entry.policy == "skip"
    # a new object under the same name starts over, with the Synced reason its status shows
    synced = cond.make(cond.SYNCED, cond.FALSE, "AlreadyExists", "taken")
    assert not tracker.observe(body(uid="u2"), {"conditions": [synced], "scheduleId": "s"})
    renewed = tracker.get(("ns", "r"))
    assert renewed is not entry and renewed is not None
    assert renewed.synced_reason == "AlreadyExists" and renewed.schedule_id == "s" and not renewed.adopt


async def test_tracker_marks_the_resource_busy_while_locked() -> None:
    tracker = Tracker()
    tracker.observe(body(), {})
    async with tracker.locked(("ns", "r")) as entry:
        assert entry is not None and entry.busy
    assert not entry.busy and entry.version == 2
    async with tracker.locked(("ns", "unseen")) as nothing:
        assert nothing is None


# -- Events and outcomes -------------------------------------------------------------------------------------------


async def test_events_per_write_and_a_warning_only_for_a_new_synced_failure() -> None:
    kube = FakeKube()
    events = EventPoster(kube)
    await events.for_writes("ns", "r", "u1", ["create", "patch:schedule,metadata", "runnow:j-1 (state active)"], "s")
    assert [(r, m) for _, r, m in kube.events] == [
        ("Created", "created Batch schedule s"),
        ("Updated", "updated Batch schedule s (schedule,metadata); later jobs use the change"),
        ("RunNow", f"started job j-1 (state active) now from Batch schedule s ({ANNOTATION_RUN_NOW})"),
    ]
    kube.events.clear()
    failed = cond.make(cond.SYNCED, cond.FALSE, "Throttled", "slow down")
    await events.for_synced("ns", "r", "u1", {}, failed)
    await events.for_synced("ns", "r", "u1", failed, failed)  # same failure again: no second Warning
    await events.for_synced("ns", "r", "u1", {}, cond.make(cond.SYNCED, cond.FALSE, cond.REASON_DELETING, "x"))
    await events.for_synced("ns", "r", "u1", {}, cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok"))
    assert kube.events == [("Warning", "Throttled", "slow down")]


async def test_outcome_writer_patches_status_records_the_reason_and_posts_events() -> None:
    kube = FakeKube({("ns", "r"): body()})
    writer = StatusWriter(kube)
    outcomes = OutcomeWriter(writer, EventPoster(kube))
    entry = Tracked("ns", "r", "u1", 1, "e", None, retry_delay=60.0)
    ok = Outcome(synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok"), writes=["create"],
                 schedule_id="s")
    ok.status["scheduleId"] = "s"
    await outcomes.write(view(), ok, entry)
    assert kube.patches[0]["scheduleId"] == "s"
    # nothing observed in Batch yet: Ready Unknown (derived by the writer) beside Synced
    conditions = {c["type"]: c for c in kube.patches[0]["conditions"]}
    assert conditions["Synced"]["status"] == "True" and conditions["Ready"]["status"] == "Unknown"
    assert conditions["Reconciling"]["status"] == "True" and conditions["Stalled"]["status"] == "False"
    assert entry.synced_reason == cond.REASON_SYNCED and entry.retry_delay == 0.0
    assert [r for _, r, _ in kube.events] == ["Created"]
    await outcomes.write(view(), ok, entry)
    assert len(kube.patches) == 1, "an unchanged status was patched again"


async def test_status_writer_keeps_copies_of_its_own_and_prunes_nulls_outside_arrays() -> None:
    """The writer's known status shares nothing mutable with the fields given to it, an update leaves the
    status known before it as it was, and None members are dropped from objects but kept inside arrays
    (as the poller builds them, so an unchanged observation compares equal)."""
    kube = FakeKube({("ns", "r"): body()})
    writer = StatusWriter(kube)
    writer.seed("ns", "r", {"scheduleId": "s", "recentJob": {"id": "j1", "state": "active"}})
    before = writer.known("ns", "r")
    assert before is not None
    jobs = [{"id": "j1", "result": None}]
    recent = {"id": "j1", "state": "completed", "executionInfo": {"endTime": None, "poolId": "p"}}
    assert await writer.update("ns", "r", {"recentJob": recent, "recentJobs": jobs, "scheduleId": None})
    after = writer.known("ns", "r")
    assert after is not None and after is not before
    assert before == {"scheduleId": "s", "recentJob": {"id": "j1", "state": "active"}}
    assert after == {"recentJob": {"id": "j1", "state": "completed", "executionInfo": {"poolId": "p"}},
                     "recentJobs": [{"id": "j1", "result": None}]}
    recent["state"], jobs[0]["id"] = "mutated", "mutated"
    assert after["recentJob"]["state"] == "completed" and after["recentJobs"][0]["id"] == "j1"
    assert kube.patches[-1]["recentJob"]["executionInfo"] == {"poolId": "p"}
    kube.patches[-1]["recentJobs"][0]["id"] = "mutated-patch"
    assert after["recentJobs"][0]["id"] == "j1"
    assert not await writer.update("ns", "r", {"recentJobs": [{"id": "j1", "result": None}]}), "nothing changed"


class HookedKube(FakeKube):
    """A :class:`FakeKube` that awaits ``hook(patch)`` before recording each status patch."""

    def __init__(self, hook: Callable[[Mapping[str, Any]], Awaitable[None]]) -> None:
        super().__init__({("ns", "r"): body()})
        self.hook = hook

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        await self.hook(patch)
        return await super().patch_status(namespace, name, patch)


def first_pass_outcomes(kube: FakeKube, delay: float) -> OutcomeWriter:
    """An outcome writer for a resource seen with an empty status (its first pass), marks after ``delay``."""
    writer = StatusWriter(kube)
    writer.seed("ns", "r", {})
    return OutcomeWriter(writer, EventPoster(kube), first_mark_delay=delay)


async def test_a_quick_first_pass_writes_ready_in_its_own_status_patch_only() -> None:
    kube = FakeKube({("ns", "r"): body()})
    outcomes = first_pass_outcomes(kube, 0.2)
    outcomes.begin(view())
    ok = Outcome(synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok"), schedule_id="s")
    await outcomes.write(view(), ok, None)
    await asyncio.sleep(0.3)  # past the delay: the settled mark must not fire after all
    assert len(kube.patches) == 1, kube.patches
    assert {c["type"] for c in kube.patches[0]["conditions"]} >= {"Ready", "Synced"}


async def test_a_slow_first_pass_shows_ready_unknown_before_it_reports() -> None:
    patched = asyncio.Event()

    async def seen(_: Mapping[str, Any]) -> None:
        patched.set()

    kube = HookedKube(seen)
    outcomes = first_pass_outcomes(kube, 0.01)
    outcomes.begin(view())
    outcomes.begin(view())  # a second begin for the same pending pass adds no second mark
    await asyncio.wait_for(patched.wait(), 5)
    first = {c["type"]: c["status"] for c in kube.patches[0]["conditions"]}
    assert first["Ready"] == "Unknown" and first["Reconciling"] == "True" and "Synced" not in first
    failed = Outcome(synced=cond.make(cond.SYNCED, cond.FALSE, "BatchUnavailable", "down"), retry_after=5.0,
                     done=False)
    await outcomes.write(view(), failed, None)
    assert len(kube.patches) == 2
    # a resource that has a Ready already gets no mark
    outcomes.begin(view())
    await asyncio.sleep(0.05)
    assert len(kube.patches) == 2


async def test_a_mark_already_on_the_wire_lands_before_the_pass_writes() -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def slow_mark(patch: Mapping[str, Any]) -> None:
        synced = any(c["type"] == "Synced" for c in patch.get("conditions", []))
        if not synced:
            await release.wait()
        order.append("outcome" if synced else "mark")

    kube = HookedKube(slow_mark)
    outcomes = first_pass_outcomes(kube, 0.0)
    outcomes.begin(view())
    await asyncio.sleep(0.05)  # the mark has started and waits on the API server
    ok = Outcome(synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok"), schedule_id="s")
    writing = asyncio.create_task(outcomes.write(view(), ok, None))
    await asyncio.sleep(0.05)
    assert order == [], "the pass wrote while the mark was still on the wire"
    release.set()
    await writing
    assert order == ["mark", "outcome"]


def test_a_create_folds_the_schedule_state_into_the_same_status_write() -> None:
    outcome = Outcome(synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED), writes=["create"],
                      observed={"id": "s", "state": "active", "executionInfo": {"nextRunTime": "2026-01-01T01:00:00Z"}})
    outcome.status["scheduleId"] = "s"
    entry = Tracked("ns", "r", "u1", 1, "e", None)
    mirror_created(view(), outcome, entry)
    assert outcome.status["state"] == "active" and outcome.status["nextRunTime"] == "2026-01-01T01:00:00Z"
    assert outcome.ready is not None and outcome.ready["reason"] == cond.REASON_ACTIVE
    assert entry.last_sync is not None and outcome.status["lastSyncTime"]


# -- SAS -----------------------------------------------------------------------------------------------------------


def test_status_sas_says_when_the_sas_in_batch_expire() -> None:
    fresh: dict[str, Any] = {"sas": {"expiresAt": "new"}}
    blobs.kept_sas({"sas": {"expiresAt": "old"}}, fresh, ["patch:schedule"])
    assert fresh["sas"] == {"expiresAt": "old"}, "Batch still holds the SAS minted before"
    fresh = {"sas": {"expiresAt": "new"}}
    blobs.kept_sas({}, fresh, [])
    assert "sas" not in fresh
    for writes in (["create"], ["patch:jobSpecification"]):
        fresh = {"sas": {"expiresAt": "new"}}
        blobs.kept_sas({"sas": {"expiresAt": "old"}}, fresh, writes)
        assert fresh["sas"] == {"expiresAt": "new"}


def test_renewal_is_due_when_the_sas_could_expire_under_the_next_job() -> None:
    now = datetime.now(UTC)
    schedule = {"executionInfo": {"nextRunTime": (now + timedelta(hours=1)).isoformat()},
                "jobSpecification": {"constraints": {"maxWallClockTime": "PT1H"}}}
    soon = {"sas": {"expiresAt": (now + timedelta(hours=1)).isoformat()}}
    later = {"sas": {"expiresAt": (now + timedelta(days=3)).isoformat()}}
    assert blobs.renewal_due(soon, schedule)
    assert not blobs.renewal_due(later, schedule)
    assert not blobs.renewal_due({}, schedule) and not blobs.renewal_due(None, schedule)


def test_storage_defaults_are_the_two_operator_settings_only() -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": "c", "BATCHOP_STORAGE_URL": "u", "AZURE_STORAGE_OTHER": "x", "HOME": "/"}
    assert blobs.storage_defaults(env) == {"AZURE_STORAGE_CONNECTION_STRING": "c", "BATCHOP_STORAGE_URL": "u"}


async def test_blob_resolver_without_references_reads_nothing_and_names_a_missing_secret() -> None:
    kube = FakeKube()
    resolver = blobs.BlobResolver(SecretSource(kube), {})
    plain = {"jobManagerTask": {"id": "m", "commandLine": "true"}}
    resolved, expires = await resolver(view(), plain, "s")
    assert resolved == plain and resolved is not plain and expires is None
    with_blob = {"jobManagerTask": {"id": "m", "commandLine": "true",
                                    "resourceFiles": [{"blob": {"container": "input", "path": "a.txt"}}]}}
    storage = {"storage": {"accountUrl": "https://acct.blob.core.windows.net",
                           "credentialsSecretRef": {"name": "storage"}}}
    with pytest.raises(BatchError) as raised:
        await resolver(view(spec=storage), with_blob, "s")
    assert raised.value.reason == cond.REASON_CREDENTIALS_NOT_FOUND and not raised.value.terminal
    assert "ns/storage" in raised.value.message


# -- finalizer -----------------------------------------------------------------------------------------------------


async def test_finalizer_hold_adds_with_the_seen_version_and_removes() -> None:
    kube = FakeKube()
    hold = FinalizerHold(kube, view())
    assert await hold.acquire()
    await hold.release()
    assert kube.finalizers == [f"add {FINALIZER} 7", f"remove {FINALIZER}"]

    class Unreachable(FakeKube):
        async def add_finalizer(self, *_: Any, **__: Any) -> bool:
            raise OSError("connection refused")

    failing = FinalizerHold(Unreachable(), view())
    with pytest.raises(BatchError) as raised:
        await failing.acquire()
    assert raised.value.reason == cond.REASON_KUBERNETES_UNAVAILABLE and not raised.value.terminal
    assert await failing.after_adopt(), "after an adoption the status write lets kopf add it"


# -- retries and repairs -------------------------------------------------------------------------------------------


class Repairs:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, member: Tracked, why: str, force: tuple[str, ...] = ()) -> None:
        self.calls.append(why)


async def test_retry_backoff_doubles_to_five_minutes_and_a_rotated_secret_retries_at_once() -> None:
    spec = {"account": {"credentialsSecretRef": {"name": "batch"}}}
    kube = FakeKube({("ns", "r"): body(spec=spec)})
    kube.secrets[("ns", "batch")] = ({"accountName": "a", "accountKey": "k"}, "1")
    repairs = Repairs()
    retry = RetryScheduler(kube, SecretSource(kube, ttl=0), repairs, interval=30.0)
    member = Tracked("ns", "r", "u1", 1, "e", "s", synced_reason="BatchUnavailable")
    await retry(member, "retry")
    assert repairs.calls == ["retry"] and member.retry_delay == 30.0
    await retry(member, "retry")
    assert repairs.calls == ["retry"], "retried before its backoff elapsed"
    member.retry_at = 0.0
    for _ in range(6):
        await retry(member, "retry")
        member.retry_at = 0.0
    assert member.retry_delay == MAX_BACKOFF
    kube.secrets[("ns", "batch")] = ({"accountName": "a", "accountKey": "k2"}, "2")  # rotated
    member.retry_at = asyncio.get_running_loop().time() + 1000
    calls = len(repairs.calls)
    await retry(member, "retry")
    assert len(repairs.calls) == calls + 1


async def test_missing_credentials_are_retried_every_cycle() -> None:
    kube = FakeKube({("ns", "r"): body()})
    repairs = Repairs()
    retry = RetryScheduler(kube, SecretSource(kube), repairs, interval=30.0)
    member = Tracked("ns", "r", "u1", 1, "e", None, synced_reason=cond.REASON_CREDENTIALS_NOT_FOUND)
    for _ in range(3):
        await retry(member, "retry")
    assert len(repairs.calls) == 3


async def test_repair_reconciles_a_fresh_copy_and_never_a_deleted_object() -> None:
    reconciled: list[tuple[str, tuple[str, ...]]] = []

    async def reconcile(found: Mapping[str, Any], *, force: tuple[str, ...] = ()) -> None:
        reconciled.append((found["metadata"]["uid"], force))

    kube = FakeKube({("ns", "r"): body(uid="fresh")})
    repair = Repairer(kube, reconcile)
    await repair(Tracked("ns", "r", "u1", 1, "e", "s"), "drift", force=("jobSpecification",))
    assert reconciled == [("fresh", ("jobSpecification",))]
    kube.objects[("ns", "r")] = body(deleting=True)
    await repair(Tracked("ns", "r", "u1", 1, "e", "s"), "drift")
    await repair(Tracked("ns", "gone", "u1", 1, "e", "s"), "drift")
    assert len(reconciled) == 1


# -- clean-up and pollers ------------------------------------------------------------------------------------------


class DeletingGateway:
    """A schedule of ours that goes away after terminate + delete."""

    def __init__(self) -> None:
        self.state: str | None = "active"
        self.calls: list[str] = []

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None:
        self.calls.append("get")
        if self.state is None:
            return None
        marks = [{"name": "azurebatch.dev/owner", "value": "ns/r"}, {"name": "azurebatch.dev/uid", "value": "u1"}]
        return {"id": schedule_id, "state": self.state, "metadata": marks}, "0x1"

    async def terminate_schedule(self, schedule_id: str) -> None:
        self.calls.append("terminate")
        self.state = "completed"

    async def delete_schedule(self, schedule_id: str) -> None:
        self.calls.append("delete")
        self.state = None


async def test_orphan_cleanup_deletes_the_schedule_of_a_vanished_resource() -> None:
    cleanup = OrphanCleanup()
    gateway = DeletingGateway()
    cleanup.spawn(view(), "s", gateway)
    (task,) = cleanup.tasks
    await asyncio.wait_for(task, timeout=10)
    assert gateway.calls[:2] == ["get", "terminate"] and "delete" in gateway.calls and gateway.state is None
    assert not cleanup.tasks


async def test_pollers_start_once_per_account_wake_and_stop() -> None:
    made: list[str] = []

    class StubPoller:
        def __init__(self) -> None:
            self.woken = 0

        def wake(self) -> None:
            self.woken += 1

        async def run(self) -> None:
            await asyncio.Event().wait()

    stubs: dict[str, StubPoller] = {}

    def make(endpoint: str) -> Any:
        made.append(endpoint)
        return stubs.setdefault(endpoint, StubPoller())

    pollers = Pollers(make)
    pollers.ensure("a")
    pollers.ensure("a")
    pollers.ensure("b")
    pollers.wake("a")
    pollers.wake("unknown")
    assert made == ["a", "b"] and stubs["a"].woken == 1
    await pollers.stop()
    assert all(task.done() for _, task in pollers.running.values())


# -- the runtime ---------------------------------------------------------------------------------------------------


async def test_runtime_observe_asks_for_a_reconcile_kopf_will_not_start() -> None:
    runtime = Runtime(Settings(), FakeKube(), storage={})
    assert not runtime.observe(body(), "ADDED")
    assert runtime.observe(body(annotations={ANNOTATION_RUN_NOW: "1"}), "MODIFIED"), "a new run-now value"
    assert runtime.observe(body(annotations={ANNOTATION_RUN_NOW: "1", ANNOTATION_ADOPT: "true"}), "MODIFIED")
    assert not runtime.observe(body(annotations={ANNOTATION_ADOPT: "true"}, deleting=True), "MODIFIED")
    assert not runtime.observe(body(), "DELETED")
    assert runtime.tracker.get(("ns", "r")) is None and runtime.writer.known("ns", "r") is None
    handled = body(annotations={ANNOTATION_RUN_NOW: "1"}, status={"runNow": "1"})
    assert not runtime.observe(handled, "ADDED"), "a run-now value its status shows as handled"


async def test_runtime_sets_the_resource_gauges_only_when_status_or_suspend_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from batchop.observability import metrics as batch_metrics

    seen: list[tuple[bool, Any]] = []
    monkeypatch.setattr(batch_metrics, "observe_resource",
                        lambda ns, name, *, spec, status: seen.append((spec["suspend"], status.get("state"))))
    kube = FakeKube({("ns", "r"): body()})
    runtime = Runtime(Settings(), kube, storage={})
    runtime.observe(body(status={"state": "active"}), "ADDED")
    runtime.observe(body(status={"state": "active"}), "MODIFIED")  # e.g. the finalizer's event: same status
    assert seen == [(False, "active")]
    await runtime.writer.update("ns", "r", {"state": "disabled"})  # a write sets them at once
    runtime.observe(body(status={"state": "disabled"}), "MODIFIED")
    assert seen == [(False, "active"), (False, "disabled")]
    runtime.observe(body(spec={"suspend": True}, status={"state": "disabled"}), "MODIFIED")
    assert seen[-1] == (True, "disabled") and len(seen) == 3
    await runtime.close()


async def test_a_groups_member_list_is_kept_until_a_resource_joins_or_leaves() -> None:
    from batchop.batch.credentials import AccountRef

    runtime = Runtime(Settings(), FakeKube(), storage={})
    ref = AccountRef("https://acct.westeurope.batch.azure.com", "acct", "a2V5")
    group = ref.credential_id
    for name in ("a", "b"):
        runtime.observe({**body(), "metadata": {**body()["metadata"], "name": name}}, "ADDED")
        runtime.accounts.gateway_for(ref, ObjectView("ns", name, "u1", 1, {}))
    first = runtime._members_of(group)
    assert sorted(m.name for m in first) == ["a", "b"]
    assert runtime._members_of(group) is first, "nothing changed: the same list"
    runtime.accounts.gateway_for(ref, ObjectView("ns", "a", "u1", 1, {}))  # re-resolved alike (a reconcile)
    assert runtime._members_of(group) is first, "a reconcile that changes no group keeps the list"
    runtime.observe({**body(), "metadata": {**body()["metadata"], "name": "c"}}, "ADDED")
    runtime.accounts.gateway_for(ref, ObjectView("ns", "c", "u1", 1, {}))
    assert sorted(m.name for m in runtime._members_of(group)) == ["a", "b", "c"], "a resource joined"
    replaced = {**body(uid="u2"), "metadata": {**body(uid="u2")["metadata"], "name": "b"}}
    runtime.observe(replaced, "ADDED")  # deleted and created again under the same name: a new entry
    assert [m.uid for m in runtime._members_of(group) if m.name == "b"] == ["u2"], "the tracker's new entry"
    runtime.observe({**body(), "metadata": {**body()["metadata"], "name": "a"}}, "DELETED")
    assert sorted(m.name for m in runtime._members_of(group)) == ["b", "c"], "a resource left"
    await runtime.close()


async def test_runtime_reports_an_unresolvable_account_without_a_batch_request() -> None:
    kube = FakeKube({("ns", "r"): body()})
    runtime = Runtime(Settings(), kube, storage={})  # no operator default account
    runtime.observe(body(), "ADDED")
    outcome = await runtime.reconcile(body())
    assert outcome.synced["reason"] == cond.REASON_ACCOUNT_NOT_CONFIGURED and outcome.retry_after == 30.0
    assert kube.patches and kube.patches[-1]["conditions"][0]["reason"] == cond.REASON_ACCOUNT_NOT_CONFIGURED
    assert [r for t, r, _ in kube.events if t == "Warning"] == [cond.REASON_ACCOUNT_NOT_CONFIGURED]
    assert not runtime.pollers.running and kube.finalizers == []
    entry = runtime.tracker.get(("ns", "r"))
    assert entry is not None and entry.synced_reason == cond.REASON_ACCOUNT_NOT_CONFIGURED and not entry.busy
    deleted = await runtime.delete(body(status={"scheduleId": "s"}))
    assert not deleted.done and deleted.synced["reason"] == cond.REASON_DELETION_PENDING
    skipped = await runtime.delete(body(annotations={ANNOTATION_RECONCILE_POLICY: "skip"}))
    assert skipped.done
    await runtime.close()
    assert kube.closed


async def test_a_finalizer_without_a_recorded_id_is_released_when_batch_cannot_be_asked() -> None:
    """The finalizer comes at admission, so a resource whose credentials never resolved has it too: deleting it
    must not wait for credentials (nothing of it reached Batch), but says which id it did not look for. With a
    recorded id the deletion waits, as before."""
    kube = FakeKube()
    runtime = Runtime(Settings(), kube, storage={})  # no operator default account: credentials never resolve
    new = body(deleting=True)
    new["metadata"]["finalizers"] = [FINALIZER]
    deleted = await runtime.delete(new)
    assert deleted.done
    ((kind, reason, message),) = kube.events
    assert (kind, reason) == ("Warning", "DeletedUnchecked")
    assert "no schedule id was ever recorded" in message and "ns_r" in message
    recorded = body(deleting=True, status={"scheduleId": "ns_r"})
    assert not (await runtime.delete(recorded)).done
    await runtime.close()


async def test_runtime_member_events_go_to_the_member() -> None:
    kube = FakeKube()
    runtime = Runtime(Settings(), kube, storage={})
    await runtime._post_member_event(Tracked("ns", "r", "u1", 1, "e", "s"), EventSpec("Warning", "DriftDetected", "x"))
    assert kube.events == [("Warning", "DriftDetected", "x")]
