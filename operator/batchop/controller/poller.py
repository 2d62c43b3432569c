"""One poller per Batch account: mirrors Batch into status, emits Events, puts drift back.

Every ``resync_interval`` seconds (default 30) one cycle does, for all the account's resources at once:

1. ``GET /jobschedules`` with ``$select`` (and an ``id eq`` ``$filter`` when few are tracked): one
   request per page of 1000, whatever the number of resources. The listing leaves out ``schedule`` and
   ``jobSpecification`` (most of a schedule's size): a schedule whose ETag has not moved since it was found
   equal to the desired body holds the desired ones; the few others are read whole (``GET``), or all are
   listed whole once when there are many (the first cycle after a restart);
2. ``GET /jobs`` with ``$filter=state ne 'completed'`` and ``$select``: the running jobs, one request per
   page; a recent job that is not running and not yet known as completed is read once (``GET /jobs/{id}``),
   so that costs one request per job *transition*, not per schedule per cycle;
3. ``GET /jobs/{id}/taskcounts`` for jobs that changed state, plus at most ``task_count_refreshes``
   running jobs per cycle (round-robin), so counts of long jobs move without a request per job per cycle;
4. ``GET /pools`` with ``$select`` (and ``id eq`` filters when few), only when a recent job has a pool;
5. ``GET /jobs/{id}/tasks?$filter=executionInfo/result eq 'failure'&$select=id,executionInfo&maxresults=3``
   once for a recent job that just failed with failed tasks, so that ``status.recentJob.failedTasks`` and the
   ``JobFailed`` Event name the first failed task and its cause (a status that already names them, after a
   restart, is reused instead).

At steady state (nothing running, nothing changing) a cycle is 2 requests (schedules + jobs), plus 1
for pools when auto pools exist. Each resource's status is computed with
:func:`batchop.controller.status.observed_status`
and patched only when it changed (``lastSyncTime`` is refreshed at most every ``sync_heartbeat``, and at most
``heartbeat_rate`` such refreshes a second for all the operator's resources: see :meth:`Poller.heartbeat_period`).
A resource at rest is not even computed again: when its inputs are those of a cycle that changed nothing, the
cycle skips it (:meth:`Poller.mirror_inputs`).

Drift: a managed schedule that is missing, or whose normalised ``schedule`` / ``jobSpecification`` /
``metadata`` differ from the last desired body, or whose enabled/disabled state differs from
``spec.suspend``, triggers a reconcile of that resource (through the ``on_drift`` callback) in the same
cycle: so a change behind the operator's back is undone within one resync interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.api.types import Condition, Status
from batchop.batch.gateway import BatchError, GatewayStats
from batchop.batch.settings import account_from_endpoint
from batchop.controller import history as hist
from batchop.controller import status as st
from batchop.controller.poolhealth import PoolHealth
from batchop.controller.reconcile.ownership import owns
from batchop.controller.tracking import Tracked
from batchop.controller.turns import chunks, turns
from batchop.kube.status_writer import StatusWriter
from batchop.observability import memory
from batchop.spec import failures
from batchwire import timestamps

log = logging.getLogger(__name__)

SCHEDULE_SELECT = ["id", "state", "eTag", "lastModified", "executionInfo", "metadata", "schedule", "jobSpecification"]
SCHEDULE_SELECT_SLIM = ["id", "state", "eTag", "lastModified", "executionInfo", "metadata"]
"""Each cycle's listing: without ``schedule`` and ``jobSpecification``, most of each schedule's size. A schedule
whose ETag is the one under which it was last found equal to the desired body (``Tracked.in_sync_etag``) holds
the desired ``schedule`` and ``jobSpecification``; the others are read whole (:data:`FULL_READS_MAX`)."""
FULL_READS_MAX = 50
"""Schedules read whole one by one (``GET``) in a cycle at most; more than that (after a restart nothing is known
in sync) and the cycle lists them all whole once instead."""
JOB_SELECT = ["id", "state", "creationTime", "stateTransitionTime", "executionInfo", "onTaskFailure"]
POOL_SELECT = ["id", "state", "allocationState", "vmSize", "currentDedicatedNodes", "currentLowPriorityNodes",
               "resizeErrors"]
MAX_ID_FILTER = 10
MIRROR_CONCURRENCY = 16
"""Members mirrored at once in a cycle (each may patch status, post Events, or repair drift)."""


class PollGateway(hist.HistoryGateway, Protocol):
    """The Batch calls of a poll cycle (:class:`batchop.batch.gateway.Gateway` has them all)."""

    stats: GatewayStats

    async def list_schedules(
        self, *, filter: str | None = None, select: list[str] | None = None
    ) -> list[dict[str, Any]]: ...
    async def list_pools(
        self, *, filter: str | None = None, select: list[str] | None = None
    ) -> list[dict[str, Any]]: ...
    async def get_job(self, job_id: str) -> dict[str, Any] | None: ...
    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None: ...
    async def list_tasks(
        self, job_id: str, *, filter: str | None = None, select: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]: ...


PostEvent = Callable[[Tracked, st.EventSpec], Awaitable[None]]


class OnDrift(Protocol):
    """Reconcile the member now (drift, SAS renewal), PATCHing the ``force`` properties even when equal."""

    async def __call__(self, member: Tracked, why: str, force: tuple[str, ...] = ()) -> None: ...


OnRetry = Callable[[Tracked, str], Awaitable[None]]
OnRefused = Callable[[list[Tracked]], Awaitable[None]]
"""Batch refused the poller's credential: given the members polled with it."""
RenewalDue = Callable[[Tracked, Mapping[str, Any]], bool]


