"""Minting least-privilege SAS for blob references, and deciding when to renew them.

Three permission sets, nothing more (Batch's needs, see docs/blob-storage.md):

- :data:`READ` ``r``: one blob a task downloads (``resourceFiles[].httpUrl``);
- :data:`READ_LIST` ``rl``: a container whose blobs under a prefix a task downloads
  (``resourceFiles[].storageContainerUrl`` + ``blobPrefix``);
- :data:`WRITE_CREATE` ``cw``: a container Batch uploads output files into
  (``outputFiles[].destination.container.containerUrl``).

Two kinds of minter behind one :class:`SasMinter` protocol, chosen by :func:`minter_for`:

- :class:`KeyMinter`: service SAS signed with the account key (a Secret, or the operator's
  ``AZURE_STORAGE_CONNECTION_STRING``); Azurite supports these.
- :class:`UserDelegationMinter`: user-delegation SAS signed with a key that Storage issues to the
  operator's Entra ID identity (``DefaultAzureCredential``, e.g. AKS workload identity). Such a SAS
  lives at most 7 days (:attr:`SasMinter.max_lifetime`); the identity needs the role "Storage Blob
  Delegator" (or any role with ``generateUserDelegationKey``) plus data access to the containers.

:func:`renewal_due` decides when the SAS inside a schedule must be re-minted: before the next job
the schedule will start could outlive it.

SAS strings are secrets: nothing here logs them, and :mod:`batchwire.redact` strips ``sig=`` anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
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
from batchwire import durations


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
#: When a job's wall clock is unbounded, assume a job runs at most this long (docs/blob-storage.md).
DEFAULT_JOB_WINDOW = timedelta(days=1)


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


def lifetime_of(storage_spec: Mapping[str, Any] | None) -> timedelta:
    """``spec.storage.sasLifetime`` parsed (default P7D)."""
    return storage_config.parse_lifetime((storage_spec or {}).get("sasLifetime"))


def expiry_for(storage_spec: Mapping[str, Any] | None, *, now: datetime, minter: SasMinter | None = None) -> datetime:
    """When SAS minted ``now`` expire: ``now + sasLifetime``, capped by the minter's maximum (7 days for Entra)."""
    lifetime = lifetime_of(storage_spec)
    if minter is not None and minter.max_lifetime is not None:
        lifetime = min(lifetime, minter.max_lifetime)
    return _as_utc(now) + lifetime


# -- renewal ---------------------------------------------------------------------------------------
def _duration(value: timedelta | str | None) -> timedelta | None:
    """A bounded duration, or None for absent / Batch's 'unlimited' (TimeSpan.MaxValue-ish) values."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        ticks = durations.parse_ticks(value)
        if ticks >= durations.MAX_TICKS // 2:
            return None
        value = timedelta(microseconds=ticks // 10)
    if value >= timedelta(days=3650):
        return None
    return value


def max_wall_clock(job_spec: Mapping[str, Any]) -> timedelta | None:
    """How long one job of this ``jobSpecification`` can last at most, or None when unbounded.

    The job's own ``constraints.maxWallClockTime`` bounds it; failing that, a job manager task that
    ends the job (``killJobOnCompletion`` true, the default) bounds it by its own
    ``constraints.maxWallClockTime`` (retries ignored: an approximation on the long side is fine).
    """
    job_limit = _duration((job_spec.get("constraints") or {}).get("maxWallClockTime"))
    manager = job_spec.get("jobManagerTask") or {}
    task_limit = None
    if manager and manager.get("killJobOnCompletion", True) is not False:
        task_limit = _duration((manager.get("constraints") or {}).get("maxWallClockTime"))
        if task_limit is not None:
            retries = int((manager.get("constraints") or {}).get("maxTaskRetryCount") or 0)
            if retries < 0:
                task_limit = None
            else:
                task_limit = task_limit * (retries + 1)
    bounded = [d for d in (job_limit, task_limit) if d is not None]
    return min(bounded) if bounded else None


def renewal_margin(window: timedelta) -> timedelta:
    """Slack added after a job's window: a tenth of it, at least 30 s, at most 15 min (clock skew, uploads)."""
    return min(timedelta(minutes=15), max(timedelta(seconds=30), window / 10))


