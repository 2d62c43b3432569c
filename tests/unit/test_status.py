"""Status building, conditions, merge patches, and the poller's request budget (fake gateway)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from batchop.api import conditions as cond
from batchop.batch.gateway import GatewayStats
from batchop.controller import status as st
from batchop.controller.poller import Poller, Tracked
from batchop.kube.status_writer import StatusWriter, merge_patch

SCHEDULE = {
    "id": "team_report",
    "state": "active",
    "executionInfo": {"nextRunTime": "2026-01-01T02:00:00.0000000Z", "recentJob": {"id": "team_report:job-1"}},
    "metadata": [
        {"name": "azurebatch.dev/owner", "value": "team/report"},
        {"name": "azurebatch.dev/uid", "value": "u1"},
    ],
}
JOB_DONE = {
    "id": "team_report:job-1",
    "state": "completed",
    "creationTime": "2026-01-01T01:00:00Z",
    "executionInfo": {
        "startTime": "2026-01-01T01:00:01Z",
        "endTime": "2026-01-01T01:05:00Z",
        "poolId": "opt_abc",
        "terminateReason": "AllTasksComplete",
    },
}


def test_condition_transition_time_kept_when_status_unchanged() -> None:
    first = cond.merge([], [cond.make(cond.READY, cond.TRUE, "Active", "a")], now="T1")
    second = cond.merge(first, [cond.make(cond.READY, cond.TRUE, "Active", "message changed")], now="T2")
    assert second[0]["lastTransitionTime"] == "T1" and second[0]["message"] == "message changed"
    third = cond.merge(second, [cond.make(cond.READY, cond.FALSE, "NotFound", "gone")], now="T3")
    assert third[0]["lastTransitionTime"] == "T3"
    both = cond.merge(third, [cond.make(cond.SYNCED, cond.TRUE, "Synced")], now="T4")
    assert [c["type"] for c in both] == ["Ready", "Synced"]


def test_observed_status_success() -> None:
    counts = {"active": 0, "running": 0, "completed": 1, "succeeded": 1, "failed": 0}
    pool = {
        "id": "opt_abc",
        "state": "active",
        "allocationState": "steady",
        "currentDedicatedNodes": 1,
        "currentLowPriorityNodes": 0,
        "vmSize": "standard_d2s_v3",
        "targetDedicatedNodes": "not mirrored",
    }
    out = st.observed_status(
        schedule_id="team_report",
        schedule=SCHEDULE,
        job=JOB_DONE,
        task_counts=counts,
        pool=pool,
        previous={},
        generation=3,
    )
    assert out["state"] == "active" and out["nextRunTime"] == SCHEDULE["executionInfo"]["nextRunTime"]
    job = out["recentJob"]
    assert job["result"] == "success" and job["taskCounts"]["succeeded"] == 1 and job["poolId"] == "opt_abc"
    assert job["terminateReason"] == "AllTasksComplete"
    assert out["lastScheduleTime"] == JOB_DONE["creationTime"]
    assert out["lastSuccessfulTime"] == "2026-01-01T01:05:00Z"
    assert out["pool"] == {k: v for k, v in pool.items() if k != "targetDedicatedNodes"}
    assert out["conditions"][0]["reason"] == "Active" and out["conditions"][0]["observedGeneration"] == 3


def test_failures_keep_last_success_and_report_scheduling_error() -> None:
    job = {
        **JOB_DONE,
        "executionInfo": {
            **JOB_DONE["executionInfo"],
            "schedulingError": {
                "category": "usererror",
                "code": "AutoPoolCreationFailed",
                "message": "quota",
                "details": [],
            },
        },
    }
    out = st.observed_status(
        schedule_id="s",
        schedule=SCHEDULE,
        job=job,
        task_counts=None,
        pool=None,
        previous={"lastSuccessfulTime": "earlier"},
    )
    assert out["recentJob"]["result"] == "failure"
    assert out["recentJob"]["schedulingError"] == {
        "category": "usererror",
        "code": "AutoPoolCreationFailed",
        "message": "quota",
    }
    assert out["lastSuccessfulTime"] == "earlier"
    counts = {"completed": 2, "succeeded": 1, "failed": 1}
    assert st.job_result(JOB_DONE, counts) == "failure"
    assert st.job_result({**JOB_DONE, "state": "active"}, counts) is None


def test_ready_by_state() -> None:
    assert st.ready_condition({"state": "disabled"}, "s", 1)["reason"] == "Suspended"
    assert st.ready_condition({"state": "completed"}, "s", 1)["status"] == cond.TRUE
    assert st.ready_condition({"state": "deleting"}, "s", 1)["status"] == cond.FALSE
    assert st.ready_condition(None, "s", 1)["reason"] == "NotFound"


def test_transitions() -> None:
    started = {"recentJob": {"id": "j2", "state": "active"}}
    assert [e.reason for e in st.transitions({"recentJob": {"id": "j1", "result": "success"}}, started)] == [
        "JobStarted"
    ]
    done = {
        "recentJob": {"id": "j2", "state": "completed", "result": "failure", "taskCounts": {"failed": 1}},
        "state": "completed",
    }
    reasons = [e.reason for e in st.transitions(started, done)]
    assert reasons == ["JobFailed", "ScheduleCompleted"]
    assert st.transitions(done, done) == []


def test_merge_patch_nulls_removed_fields() -> None:
    old = {"recentJob": {"id": "a", "endTime": "t"}, "pool": {"id": "p"}, "state": "active"}
    new = {"recentJob": {"id": "b"}, "state": "active"}
    assert merge_patch(old, new) == {"recentJob": {"id": "b", "endTime": None}, "pool": None}


class FakeKube:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.patches: list[dict[str, Any]] = []

    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": self.status}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


async def test_status_writer_patches_only_on_change() -> None:
    kube = FakeKube({})
    writer = StatusWriter(kube)
    ready = cond.make(cond.READY, cond.TRUE, "Active", "ok")
    assert await writer.update("ns", "a", {"state": "active"}, [ready])
    assert not await writer.update("ns", "a", {"state": "active"}, [ready])
    synced = cond.make(cond.SYNCED, cond.TRUE, "Synced", "ok")
    assert await writer.update("ns", "a", {"scheduleId": "x"}, [synced])
    assert len(kube.patches) == 2
    # lists go whole; Reconciling and Stalled are derived on every write (batchop.api.conditions.summarize)
    assert [c["type"] for c in kube.patches[1]["conditions"]] == ["Ready", "Synced", "Reconciling", "Stalled"]


class BudgetGateway:
    """Batch with N schedules, all owned, each with one completed job on an auto pool."""

    def __init__(self, n: int) -> None:
        self.stats = GatewayStats()
        self.schedules = [
            {
                **SCHEDULE,
                "id": f"s{i}",
                "executionInfo": {"recentJob": {"id": f"s{i}:job-1"}},
                "metadata": [{"name": "azurebatch.dev/uid", "value": f"u{i}"}],
                "eTag": "0x1",
                "schedule": {"recurrenceInterval": "P1D"},
                "jobSpecification": {"poolInfo": {"poolId": f"p{i}"}},
            }
            for i in range(n)
        ]
        self.jobs = {
            f"s{i}:job-1": {
                **JOB_DONE,
                "id": f"s{i}:job-1",
                "executionInfo": {**JOB_DONE["executionInfo"], "poolId": f"p{i}"},
            }
            for i in range(n)
        }

    def _count(self, op: str, pages: int = 1) -> None:
        self.stats.requests[op] += pages
        self.stats.responses[200] += pages

    async def list_schedules(self, *, select: list[str] | None = None, **_: Any) -> list[dict[str, Any]]:
        self._count("list_schedules", max(1, -(-len(self.schedules) // 1000)))
        if select is None:
            return [copy.deepcopy(s) for s in self.schedules]
        return [{k: copy.deepcopy(v) for k, v in s.items() if k in select} for s in self.schedules]

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None:
        self._count("get_schedule")
        found = next((s for s in self.schedules if s["id"] == schedule_id), None)
        return None if found is None else (copy.deepcopy(found), found.get("eTag"))

    async def list_jobs(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_jobs")
        return []

    async def list_pools(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_pools", max(1, -(-len(self.schedules) // 1000)))
        return [{"id": f"p{i}", "state": "active"} for i in range(len(self.schedules))]

    async def get_job(self, job_id: str) -> dict[str, Any]:
        self._count("get_job")
        return self.jobs[job_id]

    async def task_counts(self, job_id: str) -> dict[str, Any]:
        self._count("task_counts")
        return {"completed": 1, "succeeded": 1, "failed": 0}


async def test_poller_requests_per_cycle_do_not_grow_with_schedules() -> None:
    per_cycle: dict[int, list[int]] = {}
    for n in (5, 200):
        gateway = BudgetGateway(n)
        members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}") for i in range(n)]
        kube = FakeKube({})
        writer = StatusWriter(kube)
        events: list[str] = []
        drift: list[str] = []

        async def post(member: Tracked, event: st.EventSpec, events: list[str] = events) -> None:
            events.append(event.reason)

        async def on_drift(member: Tracked, why: str, drift: list[str] = drift, **_: Any) -> None:
            drift.append(why)

        async def refresh() -> None:
            return None

        poller = Poller(
            "e",
            gateway=lambda gateway=gateway: gateway,
            members=lambda members=members: members,
            writer=writer,
            post_event=post,
            on_drift=on_drift,
            refresh_credentials=refresh,
            changed_properties=lambda d, o: [],
        )
        reports = [await poller.cycle() for _ in range(3)]
        per_cycle[n] = [r.requests for r in reports]
        assert not drift
        assert reports[0].patched == n and reports[1].patched == 0 and reports[2].patched == 0
    # first cycle reads each new completed job once (transitions); later cycles: schedules + jobs + pools
    assert per_cycle[5][1:] == [3, 3]
    assert per_cycle[200][1:] == [3, 3]


async def test_poller_detects_missing_and_changed_schedules() -> None:
    gateway = BudgetGateway(2)
    gateway.schedules = gateway.schedules[:1]  # s1 deleted behind our back
    members = [
        Tracked("ns", "o0", "u0", 1, "e", "s0", desired={"schedule": {}}),
        Tracked("ns", "o1", "u1", 1, "e", "s1"),
    ]
    drift: list[str] = []

    async def on_drift(member: Tracked, why: str, **_: Any) -> None:
        drift.append(f"{member.name}: {why}")

    async def nothing(*_: Any) -> None:
        return None

    poller = Poller(
        "e",
        gateway=lambda: gateway,
        members=lambda: members,
        writer=StatusWriter(FakeKube({})),
        post_event=nothing,
        on_drift=on_drift,
        refresh_credentials=nothing,
        changed_properties=lambda d, o: ["schedule"],
    )
    report = await poller.cycle()
    assert len(report.drift) == 2
    assert any("o1" in d and "gone" in d for d in drift)
    assert any("o0" in d and "changed outside" in d for d in drift)


async def test_owner_marks_are_parsed_again_only_when_the_etag_or_adopt_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift check's ownership test is remembered per member under the schedule's ETag (Batch gives a schedule
    a new ETag whenever its metadata changes): parsed once, again when the ETag moves (marks replaced: drift) or
    when the resource's ``adopt`` changes."""
    from batchop.controller import poller as poller_module

    parsed: list[str] = []
    real = poller_module.owns

    def counting(schedule: Mapping[str, Any], obj: Any) -> bool:
        parsed.append(str(schedule.get("eTag")))
        return real(schedule, obj)

    monkeypatch.setattr(poller_module, "owns", counting)
    gateway = IdleGateway(1)
    member = Tracked("ns", "o0", "u0", 1, "e", "s0", desired={"schedule": {}}, in_sync_etag="0x1")
    drift: list[str] = []

    async def on_drift(member: Tracked, why: str, **_: Any) -> None:
        drift.append(why)

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    poller = Poller("e", gateway=lambda: gateway, members=lambda: [member], writer=StatusWriter(FakeKube({})),
                    post_event=nothing, on_drift=on_drift, refresh_credentials=nothing,
                    changed_properties=lambda d, o: [])
    for _ in range(3):
        await poller.cycle()
    assert parsed == ["0x1"] and drift == []
    member.adopt = True
    await poller.cycle()
    assert parsed == ["0x1", "0x1"] and drift == []
    gateway.schedules[0].update(eTag="0x2", metadata=[{"name": "azurebatch.dev/uid", "value": "someone-else"}])
    await poller.cycle()
    assert parsed[:2] == ["0x1", "0x1"] and set(parsed[2:]) == {"0x2"}, "not ours: parsed at each ask"
    assert drift == ["Batch schedule s0 lost its owner marks; restoring them"]


