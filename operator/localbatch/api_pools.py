"""Pool and compute-node operations: list / get / exists / delete pools (auto pools included),
list and get nodes (their ``state``, ``errors``, ``startTaskInfo``), and the account's node counts per pool
(``GET /nodecounts``). Pools and nodes are created and moved through their states by the engine."""

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
    json_response,
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


# Node states as ``BatchNodeCounts`` names them (List Pool Node Counts).
_COUNT_NAMES = {
    "creating": "creating", "idle": "idle", "offline": "offline", "preempted": "preempted",
    "rebooting": "rebooting", "reimaging": "reimaging", "running": "running", "starting": "starting",
    "starttaskfailed": "startTaskFailed", "leavingpool": "leavingPool", "unknown": "unknown",
    "unusable": "unusable", "waitingforstarttask": "waitingForStartTask", "deallocated": "deallocated",
    "deallocating": "deallocating", "upgradingos": "upgradingOS",
}


def _node_counts(nodes: list[JSON]) -> JSON:
    counts = dict.fromkeys(_COUNT_NAMES.values(), 0)
    for node in nodes:
        name = _COUNT_NAMES.get(str(node.get("state", "")).lower(), "unknown")
        counts[name] += 1
    counts["total"] = len(nodes)
    return counts


async def list_pool_node_counts(request: web.Request) -> web.Response:
    """``GET /nodecounts``: per pool, dedicated and low-priority nodes by state."""
    svc = service(request)
    value = []
    for key, pool in sorted(svc.store.pools.items()):
        nodes = list(svc.store.nodes.get(key, {}).values())
        value.append({
            "poolId": pool["id"],
            "dedicated": _node_counts([n for n in nodes if n.get("isDedicated", True)]),
            "lowPriority": _node_counts([n for n in nodes if not n.get("isDedicated", True)]),
        })
    return json_response({"odata.metadata": f"{svc.base_url}/$metadata#poolnodecounts", "value": value})


ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/pools", "list_pools", list_pools),
    ("GET", "/pools/{poolId}", "get_pool", get_pool),
    ("HEAD", "/pools/{poolId}", "pool_exists", pool_exists),
    ("DELETE", "/pools/{poolId}", "delete_pool", delete_pool),
    ("GET", "/nodecounts", "list_pool_node_counts", list_pool_node_counts),
    ("GET", "/pools/{poolId}/nodes", "list_nodes", list_nodes),
    ("GET", "/pools/{poolId}/nodes/{nodeId}", "get_node", get_node),
]
