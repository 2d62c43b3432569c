"""An adopted schedule's SAS is renewed like any other, with the real parts: Azurite (the SAS), the local Batch
service (the schedule someone else made), the kube-apiserver and the operator process.

The schedule is made outside the operator with a resource-file SAS that expires in a few minutes, as a team's
own tooling would have. A resource adopts it as it is (``azurebatch.dev/adopt``: nothing differs once SAS query
strings are left out, so nothing is written). The operator reads when the SAS it holds expire into
``status.sas.expiresAt`` and its poller renews them (a ``jobSpecification`` PATCH) before the next job could
outlive them, without waiting for a first write.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import apply, get, resource, wait_condition

LATER = "2099-01-01T00:00:00Z"  # doNotRunUntil: no job starts; the SAS must still outlive the next one


@pytest.fixture(scope="module")
def operator(operator_factory: Any) -> Any:
    return operator_factory(["osa-*"], resync=1.5)


@pytest.fixture
def ns(kube: Any, operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "osa") as name:
        yield name


def held_expiry(url: str) -> datetime:
    from urllib.parse import parse_qs, urlsplit

    return datetime.fromisoformat(parse_qs(urlsplit(url).query)["se"][0])


def test_an_adopted_schedules_sas_is_renewed_before_it_could_expire(
    kube: Any, ns: str, azurite: Any, local_batch: Any, operator: Any
) -> None:
    from azure.batch.models import BatchJobScheduleCreateOptions
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    container = f"in-{uuid.uuid4().hex[:8]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container).upload_blob(
        "words.txt", b"a b c")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "storage"},
              "data": {"connectionString": base64.b64encode(azurite.connection_string.encode()).decode()}}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret), check=True)

    def body(name: str, **extra: Any) -> dict[str, Any]:
        made = resource(name, storage={"credentialsSecretRef": {"name": "storage"}},
                        schedule={"recurrenceInterval": "PT1H", "doNotRunUntil": LATER}, **extra)
        made["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
            {"blob": {"container": container, "path": "words.txt"}, "filePath": "words.txt"}]
        return made

    # the team's schedule: the same job, a SAS of its own that expires in 3 minutes, no operator marks
    apply(kube, ns, body("template"))
    template_id = wait_condition(kube, ns, "template", "Synced", "True", timeout=60)["status"]["scheduleId"]
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=3)
    token = generate_blob_sas(azurite.account_name, container, "words.txt", account_key=azurite.account_key,
                              permission=BlobSasPermissions(read=True), expiry=expiry)
    adopted_id = f"team-{uuid.uuid4().hex[:8]}"
    with local_batch.client() as batch:
        template = batch.get_job_schedule(template_id)
        job_spec = template.job_specification
        files = job_spec.job_manager_task.resource_files
        files[0].http_url = files[0].http_url.split("?", 1)[0] + "?" + token
        batch.create_job_schedule(BatchJobScheduleCreateOptions(
            id=adopted_id, schedule=template.schedule, job_specification=job_spec))

    local_batch.reset_counts()
    apply(kube, ns, body("adopted", scheduleId=adopted_id, annotations={"azurebatch.dev/adopt": "true"}))
    obj = wait_condition(kube, ns, "adopted", "Synced", "True", timeout=60)
    assert obj["status"]["scheduleId"] == adopted_id

    def renewed() -> tuple[datetime, dict[str, Any]] | None:
        with local_batch.client() as batch:
            url = batch.get_job_schedule(adopted_id).job_specification.job_manager_task.resource_files[0].http_url
        held = held_expiry(url)
        status = (get(kube, ns, "adopted") or {}).get("status") or {}
        if held > expiry + timedelta(days=1) and status.get("sas", {}).get("expiresAt"):
            return held, status
        return None

    held, status = wait_for(renewed, 45, message="the adopted schedule's SAS renewed by the operator")
    # status.sas says what Batch holds now (the minter keeps sub-second precision the SAS's `se` drops)
    assert abs(datetime.fromisoformat(status["sas"]["expiresAt"]) - held) <= timedelta(seconds=1)
    assert local_batch.count("update_job_schedule") >= 1
    assert "sig=" not in json.dumps(status)
