"""Job preparation and job release tasks, run per node as Azure Batch runs them.

- **Preparation** (``jobPreparationTask``, default id ``jobpreparation``): runs on a node before the
  first task of the job that lands there (the job manager task included), in
  ``workitems/<jobId>/job-1/<id>/`` (``AZ_BATCH_JOB_PREP_DIR``). With ``waitForSuccess`` (default true)
  the task waits for it; if it fails (after its ``constraints.maxTaskRetryCount`` retries), no task of
  the job runs on that node any more, and the node stays usable for other jobs. With
  ``waitForSuccess: false`` tasks start on the node while it runs, and keep coming if it fails.
  ``rerunOnNodeRebootAfterSuccess`` (default true): after a node reboot (here: a restart of the
  service from its state file) a preparation that succeeded runs again before the next task of the job
  on that node; one that had not completed always runs again.
- **Release** (``jobReleaseTask``, default id ``jobrelease``, default ``maxWallClockTime`` PT15M): when the
  job ends (terminate, delete of an active job, ``maxWallClockTime``, the job manager completing with
  ``killJobOnCompletion``, all tasks complete, a task's exit condition), on every node where the
  preparation ran and completed; the job is not completed before every release task has. It uses no
  task slot.
- ``GET /jobs/{id}/jobpreparationandreleasetaskstatus``: one entry per node ``{poolId, nodeId, nodeUrl,
  jobPreparationTaskExecutionInfo, jobReleaseTaskExecutionInfo}``, kept in ``Store.job_nodes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchwire import defaults, durations, timestamps
from localbatch import runner
from localbatch.engine_runtime import Runtime
from localbatch.pools import Pools, container_configuration
from localbatch.store import JSON

RELEASE_DEFAULT_WALL_CLOCK = timedelta(minutes=15)
UNLIMITED = timedelta(days=10_000_000)

Environment = Callable[[JSON, JSON, JSON, str, Path], tuple[dict[str, str], dict[str, Any]]]
"""``(job, task, pool, node id, task dir) -> (environment, the user's part of it)``."""


def prep_id(job: JSON) -> str:
    return str((job.get("jobPreparationTask") or {}).get("id") or "jobpreparation")


def release_id(job: JSON) -> str:
    return str((job.get("jobReleaseTask") or {}).get("id") or "jobrelease")


class PrepRelease:
    """Runs a job's preparation task on each node before its first task there, and its release task at the end."""

    def __init__(self, runtime: Runtime, pools: Pools, environment: Environment) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.pools = pools
        self._environment = environment
        self._runs: dict[tuple[str, str], asyncio.Task[bool]] = {}

    # -- preparation ------------------------------------------------------------------------------
    async def ensure(self, job_key: str, pool: JSON, node_id: str) -> bool:
        """Before a task of the job runs on ``node_id``: run the preparation there if it has not run.

        Returns False when the node must not run tasks of this job (the preparation failed and
        ``waitForSuccess`` is true).
        """
        job = self.store.jobs.get(job_key) or {}
        prep = job.get("jobPreparationTask")
        if not prep:
            return True
        wait = bool(prep.get("waitForSuccess", True))
        info = self._entry(job_key, pool, node_id).get("jobPreparationTaskExecutionInfo") or {}
        if info.get("state") == "completed":
            return info.get("result") == "success" or not wait
        run = self._runs.get((job_key, node_id))
        if run is None or (run.done() and info.get("state") != "completed"):
            run = self.rt.spawn(self._prepare(job_key, job, prep, pool, node_id))
            self._runs[(job_key, node_id)] = run
        if not wait:
            return True
        return await asyncio.shield(run)

    async def _prepare(self, job_key: str, job: JSON, prep: JSON, pool: JSON, node_id: str) -> bool:
        entry = self._entry(job_key, pool, node_id)
        info: JSON = {"state": "running", "startTime": timestamps.format(self.clock.now()), "retryCount": 0}
        entry["jobPreparationTaskExecutionInfo"] = info
        self._directories(info, job, pool, node_id, prep_id(job))
        self.store.mark_changed()
        outcome = await self._run(job, prep, pool, node_id, prep_id(job), info, wall=None)
        self._completed(info, outcome)
        return outcome.succeeded

    def node_rebooted(self, job_key: str) -> None:
        """The service restarted (its nodes "rebooted"): preparations that did not complete run again, and
        successful ones too when ``rerunOnNodeRebootAfterSuccess`` (default true)."""
        job = self.store.jobs.get(job_key) or {}
        rerun = bool((job.get("jobPreparationTask") or {}).get("rerunOnNodeRebootAfterSuccess", True))
        for entry in self.store.job_nodes.get(job_key, {}).values():
            info = entry.get("jobPreparationTaskExecutionInfo") or {}
            if info.get("state") != "completed" or (rerun and info.get("result") == "success"):
                entry.pop("jobPreparationTaskExecutionInfo", None)
        self.store.mark_changed()

    # -- release ----------------------------------------------------------------------------------
    async def release(self, job_key: str) -> None:
        """The job is ending: run its release task on every node where the preparation ran and completed."""
        job = self.store.jobs.get(job_key) or {}
        release = job.get("jobReleaseTask")
        for (key, _node), run in list(self._runs.items()):
            if key == job_key and not run.done():
                run.cancel()
        if not release:
            return
        wall = durations.parse(release["maxWallClockTime"]) if release.get("maxWallClockTime") else \
            RELEASE_DEFAULT_WALL_CLOCK
        runs = []
        for node_id, entry in self.store.job_nodes.get(job_key, {}).items():
            prepared = (entry.get("jobPreparationTaskExecutionInfo") or {}).get("state") == "completed" and \
                "jobReleaseTaskExecutionInfo" not in entry
            pool = self.store.pools.get(str(entry.get("poolId", "")).lower())
            if prepared and pool is not None and node_id in self.store.nodes.get(pool["id"].lower(), {}):
                runs.append(self._release_on(job, release, pool, node_id, entry, wall))
        await asyncio.gather(*runs)

    async def _release_on(self, job: JSON, release: JSON, pool: JSON, node_id: str, entry: JSON,
                          wall: timedelta) -> None:
        info: JSON = {"state": "running", "startTime": timestamps.format(self.clock.now())}
        entry["jobReleaseTaskExecutionInfo"] = info
        self._directories(info, job, pool, node_id, release_id(job))
        self.store.mark_changed()
        outcome = await self._run(job, release, pool, node_id, release_id(job), info, wall=wall)
        self._completed(info, outcome)
        info.pop("retryCount", None)  # BatchJobReleaseTaskExecutionInfo has no retry count

    # -- reads ------------------------------------------------------------------------------------
    def status(self, job_key: str) -> list[JSON]:
        """The entries of ``jobpreparationandreleasetaskstatus``, one per node, in node id order."""
        return [entry for _id, entry in sorted(self.store.job_nodes.get(job_key, {}).items())]

    def forget(self, job_key: str) -> None:
        self.store.job_nodes.pop(job_key, None)
        for key in [k for k in self._runs if k[0] == job_key]:
            self._runs.pop(key, None)

    # -- running ----------------------------------------------------------------------------------
    def _entry(self, job_key: str, pool: JSON, node_id: str) -> JSON:
        url = f"{self.rt.base_url}/pools/{pool['id']}/nodes/{node_id}"
        return self.store.job_nodes.setdefault(job_key, {}).setdefault(
            node_id, {"poolId": pool["id"], "nodeId": node_id, "nodeUrl": url})

    def _directories(self, info: JSON, job: JSON, pool: JSON, node_id: str, task_id: str) -> None:
        relative = f"workitems/{job['id']}/job-1/{task_id}"
        info["taskRootDirectory"] = relative
        info["taskRootDirectoryUrl"] = f"{self.rt.base_url}/pools/{pool['id']}/nodes/{node_id}/files/{relative}"

    async def _run(self, job: JSON, spec: JSON, pool: JSON, node_id: str, task_id: str, info: JSON,
                   *, wall: timedelta | None) -> runner.Outcome:
        if not self.rt.execute:
            now = self.clock.now()
            code = self.rt.no_execute_exit_code
            failure = None if code == 0 else runner.failure("FailureExitCode", runner.FAILURE_EXIT_CODE_MESSAGE)
            return runner.Outcome(code, failure, 0, now, now)
        root = self.pools.node_root(node_id)
        task_dir = root / "workitems" / job["id"] / "job-1" / task_id
        env, user_env = self._environment(job, {**spec, "id": task_id}, pool, node_id, task_dir)
        constraints = {**defaults.TASK_CONSTRAINTS_DEFAULTS, **(spec.get("constraints") or {})}
        if wall is None:
            limit = durations.parse(constraints.get("maxWallClockTime") or defaults.MAX_DURATION)
            wall = None if limit >= UNLIMITED else limit
        run = runner.TaskRun(
            command_line=spec.get("commandLine", ""), task_dir=task_dir, env=env,
            resource_files=spec.get("resourceFiles") or [], container_settings=spec.get("containerSettings"),
            max_wall_clock=wall, max_retries=int(constraints.get("maxTaskRetryCount") or 0), node_root=root,
            user_env_names=frozenset(user_env), container_pool=container_configuration(pool) is not None,
            container_labels=self.rt.containers.labels(pool_id=pool["id"], node_id=node_id,
                                                       task=f"{job['id']}/{task_id}"),
        )

        def running(start: datetime, retry: int) -> None:
            info["startTime"] = timestamps.format(start)
            if "retryCount" in info:
                info["retryCount"] = retry
                if retry:
                    info["lastRetryTime"] = timestamps.format(start)
            self.store.mark_changed()

        return await runner.run_task(
            run, clock=self.clock, session=self.rt.http(), processes=self.rt.processes,
            hooks=runner.Hooks(on_running=running), containers=self.rt.containers,
            container_name=self.rt.containers.name_for(job["id"], f"{task_id}-{node_id[-12:]}"),
        )

    def _completed(self, info: JSON, outcome: runner.Outcome) -> None:
        info["state"] = "completed"
        info["endTime"] = timestamps.format(outcome.end_time)
        if "retryCount" in info:
            info["retryCount"] = outcome.retry_count
        if outcome.exit_code is not None:
            info["exitCode"] = outcome.exit_code
        info["result"] = "success" if outcome.succeeded else "failure"
        if outcome.failure_info:
            info["failureInfo"] = outcome.failure_info
        if outcome.container_info:
            info["containerInfo"] = outcome.container_info
        self.store.mark_changed()
