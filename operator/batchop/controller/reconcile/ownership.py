"""Whose a Batch schedule is, from the owner marks in its metadata.

The operator writes ``azurebatch.dev/owner=<namespace>/<name>`` and ``azurebatch.dev/uid=<uid>`` on every
schedule it creates or adopts, and writes to a schedule only when they say it may: a resource re-created
under the same name (another uid) or any other object never takes over a schedule silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from batchop.api.names import MARK_OWNER, MARK_UID, OWNER_MARKS
from batchop.controller.reconcile.view import ObjectView

Ownership = Literal["ours", "unowned", "stale", "foreign"]


def marks(schedule: Mapping[str, Any]) -> dict[str, str]:
    """The schedule's metadata as ``{name: value}``."""
    return {str(m.get("name")): str(m.get("value")) for m in schedule.get("metadata") or [] if isinstance(m, Mapping)}


def ownership(schedule: Mapping[str, Any], obj: ObjectView) -> Ownership:
    """``ours`` (our uid), ``unowned`` (no marks), ``stale`` (our ns/name, another uid) or ``foreign``."""
    found = marks(schedule)
    uid, owner = found.get(MARK_UID), found.get(MARK_OWNER)
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


def without_marks(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with the owner marks left out of its metadata."""
    return {**body, "metadata": [m for m in body.get("metadata") or [] if m.get("name") not in OWNER_MARKS]}
