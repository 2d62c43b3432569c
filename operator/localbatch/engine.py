"""The execution engine of the local Batch service: everything that happens over time.

The API layer validates requests, writes objects into the :class:`~localbatch.store.Store` and
notifies the engine through the calls of :class:`~localbatch.context.EngineProtocol`. :class:`Engine`
is that interface; it composes the parts that do the work, each owning one kind of object:

- :class:`~localbatch.engine_schedules.Schedules`: each job schedule's ``executionInfo`` and its jobs
  ``{scheduleId}:job-N``, created on the virtual clock (:mod:`localbatch.scheduler`); schedules complete;
- :class:`~localbatch.engine_jobs.Jobs`: a job's pool (auto pools created), its run, its end
  (``JMComplete``, ``AllTasksComplete``, ``MaxWallClockTimeExpiry``, terminate, delete);
- :class:`~localbatch.engine_tasks.Tasks`: the job manager task, run as a real local process
  (:mod:`localbatch.runner`), resource files in and output files out over HTTP (:mod:`localbatch.transfer`);
- :class:`~localbatch.pools.Pools`: auto pools and their nodes, start tasks, pools deleted when their
  lifetime ended;

sharing one :class:`~localbatch.engine_runtime.Runtime` (store, clock, processes, background tasks).

Everything runs on the service's one asyncio loop; notifications are synchronous and spawn tasks.
After a state-file restore, :meth:`Engine.start` requeues tasks that were preparing or running
when the service stopped (``requeueCount`` + 1) and runs them again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from localbatch import engine_disable, runner
from localbatch.clock import VirtualClock
from localbatch.engine_jobs import Jobs
from localbatch.engine_runtime import Runtime
from localbatch.engine_schedules import Schedules
from localbatch.engine_tasks import Tasks
from localbatch.pools import Pools
from localbatch.quotas import AccountLimits
from localbatch.store import JSON, Store
from localbatch.task_identity import NodeIdentity
from localbatch.windows import Windows

log = logging.getLogger("localbatch.engine")


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
        limits: AccountLimits | None = None,
        windows: Windows | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.runtime = Runtime(
            store,
            clock,
            work_dir=work_dir,
            base_url=base_url,
            execute=execute,
            no_execute_exit_code=no_execute_exit_code,
        )
        self.work_dir = self.runtime.work_dir
        self.processes = self.runtime.processes
        self.pools = Pools(
            store,
            clock,
            work_dir=self.work_dir,
            base_url=self.runtime.base_url,
            account_name=account_name,
            execute=execute,
            session=self.runtime.http,
            processes=self.processes,
            containers=self.runtime.containers,
            spawn=self.runtime.spawn,
            node_step_seconds=node_step_seconds if execute else 0.0,
            limits=limits,
        )
        self.tasks = Tasks(self.runtime, self.pools)
        self.jobs = Jobs(self.runtime, self.pools, self.tasks, job_ended=self._job_ended)
        self.jobs.windows = windows or Windows()  # without a service (engine tests): no windows
        self.schedules = Schedules(self.runtime, self.pools, self.jobs)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the schedule loop; after a restore, resume whatever was in flight."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        reaped = await asyncio.to_thread(runner.reap_orphans, self.work_dir / "nodes")
        if reaped:
            log.warning("killed %d task process group(s) left by a previous run on %s", reaped, self.work_dir)
        if self.runtime.containers.used_before():
            self.runtime.spawn(self.runtime.containers.engine())  # removes the containers a killed run left
        self.pools.recover()
        self.schedules.resume()
        self.jobs.resume()
        self.schedules.start_loop()

    async def stop(self) -> None:
        """Cancel every loop and task run, killing their processes (no orphans)."""
        loop_task = self.schedules.stop_loop()
        await self.runtime.cancel_all(*([loop_task] if loop_task else []))
        self.jobs.forget_runs()
        await self.runtime.close_session()

    def limits_changed(self) -> None:
        """The admin API changed quotas or allocation failures: pools short of their target try again."""
        self.pools.retry_allocations()

    def clock_changed(self) -> None:
        """The admin API moved or re-scaled the clock: re-evaluate every schedule now."""
        self.schedules.clock_changed()

    # -- notifications from the API layer ---------------------------------------------------------
    def schedule_changed(self, key: str) -> None:
        """A schedule was created or changed: set ``nextRunTime`` and create a due job, synchronously."""
        self.schedules.changed(key)

    def terminate_schedule(self, key: str) -> None:
        """The API set ``terminating``: end the active job (``TerminateJobSchedule``), then complete."""
        self.schedules.terminate(key)

    def delete_schedule(self, key: str) -> None:
        """The API set ``deleting``: end and delete the schedule's jobs and pools, then forget it."""
        self.schedules.delete(key)

    def job_created(self, key: str) -> None:
        """A standalone job was created (``POST /jobs``): attach its pool and run its manager task."""
        self.jobs.created(key)

    def terminate_job(self, key: str, reason: str = "UserTerminate") -> None:
        """The API set ``terminating``: kill the job's tasks, complete it."""
        self.jobs.terminate(key, reason)

    def delete_job(self, key: str) -> None:
        """The API set ``deleting``: kill the job's tasks, delete its auto pool, forget it."""
        self.jobs.delete(key)

    def disable_job(self, key: str, option: str) -> None:
        """The API set ``disabling``: deal with running tasks per ``disableTasks``, then ``disabled``."""
        engine_disable.spawn_disable(self.jobs, self.tasks, key, option)

    def enable_job(self, key: str) -> None:
        """The API set ``enabling``: the job becomes ``active`` and its run resumes."""
        engine_disable.enable(self.jobs, key)

    def delete_pool(self, key: str) -> None:
        """The API set ``deleting``: kill tasks on the pool's nodes, remove nodes and pool."""
        if key not in self.store.pools:
            return
        self.jobs.pool_deleting(key)
        self.pools.delete_pool(key)

    def counts(self, job_key: str) -> dict[str, Any]:
        """``/jobs/{id}/taskcounts``."""
        return self.tasks.counts(job_key)

    # -- tasks added, terminated, deleted through the API (localbatch.api_tasks.TaskEngine) ---------
    @property
    def identity(self) -> NodeIdentity:
        """The nodes' managed identity stand-in (:mod:`localbatch.task_identity`)."""
        return self.tasks.identity

    def tasks_added(self, job_key: str) -> None:
        """Tasks were added to an active job: schedule them."""
        self.jobs.start_run(job_key)
        self.tasks.wake(job_key)

    async def terminate_task(self, job_key: str, task_key: str) -> None:
        await self.tasks.terminate_task(job_key, task_key)

    async def delete_task(self, job_key: str, task_key: str) -> None:
        await self.tasks.delete_task(job_key, task_key)

    def prep_release_status(self, job_key: str) -> list[JSON]:
        """``/jobs/{id}/jobpreparationandreleasetaskstatus``."""
        return self.tasks.prep.status(job_key)

    def _job_ended(self, job: JSON) -> None:
        self.schedules.job_ended(job)
