"""Tasks added to a job, as Azure Batch takes them, with the unmodified azure-batch SDK over HTTP.

``create_task``, ``create_task_collection`` (per-task results: success and ``clienterror`` with Batch's error,
the rest still added; more than 100 tasks refused whole), the SDK's own ``create_tasks`` chunking 150 tasks,
``list_tasks`` with the filters the SDK sends, ``get_task``, ``get_job_task_counts``, ``terminate_task`` and
``delete_task`` (a running task killed), and the bad input Batch refuses with its codes: a task id taken, the
job preparation / release task's id, ``dependsOn`` without ``usesTaskDependencies``, an exit condition's
``jobAction`` on a ``noaction`` job, ``dependencyAction`` without dependencies, ``authenticationTokenSettings``
(gone in API 2025-06-01), a job release task without a preparation task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.integration.fanout_helpers import (
    completed,
    end_job,
    error_code,
    new_job,
    pool,
    state,
    task,
    val,
    wait_for,
)


def test_add_one_and_a_collection_partial_failure_then_list_get_and_counts(batch_client: Any) -> None:
    job_id = new_job(batch_client, "add", nodes=2, slots=2)
    try:
        batch_client.create_task(job_id, task("t1", "echo one"))
        result = batch_client.create_task_collection(job_id, {"value": [
            task("t1", "echo again"), task("t2", "exit 0"), task("t3", "exit 4"), task("T2", "echo dup"),
            task("t4", "echo four", displayName="the fourth"),
        ]})
        by_id = {r.task_id: r for r in result.result_values}
        assert {i: val(r.status) for i, r in by_id.items()} == {
            "t1": "clienterror", "t2": "success", "t3": "success", "T2": "clienterror", "t4": "success"}
        assert by_id["t1"].error.code == "TaskExists" and by_id["T2"].error.code == "TaskExists"
        assert by_id["t1"].error.message.value.startswith("The specified task already exists.\nRequestId:")
        assert by_id["t2"].location.endswith(f"/jobs/{job_id}/tasks/t2") and by_id["t2"].etag
        wait_for(lambda: completed(batch_client, job_id, "t1", "t2", "t3", "t4"), what="four tasks")

        done = {t.id for t in batch_client.list_tasks(job_id, filter="state eq 'completed'")}
        assert done == {"t1", "t2", "t3", "t4"}
        failed = [t.id for t in batch_client.list_tasks(job_id, filter="executionInfo/result eq 'failure'")]
        assert failed == ["t3"]
        selected = list(batch_client.list_tasks(job_id, select=["id", "state"], filter="startswith(id,'t')"))
        assert [t.id for t in selected] == ["t1", "t2", "t3", "t4"] and selected[0].command_line is None
        got = batch_client.get_task(job_id, "t4")
        assert got.display_name == "the fourth" and got.execution_info.exit_code == 0
        assert got.constraints.retention_time is not None and got.required_slots == 1
        assert batch_client.get_task(job_id, "t3").execution_info.failure_info.code == "FailureExitCode"
        counts = batch_client.get_job_task_counts(job_id).task_counts
        assert (counts.active, counts.running, counts.completed, counts.succeeded, counts.failed) == (0, 0, 4, 3, 1)
        assert val(batch_client.get_job(job_id).state) == "active", "onAllTasksComplete noaction: the job waits"
    finally:
        end_job(batch_client, job_id)


def test_more_than_100_tasks_in_one_call_is_refused_whole(local_batch_fast_clock: Any) -> None:
    with local_batch_fast_clock.client() as client:
        job_id = new_job(client, "many")
        try:
            with pytest.raises(HttpResponseError) as caught:
                client.create_task_collection(job_id, {"value": [task(f"t{i}", "true") for i in range(101)]})
            assert caught.value.status_code == 400 and error_code(caught.value) == "InvalidPropertyValue"
            assert list(client.list_tasks(job_id)) == [], "nothing of a refused collection is added"
            # the SDK's create_tasks sends at most 100 per call: 150 tasks arrive in two requests
            local_batch_fast_clock.reset_counts()
            client.create_tasks(job_id, [task(str(i), "true") for i in range(150)])
            assert local_batch_fast_clock.count("create_task_collection", 200) == 2
            wait_for(lambda: client.get_job_task_counts(job_id).task_counts.succeeded == 150, what="150 tasks")
            assert len(list(client.list_tasks(job_id, max_results=1000))) == 150
        finally:
            end_job(client, job_id)


def test_terminate_and_delete_a_running_task(batch_client: Any, local_batch: Any) -> None:
    job_id = new_job(batch_client, "term", nodes=1, slots=2)
    try:
        batch_client.create_tasks(job_id, [task("long", "sleep 300"), task("gone", "echo $$ > pid; sleep 300")])
        wait_for(lambda: state(batch_client, job_id, "long") == "running" and state(batch_client, job_id, "gone")
                 == "running", what="both running")
        batch_client.terminate_task(job_id, "long")
        ended = batch_client.get_task(job_id, "long")
        assert val(ended.state) == "completed" and val(ended.execution_info.result) == "failure"
        assert ended.execution_info.failure_info.code == "TaskEnded"
        with pytest.raises(HttpResponseError) as caught:
            batch_client.terminate_task(job_id, "long")
        assert caught.value.status_code == 409 and error_code(caught.value) == "TaskCompleted"

        node_id = batch_client.get_task(job_id, "gone").node_info.node_id
        work = Path(local_batch.info()["workDir"])
        task_dir = work / "nodes" / node_id / "workitems" / job_id / "job-1" / "gone"
        pid = int(wait_for(lambda: (task_dir / "wd" / "pid").exists() and (task_dir / "wd" / "pid").read_text()
                           .strip(), what="pid file"))
        batch_client.delete_task(job_id, "gone")
        with pytest.raises(ResourceNotFoundError):
            batch_client.get_task(job_id, "gone")
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                 10, what="the deleted task's process killed")
        assert not task_dir.exists(), "deleting a task deletes its directory"
        assert {t.id for t in batch_client.list_tasks(job_id)} == {"long"}
    finally:
        end_job(batch_client, job_id)


def test_bad_input_is_refused_with_batchs_codes(batch_client: Any) -> None:
    job_id = new_job(batch_client, "bad", jobPreparationTask={"commandLine": "/bin/true"},
                     jobReleaseTask={"id": "cleanup", "commandLine": "/bin/true"})
    try:
        cases = [
            (task("jobpreparation", "true"), 409, "TaskIdSameAsJobPreparationTask"),
            (task("cleanup", "true"), 409, "TaskIdSameAsJobReleaseTask"),
            (task("dep", "true", dependsOn={"taskIds": ["x"]}), 400, "TaskDependenciesNotSpecifiedOnJob"),
            (task("act", "true", exitConditions={"default": {"jobAction": "terminate"}}), 400, "InvalidPropertyValue"),
            (task("dact", "true", exitConditions={"exitCodes": [{"code": 3, "exitOptions": {
                "dependencyAction": "satisfy"}}]}), 400, "InvalidPropertyValue"),
            (task("tok", "true", authenticationTokenSettings={"access": ["job"]}), 400, "InvalidRequestBody"),
            (task("slots", "true", requiredSlots=0), 400, "InvalidPropertyValue"),
            ({"id": "nocmd"}, 400, "MissingRequiredProperty"),
        ]
        for body, status, code in cases:
            with pytest.raises(HttpResponseError) as caught:
                batch_client.create_task(job_id, body)
            assert (caught.value.status_code, error_code(caught.value)) == (status, code), body["id"]
        with pytest.raises(HttpResponseError) as caught:
            batch_client.create_task(job_id, task("tok", "true", authenticationTokenSettings={"access": ["job"]}))
        assert "managed identity" in str(caught.value), "the Reason says what replaced the token"
        assert list(batch_client.list_tasks(job_id)) == []
    finally:
        end_job(batch_client, job_id)

    with pytest.raises(HttpResponseError) as caught:
        batch_client.create_job({"id": "release-alone", "poolInfo": pool("rel"),
                                 "jobReleaseTask": {"commandLine": "/bin/true"}})
    assert caught.value.status_code == 400 and error_code(caught.value) == "InvalidPropertyValue"
    assert "(PropertyName) jobReleaseTask" in str(caught.value)
    with pytest.raises(ResourceNotFoundError):
        batch_client.get_job("release-alone")

    plain = new_job(batch_client, "plain")
    try:
        with pytest.raises(HttpResponseError) as caught:
            list(batch_client.list_job_preparation_and_release_task_status(plain))
        assert caught.value.status_code == 409 and error_code(caught.value) == "JobPreparationTaskNotSpecified"
    finally:
        end_job(batch_client, plain)
