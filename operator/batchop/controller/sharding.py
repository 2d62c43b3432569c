"""Shards across replicas: which Leases this replica should hold, and the shard label on each resource.

- **Shard of a resource** (:mod:`batchop.spec.shardkey`): a stable hash (SHA-256) of its shard key modulo N,
  written once as the label ``azurebatch.dev/shard``: in the client's own create by the admission webhook
  when it is registered, else by :class:`Labeler`. The key (``--shard-by``, ``shard_key``) is
  ``namespace/name`` (``resource``, the default: resources spread evenly whatever their accounts) or the
  host of its Batch account's endpoint (``account``: every resource of one account in one shard, so each
  account is listed by one replica per cycle, and its per-account request limits hold across replicas).
  The label, not the hash, is the truth afterwards: each replica's kopf watch carries a *server-side*
  label selector (``azurebatch.dev/shard in (0,2)``), so a replica receives, holds in memory and
  reconciles only the resources of its shards; a resource is reconciled by the holder of exactly one Lease.
  A resource whose ``spec.account`` changes keeps its label and so its owner.
- **One Lease per shard** (``<id>-shard-<k>``), each held with :class:`batchop.controller.election.LeaseLock`.
- **Members** (:class:`Membership`): every replica writes a heartbeat annotation on ``<id>-members`` each
  retry period; a member whose heartbeat has not changed for a lease duration (on the local clock) is gone.
  The preferred holders (:func:`assign`) are balanced to within one shard and sticky: a live member keeps
  the shards it holds up to its share, so a member joining or leaving moves only the shards that must move
  (a replica restarted under a new identity takes over its predecessor's share, nobody else's).
- **Coordinator** (:class:`Coordinator`): each round, renews the Leases it holds and tries those it is the
  preferred holder of; the supervisor gives back the Leases it is no longer preferred for (after its
  controller for them has stopped), so a joining replica receives its share and a dead one's shards go
  to the survivors once its heartbeat and its Leases have expired.

With one shard (``--leader-elect`` alone) the coordinator is plain leader election on ``--leader-election-id``:
no label, no selector, no members Lease.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from batchop.api.names import (
    ANNOTATION_MEMBER_PREFIX,
    API_GROUP_VERSION,
    LABEL_SHARD,
    LEASE_MEMBERS_SUFFIX,
    LEASE_SHARD_INFIX,
    PLURAL,
)
from batchop.controller.election import ElectionConfig, LeaseLock
from batchop.kube.client import KubeError
from batchop.kube.leases import LeaseClient, LeaseRecord, Requester, now_micro
from batchop.kube.watch import is_pattern
from batchop.spec.shardkey import ShardPlan

log = logging.getLogger(__name__)


def lease_name(config: ElectionConfig, shard: int, shards: int) -> str:
    """``<id>`` for plain leader election, ``<id>-shard-<k>`` with shards."""
    return config.name if shards == 1 else f"{config.name}{LEASE_SHARD_INFIX}{shard}"


def selector(shards: Collection[int]) -> str:
    """The server-side label selector of a replica's watch over ``shards``."""
    return f"{LABEL_SHARD} in ({','.join(str(k) for k in sorted(shards))})"


def assign(shards: int, live: Sequence[str], holders: Mapping[int, str | None]) -> dict[int, str]:
    """Shard -> preferred holder among the ``live`` members, given each shard's current holder.

    Every member's share is ``shards // members`` or one more; the ones more go to the members holding the
    most now (ties: by identity), so that as few shards as possible move. A live holder keeps its shards, in
    shard order, up to its share; every other shard (held by nobody, by a member gone, or beyond its
    holder's share) goes to the member with the most room left (ties: by identity). Every replica computes
    this from the same Leases, so they agree once they have read the same records."""
    members = sorted(set(live))
    base, extra = divmod(shards, len(members))
    holding = Counter(h for h in holders.values() if h in members)
    by_holding = sorted(members, key=lambda m: (-holding[m], m))
    share = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}
    count: Counter[str] = Counter()
    out: dict[int, str] = {}
    for k in range(shards):
        holder = holders.get(k)
        if holder in share and count[holder] < share[holder]:
            out[k] = holder
            count[holder] += 1
    for k in range(shards):
        if k not in out:
            member = min(members, key=lambda m: (count[m] - share[m], m))
            out[k] = member
            count[member] += 1
    return out


def _member_key(identity: str) -> str:
    return ANNOTATION_MEMBER_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:20]


