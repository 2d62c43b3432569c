"""Build the status document of a BatchJobSchedule from what Batch reports.

Who writes what (one writer per subtree, all through :class:`batchop.kube.status_writer.StatusWriter`; the
shapes are :mod:`batchop.api.types`):

- the reconcile (:mod:`batchop.controller.reconcile`, written by :mod:`batchop.controller.outcomes`):
  ``observedGeneration``, ``scheduleId``, ``sas``, ``runNow`` and the ``Synced`` condition (plus ``Ready``
  when a pass finds nothing to observe, or right after a create);
- the poller (:mod:`batchop.controller.poller`): ``state``, ``nextRunTime``, ``lastScheduleTime``,
  ``lastSuccessfulTime``, ``recentJob``, ``pool``, ``lastSyncTime`` and the ``Ready`` condition.

:func:`observed_status` is a pure function of (schedule, recent job, its task counts, its pool, the pool's node
counts, previous status), so the same Batch state always gives the same document and the poller can skip the
patch when nothing changed. :func:`transitions` derives the Kubernetes Events to emit between two documents.

**A job that cannot run.** On Azure a job whose auto pool gets no usable node does not fail: the pool carries
``resizeErrors`` (``AccountCoreQuotaReached``, ``AllocationFailed`` ...), its nodes go to ``starttaskfailed``,
and the job stays ``active``, waiting. :func:`blocked` names the cause from the pool's ``resizeErrors``, its node
counts by state (``GET /nodecounts``) and how long the job has waited without a task running, measured on
Batch's clock (:class:`Health`); ``Ready`` then turns False with ``QuotaExceeded``, ``AllocationFailed``,
``StartTaskFailed`` or ``JobStuck`` and a message that says what to do, and turns back by itself when the job
gets going.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from batchop.api import conditions as cond
from batchop.api.types import Condition, PoolStatus, RecentJob, Status
from batchop.batch import settings
from batchop.spec import failures
from batchwire import timestamps

POLLER_FIELDS = (
    "state",
    "nextRunTime",
    "lastScheduleTime",
    "lastSuccessfulTime",
    "recentJob",
    "pool",
    "lastSyncTime",
)
HANDLER_FIELDS = ("observedGeneration", "scheduleId", "sas")

JOB_FIELDS = (
    "id",
    "state",
    "creationTime",
    "startTime",
    "endTime",
    "terminateReason",
    "result",
    "taskCounts",
    "poolId",
    "schedulingError",
)
POOL_FIELDS = ("id", "state", "allocationState", "vmSize", "currentDedicatedNodes", "currentLowPriorityNodes")
NODE_STATES = (
    "creating", "starting", "waitingForStartTask", "startTaskFailed", "idle", "running", "rebooting", "reimaging",
    "leavingPool", "offline", "preempted", "unusable", "upgradingOS", "unknown",
)
"""Node states of Azure's pool node counts (``BatchNodeCounts``), in the order ``status.pool.nodeCounts`` keeps."""
QUOTA_CODES = frozenset(
    {"AccountCoreQuotaReached", "AccountLowPriorityCoreQuotaReached", "AccountSpotCoreQuotaReached"}
)
"""Resize error codes of a core quota (Azure's ``PoolResizeErrorCodes``); any other resize error is an allocation
failure."""
DEFAULT_STUCK_AFTER = settings.DEFAULTS.job_stuck_after
"""Seconds of Batch time a job may wait without a running task before it counts as stuck (``--job-stuck-after``)."""
_FAMILY = re.compile(r"family\W+([A-Za-z0-9_]+)", re.IGNORECASE)
TASK_COUNT_FIELDS = ("active", "running", "completed", "succeeded", "failed")


