"""The engine's tasks: a job's tasks, from their wire objects to their runs on nodes and their ends.

:class:`Tasks` creates the job manager task from the job's ``jobManagerTask`` (tasks added through the
API arrive through :mod:`localbatch.api_tasks`), schedules a job's tasks on the nodes of its pool
(:mod:`localbatch.task_scheduling`: dependencies, ``maxParallelTasks``, ``requiredSlots``, exit conditions),
runs each as a real local process through :mod:`localbatch.runner` (resource files in and output files
out over HTTP, :mod:`localbatch.transfer`) after the job preparation task ran on that node
(:mod:`localbatch.prep_release`), and writes what happens into the task's ``state``, ``nodeInfo`` and
``executionInfo``. It also terminates and deletes single tasks, ends unfinished tasks when their job or pool
goes away, requeues the tasks a restart interrupted, and deletes task directories whose
``constraints.retentionTime`` has passed.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchwire import defaults, durations, timestamps
from localbatch import runner, taskcounts
from localbatch.engine_runtime import MAX_TICK_SECONDS, Runtime, set_state
from localbatch.pools import Pools, base_env, container_configuration
from localbatch.prep_release import PrepRelease
from localbatch.store import JSON
from localbatch.task_identity import ENV_AUTHORITY, NodeIdentity
from localbatch.task_scheduling import JobRun

UNLIMITED_WALL_CLOCK = timedelta(days=10_000_000)
"""A ``maxWallClockTime`` at least this long is Batch's "unlimited" default."""
RETENTION_SWEEP_SECONDS = 1.0
"""How often (real seconds) completed tasks' directories are checked against their ``retentionTime``."""


