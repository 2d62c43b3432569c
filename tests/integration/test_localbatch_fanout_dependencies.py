"""Task dependencies and exit conditions in the local Batch service, driven with the unmodified azure-batch SDK.

Dependencies by id and by id range; a failed parent blocks its dependants (they stay ``active``, as Batch has no
"blocked" state) unless its exit condition says ``dependencyAction: satisfy``; a dependency on a task that does
not exist, and a cycle added in one collection, are accepted and wait for ever (Batch detects neither).
Exit conditions: ``exitCodes``, ``exitCodeRanges``, ``preProcessingError``, ``fileUploadError``, ``default``
with ``jobAction`` ``none`` / ``disable`` / ``terminate`` under ``onTaskFailure: performexitoptionsjobaction``
(``terminateReason`` ``TaskFailed``), and ``onAllTasksComplete: terminatejob`` with many tasks.
"""

from __future__ import annotations

from typing import Any

from tests.integration.fanout_helpers import (
    completed,
    end_job,
    held_job,
    job_completed,
    new_job,
    release,
    state,
    task,
    val,
    wait_for,
)

BAD_INPUT = 3
"""The "bad input" exit code of these tests: skipped and counted, not fatal to the job."""


def test_dependencies_ids_ranges_blocking_missing_and_cycles(batch_client: Any) -> None:
    job_id = new_job(batch_client, "deps", nodes=2, slots=2, usesTaskDependencies=True)
    try:
        result = batch_client.create_task_collection(job_id, {"value": [
            task("c", "echo c", dependsOn={"taskIds": ["a"]}),             # added before its parent
            task("a", "sleep 1; echo a > /dev/null"),
            task("b", f"exit {BAD_INPUT}"),
            task("d", "echo d", dependsOn={"taskIds": ["b"]}),             # parent fails: blocked
            task("1", "true"), task("2", "true"), task("3", "true"),
            task("sum", "true", dependsOn={"taskIdRanges": [{"start": 1, "end": 3}]}),
            task("orphan", "true", dependsOn={"taskIds": ["never-added"]}),
            task("x", "true", dependsOn={"taskIds": ["y"]}), task("y", "true", dependsOn={"taskIds": ["x"]}),
            task("self", "true", dependsOn={"taskIds": ["self"]}),
        ]})
        assert all(val(r.status) == "success" for r in result.result_values), "Batch accepts all of them"
        wait_for(lambda: completed(batch_client, job_id, "a", "b", "c", "1", "2", "3", "sum"), what="runnable tasks")
        a, c = batch_client.get_task(job_id, "a"), batch_client.get_task(job_id, "c")
        assert c.execution_info.start_time >= a.execution_info.end_time, "c waited for a"
        last = max(batch_client.get_task(job_id, i).execution_info.end_time for i in ("1", "2", "3"))
        assert batch_client.get_task(job_id, "sum").execution_info.start_time >= last, "the range waited"
        for waiting in ("d", "orphan", "x", "y", "self"):
            assert state(batch_client, job_id, waiting) == "active", waiting
        counts = batch_client.get_job_task_counts(job_id).task_counts
        assert (counts.active, counts.completed, counts.failed) == (5, 7, 1)

        batch_client.create_task(job_id, task("never-added", "true"))  # the missing parent arrives: orphan runs
        wait_for(lambda: completed(batch_client, job_id, "orphan"), what="orphan after its parent was added")
        assert state(batch_client, job_id, "d") == "active" and state(batch_client, job_id, "x") == "active"
    finally:
        end_job(batch_client, job_id)


def test_dependency_action_satisfy_lets_dependants_run_after_a_failure(batch_client: Any) -> None:
    job_id = held_job(batch_client, "sat", usesTaskDependencies=True, onAllTasksComplete="terminatejob")
    skip = {"exitCodes": [{"code": BAD_INPUT, "exitOptions": {"dependencyAction": "satisfy"}}]}
    batch_client.create_tasks(job_id, [
        task("map1", f"exit {BAD_INPUT}", exitConditions=skip), task("map2", "true", exitConditions=skip),
        task("reduce", "true", dependsOn={"taskIds": ["map1", "map2"]}),
    ])
    release(batch_client, job_id)
    job = wait_for(lambda: job_completed(batch_client, job_id), what="job complete")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    assert val(batch_client.get_task(job_id, "reduce").execution_info.result) == "success"
    assert batch_client.get_task(job_id, "map1").execution_info.exit_code == BAD_INPUT


