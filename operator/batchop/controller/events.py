"""Kubernetes Events on BatchJobSchedules: one per Batch write, and a Warning when ``Synced`` turns False.

``Created``, ``Adopted``, ``Updated`` (which properties), ``Suspended``, ``Resumed``, ``RunNow``,
``Terminating``, ``Deleting`` and ``Orphaned`` come from a reconcile's writes (:data:`WRITE_EVENTS`); the
poller posts ``JobStarted``, ``JobSucceeded``, ``JobFailed``, ``ScheduleCompleted`` and ``DriftDetected``
through the same :class:`EventPoster`. Messages are redacted by the client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_RUN_NOW
from batchop.api.types import Condition
from batchop.controller.ports import EventApi
from batchop.controller.status import EventSpec

WRITE_EVENTS = {
    "create": ("Created", "created Batch schedule {id}"),
    "adopt": ("Adopted", "adopted the existing Batch schedule {id}"),
    "patch": ("Updated", "updated Batch schedule {id} ({detail}); later jobs use the change"),
    "disable": ("Suspended", "disabled Batch schedule {id}"),
    "enable": ("Resumed", "enabled Batch schedule {id}"),
    "terminate": ("Terminating", "terminating Batch schedule {id}"),
    "delete": ("Deleting", "deleting Batch schedule {id}"),
    "orphan": ("Orphaned", "removed the owner marks from Batch schedule {id} and let it go"),
    "runnow": ("RunNow", f"started job {{detail}} now from Batch schedule {{id}} ({ANNOTATION_RUN_NOW})"),
}
"""Event reason and message per Batch write, by the first word of
:attr:`batchop.controller.reconcile.outcome.Outcome.writes` entries (``word:detail``)."""


class EventPoster:
    """Posts Events on resources through the API server."""

    def __init__(self, api: EventApi) -> None:
        self.api = api

    async def post(self, namespace: str, name: str, uid: str, event: EventSpec) -> None:
        obj = {"namespace": namespace, "name": name, "uid": uid}
        await self.api.post_event(obj, type_=event.type, reason=event.reason, message=event.message)

    async def for_writes(self, namespace: str, name: str, uid: str, writes: Sequence[str], schedule_id: Any) -> None:
        """A Normal Event per Batch write of a reconcile or deletion step."""
        for write in writes:
            word, _, detail = write.partition(":")
            if word in WRITE_EVENTS:
                reason, template = WRITE_EVENTS[word]
                message = template.format(id=schedule_id, detail=detail)
                await self.post(namespace, name, uid, EventSpec("Normal", reason, message))

    async def for_synced(
        self, namespace: str, name: str, uid: str, old: Mapping[str, Any], new: Condition
    ) -> None:
        """A Warning with the reason when ``Synced`` turns False with a new reason or message (not while
        the schedule is being deleted: that is progress, not a problem)."""
        if new.get("status") != cond.FALSE or new.get("reason") == cond.REASON_DELETING:
            return
        if old.get("reason") != new.get("reason") or old.get("message") != new.get("message"):
            await self.post(namespace, name, uid, EventSpec("Warning", str(new.get("reason")), str(new.get("message"))))
