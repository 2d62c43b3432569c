"""Crashes and outages: the operator killed with SIGKILL mid-create, deletion while Batch is unavailable,
throttling. One operator process for the module (namespaces ``opr-*``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import (
    FINALIZER,
    apply,
    condition,
    get,
    resource,
    schedule_or_none,
    wait_condition,
)

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def operator(operator_factory: Any) -> Any:
    return operator_factory(["opr-*"], resync=2.0)


@pytest.fixture
def ns(kube: Any, operator: Any, local_batch: Any) -> Iterator[str]:
    with resource_namespace(kube, "opr", timeout=90) as name:
        yield name
        local_batch.clear_faults()  # before the release: the operator must reach Batch to let go
        if not operator.alive:
            operator.start()


@pytest.fixture
def batch(batch_client: Any) -> Any:
    """The session's SDK client for the local Batch service, under this module's short name."""
    return batch_client


def listed(batch: Any, schedule_id: str) -> list[Any]:
    return [s for s in batch.list_job_schedules(filter=f"id eq '{schedule_id}'")]


def test_kill_9_between_create_and_status_write_creates_nothing_twice(
    kube: Any, ns: str, batch: Any, local_batch: Any, operator: Any
) -> None:
    schedule_id = f"{ns}_crash"
    local_batch.reset_counts()
    # the create is carried out at once but answered 10 s late, and so are schedule listings (the poller
    # would otherwise record the new schedule in status), so there is a window where the schedule exists in
    # Batch and the resource's status does not know it yet. The test watches the create through the
    # service's admin counts, which count it before the late answer.
    local_batch.faults(answerLatencyMs=10000, operations=["create_job_schedule", "list_job_schedules"], rate=0)
    apply(kube, ns, resource("crash"))
    wait_for(lambda: local_batch.count("create_job_schedule", 201) == 1, 30, 0.1,
             message="the schedule to be created in Batch")
    obj = get(kube, ns, "crash")
    assert obj is not None and "scheduleId" not in (obj.get("status") or {})
    operator.kill()
    local_batch.clear_faults()
    operator.start()
    obj = wait_condition(kube, ns, "crash", "Synced", "True", timeout=60)
    assert obj["status"]["scheduleId"] == schedule_id
    assert local_batch.count("create_job_schedule", 201) == 1
    assert len(listed(batch, schedule_id)) == 1
    jobs = [j.id for j in batch.list_jobs_from_schedule(schedule_id)]
    assert jobs == [f"{schedule_id}:job-1"]
    wait_for(lambda: FINALIZER in (get(kube, ns, "crash") or {})["metadata"].get("finalizers", []), 20,
             message="the finalizer once the schedule is known")


def test_deletion_waits_while_batch_is_unavailable_and_never_orphans(
    kube: Any, ns: str, batch: Any, local_batch: Any
) -> None:
    apply(kube, ns, resource("outage"))
    obj = wait_condition(kube, ns, "outage", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    wait_for(lambda: FINALIZER in (get(kube, ns, "outage") or {})["metadata"].get("finalizers", []), 20,
             message="the finalizer")
    local_batch.faults(rate=1.0, codes=["503"], operations=[])
    kube.kubectl("delete", "bjs", "outage", "-n", ns, "--wait=false", check=True)
    obj = wait_condition(kube, ns, "outage", "Synced", "False", "DeletionPending", timeout=60)
    assert schedule_id in condition(obj, "Synced")["message"]
    assert obj["metadata"].get("deletionTimestamp") and FINALIZER in obj["metadata"]["finalizers"]
    local_batch.clear_faults()
    assert schedule_or_none(batch, schedule_id) is not None
    wait_for(lambda: get(kube, ns, "outage") is None, 90, message="the object released after the outage")
    assert schedule_or_none(batch, schedule_id) is None


def test_throttling_is_retried_honouring_retry_after(kube: Any, ns: str, local_batch: Any, operator: Any) -> None:
    local_batch.reset_counts()
    local_batch.faults(nextN=2, codes=["429"], retryAfter=1, operations=["create_job_schedule"])
    apply(kube, ns, resource("throttled"))
    wait_condition(kube, ns, "throttled", "Synced", "True", timeout=60)
    assert local_batch.count("create_job_schedule", 429) == 2
    assert local_batch.count("create_job_schedule", 201) == 1
    assert "throttled a request (429)" in operator.logs()


def test_resource_gone_during_its_create_leaves_no_schedule(
    kube: Any, ns: str, batch: Any, local_batch: Any, operator: Any
) -> None:
    """The finalizer is stripped by hand and the resource deleted while its create is in flight: no delete
    handler can run for it, so the status write finding no object is the operator's cue to delete the
    schedule it just made. Nothing is orphaned in Batch."""
    schedule_id = f"{ns}_vanish"
    local_batch.reset_counts()
    local_batch.faults(latencyMs=4000, operations=["create_job_schedule"], rate=0)  # a slow create
    apply(kube, ns, resource("vanish"))
    wait_for(lambda: FINALIZER in ((get(kube, ns, "vanish") or {}).get("metadata") or {}).get("finalizers", []),
             20, 0.1, message="the finalizer, added before the create")
    kube.kubectl("patch", "bjs", "vanish", "-n", ns, "--type", "json",
                 "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]', check=True)
    kube.kubectl("delete", "bjs", "vanish", "-n", ns, "--wait=true", "--timeout=10s", check=True)
    assert local_batch.count("create_job_schedule", 201) == 0, "the test needs the create still in flight"
    wait_for(lambda: local_batch.count("create_job_schedule", 201) == 1, 30, 0.1, message="the slow create")
    local_batch.clear_faults()

    def gone_or_ending() -> bool:
        schedule = schedule_or_none(batch, schedule_id)
        return schedule is None or schedule.state in ("terminating", "completed", "deleting")

    wait_for(gone_or_ending, 30, 0.2, message=f"the operator to delete {schedule_id} of the vanished resource")
    wait_for(lambda: schedule_or_none(batch, schedule_id) is None, 60, 0.5, message=f"{schedule_id} deleted")
    assert "was deleted while its Batch schedule" in operator.logs()
