"""The suspend decision: ``spec.suspend: true`` disables the schedule, ``false`` enables it, only when its
Batch state differs (a disabled schedule creates no jobs; its recurrence is kept)."""

from __future__ import annotations

from batchop.controller.reconcile.outcome import Progress
from batchop.controller.reconcile.ports import ScheduleGateway
from batchop.controller.reconcile.view import ObjectView


async def suspend_or_resume(obj: ObjectView, gateway: ScheduleGateway, state: object, progress: Progress) -> None:
    """Disable or enable the schedule, whose Batch state is ``state``, as ``spec.suspend`` says."""
    if obj.suspend and state == "active":
        await gateway.disable_schedule(progress.schedule_id)
        progress.writes.append("disable")
    elif not obj.suspend and state == "disabled":
        await gateway.enable_schedule(progress.schedule_id)
        progress.writes.append("enable")
