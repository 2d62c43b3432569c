"""Reconciles the poller starts: drift repair at once, and retries of stuck resources with a backoff.

:class:`Repairer` re-runs the reconcile of a tracked resource from a fresh read of the object (drift, SAS
renewal). :class:`RetryScheduler` decides when a resource stuck on a reason that can clear without a spec
change (``AuthenticationFailed``, ``CredentialsNotFound``, ``AlreadyExists``, the recoverable ones) is tried
again, so a stuck resource costs Batch at most one request per backoff step:

- at once when the resource's credentials Secret changed (rotation, its ``resourceVersion`` moved);
- ``CredentialsNotFound`` every cycle (it costs no Batch request);
- otherwise with a backoff doubling from one resync interval up to 5 minutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from batchop.api import conditions as cond
from batchop.batch.credentials import SecretSource
from batchop.controller.ports import ObjectReader
from batchop.controller.tracking import Tracked

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
"""Seconds: the longest wait between two retries of a stuck resource."""

ERROR_RETRY = 15.0
"""Seconds before a reconcile or deletion step that raised an unexpected error (or a finalizer removal that
failed) is tried again: kopf's default backoff, which applied to its handlers."""

Reconcile = Callable[..., Awaitable[Any]]
"""``reconcile(body, force=...)``: :meth:`batchop.controller.runtime.Runtime.reconcile`."""


class Repairer:
    """Re-runs the reconcile of a tracked resource (the poller's ``on_drift``)."""

    def __init__(self, objects: ObjectReader, reconcile: Reconcile) -> None:
        self.objects = objects
        self.reconcile = reconcile

    async def __call__(self, member: Tracked, why: str, force: tuple[str, ...] = ()) -> None:
        body = await self.objects.get_object(member.namespace, member.name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        log.info("reconciling %s/%s: %s", member.namespace, member.name, why)
        try:
            await self.reconcile(body, force=force)
        except Exception:
            log.exception("reconcile of %s/%s after %r failed", member.namespace, member.name, why)


class RetryScheduler:
    """Retries stuck resources without hammering Batch (the poller's ``on_retry``; see the module docstring)."""

    def __init__(self, objects: ObjectReader, secrets: SecretSource, repair: Repairer, interval: float) -> None:
        self.objects = objects
        self.secrets = secrets
        self.repair = repair
        self.interval = interval

    async def __call__(self, member: Tracked, why: str) -> None:
        loop = asyncio.get_running_loop()
        version = await self._secret_version(member)
        changed = version is not None and version != member.retry_version
        if member.synced_reason != cond.REASON_CREDENTIALS_NOT_FOUND and not changed and loop.time() < member.retry_at:
            return
        member.retry_version = version
        member.retry_delay = min(max(member.retry_delay * 2, self.interval), MAX_BACKOFF)
        member.retry_at = loop.time() + member.retry_delay
        await self.repair(member, why)

    async def _secret_version(self, member: Tracked) -> str | None:
        """``resourceVersion`` of the resource's credentials Secret (from the short cache), None if none."""
        body = await self.objects.get_object(member.namespace, member.name)
        spec: Mapping[str, Any] = (body or {}).get("spec") or {}
        ref = (spec.get("account") or {}).get("credentialsSecretRef") or {}
        if not ref.get("name"):
            return None
        found = await self.secrets.get(member.namespace, str(ref["name"]))
        return found[1] if found else "missing"
