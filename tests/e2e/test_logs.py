"""Why did it fail? A failed job's status, Event and health name the task and its cause; ``batchop logs`` prints it.

Real parts: kube-apiserver + the real kubectl, the operator process, two local Batch services that run the tasks
(one of them has its clock moved forward for the retention case), the ``batchop`` CLI and its ``kubectl-batchop``
plugin as a user runs them. Credentials come from the resources' Secret, read through the kubeconfig: the CLI's
environment has no Batch account.

- a failing job manager task (exit 127): ``status.recentJob.failedTasks``, the ``JobFailed`` Event and the Argo CD
  health message say ``task wordcount exited with 127``; one task listing for the failed job, none for the
  succeeding one, however many poll cycles run;
- ``batchop logs`` of the succeeded and of the failed job, stdout and stderr, and through ``kubectl batchop``;
  ``batchop status`` and ``logs`` print no library warning (the dev kubeconfig trusts the API server's CA);
- ``batchop logs -f`` of a running task prints its lines as they come and ends when the task completes;
- files gone: ``retentionTime`` passed (exit 1, says how to keep output), the auto pool deleted with its job.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.operator import wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
KUBECTL = "/usr/bin/kubectl"


def schedule(name: str, batch: Any, command: str, *, lifetime: str = "jobschedule", task_id: str = "wordcount",
             constraints: dict[str, Any] | None = None, every: str = "PT1H") -> dict[str, Any]:
    manager: dict[str, Any] = {"id": task_id, "commandLine": command}
    if constraints:
        manager["constraints"] = constraints
    return {
        "apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": {"name": name},
        "spec": {
            "account": {"endpoint": batch.endpoint, "credentialsSecretRef": {"name": secret_name(batch)}},
            "schedule": {"recurrenceInterval": every},
            "jobSpecification": {
                "poolInfo": {"autoPoolSpecification": {
                    "autoPoolIdPrefix": name, "poolLifetimeOption": lifetime,
                    "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                             "virtualMachineConfiguration": {
                                 "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts",
                                                    "sku": "server"},
                                 "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}}},
                "jobManagerTask": manager,
            },
        },
    }


def secret_name(batch: Any) -> str:
    return f"batch-{batch.endpoint.rsplit(':', 1)[1]}"


def add_secret(kube: Any, namespace: str, batch: Any) -> None:
    data = {"accountName": batch.account, "accountKey": batch.key}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name(batch)},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=True)


def apply(kube: Any, namespace: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=True)


def bjs(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "bjs", name, "-n", namespace, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def finished_job(kube: Any, namespace: str, name: str, result: str) -> dict[str, Any]:
    """``status.recentJob`` once the job has ``result`` (and, for a failure, names its failed tasks)."""
    def done() -> dict[str, Any] | None:
        job = bjs(kube, namespace, name).get("status", {}).get("recentJob") or {}
        if job.get("result") == result and (result == "success" or job.get("failedTasks")):
            return job
        return None

    found: dict[str, Any] = wait_for(done, 120, 0.5, message=f"{name}'s job to end with {result}")
    return found


@pytest.fixture(scope="module")
def cli_env(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user's shell: the kubeconfig, the venv (for kubectl's plugin lookup) on PATH, no Batch account."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PYTHONPATH": str(REPO / "operator"),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONWARNINGS": "default"}
    for name in ("BATCHOP_BATCH_ENDPOINT", "BATCHOP_BATCH_ACCOUNT", "BATCHOP_BATCH_KEY"):
        env.pop(name, None)
    env["HOME"] = str(tmp_path_factory.mktemp("home"))  # no ~/.kube/config, no stack env file to fall back on
    return env


def batchop(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "batchop"), *args], env=env, text=True, capture_output=True,
                          timeout=timeout, check=False, cwd=env["HOME"])


@pytest.fixture(scope="module")
def batch(local_batch_factory: Any) -> Any:
    return local_batch_factory()


@pytest.fixture(scope="module")
def namespace(kube: Any, operator_factory: Any, batch: Any) -> Iterator[str]:
    name = f"logs-{os.getpid()}"
    kube.kubectl("create", "namespace", name, check=True)
    add_secret(kube, name, batch)
    operator_factory([name], resync=1.0, default_account=False)
    yield name
    kube.kubectl("delete", "bjs", "--all", "-n", name, "--wait=false")


def test_failed_job_names_its_task_and_logs_show_both_jobs(kube: Any, batch: Any, namespace: str,
                                                           cli_env: dict[str, str]) -> None:
    batch.reset_counts()
    apply(kube, namespace, schedule("ok", batch, "/bin/bash -c 'echo counted 42 words; echo a warning >&2'"))
    apply(kube, namespace, schedule(
        "broken", batch, "/bin/bash -c 'echo starting; echo \"wc: command not found\" >&2; exit 127'"))
    ok_job = finished_job(kube, namespace, "ok", "success")
    job = finished_job(kube, namespace, "broken", "failure")
    assert "failedTasks" not in ok_job
    assert job["failedTaskCount"] == 1
    [task] = job["failedTasks"]
    assert task["id"] == "wordcount" and task["exitCode"] == 127 and task["endTime"]
    assert task["failureInfo"]["code"] == "FailureExitCode" and task["failureInfo"]["category"] == "usererror"

    def failed_event() -> str | None:
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=JobFailed",
                                         "-o", "json", check=True).stdout)["items"]
        return next((e["message"] for e in events if e["involvedObject"]["name"] == "broken"), None)

    message = wait_for(failed_event, 30, message="the JobFailed Event")
    assert message == f"job {job['id']} failed: task wordcount exited with 127"

    from tests.unit.test_health_lua import health  # the Argo CD script, run by a real Lua 5.1

    state, health_message = health(bjs(kube, namespace, "broken"))
    assert (state, health_message) == ("Degraded", f"Last job {job['id']} failed: task wordcount exited with 127")

    listings = batch.count("list_jobs")
    wait_for(lambda: batch.count("list_jobs") >= listings + 3, 30, message="three more poll cycles")
    assert batch.count("list_tasks") == 1, "one failed-task listing for the one failed job, once"

    shown = batchop(cli_env, "logs", "-n", namespace, "ok")
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, "counted 42 words\n", "")
    shown = batchop(cli_env, "logs", "-n", namespace, "ok", "--stderr")
    assert (shown.returncode, shown.stdout) == (0, "a warning\n")
    shown = batchop(cli_env, "logs", "-n", namespace, "broken")
    assert (shown.returncode, shown.stdout) == (0, "starting\n")
    assert shown.stderr == f"batchop logs: task wordcount exited with 127 (job {job['id']})\n"
    shown = batchop(cli_env, "logs", "-n", namespace, "broken", "--stderr", "--job", job["id"], "--task", "wordcount")
    assert (shown.returncode, shown.stdout) == (0, "wc: command not found\n")
    assert batch.key not in shown.stdout + shown.stderr

    plugin = subprocess.run([KUBECTL, "batchop", "logs", "-n", namespace, "broken", "--stderr"], env=cli_env,
                            text=True, capture_output=True, timeout=60, check=False, cwd=cli_env["HOME"])
    assert (plugin.returncode, plugin.stdout) == (0, "wc: command not found\n"), plugin.stderr
    table = subprocess.run([KUBECTL, "batchop", "status", "-n", namespace], env=cli_env, text=True,
                           capture_output=True, timeout=60, check=False, cwd=cli_env["HOME"])
    assert table.returncode == 0 and "broken" in table.stdout and job["id"] in table.stdout
    assert table.stderr == "", "no library warning (InsecureRequestWarning) on batchop status"


def test_follow_prints_a_running_tasks_lines_as_they_come(kube: Any, batch: Any, namespace: str,
                                                          cli_env: dict[str, str]) -> None:
    script = "/bin/bash -c 'for i in 1 2 3 4 5 6; do echo line $i; sleep 1; done'"
    apply(kube, namespace, schedule("slow", batch, script, task_id="ticker"))
    job_id = wait_for(lambda: bjs(kube, namespace, "slow").get("status", {}).get("recentJob", {}).get("id"), 60,
                      message="slow's first job")
    follower = subprocess.Popen([str(VENV_BIN / "batchop"), "logs", "-n", namespace, "slow", "-f", "--interval",
                                 "0.3"], env=cli_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=cli_env["HOME"])
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        with batch.client() as client:
            state = client.get_task(job_id, "ticker").state
        assert first == "line 1\n" and state == "running", "the first line came while the task still ran"
        deadline = threading.Timer(60, follower.kill)  # -f must end by itself once the task completes
        deadline.start()
        rest = follower.stdout.read()  # what readline() buffered stays in this stream (communicate() would skip it)
        errors = follower.stderr.read() if follower.stderr else ""
        deadline.cancel()
        follower.wait(10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, errors
    assert first + rest == "".join(f"line {i}\n" for i in range(1, 7))
    with batch.client() as client:
        assert client.get_task(job_id, "ticker").state == "completed", "-f ended when the task completed"


def test_logs_say_when_files_are_gone_and_how_to_keep_them(kube: Any, local_batch_factory: Any, operator_factory: Any,
                                                           cli_env: dict[str, str]) -> None:
    other = local_batch_factory()  # its clock moves forward below
    name = f"logs-gone-{os.getpid()}"
    kube.kubectl("create", "namespace", name, check=True)
    add_secret(kube, name, other)
    operator_factory([name], resync=1.0, default_account=False)
    kept = schedule("kept", other, "/bin/bash -c 'echo short-lived'", every="P1D",
                    constraints={"retentionTime": "PT1H"})
    apply(kube, name, kept)
    apply(kube, name, schedule("ephemeral", other, "/bin/bash -c 'echo gone soon'", lifetime="job", every="P1D"))
    job = finished_job(kube, name, "kept", "success")
    finished_job(kube, name, "ephemeral", "success")
    assert batchop(cli_env, "logs", "-n", name, "kept").stdout == "short-lived\n"

    other.advance("PT2H")  # past the task's retention time, before the schedule's next job
    gone = batchop(cli_env, "logs", "-n", name, "kept", "--job", job["id"])
    assert gone.returncode == 1 and gone.stdout == ""
    assert "retention time (PT1H) passed" in gone.stderr and "outputFiles" in gone.stderr

    def pool_gone() -> subprocess.CompletedProcess[str] | None:
        result = batchop(cli_env, "logs", "-n", name, "ephemeral")
        return result if result.returncode == 1 else None

    lost = wait_for(pool_gone, 60, 0.5, message="the ephemeral job's auto pool to be deleted")
    assert "was deleted" in lost.stderr and "outputFiles" in lost.stderr and "keepAlive" in lost.stderr
    assert other.key not in gone.stderr + lost.stderr
    kube.kubectl("delete", "bjs", "--all", "-n", name, "--wait=false")


def test_logs_usage_errors_are_clear(kube: Any, batch: Any, namespace: str, cli_env: dict[str, str]) -> None:
    both = batchop(cli_env, "logs", "-n", namespace, "anything", "-f", "--all-tasks")
    assert both.returncode == 2 and "--task" in both.stderr
    missing = batchop(cli_env, "logs", "-n", namespace, "no-such-schedule")
    assert missing.returncode == 1 and "not found" in missing.stderr
    apply(kube, namespace, schedule("usage", batch, "/bin/bash -c 'echo fine'"))
    finished_job(kube, namespace, "usage", "success")
    unknown = batchop(cli_env, "logs", "-n", namespace, "usage", "--task", "nope")
    assert unknown.returncode == 1 and "has no task nope" in unknown.stderr
    previous = batchop(cli_env, "logs", "-n", namespace, "usage", "--previous")
    assert previous.returncode == 1 and "--job" in previous.stderr, "one job so far: no previous one"
    every = batchop(cli_env, "logs", "-n", namespace, "usage", "--all-tasks")
    assert every.returncode == 0 and every.stdout == "==> task wordcount (exit code 0) <==\nfine\n"
