"""Job operations that change a job: update (PATCH), replace (PUT), disable and enable.

As Batch answers them (recorded real traffic, ``test_batch_jobs[sync]``): PATCH and PUT answer ``200``
with the new ``ETag``, ``Last-Modified`` and ``DataServiceId`` (the job's URL); disable and enable
answer ``202`` with the new ``ETag`` and ``DataServiceId`` ``.../disable`` / ``.../enable``. PATCH
replaces the properties sent; PUT replaces every updatable property (omitted ones take their
defaults, omitted metadata is removed). Only ``priority``, ``maxParallelTasks``,
``allowTaskPreemption``, ``constraints``, ``poolInfo``, ``onAllTasksComplete``, ``metadata`` and
``networkConfiguration`` can be updated. A job being terminated or deleted, or completed, answers
409. Disable needs an ``active`` job (409 ``JobNotActive`` otherwise, the REST reference's code), enable
a ``disabled`` one; what happens to running tasks is the engine's (:mod:`localbatch.engine_disable`).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from batchwire import defaults, timestamps
from localbatch import validation
from localbatch.api_common import read_json, service, set_state
from localbatch.errors import BatchError
from localbatch.responses import check_conditions, empty, entity_headers, entity_url

JSON = dict[str, Any]

_STATE_CONFLICTS = {"deleting": "JobBeingDeleted", "terminating": "JobBeingTerminated", "completed": "JobCompleted"}
_RESET_ON_PUT: JSON = {
    "priority": 0,
    "maxParallelTasks": -1,
    "allowTaskPreemption": False,
    "onAllTasksComplete": "noaction",
}


def _find(request: web.Request) -> tuple[str, JSON]:
    key = request.match_info["jobId"].lower()
    obj = service(request).store.jobs.get(key)
    if obj is None:
        raise BatchError("JobNotFound")
    return key, obj


def _headers(request: web.Request, obj: JSON, suffix: str = "") -> dict[str, str]:
    url = entity_url(service(request).base_url, "jobs", obj["id"])
    return {**entity_headers(obj), "DataServiceId": url + suffix}


def _apply(obj: JSON, body: JSON, *, replace: bool) -> None:
    """Write the updated properties into the stored job, with Batch's read-time defaults."""
    changes = {**(copy.deepcopy(_RESET_ON_PUT) if replace else {}), **body}
    if replace:
        changes.setdefault("constraints", {})
    filled = defaults.apply_job_specification_defaults(
        {**changes, "poolInfo": changes.get("poolInfo") or obj.get("poolInfo") or {}}
    )
    for name in validation.JOB_UPDATABLE:
        if name in changes and name != "metadata":
            obj[name] = filled[name]
    if "metadata" in changes or replace:
        if changes.get("metadata"):
            obj["metadata"] = changes["metadata"]
        else:
            obj.pop("metadata", None)


async def _update(request: web.Request, *, replace: bool) -> web.Response:
    svc = service(request)
    _key, obj = _find(request)
    check_conditions(request, obj, write=True)
    body = validation.job_update(await read_json(request), replace=replace)
    code = _STATE_CONFLICTS.get(obj.get("state", ""))
    if code:
        raise BatchError(code)
    _apply(obj, body, replace=replace)
    svc.store.touch(obj, svc.clock.now())
    return empty(200, _headers(request, obj))


async def update_job(request: web.Request) -> web.Response:
    """PATCH: replace just the properties sent."""
    return await _update(request, replace=False)


async def replace_job(request: web.Request) -> web.Response:
    """PUT: replace every updatable property."""
    return await _update(request, replace=True)


async def disable_job(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    option = validation.job_disable(await read_json(request, required=False))
    code = _STATE_CONFLICTS.get(obj.get("state", ""))
    if code:
        raise BatchError(code)
    if obj.get("state") != "active":
        raise BatchError("JobNotActive")
    now = svc.clock.now()
    set_state(obj, "disabling", timestamps.format(now))
    svc.store.touch(obj, now)
    notify = getattr(svc.engine, "disable_job", None)
    if callable(notify):
        notify(key, option)
    return empty(202, _headers(request, obj, "/disable"))


async def enable_job(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    code = _STATE_CONFLICTS.get(obj.get("state", ""))
    if code:
        raise BatchError(code)
    if obj.get("state") not in ("disabled", "disabling"):
        raise BatchError("OperationInvalidForCurrentState")
    now = svc.clock.now()
    set_state(obj, "enabling", timestamps.format(now))
    svc.store.touch(obj, now)
    notify = getattr(svc.engine, "enable_job", None)
    if callable(notify):
        notify(key)
    return empty(202, _headers(request, obj, "/enable"))


ROUTES: list[tuple[str, str, str, Any]] = [
    ("PATCH", "/jobs/{jobId}", "update_job", update_job),
    ("PUT", "/jobs/{jobId}", "replace_job", replace_job),
    ("POST", "/jobs/{jobId}/disable", "disable_job", disable_job),
    ("POST", "/jobs/{jobId}/enable", "enable_job", enable_job),
]
