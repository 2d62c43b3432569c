"""Which Batch account an object uses, with which credential; and one gateway per account.

Most specific wins:

1. ``spec.account.credentialsSecretRef``: a Secret in the object's own namespace with keys
   ``accountName`` and ``accountKey`` (shared key). ``accountKey`` absent -> Entra ID.
2. ``spec.account.endpoint`` without a Secret: the operator-wide key if the endpoint is the operator's
   default endpoint, Entra ID otherwise.
3. No ``spec.account``: the operator-wide defaults (``BATCHOP_BATCH_ENDPOINT``, ``BATCHOP_BATCH_ACCOUNT``,
   ``BATCHOP_BATCH_KEY``), and Entra ID (``DefaultAzureCredential``: workload identity on AKS) when no key.

Rotation without restart: Secrets are re-read when the cached copy is older than
``secret_cache_seconds`` (default 10 s), and at once when Batch refuses a key read from one
(:meth:`SecretSource.reread`, at most once per :data:`REREAD_INTERVAL` per Secret): so a key regenerated in
Azure right after the Secret was switched to the other key costs no failed reconcile. A different key is a
new credential with its own gateway (:class:`Accounts`); the gateway of a key no Secret holds any more is
retired. Every key read is registered with :func:`batchwire.redact.register_secret` so it never appears in a
log, event or status.

Entra ID: the process has one :class:`EntraCredential` (``Accounts.entra``), shared by every Batch gateway
without a key and by the user-delegation SAS of Blob storage. It is ``DefaultAzureCredential`` unchanged (on
AKS it finds ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and
``AZURE_AUTHORITY_HOST`` from the workload identity webhook and signs in with ``WorkloadIdentityCredential``,
re-reading the projected token file as kubelet refreshes it), with one addition: a failed sign-in raises a
:class:`SignInError` whose reason and message say what to fix in Azure or in the manifests
(:func:`explain_sign_in`), instead of an error that reads as if Batch had answered or as an outage.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.batch.gateway import BatchError, Gateway, Limits
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
        """Endpoint, account and a digest of the key (never the key): resources whose Secrets hold the same key
        share a gateway and a poller."""
        return f"{self.endpoint_key}|{self.account_name}|{_key_digest(self.key) if self.key else 'entra'}"

    @property
    def secret(self) -> tuple[str, str] | None:
        """Namespace and name of the Secret the key came from (None: operator defaults or Entra ID)."""
        if not self.source.startswith("secret "):
            return None
        namespace, _, name = self.source[len("secret "):].split("@", 1)[0].partition("/")
        return namespace, name


@functools.lru_cache(maxsize=256)
def _key_digest(key: str) -> str:
    """A short digest of an account key (asked for every resource each status cycle; the keys are few)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def endpoint_of(credential_id: str) -> str:
    """The account endpoint of an :attr:`AccountRef.credential_id`."""
    return credential_id.split("|", 1)[0]


class SecretReader(Protocol):
    """Reads one Secret: its decoded data and ``resourceVersion``, None when it does not exist
    (:meth:`batchop.kube.client.KubeClient.get_secret`)."""

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None: ...


REREAD_INTERVAL = 1.0
"""Seconds: a Secret whose key Batch refused is read again at once, at most once per this interval, so a burst
of refused requests costs one read per Secret, not one each."""


