"""One poller per Batch account: mirrors Batch into status, emits Events, puts drift back.

Every ``resync_interval`` seconds (default 30) one cycle does, for all the account's resources at once:

1. ``GET /jobschedules`` with ``$select`` (and an ``id eq`` ``$filter`` when few are tracked): one
   request per page of 1000, whatever the number of resources;
2. ``GET /jobs`` with ``$filter=state ne 'completed'`` and ``$select``: the running jobs, one request per
   page; a recent job that is not running and not yet known as completed is read once (``GET /jobs/{id}``),
   so that costs one request per job *transition*, not per schedule per cycle;
3. ``GET /jobs/{id}/taskcounts`` for jobs that changed state, plus at most ``task_count_refreshes``
   running jobs per cycle (round-robin), so counts of long jobs move without a request per job per cycle;
4. ``GET /pools`` with ``$select`` (and ``id eq`` filters when few), only when a recent job has a pool.

At steady state (nothing running, nothing changing) a cycle is 2 requests (schedules + jobs), plus 1
for pools when auto pools exist. Each resource's status is computed with
:func:`batchop.controller.status.observed_status`
and patched only when it changed (``lastSyncTime`` is refreshed at most every ``sync_heartbeat``).

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
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT
from batchop.batch.gateway import BatchError, Gateway
from batchop.controller import history as hist
from batchop.controller import status as st
from batchop.controller.reconcile import ObjectView, owns
from batchop.observability import memory
from batchwire import timestamps

log = logging.getLogger(__name__)

SCHEDULE_SELECT = ["id", "state", "eTag", "lastModified", "executionInfo", "metadata", "schedule", "jobSpecification"]
JOB_SELECT = ["id", "state", "creationTime", "stateTransitionTime", "executionInfo"]
POOL_SELECT = ["id", "state", "allocationState", "currentDedicatedNodes", "currentLowPriorityNodes"]
MAX_ID_FILTER = 10
MIRROR_CONCURRENCY = 16
"""Members mirrored at once in a cycle (each may patch status, post Events, or repair drift)."""


@dataclass
class Tracked:
    """One resource the poller mirrors (kept up to date by the handlers)."""

    namespace: str
    name: str
    uid: str
    generation: int
    endpoint_key: str
    schedule_id: str | None
    policy: str = "manage"
    suspend: bool = False
    desired: dict[str, Any] | None = None
    deleting: bool = False
    synced_reason: str | None = None
    last_sync: datetime | None = None
    retry_delay: float = 0.0  # backoff of retries after recoverable errors (the runtime's _retry)
    retry_at: float = 0.0
    retry_version: str | None = None
    adopt: bool = False
    history: hist.Limits | None = None  # spec.successfulJobsHistoryLimit / failedJobsHistoryLimit
    in_sync_etag: str | None = None
    """The schedule's ETag when it was last found equal to ``desired`` (reset when ``desired`` changes): an
    idle cycle skips normalising and comparing the bodies of schedules whose ETag did not move."""
    version: int = 0
    """Odd while a reconcile or delete of the resource runs, bumped again when it ends (a sequence lock):
    a cycle mirrors and drift-checks a member only if this did not move since its listing started, so a
    create or edit racing with the listing is never taken for drift nor mirrored from a stale page."""

    @property
    def busy(self) -> bool:
        return self.version % 2 == 1

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def view(self) -> ObjectView:
        annotations = {ANNOTATION_ADOPT: "true"} if self.adopt else {}
        return ObjectView(self.namespace, self.name, self.uid, self.generation, {}, annotations)


@dataclass
class CycleReport:
    """What one cycle did: requests sent, patches, drift repairs, events."""

    requests: int = 0
    patched: int = 0
    drift: list[str] = field(default_factory=list)
    events: int = 0
    skipped: int = 0
    error: str | None = None


# retried by the poller each cycle: reasons that can clear without a spec change
RETRY_REASONS = frozenset(
    {
        "AuthenticationFailed",
        "CredentialsNotFound",
        "AlreadyExists",
        "BatchUnavailable",
        "Throttled",
        "Conflict",
        "QuotaReached",
        "BatchError",
        "KubernetesUnavailable",
    }
)


def _id_filter(ids: list[str]) -> str | None:
    if not ids or len(ids) > MAX_ID_FILTER:
        return None
    return " or ".join("id eq '" + i.replace("'", "''") + "'" for i in sorted(set(ids)))


class Poller:
    """The status loop of one account (see the module docstring)."""

    def __init__(
        self,
        endpoint_key: str,
        *,
        gateway: Callable[[], Gateway | None],
        members: Callable[[], list[Tracked]],
        writer: Any,
        post_event: Callable[[Tracked, st.EventSpec], Awaitable[None]],
        on_drift: Callable[..., Awaitable[None]],
        on_retry: Callable[..., Awaitable[None]] | None = None,
        refresh_credentials: Callable[[], Awaitable[None]],
        changed_properties: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
        interval: float = 30.0,
        heartbeat: float = 600.0,
        task_count_refreshes: int = 20,
        renewal_due: Callable[[Tracked, Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self._renewal_due = renewal_due
        self.endpoint_key = endpoint_key
        self._gateway = gateway
        self._members = members
        self.writer = writer
        self._post_event = post_event
        self._on_drift = on_drift
        self._on_retry = on_retry or on_drift
        self._refresh_credentials = refresh_credentials
        self._changed = changed_properties
        self.interval = interval
        self.heartbeat = heartbeat
        self.task_count_refreshes = task_count_refreshes
        self._jobs: dict[str, dict[str, Any]] = {}  # job id (lower) -> last seen wire job
        self._counts: dict[str, dict[str, Any]] = {}  # job id (lower) -> task counts
        self._pools: dict[str, dict[str, Any]] = {}
        self._rr = 0
        self.history = hist.History()  # the job listing, history limits and status.recentJobs (issue 8)
        self.cycles = 0
        self.last_report: CycleReport | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next cycle now (e.g. after a create) instead of at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        await asyncio.sleep(random.uniform(0, min(2.0, self.interval / 10)))  # jitter between accounts
        while True:
            self._wake.clear()  # before the cycle: a wake() during the cycle (a create just done) runs another
            try:
                self.last_report = await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll cycle for %s failed", self.endpoint_key)
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
        gateway = self._gateway()
        if gateway is None:
            return report
        before = gateway.stats.total_requests
        try:
            await self._cycle(gateway, members, report)
        except BatchError as err:
            report.error = str(err)
            log.warning("poll of %s failed (%s): %s", self.endpoint_key, err.reason, err)
            for member in members:
                if member.synced_reason in RETRY_REASONS and not member.deleting and member.policy != "skip":
                    await self._on_retry(member, f"retry after {member.synced_reason}")
        report.requests = gateway.stats.total_requests - before
        self.cycles += 1
        return report

    async def _cycle(self, gateway: Gateway, members: list[Tracked], report: CycleReport) -> None:
        versions = {id(m): m.version for m in members}  # before the listing (see Tracked.version)
        ids = [m.schedule_id for m in members if m.schedule_id]
        schedules = {
            s["id"].lower(): s
            for s in await gateway.list_schedules(filter=_id_filter(ids), select=SCHEDULE_SELECT)  # type: ignore[arg-type]
            if s.get("id")
        }

        # jobs: running ones in one list; recent ones that stopped running read once
        # one listing: the running jobs, plus those completed since the last one
        # (history limits, batchop.controller.history)
        listed = await self.history.list_jobs(gateway, ids, select=JOB_SELECT)  # type: ignore[arg-type]
        running = {j["id"].lower(): j for j in listed if j.get("state") != "completed"}
        finished = {j["id"].lower(): j for j in listed if j.get("state") == "completed"}
        recent_ids: dict[str, str] = {}
        for member in members:
            schedule = schedules.get((member.schedule_id or "").lower())
            rid = self.history.recent_job_id(member.schedule_id, schedule)  # a newer run-now job counts too
            if rid:
                recent_ids[rid.lower()] = rid
        changed_jobs: list[str] = []
        for key, rid in recent_ids.items():
            job = running.get(key) or finished.get(key)
            previous = self._jobs.get(key)
            if job is None:
                if previous is not None and previous.get("state") == "completed":
                    continue
                job = await gateway.get_job(rid)
                if job is None:
                    continue
            if previous is None or previous.get("state") != job.get("state") or key not in self._counts:
                changed_jobs.append(key)
            self._jobs[key] = job
        for key in list(self._jobs):
            if key not in recent_ids:
                self._jobs.pop(key, None)
                self._counts.pop(key, None)
        refresh = list(changed_jobs)
        running_recent = sorted(k for k in recent_ids if k in running and k not in changed_jobs)
        if running_recent and self.task_count_refreshes > 0:
            start = self._rr % len(running_recent)
            picked = (running_recent[start:] + running_recent[:start])[: self.task_count_refreshes]
            self._rr += len(picked)
            refresh.extend(picked)
        for key in refresh:
            counts = await gateway.task_counts(self._jobs[key]["id"])
            if counts is not None:
                self._counts[key] = counts

        pool_ids = sorted(
            {str(pid) for j in self._jobs.values() if (pid := (j.get("executionInfo") or {}).get("poolId"))}
        )
        if pool_ids:
            pools = await gateway.list_pools(filter=_id_filter(pool_ids), select=POOL_SELECT)
            self._pools = {p["id"].lower(): p for p in pools if p.get("id")}

        await self.history.step(
            gateway,
            members,
            schedules,
            counts=self._counts,
            previous=lambda m: self.writer.known(m.namespace, m.name) or {},
            owned=lambda schedule, m: owns(schedule, m.view()),
        )
        now = datetime.now(UTC)

        async def mirror(member: Tracked) -> None:
            if member.busy or member.version != versions[id(member)]:
                report.skipped += 1  # reconciled meanwhile: the listing may predate it; the next cycle sees it
                return
            try:
                await self._mirror(member, schedules, now, report)
            except BatchError:
                raise
            except Exception:
                log.exception("mirroring %s/%s failed", member.namespace, member.name)

        # Status patches and drift repairs of different resources overlap (a patch is a round trip to the
        # API server), MIRROR_CONCURRENCY at a time. Chunks, not one gather of all: between two chunks a
        # reconcile waiting for the event loop (an edit) gets its turn, instead of queueing behind N mirrors.
        for start in range(0, len(members), MIRROR_CONCURRENCY):
            chunk = members[start : start + MIRROR_CONCURRENCY]
            results = await asyncio.gather(*(mirror(m) for m in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            await asyncio.sleep(0)

    async def _mirror(
        self, member: Tracked, schedules: dict[str, dict[str, Any]], now: datetime, report: CycleReport
    ) -> None:
        if not member.schedule_id:
            if member.synced_reason in RETRY_REASONS and not member.deleting and member.policy != "skip":
                await self._on_retry(member, f"retry after {member.synced_reason}")
            return
        schedule = schedules.get(member.schedule_id.lower())
        drift = None if member.deleting else self._drift(member, schedule)
        if drift:
            report.drift.append(f"{member.namespace}/{member.name}: {drift}")
            log.info("drift on %s/%s: %s", member.namespace, member.name, drift)
            await self._post_event(member, st.EventSpec("Warning", "DriftDetected", drift))
            await self._on_drift(member, drift)
            return  # the reconcile wrote status; the next cycle mirrors the repaired schedule
        if (
            schedule is not None
            and self._renewal_due is not None
            and member.policy != "skip"
            and not member.deleting
            and schedule.get("state") in ("active", "disabled")
            and self._renewal_due(member, schedule)
        ):
            await self._on_drift(member, "SAS renewal", force=("jobSpecification",))
        rid = self.history.recent_job_id(member.schedule_id, schedule)
        job = self._jobs.get(rid.lower()) if rid else None
        pool_id = ((job or {}).get("executionInfo") or {}).get("poolId")
        previous = self.writer.known(member.namespace, member.name) or {}
        fields = st.observed_status(
            schedule_id=member.schedule_id,
            schedule=schedule,
            job=job,
            task_counts=self._counts.get(rid.lower()) if rid else None,
            pool=self._pools.get(pool_id.lower()) if pool_id else None,
            previous=previous,
            generation=member.generation,
        )
        conditions = fields.pop("conditions")
        fields["recentJobs"] = self.history.recent.get(member.key) if schedule is not None else None
        candidate = {k: fields.get(k) for k in fields}
        changed = (
            any(previous.get(k) != v for k, v in candidate.items())
            or cond.find(previous.get("conditions"), cond.READY) is None
            or _cond_changed(previous, conditions[0])
        )
        stale = member.last_sync is None or now - member.last_sync > timedelta(seconds=self.heartbeat)
        if changed or stale:
            candidate["lastSyncTime"] = timestamps.seconds(now)
        if await self.writer.update(member.namespace, member.name, candidate, conditions):
            report.patched += 1
            member.last_sync = now
        for event in st.transitions(previous, candidate) if previous else []:
            report.events += 1
            await self._post_event(member, event)

    def _drift(self, member: Tracked, schedule: Mapping[str, Any] | None) -> str | None:
        if member.policy == "skip" or member.synced_reason not in (None, cond.REASON_SYNCED):
            return None
        if schedule is None:
            return f"Batch schedule {member.schedule_id} is gone; recreating it"
        if schedule.get("state") not in ("active", "disabled"):
            return None
        if not owns(schedule, member.view()):
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
