"""Values Azure Batch fills in when a job schedule is read back (API 2025-06-01).

The local Batch service writes these into stored objects; the operator applies the same defaults
to its desired state before comparing, so that an omitted field never looks like drift.
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

JOB_CONSTRAINTS_DEFAULTS: dict[str, Any] = {
    "maxWallClockTime": MAX_DURATION,
    "maxTaskRetryCount": 0,
}

TASK_CONSTRAINTS_DEFAULTS: dict[str, Any] = {
    "maxWallClockTime": MAX_DURATION,
    "retentionTime": "P7D",
    "maxTaskRetryCount": 0,
}

JOB_MANAGER_TASK_DEFAULTS: dict[str, Any] = {
    "killJobOnCompletion": True,
    "runExclusive": True,
    "allowLowPriorityNode": True,
    "requiredSlots": 1,
}


def apply_job_specification_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a ``jobSpecification`` with Batch's read-time defaults filled in."""
    out = copy.deepcopy(spec)
    for key, value in JOB_SPECIFICATION_DEFAULTS.items():
        out.setdefault(key, value)
    constraints = out.setdefault("constraints", {})
    for key, value in JOB_CONSTRAINTS_DEFAULTS.items():
        constraints.setdefault(key, value)
    manager = out.get("jobManagerTask")
    if isinstance(manager, dict):
        for key, value in JOB_MANAGER_TASK_DEFAULTS.items():
            manager.setdefault(key, value)
        task_constraints = manager.setdefault("constraints", {})
        for key, value in TASK_CONSTRAINTS_DEFAULTS.items():
            task_constraints.setdefault(key, value)
    return out