class SecretSource:
    """Reads Secrets with a short cache: ``get(ns, name) -> (data, resourceVersion) | None``."""

    def __init__(self, client: SecretReader, ttl: float = 10.0, reread_interval: float = REREAD_INTERVAL) -> None:
        self.client = client
        self.ttl = ttl
        self.reread_interval = reread_interval
        self._cache: dict[tuple[str, str], tuple[float, tuple[dict[str, str], str] | None]] = {}
        self._reread: dict[tuple[str, str], float] = {}  # when each Secret was last read because of a refusal

    async def get(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        hit = self._cache.get((namespace, name))
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return await self._read(namespace, name)

    async def reread(self, namespace: str, name: str) -> None:
        """Read the Secret now instead of when the cached copy expires (called when Batch refused its key),
        unless a refusal made it read within the last ``reread_interval`` seconds: that read already came after
        the key stopped working. Reads at the cache's own pace do not count, since one just before a rotation
        still holds the old key."""
        key = (namespace, name)
        now = time.monotonic()
        if now - self._reread.get(key, -self.reread_interval) >= self.reread_interval:
            self._reread[key] = now
            await self._read(namespace, name)

    async def _read(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        key = (namespace, name)
        now = time.monotonic()
        value = await self.client.get_secret(namespace, name)
        if value is not None:
            for secret_value in value[0].values():
                register_secret(secret_value)
        self._cache[key] = (now, value)
        return value


def account_inputs(namespace: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """What :func:`resolve` reads from a resource: two resources with equal inputs resolve to equal refs (the
    namespace counts only with a Secret, which it names)."""
    account = spec.get("account") or {}
    ref = account.get("credentialsSecretRef") or {}
    secret_name = ref.get("name") if isinstance(ref, Mapping) else None
    return (str(account.get("endpoint") or ""), namespace if secret_name else "", str(secret_name or ""))


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


SIGN_IN_RETRY_SECONDS = 30.0
"""Seconds before a resource whose sign-in failed is tried again: the fix is made in Azure or in the Pod, where
the operator cannot watch for it."""

_SUBJECT_FIX = (
    "Fix in Azure: az identity federated-credential create -g RG --identity-name IDENTITY --name batchop "
    '--issuer "$(az aks show -g RG -n CLUSTER --query oidcIssuerProfile.issuerUrl -o tsv)" --subject {subject} '
    "--audiences api://AzureADTokenExchange; or in the manifests: run the operator under the ServiceAccount the "
    "credential names (Deployment serviceAccountName and namespace)"
)
_WEBHOOK = (
    'the AKS workload identity webhook projects it into Pods labelled azure.workload.identity/use: "true" whose '
    "ServiceAccount is annotated azure.workload.identity/client-id (manifests/overlays/aks-workload-identity)"
)


@dataclass(frozen=True)
class _Explanation:
    """A sign-in failure as the condition shows it: the reason and a message template (fields: ``client_id``,
    ``tenant_id``, ``token_file``, ``issuer``, ``subject``, ``audience``, ``detail``)."""

    reason: str
    text: str


_BY_CODE: dict[str, _Explanation] = {
    "700213": _Explanation(
        cond.REASON_FEDERATED_SUBJECT_MISMATCH,
        "Entra ID refused the ServiceAccount token: no federated identity credential of client {client_id} names "
        "the subject {subject}. " + _SUBJECT_FIX,
    ),
    "700212": _Explanation(
        cond.REASON_FEDERATED_AUDIENCE_MISMATCH,
        "Entra ID refused the ServiceAccount token: its audience {audience} is not the one the federated identity "
        "credential of client {client_id} accepts (api://AzureADTokenExchange). The file {token_file} must hold a "
        "token for api://AzureADTokenExchange: " + _WEBHOOK + "; a volume mounted by hand needs "
        "serviceAccountToken.audience: api://AzureADTokenExchange. Or fix the credential's --audiences in Azure",
    ),
    "700211": _Explanation(
        cond.REASON_FEDERATED_ISSUER_MISMATCH,
        "Entra ID refused the ServiceAccount token: no federated identity credential of client {client_id} trusts "
        "its issuer {issuer}. Fix in Azure: create the credential with --issuer set to this cluster's OIDC issuer "
        "(az aks show -g RG -n CLUSTER --query oidcIssuerProfile.issuerUrl -o tsv; az aks update "
        "--enable-oidc-issuer turns it on)",
    ),
    "70021": _Explanation(
        cond.REASON_FEDERATED_CREDENTIAL_MISMATCH,
        "Entra ID refused the ServiceAccount token: no federated identity credential of client {client_id} matches "
        "its issuer, subject and audience. " + _SUBJECT_FIX,
    ),
    "700024": _Explanation(
        cond.REASON_FEDERATED_TOKEN_EXPIRED,
        "Entra ID refused the ServiceAccount token in {token_file}: it is not within its valid time range. The file "
        "must be a projected token that kubelet keeps fresh (" + _WEBHOOK + "); a copied token expires. Also check "
        "the node's clock",
    ),
    "700016": _Explanation(
        cond.REASON_IDENTITY_NOT_FOUND,
        "Entra ID knows no identity with client id {client_id} in tenant {tenant_id}: set the ServiceAccount "
        "annotation azure.workload.identity/client-id to the managed identity's client id (az identity show -g RG "
        "-n IDENTITY --query clientId -o tsv) and restart the operator's Pod",
    ),
}
_INVALID_TOKEN = _Explanation(
    cond.REASON_FEDERATED_TOKEN_INVALID,
    "Entra ID could not verify the ServiceAccount token in {token_file} with the keys its issuer {issuer} publishes: "
    "the federated identity credential must name this cluster's OIDC issuer, and the token must come from this "
    "cluster (" + _WEBHOOK + ")",
)
for _code in ("7000272", "7000274", "50027", "700027"):
    _BY_CODE[_code] = _INVALID_TOKEN
_FILE_MISSING = _Explanation(
    cond.REASON_FEDERATED_TOKEN_FILE_MISSING,
    "the federated token file {token_file} (AZURE_FEDERATED_TOKEN_FILE) does not exist: " + _WEBHOOK + ". Check "
    "the label and the annotation, that the cluster has workload identity enabled (az aks update -g RG -n CLUSTER "
    "--enable-workload-identity), and restart the Pod",
)
_NOT_CONFIGURED = _Explanation(
    cond.REASON_WORKLOAD_IDENTITY_NOT_CONFIGURED,
    "no Entra ID credential is configured and the Batch account has no key here: on AKS apply "
    "manifests/overlays/aks-workload-identity (ServiceAccount annotation azure.workload.identity/client-id, Pod "
    'label azure.workload.identity/use: "true") so that the webhook sets AZURE_CLIENT_ID, AZURE_TENANT_ID and '
    "AZURE_FEDERATED_TOKEN_FILE; or give the account a key (spec.account.credentialsSecretRef)",
)
_OTHER = _Explanation(cond.REASON_ENTRA_SIGN_IN_FAILED, "Entra ID gave the operator no token: {detail}")

_AADSTS = re.compile(r"AADSTS(\d+)")
_DETAIL = re.compile(r"(AADSTS\d+:.*?)(?: Trace ID:|\\r|\\n|\r|\n|$)")
_CLAIMS = {
    "issuer": re.compile(r"(?:assertion issuer|Assertion Issuer:) '([^']*)'"),
    "subject": re.compile(r"(?:assertion subject|Assertion Subject:) '([^']*)'"),
    "audience": re.compile(r"(?:assertion audience|Assertion Audience:) '([^']*)'"),
}


class SignInError(BatchError):
    """Entra ID gave no token: ``reason`` and ``message`` name what to fix; retried after
    :data:`SIGN_IN_RETRY_SECONDS` (a :class:`~batchop.batch.gateway.BatchError`, so it reaches the condition
    through the gateway, the reconcile and the blob resolver unchanged)."""

    def __init__(self, message: str, reason: str, code: str | None = None) -> None:
        super().__init__(message, reason=reason, terminal=False, code=code, retry_after=SIGN_IN_RETRY_SECONDS)


def _explanation(exc: BaseException, text: str) -> tuple[_Explanation, str | None]:
    found = _AADSTS.search(text)
    if found:
        return _BY_CODE.get(found.group(1), _OTHER), f"AADSTS{found.group(1)}"
    if isinstance(exc, FileNotFoundError) or "[Errno 2]" in text:
        return _FILE_MISSING, None
    if "WorkloadIdentityCredential authentication unavailable" in text:
        return _NOT_CONFIGURED, None
    return _OTHER, None


def _first_failure(text: str) -> str:
    """What went wrong, from a ``DefaultAzureCredential`` message: the line of the credential that was tried
    (``WorkloadIdentityCredential: ...``), else the whole text on one line."""
    for line in text.splitlines():
        if line.strip().startswith(("WorkloadIdentityCredential:", "EnvironmentCredential:")) and (
            "unavailable" not in line
        ):
            return line.strip()[:600]
    return " ".join(text.split())[:600]


def explain_sign_in(exc: BaseException, environ: Mapping[str, str]) -> SignInError:
    """The :class:`SignInError` for a failure of ``DefaultAzureCredential`` (or of the credential it chose)."""
    text = str(getattr(exc, "message", None) or exc)
    explanation, code = _explanation(exc, text)
    detail = _DETAIL.search(text)
    fields = {name: (m.group(1) if (m := pattern.search(text)) else "(unknown)") for name, pattern in _CLAIMS.items()}
    fields.update(
        client_id=environ.get("AZURE_CLIENT_ID") or "(AZURE_CLIENT_ID not set)",
        tenant_id=environ.get("AZURE_TENANT_ID") or "(AZURE_TENANT_ID not set)",
        token_file=environ.get("AZURE_FEDERATED_TOKEN_FILE") or "(AZURE_FEDERATED_TOKEN_FILE not set)",
        detail=detail.group(1).strip() if detail else _first_failure(text),
    )
    message = explanation.text.format(**fields)
    if detail and explanation is not _OTHER:
        message += f". Entra ID said: {_first_sentences(detail.group(1))}"
    return SignInError(message, explanation.reason, code)


def _first_sentences(detail: str) -> str:
    """An AADSTS description without the generic advice and links Entra ID appends (the message above gives
    the specific fix, and a condition message has 1024 characters)."""
    for boilerplate in (" Please check your", " Check your", " Please validate", " Review the documentation",
                        " This can happen"):
        detail = detail.split(boilerplate, 1)[0]
    return detail.strip()


class EntraCredential:
    """The operator's one Entra ID credential: ``DefaultAzureCredential`` (created on first use), whose failures
    become :class:`SignInError` (see the module docstring). An async token credential for azure-core clients."""

    def __init__(self, environ: Mapping[str, str] | None = None, factory: Callable[[], Any] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._factory = factory
        self._inner: Any = None

    def _credential(self) -> Any:
        if self._inner is None:
            if self._factory is not None:
                self._inner = self._factory()
            else:
                from azure.identity.aio import DefaultAzureCredential

                self._inner = DefaultAzureCredential()
        return self._inner

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        try:
            return await self._credential().get_token(*scopes, **kwargs)
        except Exception as exc:
            raise explain_sign_in(exc, self._environ) from exc

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
            self._inner = None

    async def __aenter__(self) -> EntraCredential:
        return self

    async def __aexit__(self, *args: Any) -> None:
        """Nothing: the credential is shared by every client of the process; its owner (:class:`Accounts`)
        closes it."""


def make_credential(ref: AccountRef, entra: Any = None) -> Any:
    """The account's key, or ``entra`` (a new :class:`EntraCredential` when None) for Entra ID."""
    if ref.key:
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(ref.account_name or "", ref.key)
    return entra if entra is not None else EntraCredential()


class Accounts:
    """One gateway per credential (endpoint, account, key).

    Each distinct credential gets its own gateway, and each resource uses the gateway of its own credential
    (for its reconciles and in its poller), so one object with a wrong key in its Secret cannot break the
    others on the same account, nor be shown as healthy through someone else's key. Resources whose Secrets
    hold the same key share one gateway. A rotated key is a new credential: when no Secret (no credential
    *source*) holds the old one any more, its gateway is retired (closed with the others at the end, since
    requests may still be in flight on it).
    """

    def __init__(self, settings: Settings, entra: EntraCredential | None = None) -> None:
        self.settings = settings
        self.entra = entra if entra is not None else EntraCredential()
        """The process's Entra ID credential, for every gateway without a key (and for Blob storage)."""
        self._gateways: dict[str, Gateway] = {}
        self._by_source: dict[tuple[str, str], str] = {}
        self._retired: list[Gateway] = []

    def limits(self) -> Limits:
        return Limits(
            max_concurrency=self.settings.max_concurrency,
            requests_per_second=self.settings.requests_per_second,
            burst=max(1, int(self.settings.requests_per_second)),
        )

    def gateway_for(self, ref: AccountRef) -> Gateway:
        """The gateway of ``ref``'s credential (made on first use); retires the gateway of the credential its
        source held before, once no source holds that one."""
        source = (ref.endpoint_key, ref.source.split("@", 1)[0])
        previous = self._by_source.get(source)
        self._by_source[source] = ref.credential_id
        gateway = self._gateways.get(ref.credential_id)
        created = gateway is None
        if gateway is None:
            gateway = self._gateways[ref.credential_id] = Gateway(
                ref.endpoint, make_credential(ref, self.entra), limits=self.limits()
            )
        if previous is not None and previous != ref.credential_id:
            log.info("credentials from %s for %s changed: using the new ones", source[1], ref.endpoint)
            if previous not in self._by_source.values() and previous in self._gateways:
                old = self._gateways.pop(previous)
                if created:
                    gateway.stats = old.stats  # a rotation: keep counting where the old key left off
                self._retired.append(old)
        return gateway

    def gateway(self, credential_id: str) -> Gateway | None:
        """The gateway of a credential in use, None when none (or retired)."""
        return self._gateways.get(credential_id)

    async def close(self) -> None:
        for gateway in list(self._gateways.values()) + self._retired:
            await gateway.close()
        await self.entra.close()