@dataclass
class CycleReport:
    """What one cycle did: requests sent, patches, drift repairs, events."""

    requests: int = 0
    patched: int = 0
    drift: list[str] = field(default_factory=list)
    events: int = 0
    skipped: int = 0
    unchanged: int = 0
    """Members whose status was not computed again: the same inputs as a cycle that changed nothing."""
    error: str | None = None


# retried by the poller each cycle: reasons that can clear without a spec change
RETRY_REASONS = frozenset(
    {
        cond.REASON_AUTHENTICATION_FAILED,
        cond.REASON_CREDENTIALS_NOT_FOUND,
        cond.REASON_ALREADY_EXISTS,
        cond.REASON_BATCH_UNAVAILABLE,
        cond.REASON_THROTTLED,
        cond.REASON_CONFLICT,
        cond.REASON_QUOTA_REACHED,
        cond.REASON_ACTIVE_JOB_QUOTA,
        cond.REASON_BATCH_ERROR,
        cond.REASON_KUBERNETES_UNAVAILABLE,
    }
)


def _id_filter(ids: list[str]) -> str | None:
    if not ids or len(ids) > MAX_ID_FILTER:
        return None
    return " or ".join("id eq '" + i.replace("'", "''") + "'" for i in sorted(set(ids)))


def _retry_due(member: Tracked) -> bool:
    return member.synced_reason in RETRY_REASONS and not member.deleting and member.policy != "skip"


