"""The engine's tasks: a job's job manager task, from its wire object to its run on a node and its end.

:class:`Tasks` creates the task from the job's ``jobManagerTask``, runs it on a node of the job's pool
as a real local process through :mod:`localbatch.runner` (resource files in and output files out over
HTTP, :mod:`localbatch.transfer`), and writes what happens into the task's ``state``, ``nodeInfo`` and
``executionInfo``. It also ends unfinished tasks when their job or pool goes away, and requeues the
tasks a restart interrupted.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchwire import defaults, durations, timestamps
from localbatch import runner, taskcounts
from localbatch.engine_runtime import Runtime, set_state
from localbatch.pools import Pools, base_env, container_configuration
from localbatch.store import JSON

UNLIMITED_WALL_CLOCK = timedelta(days=10_000_000)
"""A ``maxWallClockTime`` at least this long is Batch's "unlimited" default."""


class Tasks:
    """Creates, runs and ends the job manager tasks of jobs (``store.tasks``)."""

    def __init__(self, runtime: Runtime, pools: Pools) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.pools = pools

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

    # -- running ----------------------------------------------------------------------------------
    async def run(self, job_key: str, pool_key: str, task: JSON) -> None:
        """Run one task of a job on a node of pool ``pool_key`` (waiting for one), to completion."""
        job = self.store.jobs[job_key]
        manager = job.get("jobManagerTask") or {}
        slots = int(task.get("requiredSlots") or 1)
        node_id = await self.pools.acquire_node(pool_key, slots=slots, exclusive=bool(manager.get("runExclusive")))
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
        env = {**base_env(root), **self.pools.node_env(pool, node_id)}
        env.update(
            {
                "AZ_BATCH_JOB_ID": job["id"],
                "AZ_BATCH_TASK_ID": task["id"],
                "AZ_BATCH_TASK_DIR": str(task_dir),
                "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
                "AZ_BATCH_JOB_PREP_DIR": str(job_dir / "jobpreparation"),
                "AZ_BATCH_JOB_PREP_WORKING_DIR": str(job_dir / "jobpreparation" / "wd"),
                "AZ_BATCH_TASK_USER": "_azbatch",
                "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
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

    # -- ending -----------------------------------------------------------------------------------
    def end_unfinished(self, job_key: str, reason: str) -> None:
        """The job was terminated or deleted (its run already cancelled): end its running tasks."""
        for task in self.store.tasks.get(job_key, {}).values():
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
                self._set_state(task, "completed")

    def end_on_lost_pool(self, job_key: str) -> None:
        """The job's pool was deleted while its tasks ran (its run already cancelled): fail them."""
        for task in self.store.tasks.get(job_key, {}).values():
            if task.get("state") in ("preparing", "running"):
                info = task.setdefault("executionInfo", {})
                info["endTime"] = timestamps.format(self.clock.now())
                info["result"] = "failure"
                info["failureInfo"] = runner.failure(
                    "NodeRemoved", "the task's pool was deleted while the task ran", category="servererror"
                )
                self._set_state(task, "completed")

    def requeue_interrupted(self, job_key: str) -> None:
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
                self._set_state(task, "active")

    # -- reads ------------------------------------------------------------------------------------
    def counts(self, job_key: str) -> dict[str, Any]:
        """``/jobs/{id}/taskcounts``."""
        return taskcounts.counts(self.store.tasks.get(job_key, {}).values())
