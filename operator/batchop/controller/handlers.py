"""The kopf handlers around :class:`batchop.controller.runtime.Runtime`, and kopf's settings.

- ``on.startup``: kopf settings (watch timeouts, Events only for warnings, no diff-base, a finalizer name of
  its own that it never adds), then the controller's watch (:class:`batchop.kube.watch.ResourceWatch`);
  ``on.cleanup`` stops the watch, then the pollers, and closes the clients.
- Every watch event, the initial listing's included, goes to
  :meth:`~batchop.controller.runtime.Runtime.handle_event`, which keeps the tracked copy current (the pollers
  know every object), reconciles what changed (decided by ``metadata.generation``, our annotations and
  ``run-now``), runs deletion steps and removes our finalizer after the last, with retries of its own.

The watch is batchop's own, not kopf's ``on.event``: kopf's way from an event to a handler cost nearly four
times batchop's watch (:mod:`batchop.kube.watch` says why and how much). kopf's ``on.event`` is still the
watch when kopf's peering is asked for (``batchop run --no-standalone``, ``watch=None`` here), since only
kopf's own watch pauses when a peer with a higher priority appears.

Why no ``on.create`` / ``on.update`` / ``on.resume`` / ``on.delete``: with any of them kopf runs its change
detection on every event of every object (the object's essence built, compared with the last handled one and
stored, progress annotations read and written, a handler state kept and logged), and adds or removes the
finalizer it is told about. The runtime decided every reconcile itself already (the handlers only called it),
so that machinery was a fifth of the operator's CPU in a burst of creates for nothing it used
(docs/performance.md, tenth pass). kopf stays the webhook server, the liveness endpoint and the lifecycle.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from batchop.api.names import GROUP, PLURAL, PREFIX, VERSION
from batchop.batch.settings import Settings
from batchop.controller.diffbase import NoDiffBase
from batchop.controller.runtime import Runtime
from batchop.kube.client import KubeClient, KubeError
from batchop.kube.watch import ResourceWatch, WatchScope

log = logging.getLogger(__name__)

KOPF_FINALIZER = f"{PREFIX}/kopf"
"""The finalizer kopf is told is its own. With no handler of creation, update or deletion it never adds it,
and it removes "its" finalizer from any object that has it: so it must not be ours
(:data:`batchop.api.names.FINALIZER`, which :mod:`batchop.controller.deletions` removes)."""


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings batchop relies on (see the module docstring)."""
    settings.persistence.finalizer = KOPF_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX, v1=False)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # our own Events, not kopf's per-handler chatter
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.execution.max_workers = 4


def register(registry: kopf.OperatorRegistry, runtime: Runtime, watcher: ResourceWatch | None = None) -> None:
    """Register the handlers on ``registry`` bound to ``runtime``: ``watcher`` (feeding
    :meth:`Runtime.handle_event`) started at startup, or kopf's ``on.event`` when it is None (kopf's peering)."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def kopf_login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        return login(settings)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        if watcher is not None:
            watcher.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if watcher is not None:
            await watcher.stop()
        await runtime.close()

    if watcher is not None:
        @kopf.on.probe(id="watch", registry=registry)
        def watch_health(**_: Any) -> dict[str, Any]:
            return watcher.health()
    else:
        @kopf.on.event(*resource, registry=registry)
        async def on_event(*, type: str | None, body: kopf.Body, **_: Any) -> None:
            await runtime.handle_event(body, type)


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """kopf's own raw login (service account, else kubeconfig), for kopf and the operator's own client
    alike: no API client library needed."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


def build(
    settings: Settings, watch: WatchScope | None = None
) -> tuple[kopf.OperatorRegistry, Runtime, ResourceWatch | None]:
    """The registry with the handlers, the runtime they call, and the watch feeding it (None: kopf's
    ``on.event``, see :func:`register`). :class:`batchop.kube.client.KubeError` when there are no Kubernetes
    credentials."""
    registry = kopf.OperatorRegistry()
    info = login(kopf.OperatorSettings())
    if info is None:
        raise KubeError(0, "no Kubernetes credentials: set KUBECONFIG or run in a cluster")
    client = KubeClient(info)
    runtime = Runtime(settings, client)
    watcher = ResourceWatch(client, watch, runtime.handle_event) if watch is not None else None
    register(registry, runtime, watcher)
    return registry, runtime, watcher
