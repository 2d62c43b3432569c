"""Pool and compute-node operations: list / get / exists / delete pools (auto pools included),
list and get nodes (their ``state``, ``errors``, ``startTaskInfo``). Pools and nodes are created and moved
through their states by the engine."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchwire import timestamps
from localbatch.api_common import service, set_state
from localbatch.errors import BatchError
from localbatch.responses import (
    check_conditions,
    empty,
    entity_headers,
    entity_response,
    entity_url,
    list_response,
)

JSON = dict[str, Any]


def _find(request: web.Request) -> tuple[str, JSON]:
    key = request.match_info["poolId"].lower()
    obj = service(request).store.pools.get(key)
    if obj is None:
        raise BatchError("PoolNotFound")
    return key, obj


async def list_pools(request: web.Request) -> web.Response:
    svc = service(request)
    base = svc.base_url
    return list_response(
        request, svc.store.pools.items(), collection="pools", url_of=lambda pool: f"{base}/pools/{pool['id']}"
    )


async def get_pool(request: web.Request) -> web.Response:
    _key, obj = _find(request)
    not_modified = check_conditions(request, obj, write=False)
    if not_modified is not None:
        return not_modified
    return entity_response(request, obj, entity_url(service(request).base_url, "pools", obj["id"]), "pools")


async def pool_exists(request: web.Request) -> web.Response:
    _key, obj = _find(request)
    not_modified = check_conditions(request, obj, write=False)
    if not_modified is not None:
        return not_modified
    return empty(200, entity_headers(obj))


async def delete_pool(request: web.Request) -> web.Response:
    svc = service(request)
    key, obj = _find(request)
    check_conditions(request, obj, write=True)
    if obj.get("state") == "deleting":
        raise BatchError("PoolBeingDeleted")
    now = svc.clock.now()
    set_state(obj, "deleting", timestamps.format(now))
    svc.store.touch(obj, now)
    svc.engine.delete_pool(key)
    return empty(202)


async def list_nodes(request: web.Request) -> web.Response:
    svc = service(request)
    key, pool = _find(request)
    base = f"{svc.base_url}/pools/{pool['id']}/nodes"
    return list_response(
        request, svc.store.nodes.get(key, {}).items(), collection="nodes", url_of=lambda node: f"{base}/{node['id']}"
    )


async def get_node(request: web.Request) -> web.Response:
    svc = service(request)
    key, pool = _find(request)
    node = svc.store.nodes.get(key, {}).get(request.match_info["nodeId"])
    if node is None:
        raise BatchError("NodeNotFound")
    return entity_response(request, node, f"{svc.base_url}/pools/{pool['id']}/nodes/{node['id']}", "nodes")


ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/pools", "list_pools", list_pools),
    ("GET", "/pools/{poolId}", "get_pool", get_pool),
    ("HEAD", "/pools/{poolId}", "pool_exists", pool_exists),
    ("DELETE", "/pools/{poolId}", "delete_pool", delete_pool),
    ("GET", "/pools/{poolId}/nodes", "list_nodes", list_nodes),
    ("GET", "/pools/{poolId}/nodes/{nodeId}", "get_node", get_node),
]
