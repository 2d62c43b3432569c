"""Error classification and request accounting of the Batch gateway."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from batchop.api import conditions as cond
from batchop.batch import gateway as gw


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self._body = body
        self.request = None
        self.content_type = "application/json"

    def text(self, encoding: str | None = None) -> str:
        return json.dumps(self._body) if self._body is not None else ""

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no body")
        return self._body

    def body(self) -> bytes:
        return self.text().encode()


def batch_error(code: str, message: str, values: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "odata.metadata": "https://x/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": code,
        "message": {"lang": "en-US", "value": f"{message}\nRequestId:abc\nTime:2025-01-01T00:00:00Z"},
        "values": [{"key": k, "value": v} for k, v in values or []],
    }


def error(cls: type[HttpResponseError], status: int, body: dict[str, Any] | None, **headers: str) -> HttpResponseError:
    return cls(response=FakeResponse(status, body, headers))  # type: ignore[arg-type]


def test_400_is_terminal_and_names_the_rejected_property() -> None:
    exc = error(
        HttpResponseError,
        400,
        batch_error(
            "InvalidPropertyValue",
            "The value provided for one of the properties in the request body is invalid.",
            [
                ("PropertyName", "recurrenceInterval"),
                ("PropertyValue", "PT10S"),
                ("Reason", "must be at least 1 minute"),
            ],
        ),
    )
    err = gw.classify(exc)
    assert err.terminal and err.reason == cond.REASON_INVALID_SPEC
    assert err.code == "InvalidPropertyValue" and err.field == "recurrenceInterval"
    assert "recurrenceInterval" in err.message and "PT10S" in err.message and "at least 1 minute" in err.message
    assert "RequestId" not in err.message


def test_auth_failures_are_terminal() -> None:
    for exc in (
        error(ClientAuthenticationError, 401, None),
        error(HttpResponseError, 403, batch_error("AuthenticationFailed", "Server failed to authenticate")),
    ):
        err = gw.classify(exc)
        assert err.terminal and err.reason == cond.REASON_AUTHENTICATION_FAILED
        assert "Secret" in err.message


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (429, "TooManyRequests", cond.REASON_THROTTLED),
        (503, "ServerBusy", cond.REASON_BATCH_UNAVAILABLE),
        (500, "InternalError", cond.REASON_BATCH_UNAVAILABLE),
        (412, "ConditionNotMet", cond.REASON_CONFLICT),
        (409, "JobScheduleBeingDeleted", cond.REASON_CONFLICT),
        (409, "ActiveJobAndScheduleQuotaReached", cond.REASON_ACTIVE_JOB_QUOTA),  # its own reason, retried
        (404, "JobScheduleNotFound", cond.REASON_NOT_FOUND),
    ],
)
def test_recoverable_errors(status: int, code: str, reason: str) -> None:
    cls = {404: ResourceNotFoundError, 409: ResourceExistsError}.get(status, HttpResponseError)
    err = gw.classify(error(cls, status, batch_error(code, "m"), **{"Retry-After": "7"}))
    assert not err.terminal and err.reason == reason and err.code == code
    if status in (429, 503, 500):
        assert err.retry_after == 7


def test_exists_keeps_its_code_for_the_ownership_check() -> None:
    err = gw.classify(error(ResourceExistsError, 409, batch_error("JobScheduleExists", "exists")))
    assert err.code == "JobScheduleExists" and not err.terminal


def test_connection_errors_and_timeouts_are_unavailable() -> None:
    for exc in (ServiceRequestError("refused"), TimeoutError(), ConnectionResetError()):
        err = gw.classify(exc)
        assert err.reason == cond.REASON_BATCH_UNAVAILABLE and not err.terminal


def test_messages_are_redacted() -> None:
    from batchwire.redact import register_secret

    register_secret("c2VjcmV0LWtleS12YWx1ZQ==")
    err = gw.classify(
        error(
            HttpResponseError,
            400,
            batch_error(
                "InvalidPropertyValue",
                "bad url https://a.blob.core.windows.net/c?sv=1&sig=abcdef c2VjcmV0LWtleS12YWx1ZQ==",
            ),
        )
    )
    assert "abcdef" not in str(err) and "c2VjcmV0LWtleS12YWx1ZQ==" not in str(err)


async def test_token_bucket_limits_rate() -> None:
    bucket = gw.TokenBucket(rate=50, burst=1)
    start = time.monotonic()
    for _ in range(6):
        await bucket.acquire()
    assert time.monotonic() - start >= 0.09  # 5 waits of 20 ms


class SlowClient:
    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def send_request(self, request: Any, **kwargs: Any) -> Any:
        assert request.method == "GET" and request.url.startswith("/jobschedules/")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        raise error(ResourceNotFoundError, 404, batch_error("JobScheduleNotFound", "nope"))

    async def close(self) -> None:
        pass


async def test_concurrency_limit_and_404_as_none() -> None:
    client = SlowClient()
    gateway = gw.Gateway(
        "https://acct.region.batch.azure.com",
        None,
        limits=gw.Limits(max_concurrency=2, requests_per_second=0),
        client=client,
    )
    results = await asyncio.gather(*(gateway.get_schedule(f"s{i}") for i in range(8)))
    assert results == [None] * 8
    assert client.peak == 2
    assert gateway.stats.requests["get_schedule"] == 8
    assert gateway.stats.errors[cond.REASON_NOT_FOUND] == 8


def test_accounts_give_each_credential_its_gateway_and_retire_a_rotated_key() -> None:
    from batchop.batch.credentials import AccountRef, Accounts
    from batchop.batch.settings import Settings

    accounts = Accounts(Settings())
    endpoint = "https://acct.westeurope.batch.azure.com"
    good = AccountRef(endpoint, "acct", "a2V5LW9uZQ==", source="defaults")
    bad = AccountRef(endpoint, "acct", "d3Jvbmcta2V5", source="secret team/creds@1")
    same_key = AccountRef(endpoint, "acct", "a2V5LW9uZQ==", source="secret other/creds@7")
    first = accounts.gateway_for(good)
    other = accounts.gateway_for(bad)
    assert other is not first  # a wrong key elsewhere does not touch the good key's gateway
    assert accounts.gateway_for(same_key) is first, "two Secrets holding one key share its gateway"
    rotated = AccountRef(endpoint, "acct", "a2V5LXR3bw==", source="secret team/creds@2")
    replaced = accounts.gateway_for(rotated)
    assert replaced is not other and accounts.gateway_for(rotated) is replaced
    assert accounts.gateway(bad.credential_id) is None, "no Secret holds the old key: its gateway is retired"
    moved = AccountRef(endpoint, "acct", "a2V5LXR3bw==", source="secret other/creds@8")
    assert accounts.gateway_for(moved) is replaced
    assert accounts.gateway(good.credential_id) is first, "the defaults still hold the first key"


class DownClient:
    """An account that cannot be reached, then comes back."""

    def __init__(self) -> None:
        self.up = False
        self.sent = 0

    async def send_request(self, request: Any, **kwargs: Any) -> Any:
        self.sent += 1
        if not self.up:
            from azure.core.exceptions import ServiceRequestError

            raise ServiceRequestError("Cannot connect to host 127.0.0.1:1 [Connection refused]")
        raise error(ResourceNotFoundError, 404, batch_error("JobScheduleNotFound", "nope"))

    async def close(self) -> None:
        pass


async def test_breaker_fails_fast_while_unreachable_and_closes_on_an_answer() -> None:
    now = [0.0]
    client = DownClient()
    gateway = gw.Gateway("https://acct.region.batch.azure.com", None,
                         limits=gw.Limits(requests_per_second=0), client=client)
    gateway.breaker.clock = lambda: now[0]
    for _ in range(3):  # three requests get no answer: the breaker opens
        with pytest.raises(gw.BatchError) as caught:
            await gateway.get_schedule("s")
        assert caught.value.reason == cond.REASON_BATCH_UNAVAILABLE
    for _ in range(20):  # then nothing is sent, and each caller learns it at once
        with pytest.raises(gw.BatchError) as caught:
            await gateway.get_schedule("s")
        assert "unreachable" in caught.value.message and not caught.value.terminal
    assert client.sent == 3
    now[0] = 6.0  # after the cooldown one probe goes out; it fails: open again, cooldown doubled
    with pytest.raises(gw.BatchError):
        await gateway.get_schedule("s")
    assert client.sent == 4 and gateway.breaker.current_cooldown == 10.0
    now[0] = 17.0
    client.up = True  # Batch is back: the probe gets an answer (a 404 is one), the breaker closes
    assert await gateway.get_schedule("s") is None
    assert gateway.breaker.state == "closed"
    assert await gateway.get_schedule("s") is None and client.sent == 6


async def test_http_errors_never_open_the_breaker() -> None:
    client = SlowClient()  # answers 404 every time
    gateway = gw.Gateway("https://acct.region.batch.azure.com", None,
                         limits=gw.Limits(requests_per_second=0), client=client)
    for _ in range(10):
        assert await gateway.get_schedule("s") is None
    assert gateway.breaker.state == "closed"


class JsonClient:
    """Answers every GET with a JSON page whose decoding records whether the garbage collector ran."""

    def __init__(self, fail: bool = False) -> None:
        self.collector_during_decode: list[bool] = []
        self.fail = fail

    async def send_request(self, request: Any, **kwargs: Any) -> Any:
        client = self
        assert kwargs.get("stream") is True, "sent as a stream: the pipeline must not decode it too"

        class Response:
            headers = {"ETag": "0x1"}

            async def read(self) -> bytes:
                return b"{}"

            def raise_for_status(self) -> None:
                return None

            def json(self) -> dict[str, Any]:
                import gc

                client.collector_during_decode.append(gc.isenabled())
                if client.fail:
                    raise ValueError("not JSON")
                return {"id": "s", "eTag": "0x1"}

        return Response()

    async def close(self) -> None:
        pass


async def test_pages_are_decoded_with_the_collector_paused_and_it_runs_again_after() -> None:
    import gc

    assert gc.isenabled()
    client = JsonClient()
    gateway = gw.Gateway("https://acct.region.batch.azure.com", None, limits=gw.Limits(requests_per_second=0),
                         client=client)
    assert await gateway.get_schedule("s") == ({"id": "s", "eTag": "0x1"}, "0x1")
    assert client.collector_during_decode == [False] and gc.isenabled()
    client.fail = True
    with pytest.raises(gw.BatchError):
        await gateway.get_schedule("s")
    assert gc.isenabled(), "a decoding error leaves the collector running"