async def test_a_job_that_stops_showing_as_running_is_read_once() -> None:
    """The jobs step looks only at the recent jobs that can have changed: one listed, one not seen yet, or one
    last seen running. A running job missing from the next listing (it completed before the margin) is read
    once; a completed one is never read again."""
    gateway = IdleGateway(2)
    running = {**gateway.jobs["s0:job-1"], "state": "active"}
    listings = [[copy.deepcopy(running)], [], [], []]

    async def list_jobs(**_: Any) -> list[dict[str, Any]]:
        gateway._count("list_jobs")
        return listings.pop(0)

    async def no_nodes(**_: Any) -> list[dict[str, Any]]:
        return []  # the pool health of the running job

    gateway.list_jobs = list_jobs  # type: ignore[method-assign]
    gateway.list_node_counts = no_nodes  # type: ignore[attr-defined]
    members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}", policy="skip") for i in range(2)]
    poller = idle_poller(gateway, members, StatusWriter(FakeKube({})))
    await poller.cycle()
    assert gateway.stats.requests["get_job"] == 1, "s1's job, not listed and never seen"
    await poller.cycle()
    assert gateway.stats.requests["get_job"] == 2, "s0's job stopped showing as running: read once"
    assert poller._jobs["s0:job-1"]["state"] == "completed"
    for _ in range(2):
        await poller.cycle()
    assert gateway.stats.requests["get_job"] == 2, "completed jobs are not read again"


