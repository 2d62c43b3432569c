"""``GET /jobs/{id}/taskcounts``: tasks and task slots per state, as Batch counts them.

``running`` includes ``preparing`` tasks; ``succeeded`` / ``failed`` split the ``completed`` ones by
``executionInfo.result``. Slot counts weigh each task by its ``requiredSlots``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_BUCKETS = ("active", "running", "completed", "succeeded", "failed")


def counts(tasks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    task_counts = dict.fromkeys(_BUCKETS, 0)
    slot_counts = dict.fromkeys(_BUCKETS, 0)
    for task in tasks:
        slots = int(task.get("requiredSlots") or 1)
        state = task.get("state", "active")
        buckets = ["running" if state in ("preparing", "running") else state]
        if state == "completed":
            result = (task.get("executionInfo") or {}).get("result")
            buckets.append("succeeded" if result == "success" else "failed")
        for bucket in buckets:
            if bucket in task_counts:
                task_counts[bucket] += 1
                slot_counts[bucket] += slots
    return {"taskCounts": task_counts, "taskSlotCounts": slot_counts}
