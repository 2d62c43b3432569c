"""Tasks on nodes in the local Batch service, with the unmodified azure-batch SDK: job preparation and release
tasks, task slots, ``maxParallelTasks``, ``retentionTime``, and a task calling the Batch API with its node's
identity (API 2025-06-01 has no task authentication token any more).

- the preparation task runs on each node before the first task of the job there (tasks see what it staged);
  the release task runs on every node that ran it when the job ends; both are reported by
  ``list_job_preparation_and_release_task_status``; a failed preparation with ``waitForSuccess`` keeps the
  job's tasks off that node, without ``waitForSuccess`` tasks run anyway;
- ``requiredSlots`` share a node up to ``taskSlotsPerNode``; a task needing more than a node has never runs;
  ``maxParallelTasks: 1`` runs one task at a time;
- a completed task's directory is deleted once its ``retentionTime`` has passed;
- a job manager task gets a token from its node's identity endpoint (plain HTTP, the standard library) and
  adds tasks; the SDK's ``ManagedIdentityCredential`` does the same from outside a task.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from tests.integration.fanout_helpers import (
    completed,
    end_job,
    held_job,
    job_completed,
    new_job,
    release,
    state,
    task,
    val,
    wait_for,
)

PREP = ("echo prepared-$AZ_BATCH_NODE_ID > $AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID; "
        "echo run >> $AZ_BATCH_NODE_SHARED_DIR/prep-runs-$AZ_BATCH_JOB_ID")
RELEASE = ("rm $AZ_BATCH_NODE_SHARED_DIR/prep-$AZ_BATCH_JOB_ID; "
           "echo released > $AZ_BATCH_NODE_SHARED_DIR/released-$AZ_BATCH_JOB_ID")


def work_dir(service: Any) -> Path:
    return Path(service.info()["workDir"])


def intervals(client: Any, job_id: str, ids: list[str]) -> list[tuple[datetime, datetime]]:
    tasks = [client.get_task(job_id, i).execution_info for i in ids]
    return [(t.start_time, t.end_time) for t in tasks]


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of spans that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def test_preparation_before_each_nodes_first_task_and_release_at_the_end(batch_client: Any, local_batch: Any) -> None:
    job_id = held_job(batch_client, "prep", nodes=2, slots=2, onAllTasksComplete="terminatejob",
                      jobPreparationTask={"commandLine": f"/bin/bash -c '{PREP}'"},
                      jobReleaseTask={"commandLine": f"/bin/bash -c '{RELEASE}'"})
    batch_client.create_tasks(job_id, [
        task(f"t{i}", f"grep -q prepared-$AZ_BATCH_NODE_ID $AZ_BATCH_NODE_SHARED_DIR/prep-{job_id}; sleep 1")
        for i in range(6)])
    release(batch_client, job_id)
    job = wait_for(lambda: job_completed(batch_client, job_id), what="job complete")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    results = {t.id: val(t.execution_info.result) for t in batch_client.list_tasks(job_id) if t.id != "hold"}
    assert set(results.values()) == {"success"}, "every task saw the preparation's file"

    statuses = list(batch_client.list_job_preparation_and_release_task_status(job_id))
    ran = [t for t in batch_client.list_tasks(job_id) if t.node_info is not None]  # "hold" may never have run
    nodes = {t.node_info.node_id for t in ran}
    assert {s.node_id for s in statuses} == nodes and len(nodes) == 2, "spread over both nodes"
    for status in statuses:
        prep, rel = status.job_preparation_task_execution_info, status.job_release_task_execution_info
        assert val(prep.state) == "completed" and val(prep.result) == "success" and prep.exit_code == 0
        assert val(rel.state) == "completed" and val(rel.result) == "success"
        assert rel.start_time >= prep.end_time and prep.task_root_directory.endswith("/jobpreparation")
        shared = work_dir(local_batch) / "nodes" / status.node_id / "shared"
        assert (shared / f"prep-runs-{job_id}").read_text().count("run") == 1, "once per node"
        assert not (shared / f"prep-{job_id}").exists() and (shared / f"released-{job_id}").exists()
        first = min(t.execution_info.start_time for t in ran if t.node_info.node_id == status.node_id)
        assert prep.end_time <= first, "the preparation ended before the node's first task started"
    assert job.execution_info.end_time >= max(s.job_release_task_execution_info.end_time for s in statuses)


def test_failed_preparation_keeps_tasks_off_the_node_unless_not_waited_for(batch_client: Any) -> None:
    waited = new_job(batch_client, "pfail", jobPreparationTask={"commandLine": "/bin/bash -c 'exit 2'"})
    loose = new_job(batch_client, "ploose", jobPreparationTask={"commandLine": "/bin/bash -c 'exit 2'",
                                                                 "waitForSuccess": False})
    try:
        batch_client.create_task(waited, task("t", "true"))
        batch_client.create_task(loose, task("t", "true"))
        wait_for(lambda: completed(batch_client, loose, "t"), what="task despite a failed preparation")
        status = wait_for(lambda: [s for s in batch_client.list_job_preparation_and_release_task_status(waited)
                                   if s.job_preparation_task_execution_info and
                                   val(s.job_preparation_task_execution_info.state) == "completed"],
                          what="preparation completed")[0]
        info = status.job_preparation_task_execution_info
        assert val(info.result) == "failure" and info.exit_code == 2
        assert info.failure_info.code == "FailureExitCode"
        assert state(batch_client, waited, "t") == "active", "no task of the job on a node whose preparation failed"
    finally:
        end_job(batch_client, waited)
        end_job(batch_client, loose)


def test_slots_per_node_a_task_too_big_for_any_node_and_max_parallel_tasks(batch_client: Any) -> None:
    shared = new_job(batch_client, "slots", nodes=1, slots=2)
    serial = new_job(batch_client, "serial", nodes=1, slots=4, maxParallelTasks=1)
    try:
        batch_client.create_tasks(shared, [task(f"s{i}", "sleep 2") for i in range(4)]
                                  + [task("big", "true", requiredSlots=3), task("two", "sleep 1", requiredSlots=2)])
        batch_client.create_tasks(serial, [task(f"p{i}", "sleep 1") for i in range(3)])
        wait_for(lambda: completed(batch_client, shared, "s0", "s1", "s2", "s3", "two"), 90, what="slot tasks")
        wait_for(lambda: completed(batch_client, serial, "p0", "p1", "p2"), 90, what="serial tasks")
        assert most_at_once(intervals(batch_client, shared, [f"s{i}" for i in range(4)])) == 2
        two = intervals(batch_client, shared, ["two"])[0]
        others = intervals(batch_client, shared, [f"s{i}" for i in range(4)])
        assert all(e <= two[0] or s >= two[1] for s, e in others), "a 2-slot task had the node to itself"
        assert state(batch_client, shared, "big") == "active", "3 slots never fit a 2-slot node"
        assert most_at_once(intervals(batch_client, serial, ["p0", "p1", "p2"])) == 1
    finally:
        end_job(batch_client, shared)
        end_job(batch_client, serial)


def test_retention_time_deletes_the_task_directory(batch_client: Any, local_batch: Any) -> None:
    job_id = new_job(batch_client, "keep")
    try:
        batch_client.create_tasks(job_id, [task("short", "echo x > f", constraints={"retentionTime": "PT2S"}),
                                           task("long", "echo x > f")])
        wait_for(lambda: completed(batch_client, job_id, "short", "long"), what="tasks")
        node = batch_client.get_task(job_id, "short").node_info.node_id
        root = work_dir(local_batch) / "nodes" / node / "workitems" / job_id / "job-1"
        wait_for(lambda: not (root / "short").exists(), 30, what="the short task's directory deleted")
        assert (root / "long" / "wd" / "f").exists(), "the default retention (P7D) keeps the other"
        with pytest.raises(HttpResponseError) as caught:
            list(batch_client.list_task_files(job_id, "short"))
        assert caught.value.error.code == "TaskFilesCleanedup"
    finally:
        end_job(batch_client, job_id)


ADD_TASK_SCRIPT = r"""
import json, os, urllib.request
host = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://169.254.169.254")
query = "api-version=2018-02-01&resource=https://batch.core.windows.net/"
request = urllib.request.Request(f"{host}/metadata/identity/oauth2/token?{query}", headers={"Metadata": "true"})
token = json.load(urllib.request.urlopen(request))["access_token"]
url = os.environ["AZ_BATCH_ACCOUNT_URL"] + "/jobs/" + os.environ["AZ_BATCH_JOB_ID"] + "/tasks?api-version=2025-06-01"
body = json.dumps({"id": "child", "commandLine": "/bin/true"}).encode()
add = urllib.request.Request(url, data=body, method="POST", headers={
    "Authorization": "Bearer " + token, "Content-Type": "application/json; odata=minimalmetadata"})
