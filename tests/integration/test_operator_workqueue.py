"""The work queue against the real parts: resources that find every reconcile slot busy are parked, and edits
and deletes that arrive while they wait are neither lost nor applied twice.

A local Batch service of this module's own answers every schedule create and update 1.5 s late, and one
operator process runs with ``--max-concurrent-reconciles 2``: of ten resources applied at once, eight wait in the
queue (:mod:`batchop.controller.workqueue`). Resources are driven with ``kubectl`` against the real kube-apiserver;
Batch is read with the unmodified azure-batch SDK and the service's admin request counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import FINALIZER, condition, get, resource

SLOTS = 2
N = 10
LATENCY_MS = 1500
EDITED = "/bin/bash -c 'echo edited'"


@pytest.fixture(scope="module")
def service(local_batch_factory: Callable[..., Any]) -> Any:
    """This module's own local Batch service (its latency changes under the tests; tasks are not run)."""
    return local_batch_factory("--no-execute")


@pytest.fixture(scope="module")
def operator(operator_factory: Any, service: Any) -> Any:
    return operator_factory(["wq-*"], resync=2.0, env=service.operator_env(), default_account=False,
                            args=["--max-concurrent-reconciles", str(SLOTS)])


@pytest.fixture
def batch(service: Any) -> Iterator[Any]:
    with service.client() as client:
        yield client


@pytest.fixture
def ns(kube: Any, operator: Any, service: Any) -> Iterator[str]:
    with resource_namespace(kube, "wq", timeout=90) as name:
        yield name
        service.clear_faults()


def schedules(batch: Any, ns: str) -> dict[str, Any]:
    return {s.id: s for s in batch.list_job_schedules() if s.id.startswith(f"{ns}_")}


def converged(kube: Any, ns: str, name: str) -> bool:
    obj = get(kube, ns, name)
    if obj is None:
        return False
    synced = condition(obj, "Synced")
    return synced.get("status") == "True" and (obj.get("status") or {}).get(
        "observedGeneration") == obj["metadata"]["generation"]


def test_parked_resources_converge_once_with_their_newest_spec_and_deletes_leave_nothing(
    kube: Any, ns: str, batch: Any, service: Any, operator: Any
) -> None:
    service.reset_counts()
    service.faults(latencyMs=LATENCY_MS, rate=0,
                   operations=["create_job_schedule", "update_job_schedule", "replace_job_schedule"])
    names = [f"q{i}" for i in range(N)]
    items = [resource(name) for name in names]
    kube.kubectl("apply", "-n", ns, "-f", "-", check=True,
                 input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_for(lambda: f"{ns}/" in operator.logs() and "parked in the work queue" in operator.logs(), 30, 0.1,
             message="a resource parked in the work queue")

    # while most of them wait: the last three edited, two others deleted
    edited, deleted = names[-3:], names[-5:-3]
    for name in edited:
        manager = {"jobSpecification": {"jobManagerTask": {"id": "main", "commandLine": EDITED}}}
        kube.kubectl("patch", "bjs", name, "-n", ns, "--type", "merge", "-p", json.dumps({"spec": manager}),
                     check=True)
    kube.kubectl("delete", "bjs", *deleted, "-n", ns, "--wait=false", check=True)
    kept = [name for name in names if name not in deleted]

    for name in kept:
        wait_for(lambda name=name: converged(kube, ns, name), 90, 0.3, message=f"{ns}/{name} synced at its generation")
    wait_for(lambda: all(get(kube, ns, name) is None for name in deleted), 60,
             message="the deleted resources released")

    held = schedules(batch, ns)
    assert sorted(held) == sorted(f"{ns}_{name}" for name in kept), "no schedule orphaned, none missing"
    for name in kept:
        command = held[f"{ns}_{name}"].job_specification.job_manager_task.command_line
        assert command == (EDITED if name in edited else "/bin/bash -c 'echo hello'"), name
        obj = get(kube, ns, name)
        assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]
    assert service.count("create_job_schedule", 409) == 0, "no schedule was created twice"
    assert service.count("create_job_schedule", 201) <= N
    parked = [line for line in operator.logs().splitlines() if f'{ns}/' in line and "parked in the work queue" in line]
    assert len(parked) >= N - SLOTS - 1, f"the burst waited in the queue ({len(parked)} parked)"
