"""The update decision: PATCH only the top-level properties that differ, with ``If-Match``. Never a PUT.

Desired and observed are compared in normalised form (:func:`batchop.spec.diff.changed_properties`:
durations, read-time defaults, order, SAS query strings), so Batch's own rewriting of what it stores is
no change. A 412 (someone changed the schedule meanwhile) is a recoverable ``Conflict``: the retry re-reads
it. Changes affect later jobs only. A schedule this pass has just created from the desired body is not
compared (its answer to the create is that body), which is a burst's most common pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchop.controller.reconcile.adopt import Claim
from batchop.controller.reconcile.outcome import Progress
from batchop.controller.reconcile.ownership import without_marks
from batchop.controller.reconcile.ports import Model, ScheduleGateway

TAKE_OVER = ["schedule", "jobSpecification", "metadata"]
"""What a take-over writes: everything (:data:`batchop.controller.reconcile.adopt.Claim`)."""


def changes(
    claim: Claim, observed: Mapping[str, Any], progress: Progress, model: Model, force: Sequence[str]
) -> list[str]:
    """The properties to PATCH. ``force`` names properties sent even when they compare equal
    (``jobSpecification`` for a SAS renewal)."""
    desired = progress.desired
    if claim == "as-is":
        bare = without_marks(desired)
        changed = model.changed_properties(bare, observed)
        if changed and "metadata" not in changed:
            changed.append("metadata")  # the owner marks go with the first write
        if not changed:
            progress.desired = bare  # what the poller's drift check compares
    elif claim == "ours":
        changed = model.changed_properties(desired, observed)
    else:
        changed = list(TAKE_OVER)
    changed += [p for p in force if p not in changed and p in desired]
    return changed


async def patch(
    gateway: ScheduleGateway,
    claim: Claim,
    found: tuple[dict[str, Any], str | None],
    progress: Progress,
    model: Model,
    force: Sequence[str],
) -> None:
    """PATCH the changed properties of the schedule ``found`` (body and ETag) with ``If-Match``."""
    observed, etag = found
    desired = progress.desired  # with the owner marks, even when the drift check compares without them
    if "create" in progress.writes and not force:
        return  # Batch just made this schedule from this very body: there is nothing to compare
    changed = changes(claim, observed, progress, model, force)
    if changed:
        await gateway.patch_schedule(progress.schedule_id, {k: desired[k] for k in changed if k in desired}, etag)
        progress.writes.append("patch:" + ",".join(changed))