def job_result(job: Mapping[str, Any], task_counts: Mapping[str, Any] | None) -> str | None:
    """``success`` / ``failure`` for a completed job, None while it runs or when unknown.

    A scheduling error (e.g. the auto pool failed) or any failed task is a failure; a job that completed
    with all its tasks succeeded is a success.
    """
    if job.get("state") != "completed":
        return None
    info = job.get("executionInfo") or {}
    if info.get("schedulingError"):
        return "failure"
    if task_counts is None:
        return None
    if int(task_counts.get("failed") or 0) > 0 and not _failures_tolerated(job, task_counts):
        return "failure"
    return "success"


def _failures_tolerated(job: Mapping[str, Any], task_counts: Mapping[str, Any]) -> bool:
    """A job whose failed tasks its tasks' exit conditions let through (``onTaskFailure:
    performexitoptionsjobaction``, ``jobAction: none``, e.g. a skipped bad input of a fan-out) and that did not end
    because of one (``terminateReason`` ``TaskFailed``), with at least one task that succeeded."""
    info = job.get("executionInfo") or {}
    return (
        job.get("onTaskFailure") == "performexitoptionsjobaction"
        and info.get("terminateReason") != "TaskFailed"
        and int(task_counts.get("succeeded") or 0) > 0
    )


