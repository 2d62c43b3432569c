"""A task that was running when the local Batch service went away is requeued on restart, not lost.

Both ways a service ends: SIGTERM (it kills its task processes and writes the state file) and
SIGKILL (it cannot: the next start finds the orphaned processes by their ``AZ_BATCH_NODE_ROOT_DIR``
and kills them). Driven through the unmodified SDK; the service is the real ``python -m localbatch``.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# First run: leave a mark, start a grandchild that would live 10 minutes, and block.
# Second run (after the restart): the mark exists, so succeed at once.
COMMAND = (
    "/bin/bash -c 'if test -f ../first; then echo second run; exit 0; fi; "
    "touch ../first; sleep 600 & echo $! > ../sleeper.pid; wait'"
)


def wait_for(predicate: Callable[[], Any], limit: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except OSError:
        return False


def saved_task_state(state_file: Path, job_id: str) -> str | None:
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return ((data.get("tasks") or {}).get(job_id.lower()) or {}).get("jm", {}).get("state")


@pytest.mark.chaos
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_running_task_is_requeued_after_restart(
    local_batch_factory: Callable[..., Any], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    state = tmp_path / "state.json"
    first = local_batch_factory("--state-file", str(state), work_dir=tmp_path)
    client = first.client()
    job_id = f"restart-{uuid.uuid4().hex[:6]}"
    client.create_job(
        {
            "id": job_id,
            "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "rs", "poolLifetimeOption": "job",
                                                   "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1}}},
            "jobManagerTask": {"id": "jm", "commandLine": COMMAND},
        }
    )
    wait_for(lambda: client.get_task(job_id, "jm").state == "running", what="task running")
    task_dirs = wait_for(
        lambda: [p for p in tmp_path.rglob("sleeper.pid") if p.read_text().strip()], what="sleeper started"
    )
    sleeper = int(task_dirs[0].read_text())
    assert alive(sleeper)
    # The (debounced) state file has caught the running task: what a crash leaves behind.
    wait_for(lambda: saved_task_state(state, job_id) == "running", what="state file written")
    first.process.send_signal(stop_signal)
    first.process.wait(15)
    if stop_signal == signal.SIGTERM:
        assert not alive(sleeper), "a clean stop kills the task's whole process group"

    second = local_batch_factory("--state-file", str(state), work_dir=tmp_path)
    client = second.client()
    wait_for(lambda: not alive(sleeper), what="orphaned grandchild killed on restart")
    job = wait_for(lambda: (j := client.get_job(job_id)).state == "completed" and j, what="job completed")
    assert job.execution_info.termination_reason == "JMComplete"
    task = client.get_task(job_id, "jm")
    assert task.execution_info.requeue_count == 1 and task.execution_info.last_requeue_time is not None
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "success"
    stdout = task_dirs[0].parent / "stdout.txt"
    assert stdout.read_text().endswith("second run\n")
    assert os.path.exists(task_dirs[0].parent / "first")
