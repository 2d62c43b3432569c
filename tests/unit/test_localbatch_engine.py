"""The local Batch service's execution engine, driven in-process through its notification interface.

Real processes run (bash, sleep); the Store and VirtualClock are the real ones. The HTTP layer and
the SDK are covered by tests/integration/test_localbatch_exec*.py.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batchwire import defaults, timestamps
from localbatch import runner
from localbatch.clock import VirtualClock
from localbatch.engine import Engine
from localbatch.store import Store

BASE = "http://127.0.0.1:8090"


async def wait_for(predicate: Callable[[], Any], limit: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, tmp: Path, scale: float = 1.0, **engine_kwargs: Any) -> None:
        self.store = Store()
        self.clock = VirtualClock(scale)
        self.tmp = tmp
        self.engine = Engine(
            self.store, self.clock, work_dir=tmp / "work", base_url=BASE, node_step_seconds=0.01, **engine_kwargs
        )

    def create_schedule(self, schedule_id: str, schedule: dict[str, Any], job_spec: dict[str, Any]) -> str:
        """What the API layer does on POST /jobschedules."""
        now = self.clock.now()
        ts = timestamps.format(now)
        obj = {
            "id": schedule_id,
            "eTag": "",
            "lastModified": ts,
            "creationTime": ts,
            "state": "active",
            "stateTransitionTime": ts,
            "schedule": schedule,
            "jobSpecification": defaults.apply_job_specification_defaults(job_spec),
            "executionInfo": {},
        }
        key = schedule_id.lower()
        self.store.touch(obj, now)
        self.store.schedules[key] = obj
        self.engine.schedule_changed(key)
        return key

    def set_state(self, collection: dict[str, Any], key: str, state: str) -> None:
        obj = collection[key]
        obj["previousState"] = obj["state"]
        obj["state"] = state
        self.store.touch(obj, self.clock.now())

    def job(self, job_id: str) -> dict[str, Any]:
        return self.store.jobs[job_id.lower()]

    def task(self, job_id: str, task_id: str = "jm") -> dict[str, Any]:
        return self.store.tasks[job_id.lower()][task_id.lower()]


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.engine.start()
    yield harness
    await harness.engine.stop()


def spec(command: str, *, prefix: str = "pool", lifetime: str = "job", start_task: dict[str, Any] | None = None,
         **manager: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "vmSize": "standard_d2s_v3",
        "targetDedicatedNodes": 1,
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
            "nodeAgentSKUId": "batch.node.ubuntu 24.04",
        },
    }
    if start_task:
        pool["startTask"] = start_task
    return {
        "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": prefix, "poolLifetimeOption": lifetime,
                                               "pool": pool}},
        "jobManagerTask": {"id": "jm", "commandLine": command, **manager},
    }


def completed(h: Harness, job_id: str) -> bool:
    job = h.store.jobs.get(job_id.lower())
    return job is not None and job["state"] == "completed"


async def test_schedule_creation_creates_job_1_synchronously_with_anchored_next_run(h: Harness) -> None:
    key = h.create_schedule("Nightly", {"recurrenceInterval": "PT4H"}, spec("/bin/true"))
    sched = h.store.schedules[key]
    etag = sched["eTag"]
    created = timestamps.parse(sched["creationTime"])
    info = sched["executionInfo"]
    assert info["recentJob"] == {"id": "Nightly:job-1", "url": f"{BASE}/jobs/Nightly:job-1"}
    assert timestamps.parse(info["nextRunTime"]) == created + timedelta(hours=4)
    job = h.job("Nightly:job-1")
    assert job["state"] == "active" and job["executionInfo"]["startTime"] == job["creationTime"]
    pool_id = job["executionInfo"]["poolId"]
    assert pool_id.startswith("pool_") and len(pool_id) == len("pool_") + 36 and pool_id == pool_id.upper().replace(
        "POOL_", "pool_"
    )
    assert pool_id.lower() in h.store.pools
    assert h.task("Nightly:job-1")["state"] in ("active", "preparing", "running", "completed")
    assert h.store.job_counters[key] == 1
    await wait_for(lambda: completed(h, "Nightly:job-1"), what="job-1 completes")
    assert h.store.schedules[key]["eTag"] == etag, "Batch does not change a schedule's ETag for its jobs"
    assert h.job("Nightly:job-1")["executionInfo"]["terminateReason"] == "JMComplete"
    await wait_for(lambda: pool_id.lower() not in h.store.pools, what="job-lifetime auto pool deleted")


async def test_manager_task_runs_without_shell_with_batch_environment(h: Harness) -> None:
    script = (
        "/bin/bash -c 'echo \"$AZ_BATCH_JOB_ID|$AZ_BATCH_TASK_ID|$AZ_BATCH_POOL_ID|$AZ_BATCH_NODE_ID|$GREETING\" "
        "> env.txt; echo out; echo err >&2'"
    )
    job_spec = spec(script, environmentSettings=[{"name": "GREETING", "value": "hello world"}])
    h.create_schedule("envs", {}, job_spec)
    await wait_for(lambda: completed(h, "envs:job-1"))
    task = h.task("envs:job-1")
    info = task["executionInfo"]
    assert task["state"] == "completed" and info["exitCode"] == 0 and info["result"] == "success"
    node = task["nodeInfo"]
    root = h.engine.pools.node_root(node["nodeId"])
    task_dir = root / "workitems" / "envs:job-1" / "job-1" / "jm"
    fields = (task_dir / "wd" / "env.txt").read_text().strip().split("|")
    assert fields == ["envs:job-1", "jm", node["poolId"], node["nodeId"], "hello world"]
    assert (task_dir / "stdout.txt").read_text() == "out\n"
    assert (task_dir / "stderr.txt").read_text() == "err\n"
    assert node["nodeId"].startswith("tvmps_") and node["nodeId"].endswith("_d")
    # no shell: a pipe character is just an argument
    h.create_schedule("noshell", {}, spec("/bin/echo a | wc"))
    await wait_for(lambda: completed(h, "noshell:job-1"))
    node2 = h.task("noshell:job-1")["nodeInfo"]["nodeId"]
    out = h.engine.pools.node_root(node2) / "workitems" / "noshell:job-1" / "job-1" / "jm" / "stdout.txt"
    assert out.read_text() == "a | wc\n"


async def test_recurrence_under_time_scale_creates_job_2_on_the_anchor_grid(tmp_path: Path) -> None:
    h = Harness(tmp_path, scale=240.0)  # PT4H = 60 s real; PT1M = 0.25 s real
    await h.engine.start()
    try:
        key = h.create_schedule("fast", {"recurrenceInterval": "PT2M"}, spec("/bin/true"))
        created = timestamps.parse(h.store.schedules[key]["creationTime"])
        await wait_for(lambda: "fast:job-2" in h.store.jobs, limit=10, what="job-2")
        job2 = h.job("fast:job-2")
        assert timestamps.parse(job2["creationTime"]) >= created + timedelta(minutes=2)
        next_run = timestamps.parse(h.store.schedules[key]["executionInfo"]["nextRunTime"])
        assert (next_run - created) % timedelta(minutes=2) == timedelta(0)
    finally:
        await h.engine.stop()


async def test_failed_task_is_retried_and_reports_failure_info(h: Harness) -> None:
    h.create_schedule("retry", {}, spec("/bin/bash -c 'echo try >> ../count.txt; exit 3'",
                                        constraints={"maxTaskRetryCount": 2}))
    await wait_for(lambda: completed(h, "retry:job-1"))
    info = h.task("retry:job-1")["executionInfo"]
    assert info["exitCode"] == 3 and info["retryCount"] == 2 and info["result"] == "failure"
    assert info["failureInfo"] == {"category": "usererror", "code": "FailureExitCode",
                                   "message": runner.FAILURE_EXIT_CODE_MESSAGE}
    assert "lastRetryTime" in info
    counts = h.engine.counts("retry:job-1")
    assert counts["taskCounts"] == {"active": 0, "running": 0, "completed": 1, "succeeded": 0, "failed": 1}


async def test_missing_program_fails_clearly(h: Harness) -> None:
    h.create_schedule("missing", {}, spec("./does-not-exist.sh"))
    await wait_for(lambda: completed(h, "missing:job-1"))
    info = h.task("missing:job-1")["executionInfo"]
    assert info["failureInfo"]["code"] == "CommandProgramNotFound" and "exitCode" not in info
    h.create_schedule("notexec", {}, spec("/etc/hostname"))  # exists, not executable
    await wait_for(lambda: completed(h, "notexec:job-1"))
    assert h.task("notexec:job-1")["executionInfo"]["failureInfo"]["code"] == "CommandLaunchFailed"
    h.create_schedule("quotes", {}, spec("/bin/echo 'unbalanced"))
    await wait_for(lambda: completed(h, "quotes:job-1"))
    assert h.task("quotes:job-1")["executionInfo"]["failureInfo"]["code"] == "CommandLaunchFailed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_task_wall_clock_kills_the_process_group(h: Harness) -> None:
    h.create_schedule("slow", {}, spec("/bin/bash -c 'sleep 300 & echo $! > child.pid; wait'",
                                       constraints={"maxWallClockTime": "PT1S"}))
    await wait_for(lambda: completed(h, "slow:job-1"), limit=15)
    task = h.task("slow:job-1")
    failure = task["executionInfo"]["failureInfo"]
    assert failure["code"] == "TaskEnded" and "maxWallClockTime (PT1S)" in failure["message"]
    root = h.engine.pools.node_root(task["nodeInfo"]["nodeId"])
    pid = int((root / "workitems" / "slow:job-1" / "job-1" / "jm" / "wd" / "child.pid").read_text())
    await wait_for(lambda: not _alive(pid), limit=5, what="grandchild killed")


async def test_terminate_job_kills_processes_and_records_reason(h: Harness) -> None:
    h.create_schedule("term", {}, spec("/bin/bash -c 'sleep 300 & echo $! > child.pid; wait'"))
    await wait_for(lambda: h.task("term:job-1")["state"] == "running")
    root = h.engine.pools.node_root(h.task("term:job-1")["nodeInfo"]["nodeId"])
    pid_file = root / "workitems" / "term:job-1" / "job-1" / "jm" / "wd" / "child.pid"
    await wait_for(pid_file.exists)
    pid = int(pid_file.read_text())
    h.set_state(h.store.jobs, "term:job-1", "terminating")
    h.engine.terminate_job("term:job-1", "UserTerminate")
    await wait_for(lambda: completed(h, "term:job-1"))
    job = h.job("term:job-1")
    assert job["executionInfo"]["terminateReason"] == "UserTerminate"
    assert h.task("term:job-1")["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    await wait_for(lambda: not _alive(pid), limit=5, what="child killed")
    assert len(h.engine.processes) == 0


async def test_job_wall_clock_ends_the_job(h: Harness) -> None:
    job_spec = spec("/bin/sleep 300")
    job_spec["constraints"] = {"maxWallClockTime": "PT1S"}
    h.create_schedule("jobwall", {}, job_spec)
    await wait_for(lambda: completed(h, "jobwall:job-1"), limit=15)
    assert h.job("jobwall:job-1")["executionInfo"]["terminateReason"] == "MaxWallClockTimeExpiry"


async def test_start_task_failure_with_wait_for_success_leaves_the_job_waiting(h: Harness) -> None:
    """As on Azure: the node goes starttaskfailed, takes no task, and the job stays active."""
    start = {"commandLine": "/bin/bash -c 'echo broken >&2; exit 7'", "waitForSuccess": True}
    job_spec = spec("/bin/true", start_task=start)
    job_spec["constraints"] = {"maxWallClockTime": "PT3S"}  # it waits until its wall clock ends it
    h.create_schedule("badstart", {}, job_spec)
    pool_key = h.job("badstart:job-1")["executionInfo"]["poolId"].lower()

    def failed_node() -> dict[str, Any] | None:
        nodes = list(h.store.nodes.get(pool_key, {}).values())
        return nodes[0] if nodes and nodes[0]["state"] == "starttaskfailed" else None

    node = await wait_for(failed_node)
    info = node["startTaskInfo"]
    assert info["exitCode"] == 7 and info["result"] == "failure"
    assert info["failureInfo"]["category"] == "usererror"
    assert h.job("badstart:job-1")["state"] == "active"
    await wait_for(lambda: completed(h, "badstart:job-1"))
    info = h.job("badstart:job-1")["executionInfo"]
    assert info["terminateReason"] == "MaxWallClockTimeExpiry" and "schedulingError" not in info
    assert "startTime" not in (h.task("badstart:job-1").get("executionInfo") or {}) and node["totalTasksRun"] == 0


async def test_start_task_success_then_node_idle_and_manager_sees_shared_dir(h: Harness) -> None:
    start = {"commandLine": "/bin/bash -c 'echo ready > $AZ_BATCH_NODE_SHARED_DIR/flag'", "waitForSuccess": True}
    job_spec = spec("/bin/bash -c 'cat $AZ_BATCH_NODE_SHARED_DIR/flag'", start_task=start, lifetime="jobschedule")
    job_spec["poolInfo"]["autoPoolSpecification"]["keepAlive"] = True
    h.create_schedule("goodstart", {}, job_spec)
    await wait_for(lambda: completed(h, "goodstart:job-1"))
    task = h.task("goodstart:job-1")
    assert task["executionInfo"]["result"] == "success"
    pool_key = task["nodeInfo"]["poolId"].lower()
    node = h.store.nodes[pool_key][task["nodeInfo"]["nodeId"]]
    assert node["startTaskInfo"]["exitCode"] == 0 and node["startTaskInfo"]["state"] == "completed"
    assert node["state"] == "idle" and node["totalTasksRun"] == 1
    assert h.store.pools[pool_key]["allocationState"] == "steady"
    assert h.store.pools[pool_key]["currentDedicatedNodes"] == 1
    await wait_for(lambda: h.store.schedules["goodstart"]["state"] == "completed")
    assert pool_key in h.store.pools, "keepAlive keeps the auto pool"


async def test_no_execute_mode_completes_tasks_with_configured_exit_code(tmp_path: Path) -> None:
    h = Harness(tmp_path, execute=False, no_execute_exit_code=5)
    await h.engine.start()
    try:
        h.create_schedule("dry", {}, spec("/bin/false-but-never-run"))
        await wait_for(lambda: completed(h, "dry:job-1"))
        info = h.task("dry:job-1")["executionInfo"]
        assert info["exitCode"] == 5 and info["result"] == "failure"
        assert not (tmp_path / "work" / "nodes").exists() or not any((tmp_path / "work" / "nodes").rglob("stdout.txt"))
    finally:
        await h.engine.stop()


async def test_active_job_blocks_next_recurrence_and_start_window_skips_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, scale=600.0)  # PT1M = 0.1 s
    await h.engine.start()
    try:
        job_spec = spec("/bin/sleep 300", killJobOnCompletion=False)
        key = h.create_schedule("blocked", {"recurrenceInterval": "PT1M", "startWindow": "PT1M"}, job_spec)
        created = timestamps.parse(h.store.schedules[key]["creationTime"])
        await wait_for(lambda: h.clock.now() > created + timedelta(minutes=5), what="5 virtual minutes")
        assert "blocked:job-2" not in h.store.jobs, "one active job per schedule"
        next_run = timestamps.parse(h.store.schedules[key]["executionInfo"]["nextRunTime"])
        assert next_run > created + timedelta(minutes=4)
        h.set_state(h.store.jobs, "blocked:job-1", "terminating")
        h.engine.terminate_job("blocked:job-1")
        await wait_for(lambda: "blocked:job-2" in h.store.jobs, what="job-2 after job-1 ended")
        assert h.store.job_counters[key] == 2
    finally:
        await h.engine.stop()


async def test_run_once_schedule_completes_when_its_job_finishes(h: Harness) -> None:
    key = h.create_schedule("once", {}, spec("/bin/true"))
    assert "nextRunTime" not in h.store.schedules[key]["executionInfo"]
    await wait_for(lambda: h.store.schedules[key]["state"] == "completed")
    assert "endTime" in h.store.schedules[key]["executionInfo"]
    assert list(h.store.jobs) == ["once:job-1"]


async def test_disabled_schedule_creates_no_job(h: Harness) -> None:
    until = h.clock.now() + timedelta(seconds=1)
    schedule = {"doNotRunUntil": timestamps.format(until), "recurrenceInterval": "PT1M"}
    key = h.create_schedule("off", schedule, spec("/bin/true"))
    assert "off:job-1" not in h.store.jobs
    h.set_state(h.store.schedules, key, "disabled")
    h.engine.schedule_changed(key)
    h.clock.advance(timedelta(seconds=61))
    h.engine.clock_changed()
    info = h.store.schedules[key]["executionInfo"]
    # The first slot passed while disabled: the schedule now waits on the second one, with no job.
    await wait_for(lambda: info.get("nextRunTime") == timestamps.format(until + timedelta(minutes=1)))
    assert "off:job-1" not in h.store.jobs
    h.set_state(h.store.schedules, key, "active")
    h.engine.schedule_changed(key)
    assert "off:job-1" in h.store.jobs, "enabled within the (default) window: the due job is created"


async def test_terminate_schedule_ends_active_job_and_completes(h: Harness) -> None:
    key = h.create_schedule("stopme", {"recurrenceInterval": "PT1H"}, spec("/bin/sleep 300"))
    await wait_for(lambda: h.task("stopme:job-1")["state"] == "running")
    h.set_state(h.store.schedules, key, "terminating")
    h.engine.terminate_schedule(key)
    await wait_for(lambda: h.store.schedules[key]["state"] == "completed")
    assert h.job("stopme:job-1")["executionInfo"]["terminateReason"] == "TerminateJobSchedule"
    assert "nextRunTime" not in h.store.schedules[key]["executionInfo"]


async def test_delete_schedule_removes_jobs_pools_and_processes(h: Harness) -> None:
    key = h.create_schedule("gone", {"recurrenceInterval": "PT1H"}, spec("/bin/sleep 300", lifetime="jobschedule"))
    await wait_for(lambda: h.task("gone:job-1")["state"] == "running")
    pool_key = h.job("gone:job-1")["executionInfo"]["poolId"].lower()
    h.set_state(h.store.schedules, key, "deleting")
    h.engine.delete_schedule(key)
    await wait_for(lambda: key not in h.store.schedules, what="schedule removed")
    assert "gone:job-1" not in h.store.jobs and "gone:job-1" not in h.store.tasks
    await wait_for(lambda: pool_key not in h.store.pools, what="pool removed")
    assert len(h.engine.processes) == 0


async def test_restart_requeues_interrupted_task(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.engine.start()
    h.create_schedule("survive", {}, spec("/bin/bash -c 'test -f ../first || { touch ../first; sleep 300; }'"))
    await wait_for(lambda: h.task("survive:job-1")["state"] == "running")
    await wait_for(lambda: any((tmp_path / "work").rglob("first")))
    snapshot = copy.deepcopy(h.store.snapshot())
    await h.engine.stop()
    h2 = Harness(tmp_path)
    h2.store.restore(snapshot)
    await h2.engine.start()
    try:
        await wait_for(lambda: completed(h2, "survive:job-1"))
        info = h2.task("survive:job-1")["executionInfo"]
        assert info["requeueCount"] == 1 and info["result"] == "success"
        assert h2.store.schedules["survive"]["state"] == "completed"
    finally:
        await h2.engine.stop()


async def test_standalone_job_on_existing_pool(h: Harness) -> None:
    job_spec = spec("/bin/true", lifetime="jobschedule")
    job_spec["poolInfo"]["autoPoolSpecification"]["keepAlive"] = True
    h.create_schedule("maker", {}, job_spec)
    await wait_for(lambda: h.store.schedules["maker"]["state"] == "completed")
    pool_id = h.job("maker:job-1")["executionInfo"]["poolId"]
    now = timestamps.format(h.clock.now())
    job = {"id": "adhoc", "eTag": "", "lastModified": now, "creationTime": now, "state": "active",
           "stateTransitionTime": now, "poolInfo": {"poolId": pool_id}, "onAllTasksComplete": "noaction",
           "jobManagerTask": {"id": "jm", "commandLine": "/bin/true", "killJobOnCompletion": True},
           "executionInfo": {"startTime": now, "poolId": pool_id}}
    h.store.jobs["adhoc"] = job
    h.engine.job_created("adhoc")
    await wait_for(lambda: completed(h, "adhoc"))
    assert h.task("adhoc")["nodeInfo"]["poolId"] == pool_id
    assert pool_id.lower() in h.store.pools, "an existing pool outlives the job"


async def test_job_without_tasks_and_terminatejob_completes_at_once(h: Harness) -> None:
    job_spec = spec("/bin/true")
    del job_spec["jobManagerTask"]
    job_spec["onAllTasksComplete"] = "terminatejob"
    h.create_schedule("empty", {}, job_spec)
    await wait_for(lambda: completed(h, "empty:job-1"))
    assert h.job("empty:job-1")["executionInfo"]["terminateReason"] == "AllTasksComplete"


async def test_schedule_changes_recompute_from_the_anchor(h: Harness) -> None:
    key = h.create_schedule("changing", {"recurrenceInterval": "PT1H"}, spec("/bin/true"))
    sched = h.store.schedules[key]
    created = timestamps.parse(sched["creationTime"])
    await wait_for(lambda: completed(h, "changing:job-1"))
    sched["schedule"] = {"recurrenceInterval": "PT2H"}  # PATCH of the interval: same anchor
    h.engine.schedule_changed(key)
    assert timestamps.parse(sched["executionInfo"]["nextRunTime"]) == created + timedelta(hours=2)
    assert "changing:job-2" not in h.store.jobs
    h.engine.schedule_changed(key)  # the same schedule again (a metadata PATCH): nothing changes
    assert "changing:job-2" not in h.store.jobs
    sched["schedule"] = {}  # PUT without a schedule: run once, now
    h.engine.schedule_changed(key)
    assert "changing:job-2" in h.store.jobs and "nextRunTime" not in sched["executionInfo"]
    await wait_for(lambda: sched["state"] == "completed", what="run-once schedule completes")


async def test_start_reaps_task_processes_left_by_a_killed_service(tmp_path: Path) -> None:
    import subprocess

    work = tmp_path / "work"
    env = {"PATH": os.environ["PATH"], "AZ_BATCH_NODE_ROOT_DIR": str(work / "nodes" / "tvmps_x_d")}
    orphan = subprocess.Popen(["/bin/sleep", "300"], env=env, start_new_session=True)  # noqa: ASYNC220
    try:
        h = Harness(tmp_path)
        await h.engine.start()
        await h.engine.stop()
        await wait_for(lambda: orphan.poll() is not None, what="orphan killed")
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


async def test_jobschedule_pool_is_shared_by_jobs_and_deleted_with_the_schedule(tmp_path: Path) -> None:
    h = Harness(tmp_path, scale=600.0)  # PT1M = 0.1 s
    await h.engine.start()
    try:
        key = h.create_schedule("shared", {"recurrenceInterval": "PT1M"}, spec("/bin/true", lifetime="jobschedule"))
        await wait_for(lambda: completed(h, "shared:job-2"), what="job-2 done")
        pool_id = h.job("shared:job-1")["executionInfo"]["poolId"]
        assert h.job("shared:job-2")["executionInfo"]["poolId"] == pool_id
        assert pool_id.lower() in h.store.pools, "a jobschedule pool outlives its jobs"
        h.set_state(h.store.schedules, key, "terminating")
        h.engine.terminate_schedule(key)
        await wait_for(lambda: h.store.schedules[key]["state"] == "completed")
        await wait_for(lambda: pool_id.lower() not in h.store.pools, what="pool deleted with the schedule")
    finally:
        await h.engine.stop()


async def test_deleting_the_pool_under_a_running_task(h: Harness) -> None:
    h.create_schedule("lost", {}, spec("/bin/sleep 300"))
    await wait_for(lambda: h.task("lost:job-1")["state"] == "running")
    pool_key = h.job("lost:job-1")["executionInfo"]["poolId"].lower()
    h.set_state(h.store.pools, pool_key, "deleting")
    h.engine.delete_pool(pool_key)
    await wait_for(lambda: completed(h, "lost:job-1"))
    failure = h.task("lost:job-1")["executionInfo"]["failureInfo"]
    assert failure["code"] == "NodeRemoved" and failure["category"] == "servererror"
    assert h.job("lost:job-1")["executionInfo"]["schedulingError"]["code"] == "AutoPoolDeleted"
    await wait_for(lambda: pool_key not in h.store.pools)
    assert len(h.engine.processes) == 0


async def test_an_internal_error_fails_the_task_instead_of_hanging(h: Harness) -> None:
    bad = [{"httpUrl": "http://127.0.0.1:9/x?sig=secret", "filePath": "x", "fileMode": "99"}]  # 9 is not octal
    h.create_schedule("internal", {}, spec("/bin/true", resourceFiles=bad))
    await wait_for(lambda: completed(h, "internal:job-1"))
    failure = h.task("internal:job-1")["executionInfo"]["failureInfo"]
    assert failure["category"] == "servererror" and failure["code"] == "TaskRunFailed"
    assert "secret" not in failure["message"]


async def test_restart_between_task_end_and_job_end_still_ends_the_job(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.engine.start()
    h.create_schedule("between", {}, spec("/bin/true"))
    await wait_for(lambda: completed(h, "between:job-1"))
    await h.engine.stop()
    snapshot = copy.deepcopy(h.store.snapshot())
    job = snapshot["jobs"]["between:job-1"]  # as if the service died right after the task completed
    job["state"] = "active"
    for name in ("endTime", "terminateReason"):
        job["executionInfo"].pop(name)
    snapshot["schedules"]["between"]["state"] = "active"
    h2 = Harness(tmp_path)
    h2.store.restore(snapshot)
    await h2.engine.start()
    try:
        await wait_for(lambda: completed(h2, "between:job-1"))
        assert h2.job("between:job-1")["executionInfo"]["terminateReason"] == "JMComplete"
        await wait_for(lambda: h2.store.schedules["between"]["state"] == "completed")
    finally:
        await h2.engine.stop()
