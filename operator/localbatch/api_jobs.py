"""Job, task and task-count operations: create (standalone), get, list, terminate, delete;
tasks list / get; ``/taskcounts`` (answered by the engine, which owns the tasks)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchwire import defaults, timestamps
from localbatch import validation
from localbatch.api_common import read_json, service, set_state
from localbatch.errors import BatchError
from localbatch.responses import (
    check_conditions,
    empty,
    entity_headers,
    entity_response,
    entity_url,
    json_response,
    list_response,
)

JSON = dict[str, Any]

_STATE_CONFLICTS = {"deleting": "JobBeingDeleted", "terminating": "JobBeingTerminated", "completed": "JobCompleted"}

# Property order of a job as Batch returns it (after id/url, which rendering adds).
_JOB_ORDER = (
    "displayName",
    "usesTaskDependencies",
    "eTag",
    "lastModified",
    "creationTime",
    "state",
    "stateTransitionTime",
    "priority",
    "maxParallelTasks",
    "allowTaskPreemption",
    "constraints",
    "jobManagerTask",
    "jobPreparationTask",
    "jobReleaseTask",
    "commonEnvironmentSettings",
    "poolInfo",
    "executionInfo",
    "onAllTasksComplete",
    "onTaskFailure",
    "networkConfiguration",
    "metadata",
)


def _find(request: web.Request) -> tuple[str, JSON]:
    key = request.match_info["jobId"].lower()
    obj = service(request).store.jobs.get(key)
    if obj is None:
        raise BatchError("JobNotFound")
    return key, obj


def _job_url(request: web.Request, job_id: str) -> str:
    return entity_url(service(request).base_url, "jobs", job_id)


async def create_job(request: web.Request) -> web.Response:
    svc = service(request)
    body = validation.job_create(await read_json(request))
    job_id = body["id"]
    key = job_id.lower()
    if key in svc.store.jobs:
        raise BatchError("JobExists")
    if key in svc.store.schedules:
        raise BatchError("JobScheduleExists")
    svc.check_quota()
    now = svc.clock.now()
    ts = timestamps.format(now)
    spec = defaults.apply_job_specification_defaults({k: v for k, v in body.items() if k != "id"})
    fields: JSON = {
        **spec,
        "eTag": "",
        "lastModified": ts,
        "creationTime": ts,
        "state": "active",
        "stateTransitionTime": ts,
        "executionInfo": {"startTime": ts},
    }
    pool_id = (spec.get("poolInfo") or {}).get("poolId")
    if pool_id:
        fields["executionInfo"]["poolId"] = pool_id
    obj: JSON = {"id": job_id}
    for name in _JOB_ORDER:
        if fields.get(name) is not None:
            obj[name] = fields[name]
    if not obj.get("metadata"):
        obj.pop("metadata", None)
    svc.store.touch(obj, now)
    svc.store.jobs[key] = obj
    svc.engine.job_created(key)
    url = _job_url(request, job_id)
    return empty(201, {**entity_headers(obj), "Location": url, "DataServiceId": url})


async def get_job(request: web.Request) -> web.Response:
    _key, obj = _find(request)
    not_modified = check_conditions(request, obj, write=False)
    if not_modified is not None:
        return not_modified
    return entity_response(request, obj, _job_url(request, obj["id"]), "jobs")


async def list_jobs(request: web.Request) -> web.Response:
    svc = service(request)
    base = svc.base_url
    return list_response(
        request, svc.store.jobs.items(), collection="jobs", url_of=lambda job: f"{base}/jobs/{job['id']}"
    )


async def terminate_job(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    reason = validation.job_terminate(await read_json(request, required=False))
    code = _STATE_CONFLICTS.get(obj.get("state", ""))
    if code:
        raise BatchError(code)
    now = svc.clock.now()
    set_state(obj, "terminating", timestamps.format(now))
    svc.store.touch(obj, now)
    svc.engine.terminate_job(key, reason or "UserTerminate")
    headers = {**entity_headers(obj), "DataServiceId": _job_url(request, obj["id"]) + "/terminate"}
    return empty(202, headers)


async def delete_job(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    if obj.get("state") == "deleting":
        raise BatchError("JobBeingDeleted")
    now = svc.clock.now()
    set_state(obj, "deleting", timestamps.format(now))
    svc.store.mark_changed()  # GET answers deleting with the ETag from before the delete, as Azure
    svc.engine.delete_job(key)
    return empty(202)


async def get_job_task_counts(request: web.Request) -> web.Response:
    svc = service(request)
    key, _obj = _find(request)
    counts = svc.engine.counts(key)
    return json_response({"odata.metadata": f"{svc.base_url}/$metadata#taskcountsresult/@Element", **counts})


async def list_tasks(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    base = f"{svc.base_url}/jobs/{obj['id']}/tasks"
    return list_response(
        request,
        svc.store.tasks.get(key, {}).items(),
        collection="tasks",
        url_of=lambda task: f"{base}/{task['id']}",
    )


async def get_task(request: web.Request) -> web.Response:
    svc = service(request)
    key, job = _find(request)
    task = svc.store.tasks.get(key, {}).get(request.match_info["taskId"].lower())
    if task is None:
        raise BatchError("TaskNotFound")
    not_modified = check_conditions(request, task, write=False)
    if not_modified is not None:
        return not_modified
    url = f"{svc.base_url}/jobs/{job['id']}/tasks/{task['id']}"
    return entity_response(request, task, url, "tasks")


ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/jobs", "create_job", create_job),
    ("GET", "/jobs", "list_jobs", list_jobs),
    ("GET", "/jobs/{jobId}", "get_job", get_job),
    ("DELETE", "/jobs/{jobId}", "delete_job", delete_job),
    ("POST", "/jobs/{jobId}/terminate", "terminate_job", terminate_job),
    ("GET", "/jobs/{jobId}/taskcounts", "get_job_task_counts", get_job_task_counts),
    ("GET", "/jobs/{jobId}/tasks", "list_tasks", list_tasks),
    ("GET", "/jobs/{jobId}/tasks/{taskId}", "get_task", get_task),
]
