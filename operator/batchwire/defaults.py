"""Values Azure Batch fills in when a job schedule or job is read back (API 2025-06-01).

The local Batch service writes these into stored objects; the operator applies the same defaults
to its desired state before comparing, so that an omitted field never looks like drift.

Sources (recorded real traffic of the azure-batch SDK's own tests, Azure/azure-sdk-for-python
``sdk/batch/azure-batch/tests/recordings/``):

- ``test_batch.pyTestBatchtest_batch_job_schedules[sync].json``: a job schedule created with only
  ``poolInfo``, ``constraints.maxTaskRetryCount`` and ``onAllTasksComplete`` reads back with
  ``priority 0``, ``maxParallelTasks -1``, ``allowTaskPreemption false``, ``usesTaskDependencies
  false``, ``onTaskFailure noaction`` and ``constraints.maxWallClockTime
  P10675199DT2H48M5.4775807S`` (TimeSpan.MaxValue), in that order; durations normalised.
- ``test_batch.pyTestBatchtest_batch_jobs[sync].json``: task ``constraints {maxWallClockTime,
  retentionTime P7D, maxTaskRetryCount 0}`` and ``userIdentity {autoUser {scope pool,
  elevationLevel nonadmin}}`` on a job preparation task; an auto pool specification reads back with
  ``keepAlive false`` and pool ``taskSlotsPerNode 1``, ``taskSchedulingPolicy {nodeFillType
  Spread}``, ``resizeTimeout PT15M``, ``targetDedicatedNodes 0``, ``targetLowPriorityNodes 0``,
  ``enableAutoScale false``, ``enableInterNodeCommunication false``.

The job manager task's defaults (``killJobOnCompletion true``, ``runExclusive true``,
``allowLowPriorityNode true``, ``requiredSlots 1``, task constraints and the auto-user identity) are
the REST reference's documented defaults, returned like the job preparation task's above.

The same recordings at API 2025-06-01 (``Azure/azure-sdk-assets``, ``python/sdk/batch``) add: the job
release task reads back with ``id jobrelease``, ``maxWallClockTime PT15M``, ``retentionTime P7D`` and the
auto-user identity (read in the 2025-03 tag of ``test_batch_jobs[sync]``, commit 0e06986); the job
manager's ``constraints.maxTaskRetryCount`` defaults to the job's; an auto pool's
``taskSchedulingPolicy`` reads back with ``jobDefaultOrder none`` (these two as reported from the
2025-06-01 tags; the order after ``nodeFillType`` is assumed).
"""

from __future__ import annotations

import copy
from typing import Any

MAX_DURATION = "P10675199DT2H48M5.4775807S"

JOB_SPECIFICATION_DEFAULTS: dict[str, Any] = {
    "priority": 0,
    "maxParallelTasks": -1,
    "allowTaskPreemption": False,
    "usesTaskDependencies": False,
    "onAllTasksComplete": "noaction",
    "onTaskFailure": "noaction",
}

# The order in which Batch writes a job specification's properties (recorded traffic).
JOB_SPECIFICATION_ORDER: tuple[str, ...] = (
    *JOB_SPECIFICATION_DEFAULTS,
    "displayName",
    "networkConfiguration",
    "constraints",
    "jobManagerTask",
    "jobPreparationTask",
    "jobReleaseTask",
    "commonEnvironmentSettings",
    "poolInfo",
    "metadata",
)

JOB_CONSTRAINTS_DEFAULTS: dict[str, Any] = {
    "maxWallClockTime": MAX_DURATION,
    "maxTaskRetryCount": 0,
}

TASK_CONSTRAINTS_DEFAULTS: dict[str, Any] = {
    "maxWallClockTime": MAX_DURATION,
    "retentionTime": "P7D",
    "maxTaskRetryCount": 0,
}

AUTO_USER_DEFAULT: dict[str, Any] = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}

JOB_MANAGER_TASK_DEFAULTS: dict[str, Any] = {
    "killJobOnCompletion": True,
    "runExclusive": True,
    "allowLowPriorityNode": True,
    "requiredSlots": 1,
}

JOB_RELEASE_TASK_DEFAULTS: dict[str, Any] = {
    "id": "jobrelease",
    "maxWallClockTime": "PT15M",
    "retentionTime": "P7D",
    "userIdentity": AUTO_USER_DEFAULT,
}

