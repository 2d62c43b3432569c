"""Helpers every Batch API handler uses: the service context, the request body, state transitions."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from localbatch.context import SERVICE_KEY, ServiceContext
from localbatch.errors import BatchError

JSON = dict[str, Any]
MAX_BODY_BYTES = 1024 * 1024


def service(request: web.Request) -> ServiceContext:
    return request.app[SERVICE_KEY]


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON; 400 ``InvalidRequestBody`` if it is not JSON (or missing when required)."""
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise BatchError("RequestBodyTooLarge")
    if not raw.strip():
        if required:
            raise BatchError("InvalidRequestBody", [("Reason", "The request body is empty; send a JSON object.")])
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError("InvalidRequestBody", [("Reason", f"The request body is not valid JSON: {exc}")]) from None


def path_id(request: web.Request, name: str) -> str:
    return request.match_info[name]


def set_state(obj: JSON, state: str, now: str) -> None:
    """Move an object to ``state``, keeping the previous one as Batch reports it."""
    if obj.get("state") == state:
        return
    obj["previousState"] = obj.get("state")
    obj["previousStateTransitionTime"] = obj.get("stateTransitionTime")
    obj["state"] = state
    obj["stateTransitionTime"] = now


def truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"
