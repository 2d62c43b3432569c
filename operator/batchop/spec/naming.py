"""Batch job schedule ids for BatchJobSchedule resources.

Batch ids allow letters, digits, hyphens and underscores, at most 64 characters, and are
case-insensitive. Kubernetes names never contain ``_``, so ``{namespace}_{name}`` cannot collide
between two resources; dots (legal in Kubernetes names) become hyphens, and an id that had to be changed
that way, or shortened, ends with a stable hash of ``namespace/name`` so it stays unique and
deterministic across operator restarts and machines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

MAX_LENGTH = 64
_VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_HASH_LENGTH = 8


def _hash(namespace: str, name: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_HASH_LENGTH]


def schedule_id_for(namespace: str, name: str) -> str:
    """The default Batch schedule id of the resource ``namespace/name``.

    ``default/wordcount`` -> ``default_wordcount``; ``team-a/report.daily`` ->
    ``team-a_report-daily-<hash>``; ids longer than 64 characters are cut to 55 and get ``-<hash>``.
    """
    if not namespace or not name:
        raise ValueError("namespace and name are both required to derive a schedule id")
    candidate = f"{namespace}_{name}"
    cleaned = _INVALID_CHAR.sub("-", candidate)
    if cleaned == candidate and len(cleaned) <= MAX_LENGTH:
        return cleaned
    head = cleaned[: MAX_LENGTH - _HASH_LENGTH - 1].rstrip("-_")
    return f"{head}-{_hash(namespace, name)}"


def schedule_id_error(schedule_id: object) -> str | None:
    """Why ``schedule_id`` is not a valid Batch schedule id, or None when it is."""
    if not isinstance(schedule_id, str) or not schedule_id:
        return "the schedule id must be a non-empty string"
    if len(schedule_id) > MAX_LENGTH:
        return f"the schedule id is {len(schedule_id)} characters long; Batch allows at most {MAX_LENGTH}"
    if not _VALID.match(schedule_id):
        bad = sorted(set(_INVALID_CHAR.findall(schedule_id)))
        return (
            f"the schedule id contains {', '.join(repr(c) for c in bad)}: Batch allows only letters, digits, "
            f"hyphens and underscores (e.g. {_INVALID_CHAR.sub('-', schedule_id)!r})"
        )
    return None


def validate_schedule_id(schedule_id: str) -> str:
    """Return ``schedule_id`` if Batch accepts it; raise :class:`ValueError` naming the problem otherwise."""
    problem = schedule_id_error(schedule_id)
    if problem:
        raise ValueError(problem)
    return schedule_id


def effective_schedule_id(spec: Mapping[str, Any], namespace: str, name: str) -> str:
    """``spec.scheduleId`` when set, else :func:`schedule_id_for` ``(namespace, name)``."""
    explicit = spec.get("scheduleId")
    if isinstance(explicit, str) and explicit:
        return explicit
    return schedule_id_for(namespace, name)
