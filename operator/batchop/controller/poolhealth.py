"""What a poll cycle reads about the pools of active jobs, beyond the pool listing: node counts by state, and one
node whose start task failed.

Batch calls, per cycle and account (none while no recent job is active):

- ``GET /nodecounts`` (Azure's "List Pool Node Counts"): every pool's nodes by state in one request per page of
  1000 pools, instead of a ``GET /pools/{id}/nodes`` per pool;
- ``GET /pools/{id}/nodes`` with ``$select=id,state,startTaskInfo``, once per pool when its counts first show
  every node in ``startTaskFailed``: the node to name in the ``StartTaskFailed`` message (remembered until the
  pool is gone).

The pools' ``resizeErrors`` and ``vmSize`` need no request of their own: they ride on the poller's pool listing
(``$select``). :class:`batchop.controller.status.Health` carries the result into the status computation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from batchop.batch.gateway import BatchError
from batchop.controller import status as st

log = logging.getLogger(__name__)

NODE_SELECT = ["id", "state", "startTaskInfo"]


class NodeGateway(Protocol):
    """The Batch calls of :class:`PoolHealth` (:class:`batchop.batch.gateway.Gateway` has them)."""

    async def list_node_counts(self) -> list[dict[str, Any]]: ...
    async def list_nodes(
        self, pool_id: str, *, filter: str | None = None, select: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]: ...


def _active_pools(jobs: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return {str(pid).lower() for job in jobs.values() if job.get("state") == "active"
            and (pid := (job.get("executionInfo") or {}).get("poolId"))}


def account_of(credential_id: str) -> str | None:
    """The account name of a credential group (:attr:`batchop.batch.credentials.AccountRef.credential_id`,
    ``endpoint|account|digest``), for messages; None when it names none."""
    parts = credential_id.split("|")
    return parts[1] if len(parts) > 2 and parts[1] not in ("", "None") else None


class PoolHealth:
    """Node counts of the active jobs' pools, a failed start task's node per pool, and Batch's clock."""

    def __init__(self, *, stuck_after: float = st.DEFAULT_STUCK_AFTER, account: str = "") -> None:
        self.stuck_after = stuck_after
        self.account = account
        self.counts: dict[str, dict[str, Any]] = {}  # pool id (lower) -> its node counts entry
        self.failed_nodes: dict[str, dict[str, Any]] = {}  # pool id (lower) -> a node whose start task failed
        self.now: datetime | None = None

    async def read(self, gateway: Any, jobs: Mapping[str, Mapping[str, Any]]) -> None:
        """One cycle's reads (module docstring); Batch errors are logged and the last counts kept."""
        clock = getattr(gateway, "batch_now", None)
        self.now = clock() if callable(clock) else datetime.now(UTC)
        pools = _active_pools(jobs)
        if not pools:
            self.counts.clear()
            self.failed_nodes.clear()
            return
        try:
            listed = await gateway.list_node_counts()
        except BatchError as err:
            log.warning("could not read the node counts: %s", err)
            return
        self.counts = {str(e["poolId"]).lower(): e for e in listed if e.get("poolId") and
                       str(e["poolId"]).lower() in pools}
        for key in list(self.failed_nodes):
            if key not in self.counts:
                del self.failed_nodes[key]
        for key, entry in self.counts.items():
            if key not in self.failed_nodes and self._all_failed(entry):
                await self._read_failed_node(gateway, str(entry["poolId"]))

    @staticmethod
    def _all_failed(entry: Mapping[str, Any]) -> bool:
        counts = st.node_counts(entry) or {}
        total = sum(c.get("total", 0) for c in counts.values())
        return total > 0 and sum(c.get("startTaskFailed", 0) for c in counts.values()) == total

    async def _read_failed_node(self, gateway: NodeGateway, pool_id: str) -> None:
        try:
            nodes = await gateway.list_nodes(pool_id, select=NODE_SELECT)
        except BatchError as err:
            log.warning("could not list the nodes of pool %s: %s", pool_id, err)
            return
        failed = next((n for n in nodes if str(n.get("state", "")).lower() == "starttaskfailed"), None)
        if failed is not None:
            self.failed_nodes[pool_id.lower()] = failed

    def health(self, pool_id: str | None, *, resource: tuple[str, str] | None = None) -> st.Health:
        """What :func:`batchop.controller.status.observed_status` needs for the job on ``pool_id`` of
        ``resource`` (``(namespace, name)``: the ``StartTaskFailed`` message names its ``batchop logs`` command)."""
        key = (pool_id or "").lower()
        return st.Health(counts=self.counts.get(key), failed_node=self.failed_nodes.get(key), now=self.now,
                         stuck_after=self.stuck_after, account=self.account, resource=resource)
