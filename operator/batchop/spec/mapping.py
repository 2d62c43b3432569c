"""From a BatchJobSchedule spec to the Azure Batch request bodies the operator sends.

``spec.schedule`` and ``spec.jobSpecification`` already use Batch's wire shapes (camelCase, lowercase
enum values), so the mapping is mostly a copy: ``None`` values are dropped, YAML timestamps become
RFC 3339 strings, and the schedule's ``metadata`` gets the operator's ownership marks
(``azurebatch.dev/owner`` = ``namespace/name``, ``azurebatch.dev/uid`` = the resource's uid), which is
how a ``JobScheduleExists`` answer is told apart (ours after a crash, or someone else's).

Blob references (``blob: {...}``) are left in place: :mod:`batchop.blob.refs` resolves them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from batchop.api.names import MARK_OWNER, MARK_UID, OWNER_MARKS
from batchwire import timestamps

UPDATABLE_PROPERTIES = ("schedule", "jobSpecification", "metadata")
"""The top-level schedule properties a PATCH may change (``id`` and ``displayName`` cannot change)."""


def to_wire(value: Any) -> Any:
    """A deep copy fit for JSON: ``None`` entries dropped, datetimes as Batch-style RFC 3339 strings."""
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    if isinstance(value, datetime):
        return timestamps.format(value)
    if isinstance(value, date):
        return value.isoformat() + "T00:00:00Z"
    return copy.deepcopy(value)


def owner_marks(*, owner: str, uid: str) -> list[dict[str, str]]:
    """The metadata items that mark a schedule as managed by the resource ``owner`` (``namespace/name``)."""
    return [{"name": MARK_OWNER, "value": owner}, {"name": MARK_UID, "value": uid}]


def with_owner_marks(metadata: Iterable[Mapping[str, Any]] | None, *, owner: str, uid: str) -> list[dict[str, Any]]:
    """``metadata`` (user items first, in their order) with the marks set, replacing any stale ones."""
    items = [to_wire(item) for item in metadata or () if item.get("name") not in OWNER_MARKS]
    return items + owner_marks(owner=owner, uid=uid)


def without_owner_marks(metadata: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """``metadata`` without the operator's marks (what an ``Orphan`` deletion PATCHes)."""
    return [to_wire(item) for item in metadata or () if item.get("name") not in OWNER_MARKS]


def marks_of(schedule: Mapping[str, Any]) -> dict[str, str]:
    """The operator's marks found in a Batch schedule's ``metadata`` (``{}`` when unmarked)."""
    found: dict[str, str] = {}
    for item in schedule.get("metadata") or ():
        if isinstance(item, Mapping) and item.get("name") in OWNER_MARKS:
            found[str(item["name"])] = str(item.get("value", ""))
    return found


def is_owned_by(schedule: Mapping[str, Any], *, owner: str, uid: str | None = None) -> bool:
    """True when ``schedule`` carries our owner mark (and, if ``uid`` is given, our uid mark).

    A schedule marked with the same ``namespace/name`` but another uid belongs to an earlier resource of
    that name that was deleted with ``deletionPolicy: Orphan``... or failed to clean up: the runtime
    decides; pass ``uid=None`` to compare the owner only.
    """
    marks = marks_of(schedule)
    if marks.get(MARK_OWNER) != owner:
        return False
    return uid is None or marks.get(MARK_UID) == uid


def desired_schedule(spec: Mapping[str, Any], *, schedule_id: str, owner: str, uid: str) -> dict[str, Any]:
    """The Batch create body (``POST /jobschedules``) for a resource's ``spec``.

    ``{"id", "schedule", "jobSpecification", "metadata"}``; an omitted ``schedule`` is ``{}`` (run once
    now, as Batch reads it); ``metadata`` always ends with the owner marks. Blob references are still
    unresolved. The spec should have passed :func:`batchop.spec.validation.validate`.
    """
    if not isinstance(spec.get("jobSpecification"), Mapping):
        raise ValueError("spec.jobSpecification is required")
    return {
        "id": schedule_id,
        "schedule": to_wire(spec.get("schedule") or {}),
        "jobSpecification": to_wire(spec["jobSpecification"]),
        "metadata": with_owner_marks(spec.get("metadata"), owner=owner, uid=uid),
    }


def update_body(desired: Mapping[str, Any], properties: Iterable[str]) -> dict[str, Any]:
    """The PATCH body (``PATCH /jobschedules/{id}``) that sets ``properties`` of ``desired``, whole.

    Batch replaces each top-level property sent and keeps the others, so whole objects are sent.
    """
    body: dict[str, Any] = {}
    for name in properties:
        if name not in UPDATABLE_PROPERTIES:
            raise ValueError(f"{name!r} cannot be changed on a Batch job schedule; only {UPDATABLE_PROPERTIES}")
        default: Any = [] if name == "metadata" else {}
        body[name] = copy.deepcopy(desired.get(name, default))
    return body
