"""One reconcile pass: make Batch match a resource's spec, one decision after the other.

Idempotent: a re-run after a crash at any point converges without duplicates. The order (see the package
docstring): the spec checks before any Batch request, the desired body with its blob references resolved,
then create (:mod:`.create`) or one GET, ``reconcile-policy: skip`` observing only, ownership
(:mod:`.adopt`), a schedule that is going away or completed, then :mod:`.patch`, :mod:`.suspend` and
:mod:`.run_now`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_RECONCILE_POLICY
from batchop.batch.gateway import BatchError
from batchop.controller.reconcile import adopt, create, patch, run_now, suspend
from batchop.controller.reconcile.create import Found
from batchop.controller.reconcile.outcome import RETRY_DEFAULT, Outcome, Progress, error_outcome, synced_false
from batchop.controller.reconcile.ports import BlobResolver, Hold, Model, ScheduleGateway
from batchop.controller.reconcile.view import ObjectView


async def apply(
    obj: ObjectView,
    gateway: ScheduleGateway,
    *,
    model: Model,
    resolve_blobs: BlobResolver | None = None,
    force: Sequence[str] = (),
    hold: Hold | None = None,
) -> Outcome:
    """Make Batch match ``obj``'s spec. ``force`` names properties to PATCH even when they compare equal
    (``jobSpecification`` for a SAS renewal); ``hold`` guards the create with the finalizer."""
    checked = schedule_id_of(obj, model)
    if isinstance(checked, Outcome):
        return checked
    try:
        progress = await desired(obj, model, checked, resolve_blobs)
    except BatchError as err:
        return error_outcome(obj, err, checked)
    try:
        return await _decide(obj, gateway, model, progress, force, hold)
    except BatchError as err:
        return progress.failed(obj, err)


def schedule_id_of(obj: ObjectView, model: Model) -> str | Outcome:
    """The schedule id, or the refusal: an invalid spec, an invalid id, or an id changed after creation.
    No Batch request either way."""
    findings = [f for f in model.validate(obj.spec) if f.is_error]
    if findings:
        text = "; ".join(str(f) for f in findings)
        return Outcome(synced=synced_false(obj, cond.REASON_INVALID_SPEC, f"the spec is invalid: {text}"), done=False)
    explicit = obj.spec.get("scheduleId")
    schedule_id = str(explicit) if explicit else model.schedule_id_for(obj.namespace, obj.name)
    problem = model.schedule_id_error(schedule_id)
    if problem:
        return Outcome(synced=synced_false(obj, cond.REASON_INVALID_SPEC, f"spec.scheduleId: {problem}"), done=False)
    current = obj.status.get("scheduleId")
    if current and str(current).lower() != schedule_id.lower():
        message = (
            f"spec.scheduleId cannot change from {current!r} to {schedule_id!r} once the schedule exists: "
            f"set it back to {current!r}, or create a new resource for {schedule_id!r}"
        )
        return Outcome(
            synced=synced_false(obj, cond.REASON_ID_IMMUTABLE, message), done=False, schedule_id=str(current)
        )
    return schedule_id


async def desired(
    obj: ObjectView, model: Model, schedule_id: str, resolve_blobs: BlobResolver | None
) -> Progress:
    """The desired body with the owner marks and its blob references resolved into SAS URLs."""
    body = model.desired_schedule(obj.spec, schedule_id=schedule_id, owner=obj.owner, uid=obj.uid)
    sas_expiry: str | None = None
    if resolve_blobs is not None and isinstance(body.get("jobSpecification"), Mapping):
        job_spec, sas_expiry = await resolve_blobs(obj, body["jobSpecification"], schedule_id)
        body = {**body, "jobSpecification": job_spec}
    progress = Progress(schedule_id, body)
    if sas_expiry:
        progress.status["sas"] = {"expiresAt": sas_expiry}
    return progress


async def _decide(
    obj: ObjectView,
    gateway: ScheduleGateway,
    model: Model,
    progress: Progress,
    force: Sequence[str],
    hold: Hold | None,
) -> Outcome:
    found = None if create.creates_first(obj) else await gateway.get_schedule(progress.schedule_id)
    if obj.policy == "skip":
        return _observed_only(obj, progress, found)
    if found is None:
        created = await create.create(obj, gateway, progress, hold)
        if isinstance(created, Outcome):
            return created
        found = created
    claim = adopt.claim(obj, found[0], progress)
    if isinstance(claim, Outcome):
        return claim
    progress.status["scheduleId"] = progress.schedule_id
    progress.observed = found[0]
    state = found[0].get("state")
    settled = _settled(obj, state, progress)
    if settled is not None:
        return settled
    await patch.patch(gateway, claim, found, progress, model, force)
    await suspend.suspend_or_resume(obj, gateway, state, progress)
    await run_now.run_now(obj, gateway, progress)
    progress.status["observedGeneration"] = obj.generation
    done = f" ({', '.join(progress.writes)})" if progress.writes else ""
    message = f"Batch schedule {progress.schedule_id} matches generation {obj.generation}{done}"
    return progress.finish(cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, message, generation=obj.generation))


def _observed_only(obj: ObjectView, progress: Progress, found: Found | None) -> Outcome:
    """``reconcile-policy: skip``: report what Batch has, never write to it."""
    message = (
        f"{ANNOTATION_RECONCILE_POLICY} is 'skip': observing Batch schedule {progress.schedule_id}, "
        "never writing to it"
    )
    synced = cond.make(cond.SYNCED, cond.UNKNOWN, cond.REASON_SKIPPED, message, generation=obj.generation)
    progress.status["observedGeneration"] = obj.generation
    if found is None:
        missing = f"Batch has no schedule {progress.schedule_id}"
        return progress.finish(synced, ready=cond.make(cond.READY, cond.FALSE, cond.REASON_NOT_FOUND, missing))
    progress.status["scheduleId"] = progress.schedule_id
    progress.observed = found[0]
    return progress.finish(synced)


def _settled(obj: ObjectView, state: Any, progress: Progress) -> Outcome | None:
    """The outcome for a schedule that accepts no change: going away (wait), or completed (done)."""
    if state in ("terminating", "deleting"):
        waiting = synced_false(
            obj, cond.REASON_CONFLICT, f"Batch schedule {progress.schedule_id} is {state}; waiting for it to finish"
        )
        return progress.finish(waiting, retry_after=RETRY_DEFAULT, done=False)
    if state == "completed":
        progress.status["observedGeneration"] = obj.generation
        message = f"Batch schedule {progress.schedule_id} has completed; Batch accepts no further changes to it"
        return progress.finish(
            cond.make(cond.SYNCED, cond.TRUE, cond.REASON_COMPLETED, message, generation=obj.generation)
        )
    return None
