"""SharedKey verification against the SDK's own signer (``azure.batch._patch.BatchSharedKeyAuthPolicy``)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from localbatch.auth import Authenticator
from localbatch.errors import BatchError
from localbatch.tokens import TokenIssuer

KEY = base64.b64encode(b"k" * 64).decode()


def signed(method: str, url: str, **kwargs: Any) -> tuple[str, str, dict[str, str]]:
    request = HttpRequest(method, url, **kwargs)
    BatchSharedKeyAuthPolicy(AzureNamedKeyCredential("acct", KEY)).on_request(
        PipelineRequest(request, PipelineContext(None))
    )
    parts = urlsplit(request.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return method, target, dict(request.headers)


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("GET", "http://h/jobschedules?api-version=2025-06-01&maxresults=5", {}),
        ("GET", "http://h/jobschedules?api-version=2025-06-01&%24filter=startswith%28id%2C%27a%20b%27%29", {}),
        ("GET", "http://h/jobs/sched%3Ajob-1?api-version=2025-06-01", {}),
        ("HEAD", "http://h/jobschedules/s1?api-version=2025-06-01", {}),
        ("POST", "http://h/jobschedules?api-version=2025-06-01", {"json": {"id": "s1"}}),
        ("POST", "http://h/jobschedules/s1/disable?api-version=2025-06-01", {}),
        ("DELETE", "http://h/jobschedules/s1?api-version=2025-06-01", {"headers": {"If-Match": '"0x1"'}}),
    ],
)
def test_sdk_signatures_verify(method: str, url: str, kwargs: dict[str, Any]) -> None:
    auth = Authenticator("acct", KEY)
    assert auth.verify(*signed(method, url, **kwargs)) == "sharedkey:acct"


def test_tampering_and_wrong_key_are_refused() -> None:
    method, target, headers = signed("GET", "http://h/jobschedules/s1?api-version=2025-06-01")
    auth = Authenticator("acct", KEY)
    for bad in (
        (method, target.replace("s1", "s2"), headers),
        ("DELETE", target, headers),
        (method, target + "&timeOut=5", headers),
        (method, target, {**headers, "If-Match": '"0x1"'}),
        (method, target, {k: v for k, v in headers.items() if k != "Authorization"}),
    ):
        with pytest.raises(BatchError) as info:
            auth.verify(*bad)
        assert info.value.code == "AuthenticationFailed" and info.value.status == 403
    with pytest.raises(BatchError):
        Authenticator("acct", base64.b64encode(b"z" * 64).decode()).verify(method, target, headers)
    with pytest.raises(BatchError):
        Authenticator("other", KEY).verify(method, target, headers)


def test_old_requests_are_refused() -> None:
    method, target, headers = signed(
        "GET", "http://h/jobschedules?api-version=2025-06-01", headers={"ocp-date": "Mon, 01 Jan 2024 00:00:00 GMT"}
    )
    with pytest.raises(BatchError) as info:
        Authenticator("acct", KEY).verify(method, target, headers)
    assert "too old" in info.value.values[0][1]


def test_bearer_tokens_are_only_those_issued() -> None:
    issuer = TokenIssuer(b"k" * 64, "https://127.0.0.1:1")
    auth = Authenticator("acct", KEY, tokens=issuer)
    token = issuer.issue(tenant="t", client_id="c", scope="s")["access_token"]
    assert auth.verify("GET", "/jobschedules", {"Authorization": f"Bearer {token}"}) == "bearer:c"
    other = TokenIssuer(b"x" * 64, "https://127.0.0.1:1").issue(tenant="t", client_id="c", scope="s")["access_token"]
    with pytest.raises(BatchError):
        auth.verify("GET", "/jobschedules", {"Authorization": f"Bearer {other}"})
    assert issuer.check_client_secret(KEY) and not issuer.check_client_secret("nope")


def test_colon_sent_unescaped_by_aiohttp_still_verifies() -> None:
    method, target, headers = signed("GET", "http://h/jobs/s1%3Ajob-1?api-version=2025-06-01")
    auth = Authenticator("acct", KEY)
    assert auth.verify(method, target.replace("%3A", ":"), headers) == "sharedkey:acct"
    with pytest.raises(BatchError):
        auth.verify(method, target.replace("%3Ajob-1", ":job-2"), headers)
