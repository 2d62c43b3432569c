"""The engine's jobs: from creation to ``completed`` or deletion.

:class:`Jobs` attaches a new job to its pool (creating its auto pool, or reusing the ``jobschedule``
pool of its schedule), creates its job manager task and runs it (:mod:`localbatch.engine_tasks`), and
ends the job: ``JMComplete`` or ``AllTasksComplete`` when its tasks are done, ``MaxWallClockTimeExpiry``
from its wall-clock watchdog, a terminate or delete from the API, a scheduling error when its pool
cannot run it. An ended job releases its ``job``-lifetime auto pool and is reported through the
``job_ended`` callback (its schedule may then create the next job).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from batchwire import durations, timestamps
from localbatch import windows
from localbatch.engine_runtime import ACTIVE_JOB_STATES, Runtime, set_state, sleep_until
from localbatch.engine_tasks import UNLIMITED_WALL_CLOCK, Tasks
from localbatch.pools import Pools, PoolUnavailable
from localbatch.store import JSON
from localbatch.windows import Windows

AUTO_POOL_DEFAULTS: JSON = {
    "taskSlotsPerNode": 1,
    "taskSchedulingPolicy": {"nodeFillType": "spread"},
    "resizeTimeout": "PT15M",
    "targetDedicatedNodes": 0,
    "targetLowPriorityNodes": 0,
    "enableAutoScale": False,
    "enableInterNodeCommunication": False,
}
POOL_POLL_SECONDS = 0.5
"""How often a job waiting for its named pool to exist looks again (real seconds)."""


class Jobs:
    """Owns the jobs of ``store.jobs`` over time: their runs, watchdogs and endings."""

    def __init__(self, runtime: Runtime, pools: Pools, tasks: Tasks, *, job_ended: Callable[[JSON], None]) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.pools = pools
        self.tasks = tasks
        self._job_ended = job_ended
        self._job_runs: dict[str, asyncio.Task[Any]] = {}
        self._job_endings: dict[str, asyncio.Task[Any]] = {}
        self._watchdogs: dict[str, asyncio.Task[Any]] = {}
        self._completions: dict[str, asyncio.Task[Any]] = {}
        self.windows = Windows()
        """How long a job stays ``terminating`` and ``deleting`` (the service sets its own)."""

    # -- lifecycle --------------------------------------------------------------------------------
    def resume(self) -> None:
        """After a restore: finish deletions and terminations, run active jobs again (tasks requeued)."""
        for key, job in list(self.store.jobs.items()):
            state = job.get("state")
            if state == "deleting":
                self.delete(key)
            elif state == "terminating":
                self.terminate(key, (job.get("executionInfo") or {}).get("terminateReason") or "UserTerminate")
            elif state in ACTIVE_JOB_STATES:
                self.tasks.requeue_interrupted(key)
                self.start_run(key)

    def forget_runs(self) -> None:
        """The engine stopped (every run cancelled): drop the handles."""
        self._job_runs.clear()
        self._job_endings.clear()
        self._watchdogs.clear()
        self._completions.clear()

    # -- creation ---------------------------------------------------------------------------------
    def created(self, key: str) -> None:
        """A standalone job was created (``POST /jobs``): attach its pool and run its manager task."""
        job = self.store.jobs.get(key)
        if job is None:
            return
        job.setdefault("executionInfo", {}).setdefault("startTime", job.get("creationTime"))
        self.prepare(key, schedule=None)

    def prepare(self, job_key: str, *, schedule: JSON | None) -> None:
        """Synchronously: auto pool (so ``executionInfo.poolId`` is set), the job manager task; then run."""
        job = self.store.jobs[job_key]
        self._attach_pool(job, schedule)
        manager = job.get("jobManagerTask")
        if manager:
            self.tasks.create_manager_task(job_key, job, manager)
        self.store.mark_changed()
        self.start_run(job_key)

    def _attach_pool(self, job: JSON, schedule: JSON | None) -> None:
        pool_info = job.get("poolInfo") or {}
        info = job.setdefault("executionInfo", {})
        if pool_info.get("poolId"):
            info["poolId"] = pool_info["poolId"]
        elif pool_info.get("autoPoolSpecification"):
            auto = pool_info["autoPoolSpecification"]
            auto.setdefault("keepAlive", False)
            pool_spec = auto.setdefault("pool", {})
            for name, value in AUTO_POOL_DEFAULTS.items():
                pool_spec.setdefault(name, copy.deepcopy(value))
            existing = None
            if schedule is not None and auto.get("poolLifetimeOption") == "jobschedule":
                existing = self.schedule_pool_key(schedule)
                if existing is not None and self.store.pools[existing].get("state") != "active":
                    existing = None
            if existing is not None:
                info["poolId"] = self.store.pools[existing]["id"]
            else:
                info["poolId"] = self.pools.create_auto_pool(auto)

    def schedule_pool_key(self, sched: JSON) -> str | None:
        """The pool of the schedule's most recent job that still has one (its ``jobschedule`` auto pool)."""
        key = sched["id"].lower()
        for number in range(self.store.job_counters.get(key, 0), 0, -1):
            job = self.store.jobs.get(f"{key}:job-{number}")
            pool_id = ((job or {}).get("executionInfo") or {}).get("poolId")
            if pool_id and pool_id.lower() in self.store.pools:
                return pool_id.lower()
        return None

    # -- running ----------------------------------------------------------------------------------
    def start_run(self, job_key: str) -> None:
        """Run the job's tasks (unless there is nothing to do) and arm its wall-clock watchdog."""
        job = self.store.jobs.get(job_key)
        nothing_to_do = (
            job is not None and job.get("onAllTasksComplete") != "terminatejob" and not self.store.tasks.get(job_key)
        )
        run = self._job_runs.get(job_key)
        if not nothing_to_do and (run is None or run.done()):
            self._job_runs[job_key] = self.rt.spawn(self._run(job_key))
        limit = ((job or {}).get("constraints") or {}).get("maxWallClockTime")
        if limit and durations.parse(limit) < UNLIMITED_WALL_CLOCK and job_key not in self._watchdogs:
            self._watchdogs[job_key] = self.rt.spawn(self._wall_clock(job_key, durations.parse(limit)))

    async def _run(self, job_key: str) -> None:
        """A job's life: its manager task on a node of its pool, then its end."""
        job = self.store.jobs.get(job_key)
        if job is None:
            return
        try:
            tasks = self.store.tasks.get(job_key, {})
            pending = [t for t in tasks.values() if t.get("state") != "completed"]
            if not pending:
                # Nothing to run. "If a job contains no tasks, then all tasks are considered complete":
                # with ``terminatejob`` it ends now, otherwise it stays active (as in Batch). Tasks all
                # completed (a restart between a task's end and its job's): apply the end rules now.
                if tasks:
                    self._after_tasks(job_key)
                elif job.get("onAllTasksComplete") == "terminatejob":
                    self.finish(job_key, "AllTasksComplete")
                return
            pool_key = await self._wait_for_pool(job_key)
            reason = await self.tasks.run_job(job_key, pool_key)  # engine_tasks / task_scheduling
            if reason is not None:
                await self.terminate_now(job_key, reason)
        except PoolUnavailable as exc:
            error: JSON = {"category": "usererror", "code": exc.code, "message": exc.message}
            if exc.details:
                error["details"] = exc.details
            self.finish(job_key, None, scheduling_error=error)

    async def _wait_for_pool(self, job_key: str) -> str:
        """The pool key of a job; waits (as Batch does) while a named pool does not exist yet."""
        while True:
            job = self.store.jobs.get(job_key)
            if job is None:
                raise PoolUnavailable("JobNotFound", f"the job {job_key} was deleted")
            pool_id = (job.get("executionInfo") or {}).get("poolId")
            if pool_id and pool_id.lower() in self.store.pools:
                return pool_id.lower()
            if (job.get("poolInfo") or {}).get("autoPoolSpecification"):
                raise PoolUnavailable("AutoPoolNotFound", f"the job's auto pool {pool_id} no longer exists")
            await asyncio.sleep(POOL_POLL_SECONDS)

    async def _wall_clock(self, job_key: str, limit: timedelta) -> None:
        job = self.store.jobs.get(job_key)
        if job is None:
            return
        await sleep_until(self.clock, timestamps.parse(job["creationTime"]) + limit)
        self._watchdogs.pop(job_key, None)
        self.terminate(job_key, "MaxWallClockTimeExpiry")

    # -- ending -----------------------------------------------------------------------------------
    def _after_tasks(self, job_key: str) -> None:
        """The job's tasks are done: ``killJobOnCompletion`` -> JMComplete, ``terminatejob`` -> AllTasksComplete."""
        job = self.store.jobs.get(job_key)
        if job is None or job.get("state") != "active":
            return
        manager = job.get("jobManagerTask")
        tasks = self.store.tasks.get(job_key, {})
        if manager and manager.get("killJobOnCompletion", True):
            self.terminate(job_key, "JMComplete")
        elif job.get("onAllTasksComplete") == "terminatejob" and all(
            t.get("state") == "completed" for t in tasks.values()
        ):
            self.terminate(job_key, "AllTasksComplete")

    def finish(
        self, job_key: str, reason: str | None, *, scheduling_error: JSON | None = None
    ) -> asyncio.Task[Any] | None:
        """Move a job to ``terminating`` now and to ``completed`` when the terminating window has passed
        (:mod:`localbatch.windows`), then release its pool and tell its schedule. Returns the task that
        completes it (None: completed already, the window being 0)."""
        job = self.store.jobs.get(job_key)
        if job is None or job.get("state") in ("completed", "deleting"):
            return None
        now = self.clock.now()
        info = job.setdefault("executionInfo", {})
        if reason:
            info["terminateReason"] = reason
        if scheduling_error is not None:
            info["schedulingError"] = scheduling_error
        if job.get("state") != "terminating":
            set_state(job, "terminating", now)
            self.store.touch(job, now)
        self._cancel_watchdog(job_key)
        if self.windows.terminating_seconds <= 0:
            self._complete(job_key)
            return None
        pending = self._completions.get(job_key)
        if pending is None or pending.done():
            self._completions[job_key] = pending = self.rt.spawn(self._complete_after_window(job_key))
        return pending

    async def _complete_after_window(self, job_key: str) -> None:
        job = self.store.jobs.get(job_key)
        if job is not None:
            await self.windows.wait_terminating(self.clock, windows.since(job, self.clock.now()))
            self._complete(job_key)

    def _complete(self, job_key: str) -> None:
        """``terminating`` -> ``completed`` (same ETag, ``previousState`` the one before terminating)."""
        job = self.store.jobs.get(job_key)
        if job is None or job.get("state") != "terminating":
            return
        windows.complete(self.store, job, self.clock.now())
        self._release_pool(job)
        self._job_ended(job)

    def _cancel_watchdog(self, job_key: str) -> None:
        watchdog = self._watchdogs.pop(job_key, None)
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()

    def _release_pool(self, job: JSON) -> None:
        auto = (job.get("poolInfo") or {}).get("autoPoolSpecification") or {}
        pool_id = (job.get("executionInfo") or {}).get("poolId")
        if auto.get("poolLifetimeOption") == "job" and not auto.get("keepAlive") and pool_id:
            self.pools.delete_pool(pool_id.lower())

    def terminate(self, key: str, reason: str = "UserTerminate") -> None:
        """The API set ``terminating`` (or the engine decided to end the job): kill its tasks, complete it."""
        if key in self._job_endings and not self._job_endings[key].done():
            return
        job = self.store.jobs.get(key)
        if job is not None and job.get("state") not in ("completed", "deleting"):
            job.setdefault("executionInfo", {})["terminateReason"] = reason  # shown while terminating
        self._job_endings[key] = self.rt.spawn(self.terminate_now(key, reason))

    async def terminate_now(self, key: str, reason: str) -> None:
        """:meth:`terminate`, awaited."""
        job = self.store.jobs.get(key)
        if job is None or job.get("state") in ("completed", "deleting"):
            return
        if job.get("state") != "terminating":
            now = self.clock.now()
            set_state(job, "terminating", now)
            self.store.touch(job, now)
        await self._stop_run(key, reason)
        await self.tasks.release_job(key)  # job release tasks run before the job completes
        completion = self.finish(key, reason)
        if completion is not None:
            await asyncio.gather(completion, return_exceptions=True)

    async def pause_run(self, key: str) -> None:
        """Cancel a job's run (killing its processes) but leave its tasks as they are (job disable)."""
        run = self._job_runs.pop(key, None)
        if run is not None and not run.done() and run is not asyncio.current_task():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    async def _stop_run(self, key: str, reason: str) -> None:
        """Cancel a job's run (killing its processes) and end its unfinished tasks."""
        run = self._job_runs.pop(key, None)
        if run is not None and not run.done() and run is not asyncio.current_task():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        self.tasks.end_unfinished(key, reason)

    def delete(self, key: str) -> None:
        """The API set ``deleting``: kill the job's tasks, delete its auto pool, forget it."""
        self.rt.spawn(self.delete_now(key))

    async def delete_now(self, key: str) -> None:
        """:meth:`delete`, awaited."""
        job = self.store.jobs.get(key)
        if job is None:
            return
        if job.get("state") != "deleting":
            now = self.clock.now()
            set_state(job, "deleting", now)
            self.store.touch(job, now)
        await self._stop_run(key, "JobDeleted")
        await self.tasks.release_job(key)
        self._cancel_watchdog(key)
        self._release_pool(job)
        await self.windows.wait_deleting(self.clock, windows.since(job, self.clock.now()))  # GET: 200 deleting
        self.store.jobs.pop(key, None)
        self.store.tasks.pop(key, None)
        self.tasks.job_forgotten(key)
        self.store.mark_changed()
        self._job_ended(job)

    # -- pools going away -------------------------------------------------------------------------
    def pool_deleting(self, pool_key: str) -> None:
        """Pool ``pool_key`` is being deleted: stop the active jobs running on it and end their tasks."""
        for job_key, job in list(self.store.jobs.items()):
            pool_id = (job.get("executionInfo") or {}).get("poolId") or ""
            if pool_id.lower() == pool_key and job.get("state") == "active":
                run = self._job_runs.pop(job_key, None)
                if run is not None:
                    run.cancel()
                self.rt.spawn(self._pool_lost(job_key, run))

    async def _pool_lost(self, job_key: str, run: asyncio.Task[Any] | None) -> None:
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        self.tasks.end_on_lost_pool(job_key)
        job = self.store.jobs.get(job_key)
        if job is not None and (job.get("poolInfo") or {}).get("autoPoolSpecification"):
            self.finish(job_key, None, scheduling_error={
                "category": "usererror", "code": "AutoPoolDeleted",
                "message": "the job's auto pool was deleted while the job was active",
            })