class Poller:
    """The status loop of one account (see the module docstring)."""

    def __init__(
        self,
        endpoint_key: str,
        *,
        gateway: Callable[[], PollGateway | None],
        members: Callable[[], list[Tracked]],
        writer: StatusWriter,
        post_event: PostEvent,
        on_drift: OnDrift,
        on_retry: OnRetry | None = None,
        refresh_credentials: Callable[[], Awaitable[None]],
        changed_properties: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
        interval: float = 30.0,
        heartbeat: float = 600.0,
        heartbeat_rate: float = 2.0,
        resources: Callable[[], int] | None = None,
        task_count_refreshes: int = 20,
        renewal_due: RenewalDue | None = None,
        stuck_after: float = st.DEFAULT_STUCK_AFTER,
        account: str | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._renewal_due = renewal_due
        self._on_refused = on_refused
        self.endpoint_key = endpoint_key
        self._gateway = gateway
        self._members = members
        self.writer = writer
        self._post_event = post_event
        self._on_drift = on_drift
        self._on_retry: OnRetry = on_retry or on_drift
        self._refresh_credentials = refresh_credentials
        self._changed = changed_properties
        self.interval = interval
        self.heartbeat = heartbeat
        self.heartbeat_rate = heartbeat_rate
        self._resources = resources or (lambda: len(self._members()))
        self.task_count_refreshes = task_count_refreshes
        self._jobs: dict[str, dict[str, Any]] = {}  # job id (lower) -> last seen wire job
        self._counts: dict[str, dict[str, Any]] = {}  # job id (lower) -> task counts
        self._pools: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, dict[str, Any]] = {}  # job id (lower) -> {failedTasks, failedTaskCount}
        self._failures_due: set[str] = set()  # recent jobs (lower) whose result is to be checked for failed tasks
        self._unfinished: set[str] = set()  # recent jobs (lower) last seen not completed
        # this cycle's most recent job of each schedule (see _recent_job_ids): schedule id, as the member holds
        # it -> the job's id in lower case ("" when none)
        self._recent: dict[str, str] = {}
        self._recent_ids: dict[str, str] = {}  # this cycle's recent jobs: id (lower) -> id
        self._job_members: dict[str, Tracked] = {}  # recent job id (lower) -> its member, this cycle
        # schedule id (lower) -> (ETag, schedule, jobSpecification) of observe-only members (never in sync)
        self._bodies: dict[str, tuple[str, Any, Any]] = {}
        # node counts of active jobs' pools, a failed start task's node, Batch's clock (batchop.controller.poolhealth)
        account = account or account_from_endpoint(endpoint_key) or endpoint_key  # named in QuotaExceeded
        self.pool_health = PoolHealth(stuck_after=stuck_after, account=account)
        self._rr = 0
        self.history = hist.History()  # the job listing, history limits and status.recentJobs
        self.cycles = 0
        self._quiet = 0  # consecutive cycles that changed nothing
        self.last_report: CycleReport | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next cycle now (e.g. after a create) instead of at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, min(2.0, self.interval / 10)))  # jitter between accounts
        while True:
            self._wake.clear()  # before the cycle: a wake() during the cycle (a create just done) runs another
            quiet = False
            try:
                report = self.last_report = await self.cycle()
                quiet = not (report.patched or report.drift or report.events or report.error or report.skipped)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll cycle for %s failed", self.endpoint_key)
            self._quiet = self._quiet + 1 if quiet else 0
            if self._quiet >= 2:  # at rest (a burst's tasks and buffers gone): long-lived state out of collections
                memory.settle(len(self._members()))
            memory.release()  # a burst's freed buffers back to the OS (at most once a minute)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass

    async def cycle(self) -> CycleReport:
        report = CycleReport()
        members = [m for m in self._members() if m.endpoint_key == self.endpoint_key]
        if not members:
            return report
        try:
            await self._refresh_credentials()
        except Exception as exc:  # a missing secret must not stop the others' status
            log.warning("credential refresh for %s failed: %s", self.endpoint_key, exc)
        members = [m for m in self._members() if m.endpoint_key == self.endpoint_key]  # the refresh may move some
        gateway = self._gateway()
        if gateway is None or not members:
            return report
        before = gateway.stats.total_requests
        try:
            await self._cycle(gateway, members, report)
        except BatchError as err:
            report.error = str(err)
            log.warning("poll of %s failed (%s): %s", self.endpoint_key, err.reason, err)
            if err.reason == cond.REASON_AUTHENTICATION_FAILED and self._on_refused is not None:
                await self._on_refused(members)  # their key: each member shows the refusal, or moves to a new key
            else:
                for member in members:
                    if _retry_due(member):
                        await self._on_retry(member, f"retry after {member.synced_reason}")
        report.requests = gateway.stats.total_requests - before
        self.cycles += 1
        return report

    async def _cycle(self, gateway: PollGateway, members: list[Tracked], report: CycleReport) -> None:
        versions = {id(m): m.version for m in members}  # before the listing (see Tracked.version)
        ids = [m.schedule_id for m in members if m.schedule_id]
        listed = await gateway.list_schedules(filter=_id_filter(ids), select=SCHEDULE_SELECT_SLIM)
        schedules = {s["id"].lower(): s for s in listed if s.get("id")}
        await self._complete(gateway, members, schedules, ids)
        # one listing: the running jobs, plus those completed since the last one (batchop.controller.history)
        jobs = await self.history.list_jobs(gateway, ids, select=JOB_SELECT)
        running = {j["id"].lower(): j for j in jobs if j.get("state") != "completed"}
        recent_ids = self._recent_job_ids(members, schedules)
        changed = await self._update_jobs(gateway, jobs, running, recent_ids)
        refreshed = await self._refresh_counts(gateway, running, recent_ids, changed)
        self._failures_due.update(refreshed)
        await self._read_failures(gateway)
        await self._list_pools(gateway)
        await self.pool_health.read(gateway, self._jobs)
        await self.history.step(
            gateway,
            members,
            schedules,
            counts=self._counts,
            previous=lambda m: self.writer.known(m.namespace, m.name) or {},
            owned=self.owned,
            recent_job=self._recent_job,
        )
        await self._mirror_all(members, versions, schedules, report)

    async def _complete(
        self, gateway: PollGateway, members: list[Tracked], schedules: dict[str, dict[str, Any]], ids: list[str]
    ) -> None:
        """Give every listed schedule of a member its ``schedule`` and ``jobSpecification`` (the slim listing
        leaves them out): the desired ones when its ETag says it still holds them, else Batch's, read whole."""
        stale: list[str] = []
        observing: set[str] = set()  # members never in sync by design: their bodies are kept by ETag
        for member in members:
            key = member.schedule_key
            listed = schedules.get(key) if key else None
            if listed is None or "jobSpecification" in listed:  # gone, or listed whole already
                continue
            etag = listed.get("eTag")
            desired = member.desired
            if desired is not None and etag and etag == member.in_sync_etag:
                listed["schedule"] = desired.get("schedule")
                listed["jobSpecification"] = desired.get("jobSpecification")
            elif etag and (kept := self._bodies.get(key)) is not None and kept[0] == etag:
                listed["schedule"], listed["jobSpecification"] = kept[1], kept[2]
            else:
                stale.append(str(listed["id"]))
            if member.policy == "skip" or member.desired is None:
                observing.add(key)
        if len(stale) > FULL_READS_MAX:
            whole = await gateway.list_schedules(filter=_id_filter(ids), select=SCHEDULE_SELECT)
            schedules.update({s["id"].lower(): s for s in whole if s.get("id")})
        else:
            async for schedule_id in turns(stale, every=FULL_READS_MAX):
                found = await gateway.get_schedule(schedule_id)
                if found is None:
                    schedules.pop(schedule_id.lower(), None)  # deleted since the listing
                else:
                    schedules[schedule_id.lower()] = found[0]
        self._bodies = {
            key: (str(s.get("eTag")), s.get("schedule"), s.get("jobSpecification"))
            for key in observing if (s := schedules.get(key)) is not None and s.get("eTag")
        }

    def _recent_job_ids(self, members: list[Tracked], schedules: Mapping[str, dict[str, Any]]) -> dict[str, str]:
        """The most recent job of every member's schedule: id (lower case) -> id.

        Kept for the rest of the cycle (:meth:`_recent_job`: schedule id -> job id, and the member of each job):
        the listing, the job book and the schedules do not change after this point of a cycle, and the later
        steps (failed tasks, history, mirror) each asked again for every member, which was most of their cost at
        10,000 resources. Kept by the schedule id as the member holds it (the same string each cycle, its hash
        known), with the job id in lower case beside it."""
        recent_ids: dict[str, str] = {}
        recent: dict[str, str] = {}
        job_members: dict[str, Tracked] = {}
        for member in members:
            sid = member.schedule_id
            if not sid:
                continue
            key = member.schedule_key
            rid = self.history.recent_job_id(sid, schedules.get(key), key)  # a newer run-now job counts too
            lower = rid.lower() if rid else ""
            recent[sid] = lower
            if rid:
                recent_ids[lower] = rid
                job_members[lower] = member
        self._recent, self._recent_ids, self._job_members = recent, recent_ids, job_members
        return recent_ids

    def _recent_job(self, schedule_id: str | None, schedule: Mapping[str, Any] | None) -> str | None:
        """The schedule's most recent job, as this cycle found it (asked anew for a schedule it did not)."""
        lower = self._recent.get(schedule_id) if schedule_id else None
        if lower is None:
            return self.history.recent_job_id(schedule_id, schedule)
        return self._recent_ids.get(lower) if lower else None

    async def _update_jobs(
        self,
        gateway: PollGateway,
        listed: list[dict[str, Any]],
        running: Mapping[str, dict[str, Any]],
        recent_ids: Mapping[str, str],
    ) -> list[str]:
        """Remember the recent jobs (a recent job neither listed nor known as completed is read once);
        return those whose state changed or whose task counts are not known yet."""
        finished = {j["id"].lower(): j for j in listed if j.get("state") == "completed"}
        # Only the recent jobs that can have changed are looked at (at rest: none), with set operations over
        # the thousands that cannot: one listed this cycle, one not seen yet, or one last seen not completed.
        # A completed job stays completed, and one that is not listed is read once, when it stops showing.
        jobs = self._jobs
        due = (running.keys() | finished.keys() | self._unfinished) & recent_ids.keys()
        due |= recent_ids.keys() - jobs.keys()
        changed: list[str] = []
        for key in sorted(due):  # a few at most (the jobs that ran), in the same order each time
            job = running.get(key) or finished.get(key)
            previous = jobs.get(key)
            if job is None:
                if previous is not None and previous.get("state") == "completed":
                    continue
                job = await gateway.get_job(recent_ids[key])
                if job is None:
                    continue
            if previous is None or previous.get("state") != job.get("state") or key not in self._counts:
                changed.append(key)
            if previous != job:  # unchanged: keep the copy already held (no new long-lived objects a cycle)
                jobs[key] = job
            if job.get("state") == "completed":
                self._unfinished.discard(key)
            else:
                self._unfinished.add(key)
        for key in jobs.keys() - recent_ids.keys():
            jobs.pop(key, None)
            self._counts.pop(key, None)
            self._failed.pop(key, None)
        self._unfinished.intersection_update(jobs)
        self._failures_due.intersection_update(jobs)
        return changed

    async def _refresh_counts(
        self,
        gateway: PollGateway,
        running: Mapping[str, dict[str, Any]],
        recent_ids: Mapping[str, str],
        changed: list[str],
    ) -> list[str]:
        """Task counts of the changed jobs, plus at most ``task_count_refreshes`` running ones (round-robin);
        returns the jobs whose counts were read."""
        refresh = list(changed)
        now_changed = set(changed)
        running_recent = sorted(k for k in running if k in recent_ids and k not in now_changed)
        if running_recent and self.task_count_refreshes > 0:
            start = self._rr % len(running_recent)
            picked = (running_recent[start:] + running_recent[:start])[: self.task_count_refreshes]
            self._rr += len(picked)
            refresh.extend(picked)
        for key in refresh:
            counts = await gateway.task_counts(self._jobs[key]["id"])
            if counts is not None:
                self._counts[key] = counts
        return refresh

    async def _read_failures(self, gateway: PollGateway) -> None:
        """The first failed tasks of each recent job that failed with failed tasks: one filtered, projected
        listing per job, once (a status that already names them is reused: no request after a restart).

        Only the jobs due are looked at (:attr:`_failures_due`: those whose state or task counts were read anew
        since), not every member each cycle: a job's result moves only with them. A job whose listing failed
        stays due, for the next cycle."""
        async for key in turns(sorted(self._failures_due)):
            self._failures_due.discard(key)
            job, counts, member = self._jobs.get(key), self._counts.get(key), self._job_members.get(key)
            if job is None or member is None or key in self._failed or st.job_result(job, counts) != "failure":
                continue
            failed = int((counts or {}).get("failed") or 0)
            if failed == 0:
                continue  # a scheduling error: no task ran to name
            shown = (self.writer.known(member.namespace, member.name) or {}).get("recentJob") or {}
            if str(shown.get("id", "")).lower() == key and shown.get("failedTasks"):
                self._failed[key] = {"failedTasks": shown["failedTasks"],
                                     "failedTaskCount": shown.get("failedTaskCount") or failed}
                continue
            try:
                tasks = await gateway.list_tasks(str(job["id"]), filter=failures.FAILED_FILTER,
                                                 select=list(failures.TASK_SELECT), limit=failures.SHOWN)
            except BatchError as err:
                if err.status == 404:
                    self._failed[key] = {}  # the job is gone: nothing left to name
                else:
                    self._failures_due.add(key)  # read again next cycle
                    log.warning("could not list the failed tasks of job %s: %s", job["id"], err)
                continue
            count = max(failed, len(tasks))
            self._failed[key] = {"failedTasks": failures.failed_tasks(tasks), "failedTaskCount": count}

    async def _list_pools(self, gateway: PollGateway) -> None:
        """The pools of the recent jobs, only when there are any."""
        pool_ids = [  # _id_filter sorts the few it names; no sort of thousands each cycle
            *{str(pid) for j in self._jobs.values() if (pid := (j.get("executionInfo") or {}).get("poolId"))}
        ]
        if pool_ids:
            pools = await gateway.list_pools(filter=_id_filter(pool_ids), select=POOL_SELECT)
            self._pools = {p["id"].lower(): p for p in pools if p.get("id")}

    def heartbeat_period(self) -> timedelta:
        """How long a steady resource's ``lastSyncTime`` may stay unchanged: ``heartbeat``, or longer once the
        process holds more resources than ``heartbeat_rate`` refreshes a second can serve on average
        (``resources``: every resource the process holds, every account's, since their refreshes all go to one
        API server; with shards, each replica its own)."""
        return timedelta(seconds=max(self.heartbeat, self._resources() / self.heartbeat_rate))

    async def _mirror_all(
        self,
        members: list[Tracked],
        versions: Mapping[int, int],
        schedules: Mapping[str, dict[str, Any]],
        report: CycleReport,
    ) -> None:
        """Mirror every member not reconciled since the listing started."""
        now = datetime.now(UTC)
        heartbeat = self.heartbeat_period()

        async def mirror(member: Tracked) -> None:
            if member.busy or member.version != versions[id(member)]:
                report.skipped += 1  # reconciled meanwhile: the listing may predate it; the next cycle sees it
                return
            try:
                await self._mirror(member, schedules, now, heartbeat, report)
            except BatchError:
                raise
            except Exception:
                log.exception("mirroring %s/%s failed", member.namespace, member.name)

        # Members at rest are passed over here, in one plain loop: a coroutine and a task each (in the gather
        # below) for a member with nothing to do cost more than finding that out.
        pending: list[Tracked] = []
        synced_after = now - heartbeat  # a lastSyncTime before this is due for its heartbeat
        async for chunk in chunks(members):
            for member in chunk:
                if member.busy or member.version != versions[id(member)]:
                    report.skipped += 1
                elif self._at_rest(member, schedules, synced_after):
                    report.unchanged += 1
                else:
                    pending.append(member)
        # Status patches and drift repairs of different resources overlap (a patch is a round trip to the
        # API server), MIRROR_CONCURRENCY at a time. Chunks, not one gather of all: between two chunks a
        # reconcile waiting for the event loop (an edit) gets its turn, instead of queueing behind N mirrors.
        for start in range(0, len(pending), MIRROR_CONCURRENCY):
            chunk = pending[start : start + MIRROR_CONCURRENCY]
            results = await asyncio.gather(*(mirror(m) for m in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            await asyncio.sleep(0)

    async def _mirror(
        self, member: Tracked, schedules: Mapping[str, dict[str, Any]], now: datetime, heartbeat: timedelta,
        report: CycleReport,
    ) -> None:
        if not member.schedule_id:
            if _retry_due(member):
                await self._on_retry(member, f"retry after {member.synced_reason}")
            return
        schedule = schedules.get(member.schedule_key)
        drift = None if member.deleting else self._drift(member, schedule)
        if drift:
            report.drift.append(f"{member.namespace}/{member.name}: {drift}")
            log.info("drift on %s/%s: %s", member.namespace, member.name, drift)
            await self._post_event(member, st.EventSpec("Warning", "DriftDetected", drift))
            await self._on_drift(member, drift)
            return  # the reconcile wrote status; the next cycle mirrors the repaired schedule
        if schedule is not None and self._renewal_wanted(member, schedule):
            await self._on_drift(member, "SAS renewal", force=("jobSpecification",))
        stale = member.last_sync is None or now - member.last_sync > heartbeat
        inputs = self.mirror_inputs(member, schedule)
        if not stale and inputs is not None and hist.same_inputs(member.mirrored, inputs):
            report.unchanged += 1
            return
        member.mirrored = None
        previous = self.writer.known(member.namespace, member.name) or {}
        candidate, conditions = self._observed(member, member.schedule_id, schedule, previous)
        observed = self.writer.observed(member.namespace, member.name)  # not the document's: Synced may override it
        changed = (
            any(previous.get(k) != v for k, v in candidate.items())
            or cond.find(previous.get("conditions"), cond.READY) is None
            or _cond_changed({"conditions": [observed] if observed else []}, conditions[0])
        )
        if changed or stale:
            candidate["lastSyncTime"] = timestamps.seconds(now)
        patched = await self.writer.update(member.namespace, member.name, candidate, conditions)
        if patched:
            report.patched += 1
            member.last_sync = now
        events = [*(st.transitions(previous, candidate) if previous else []),
                  *st.readiness_events(observed, conditions[0])]
        for event in events:
            report.events += 1
            await self._post_event(member, event)
        if not patched and not events:
            member.mirrored = inputs

    def _at_rest(self, member: Tracked, schedules: Mapping[str, dict[str, Any]], synced_after: datetime) -> bool:
        """Whether :meth:`_mirror` would find nothing to do for the member: no drift, no SAS renewal, no
        heartbeat due, and the inputs of a cycle that changed nothing (:meth:`mirror_inputs`). False when in
        doubt (an error here is for :meth:`_mirror` to meet and log)."""
        if member.mirrored is None or not member.schedule_id or member.last_sync is None:
            return False
        if member.last_sync < synced_after:
            return False
        try:
            schedule = schedules.get(member.schedule_key)
            if not member.deleting and self._drift(member, schedule):
                return False
            if schedule is not None and self._renewal_wanted(member, schedule):
                return False
            inputs = self.mirror_inputs(member, schedule)
            return inputs is not None and hist.same_inputs(member.mirrored, inputs)
        except Exception:
            return False

    def mirror_inputs(self, member: Tracked, schedule: Mapping[str, Any] | None) -> hist.Inputs | None:
        """Everything the member's mirrored status is computed from (:meth:`_observed`, the writer's known
        status and observed ``Ready``): values, and objects the poller and the writer keep while they do not
        change (:func:`batchop.controller.history.same_inputs`); None when the status also depends on the clock
        (the recent job is not completed: how long it has waited counts) or on a listed pool (listed anew each
        cycle).

        Why: at rest every member's status is computed, merged and compared every cycle, only to find it
        unchanged. With the same inputs as a cycle that wrote nothing and posted no Event, the result is the
        same, so the cycle skips it (``CycleReport.unchanged``); the heartbeat, drift and SAS renewal are
        checked before, as for every member."""
        sid = member.schedule_id
        key = self._recent.get(sid) if sid else None  # the recent job's id, lower case (see _recent_job_ids)
        if key is None:
            rid = self.history.recent_job_id(sid, schedule)
            key = rid.lower() if rid else ""
        job = self._jobs.get(key) if key else None
        if job is not None:
            if job.get("state") != "completed":
                return None
            if self._pools:  # none listed at rest (the auto pools went with their jobs)
                pool_id = (job.get("executionInfo") or {}).get("poolId")
                if pool_id and self._pools.get(str(pool_id).lower()) is not None:
                    return None
        listed = schedule if schedule is not None else {}
        values = (sid, schedule is None, listed.get("state"), listed.get("eTag"), listed.get("lastModified"),
                  listed.get("executionInfo"), key, member.generation)
        resource = (member.namespace, member.name)
        objects = (listed.get("jobSpecification"), job, self._counts.get(key), self._failed.get(key),
                   self.history.recent.get(resource), *self.writer.kept(resource))
        return values, objects

    def _renewal_wanted(self, member: Tracked, schedule: Mapping[str, Any]) -> bool:
        """Whether the SAS in the member's schedule must be re-minted now (a managed, live schedule only)."""
        return (
            self._renewal_due is not None
            and member.policy != "skip"
            and not member.deleting
            and schedule.get("state") in ("active", "disabled")
            and self._renewal_due(member, schedule)
        )

    def _observed(
        self, member: Tracked, schedule_id: str, schedule: Mapping[str, Any] | None, previous: Mapping[str, Any]
    ) -> tuple[Status, list[Condition]]:
        """The poller-owned status fields of the member, and its ``Ready`` condition."""
        rid = self._recent_job(schedule_id, schedule)
        job = self._jobs.get(rid.lower()) if rid else None
        pool_id = ((job or {}).get("executionInfo") or {}).get("poolId")
        fields = st.observed_status(
            schedule_id=schedule_id,
            schedule=schedule,
            job=job,
            task_counts=self._counts.get(rid.lower()) if rid else None,
            pool=self._pools.get(pool_id.lower()) if pool_id else None,
            previous=previous,
            generation=member.generation,
            failed=self._failed.get(rid.lower()) if rid else None,
            health=self.pool_health.health(pool_id, resource=(member.namespace, member.name)),
        )
        conditions = fields.pop("conditions")
        fields["recentJobs"] = self.history.recent.get(member.key) if schedule is not None else None
        return fields, conditions

    @staticmethod
    def owned(schedule: Mapping[str, Any], member: Tracked) -> bool:
        """:func:`batchop.controller.reconcile.ownership.owns`, remembered per member: a schedule with the ETag
        under which it was last found to be the member's (and ``adopt`` unchanged) still is, since its metadata,
        where the owner marks are, cannot change without a new ETag.

        Why: the drift check asks for every member every cycle, and parsing the marks into a dictionary and
        building the resource's view each time was a tenth of a status cycle at rest (10,000 resources)."""
        etag = schedule.get("eTag")
        if etag and member.owned_marks == (etag, member.adopt):
            return True
        if not owns(schedule, member.view()):
            return False
        member.owned_marks = (etag, member.adopt) if etag else None
        return True

    def _drift(self, member: Tracked, schedule: Mapping[str, Any] | None) -> str | None:
        if member.policy == "skip" or member.synced_reason not in (None, cond.REASON_SYNCED):
            return None
        if schedule is None:
            return f"Batch schedule {member.schedule_id} is gone; recreating it"
        if schedule.get("state") not in ("active", "disabled"):
            return None
        if not self.owned(schedule, member):
            return f"Batch schedule {member.schedule_id} lost its owner marks; restoring them"
        etag = schedule.get("eTag")
        if member.desired is not None and not (etag and etag == member.in_sync_etag):
            changed = self._changed(member.desired, schedule)
            if changed:
                what = ", ".join(changed)
                return f"Batch schedule {member.schedule_id} was changed outside the operator ({what}); restoring"
            member.in_sync_etag = etag  # compared equal: skip the comparison until the ETag moves
        if member.suspend and schedule.get("state") == "active":
            return f"Batch schedule {member.schedule_id} was enabled outside the operator; disabling it again"
        if not member.suspend and schedule.get("state") == "disabled":
            return f"Batch schedule {member.schedule_id} was disabled outside the operator; enabling it again"
        return None


def _cond_changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = cond.find(previous.get("conditions"), str(new["type"]))
    if old is None:
        return True
    return any(old.get(k) != new.get(k) for k in ("status", "reason", "message"))