async def test_poller_skips_members_reconciled_while_it_listed() -> None:
    """A create or edit that lands while the cycle lists Batch is not drift: the page predates it."""
    gateway = BudgetGateway(1)
    gateway.schedules = []  # the listing is taken before the create below
    fresh = Tracked("ns", "o0", "u0", 1, "e", None)
    busy = Tracked("ns", "o1", "u1", 1, "e", "s1", version=1)  # a reconcile is running (odd version)
    listing = gateway.list_schedules

    async def list_then_create(**kw: Any) -> list[dict[str, Any]]:
        page = await listing(**kw)
        fresh.version += 2  # a reconcile ran meanwhile: created s0 and recorded it
        fresh.schedule_id = "s0"
        return page

    gateway.list_schedules = list_then_create  # type: ignore[method-assign]
    drift: list[str] = []

    async def on_drift(member: Tracked, why: str, **_: Any) -> None:
        drift.append(f"{member.name}: {why}")

    async def nothing(*_: Any) -> None:
        return None

    kube = FakeKube({})
    poller = Poller(
        "e",
        gateway=lambda: gateway,
        members=lambda: [fresh, busy],
        writer=StatusWriter(kube),
        post_event=nothing,
        on_drift=on_drift,
        refresh_credentials=nothing,
        changed_properties=lambda d, o: ["schedule"],
    )
    report = await poller.cycle()
    assert drift == [] and report.skipped == 2 and kube.patches == []
    gateway.list_schedules = listing  # type: ignore[method-assign]
    busy.version += 1  # its reconcile ended; both are mirrored (and found missing) from a fresh listing
    report = await poller.cycle()
    assert report.skipped == 0 and sorted(d.split(":")[0] for d in drift) == ["o0", "o1"]


