"""``batchop dev up|status|down`` as a user runs them: real subprocesses of the CLI, a real stack.

One stack is started for the module (``--no-operator``: the operator has its own tests); the tests check
that it outlives the CLI, that its env file points kubectl, the Batch SDK and the Blob SDK at live services,
that a second ``up`` is refused, that a crashed part is reported and reclaimed, and that ``down`` leaves no
process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobServiceClient

from devstack import procs, system

EXPECTED = {"etcd", "kube-apiserver", "azurite", "batch"}


def batchop(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def read_env(path: Path) -> dict[str, str]:
    result = subprocess.run(["bash", "-c", f". {path} && env -0"], capture_output=True, text=True, check=True)
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("devstack") / "state"
    started = time.monotonic()
    result = batchop("dev", "up", "--dir", str(directory), "--no-operator", "--time-scale", "60")
    assert result.returncode == 0, result.stderr
    elapsed = time.monotonic() - started
    system.say(f"batchop dev up (cached prerequisites) took {elapsed:.1f} s")
    try:
        yield directory
    finally:
        batchop("dev", "down", "--dir", str(directory))
        for record in procs.records(directory):  # never leave strays, even when a test failed
            procs.stop(directory, record)


def test_up_prints_the_env_file_and_the_stack_outlives_the_cli(dev_dir: Path) -> None:
    env_file = dev_dir / "env"
    env = read_env(env_file)
    for name in ("KUBECONFIG", "BATCHOP_BATCH_ENDPOINT", "BATCHOP_BATCH_ACCOUNT", "BATCHOP_BATCH_KEY",
                 "AZURE_STORAGE_CONNECTION_STRING"):
        assert env.get(name), name
    records = {r.name: r for r in procs.records(dev_dir)}
    assert set(records) == EXPECTED
    assert all(r.alive for r in records.values())  # the `dev up` process has exited; the stack runs on


def test_env_points_kubectl_batch_sdk_and_blob_sdk_at_live_services(dev_dir: Path) -> None:
    env = read_env(dev_dir / "env")
    crds = subprocess.run(["kubectl", "get", "crd", "-o", "name"], env={**os.environ, "KUBECONFIG": env["KUBECONFIG"]},
                          capture_output=True, text=True, check=True)
    assert "batchschedules.azurebatch.dev" in crds.stdout
    batch = BatchClient(env["BATCHOP_BATCH_ENDPOINT"],
                        AzureNamedKeyCredential(env["BATCHOP_BATCH_ACCOUNT"], env["BATCHOP_BATCH_KEY"]))
    try:
        assert list(batch.list_job_schedules()) == []
    finally:
        batch.close()
    blobs = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
    blobs.create_container("dev-env-check")
    assert "dev-env-check" in [c.name for c in blobs.list_containers()]


def test_status_reports_every_part_healthy_as_json(dev_dir: Path) -> None:
    result = batchop("dev", "status", "--dir", str(dev_dir), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["components"]} == EXPECTED
    assert all(c["healthy"] for c in report["components"])
    assert "YmF0Y2hvcC" not in result.stdout  # the Batch key is not echoed by status
    assert report["stack"]["time_scale"] == 60


def test_a_second_up_is_refused_with_the_way_out(dev_dir: Path) -> None:
    result = batchop("dev", "up", "--dir", str(dev_dir), "--no-operator")
    assert result.returncode == 1
    assert "already runs" in result.stderr and "batchop dev down" in result.stderr


def test_crash_is_reported_then_reclaimed_by_up_and_down_leaves_nothing(dev_dir: Path) -> None:
    # Runs last in this module: it restarts the stack.
    records = {r.name: r for r in procs.records(dev_dir)}
    os.kill(records["etcd"].pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while records["etcd"].alive and time.monotonic() < deadline:
        time.sleep(0.05)
    status = batchop("dev", "status", "--dir", str(dev_dir))
    assert status.returncode == 1
    assert any(line.startswith("etcd") and "stopped" in line for line in status.stdout.splitlines()), status.stdout

    again = batchop("dev", "up", "--dir", str(dev_dir), "--no-operator")
    assert again.returncode == 0, again.stderr
    assert "reclaimed a stale stack" in again.stderr
    assert not any(r.alive for r in records.values())  # every old process is gone
    fresh = procs.records(dev_dir)
    assert {r.name for r in fresh} == EXPECTED and all(r.alive for r in fresh)

    down = batchop("dev", "down", "--dir", str(dev_dir))
    assert down.returncode == 0, down.stderr
    assert not any(r.alive for r in fresh)
    assert procs.records(dev_dir) == []
    assert batchop("dev", "status", "--dir", str(dev_dir)).returncode == 1
