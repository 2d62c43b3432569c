"""Minting least-privilege SAS for blob references.

Three permission sets, nothing more (Batch's needs, see docs/blob-storage.md):

- :data:`READ` ``r``: one blob a task downloads (``resourceFiles[].httpUrl``);
- :data:`READ_LIST` ``rl``: a container whose blobs under a prefix a task downloads
  (``resourceFiles[].storageContainerUrl`` + ``blobPrefix``);
- :data:`WRITE_CREATE` ``cw``: a container Batch uploads output files into
  (``outputFiles[].destination.container.containerUrl``).

Two kinds of minter behind one :class:`SasMinter` protocol, chosen by :func:`minter_for`, and a third that
signs nothing:

- :class:`KeyMinter`: service SAS signed with the account key (a Secret, or the operator's
  ``AZURE_STORAGE_CONNECTION_STRING``); Azurite supports these.
- :class:`UserDelegationMinter`: user-delegation SAS signed with a key that Storage issues to the
  operator's Entra ID identity (``DefaultAzureCredential``, e.g. AKS workload identity). Such a SAS
  lives at most 7 days (:attr:`SasMinter.max_lifetime`); the identity needs the role "Storage Blob
  Delegator" (or any role with ``generateUserDelegationKey``) plus data access to the containers;
- :class:`PlaceholderMinter`: URLs of the right shape with ``sig=REDACTED``, contacting nothing, for
  ``batchop render`` and the self-check of ``batchop import``.

How long the SAS live and when they must be renewed is the policy of :mod:`batchop.spec.sas_lifetime`.

SAS strings are secrets: nothing here logs them, and :mod:`batchwire.redact` strips ``sig=`` anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from batchop.blob import settings as storage_config
from batchop.blob.settings import StorageSettings
from batchop.spec.sas_lifetime import lifetime_of
from batchwire import redact, timestamps


def generate_blob_sas(*args: Any, **kwargs: Any) -> str:
    """``azure.storage.blob.generate_blob_sas``, imported on first use: the storage SDK (about 20 MiB with
    its dependencies) is loaded only by an operator whose resources reference blobs."""
    from azure.storage.blob import generate_blob_sas as generate

    return str(generate(*args, **kwargs))


def generate_container_sas(*args: Any, **kwargs: Any) -> str:
    """``azure.storage.blob.generate_container_sas``, imported on first use (see :func:`generate_blob_sas`)."""
    from azure.storage.blob import generate_container_sas as generate

    return str(generate(*args, **kwargs))


READ = "r"
READ_LIST = "rl"
WRITE_CREATE = "cw"

#: Clock-skew allowance: a SAS (or delegation key) starts this long before it is minted.
START_SKEW = timedelta(minutes=5)
PLACEHOLDER_STORAGE_URL = "https://STORAGE-ACCOUNT.blob.core.windows.net"
"""The blob endpoint shown when no storage account is configured (``batchop render``, ``batchop import``)."""


class StorageAccessError(Exception):
    """A container cannot be used: missing, credential refused, or storage unreachable.

    ``reason`` is a CamelCase condition reason (``ContainerNotFound``, ``StorageAuthenticationFailed``,
    ``StorageUnavailable``); ``permanent`` tells the caller whether retrying can help without a change
    to the spec, the Secret or the storage account.
    """

    def __init__(self, reason: str, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


@runtime_checkable
class SasMinter(Protocol):
    """Mints SAS URLs for one storage account."""

    account_url: str
    max_lifetime: timedelta | None
    """The longest SAS this minter can sign (7 days for user delegation), None for no limit."""

    async def blob_url(self, container: str, blob: str, *, permission: str, expiry: datetime) -> str:
        """``{account_url}/{container}/{blob}?<SAS>``."""
        ...

    async def container_url(self, container: str, *, permission: str, expiry: datetime) -> str:
        """``{account_url}/{container}?<SAS>``."""
        ...

    async def check_container(self, container: str) -> None:
        """Return if the container exists and the credential may use it; else raise :class:`StorageAccessError`."""
        ...


def plain_url(account_url: str, container: str, blob: str | None = None) -> str:
    """The URL of a container or blob, without SAS (blob names percent-encoded, ``/`` kept)."""
    url = f"{account_url.rstrip('/')}/{container}"
    if blob:
        url += "/" + quote(blob, safe="/~")
    return url



def sas_permissions(url: str) -> str:
    """The ``sp=`` value of a SAS URL ('' when there is none)."""
    from urllib.parse import parse_qs

    return parse_qs(urlsplit(url).query).get("sp", [""])[0]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _ClientMinter:
    """Shared container check through ``azure.storage.blob.aio`` with whatever credential the subclass has."""

    account_url: str

    def _credential(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def check_container(self, container: str) -> None:
        from azure.storage.blob.aio import ContainerClient

        where = plain_url(self.account_url, container)
        client = ContainerClient(self.account_url, container, credential=self._credential(),
                                 retry_policy=_quick_retry(), connection_timeout=10, read_timeout=20)
        try:
            async with client:
                await client.get_container_properties()
        except ResourceNotFoundError:
            raise StorageAccessError(
                "ContainerNotFound",
                f"the blob container {container!r} does not exist at {where}: create it (batchop blob sync DIR "
                "creates one container per top-level folder) or fix the container name",
                permanent=True,
            ) from None
        except ClientAuthenticationError as exc:
            raise StorageAccessError(
                "StorageAuthenticationFailed",
                f"the storage account refused batchop's credential for {where} ({_code(exc)}): check the key in "
                "the Secret of spec.storage.credentialsSecretRef, or the Entra ID role assignment",
                permanent=True,
            ) from None
        except HttpResponseError as exc:
            status = getattr(exc, "status_code", None)
            if status == 403:
                raise StorageAccessError(
                    "StorageAuthenticationFailed",
                    f"the storage account refused batchop's credential for {where} ({_code(exc)}): check "
                    "the key in the Secret of spec.storage.credentialsSecretRef, or the Entra ID role assignment",
                    permanent=True,
                ) from None
            raise StorageAccessError(
                "StorageUnavailable", f"checking {where} failed ({_code(exc)}); retrying",
                permanent=False,
            ) from None
        except (TimeoutError, ServiceRequestError, OSError) as exc:
            raise StorageAccessError(
                "StorageUnavailable", f"cannot reach the storage account at {self.account_url}: "
                f"{exc.__class__.__name__}; retrying", permanent=False,
            ) from None


def _quick_retry() -> Any:
    """Two retries after 1 s and ~3 s (the SDK default waits 15 s first): callers retry on their own schedule."""
    from azure.storage.blob.aio import ExponentialRetry

    return ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2, random_jitter_range=1)


def _code(exc: HttpResponseError) -> str:
    """``HTTP 403 AuthenticationFailed``-style detail of a storage error (never includes a URL or SAS)."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or ""
    code = getattr(code, "value", code)
    return " ".join(part for part in (f"HTTP {status}" if status else "", str(code)) if part) or exc.__class__.__name__


