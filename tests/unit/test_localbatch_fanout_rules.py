"""The pure rules behind fan-out jobs: exit conditions, task dependencies, and a job's result in the status.

The local Batch service applies :mod:`localbatch.exit_conditions` and :mod:`localbatch.dependencies` (also
exercised end to end with the SDK in tests/integration/test_localbatch_fanout*.py); the operator's
:func:`batchop.controller.status.job_result` decides whether a job whose failed tasks were let through by their
exit conditions succeeded.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchop.controller import status
from localbatch import dependencies, exit_conditions
from localbatch.exit_conditions import ExitOptions, Outcome

CONDITIONS = {
    "exitCodes": [{"code": 3, "exitOptions": {"jobAction": "none", "dependencyAction": "satisfy"}},
                  {"code": 0, "exitOptions": {"jobAction": "disable"}}],
    "exitCodeRanges": [{"start": 10, "end": 20, "exitOptions": {"dependencyAction": "satisfy"}}],
    "preProcessingError": {"jobAction": "none"},
    "fileUploadError": {"dependencyAction": "satisfy"},
    "default": {"jobAction": "terminate"},
}


@pytest.mark.parametrize(("outcome", "expected"), [
    (Outcome(3, "FailureExitCode"), ExitOptions("none", "satisfy")),
    (Outcome(0, None), ExitOptions("disable", "satisfy")),            # exit code 0 listed explicitly
    (Outcome(15, "FailureExitCode"), ExitOptions("terminate", "satisfy")),  # range; jobAction defaults
    (Outcome(None, "CommandProgramNotFound"), ExitOptions("none", "block")),
    (Outcome(0, "FileUploadMiscError"), ExitOptions("disable", "satisfy")),  # the listed exit code wins
    (Outcome(1, "FileUploadAccessDenied"), ExitOptions("terminate", "satisfy")),
    (Outcome(7, "FailureExitCode"), ExitOptions("terminate", "block")),
])
def test_exit_conditions_pick_the_options_batch_documents(outcome: Outcome, expected: ExitOptions) -> None:
    assert exit_conditions.evaluate(CONDITIONS, outcome) == expected


def test_exit_conditions_defaults_without_any() -> None:
    assert exit_conditions.evaluate(None, Outcome(0, None)) == ExitOptions("none", "satisfy")
    assert exit_conditions.evaluate(None, Outcome(2, "FailureExitCode")) == ExitOptions("terminate", "block")
    assert exit_conditions.evaluate({}, Outcome(0, None)) == ExitOptions("none", "satisfy")


def completed(task_id: str, code: int, **extra: Any) -> dict[str, Any]:
    info = {"exitCode": code, "result": "success" if code == 0 else "failure"}
    if code:
        info["failureInfo"] = {"code": "FailureExitCode"}
    return {"id": task_id, "state": "completed", "executionInfo": info, **extra}


def test_job_action_only_for_failed_tasks_of_performexitoptionsjobaction_jobs() -> None:
    failed = completed("t", 9)
    assert exit_conditions.job_action({"onTaskFailure": "performexitoptionsjobaction"}, failed) == "terminate"
    assert exit_conditions.job_action({}, failed) == "none"
    terminate_on_0 = {"exitCodes": [{"code": 0, "exitOptions": {"jobAction": "terminate"}}]}
    succeeded = completed("t", 0, exitConditions=terminate_on_0)
    assert exit_conditions.job_action({"onTaskFailure": "performexitoptionsjobaction"}, succeeded) == "none"


def test_dependency_states() -> None:
    tasks = {
        "a": completed("a", 0), "b": completed("b", 3), "s": completed("s", 3, exitConditions=CONDITIONS),
        "1": completed("1", 0), "2": {"id": "2", "state": "running"},
        "x": {"id": "x", "state": "active", "dependsOn": {"taskIds": ["y"]}},
        "y": {"id": "y", "state": "active", "dependsOn": {"taskIds": ["x"]}},
    }

    def state(**depends: Any) -> str:
        return dependencies.state({"id": "t", "dependsOn": depends}, tasks)

    assert state(taskIds=["a"]) == "ready"
    assert state(taskIds=["A"]) == "ready", "ids are case-insensitive"
    assert state(taskIds=["b"]) == "blocked"
    assert state(taskIds=["s", "a"]) == "ready", "exit condition dependencyAction satisfy"
    assert state(taskIds=["nope"]) == "waiting"
    assert state(taskIdRanges=[{"start": 1, "end": 2}]) == "waiting"
    assert state(taskIdRanges=[{"start": 1, "end": 1}, {"start": 5, "end": 9}]) == "ready", "missing ids not waited"
    assert dependencies.state(tasks["x"], tasks) == "waiting", "a cycle waits for ever"
    assert dependencies.bad_range({"dependsOn": {"taskIdRanges": [{"start": 3, "end": 1}]}}) == {"start": 3, "end": 1}
    assert dependencies.ids_too_long({"dependsOn": {"taskIds": ["x" * 64] * 1001}})


COUNTS = {"active": 0, "running": 0, "completed": 6, "succeeded": 5, "failed": 1}


@pytest.mark.parametrize(("job", "counts", "result"), [
    ({"onTaskFailure": "performexitoptionsjobaction", "executionInfo": {"terminateReason": "AllTasksComplete"}},
     COUNTS, "success"),
    ({"onTaskFailure": "performexitoptionsjobaction", "executionInfo": {"terminateReason": "TaskFailed"}},
     COUNTS, "failure"),
    ({"executionInfo": {"terminateReason": "AllTasksComplete"}}, COUNTS, "failure"),  # noaction: any failure
    ({"onTaskFailure": "performexitoptionsjobaction", "executionInfo": {"terminateReason": "AllTasksComplete"}},
     {**COUNTS, "succeeded": 0, "failed": 6}, "failure"),
    ({"executionInfo": {}}, {**COUNTS, "succeeded": 6, "failed": 0}, "success"),
])
def test_job_result_tolerates_failures_its_exit_conditions_let_through(
    job: dict[str, Any], counts: dict[str, int], result: str
) -> None:
    assert status.job_result({"state": "completed", **job}, counts) == result
    assert status.task_tally({"taskCounts": counts}) == "6 tasks, " + f"{counts['failed']} failed"
