"""The local Batch service on Azure's bad days, through the unmodified azure-batch SDK over HTTP.

Core quotas and allocation failures (pools with ``resizeErrors`` and only the nodes that fit, jobs left
waiting), the active jobs and schedules quota, start tasks that fail (node ``starttaskfailed``, job
still active), the ``terminating`` and ``deleting`` windows with Azure's ``previousState`` / ETag /
``endTime``, the job operations (PATCH, PUT, disable, enable), read-time defaults, numeric strings as
the Azure CLI sends them, and the two account keys with regeneration.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from tests.fixtures.batch import LocalBatch
from tests.fixtures.operator import wait_for

CLI_API = {"api-version": "2024-02-01.19.0"}
"""The api-version the Azure CLI 2.91 sends (it writes integer flags as JSON strings)."""


def uid(prefix: str = "bd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def job_body(job_id: str, *, vm_size: str = "standard_d2s_v3", dedicated: int = 1, low: int = 0,
             command: str = "/bin/true", start_task: dict[str, Any] | None = None) -> dict[str, Any]:
    pool: dict[str, Any] = {"vmSize": vm_size, "targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low}
    if start_task is not None:
        pool["startTask"] = start_task
    return {
        "id": job_id,
        "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": pool}},
        "jobManagerTask": {"id": "jm", "commandLine": command},
    }


def raw(client: Any, method: str, path: str, params: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """A request through the SDK's pipeline (SharedKey signed); the response, also on errors."""
    try:
        return client.send_request(HttpRequest(method, path, params=params or {"api-version": "2025-06-01"}, **kwargs))
    except HttpResponseError as exc:
        return exc.response


def pool_of(client: Any, job_id: str) -> Any:
    return client.get_pool(client.get_job(job_id).execution_info.pool_id)


def steady_pool(client: Any, job_id: str) -> Any:
    return wait_for(lambda: (p := pool_of(client, job_id)).allocation_state == "steady" and p, timeout=30)


@pytest.fixture(scope="module")
def quota_batch(local_batch_factory: Callable[..., LocalBatch]) -> LocalBatch:
    """A service whose account starts with no dedicated cores (a new account's first day)."""
    return local_batch_factory("--dedicated-core-quota", "0", "--no-execute")


# -- core quotas ------------------------------------------------------------------------------------


def test_core_quota_0_leaves_the_job_waiting_until_the_quota_is_raised(quota_batch: LocalBatch) -> None:
    client = quota_batch.client()
    quota_batch.quotas(dedicatedCores=0)
    job_id = uid()
    client.create_job(job_body(job_id))
    pool = steady_pool(client, job_id)
    assert [(e.code, e.message) for e in pool.resize_errors] == [
        ("AccountCoreQuotaReached", "The specified account has reached core quota")
    ]
    values = {v["name"]: v["value"] for v in pool.resize_errors[0]["values"]}
    assert values == {"VmSize": "Standard_D2s_v3", "VmFamily": "standardDSv3Family", "CoreQuota": "0"}
    assert pool.current_dedicated_nodes == 0 and list(client.list_nodes(pool.id)) == []
    assert client.get_job(job_id).state == "active"
    assert client.get_job_task_counts(job_id).task_counts.active == 1

    assert quota_batch.quotas(dedicatedCores=8)["dedicatedCores"] == 8
    wait_for(lambda: client.get_job(job_id).state == "completed", timeout=30, message="job completed")
    pool_after = client.get_job(job_id).execution_info
    assert pool_after.end_time is not None
    assert client.get_job_task_counts(job_id).task_counts.succeeded == 1


def test_a_pool_gets_only_the_nodes_that_fit(quota_batch: LocalBatch) -> None:
    client = quota_batch.client()
    quota_batch.quotas(dedicatedCores=4, lowPriorityCores=0)
    job_id = uid()
    client.create_job(job_body(job_id, dedicated=3, low=1, command="/bin/sleep 30"))
    pool = steady_pool(client, job_id)
    assert pool.current_dedicated_nodes == 2 and pool.current_low_priority_nodes == 0
    assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached", "AccountLowPriorityCoreQuotaReached"]
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}[pool.id]
    assert counts.dedicated.total == 2 and counts.low_priority.total == 0
    client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)
    quota_batch.quotas(dedicatedCores=0, lowPriorityCores=None)


def test_a_family_quota_limits_dedicated_nodes_of_that_family(quota_batch: LocalBatch) -> None:
    client = quota_batch.client()
    quota_batch.quotas(dedicatedCores=100, dedicatedCoresPerVMFamily={"standardDSv3Family": 2})
    job_id = uid()
    client.create_job(job_body(job_id, dedicated=2, command="/bin/sleep 30"))
    pool = steady_pool(client, job_id)
    assert pool.current_dedicated_nodes == 1
    assert {v["name"]: v["value"] for v in pool.resize_errors[0]["values"]}["CoreQuota"] == "2"
    client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)
    quota_batch.quotas(dedicatedCores=0, dedicatedCoresPerVMFamily={"standardDSv3Family": None})


