"""The local Batch service's REST API driven by the unmodified azure-batch SDK over HTTP.

One service process per session (``local_batch``); every test uses its own ids. Error paths are
checked on the wire body Batch defines (code, message with RequestId/Time, values).
"""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from typing import Any

import pytest
from azure.batch import models
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest

API = {"api-version": "2025-06-01"}
IF_NOT_MODIFIED = MatchConditions.IfNotModified


def uid(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def schedule_body(schedule_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": schedule_id,
        "schedule": {"recurrenceInterval": "PT04H00M00S", "startWindow": "PT01H00M00S"},
        "jobSpecification": {"poolInfo": {"poolId": "pool-a"}, "constraints": {"maxTaskRetryCount": 2}},
    }
    body.update(extra)
    return body


def raw(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    """A raw request through the SDK's pipeline (SharedKey signing); returns the response even on errors."""
    params = {**API, **kwargs.pop("params", {})}
    try:
        return client.send_request(HttpRequest(method, path, params=params, **kwargs))
    except HttpResponseError as exc:
        return exc.response


def error_of(exc: HttpResponseError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) >= {"odata.metadata", "code", "message"}
    assert body["message"]["lang"] == "en-US"
    assert "\nRequestId:" in body["message"]["value"] and "\nTime:" in body["message"]["value"]
    body["values_by_key"] = {v["key"]: v["value"] for v in body.get("values", [])}
    return body


# -- job schedules: create / get / exists / list ----------------------------------------------------


def test_create_answers_201_with_batch_headers(batch_client: Any, local_batch: Any) -> None:
    schedule_id = uid()
    response = raw(
        batch_client,
        "POST",
        "/jobschedules",
        json=schedule_body(schedule_id),
        headers={"client-request-id": "11111111-2222-3333-4444-555555555555"},
    )
    assert response.status_code == 201
    assert response.text() == ""
    url = f"{local_batch.endpoint}/jobschedules/{schedule_id}"
    assert response.headers["Location"] == url
    assert response.headers["DataServiceId"] == url
    assert response.headers["DataServiceVersion"] == "3.0"
    assert response.headers["ETag"].startswith("0x")
    assert response.headers["Last-Modified"].endswith(" GMT")
    uuid.UUID(response.headers["request-id"])
    assert response.headers["client-request-id"] == "11111111-2222-3333-4444-555555555555"


def test_get_fills_defaults_normalises_durations_and_matches_headers(batch_client: Any, local_batch: Any) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    response = raw(batch_client, "GET", f"/jobschedules/{schedule_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["odata.metadata"] == f"{local_batch.endpoint}/$metadata#jobschedules/@Element"
    assert body["url"] == f"{local_batch.endpoint}/jobschedules/{schedule_id}"
    assert response.headers["ETag"] == body["eTag"]
    assert body["state"] == "active"
    assert body["schedule"] == {"recurrenceInterval": "PT4H", "startWindow": "PT1H"}
    spec = body["jobSpecification"]
    assert spec["priority"] == 0 and spec["maxParallelTasks"] == -1
    assert spec["allowTaskPreemption"] is False and spec["usesTaskDependencies"] is False
    assert spec["onAllTasksComplete"] == "noaction" and spec["onTaskFailure"] == "noaction"
    assert spec["constraints"] == {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "maxTaskRetryCount": 2}
    assert "metadata" not in body
    model = batch_client.get_job_schedule(schedule_id)
    assert model.schedule.recurrence_interval == datetime.timedelta(hours=4)


def test_exists_and_not_found(batch_client: Any) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    assert batch_client.job_schedule_exists(schedule_id.upper()) is True
    with pytest.raises(ResourceNotFoundError):
        batch_client.job_schedule_exists(uid("missing"))
    with pytest.raises(ResourceNotFoundError) as info:
        batch_client.get_job_schedule(uid("missing"))
    assert error_of(info.value)["code"] == "JobScheduleNotFound"


def test_list_pages_with_absolute_next_link_filter_and_select(batch_client: Any, local_batch: Any) -> None:
    prefix = uid("page")
    ids = [f"{prefix}-{i:02d}" for i in range(12)]
    for schedule_id in ids:
        batch_client.create_job_schedule(schedule_body(schedule_id))
    batch_client.disable_job_schedule(ids[3])
    batch_client.disable_job_schedule(ids[7])

    listed = [s.id for s in batch_client.list_job_schedules(filter=f"startswith(id,'{prefix}')", max_results=5)]
    assert listed == ids

    first = raw(
        batch_client, "GET", "/jobschedules", params={"$filter": f"startswith(id,'{prefix}')", "maxresults": "5"}
    )
    page = first.json()
    assert page["odata.metadata"] == f"{local_batch.endpoint}/$metadata#jobschedules"
    assert len(page["value"]) == 5
    assert page["odata.nextLink"].startswith(f"{local_batch.endpoint}/jobschedules?")

    disabled = batch_client.list_job_schedules(filter=f"startswith(id,'{prefix}') and state eq 'disabled'")
    assert sorted(s.id for s in disabled) == [ids[3], ids[7]]
    either = batch_client.list_job_schedules(filter=f"id eq '{ids[0].upper()}' or id eq '{ids[1]}'")
    assert sorted(s.id for s in either) == ids[:2]
    created = batch_client.get_job_schedule(ids[5]).creation_time
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = batch_client.list_job_schedules(filter=f"startswith(id,'{prefix}') and creationTime gt {stamp}")
    assert [s.id for s in later] == ids[6:]

    selected = raw(
        batch_client,
        "GET",
        "/jobschedules",
        params={"$filter": f"id eq '{ids[0]}'", "$select": "id,state,executionInfo"},
    ).json()["value"]
    assert len(selected) == 1 and set(selected[0]) <= {"id", "state", "executionInfo"} and "id" in selected[0]
    got = raw(batch_client, "GET", f"/jobschedules/{ids[0]}", params={"$select": "id,schedule/startWindow"}).json()
    assert got["schedule"] == {"startWindow": "PT1H"} and "jobSpecification" not in got


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"maxresults": "0"}, "maxresults"),
        ({"maxresults": "1001"}, "maxresults"),
        ({"$filter": "id eqq 'x'"}, "$filter"),
    ],
)
def test_bad_query_parameters_answer_400(batch_client: Any, params: dict[str, str], name: str) -> None:
    response = raw(batch_client, "GET", "/jobschedules", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "InvalidQueryParameterValue"
    assert {"key": "QueryParameterName", "value": name} in body["values"]


# -- PATCH / PUT / ETags ----------------------------------------------------------------------------


def test_patch_replaces_only_sent_properties_and_put_replaces_all(batch_client: Any) -> None:
    schedule_id = uid()
    metadata = [{"name": "azurebatch.dev/owner", "value": "default/x"}]
    batch_client.create_job_schedule(schedule_body(schedule_id, metadata=metadata))
    etag0 = batch_client.get_job_schedule(schedule_id).etag

    batch_client.update_job_schedule(schedule_id, {"schedule": {"recurrenceInterval": "PT05H00M00S"}})
    after_patch = batch_client.get_job_schedule(schedule_id)
    assert after_patch.etag != etag0
    assert after_patch.schedule.recurrence_interval == datetime.timedelta(hours=5)
    assert after_patch.schedule.start_window is None  # the whole schedule object was replaced
    assert [(m.name, m.value) for m in after_patch.metadata] == [("azurebatch.dev/owner", "default/x")]
    assert after_patch.job_specification.constraints.max_task_retry_count == 2

    batch_client.replace_job_schedule(schedule_id, {"jobSpecification": {"poolInfo": {"poolId": "pool-b"}}})
    after_put = raw(batch_client, "GET", f"/jobschedules/{schedule_id}").json()
    assert after_put["eTag"] != after_patch.etag
    assert "metadata" not in after_put
    assert after_put["schedule"] == {}
    assert after_put["jobSpecification"]["poolInfo"] == {"poolId": "pool-b"}
    assert after_put["jobSpecification"]["constraints"]["maxTaskRetryCount"] == 0


def test_write_answers_carry_new_etag_and_data_service_id(batch_client: Any, local_batch: Any) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    url = f"{local_batch.endpoint}/jobschedules/{schedule_id}"
    seen = {batch_client.get_job_schedule(schedule_id).etag}
    for method, path, status, suffix in [
        ("PATCH", f"/jobschedules/{schedule_id}", 200, ""),
        ("PUT", f"/jobschedules/{schedule_id}", 200, ""),
        ("POST", f"/jobschedules/{schedule_id}/disable", 204, "/disable"),
        ("POST", f"/jobschedules/{schedule_id}/enable", 204, "/enable"),
    ]:
        body = {"jobSpecification": {"poolInfo": {"poolId": "p"}}} if method in ("PATCH", "PUT") else None
        response = raw(batch_client, method, path, json=body)
        assert response.status_code == status, response.text()
        assert response.headers["DataServiceId"] == url + suffix
        assert response.headers["ETag"] not in seen
        seen.add(response.headers["ETag"])
        assert batch_client.get_job_schedule(schedule_id).etag == response.headers["ETag"]


def test_conditional_requests(batch_client: Any) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    etag = batch_client.get_job_schedule(schedule_id).etag
    with pytest.raises(ResourceModifiedError) as info:
        batch_client.update_job_schedule(
            schedule_id, {"metadata": []}, etag="0x8DBAED6F7336C7A", match_condition=MatchConditions.IfNotModified
        )
    assert info.value.status_code == 412 and error_of(info.value)["code"] == "ConditionNotMet"
    batch_client.update_job_schedule(
        schedule_id,
        {"metadata": [{"name": "a", "value": "b"}]},
        etag=etag,
        match_condition=MatchConditions.IfNotModified,
    )
    with pytest.raises(ResourceModifiedError) as info:
        batch_client.disable_job_schedule(schedule_id, etag=etag, match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412
    new_etag = batch_client.get_job_schedule(schedule_id).etag
    response = raw(batch_client, "GET", f"/jobschedules/{schedule_id}", headers={"If-None-Match": f'"{new_etag}"'})
    assert response.status_code == 304
    response = raw(
        batch_client, "POST", f"/jobschedules/{schedule_id}/disable", headers={"If-None-Match": f'"{new_etag}"'}
    )
    assert response.status_code == 412
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
    with pytest.raises(HttpResponseError) as info:
        batch_client.get_job_schedule(schedule_id, if_modified_since=future)
    assert info.value.status_code == 304
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    with pytest.raises(HttpResponseError) as info:
        batch_client.enable_job_schedule(schedule_id, if_unmodified_since=past)
    assert info.value.status_code == 412


def test_ids_are_case_insensitive_and_shared_with_jobs(batch_client: Any) -> None:
    schedule_id = uid("Mixed-Case")
    batch_client.create_job_schedule(schedule_body(schedule_id))
    assert batch_client.get_job_schedule(schedule_id.lower()).id == schedule_id
    with pytest.raises(ResourceExistsError) as info:
        batch_client.create_job_schedule(schedule_body(schedule_id.upper()))
    assert error_of(info.value)["code"] == "JobScheduleExists"
    with pytest.raises(ResourceExistsError) as info:
        batch_client.create_job({"id": schedule_id.upper(), "poolInfo": {"poolId": "p"}})
    assert error_of(info.value)["code"] == "JobScheduleExists"
    job_id = uid("job")
    batch_client.create_job({"id": job_id, "poolInfo": {"poolId": "p"}})
    with pytest.raises(ResourceExistsError) as info:
        batch_client.create_job_schedule(schedule_body(job_id.upper()))
    assert error_of(info.value)["code"] == "JobExists"
    with pytest.raises(ResourceExistsError) as info:
        batch_client.create_job({"id": job_id, "poolInfo": {"poolId": "p"}})
    assert error_of(info.value)["code"] == "JobExists"


# -- validation -------------------------------------------------------------------------------------

AUTO_POOL = {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {"vmSize": "standard_d2s_v3"}}}


def _with(path: str, value: Any) -> dict[str, Any]:
    body = schedule_body(uid())
    body["jobSpecification"]["poolInfo"] = json.loads(json.dumps(AUTO_POOL))
    body["jobSpecification"]["jobManagerTask"] = {"id": "jm", "commandLine": "/bin/true"}
    target = body
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if value is None:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return body


VALIDATION_CASES = [
    ("bad-duration", _with("schedule.recurrenceInterval", "4 hours"), "InvalidPropertyValue", "recurrenceInterval"),
    (
        "interval-under-a-minute",
        _with("schedule.recurrenceInterval", "PT30S"),
        "InvalidPropertyValue",
        "recurrenceInterval",
    ),
    ("window-under-a-minute", _with("schedule.startWindow", "PT10S"), "InvalidPropertyValue", "startWindow"),
    (
        "unknown-enum",
        _with("jobSpecification.onAllTasksComplete", "terminate"),
        "InvalidPropertyValue",
        "onAllTasksComplete",
    ),
    (
        "bad-lifetime-enum",
        _with("jobSpecification.poolInfo.autoPoolSpecification.poolLifetimeOption", "perjob"),
        "InvalidPropertyValue",
        "poolLifetimeOption",
    ),
    ("missing-pool-info", _with("jobSpecification.poolInfo", None), "MissingRequiredProperty", "poolInfo"),
    ("missing-id", _with("id", None), "MissingRequiredProperty", "id"),
    ("bad-id-chars", _with("id", "has space"), "InvalidPropertyValue", "id"),
    ("id-too-long", _with("id", "x" * 65), "InvalidPropertyValue", "id"),
    (
        "missing-command-line",
        _with("jobSpecification.jobManagerTask.commandLine", None),
        "MissingRequiredProperty",
        "commandLine",
    ),
    ("wrong-kind", _with("jobSpecification.priority", "high"), "InvalidPropertyValue", "priority"),
    (
        "target-dedicated-2016",
        _with("jobSpecification.poolInfo.autoPoolSpecification.pool.targetDedicated", 1),
        "InvalidRequestBody",
        "targetDedicated",
    ),
    (
        "max-tasks-per-node-2016",
        _with("jobSpecification.poolInfo.autoPoolSpecification.pool.maxTasksPerNode", 2),
        "InvalidRequestBody",
        "maxTasksPerNode",
    ),
    (
        "run-elevated-2016",
        _with("jobSpecification.jobManagerTask.runElevated", True),
        "InvalidRequestBody",
        "runElevated",
    ),
    (
        "blob-source-2016",
        _with("jobSpecification.jobManagerTask.resourceFiles", [{"blobSource": "https://x/y", "filePath": "y"}]),
        "InvalidRequestBody",
        "blobSource",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "prop"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_create_validation_answers_400_naming_the_property(
    batch_client: Any, body: dict[str, Any], code: str, prop: str
) -> None:
    with pytest.raises(HttpResponseError) as info:
        batch_client.create_job_schedule(body)
    assert info.value.status_code == 400
    error = error_of(info.value)
    assert error["code"] == code
    assert error["values_by_key"]["PropertyName"] == prop
    schedule_id = body.get("id")
    if isinstance(schedule_id, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", schedule_id):
        with pytest.raises(ResourceNotFoundError):  # nothing was half-created
            batch_client.get_job_schedule(schedule_id)


@pytest.mark.parametrize("prop", ["id", "displayName", "state", "executionInfo"])
def test_update_of_immutable_properties_answers_400(batch_client: Any, prop: str) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    for update in (batch_client.update_job_schedule, batch_client.replace_job_schedule):
        with pytest.raises(HttpResponseError) as info:
            update(schedule_id, {prop: "x", "jobSpecification": {"poolInfo": {"poolId": "p"}}})
        assert info.value.status_code == 400
        assert error_of(info.value)["values_by_key"]["PropertyName"] == prop


def test_malformed_json_answers_invalid_request_body(batch_client: Any) -> None:
    response = raw(
        batch_client,
        "POST",
        "/jobschedules",
        content=b"{not json",
        headers={"Content-Type": "application/json; odata=minimalmetadata"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidRequestBody"


# -- authentication ---------------------------------------------------------------------------------


def _tamper(request: Any) -> None:
    """A raw_request_hook: azure-core runs it after the SDK signed the request; it changes the query."""
    request.http_request.url = request.http_request.url.replace("api-version=", "timeOut=30&api-version=")


def test_shared_key_is_verified(local_batch: Any) -> None:
    import base64

    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    wrong = BatchClient(
        local_batch.endpoint, AzureNamedKeyCredential(local_batch.account, base64.b64encode(b"x" * 64).decode())
    )
    with pytest.raises(HttpResponseError) as info:
        wrong.get_job_schedule("anything")
    assert info.value.status_code == 403 and error_of(info.value)["code"] == "AuthenticationFailed"

    other_account = BatchClient(local_batch.endpoint, AzureNamedKeyCredential("someoneelse", local_batch.key))
    with pytest.raises(HttpResponseError) as info:
        list(other_account.list_job_schedules())
    assert info.value.status_code == 403

    tampered = local_batch.client(raw_request_hook=_tamper)
    with pytest.raises(HttpResponseError) as info:
        list(tampered.list_job_schedules())
    assert info.value.status_code == 403
    assert "string to sign" in error_of(info.value)["values_by_key"]["AuthenticationErrorDetail"]

    good = local_batch.client()
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=16)
    with pytest.raises(HttpResponseError) as info:
        list(good.list_job_schedules(ocp_date=old))
    assert info.value.status_code == 403
    recent = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    list(good.list_job_schedules(ocp_date=recent, max_results=1))


# -- jobs, tasks, pools, nodes ----------------------------------------------------------------------


def test_standalone_job_operations(batch_client: Any, local_batch: Any) -> None:
    job_id = uid("job")
    response = raw(batch_client, "POST", "/jobs", json={"id": job_id, "poolInfo": {"poolId": "pool-x"}, "priority": 5})
    assert response.status_code == 201
    assert response.headers["Location"] == f"{local_batch.endpoint}/jobs/{job_id}"
    job = batch_client.get_job(job_id.upper())
    assert job.id == job_id and job.priority == 5 and job.pool_info.pool_id == "pool-x"
    assert job.constraints.max_wall_clock_time is not None
    assert job_id in {j.id for j in batch_client.list_jobs(filter=f"startswith(id,'{job_id}')")}
    counts = batch_client.get_job_task_counts(job_id)
    assert counts.task_counts.failed == 0
    with pytest.raises(ResourceNotFoundError) as info:
        batch_client.get_task(job_id, "no-such-task")
    assert error_of(info.value)["code"] == "TaskNotFound"
    assert isinstance(list(batch_client.list_tasks(job_id)), list)
    response = raw(batch_client, "POST", f"/jobs/{job_id}/terminate", json={"terminateReason": "test"})
    assert response.status_code == 202
    assert response.headers["DataServiceId"].endswith("/terminate")
    with pytest.raises(ResourceNotFoundError) as info:
        batch_client.get_job(uid("missing"))
    assert error_of(info.value)["code"] == "JobNotFound"


def test_pool_and_node_not_found(batch_client: Any) -> None:
    for call in (
        lambda: batch_client.get_pool(uid("pool")),
        lambda: list(batch_client.list_nodes(uid("pool"))),
        lambda: batch_client.begin_delete_pool(uid("pool")),
    ):
        with pytest.raises(ResourceNotFoundError) as info:
            call()
        assert error_of(info.value)["code"] == "PoolNotFound"
    assert isinstance(list(batch_client.list_pools()), list)


def test_schedule_jobs_list_of_unknown_schedule(batch_client: Any) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        list(batch_client.list_jobs_from_schedule(uid("missing")))
    assert error_of(info.value)["code"] == "JobScheduleNotFound"


# -- faults and the admin API -----------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.parametrize("code", ["429", "503", "500", "reset"])
def test_injected_faults_are_retried_by_the_sdk(batch_client: Any, local_batch: Any, code: str) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    local_batch.reset_counts()
    local_batch.faults(nextN=1, codes=[code], operations=["get_job_schedule"], retryAfter=0)
    try:
        assert batch_client.get_job_schedule(schedule_id).id == schedule_id
    finally:
        local_batch.clear_faults()
    counts = local_batch.counts()["get_job_schedule"]["byStatus"]
    assert counts["200"] == 1
    assert counts.get("0" if code == "reset" else code) == 1


@pytest.mark.chaos
def test_injected_429_carries_retry_after(batch_client: Any, local_batch: Any) -> None:
    local_batch.faults(nextN=1, codes=["429"], operations=["list_job_schedules"], retryAfter=7)
    try:
        from azure.core.pipeline.policies import RetryPolicy

        client = local_batch.client(retry_policy=RetryPolicy(retry_total=0))
        response = raw(client, "GET", "/jobschedules", params={"maxresults": "1"})
    finally:
        local_batch.clear_faults()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == "TooManyRequests"


@pytest.mark.chaos
def test_latency_is_added(batch_client: Any, local_batch: Any) -> None:
    local_batch.faults(latencyMs=300)
    try:
        started = time.monotonic()
        list(batch_client.list_job_schedules(max_results=1))
        assert time.monotonic() - started >= 0.3
    finally:
        local_batch.clear_faults()


def test_admin_counts_clock_info_state(batch_client: Any, local_batch: Any) -> None:
    local_batch.reset_counts()
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    with pytest.raises(ResourceExistsError):
        batch_client.create_job_schedule(schedule_body(schedule_id))
    assert local_batch.counts()["create_job_schedule"] == {"total": 2, "byStatus": {"201": 1, "409": 1}, "nextPages": 0}
    info = local_batch.info()
    assert info["endpoint"] == local_batch.endpoint and info["account"] == local_batch.account
    assert schedule_id.lower() in local_batch.state()["schedules"]
    before = datetime.datetime.fromisoformat(local_batch.clock()["now"])
    after = datetime.datetime.fromisoformat(local_batch.advance("PT1H")["now"])
    assert after - before >= datetime.timedelta(hours=1)


def test_terminate_and_delete_finish_through_the_sdk_pollers(batch_client: Any) -> None:
    schedule_id = uid("lro")
    batch_client.create_job_schedule(schedule_body(schedule_id))
    batch_client.begin_terminate_job_schedule(schedule_id, polling_interval=0.05).result(timeout=30)
    done = batch_client.get_job_schedule(schedule_id)
    assert done.state == "completed" and done.execution_info.end_time is not None
    assert batch_client.get_job(f"{schedule_id}:job-1").state == "completed"
    with pytest.raises(ResourceExistsError) as info:
        batch_client.disable_job_schedule(schedule_id)
    assert error_of(info.value)["code"] == "JobScheduleCompleted"
    batch_client.begin_delete_job_schedule(schedule_id, polling_interval=0.05).result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job_schedule(schedule_id)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job(f"{schedule_id}:job-1")

    job_id = uid("lrojob")
    batch_client.create_job({"id": job_id, "poolInfo": {"poolId": "p"}})
    # The SDK cannot serialise begin_terminate_job without options (azure-batch 15.1.0): send the body.
    batch_client.begin_terminate_job(job_id, {"terminateReason": "test"}, polling_interval=0.05).result(timeout=30)
    assert batch_client.get_job(job_id).state == "completed"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job(job_id)


def test_expand_stats_is_accepted(batch_client: Any) -> None:
    schedule_id = uid()
    batch_client.create_job_schedule(schedule_body(schedule_id))
    assert raw(batch_client, "GET", f"/jobschedules/{schedule_id}", params={"$expand": "stats"}).status_code == 200
    assert batch_client.list_job_schedules(filter=f"id eq '{schedule_id}'", expand=["stats"]).next().id == schedule_id


# -- aio client -------------------------------------------------------------------------------------


async def test_aio_client_drives_the_schedule_lifecycle(aio_batch_client: Any) -> None:
    schedule_id = uid("aio")
    await aio_batch_client.create_job_schedule(
        models.BatchJobScheduleCreateOptions(
            id=schedule_id,
            schedule=models.BatchJobScheduleConfiguration(recurrence_interval=datetime.timedelta(hours=4)),
            job_specification=models.BatchJobSpecification(pool_info=models.BatchPoolInfo(pool_id="p")),
        )
    )
    got = await aio_batch_client.get_job_schedule(schedule_id)
    assert got.state == models.BatchJobScheduleState.ACTIVE
    assert await aio_batch_client.job_schedule_exists(schedule_id) is True
    ids = [s.id async for s in aio_batch_client.list_job_schedules(filter=f"id eq '{schedule_id}'")]
    assert ids == [schedule_id]
    await aio_batch_client.update_job_schedule(
        schedule_id, models.BatchJobScheduleUpdateOptions(metadata=[models.BatchMetadataItem(name="k", value="v")])
    )
    await aio_batch_client.disable_job_schedule(schedule_id)
    assert (await aio_batch_client.get_job_schedule(schedule_id)).state == models.BatchJobScheduleState.DISABLED
    await aio_batch_client.enable_job_schedule(schedule_id)
    with pytest.raises(ResourceExistsError):
        await aio_batch_client.create_job_schedule(schedule_body(schedule_id))
    jobs = [j async for j in aio_batch_client.list_jobs_from_schedule(schedule_id)]
    assert all(j.id.startswith(f"{schedule_id}:job-") for j in jobs)


async def test_aio_client_jobs_pools_and_errors(aio_batch_client: Any) -> None:
    schedule_id = uid("aio")
    await aio_batch_client.create_job_schedule(schedule_body(schedule_id))
    job = await aio_batch_client.get_job(f"{schedule_id}:job-1")
    assert job.execution_info.pool_id == "pool-a"
    assert f"{schedule_id}:job-1" in [
        j.id async for j in aio_batch_client.list_jobs(filter=f"startswith(id,'{schedule_id}')")
    ]
    counts = await aio_batch_client.get_job_task_counts(job.id)
    assert counts.task_counts.running == 0
    assert [t.id async for t in aio_batch_client.list_tasks(job.id)] == []
    assert isinstance([p.id async for p in aio_batch_client.list_pools()], list)
    with pytest.raises(ResourceNotFoundError):
        await aio_batch_client.get_pool(uid("nopool"))
    with pytest.raises(HttpResponseError) as info:
        await aio_batch_client.create_job_schedule(_with("schedule.recurrenceInterval", "PT5S"))
    assert info.value.status_code == 400
    poller = await aio_batch_client.begin_terminate_job_schedule(schedule_id, polling_interval=0.05)
    await poller.result()
    poller = await aio_batch_client.begin_delete_job_schedule(schedule_id, polling_interval=0.05)
    await poller.result()
    with pytest.raises(ResourceNotFoundError):
        await aio_batch_client.job_schedule_exists(schedule_id)


async def test_aio_paging_follows_next_links_with_filters(aio_batch_client: Any) -> None:
    prefix = uid("aiopage")
    for i in range(7):
        await aio_batch_client.create_job_schedule(schedule_body(f"{prefix}-{i}"))
    query = f"startswith(id,'{prefix}') and (state eq 'active' or state eq 'disabled')"
    ids = [s.id async for s in aio_batch_client.list_job_schedules(filter=query, max_results=2, select=["id", "state"])]
    assert ids == [f"{prefix}-{i}" for i in range(7)]
