"""Azure's bad days against the real parts: a dedicated core quota of 0, an allocation failure, a start task that
fails on every node, a job that waits too long, the active jobs and schedules quota on create, and Batch's deleting
and terminating windows.

A local Batch service of this module's own (its quotas, allocation failures and windows are set through its admin
API, ``/_emulator/*``) and one operator process (``--job-stuck-after 15``) serve every test; resources are driven
with ``kubectl`` against the real kube-apiserver, Batch is read with the unmodified azure-batch SDK. Each test puts
the service's quotas, failures and windows back before it starts.

``BATCHOP_CAPTURE_STATUS=1`` saves the live status objects under tests/fixtures/status-captures/ (the Argo CD
health check's unit test replays them); the check itself (examples/argocd/health.lua) also runs on them here.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.core.exceptions import ResourceNotFoundError

from batchop.api import conditions as cond
from batchop.api.names import FINALIZER
from tests.fixtures.operator import resource_namespace, wait_for

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests/fixtures/status-captures"
RESYNC = 2.0
STUCK_AFTER = 15.0


def resource(name: str, *, vm_size: str = "standard_d2s_v3", nodes: int = 1, start_task: str | None = None,
             **spec: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "vmSize": vm_size,
        "targetDedicatedNodes": nodes,
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
            "nodeAgentSKUId": "batch.node.ubuntu 24.04",
        },
    }
    if start_task is not None:
        pool["startTask"] = {"commandLine": start_task, "waitForSuccess": True}
    return {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {
                "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "bad", "poolLifetimeOption": "job",
                                                       "pool": pool}},
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo hello'"},
            },
            **spec,
        },
    }


@pytest.fixture(scope="module")
def service(local_batch_factory: Callable[..., Any]) -> Any:
    """This module's own local Batch service: its quotas and windows change under the tests."""
    return local_batch_factory()


@pytest.fixture(scope="module")
def operator(operator_factory: Any, service: Any) -> Any:
    return operator_factory(["bad-*"], resync=RESYNC, env=service.operator_env(), default_account=False,
                            args=["--job-stuck-after", str(STUCK_AFTER)])


@pytest.fixture
def batch(service: Any) -> Iterator[Any]:
    with service.client() as client:
        yield client


@pytest.fixture
def ns(kube: Any, operator: Any, service: Any) -> Iterator[str]:
    service.admin("POST", "quotas",
                  {"dedicatedCores": None, "lowPriorityCores": None, "activeJobsAndSchedules": None})
    service.admin("DELETE", "allocation-failures")
    service.admin("POST", "windows", {"terminatingSeconds": 0.0, "deletingSeconds": 0.0})
    with resource_namespace(kube, "bad") as name:
        yield name


def apply(kube: Any, ns: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=True)


def get(kube: Any, ns: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", "bjs", name, "-n", ns, "-o", "json")
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    return dict(cond.find(((obj or {}).get("status") or {}).get("conditions"), type_) or {})


def wait_ready(kube: Any, ns: str, name: str, status: str, reason: str | None = None,
               timeout: float = 60.0) -> dict[str, Any]:
    seen: list[dict[str, Any] | None] = [None]

    def check() -> dict[str, Any] | None:
        obj = seen[0] = get(kube, ns, name)
        ready = condition(obj, cond.READY)
        return obj if ready.get("status") == status and (reason is None or ready.get("reason") == reason) else None

    try:
        return wait_for(check, timeout, message=f"{ns}/{name} Ready={status} {reason or ''}")
    except pytest.fail.Exception as exc:
        last = json.dumps((seen[0] or {}).get("status"), indent=1)
        raise AssertionError(f"{exc}\nlast status: {last}") from None


def events(kube: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json",
                       check=True)
    return list(json.loads(out.stdout)["items"])


def warning(kube: Any, ns: str, name: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        return next((e for e in events(kube, ns, name) if e["type"] == "Warning" and e["reason"] == reason), None)

    return wait_for(check, 20, message=f"a Warning {reason} Event on {ns}/{name}")


def argo_health(obj: dict[str, Any]) -> str:
    """examples/argocd/health.lua on the live object (Lua 5.1, as Argo CD runs it)."""
    lupa = pytest.importorskip("lupa.lua51")
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(v) for v in value])
        return value

    runtime.globals()["obj"] = to_lua(obj)
    return str(runtime.execute((ROOT / "examples/argocd/health.lua").read_text())["status"])


