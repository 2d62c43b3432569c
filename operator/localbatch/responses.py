"""Batch-shaped HTTP responses: entity and list bodies, headers, conditional requests.

Entities are rendered from the store's wire objects by adding ``odata.metadata`` and ``url``
(right after ``id``, where Batch puts it); lists carry ``odata.metadata``, ``value`` and, when
there is more, an absolute ``odata.nextLink`` that repeats the query with a ``$skiptoken``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from batchwire import timestamps
from localbatch import odata
from localbatch.context import SERVICE_KEY
from localbatch.errors import BatchError

JSON = dict[str, Any]
CONTENT_TYPE = "application/json;odata=minimalmetadata"


def entity_url(base_url: str, collection: str, obj_id: str) -> str:
    return f"{base_url}/{collection}/{obj_id}"


def render(obj: JSON, url: str) -> JSON:
    """The wire object with ``url`` after ``id``."""
    return {"id": obj.get("id"), "url": url, **obj}


def json_response(body: JSON, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": CONTENT_TYPE, **(headers or {})},
    )


def entity_headers(obj: JSON) -> dict[str, str]:
    headers = {}
    if obj.get("eTag"):
        headers["ETag"] = obj["eTag"]
    if obj.get("lastModified"):
        headers["Last-Modified"] = timestamps.rfc1123(timestamps.parse(obj["lastModified"]))
    return headers


def entity_response(request: web.Request, obj: JSON, url: str, collection: str) -> web.Response:
    """``GET`` of one entity, honouring ``$select`` (``$expand`` is accepted)."""
    body = render(obj, url)
    select = odata.parse_select(request.query.get("$select"))
    if select is not None:
        body = odata.apply_select(body, select)
    base = request.app[SERVICE_KEY].base_url
    return json_response(
        {"odata.metadata": f"{base}/$metadata#{collection}/@Element", **body}, headers=entity_headers(obj)
    )


def list_response(
    request: web.Request,
    items: Iterable[tuple[str, JSON]],
    *,
    collection: str,
    url_of: Callable[[JSON], str],
) -> web.Response:
    """A paged list of ``(sort key, object)`` pairs, filtered and projected per the query."""
    query = request.query
    predicate = odata.compile_filter(query.get("$filter"))
    select = odata.parse_select(query.get("$select"))
    limit = odata.parse_max_results(query.get("maxresults"))
    after = query.get("$skiptoken")
    ordered = sorted(items, key=lambda kv: kv[0])
    page: list[JSON] = []
    more = False
    last_key = ""
    for key, obj in ordered:
        if after is not None and key <= after:
            continue
        if predicate is not None and not predicate(obj):
            continue
        if len(page) == limit:
            more = True
            break
        body = render(obj, url_of(obj))
        last_key = key
        page.append(odata.apply_select(body, select) if select is not None else body)
    base = request.app[SERVICE_KEY].base_url
    out: JSON = {"odata.metadata": f"{base}/$metadata#{collection}", "value": page}
    if more and page:
        params = {k: v for k, v in query.items() if k not in ("$skiptoken",)}
        params["$skiptoken"] = last_key
        out["odata.nextLink"] = f"{base}{request.path}?{urlencode(params, quote_via=quote, safe='')}"
    return json_response(out)


def empty(status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers or {})


# -- conditional requests -------------------------------------------------------------------------


def _etags(header: str) -> list[str]:
    return [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",") if tag.strip()]


def _http_date(text: str, name: str) -> datetime:
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise BatchError("InvalidHeaderValue", [("HeaderName", name), ("HeaderValue", text)]) from None


def check_conditions(request: web.Request, obj: JSON, *, write: bool) -> web.Response | None:
    """Apply ``If-Match``, ``If-None-Match``, ``If-Modified-Since``, ``If-Unmodified-Since``.

    A failed condition on a write is 412 ``ConditionNotMet``; on a read, a matching
    ``If-None-Match`` or an unmodified ``If-Modified-Since`` answers 304 (returned, not raised),
    and a failed ``If-Match`` / ``If-Unmodified-Since`` is 412.
    """
    etag = obj.get("eTag", "")
    modified = timestamps.parse(obj["lastModified"]).replace(microsecond=0) if obj.get("lastModified") else None
    headers = request.headers
    if "If-Match" in headers:
        tags = _etags(headers["If-Match"])
        if "*" not in tags and etag not in tags:
            raise BatchError("ConditionNotMet")
    if "If-None-Match" in headers:
        tags = _etags(headers["If-None-Match"])
        if "*" in tags or etag in tags:
            if write:
                raise BatchError("ConditionNotMet")
            return empty(304, entity_headers(obj))
    if "If-Unmodified-Since" in headers and modified is not None:
        if modified > _http_date(headers["If-Unmodified-Since"], "If-Unmodified-Since"):
            raise BatchError("ConditionNotMet")
    if "If-Modified-Since" in headers and modified is not None:
        if modified <= _http_date(headers["If-Modified-Since"], "If-Modified-Since"):
            if write:
                raise BatchError("ConditionNotMet")
            return empty(304, entity_headers(obj))
    return None
