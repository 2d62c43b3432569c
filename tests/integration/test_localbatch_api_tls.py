"""Entra ID over TLS: ``--tls`` serves HTTPS with a self-signed certificate and issues bearer tokens
that the Batch API then accepts. ``azure-identity``'s ``ClientSecretCredential`` (sync and aio)
gets them from the service's own token endpoint, with ``authority=`` the service's URL and
``disable_instance_discovery=True``; the client secret is the account key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

SCOPE = "https://batch.core.windows.net//.default"


@pytest.fixture(scope="module")
def tls_batch(local_batch_factory: Callable[..., Any]) -> Any:
    return local_batch_factory("--tls", "--no-execute")


def _body(schedule_id: str) -> dict[str, Any]:
    return {"id": schedule_id, "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}


async def test_azure_identity_and_aio_client_over_tls(tls_batch: Any) -> None:
    from azure.batch.aio import BatchClient
    from azure.identity.aio import ClientSecretCredential

    assert tls_batch.endpoint.startswith("https://")
    credential = ClientSecretCredential(
        "local-tenant",
        "batchop-tests",
        tls_batch.key,
        authority=tls_batch.endpoint,
        disable_instance_discovery=True,
        connection_verify=tls_batch.certificate,
    )
    client = BatchClient(tls_batch.endpoint, credential, connection_verify=tls_batch.certificate)
    try:
        schedule_id = f"tls-{uuid.uuid4().hex[:8]}"
        await client.create_job_schedule(_body(schedule_id))
        assert (await client.get_job_schedule(schedule_id)).id == schedule_id
        assert schedule_id in [s.id async for s in client.list_job_schedules()]
    finally:
        await client.close()
        await credential.close()


def test_sync_credential_and_client_over_tls(tls_batch: Any) -> None:
    from azure.batch import BatchClient
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        "local-tenant",
        "batchop-tests",
        tls_batch.key,
        authority=tls_batch.endpoint,
        disable_instance_discovery=True,
        connection_verify=tls_batch.certificate,
    )
    client = BatchClient(tls_batch.endpoint, credential, connection_verify=tls_batch.certificate)
    schedule_id = f"tls-{uuid.uuid4().hex[:8]}"
    client.create_job_schedule(_body(schedule_id))
    assert client.job_schedule_exists(schedule_id)
    # SharedKey still works on the TLS endpoint.
    assert tls_batch.client(connection_verify=tls_batch.certificate).get_job_schedule(schedule_id).id == schedule_id


def test_wrong_secret_and_forged_tokens_are_refused(tls_batch: Any) -> None:
    from azure.batch import BatchClient
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import (
        ClientSecretCredential,
    )

    wrong = ClientSecretCredential(
        "local-tenant",
        "x",
        "not-the-key",
        authority=tls_batch.endpoint,
        disable_instance_discovery=True,
        connection_verify=tls_batch.certificate,
    )
    with pytest.raises(ClientAuthenticationError):
        wrong.get_token(SCOPE)

    class Forged:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln", 2**31)

    client = BatchClient(tls_batch.endpoint, Forged(), connection_verify=tls_batch.certificate)
    with pytest.raises(HttpResponseError) as info:
        client.get_job_schedule("anything")
    assert info.value.status_code == 403
    assert info.value.response.json()["code"] == "AuthenticationFailed"


def test_plain_http_service_has_no_token_endpoint(local_batch: Any, batch_client: Any) -> None:
    from azure.core.rest import HttpRequest

    request = HttpRequest("GET", "/local-tenant/v2.0/.well-known/openid-configuration")
    try:
        response = batch_client.send_request(request)
    except HttpResponseError as exc:
        response = exc.response
    assert response.status_code == 404