async def test_idle_cycles_compare_a_schedule_again_only_when_its_etag_moves() -> None:
    gateway = BudgetGateway(1)
    gateway.schedules[0]["eTag"] = "0x1"
    member = Tracked("ns", "o0", "u0", 1, "e", "s0", desired={"schedule": {}})
    compared: list[str] = []
    drift: list[str] = []

    def changed(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
        compared.append(str(observed.get("eTag")))
        return ["schedule"] if observed.get("eTag") == "0x3" else []

    async def on_drift(member: Tracked, why: str, **_: Any) -> None:
        drift.append(why)

    async def nothing(*_: Any) -> None:
        return None

    poller = Poller("e", gateway=lambda: gateway, members=lambda: [member], writer=StatusWriter(FakeKube({})),
                    post_event=nothing, on_drift=on_drift, refresh_credentials=nothing, changed_properties=changed)
    for _ in range(3):
        await poller.cycle()
    assert compared == ["0x1"], "an unchanged schedule was normalised and compared every cycle"
    gateway.schedules[0]["eTag"] = "0x2"  # written by someone (maybe to the same content)
    await poller.cycle()
    gateway.schedules[0]["eTag"] = "0x3"  # and now really changed
    await poller.cycle()
    assert compared == ["0x1", "0x2", "0x3"] and len(drift) == 1


async def test_the_cycle_lists_schedules_slim_and_reads_whole_only_those_not_known_in_sync() -> None:
    """The listing leaves out ``schedule`` and ``jobSpecification``: an in-sync schedule (ETag unchanged since it
    was found equal) takes the desired ones, an observe-only one its body kept by ETag, the rest are read whole:
    one by one when few, with one whole listing when many."""
    from batchop.controller import poller as poller_module

    gateway = BudgetGateway(3)
    selects: list[list[str] | None] = []
    listing = gateway.list_schedules

    async def recording(*, select: list[str] | None = None, **kw: Any) -> list[dict[str, Any]]:
        selects.append(select)
        return await listing(select=select, **kw)

    gateway.list_schedules = recording  # type: ignore[method-assign]
    synced = Tracked("ns", "o0", "u0", 1, "e", "s0", desired={"schedule": {"recurrenceInterval": "P1D"},
                                                             "jobSpecification": {"poolInfo": {"poolId": "p0"}}},
                     in_sync_etag="0x1")
    moved = Tracked("ns", "o1", "u1", 1, "e", "s1", desired={"schedule": {}, "jobSpecification": {}},
                    in_sync_etag="0x0")
    observed = Tracked("ns", "o2", "u2", 1, "e", "s2", policy="skip")
    compared: list[str] = []

    def changed(desired: Mapping[str, Any], observed_body: Mapping[str, Any]) -> list[str]:
        compared.append(f"{observed_body['id']}:{sorted(observed_body)}")
        return []

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    poller = Poller("e", gateway=lambda: gateway, members=lambda: [synced, moved, observed],
                    writer=StatusWriter(FakeKube({})), post_event=nothing, on_drift=nothing,
                    refresh_credentials=nothing, changed_properties=changed)
    await poller.cycle()
    assert selects == [poller_module.SCHEDULE_SELECT_SLIM]
    assert gateway.stats.requests["get_schedule"] == 2, "the moved one and the observe-only one, read whole"
    assert compared == ["s1:" + str(sorted(gateway.schedules[1]))], "the moved one compared with Batch's whole body"
    assert moved.in_sync_etag == "0x1"
    await poller.cycle()
    assert gateway.stats.requests["get_schedule"] == 2, "in sync by ETag, or kept by ETag: nothing read whole"
    gateway.schedules[2]["eTag"] = "0x2"
    await poller.cycle()
    assert gateway.stats.requests["get_schedule"] == 3, "the observe-only schedule changed: read whole again"

    many = BudgetGateway(poller_module.FULL_READS_MAX + 1)
    members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}", desired={"schedule": {}}) for i in range(51)]
    restarted = Poller("e", gateway=lambda: many, members=lambda: members, writer=StatusWriter(FakeKube({})),
                       post_event=nothing, on_drift=nothing, refresh_credentials=nothing,
                       changed_properties=lambda d, o: [])
    await restarted.cycle()
    assert many.stats.requests["get_schedule"] == 0 and many.stats.requests["list_schedules"] == 2
    await restarted.cycle()
    assert many.stats.requests["list_schedules"] == 3, "all in sync after the first comparison: one slim listing"


