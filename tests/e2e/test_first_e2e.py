"""The first end-to-end test: only what a user uses.

``kubectl apply -f`` a BatchJobSchedule, ``kubectl get batchschedules``, the unmodified Batch SDK to see the
schedule in the local Batch service, then ``kubectl delete`` and the schedule is gone from Batch (no stuck
finalizer). Real parts: kube-apiserver + kubectl (``kube``), the local Batch service (``local_batch``) and the
operator process ``batchop run`` (``operator_factory``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.operator import wait_for
from tests.fixtures.stack import KubeHandle

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "first-e2e"
NAME = "hello"
OWNER = f"{NAMESPACE}/{NAME}"

_missing = [
    what
    for what, present in (
        (
            "the operator (operator/batchop/cli/commands/run.py)",
            (REPO / "operator/batchop/cli/commands/run.py").is_file(),
        ),
        ("the CRD (crds/*.yaml)", any((REPO / "crds").glob("*.yaml"))),
    )
    if not present
]
pytestmark = pytest.mark.skipif(bool(_missing), reason="not in this checkout yet: " + ", ".join(_missing))

MANIFEST = f"""\
apiVersion: azurebatch.dev/v1alpha1
kind: BatchJobSchedule
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
spec:
  schedule:
    recurrenceInterval: PT4H
  jobSpecification:
    onAllTasksComplete: terminatejob
    poolInfo:
      autoPoolSpecification:
        autoPoolIdPrefix: hello
        poolLifetimeOption: job
        pool:
          vmSize: standard_d2s_v3
          targetDedicatedNodes: 1
          virtualMachineConfiguration:
            imageReference:
              publisher: canonical
              offer: ubuntu-24_04-lts
              sku: server
              version: latest
            nodeAgentSKUId: batch.node.ubuntu 24.04
    jobManagerTask:
      id: hello
      commandLine: /bin/sh -c 'echo hello from batchop'
  metadata:
    - name: purpose
      value: first-e2e
"""


def _owned_schedule(client: Any) -> Any:
    for schedule in client.list_job_schedules():
        marks = {m.name: m.value for m in (schedule.metadata or [])}
        if marks.get("azurebatch.dev/owner") == OWNER:
            return schedule
    return None


def test_apply_get_see_in_batch_delete(kube: KubeHandle, local_batch: Any,
                                       operator_factory: Callable[..., Any], tmp_path: Path) -> None:
    kube.kubectl("create", "namespace", NAMESPACE)
    operator_factory([NAMESPACE])
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(MANIFEST)

    applied = kube.kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert f"batchjobschedule.azurebatch.dev/{NAME} created" in applied.stdout

    listed = kube.kubectl("get", "batchschedules", "-n", NAMESPACE)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith("NAME")
    assert any(line.split()[0] == NAME for line in listed.stdout.splitlines()[1:]), listed.stdout

    client = local_batch.client()
    try:
        schedule = wait_for(lambda: _owned_schedule(client), 60, 0.5, f"a Batch schedule owned by {OWNER}")
        assert schedule.state == "active"
        assert schedule.schedule.recurrence_interval.total_seconds() == 4 * 3600
        marks = {m.name: m.value for m in schedule.metadata}
        assert marks["purpose"] == "first-e2e"
        uid = kube.kubectl("get", "batchschedules", NAME, "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}").stdout
        assert marks["azurebatch.dev/uid"] == uid
        # The schedule's first job ran the job manager task in the local Batch service.
        job = wait_for(lambda: client.get_job_schedule(schedule.id).execution_info.recent_job, 60, 0.5,
                       "the schedule's first job")
        assert job.id.startswith(f"{schedule.id}:job-")

        deleted = kube.kubectl("delete", "batchschedules", NAME, "-n", NAMESPACE, "--timeout=90s")
        assert deleted.returncode == 0, f"finalizer not released: {deleted.stderr}"
        wait_for(lambda: _owned_schedule(client) is None, 60, 0.5, "the Batch schedule to be deleted")
        gone = kube.kubectl("get", "batchschedules", "-n", NAMESPACE, "-o", "name")
        assert gone.stdout.strip() == ""
    finally:
        client.close()
        kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