class KeyMinter(_ClientMinter):
    """Service SAS signed with the storage account key."""

    max_lifetime: timedelta | None = None

    def __init__(self, account_url: str, account_name: str, account_key: str) -> None:
        self.account_url = account_url.rstrip("/")
        self.account_name = account_name
        self._key = account_key

    def __repr__(self) -> str:
        return f"KeyMinter({self.account_url!r})"

    def _credential(self) -> Any:
        return {"account_name": self.account_name, "account_key": self._key}

    async def blob_url(self, container: str, blob: str, *, permission: str, expiry: datetime) -> str:
        token = generate_blob_sas(self.account_name, container, blob, account_key=self._key,
                                  permission=permission, expiry=_as_utc(expiry), protocol=self._protocol())
        return f"{plain_url(self.account_url, container, blob)}?{token}"

    async def container_url(self, container: str, *, permission: str, expiry: datetime) -> str:
        token = generate_container_sas(self.account_name, container, account_key=self._key,
                                       permission=permission, expiry=_as_utc(expiry), protocol=self._protocol())
        return f"{plain_url(self.account_url, container)}?{token}"

    def _protocol(self) -> str:
        # https-only SAS for real accounts; Azurite on the local stack speaks plain http.
        return "https" if self.account_url.startswith("https://") else "https,http"


