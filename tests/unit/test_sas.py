"""SAS minting and storage settings (no network); the renewal decision is tested in test_spec_sas_lifetime.py."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from batchop.blob import sas
from batchop.blob import settings as storage_config
from batchop.blob.sas import KeyMinter, UserDelegationMinter, minter_for
from batchop.blob.settings import StorageConfigError
from batchwire import azurite, redact
from batchwire.redact import strip_sas

KEY = base64.b64encode(b"secret-key-bytes" * 4).decode()
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_key_minter_blob_sas_fields() -> None:
    """Fields of a blob SAS; that Storage accepts the signature is proven against Azurite (integration)."""
    minter = KeyMinter("https://acct.blob.core.windows.net", "acct", KEY)
    url = asyncio.run(minter.blob_url("application", "dir/task.sh", permission=sas.READ, expiry=NOW))
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/application/dir/task.sh"
    assert query["sp"] == ["r"] and query["sr"] == ["b"] and query["se"] == ["2026-11-23T12:00:00Z"]
    assert "st" not in query, "a key-signed SAS is valid at once (no start time to skew)"
    other = KeyMinter("https://acct.blob.core.windows.net", "acct", base64.b64encode(b"x" * 64).decode())
    other_url = asyncio.run(other.blob_url("application", "dir/task.sh", permission=sas.READ, expiry=NOW))
    assert parse_qs(urlsplit(other_url).query)["sig"] != query["sig"], "the signature depends on the key"


def test_http_allowed_only_for_plain_http_endpoints() -> None:
    minter = KeyMinter(azurite.BLOB_URL, azurite.ACCOUNT_NAME, azurite.ACCOUNT_KEY)
    url = asyncio.run(minter.container_url("input", permission=sas.READ_LIST, expiry=NOW))
    assert url.startswith("http://127.0.0.1:10000/devstoreaccount1/input?")
    assert parse_qs(urlsplit(url).query)["spr"] == ["https,http"]
    assert sas.sas_permissions(url) == "rl"


def test_minted_sas_is_redacted() -> None:
    minter = KeyMinter("https://acct.blob.core.windows.net", "acct", KEY)
    url = asyncio.run(minter.container_url("output", permission=sas.WRITE_CREATE, expiry=NOW))
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    assert signature not in redact.redact(f"PATCH jobSpecification with {url}")
    assert strip_sas(url) == "https://acct.blob.core.windows.net/output"


def test_minter_for_sources() -> None:
    conn = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"
    minter = minter_for(None, None, {"AZURE_STORAGE_CONNECTION_STRING": conn})
    assert isinstance(minter, KeyMinter) and minter.account_url == "https://acct.blob.core.windows.net"
    assert KEY not in repr(minter)
    assert redact.redact(f"key {KEY}") == f"key {redact.REDACTED}"

    entra = minter_for(None, None, {"BATCHOP_STORAGE_URL": "https://other.blob.core.windows.net/"})
    assert isinstance(entra, UserDelegationMinter) and entra.max_lifetime == timedelta(days=7)
    assert entra.account_name == "other"

    spec = {"accountUrl": "https://mine.blob.core.windows.net", "credentialsSecretRef": {"name": "st"}}
    from_secret = minter_for(spec, {"accountKey": KEY.encode()}, {"AZURE_STORAGE_CONNECTION_STRING": conn})
    assert isinstance(from_secret, KeyMinter) and from_secret.account_name == "mine"

    no_secret = minter_for({"accountUrl": "https://mine.blob.core.windows.net"}, None, {})
    assert isinstance(no_secret, UserDelegationMinter)

    dev = minter_for(None, None, {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"})
    assert dev.account_url == azurite.BLOB_URL


def test_storage_config_errors_name_the_field() -> None:
    with pytest.raises(StorageConfigError) as info:
        storage_config.resolve(None, None, {})
    assert info.value.field == "spec.storage.accountUrl"
    with pytest.raises(StorageConfigError) as info:
        storage_config.resolve({"credentialsSecretRef": {"name": "missing"}}, None, {})
    assert "Secret 'missing' was not found" in str(info.value)
    with pytest.raises(StorageConfigError, match="must contain the key connectionString"):
        storage_config.resolve({"credentialsSecretRef": {"name": "s"}}, {"other": "x"}, {})
    with pytest.raises(StorageConfigError, match="shorter than the minimum PT1M"):
        storage_config.resolve({"sasLifetime": "PT10S"}, None, {"BATCHOP_STORAGE_URL": "https://a.blob.x"})
    with pytest.raises(StorageConfigError, match="has no AccountKey"):
        storage_config.parse_connection_string("BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=x")


def test_cli_settings_fall_back_to_dev_stack_env_then_azurite(tmp_path: object) -> None:
    from pathlib import Path

    env_file = Path(str(tmp_path)) / "env"
    settings = storage_config.for_cli(env={}, env_file=env_file)
    assert settings.account_url == azurite.BLOB_URL and settings.source == "Azurite development account"
    env_file.write_text(
        "export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={azurite.ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1'\n"
    )
    settings = storage_config.for_cli(env={}, env_file=env_file)
    assert settings.account_url == "http://127.0.0.1:41234/devstoreaccount1"
    assert azurite.ACCOUNT_KEY not in repr(settings)


def test_user_delegation_sas_fields_and_key_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """User-delegation SAS (Entra ID): signed with the delegation key, https only, the key fetched once while
    it covers the requested expiry and again for a later one (Storage itself is faked here)."""
    import azure.storage.blob.aio as blob_aio
    from azure.storage.blob import UserDelegationKey

    requests: list[tuple[datetime, datetime]] = []

    class FakeService:
        def __init__(self, url: str, credential: object, **_: object) -> None:
            assert url == "https://acct.blob.core.windows.net" and credential is token

        async def __aenter__(self) -> FakeService:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def get_user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
            requests.append((start, expiry))
            key = UserDelegationKey()
            key.signed_oid, key.signed_tid = "00000000-0000-0000-0000-00000000000a", "tenant"
            key.signed_start, key.signed_expiry = "2026-11-23T11:55:00Z", "2026-11-30T11:55:00Z"
            key.signed_service, key.signed_version = "b", "2021-08-06"
            key.value = KEY
            return key

    monkeypatch.setattr(blob_aio, "BlobServiceClient", FakeService)
    token = object()
    minter = UserDelegationMinter("https://acct.blob.core.windows.net", "acct", credential=token)
    expiry = datetime.now(UTC) + timedelta(days=1)
    blob = asyncio.run(minter.blob_url("application", "task.sh", permission=sas.READ, expiry=expiry))
    container = asyncio.run(minter.container_url("output", permission=sas.WRITE_CREATE, expiry=expiry))
    for url, permission, resource in ((blob, "r", "b"), (container, "cw", "c")):
        query = parse_qs(urlsplit(url).query)
        assert query["sp"] == [permission] and query["sr"] == [resource]
        assert query["skoid"] == ["00000000-0000-0000-0000-00000000000a"], "signed with the delegation key"
        assert query["spr"] == ["https"]
        assert "st" in query, "a start time before now absorbs clock skew"
    assert len(requests) == 1, "one delegation key serves every SAS it covers"
    start, key_expiry = requests[0]
    assert start < datetime.now(UTC) and key_expiry >= expiry
    asyncio.run(minter.blob_url("a", "b", permission=sas.READ, expiry=expiry + timedelta(days=2)))
    assert len(requests) == 2, "a later expiry needs a new key"
    assert requests[1][1] <= datetime.now(UTC) + timedelta(days=7), "Storage refuses keys beyond 7 days"
    assert KEY not in repr(minter)
