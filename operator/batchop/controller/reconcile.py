"""Reconcile one BatchJobSchedule against Batch: create, update, suspend/resume, delete.

Plain async functions over a gateway (anything with the :class:`GatewayLike` methods), so they run in
unit tests against a fake gateway. They never talk to Kubernetes: they return an :class:`Outcome` that
the caller (:mod:`batchop.controller.handlers`) writes into status, and say whether and when to retry.

The decisions, in order (:func:`apply`):

1. ``spec.validation`` runs first; an invalid spec gives terminal ``InvalidSpec`` and no Batch request.
2. The schedule id is derived (``spec.naming``); a changed id after creation is refused
   (``ScheduleIdImmutable``), the old schedule is left alone.
3. One GET of the schedule. ``reconcile-policy: skip`` stops here: observe, never write.
4. Missing: create with owner marks (``azurebatch.dev/owner``, ``azurebatch.dev/uid``). A
   ``JobScheduleExists`` answer is checked: ours (a crash between create and status write) -> continue.
5. Present: not ours -> terminal ``AlreadyExists`` unless ``azurebatch.dev/adopt: "true"`` and no other
   object's marks are on it. Ours -> diff the normalised desired and observed forms; PATCH only the
   changed top-level properties with ``If-Match``.
6. ``spec.suspend`` -> disable / enable when the state differs.

Deletion (:func:`delete`) honours ``deletionPolicy``: ``Delete`` terminates, deletes, and reports
"not done" until Batch no longer has the schedule; ``Orphan`` strips the owner marks. Nothing created, or
already gone: done at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY, ANNOTATION_RUN_NOW, MARK_OWNER, MARK_UID
from batchop.batch import gateway as gw
from batchop.batch.gateway import BatchError
from batchop.controller import runnow

log = logging.getLogger(__name__)


RETRY_DEFAULT = 10.0
RETRY_DELETE_WAIT = 1.0


class Hold(Protocol):
    """The deletion guard around a create: ``acquire`` adds the finalizer before the first Batch write
    (False: the resource is gone or being deleted, do not create); ``release`` removes it again when Batch
    refused the create for good."""

    async def acquire(self) -> bool: ...
    async def release(self) -> None: ...


class GatewayLike(Protocol):
    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None: ...
    async def create_schedule(self, body: Mapping[str, Any]) -> None: ...
    async def patch_schedule(self, schedule_id: str, properties: Mapping[str, Any], etag: str | None) -> None: ...
    async def disable_schedule(self, schedule_id: str) -> None: ...
    async def enable_schedule(self, schedule_id: str) -> None: ...
    async def terminate_schedule(self, schedule_id: str) -> None: ...
    async def delete_schedule(self, schedule_id: str) -> None: ...
    async def create_job(self, body: Mapping[str, Any]) -> None: ...
    async def get_job(self, job_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Model:
    """The model engineer's functions (``batchop.spec``), injectable for tests."""

    validate: Callable[[Mapping[str, Any]], Sequence[Any]]
    schedule_id_for: Callable[[str, str], str]
    schedule_id_error: Callable[[object], str | None]
    desired_schedule: Callable[..., dict[str, Any]]
    changed_properties: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]


def default_model() -> Model:
    """The real model from :mod:`batchop.spec` (imported lazily: the package lands in parallel)."""
    from batchop.spec import diff, mapping, naming, validation

    return Model(
        validate=validation.validate,
        schedule_id_for=naming.schedule_id_for,
        schedule_id_error=naming.schedule_id_error,
        desired_schedule=mapping.desired_schedule,
        changed_properties=diff.changed_properties,
    )


# resolve(job_spec, schedule_id) -> (resolved job_spec, sas expiry ISO string or None)
BlobResolver = Callable[[Mapping[str, Any], str], Awaitable[tuple[dict[str, Any], str | None]]]