def with_failure_mode(job: Mapping[str, Any] | None, schedule: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The job with its ``onTaskFailure`` for :func:`job_result`: the poller's job listing selects it, but a job
    read another way (history's listing, an older capture) may lack it, and a scheduled job then takes its
    schedule's (``jobSpecification.onTaskFailure``)."""
    if job is None or "onTaskFailure" in job:
        return job
    mode = ((schedule or {}).get("jobSpecification") or {}).get("onTaskFailure")
    return {**job, "onTaskFailure": mode} if mode else job


def task_tally(job: Mapping[str, Any]) -> str:
    """``7 tasks, 1 failed`` for a job's Events (empty without task counts)."""
    counts = job.get("taskCounts") or {}
    if not counts:
        return ""
    total = int(counts.get("completed") or 0) + int(counts.get("active") or 0) + int(counts.get("running") or 0)
    return f"{total} task{'s' if total != 1 else ''}, {int(counts.get('failed') or 0)} failed"


def recent_job(
    job: Mapping[str, Any] | None,
    task_counts: Mapping[str, Any] | None,
    job_id: str | None = None,
    failed: Mapping[str, Any] | None = None,
) -> RecentJob | None:
    """The ``status.recentJob`` subtree from a wire job (or just its id when only that is known).

    ``failed`` (``{failedTasks, failedTaskCount}``, read once when the job failed) names the failed tasks of a
    failed job, so that its status says which task failed and why without another request."""
    if job is None:
        return {"id": job_id} if job_id else None
    info = job.get("executionInfo") or {}
    out: dict[str, Any] = {
        "id": job.get("id"),
        "state": job.get("state"),
        "creationTime": job.get("creationTime"),
        "startTime": info.get("startTime"),
        "endTime": info.get("endTime"),
        "terminateReason": info.get("terminateReason"),
        "result": job_result(job, task_counts),
        "poolId": info.get("poolId"),
    }
    if task_counts is not None:
        out["taskCounts"] = {k: int(task_counts.get(k) or 0) for k in TASK_COUNT_FIELDS}
    error = info.get("schedulingError")
    if isinstance(error, Mapping):
        out["schedulingError"] = {k: error.get(k) for k in ("category", "code", "message") if error.get(k) is not None}
    if failed and out["result"] == "failure" and failed.get("failedTasks"):
        out["failedTasks"] = list(failed["failedTasks"])
        out["failedTaskCount"] = failed.get("failedTaskCount")
    return cast(RecentJob, {k: v for k, v in out.items() if v is not None})


@dataclass(frozen=True)
class Health:
    """What the poller knows about the recent job's pool beyond the job itself: the pool's entry of ``GET
    /nodecounts``, one node whose start task failed (read once), Batch's clock, the stuck threshold, the account,
    and the resource (``(namespace, name)``, for the ``batchop logs`` command a message names)."""

    counts: Mapping[str, Any] | None = None
    failed_node: Mapping[str, Any] | None = None
    now: datetime | None = None
    stuck_after: float = DEFAULT_STUCK_AFTER
    account: str = ""
    resource: tuple[str, str] | None = None


def node_counts(entry: Mapping[str, Any] | None) -> dict[str, dict[str, int]] | None:
    """``{dedicated: {state: n}, lowPriority: {state: n}}`` with only the states that have nodes, plus ``total``."""
    if entry is None:
        return None
    out: dict[str, dict[str, int]] = {}
    for kind in ("dedicated", "lowPriority"):
        raw = entry.get(kind) or {}
        counts = {state: int(raw.get(state) or 0) for state in NODE_STATES if int(raw.get(state) or 0) > 0}
        counts["total"] = int(raw.get("total") or sum(counts.values()))
        out[kind] = counts
    return out


def _nodes(counts: Mapping[str, Mapping[str, int]] | None, state: str) -> int:
    return sum(int((counts or {}).get(kind, {}).get(state) or 0) for kind in ("dedicated", "lowPriority"))


def pool_status(pool: Mapping[str, Any] | None, counts: Mapping[str, Any] | None = None) -> PoolStatus | None:
    """``status.pool``: the pool's state and size, its ``resizeErrors`` (code and message) and, when the poller
    read them, its node counts by state."""
    if pool is None:
        return None
    out: dict[str, Any] = {k: pool.get(k) for k in POOL_FIELDS if pool.get(k) is not None}
    errors = [{k: e[k] for k in ("code", "message") if e.get(k)} for e in pool.get("resizeErrors") or []]
    if errors:
        out["resizeErrors"] = errors
    shown = node_counts(counts)
    if shown is not None:
        out["nodeCounts"] = shown
    return cast(PoolStatus, out)


def waiting_since(job: Mapping[str, Any] | None, task_counts: Mapping[str, Any] | None,
                  counts: Mapping[str, Any] | None = None) -> str | None:
    """When the active job started waiting without any task having run (its creation), None when a task runs
    or ran, or the job is not active. Node counts showing a running node count as a task running."""
    if job is None or job.get("state") != "active" or task_counts is None:
        return None
    if int(task_counts.get("running") or 0) > 0 or int(task_counts.get("completed") or 0) > 0:
        return None
    if _nodes(node_counts(counts), "running") > 0:
        return None
    created = job.get("creationTime") or (job.get("executionInfo") or {}).get("startTime")
    return str(created) if created else None


def _family(error: Mapping[str, Any], vm_size: str) -> str:
    for item in error.get("values") or []:
        if "family" in str(item.get("name", "")).lower() and item.get("value"):
            return str(item["value"])
    found = _FAMILY.search(str(error.get("message") or ""))
    return found.group(1) if found else f"of VM size {vm_size}"


def _quota_advice(error: Mapping[str, Any], pool: Mapping[str, Any], account: str) -> str:
    vm_size = str(pool.get("vmSize") or "?")
    if error.get("code") == "AccountCoreQuotaReached":
        what = f"the dedicated core quota for family {_family(error, vm_size)} of Batch account {account}"
    else:
        what = f"the low-priority/Spot core quota of Batch account {account}"
    return (f"Raise {what} (Azure portal: the Batch account's Quotas; a quota request), or use a VM size of "
            "another family; the job starts by itself once the pool can grow")


def blocked(job: Mapping[str, Any], pool: Mapping[str, Any] | None, health: Health, since: str) -> Condition | None:
    """Why the waiting ``job`` cannot run, as a ``Ready=False`` condition, None when nothing says it cannot (yet).

    In order: every node's start task failed; a core quota (resize error); another resize error; waiting longer
    than ``health.stuck_after`` seconds of Batch time."""
    jid, pool = job.get("id"), pool or {}
    pid = pool.get("id") or (job.get("executionInfo") or {}).get("poolId") or "?"
    counts = node_counts(health.counts)
    total = _nodes(counts, "total")
    if total > 0 and _nodes(counts, "startTaskFailed") == total:
        node = health.failed_node or {}
        nid = node.get("id") or "NODE"
        info = ((node.get("startTaskInfo") or {}).get("failureInfo") or {})
        cause = f" ({info.get('code')}: {info.get('message')})" if info.get("code") else ""
        return cond.make(cond.READY, cond.FALSE, cond.REASON_START_TASK_FAILED,
                         f"job {jid} cannot start: the start task failed on all {total} node(s) of pool {pid}{cause}. "
                         f"Read its stderr on node {nid}: {_start_task_logs(health.resource)} (without batchop: "
                         f"az batch node file download --pool-id {pid} --node-id {nid} --file-path "
                         "startup/stderr.txt --destination stderr.txt); then fix "
                         "jobSpecification.poolInfo.autoPoolSpecification.pool.startTask")
    errors = pool.get("resizeErrors") or []
    quota = next((e for e in errors if e.get("code") in QUOTA_CODES), None)
    if quota is not None:
        return cond.make(cond.READY, cond.FALSE, cond.REASON_QUOTA_EXCEEDED,
                         f"job {jid} cannot start: pool {pid} got no node ({quota.get('code')}: "
                         f"{quota.get('message')}). {_quota_advice(quota, pool, health.account)}")
    if errors:
        first = errors[0]
        return cond.make(cond.READY, cond.FALSE, cond.REASON_ALLOCATION_FAILED,
                         f"job {jid} cannot start: Batch could not allocate nodes for pool {pid} ({first.get('code')}: "
                         f"{first.get('message')}). Choose another VM size (now {pool.get('vmSize') or '?'}) or "
                         "region, or wait for capacity; the job starts by itself once the pool gets nodes")
    waited = _waited(since, health.now)
    if waited is not None and waited > health.stuck_after:  # the message stays the same while it waits
        return cond.make(cond.READY, cond.FALSE, cond.REASON_JOB_STUCK,
                         f"job {jid} has waited more than {_duration(health.stuck_after)} of Batch time "
                         f"(--job-stuck-after) without a running task, since {since}; pool {pid} "
                         f"({_nodes(counts, 'total')} node(s), see status.pool.nodeCounts). Check the pool's nodes "
                         "and the job's tasks, or terminate the job so that the next one can start")
    return None


def _start_task_logs(resource: tuple[str, str] | None) -> str:
    """The ``batchop logs`` command that prints the start task's stderr (:mod:`batchop.cli.commands.logs`)."""
    namespace, name = resource or ("NAMESPACE", "NAME")
    return f"batchop logs {name} -n {namespace} --start-task"


def _waited(since: str, now: datetime | None) -> float | None:
    if now is None:
        return None
    try:
        return (now - timestamps.parse(since)).total_seconds()
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def ready_condition(schedule: Mapping[str, Any] | None, schedule_id: str, generation: int | None) -> Condition:
    """``Ready`` from the schedule's Batch state."""
    if schedule is None:
        return cond.make(
            cond.READY,
            cond.FALSE,
            cond.REASON_NOT_FOUND,
            f"Batch has no schedule {schedule_id}",
            generation=generation,
        )
    state = schedule.get("state")
    if state == "active":
        return cond.make(
            cond.READY, cond.TRUE, cond.REASON_ACTIVE, f"schedule {schedule_id} is active", generation=generation
        )
    if state == "disabled":
        return cond.make(
            cond.READY,
            cond.TRUE,
            cond.REASON_SUSPENDED,
            f"schedule {schedule_id} is disabled (suspended)",
            generation=generation,
        )
    if state == "completed":
        return cond.make(
            cond.READY, cond.TRUE, cond.REASON_COMPLETED, f"schedule {schedule_id} has completed", generation=generation
        )
    reason = cond.REASON_TERMINATING if state == "terminating" else cond.REASON_DELETING
    return cond.make(cond.READY, cond.FALSE, reason, f"schedule {schedule_id} is {state}", generation=generation)


def observed_status(
    *,
    schedule_id: str,
    schedule: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
    task_counts: Mapping[str, Any] | None,
    pool: Mapping[str, Any] | None,
    previous: Mapping[str, Any],
    generation: int | None = None,
    failed: Mapping[str, Any] | None = None,
    health: Health | None = None,
) -> Status:
    """The poller-owned status fields (see the module docstring) plus the ``Ready`` condition as
    ``{"conditions": [ready]}``; ``lastSyncTime`` is left to the caller. ``failed``: the recent job's failed
    tasks (:func:`recent_job`); ``health``: the pool's node counts and Batch's clock (:func:`blocked`)."""
    out: Status = {}
    ready = ready_condition(schedule, schedule_id, generation)
    if schedule is not None:
        info = schedule.get("executionInfo") or {}
        out["state"] = schedule.get("state")
        out["nextRunTime"] = info.get("nextRunTime")
        recent_id = (info.get("recentJob") or {}).get("id")
        rj = recent_job(with_failure_mode(job, schedule), task_counts, recent_id, failed)
        since = waiting_since(job, task_counts, health.counts if health else None)
        if rj is not None and since:
            rj["waitingSince"] = since
            why = blocked(job or {}, pool, health or Health(), since) if schedule.get("state") != "deleting" else None
            if why is not None:
                ready = cond.make(cond.READY, cond.FALSE, why["reason"], why.get("message", ""), generation=generation)
        out["recentJob"] = rj
        out["lastScheduleTime"] = (rj.get("creationTime") if rj else None) or previous.get("lastScheduleTime")
        last_ok = previous.get("lastSuccessfulTime")
        if rj and rj.get("result") == "success" and rj.get("endTime"):
            last_ok = rj["endTime"]
        out["lastSuccessfulTime"] = last_ok
        out["pool"] = (
            pool_status(pool, health.counts if health else None) if pool is not None
            else (previous.get("pool") if rj and rj.get("poolId") else None)
        )
    else:
        out["state"] = None
        out["nextRunTime"] = None
    out["conditions"] = [ready]
    return out


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to emit: ``type`` Normal/Warning, ``reason``, ``message``."""

    type: str
    reason: str
    message: str


def readiness_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[EventSpec]:
    """Events between two observed ``Ready`` conditions: a Warning with the cause (its reason, the message that
    says what to do) when the job cannot run or the cause changes; ``JobRecovered`` when it clears."""
    old_reason, reason = (old or {}).get("reason"), new.get("reason")
    if reason in cond.JOB_BLOCKED_REASONS and reason != old_reason:
        return [EventSpec("Warning", str(reason), str(new.get("message") or ""))]
    if old_reason in cond.JOB_BLOCKED_REASONS and reason not in cond.JOB_BLOCKED_REASONS:
        return [EventSpec("Normal", "JobRecovered", f"the job is no longer blocked ({old_reason} cleared): "
                                                     f"{new.get('message') or reason}")]
    return []


def transitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[EventSpec]:
    """Events between two status documents: job started, job succeeded / failed, schedule completed."""
    events: list[EventSpec] = []
    old_job = old.get("recentJob") or {}
    new_job = new.get("recentJob") or {}
    if new_job.get("id") and new_job.get("id") != old_job.get("id"):
        events.append(EventSpec("Normal", "JobStarted", f"Batch started job {new_job['id']}"))
        old_job = {}
    if new_job.get("result") and new_job.get("result") != old_job.get("result"):
        if new_job["result"] == "success":
            tally = task_tally(new_job)  # a fan-out job may succeed with failed tasks its exit conditions skipped
            events.append(EventSpec("Normal", "JobSucceeded", f"job {new_job.get('id')} succeeded"
                                    + (f" ({tally})" if tally else "")))
        else:
            detail = failures.job_detail(new_job)  # names the failed tasks and how many ("(and 2 more)")
            events.append(EventSpec("Warning", "JobFailed", f"job {new_job.get('id')} failed: {detail}"))
    if new.get("state") == "completed" and old.get("state") != "completed":
        events.append(EventSpec("Normal", "ScheduleCompleted", "the Batch schedule has completed"))
    return events
