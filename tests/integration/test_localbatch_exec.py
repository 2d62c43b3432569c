"""The local Batch service really runs jobs: the unmodified SDK over HTTP, real processes, Azurite.

The issue's proof: a recurring schedule whose job manager task downloads a script (``httpUrl``) and
its input (``storageContainerUrl`` + ``blobPrefix``) from Azurite with SAS, runs it, and uploads its
output to Azurite, twice in a row under a time scale. Also: failure paths (SAS refused, failing
exit code with ``taskfailure`` uploads), pools and nodes as the SDK sees them, terminate killing
the task.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

TASK_SCRIPT = """#!/bin/bash
set -eu
test -f "$AZ_BATCH_NODE_SHARED_DIR/ready"          # written by the pool's start task
mkdir -p out
words=$(cat data/input/*.txt data/input/more/*.txt | wc -w)
echo "$AZ_BATCH_JOB_ID $words $GREETING" > "out/$AZ_BATCH_JOB_ID.txt"
echo "counted $words words"
"""


def wait_for(predicate: Callable[[], Any], limit: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fast_exec(local_batch_factory: Callable[..., Any]) -> Any:
    """A service that executes tasks, with PT10M of virtual time per 2.5 real seconds."""
    return local_batch_factory("--time-scale", "240")


class Blobs:
    def __init__(self, azurite: Any) -> None:
        self.azurite = azurite
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.expiry = datetime.now(UTC) + timedelta(hours=2)

    def container(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.service.create_container(name)
        return name

    def put(self, container: str, name: str, data: str) -> None:
        self.service.get_blob_client(container, name).upload_blob(data.encode(), overwrite=True)

    def read(self, container: str, name: str) -> str:
        return self.service.get_blob_client(container, name).download_blob().readall().decode()

    def names(self, container: str) -> list[str]:
        return sorted(b.name for b in self.service.get_container_client(container).list_blobs())

    def blob_url(self, container: str, name: str, *, expiry: datetime | None = None) -> str:
        sas = generate_blob_sas(
            self.azurite.account_name, container, name, account_key=self.azurite.account_key,
            permission=BlobSasPermissions(read=True), expiry=expiry or self.expiry,
        )
        return f"{self.azurite.blob_endpoint}/{container}/{name}?{sas}"

    def container_url(self, container: str, **permissions: bool) -> str:
        sas = generate_container_sas(
            self.azurite.account_name, container, account_key=self.azurite.account_key,
            permission=ContainerSasPermissions(**permissions), expiry=self.expiry,
        )
        return f"{self.azurite.blob_endpoint}/{container}?{sas}"


@pytest.fixture(scope="module")
def blobs(azurite: Any) -> Blobs:
    return Blobs(azurite)


def auto_pool(prefix: str, *, start_task: dict[str, Any] | None = None) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "vmSize": "standard_d2s_v3",
        "targetDedicatedNodes": 1,
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
            "nodeAgentSKUId": "batch.node.ubuntu 24.04",
        },
    }
    if start_task:
        pool["startTask"] = start_task
    return {"autoPoolSpecification": {"autoPoolIdPrefix": prefix, "poolLifetimeOption": "job", "pool": pool}}


def test_recurring_schedule_downloads_runs_and_uploads_twice(fast_exec: Any, blobs: Blobs) -> None:
    client = fast_exec.client()
    app, data, out = blobs.container("app"), blobs.container("in"), blobs.container("out")
    blobs.put(app, "task.sh", TASK_SCRIPT)
    blobs.put(data, "input/a.txt", "the quick brown fox\n")
    blobs.put(data, "input/more/b.txt", "jumps over\n")
    blobs.put(data, "other/ignored.txt", "not downloaded\n")
    schedule_id = f"wordcount-{uuid.uuid4().hex[:6]}"
    start_task = {"commandLine": "/bin/bash -c 'echo ok > $AZ_BATCH_NODE_SHARED_DIR/ready'", "waitForSuccess": True}
    output = blobs.container_url(out, write=True, create=True)
    client.create_job_schedule(
        {
            "id": schedule_id,
            "schedule": {"recurrenceInterval": "PT10M"},
            "jobSpecification": {
                "poolInfo": auto_pool("wc", start_task=start_task),
                "jobManagerTask": {
                    "id": "wordcount",
                    "commandLine": "/bin/bash -c './task.sh'",
                    "resourceFiles": [
                        {"httpUrl": blobs.blob_url(app, "task.sh"), "filePath": "task.sh", "fileMode": "0755"},
                        {"storageContainerUrl": blobs.container_url(data, read=True, list=True),
                         "blobPrefix": "input/", "filePath": "data"},
                    ],
                    "outputFiles": [
                        {"filePattern": "out/*.txt", "destination": {"container": {"containerUrl": output,
                                                                                   "path": "results"}},
                         "uploadOptions": {"uploadCondition": "tasksuccess"}},
                        {"filePattern": "../stdout.txt", "destination": {"container": {"containerUrl": output,
                                                                                       "path": "logs/stdout.txt"}},
                         "uploadOptions": {"uploadCondition": "taskcompletion"}},
                    ],
                    "environmentSettings": [{"name": "GREETING", "value": "hi"}],
                },
            },
        }
    )
    job1, job2 = f"{schedule_id}:job-1", f"{schedule_id}:job-2"
    wait_for(lambda: f"results/{job2}.txt" in blobs.names(out), limit=60, what="job-2's output in Azurite")
    assert blobs.read(out, f"results/{job1}.txt") == f"{job1} 6 hi\n"
    assert blobs.read(out, f"results/{job2}.txt") == f"{job2} 6 hi\n"
    assert blobs.read(out, "logs/stdout.txt") == "counted 6 words\n"

    sched = client.get_job_schedule(schedule_id)
    assert (sched.execution_info.next_run_time - sched.creation_time) % timedelta(minutes=10) == timedelta(0)
    pools = []
    for job_id in (job1, job2):
        job = wait_for(lambda j=job_id: (x := client.get_job(j)).state == "completed" and x, what=f"{job_id} done")
        assert job.execution_info.termination_reason == "JMComplete"
        assert job.execution_info.pool_id.startswith("wc_")
        pools.append(job.execution_info.pool_id)
        task = client.get_task(job_id, "wordcount")
        assert task.state == "completed" and task.execution_info.exit_code == 0
        assert task.execution_info.result == "success" and task.execution_info.failure_info is None
        counts = client.get_job_task_counts(job_id)
        assert counts.task_counts.succeeded == 1 and counts.task_counts.failed == 0
    assert pools[0] != pools[1], "poolLifetimeOption job: one auto pool per job"

    def pool_gone(pool_id: str) -> bool:
        try:
            client.get_pool(pool_id)
        except ResourceNotFoundError:
            return True
        return False

    wait_for(lambda: pool_gone(pools[0]), what="job-1's auto pool deleted")
    client.begin_terminate_job_schedule(schedule_id, polling_interval=0.1).result(timeout=30)
    wait_for(lambda: client.get_job_schedule(schedule_id).state == "completed", what="schedule completed")


def test_refused_sas_fails_the_task_with_failure_info(fast_exec: Any, blobs: Blobs) -> None:
    client = fast_exec.client()
    app = blobs.container("app")
    blobs.put(app, "task.sh", TASK_SCRIPT)
    expired = blobs.blob_url(app, "task.sh", expiry=datetime.now(UTC) - timedelta(hours=1))
    job_id = f"refused-{uuid.uuid4().hex[:6]}"
    client.create_job(
        {
            "id": job_id,
            "poolInfo": auto_pool("refused"),
            "jobManagerTask": {"id": "jm", "commandLine": "./task.sh",
                               "resourceFiles": [{"httpUrl": expired, "filePath": "task.sh"}]},
        }
    )
    job = wait_for(lambda: (x := client.get_job(job_id)).state == "completed" and x, what="job completed")
    assert job.execution_info.termination_reason == "JMComplete"
    task = client.get_task(job_id, "jm")
    failure = task.execution_info.failure_info
    assert task.execution_info.result == "failure" and task.execution_info.exit_code is None
    assert failure.category == "usererror" and failure.code == "BlobAccessDenied"
    assert "task.sh" in failure.message and "sig=" not in failure.message


def test_failing_task_uploads_only_taskfailure_outputs(fast_exec: Any, blobs: Blobs) -> None:
    client = fast_exec.client()
    out = blobs.container("out")
    url = blobs.container_url(out, write=True, create=True)
    job_id = f"failing-{uuid.uuid4().hex[:6]}"
    client.create_job(
        {
            "id": job_id,
            "poolInfo": auto_pool("failing"),
            "onAllTasksComplete": "terminatejob",
            "jobManagerTask": {
                "id": "jm",
                "killJobOnCompletion": False,
                "commandLine": "/bin/bash -c 'mkdir -p logs/deep; echo boom > logs/deep/err.log; exit 2'",
                "constraints": {"maxTaskRetryCount": 1},
                "outputFiles": [
                    {"filePattern": "logs/**/*.log", "destination": {"container": {"containerUrl": url,
                                                                                   "path": "failed"}},
                     "uploadOptions": {"uploadCondition": "taskfailure"}},
                    {"filePattern": "logs/**/*.log", "destination": {"container": {"containerUrl": url,
                                                                                   "path": "succeeded"}},
                     "uploadOptions": {"uploadCondition": "tasksuccess"}},
                ],
            },
        }
    )
    job = wait_for(lambda: (x := client.get_job(job_id)).state == "completed" and x, what="job completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    info = client.get_task(job_id, "jm").execution_info
    assert info.exit_code == 2 and info.retry_count == 1 and info.failure_info.code == "FailureExitCode"
    assert blobs.names(out) == ["failed/deep/err.log"]
    assert blobs.read(out, "failed/deep/err.log") == "boom\n"
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.failed == 1 and counts.task_counts.completed == 1


def test_pool_and_nodes_as_the_sdk_sees_them_and_terminate_kills_the_task(local_batch: Any) -> None:
    client = local_batch.client()
    job_id = f"watch-{uuid.uuid4().hex[:6]}"
    start_task = {"commandLine": "/bin/bash -c 'echo started'", "waitForSuccess": True}
    client.create_job(
        {
            "id": job_id,
            "poolInfo": auto_pool("watch", start_task=start_task),
            "jobManagerTask": {"id": "jm", "commandLine": "/bin/sleep 600"},
        }
    )
    job = client.get_job(job_id)
    pool_id = job.execution_info.pool_id
    assert pool_id.startswith("watch_")
    wait_for(lambda: client.get_task(job_id, "jm").state == "running", what="task running")
    pool = client.get_pool(pool_id)
    assert pool.state == "active" and pool.allocation_state == "steady" and pool.current_dedicated_nodes == 1
    assert pool.vm_size == "standard_d2s_v3" and pool.start_task.wait_for_success is True
    assert pool_id in [p.id for p in client.list_pools()]
    nodes = list(client.list_nodes(pool_id))
    assert len(nodes) == 1 and nodes[0].state == "running"
    assert nodes[0].start_task_info.exit_code == 0 and nodes[0].start_task_info.state == "completed"
    task = client.get_task(job_id, "jm")
    assert task.node_info.node_id == nodes[0].id and task.node_info.pool_id == pool_id

    client.begin_terminate_job(job_id, {"terminateReason": "UserTerminate"}, polling_interval=0.1).result(timeout=30)
    job = wait_for(lambda: (x := client.get_job(job_id)).state == "completed" and x, what="job completed")
    assert job.execution_info.termination_reason == "UserTerminate"
    assert client.get_task(job_id, "jm").execution_info.failure_info.code == "TaskEnded"

    def pool_gone() -> bool:
        try:
            client.get_pool(pool_id)
        except ResourceNotFoundError:
            return True
        return False

    wait_for(pool_gone, what="auto pool deleted after the job")
