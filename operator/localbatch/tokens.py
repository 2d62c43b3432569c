"""Entra ID as far as batchop needs it: a token endpoint, the bearer-token check of the Batch API, role denial.

The service (over TLS only) exposes an OpenID Connect discovery document and an OAuth 2.0 token endpoint under
``/{tenant}/`` (``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/oauth2/v2.0/token``), which is
what ``azure-identity`` needs with ``authority`` / ``AZURE_AUTHORITY_HOST`` pointing at the service. The token
endpoint takes the client-credentials grant in two forms:

- **client secret**: ``client_secret`` equal to the account key (any client id and tenant);
- **federated assertion** (workload identity, what ``WorkloadIdentityCredential`` sends):
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and ``client_assertion`` = a
  JWT from another issuer (on AKS: the projected ServiceAccount token). It is accepted only against a federated
  identity credential registered for the client id (``POST /_emulator/federated-credentials {"clientId",
  "issuer", "subject", "audience"}``, what ``az identity federated-credential create`` sets up in Azure), and is
  checked in Entra's order, each refusal with Entra's code and body:

  1. the client id has federated credentials, else ``AADSTS700016`` (no such application);
  2. one of them names the assertion's ``iss``, else ``AADSTS700211``;
  3. the signature verifies with a key the issuer publishes: ``{iss}/.well-known/openid-configuration`` ->
     ``jwks_uri`` (fetched over HTTPS, trusting what ``SSL_CERT_FILE`` names; cached, fetched again for an
     unknown key id), or the ``jwks`` registered with the credential; ``AADSTS7000272`` for a key the issuer
     does not publish (or metadata that cannot be read), ``AADSTS7000274`` for a wrong signature,
     ``AADSTS50027`` for a malformed token;
  4. ``nbf`` and ``exp`` hold now, give or take 5 minutes (Entra's clock skew), else ``AADSTS700024``;
  5. a credential of that issuer names the assertion's ``sub``, else ``AADSTS700213``; and its audience is in the
     assertion's ``aud``, else ``AADSTS700212``.

Access tokens are shaped like the v1 tokens Entra issues for Azure Batch and Azure Storage: ``iss``
``https://sts.windows.net/{tenant}/``, ``aud`` the resource of the scope (``https://batch.core.windows.net/``,
``https://storage.azure.com``), ``appid``, ``oid``, ``tid``, ``ver`` 1.0; HS256 with the account key. That shape
is also what Azurite's OAuth mode accepts (it checks the issuer prefix and the audience, not the signature).
Their lifetime is one hour unless the admin API sets another (tests shorten it to exercise refresh).

The Batch API accepts a bearer token this service issued for the Batch audience; a client listed in
:attr:`TokenIssuer.clients_without_batch_role` gets 403 ``AuthorizationFailure`` instead, as an identity without
a Batch role assignment does in Azure. Every token request is kept in a short sign-in log (admin API).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from localbatch.errors import BatchError

AUDIENCES = ("https://batch.core.windows.net/", "https://batch.core.windows.net")
SCOPE = "https://batch.core.windows.net//.default"
LIFETIME_SECONDS = 3600
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
"""The audience ``az identity federated-credential create`` defaults to and the AKS webhook projects tokens for."""
CLOCK_SKEW_SECONDS = 300
"""How far outside ``nbf``/``exp`` an assertion is still accepted (the identity platform's default skew)."""
JWKS_TTL_SECONDS = 300.0
ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
FIC_HELP = (
    "Please check your federated identity credential Subject, Audience and Issuer against the presented "
    "assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
)
SIGN_IN_LOG_SIZE = 1000


class TokenError(Exception):
    """A token the service cannot accept (the message says why)."""


class EntraError(Exception):
    """A refused token request: HTTP status, OAuth ``error``, the AADSTS number and its description."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def body(self) -> dict[str, object]:
        """Entra's error body: ``error_description`` ends with trace id, correlation id and timestamp."""
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


def _invalid_client(code: int, description: str) -> EntraError:
    return EntraError(401, "invalid_client", code, description)


@dataclass(frozen=True)
class FederatedCredential:
    """One trust of a client id in tokens of another issuer (Entra's federated identity credential)."""

    client_id: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)
    name: str = ""
    jwks: Mapping[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FederatedCredential:
        """From the admin API's body; raises ValueError naming the missing or wrong field."""
        for name in ("clientId", "issuer", "subject"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"{name} is required (a non-empty string)")
        if urlsplit(data["issuer"]).scheme != "https":
            raise ValueError(f"issuer {data['issuer']!r} must be an https URL (an OpenID Connect issuer)")
        audiences = data.get("audiences") or [data.get("audience") or TOKEN_EXCHANGE_AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("audience must be a string (or audiences a list of strings)")
        jwks = data.get("jwks")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
            raise ValueError('jwks must be a JSON Web Key Set: {"keys": [...]}')
        return cls(data["clientId"], data["issuer"], data["subject"], tuple(audiences), str(data.get("name", "")),
                   jwks)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clientId": self.client_id, "issuer": self.issuer, "subject": self.subject,
                               "audiences": list(self.audiences), "name": self.name}
        if self.jwks is not None:
            out["jwks"] = dict(self.jwks)
        return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def resource_of(scope: str) -> str:
    """The audience of a token for ``scope`` (``X/.default`` -> ``X``); the Batch audience for anything else."""
    first = scope.split()[0] if scope.split() else ""
    if first.endswith("/.default"):
        return first[: -len("/.default")]
    return AUDIENCES[0]


def object_id(client_id: str) -> str:
    """The identity's object id: a stable UUID per client id (Azurite keys user delegation keys on it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"localbatch-identity:{client_id}"))


def _iso(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    except (TypeError, ValueError, OverflowError):
        return "(none)"


class TokenIssuer:
    """Issues and checks tokens (see the module docstring)."""

    def __init__(self, key: bytes, issuer_base: str, *, lifetime_seconds: int = LIFETIME_SECONDS) -> None:
        self._key = key
        self.issuer_base = issuer_base.rstrip("/")
        self.lifetime_seconds = lifetime_seconds
        self.federated: list[FederatedCredential] = []
        self.clients_without_batch_role: set[str] = set()
        self.sign_ins: deque[dict[str, Any]] = deque(maxlen=SIGN_IN_LOG_SIZE)
        self._jwks: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- configuration (admin API) -----------------------------------------------------------------------
    def add_federated_credential(self, credential: FederatedCredential) -> None:
        """Register ``credential``, replacing one of the same client id and name (or issuer and subject)."""
        self.federated = [
            c for c in self.federated
            if not (c.client_id == credential.client_id
                    and ((credential.name and c.name == credential.name)
                         or (c.issuer, c.subject) == (credential.issuer, credential.subject)))
        ]
        self.federated.append(credential)

    def remove_federated_credentials(self, client_id: str | None = None) -> int:
        before = len(self.federated)
        self.federated = [c for c in self.federated if client_id is not None and c.client_id != client_id]
        return before - len(self.federated)

    def settings_json(self) -> dict[str, Any]:
        return {
            "accessTokenLifetimeSeconds": self.lifetime_seconds,
            "clientsWithoutBatchRole": sorted(self.clients_without_batch_role),
            "federatedCredentials": [c.to_json() for c in self.federated],
            "signIns": list(self.sign_ins),
        }

    def update_settings(self, data: Mapping[str, Any]) -> None:
        """``accessTokenLifetimeSeconds`` (>= 1) and ``clientsWithoutBatchRole`` (a list of client ids)."""
        if "accessTokenLifetimeSeconds" in data:
            lifetime = int(data["accessTokenLifetimeSeconds"])
            if lifetime < 1:
                raise ValueError("accessTokenLifetimeSeconds must be at least 1")
            self.lifetime_seconds = lifetime
        if "clientsWithoutBatchRole" in data:
            clients = data["clientsWithoutBatchRole"]
            if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
                raise ValueError("clientsWithoutBatchRole must be a list of client ids")
            self.clients_without_batch_role = set(clients)

    # -- the token endpoint ------------------------------------------------------------------------------
    def check_client_secret(self, secret: str) -> bool:
        expected = base64.b64encode(self._key).decode("ascii")
        return hmac.compare_digest(secret.encode(), expected.encode())

    async def token_response(self, tenant: str, form: Mapping[str, str]) -> tuple[int, dict[str, object]]:
        """The token endpoint's answer (status, body) to a form-encoded request; every request is logged."""
        entry: dict[str, Any] = {"time": datetime.now(UTC).isoformat(), "tenant": tenant,
                                 "clientId": form.get("client_id", ""), "scope": form.get("scope", "")}
        try:
            body = await self._grant(tenant, form, entry)
        except EntraError as err:
            entry.update(status=err.status, error=f"AADSTS{err.code}")
            self.sign_ins.append(entry)
            return err.status, err.body()
        entry["status"] = 200
        self.sign_ins.append(entry)
        return 200, body

    async def _grant(self, tenant: str, form: Mapping[str, str], entry: dict[str, Any]) -> dict[str, object]:
        if form.get("grant_type") != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003,
                             "The app requested an unsupported grant type: only client_credentials is supported.")
        client_id, scope = form.get("client_id", ""), form.get("scope", "")
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != JWT_BEARER:
                raise EntraError(400, "invalid_request", 50027,
                                 f"client_assertion_type must be {JWT_BEARER}.")
            entry["grant"] = "federated"
            await self._check_assertion(tenant, client_id, form["client_assertion"], entry)
        elif form.get("client_secret"):
            entry["grant"] = "client_secret"
            if not self.check_client_secret(form["client_secret"]):
                raise _invalid_client(7000215, "Invalid client secret provided.")
        else:
            raise _invalid_client(7000218, "The request body must contain the following parameter: "
                                  "'client_assertion' or 'client_secret'.")
        return self.issue(tenant=tenant, client_id=client_id, scope=scope)

    async def _check_assertion(self, tenant: str, client_id: str, assertion: str, entry: dict[str, Any]) -> None:
        """Raise :class:`EntraError` unless ``assertion`` matches a federated credential of ``client_id``."""
        header, claims = _unverified(assertion)
        issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
        raw_audience = claims.get("aud")
        audiences = [str(a) for a in raw_audience] if isinstance(raw_audience, list) else [str(raw_audience or "")]
        entry.update(issuer=issuer, subject=subject, audiences=audiences, assertionIssuedAt=claims.get("iat"),
                     assertionExpiresAt=claims.get("exp"), assertionId=claims.get("jti"))
        mine = [c for c in self.federated if c.client_id == client_id]
        if not mine:
            raise EntraError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                             "This can happen if the application has not been installed by the administrator of the "
                             "tenant or consented to by any user in the tenant. You may have sent your "
                             "authentication request to the wrong tenant.")
        trusted = [c for c in mine if c.issuer == issuer]
        if not trusted:
            raise _invalid_client(700211, "No matching federated identity record found for presented assertion "
                                  f"issuer '{issuer}'. {FIC_HELP}")
        await self._check_signature(assertion, header, issuer, trusted)
        _check_lifetime(claims)
        by_subject = [c for c in trusted if c.subject == subject]
        if not by_subject:
            raise _invalid_client(700213, "No matching federated identity record found for presented assertion "
                                  f"subject '{subject}'. {FIC_HELP}")
        if not any(a in c.audiences for c in by_subject for a in audiences):
            shown = ", ".join(audiences)
            raise _invalid_client(700212, "No matching federated identity record found for presented assertion "
                                  f"audience '{shown}'. {FIC_HELP}")

    async def _check_signature(self, assertion: str, header: Mapping[str, Any], issuer: str,
                               trusted: list[FederatedCredential]) -> None:
        kid = str(header.get("kid", ""))
        algorithm = str(header.get("alg", ""))
        if algorithm not in ASSERTION_ALGORITHMS:
            raise EntraError(400, "invalid_request", 50027,
                             f"JWT token is invalid or malformed: the algorithm {algorithm!r} is not accepted.")
        configured = next((c.jwks for c in trusted if c.jwks is not None), None)
        keys = _key_set(configured) if configured is not None else await self._issuer_keys(issuer, kid)
        candidates = [keys[kid]] if kid in keys else ([] if kid else list(keys.values()))
        if not candidates:
            raise _invalid_client(7000272, f"The certificate with identifier {kid or '(none)'} used to sign the "
                                  f"federated credential could not be found in the metadata of identity provider "
                                  f"{issuer}. Please validate that your Identity Provider's metadata exposes the key "
                                  "used to sign the incoming token.")
        for key in candidates:
            try:
                jwt.PyJWS().decode(assertion, key=key, algorithms=[algorithm])
                return
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise EntraError(400, "invalid_request", 50027, f"JWT token is invalid or malformed: {exc}.") from None
        raise _invalid_client(7000274, "Key was found, but use of the key to verify the signature failed. "
                              f"Thumbprint of key used by client: '{kid}'.")

    async def _issuer_keys(self, issuer: str, kid: str) -> dict[str, Any]:
        """The issuer's published keys by key id: cached, fetched again when ``kid`` is unknown or stale."""
        cached = self._jwks.get(issuer)
        if cached is not None and time.monotonic() - cached[0] < JWKS_TTL_SECONDS and (not kid or kid in cached[1]):
            return cached[1]
        try:
            keys = await _fetch_keys(issuer)
        except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
            raise _invalid_client(7000272, f"The certificate with identifier {kid or '(none)'} used to sign the "
                                  f"federated credential could not be found in the metadata of identity provider "
                                  f"{issuer}: the metadata could not be read ({exc.__class__.__name__}: {exc}). "
                                  "Please validate that your Identity Provider's metadata exposes the key used to "
                                  "sign the incoming token.") from None
        self._jwks[issuer] = (time.monotonic(), keys)
        return keys

    # -- access tokens -----------------------------------------------------------------------------------
    def issue(self, *, tenant: str, client_id: str, scope: str) -> dict[str, object]:
        """A token response body (``token_type``, ``expires_in``, ``access_token``)."""
        now = int(time.time())
        oid = object_id(client_id)
        claims = {
            "aud": resource_of(scope),
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_seconds,
            "sub": client_id,
            "appid": client_id,
            "oid": oid,
            "tid": tenant,
            "idtyp": "app",
            "ver": "1.0",
            "jti": str(uuid.uuid4()),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return {
            "token_type": "Bearer",
            "expires_in": self.lifetime_seconds,
            "ext_expires_in": self.lifetime_seconds,
            "access_token": f"{header}.{payload}.{signature}",
        }

    def verify(self, token: str) -> str:
        """Return the token's subject; raise :class:`TokenError` if it is not one this service issued and valid,
        and 403 ``AuthorizationFailure`` (a :class:`~localbatch.errors.BatchError`) for an identity without a
        Batch role."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("The bearer token is not a JWT.")
        header, payload, signature = parts
        expected = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            raise TokenError("The bearer token's signature is invalid: it was not issued by this service.")
        try:
            claims = json.loads(_unb64(payload))
        except ValueError:
            raise TokenError("The bearer token's payload is not JSON.") from None
        if claims.get("aud") not in AUDIENCES:
            raise TokenError(f"The bearer token's audience {claims.get('aud')!r} is not {AUDIENCES[0]}.")
        if int(claims.get("exp", 0)) < time.time():
            raise TokenError("The bearer token has expired.")
        if claims.get("appid") in self.clients_without_batch_role:
            raise BatchError("AuthorizationFailure", status=403,
                             message="This request is not authorized to perform this operation.")
        return f"bearer:{claims.get('sub', '')}"

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        base = f"{self.issuer_base}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "token"],
            "grant_types_supported": ["client_credentials"],
            "tenant_region_scope": "local",
        }


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWT before any check; ``AADSTS50027`` when it is not one."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise EntraError(400, "invalid_request", 50027, f"JWT token is invalid or malformed: {exc}.") from None
    if not isinstance(claims, dict):
        raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
    return dict(header), claims


def _check_lifetime(claims: Mapping[str, Any]) -> None:
    now = time.time()
    try:
        expires, not_before = float(claims.get("exp", 0)), float(claims.get("nbf", 0))
    except (TypeError, ValueError):
        expires, not_before = 0.0, 0.0
    if expires + CLOCK_SKEW_SECONDS < now or not_before - CLOCK_SKEW_SECONDS > now:
        raise _invalid_client(700024, "Client assertion is not within its valid time range. Current time: "
                              f"{_iso(now)}, assertion valid from {_iso(claims.get('nbf', 0))}, expiry time of "
                              f"assertion {_iso(claims.get('exp'))}. Review the documentation at "
                              "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .")


def _key_set(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """``{kid: PyJWK}`` of a JSON Web Key Set (keys of other types or uses are skipped)."""
    keys: dict[str, Any] = {}
    for index, item in enumerate(jwks.get("keys") or []):
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            keys[str(item.get("kid") or f"#{index}")] = jwt.PyJWK(item)
        except jwt.PyJWTError:
            continue
    return keys


async def _fetch_keys(issuer: str) -> dict[str, Any]:
    """The issuer's keys: its OpenID Connect discovery document names ``jwks_uri``; the document's ``issuer``
    must be the issuer asked for (OpenID Connect Discovery 4.3)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(issuer.rstrip("/") + "/.well-known/openid-configuration") as response:
            response.raise_for_status()
            document = await response.json(content_type=None)
        if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise ValueError(f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}")
        async with session.get(str(document["jwks_uri"])) as response:
            response.raise_for_status()
            jwks = await response.json(content_type=None)
    if not isinstance(jwks, dict):
        raise ValueError("the JSON Web Key Set is not an object")
    return _key_set(jwks)
