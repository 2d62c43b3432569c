"""Disabling and enabling a job: what happens to its tasks, over time (REST "Job - Disable" / "Enable").

``disableTasks`` says what becomes of the tasks running when the job is disabled:

- ``requeue``: they are stopped (processes killed) and go back to ``active`` (``requeueCount`` + 1),
  to run again once the job is enabled;
- ``terminate``: they are stopped and complete (failure ``TaskEnded``);
- ``wait``: they run on to their end.

While disabled no new task starts (the job's run is paused); the job goes ``disabling`` ->
``disabled`` once the running tasks were dealt with, and ``enabling`` -> ``active`` on enable,
which resumes the run. With ``wait`` the run is paused once the running tasks have ended.
"""

from __future__ import annotations

from typing import Any

from localbatch.engine_jobs import Jobs
from localbatch.engine_runtime import set_state
from localbatch.engine_tasks import Tasks

DISABLE_OPTIONS = ("requeue", "terminate", "wait")


async def disable(jobs: Jobs, tasks: Tasks, key: str, option: str) -> None:
    """Deal with the running tasks as ``option`` says, then move the job ``disabling`` -> ``disabled``."""
    store, clock = jobs.store, jobs.clock
    running = [t for t in store.tasks.get(key, {}).values() if t.get("state") in ("preparing", "running")]
    if option == "wait":
        while any(t.get("state") in ("preparing", "running") for t in running):
            await tasks.wait_wakeup(key, 0.2)
    await jobs.pause_run(key)
    if option == "requeue":
        for task in running:
            if task.get("state") in ("preparing", "running"):
                tasks.requeue(task)
    elif option == "terminate":
        for task in running:
            await tasks.terminate_task(key, str(task["id"]).lower())
    job = store.jobs.get(key)
    if job is not None and job.get("state") == "disabling":
        set_state(job, "disabled", clock.now())
        store.mark_changed()


def enable(jobs: Jobs, key: str) -> None:
    """``enabling`` -> ``active``: the job's run resumes."""
    job = jobs.store.jobs.get(key)
    if job is None or job.get("state") != "enabling":
        return
    set_state(job, "active", jobs.clock.now())
    jobs.store.mark_changed()
    jobs.start_run(key)


def spawn_disable(jobs: Jobs, tasks: Tasks, key: str, option: str) -> Any:
    """Start :func:`disable` in the background (the API answers 202 at once)."""
    return jobs.rt.spawn(disable(jobs, tasks, key, option))
