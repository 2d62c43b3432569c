"""Workload identity, the fast parts: the local Entra ID's federated token exchange (localbatch.tokens) with keys
given inline, and how the operator names each sign-in failure (batchop.batch.credentials.explain_sign_in).

The end-to-end proof with the real kube-apiserver, azure-identity and Azurite is
tests/integration/test_workload_identity.py."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from cryptography.hazmat.primitives.asymmetric import rsa

from batchop.api import conditions as cond
from batchop.batch import gateway
from batchop.batch.credentials import EntraCredential, SignInError, explain_sign_in
from localbatch.errors import BatchError
from localbatch.tokens import JWT_BEARER, FederatedCredential, TokenIssuer, object_id

ISSUER = "https://oidc.example.test/cluster"
SUBJECT = "system:serviceaccount:batchop-system:batchop"
CLIENT = "3f9e2b0c-1d4a-4e5f-8a6b-7c8d9e0f1a2b"
TENANT = "tenant-1"


def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: Any, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}


def assertion(key: Any, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": SUBJECT, "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now,
            "exp": now + 600, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def signing_key() -> Any:
    return rsa_key()


@pytest.fixture
def issuer(signing_key: Any) -> TokenIssuer:
    tokens = TokenIssuer(b"k" * 64, "https://127.0.0.1:1")
    tokens.add_federated_credential(FederatedCredential.from_json(
        {"clientId": CLIENT, "issuer": ISSUER, "subject": SUBJECT, "jwks": jwks(signing_key, "k1")}))
    return tokens


async def exchange(tokens: TokenIssuer, token: str, client: str = CLIENT,
                   scope: str = "https://batch.core.windows.net//.default") -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "client_credentials", "client_id": client, "scope": scope,
            "client_assertion_type": JWT_BEARER, "client_assertion": token}
    status, body = await tokens.token_response(TENANT, form)
    return status, dict(body)


async def test_workload_identity_exchange_issues_v1_shaped_tokens(issuer: TokenIssuer, signing_key: Any) -> None:
    status, body = await exchange(issuer, assertion(signing_key))
    assert status == 200, body
    assert issuer.verify(str(body["access_token"])) == f"bearer:{CLIENT}"
    status, body = await exchange(issuer, assertion(signing_key), scope="https://storage.azure.com/.default")
    claims = jwt.decode(str(body["access_token"]), options={"verify_signature": False})
    assert claims["aud"] == "https://storage.azure.com" and claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["oid"] == object_id(CLIENT) and claims["tid"] == TENANT and claims["appid"] == CLIENT
    first, _ = issuer.sign_ins
    assert first["grant"] == "federated" and first["subject"] == SUBJECT and first["status"] == 200


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"sub": "system:serviceaccount:other:batchop"}, 401, 700213),
        ({"aud": ["https://kubernetes.default.svc"]}, 401, 700212),
        ({"iss": "https://elsewhere.example.test"}, 401, 700211),
        ({"exp": int(time.time()) - 3600, "nbf": int(time.time()) - 4200}, 401, 700024),
        ({"client": "unknown-client"}, 400, 700016),
        ({"kid": "k9"}, 401, 7000272),
        ({"key": "other"}, 401, 7000274),
        ({"token": "not-a-jwt"}, 400, 50027),
    ],
)
async def test_workload_identity_refusals_carry_entra_codes_and_bodies(
    issuer: TokenIssuer, signing_key: Any, change: dict[str, Any], status: int, code: int
) -> None:
    change = dict(change)
    client = change.pop("client", CLIENT)
    key = rsa_key() if change.pop("key", None) else signing_key
    token = change.pop("token", None) or assertion(key, change.pop("kid", "k1"), **change)
    got, body = await exchange(issuer, token, client)
    assert got == status, body
    assert body["error_codes"] == [code]
    assert str(body["error_description"]).startswith(f"AADSTS{code}: ")
    assert "Trace ID: " in str(body["error_description"]) and body["error"] in ("invalid_client",
                                                                               "unauthorized_client", "invalid_request")
    assert issuer.sign_ins[-1]["error"] == f"AADSTS{code}"


async def test_workload_identity_client_secret_still_works_and_role_denial_is_403(issuer: TokenIssuer) -> None:
    import base64

    form = {"grant_type": "client_credentials", "client_id": "app", "scope": "s",
            "client_secret": base64.b64encode(b"k" * 64).decode()}
    status, body = await issuer.token_response(TENANT, form)
    assert status == 200
    issuer.update_settings({"clientsWithoutBatchRole": ["app"], "accessTokenLifetimeSeconds": 5})
    with pytest.raises(BatchError) as refused:
        issuer.verify(str(body["access_token"]))
    assert refused.value.code == "AuthorizationFailure" and refused.value.status == 403
    status, body = await issuer.token_response(TENANT, {**form, "client_secret": "wrong"})
    assert status == 401 and body["error_codes"] == [7000215]


def test_workload_identity_federated_credential_is_validated() -> None:
    with pytest.raises(ValueError, match="subject"):
        FederatedCredential.from_json({"clientId": "c", "issuer": ISSUER})
    with pytest.raises(ValueError, match="https"):
        FederatedCredential.from_json({"clientId": "c", "issuer": "http://x", "subject": "s"})
    assert FederatedCredential.from_json({"clientId": "c", "issuer": ISSUER, "subject": "s"}).audiences == (
        "api://AzureADTokenExchange",)


# -- the operator's side: sign-in failures named --------------------------------------------------------------

ENV = {"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT,
       "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"}


def dac_failure(line: str) -> ClientAuthenticationError:
    """What DefaultAzureCredential raises when WorkloadIdentityCredential fails (azure-identity's wording)."""
    return ClientAuthenticationError(
        message="DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
        "Attempted credentials:\n\tEnvironmentCredential: EnvironmentCredential authentication unavailable. "
        "Environment variables are not fully configured.\n"
        f"\tWorkloadIdentityCredential: {line}\n"
        "To mitigate this issue, please refer to the troubleshooting guidelines here at "
        "https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot."
    )


def entra(code: int, text: str) -> str:
    return (f"Microsoft Entra ID error '(invalid_client) AADSTS{code}: {text} Trace ID: {uuid.uuid4()} "
            f"Correlation ID: {uuid.uuid4()} Timestamp: 2026-01-01 00:00:00Z'")


@pytest.mark.parametrize(
    ("line", "reason", "says"),
    [
        (entra(700213, "No matching federated identity record found for presented assertion subject "
               "'system:serviceaccount:team:batchop'. Please check your federated identity credential Subject, "
               "Audience and Issuer against the presented assertion. https://learn.microsoft.com/x"),
         cond.REASON_FEDERATED_SUBJECT_MISMATCH,
         ["--subject system:serviceaccount:team:batchop", "serviceAccountName", "AADSTS700213"]),
        (entra(700212, "No matching federated identity record found for presented assertion audience "
               "'https://kubernetes.default.svc'. Please check your federated identity credential."),
         cond.REASON_FEDERATED_AUDIENCE_MISMATCH,
         ["audience https://kubernetes.default.svc", "api://AzureADTokenExchange", "azure.workload.identity/use"]),
        (entra(700211, "No matching federated identity record found for presented assertion issuer "
               "'https://oidc.example/'. Please check."),
         cond.REASON_FEDERATED_ISSUER_MISMATCH, ["https://oidc.example/", "oidcIssuerProfile.issuerUrl"]),
        (entra(70021, "No matching federated identity record found for presented assertion. Assertion Issuer: "
               "'https://i'. Assertion Subject: 'system:serviceaccount:a:b'. Assertion Audience: 'x'."),
         cond.REASON_FEDERATED_CREDENTIAL_MISMATCH, ["--subject system:serviceaccount:a:b"]),
        (entra(700024, "Client assertion is not within its valid time range. Current time: x."),
         cond.REASON_FEDERATED_TOKEN_EXPIRED, ["/var/run/secrets/azure/tokens/azure-identity-token", "kubelet"]),
        (entra(7000274, "Key was found, but use of the key to verify the signature failed."),
         cond.REASON_FEDERATED_TOKEN_INVALID, ["keys its issuer"]),
        (entra(700016, "Application with identifier 'x' was not found in the directory 'tenant-1'."),
         cond.REASON_IDENTITY_NOT_FOUND, [CLIENT, "az identity show", "azure.workload.identity/client-id"]),
        ("[Errno 2] No such file or directory: '/var/run/secrets/azure/tokens/azure-identity-token'",
         cond.REASON_FEDERATED_TOKEN_FILE_MISSING,
         ["/var/run/secrets/azure/tokens/azure-identity-token", 'azure.workload.identity/use: "true"']),
        ("WorkloadIdentityCredential authentication unavailable. The workload options are not fully configured.",
         cond.REASON_WORKLOAD_IDENTITY_NOT_CONFIGURED, ["manifests/overlays/aks-workload-identity"]),
        ("Cannot connect to host login.microsoftonline.com:443", cond.REASON_ENTRA_SIGN_IN_FAILED,
         ["Cannot connect to host"]),
    ],
)
def test_workload_identity_sign_in_failures_are_named(line: str, reason: str, says: list[str]) -> None:
    error = explain_sign_in(dac_failure(line), ENV)
    assert error.reason == reason
    assert not error.terminal and error.retry_after
    for fragment in says:
        assert fragment in error.message, (fragment, error.message)
    assert len(error.message) <= 1024, len(error.message)
    assert "Trace ID" not in error.message
    assert gateway.classify(error) is error  # the gateway passes it on unchanged


def test_workload_identity_file_missing_after_a_good_start_is_named() -> None:
    raw = FileNotFoundError(2, "No such file or directory")
    assert explain_sign_in(raw, ENV).reason == cond.REASON_FEDERATED_TOKEN_FILE_MISSING


async def test_workload_identity_credential_wraps_failures_and_is_closed_by_its_owner() -> None:
    class Failing:
        closed = False

        async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise dac_failure(entra(700212, "No matching federated identity record found for presented assertion "
                                    "audience 'a'."))

        async def close(self) -> None:
            Failing.closed = True

    credential = EntraCredential(ENV, factory=Failing)
    with pytest.raises(SignInError) as failed:
        await credential.get_token("https://batch.core.windows.net//.default")
    assert failed.value.reason == cond.REASON_FEDERATED_AUDIENCE_MISMATCH
    async with credential:
        pass
    assert not Failing.closed  # shared: a client's ``async with`` does not close it
    await credential.close()
    assert Failing.closed


def test_workload_identity_batch_403_without_role_is_named() -> None:
    from azure.core.exceptions import HttpResponseError

    class Response:
        status_code = 403
        reason = "Forbidden"
        headers: dict[str, str] = {}
        text = staticmethod(lambda: "")

        @staticmethod
        def json() -> dict[str, Any]:
            return {"code": "AuthorizationFailure",
                    "message": {"value": "This request is not authorized to perform this operation.\nRequestId:x"}}

    exc = HttpResponseError(message="Forbidden", response=Response())  # type: ignore[arg-type]
    err = gateway.classify(exc)
    assert err.reason == cond.REASON_BATCH_ROLE_MISSING and not err.terminal
    assert "az role assignment create" in err.message and "Azure Batch Job Submitter" in err.message
