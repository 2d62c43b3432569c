"""The fan-out example's scripts (blob/application/fanout.py) with the azure-batch SDK on the node.

The e2e test (tests/e2e/test_fanout.py) runs them with the node's plain ``python3`` (the Batch REST API over
the standard library). Here the job's ``commonEnvironmentSettings`` point ``FANOUT_PYTHON`` at a Python that has
``azure-batch`` and ``azure-identity`` (this virtualenv's), so the job manager, map and reduce steps use
``BatchClient`` with ``ManagedIdentityCredential`` against the node's identity endpoint, unchanged. The job
preparation and release tasks are the example's own (read from examples/schedule-fanout.yaml), the preparation
task's blob references resolved by batchop's resolver (``batchop.blob.refs.resolve``) into SAS URLs of
Azurite, where the scripts are.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from batchop.blob.refs import resolve
from batchop.blob.sas import KeyMinter
from tests.integration.fanout_helpers import job_completed, pool, val, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "examples" / "schedule-fanout.yaml").read_text())["spec"]["jobSpecification"]
TEXTS = {"a.txt": "one two two three three three\n", "b.txt": "Two! THREE? four's four\n"}


def _sas_urls(azurite: Any, suffix: str) -> dict[str, str]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    expiry = datetime.now(UTC) + timedelta(hours=1)
    names = {"app": f"fanout-app-{suffix}", "in": f"fanout-in-{suffix}", "out": f"fanout-out-{suffix}"}
    for name in names.values():
        service.create_container(name)
    app = service.get_container_client(names["app"])
    for script in ("fanout.py", "wordcount.py"):
        app.upload_blob(script, (REPO / "blob" / "application" / script).read_bytes())
    inputs = service.get_container_client(names["in"])
    for name, text in TEXTS.items():
        inputs.upload_blob(name, text.encode())
    inputs.upload_blob("bad.bin", b"\x00\x01\x02")

    def container(name: str, permission: ContainerSasPermissions) -> str:
        sas = generate_container_sas(azurite.account_name, name, account_key=azurite.account_key,
                                     permission=permission, expiry=expiry)
        return f"{azurite.blob_endpoint}/{name}?{sas}"

    return {"input": container(names["in"], ContainerSasPermissions(read=True, list=True)),
            "output": container(names["out"], ContainerSasPermissions(create=True, write=True)),
            "output_container": names["out"], "app_container": names["app"]}


def _staging_task(azurite: Any, app_container: str) -> dict[str, Any]:
    """The example's preparation task, its blob references (into this test's copy of the application container)
    resolved by batchop's resolver with Azurite's key, as the operator resolves them."""
    prep = copy.deepcopy(EXAMPLE["jobPreparationTask"])
    assert {rf["blob"]["container"] for rf in prep["resourceFiles"]} == {"application"}
    for rf in prep["resourceFiles"]:
        rf["blob"]["container"] = app_container
    minter = KeyMinter(azurite.blob_endpoint, azurite.account_name, azurite.account_key)
    resolved = asyncio.run(resolve({"jobPreparationTask": prep}, minter=minter, schedule_id="fansdk",
                                   expiry=datetime.now(UTC) + timedelta(hours=1)))
    return dict(resolved.job_specification["jobPreparationTask"])


def test_fanout_steps_with_the_sdk_on_the_node(batch_client: Any, azurite: Any) -> None:
    urls = _sas_urls(azurite, uuid.uuid4().hex[:8])
    job_id = f"fansdk-{uuid.uuid4().hex[:6]}"
    manager = dict(EXAMPLE["jobManagerTask"])
    manager.update({
        "resourceFiles": [{"storageContainerUrl": urls["input"], "filePath": "input"}],
        "outputFiles": [{"filePattern": "results/**/*", "destination": {"container": {
            "containerUrl": urls["output"], "path": "sdk"}}, "uploadOptions": {"uploadCondition": "tasksuccess"}}],
        "commandLine": "/bin/bash -c 'exec \"$FANOUT_PYTHON\" \"$AZ_BATCH_JOB_PREP_WORKING_DIR/fanout.py\" manager'",
    })
    batch_client.create_job({
        "id": job_id, "poolInfo": pool("fansdk", nodes=2, slots=2),
        "commonEnvironmentSettings": [{"name": "FANOUT_PYTHON", "value": sys.executable}],
        **{k: EXAMPLE[k] for k in ("usesTaskDependencies", "onTaskFailure", "onAllTasksComplete", "jobReleaseTask")},
        "jobPreparationTask": _staging_task(azurite, urls["app_container"]),
        "jobManagerTask": manager,
    })
    job = wait_for(lambda: job_completed(batch_client, job_id), 120, what="fan-out job complete")
    assert job.execution_info.termination_reason == "AllTasksComplete"

    results = {t.id: (val(t.execution_info.result), t.execution_info.exit_code, t.display_name)
               for t in batch_client.list_tasks(job_id)}
    assert results["map-00003"] == ("failure", 3, "bad.bin"), results  # a.txt, b.txt, bad.bin
    assert results["reduce"][0] == "success" and results["fanout"][0] == "success", results

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    out = service.get_container_client(urls["output_container"])
    counts = out.download_blob(f"sdk/{job_id}/counts.tsv").readall().decode().splitlines()
    assert counts == ["4\tthree", "3\ttwo", "1\tfour", "1\tfour's", "1\tone"]
    summary = json.loads(out.download_blob(f"sdk/{job_id}/summary.json").readall())
    assert summary["skipped"] == ["bad.bin"] and summary["counted"] == ["a.txt", "b.txt"]
    manifest = json.loads(out.download_blob(f"sdk/{job_id}/manifest.json").readall())
    assert manifest["api"] == "sdk" and summary["api"] == "sdk", "the job manager and the reduce used the SDK"
    assert manifest["mapTasks"] == ["map-00001", "map-00002", "map-00003"]
    for status in batch_client.list_job_preparation_and_release_task_status(job_id):
        assert val(status.job_preparation_task_execution_info.result) == "success"
        assert val(status.job_release_task_execution_info.result) == "success"