class UserDelegationMinter(_ClientMinter):
    """User-delegation SAS: Storage signs a delegation key for the operator's Entra ID identity."""

    max_lifetime: timedelta | None = storage_config.MAX_USER_DELEGATION_LIFETIME

    def __init__(self, account_url: str, account_name: str, credential: Any = None) -> None:
        self.account_url = account_url.rstrip("/")
        self.account_name = account_name
        self._token_credential = credential
        self._key: Any = None
        self._key_expiry: datetime | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"UserDelegationMinter({self.account_url!r})"

    def _credential(self) -> Any:
        if self._token_credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._token_credential = DefaultAzureCredential()
        return self._token_credential

    async def _delegation_key(self, expiry: datetime) -> Any:
        """A delegation key valid at least until ``expiry`` (reused while it is)."""
        from azure.storage.blob.aio import BlobServiceClient

        async with self._lock:
            if self._key is not None and self._key_expiry is not None and self._key_expiry >= expiry:
                return self._key
            now = datetime.now(UTC)
            key_expiry = min(now + storage_config.MAX_USER_DELEGATION_LIFETIME, expiry + timedelta(minutes=1))
            try:
                async with BlobServiceClient(self.account_url, credential=self._credential(),
                                             retry_policy=_quick_retry()) as service:
                    self._key = await service.get_user_delegation_key(now - START_SKEW, key_expiry)
            except ClientAuthenticationError as exc:
                raise StorageAccessError(
                    "StorageAuthenticationFailed",
                    f"Entra ID: the storage account {self.account_url} refused a user delegation key ({_code(exc)}): "
                    "grant the operator's identity 'Storage Blob Delegator' and 'Storage Blob Data Contributor'",
                    permanent=True,
                ) from None
            except HttpResponseError as exc:
                permanent = getattr(exc, "status_code", None) == 403
                raise StorageAccessError(
                    "StorageAuthenticationFailed" if permanent else "StorageUnavailable",
                    f"Entra ID: getting a user delegation key from {self.account_url} failed "
                    f"({_code(exc)})",
                    permanent=permanent,
                ) from None
            self._key_expiry = key_expiry
            return self._key

    async def blob_url(self, container: str, blob: str, *, permission: str, expiry: datetime) -> str:
        expiry = _as_utc(expiry)
        key = await self._delegation_key(expiry)
        token = generate_blob_sas(self.account_name, container, blob, user_delegation_key=key,
                                  permission=permission, expiry=expiry, start=datetime.now(UTC) - START_SKEW,
                                  protocol="https")
        return f"{plain_url(self.account_url, container, blob)}?{token}"

    async def container_url(self, container: str, *, permission: str, expiry: datetime) -> str:
        expiry = _as_utc(expiry)
        key = await self._delegation_key(expiry)
        token = generate_container_sas(self.account_name, container, user_delegation_key=key,
                                       permission=permission, expiry=expiry, start=datetime.now(UTC) - START_SKEW,
                                       protocol="https")
        return f"{plain_url(self.account_url, container)}?{token}"


class PlaceholderMinter:
    """A :class:`SasMinter` that mints nothing: URLs of the right shape with ``sig=REDACTED``.

    Shows blob references resolved the way the operator resolves them without contacting a storage
    account (``batchop render``, the self-check of ``batchop import``): every container passes the check.
    """

    max_lifetime: timedelta | None = None

    def __init__(self, account_url: str) -> None:
        self.account_url = account_url.rstrip("/")

    def _sas(self, permission: str, expiry: datetime, resource: str) -> str:
        expires = timestamps.seconds(expiry)
        return f"sv=2025-01-05&se={quote(expires)}&sr={resource}&sp={permission}&sig={redact.REDACTED}"

    async def blob_url(self, container: str, blob: str, *, permission: str, expiry: datetime) -> str:
        return f"{plain_url(self.account_url, container, blob)}?{self._sas(permission, expiry, 'b')}"

    async def container_url(self, container: str, *, permission: str, expiry: datetime) -> str:
        return f"{plain_url(self.account_url, container)}?{self._sas(permission, expiry, 'c')}"

    async def check_container(self, container: str) -> None:
        return None


def minter_from_settings(settings: StorageSettings, *, credential: Any = None) -> SasMinter:
    """The minter for resolved settings: key-signed when there is a key, user delegation otherwise."""
    if settings.account_key:
        return KeyMinter(settings.account_url, settings.account_name, settings.account_key)
    return UserDelegationMinter(settings.account_url, settings.account_name, credential)


def minter_for(
    storage_spec: Mapping[str, Any] | None,
    secret_data: Mapping[str, Any] | None,
    defaults: Mapping[str, str],
    *,
    credential: Any = None,
) -> SasMinter:
    """The minter for one resource: ``spec.storage`` + its Secret's decoded data, else operator defaults.

    Raises :class:`batchop.blob.settings.StorageConfigError` (``.field`` names what to fix).
    ``credential`` (an async token credential) overrides ``DefaultAzureCredential`` for Entra ID.
    """
    return minter_from_settings(storage_config.resolve(storage_spec, secret_data, defaults), credential=credential)


def expiry_for(storage_spec: Mapping[str, Any] | None, *, now: datetime, minter: SasMinter | None = None) -> datetime:
    """When SAS minted ``now`` expire: ``now + sasLifetime``, capped by the minter's maximum (7 days for Entra)."""
    lifetime = lifetime_of(storage_spec)
    if minter is not None and minter.max_lifetime is not None:
        lifetime = min(lifetime, minter.max_lifetime)
    return _as_utc(now) + lifetime