class Tasks:
    """Creates, schedules, runs and ends the tasks of jobs (``store.tasks``)."""

    def __init__(self, runtime: Runtime, pools: Pools) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.pools = pools
        self.identity = NodeIdentity()
        self.prep = PrepRelease(runtime, pools, self._environment)
        self.runners: dict[tuple[str, str], asyncio.Task[Any]] = {}
        """The running (or node-waiting) run of each task, by (job key, task key)."""
        self._wakeups: dict[str, asyncio.Event] = {}
        self._excluded: dict[str, set[str]] = {}
        """Per job: nodes whose job preparation task failed (with ``waitForSuccess``): no task of the job runs there."""
        self._sweeper: asyncio.Task[Any] | None = None

    # -- creation ---------------------------------------------------------------------------------
    def create_manager_task(self, job_key: str, job: JSON, manager: JSON) -> None:
        """The job's ``jobManagerTask`` as a task of the job, with Batch's defaults."""
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

    # -- the job's scheduling loop ----------------------------------------------------------------
    async def run_job(self, job_key: str, pool_key: str) -> str | None:
        """Schedule and run the job's tasks until the job must end; the ``terminateReason`` (None: the run
        was stopped because the job left the active states)."""
        self._start_sweeper()
        return await JobRun(self, job_key, pool_key).run()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.rt.spawn(coro)

    def requeue(self, task: JSON) -> None:
        """Put a task that was running back to ``active`` (its job was disabled with requeue)."""
        info = task.setdefault("executionInfo", {})
        info["requeueCount"] = int(info.get("requeueCount") or 0) + 1
        info["lastRequeueTime"] = timestamps.format(self.clock.now())
        for name in ("startTime", "endTime", "exitCode", "result", "failureInfo"):
            info.pop(name, None)
        task.pop("nodeInfo", None)
        self._set_state(task, "active")

    def wake(self, job_key: str) -> None:
        """Something changed for the job's scheduling (a task added, completed, terminated, deleted)."""
        self._wakeups.setdefault(job_key, asyncio.Event()).set()

    async def wait_wakeup(self, job_key: str, seconds: float) -> None:
        event = self._wakeups.setdefault(job_key, asyncio.Event())
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        event.clear()

    # -- running one task -------------------------------------------------------------------------
    def is_manager(self, job: JSON, task: JSON) -> bool:
        manager = job.get("jobManagerTask") or {}
        return bool(manager) and str(manager.get("id", "")).lower() == str(task["id"]).lower()

    async def run(self, job_key: str, pool_key: str, task: JSON) -> None:
        """Run one task of a job on a node of pool ``pool_key`` (waiting for one), to completion."""
        job = self.store.jobs[job_key]
        exclusive = self.is_manager(job, task) and bool((job.get("jobManagerTask") or {}).get("runExclusive"))
        slots = int(task.get("requiredSlots") or 1)
        if exclusive:  # "no other Tasks will run on the same Node for as long as the Job Manager is running"
            slots = max(slots, int((self.store.pools.get(pool_key) or {}).get("taskSlotsPerNode") or 1))
        node_id = await self._node_for(job_key, pool_key, slots, exclusive)
        pool = self.store.pools[pool_key]
        task["nodeInfo"] = self._node_info(job, task, pool, node_id)
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        outcome: runner.Outcome | None = None
        try:
            outcome = await self._execute(job, task, pool, node_id) if self.rt.execute else self._skip(task)
            self._completed(task, outcome)
        finally:
            summary = None
            if outcome is not None:
                summary = {
                    "taskUrl": f"{self.rt.base_url}/jobs/{job['id']}/tasks/{task['id']}",
                    "jobId": job["id"],
                    "taskId": task["id"],
                    "taskState": "completed",
                    "executionInfo": copy.deepcopy(info),
                }
            self.pools.release_node(pool_key, node_id, slots=slots, task_info=summary)

    async def _node_for(self, job_key: str, pool_key: str, slots: int, exclusive: bool) -> str:
        """A node with room for the task on which the job's preparation task ran (or runs first) and succeeded."""
        excluded = self._excluded.setdefault(job_key, set())
        while True:
            node_id = await self.pools.acquire_node(pool_key, slots=slots, exclusive=exclusive,
                                                    exclude=frozenset(excluded))
            pool = self.store.pools[pool_key]
            try:
                prepared = await self.prep.ensure(job_key, pool, node_id)
            except BaseException:
                self.pools.release_node(pool_key, node_id, slots=slots, task_info=None)
                raise
            if prepared:
                return node_id
            excluded.add(node_id)
            self.pools.release_node(pool_key, node_id, slots=slots, task_info=None)

    def _node_info(self, job: JSON, task: JSON, pool: JSON, node_id: str) -> JSON:
        base_url = self.rt.base_url
        return {
            "affinityId": f"TVM:{node_id}",
            "nodeUrl": f"{base_url}/pools/{pool['id']}/nodes/{node_id}",
            "poolId": pool["id"],
            "nodeId": node_id,
            "taskRootDirectory": f"workitems/{job['id']}/job-1/{task['id']}",
            "taskRootDirectoryUrl": f"{base_url}/pools/{pool['id']}/nodes/{node_id}/files/workitems/"
            f"{job['id']}/job-1/{task['id']}",
        }

    def _skip(self, task: JSON) -> runner.Outcome:
        """``--no-execute``: the task passes through its states and ends with the configured exit code."""
        self._set_state(task, "preparing")
        start = self.clock.now()
        self._running(task, start, 0)
        code = self.rt.no_execute_exit_code
        failure = None if code == 0 else runner.failure("FailureExitCode", runner.FAILURE_EXIT_CODE_MESSAGE)
        return runner.Outcome(code, failure, 0, start, self.clock.now())

    async def _execute(self, job: JSON, task: JSON, pool: JSON, node_id: str) -> runner.Outcome:
        root = self.pools.node_root(node_id)
        task_dir = root / "workitems" / job["id"] / "job-1" / task["id"]
        env, user_env = self._environment(job, task, pool, node_id, task_dir)
        constraints = task.get("constraints") or {}
        wall = durations.parse(constraints.get("maxWallClockTime") or defaults.MAX_DURATION)
        run = runner.TaskRun(
            command_line=task.get("commandLine", ""),
            task_dir=task_dir,
            env=env,
            resource_files=task.get("resourceFiles") or [],
            output_files=task.get("outputFiles") or [],
            container_settings=task.get("containerSettings"),
            max_wall_clock=None if wall >= UNLIMITED_WALL_CLOCK else wall,
            max_retries=int(constraints.get("maxTaskRetryCount") or 0),
            node_root=root,
            user_env_names=frozenset(user_env),
            container_pool=container_configuration(pool) is not None,
            settings_required=True,
            container_labels=self.rt.containers.labels(pool_id=pool["id"], node_id=node_id,
                                                       task=f"{job['id']}/{task['id']}"),
        )
        return await runner.run_task(
            run, clock=self.clock, session=self.rt.http(), processes=self.rt.processes,
            hooks=runner.Hooks(
                on_preparing=lambda: self._set_state(task, "preparing"),
                on_running=lambda start, retry: self._running(task, start, retry),
            ),
            containers=self.rt.containers,
            container_name=self.rt.containers.name_for(job["id"], task["id"]),
        )

    def _environment(
        self, job: JSON, task: JSON, pool: JSON, node_id: str, task_dir: Path
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The task's environment, and the part of it the user set (``environmentSettings``)."""
        root = self.pools.node_root(node_id)
        job_dir = root / "workitems" / job["id"] / "job-1"
        prep_dir = job_dir / str((job.get("jobPreparationTask") or {}).get("id") or "jobpreparation")
        env = {**base_env(root), **self.pools.node_env(pool, node_id)}
        env.update(
            {
                "AZ_BATCH_JOB_ID": job["id"],
                "AZ_BATCH_TASK_ID": task["id"],
                "AZ_BATCH_TASK_DIR": str(task_dir),
                "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
                "AZ_BATCH_JOB_PREP_DIR": str(prep_dir),
                "AZ_BATCH_JOB_PREP_WORKING_DIR": str(prep_dir / "wd"),
                "AZ_BATCH_TASK_USER": "_azbatch",
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
                ENV_AUTHORITY: self.identity.authority_host(self.rt.base_url, pool["id"], node_id),
            }
        )
        if job["id"].count(":job-") == 1:
            env["AZ_BATCH_JOB_SCHEDULE_ID"] = job["id"].split(":job-")[0]
        user_env = {e["name"]: e.get("value", "") for e in job.get("commonEnvironmentSettings") or []}
        user_env.update({e["name"]: e.get("value", "") for e in task.get("environmentSettings") or []})
        env.update(user_env)
        return env, user_env

    # -- states -----------------------------------------------------------------------------------
    def _set_state(self, task: JSON, state: str) -> None:
        set_state(task, state, self.clock.now())
        self.store.touch(task, self.clock.now())

    def _running(self, task: JSON, start: datetime, retry: int) -> None:
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        info["startTime"] = timestamps.format(start)
        info["retryCount"] = retry
        if retry:
            info["lastRetryTime"] = timestamps.format(start)
        self._set_state(task, "running")

    def _completed(self, task: JSON, outcome: runner.Outcome) -> None:
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
        self._set_state(task, "completed")

    def _end(self, task: JSON, code: str, message: str, category: str = "usererror") -> None:
        """Complete a task that did not finish by itself (terminated, its job ended, its node lost)."""
        info = task.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        info["endTime"] = timestamps.format(self.clock.now())
        info["result"] = "failure"
        info["failureInfo"] = runner.failure(code, message, category=category)
        self._set_state(task, "completed")

    # -- single tasks: terminate, delete ----------------------------------------------------------
    def _stop_runner(self, job_key: str, task_key: str) -> asyncio.Task[Any] | None:
        """Cancel the task's run; the caller changes the task's state before awaiting it (so that the job's
        loop, woken meanwhile, does not start the task again)."""
        run = self.runners.pop((job_key, task_key), None)
        if run is None or run.done():
            return None
        run.cancel()
        return run

    async def terminate_task(self, job_key: str, task_key: str) -> None:
        """``POST /jobs/{id}/tasks/{taskId}/terminate``: kill it if it runs, and complete it."""
        run = self._stop_runner(job_key, task_key)
        task = self.store.tasks.get(job_key, {}).get(task_key)
        if task is not None and task.get("state") != "completed":
            self._end(task, "TaskEnded", "the task was terminated by a Terminate Task request")
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        self.wake(job_key)

    async def delete_task(self, job_key: str, task_key: str) -> None:
        """``DELETE /jobs/{id}/tasks/{taskId}``: kill it if it runs, forget it and delete its directory."""
        run = self._stop_runner(job_key, task_key)
        task = self.store.tasks.get(job_key, {}).pop(task_key, None)
        if run is not None:
            await asyncio.gather(run, return_exceptions=True)
        if task is not None:
            directory = self._task_dir(task)
            if directory is not None:
                await asyncio.to_thread(shutil.rmtree, directory, True)
            self.store.mark_changed()
        self.wake(job_key)

    def _task_dir(self, task: JSON) -> Path | None:
        node = task.get("nodeInfo") or {}
        if not node.get("nodeId") or not node.get("taskRootDirectory"):
            return None
        return self.pools.node_root(str(node["nodeId"])) / str(node["taskRootDirectory"])

    # -- ending -----------------------------------------------------------------------------------
    def end_unfinished(self, job_key: str, reason: str) -> None:
        """The job was terminated or deleted (its run already cancelled): end its running tasks."""
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                self._end(task, "TaskEnded", f"the task was ended because its job was terminated ({reason})")

    def end_on_lost_pool(self, job_key: str) -> None:
        """The job's pool was deleted while its tasks ran (its run already cancelled): fail them."""
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                self._end(task, "NodeRemoved", "the task's pool was deleted while the task ran", "servererror")

    async def release_job(self, job_key: str) -> None:
        """The job is ending: its release tasks run (the job completes after them)."""
        self._excluded.pop(job_key, None)
        await self.prep.release(job_key)

    def job_forgotten(self, job_key: str) -> None:
        """The job was deleted: drop what the engine kept for it."""
        self.prep.forget(job_key)
        self._excluded.pop(job_key, None)
        self._wakeups.pop(job_key, None)
        for key in [k for k in self.runners if k[0] == job_key]:
            self.runners.pop(key, None)

    def requeue_interrupted(self, job_key: str) -> None:
        """After a restart, a task that was preparing/running lost its process: requeue it (Batch does
        the same when a node reboots), so it runs again instead of hanging; the nodes "rebooted", so job
        preparation tasks run again as ``rerunOnNodeRebootAfterSuccess`` says."""
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                self.requeue(task)
        self.prep.node_rebooted(job_key)

    # -- retention --------------------------------------------------------------------------------
    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = self.rt.spawn(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(RETENTION_SWEEP_SECONDS, MAX_TICK_SECONDS))
            await asyncio.to_thread(self.sweep_retention)

    def sweep_retention(self) -> None:
        """Delete the directories of completed tasks whose ``constraints.retentionTime`` (from ``endTime``) passed."""
        now = self.clock.now()
        for tasks in list(self.store.tasks.values()):
            for task in list(tasks.values()):
                end = retention_end(task)
                directory = self._task_dir(task) if end is not None and now >= end else None
                if directory is not None and directory.exists():
                    shutil.rmtree(directory, ignore_errors=True)

    # -- reads ------------------------------------------------------------------------------------
    def counts(self, job_key: str) -> dict[str, Any]:
        """``/jobs/{id}/taskcounts``."""
        return taskcounts.counts(self.store.tasks.get(job_key, {}).values())


def retention_end(task: JSON) -> datetime | None:
    """When a completed task's directory goes (``endTime`` + ``retentionTime``, default P7D); None before."""
    end = (task.get("executionInfo") or {}).get("endTime")
    if task.get("state") != "completed" or not end:
        return None
    retention = (task.get("constraints") or {}).get("retentionTime") or defaults.TASK_CONSTRAINTS_DEFAULTS[
        "retentionTime"]
    try:
        return timestamps.parse(end) + durations.parse(retention)
    except ValueError:
        return None
