"""Which Blob storage account batchop uses, and with which credential.

Three sources, most specific first:

1. ``spec.storage`` of a BatchJobSchedule: ``accountUrl`` plus an optional Secret
   (``credentialsSecretRef``) holding ``connectionString``, or ``accountName`` + ``accountKey``.
   With no Secret the operator's own Entra ID identity is used (user-delegation SAS).
2. The operator's defaults from its environment: ``AZURE_STORAGE_CONNECTION_STRING`` (account key),
   or ``BATCHOP_STORAGE_URL`` (Entra ID).
3. For the CLI only (:func:`for_cli`): the env file ``batchop dev up`` writes (:mod:`batchwire.devenv`),
   then Azurite's well-known development account on its default port (:mod:`batchwire.azurite`).

:class:`StorageSettings` is the result; it never prints its key (``repr`` hides it) and registers
every key with :mod:`batchwire.redact`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batchop.spec.sas_lifetime import DEFAULT_SAS_LIFETIME, LifetimeError, lifetime_of
from batchwire import azurite, devenv, redact

#: Storage refuses user-delegation keys (and so their SAS) valid for more than 7 days.
MAX_USER_DELEGATION_LIFETIME = timedelta(days=7)

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_STORAGE_URL = "BATCHOP_STORAGE_URL"


class StorageConfigError(ValueError):
    """Storage settings that cannot work; ``field`` names what to fix (``spec.storage.accountUrl``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StorageSettings:
    """A resolved storage account: where it is, how to authenticate, how long SAS live."""

    account_url: str
    """Blob endpoint without trailing slash: ``https://acct.blob.core.windows.net`` or Azurite's
    path-style ``http://127.0.0.1:10000/devstoreaccount1``."""
    account_name: str
    account_key: str | None = field(default=None, repr=False)
    """Shared key; None means Entra ID (``DefaultAzureCredential``) and user-delegation SAS."""
    sas_lifetime: timedelta = DEFAULT_SAS_LIFETIME
    source: str = ""
    """Where the settings came from, for messages (never contains a secret)."""

    @property
    def uses_entra_id(self) -> bool:
        return self.account_key is None

    def describe(self) -> str:
        auth = "Entra ID" if self.uses_entra_id else "account key"
        return f"{self.account_url} ({auth}, from {self.source})"


def account_name_from_url(url: str) -> str:
    """The account name of a blob endpoint: its first host label, or first path segment (Azurite's path style)."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if path:
        return path.split("/")[0]
    host = parts.hostname or ""
    return host.split(".")[0]


def parse_connection_string(text: str) -> tuple[str, str, str]:
    """Return ``(account_url, account_name, account_key)`` from an Azure Storage connection string.

    Understands ``UseDevelopmentStorage=true`` (Azurite), ``BlobEndpoint``, ``DefaultEndpointsProtocol``
    + ``AccountName`` + ``EndpointSuffix``, ``AccountKey``. A SAS-only connection string is refused:
    batchop needs a key (or Entra ID) to mint SAS itself.
    """
    parts: dict[str, str] = {}
    for item in text.strip().split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise StorageConfigError("connectionString", f"segment {name.strip()[:20]!r} is not NAME=VALUE")
        parts[name.strip().lower()] = value.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        proxy = parts.get("developmentstorageproxyuri", "http://127.0.0.1").rstrip("/")
        return f"{proxy}:{azurite.BLOB_PORT}/{azurite.ACCOUNT_NAME}", azurite.ACCOUNT_NAME, azurite.ACCOUNT_KEY
    key = parts.get("accountkey") or None
    name = parts.get("accountname", "")
    endpoint = parts.get("blobendpoint", "").rstrip("/")
    if not endpoint:
        if not name:
            raise StorageConfigError("connectionString", "has neither BlobEndpoint nor AccountName")
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{name}.blob.{suffix}"
    if not name:
        name = account_name_from_url(endpoint)
    if key is None:
        raise StorageConfigError(
            "connectionString",
            "has no AccountKey: batchop mints SAS itself, so it needs the account key (or no Secret at all, to use "
            "Entra ID)",
        )
    redact.register_secret(key)
    redact.register_secret(text.strip())
    return endpoint, name, key


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def from_secret(secret_data: Mapping[str, Any], *, account_url: str | None, secret_name: str) -> tuple[str, str, str]:
    """``(account_url, account_name, account_key)`` from a Secret's decoded data.

    Keys: ``connectionString``; or ``accountKey`` (+ ``accountName``, else taken from the URL).
    """
    data = {k: _decode(v) for k, v in secret_data.items()}
    field_name = f"spec.storage.credentialsSecretRef (Secret {secret_name!r})"
    if data.get("connectionString"):
        try:
            url, name, key = parse_connection_string(data["connectionString"])
        except StorageConfigError as exc:
            raise StorageConfigError(field_name, f"key connectionString {exc.message}") from None
        return (account_url or url).rstrip("/"), name, key
    if data.get("accountKey"):
        key = data["accountKey"].strip()
        redact.register_secret(key)
        url = account_url or ""
        name = data.get("accountName", "").strip() or (account_name_from_url(url) if url else "")
        if not url and name:
            url = f"https://{name}.blob.core.windows.net"
        if not url:
            raise StorageConfigError(field_name, "has accountKey but neither accountName nor spec.storage.accountUrl")
        return url.rstrip("/"), name, key
    raise StorageConfigError(
        field_name,
        "must contain the key connectionString, or accountName and accountKey (kubectl create secret generic "
        "storage-credentials --from-literal=connectionString=...)",
    )


def resolve(
    storage_spec: Mapping[str, Any] | None,
    secret_data: Mapping[str, Any] | None,
    defaults: Mapping[str, str],
) -> StorageSettings:
    """Settings for one BatchJobSchedule: its ``spec.storage`` (+ Secret data), else the operator defaults.

    ``secret_data`` is the decoded data of ``spec.storage.credentialsSecretRef`` (the caller reads the
    Secret from the resource's namespace), or None when no Secret is referenced.
    ``defaults`` is the operator's environment (or its ``batchop run`` flags under the same names).
    """
    spec = dict(storage_spec or {})
    try:
        lifetime = lifetime_of(spec)
    except LifetimeError as exc:
        raise StorageConfigError(exc.field, exc.message) from None
    account_url = (spec.get("accountUrl") or "").rstrip("/") or None
    if account_url is not None and not account_url.startswith(("https://", "http://")):
        raise StorageConfigError("spec.storage.accountUrl", f"{account_url!r} is not an http(s) URL, e.g. "
                                 "https://mystorage.blob.core.windows.net")
    ref = spec.get("credentialsSecretRef") or {}
    if ref:
        secret_name = str(ref.get("name", ""))
        if secret_data is None:
            raise StorageConfigError("spec.storage.credentialsSecretRef",
                                     f"Secret {secret_name!r} was not found in the resource's namespace")
        url, name, key = from_secret(secret_data, account_url=account_url, secret_name=secret_name)
        return StorageSettings(url, name, key, lifetime, f"Secret {secret_name}")
    if account_url:
        return StorageSettings(account_url, account_name_from_url(account_url), None, lifetime,
                               "spec.storage.accountUrl with Entra ID")
    conn = defaults.get(ENV_CONNECTION_STRING, "").strip()
    if conn:
        try:
            url, name, key = parse_connection_string(conn)
        except StorageConfigError as exc:
            raise StorageConfigError(f"operator setting {ENV_CONNECTION_STRING}", exc.message) from None
        return StorageSettings(url.rstrip("/"), name, key, lifetime, f"operator default {ENV_CONNECTION_STRING}")
    url = defaults.get(ENV_STORAGE_URL, "").strip().rstrip("/")
    if url:
        return StorageSettings(url, account_name_from_url(url), None, lifetime, f"operator default {ENV_STORAGE_URL}")
    raise StorageConfigError(
        "spec.storage.accountUrl",
        f"no storage account configured: set spec.storage.accountUrl (and credentialsSecretRef), or start the operator "
        f"with {ENV_CONNECTION_STRING} or {ENV_STORAGE_URL}",
    )


def for_cli(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    account_key: str | None = None,
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> StorageSettings:
    """Settings for ``batchop blob``: flags, then environment, then the dev stack's env file, then Azurite.

    ``--account-url`` without ``--account-key`` means Entra ID (``DefaultAzureCredential``).
    """
    env = os.environ if env is None else env
    if connection_string:
        url, name, key = parse_connection_string(connection_string)
        return StorageSettings(url.rstrip("/"), name, key, source="--connection-string")
    if account_url:
        url = account_url.rstrip("/")
        if account_key:
            redact.register_secret(account_key)
        return StorageSettings(url, account_name_from_url(url), account_key or None,
                               source="--account-url" + (" --account-key" if account_key else " with Entra ID"))
    if env.get(ENV_CONNECTION_STRING):
        url, name, key = parse_connection_string(env[ENV_CONNECTION_STRING])
        return StorageSettings(url.rstrip("/"), name, key, source=ENV_CONNECTION_STRING)
    if env.get(ENV_STORAGE_URL):
        url = env[ENV_STORAGE_URL].rstrip("/")
        return StorageSettings(url, account_name_from_url(url), None, source=f"{ENV_STORAGE_URL} with Entra ID")
    path = env_file if env_file is not None else devenv.env_file()
    stack = devenv.read_env_file(path)
    if stack.get(ENV_CONNECTION_STRING):
        url, name, key = parse_connection_string(stack[ENV_CONNECTION_STRING])
        return StorageSettings(url.rstrip("/"), name, key, source=f"{path}")
    return StorageSettings(azurite.BLOB_URL, azurite.ACCOUNT_NAME, azurite.ACCOUNT_KEY,
                           source="Azurite development account")
