"""The engine's job schedules: recurrence on the virtual clock, the jobs it creates, the schedule's end.

:class:`Schedules` keeps each schedule's ``executionInfo`` (``nextRunTime``, ``recentJob``, ``endTime``),
asks :func:`localbatch.scheduler.decide` what to do whenever time passes, the schedule changes or its
job ends, and creates its jobs ``{scheduleId}:job-N`` (run by :mod:`localbatch.engine_jobs`). One loop
wakes each schedule at its next decision time. Terminating a schedule ends its active job; deleting it
deletes its jobs and its ``jobschedule`` auto pool. Both take the service's windows
(:mod:`localbatch.windows`): the schedule stays ``terminating`` / ``deleting`` that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from datetime import datetime
from typing import Any

from batchwire import timestamps
from localbatch import scheduler, windows
from localbatch.engine_jobs import Jobs
from localbatch.engine_runtime import ACTIVE_JOB_STATES, MAX_TICK_SECONDS, Runtime, set_state
from localbatch.pools import Pools
from localbatch.store import JSON

log = logging.getLogger("localbatch.engine")


class Schedules:
    """Owns the job schedules of ``store.schedules`` over time."""

    def __init__(self, runtime: Runtime, pools: Pools, jobs: Jobs) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.pools = pools
        self.jobs = jobs
        self._configs: dict[str, str] = {}
        self._wake: dict[str, datetime] = {}
        self._poke = asyncio.Event()
        self._loop_task: asyncio.Task[Any] | None = None
        self._loop_target: datetime | None = None
        """The soonest wake-up the schedule loop is sleeping towards (a later one needs no poke)."""
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------------
    def resume(self) -> None:
        """After a restore: finish terminations and deletions, re-evaluate live schedules now."""
        for key, sched in self.store.schedules.items():
            self._configs[key] = _config(sched)
            state = sched.get("state")
            if state == "terminating":
                self.terminate(key)
            elif state == "deleting":
                self.delete(key)
            elif state in ("active", "disabled"):
                self._wake[key] = self.clock.now()

    def start_loop(self) -> None:
        self._stopped = False
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def stop_loop(self) -> asyncio.Task[Any] | None:
        """Stop the schedule loop; returns its task (cancelled) for the caller to await."""
        self._stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        return self._loop_task

    def clock_changed(self) -> None:
        """The admin API moved or re-scaled the clock: re-evaluate every schedule now."""
        now = self.clock.now()
        for key in self.store.schedules:
            self._wake[key] = now
        self._poke.set()

    async def _loop(self) -> None:
        while not self._stopped:
            now = self.clock.now()
            for key in [k for k, when in self._wake.items() if when <= now]:
                try:
                    self.evaluate(key)
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

    # -- recurrence -------------------------------------------------------------------------------
    def changed(self, key: str) -> None:
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
        self.evaluate(key)

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

    def evaluate(self, key: str) -> None:
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
            self._create_job(key, sched, now)
        if _set_next_run(info, decision.next_run_time):
            self.store.mark_changed()
        if decision.complete:
            self._complete(key, now)
            return
        if decision.wake_at is not None:
            self._wake[key] = decision.wake_at
            if self._loop_target is None or decision.wake_at < self._loop_target:
                self._poke.set()

    def job_ended(self, job: JSON) -> None:
        """A job left the active states: its schedule may run the next one, or complete."""
        if ":job-" not in job["id"]:
            return
        sched_key = job["id"].rsplit(":job-", 1)[0].lower()
        sched = self.store.schedules.get(sched_key)
        if sched is None:
            return
        if sched.get("state") in ("active", "disabled"):
            self.evaluate(sched_key)

    # -- jobs -------------------------------------------------------------------------------------
    def _create_job(self, key: str, sched: JSON, now: datetime) -> None:
        """The schedule's next job ``{scheduleId}:job-N``, from its ``jobSpecification``; then run it."""
        number = self.store.job_counters.get(key, 0) + 1
        self.store.job_counters[key] = number
        job_id = f"{sched['id']}:job-{number}"
        # The API layer stored the jobSpecification with its read-time defaults already applied.
        job = _job_from_specification(job_id, copy.deepcopy(sched.get("jobSpecification") or {}), now)
        job_key = job_id.lower()
        self.store.jobs[job_key] = job
        self.store.touch(job, now)
        sched.setdefault("executionInfo", {})["recentJob"] = {"id": job_id, "url": f"{self.rt.base_url}/jobs/{job_id}"}
        self.store.mark_changed()  # the schedule's ETag does not change when Batch creates a job under it
        self.jobs.prepare(job_key, schedule=sched)

    # -- ending -----------------------------------------------------------------------------------
    def _complete(self, key: str, now: datetime) -> None:
        sched = self.store.schedules.get(key)
        if sched is None or sched.get("state") == "completed":
            return
        set_state(sched, "completed", now)
        info = sched.setdefault("executionInfo", {})
        info.pop("nextRunTime", None)
        info["endTime"] = timestamps.format(now)
        self.store.touch(sched, now)
        self._wake.pop(key, None)
        self._release_pool(sched)

    def _release_pool(self, sched: JSON) -> None:
        """Delete the schedule's ``jobschedule``-lifetime auto pool (unless ``keepAlive``)."""
        if not _owns_auto_pool(sched):
            return
        pool_key = self.jobs.schedule_pool_key(sched)
        if pool_key is not None:
            self.pools.delete_pool(pool_key)

    def terminate(self, key: str) -> None:
        """The API set ``terminating``: end the active job (``TerminateJobSchedule``), then complete."""
        self._wake.pop(key, None)
        self.rt.spawn(self._terminate(key))

    async def _terminate(self, key: str) -> None:
        sched = self.store.schedules.get(key)
        if sched is None:
            return
        job = self._active_job(sched)
        if job is not None:
            await self.jobs.terminate_now(job["id"].lower(), "TerminateJobSchedule")
        await self.jobs.windows.wait_terminating(self.clock, windows.since(sched, self.clock.now()))
        sched = self.store.schedules.get(key)
        if sched is not None and sched.get("state") == "terminating":
            # As Azure: completed with previousState active, endTime, the ETag of the terminate request.
            sched.setdefault("executionInfo", {}).pop("nextRunTime", None)
            windows.complete(self.store, sched, self.clock.now())
            self._wake.pop(key, None)
            self._release_pool(sched)

    def delete(self, key: str) -> None:
        """The API set ``deleting``: end and delete the schedule's jobs and pools, then forget it."""
        self._wake.pop(key, None)
        self.rt.spawn(self._delete(key))

    async def _delete(self, key: str) -> None:
        sched = self.store.schedules.get(key)
        if sched is None:
            return
        prefix = sched["id"].lower() + ":job-"
        pool_key = self.jobs.schedule_pool_key(sched)
        job_keys = [k for k in self.store.jobs if k.startswith(prefix)]
        await asyncio.gather(*(self.jobs.delete_now(k) for k in job_keys), return_exceptions=True)
        if pool_key is not None and _owns_auto_pool(sched):
            teardown = self.pools.delete_pool(pool_key)
            if teardown is not None:
                await teardown
        await self.jobs.windows.wait_deleting(self.clock, windows.since(sched, self.clock.now()))
        self.store.schedules.pop(key, None)
        self.store.job_counters.pop(key, None)
        self._configs.pop(key, None)
        self._wake.pop(key, None)
        self.store.mark_changed()


def _job_from_specification(job_id: str, spec: JSON, now: datetime) -> JSON:
    """A job as Batch creates it under a schedule, its properties in Batch's order."""
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
    return job


def _owns_auto_pool(sched: JSON) -> bool:
    """Whether the schedule's auto pool lives and dies with the schedule (``jobschedule``, no ``keepAlive``)."""
    auto = ((sched.get("jobSpecification") or {}).get("poolInfo") or {}).get("autoPoolSpecification") or {}
    return auto.get("poolLifetimeOption") == "jobschedule" and not auto.get("keepAlive")


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
