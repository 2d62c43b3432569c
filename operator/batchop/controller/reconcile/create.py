"""The create decision: a new resource's schedule is created at once, with the finalizer in place first.

A resource that never recorded a schedule id sends the create without a GET before it (one request fewer
for the common case). Batch's ``JobScheduleExists`` answer sends it down the GET path: someone else's
schedule under that id, or ours from a crash between the create and the status write (the owner marks
tell, :mod:`.adopt`). A schedule this pass created is not read back: it holds the body just sent, in the
``active`` state Azure gives every new schedule, under the ETag of the ``201 Created`` answer, and that goes
into the same status write as ``scheduleId``. What only Batch computes (``executionInfo``: the next run, the
first job) comes with the next status cycle. Only an answer without an ETag is followed by a GET.

The finalizer is added before the first Batch write (:class:`~.ports.Hold`), so a deletion at any moment
after the create finds the deletion steps waiting for it; when Batch refuses the create for good, or the id turns
out to be someone else's, it is removed again.
"""

from __future__ import annotations

from typing import Any

from batchop.api import conditions as cond
from batchop.batch.gateway import BatchError
from batchop.controller.reconcile.outcome import Outcome, Progress
from batchop.controller.reconcile.ownership import owns
from batchop.controller.reconcile.ports import Hold, ScheduleGateway
from batchop.controller.reconcile.view import ObjectView

Found = tuple[dict[str, Any], str | None]
"""A schedule as Batch returned it, and its ETag."""


def creates_first(obj: ObjectView) -> bool:
    """Whether the pass sends the create without a GET first: a resource with no recorded schedule id that
    neither only observes (``reconcile-policy: skip``) nor adopts."""
    return not obj.status.get("scheduleId") and obj.policy != "skip" and not obj.adopt


async def create(obj: ObjectView, gateway: ScheduleGateway, progress: Progress, hold: Hold | None) -> Found | Outcome:
    """Create the schedule (or find the one under its id) and read it back; an :class:`Outcome` when the
    resource is being deleted and nothing may be created."""
    if hold is not None and not await hold.acquire():
        deleting = cond.make(
            cond.SYNCED,
            cond.FALSE,
            cond.REASON_DELETING,
            "the resource is being deleted: not creating",
            generation=obj.generation,
        )
        return progress.finish(deleting, done=False)
    existed = False
    try:
        etag = await gateway.create_schedule(progress.desired)
        progress.writes.append("create")
        if etag:
            return created(progress.desired, etag)
    except BatchError as err:
        if err.code != "JobScheduleExists":
            if err.terminal and hold is not None:
                await hold.release()  # nothing was created: no finalizer may stay behind
            raise
        existed = True
    found = await gateway.get_schedule(progress.schedule_id)
    if found is None:  # created and deleted at once by someone else: try again soon
        vanished = f"schedule {progress.schedule_id} vanished right after creation"
        raise BatchError(vanished, reason=cond.REASON_CONFLICT, terminal=False)
    if existed and hold is not None and not owns(found[0], obj) and not obj.adopt:
        await hold.release()  # someone else's schedule: nothing of ours to guard on deletion
    return found


def created(body: dict[str, Any], etag: str) -> Found:
    """The schedule Batch has just created from ``body``: that body, ``active``, under ``etag``."""
    return {**body, "state": "active", "eTag": etag}, etag