@dataclass
class ObjectView:
    """What reconciling needs to know about one resource (taken from its body)."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    # the metadata a finalizer add without a GET needs (uid, resourceVersion, finalizers, deletionTimestamp)
    seen: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectView:
        meta = body.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            annotations=dict(meta.get("annotations") or {}),
            status=dict(body.get("status") or {}),
            seen={k: meta[k] for k in ("uid", "resourceVersion", "finalizers", "deletionTimestamp") if k in meta},
        )

    @property
    def owner(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def policy(self) -> str:
        return str(self.annotations.get(ANNOTATION_RECONCILE_POLICY) or "manage").strip().lower()

    @property
    def adopt(self) -> bool:
        return str(self.annotations.get(ANNOTATION_ADOPT) or "").strip().lower() == "true"


@dataclass
class Outcome:
    """What a reconcile pass found and did.

    ``status`` holds the handler-owned status fields to write (``scheduleId``, ``observedGeneration``,
    ``sas``); ``synced`` the ``Synced`` condition; ``ready`` a ``Ready`` condition when the pass knows
    better than the poller (e.g. nothing exists). ``retry_after`` set means "not done, try again then".
    ``writes`` lists the Batch writes done (for logs, events and tests); ``done`` on deletion means the
    finalizer may go.
    """

    synced: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] | None = None
    retry_after: float | None = None
    writes: list[str] = field(default_factory=list)
    done: bool = True
    schedule_id: str | None = None
    desired: dict[str, Any] | None = None
    observed: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.synced.get("status") == cond.FALSE and self.retry_after is None


def _marks(schedule: Mapping[str, Any]) -> dict[str, str]:
    return {str(m.get("name")): str(m.get("value")) for m in schedule.get("metadata") or [] if isinstance(m, Mapping)}


def ownership(schedule: Mapping[str, Any], obj: ObjectView) -> str:
    """``ours`` (our uid), ``unowned`` (no marks), ``stale`` (our ns/name, another uid) or ``foreign``."""
    marks = _marks(schedule)
    uid, owner = marks.get(MARK_UID), marks.get(MARK_OWNER)
    if uid and uid == obj.uid:
        return "ours"
    if not uid and not owner:
        return "unowned"
    if owner == obj.owner:
        return "stale"
    return "foreign"


def owns(schedule: Mapping[str, Any], obj: ObjectView) -> bool:
    """Whether the operator may write to ``schedule`` for ``obj``: our marks, or an unmarked schedule the
    resource adopts (adoption writes nothing until something must change; the marks go with that write)."""
    owned = ownership(schedule, obj)
    return owned == "ours" or (owned == "unowned" and obj.adopt)


def _without_marks(body: Mapping[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": [m for m in body.get("metadata") or [] if m.get("name") not in (MARK_OWNER, MARK_UID)]}


def _synced_false(obj: ObjectView, reason: str, message: str) -> dict[str, Any]:
    return cond.make(cond.SYNCED, cond.FALSE, reason, message, generation=obj.generation)


def _error_outcome(obj: ObjectView, err: BatchError, schedule_id: str | None, *, deleting: bool = False) -> Outcome:
    reason = err.reason
    message = err.message
    if deleting:
        reason = cond.REASON_DELETION_PENDING
        message = f"waiting to delete Batch schedule {schedule_id}: {err.message}; retrying"
    retry = None if err.terminal and not deleting else (err.retry_after or RETRY_DEFAULT)
    return Outcome(synced=_synced_false(obj, reason, message), retry_after=retry, done=False, schedule_id=schedule_id)


def desired_suspended(obj: ObjectView) -> bool:
    return bool(obj.spec.get("suspend"))


async def apply(
    obj: ObjectView,
    gateway: GatewayLike,
    *,
    model: Model,
    resolve_blobs: BlobResolver | None = None,
    force: Sequence[str] = (),
    hold: Hold | None = None,
) -> Outcome:
    """Make Batch match ``obj``'s spec (see the module docstring). Idempotent: a re-run after a crash at
    any point converges without duplicates. ``force`` names properties to PATCH even when they compare
    equal (``jobSpecification`` for a SAS renewal)."""
    # 1. validation, before any Batch request
    findings = [f for f in model.validate(obj.spec) if getattr(f, "is_error", True)]
    if findings:
        text = "; ".join(str(f) for f in findings)
        return Outcome(synced=_synced_false(obj, gw.INVALID_SPEC, f"the spec is invalid: {text}"), done=False)

    # 2. the schedule id, immutable once a schedule exists
    explicit = obj.spec.get("scheduleId")
    schedule_id = str(explicit) if explicit else model.schedule_id_for(obj.namespace, obj.name)
    problem = model.schedule_id_error(schedule_id)
    if problem:
        return Outcome(synced=_synced_false(obj, gw.INVALID_SPEC, f"spec.scheduleId: {problem}"), done=False)
    current = obj.status.get("scheduleId")
    if current and str(current).lower() != schedule_id.lower():
        return Outcome(
            synced=_synced_false(
                obj,
                cond.REASON_ID_IMMUTABLE,
                f"spec.scheduleId cannot change from {current!r} to {schedule_id!r} once the schedule exists: "
                f"set it back to {current!r}, or create a new resource for {schedule_id!r}",
            ),
            done=False,
            schedule_id=str(current),
        )

    desired = model.desired_schedule(obj.spec, schedule_id=schedule_id, owner=obj.owner, uid=obj.uid)
    sas_expiry: str | None = None
    try:
        if resolve_blobs is not None and isinstance(desired.get("jobSpecification"), Mapping):
            job_spec, sas_expiry = await resolve_blobs(desired["jobSpecification"], schedule_id)
            desired = {**desired, "jobSpecification": job_spec}
    except BatchError as err:
        return _error_outcome(obj, err, schedule_id)

    outcome = Outcome(synced={}, schedule_id=schedule_id, desired=desired)
    if sas_expiry:
        outcome.status["sas"] = {"expiresAt": sas_expiry}
    try:
        return await _apply(obj, gateway, model, schedule_id, desired, outcome, force, hold)
    except BatchError as err:
        failed = _error_outcome(obj, err, schedule_id)
        failed.status.update(outcome.status)
        failed.writes = outcome.writes
        return failed


async def _apply(
    obj: ObjectView,
    gateway: GatewayLike,
    model: Model,
    schedule_id: str,
    desired: dict[str, Any],
    outcome: Outcome,
    force: Sequence[str],
    hold: Hold | None = None,
) -> Outcome:
    # A resource that never recorded a schedule id creates at once (the common case: one request less);
    # Batch's JobScheduleExists sends it down the GET path (a crash before the status write, a collision).
    create_first = not obj.status.get("scheduleId") and obj.policy != "skip" and not obj.adopt
    found = None if create_first else await gateway.get_schedule(schedule_id)

    if obj.policy == "skip":
        outcome.synced = cond.make(
            cond.SYNCED,
            cond.UNKNOWN,
            cond.REASON_SKIPPED,
            f"{ANNOTATION_RECONCILE_POLICY} is 'skip': observing Batch schedule {schedule_id}, never writing to it",
            generation=obj.generation,
        )
        outcome.status["observedGeneration"] = obj.generation
        if found is None:
            outcome.ready = cond.make(
                cond.READY, cond.FALSE, cond.REASON_NOT_FOUND, f"Batch has no schedule {schedule_id}"
            )
        else:
            outcome.status["scheduleId"] = schedule_id
            outcome.observed = found[0]
        return outcome

    if found is None:
        if hold is not None and not await hold.acquire():
            outcome.synced = cond.make(
                cond.SYNCED,
                cond.FALSE,
                cond.REASON_DELETING,
                "the resource is being deleted: not creating",
                generation=obj.generation,
            )
            outcome.done = False
            return outcome
        existed = False
        try:
            await gateway.create_schedule(desired)
            outcome.writes.append("create")
        except BatchError as err:
            if err.code != "JobScheduleExists":
                if err.terminal and hold is not None:
                    await hold.release()  # nothing was created: no finalizer may stay behind
                raise
            existed = True
        found = await gateway.get_schedule(schedule_id)
        if found is None:  # created and deleted at once by someone else: try again soon
            raise BatchError(
                f"schedule {schedule_id} vanished right after creation", reason=gw.CONFLICT, terminal=False
            )
        if existed and hold is not None and not owns(found[0], obj) and not obj.adopt:
            await hold.release()  # someone else's schedule: nothing of ours to guard on deletion

    observed, etag = found
    owned = ownership(observed, obj)
    adopted_as_is = owned == "unowned" and obj.adopt  # imported (issue 8): no write unless something differs
    recorded = str(obj.status.get("scheduleId") or "").lower() == schedule_id.lower()
    if owned in ("unowned", "stale") and recorded:
        # our status says we created or adopted it: the marks were removed behind our back; put them back
        log.info("schedule %s lost its owner marks; restoring them for %s", schedule_id, obj.owner)
        owned = "ours"
    if owned != "ours":
        if owned == "foreign" or not obj.adopt:
            marks = _marks(observed)
            whose = f"owned by {marks.get(MARK_OWNER)}" if marks.get(MARK_OWNER) else "not created by this resource"
            hint = (
                "set spec.scheduleId to another id"
                if owned == "foreign"
                else f'set spec.scheduleId to another id, or annotate {ANNOTATION_ADOPT}="true" to take it over'
            )
            outcome.synced = _synced_false(
                obj, gw.ALREADY_EXISTS, f"a Batch job schedule {schedule_id!r} already exists, {whose}: {hint}"
            )
            outcome.done = False
            return outcome
        log.info("adopting Batch schedule %s for %s", schedule_id, obj.owner)
        outcome.writes.append("adopt")

    outcome.status["scheduleId"] = schedule_id
    outcome.observed = observed
    state = observed.get("state")
    if state in ("terminating", "deleting"):
        outcome.synced = _synced_false(
            obj, gw.CONFLICT, f"Batch schedule {schedule_id} is {state}; waiting for it to finish"
        )
        outcome.retry_after = RETRY_DEFAULT
        outcome.done = False
        return outcome
    if state == "completed":
        outcome.synced = cond.make(
            cond.SYNCED,
            cond.TRUE,
            cond.REASON_COMPLETED,
            f"Batch schedule {schedule_id} has completed; Batch accepts no further changes to it",
            generation=obj.generation,
        )
        outcome.status["observedGeneration"] = obj.generation
        return outcome

    if adopted_as_is:
        changed = model.changed_properties(_without_marks(desired), observed)
        if changed and "metadata" not in changed:
            changed.append("metadata")  # the owner marks go with the first write
        if not changed:
            outcome.desired = _without_marks(desired)  # what the poller's drift check compares
    else:
        changed = model.changed_properties(desired, observed) if owned == "ours" else ["schedule", "jobSpecification"]
    if owned != "ours" and not adopted_as_is and "metadata" not in changed:
        changed.append("metadata")
    changed += [p for p in force if p not in changed and p in desired]
    if changed:
        await gateway.patch_schedule(schedule_id, {k: desired[k] for k in changed if k in desired}, etag)
        outcome.writes.append("patch:" + ",".join(changed))

    if desired_suspended(obj) and state == "active":
        await gateway.disable_schedule(schedule_id)
        outcome.writes.append("disable")
    elif not desired_suspended(obj) and state == "disabled":
        await gateway.enable_schedule(schedule_id)
        outcome.writes.append("enable")

    run_now = runnow.requested(obj.annotations, obj.status)
    if run_now is not None:  # azurebatch.dev/run-now: one job now, once per value (batchop.controller.runnow)
        try:
            started = await runnow.start(
                gateway,
                job_specification=desired["jobSpecification"],
                schedule_id=schedule_id,
                owner=obj.owner,
                uid=obj.uid,
                value=run_now,
            )
        except BatchError as err:
            if not err.terminal:
                raise
            outcome.status["runNow"] = run_now  # refused for good: not retried until the value changes
            raise BatchError(
                f"{ANNOTATION_RUN_NOW}={run_now!r}: Batch refused the job: {err.message}",
                reason=err.reason,
                terminal=True,
                status=err.status,
                code=err.code,
                field=err.field,
            ) from err
        how = f"state {started.state}" if started.created else "created before an operator restart"
        outcome.writes.append(f"runnow:{started.job_id} ({how})")
        outcome.status["runNow"] = run_now

    outcome.status["observedGeneration"] = obj.generation
    outcome.synced = cond.make(
        cond.SYNCED,
        cond.TRUE,
        cond.REASON_SYNCED,
        f"Batch schedule {schedule_id} matches generation {obj.generation}"
        + (f" ({', '.join(outcome.writes)})" if outcome.writes else ""),
        generation=obj.generation,
    )
    return outcome


async def delete(obj: ObjectView, gateway: GatewayLike) -> Outcome:
    """One step of deletion. ``done`` means the finalizer may be removed; otherwise retry after
    ``retry_after``. Never lets go of a schedule silently while Batch is unreachable."""
    schedule_id = obj.status.get("scheduleId")
    released = Outcome(
        synced=cond.make(cond.SYNCED, cond.TRUE, cond.REASON_DELETING, "released"), done=True, schedule_id=schedule_id
    )
    if not schedule_id or obj.policy == "skip":
        return released
    policy = str(obj.spec.get("deletionPolicy") or "Delete")
    try:
        found = await gateway.get_schedule(str(schedule_id))
        if found is None:
            return released
        observed, etag = found
        if not owns(observed, obj):
            log.warning(
                "schedule %s is not marked as owned by %s: letting go without touching it", schedule_id, obj.owner
            )
            return released
        if policy == "Orphan":
            kept = [m for m in observed.get("metadata") or [] if m.get("name") not in (MARK_OWNER, MARK_UID)]
            if len(kept) != len(observed.get("metadata") or []):  # an adopted, never-written schedule has none
                await gateway.patch_schedule(str(schedule_id), {"metadata": kept}, etag)
            released.writes.append("orphan")
            return released
        state = observed.get("state")
        if state in ("active", "disabled"):
            await gateway.terminate_schedule(str(schedule_id))
            released.writes.append("terminate")
            state = "terminating"
        if state == "completed":
            await gateway.delete_schedule(str(schedule_id))
            released.writes.append("delete")
            state = "deleting"
        return Outcome(
            synced=cond.make(
                cond.SYNCED,
                cond.FALSE,
                cond.REASON_DELETING,
                f"deleting Batch schedule {schedule_id} (state {state}); waiting until Batch reports it gone",
                generation=obj.generation,
            ),
            retry_after=RETRY_DELETE_WAIT,
            done=False,
            writes=released.writes,
            schedule_id=str(schedule_id),
        )
    except BatchError as err:
        if err.status == 404:
            return released
        return _error_outcome(obj, err, str(schedule_id), deleting=True)
