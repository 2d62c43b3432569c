"""A start task that fails on every node: the ``StartTaskFailed`` condition names a ``batchop logs`` command, and
that command, run as written, prints what the start task wrote to stderr.

Real parts: kube-apiserver + the real kubectl, the operator process, the local Batch service (which really runs the
start task on each node and serves the node's files under ``startup/`` through the compute node file API), the
``batchop`` CLI and its ``kubectl-batchop`` plugin as a user runs them. Credentials come from the resource's Secret,
read through the kubeconfig: the CLI's environment has no Batch account. Batch is read with the unmodified
azure-batch SDK.

- the command in the condition message prints the start task's stderr (exit 0) and its state on stderr;
  ``--stdout`` its stdout, ``--node`` another node's, ``--tail``, through ``kubectl batchop`` as well;
- an unknown node and the pool deleted with its job are exit 1 with the reason, a usage error exit 2
  (:mod:`batchwire.exitcodes`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchop.api import conditions as cond
from tests.fixtures.operator import resource_namespace, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
KUBECTL = "/usr/bin/kubectl"
SECRET = "batch-account"
START_TASK = ("/bin/bash -c 'echo preparing the node; echo \"E: Unable to locate package wordcount-deps\" >&2; "
              "exit 3'")


def resource(name: str, batch: Any) -> dict[str, Any]:
    pool = {
        "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2,
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
            "nodeAgentSKUId": "batch.node.ubuntu 24.04"},
        "startTask": {"commandLine": START_TASK, "waitForSuccess": True},
    }
    return {
        "apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": {"name": name},
        "spec": {
            "account": {"endpoint": batch.endpoint, "credentialsSecretRef": {"name": SECRET}},
            "schedule": {"recurrenceInterval": "P1D"},
            "jobSpecification": {
                "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "st", "poolLifetimeOption": "job",
                                                       "pool": pool}},
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo never runs'"},
            },
        },
    }


def kubectl_apply(kube: Any, namespace: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=True)


@pytest.fixture(scope="module")
def batch(local_batch_factory: Any) -> Any:
    return local_batch_factory()


@pytest.fixture(scope="module")
def operator(operator_factory: Any, batch: Any) -> Any:
    return operator_factory(["stlogs-*"], resync=1.0, default_account=False)


@pytest.fixture
def namespace(kube: Any, operator: Any, batch: Any) -> Iterator[str]:
    with resource_namespace(kube, "stlogs") as name:
        data = {"accountName": batch.account, "accountKey": batch.key}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
                  "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        kubectl_apply(kube, name, secret)
        yield name


@pytest.fixture(scope="module")
def cli_env(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user's shell: the kubeconfig, the venv (for kubectl's plugin lookup) on PATH, no Batch account."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PYTHONPATH": str(REPO / "operator"),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("BATCHOP_BATCH_ENDPOINT", "BATCHOP_BATCH_ACCOUNT", "BATCHOP_BATCH_KEY"):
        env.pop(name, None)
    env["HOME"] = str(tmp_path_factory.mktemp("home"))  # no ~/.kube/config, no stack env file to fall back on
    return env


def run(env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, text=True, capture_output=True, timeout=60, check=False, cwd=env["HOME"])


def batchop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, [str(VENV_BIN / "batchop"), *args])


def start_task_failed(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        result = kube.kubectl("get", "bjs", name, "-n", namespace, "-o", "json")
        obj = json.loads(result.stdout) if result.returncode == 0 else {}
        ready = cond.find((obj.get("status") or {}).get("conditions"), cond.READY) or {}
        return obj if ready.get("reason") == cond.REASON_START_TASK_FAILED else None

    found: dict[str, Any] = wait_for(check, 90, 0.5, message=f"{namespace}/{name} Ready=False StartTaskFailed")
    return found


def test_the_command_in_the_condition_prints_the_start_tasks_stderr(kube: Any, batch: Any, namespace: str,
                                                                    cli_env: dict[str, str]) -> None:
    name = "broken-node"
    kubectl_apply(kube, namespace, resource(name, batch))
    obj = start_task_failed(kube, namespace, name)
    message = (cond.find(obj["status"]["conditions"], cond.READY) or {})["message"]
    command = re.search(r"batchop logs \S+ -n \S+ --start-task", message)
    assert command is not None, message
    assert command.group(0) == f"batchop logs {name} -n {namespace} --start-task"
    assert "az batch node file download" in message  # the alternative for users without batchop

    argv = shlex.split(command.group(0))
    shown = run(cli_env, [str(VENV_BIN / argv[0]), *argv[1:]])  # the command exactly as the message writes it
    assert (shown.returncode, shown.stdout) == (0, "E: Unable to locate package wordcount-deps\n"), shown.stderr
    pool_id = obj["status"]["recentJob"]["poolId"]
    assert re.fullmatch(rf"batchop logs: the start task on node \S+ of pool {re.escape(pool_id)} \(node state "
                        r"starttaskfailed\) exited with 3\n", shown.stderr), shown.stderr
    assert batch.key not in shown.stdout + shown.stderr

    out = batchop(cli_env, "logs", name, "-n", namespace, "--start-task", "--stdout")
    assert (out.returncode, out.stdout) == (0, "preparing the node\n"), out.stderr
    with batch.client() as client:
        nodes = sorted(n.id for n in client.list_nodes(pool_id))
    assert len(nodes) == 2
    picked = shown.stderr.split("on node ", 1)[1].split(" ", 1)[0]
    other = next(n for n in nodes if n != picked)
    on_other = batchop(cli_env, "logs", name, "-n", namespace, "--node", other.upper())  # ids match in any case
    assert (on_other.returncode, on_other.stdout) == (0, "E: Unable to locate package wordcount-deps\n")
    assert f"on node {other} " in on_other.stderr

    plugin = run(cli_env, [KUBECTL, "batchop", "logs", name, "-n", namespace, "--start-task", "--stdout",
                           "--tail", "1"])
    assert (plugin.returncode, plugin.stdout) == (0, "preparing the node\n"), plugin.stderr

    unknown = batchop(cli_env, "logs", name, "-n", namespace, "--node", "tvmps_no_such_node")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert f"pool {pool_id} has no node tvmps_no_such_node" in unknown.stderr
    usage = batchop(cli_env, "logs", name, "-n", namespace, "--start-task", "--all-tasks")
    assert usage.returncode == 2 and "--start-task" in usage.stderr

    # the job ends (terminated by hand): its auto pool is deleted, and the nodes' files with it
    job_id = obj["status"]["recentJob"]["id"]
    with batch.client() as client:
        client.begin_terminate_job(job_id, {"terminateReason": "UserTerminate"}, polling_interval=0.2).result(
            timeout=30)

    def pool_gone() -> subprocess.CompletedProcess[str] | None:
        result = batchop(cli_env, "logs", name, "-n", namespace, "--start-task", "--job", job_id)
        return result if result.returncode == 1 else None

    gone = wait_for(pool_gone, 60, 0.5, message="the terminated job's auto pool to be deleted")
    assert f"pool {pool_id} of job {job_id} is gone" in gone.stderr and gone.stdout == ""
