"""Task operations beyond list/get: add one, add a collection, terminate, delete; the job preparation and
release task status; and the nodes' identity endpoint (IMDS stand-in) tasks use to call the Batch API.

Paths, status codes and bodies as the azure-batch SDK (API 2025-06-01) sends and expects them:

- ``create_task``: ``POST /jobs/{jobId}/tasks``, 201 + ``ETag``, ``Last-Modified``, ``Location``,
  ``DataServiceId``;
- ``create_task_collection``: ``POST /jobs/{jobId}/addtaskcollection`` ``{"value": [...]}``, 200
  ``{"value": [BatchTaskCreateResult]}``;
- ``terminate_task``: ``POST /jobs/{jobId}/tasks/{taskId}/terminate``, 204;
- ``delete_task``: ``DELETE /jobs/{jobId}/tasks/{taskId}``, 200;
- ``list_job_preparation_and_release_task_status``: ``GET /jobs/{jobId}/jobpreparationandreleasetaskstatus``,
  200 list (409 ``JobPreparationTaskNotSpecified`` for a job without one).

A collection holds at most 100 tasks (more: 400 ``InvalidPropertyValue`` for the whole request, nothing
added); each task's own failure is reported in its result (``status: clienterror`` with Batch's error
body) while the others are added, as Azure does (:mod:`localbatch.task_add`).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, cast

from aiohttp import web

from batchwire import timestamps
from localbatch import task_add
from localbatch.api_common import read_json, service
from localbatch.errors import MESSAGES, BatchError
from localbatch.responses import check_conditions, empty, entity_headers, json_response, list_response
from localbatch.store import JSON
from localbatch.task_identity import NodeIdentity

_JOB_STATE_CONFLICTS = {"deleting": "JobBeingDeleted", "terminating": "JobBeingTerminated",
                        "completed": "JobCompleted"}
_TASK_MESSAGES = {
    "TaskExists": "The specified task already exists.",
    "TaskCompleted": "The specified task is already in a completed state.",
    "TaskIdSameAsJobPreparationTask": "The specified task id is same as the job preparation task.",
    "TaskIdSameAsJobReleaseTask": "The specified task id is same as the job release task.",
    "TaskDependenciesNotSpecifiedOnJob": (
        "A task was specified as depending on other tasks, but the job did not specify that it would use task "
        "dependencies."),
    "TaskDependencyListTooLong": (
        "A task was specified as depending on other tasks, but the list of dependencies was too long to be stored."),
    "JobPreparationTaskNotSpecified": "The specified job does not have job preparation task.",
}
_TASK_STATUS = {"TaskExists": 409, "TaskCompleted": 409, "TaskIdSameAsJobPreparationTask": 409,
                "TaskIdSameAsJobReleaseTask": 409, "JobPreparationTaskNotSpecified": 409}


class TaskEngine(Protocol):
    """What these handlers need from the engine (:class:`localbatch.engine.Engine` has it)."""

    @property
    def identity(self) -> NodeIdentity: ...
    def tasks_added(self, job_key: str) -> None: ...
    async def terminate_task(self, job_key: str, task_key: str) -> None: ...
    async def delete_task(self, job_key: str, task_key: str) -> None: ...
    def prep_release_status(self, job_key: str) -> list[JSON]: ...


def _engine(request: web.Request) -> TaskEngine:
    return cast(TaskEngine, service(request).engine)


def task_error(code: str, values: list[tuple[str, str]] | None = None) -> BatchError:
    """A task-level Batch error with its status and Batch's message."""
    return BatchError(code, values or [], status=_TASK_STATUS.get(code, 400),
                      message=_TASK_MESSAGES.get(code) or MESSAGES.get(code))


def _job(request: web.Request, *, for_add: bool = False) -> tuple[str, JSON]:
    key = request.match_info["jobId"].lower()
    job = service(request).store.jobs.get(key)
    if job is None:
        raise BatchError("JobNotFound")
    if for_add and job.get("state") in _JOB_STATE_CONFLICTS:
        raise BatchError(_JOB_STATE_CONFLICTS[job["state"]])
    return key, job


def _task(request: web.Request, job_key: str) -> tuple[str, JSON]:
    task_key = request.match_info["taskId"].lower()
    task = service(request).store.tasks.get(job_key, {}).get(task_key)
    if task is None:
        raise BatchError("TaskNotFound")
    return task_key, task


def _add(request: web.Request, job_key: str, job: JSON, body: JSON) -> JSON:
    """Check and store one parsed task; raise the task's :class:`BatchError`."""
    svc = service(request)
    existing = svc.store.tasks.setdefault(job_key, {})
    try:
        task_add.check(job, existing, body)
    except BatchError as error:
        if error.message is None and error.code in _TASK_MESSAGES:
            raise task_error(error.code, error.values) from None
        raise
    now = svc.clock.now()
    task = task_add.stored(job, body, task_add.stamp(now))
    existing[str(body["id"]).lower()] = task
    svc.store.touch(task, now)
    return task


