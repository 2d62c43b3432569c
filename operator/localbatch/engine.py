"""The execution engine of the local Batch service: everything that happens over time.

The API layer validates requests, writes objects into the :class:`~localbatch.store.Store` and
notifies the engine (CONTRACTS.md). The engine then:

- keeps each job schedule's ``executionInfo`` (``nextRunTime``, ``recentJob``, ``endTime``) and
  creates its jobs ``{scheduleId}:job-N`` on the virtual clock (:mod:`localbatch.scheduler`);
- creates auto pools and brings their nodes up, running start tasks (:mod:`localbatch.pools`);
- runs each job's job manager task as a real local process (:mod:`localbatch.runner`), with
  resource files in and output files out over HTTP (:mod:`localbatch.transfer`);
- ends jobs (``JMComplete``, ``AllTasksComplete``, ``MaxWallClockTimeExpiry``, terminate), deletes
  pools whose lifetime ended, completes schedules.

Everything runs on the service's one asyncio loop; notifications are synchronous and spawn tasks.
After a state-file restore, :meth:`Engine.start` requeues tasks that were preparing or running
when the service stopped (``requeueCount`` + 1) and runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from batchwire import defaults, durations, timestamps
from localbatch import runner, scheduler, taskcounts
from localbatch.clock import VirtualClock
from localbatch.pools import Pools, PoolUnavailable, base_env
from localbatch.store import JSON, Store

log = logging.getLogger("localbatch.engine")

ACTIVE_JOB_STATES = ("active", "disabling", "disabled", "enabling", "terminating")
AUTO_POOL_DEFAULTS: JSON = {
    "taskSlotsPerNode": 1,
    "taskSchedulingPolicy": {"nodeFillType": "spread"},
    "resizeTimeout": "PT15M",
    "targetDedicatedNodes": 0,
    "targetLowPriorityNodes": 0,
    "enableAutoScale": False,
    "enableInterNodeCommunication": False,
}
MAX_TICK_SECONDS = 0.5
"""The schedule loop re-checks at least this often (real seconds), so clock jumps are noticed."""


class Engine:
    """Runs the local Batch service's schedules, jobs, pools and tasks (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        *,
        work_dir: Path,
        base_url: str,
        execute: bool = True,
        no_execute_exit_code: int = 0,
        account_name: str = "devbatch",
        node_step_seconds: float = 0.05,
    ) -> None:
        self.store = store
        self.clock = clock
        self.work_dir = Path(work_dir)
        self.base_url = base_url.rstrip("/")
        self.execute = execute
        self.no_execute_exit_code = no_execute_exit_code
        self.account_name = account_name
        self.processes = runner.ProcessTable()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._job_runs: dict[str, asyncio.Task[Any]] = {}
        self._job_endings: dict[str, asyncio.Task[Any]] = {}
        self._watchdogs: dict[str, asyncio.Task[Any]] = {}
        self._configs: dict[str, str] = {}
        self._wake: dict[str, datetime] = {}
        self._poke = asyncio.Event()
        self._loop_task: asyncio.Task[Any] | None = None
        self._loop_target: datetime | None = None
        """The soonest wake-up the schedule loop is sleeping towards (a later one needs no poke)."""
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False
        self.pools = Pools(
            store,
            clock,
            work_dir=self.work_dir,
            base_url=self.base_url,
            account_name=account_name,
            execute=execute,
            session=self._http,
            processes=self.processes,
            spawn=self._spawn,
            node_step_seconds=node_step_seconds if execute else 0.0,
        )

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the schedule loop; after a restore, resume whatever was in flight."""
        self._stopped = False
        self.work_dir.mkdir(parents=True, exist_ok=True)
        reaped = await asyncio.to_thread(runner.reap_orphans, self.work_dir / "nodes")
        if reaped:
            log.warning("killed %d task process group(s) left by a previous run on %s", reaped, self.work_dir)
        self.pools.recover()
        for key, sched in self.store.schedules.items():
            self._configs[key] = _config(sched)
            state = sched.get("state")
            if state == "terminating":
                self.terminate_schedule(key)
            elif state == "deleting":
                self.delete_schedule(key)
            elif state in ("active", "disabled"):
                self._wake[key] = self.clock.now()
        for key, job in list(self.store.jobs.items()):
            state = job.get("state")
            if state == "deleting":
                self.delete_job(key)
            elif state == "terminating":
                self.terminate_job(key, (job.get("executionInfo") or {}).get("terminateReason") or "UserTerminate")
            elif state in ACTIVE_JOB_STATES:
                self._requeue_interrupted(key)
                self._start_job_run(key)
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule_loop())

    async def stop(self) -> None:
        """Cancel every loop and task run, killing their processes (no orphans)."""
        self._stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        self.processes.kill_all()
        await asyncio.gather(*pending, *([self._loop_task] if self._loop_task else []), return_exceptions=True)
        self.processes.kill_all()
        self._job_runs.clear()
        self._job_endings.clear()
        self._watchdogs.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def clock_changed(self) -> None:
        """The admin API moved or re-scaled the clock: re-evaluate every schedule now."""
        now = self.clock.now()
        for key in self.store.schedules:
            self._wake[key] = now
        self._poke.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task failed", exc_info=task.exception())

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600, sock_connect=30))
        return self._session

    # -- schedules --------------------------------------------------------------------------------
    def schedule_changed(self, key: str) -> None:
        """A schedule was created or changed: set ``nextRunTime`` and create a due job, synchronously."""
        sched = self.store.schedules.get(key)
        if sched is None:
            return
        config = _config(sched)
        previous = self._configs.get(key)
        self._configs[key] = config
        info = sched.setdefault("executionInfo", {})
        if previous is None and "nextRunTime" not in info and "recentJob" not in info:
            rec = self._recurrence(sched)
            _set_next_run(info, rec.first_slot_after(None))
        elif previous is not None and previous != config:
            # The ``schedule`` changed: recompute from its anchor, from the last job on (a run-once
            # schedule set again, e.g. a PUT without ``schedule``, runs once more, now).
            rec = self._recurrence(sched, changed_at=self.clock.now())
            last = self._last_job_creation(sched)
            _set_next_run(info, rec.first_slot_after(last if rec.interval is not None else None))
        self._evaluate(key)

    def _recurrence(self, sched: JSON, changed_at: datetime | None = None) -> scheduler.Recurrence:
        created = timestamps.parse(sched["creationTime"]) if sched.get("creationTime") else self.clock.now()
        config = sched.get("schedule") or {}
        if changed_at is not None and not config.get("recurrenceInterval"):
            created = changed_at
        return scheduler.Recurrence.from_wire(config, created=created)

    def _last_job_creation(self, sched: JSON) -> datetime | None:
        recent = ((sched.get("executionInfo") or {}).get("recentJob") or {}).get("id")
        job = self.store.jobs.get(recent.lower()) if recent else None
        return timestamps.parse(job["creationTime"]) if job and job.get("creationTime") else None

    def _active_job(self, sched: JSON) -> JSON | None:
        recent = ((sched.get("executionInfo") or {}).get("recentJob") or {}).get("id")
        job = self.store.jobs.get(recent.lower()) if recent else None
        if job is not None and job.get("state") in ACTIVE_JOB_STATES:
            return job
        return None

    def _evaluate(self, key: str) -> None:
        """Apply :func:`scheduler.decide` to one schedule now."""
        sched = self.store.schedules.get(key)
        self._wake.pop(key, None)
        if sched is None or sched.get("state") not in ("active", "disabled"):
            return
        now = self.clock.now()
        info = sched.setdefault("executionInfo", {})
        next_run = timestamps.parse(info["nextRunTime"]) if info.get("nextRunTime") else None
        decision = scheduler.decide(
            self._recurrence(sched),
            next_run=next_run,
            now=now,
            job_active=self._active_job(sched) is not None,
            enabled=sched.get("state") == "active",
        )
        if decision.create_job:
            self._create_scheduled_job(key, sched, now)
        if _set_next_run(info, decision.next_run_time):
            self.store.mark_changed()
        if decision.complete:
            self._complete_schedule(key, now)
            return
        if decision.wake_at is not None:
            self._wake[key] = decision.wake_at
            if self._loop_target is None or decision.wake_at < self._loop_target:
                self._poke.set()

    def _complete_schedule(self, key: str, now: datetime) -> None:
        sched = self.store.schedules.get(key)
        if sched is None or sched.get("state") == "completed":
            return
        _set_state(sched, "completed", now)
        info = sched.setdefault("executionInfo", {})
        info.pop("nextRunTime", None)
        info["endTime"] = timestamps.format(now)
        self.store.touch(sched, now)
        self._wake.pop(key, None)
        self._release_schedule_pool(sched)

    def _release_schedule_pool(self, sched: JSON) -> None:
        """Delete the schedule's ``jobschedule``-lifetime auto pool (unless ``keepAlive``)."""
        auto = ((sched.get("jobSpecification") or {}).get("poolInfo") or {}).get("autoPoolSpecification") or {}
        if auto.get("poolLifetimeOption") != "jobschedule" or auto.get("keepAlive"):
            return
        pool_key = self._schedule_pool_key(sched)
        if pool_key is not None:
            self.pools.delete_pool(pool_key)

    def _schedule_pool_key(self, sched: JSON) -> str | None:
        """The pool of the schedule's most recent job that still has one (its ``jobschedule`` auto pool)."""
        key = sched["id"].lower()
        for number in range(self.store.job_counters.get(key, 0), 0, -1):
            job = self.store.jobs.get(f"{key}:job-{number}")
            pool_id = ((job or {}).get("executionInfo") or {}).get("poolId")
            if pool_id and pool_id.lower() in self.store.pools:
                return pool_id.lower()
        return None

    async def _schedule_loop(self) -> None:
        while not self._stopped:
            now = self.clock.now()
            for key in [k for k, when in self._wake.items() if when <= now]:
                try:
                    self._evaluate(key)
                except Exception:  # one broken schedule must not stop the others
                    log.exception("evaluating schedule %s failed", key)
                    self._wake.pop(key, None)
            soonest = min(self._wake.values(), default=None)
            self._loop_target = soonest
            timeout = MAX_TICK_SECONDS
            if soonest is not None:
                timeout = min(timeout, self.clock.real_seconds_until(soonest))
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.001)):  # not wait_for: it can swallow a cancel (3.11)
                    await self._poke.wait()

    def terminate_schedule(self, key: str) -> None:
        """The API set ``terminating``: end the active job (``TerminateJobSchedule``), then complete."""
        self._wake.pop(key, None)
        self._spawn(self._terminate_schedule(key))

    async def _terminate_schedule(self, key: str) -> None:
        sched = self.store.schedules.get(key)
        if sched is None:
            return
        job = self._active_job(sched)
        if job is not None:
            await self._terminate_job(job["id"].lower(), "TerminateJobSchedule")
        sched = self.store.schedules.get(key)
        if sched is not None and sched.get("state") == "terminating":
            self._complete_schedule(key, self.clock.now())

    def delete_schedule(self, key: str) -> None:
        """The API set ``deleting``: end and delete the schedule's jobs and pools, then forget it."""
        self._wake.pop(key, None)
        self._spawn(self._delete_schedule(key))

    async def _delete_schedule(self, key: str) -> None:
        sched = self.store.schedules.get(key)
        if sched is None:
            return
        prefix = sched["id"].lower() + ":job-"
        pool_key = self._schedule_pool_key(sched)
        job_keys = [k for k in self.store.jobs if k.startswith(prefix)]
        await asyncio.gather(*(self._delete_job(k) for k in job_keys), return_exceptions=True)
        auto = ((sched.get("jobSpecification") or {}).get("poolInfo") or {}).get("autoPoolSpecification") or {}
        if pool_key is not None and auto.get("poolLifetimeOption") == "jobschedule" and not auto.get("keepAlive"):
            teardown = self.pools.delete_pool(pool_key)
            if teardown is not None:
                await teardown
        self.store.schedules.pop(key, None)
        self.store.job_counters.pop(key, None)
        self._configs.pop(key, None)
        self._wake.pop(key, None)
        self.store.mark_changed()

    # -- jobs -------------------------------------------------------------------------------------
    def _create_scheduled_job(self, key: str, sched: JSON, now: datetime) -> None:
        number = self.store.job_counters.get(key, 0) + 1
        self.store.job_counters[key] = number
        job_id = f"{sched['id']}:job-{number}"
        # The API layer stored the jobSpecification with its read-time defaults already applied.
        spec = copy.deepcopy(sched.get("jobSpecification") or {})
        stamp = timestamps.format(now)
        job: JSON = {"id": job_id}
        if spec.get("displayName"):
            job["displayName"] = spec["displayName"]
        job.update(
            {
                "usesTaskDependencies": spec.get("usesTaskDependencies", False),
                "eTag": "",
                "lastModified": stamp,
                "creationTime": stamp,
                "state": "active",
                "stateTransitionTime": stamp,
                "priority": spec.get("priority", 0),
                "maxParallelTasks": spec.get("maxParallelTasks", -1),
                "allowTaskPreemption": spec.get("allowTaskPreemption", False),
                "constraints": spec.get("constraints"),
            }
        )
        for name in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings"):
            if spec.get(name) is not None:
                job[name] = spec[name]
        job["poolInfo"] = spec.get("poolInfo") or {}
        job["onAllTasksComplete"] = spec.get("onAllTasksComplete", "noaction")
        job["onTaskFailure"] = spec.get("onTaskFailure", "noaction")
        for name in ("networkConfiguration", "metadata"):
            if spec.get(name):
                job[name] = spec[name]
        job["executionInfo"] = {"startTime": stamp}
        job_key = job_id.lower()
        self.store.jobs[job_key] = job
        self.store.touch(job, now)
        sched.setdefault("executionInfo", {})["recentJob"] = {"id": job_id, "url": f"{self.base_url}/jobs/{job_id}"}
        self.store.mark_changed()  # the schedule's ETag does not change when Batch creates a job under it
        self._prepare_job(job_key, schedule=sched)

    def job_created(self, key: str) -> None:
        """A standalone job was created (``POST /jobs``): attach its pool and run its manager task."""
        job = self.store.jobs.get(key)
        if job is None:
            return
        job.setdefault("executionInfo", {}).setdefault("startTime", job.get("creationTime"))
        self._prepare_job(key, schedule=None)

    def _prepare_job(self, job_key: str, *, schedule: JSON | None) -> None:
        """Synchronously: auto pool (so ``executionInfo.poolId`` is set), the job manager task; then run."""
        job = self.store.jobs[job_key]
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
                existing = self._schedule_pool_key(schedule)
                if existing is not None and self.store.pools[existing].get("state") != "active":
                    existing = None
            if existing is not None:
                info["poolId"] = self.store.pools[existing]["id"]
            else:
                info["poolId"] = self.pools.create_auto_pool(auto)
        manager = job.get("jobManagerTask")
        if manager:
            self._create_manager_task(job_key, job, manager)
        self.store.mark_changed()
        self._start_job_run(job_key)

    def _create_manager_task(self, job_key: str, job: JSON, manager: JSON) -> None:
        stamp = job.get("creationTime") or timestamps.format(self.clock.now())
        task: JSON = {"id": manager["id"]}
        if manager.get("displayName"):
            task["displayName"] = manager["displayName"]
        task.update({"eTag": "", "lastModified": stamp, "creationTime": stamp, "state": "active",
                     "stateTransitionTime": stamp, "commandLine": manager.get("commandLine", "")})
        for name in ("containerSettings", "resourceFiles", "outputFiles", "environmentSettings"):
            if manager.get(name):
                task[name] = copy.deepcopy(manager[name])
        constraints = dict(defaults.TASK_CONSTRAINTS_DEFAULTS)
        constraints.update(manager.get("constraints") or {})
        task["constraints"] = constraints
        task["requiredSlots"] = manager.get("requiredSlots", 1)
        task["userIdentity"] = manager.get("userIdentity") or {
            "autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}
        }
        task["exitConditions"] = {"default": {"jobAction": "none"}}
        task["executionInfo"] = {"retryCount": 0, "requeueCount": 0}
        tasks = self.store.tasks.setdefault(job_key, {})
        tasks[manager["id"].lower()] = task
        self.store.touch(task, self.clock.now())

    def _start_job_run(self, job_key: str) -> None:
        job = self.store.jobs.get(job_key)
        nothing_to_do = (
            job is not None and job.get("onAllTasksComplete") != "terminatejob" and not self.store.tasks.get(job_key)
        )
        run = self._job_runs.get(job_key)
        if not nothing_to_do and (run is None or run.done()):
            self._job_runs[job_key] = self._spawn(self._run_job(job_key))
        limit = ((job or {}).get("constraints") or {}).get("maxWallClockTime")
        if limit and durations.parse(limit) < timedelta(days=10_000_000) and job_key not in self._watchdogs:
            self._watchdogs[job_key] = self._spawn(self._job_wall_clock(job_key, durations.parse(limit)))

    async def _run_job(self, job_key: str) -> None:
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
                    self._finish_job(job_key, "AllTasksComplete")
                return
            pool_key = await self._wait_for_pool(job_key)
            for task in pending:
                await self._run_manager_task(job_key, pool_key, task)
            self._after_tasks(job_key)
        except PoolUnavailable as exc:
            error = {"category": "usererror", "code": exc.code, "message": exc.message}
            if exc.details:
                error["details"] = exc.details
            self._finish_job(job_key, None, scheduling_error=error)

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
            await asyncio.sleep(0.5)

    async def _job_wall_clock(self, job_key: str, limit: timedelta) -> None:
        job = self.store.jobs.get(job_key)
        if job is None:
            return
        await sleep_until(self.clock, timestamps.parse(job["creationTime"]) + limit)
        self._watchdogs.pop(job_key, None)
        self.terminate_job(job_key, "MaxWallClockTimeExpiry")

    async def _run_manager_task(self, job_key: str, pool_key: str, task: JSON) -> None:
        job = self.store.jobs[job_key]
        manager = job.get("jobManagerTask") or {}
        slots = int(task.get("requiredSlots") or 1)
        node_id = await self.pools.acquire_node(pool_key, slots=slots, exclusive=bool(manager.get("runExclusive")))
        pool = self.store.pools[pool_key]
        root = self.pools.node_root(node_id)
        task_dir = root / "workitems" / job["id"] / "job-1" / task["id"]
        task["nodeInfo"] = {
            "affinityId": f"TVM:{node_id}",
            "nodeUrl": f"{self.base_url}/pools/{pool['id']}/nodes/{node_id}",
            "poolId": pool["id"],
            "nodeId": node_id,
            "taskRootDirectory": f"workitems/{job['id']}/job-1/{task['id']}",
            "taskRootDirectoryUrl": f"{self.base_url}/pools/{pool['id']}/nodes/{node_id}/files/workitems/"
            f"{job['id']}/job-1/{task['id']}",
        }
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        outcome: runner.Outcome | None = None
        try:
            if not self.execute:
                self._task_state(task, "preparing")
                start = self.clock.now()
                self._task_running(task, start, 0)
                code = self.no_execute_exit_code
                failure = None if code == 0 else runner.failure("FailureExitCode", runner.FAILURE_EXIT_CODE_MESSAGE)
                outcome = runner.Outcome(code, failure, 0, start, self.clock.now())
            else:
                env = {**base_env(root), **self.pools.node_env(pool, node_id)}
                env.update(
                    {
                        "AZ_BATCH_JOB_ID": job["id"],
                        "AZ_BATCH_TASK_ID": task["id"],
                        "AZ_BATCH_TASK_DIR": str(task_dir),
                        "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
                        "AZ_BATCH_JOB_PREP_DIR": str(root / "workitems" / job["id"] / "job-1" / "jobpreparation"),
                        "AZ_BATCH_JOB_PREP_WORKING_DIR": str(
                            root / "workitems" / job["id"] / "job-1" / "jobpreparation" / "wd"
                        ),
                        "AZ_BATCH_TASK_USER": "_azbatch",
                        "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
                    }
                )
                if job["id"].count(":job-") == 1:
                    env["AZ_BATCH_JOB_SCHEDULE_ID"] = job["id"].split(":job-")[0]
                user_env = {e["name"]: e.get("value", "") for e in job.get("commonEnvironmentSettings") or []}
                user_env.update({e["name"]: e.get("value", "") for e in task.get("environmentSettings") or []})
                env.update(user_env)
                constraints = task.get("constraints") or {}
                wall = durations.parse(constraints.get("maxWallClockTime") or defaults.MAX_DURATION)
                run = runner.TaskRun(
                    command_line=task.get("commandLine", ""),
                    task_dir=task_dir,
                    env=env,
                    resource_files=task.get("resourceFiles") or [],
                    output_files=task.get("outputFiles") or [],
                    container_settings=task.get("containerSettings"),
                    max_wall_clock=None if wall >= timedelta(days=10_000_000) else wall,
                    max_retries=int(constraints.get("maxTaskRetryCount") or 0),
                    node_root=root,
                    user_env_names=frozenset(user_env),
                )
                outcome = await runner.run_task(
                    run, clock=self.clock, session=self._http(), processes=self.processes,
                    hooks=runner.Hooks(
                        on_preparing=lambda: self._task_state(task, "preparing"),
                        on_running=lambda start, retry: self._task_running(task, start, retry),
                    ),
                    container_name=f"{job['id'].replace(':', '-')}-{task['id']}"[:60],
                )
            self._task_completed(task, outcome)
        finally:
            summary = None
            if outcome is not None:
                summary = {
                    "taskUrl": f"{self.base_url}/jobs/{job['id']}/tasks/{task['id']}",
                    "jobId": job["id"],
                    "taskId": task["id"],
                    "taskState": "completed",
                    "executionInfo": copy.deepcopy(info),
                }
            self.pools.release_node(pool_key, node_id, slots=slots, task_info=summary)

    def _task_state(self, task: JSON, state: str) -> None:
        _set_state(task, state, self.clock.now())
        self.store.touch(task, self.clock.now())

    def _task_running(self, task: JSON, start: datetime, retry: int) -> None:
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        info["startTime"] = timestamps.format(start)
        info["retryCount"] = retry
        if retry:
            info["lastRetryTime"] = timestamps.format(start)
        self._task_state(task, "running")

    def _task_completed(self, task: JSON, outcome: runner.Outcome) -> None:
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        if outcome.start_time is not None:
            info.setdefault("startTime", timestamps.format(outcome.start_time))
        info["endTime"] = timestamps.format(outcome.end_time)
        info["retryCount"] = outcome.retry_count
        if outcome.exit_code is not None:
            info["exitCode"] = outcome.exit_code
        info["result"] = "success" if outcome.succeeded else "failure"
        if outcome.failure_info:
            info["failureInfo"] = outcome.failure_info
        else:
            info.pop("failureInfo", None)
        if outcome.container_info:
            info["containerInfo"] = outcome.container_info
        self._task_state(task, "completed")

    def _after_tasks(self, job_key: str) -> None:
        """The job's tasks are done: ``killJobOnCompletion`` -> JMComplete, ``terminatejob`` -> AllTasksComplete."""
        job = self.store.jobs.get(job_key)
        if job is None or job.get("state") != "active":
            return
        manager = job.get("jobManagerTask")
        tasks = self.store.tasks.get(job_key, {})
        if manager and manager.get("killJobOnCompletion", True):
            self._finish_job(job_key, "JMComplete")
        elif job.get("onAllTasksComplete") == "terminatejob" and all(
            t.get("state") == "completed" for t in tasks.values()
        ):
            self._finish_job(job_key, "AllTasksComplete")

    def _finish_job(self, job_key: str, reason: str | None, *, scheduling_error: JSON | None = None) -> None:
        """Move a job to ``completed`` (via ``terminating``), release its pool, tell its schedule."""
        job = self.store.jobs.get(job_key)
        if job is None or job.get("state") in ("completed", "deleting"):
            return
        now = self.clock.now()
        if job.get("state") != "terminating":
            _set_state(job, "terminating", now)
        _set_state(job, "completed", now)
        info = job.setdefault("executionInfo", {})
        info["endTime"] = timestamps.format(now)
        if reason:
            info["terminateReason"] = reason
        if scheduling_error is not None:
            info["schedulingError"] = scheduling_error
        self.store.touch(job, now)
        self._cancel_watchdog(job_key)
        self._release_job_pool(job)
        self._job_ended(job)

    def _cancel_watchdog(self, job_key: str) -> None:
        watchdog = self._watchdogs.pop(job_key, None)
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()

    def _release_job_pool(self, job: JSON) -> None:
        auto = (job.get("poolInfo") or {}).get("autoPoolSpecification") or {}
        pool_id = (job.get("executionInfo") or {}).get("poolId")
        if auto.get("poolLifetimeOption") == "job" and not auto.get("keepAlive") and pool_id:
            self.pools.delete_pool(pool_id.lower())

    def _job_ended(self, job: JSON) -> None:
        """A job left the active states: its schedule may run the next one, or complete."""
        if ":job-" not in job["id"]:
            return
        sched_key = job["id"].rsplit(":job-", 1)[0].lower()
        sched = self.store.schedules.get(sched_key)
        if sched is None:
            return
        if sched.get("state") in ("active", "disabled"):
            self._evaluate(sched_key)

    def terminate_job(self, key: str, reason: str = "UserTerminate") -> None:
        """The API set ``terminating`` (or the engine decided to end the job): kill its tasks, complete it."""
        if key in self._job_endings and not self._job_endings[key].done():
            return
        self._job_endings[key] = self._spawn(self._terminate_job(key, reason))

    async def _terminate_job(self, key: str, reason: str) -> None:
        job = self.store.jobs.get(key)
        if job is None or job.get("state") in ("completed", "deleting"):
            return
        if job.get("state") != "terminating":
            now = self.clock.now()
            _set_state(job, "terminating", now)
            self.store.touch(job, now)
        await self._stop_job_run(key, reason)
        self._finish_job(key, reason)

    async def _stop_job_run(self, key: str, reason: str) -> None:
        """Cancel a job's run (killing its processes) and end its unfinished tasks."""
        run = self._job_runs.pop(key, None)
        if run is not None and not run.done() and run is not asyncio.current_task():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        for task in self.store.tasks.get(key, {}).values():
            if task.get("state") == "completed":
                continue
            info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
            was_running = task.get("state") in ("preparing", "running")
            if was_running:
                info["endTime"] = timestamps.format(self.clock.now())
                info["result"] = "failure"
                info["failureInfo"] = runner.failure(
                    "TaskEnded", f"the task was ended because its job was terminated ({reason})"
                )
                self._task_state(task, "completed")

    def delete_job(self, key: str) -> None:
        """The API set ``deleting``: kill the job's tasks, delete its auto pool, forget it."""
        self._spawn(self._delete_job(key))

    async def _delete_job(self, key: str) -> None:
        job = self.store.jobs.get(key)
        if job is None:
            return
        if job.get("state") != "deleting":
            now = self.clock.now()
            _set_state(job, "deleting", now)
            self.store.touch(job, now)
        await self._stop_job_run(key, "JobDeleted")
        self._cancel_watchdog(key)
        self._release_job_pool(job)
        self.store.jobs.pop(key, None)
        self.store.tasks.pop(key, None)
        self.store.mark_changed()
        self._job_ended(job)

    def delete_pool(self, key: str) -> None:
        """The API set ``deleting``: kill tasks on the pool's nodes, remove nodes and pool."""
        pool = self.store.pools.get(key)
        if pool is None:
            return
        for job_key, job in list(self.store.jobs.items()):
            if ((job.get("executionInfo") or {}).get("poolId") or "").lower() == key and job.get("state") == "active":
                run = self._job_runs.pop(job_key, None)
                if run is not None:
                    run.cancel()
                self._spawn(self._pool_lost(job_key, run))
        self.pools.delete_pool(key)

    async def _pool_lost(self, job_key: str, run: asyncio.Task[Any] | None) -> None:
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                info = task.setdefault("executionInfo", {})
                info["endTime"] = timestamps.format(self.clock.now())
                info["result"] = "failure"
                info["failureInfo"] = runner.failure(
                    "NodeRemoved", "the task's pool was deleted while the task ran", category="servererror"
                )
                self._task_state(task, "completed")
        job = self.store.jobs.get(job_key)
        if job is not None and (job.get("poolInfo") or {}).get("autoPoolSpecification"):
            self._finish_job(job_key, None, scheduling_error={
                "category": "usererror", "code": "AutoPoolDeleted",
                "message": "the job's auto pool was deleted while the job was active",
            })

    def _requeue_interrupted(self, job_key: str) -> None:
        """After a restart, a task that was preparing/running lost its process: requeue it (Batch does
        the same when a node reboots), so it runs again instead of hanging."""
        now = timestamps.format(self.clock.now())
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                info = task.setdefault("executionInfo", {})
                info["requeueCount"] = int(info.get("requeueCount") or 0) + 1
                info["lastRequeueTime"] = now
                for name in ("startTime", "endTime", "exitCode", "result", "failureInfo"):
                    info.pop(name, None)
                task.pop("nodeInfo", None)
                self._task_state(task, "active")

    # -- reads ------------------------------------------------------------------------------------
    def counts(self, job_key: str) -> dict[str, Any]:
        """``/jobs/{id}/taskcounts``."""
        return taskcounts.counts(self.store.tasks.get(job_key, {}).values())


async def sleep_until(clock: VirtualClock, deadline: datetime) -> None:
    """Sleep until virtual time ``deadline``, re-reading the clock often (it can be re-scaled or advanced)."""
    while clock.now() < deadline:  # noqa: ASYNC110 - polling the virtual clock is the point
        await asyncio.sleep(max(min(MAX_TICK_SECONDS, clock.real_seconds_until(deadline)), 0.001))


def _config(sched: JSON) -> str:
    return json.dumps(sched.get("schedule") or {}, sort_keys=True)


def _set_next_run(info: JSON, when: datetime | None) -> bool:
    """Set or clear ``nextRunTime``; True if it changed."""
    value = timestamps.format(when) if when is not None else None
    if info.get("nextRunTime") == value:
        return False
    if value is None:
        info.pop("nextRunTime", None)
    else:
        info["nextRunTime"] = value
    return True


def _set_state(obj: JSON, state: str, now: datetime) -> None:
    if obj.get("state") == state:
        return
    if obj.get("state") is not None:
        obj["previousState"] = obj["state"]
        obj["previousStateTransitionTime"] = obj.get("stateTransitionTime")
    obj["state"] = state
    obj["stateTransitionTime"] = timestamps.format(now)
