"""The kopf handlers: thin, each one calls :class:`batchop.controller.runtime.Runtime`.

- ``on.startup``: kopf settings (own finalizer and annotation prefix ``azurebatch.dev``, watch timeouts,
  no status-stored progress), then the runtime.
- ``on.event``: every watch event refreshes the runtime's tracked copy (so the poller knows every object).
- ``on.resume`` / ``on.create`` / ``on.update``: one reconcile (idempotent). Recoverable errors raise
  :class:`kopf.TemporaryError` with the delay Batch asked for; terminal ones return (the condition says
  what to fix; the next spec change re-runs it). Handlers return None: nothing goes to ``status.<id>``.
- ``on.delete``: only for objects with ``status.scheduleId`` (``when=`` filter), which is what makes kopf
  add the finalizer ``azurebatch.dev/finalizer`` only once a Batch schedule exists, and drop it for
  objects that never created one. Not done -> TemporaryError (the finalizer stays).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from batchop.api.names import FINALIZER, GROUP, PLURAL, PREFIX, VERSION
from batchop.batch.settings import Settings
from batchop.controller import runnow
from batchop.controller.runtime import Runtime
from batchop.observability import metrics

log = logging.getLogger(__name__)



def has_schedule(status: Any, meta: Any = None, **_: Any) -> bool:
    """Whether a Batch schedule was created (or adopted / observed) for the object: ``status.scheduleId``,
    or our finalizer, which the runtime adds itself right after a create, before the status write (so a
    deletion racing with the create still runs the delete handler instead of kopf dropping the finalizer)."""
    if (status or {}).get("scheduleId"):
        return True
    return FINALIZER in ((meta or {}).get("finalizers") or [])


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings batchop relies on (see the module docstring)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, v1=False)
    settings.posting.level = logging.WARNING  # our own Events, not kopf's per-handler chatter
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.execution.max_workers = 4
    settings.execution.default_backoff = 15


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register the handlers on ``registry`` bound to ``runtime``."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        """kopf's own raw login (service account, else kubeconfig): no API client library needed."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        await runtime.start(settings)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.event(*resource, registry=registry)
    async def watch(*, type: str, body: kopf.Body, **_: Any) -> None:
        runtime.observe(body, type)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def reconcile(body: kopf.Body, **_: Any) -> None:
        outcome = await runtime.reconcile(body)
        if outcome.synced.get("status") == "False":
            metrics.count_error("reconcile", str(outcome.synced.get("reason")))
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(str(outcome.synced.get("message")), delay=outcome.retry_after)

    seen: dict[str, tuple[str | None, str | None]] = {}  # uid -> (adopt, reconcile-policy) last seen

    @kopf.on.event(*resource, registry=registry)
    async def annotations_changed(*, type: str, body: kopf.Body, **_: Any) -> None:
        """kopf leaves annotations under its own prefix (ours, ``azurebatch.dev``) out of the diff that drives
        update handlers, so ``kubectl annotate`` of ``run-now``, ``adopt`` or ``reconcile-policy`` runs none.
        They are noticed here, on the watch event, and reconciled at once: a new ``run-now`` value (compared
        with the freshest status), or a changed ``adopt`` / ``reconcile-policy`` value."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid"))
        if type == "DELETED":
            seen.pop(uid, None)
            return
        notes = meta.get("annotations") or {}
        current = (notes.get(f"{PREFIX}/adopt"), notes.get(f"{PREFIX}/reconcile-policy"))
        previous = seen.get(uid)
        seen[uid] = current
        known = runtime.writer.known(str(meta.get("namespace")), str(meta.get("name"))) if runtime.writer else None
        if runnow.pending(body, known) or (previous is not None and previous != current):
            if not meta.get("deletionTimestamp"):
                await runtime.reconcile(body)

    @kopf.on.delete(*resource, registry=registry, when=has_schedule)
    async def delete(body: kopf.Body, **_: Any) -> None:
        with metrics.reconcile_timer("delete"):
            outcome = await runtime.delete(body)
        if not outcome.done:
            raise kopf.TemporaryError(str(outcome.synced.get("message")), delay=outcome.retry_after or 5)


def build(settings: Settings) -> tuple[kopf.OperatorRegistry, Runtime]:
    registry = kopf.OperatorRegistry()
    runtime = Runtime(settings)
    register(registry, runtime)
    return registry, runtime
