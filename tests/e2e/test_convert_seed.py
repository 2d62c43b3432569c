"""The seed's 2016 job-schedule JSON: `batchop convert` -> `batchop render` -> kubectl apply -> it runs.

Real parts only: kube-apiserver + kubectl, the operator process, the local Batch service executing tasks,
Azurite. The 2016 JSON names no input files (the post's task pulled a container), so the sample's task.sh,
downloaded through the guessed blob reference `application/task.sh`, runs and exits 2 with "no input
directory": proof that the converted schedule was created in Batch, its job created, the start task and the
job manager task fetched through operator-minted SAS and executed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.operator import wait_for

REPO = Path(__file__).resolve().parents[2]
SEED = Path(__file__).resolve().parents[2] / "examples" / "legacy" / "create_jobsched.json"
NAMESPACE = "convert-seed-e2e"


def batchop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", "--log-format", "text", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def env(azurite: Any) -> dict[str, str]:
    environment = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
                   "PYTHONPATH": str(REPO / "operator")}
    environment.pop("BATCHOP_STORAGE_URL", None)
    return environment


def _bjs(kube: Any, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "bjs", name, "-n", NAMESPACE, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _manager_task(batch: Any, job_id: str) -> Any:
    with batch.client() as client:
        for task in client.list_tasks(job_id):
            if task.id == "mytask1" and task.state == "completed":
                return task
    return None


def test_seed_converts_renders_applies_and_runs(
    kube: Any, azurite: Any, local_batch_factory: Any, operator_factory: Any, env: dict[str, str], tmp_path: Path
) -> None:
    converted = tmp_path / "seed.yaml"
    result = batchop(env, "convert", str(SEED), "--name", "seed", "-o", str(converted))
    assert result.returncode == 0, result.stderr
    assert "targetDedicated -> targetDedicatedNodes" in result.stderr and "GUESS" in result.stderr
    rendered = batchop(env, "render", "-f", str(converted), "-n", NAMESPACE)
    assert rendered.returncode == 0, rendered.stderr
    body = json.loads(rendered.stdout)
    assert body["id"] == "myjobschedule1" and "sig=REDACTED" in rendered.stdout

    assert batchop(env, "blob", "sync", str(REPO / "blob")).returncode == 0
    batch = local_batch_factory()
    operator = operator_factory([NAMESPACE], resync=1.0, env={
        "BATCHOP_BATCH_ENDPOINT": batch.endpoint, "BATCHOP_BATCH_ACCOUNT": batch.account,
        "BATCHOP_BATCH_KEY": batch.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    kube.kubectl("create", "namespace", NAMESPACE)
    try:
        applied = kube.kubectl("apply", "-n", NAMESPACE, "-f", str(converted))
        assert applied.returncode == 0, applied.stderr
        job_id = wait_for(lambda: _bjs(kube, "seed").get("status", {}).get("recentJob", {}).get("id"), 90,
                          interval=1.0, message="status.recentJob.id")
        assert job_id.startswith("myjobschedule1:job-")
        task = wait_for(lambda: _manager_task(batch, job_id), 120, interval=1.0,
                        message="the job manager task to complete")
        assert task.execution_info.exit_code == 2  # task.sh ran: "no input directory" (the seed names no inputs)
        with batch.client() as client:
            schedule = client.get_job_schedule("myjobschedule1")
        # the local service keeps each task's output on disk (it serves no node-file API)
        stderr = [p.read_text() for p in batch.work_dir.rglob("stderr.txt") if "mytask1" in p.parts]
        assert any("no input directory" in text for text in stderr), stderr
        pool = schedule.job_specification.pool_info.auto_pool_specification.pool
        assert pool.target_dedicated_nodes == 1 and pool.task_slots_per_node == 1
        assert pool.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 24.04"
        assert yaml.safe_load(converted.read_text())["spec"]["scheduleId"] == "myjobschedule1"
        assert "changed outside the operator" not in operator.logs()  # desired == observed: no drift loop
    finally:
        kube.kubectl("delete", "-n", NAMESPACE, "-f", str(converted), "--wait=true", "--timeout=90s")
        operator.stop()