def test_quotas_endpoint_answers_the_contract_shape(quota_batch: LocalBatch) -> None:
    got = quota_batch.quotas()
    assert {"dedicatedCores", "lowPriorityCores", "activeJobsAndSchedules"} <= set(got)
    assert got["dedicatedCores"] == 0 and got["lowPriorityCores"] is None


def test_unknown_vm_size_gets_unsupported_vm_size_and_the_job_waits(local_batch: LocalBatch, batch_client: Any) -> None:
    job_id = uid()
    batch_client.create_job(job_body(job_id, vm_size="standard_d2s_v9"))
    pool = steady_pool(batch_client, job_id)
    assert [(e.code, e.message) for e in pool.resize_errors] == [
        ("UnsupportedVMSize", "Requested VM size is not supported.")
    ]
    assert pool.current_dedicated_nodes == 0 and batch_client.get_job(job_id).state == "active"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)


def test_injected_allocation_failure_then_cleared(local_batch: LocalBatch, batch_client: Any) -> None:
    local_batch.fail_allocations("Standard_F2s_v2", message="Allocation failed as capacity is not available")
    assert local_batch.admin("GET", "allocation-failures")["value"][0]["code"] == "AllocationFailed"
    job_id = uid()
    batch_client.create_job(job_body(job_id, vm_size="standard_f2s_v2"))
    pool = steady_pool(batch_client, job_id)
    assert [(e.code, e.message) for e in pool.resize_errors] == [
        ("AllocationFailed", "Allocation failed as capacity is not available")
    ]
    assert pool.current_dedicated_nodes == 0 and batch_client.get_job(job_id).state == "active"
    local_batch.clear_allocation_failures()
    wait_for(lambda: batch_client.get_job(job_id).state == "completed", timeout=30, message="job completed")


# -- the active jobs and schedules quota -----------------------------------------------------------


@pytest.mark.parametrize("flag", ["--active-jobs-and-schedules-quota", "--job-quota"])
def test_active_jobs_and_schedules_quota(local_batch_factory: Callable[..., LocalBatch], flag: str) -> None:
    service = local_batch_factory(flag, "1", "--no-execute")
    client = service.client()
    client.create_job_schedule({
        "id": uid(), "schedule": {"recurrenceInterval": "PT4H"},
        "jobSpecification": {"poolInfo": {"poolId": "nowhere"}},
    })  # the schedule, and its job once created, are active
    with pytest.raises(HttpResponseError) as caught:
        client.create_job(job_body(uid()))
    assert caught.value.status_code == 409 and caught.value.error.code == "ActiveJobAndScheduleQuotaReached"
    service.quotas(activeJobsAndSchedules=None)
    client.create_job(job_body(uid()))


# -- start task failure ----------------------------------------------------------------------------


def test_failed_start_task_leaves_the_node_starttaskfailed_and_the_job_active(
    local_batch: LocalBatch, batch_client: Any
) -> None:
    job_id = uid()
    start = {"commandLine": "/bin/bash -c 'echo broken >&2; exit 3'", "waitForSuccess": True}
    body = job_body(job_id, start_task=start)
    body["constraints"] = {"maxWallClockTime": "PT6S"}  # it waits until its wall clock ends it, as on Azure
    batch_client.create_job(body)
    pool_id = batch_client.get_job(job_id).execution_info.pool_id
    node = wait_for(lambda: next((n for n in batch_client.list_nodes(pool_id) if n.state == "starttaskfailed"), None),
                    timeout=30, message="node starttaskfailed")
    assert node.start_task_info.exit_code == 3 and node.start_task_info.result == "failure"
    assert node.start_task_info.failure_info.category == "usererror"
    assert node.start_task_info.failure_info.code == "FailureExitCode"
    counts = {c.pool_id: c for c in batch_client.list_pool_node_counts()}[pool_id]
    assert counts.dedicated.start_task_failed == 1
    assert batch_client.get_job(job_id).state == "active"
    assert batch_client.get_task(job_id, "jm").state == "active"
    done = wait_for(lambda: (j := batch_client.get_job(job_id)).state == "completed" and j, timeout=30)
    assert done.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert done.execution_info.scheduling_error is None
    task = batch_client.get_task(job_id, "jm")
    assert task.execution_info.start_time is None and task.node_info is None, "the task never ran"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)


# -- terminating and deleting windows ---------------------------------------------------------------


