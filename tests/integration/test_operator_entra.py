"""The operator's Entra ID path against real parts: no account key anywhere, only ``DefaultAzureCredential``.

The local Batch service runs with ``--tls`` (HTTPS, self-signed certificate, its own token endpoint). The
operator process gets no ``BATCHOP_BATCH_KEY`` and no credentials Secret; it gets what a workload on AKS
would get from its environment, pointed at the local service:

- ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET`` (the service accepts its account key as
  client secret) and ``AZURE_AUTHORITY_HOST`` = the service's ``tokenAuthority``: ``DefaultAzureCredential``
  picks ``EnvironmentCredential`` -> ``ClientSecretCredential``. The async credential of azure-identity
  talks to the authority directly (no MSAL instance discovery), so no further setting is needed.
- ``SSL_CERT_FILE`` = the service's certificate: both azure-core's ``AioHttpTransport`` (``connection_verify``
  left ``True`` passes no ``ssl`` argument to aiohttp) and azure-identity's token requests use aiohttp's default
  context, ``ssl.create_default_context()``, which OpenSSL fills from ``SSL_CERT_FILE``. (``REQUESTS_CA_BUNDLE``
  alone does not work: only ``requests`` reads it; without ``SSL_CERT_FILE`` this test times out.)

Shown: ``Ready``/``Synced`` True for a resource naming ``spec.account.endpoint`` without
``credentialsSecretRef`` and for one relying on the operator-wide default endpoint; both schedules exist in
Batch (checked with the unmodified SDK); the service issued tokens and accepted the operator's requests
(it had no key to sign SharedKey with); neither the client secret nor any token is in the operator's log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace
from tests.integration.test_operator import apply, resource, wait_condition

RESYNC = 2.0
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


@pytest.fixture(scope="module")
def tls_batch(local_batch_factory: Any) -> Any:
    return local_batch_factory("--tls", "--no-execute")


@pytest.fixture(scope="module")
def entra_operator(operator_factory: Any, tls_batch: Any) -> Any:
    assert tls_batch.info_line["tokenAuthority"], "the service must run with --tls to issue tokens"
    return operator_factory(
        ["opte-*"],
        resync=RESYNC,
        default_account=False,
        env={
            "BATCHOP_BATCH_ENDPOINT": tls_batch.endpoint,  # operator-wide default endpoint, and no key
            "AZURE_TENANT_ID": "local-tenant",
            "AZURE_CLIENT_ID": "batchop-operator",
            "AZURE_CLIENT_SECRET": tls_batch.key,
            "AZURE_AUTHORITY_HOST": tls_batch.info_line["tokenAuthority"],
            "SSL_CERT_FILE": tls_batch.certificate,
        },
    )


@pytest.fixture
def ns(kube: Any, entra_operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "opte") as name:
        yield name


def test_entra_id_through_default_azure_credential(kube: Any, tls_batch: Any, entra_operator: Any, ns: str) -> None:
    assert "BATCHOP_BATCH_KEY" not in entra_operator.env
    tls_batch.reset_counts()

    apply(kube, ns, resource("explicit", account={"endpoint": tls_batch.endpoint}))
    apply(kube, ns, resource("defaulted"))
    explicit = wait_condition(kube, ns, "explicit", "Synced", "True", timeout=60)
    defaulted = wait_condition(kube, ns, "defaulted", "Synced", "True", timeout=60)
    explicit = wait_condition(kube, ns, "explicit", "Ready", "True", timeout=60)
    defaulted = wait_condition(kube, ns, "defaulted", "Ready", "True", timeout=60)

    # The schedules exist in Batch, checked with the unmodified SDK (SharedKey over the same TLS endpoint).
    client = tls_batch.client(connection_verify=tls_batch.certificate)
    try:
        for obj in (explicit, defaulted):
            schedule_id = obj["status"]["scheduleId"]
            found = client.get_job_schedule(schedule_id)
            assert found.id == schedule_id
            marks = {m.name: m.value for m in found.metadata or []}
            assert marks["azurebatch.dev/owner"] == f"{ns}/{obj['metadata']['name']}"
            assert marks["azurebatch.dev/uid"] == obj["metadata"]["uid"]
    finally:
        client.close()

    # Bearer tokens, not SharedKey: the operator had no key, the token endpoint issued tokens, and the Batch
    # API answered the operator's creates (our own SDK check above only read).
    counts = tls_batch.counts()
    assert counts.get("issue_token", {}).get("byStatus", {}).get("200", 0) >= 1, counts
    assert counts.get("create_job_schedule", {}).get("byStatus", {}).get("201", 0) == 2, counts
    assert not any(str(status) == "403" for entry in counts.values() for status in entry["byStatus"]), counts

    # No secret and no token in the operator's log.
    logs = entra_operator.logs()
    assert logs, "the operator wrote no log"
    assert tls_batch.key not in logs
    assert not JWT.search(logs), JWT.search(logs)
    assert "SharedKey " not in logs
    for line in logs.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            assert tls_batch.key not in json.dumps(record)