def required_until(
    *, now: datetime, next_run_time: datetime | None, max_wall_clock: timedelta | str | None
) -> datetime:
    """Until when the SAS in the schedule must stay valid: the end of the next job it could start, plus margin.

    The next job starts at ``next_run_time`` (at once when None or past, e.g. a run-now or a disabled
    schedule being enabled) and reads resource files, then uploads outputs, up to its wall clock later.
    """
    start = _as_utc(now)
    if next_run_time is not None:
        start = max(start, _as_utc(next_run_time))
    window = _duration(max_wall_clock) if not isinstance(max_wall_clock, timedelta) else max_wall_clock
    if window is None:
        window = DEFAULT_JOB_WINDOW
    return start + window + renewal_margin(window)


def renewal_due(
    expires_at: datetime | None,
    *,
    now: datetime,
    next_run_time: datetime | None,
    max_wall_clock: timedelta | str | None,
) -> bool:
    """True when the schedule's SAS must be re-minted (PATCH of ``jobSpecification``) now.

    That is when the SAS could expire under the next job the schedule will start: before
    ``next_run_time + max_wall_clock + margin`` (:func:`required_until`). It then fires right after
    Batch advances ``nextRunTime`` past the last job the old SAS covers, a whole recurrence before the
    job that needs the new one. ``expires_at`` None (unknown, e.g. after adoption) is due.
    """
    if expires_at is None:
        return True
    needed = required_until(now=now, next_run_time=next_run_time, max_wall_clock=max_wall_clock)
    return _as_utc(expires_at) <= needed


def minimum_lifetime(recurrence_interval: timedelta | str | None, max_wall_clock: timedelta | str | None) -> timedelta:
    """The shortest ``sasLifetime`` that renewal can keep ahead of: one recurrence plus one job window plus margin.

    With a shorter lifetime a freshly minted SAS would already be due for renewal.
    """
    recurrence = _duration(recurrence_interval) or timedelta(0)
    window = _duration(max_wall_clock) if not isinstance(max_wall_clock, timedelta) else max_wall_clock
    if window is None:
        window = DEFAULT_JOB_WINDOW
    return recurrence + window + renewal_margin(window)


@dataclass(frozen=True)
class LifetimeProblem:
    field: str
    message: str


def check_lifetime(
    storage_spec: Mapping[str, Any] | None, schedule: Mapping[str, Any] | None, job_spec: Mapping[str, Any]
) -> LifetimeProblem | None:
    """A problem when ``spec.storage.sasLifetime`` is too short for this schedule (see :func:`minimum_lifetime`)."""
    lifetime = lifetime_of(storage_spec)
    recurrence = (schedule or {}).get("recurrenceInterval")
    window = max_wall_clock(job_spec)
    minimum = minimum_lifetime(recurrence, window)
    if lifetime > minimum:
        return None
    shown = durations.format_ticks((int(minimum.total_seconds()) + 1) * durations.TICKS_PER_SECOND)
    why = f"one recurrence ({recurrence}) plus " if recurrence else ""
    window_text = durations.format_ticks(int(window.total_seconds()) * durations.TICKS_PER_SECOND) if window else (
        "a default of P1D for an unbounded maxWallClockTime")
    return LifetimeProblem(
        "spec.storage.sasLifetime",
        f"{(storage_spec or {}).get('sasLifetime') or 'P7D'} is too short: a SAS must outlive {why}one job "
        f"({window_text}) plus margin; use at least {shown}, or bound the job with "
        "jobSpecification.constraints.maxWallClockTime",
    )
