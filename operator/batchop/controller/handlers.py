"""The kopf handlers: thin, each one calls :class:`batchop.controller.runtime.Runtime`.

- ``on.startup``: kopf settings (own finalizer and annotation prefix ``azurebatch.dev``, watch timeouts,
  no status-stored progress); ``on.cleanup`` stops the pollers and closes the clients.
- ``on.event``: every watch event refreshes the runtime's tracked copy (so the poller knows every object).
  kopf leaves annotations under its own prefix (ours) out of the diff that drives update handlers, so
  ``kubectl annotate`` of ``run-now``, ``adopt`` or ``reconcile-policy`` runs none: the runtime notices them
  here, and the handler reconciles at once.
- ``on.resume`` / ``on.create`` / ``on.update``: one reconcile (idempotent). Recoverable errors raise
  :class:`kopf.TemporaryError` with the delay Batch asked for; terminal ones return (the condition says
  what to fix; the next spec change re-runs it). When every reconcile slot is busy the resource is parked
  in the runtime's work queue and the handler returns at once (:mod:`batchop.controller.workqueue`).
  Handlers return None: nothing goes to ``status.<id>``.
- ``on.delete``: only for objects with ``status.scheduleId`` or our finalizer (``when=`` filter), which is
  what makes kopf add the finalizer only once a Batch schedule exists, and drop it for objects that never
  created one. Not done -> TemporaryError (the finalizer stays).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from batchop.api.names import FINALIZER, GROUP, PLURAL, PREFIX, VERSION
from batchop.batch.settings import Settings
from batchop.controller.diffbase import TrackedDiffBase, UnmarkedProgressStorage
from batchop.controller.runtime import Runtime, count_failed
from batchop.controller.tracking import Tracker
from batchop.kube.client import KubeClient, KubeError
from batchop.observability import metrics

log = logging.getLogger(__name__)


def has_schedule(status: Any, meta: Any = None, **_: Any) -> bool:
    """Whether a Batch schedule was created (or adopted / observed) for the object: ``status.scheduleId``,
    or our finalizer, which the runtime adds itself right before the first create, before any status write (so a
    deletion racing with the create still runs the delete handler instead of kopf dropping the finalizer)."""
    if (status or {}).get("scheduleId"):
        return True
    return FINALIZER in ((meta or {}).get("finalizers") or [])


def configure(settings: kopf.OperatorSettings, tracker: Tracker | None = None) -> None:
    """kopf settings batchop relies on (see the module docstring). With the runtime's ``tracker``, kopf's
    last-handled configuration is kept in memory on the tracked entries instead of in an annotation, and its
    progress annotations come without the ``kopf-managed`` marker, which saves two PATCHes and two watch events
    per new resource (:mod:`batchop.controller.diffbase`)."""
    settings.persistence.finalizer = FINALIZER
    if tracker is not None:
        settings.persistence.progress_storage = UnmarkedProgressStorage(prefix=PREFIX, v1=False)
        settings.persistence.diffbase_storage = TrackedDiffBase(tracker, PREFIX)
    else:
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
    def kopf_login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        return login(settings)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, runtime.tracker)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.close()

    @kopf.on.event(*resource, registry=registry)
    async def watch(*, type: str, body: kopf.Body, **_: Any) -> None:
        if runtime.observe(body, type):
            await runtime.reconcile_or_park(body)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def reconcile(body: kopf.Body, **_: Any) -> None:
        outcome = await runtime.reconcile_or_park(body)
        if outcome is None:
            return  # parked: the runtime's work queue runs it, and its retries
        count_failed(outcome)
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(str(outcome.synced.get("message")), delay=outcome.retry_after)

    @kopf.on.delete(*resource, registry=registry, when=has_schedule)
    async def delete(body: kopf.Body, **_: Any) -> None:
        with metrics.reconcile_timer("delete") as run:
            outcome = await runtime.delete(body)
            run.settle(outcome.synced, outcome.retry_after)
        if not outcome.done:
            raise kopf.TemporaryError(str(outcome.synced.get("message")), delay=outcome.retry_after or 5)


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """kopf's own raw login (service account, else kubeconfig), for kopf's watch and the operator's own client
    alike: no API client library needed."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


def build(settings: Settings) -> tuple[kopf.OperatorRegistry, Runtime]:
    """The registry with the handlers, and the runtime they call. :class:`batchop.kube.client.KubeError` when
    there are no Kubernetes credentials."""
    registry = kopf.OperatorRegistry()
    info = login(kopf.OperatorSettings())
    if info is None:
        raise KubeError(0, "no Kubernetes credentials: set KUBECONFIG or run in a cluster")
    runtime = Runtime(settings, KubeClient(info))
    register(registry, runtime)
    return registry, runtime
