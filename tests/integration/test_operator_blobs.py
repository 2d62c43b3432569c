"""Blob references through the operator: SAS URLs minted against Azurite land in the Batch schedule,
``status.sas.expiresAt`` is recorded, and a re-reconcile with freshly minted SAS writes nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import apply, condition, get, resource, wait_condition


@pytest.fixture(scope="module")
def operator(operator_factory: Any) -> Any:
    return operator_factory(["opb-*"], resync=2.0)


@pytest.fixture
def ns(kube: Any, operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "opb") as name:
        yield name


def test_blob_references_become_sas_urls_and_never_cause_rewrites(
    kube: Any, ns: str, azurite: Any, local_batch: Any, operator: Any
) -> None:
    from azure.storage.blob import BlobServiceClient

    container = f"in-{uuid.uuid4().hex[:8]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.create_container(container).upload_blob("words.txt", b"a b c")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "storage"},
        "data": {"connectionString": base64.b64encode(azurite.connection_string.encode()).decode()},
    }
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret), check=True)
    body = resource("blobby", storage={"credentialsSecretRef": {"name": "storage"}})
    body["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"blob": {"container": container, "path": "words.txt"}, "filePath": "words.txt"}
    ]
    apply(kube, ns, body)
    obj = wait_condition(kube, ns, "blobby", "Synced", "True", timeout=60)
    assert obj["status"]["sas"]["expiresAt"]
    schedule_id = obj["status"]["scheduleId"]
    with local_batch.client() as batch:
        files = batch.get_job_schedule(schedule_id).job_specification.job_manager_task.resource_files
    assert files[0].http_url.startswith(azurite.blob_endpoint) and "sig=" in files[0].http_url
    assert files[0].file_path == "words.txt"
    assert "sig=" not in json.dumps(obj) and "sig=" not in operator.logs().replace("sig=REDACTED", "")
    # a later reconcile (an edit of a spec field Batch does not hold) mints new SAS but the diff ignores them: no
    # jobSpecification write
    local_batch.reset_counts()
    kube.kubectl("patch", "bjs", "blobby", "-n", ns, "--type", "merge", "-p",
                 json.dumps({"spec": {"successfulJobsHistoryLimit": 2}}), check=True)
    wait_for(lambda: local_batch.count("get_job_schedule") >= 1, 30, message="a reconcile after the edit")
    wait_for(lambda: local_batch.count("list_job_schedules") >= 2, 30, message="two poll cycles")
    assert local_batch.count("update_job_schedule") == 0
    assert condition(get(kube, ns, "blobby"), "Synced")["status"] == "True"