@pytest.fixture(scope="module")
def window_batch(local_batch_factory: Callable[..., LocalBatch]) -> LocalBatch:
    """Windows of 2 Batch seconds (clock scale 1): long enough to observe each state."""
    return local_batch_factory("--terminating-window", "2", "--deleting-window", "2", "--no-execute")


def test_windows_endpoint(window_batch: LocalBatch) -> None:
    assert window_batch.windows() == {"terminatingSeconds": 2.0, "deletingSeconds": 2.0}


def test_job_terminate_window_previous_state_etag_and_end_time(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    job_id = uid()
    body = job_body(job_id)
    del body["jobManagerTask"]  # nothing to run: the job stays active until terminated
    client.create_job(body)
    response = raw(client, "POST", f"/jobs/{job_id}/terminate", json={"terminateReason": "UserTerminate"})
    assert response.status_code == 202
    etag = response.headers["ETag"]
    job = client.get_job(job_id)
    assert job.state == "terminating" and job.previous_state == "active"
    assert job.execution_info.termination_reason == "UserTerminate" and job.execution_info.end_time is None
    assert job.etag == etag
    done = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, timeout=30)
    assert done.previous_state == "active" and done.etag == etag
    assert done.execution_info.end_time is not None and done.execution_info.termination_reason == "UserTerminate"


def test_job_delete_window_answers_deleting_then_404(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    job_id = uid()
    body = job_body(job_id)
    del body["jobManagerTask"]
    client.create_job(body)
    before = client.get_job(job_id)
    assert raw(client, "DELETE", f"/jobs/{job_id}").status_code == 202
    deleting = client.get_job(job_id)
    assert deleting.state == "deleting" and deleting.previous_state == "active"
    assert deleting.etag == before.etag
    wait_for(lambda: raw(client, "GET", f"/jobs/{job_id}").status_code == 404, timeout=30, message="404")
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)


