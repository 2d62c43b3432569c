"""What every part of the engine shares: the store, the clock, the task processes, its asyncio tasks.

The engine's parts (:mod:`localbatch.engine_schedules`, :mod:`localbatch.engine_jobs`,
:mod:`localbatch.engine_tasks`, :mod:`localbatch.pools`) all write wire objects into one
:class:`~localbatch.store.Store` on one virtual clock, start background work on the service's one
asyncio loop, and run processes that a stop must kill. :class:`Runtime` holds those, so that stopping
the engine cancels every background task and kills every process whichever part started it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from batchwire import timestamps
from localbatch import container_tasks, runner
from localbatch.clock import VirtualClock
from localbatch.store import JSON, Store

log = logging.getLogger("localbatch.engine")

ACTIVE_JOB_STATES = ("active", "disabling", "disabled", "enabling", "terminating")
MAX_TICK_SECONDS = 0.5
"""Loops waiting on the virtual clock re-check at least this often (real seconds), so clock jumps are noticed."""


class Runtime:
    """The engine's shared state and its background-task and HTTP-session plumbing."""

    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        *,
        work_dir: Path,
        base_url: str,
        execute: bool,
        no_execute_exit_code: int,
    ) -> None:
        self.store = store
        self.clock = clock
        self.work_dir = Path(work_dir)
        self.base_url = base_url.rstrip("/")
        self.execute = execute
        self.no_execute_exit_code = no_execute_exit_code
        self.processes = runner.ProcessTable()
        self.containers = container_tasks.ContainerHost(self.work_dir)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; :meth:`cancel_all` cancels it, a failure is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task failed", exc_info=task.exception())

    def http(self) -> aiohttp.ClientSession:
        """The HTTP session for resource and output files (created on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600, sock_connect=30))
        return self._session

    async def cancel_all(self, *also: asyncio.Task[Any]) -> None:
        """Cancel every background task (and ``also``), killing every task process and removing every
        container this service made: no orphans."""
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        self.processes.kill_all()
        self.containers.remove_all_now()
        await asyncio.gather(*pending, *also, return_exceptions=True)
        self.processes.kill_all()
        await self.containers.prune()

    async def close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def sleep_until(clock: VirtualClock, deadline: datetime) -> None:
    """Sleep until virtual time ``deadline``, re-reading the clock often (it can be re-scaled or advanced)."""
    while clock.now() < deadline:  # noqa: ASYNC110 - polling the virtual clock is the point
        await asyncio.sleep(max(min(MAX_TICK_SECONDS, clock.real_seconds_until(deadline)), 0.001))


def set_state(obj: JSON, state: str, now: datetime) -> None:
    """Move a wire object to ``state``, keeping the previous one as Batch reports it."""
    if obj.get("state") == state:
        return
    if obj.get("state") is not None:
        obj["previousState"] = obj["state"]
        obj["previousStateTransitionTime"] = obj.get("stateTransitionTime")
    obj["state"] = state
    obj["stateTransitionTime"] = timestamps.format(now)