async def test_the_heap_is_settled_only_after_two_cycles_in_a_row_that_changed_nothing(monkeypatch: Any) -> None:
    import asyncio

    from batchop.controller import poller as poller_module
    from batchop.controller.poller import CycleReport

    settled: list[int] = []
    monkeypatch.setattr(poller_module.memory, "settle", lambda resources: settled.append(resources) or False)
    reports = iter([CycleReport(patched=1), CycleReport(), CycleReport(), CycleReport(events=1), CycleReport(),
                    CycleReport(drift=["x"]), CycleReport(), CycleReport()])
    ran: list[CycleReport] = []
    done = asyncio.Event()

    async def cycle() -> CycleReport:
        for report in reports:
            ran.append(report)
            return report
        done.set()  # the eighth cycle's aftermath (the settle) is behind us
        await asyncio.Event().wait()  # no more cycles
        raise AssertionError

    async def nothing(*_: Any) -> None:
        return None

    members = [Tracked("ns", f"r{i}", f"u{i}", 1, "e", f"s{i}") for i in range(3)]
    poller = Poller("e", gateway=lambda: None, members=lambda: members, writer=StatusWriter(FakeKube({})),
                    post_event=nothing, on_drift=nothing, refresh_credentials=nothing,
                    changed_properties=lambda *_: [], interval=0.0)
    poller.cycle = cycle  # type: ignore[method-assign]
    task = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        task.cancel()
    assert len(ran) == 8
    assert settled == [3, 3], "after cycles 3 and 8 only: a patch, an Event or a drift starts the count again"