def _task_url(request: web.Request, job: JSON, task: JSON) -> str:
    return f"{service(request).base_url}/jobs/{job['id']}/tasks/{task['id']}"


async def create_task(request: web.Request) -> web.Response:
    job_key, job = _job(request, for_add=True)
    body = task_add.parse(await read_json(request))
    task = _add(request, job_key, job, body)
    _engine(request).tasks_added(job_key)
    url = _task_url(request, job, task)
    return empty(201, {**entity_headers(task), "Location": url, "DataServiceId": url})


async def create_task_collection(request: web.Request) -> web.Response:
    svc = service(request)
    job_key, job = _job(request, for_add=True)
    body = await read_json(request)
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise BatchError("InvalidRequestBody", [("PropertyName", "value"),
                                                ("Reason", "send {\"value\": [task, ...]} (BatchTaskGroup)")])
    if len(values) > task_add.MAX_TASKS_PER_COLLECTION:
        raise BatchError("InvalidPropertyValue", [
            ("PropertyName", "value"), ("PropertyValue", str(len(values))),
            ("Reason", f"a collection holds at most {task_add.MAX_TASKS_PER_COLLECTION} tasks, this one has "
                       f"{len(values)}: send them in several requests (the SDK's create_tasks does)")])
    parsed = [task_add.parse(item, f"value[{i}]") for i, item in enumerate(values)]
    results = [_collection_result(request, job_key, job, item) for item in parsed]
    if any(r["status"] == "success" for r in results):
        _engine(request).tasks_added(job_key)
    return json_response({"odata.metadata": f"{svc.base_url}/$metadata#taskaddresult", "value": results})


def _collection_result(request: web.Request, job_key: str, job: JSON, item: JSON) -> JSON:
    svc = service(request)
    try:
        task = _add(request, job_key, job, item)
    except BatchError as error:
        body = error.body(base_url=svc.base_url, request_id=str(uuid.uuid4()),
                          time=timestamps.format(svc.clock.now()))
        body.pop("odata.metadata", None)
        return {"status": "clienterror", "taskId": item["id"], "error": body}
    return {"status": "success", "taskId": task["id"], "eTag": task["eTag"], "lastModified": task["lastModified"],
            "location": _task_url(request, job, task)}


async def terminate_task(request: web.Request) -> web.Response:
    job_key, job = _job(request)
    task_key, task = _task(request, job_key)
    check_conditions(request, task, write=True)
    if task.get("state") == "completed":
        raise task_error("TaskCompleted")
    await _engine(request).terminate_task(job_key, task_key)
    return empty(204, {"DataServiceId": _task_url(request, job, task) + "/terminate"})


async def delete_task(request: web.Request) -> web.Response:
    job_key, _job_obj = _job(request)
    task_key, task = _task(request, job_key)
    check_conditions(request, task, write=True)
    await _engine(request).delete_task(job_key, task_key)
    return empty(200)


async def list_prep_release_status(request: web.Request) -> web.Response:
    job_key, job = _job(request)
    if not job.get("jobPreparationTask") and not job.get("jobReleaseTask"):
        raise task_error("JobPreparationTaskNotSpecified")
    entries = _engine(request).prep_release_status(job_key)
    return list_response(request, [(e["nodeId"], e) for e in entries], collection="jobpreparationandreleasetaskstatus",
                         url_of=lambda e: str(e["nodeUrl"]))


async def imds_token(request: web.Request) -> web.Response:
    """The node identity endpoint (IMDS's ``/metadata/identity/oauth2/token``), for tasks on local nodes."""
    if request.headers.get("Metadata", "").lower() != "true":
        return web.json_response({"error": "invalid_request",
                                  "error_description": "Required metadata header not specified"}, status=400)
    resource = request.query.get("resource", "")
    try:
        token = _engine(request).identity.token(request.match_info["grant"], resource)
    except ValueError:
        return web.json_response({"error": "invalid_request", "error_description": "Identity not found"}, status=400)
    except LookupError as exc:
        return web.json_response({"error": "invalid_resource", "error_description": str(exc)}, status=400)
    return web.json_response(token)


ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/jobs/{jobId}/tasks", "create_task", create_task),
    ("POST", "/jobs/{jobId}/addtaskcollection", "create_task_collection", create_task_collection),
    ("DELETE", "/jobs/{jobId}/tasks/{taskId}", "delete_task", delete_task),
    ("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", "terminate_task", terminate_task),
    ("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus", "list_job_preparation_and_release_task_status",
     list_prep_release_status),
    ("GET", "/_emulator/imds/{grant}/metadata/identity/oauth2/token", "imds_token", imds_token),
]
