"""The service's state: every Batch object as the JSON Batch returns for it.

Objects are stored in their wire shape (camelCase, as a GET returns them, without
``odata.metadata`` and ``url``, which are added when a response is written), keyed by their id
lower-cased: Batch ids are case-insensitive, and job and job-schedule ids share one namespace.
Everything runs on one asyncio loop, so no locks are needed; every mutation goes through
:meth:`Store.touch` or :meth:`Store.mark_changed` so that persistence sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchwire import timestamps

JSON = dict[str, Any]


@dataclass
class Store:
    schedules: dict[str, JSON] = field(default_factory=dict)
    """Job schedules by ``id.lower()``."""
    jobs: dict[str, JSON] = field(default_factory=dict)
    """Jobs by ``id.lower()`` (``{scheduleId}:job-N`` for jobs a schedule created)."""
    tasks: dict[str, dict[str, JSON]] = field(default_factory=dict)
    """Tasks by job key, then ``taskId.lower()``."""
    pools: dict[str, JSON] = field(default_factory=dict)
    """Pools (auto pools included) by ``id.lower()``."""
    nodes: dict[str, dict[str, JSON]] = field(default_factory=dict)
    """Compute nodes by pool key, then node id."""
    job_counters: dict[str, int] = field(default_factory=dict)
    """Last job number used per schedule key (job ids are never reused)."""
    job_nodes: dict[str, dict[str, JSON]] = field(default_factory=dict)
    """Per job key, per node id: the job preparation / release task status entry of that node (the wire shape of
    ``GET /jobs/{id}/jobpreparationandreleasetaskstatus``)."""
    version: int = 0
    """Incremented on every mutation."""

    def __post_init__(self) -> None:
        self._etag_counter = itertools.count(int(time.time() * 1000) << 8)
        self._changed = asyncio.Event()

    # -- identity ---------------------------------------------------------------------------------
    @staticmethod
    def key(object_id: str) -> str:
        return object_id.lower()

    def id_taken(self, object_id: str) -> bool:
        """Job and job-schedule ids share one case-insensitive namespace."""
        key = self.key(object_id)
        return key in self.schedules or key in self.jobs

    # -- change tracking --------------------------------------------------------------------------
    def new_etag(self) -> str:
        """An unquoted ETag in Batch's form: ``0x`` and 15 upper-case hex digits."""
        return f"0x{next(self._etag_counter) & 0xFFFFFFFFFFFFFFF:015X}"

    def touch(self, obj: JSON, now: datetime) -> None:
        """Give ``obj`` a new ETag and ``lastModified``, and record the change."""
        obj["eTag"] = self.new_etag()
        obj["lastModified"] = timestamps.format(now)
        self.mark_changed()

    def mark_changed(self) -> None:
        """Record a mutation that does not change an object's ETag (a job created under a schedule)."""
        self.version += 1
        self._changed.set()

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    # -- persistence ------------------------------------------------------------------------------
    def snapshot(self) -> JSON:
        return {
            "schedules": self.schedules,
            "jobs": self.jobs,
            "tasks": self.tasks,
            "pools": self.pools,
            "nodes": self.nodes,
            "jobCounters": self.job_counters,
            "jobNodes": self.job_nodes,
        }

    def restore(self, data: JSON) -> None:
        self.schedules = dict(data.get("schedules", {}))
        self.jobs = dict(data.get("jobs", {}))
        self.tasks = dict(data.get("tasks", {}))
        self.pools = dict(data.get("pools", {}))
        self.nodes = dict(data.get("nodes", {}))
        self.job_counters = dict(data.get("jobCounters", {}))
        self.job_nodes = dict(data.get("jobNodes", {}))
        self.mark_changed()

    def clear(self) -> None:
        self.restore({})
