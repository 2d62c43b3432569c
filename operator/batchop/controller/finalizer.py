"""Our finalizer around a create or an adoption: on the resource exactly while a Batch schedule may exist.

:class:`FinalizerHold` is the reconcile's :class:`~batchop.controller.reconcile.ports.Hold`: the finalizer
is added immediately before the first Batch create, so a crash or a deletion at any moment after the create
can never lose track of the schedule. The add is one JSON patch testing the ``resourceVersion`` the watch
event showed (no GET, :meth:`batchop.kube.client.KubeClient.add_finalizer`). If it cannot be added, nothing
is created: the error is recoverable (``KubernetesUnavailable``) and retried.
"""

from __future__ import annotations

import logging

from batchop.api import conditions as cond
from batchop.api.names import FINALIZER
from batchop.batch.gateway import BatchError
from batchop.controller.ports import FinalizerApi
from batchop.controller.reconcile.view import ObjectView

log = logging.getLogger(__name__)


class FinalizerHold:
    """Adds and removes our finalizer on one resource (see the module docstring)."""

    def __init__(self, api: FinalizerApi, view: ObjectView) -> None:
        self.api = api
        self.view = view

    async def acquire(self) -> bool:
        """Add the finalizer before the create. False: the resource is already gone or being deleted."""
        view = self.view
        try:
            return await self.api.add_finalizer(view.namespace, view.name, view.uid, FINALIZER, seen=view.seen)
        except Exception as exc:
            # Never create without the finalizer in place: a deletion in that window would orphan the
            # schedule. Not creating now is safe; the error is retried like any other recoverable one.
            log.warning("could not add the finalizer to %s/%s: %s", view.namespace, view.name, exc)
            raise BatchError(
                f"could not add the finalizer {FINALIZER} before creating the Batch schedule: {exc}; retrying",
                reason=cond.REASON_KUBERNETES_UNAVAILABLE,
                terminal=False,
            ) from exc

    async def release(self) -> None:
        """Remove it again: Batch refused the create for good, or the id is someone else's."""
        await self.api.remove_finalizer(self.view.namespace, self.view.name, self.view.uid, FINALIZER)

    async def after_adopt(self) -> bool:
        """Add it after an adoption, which wrote nothing to Batch: when it cannot be added now, the status
        write follows, and the next watch event of an object with ``status.scheduleId`` and without it adds it
        (:meth:`batchop.controller.runtime.Runtime.handle_event`).
        False: the resource was deleted meanwhile."""
        try:
            return await self.acquire()
        except BatchError:
            return True