TASK_SCHEDULING_POLICY_DEFAULTS: dict[str, Any] = {"nodeFillType": "Spread", "jobDefaultOrder": "none"}

AUTO_POOL_SPECIFICATION_DEFAULTS: dict[str, Any] = {"keepAlive": False}

AUTO_POOL_DEFAULTS: dict[str, Any] = {
    "taskSlotsPerNode": 1,
    "taskSchedulingPolicy": {"nodeFillType": "Spread"},
    "resizeTimeout": "PT15M",
    "targetDedicatedNodes": 0,
    "targetLowPriorityNodes": 0,
    "enableAutoScale": False,
    "enableInterNodeCommunication": False,
}


def _with_defaults(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` first (in Batch's order), overridden by ``values``, then the rest of ``values``."""
    out = {key: copy.deepcopy(values.get(key, default)) for key, default in defaults.items()}
    for key, value in values.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
    return out


def _task_defaults(task: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(task)
    out["constraints"] = _with_defaults(out.get("constraints") or {}, TASK_CONSTRAINTS_DEFAULTS)
    out.setdefault("userIdentity", copy.deepcopy(AUTO_USER_DEFAULT))
    for key, value in (extra or {}).items():
        out.setdefault(key, value)
    return out


def _release_defaults(task: dict[str, Any]) -> dict[str, Any]:
    """A job release task as Batch reads it back: ``id``, ``commandLine``, then the defaults, then the rest."""
    order = {"id": task.get("id", "jobrelease"), "commandLine": task.get("commandLine")}
    out = _with_defaults(task, {**order, **JOB_RELEASE_TASK_DEFAULTS, "id": order["id"]})
    if out.get("commandLine") is None:
        out.pop("commandLine")
    return out


def apply_auto_pool_defaults(auto: dict[str, Any]) -> dict[str, Any]:
    """A copy of an ``autoPoolSpecification`` with Batch's read-time defaults."""
    out = copy.deepcopy(auto)
    for key, value in AUTO_POOL_SPECIFICATION_DEFAULTS.items():
        out.setdefault(key, value)
    pool = out.get("pool")
    if isinstance(pool, dict):
        out["pool"] = _with_defaults(pool, {"vmSize": pool.get("vmSize"), **AUTO_POOL_DEFAULTS})
        if out["pool"].get("vmSize") is None:
            out["pool"].pop("vmSize")
        policy = out["pool"].get("taskSchedulingPolicy")
        if isinstance(policy, dict):
            out["pool"]["taskSchedulingPolicy"] = _with_defaults(policy, TASK_SCHEDULING_POLICY_DEFAULTS)
    return out


def apply_job_specification_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a ``jobSpecification`` (or a job body) with Batch's read-time defaults filled in."""
    out = _with_defaults(spec, JOB_SPECIFICATION_DEFAULTS)
    out["constraints"] = _with_defaults(out.get("constraints") or {}, JOB_CONSTRAINTS_DEFAULTS)
    manager = out.get("jobManagerTask")
    if isinstance(manager, dict):
        retries = out["constraints"].get("maxTaskRetryCount", 0)
        inherited = {**manager, "constraints": {"maxTaskRetryCount": retries, **(manager.get("constraints") or {})}}
        out["jobManagerTask"] = _task_defaults(inherited, JOB_MANAGER_TASK_DEFAULTS)
    preparation = out.get("jobPreparationTask")
    if isinstance(preparation, dict):
        out["jobPreparationTask"] = _task_defaults(
            preparation, {"id": "jobpreparation", "waitForSuccess": True, "rerunOnNodeRebootAfterSuccess": True}
        )
    release = out.get("jobReleaseTask")
    if isinstance(release, dict):
        out["jobReleaseTask"] = _release_defaults(release)
    pool_info = out.get("poolInfo")
    if isinstance(pool_info, dict) and isinstance(pool_info.get("autoPoolSpecification"), dict):
        out["poolInfo"] = {
            **pool_info,
            "autoPoolSpecification": apply_auto_pool_defaults(pool_info["autoPoolSpecification"]),
        }
    ordered = {key: out[key] for key in JOB_SPECIFICATION_ORDER if key in out}
    ordered.update((key, value) for key, value in out.items() if key not in ordered)
    return ordered
