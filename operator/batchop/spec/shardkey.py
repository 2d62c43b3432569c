"""The shard of a resource: a pure function of the resource, so the admission webhook (which labels a new
resource in its create) and the controller's labeller (which labels what was created without it) agree.

A resource's shard is SHA-256 of its shard key modulo N (stable across processes and versions, unlike
Python's salted ``hash``). The key is ``namespace/name`` (``--shard-by resource``) or the host of its Batch
account's endpoint (``--shard-by account``). docs/operator.md, "High availability and sharding", tells the
rest of the design (``batchop.controller.sharding``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from batchop.api.names import LABEL_SHARD, SHARD_BY


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of a resource by its name."""
    return shard_of_key(f"{namespace}/{name}", shards)


def shard_of_key(key: str, shards: int) -> int:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def account_key(endpoint: str | None) -> str:
    """An account's shard key: its endpoint's host (and port), lower case, so that spellings of one endpoint
    (a trailing ``/``, upper case) land in one shard. No endpoint: the operator's default account, ``""``."""
    if not endpoint:
        return ""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = (parsed.hostname or "").lower()
    return f"{host}:{parsed.port}" if parsed.port else host


def shard_key(item: Mapping[str, Any], by: str, default_endpoint: str | None = None) -> str:
    """The key :func:`shard_of_key` hashes for a resource ``item`` (``by``: one of ``SHARD_BY``); a resource
    without ``spec.account.endpoint`` counts as the operator's ``default_endpoint``."""
    meta = item.get("metadata") or {}
    if by not in SHARD_BY:
        raise ValueError(f"shard by {by!r}: one of {', '.join(SHARD_BY)}")
    if by == "account":
        account = (item.get("spec") or {}).get("account") or {}
        endpoint = account.get("endpoint") if isinstance(account, Mapping) else None
        return account_key(str(endpoint or default_endpoint or ""))
    return f"{meta.get('namespace')}/{meta.get('name')}"


@dataclass(frozen=True)
class ShardPlan:
    """How a replica set spreads resources: ``shards`` shards (1: not sharded), keyed ``by``."""

    shards: int = 1
    by: str = "resource"
    default_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards: {self.shards}; at least 1")
        if self.by not in SHARD_BY:
            raise ValueError(f"shard by {self.by!r}: one of {', '.join(SHARD_BY)}")

    def shard(self, item: Mapping[str, Any]) -> int:
        return shard_of_key(shard_key(item, self.by, self.default_endpoint), self.shards)

    def labelled(self, item: Mapping[str, Any]) -> bool:
        """Whether ``item`` carries a shard label within ``0..shards-1`` (one outside, left by a replica set
        run with more shards, is relabelled)."""
        labels = (item.get("metadata") or {}).get("labels") or {}
        return labels.get(LABEL_SHARD) in {str(k) for k in range(self.shards)}

    def label_at_create(self, item: Mapping[str, Any]) -> dict[str, str] | None:
        """The shard label a new resource should be stored with; None when not sharded or already labelled."""
        if self.shards <= 1 or self.labelled(item):
            return None
        return {LABEL_SHARD: str(self.shard(item))}
