"""``rerunOnNodeRebootAfterSuccess`` of a job preparation task, across a restart of the local Batch service.

The service restarted from its state file is how its nodes "reboot": the next task of a job on a node runs the
job's preparation task again when ``rerunOnNodeRebootAfterSuccess`` is true (the default), and not when it is
false (the preparation had succeeded). Unmodified azure-batch SDK over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.fanout_helpers import completed, end_job, new_job, task, wait_for

PREP = "echo run >> $AZ_BATCH_NODE_SHARED_DIR/prep-runs-$AZ_BATCH_JOB_ID"


def runs(work: Path, job_id: str) -> int:
    return sum(p.read_text().count("run") for p in work.glob(f"nodes/*/shared/prep-runs-{job_id}"))


def test_preparation_reruns_after_a_reboot_only_when_asked(local_batch_factory: Callable[..., Any],
                                                           tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = local_batch_factory("--state-file", str(state), work_dir=tmp_path)
    with first.client() as client:
        jobs = {rerun: new_job(client, f"reboot{int(rerun)}", jobPreparationTask={
            "commandLine": f"/bin/bash -c '{PREP}'", "rerunOnNodeRebootAfterSuccess": rerun})
            for rerun in (True, False)}
        for job_id in jobs.values():
            client.create_task(job_id, task("before", "true"))
        wait_for(lambda: all(completed(client, j, "before") for j in jobs.values()), what="first tasks")
    work = Path(first.info()["workDir"])
    assert [runs(work, j) for j in jobs.values()] == [1, 1]
    wait_for(lambda: state.exists() and all(j in state.read_text() for j in jobs.values())
             and state.read_text().count('"jobPreparationTaskExecutionInfo"') >= 2, what="state file written")
    first.process.terminate()
    first.process.wait(15)

    second = local_batch_factory("--state-file", str(state), work_dir=tmp_path)
    with second.client() as client:
        try:
            for job_id in jobs.values():
                client.create_task(job_id, task("after", "true"))
            wait_for(lambda: all(completed(client, j, "after") for j in jobs.values()), 60, what="tasks after reboot")
            assert runs(work, jobs[True]) == 2, "rerunOnNodeRebootAfterSuccess: true runs it again"
            assert runs(work, jobs[False]) == 1, "false: a succeeded preparation is not run again"
            status = list(client.list_job_preparation_and_release_task_status(jobs[True]))
            assert len(status) == 1 and status[0].job_preparation_task_execution_info.exit_code == 0
        finally:
            for job_id in jobs.values():
                end_job(client, job_id)
