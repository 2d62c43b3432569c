"""Task dependencies as Batch resolves them (``dependsOn``: ``taskIds`` and ``taskIdRanges``), pure functions.

A task of a job with ``usesTaskDependencies`` runs only when every task it depends on has completed and
that parent's exit conditions say ``dependencyAction: satisfy`` (the default for exit code 0;
``block`` is the default for every failure, see :mod:`localbatch.exit_conditions`). Until then it
stays ``active``: Batch has no "blocked" task state and no count of them (``BatchTaskCounts`` has
active, running, completed, succeeded, failed only).

Batch checks none of this when the task is added: a parent id may name a task that does not exist yet
(ranges routinely cover tasks added later, and ids are only resolved when the dependant is
scheduled), so a dependency on a task that never comes, a task depending on itself, or a cycle
(``a`` on ``b`` and ``b`` on ``a``, expressible in one add-collection call) is accepted and leaves the
tasks waiting in ``active`` for ever; Batch's error list has no code for a cycle. A range covers the
tasks whose id parses as an integer within it (``start`` to ``end`` inclusive); a range parent that
does not exist is not waited for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from localbatch import exit_conditions

JSON = dict[str, Any]
State = Literal["ready", "waiting", "blocked"]
"""``ready``: may run; ``waiting``: a parent is missing or not completed; ``blocked``: a completed parent said
``block``, so the task will not run (it stays ``active``; deleting that parent makes it wait for a task of
that id again)."""

MAX_TASK_IDS_CHARS = 64000
"""``dependsOn.taskIds`` is limited to 64000 characters in total: beyond, ``TaskDependencyListTooLong``."""


def parents(task: JSON, tasks: Mapping[str, JSON]) -> tuple[list[str], list[str]]:
    """The keys (lower-cased ids) of the tasks ``task`` waits for: named ones, and existing ones in its ranges."""
    depends = task.get("dependsOn") or {}
    named = [str(i).lower() for i in depends.get("taskIds") or []]
    ranged: list[str] = []
    ranges = depends.get("taskIdRanges") or []
    if ranges:
        for key, other in tasks.items():
            number = _as_int(str(other.get("id", "")))
            if number is not None and any(int(r["start"]) <= number <= int(r["end"]) for r in ranges):
                ranged.append(key)
    return named, ranged


def state(task: JSON, tasks: Mapping[str, JSON]) -> State:
    """Whether ``task`` (of a job with ``usesTaskDependencies``) may be scheduled now."""
    named, ranged = parents(task, tasks)
    waiting = False
    for key in [*named, *ranged]:
        parent = tasks.get(key)
        if parent is None or parent.get("state") != "completed":
            waiting = True
            continue
        if exit_conditions.dependency_action(parent) == "block":
            return "blocked"
    return "waiting" if waiting else "ready"


def ids_too_long(task: JSON) -> bool:
    return sum(len(str(i)) for i in (task.get("dependsOn") or {}).get("taskIds") or []) > MAX_TASK_IDS_CHARS


def bad_range(task: JSON) -> JSON | None:
    """The first ``taskIdRanges`` entry whose ``start`` is after its ``end`` (refused), or None."""
    for entry in (task.get("dependsOn") or {}).get("taskIdRanges") or []:
        if int(entry.get("start", 0)) > int(entry.get("end", 0)):
            return dict(entry)
    return None


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
