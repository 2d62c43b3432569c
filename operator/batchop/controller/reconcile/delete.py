"""The delete decision: one step of deleting a resource's schedule, as ``spec.deletionPolicy`` says.

- ``Delete`` (default): terminate, then delete, then wait until Batch returns 404; "not done" meanwhile
  (``Synced=False`` reason ``Deleting``), so the finalizer stays. Azure keeps a terminated schedule
  ``terminating`` and a deleted one ``deleting`` (GET answers 200 with that state, 5 to 15 s and more in the
  recorded traffic) before the 404: a schedule in either window is waited for whoever asked, marks or not, and
  the condition's message names the window.
- ``Orphan``: the owner marks are removed (PATCH with ``If-Match``); the schedule keeps running unmanaged.
- No schedule recorded, already gone, not marked as ours, or ``reconcile-policy: skip``: released at once,
  without touching Batch.
- Batch unreachable or refusing: "not done" with ``DeletionPending``, retried. Never lets go silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import OWNER_MARKS
from batchop.batch.gateway import BatchError
from batchop.controller.reconcile.outcome import RETRY_DELETE_WAIT, Outcome, error_outcome
from batchop.controller.reconcile.ownership import owns
from batchop.controller.reconcile.ports import ScheduleGateway
from batchop.controller.reconcile.view import ObjectView

log = logging.getLogger(__name__)

WINDOW_STATES = frozenset({"terminating", "deleting"})
"""Schedule states on the way out: Batch still answers GET (200) but the schedule is going."""


def released(schedule_id: str | None) -> Outcome:
    """Done: the finalizer may go."""
    return Outcome(
        synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_DELETING, "released"), done=True, schedule_id=schedule_id
    )


async def delete(obj: ObjectView, gateway: ScheduleGateway) -> Outcome:
    """One step of deletion. ``done`` means the finalizer may be removed; otherwise retry after
    ``retry_after``."""
    schedule_id = obj.status.get("scheduleId")
    if not schedule_id or obj.policy == "skip":
        return released(schedule_id)
    try:
        found = await gateway.get_schedule(schedule_id)
        if found is None:
            return released(schedule_id)
        observed, etag = found
        if observed.get("state") in WINDOW_STATES:  # on its way out: only Batch's 404 releases the finalizer
            return _waiting(obj, schedule_id, str(observed.get("state")), [])
        if not owns(observed, obj):
            log.warning(
                "schedule %s is not marked as owned by %s: letting go without touching it", schedule_id, obj.owner
            )
            return released(schedule_id)
        if str(obj.spec.get("deletionPolicy") or "Delete") == "Orphan":
            return await _orphan(gateway, schedule_id, observed, etag)
        return await _terminate_and_delete(obj, gateway, schedule_id, observed)
    except BatchError as err:
        if err.status == 404:
            return released(schedule_id)
        return error_outcome(obj, err, schedule_id, deleting=True)


async def _orphan(gateway: ScheduleGateway, schedule_id: str, observed: Mapping[str, Any], etag: str | None) -> Outcome:
    """Remove the owner marks and let the schedule go."""
    outcome = released(schedule_id)
    metadata = observed.get("metadata") or []
    kept = [m for m in metadata if m.get("name") not in OWNER_MARKS]
    if len(kept) != len(metadata):  # an adopted, never-written schedule has none
        await gateway.patch_schedule(schedule_id, {"metadata": kept}, etag)
    outcome.writes.append("orphan")
    return outcome


async def _terminate_and_delete(
    obj: ObjectView, gateway: ScheduleGateway, schedule_id: str, observed: Mapping[str, Any]
) -> Outcome:
    """The next step towards Batch reporting the schedule gone: terminate an active or disabled one,
    delete a completed one, and wait."""
    writes: list[str] = []
    state = observed.get("state")
    if state in ("active", "disabled"):
        await gateway.terminate_schedule(schedule_id)
        writes.append("terminate")
        state = "terminating"
    if state == "completed":
        await gateway.delete_schedule(schedule_id)
        writes.append("delete")
        state = "deleting"
    return _waiting(obj, schedule_id, str(state), writes)


def _waiting(obj: ObjectView, schedule_id: str, state: str, writes: list[str]) -> Outcome:
    """Not done: Batch still has the schedule (``state``); the finalizer stays and the step comes back."""
    window = {"terminating": "terminate", "deleting": "delete"}.get(state)
    where = f"in Batch's {window} window (state {state})" if window else f"state {state}"
    return Outcome(
        synced=cond.make(
            cond.SYNCED,
            cond.FALSE,
            cond.REASON_DELETING,
            f"deleting Batch schedule {schedule_id}: {where}; the finalizer stays until Batch answers 404",
            generation=obj.generation,
        ),
        retry_after=RETRY_DELETE_WAIT,
        done=False,
        writes=writes,
        schedule_id=schedule_id,
    )
