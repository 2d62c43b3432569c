"""The ``azurite`` fixture: the pinned Azurite, driven with the real ``azure-storage-blob`` SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from tests.fixtures.stack import AzuriteHandle


def test_upload_and_download_with_the_connection_string(azurite: AzuriteHandle) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("stack-roundtrip")
    container.upload_blob("a/b.txt", b"hello azurite", overwrite=True)
    assert container.download_blob("a/b.txt").readall() == b"hello azurite"
    assert [b.name for b in container.list_blobs(name_starts_with="a/")] == ["a/b.txt"]
    assert azurite.blob_endpoint.startswith("http://127.0.0.1:")


def test_a_wrong_account_key_is_refused(azurite: AzuriteHandle) -> None:
    wrong = azurite.connection_string.replace(azurite.account_key, "d3Jvbmcta2V5LW5vdC10aGUtb25lLWF6dXJpdGUtdXNlcw==")
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
        list(BlobServiceClient.from_connection_string(wrong).list_containers())
    assert refused.value.status_code == 403


def test_sas_is_enforced_including_expiry(azurite: AzuriteHandle) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("stack-sas")
    container.upload_blob("x.txt", b"sas content")

    def url(expiry: datetime) -> str:
        sas = generate_blob_sas(azurite.account_name, "stack-sas", "x.txt", account_key=azurite.account_key,
                                permission=BlobSasPermissions(read=True), expiry=expiry)
        return f"{azurite.blob_endpoint}/stack-sas/x.txt?{sas}"

    assert requests.get(url(datetime.now(UTC) + timedelta(hours=1)), timeout=10).content == b"sas content"
    assert requests.get(url(datetime.now(UTC) - timedelta(minutes=5)), timeout=10).status_code == 403
    assert requests.get(f"{azurite.blob_endpoint}/stack-sas/x.txt", timeout=10).status_code in (403, 404)
