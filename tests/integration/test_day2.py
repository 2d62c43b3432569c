"""Day-2 tools against a real kube-apiserver, the local Batch service (virtual clock x240, tasks executed) and
the operator as a process: import -> zero writes; run-now exactly once per value, also across a kill -9;
history limits after several recurrences; the ``batchop status`` table.

Resources are driven with real ``kubectl``; Batch is checked with the unmodified ``azure-batch`` SDK and the
service's admin request counts. One local Batch service and one operator process (namespaces ``d2-*``) serve
the module; each test has its own namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchop.controller import runnow
from tests.fixtures.operator import REPO, OperatorProcess, _free_port, resource_namespace, wait_for
from tests.integration.test_operator import apply, condition, events, get, patch, wait_condition

WRITES = ("create_job_schedule", "update_job_schedule", "replace_job_schedule", "disable_job_schedule",
          "enable_job_schedule", "terminate_job_schedule", "delete_job_schedule", "create_job", "delete_job")
POOL = {
    "vmSize": "standard_d2s_v3",
    "targetDedicatedNodes": 1,
    "virtualMachineConfiguration": {
        "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
        "nodeAgentSKUId": "batch.node.ubuntu 24.04",
    },
}


@pytest.fixture(scope="module")
def fast_batch(local_batch_factory: Any) -> Any:
    """A local Batch service of its own: virtual time x240 (PT5M every 1.25 s), tasks really executed."""
    return local_batch_factory("--time-scale", "240")


def batch_env(service: Any) -> dict[str, str]:
    return service.operator_env()


@pytest.fixture(scope="module")
def op(kube: Any, fast_batch: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    port = _free_port()
    command = [sys.executable, "-m", "batchop", "--log-format", "json", "--log-level", "DEBUG", "run", "--standalone",
               "--liveness", f"http://127.0.0.1:{port}/healthz", "--resync-interval", "1", "-n", "d2-*"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": str(kube.kubeconfig),
           **batch_env(fast_batch)}
    process = OperatorProcess(command, env, tmp_path_factory.mktemp("day2-operator") / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def ns(kube: Any, op: OperatorProcess) -> Iterator[str]:
    with resource_namespace(kube, "d2", timeout=90) as name:
        yield name
        if not op.alive:
            op.start()  # before the release: only the operator lets go of its finalizers


@pytest.fixture
def batch(fast_batch: Any) -> Iterator[Any]:
    client = fast_batch.client()
    yield client
    client.close()


def batchop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", "--log-format", "text", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "operator"), **(env or {})})


def writes(service: Any) -> dict[str, int]:
    counts = service.counts()
    return {op_: counts.get(op_, {}).get("total", 0) for op_ in WRITES}


def job_numbers(ids: list[str]) -> list[int]:
    return sorted(int(i.rsplit("-", 1)[1]) for i in ids if ":job-" in i)


# -- import -------------------------------------------------------------------------------------------------


def test_import_then_apply_writes_nothing_to_batch(kube: Any, ns: str, batch: Any, fast_batch: Any,
                                                   tmp_path: Path) -> None:
    from azure.batch.models import BatchJobScheduleCreateOptions

    schedule_id = f"legacy-{uuid.uuid4().hex[:6]}"
    batch.create_job_schedule(BatchJobScheduleCreateOptions({
        "id": schedule_id,
        "displayName": "the nightly report, created by hand",
        "schedule": {"recurrenceInterval": "PT12H", "startWindow": "PT1H"},
        "jobSpecification": {
            "priority": 10,
            "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": 0},
            "jobManagerTask": {"id": "report", "commandLine": "/bin/bash -c 'echo report'",
                               "killJobOnCompletion": True, "environmentSettings": [{"name": "MODE", "value": "full"}]},
            "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "legacy", "poolLifetimeOption": "job",
                                                   "pool": POOL}},
        },
        "metadata": [{"name": "cost-center", "value": "42"}],
    }))
    manifest = tmp_path / "imported.yaml"
    result = batchop("import", schedule_id, "-n", ns, "-o", str(manifest), env=batch_env(fast_batch))
    print(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "sends no write" in result.stderr
    text = manifest.read_text()
    print(text)
    assert "azurebatch.dev/adopt: 'true'" in text and f"scheduleId: {schedule_id}" in text
    assert "priority: 10" in text and "cost-center" in text
    for default in ("allowTaskPreemption", "maxParallelTasks", "onTaskFailure", "runExclusive", "retentionTime",
                    "taskSlotsPerNode", "elevationLevel"):
        assert default not in text, f"read-time default {default} was written into the manifest"
    etag = batch.get_job_schedule(schedule_id).etag
    fast_batch.reset_counts()
    kube.kubectl("apply", "-f", str(manifest), check=True)
    name = f"legacy-{schedule_id.split('-')[1]}"
    obj = wait_condition(kube, ns, name, "Ready", "True", "Active", timeout=60)
    obj = wait_condition(kube, ns, name, "Synced", "True", timeout=30)
    assert obj["status"]["scheduleId"] == schedule_id
    cycles = fast_batch.count("list_job_schedules")
    wait_for(lambda: fast_batch.count("list_job_schedules") >= cycles + 3, 30, message="three more poll cycles")
    counts = fast_batch.counts()
    print("Batch requests after kubectl apply of the imported resource:",
          {k: v["total"] for k, v in counts.items()})
    assert writes(fast_batch) == dict.fromkeys(WRITES, 0)
    assert batch.get_job_schedule(schedule_id).etag == etag
    assert "azurebatch.dev/uid" not in {m.name for m in batch.get_job_schedule(schedule_id).metadata or []}
    # the adopted schedule is managed from now on: an edit is written, with the owner marks
    patch(kube, ns, name, {"spec": {"jobSpecification": {"priority": 20}}})
    wait_for(lambda: batch.get_job_schedule(schedule_id).job_specification.priority == 20, 30,
             message="the edit written to Batch")
    marks = {m.name: m.value for m in batch.get_job_schedule(schedule_id).metadata or []}
    assert marks["azurebatch.dev/owner"] == f"{ns}/{name}" and marks["cost-center"] == "42"
    assert fast_batch.count("update_job_schedule") == 1


# -- run now ------------------------------------------------------------------------------------------------


def quiet_resource(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": {"recurrenceInterval": "PT12H", "doNotRunUntil": "2099-01-01T00:00:00Z"},
            "jobSpecification": {
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo now'"},
                "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "rn", "poolLifetimeOption": "jobschedule",
                                                       "pool": POOL}},
            },
            **spec,
        },
    }
    return body


def run_now_jobs(batch: Any, schedule_id: str) -> list[str]:
    prefix = runnow.job_prefix(schedule_id)
    return sorted(j.id for j in batch.list_jobs(filter=f"startswith(id,'{prefix}')"))


def annotate(kube: Any, ns: str, name: str, value: str) -> None:
    kube.kubectl("annotate", "bjs", name, "-n", ns, "--overwrite", f"azurebatch.dev/run-now={value}", check=True)


def test_run_now_fires_once_per_value_even_across_a_kill_9(kube: Any, ns: str, batch: Any, fast_batch: Any,
                                                           op: OperatorProcess) -> None:
    apply(kube, ns, quiet_resource("adhoc"))
    obj = wait_condition(kube, ns, "adhoc", "Ready", "True", "Active", timeout=60)
    schedule_id, uid = obj["status"]["scheduleId"], obj["metadata"]["uid"]
    assert run_now_jobs(batch, schedule_id) == []
    fast_batch.reset_counts()

    annotate(kube, ns, "adhoc", "first")
    first = runnow.job_id(schedule_id, uid, "first")
    wait_for(lambda: (get(kube, ns, "adhoc") or {}).get("status", {}).get("runNow") == "first", 30,
             message="status.runNow=first")
    assert run_now_jobs(batch, schedule_id) == [first]
    job = batch.get_job(first)
    marks = {m.name: m.value for m in job.metadata or []}
    assert marks["azurebatch.dev/schedule"] == schedule_id and marks["azurebatch.dev/run-now"] == "first"
    assert job.pool_info.auto_pool_specification.pool_lifetime_option == "job"
    assert batch.get_job_schedule(schedule_id).schedule.recurrence_interval.total_seconds() == 12 * 3600
    obj = wait_for(lambda: (o := get(kube, ns, "adhoc")) and (o["status"].get("recentJob") or {}).get("id") == first
                   and o, 30, message="the run-now job as status.recentJob")
    assert any(e["reason"] == "RunNow" and first in e["message"] for e in events(kube, ns))
    wait_for(lambda: any(j.get("id") == first and j.get("result") == "success"
                         for j in (get(kube, ns, "adhoc") or {})["status"].get("recentJobs") or []),
             60, message="the run-now job in status.recentJobs with its result")

    # the same value again, and an unrelated edit: nothing new
    annotate(kube, ns, "adhoc", "first")
    patch(kube, ns, "adhoc", {"spec": {"metadata": [{"name": "touched", "value": "1"}]}})
    wait_for(lambda: condition(get(kube, ns, "adhoc"), "Synced").get("observedGeneration") == 2, 30,
             message="the edit reconciled")
    assert run_now_jobs(batch, schedule_id) == [first]

    # kill -9 while the create of the next one is in flight: Batch creates it, the status never hears of it
    # every Batch request takes 2 s: after the create, the operator's read-back of the job is slow, so there is a
    # window where the job exists in Batch and the status does not know it yet
    fast_batch.faults(latencyMs=2000, rate=0)
    before = len(op.logs())
    annotate(kube, ns, "adhoc", "second")
    wait_for(lambda: "created run-now job" in op.logs()[before:], 60, 0.05, message="the job created")
    op.kill()
    fast_batch.clear_faults()
    second = runnow.job_id(schedule_id, uid, "second")
    assert run_now_jobs(batch, schedule_id) == sorted([first, second])
    assert (get(kube, ns, "adhoc") or {})["status"]["runNow"] == "first"  # the crash came before the status write
    op.start()
    wait_for(lambda: (get(kube, ns, "adhoc") or {}).get("status", {}).get("runNow") == "second", 60,
             message="status.runNow=second after the restart")
    assert run_now_jobs(batch, schedule_id) == sorted([first, second])
    print("create_job requests:", fast_batch.counts().get("create_job"))
    assert fast_batch.count("create_job", 201) == 2
    assert fast_batch.count("create_job", 409) == 1  # the retry after the restart: JobExists, i.e. done
    assert batch.get_job_schedule(schedule_id).execution_info.recent_job is None  # the recurrence untouched


def test_reconcile_policy_annotation_takes_effect_at_once(kube: Any, ns: str) -> None:
    """kopf drops azurebatch.dev/* annotations from its diff; the operator still reacts to them at once."""
    apply(kube, ns, quiet_resource("policy"))
    wait_condition(kube, ns, "policy", "Synced", "True", "Synced", timeout=60)
    kube.kubectl("annotate", "bjs", "policy", "-n", ns, "azurebatch.dev/reconcile-policy=skip", check=True)
    wait_condition(kube, ns, "policy", "Synced", "Unknown", "ReconcileSkipped", timeout=15)
    kube.kubectl("annotate", "bjs", "policy", "-n", ns, "--overwrite", "azurebatch.dev/reconcile-policy=manage",
                 check=True)
    wait_condition(kube, ns, "policy", "Synced", "True", "Synced", timeout=15)


# -- history and status -------------------------------------------------------------------------------------


def test_history_limits_after_several_recurrences_and_the_status_table(kube: Any, ns: str, batch: Any,
                                                                       fast_batch: Any) -> None:
    body = quiet_resource(
        "tidy",
        successfulJobsHistoryLimit=2,
        failedJobsHistoryLimit=1,
        schedule={"recurrenceInterval": "PT5M"},
    )
    task = body["spec"]["jobSpecification"]["jobManagerTask"]
    # every third job fails: job-3, job-6, job-9 ...
    task["commandLine"] = "/bin/bash -c 'n=${AZ_BATCH_JOB_ID##*-}; test $((n % 3)) -ne 0'"
    task["outputFiles"] = [{"filePattern": "../std*.txt",
                            "destination": {"container": {"containerUrl": "http://127.0.0.1:9/devstoreaccount1/logs",
                                                          "path": "tidy"}},
                            "uploadOptions": {"uploadCondition": "taskfailure"}}]
    fast_batch.reset_counts()
    apply(kube, ns, body)
    obj = wait_condition(kube, ns, "tidy", "Ready", "True", "Active", timeout=60)
    schedule_id = obj["status"]["scheduleId"]

    def latest() -> int:
        recent = batch.get_job_schedule(schedule_id).execution_info.recent_job
        return int(recent.id.rsplit("-", 1)[1]) if recent else 0

    wait_for(lambda: latest() >= 9, 90, 0.5, message="nine recurrences")
    patch(kube, ns, "tidy", {"spec": {"suspend": True}})
    wait_for(lambda: batch.get_job_schedule(schedule_id).state == "disabled", 30, message="the schedule disabled")
    last = latest()
    successes = [n for n in range(last, 0, -1) if n % 3][:2]
    failures = [n for n in range(last, 0, -1) if not n % 3][:1]
    expected = sorted(successes + failures)

    def settled() -> bool:
        in_batch = job_numbers([j.id for j in batch.list_jobs_from_schedule(schedule_id)])
        status = (get(kube, ns, "tidy") or {}).get("status") or {}
        shown = [j["id"] for j in status.get("recentJobs") or []]
        return in_batch == expected and job_numbers(shown) == expected and all(
            j.get("result") for j in status["recentJobs"])

    wait_for(settled, 60, 0.5, message=f"Batch and status.recentJobs to keep jobs {expected} of {last}")
    status = get(kube, ns, "tidy")["status"]  # type: ignore[index]
    by_number = {int(j["id"].rsplit("-", 1)[1]): j for j in status["recentJobs"]}
    assert [int(j["id"].rsplit("-", 1)[1]) for j in status["recentJobs"]] == sorted(expected, reverse=True)
    for n, item in by_number.items():
        assert item["result"] == ("failure" if n % 3 == 0 else "success")
        assert item["state"] == "completed" and item["startTime"] and item["endTime"]
        assert item["taskCounts"]["completed"] == 1
        if n % 3 == 0:  # outputs are uploaded on failure only (uploadCondition taskfailure)
            assert item["output"] == {"container": "logs", "path": "tidy",
                                      "url": "http://127.0.0.1:9/devstoreaccount1/logs/tidy"}
        else:
            assert "output" not in item
    counts = {k: v["total"] for k, v in fast_batch.counts().items()}
    print(f"{last} jobs, kept {expected}; Batch requests: {counts}")
    assert counts.get("delete_job", 0) >= last - len(expected) - 1
    assert counts.get("get_job_task_counts", 0) <= 3 * last + 5, counts

    shown = batchop("status", "-n", ns, "--kubeconfig", str(kube.kubeconfig))
    print(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "STATE"]
    assert lines[1].split()[:4] == ["tidy", "True", "disabled", "PT5M"]
    for n in expected:
        row = next(line for line in lines if line.startswith(f"    {schedule_id}:job-{n} "))
        assert ("0/1 succeeded, 1 failed" if n % 3 == 0 else "1/1 succeeded") in row
        assert ("http://127.0.0.1:9/devstoreaccount1/logs/tidy" in row) == (n % 3 == 0)
    everything = batchop("status", "-A", "--kubeconfig", str(kube.kubeconfig), "--no-jobs")
    assert any(line.split()[:2] == [ns, "tidy"] for line in everything.stdout.splitlines())
