"""Job-schedule operations: create, get, exists, list, update (PATCH), replace (PUT), disable,
enable, terminate, delete, and the jobs of a schedule.

Handlers validate, write the new state into the store (with read-time defaults and normalised
durations) and notify the engine, which owns everything that then happens over time (jobs,
``executionInfo``, finishing ``terminating`` / ``deleting``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchwire import defaults, timestamps
from localbatch import validation
from localbatch.api_common import read_json, service, set_state, truthy
from localbatch.errors import BatchError
from localbatch.responses import (
    check_conditions,
    empty,
    entity_headers,
    entity_response,
    entity_url,
    list_response,
)

JSON = dict[str, Any]

# Which 409 a schedule in each state answers to an operation that needs it live.
_STATE_CONFLICTS = {
    "deleting": "JobScheduleBeingDeleted",
    "terminating": "JobScheduleBeingTerminated",
    "completed": "JobScheduleCompleted",
}


def _find(request: web.Request) -> tuple[str, JSON]:
    schedule_id = request.match_info["jobScheduleId"]
    key = schedule_id.lower()
    obj = service(request).store.schedules.get(key)
    if obj is None:
        raise BatchError("JobScheduleNotFound")
    return key, obj


def _require_live(obj: JSON, *, allow_completed: bool = False) -> None:
    code = _STATE_CONFLICTS.get(obj.get("state", ""))
    if code and not (allow_completed and code == "JobScheduleCompleted"):
        raise BatchError(code)


def _write_headers(request: web.Request, obj: JSON, suffix: str = "") -> dict[str, str]:
    url = entity_url(service(request).base_url, "jobschedules", obj["id"])
    return {**entity_headers(obj), "DataServiceId": url + suffix}


def _job_specification(spec: JSON) -> JSON:
    return defaults.apply_job_specification_defaults(spec)


async def create_job_schedule(request: web.Request) -> web.Response:
    svc = service(request)
    body = validation.schedule_create(await read_json(request))
    schedule_id = body["id"]
    key = schedule_id.lower()
    if key in svc.store.schedules:
        raise BatchError("JobScheduleExists")
    if key in svc.store.jobs:
        raise BatchError("JobExists")
    svc.check_quota()
    now = svc.clock.now()
    ts = timestamps.format(now)
    obj: JSON = {"id": schedule_id}
    if body.get("displayName") is not None:
        obj["displayName"] = body["displayName"]
    obj.update(
        {
            "eTag": "",
            "lastModified": ts,
            "creationTime": ts,
            "state": "active",
            "stateTransitionTime": ts,
            "schedule": body["schedule"],
            "jobSpecification": _job_specification(body["jobSpecification"]),
            "executionInfo": {},
        }
    )
    if body.get("metadata"):
        obj["metadata"] = body["metadata"]
    svc.store.touch(obj, now)
    svc.store.schedules[key] = obj
    svc.engine.schedule_changed(key)
    url = entity_url(svc.base_url, "jobschedules", schedule_id)
    return empty(201, {**entity_headers(obj), "Location": url, "DataServiceId": url})


async def get_job_schedule(request: web.Request) -> web.Response:
    _key, obj = _find(request)
    not_modified = check_conditions(request, obj, write=False)
    if not_modified is not None:
        return not_modified
    url = entity_url(service(request).base_url, "jobschedules", obj["id"])
    return entity_response(request, obj, url, "jobschedules")


async def job_schedule_exists(request: web.Request) -> web.Response:
    _key, obj = _find(request)
    not_modified = check_conditions(request, obj, write=False)
    if not_modified is not None:
        return not_modified
    return empty(200, entity_headers(obj))


async def list_job_schedules(request: web.Request) -> web.Response:
    svc = service(request)
    base = svc.base_url
    return list_response(
        request,
        svc.store.schedules.items(),
        collection="jobschedules",
        url_of=lambda obj: f"{base}/jobschedules/{obj['id']}",
    )


async def update_job_schedule(request: web.Request) -> web.Response:
    """PATCH: replace just the top-level properties sent."""
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    body = validation.schedule_update(await read_json(request), replace=False)
    _require_live(obj)
    if "schedule" in body:
        obj["schedule"] = body["schedule"]
    if "jobSpecification" in body:
        obj["jobSpecification"] = _job_specification(body["jobSpecification"])
    if "metadata" in body:
        if body["metadata"]:
            obj["metadata"] = body["metadata"]
        else:
            obj.pop("metadata", None)
    svc.store.touch(obj, svc.clock.now())
    svc.engine.schedule_changed(key)
    return empty(200, _write_headers(request, obj))


async def replace_job_schedule(request: web.Request) -> web.Response:
    """PUT: replace everything updatable; omitted metadata is deleted, omitted schedule = run once now."""
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    body = validation.schedule_update(await read_json(request), replace=True)
    _require_live(obj)
    obj["schedule"] = body.get("schedule") or {}
    obj["jobSpecification"] = _job_specification(body["jobSpecification"])
    if body.get("metadata"):
        obj["metadata"] = body["metadata"]
    else:
        obj.pop("metadata", None)
    svc.store.touch(obj, svc.clock.now())
    svc.engine.schedule_changed(key)
    return empty(200, _write_headers(request, obj))


def _set_schedule_state(request: web.Request, state: str) -> tuple[str, JSON]:
    """The shared part of disable / enable / terminate: preconditions, then the new state and a new ETag."""
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    _require_live(obj)
    now = svc.clock.now()
    set_state(obj, state, timestamps.format(now))
    svc.store.touch(obj, now)
    return key, obj


async def disable_job_schedule(request: web.Request) -> web.Response:
    key, obj = _set_schedule_state(request, "disabled")
    service(request).engine.schedule_changed(key)
    return empty(204, _write_headers(request, obj, "/disable"))


async def enable_job_schedule(request: web.Request) -> web.Response:
    key, obj = _set_schedule_state(request, "active")
    service(request).engine.schedule_changed(key)
    return empty(204, _write_headers(request, obj, "/enable"))


async def terminate_job_schedule(request: web.Request) -> web.Response:
    key, obj = _set_schedule_state(request, "terminating")
    service(request).engine.terminate_schedule(key)
    _ = truthy(request.query.get("force"))  # accepted; the terminating window is the same either way
    return empty(202, _write_headers(request, obj, "/terminate"))


async def delete_job_schedule(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    if obj.get("state") == "deleting":
        raise BatchError("JobScheduleBeingDeleted")
    now = svc.clock.now()
    set_state(obj, "deleting", timestamps.format(now))
    svc.store.mark_changed()  # GET answers deleting with the ETag from before the delete, as Azure
    svc.engine.delete_schedule(key)
    return empty(202)


async def list_jobs_from_schedule(request: web.Request) -> web.Response:
    svc = service(request)
    key, _obj = _find(request)
    prefix = f"{key}:"
    base = svc.base_url
    return list_response(
        request,
        ((k, job) for k, job in svc.store.jobs.items() if k.startswith(prefix)),
        collection="jobs",
        url_of=lambda job: f"{base}/jobs/{job['id']}",
    )


ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/jobschedules", "create_job_schedule", create_job_schedule),
    ("GET", "/jobschedules", "list_job_schedules", list_job_schedules),
    ("GET", "/jobschedules/{jobScheduleId}", "get_job_schedule", get_job_schedule),
    ("HEAD", "/jobschedules/{jobScheduleId}", "job_schedule_exists", job_schedule_exists),
    ("PATCH", "/jobschedules/{jobScheduleId}", "update_job_schedule", update_job_schedule),
    ("PUT", "/jobschedules/{jobScheduleId}", "replace_job_schedule", replace_job_schedule),
    ("DELETE", "/jobschedules/{jobScheduleId}", "delete_job_schedule", delete_job_schedule),
    ("POST", "/jobschedules/{jobScheduleId}/disable", "disable_job_schedule", disable_job_schedule),
    ("POST", "/jobschedules/{jobScheduleId}/enable", "enable_job_schedule", enable_job_schedule),
    ("POST", "/jobschedules/{jobScheduleId}/terminate", "terminate_job_schedule", terminate_job_schedule),
    ("GET", "/jobschedules/{jobScheduleId}/jobs", "list_jobs_from_schedule", list_jobs_from_schedule),
]
