"""A minimal token issuer, so the service can stand in for Entra ID over TLS.

The service exposes an OpenID Connect discovery document and an OAuth 2.0 token endpoint under
``/{tenant}/`` (``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/oauth2/v2.0/token``),
enough for MSAL, hence ``azure-identity``'s ``ClientSecretCredential(tenant_id, client_id,
client_secret, authority="https://127.0.0.1:PORT", disable_instance_discovery=True)``. The
client-credentials grant succeeds when ``client_secret`` equals the account key (any client id and
tenant); the token is an HS256 JWT signed with the account key, audience
``https://batch.core.windows.net/``, valid one hour, which the Batch API then accepts as
``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

AUDIENCES = ("https://batch.core.windows.net/", "https://batch.core.windows.net")
SCOPE = "https://batch.core.windows.net//.default"
LIFETIME_SECONDS = 3600


class TokenError(Exception):
    """A token the service cannot accept (the message says why)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    def __init__(self, key: bytes, issuer_base: str) -> None:
        self._key = key
        self.issuer_base = issuer_base.rstrip("/")

    def check_client_secret(self, secret: str) -> bool:
        expected = base64.b64encode(self._key).decode("ascii")
        return hmac.compare_digest(secret.encode(), expected.encode())

    def issue(self, *, tenant: str, client_id: str, scope: str) -> dict[str, object]:
        """A token response body (``token_type``, ``expires_in``, ``access_token``)."""
        now = int(time.time())
        claims = {
            "aud": AUDIENCES[0],
            "iss": f"{self.issuer_base}/{tenant}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + LIFETIME_SECONDS,
            "sub": client_id,
            "appid": client_id,
            "tid": tenant,
            "scp": scope,
            "jti": str(uuid.uuid4()),
        }
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return {
            "token_type": "Bearer",
            "expires_in": LIFETIME_SECONDS,
            "ext_expires_in": LIFETIME_SECONDS,
            "access_token": f"{header}.{payload}.{signature}",
        }

    def verify(self, token: str) -> str:
        """Return the token's subject; raise :class:`TokenError` if it is not one this service issued and valid."""
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
        return f"bearer:{claims.get('sub', '')}"

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        base = f"{self.issuer_base}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "token"],
            "grant_types_supported": ["client_credentials"],
            "tenant_region_scope": "local",
        }
