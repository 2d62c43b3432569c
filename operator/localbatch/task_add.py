"""Adding tasks to a job (``POST /jobs/{id}/tasks``, ``POST /jobs/{id}/addtaskcollection``): checks and the stored task.

The body of one task is API 2025-06-01's ``BatchTaskCreateOptions``: ``id``, ``displayName``,
``exitConditions``, ``commandLine``, ``containerSettings``, ``resourceFiles``, ``outputFiles``,
``environmentSettings``, ``affinityInfo``, ``constraints``, ``requiredSlots``, ``userIdentity``,
``multiInstanceSettings``, ``dependsOn``, ``applicationPackageReferences``. Anything else is refused with
``InvalidRequestBody`` (``authenticationTokenSettings`` too: the task authentication token was retired on
30 September 2024 and the property is gone from API 2025-06-01).

Checks whose failure Batch reports per task in a collection (``BatchTaskCreateResult`` with
``status: clienterror``), in this order: ``TaskExists`` (409; also a second task with the same id in one
collection), ``TaskIdSameAsJobPreparationTask`` / ``TaskIdSameAsJobReleaseTask`` (409),
``TaskDependenciesNotSpecifiedOnJob`` (400: ``dependsOn`` on a job without ``usesTaskDependencies``),
``TaskDependencyListTooLong`` (400), ``InvalidPropertyValue`` (400: an exit condition's ``jobAction`` while
the job's ``onTaskFailure`` is ``noaction``; a ``dependencyAction`` without ``usesTaskDependencies``; a
range whose ``start`` is after its ``end``; ``requiredSlots`` below 1).
"""

from __future__ import annotations

import copy
from typing import Any

from batchwire import defaults, timestamps
from localbatch import dependencies, exit_conditions, validation, wireschema
from localbatch.errors import BatchError, invalid_value

JSON = dict[str, Any]

CREATE_FIELDS = (
    "id", "displayName", "exitConditions", "commandLine", "containerSettings", "resourceFiles", "outputFiles",
    "environmentSettings", "affinityInfo", "constraints", "requiredSlots", "userIdentity",
    "multiInstanceSettings", "dependsOn", "applicationPackageReferences",
)
MAX_TASKS_PER_COLLECTION = 100
CREATE_TYPE = "BatchTaskCreateOptions"
# The generated wire schema has the read model ``BatchTask``; the create options are its writable subset (the
# SDK's ``BatchTaskCreateOptions`` has exactly CREATE_FIELDS), with only ``id`` and ``commandLine`` required.
wireschema.TYPES.setdefault(CREATE_TYPE, {
    name: (kind, name in ("id", "commandLine"))
    for name, (kind, _required) in wireschema.TYPES["BatchTask"].items() if name in CREATE_FIELDS
})
RETIRED = {
    "authenticationTokenSettings": (
        "authenticationTokenSettings was removed in API 2025-06-01 (the task authentication token was retired on "
        "30 September 2024): give the pool a managed identity and get a Microsoft Entra token for "
        "https://batch.core.windows.net/ on the node instead"
    ),
}


def parse(body: Any, path: str = "") -> JSON:
    """Schema-check one ``BatchTaskCreateOptions`` body (400 for the whole request when it is malformed)."""
    if not isinstance(body, dict):
        raise BatchError("InvalidRequestBody", [("Reason", f"{path or 'the body'} must be a JSON object")])
    for key in body:
        if key.startswith("odata.") or key in CREATE_FIELDS:
            continue
        reason = RETIRED.get(key) or (
            f"The property '{key}' does not exist on type 'BatchTaskCreateOptions' (API 2025-06-01)"
        )
        raise BatchError("InvalidRequestBody", [("PropertyName", key), ("Reason", reason)])
    validation.validate_id(body.get("id"))
    return validation.check(body, CREATE_TYPE, path)


def check(job: JSON, existing: dict[str, JSON], task: JSON) -> None:
    """The per-task checks (see the module docstring); raise the :class:`BatchError` Batch answers with."""
    key = str(task["id"]).lower()
    if key in existing:
        raise BatchError("TaskExists")
    for name, code in (("jobPreparationTask", "TaskIdSameAsJobPreparationTask"),
                       ("jobReleaseTask", "TaskIdSameAsJobReleaseTask")):
        special = job.get(name)
        default_id = "jobpreparation" if name == "jobPreparationTask" else "jobrelease"
        if special and str(special.get("id") or default_id).lower() == key:
            raise BatchError(code)
    uses_dependencies = bool(job.get("usesTaskDependencies"))
    if task.get("dependsOn") and not uses_dependencies:
        raise BatchError("TaskDependenciesNotSpecifiedOnJob")
    if dependencies.ids_too_long(task):
        raise BatchError("TaskDependencyListTooLong")
    wrong_range = dependencies.bad_range(task)
    if wrong_range is not None:
        raise invalid_value("taskIdRanges", f"{wrong_range['start']}-{wrong_range['end']}",
                            "dependsOn.taskIdRanges: start must not be greater than end")
    conditions = task.get("exitConditions")
    if exit_conditions.uses_job_action(conditions) and (job.get("onTaskFailure") or "noaction") == "noaction":
        raise invalid_value("jobAction", "", "exitConditions set a jobAction but the job's onTaskFailure is "
                            "noaction: set the job's onTaskFailure to performexitoptionsjobaction")
    if exit_conditions.uses_dependency_action(conditions) and not uses_dependencies:
        raise invalid_value("dependencyAction", "", "exitConditions set a dependencyAction but the job does not "
                            "have usesTaskDependencies: true")
    slots = task.get("requiredSlots")
    if slots is not None and slots < 1:
        raise invalid_value("requiredSlots", slots, "requiredSlots must be at least 1")


def stored(job: JSON, task: JSON, now_stamp: str) -> JSON:
    """The task as Batch stores and returns it, with its read-time defaults."""
    out: JSON = {"id": task["id"]}
    if task.get("displayName"):
        out["displayName"] = task["displayName"]
    out.update({"eTag": "", "lastModified": now_stamp, "creationTime": now_stamp})
    if task.get("exitConditions"):
        out["exitConditions"] = copy.deepcopy(task["exitConditions"])
    out.update({"state": "active", "stateTransitionTime": now_stamp, "commandLine": task["commandLine"]})
    for name in ("containerSettings", "resourceFiles", "outputFiles", "environmentSettings", "affinityInfo",
                 "multiInstanceSettings", "applicationPackageReferences"):
        if task.get(name):
            out[name] = copy.deepcopy(task[name])
    constraints = dict(defaults.TASK_CONSTRAINTS_DEFAULTS)
    job_retries = (job.get("constraints") or {}).get("maxTaskRetryCount")
    if job_retries is not None:
        constraints["maxTaskRetryCount"] = job_retries
    constraints.update(task.get("constraints") or {})
    out["constraints"] = constraints
    out["requiredSlots"] = task.get("requiredSlots", 1)
    out["userIdentity"] = copy.deepcopy(task.get("userIdentity") or defaults.AUTO_USER_DEFAULT)
    if task.get("dependsOn"):
        out["dependsOn"] = copy.deepcopy(task["dependsOn"])
    out["executionInfo"] = {"retryCount": 0, "requeueCount": 0}
    return out


def stamp(now: Any) -> str:
    return timestamps.format(now)
