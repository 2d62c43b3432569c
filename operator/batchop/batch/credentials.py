"""Which Batch account an object uses, with which credential; and one gateway per account.

Most specific wins:

1. ``spec.account.credentialsSecretRef``: a Secret in the object's own namespace with keys
   ``accountName`` and ``accountKey`` (shared key). ``accountKey`` absent -> Entra ID.
2. ``spec.account.endpoint`` without a Secret: the operator-wide key if the endpoint is the operator's
   default endpoint, Entra ID otherwise.
3. No ``spec.account``: the operator-wide defaults (``BATCHOP_BATCH_ENDPOINT``, ``BATCHOP_BATCH_ACCOUNT``,
   ``BATCHOP_BATCH_KEY``), and Entra ID (``DefaultAzureCredential``: workload identity on AKS) when no key.

Rotation without restart: Secrets are re-read when the cached copy is older than
``secret_cache_seconds`` (default 10 s); a new ``resourceVersion`` with a different key gives a new
credential, and :class:`Accounts` swaps the account's gateway for one using it. Every key read is
registered with :func:`batchwire.redact.register_secret` so it never appears in a log, event or status.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.batch.gateway import Gateway, Limits
from batchop.batch.settings import Settings, account_from_endpoint
from batchwire.redact import register_secret

log = logging.getLogger(__name__)

class CredentialError(Exception):
    """The object's account or credentials cannot be resolved; ``reason`` goes into ``Synced``."""

    def __init__(self, message: str, reason: str = cond.REASON_CREDENTIALS_NOT_FOUND) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class AccountRef:
    """A resolved account: endpoint, account name and key (None: Entra ID), and where they came from."""

    endpoint: str
    account_name: str | None
    key: str | None = field(default=None, repr=False)
    source: str = "defaults"

    @property
    def endpoint_key(self) -> str:
        return self.endpoint.rstrip("/").lower()

    @property
    def credential_id(self) -> str:
        digest = hashlib.sha256((self.key or "").encode()).hexdigest()[:16] if self.key else "entra"
        return f"{self.endpoint_key}|{self.account_name}|{digest}"


class SecretReader(Protocol):
    """Reads one Secret: its decoded data and ``resourceVersion``, None when it does not exist
    (:meth:`batchop.kube.client.KubeClient.get_secret`)."""

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None: ...


class SecretSource:
    """Reads Secrets with a short cache: ``get(ns, name) -> (data, resourceVersion) | None``."""

    def __init__(self, client: SecretReader, ttl: float = 10.0) -> None:
        self.client = client
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, tuple[dict[str, str], str] | None]] = {}

    async def get(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        key = (namespace, name)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = await self.client.get_secret(namespace, name)
        if value is not None:
            for secret_value in value[0].values():
                register_secret(secret_value)
        self._cache[key] = (now, value)
        return value


async def resolve(namespace: str, spec: Mapping[str, Any], settings: Settings, secrets: SecretSource) -> AccountRef:
    """Resolve the object's account (see the module docstring); raises :class:`CredentialError`."""
    account = spec.get("account") or {}
    endpoint = account.get("endpoint") or settings.batch_endpoint
    if not endpoint:
        raise CredentialError(
            "no Batch account: set spec.account.endpoint (and credentialsSecretRef), or start the operator with "
            "--batch-endpoint / BATCHOP_BATCH_ENDPOINT",
            cond.REASON_ACCOUNT_NOT_CONFIGURED,
        )
    ref = account.get("credentialsSecretRef") or {}
    secret_name = ref.get("name") if isinstance(ref, Mapping) else None
    if secret_name:
        found = await secrets.get(namespace, str(secret_name))
        if found is None:
            raise CredentialError(
                f"Secret {namespace}/{secret_name} (spec.account.credentialsSecretRef) not found: create it with keys "
                "accountName and accountKey, or remove credentialsSecretRef to use Entra ID"
            )
        data, version = found
        name = data.get("accountName") or account_from_endpoint(endpoint)
        key = data.get("accountKey") or None
        if key and not name:
            raise CredentialError(
                f"Secret {namespace}/{secret_name} has accountKey but no accountName: add the key accountName"
            )
        return AccountRef(endpoint, name, key, source=f"secret {namespace}/{secret_name}@{version}")
    same_as_default = (
        settings.batch_endpoint and endpoint.rstrip("/").lower() == settings.batch_endpoint.rstrip("/").lower()
    )
    if same_as_default and settings.batch_key:
        register_secret(settings.batch_key)
        return AccountRef(endpoint, settings.default_account, settings.batch_key, source="defaults")
    return AccountRef(endpoint, account_from_endpoint(endpoint), None, source="entra")


def make_credential(ref: AccountRef) -> Any:
    if ref.key:
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(ref.account_name or "", ref.key)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


class Accounts:
    """Gateways per credential, and per account endpoint the one the poller uses.

    Each distinct credential (endpoint, account, key) gets its own gateway, so one object with a wrong key
    in its Secret cannot break the others on the same account. The poller of an endpoint uses the
    *current* gateway: the first one created, then the last one a reconcile succeeded with
    (:meth:`promote`). A rotated key is a new credential: its gateway replaces the old one of the same
    source.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._gateways: dict[str, Gateway] = {}
        self._by_source: dict[tuple[str, str], str] = {}
        self._current: dict[str, str] = {}
        self._retired: list[Gateway] = []

    def limits(self) -> Limits:
        return Limits(
            max_concurrency=self.settings.max_concurrency,
            requests_per_second=self.settings.requests_per_second,
            burst=max(1, int(self.settings.requests_per_second)),
        )

    def gateway_for(self, ref: AccountRef) -> Gateway:
        found = self._gateways.get(ref.credential_id)
        if found is not None:
            return found
        gateway = Gateway(ref.endpoint, make_credential(ref), limits=self.limits())
        source = (ref.endpoint_key, ref.source.split("@", 1)[0])
        previous = self._by_source.get(source)
        if previous is not None and previous in self._gateways:
            log.info("credentials from %s for %s changed: using the new ones", source[1], ref.endpoint)
            old = self._gateways.pop(previous)
            gateway.stats = old.stats  # keep counting per account across rotations
            self._retired.append(old)
            if self._current.get(ref.endpoint_key) == previous:
                self._current[ref.endpoint_key] = ref.credential_id
        self._by_source[source] = ref.credential_id
        self._gateways[ref.credential_id] = gateway
        self._current.setdefault(ref.endpoint_key, ref.credential_id)
        return gateway

    def promote(self, ref: AccountRef) -> None:
        """Make ``ref``'s gateway the one the account's poller uses (it just worked)."""
        self.gateway_for(ref)
        self._current[ref.endpoint_key] = ref.credential_id

    def current(self, endpoint_key: str) -> Gateway | None:
        credential_id = self._current.get(endpoint_key)
        return self._gateways.get(credential_id) if credential_id else None

    def endpoints(self) -> list[str]:
        return list(self._current)

    async def close(self) -> None:
        for gateway in list(self._gateways.values()) + self._retired:
            await gateway.close()
