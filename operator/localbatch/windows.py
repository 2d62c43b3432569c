"""How long jobs and job schedules stay ``terminating`` and ``deleting``, and how they leave those states.

Azure does not end a job or a schedule at once (recorded real traffic of the azure-batch SDK's tests,
API 2025-06-01, as read for the service's conformance work): after terminate, a job stays
``terminating`` for 15 s and more, with ``executionInfo.terminateReason`` set and no ``endTime``;
it then becomes ``completed`` with ``previousState: active`` (the state before terminating, not
``terminating``), an ``endTime``, and the ETag it got when terminate was requested (completion does not
change it). After delete, a GET answers ``200`` with ``state: deleting``, the ETag from before the
delete and ``previousState``, for 5-15 s, then ``404``. Schedules behave alike.

The window lengths are Batch time (the service's clock scale applies); defaults 15 s terminating
and 10 s deleting, settable with ``--terminating-window`` / ``--deleting-window`` and
``/_emulator/windows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchwire import timestamps
from localbatch.clock import VirtualClock
from localbatch.engine_runtime import sleep_until
from localbatch.store import JSON, Store

DEFAULT_TERMINATING_SECONDS = 15.0
DEFAULT_DELETING_SECONDS = 10.0


@dataclass
class Windows:
    """The terminating and deleting windows, in Batch seconds (0: the state is left at once)."""

    terminating_seconds: float = 0.0
    deleting_seconds: float = 0.0

    def to_json(self) -> JSON:
        return {"terminatingSeconds": self.terminating_seconds, "deletingSeconds": self.deleting_seconds}

    def update(self, data: dict[str, Any]) -> None:
        """Set either window (``terminatingSeconds``, ``deletingSeconds``: non-negative numbers)."""
        unknown = [k for k in data if k not in ("terminatingSeconds", "deletingSeconds")]
        if unknown:
            raise ValueError(f"unknown window {unknown[0]!r}; use terminatingSeconds, deletingSeconds")
        values = {k: _seconds(v, k) for k, v in data.items()}
        self.terminating_seconds = values.get("terminatingSeconds", self.terminating_seconds)
        self.deleting_seconds = values.get("deletingSeconds", self.deleting_seconds)

    async def wait_terminating(self, clock: VirtualClock, since: datetime) -> None:
        """Sleep until the terminating window that began at ``since`` (Batch time) has passed."""
        await sleep_until(clock, since + timedelta(seconds=self.terminating_seconds))

    async def wait_deleting(self, clock: VirtualClock, since: datetime) -> None:
        """Sleep until the deleting window that began at ``since`` (Batch time) has passed."""
        await sleep_until(clock, since + timedelta(seconds=self.deleting_seconds))


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of Batch seconds")
    return float(value)


def since(obj: JSON, fallback: datetime) -> datetime:
    """When ``obj`` entered its current state (``stateTransitionTime``), for a window's start."""
    stamp = obj.get("stateTransitionTime")
    return timestamps.parse(stamp) if stamp else fallback


def complete(store: Store, obj: JSON, now: datetime) -> None:
    """``terminating`` -> ``completed`` as Azure does it: ``previousState`` stays the state before
    ``terminating``, ``endTime`` is set, the ETag and ``lastModified`` do not change."""
    before_terminating = obj.get("previousState")
    before_time = obj.get("previousStateTransitionTime")
    obj["state"] = "completed"
    obj["stateTransitionTime"] = timestamps.format(now)
    if before_terminating is not None and before_terminating != "terminating":
        obj["previousState"] = before_terminating
        obj["previousStateTransitionTime"] = before_time
    obj.setdefault("executionInfo", {})["endTime"] = timestamps.format(now)
    store.mark_changed()
