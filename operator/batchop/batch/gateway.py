"""The Batch gateway: every request the operator sends to one Azure Batch account goes through here.

One :class:`Gateway` wraps one ``azure.batch.aio.BatchClient`` (the unmodified SDK) and adds what the
operator needs around it:

- a per-account concurrency limit (a semaphore) and a request-rate limit (a token bucket), so that many
  objects reconciled at once never flood one account;
- azure-core's own retry policy, configured: 408/429/500/502/503/504 and connection errors retried with
  exponential backoff, ``Retry-After`` honoured; every response seen is counted by status code, and 429s
  are counted as throttles (:attr:`Gateway.stats`);
- error classification (:func:`classify`): every failure becomes a :class:`BatchError` carrying the Azure
  error code, the property Azure rejected (from the error's ``values``), and whether it is terminal
  (the user must change something) or recoverable (retrying will help).

The gateway speaks plain wire-shaped ``dict`` objects (camelCase, as in the REST API) both ways, so the
reconciler and the poller never touch SDK model classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, SansIOHTTPPolicy

from batchop.api import conditions as cond
from batchop.batch import settings
from batchop.batch.breaker import Breaker, CircuitOpen
from batchop.observability import memory
from batchwire import API_VERSION
from batchwire.redact import redact

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 1000  # Batch's maximum maxresults

# Reasons (batchop.api.conditions) of failures that no retry mends: the spec, the credentials or the id must
# change. Every other failure is retried.
TERMINAL_REASONS = frozenset(
    {cond.REASON_INVALID_SPEC, cond.REASON_ALREADY_EXISTS, cond.REASON_AUTHENTICATION_FAILED, cond.REASON_FORBIDDEN}
)

# Keys Batch uses in an error's ``values`` to name what it refused.
_FIELD_KEYS = ("PropertyName", "propertyName", "FieldName", "ParameterName", "HeaderName", "QueryParameterName")


class BatchError(Exception):
    """A failed Batch request, classified.

    ``reason`` is the condition reason to show (``InvalidSpec``, ``Throttled``, ...); ``terminal`` says
    whether retrying can help; ``code`` is Azure's error code (``InvalidPropertyValue``); ``field`` the
    property Azure rejected when it said so; ``retry_after`` seconds when the service asked for a pause.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        terminal: bool,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        values: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(redact(message))
        self.message = redact(message)
        self.reason = reason
        self.terminal = terminal
        self.status = status
        self.code = code
        self.field = field
        self.values = dict(values or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


def _error_body(exc: HttpResponseError) -> dict[str, Any]:
    response: Any = exc.response  # an azure-core HTTP response, legacy or new: both have json() and headers
    if response is None:
        return {}
    try:
        body = response.json()
    except Exception:
        try:
            body = json.loads(response.text())
        except Exception:
            return {}
    return body if isinstance(body, dict) else {}


def _retry_after(exc: HttpResponseError) -> float | None:
    response: Any = exc.response
    if response is None:
        return None
    value = response.headers.get("Retry-After") if response.headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means no HTTP answer came back at all (refused, reset, timed out): an outage, as
    opposed to an error Batch answered with."""
    return isinstance(exc, ServiceRequestError | ServiceResponseError | asyncio.TimeoutError | OSError)


@dataclass(frozen=True)
class _Answer:
    """What Batch said in an error answer: status, error code, message and the ``values`` it named."""

    status: int | None
    code: str | None
    message: str
    values: dict[str, str]

    @classmethod
    def of(cls, exc: HttpResponseError) -> _Answer:
        body = _error_body(exc)
        code = body.get("code") or (exc.error.code if exc.error is not None else None)
        raw_message = body.get("message")
        if isinstance(raw_message, dict):
            raw_message = raw_message.get("value")
        message = str(raw_message or exc.message or exc.reason or "").split("\nRequestId:")[0].strip()
        values: dict[str, str] = {}
        for item in body.get("values") or []:
            if isinstance(item, dict) and "key" in item:
                values[str(item["key"])] = str(item.get("value", ""))
        if not values and exc.error is not None:
            for item in exc.error.details or []:
                if item.code:
                    values[item.code] = str(item.message or "")
        return cls(exc.status_code, code, message, values)

    @property
    def field(self) -> str | None:
        """The property Batch rejected, when it named one."""
        return next((self.values[k] for k in _FIELD_KEYS if self.values.get(k)), None)


@dataclass(frozen=True)
class _Rule:
    """How one kind of error answer reads: its reason, whether it is terminal, the message (``{code}``,
    ``{code_or_status}`` and ``{message}`` filled in), and whether the service's ``Retry-After`` applies."""

    reason: str
    terminal: bool
    text: str
    retry_after: bool = False

    def error(self, answer: _Answer, retry_after: float | None) -> BatchError:
        text = self.text.format(code=answer.code, code_or_status=answer.code or answer.status, message=answer.message)
        return BatchError(text, reason=self.reason, terminal=self.terminal, status=answer.status, code=answer.code,
                          field=answer.field, values=answer.values,
                          retry_after=retry_after if self.retry_after else None)


_AUTHENTICATION = _Rule(
    cond.REASON_AUTHENTICATION_FAILED, True,
    "Batch refused the credentials ({code_or_status}): {message}. Check the account name and key in the "
    "credentials Secret (or the workload identity's role assignment)",
)
_ROLE_MISSING = _Rule(
    cond.REASON_BATCH_ROLE_MISSING, False,
    "Batch refused the operator's Entra ID identity ({code}: {message}): it has no role on this Batch account that "
    "allows the request. Grant one in Azure: az role assignment create --assignee CLIENT_ID (the ServiceAccount's "
    'azure.workload.identity/client-id) --role "Azure Batch Job Submitter" --scope "$(az batch account show -g RG '
    '-n ACCOUNT --query id -o tsv)"; role assignments take a few minutes to apply, the operator retries',
)
_UNAVAILABLE = _Rule(
    cond.REASON_BATCH_UNAVAILABLE, False, "Batch is unavailable ({code_or_status}): {message}", retry_after=True
)
_OTHER = _Rule(cond.REASON_BATCH_ERROR, False, "Batch request failed ({code_or_status}): {message}")
_BY_STATUS = {
    403: _Rule(cond.REASON_FORBIDDEN, True, "Batch refused the request ({code}): {message}"),
    404: _Rule(cond.REASON_NOT_FOUND, False, "not found ({code}): {message}"),
    408: _UNAVAILABLE,
    412: _Rule(cond.REASON_CONFLICT, False, "the schedule changed meanwhile ({code}): {message}"),
    429: _Rule(cond.REASON_THROTTLED, False, "Batch is throttling requests ({code}): {message}", retry_after=True),
}
_SCHEDULE_EXISTS = _Rule(cond.REASON_ALREADY_EXISTS, False, "{code}: {message}")
_QUOTA = _Rule(cond.REASON_QUOTA_REACHED, False, "Batch quota reached ({code}): {message}")
_ACTIVE_JOB_QUOTA = _Rule(
    cond.REASON_ACTIVE_JOB_QUOTA, False,
    "the Batch account's quota of active jobs and job schedules is reached ({code}: {message}); the schedule is "
    "created when room appears (jobs or schedules complete or are deleted) or when the quota is raised",
)
_CONFLICT = _Rule(cond.REASON_CONFLICT, False, "Batch conflict ({code}): {message}")


def _rule(exc: HttpResponseError, answer: _Answer) -> _Rule:
    """The rule for an answer other than 400 (see :func:`classify`)."""
    status, code = answer.status, answer.code
    if status == 401 or isinstance(exc, ClientAuthenticationError) or code == "AuthenticationFailed":
        return _AUTHENTICATION
    if status == 403 and code == "AuthorizationFailure":  # a bearer token without a Batch role assignment
        return _ROLE_MISSING
    if code == cond.REASON_ACTIVE_JOB_QUOTA:  # Azure's error code, kept as the reason
        return _ACTIVE_JOB_QUOTA
    if status == 409:
        if code == "JobScheduleExists":
            return _SCHEDULE_EXISTS
        return _QUOTA if code and "Quota" in code else _CONFLICT
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return _UNAVAILABLE if status is not None and status >= 500 else _OTHER


def _invalid_spec(answer: _Answer) -> BatchError:
    """A 400: what Batch refused, by property (and value) when it said so."""
    values, field_name = answer.values, answer.field
    reason_text = values.get("Reason") or values.get("reason")
    text = f"Batch rejected the request ({answer.code})"
    if field_name:
        text += f": property '{field_name}'"
        if "PropertyValue" in values:
            text += f" value {values['PropertyValue']!r}"
    text += f": {answer.message}" if answer.message else ""
    if reason_text and reason_text not in text:
        text += f" ({reason_text})"
    return BatchError(text, reason=cond.REASON_INVALID_SPEC, terminal=True, status=answer.status, code=answer.code,
                      field=field_name, values=values)


def classify(exc: BaseException) -> BatchError:
    """Turn any exception from the SDK into a :class:`BatchError` with reason and terminality.

    - 400 -> terminal ``InvalidSpec``, naming the rejected property from the error's ``values``;
    - 401 / 403 ``AuthenticationFailed`` -> terminal ``AuthenticationFailed``; 403 ``AuthorizationFailure`` (an
      Entra ID identity without a Batch role) -> ``BatchRoleMissing``, retried; other 403 -> ``Forbidden``;
    - 404 -> ``NotFound`` (recoverable: callers decide what absence means);
    - 409 ``JobScheduleExists`` -> ``AlreadyExists`` (callers check ownership first),
      quota codes -> ``QuotaReached``, other 409s -> ``Conflict`` (recoverable);
    - 412 -> ``Conflict`` (the ETag moved: re-read and retry);
    - 429 -> ``Throttled``; 5xx, timeouts and connection errors -> ``BatchUnavailable``.
    """
    if isinstance(exc, BatchError):
        return exc
    if unreachable(exc):
        return BatchError(f"Batch is unreachable: {exc}", reason=cond.REASON_BATCH_UNAVAILABLE, terminal=False)
    if not isinstance(exc, HttpResponseError):
        if isinstance(exc, AzureError):
            return BatchError(f"Batch request failed: {exc}", reason=cond.REASON_BATCH_UNAVAILABLE, terminal=False)
        return BatchError(f"unexpected error talking to Batch: {exc!r}", reason=cond.REASON_BATCH_ERROR, terminal=False)
    answer = _Answer.of(exc)
    if answer.status == 400:
        return _invalid_spec(answer)
    return _rule(exc, answer).error(answer, _retry_after(exc))


class Fenced(BatchError):
    """A Batch write refused before it was sent: this replica no longer holds the Lease of the resource's shard
    (:data:`WRITE_FENCE`). Recoverable: the replica that holds the Lease reconciles instead."""


WRITE_FENCE: contextvars.ContextVar[Callable[[], str | None] | None] = contextvars.ContextVar(
    "batchop_write_fence", default=None
)
"""The write fence of the controller running in this context (set by the controller's supervisor before it
starts reconciling; inherited by every task it starts). Called before *every HTTP attempt* that is not a GET
(create, patch, enable, disable, terminate, delete, job create/delete), retries included: None lets the
request go, a string refuses it with :class:`Fenced`. Unset (standalone mode): no fence. The batch layer
only calls it; what a valid Lease is belongs to the controller."""


class FencePolicy(SansIOHTTPPolicy):
    """Checks :data:`WRITE_FENCE` right before each write attempt leaves the process (per-retry policy)."""

    def on_request(self, request: Any) -> None:
        fence = WRITE_FENCE.get()
        if fence is None or request.http_request.method in ("GET", "HEAD"):
            return
        refused = fence()
        if refused is not None:
            raise Fenced(
                f"Batch write not sent: {refused}", reason=cond.REASON_KUBERNETES_UNAVAILABLE, terminal=False,
                retry_after=5.0,
            )


class ErrorBodyPolicy(AsyncHTTPPolicy):
    """Reads the body of an error answer to a request sent as a stream, before the Batch SDK's exception policy
    (outside the retries) builds its error from it: without it Batch's error code and message were lost for
    streamed requests (the gateway's listings and reads, file downloads)."""

    async def send(self, request: Any) -> Any:
        response = await self.next.send(request)
        http_response = response.http_response
        if http_response.status_code >= 400:
            with contextlib.suppress(Exception):
                await http_response.read()
        return response


class TokenBucket:
    """A simple asyncio token bucket: ``rate`` tokens per second, up to ``burst`` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass
class GatewayStats:
    """Counters of one gateway: requests by operation, responses by HTTP status, throttles, errors."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    throttled: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def total_requests(self) -> int:
        return sum(self.responses.values())


@dataclass(frozen=True)
class Limits:
    """Per-account request limits (by default the operator's, :mod:`batchop.batch.settings`) and retry settings."""

    max_concurrency: int = settings.DEFAULTS.max_concurrency
    requests_per_second: float = settings.DEFAULTS.requests_per_second
    burst: int = int(settings.DEFAULTS.requests_per_second)
    retry_total: int = 4
    retry_backoff_factor: float = 0.8
    retry_backoff_max: float = 30.0
    connection_timeout: float = 10.0
    read_timeout: float = 30.0


def _encoded_path_transport() -> Any:
    """An aiohttp transport that sends the URL exactly as the SDK built and signed it.

    The SDK percent-encodes ``:`` in job ids (``/jobs/sched%3Ajob-1``) and signs that path (SharedKey);
    aiohttp's URL normalisation would send ``/jobs/sched:job-1`` instead, so the signature no longer
    matches what the service receives. Marking the URL as already encoded keeps the bytes signed.

    The environment is trusted (aiohttp's ``trust_env``) only when a proxy variable is set: with it on,
    aiohttp looks for credentials in ``~/.netrc`` on a worker thread before *every* request, which a profile
    of a burst of 10,000 creates put at about 6% of the operator's CPU (the hand-over to the thread and back).
    Batch requests carry their own ``Authorization``, so ``.netrc`` never applies to them; the proxy variables
    keep working.
    """
    import yarl
    from azure.core.pipeline.transport import AioHttpTransport

    class EncodedPathTransport(AioHttpTransport):
        async def send(self, request: Any, **config: Any) -> Any:
            url = request.url
            if isinstance(url, str) and "%" in url.split("?", 1)[0]:
                request.url = yarl.URL(url, encoded=True)
                try:
                    return await super().send(request, **config)
                finally:
                    request.url = url
            return await super().send(request, **config)

    return EncodedPathTransport(use_env_settings=_proxy_configured())


def _proxy_configured() -> bool:
    """Whether the environment names a proxy (``HTTP(S)_PROXY``, ``ALL_PROXY``, any case)."""
    return any(os.environ.get(name) or os.environ.get(name.lower())
               for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"))


def _with_query(url: str, params: Mapping[str, str], api_version: str) -> str:
    """``url`` (a path, or an absolute ``odata.nextLink``) with ``params`` and the client's ``api-version``
    added to its query (Batch's next links may leave the version out; the SDK re-adds it too), every value
    percent-encoded (a space as ``%20``, never ``+``)."""
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "api-version"]
    query += [*params.items(), ("api-version", api_version)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="$")))


