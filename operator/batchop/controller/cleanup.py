"""Deletion of schedules whose resource vanished while the schedule was being created or adopted.

When the status write after a create finds the resource gone (its finalizer removed by hand, or never in
place), or the resource was deleted during an adoption, no deletion step will ever run for it. The
operator then applies the resource's ``deletionPolicy`` to the schedule itself, in the background, with the
same deletion steps as a deleted resource gets (:func:`batchop.controller.reconcile.delete.delete`).
"""

from __future__ import annotations

import asyncio
import logging

from batchop.controller.reconcile.delete import delete
from batchop.controller.reconcile.ports import ScheduleGateway
from batchop.controller.reconcile.view import ObjectView

log = logging.getLogger(__name__)

MAX_STEPS = 300
"""Deletion steps tried before giving up on a vanished resource's schedule."""
STEP_WAIT = 2.0
"""Seconds between two steps when the step named no delay."""


class OrphanCleanup:
    """Background deletions of the schedules of vanished resources."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, view: ObjectView, schedule_id: str | None, gateway: ScheduleGateway) -> None:
        """Apply ``view``'s ``deletionPolicy`` to ``schedule_id`` until Batch lets go of it."""
        gone = ObjectView(view.namespace, view.name, view.uid, view.generation, view.spec, view.annotations)
        if schedule_id:
            gone.status["scheduleId"] = schedule_id
        log.warning(
            "%s/%s was deleted while its Batch schedule %s was being created or adopted: applying deletionPolicy %s",
            view.namespace,
            view.name,
            schedule_id,
            view.spec.get("deletionPolicy") or "Delete",
        )
        task = asyncio.get_running_loop().create_task(self._run(gone, gateway), name=f"cleanup {schedule_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, gone: ObjectView, gateway: ScheduleGateway) -> None:
        for _ in range(MAX_STEPS):
            step = await delete(gone, gateway)
            if step.done:
                return
            await asyncio.sleep(step.retry_after or STEP_WAIT)
        log.error(
            "gave up deleting Batch schedule %s of vanished %s/%s", gone.status.get("scheduleId"), *gone.key
        )