async def test_lastsynctime_heartbeat_slows_down_with_many_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """A steady resource's ``lastSyncTime`` is refreshed every ``heartbeat`` seconds, or every N / rate once that
    would exceed ``heartbeat_rate`` refreshes a second for all the operator's resources."""
    from batchop.controller import poller as poller_module

    for total, refreshed in ((5, True), (10, False)):
        gateway = BudgetGateway(5)
        members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}") for i in range(5)]

        async def nothing(*_: Any, **__: Any) -> None:
            return None

        poller = Poller("e", gateway=lambda gateway=gateway: gateway, members=lambda members=members: members,
                        writer=StatusWriter(FakeKube({})), post_event=nothing, on_drift=nothing,
                        refresh_credentials=nothing, changed_properties=lambda d, o: [],
                        heartbeat=600, heartbeat_rate=0.01, resources=lambda total=total: total)
        assert (await poller.cycle()).patched == 5  # first sight: every status written
        assert poller.heartbeat_period().total_seconds() == max(600, total / 0.01)
        later = datetime.now(UTC) + timedelta(seconds=700)  # 700 s on, nothing changed

        class Later(datetime):
            at = later

            @classmethod
            def now(cls, tz: Any = None) -> Later:  # type: ignore[override]
                return cast(Later, cls.at)

        monkeypatch.setattr(poller_module, "datetime", Later)
        assert (await poller.cycle()).patched == (5 if refreshed else 0), total
        monkeypatch.undo()


class IdleGateway(BudgetGateway):
    """:class:`BudgetGateway` at rest: every auto pool deleted with its completed job."""

    async def list_pools(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_pools")
        return []


def idle_poller(gateway: BudgetGateway, members: list[Tracked], writer: StatusWriter,
                events: list[str] | None = None) -> Poller:
    async def post(member: Tracked, event: st.EventSpec) -> None:
        if events is not None:
            events.append(event.reason)

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    return Poller("e", gateway=lambda: gateway, members=lambda: members, writer=writer, post_event=post,
                  on_drift=nothing, refresh_credentials=nothing, changed_properties=lambda d, o: [])


async def test_a_cycle_with_the_same_inputs_does_not_compute_the_status_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """At rest a member's status is computed until a cycle finds nothing to write; from then on, while its inputs
    are the same, it is not computed again (``CycleReport.unchanged``)."""
    computed: list[str] = []
    real = st.observed_status

    def counting(**kwargs: Any) -> Any:
        computed.append(kwargs["schedule_id"])
        return real(**kwargs)

    monkeypatch.setattr(st, "observed_status", counting)
    gateway = IdleGateway(3)
    members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}") for i in range(3)]
    poller = idle_poller(gateway, members, StatusWriter(FakeKube({})))
    first, second, third, fourth = [await poller.cycle() for _ in range(4)]
    assert (first.patched, second.patched, third.patched, fourth.patched) == (3, 0, 0, 0)
    assert (first.unchanged, second.unchanged, third.unchanged, fourth.unchanged) == (0, 0, 3, 3)
    assert len(computed) == 6, computed