class Membership:
    """Heartbeats on the members Lease (see the module docstring)."""

    def __init__(self, leases: LeaseClient, config: ElectionConfig, *, clock: Callable[[], float] = time.monotonic):
        self.leases = leases
        self.config = config
        self.clock = clock
        self.name = f"{config.name}{LEASE_MEMBERS_SUFFIX}"
        self.key = _member_key(config.identity)
        self._seen: dict[str, tuple[str, float]] = {}  # key -> (value, local time it last changed)

    async def heartbeat(self) -> None:
        """Write our heartbeat and read everyone's (creating the Lease on first use)."""
        mine = {self.key: f"{self.config.identity} {now_micro()}"}
        state = await self.leases.annotate(self.name, mine)
        if state is None:
            try:
                await self.leases.create(self.name, LeaseRecord())
            except KubeError as exc:
                if exc.status != 409:
                    raise
            state = await self.leases.annotate(self.name, mine)
        self._observe(state.annotations if state is not None else mine)

    def _observe(self, annotations: Mapping[str, str]) -> None:
        now = self.clock()
        members = {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_MEMBER_PREFIX)}
        for key, value in members.items():
            if self._seen.get(key, ("", 0.0))[0] != value:
                self._seen[key] = (value, now)
        for key in set(self._seen) - set(members):
            del self._seen[key]

    def alive(self) -> list[str]:
        """Identities of the live members (always including ourselves), sorted."""
        now = self.clock()
        live = {
            value.split(" ", 1)[0]
            for key, (value, changed) in self._seen.items()
            if key == self.key or now - changed < self.config.lease_duration
        }
        live.add(self.config.identity)
        return sorted(live)

    def stale(self) -> list[str]:
        """Annotation keys of members silent for ten lease durations: removed by whoever notices."""
        now = self.clock()
        return [k for k, (_, changed) in self._seen.items() if now - changed > 10 * self.config.lease_duration]

    async def sweep(self) -> None:
        stale = self.stale()
        if stale:
            await self.leases.annotate(self.name, dict.fromkeys(stale))

    async def leave(self) -> None:
        """Remove our heartbeat, so the others re-balance at their next round instead of after a duration."""
        try:
            await self.leases.annotate(self.name, {self.key: None})
        except (KubeError, OSError, TimeoutError) as exc:
            log.warning("Could not leave the members Lease: %s", exc)


class Coordinator:
    """The Leases this replica holds and should hold (see the module docstring)."""

    def __init__(self, leases: LeaseClient, config: ElectionConfig, shards: int = 1, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.shards = shards
        self.locks = {k: LeaseLock(leases, config, lease_name(config, k, shards), clock=clock) for k in range(shards)}
        self.members = Membership(leases, config, clock=clock) if shards > 1 else None

    def desired(self) -> frozenset[int]:
        """The shards this replica is the preferred holder of (all of them without sharding)."""
        if self.members is None:
            return frozenset(self.locks)
        holders = {k: (lock.observed.holder if lock.observed is not None else None) for k, lock in self.locks.items()}
        preferred = assign(self.shards, self.members.alive(), holders)
        return frozenset(k for k, member in preferred.items() if member == self.config.identity)

    def held(self, margin: float = 0.0) -> frozenset[int]:
        """The shards whose Lease is ours and valid now (:meth:`LeaseLock.valid`)."""
        return frozenset(k for k, lock in self.locks.items() if lock.valid(margin))

    def fence(self, shards: Collection[int], margin: float = 0.0) -> Callable[[], str | None]:
        """A check for the controller running ``shards``: None while every Lease is valid, else why not."""
        locks = [self.locks[k] for k in shards]

        def check() -> str | None:
            lost = [lock.name for lock in locks if not lock.valid(margin)]
            return f"this replica no longer holds the Lease {', '.join(lost)}" if lost else None

        return check

    async def round(self) -> None:
        """One retry period's work: heartbeat, renew what we hold, try what we should hold."""
        if self.members is not None:
            try:
                await self.members.heartbeat()
                await self.members.sweep()
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning("Could not write the members heartbeat: %s", exc)
        desired = self.desired()
        for k, lock in self.locks.items():
            if k in desired or lock.is_holder:
                await lock.try_acquire_or_renew()
            else:
                await lock.observe()

    async def release(self, shards: Collection[int]) -> None:
        for k in shards:
            await self.locks[k].release()

    async def leave(self) -> None:
        """Shutdown: release every Lease held, then leave the members."""
        await self.release([k for k, lock in self.locks.items() if lock.is_holder])
        if self.members is not None:
            await self.members.leave()


class Labeler:
    """Writes the shard label on resources that have none (or one outside ``0..N-1``): a server-side list of
    exactly those each round, then one merge patch each, guarded by the ``resourceVersion`` listed. With the
    admission webhook registered, new resources arrive labelled and its rounds find nothing (one list each)."""

    def __init__(self, kube: Requester, plan: ShardPlan, namespaces: Collection[str] = ()) -> None:
        self.kube = kube
        self.plan = plan
        self.namespaces = tuple(namespaces)
        self.labelled = 0

    def _paths(self) -> list[str]:
        query = f"?labelSelector={LABEL_SHARD}%20notin%20({','.join(str(k) for k in range(self.plan.shards))})"
        if not self.namespaces or any(is_pattern(ns) for ns in self.namespaces):
            return [f"/apis/{API_GROUP_VERSION}/{PLURAL}{query}"]
        return [f"/apis/{API_GROUP_VERSION}/namespaces/{ns}/{PLURAL}{query}" for ns in self.namespaces]

    async def round(self) -> int:
        """Label what needs it; the number labelled."""
        count = 0
        for path in self._paths():
            listing = await self.kube.request("GET", path) or {}
            for item in listing.get("items") or []:
                count += await self._label(item)
        self.labelled += count
        return count

    async def _label(self, item: Mapping[str, Any]) -> int:
        meta = item.get("metadata") or {}  # objects being deleted too: their finalizer needs an owner
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        shard = self.plan.shard(item)
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "labels": {LABEL_SHARD: str(shard)}}}
        path = f"/apis/{API_GROUP_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        try:
            done = await self.kube.request("PATCH", path, json=patch, content_type="application/merge-patch+json")
        except KubeError as exc:
            if exc.status != 409:
                raise
            return 0  # changed meanwhile (another replica labelled it): the next round sees it again if needed
        return 1 if done is not None else 0
