"""Shared helpers of the fan-out tests of the local Batch service (tasks added to jobs, many nodes and slots)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import HttpResponseError


def wait_for(predicate: Callable[[], Any], limit: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.1)


def pool(prefix: str, *, nodes: int = 1, slots: int = 1, fill: str = "spread") -> dict[str, Any]:
    """An auto pool of ``nodes`` nodes with ``slots`` task slots each, deleted with its job."""
    return {"autoPoolSpecification": {
        "autoPoolIdPrefix": prefix, "poolLifetimeOption": "job",
        "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": nodes, "taskSlotsPerNode": slots,
                 "taskSchedulingPolicy": {"nodeFillType": fill}}}}


def new_job(client: Any, prefix: str, *, nodes: int = 1, slots: int = 1, **fields: Any) -> str:
    job_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.create_job({"id": job_id, "poolInfo": pool(prefix, nodes=nodes, slots=slots), **fields})
    return job_id


def task(task_id: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "commandLine": f"/bin/bash -c '{command}'", **fields}


def val(value: Any) -> Any:
    """An SDK enum's wire value (``BatchTaskState.COMPLETED`` -> ``completed``); other values unchanged."""
    return getattr(value, "value", value)


def state(client: Any, job_id: str, task_id: str) -> str:
    return str(val(client.get_task(job_id, task_id).state))


def completed(client: Any, job_id: str, *task_ids: str) -> bool:
    return all(state(client, job_id, t) == "completed" for t in task_ids)


def job_completed(client: Any, job_id: str) -> Any:
    job = client.get_job(job_id)
    return job if val(job.state) == "completed" else None


def error_code(exc: HttpResponseError) -> str | None:
    return str(exc.error.code) if exc.error is not None else None


def end_job(client: Any, job_id: str) -> None:
    """Terminate a job left active (its auto pool goes with it); a job already ending is left alone."""
    try:
        if val(client.get_job(job_id).state) in ("active", "disabled"):
            client.begin_terminate_job(job_id, {"terminateReason": "test done"}, polling_interval=0.2).result()
    except HttpResponseError:
        pass


HOLD = "hold"


def held_job(client: Any, prefix: str, **fields: Any) -> str:
    """A job whose ``onAllTasksComplete: terminatejob`` cannot fire before the test added its tasks.

    A job without tasks counts as having all its tasks complete, so Batch ends such a job at once; Azure's advice
    is a job manager task. Here the job manager waits until :func:`release` terminates it.
    """
    hold = {"id": HOLD, "commandLine": "/bin/bash -c 'sleep 600'", "killJobOnCompletion": False}
    return new_job(client, prefix, jobManagerTask=hold, **fields)


def release(client: Any, job_id: str) -> None:
    client.terminate_task(job_id, HOLD)
