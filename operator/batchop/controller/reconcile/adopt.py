"""The ownership decision for a schedule that exists: write to it as ours, adopt it, or refuse.

- Ours (our uid mark): carry on.
- Unmarked or marked for a deleted object of the same namespace/name, while our status records the id:
  the marks were removed behind our back; they are written again with the next write.
- Unowned and ``azurebatch.dev/adopt: "true"``: adopted as it is; nothing is written unless something
  differs, and the marks go with that first write.
- Marked for a deleted object of the same namespace/name and ``adopt``: taken over, everything written.
- Anything else: terminal ``AlreadyExists`` naming the owner and the fix. A schedule marked by another live
  object is never taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, MARK_OWNER
from batchop.api.types import Condition
from batchop.controller.reconcile.outcome import Outcome, Progress, synced_false
from batchop.controller.reconcile.ownership import Ownership, marks, ownership
from batchop.controller.reconcile.view import ObjectView

log = logging.getLogger(__name__)

Claim = Literal["ours", "as-is", "take-over"]
"""How the pass may write to the schedule: ``ours`` (compare with the marks), ``as-is`` (an unowned
schedule adopted: compare without the marks; the marks go with the first write), ``take-over`` (a
schedule of a deleted object with the same name adopted: write it all)."""


def claim(obj: ObjectView, observed: Mapping[str, Any], progress: Progress) -> Claim | Outcome:
    """How the pass may write to ``observed`` (records an ``adopt`` write), or the refusal."""
    owned = ownership(observed, obj)
    as_is = owned == "unowned" and obj.adopt  # no write unless something differs
    recorded = str(obj.status.get("scheduleId") or "").lower() == progress.schedule_id.lower()
    if owned in ("unowned", "stale") and recorded:
        # our status says we created or adopted it: the marks were removed behind our back; put them back
        log.info("schedule %s lost its owner marks; restoring them for %s", progress.schedule_id, obj.owner)
        owned = "ours"
    if owned != "ours":
        if owned == "foreign" or not obj.adopt:
            return progress.finish(_refusal(obj, observed, owned, progress.schedule_id), done=False)
        log.info("adopting Batch schedule %s for %s", progress.schedule_id, obj.owner)
        progress.writes.append("adopt")
    if as_is:
        return "as-is"
    return "ours" if owned == "ours" else "take-over"


def _refusal(obj: ObjectView, observed: Mapping[str, Any], owned: Ownership, schedule_id: str) -> Condition:
    owner = marks(observed).get(MARK_OWNER)
    whose = f"owned by {owner}" if owner else "not created by this resource"
    hint = (
        "set spec.scheduleId to another id"
        if owned == "foreign"
        else f'set spec.scheduleId to another id, or annotate {ANNOTATION_ADOPT}="true" to take it over'
    )
    message = f"a Batch job schedule {schedule_id!r} already exists, {whose}: {hint}"
    return synced_false(obj, cond.REASON_ALREADY_EXISTS, message)
