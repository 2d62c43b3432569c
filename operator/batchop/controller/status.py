"""Build the status document of a BatchJobSchedule from what Batch reports.

Who writes what (one writer per subtree, all through :class:`batchop.kube.status_writer.StatusWriter`; the
shapes are :mod:`batchop.api.types`):

- the reconcile (:mod:`batchop.controller.reconcile`, written by :mod:`batchop.controller.outcomes`):
  ``observedGeneration``, ``scheduleId``, ``sas``, ``runNow`` and the ``Synced`` condition (plus ``Ready``
  when a pass finds nothing to observe, or right after a create);
- the poller (:mod:`batchop.controller.poller`): ``state``, ``nextRunTime``, ``lastScheduleTime``,
  ``lastSuccessfulTime``, ``recentJob``, ``pool``, ``lastSyncTime`` and the ``Ready`` condition.

:func:`observed_status` is a pure function of (schedule, recent job, its task counts, its pool, previous
status), so the same Batch state always gives the same document and the poller can skip the patch when
nothing changed. :func:`transitions` derives the Kubernetes Events to emit between two documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from batchop.api import conditions as cond
from batchop.api.types import Condition, PoolStatus, RecentJob, Status
from batchop.spec import failures

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
POOL_FIELDS = ("id", "state", "allocationState", "currentDedicatedNodes", "currentLowPriorityNodes")
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
    if int(task_counts.get("failed") or 0) > 0:
        return "failure"
    return "success"


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


def pool_status(pool: Mapping[str, Any] | None) -> PoolStatus | None:
    if pool is None:
        return None
    return cast(PoolStatus, {k: pool.get(k) for k in POOL_FIELDS if pool.get(k) is not None})


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
) -> Status:
    """The poller-owned status fields (see the module docstring) plus the ``Ready`` condition as
    ``{"conditions": [ready]}``; ``lastSyncTime`` is left to the caller. ``failed``: the recent job's failed
    tasks (:func:`recent_job`)."""
    out: Status = {}
    if schedule is not None:
        info = schedule.get("executionInfo") or {}
        out["state"] = schedule.get("state")
        out["nextRunTime"] = info.get("nextRunTime")
        recent_id = (info.get("recentJob") or {}).get("id")
        rj = recent_job(job, task_counts, recent_id, failed)
        out["recentJob"] = rj
        out["lastScheduleTime"] = (rj.get("creationTime") if rj else None) or previous.get("lastScheduleTime")
        last_ok = previous.get("lastSuccessfulTime")
        if rj and rj.get("result") == "success" and rj.get("endTime"):
            last_ok = rj["endTime"]
        out["lastSuccessfulTime"] = last_ok
        out["pool"] = (
            pool_status(pool) if pool is not None else (previous.get("pool") if rj and rj.get("poolId") else None)
        )
    else:
        out["state"] = None
        out["nextRunTime"] = None
    out["conditions"] = [ready_condition(schedule, schedule_id, generation)]
    return out


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to emit: ``type`` Normal/Warning, ``reason``, ``message``."""

    type: str
    reason: str
    message: str


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
            events.append(EventSpec("Normal", "JobSucceeded", f"job {new_job.get('id')} succeeded"))
        else:
            detail = failures.job_detail(new_job)
            events.append(EventSpec("Warning", "JobFailed", f"job {new_job.get('id')} failed: {detail}"))
    if new.get("state") == "completed" and old.get("state") != "completed":
        events.append(EventSpec("Normal", "ScheduleCompleted", "the Batch schedule has completed"))
    return events
