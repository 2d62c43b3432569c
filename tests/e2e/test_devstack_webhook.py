"""``batchop dev up`` registers the admission webhook like a cluster install: a bad spec is refused at
``kubectl apply`` with the field named, a good one is admitted, and ``dev down`` leaves the webhook's process
gone (the configuration then points at nothing, which ``failurePolicy: Ignore`` tolerates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack import procs, stack
from tests.fixtures.operator import wait_for

pytestmark = pytest.mark.skipif(not stack.operator_available(), reason="the operator is not in this checkout")

SPEC = {
    "apiVersion": "azurebatch.dev/v1alpha1",
    "kind": "BatchJobSchedule",
    "metadata": {"name": "hello", "namespace": "default"},
    "spec": {
        "schedule": {"recurrenceInterval": "PT4H"},
        "jobSpecification": {
            "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {
                "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                    "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}}},
            "jobManagerTask": {"id": "hello", "commandLine": "/bin/sh -c 'echo hello'"},
        },
    },
}


def batchop(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("devwebhook") / "state"
    result = batchop("dev", "up", "--dir", str(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        yield directory
    finally:
        batchop("dev", "down", "--dir", str(directory))
        for record in procs.records(directory):
            procs.stop(directory, record)


def kubectl(dev: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(dev / "kubeconfig")}
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_bad_spec_refused_good_spec_admitted_on_the_dev_stack(dev: Path) -> None:
    def registered() -> bool:
        got = kubectl(dev, "get", "validatingwebhookconfiguration", "batchop.azurebatch.dev", "-o", "json")
        if got.returncode != 0:
            return False
        (hook,) = json.loads(got.stdout)["webhooks"]
        return hook["clientConfig"].get("url", "").startswith("https://127.0.0.1:") and bool(
            hook["clientConfig"].get("caBundle"))

    wait_for(registered, 60, message="batchop dev up's operator to register its webhook")
    # Only the webhook knows this rule (the schema accepts any ISO duration): refused by it, field named.
    too_often = yaml.safe_load(yaml.safe_dump(SPEC))
    too_often["metadata"]["name"] = "too-often"
    too_often["spec"]["schedule"]["recurrenceInterval"] = "PT30S"
    result = wait_for(lambda: (r := kubectl(dev, "apply", "-f", "-", input=yaml.safe_dump(too_often))).returncode
                      != 0 and "denied the request" in r.stderr and r, 60, message="the webhook to refuse")
    assert 'admission webhook "admit.batchschedules.azurebatch.dev" denied the request' in result.stderr
    assert "spec.schedule.recurrenceInterval: must be at least 1 minute" in result.stderr
    # A 2016 field name is refused at apply too (by the CRD's schema or the webhook), with the modern name.
    legacy = yaml.safe_load(yaml.safe_dump(SPEC))
    legacy["metadata"]["name"] = "legacy"
    legacy["spec"]["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]["targetDedicated"] = 1
    result = kubectl(dev, "apply", "-f", "-", input=yaml.safe_dump(legacy))
    assert result.returncode != 0 and "targetDedicatedNodes" in result.stderr, result.stderr
    good = kubectl(dev, "apply", "-f", "-", input=yaml.safe_dump(SPEC))
    assert good.returncode == 0, good.stderr
    kubectl(dev, "delete", "bjs", "hello", "--wait=false")
