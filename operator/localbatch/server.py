"""The aiohttp application: Batch API routes, the token endpoint, the admin API, one middleware.

The middleware gives every response ``request-id``, ``DataServiceVersion: 3.0`` and the
``client-request-id`` the client sent, and every Batch API response a ``Date`` on the service's virtual
clock (the token endpoint, which stands for Entra ID, and the admin API keep real time); counts requests per
operation and status; and, for Batch API requests only, applies the injected latency and faults, checks
``api-version`` and authenticates (SharedKey or bearer) before the handler runs. :class:`~localbatch.errors.BatchError`
becomes Batch's error body; anything unexpected becomes 500 ``InternalError``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, cast

from aiohttp import web

from batchwire import timestamps
from localbatch import admin, api_files, api_jobs, api_jobs_update, api_pools, api_schedules, api_tasks, task_identity
from localbatch.context import SERVICE_KEY, ServiceContext
from localbatch.errors import BatchError
from localbatch.faults import ConnectionReset
from localbatch.responses import json_response

log = logging.getLogger("localbatch.server")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\d+\.\d+)?$")
_UNAUTHENTICATED = {"openid_configuration", "issue_token"}


def error_response(svc: ServiceContext, request: web.Request, error: BatchError, request_id: str) -> web.Response:
    body = error.body(base_url=svc.base_url, request_id=request_id, time=timestamps.format(svc.clock.now()))
    return json_response(body, status=error.status or 400, headers=error.headers)


def _check_api_version(request: web.Request) -> None:
    version = request.query.get("api-version")
    if not version:
        raise BatchError(
            "MissingRequiredQueryParameter",
            [("QueryParameterName", "api-version"), ("Reason", "send ?api-version=2025-06-01")],
        )
    if not _API_VERSION.match(version):
        raise BatchError(
            "InvalidQueryParameterValue",
            [("QueryParameterName", "api-version"), ("QueryParameterValue", version)],
        )


@web.middleware
async def batch_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    request_id = str(uuid.uuid4())
    started = time.perf_counter()
    route = request.match_info.route
    operation = route.name or "unmatched"
    is_admin = request.path.startswith("/_emulator/") or request.path == "/_emulator"
    response: web.StreamResponse
    try:
        if is_admin or operation in _UNAUTHENTICATED:
            response = await handler(request)
        else:
            if svc.faults.latency_ms > 0 and svc.faults.applies(operation):
                await asyncio.sleep(svc.faults.latency_ms / 1000)
            fault = svc.faults.pick(operation, svc.rng)
            if fault is not None:
                raise svc.faults.error_for(fault)
            exception = request.match_info.http_exception
            node_token = task_identity.is_node_token(request.headers)
            if node_token is not None:  # a task's node identity token (localbatch.task_identity)
                cast(api_tasks.TaskEngine, svc.engine).identity.verify(node_token)
            else:
                svc.authenticator.verify(request.method, request.raw_path, request.headers)
            if exception is not None:
                if exception.status == 405:
                    raise BatchError("UnsupportedHttpVerb", status=405)
                raise BatchError("InvalidUri", status=404, values=[("Reason", f"no resource at {request.path}")])
            _check_api_version(request)
            response = await handler(request)
    except BatchError as error:
        response = error_response(svc, request, error, request_id)
    except ConnectionReset:
        svc.count(operation, 0)
        if request.transport is not None:
            request.transport.abort()
        log.info("fault injected: connection reset", extra={"operation": operation})
        raise asyncio.CancelledError() from None
    except web.HTTPException as exc:
        if is_admin:
            raise
        response = error_response(svc, request, BatchError("InvalidUri", status=exc.status), request_id)
    except Exception:
        log.exception("request failed", extra={"operation": operation, "requestId": request_id})
        response = error_response(svc, request, BatchError("InternalError"), request_id)
    response.headers["request-id"] = request_id
    response.headers["DataServiceVersion"] = "3.0"
    if not is_admin and operation not in _UNAUTHENTICATED and not response.prepared:
        # Batch's answers carry Batch's clock, as Azure's carry Azure's: the virtual clock, so that a client
        # measuring Batch time from Date (the operator's JobStuck threshold) counts scaled seconds.
        response.headers["Date"] = timestamps.rfc1123(svc.clock.now())
    client_request_id = request.headers.get("client-request-id")
    if client_request_id:
        response.headers["client-request-id"] = client_request_id
    if not is_admin:
        svc.count(operation, response.status, next_page="$skiptoken" in request.query)
        if svc.faults.answer_latency_ms > 0 and operation not in _UNAUTHENTICATED and svc.faults.applies(operation):
            await asyncio.sleep(svc.faults.answer_latency_ms / 1000)  # carried out and counted; the answer is late
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "operation": operation,
                "status": response.status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    return response


async def openid_configuration(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    if svc.tokens is None:
        raise BatchError("InvalidUri", status=404, values=[("Reason", "the token endpoint needs --tls")])
    return web.json_response(svc.tokens.openid_configuration(request.match_info["tenant"]))


async def issue_token(request: web.Request) -> web.Response:
    """OAuth 2.0 client-credentials grant with a client secret (the account key) or a federated assertion
    (workload identity): :meth:`localbatch.tokens.TokenIssuer.token_response`."""
    svc = request.app[SERVICE_KEY]
    if svc.tokens is None:
        raise BatchError("InvalidUri", status=404, values=[("Reason", "the token endpoint needs --tls")])
    form = await request.post()
    fields = {name: str(value) for name, value in form.items()}
    status, body = await svc.tokens.token_response(request.match_info["tenant"], fields)
    return web.json_response(body, status=status)


def build_app(svc: ServiceContext) -> web.Application:
    app = web.Application(middlewares=[batch_middleware], client_max_size=2 * 1024 * 1024)
    app[SERVICE_KEY] = svc
    for method, path, name, handler in api_schedules.ROUTES + api_jobs.ROUTES + api_pools.ROUTES + api_files.ROUTES \
            + api_tasks.ROUTES + api_jobs_update.ROUTES:
        app.router.add_route(method, path, handler, name=name)
    admin.add_routes(app)
    app.router.add_get(
        "/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, name="openid_configuration"
    )
    app.router.add_post("/{tenant}/oauth2/v2.0/token", issue_token, name="issue_token")
    return app