def test_schedule_terminate_and_delete_windows(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    schedule_id = uid()
    client.create_job_schedule({
        "id": schedule_id, "schedule": {"recurrenceInterval": "PT4H"},
        "jobSpecification": {"poolInfo": {"poolId": "nowhere"}},
    })
    response = raw(client, "POST", f"/jobschedules/{schedule_id}/terminate")
    assert response.status_code == 202
    etag = response.headers["ETag"]
    assert client.get_job_schedule(schedule_id).state == "terminating"
    assert client.get_job(f"{schedule_id}:job-1").state == "terminating"
    done = wait_for(lambda: (s := client.get_job_schedule(schedule_id)).state == "completed" and s, timeout=30)
    assert done.previous_state == "active" and done.etag == etag and done.execution_info.end_time is not None
    job = client.get_job(f"{schedule_id}:job-1")
    assert job.state == "completed" and job.execution_info.termination_reason == "TerminateJobSchedule"

    assert raw(client, "DELETE", f"/jobschedules/{schedule_id}").status_code == 202
    deleting = client.get_job_schedule(schedule_id)
    assert deleting.state == "deleting" and deleting.previous_state == "completed" and deleting.etag == etag
    wait_for(lambda: raw(client, "GET", f"/jobschedules/{schedule_id}").status_code == 404, timeout=30)


# -- job operations, defaults, strings ---------------------------------------------------------------


def test_job_patch_and_put(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    job_id = uid()
    body = job_body(job_id)
    del body["jobManagerTask"]
    body["metadata"] = [{"name": "a", "value": "1"}]
    client.create_job(body)
    created = client.get_job(job_id)
    patched = raw(client, "PATCH", f"/jobs/{job_id}", json={"priority": 900})
    assert patched.status_code == 200 and patched.headers["ETag"] != created.etag
    assert patched.headers["DataServiceId"] == f"{window_batch.endpoint}/jobs/{job_id}"
    job = client.get_job(job_id)
    assert job.priority == 900 and job.metadata[0].name == "a"
    put = {"priority": 500, "constraints": {"maxTaskRetryCount": 3}, "poolInfo": body["poolInfo"]}
    assert raw(client, "PUT", f"/jobs/{job_id}", json=put).status_code == 200
    job = client.get_job(job_id)
    assert job.priority == 500 and job.constraints.max_task_retry_count == 3 and job.metadata is None
    assert job.constraints.max_wall_clock_time is not None
    refused = raw(client, "PATCH", f"/jobs/{job_id}", json={"displayName": "x"})
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidRequestBody"


def test_integer_and_boolean_strings_as_the_azure_cli_sends_them(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    job_id = uid()
    body = job_body(job_id)
    del body["jobManagerTask"]
    body.update({"priority": "20", "allowTaskPreemption": "true", "maxParallelTasks": "4"})
    assert raw(client, "POST", "/jobs", params=CLI_API, json=body).status_code == 201
    job = client.get_job(job_id)
    assert (job.priority, job.allow_task_preemption, job.max_parallel_tasks) == (20, True, 4)
    assert raw(client, "PATCH", f"/jobs/{job_id}", params=CLI_API, json={"priority": "-5"}).status_code == 200
    assert client.get_job(job_id).priority == -5
    bad = raw(client, "PATCH", f"/jobs/{job_id}", params=CLI_API, json={"priority": "twenty"})
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidPropertyValue"


def test_job_disable_requeue_and_enable(local_batch: LocalBatch, batch_client: Any) -> None:
    job_id = uid()
    batch_client.create_job(job_body(job_id, command="/bin/sleep 30"))
    wait_for(lambda: batch_client.get_task(job_id, "jm").state == "running", timeout=30, message="running")
    response = raw(batch_client, "POST", f"/jobs/{job_id}/disable", json={"disableTasks": "requeue"})
    assert response.status_code == 202
    assert response.headers["DataServiceId"].endswith(f"/jobs/{job_id}/disable")
    wait_for(lambda: batch_client.get_job(job_id).state == "disabled", timeout=30, message="disabled")
    task = batch_client.get_task(job_id, "jm")
    assert task.state == "active" and task.execution_info.requeue_count == 1
    again = raw(batch_client, "POST", f"/jobs/{job_id}/disable", json={"disableTasks": "requeue"})
    assert again.status_code == 409 and again.json()["code"] == "JobNotActive"
    response = raw(batch_client, "POST", f"/jobs/{job_id}/enable")
    assert response.status_code == 202
    wait_for(lambda: batch_client.get_task(job_id, "jm").state == "running", timeout=30, message="running again")
    assert batch_client.get_job(job_id).state == "active"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)


def test_job_disable_terminate_ends_the_running_task(local_batch: LocalBatch, batch_client: Any) -> None:
    job_id = uid()
    batch_client.create_job(job_body(job_id, command="/bin/sleep 30"))
    wait_for(lambda: batch_client.get_task(job_id, "jm").state == "running", timeout=30, message="running")
    assert raw(batch_client, "POST", f"/jobs/{job_id}/disable", json={"disableTasks": "terminate"}).status_code == 202
    wait_for(lambda: batch_client.get_job(job_id).state == "disabled", timeout=30, message="disabled")
    task = batch_client.get_task(job_id, "jm")
    assert task.state == "completed" and task.execution_info.failure_info.code == "TaskEnded"
    batch_client.begin_delete_job(job_id, polling_interval=0.05).result(timeout=30)


def test_read_time_defaults_of_api_2025_06_01(window_batch: LocalBatch) -> None:
    client = window_batch.client()
    job_id = uid()
    body = job_body(job_id)
    body["constraints"] = {"maxTaskRetryCount": 2}
    body["jobReleaseTask"] = {"commandLine": "/bin/true"}
    body["jobPreparationTask"] = {"commandLine": "/bin/true"}
    client.create_job(body)
    got = raw(client, "GET", f"/jobs/{job_id}").json()
    assert got["jobReleaseTask"] == {
        "id": "jobrelease", "commandLine": "/bin/true", "maxWallClockTime": "PT15M", "retentionTime": "P7D",
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
    }
    assert got["jobManagerTask"]["constraints"]["maxTaskRetryCount"] == 2
    policy = got["poolInfo"]["autoPoolSpecification"]["pool"]["taskSchedulingPolicy"]
    assert policy == {"nodeFillType": "Spread", "jobDefaultOrder": "none"}
    counts = raw(client, "GET", f"/jobs/{job_id}/taskcounts").json()
    assert counts["odata.metadata"] == f"{window_batch.endpoint}/$metadata#taskcountsresult/@Element"


# -- keys ------------------------------------------------------------------------------------------


def test_primary_and_secondary_keys_with_regeneration(local_batch_factory: Callable[..., LocalBatch]) -> None:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    service = local_batch_factory("--no-execute")
    keys = service.keys()
    assert keys == {"primary": service.key, "secondary": service.secondary_key} and keys["primary"] != keys["secondary"]

    def client_with(key: str) -> Any:
        return BatchClient(service.endpoint, AzureNamedKeyCredential(service.account, key))

    old_primary, secondary = client_with(keys["primary"]), client_with(keys["secondary"])
    assert list(old_primary.list_jobs()) == [] and list(secondary.list_jobs()) == []
    fresh = service.regenerate_key("primary")
    assert fresh["primary"] != keys["primary"] and fresh["secondary"] == keys["secondary"]
    with pytest.raises(HttpResponseError) as caught:
        list(old_primary.list_jobs())
    assert caught.value.status_code == 403 and caught.value.error.code == "AuthenticationFailed"
    assert list(secondary.list_jobs()) == [] and list(client_with(fresh["primary"]).list_jobs()) == []