def capture(name: str, obj: dict[str, Any], expected: str) -> None:
    """Check the Argo CD health of a live object; with BATCHOP_CAPTURE_STATUS=1 also save it for the unit test."""
    assert argo_health(obj) == expected, json.dumps(obj.get("status"), indent=1)
    if os.environ.get("BATCHOP_CAPTURE_STATUS") != "1":
        return
    meta = obj["metadata"]
    keep = {"name": meta["name"], "namespace": "bad-days", "generation": meta["generation"]}
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep, "spec": obj["spec"],
            "status": obj["status"]}
    CAPTURES.mkdir(parents=True, exist_ok=True)
    (CAPTURES / f"{name}.yaml").write_text(
        "# Captured from tests/integration/test_operator_bad_days.py (BATCHOP_CAPTURE_STATUS=1): a real status.\n"
        + yaml.safe_dump({"expectedHealth": expected, "object": body}, sort_keys=False))


def name_of(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- quota 0, then raised ------------------------------------------------------------------------------------------


def test_quota_zero_is_stalled_with_what_to_do_then_runs_when_raised(kube: Any, ns: str, service: Any) -> None:
    service.admin("POST", "quotas", {"dedicatedCores": 0})
    name = name_of("quota")
    apply(kube, ns, resource(name))
    obj = wait_ready(kube, ns, name, cond.FALSE, cond.REASON_QUOTA_EXCEEDED)  # the first cycle after the job
    ready, stalled = condition(obj, cond.READY), condition(obj, cond.STALLED)
    assert stalled["status"] == cond.TRUE and stalled["reason"] == cond.REASON_QUOTA_EXCEEDED
    assert condition(obj, cond.RECONCILING)["status"] == cond.FALSE
    assert f"of Batch account {service.account}" in ready["message"] and "Raise the dedicated core quota" in \
        ready["message"]
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["pool"]["resizeErrors"][0]["code"] == "AccountCoreQuotaReached"
    assert status["recentJob"]["state"] == "active" and status["recentJob"]["waitingSince"]
    assert status["scheduleId"]  # the schedule exists: the job waits, nothing failed in Batch
    assert "Raise the dedicated core quota" in warning(kube, ns, name, cond.REASON_QUOTA_EXCEEDED)["message"]
    capture("quota-exceeded", obj, "Degraded")

    service.admin("POST", "quotas", {"dedicatedCores": None})
    obj = wait_ready(kube, ns, name, cond.TRUE, cond.REASON_ACTIVE, timeout=90)
    assert condition(obj, cond.STALLED)["status"] == cond.FALSE

    def job_ran() -> dict[str, Any] | None:
        current = get(kube, ns, name) or {}
        job = (current.get("status") or {}).get("recentJob") or {}
        return current if job.get("result") == "success" else None

    obj = wait_for(job_ran, 90, message="the job to run once the quota is raised")
    assert "waitingSince" not in obj["status"]["recentJob"]
    assert any(e["reason"] == "JobRecovered" for e in events(kube, ns, name))
    capture("quota-raised", obj, "Healthy")


def test_allocation_failure(kube: Any, ns: str, service: Any) -> None:
    service.admin("POST", "allocation-failures",
                  {"vmSize": "standard_d4s_v3", "code": "AllocationFailed",
                   "message": "Desired number of dedicated nodes could not be allocated"})
    name = name_of("alloc")
    apply(kube, ns, resource(name, vm_size="standard_d4s_v3"))
    obj = wait_ready(kube, ns, name, cond.FALSE, cond.REASON_ALLOCATION_FAILED)
    assert condition(obj, cond.STALLED)["status"] == cond.TRUE
    assert "standard_d4s_v3" in condition(obj, cond.READY)["message"]
    warning(kube, ns, name, cond.REASON_ALLOCATION_FAILED)
    capture("allocation-failed", obj, "Degraded")


def test_start_task_failing_on_every_node(kube: Any, ns: str) -> None:
    name = name_of("starttask")
    apply(kube, ns, resource(name, start_task="/bin/bash -c 'echo broken >&2; exit 3'"))
    obj = wait_ready(kube, ns, name, cond.FALSE, cond.REASON_START_TASK_FAILED)
    message = condition(obj, cond.READY)["message"]
    nodes = obj["status"]["pool"]["nodeCounts"]["dedicated"]
    assert nodes.get("startTaskFailed") == nodes["total"] >= 1
    assert "--node-id " in message and "startup/stderr.txt" in message and "--node-id NODE" not in message
    assert obj["status"]["recentJob"]["state"] == "active"  # as on Azure: the job waits, it does not fail
    warning(kube, ns, name, cond.REASON_START_TASK_FAILED)
    capture("start-task-failed", obj, "Degraded")


def test_job_waiting_longer_than_the_threshold_is_stuck(kube: Any, ns: str) -> None:
    name = name_of("stuck")
    apply(kube, ns, resource(name, nodes=0))  # a pool that asks for no node: nothing ever runs, no error either
    obj = wait_ready(kube, ns, name, cond.FALSE, cond.REASON_JOB_STUCK, timeout=STUCK_AFTER + 45)
    assert condition(obj, cond.STALLED)["status"] == cond.TRUE
    assert "--job-stuck-after" in condition(obj, cond.READY)["message"]
    warning(kube, ns, name, cond.REASON_JOB_STUCK)
    capture("job-stuck", obj, "Degraded")


def test_active_jobs_and_schedules_quota_on_create(kube: Any, ns: str, service: Any, batch: Any) -> None:
    service.admin("POST", "quotas", {"activeJobsAndSchedules": 0})
    name = name_of("jobquota")
    apply(kube, ns, resource(name))
    obj = wait_ready(kube, ns, name, cond.FALSE, cond.REASON_ACTIVE_JOB_QUOTA)
    assert condition(obj, cond.SYNCED)["reason"] == cond.REASON_ACTIVE_JOB_QUOTA
    assert condition(obj, cond.STALLED)["status"] == cond.TRUE
    assert "scheduleId" not in obj["status"]  # never counted as created
    schedule_id = f"{ns}_{name}"
    with pytest.raises(ResourceNotFoundError):
        batch.get_job_schedule(schedule_id)
    capture("active-jobs-quota", obj, "Degraded")

    service.admin("POST", "quotas", {"activeJobsAndSchedules": None})
    obj = wait_ready(kube, ns, name, cond.TRUE, timeout=90)  # retried with the poller's backoff
    assert obj["status"]["scheduleId"] == schedule_id and batch.get_job_schedule(schedule_id).state == "active"


# -- the deleting and terminating windows -----------------------------------------------------------------------


def test_deleting_window_keeps_the_finalizer_until_batch_answers_404(kube: Any, ns: str, service: Any,
                                                                     batch: Any) -> None:
    service.admin("POST", "windows", {"terminatingSeconds": 3.0, "deletingSeconds": 6.0})
    name = name_of("window")
    apply(kube, ns, resource(name))
    obj = wait_ready(kube, ns, name, cond.TRUE)
    schedule_id = obj["status"]["scheduleId"]
    kube.kubectl("delete", "bjs", name, "-n", ns, "--wait=false", check=True)

    seen: dict[str, dict[str, Any]] = {}

    def in_window() -> bool:
        try:
            found = batch.get_job_schedule(schedule_id).state
            state = str(getattr(found, "value", found))  # the SDK's enum: its wire value
        except ResourceNotFoundError:
            return False
        current = get(kube, ns, name)
        if state in ("terminating", "deleting") and current is not None:
            assert FINALIZER in current["metadata"].get("finalizers", []), "released inside Batch's window"
            synced = condition(current, cond.SYNCED)
            if synced.get("reason") == cond.REASON_DELETING and "window" in synced.get("message", ""):
                seen[state] = current
        return "deleting" in seen

    wait_for(in_window, 30, message="the resource to report Batch's deleting window")
    obj = seen["deleting"]
    assert condition(obj, cond.READY)["status"] == cond.FALSE
    assert condition(obj, cond.RECONCILING)["status"] == cond.TRUE  # progress, not a problem
    capture("deleting-window", obj, "Progressing")

    wait_for(lambda: get(kube, ns, name) is None, 60, message="the resource to go once Batch answers 404")
    with pytest.raises(ResourceNotFoundError):
        batch.get_job_schedule(schedule_id)
    left = [j.id for j in batch.list_jobs() if str(j.id).startswith(f"{schedule_id}:")]
    assert not left, f"jobs of the deleted schedule left behind: {left}"
