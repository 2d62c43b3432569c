"""A job that cannot run, told honestly: the pool's resizeErrors, node counts by state and how long the job has
waited become status fields, a Ready=False reason that says what to do, a Warning Event, and clear by themselves;
the poller reads them with as few Batch calls as it can (batchop.controller.status, poolhealth, poller)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from batchop.api import conditions as cond
from batchop.batch.gateway import BatchError, GatewayStats
from batchop.controller import status as st
from batchop.controller.poller import Poller
from batchop.controller.tracking import Tracked
from batchop.kube.status_writer import StatusWriter

CREATED = "2026-01-01T00:00:00.0000000Z"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = {"id": "ns_a", "state": "active", "eTag": "e1",
            "executionInfo": {"recentJob": {"id": "ns_a:job-1"}},
            "metadata": [{"name": "azurebatch.dev/uid", "value": "u1"}],
            "jobSpecification": {}}  # listed whole: the fake ignores $select
JOB = {"id": "ns_a:job-1", "state": "active", "creationTime": CREATED,
       "executionInfo": {"startTime": CREATED, "poolId": "pool-1"}}
WAITING = {"active": 1, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
RUNNING = {"active": 0, "running": 1, "completed": 0, "succeeded": 0, "failed": 0}
QUOTA_ERROR = {"code": "AccountCoreQuotaReached",
               "message": "The specified account has reached VM core quota for family standardDSv3Family",
               "values": [{"name": "VmFamily", "value": "standardDSv3Family"}]}


def counts(dedicated: dict[str, int]) -> dict[str, Any]:
    return {"poolId": "pool-1", "dedicated": {**dedicated, "total": sum(dedicated.values())},
            "lowPriority": {"total": 0}}


def observe(pool: dict[str, Any] | None, task_counts: dict[str, Any], health: st.Health) -> dict[str, Any]:
    return dict(st.observed_status(schedule_id="ns_a", schedule=SCHEDULE, job=JOB, task_counts=task_counts,
                                   pool=pool, previous={}, generation=2, health=health))


def test_quota_names_the_family_the_account_and_what_to_do() -> None:
    pool = {"id": "pool-1", "state": "active", "allocationState": "steady", "vmSize": "standard_d2s_v3",
            "currentDedicatedNodes": 0, "resizeErrors": [QUOTA_ERROR]}
    out = observe(pool, WAITING, st.Health(counts=counts({}), now=T0 + timedelta(minutes=5), account="acct"))
    ready = out["conditions"][0]
    assert (ready["status"], ready["reason"]) == (cond.FALSE, cond.REASON_QUOTA_EXCEEDED)
    assert "Raise the dedicated core quota for family standardDSv3Family of Batch account acct" in ready["message"]
    assert out["recentJob"]["waitingSince"] == CREATED
    assert out["pool"]["resizeErrors"] == [{"code": QUOTA_ERROR["code"], "message": QUOTA_ERROR["message"]}]
    assert out["pool"]["nodeCounts"] == {"dedicated": {"total": 0}, "lowPriority": {"total": 0}}


def test_family_from_the_message_and_low_priority_quota() -> None:
    error = {"code": "AccountCoreQuotaReached", "message": "quota reached for family 'standardFSv2Family'"}
    pool = {"id": "pool-1", "vmSize": "standard_f2s_v2", "resizeErrors": [error]}
    ready = observe(pool, WAITING, st.Health(account="acct"))["conditions"][0]
    assert "family standardFSv2Family of Batch account acct" in ready["message"]
    spot = {"id": "pool-1", "resizeErrors": [{"code": "AccountLowPriorityCoreQuotaReached", "message": "m"}]}
    ready = observe(spot, WAITING, st.Health(account="acct"))["conditions"][0]
    assert ready["reason"] == cond.REASON_QUOTA_EXCEEDED and "low-priority/Spot core quota" in ready["message"]


def test_allocation_failure() -> None:
    pool = {"id": "pool-1", "vmSize": "standard_nd96", "resizeErrors": [
        {"code": "AllocationFailed", "message": "Desired number of nodes could not be allocated"}]}
    ready = observe(pool, WAITING, st.Health())["conditions"][0]
    assert ready["reason"] == cond.REASON_ALLOCATION_FAILED
    assert "AllocationFailed" in ready["message"] and "standard_nd96" in ready["message"]


def test_start_task_failed_on_every_node_names_a_node_and_the_command() -> None:
    node = {"id": "tvm-1", "state": "starttaskfailed",
            "startTaskInfo": {"failureInfo": {"code": "FailureExitCode", "message": "exit code 2"}}}
    health = st.Health(counts=counts({"startTaskFailed": 2}), failed_node=node, resource=("team-a", "wc"))
    ready = observe({"id": "pool-1"}, WAITING, health)["conditions"][0]
    assert ready["reason"] == cond.REASON_START_TASK_FAILED
    assert "node tvm-1" in ready["message"] and "exit code 2" in ready["message"]
    # one command away with batchop; the az line for users without it
    assert "batchop logs wc -n team-a --start-task" in ready["message"]
    assert "--node-id tvm-1" in ready["message"] and "startup/stderr.txt" in ready["message"]
    assert len(ready["message"]) < 1024  # an Event's note (events.k8s.io/v1) holds at most 1 KiB
    # one node still starting: not (yet) every node
    health = st.Health(counts=counts({"startTaskFailed": 1, "starting": 1}), failed_node=node)
    assert observe({"id": "pool-1"}, WAITING, health)["conditions"][0]["reason"] == cond.REASON_ACTIVE


def test_job_stuck_only_after_the_threshold_of_batch_time_with_a_stable_message() -> None:
    early = st.Health(counts=counts({"idle": 1}), now=T0 + timedelta(minutes=59), stuck_after=3600)
    assert observe({"id": "pool-1"}, WAITING, early)["conditions"][0]["reason"] == cond.REASON_ACTIVE
    late = [observe({"id": "pool-1"}, WAITING,
                    st.Health(counts=counts({"idle": 1}), now=T0 + timedelta(minutes=m), stuck_after=3600))
            for m in (61, 90)]
    assert [o["conditions"][0]["reason"] for o in late] == [cond.REASON_JOB_STUCK] * 2
    assert late[0]["conditions"][0]["message"] == late[1]["conditions"][0]["message"]  # no patch per cycle


def test_a_running_task_or_a_running_node_is_not_waiting() -> None:
    pool = {"id": "pool-1", "resizeErrors": [QUOTA_ERROR]}  # partial allocation: some nodes fit
    out = observe(pool, RUNNING, st.Health(now=T0 + timedelta(days=1)))
    assert out["conditions"][0]["reason"] == cond.REASON_ACTIVE and "waitingSince" not in out["recentJob"]
    out = observe(pool, WAITING, st.Health(counts=counts({"running": 1}), now=T0 + timedelta(days=1)))
    assert out["conditions"][0]["reason"] == cond.REASON_ACTIVE


def test_readiness_events_warn_once_and_announce_recovery() -> None:
    active = cond.make(cond.READY, cond.TRUE, cond.REASON_ACTIVE, "ok")
    quota = cond.make(cond.READY, cond.FALSE, cond.REASON_QUOTA_EXCEEDED, "raise the quota")
    assert [(e.type, e.reason) for e in st.readiness_events(active, quota)] == [("Warning", "QuotaExceeded")]
    assert st.readiness_events(quota, quota) == []
    assert [(e.type, e.reason) for e in st.readiness_events(quota, active)] == [("Normal", "JobRecovered")]
    assert st.readiness_events(None, active) == []


# -- the poller: requests per cycle ------------------------------------------------------------------------------


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": {}}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


class WaitingBatch:
    """One schedule whose job waits on a pool that Batch cannot fill (the quota), then can (quota raised)."""

    def __init__(self) -> None:
        self.stats = GatewayStats()
        self.pool: dict[str, Any] = {"id": "pool-1", "state": "active", "vmSize": "standard_d2s_v3",
                                     "resizeErrors": [QUOTA_ERROR]}
        self.node_counts = counts({})
        self.counts_now = dict(WAITING)
        self.fail_node_counts = False

    def _count(self, op: str) -> None:
        self.stats.requests[op] += 1
        self.stats.responses[200] += 1

    def batch_now(self) -> datetime:
        return T0 + timedelta(minutes=10)

    async def list_schedules(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_schedules")
        return [SCHEDULE]

    async def list_jobs(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_jobs")
        return [JOB]

    async def list_pools(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_pools")
        return [self.pool]

    async def get_job(self, job_id: str) -> dict[str, Any]:
        self._count("get_job")
        return JOB

    async def task_counts(self, job_id: str) -> dict[str, Any]:
        self._count("task_counts")
        return self.counts_now

    async def list_node_counts(self) -> list[dict[str, Any]]:
        self._count("list_node_counts")
        if self.fail_node_counts:
            raise BatchError("down", reason=cond.REASON_BATCH_UNAVAILABLE, terminal=False, status=503)
        return [self.node_counts, {"poolId": "someone-elses", "dedicated": {"idle": 3, "total": 3}}]

    async def list_nodes(self, pool_id: str, **_: Any) -> list[dict[str, Any]]:
        self._count("list_nodes")
        return [{"id": "tvm-9", "state": "starttaskfailed", "startTaskInfo": {"failureInfo": {"code": "X"}}}]


async def synced(writer: StatusWriter) -> None:
    """What the reconcile wrote before the poller runs (Ready then follows the observation)."""
    ok = cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok", generation=2)
    await writer.update("ns", "a", {"observedGeneration": 2, "scheduleId": "ns_a"}, [ok])


def poller_for(batch: WaitingBatch, writer: StatusWriter, events: list[tuple[str, str]]) -> Poller:
    async def post(member: Tracked, event: st.EventSpec) -> None:
        events.append((event.type, event.reason))

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    return Poller("https://acct.westeurope.batch.azure.com", gateway=lambda: batch,
                  members=lambda: [MEMBER], writer=writer, post_event=post, on_drift=nothing,
                  refresh_credentials=nothing, changed_properties=lambda d, o: [])


MEMBER = Tracked("ns", "a", "u1", 2, "https://acct.westeurope.batch.azure.com", "ns_a")


async def test_poller_reports_quota_then_recovery_with_one_node_counts_request_per_cycle() -> None:
    batch, kube, events = WaitingBatch(), FakeKube(), []
    writer = StatusWriter(kube)
    await synced(writer)
    poller = poller_for(batch, writer, events)
    first = await poller.cycle()
    status = writer.known("ns", "a") or {}
    ready = cond.find(status["conditions"], cond.READY) or {}
    stalled = cond.find(status["conditions"], cond.STALLED) or {}
    assert ready["reason"] == cond.REASON_QUOTA_EXCEEDED and stalled["status"] == cond.TRUE
    assert "Batch account acct" in ready["message"]
    assert ("Warning", "QuotaExceeded") in events
    assert status["pool"]["resizeErrors"][0]["code"] == "AccountCoreQuotaReached"
    # schedules, jobs, task counts (new job), pools, node counts: one each
    assert dict(batch.stats.requests) == {"list_schedules": 1, "list_jobs": 1, "task_counts": 1, "list_pools": 1,
                                          "list_node_counts": 1}
    assert first.requests == 5
    second = await poller.cycle()
    assert second.patched == 0 and events.count(("Warning", "QuotaExceeded")) == 1  # no repeat, no patch
    # the quota is raised: the pool grows, the task runs
    batch.pool = {**batch.pool, "resizeErrors": []}
    batch.node_counts = counts({"running": 1})
    batch.counts_now = dict(RUNNING)
    await poller.cycle()
    status = writer.known("ns", "a") or {}
    assert (cond.find(status["conditions"], cond.READY) or {})["reason"] == cond.REASON_ACTIVE
    assert (cond.find(status["conditions"], cond.STALLED) or {})["status"] == cond.FALSE
    assert "waitingSince" not in status["recentJob"]
    assert ("Normal", "JobRecovered") in events


async def test_poller_names_the_failed_node_once_and_survives_a_node_counts_outage() -> None:
    batch, kube, events = WaitingBatch(), FakeKube(), []
    batch.pool = {"id": "pool-1", "state": "active"}
    batch.node_counts = counts({"startTaskFailed": 1})
    writer = StatusWriter(kube)
    await synced(writer)
    poller = poller_for(batch, writer, events)
    await poller.cycle()
    await poller.cycle()
    ready = cond.find((writer.known("ns", "a") or {})["conditions"], cond.READY) or {}
    assert ready["reason"] == cond.REASON_START_TASK_FAILED and "tvm-9" in ready["message"]
    assert "batchop logs a -n ns --start-task" in ready["message"]  # the resource's own command
    assert batch.stats.requests["list_nodes"] == 1  # once per pool, not per cycle
    batch.fail_node_counts = True
    report = await poller.cycle()
    assert report.error is None  # the last counts are kept; the cycle goes on
    ready = cond.find((writer.known("ns", "a") or {})["conditions"], cond.READY) or {}
    assert ready["reason"] == cond.REASON_START_TASK_FAILED


async def test_no_node_counts_request_without_an_active_job() -> None:
    batch, kube, events = WaitingBatch(), FakeKube(), []
    done = {**JOB, "state": "completed", "executionInfo": {**JOB["executionInfo"], "endTime": CREATED}}

    async def list_jobs(**_: Any) -> list[dict[str, Any]]:
        batch._count("list_jobs")
        return [done]

    batch.list_jobs = list_jobs  # type: ignore[method-assign]
    batch.counts_now = {"active": 0, "running": 0, "completed": 1, "succeeded": 1, "failed": 0}
    poller = poller_for(batch, StatusWriter(kube), events)
    await poller.cycle()
    await poller.cycle()
    assert "list_node_counts" not in batch.stats.requests


async def test_writer_keeps_the_observation_while_synced_fails_and_restores_it() -> None:
    """A failed Synced overrides Ready; the poller's unchanged observation then patches nothing, and the next
    successful pass brings the observed Ready back without waiting for a poll cycle."""
    kube = FakeKube()
    writer = StatusWriter(kube)
    active = cond.make(cond.READY, cond.TRUE, cond.REASON_ACTIVE, "active", generation=1)
    await writer.update("ns", "a", {"state": "active"}, [active])
    throttled = cond.make(cond.SYNCED, cond.FALSE, cond.REASON_THROTTLED, "slow down", generation=1)
    await writer.update("ns", "a", {"observedGeneration": 1}, [throttled])
    doc = writer.known("ns", "a") or {}
    assert (cond.find(doc["conditions"], cond.READY) or {})["reason"] == cond.REASON_THROTTLED
    assert (cond.find(doc["conditions"], cond.RECONCILING) or {})["status"] == cond.TRUE
    patches = len(kube.patches)
    assert not await writer.update("ns", "a", {"state": "active"}, [active])
    assert len(kube.patches) == patches
    ok = cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok", generation=1)
    await writer.update("ns", "a", None, [ok])
    doc = writer.known("ns", "a") or {}
    assert (cond.find(doc["conditions"], cond.READY) or {})["reason"] == cond.REASON_ACTIVE
    assert (cond.find(doc["conditions"], cond.RECONCILING) or {})["status"] == cond.FALSE


def test_writer_seeds_the_observation_from_a_restarted_status() -> None:
    writer = StatusWriter(FakeKube())
    blocked = cond.make(cond.READY, cond.FALSE, cond.REASON_QUOTA_EXCEEDED, "raise it")
    writer.seed("ns", "a", {"conditions": [blocked]})
    assert (writer.observed("ns", "a") or {})["reason"] == cond.REASON_QUOTA_EXCEEDED
    copied = cond.make(cond.READY, cond.FALSE, cond.REASON_INVALID_SPEC, "a copy of Synced")
    writer.seed("ns", "b", {"conditions": [copied]})
    assert writer.observed("ns", "b") is None


def test_batchop_status_shows_the_cause_on_the_job_row() -> None:
    from batchop.cli import statustable

    message = "job ns_a:job-1 cannot start: pool pool-1 got no node; raise the dedicated core quota ..."
    obj = {
        "metadata": {"name": "a", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedule": {"recurrenceInterval": "PT1H"}},
        "status": {
            "state": "active",
            "recentJob": {"id": "ns_a:job-1", "state": "active", "creationTime": CREATED, "waitingSince": CREATED},
            "conditions": [cond.make(cond.READY, cond.FALSE, cond.REASON_QUOTA_EXCEEDED, message),
                           cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "ok")],
        },
    }
    text = statustable.render([obj], now=T0 + timedelta(minutes=12))
    job_row = next(line for line in text.splitlines() if line.strip().startswith("ns_a:job-1"))
    assert "QuotaExceeded, waiting 12m" in job_row
    assert f"! Ready False (QuotaExceeded): {message}" in text
    schedule_row = text.splitlines()[1]
    assert "QuotaExceeded, waiting 12m" in schedule_row
