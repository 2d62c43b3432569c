"""Request-body validation, as Azure Batch does it before it stores anything.

Bodies are checked against :mod:`localbatch.wireschema` (property names, kinds, required
properties and enum values of API 2025-06-01, generated from the SDK's models): an unknown or
renamed property (``targetDedicated``, ``maxTasksPerNode``, ``runElevated``, ``blobSource``...)
answers 400 ``InvalidRequestBody``; a value of the wrong kind, an unknown enum value (matched
case-insensitively, stored in the wire casing, as Batch parses enums) or a bad
duration answers 400 ``InvalidPropertyValue``; a missing required property answers 400
``MissingRequiredProperty``. Each error names the property (``PropertyName``, the leaf name as
Batch reports it) and gives the full path and the fix in ``Reason``.

The validators return a normalised copy: durations in Batch's shortest form (``PT1H``),
timestamps in Batch's 7-digit UTC form.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from batchwire import durations, timestamps
from localbatch import wireschema, wireschema_jobs
from localbatch.errors import BatchError, invalid_value, missing

JSON = dict[str, Any]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ONE_MINUTE = timedelta(minutes=1)

# Property names of older API versions, with what replaced them (for the Reason text).
RENAMED: dict[str, str] = {
    "targetDedicated": "targetDedicatedNodes (and targetLowPriorityNodes)",
    "maxTasksPerNode": "taskSlotsPerNode",
    "runElevated": "userIdentity.autoUser {scope, elevationLevel: admin}",
    "blobSource": "httpUrl, storageContainerUrl (+ blobPrefix) or autoStorageContainerName",
    "cloudServiceConfiguration": "virtualMachineConfiguration (Cloud Services pools are retired)",
}


# Enum values Batch writes back in another casing than the SDK's wire value (recorded traffic:
# an auto pool's taskSchedulingPolicy reads back as {"nodeFillType": "Spread"}).
READ_BACK_ENUMS: dict[str, dict[str, str]] = {"BatchNodeFillType": {"spread": "Spread", "pack": "Pack"}}


def validate_id(value: object, prop: str = "id") -> str:
    """A Batch id: 1..64 letters, digits, hyphens and underscores."""
    if value is None or value == "":
        raise missing(prop)
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise invalid_value(
            prop,
            value,
            f"The {prop} can contain any combination of alphanumeric characters including hyphens and underscores, "
            "and cannot contain more than 64 characters.",
        )
    return value


def check(value: Any, type_name: str, path: str) -> Any:
    """Validate ``value`` as an object of wire type ``type_name``; return its normalised copy."""
    fields = _fields(type_name)
    if not isinstance(value, dict):
        raise BatchError(
            "InvalidRequestBody",
            [("PropertyName", _leaf(path)), ("Reason", f"{path or 'the body'} must be a JSON object")],
        )
    out: JSON = {}
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if key.startswith("odata."):
            continue  # OData annotations (odata.metadata...) are accepted and ignored, as Batch does
        if key not in fields:
            hint = f"; use {RENAMED[key]}" if key in RENAMED else ""
            raise BatchError(
                "InvalidRequestBody",
                [
                    ("PropertyName", key),
                    (
                        "Reason",
                        f"The property '{key}' does not exist on type '{type_name}' (at {child}){hint}. "
                        "Make sure to only use property names that are defined by the type (API 2025-06-01).",
                    ),
                ],
            )
        if item is None:
            continue
        out[key] = _check_kind(item, fields[key][0], child)
    for key, (_kind, required) in fields.items():
        if required and out.get(key) is None:
            child = f"{path}.{key}" if path else key
            raise missing(key, f"{child} is required")
    return out


def _check_kind(value: Any, kind: str, path: str) -> Any:
    leaf = _leaf(path)
    if kind.startswith("model:"):
        return check(value, kind[6:], path)
    if kind.startswith("list:"):
        if not isinstance(value, list):
            raise invalid_value(leaf, value, f"{path} must be a JSON array")
        return [_check_kind(item, kind[5:], f"{path}[{i}]") for i, item in enumerate(value)]
    if kind.startswith("enum:"):
        name = kind[5:]
        allowed = wireschema.ENUMS.get(name) or wireschema_jobs.ENUMS[name]
        canonical = {value.lower(): value for value in allowed} if isinstance(value, str) else {}
        if not isinstance(value, str) or value.lower() not in canonical:
            raise invalid_value(leaf, value, f"{path} must be one of {', '.join(allowed)}")
        chosen = canonical[value.lower()]
        return READ_BACK_ENUMS.get(name, {}).get(chosen, chosen)
    if kind == "duration":
        try:
            return durations.normalize(value)
        except durations.DurationError as exc:
            raise invalid_value(leaf, value, f"{path}: {exc}") from None
    if kind == "datetime":
        if not isinstance(value, str):
            raise invalid_value(leaf, value, f"{path} must be an ISO-8601 UTC timestamp")
        try:
            return timestamps.format(timestamps.parse(value))
        except ValueError:
            raise invalid_value(
                leaf, value, f"{path} must be an ISO-8601 UTC timestamp such as 2025-06-01T00:00:00Z"
            ) from None
    if kind == "str":
        if not isinstance(value, str):
            raise invalid_value(leaf, value, f"{path} must be a string")
        return value
    if kind in ("int", "float", "bool"):
        return _check_scalar(value, kind, path)
    return value


# Batch reads JSON with OData's reader, which converts a JSON string to the property's primitive type
# (ODataLib ``ConvertStringValue``: ``Convert.ChangeType(value, type, InvariantCulture)``): ``"20"`` is
# an Int32, ``"true"`` a Boolean. The Azure CLI relies on it (it sends ``"priority": "20"``).
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_INT32 = (-(2**31), 2**31 - 1)


def _check_scalar(value: Any, kind: str, path: str) -> Any:
    """An int, float or bool property: the JSON value, or a string OData converts to it."""
    leaf = _leaf(path)
    if isinstance(value, str):
        text = value.strip()
        if kind == "int" and _INT_TEXT.match(value) and _INT32[0] <= int(text) <= _INT32[1]:
            return int(text)
        if kind == "float" and _FLOAT_TEXT.match(value):
            return float(text)
        if kind == "bool" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    elif kind == "bool" and isinstance(value, bool):
        return value
    wanted = {"int": "an integer", "float": "a number", "bool": "true or false"}[kind]
    raise invalid_value(leaf, value, f"{path} must be {wanted}")


def _fields(type_name: str) -> dict[str, tuple[str, bool]]:
    return wireschema.TYPES.get(type_name) or wireschema_jobs.TYPES[type_name]


def _leaf(path: str) -> str:
    leaf = path.rsplit(".", 1)[-1]
    return leaf.split("[", 1)[0] or "body"


# -- semantic checks ------------------------------------------------------------------------------


def check_schedule(schedule: JSON, path: str = "schedule") -> None:
    for prop in ("recurrenceInterval", "startWindow"):
        value = schedule.get(prop)
        if value is not None and durations.parse(value) < ONE_MINUTE:
            raise invalid_value(prop, value, f"{path}.{prop} must be at least 1 minute (PT1M)")
    until, after = schedule.get("doNotRunUntil"), schedule.get("doNotRunAfter")
    if until and after and timestamps.parse(after) < timestamps.parse(until):
        raise invalid_value("doNotRunAfter", after, f"{path}.doNotRunAfter must not be before doNotRunUntil")


def check_job_specification(spec: JSON, path: str) -> None:
    """Checks beyond the schema, for a job specification or a job create body."""
    priority = spec.get("priority")
    if priority is not None and not -1000 <= priority <= 1000:
        raise invalid_value("priority", priority, f"{path}.priority must be between -1000 and 1000")
    max_parallel = spec.get("maxParallelTasks")
    if max_parallel is not None and (max_parallel == 0 or max_parallel < -1):
        raise invalid_value("maxParallelTasks", max_parallel, f"{path}.maxParallelTasks must be -1 or greater than 0")
    constraints = spec.get("constraints") or {}
    retries = constraints.get("maxTaskRetryCount")
    if retries is not None and retries < -1:
        raise invalid_value("maxTaskRetryCount", retries, f"{path}.constraints.maxTaskRetryCount must be -1 or more")
    _check_pool_info(spec.get("poolInfo"), f"{path}.poolInfo")
    if spec.get("jobReleaseTask") is not None and spec.get("jobPreparationTask") is None:
        raise invalid_value(
            "jobReleaseTask", "", f"{path}.jobReleaseTask: a Job Release Task cannot be specified without also "
            "specifying a Job Preparation Task for the Job; add a jobPreparationTask (it may do nothing)"
        )
    for name in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask"):
        task = spec.get(name)
        if task is not None:
            _check_task(task, f"{path}.{name}", require_id=name == "jobManagerTask")


def _check_pool_info(pool_info: JSON | None, path: str) -> None:
    if pool_info is None:
        raise missing("poolInfo", f"{path} is required: give poolId or autoPoolSpecification")
    has_id = bool(pool_info.get("poolId"))
    auto = pool_info.get("autoPoolSpecification")
    if has_id == (auto is not None):
        raise invalid_value("poolInfo", "", f"{path} must have exactly one of poolId or autoPoolSpecification")
    if auto is not None:
        prefix = auto.get("autoPoolIdPrefix")
        if prefix is not None and (len(prefix) > 20 or not re.match(r"^[A-Za-z0-9_-]*$", prefix)):
            raise invalid_value(
                "autoPoolIdPrefix",
                prefix,
                f"{path}.autoPoolSpecification.autoPoolIdPrefix: at most 20 letters, digits, hyphens or underscores",
            )
        pool = auto.get("pool")
        if pool is None:
            raise missing("pool", f"{path}.autoPoolSpecification.pool is required")
        if not pool.get("vmSize"):
            raise missing("vmSize", f"{path}.autoPoolSpecification.pool.vmSize is required")
        start = pool.get("startTask")
        if start is not None:
            _check_task(start, f"{path}.autoPoolSpecification.pool.startTask", require_id=False)


def _check_task(task: JSON, path: str, *, require_id: bool) -> None:
    if require_id or "id" in task:
        validate_id(task.get("id"), "id")
    if not task.get("commandLine"):
        raise missing("commandLine", f"{path}.commandLine is required")
    for i, resource in enumerate(task.get("resourceFiles") or []):
        sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if resource.get(k)]
        if len(sources) != 1:
            raise invalid_value(
                "resourceFiles",
                "",
                f"{path}.resourceFiles[{i}] must have exactly one of httpUrl, "
                "storageContainerUrl or autoStorageContainerName",
            )
        if resource.get("httpUrl") and not resource.get("filePath"):
            raise missing("filePath", f"{path}.resourceFiles[{i}].filePath is required with httpUrl")


# -- whole request bodies -------------------------------------------------------------------------


def schedule_create(body: Any) -> JSON:
    """``POST /jobschedules``: the normalised body (id, displayName, schedule, jobSpecification, metadata)."""
    if not isinstance(body, dict):
        raise BatchError("InvalidRequestBody", [("Reason", "The request body must be a JSON object")])
    validate_id(body.get("id"))
    out = check(body, "BatchJobScheduleCreateOptions", "")
    check_schedule(out["schedule"])
    check_job_specification(out["jobSpecification"], "jobSpecification")
    return out


def schedule_update(body: Any, *, replace: bool) -> JSON:
    """``PATCH`` (``replace=False``) or ``PUT`` (``replace=True``) of a job schedule.

    Only ``schedule``, ``jobSpecification`` and ``metadata`` may be sent; anything else (``id``,
    ``displayName``, read-only properties) is refused with 400 naming it.
    """
    if not isinstance(body, dict):
        raise BatchError("InvalidRequestBody", [("Reason", "The request body must be a JSON object")])
    immutable = [k for k in body if k not in ("schedule", "jobSpecification", "metadata")]
    for key in immutable:
        if key in wireschema.TYPES["BatchJobSchedule"]:
            raise BatchError(
                "InvalidRequestBody",
                [
                    ("PropertyName", key),
                    (
                        "Reason",
                        f"{key} cannot be changed by {'PUT' if replace else 'PATCH'}: only schedule, "
                        "jobSpecification and metadata can be updated; delete and re-create the job schedule instead",
                    ),
                ],
            )
    out = check(body, "BatchJobScheduleUpdateOptions", "")
    if replace and "jobSpecification" not in out:
        raise missing("jobSpecification", "PUT replaces the whole job schedule: jobSpecification is required")
    if "schedule" in out:
        check_schedule(out["schedule"])
    if "jobSpecification" in out:
        check_job_specification(out["jobSpecification"], "jobSpecification")
    return out


def job_create(body: Any) -> JSON:
    """``POST /jobs``: a standalone job."""
    if not isinstance(body, dict):
        raise BatchError("InvalidRequestBody", [("Reason", "The request body must be a JSON object")])
    validate_id(body.get("id"))
    out = check(body, "BatchJobCreateOptions", "")
    check_job_specification(out, "job")
    return out


JOB_UPDATABLE = (
    "priority", "maxParallelTasks", "allowTaskPreemption", "constraints", "poolInfo", "onAllTasksComplete",
    "metadata", "networkConfiguration",
)


def job_update(body: Any, *, replace: bool) -> JSON:
    """``PATCH`` (``replace=False``) or ``PUT`` (``replace=True``) of a job: only the updatable properties
    (``BatchJobUpdateOptions``); PUT needs ``poolInfo``. Anything else is refused with 400 naming it."""
    if not isinstance(body, dict):
        raise BatchError("InvalidRequestBody", [("Reason", "The request body must be a JSON object")])
    verb = "PUT" if replace else "PATCH"
    for key in body:
        if key not in JOB_UPDATABLE and key in _fields("BatchJob"):
            raise BatchError(
                "InvalidRequestBody",
                [
                    ("PropertyName", key),
                    ("Reason", f"{key} cannot be changed by {verb}: only {', '.join(JOB_UPDATABLE)} can be updated"),
                ],
            )
    out = check(body, "BatchJobUpdateOptions", "")
    if replace and "poolInfo" not in out:
        raise missing("poolInfo", "PUT replaces every updatable property of the job: poolInfo is required")
    probe = {k: v for k, v in out.items() if k in ("priority", "maxParallelTasks", "constraints")}
    check_job_specification({**probe, "poolInfo": out.get("poolInfo") or {"poolId": "unchanged"}}, "job")
    return out


def job_disable(body: Any) -> str:
    """``POST /jobs/{id}/disable``: ``disableTasks`` (requeue, terminate or wait)."""
    out = check(body if body is not None else {}, "BatchJobDisableOptions", "")
    return str(out["disableTasks"])


def job_terminate(body: Any) -> str | None:
    """``POST /jobs/{id}/terminate``: the optional terminateReason."""
    if body is None:
        return None
    out = check(body, "BatchJobTerminateOptions", "")
    return out.get("terminateReason")
