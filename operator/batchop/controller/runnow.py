"""Run now: ``kubectl annotate bjs NAME azurebatch.dev/run-now=<new value>`` starts one job at once.

Azure Batch has no "run this schedule now" call, and a schedule's recurrence must not change. So the operator
does what ``kubectl create job --from=cronjob/x`` does: it creates one standalone job (``POST /jobs``) from the
schedule's ``jobSpecification``, the same one Batch uses for the schedule's own jobs (blob references resolved
with fresh SAS). Differences from a scheduled job, all forced by Batch:

- the id is ``{scheduleId}-runnow-{hash}`` (``:`` is reserved for Batch's ``{scheduleId}:job-N``); a
  schedule id too long to fit is cut and gets a hash of the whole id, so the id stays <= 64 characters
  and unambiguous (:func:`job_id`, :func:`is_run_now_job`);
- an auto pool with ``poolLifetimeOption: jobschedule`` becomes ``job`` (a standalone job has no schedule
  to share a pool with; Batch refuses ``jobschedule`` there);
- the job's ``metadata`` carries marks linking it to the schedule and the resource:
  ``azurebatch.dev/schedule``, ``azurebatch.dev/run-now`` (the annotation value), ``azurebatch.dev/owner``,
  ``azurebatch.dev/uid``.

Exactly once per value, even across crashes: the id is a hash of the resource's uid and the annotation value,
so a retry after a crash between the create and the status write (``status.runNow``) gets ``409 JobExists``
for the job it already created, which counts as done. Only a value different from ``status.runNow`` fires.
After a create the job is read back once (``GET /jobs/{id}``): its state goes into the ``RunNow`` Event.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_RUN_NOW, MARK_OWNER, MARK_RUN_NOW, MARK_SCHEDULE, MARK_UID
from batchop.batch.gateway import BatchError

log = logging.getLogger(__name__)


MAX_ID = 64
INFIX = "-runnow-"
HASH_LENGTH = 10
_SCHEDULE_HASH = 8
MAX_MARK_VALUE = 512


class JobGateway(Protocol):
    async def create_job(self, body: Mapping[str, Any]) -> None: ...
    async def get_job(self, job_id: str) -> dict[str, Any] | None: ...


def requested(annotations: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> str | None:
    """The annotation value still to act on: set, not blank, and not the value in ``status.runNow``."""
    value = (annotations or {}).get(ANNOTATION_RUN_NOW)
    if value is None or not str(value).strip():
        return None
    value = str(value)
    if value == (status or {}).get("runNow"):
        return None
    return value


def pending(body: Mapping[str, Any], known_status: Mapping[str, Any] | None) -> bool:
    """Whether a watch event's object asks for a run not yet handled: a new annotation value (compared with the
    freshest status known, ``known_status``, else the body's), on an object that is not being deleted."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = known_status if known_status is not None else body.get("status")
    return requested(meta.get("annotations"), status) is not None


_HEX_DIGITS = frozenset("0123456789abcdef")


def job_prefix(schedule_id: str) -> str:
    """Every run-now job id of ``schedule_id`` starts with this (lower case: Batch ids are case-insensitive)."""
    sid = schedule_id.lower()
    room = MAX_ID - len(INFIX) - HASH_LENGTH
    if len(sid) > room:
        digest = hashlib.sha256(sid.encode()).hexdigest()[:_SCHEDULE_HASH]
        sid = f"{sid[: room - _SCHEDULE_HASH - 1]}-{digest}"
    return sid + INFIX


def job_id(schedule_id: str, uid: str, value: str) -> str:
    """The deterministic id of the job for annotation ``value`` on the resource with ``uid``."""
    digest = hashlib.sha256(f"{uid}\n{value}".encode()).hexdigest()[:HASH_LENGTH]
    return job_prefix(schedule_id) + digest


def is_run_now_job(job_id_: str, schedule_id: str) -> bool:
    """Whether ``job_id_`` is a run-now job of ``schedule_id`` (exact shape, so ``a`` never claims ``a-runnow-x``'s).

    Plain string tests, not a regular expression built from the id: the poller asks this for every job of
    every schedule each cycle, and one pattern per schedule id overflowed ``re``'s cache of compiled patterns
    (512) at a few hundred schedules, so each call compiled its pattern again."""
    jid = job_id_.lower()
    prefix = job_prefix(schedule_id)
    return (
        len(jid) == len(prefix) + HASH_LENGTH
        and jid.startswith(prefix)
        and all(c in _HEX_DIGITS for c in jid[len(prefix):])
    )


def job_body(
    job_specification: Mapping[str, Any], *, job_id_: str, schedule_id: str, owner: str, uid: str, value: str
) -> dict[str, Any]:
    """The ``POST /jobs`` body: the schedule's job specification, made standalone, with the marks."""
    body: dict[str, Any] = {"id": job_id_}
    spec = copy.deepcopy(dict(job_specification))
    auto = (spec.get("poolInfo") or {}).get("autoPoolSpecification")
    if isinstance(auto, dict) and str(auto.get("poolLifetimeOption", "")).lower() == "jobschedule":
        auto["poolLifetimeOption"] = "job"
    marks = {
        MARK_SCHEDULE: schedule_id,
        MARK_RUN_NOW: value[:MAX_MARK_VALUE],
        MARK_OWNER: owner,
        MARK_UID: uid,
    }
    metadata = [m for m in spec.pop("metadata", None) or [] if isinstance(m, Mapping) and m.get("name") not in marks]
    body.update(spec)
    body["metadata"] = [dict(m) for m in metadata] + [{"name": k, "value": v} for k, v in marks.items()]
    return body


@dataclass(frozen=True)
class Started:
    """A run-now request handled: the job id, whether this call created it (False: it already existed), and the
    job's state as read back."""

    job_id: str
    created: bool
    state: str | None = None


async def start(
    gateway: JobGateway,
    *,
    job_specification: Mapping[str, Any],
    schedule_id: str,
    owner: str,
    uid: str,
    value: str,
) -> Started:
    """Create the run-now job for ``value`` unless it exists. Raises :class:`batchop.batch.gateway.BatchError`."""
    jid = job_id(schedule_id, uid, value)
    body = job_body(job_specification, job_id_=jid, schedule_id=schedule_id, owner=owner, uid=uid, value=value)
    log.info("creating run-now job %s for schedule %s (%s=%r)", jid, schedule_id, ANNOTATION_RUN_NOW, value)
    try:
        await gateway.create_job(body)
    except BatchError as err:
        if err.code != "JobExists":
            raise
        existing = await gateway.get_job(jid)
        marks = {str(m.get("name")): str(m.get("value")) for m in (existing or {}).get("metadata") or []}
        if existing is not None and marks.get(MARK_UID) not in (None, uid):
            raise BatchError(
                f"a Batch job {jid!r} exists and belongs to {marks.get(MARK_OWNER)}: "
                f"change the {ANNOTATION_RUN_NOW} value",
                reason=cond.REASON_ALREADY_EXISTS,
                terminal=True,
                status=409,
                code="JobExists",
            ) from err
        log.info("run-now job %s already exists (created before a restart): nothing to do", jid)
        return Started(jid, created=False, state=str((existing or {}).get("state") or "") or None)
    log.info("created run-now job %s for schedule %s", jid, schedule_id)
    created = await gateway.get_job(jid)  # read back: its state goes into the RunNow event
    return Started(jid, created=True, state=str((created or {}).get("state") or "") or None)
