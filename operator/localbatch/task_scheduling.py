"""One job's scheduling loop: which task runs when, and when the job must end because of its tasks.

While the job is ``active`` the loop starts every task that may run, each on its own node slot:

- its dependencies are met (:mod:`localbatch.dependencies`; jobs with ``usesTaskDependencies``);
- fewer than the job's ``maxParallelTasks`` (-1: unlimited) tasks of the job are running;
- its ``requiredSlots`` fit a node: a task needing more slots than the pool's ``taskSlotsPerNode`` is never
  scheduled and stays ``active`` (Azure: "If the Task requires more slots than are available on a node, the
  Task will never be scheduled"); tasks share a node up to ``taskSlotsPerNode`` slots.

A disabled job (``disabling``/``disabled``) starts nothing new. After each task completes, its exit
conditions apply (:mod:`localbatch.exit_conditions`): with ``onTaskFailure: performexitoptionsjobaction`` a
failed task's ``jobAction`` ``terminate`` ends the job with ``terminateReason`` ``TaskFailed``, ``disable``
disables it (as Disable Job with ``disableTasks: requeue``: its running tasks go back to ``active``).

The job must end (the loop returns the ``terminateReason``) when its job manager task completed with
``killJobOnCompletion`` (``JMComplete``, other running tasks are ended), when a task's exit condition
terminates it (``TaskFailed``), or when ``onAllTasksComplete`` is ``terminatejob`` and every task is
``completed`` (``AllTasksComplete``; a task blocked by a failed dependency is ``active``, so such a job never
ends that way). Otherwise the loop keeps waiting for tasks to be added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from localbatch import dependencies, exit_conditions
from localbatch.clock import VirtualClock
from localbatch.engine_runtime import set_state
from localbatch.store import JSON, Store

LOOP_TICK_SECONDS = 1.0
ACTIVE = "active"
DISABLED_STATES = ("disabling", "disabled")


class TaskHost(Protocol):
    """What the loop needs from :class:`localbatch.engine_tasks.Tasks`."""

    store: Store
    clock: VirtualClock
    runners: dict[tuple[str, str], asyncio.Task[Any]]

    def run(self, job_key: str, pool_key: str, task: JSON) -> Awaitable[None]: ...
    def is_manager(self, job: JSON, task: JSON) -> bool: ...
    def wake(self, job_key: str) -> None: ...
    def wait_wakeup(self, job_key: str, seconds: float) -> Awaitable[None]: ...
    def spawn(self, coro: Any) -> asyncio.Task[Any]: ...
    def requeue(self, task: JSON) -> None: ...


class JobRun:
    """The scheduling loop of one job (see the module docstring)."""

    def __init__(self, host: TaskHost, job_key: str, pool_key: str) -> None:
        self.host = host
        self.store = host.store
        self.job_key = job_key
        self.pool_key = pool_key
        self.verdict: str | None = None

    async def run(self) -> str | None:
        try:
            while True:
                job = self.store.jobs.get(self.job_key)
                if job is None or job.get("state") not in (ACTIVE, *DISABLED_STATES, "enabling"):
                    return None
                verdict = self.verdict or self._verdict(job)
                if verdict is not None:
                    return verdict
                if job.get("state") == ACTIVE:
                    self._start_ready(job)
                await self.host.wait_wakeup(self.job_key, LOOP_TICK_SECONDS)
        finally:
            await self._stop_all()

    # -- decisions --------------------------------------------------------------------------------
    def _tasks(self) -> dict[str, JSON]:
        return self.store.tasks.get(self.job_key, {})

    def _verdict(self, job: JSON) -> str | None:
        tasks = self._tasks()
        manager = job.get("jobManagerTask") or {}
        if manager and manager.get("killJobOnCompletion", True):
            task = tasks.get(str(manager.get("id", "")).lower())
            if task is not None and task.get("state") == "completed":
                return "JMComplete"
        if job.get("state") == ACTIVE and job.get("onAllTasksComplete") == "terminatejob" and tasks and all(
            t.get("state") == "completed" for t in tasks.values()
        ):
            return "AllTasksComplete"
        return None

    def _running_count(self) -> int:
        return sum(1 for (job_key, _), run in self.host.runners.items() if job_key == self.job_key and not run.done())

    def _start_ready(self, job: JSON) -> None:
        limit = int(job.get("maxParallelTasks") or -1)
        pool = self.store.pools.get(self.pool_key) or {}
        capacity = int(pool.get("taskSlotsPerNode") or 1)
        tasks = self._tasks()
        uses_dependencies = bool(job.get("usesTaskDependencies"))
        running = self._running_count()
        for key, task in list(tasks.items()):
            if limit > 0 and running >= limit:
                return
            if task.get("state") != ACTIVE or self._has_runner(key):
                continue
            if int(task.get("requiredSlots") or 1) > capacity:
                continue
            if uses_dependencies and task.get("dependsOn") and dependencies.state(task, tasks) != "ready":
                continue
            self.host.runners[(self.job_key, key)] = self.host.spawn(self._run_one(key, task))
            running += 1

    def _has_runner(self, key: str) -> bool:
        run = self.host.runners.get((self.job_key, key))
        return run is not None and not run.done()

    # -- one task ---------------------------------------------------------------------------------
    async def _run_one(self, key: str, task: JSON) -> None:
        try:
            await self.host.run(self.job_key, self.pool_key, task)
        finally:
            if self.host.runners.get((self.job_key, key)) is asyncio.current_task():
                self.host.runners.pop((self.job_key, key), None)
            self.host.wake(self.job_key)
        job = self.store.jobs.get(self.job_key)
        if job is None or task.get("state") != "completed":
            return
        action = exit_conditions.job_action(job, task)
        if action == "terminate" and self.verdict is None:
            self.verdict = "TaskFailed"
        elif action == "disable" and job.get("state") == ACTIVE:
            self._disable(job)

    def _disable(self, job: JSON) -> None:
        """A task's exit condition disabled the job: as Disable Job with ``disableTasks: requeue``."""
        now = self.host.clock.now()
        set_state(job, "disabling", now)
        for (job_key, key), run in list(self.host.runners.items()):
            if job_key == self.job_key:
                run.cancel()
                task = self._tasks().get(key)
                if task is not None:
                    self.host.requeue(task)
        set_state(job, "disabled", now)
        self.store.touch(job, now)

    async def _stop_all(self) -> None:
        runs = [(k, r) for k, r in self.host.runners.items() if k[0] == self.job_key]
        for key, run in runs:
            self.host.runners.pop(key, None)
            run.cancel()
        await asyncio.gather(*(r for _, r in runs), return_exceptions=True)