print(urllib.request.urlopen(add).status)
print(os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
"""


def test_a_task_adds_tasks_with_its_nodes_identity(batch_client: Any, local_batch: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    script = ADD_TASK_SCRIPT.replace("'", "'\"'\"'")
    job_id = new_job(batch_client, "ident", jobManagerTask={
        "id": "jm", "commandLine": f"/usr/bin/env python3 -c '{script}'", "killJobOnCompletion": False})
    try:
        wait_for(lambda: completed(batch_client, job_id, "jm"), what="job manager")
        out = b"".join(batch_client.download_task_file(job_id, "jm", "stdout.txt")).decode().split()
        assert out[0] == "201", b"".join(batch_client.download_task_file(job_id, "jm", "stderr.txt"))
        wait_for(lambda: completed(batch_client, job_id, "child"), what="the task the job manager added")
        assert val(batch_client.get_task(job_id, "child").execution_info.result) == "success"

        # the SDK from the same node identity: azure-identity's ManagedIdentityCredential, unchanged
        from azure.batch import BatchClient
        from azure.identity import ManagedIdentityCredential

        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", out[1])
        monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
        monkeypatch.delenv("MSI_ENDPOINT", raising=False)
        with ManagedIdentityCredential() as credential, BatchClient(local_batch.endpoint, credential) as client:
            client.create_task(job_id, task("sdk-child", "true"), enforce_https=False)
            assert [t.id for t in client.list_tasks(job_id, enforce_https=False)] == ["child", "jm", "sdk-child"]
        assert os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") == out[1]
    finally:
        end_job(batch_client, job_id)


def test_identity_endpoint_needs_metadata_header_and_a_real_grant(local_batch: Any) -> None:
    import json
    import urllib.error
    import urllib.request

    url = f"{local_batch.endpoint}/_emulator/imds/forged.grant/metadata/identity/oauth2/token?resource=x"
    for headers, expected in (({}, "Required metadata header not specified"), ({"Metadata": "true"},
                                                                                "Identity not found")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers))
        assert caught.value.code == 400 and json.load(caught.value)["error_description"] == expected
    request = urllib.request.Request(f"{local_batch.endpoint}/jobs?api-version=2025-06-01",
                                     headers={"Authorization": "Bearer lbmi.e30.forged"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 403 and json.load(caught.value)["code"] == "AuthenticationFailed"