@pytest.mark.parametrize("change", ["state", "nextRunTime", "recentJob", "generation", "written", "gone"])
async def test_any_change_of_an_input_computes_the_status_again(change: str) -> None:
    """Each input of the status, changed behind a member at rest, is mirrored in the next cycle: the same status
    and Events as a poller that never skips. (Observed-only members: a managed one would take a disabled or
    missing schedule for drift and put it back.)"""
    gateway = IdleGateway(2)
    runs = []
    for skips in (True, False):
        writer = StatusWriter(FakeKube({}))
        members = [Tracked("ns", f"o{i}", f"u{i}", 1, "e", f"s{i}", policy="skip") for i in range(2)]
        events: list[str] = []
        poller = idle_poller(gateway, members, writer, events)
        if not skips:
            poller.mirror_inputs = lambda *_: None  # type: ignore[method-assign]
        runs.append((writer, members, events, poller))
    for _ in range(3):
        for *_, poller in runs:
            await poller.cycle()
    assert runs[0][1][0].mirrored is not None and runs[1][1][0].mirrored is None
    schedule = gateway.schedules[0]
    if change == "state":
        schedule["state"] = "disabled"
    elif change == "nextRunTime":
        schedule["executionInfo"]["nextRunTime"] = "2026-01-02T02:00:00.0000000Z"
    elif change == "recentJob":
        schedule["executionInfo"]["recentJob"] = {"id": "s0:job-2"}
        gateway.jobs["s0:job-2"] = {**gateway.jobs["s0:job-1"], "id": "s0:job-2",
                                    "creationTime": "2026-01-02T01:00:00Z"}
    elif change == "gone":
        gateway.schedules.pop(0)
    for writer, members, _, _ in runs:
        if change == "generation":
            members[0].generation = 2
        elif change == "written":  # a reconcile wrote the status in between (a new Synced condition)
            await writer.update("ns", "o0", {}, [cond.make(cond.SYNCED, cond.FALSE, "InvalidSpec", "bad")])
    reports = [await poller.cycle() for *_, poller in runs]
    assert reports[0].unchanged == 1, "only the member whose input changed is computed again"
    assert reports[0].patched == reports[1].patched == 1
    (skipping, _, skipping_events, _), (never, _, never_events, _) = runs
    assert _comparable(skipping.known("ns", "o0")) == _comparable(never.known("ns", "o0"))
    assert skipping_events == never_events
    if change == "recentJob":
        assert skipping_events == ["JobStarted", "JobSucceeded"]  # job-2 (first sight posts none)


def _comparable(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without its clock readings (``lastSyncTime``, the conditions' ``lastTransitionTime``)."""
    status = dict(status or {})
    status.pop("lastSyncTime", None)
    status["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                            for c in status.get("conditions") or []]
    return status


async def test_a_member_whose_job_waits_is_computed_every_cycle() -> None:
    """A recent job that is not completed makes the status depend on the clock (how long it has waited, whether
    its pool is stuck): never skipped."""
    gateway = IdleGateway(1)
    job = gateway.jobs["s0:job-1"]
    job.update(state="active", executionInfo={"startTime": "2026-01-01T01:00:01Z"})

    async def active_jobs(**_: Any) -> list[dict[str, Any]]:
        gateway._count("list_jobs")
        return [copy.deepcopy(job)]

    gateway.list_jobs = active_jobs  # type: ignore[method-assign]
    members = [Tracked("ns", "o0", "u0", 1, "e", "s0")]
    poller = idle_poller(gateway, members, StatusWriter(FakeKube({})))
    reports = [await poller.cycle() for _ in range(3)]
    assert [r.unchanged for r in reports] == [0, 0, 0]
    assert members[0].mirrored is None
