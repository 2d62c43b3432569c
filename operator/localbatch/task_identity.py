"""How a task authenticates to the Batch API from its node (to add tasks, read its job), as in API 2025-06-01.

Until API 2024-07-01 a task could ask for ``authenticationTokenSettings: {access: ["job"]}`` and read a
job-scoped token from ``AZ_BATCH_AUTHENTICATION_TOKEN``. Azure retired that token on 30 September 2024 and
API 2025-06-01 has no such property (azure-batch 15.1.0: "Removed ``authentication_token_settings`` from
``BatchJobManagerTask``, ``BatchStartTask``, and ``BatchTask``"). What a task does now is use a Microsoft
Entra token of a managed identity of its pool: the node's Instance Metadata Service (IMDS,
``http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://batch.core.windows.net/``
with ``Metadata: true``) returns it, and the task sends it as ``Authorization: Bearer`` (the SDK:
``BatchClient(url, ManagedIdentityCredential(client_id=...))``). On Azure the pool must have a user-assigned
identity with a Batch role (set when the pool is created through Azure Resource Manager; the Batch data
plane's ``autoPoolSpecification`` cannot set one, so such a job names the pool with ``poolInfo.poolId``).

Locally every node has such an identity: the service serves an IMDS stand-in at
``<endpoint>/_emulator/imds/<node grant>/metadata/identity/oauth2/token`` and gives each task
``AZURE_POD_IDENTITY_AUTHORITY_HOST=<endpoint>/_emulator/imds/<node grant>`` (the variable azure-identity's
``ManagedIdentityCredential`` reads for an IMDS host other than 169.254.169.254; a script without it falls
back to the real IMDS address, so the same script runs on Azure). The token is accepted by the Batch API
as ``Bearer`` over plain HTTP too (locally; Azure is HTTPS only, and azure-core refuses a bearer token over
HTTP unless the call passes ``enforce_https=False``). Like a managed identity with a Batch role, it may call
any Batch operation of the account; it lives 24 hours (real time). Tokens are signed with a secret of the
running service: after a restart, tasks get new ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from localbatch.errors import BatchError

TOKEN_PREFIX = "lbmi."
BATCH_RESOURCE = "https://batch.core.windows.net/"
LIFETIME_SECONDS = 24 * 3600
IMDS_PATH = "/_emulator/imds/{grant}/metadata/identity/oauth2/token"
ENV_AUTHORITY = "AZURE_POD_IDENTITY_AUTHORITY_HOST"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class NodeIdentity:
    """Mints and checks the node identity grants (in IMDS URLs) and the bearer tokens they yield."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())

    def grant(self, pool_id: str, node_id: str) -> str:
        """The path segment that lets a node's tasks get tokens (like the IMDS only a VM can reach)."""
        subject = _b64(json.dumps({"pool": pool_id, "node": node_id}).encode())
        return f"{subject}.{self._sign('grant:' + subject)}"

    def authority_host(self, base_url: str, pool_id: str, node_id: str) -> str:
        return f"{base_url.rstrip('/')}/_emulator/imds/{self.grant(pool_id, node_id)}"

    def token(self, grant: str, resource: str) -> dict[str, str]:
        """The IMDS answer for ``grant`` (a ``ValueError`` when the grant is not one of ours)."""
        subject, _, signature = grant.partition(".")
        if not hmac.compare_digest(self._sign("grant:" + subject), signature):
            raise ValueError("unknown identity")
        if resource.rstrip("/") + "/" != BATCH_RESOURCE:
            raise LookupError(f"this identity only has a token for {BATCH_RESOURCE}, not {resource!r}")
        expires = int(time.time()) + LIFETIME_SECONDS
        payload = _b64(json.dumps({"sub": json.loads(_unb64(subject)), "exp": expires}).encode())
        access = f"{TOKEN_PREFIX}{payload}.{self._sign('token:' + payload)}"
        return {"access_token": access, "expires_in": str(LIFETIME_SECONDS), "expires_on": str(expires),
                "ext_expires_in": str(LIFETIME_SECONDS), "not_before": str(expires - LIFETIME_SECONDS),
                "resource": BATCH_RESOURCE, "token_type": "Bearer"}

    def verify(self, token: str) -> str:
        """The principal of a token (``node:<pool>/<node>``); 403 ``AuthenticationFailed`` when it is not valid."""
        payload, _, signature = token[len(TOKEN_PREFIX):].partition(".")
        if not hmac.compare_digest(self._sign("token:" + payload), signature):
            raise _fail("The node identity token's signature is not valid (issued by another run of the service?).")
        claims: dict[str, Any] = json.loads(_unb64(payload))
        if int(claims.get("exp", 0)) < time.time():
            raise _fail("The node identity token has expired: get a new one from the node's identity endpoint.")
        sub = claims.get("sub") or {}
        return f"node:{sub.get('pool')}/{sub.get('node')}"


def is_node_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer lbmi.…`` header, else None."""
    scheme, _, credential = headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    return credential if scheme == "Bearer" and credential.startswith(TOKEN_PREFIX) else None


def _fail(detail: str) -> BatchError:
    return BatchError("AuthenticationFailed", [("AuthenticationErrorDetail", detail)])