async def _download(start: Callable[[], Any]) -> bytes:
    """The bytes of a file download the SDK ``start``s. The SDK raises a download's error before reading its
    body, so the body is read here for :func:`classify` (Batch's error code lives in it)."""
    try:
        stream = await start()
    except HttpResponseError as exc:
        response: Any = exc.response  # the aio transport's response: read() is a coroutine
        if response is not None:
            with contextlib.suppress(Exception):
                await response.read()
        raise
    return b"".join([chunk async for chunk in stream])


class Gateway:
    """All Batch calls for one account, rate-limited, retried and classified. See the module docstring."""

    def __init__(self, endpoint: str, credential: Any, *, limits: Limits | None = None, client: Any = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.limits = limits or Limits()
        self.stats = GatewayStats()
        self._semaphore = asyncio.Semaphore(self.limits.max_concurrency)
        self.breaker = Breaker()  # fail fast while the account is unreachable (batchop.batch.breaker)
        self._bucket = TokenBucket(self.limits.requests_per_second, self.limits.burst)
        if client is None:
            from azure.batch.aio import BatchClient

            retry = AsyncRetryPolicy(
                retry_total=self.limits.retry_total,
                retry_backoff_factor=self.limits.retry_backoff_factor,
                retry_backoff_max=self.limits.retry_backoff_max,
            )
            from batchop.observability.metrics import MetricsPolicy

            client = BatchClient(
                self.endpoint,
                credential,
                retry_policy=retry,
                per_retry_policies=[MetricsPolicy(), FencePolicy(), ErrorBodyPolicy()],
                transport=_encoded_path_transport(),
                raw_response_hook=self._count_response,
                connection_timeout=self.limits.connection_timeout,
                read_timeout=self.limits.read_timeout,
            )
        self._client = client
        self._server_date: tuple[datetime, float] | None = None

    def batch_now(self) -> datetime:
        """Batch's clock: the ``Date`` of its last answer plus the time since (the operator's clock before the
        first answer). How long a job has waited is measured on it, so that it is Batch time."""
        if self._server_date is None:
            return datetime.now(UTC)
        date, at = self._server_date
        return date + timedelta(seconds=time.monotonic() - at)

    def _count_response(self, response: Any) -> None:
        status = response.http_response.status_code
        self.stats.responses[status] += 1
        date = response.http_response.headers.get("Date") if response.http_response.headers else None
        if date:
            with contextlib.suppress(TypeError, ValueError):
                self._server_date = (parsedate_to_datetime(date), time.monotonic())
        if status == 429:
            self.stats.throttled += 1
            log.warning("Batch throttled a request (429) on %s", self.endpoint)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, op: str, coro_factory: Any) -> Any:
        await self._bucket.acquire()
        async with self._semaphore:
            try:
                self.breaker.before()
            except CircuitOpen as exc:
                self.stats.errors[cond.REASON_BATCH_UNAVAILABLE] += 1
                raise BatchError(
                    str(exc), reason=cond.REASON_BATCH_UNAVAILABLE, terminal=False, retry_after=exc.retry_after
                ) from None
            self.stats.requests[op] += 1
            try:
                result = await coro_factory()
            except Fenced:
                self.breaker.abandoned()  # nothing was sent: no news about the account
                self.stats.errors["Fenced"] += 1
                raise
            except Exception as exc:
                if unreachable(exc):
                    self.breaker.unreachable()
                else:
                    self.breaker.answered()
                err = classify(exc)
                self.stats.errors[err.reason] += 1
                raise err from exc
            except BaseException:  # cancelled: no outcome either way; a probe gives way to the next request
                self.breaker.abandoned()
                raise
            self.breaker.answered()
            return result

    # -- schedules -----------------------------------------------------------------------------------

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None:
        """The schedule as wire JSON and its ETag, or None when Batch has no such schedule."""
        found = await self._get("get_schedule", f"/jobschedules/{quote(schedule_id, safe='')}")
        if found is None:
            return None
        body, headers = found
        return body, headers.get("ETag") or body.get("eTag")

    async def _get(self, op: str, path: str) -> tuple[dict[str, Any], Mapping[str, str]] | None:
        """``GET {path}`` through the SDK client's pipeline, as wire JSON with the answer's headers; None on
        404. Like :meth:`_list`, the answer is not turned into an SDK model (the SDK's ``get_*`` operations
        build one for every nested object even when a ``cls`` callback discards it: a burst's GET after
        each create spent more CPU there than in the request)."""
        from azure.core.rest import HttpRequest

        url = _with_query(path, {}, self.api_version)

        async def run() -> tuple[dict[str, Any], Mapping[str, str]]:
            return await self._read_json(HttpRequest("GET", url, headers={"Accept": "application/json"}))

        try:
            result: tuple[dict[str, Any], Mapping[str, str]] = await self._call(op, run)
        except BatchError as err:
            if err.status == 404:
                return None
            raise
        return result

    async def create_schedule(self, body: Mapping[str, Any]) -> str | None:
        """``POST /jobschedules`` with ``body`` sent as the wire JSON it already is, through the SDK client's
        own pipeline (authentication, retries, ``Retry-After``, metrics), like the listings: the SDK's
        ``create_job_schedule`` would build its model of the whole body and serialise it back, per create.
        Returns the new schedule's ETag from the ``201 Created`` answer (Azure sends ``ETag``,
        ``Last-Modified`` and ``DataServiceId``, no body), None when the answer had none."""
        headers = await self._call("create_schedule", lambda: self._post("/jobschedules", body))
        return headers.get("ETag")

    async def _post(self, path: str, body: Mapping[str, Any]) -> Mapping[str, str]:
        """``POST {path}`` with a JSON body, returning the answer's headers; errors raise
        ``HttpResponseError`` as the SDK's operations do."""
        from azure.core.rest import HttpRequest

        request = HttpRequest(
            "POST",
            _with_query(path, {}, self.api_version),
            headers={"Content-Type": "application/json; odata=minimalmetadata"},
            content=json.dumps(body, separators=(",", ":")),
        )
        response = await self._client.send_request(request)
        response.raise_for_status()
        return response.headers

    async def patch_schedule(self, schedule_id: str, properties: Mapping[str, Any], etag: str | None) -> None:
        """PATCH only the given top-level properties, conditional on ``etag`` when given."""
        from azure.batch.models import BatchJobScheduleUpdateOptions

        kwargs: dict[str, Any] = {}
        if etag:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        await self._call(
            "patch_schedule",
            lambda: self._client.update_job_schedule(
                schedule_id, BatchJobScheduleUpdateOptions(dict(properties)), **kwargs
            ),
        )

    async def disable_schedule(self, schedule_id: str) -> None:
        await self._call("disable_schedule", lambda: self._client.disable_job_schedule(schedule_id))

    async def enable_schedule(self, schedule_id: str) -> None:
        await self._call("enable_schedule", lambda: self._client.enable_job_schedule(schedule_id))

    async def terminate_schedule(self, schedule_id: str) -> None:
        """Ask Batch to terminate; does not wait (the caller re-reads the state)."""

        async def run() -> None:
            await self._client.begin_terminate_job_schedule(schedule_id)

        await self._call("terminate_schedule", run)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Ask Batch to delete; does not wait (the caller re-reads until the schedule is gone)."""

        async def run() -> None:
            await self._client.begin_delete_job_schedule(schedule_id)

        await self._call("delete_schedule", run)

    # -- lists (paged) -------------------------------------------------------------------------------

    async def _list(
        self, op: str, path: str, *, filter: str | None, select: list[str] | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a Batch collection (``GET {path}``, all pages via ``odata.nextLink``) as wire JSON;
        with ``limit``, only the first ``limit`` items (one page when it holds them).

        The request goes through the SDK client's own pipeline (``send_request``: authentication, retries,
        ``Retry-After``, metrics and the response hook), but the items are not turned into SDK models: the
        SDK's pagers build a model for every item and every nested object, which was more than half of the
        operator's CPU at steady state (N = 1,000; the poller lists every cycle), and the gateway hands out
        wire JSON anyway. Errors raise ``HttpResponseError`` as the SDK's operations do."""
        from azure.core.rest import HttpRequest

        params = {"maxresults": str(min(limit, LIST_PAGE_SIZE) if limit else LIST_PAGE_SIZE)}
        if filter:
            params["$filter"] = filter
        if select:
            params["$select"] = ",".join(select)
        headers = {"Accept": "application/json"}

        async def run() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            url: str | None = _with_query(path, params, self.api_version)
            while url is not None:
                page, _ = await self._read_json(HttpRequest("GET", url, headers=headers))
                items.extend(page.get("value") or [])
                if limit and len(items) >= limit:
                    return items[:limit]
                next_link = page.get("odata.nextLink")
                url = _with_query(next_link, {}, self.api_version) if next_link else None
            return items

        items: list[dict[str, Any]] = await self._call(op, run)
        return items

    async def _read_json(self, request: Any) -> tuple[dict[str, Any], Mapping[str, str]]:
        """Send ``request`` through the SDK client's pipeline and decode its JSON answer once; an error answer
        raises ``HttpResponseError`` (its body read, for :func:`classify`). Sent as a stream so that the
        pipeline's ``ContentDecodePolicy`` leaves the body alone: it would decode every answer into its context
        as well, which doubled the JSON decoding of a status cycle's listings (a quarter of its CPU at 10,000
        schedules). Returns the body and the answer's (case-insensitive) headers."""
        response = await self._client.send_request(request, stream=True)
        await response.read()
        response.raise_for_status()
        with memory.collector_paused():  # decoding a page makes ~100,000 containers and no reference cycles
            body: dict[str, Any] = response.json()
        return body, response.headers

    @property
    def api_version(self) -> str:
        config = getattr(self._client, "_config", None)
        return str(getattr(config, "api_version", None) or API_VERSION)

    async def list_schedules(
        self, *, filter: str | None = None, select: list[str] | None = None
    ) -> list[dict[str, Any]]:
        return await self._list("list_schedules", "/jobschedules", filter=filter, select=select)

    async def list_jobs(self, *, filter: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]:
        return await self._list("list_jobs", "/jobs", filter=filter, select=select)

    async def list_pools(self, *, filter: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]:
        return await self._list("list_pools", "/pools", filter=filter, select=select)

    async def list_node_counts(self) -> list[dict[str, Any]]:
        """Node counts by state per pool for the whole account (``GET /nodecounts``, Azure's "List Pool Node
        Counts"): one request per page of 1000 pools, whatever the number of jobs."""
        return await self._list("list_node_counts", "/nodecounts", filter=None, select=None)

    async def list_nodes(
        self, pool_id: str, *, filter: str | None = None, select: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A pool's compute nodes as wire JSON (``GET /pools/{id}/nodes``); ``limit``: the first ones, one request."""
        path = f"/pools/{quote(pool_id, safe='')}/nodes"
        return await self._list("list_nodes", path, filter=filter, select=select, limit=limit)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        found = await self._get("get_job", f"/jobs/{quote(job_id, safe='')}")
        return None if found is None else found[0]

    async def create_job(self, body: Mapping[str, Any]) -> None:
        """``POST /jobs`` (a run-now job, :mod:`batchop.controller.runnow`); ``409 JobExists`` raises ``code``
        JobExists."""
        from azure.batch.models import BatchJobCreateOptions

        await self._call("create_job", lambda: self._client.create_job(BatchJobCreateOptions(dict(body))))

    async def delete_job(self, job_id: str) -> None:
        """Ask Batch to delete a job (history limits); does not wait."""

        async def run() -> None:
            await self._client.begin_delete_job(job_id)

        await self._call("delete_job", run)

    # -- tasks and their files -------------------------------------------------------------------------

    async def list_tasks(
        self, job_id: str, *, filter: str | None = None, select: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The job's tasks as wire JSON (``GET /jobs/{id}/tasks``); ``limit``: only the first ones, one request."""
        path = f"/jobs/{quote(job_id, safe='')}/tasks"
        return await self._list("list_tasks", path, filter=filter, select=select, limit=limit)

    async def get_task(self, job_id: str, task_id: str) -> dict[str, Any] | None:
        """One task as wire JSON, None when the job or the task does not exist."""
        found = await self._get("get_task", f"/jobs/{quote(job_id, safe='')}/tasks/{quote(task_id, safe='')}")
        return None if found is None else found[0]

    async def read_task_file(
        self, job_id: str, task_id: str, path: str, *, start: int | None = None, end: int | None = None
    ) -> bytes:
        """A task file's bytes (``GET /jobs/{id}/tasks/{task}/files/{path}``), from ``start`` to ``end`` (both
        included, ``ocp-range``) when given. Errors keep Batch's code (``FileNotFound``, ``TaskFilesUnavailable``,
        ``TaskFilesCleanedup``, ``InvalidRange``...): the SDK raises a download's error before reading its body,
        so it is read here for :func:`classify`."""
        ocp_range = None
        if start is not None:
            ocp_range = f"bytes={start}-{'' if end is None else end}"

        async def run() -> bytes:
            return await _download(lambda: self._client.download_task_file(job_id, task_id, path,
                                                                           ocp_range=ocp_range))

        data: bytes = await self._call("read_task_file", run)
        return data

    async def read_node_file(
        self, pool_id: str, node_id: str, path: str, *, start: int | None = None, end: int | None = None
    ) -> bytes:
        """A compute node file's bytes (``GET /pools/{pool}/nodes/{node}/files/{path}``, the SDK's
        ``download_node_file``), such as the start task's ``startup/stderr.txt``; ``start``/``end`` and errors
        as :meth:`read_task_file` (``NodeNotFound``, ``PoolNotFound``, ``FileNotFound``, ``InvalidRange``...)."""
        ocp_range = None if start is None else f"bytes={start}-{'' if end is None else end}"

        async def run() -> bytes:
            return await _download(lambda: self._client.download_node_file(pool_id, node_id, path,
                                                                           ocp_range=ocp_range))

        data: bytes = await self._call("read_node_file", run)
        return data

    async def task_counts(self, job_id: str) -> dict[str, Any] | None:
        """The job's ``taskCounts`` (active, running, completed, succeeded, failed), None when the job is gone."""
        found = await self._get("task_counts", f"/jobs/{quote(job_id, safe='')}/taskcounts")
        if found is None:
            return None
        raw = found[0]
        counts = raw.get("taskCounts", raw)
        return dict(counts) if isinstance(counts, Mapping) else None
