"""Schedules over virtual time, through the API: the admin clock, nextRunTime anchoring, job ids,
and the admin reset. Uses its own service so moving the clock affects no other test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clocked(local_batch_factory: Callable[..., Any]) -> Any:
    return local_batch_factory("--no-execute")


def test_advancing_the_clock_runs_the_next_recurrence(clocked: Any) -> None:
    client = clocked.client()
    schedule_id = f"rec-{uuid.uuid4().hex[:8]}"
    client.create_job_schedule(
        {
            "id": schedule_id,
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {"poolInfo": {"poolId": "p"}, "onAllTasksComplete": "terminatejob"},
        }
    )
    created = client.get_job_schedule(schedule_id)
    assert created.execution_info.recent_job.id == f"{schedule_id}:job-1"
    assert created.execution_info.next_run_time == created.creation_time + timedelta(hours=1)
    wait_for(lambda: client.get_job(f"{schedule_id}:job-1").state == "completed")

    clocked.advance("PT1H")
    after = wait_for(
        lambda: (s := client.get_job_schedule(schedule_id)).execution_info.recent_job.id.endswith(":job-2") and s
    )
    assert after.etag == created.etag  # Batch does not change a schedule's ETag when it creates a job
    assert after.execution_info.next_run_time == created.creation_time + timedelta(hours=2)
    jobs = sorted(j.id for j in client.list_jobs_from_schedule(schedule_id))
    assert jobs == [f"{schedule_id}:job-1", f"{schedule_id}:job-2"]


def test_reset_forgets_everything(clocked: Any) -> None:
    client = clocked.client()
    client.create_job_schedule(
        {"id": f"gone-{uuid.uuid4().hex[:8]}", "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}
    )
    clocked.reset()
    assert list(client.list_job_schedules()) == []
    assert list(client.list_jobs()) == []
    assert clocked.counts().get("create_job_schedule") is None
