"""Blob references on the job preparation and release tasks, end to end on the local stack.

A schedule whose preparation task names a blob (``resourceFiles[].blob {container, path}``) and whose release
task names a prefix (``{container, prefix}``): the operator resolves both into SAS URLs of Azurite and writes them
into the Batch schedule; Batch (the local service) downloads the blob before the job's first task on the node,
the job manager reads the staged copy from ``$AZ_BATCH_JOB_PREP_WORKING_DIR`` and uploads it through its own
output reference, and when the job ends the release task downloads the prefix's blobs and checks them. The
uploaded copy is compared with the blob the test wrote. A second schedule whose preparation task names a
container that does not exist gets a condition naming that field, and never reaches Batch.

Real parts only: kube-apiserver + kubectl, the operator process, the local Batch service executing the tasks,
Azurite.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from tests.fixtures.operator import wait_for

NAMESPACE = "blobrefs-e2e"
WORDS = "staged by the preparation task, read by the job manager: ünïcode too\n"
RELEASE_TOKEN = "release-token-7f3a"


@pytest.fixture(scope="module")
def containers(azurite: Any) -> Iterator[dict[str, str]]:
    """A fresh application container (the staged blob, the release task's files) and output container."""
    suffix = uuid.uuid4().hex[:8]
    names = {"app": f"prep-app-{suffix}", "out": f"prep-out-{suffix}"}
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        app = service.create_container(names["app"])
        app.upload_blob("data/words.txt", WORDS.encode())
        app.upload_blob("bye/note.txt", f"{RELEASE_TOKEN}\n".encode())
        service.create_container(names["out"])
        yield names


def schedule(name: str, app: str, out: str) -> dict[str, Any]:
    pool = {
        "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                               "version": "latest"},
            "nodeAgentSKUId": "batch.node.ubuntu 24.04"},
    }
    return {
        "apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": {"name": name},
        "spec": {
            "schedule": {"recurrenceInterval": "PT4H"},
            "jobSpecification": {
                "constraints": {"maxWallClockTime": "PT30M"},
                "jobManagerTask": {
                    "id": "reader",
                    "commandLine": "/bin/bash -c 'mkdir -p \"results/$AZ_BATCH_JOB_ID\" && cp "
                                   "\"$AZ_BATCH_JOB_PREP_WORKING_DIR/staged/words.txt\" \"results/$AZ_BATCH_JOB_ID/\"'",
                    "outputFiles": [{"filePattern": "results/**/*",
                                     "destination": {"blob": {"container": out, "path": "{scheduleId}"}},
                                     "uploadOptions": {"uploadCondition": "tasksuccess"}}],
                    "constraints": {"maxWallClockTime": "PT5M", "maxTaskRetryCount": 0},
                },
                "jobPreparationTask": {
                    "id": "stage",
                    "commandLine": "/bin/bash -c 'test -s staged/words.txt'",
                    "resourceFiles": [{"blob": {"container": app, "path": "data/words.txt"},
                                       "filePath": "staged/words.txt"}],
                },
                "jobReleaseTask": {
                    "id": "farewell",
                    "commandLine": f"/bin/bash -c 'grep -q {RELEASE_TOKEN} bye/note.txt'",
                    "resourceFiles": [{"blob": {"container": app, "prefix": "bye/"}}],
                    "maxWallClockTime": "PT5M",
                },
                "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": pool}},
            },
        },
    }


@pytest.fixture(scope="module")
def stack(kube: Any, azurite: Any, local_batch_factory: Any, operator_factory: Any) -> tuple[Any, Any]:
    """A local Batch service of its own and an operator watching the test namespace, using Azurite by default."""
    kube.kubectl("create", "namespace", NAMESPACE)
    batch = local_batch_factory()
    operator = operator_factory([NAMESPACE], resync=1.0, env={
        "BATCHOP_BATCH_ENDPOINT": batch.endpoint, "BATCHOP_BATCH_ACCOUNT": batch.account,
        "BATCHOP_BATCH_KEY": batch.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    return batch, operator


def bjs(kube: Any, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "bjs", name, "-n", NAMESPACE, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def apply(kube: Any, body: dict[str, Any]) -> None:
    result = kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def val(value: Any) -> Any:
    return getattr(value, "value", value)


def test_preparation_task_stages_a_blob_the_job_manager_reads_and_release_task_gets_its_own(
    kube: Any, azurite: Any, stack: tuple[Any, Any], containers: dict[str, str],
) -> None:
    batch, operator = stack
    apply(kube, schedule("staged", containers["app"], containers["out"]))
    schedule_id = wait_for(lambda: bjs(kube, "staged").get("status", {}).get("scheduleId"), 60, message="scheduleId")
    job_id = f"{schedule_id}:job-1"

    with batch.client() as client:
        job_spec = client.get_job_schedule(schedule_id).job_specification
        (staged,) = job_spec.job_preparation_task.resource_files
        assert staged.http_url.split("?")[0] == f"{azurite.blob_endpoint}/{containers['app']}/data/words.txt"
        assert parse_qs(urlsplit(staged.http_url).query)["sp"] == ["r"] and staged.file_path == "staged/words.txt"
        (farewell,) = job_spec.job_release_task.resource_files
        assert farewell.storage_container_url.split("?")[0] == f"{azurite.blob_endpoint}/{containers['app']}"
        assert parse_qs(urlsplit(farewell.storage_container_url).query)["sp"] == ["rl"]
        assert farewell.blob_prefix == "bye/"

        job = wait_for(lambda: (j := client.get_job(job_id)) and val(j.state) == "completed" and j, 180,
                       message=lambda: f"job completed; operator log:\n{operator.logs()[-3000:]}")
        assert job.execution_info.termination_reason == "JMComplete"
        (status,) = list(client.list_job_preparation_and_release_task_status(job_id))
        assert val(status.job_preparation_task_execution_info.result) == "success"
        assert val(status.job_release_task_execution_info.result) == "success", "the release task found its blob"
        assert status.job_release_task_execution_info.exit_code == 0

    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        uploaded = service.get_blob_client(containers["out"], f"{schedule_id}/{job_id}/words.txt")
        assert uploaded.download_blob().readall().decode() == WORDS, "the job manager read the staged blob"

    resource = bjs(kube, "staged")
    assert resource["status"]["sas"]["expiresAt"]
    assert "sig=" not in json.dumps(resource)
    assert "sig=" not in operator.logs().replace("sig=REDACTED", "")


def test_missing_container_on_the_preparation_task_is_a_condition_naming_the_field(
    kube: Any, stack: tuple[Any, Any], containers: dict[str, str],
) -> None:
    batch, _ = stack
    body = schedule("typo", containers["app"], containers["out"])
    body["spec"]["jobSpecification"]["jobPreparationTask"]["resourceFiles"][0]["blob"]["container"] = "no-such-app"
    apply(kube, body)

    def refused() -> dict[str, Any] | None:
        conditions = bjs(kube, "typo").get("status", {}).get("conditions") or []
        return next((c for c in conditions if c.get("reason") == "ContainerNotFound"), None)

    found = wait_for(refused, 60, message="a ContainerNotFound condition")
    assert found["status"] == "False"
    assert "spec.jobSpecification.jobPreparationTask.resourceFiles[0].blob.container" in found["message"]
    with batch.client() as client:
        assert not [s.id for s in client.list_job_schedules() if s.id.endswith("typo")], "nothing reached Batch"