def _exit_job(client: Any, prefix: str, tasks: list[dict[str, Any]]) -> str:
    job_id = held_job(client, prefix, nodes=1, slots=4, onTaskFailure="performexitoptionsjobaction",
                      onAllTasksComplete="terminatejob")
    client.create_tasks(job_id, tasks)
    release(client, job_id)
    return job_id


BAD_INPUT_SKIPPED = {"exitCodes": [{"code": BAD_INPUT, "exitOptions": {"jobAction": "none"}}]}


def test_bad_input_exit_code_is_skipped_and_the_job_completes(batch_client: Any) -> None:
    job_id = _exit_job(batch_client, "skip", [
        task("ok", "true", exitConditions=BAD_INPUT_SKIPPED),
        task("bad", f"exit {BAD_INPUT}", exitConditions=BAD_INPUT_SKIPPED),
        task("nostart", "true", commandLine="/no/such/program",
             exitConditions={"preProcessingError": {"jobAction": "none"}}),
        task("upload", "echo x > out.txt", outputFiles=[{
            "filePattern": "out.txt", "uploadOptions": {"uploadCondition": "tasksuccess"},
            "destination": {"container": {"containerUrl": "http://127.0.0.1:9/nowhere?sig=x"}}}],
            exitConditions={"fileUploadError": {"jobAction": "none"}}),
    ])
    job = wait_for(lambda: job_completed(batch_client, job_id), what="job complete")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    codes = {t.id: (t.execution_info.failure_info.code if t.execution_info.failure_info else None)
             for t in batch_client.list_tasks(job_id)}
    assert codes["ok"] is None and codes["bad"] == "FailureExitCode"
    assert codes["nostart"] == "CommandProgramNotFound" and codes["upload"].startswith("FileUpload")
    counts = batch_client.get_job_task_counts(job_id).task_counts
    assert (counts.succeeded, counts.failed) == (1, 4), "3 failures and the terminated job manager"


def test_any_other_failure_terminates_the_job_with_task_failed(batch_client: Any) -> None:
    job_id = _exit_job(batch_client, "fatal", [
        task("bad", f"exit {BAD_INPUT}", exitConditions=BAD_INPUT_SKIPPED),
        task("boom", "exit 9", exitConditions=BAD_INPUT_SKIPPED),
        task("slow", "sleep 300", exitConditions=BAD_INPUT_SKIPPED),
    ])
    job = wait_for(lambda: job_completed(batch_client, job_id), what="job terminated")
    assert job.execution_info.termination_reason == "TaskFailed"
    slow = batch_client.get_task(job_id, "slow")
    assert val(slow.state) == "completed" and slow.execution_info.failure_info.code == "TaskEnded"


def test_exit_code_range_disables_the_job_and_noaction_ignores_job_actions(batch_client: Any) -> None:
    disable = {"exitCodeRanges": [{"start": 10, "end": 20, "exitOptions": {"jobAction": "disable"}}]}
    job_id = _exit_job(batch_client, "dis", [task("odd", "exit 15", exitConditions=disable)])
    try:
        wait_for(lambda: val(batch_client.get_job(job_id).state) == "disabled", what="job disabled")
        batch_client.create_task(job_id, task("later", "true"))
        assert state(batch_client, job_id, "later") == "active", "a disabled job schedules nothing"
    finally:
        end_job(batch_client, job_id)

    plain = held_job(batch_client, "noact", onAllTasksComplete="terminatejob")  # onTaskFailure noaction
    batch_client.create_tasks(plain, [task("boom", "exit 9"), task("ok", "sleep 1")])
    release(batch_client, plain)
    job = wait_for(lambda: job_completed(batch_client, plain), what="job complete")
    assert job.execution_info.termination_reason == "AllTasksComplete", "noaction: failures do not end the job"
    assert val(batch_client.get_task(plain, "ok").execution_info.result) == "success"
