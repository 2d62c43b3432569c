"""The fan-out word count (examples/schedule-fanout.yaml) end to end on the local stack, as a user runs it.

``batchop blob sync blob/``, more input blobs (and one that is not text), ``kubectl apply -f
examples/schedule-fanout.yaml`` to a running operator: Batch creates the job on a pool of 3 nodes with 2 slots
each; the job preparation task stages the scripts on every node that runs a task; the job manager lists the input
container and adds a map task per blob and a reduce task depending on them all; the bad input is skipped by the
map tasks' exit conditions; the reduce merges the counts into one output blob; the job ends when all tasks have
completed and the release task cleans every node. The merged counts are checked against counts computed here,
independently of the tasks' code; the job, its tasks and nodes through the SDK; the resource's status and Events
through kubectl.

Real parts only: kube-apiserver + kubectl, the operator process, the local Batch service executing the tasks,
Azurite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from tests.fixtures.operator import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "schedule-fanout.yaml"
NAMESPACE = "fanout-e2e"
NAME = "wordcount-fanout"
EXTRA_INPUTS = {
    "generated/one.txt": "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.\n" * 3,
    "generated/two.txt": "It's a truth universally acknowledged, that a single man in possession of a good fortune\n",
    "generated/three.txt": "Ring-a-ring o' roses, a pocket full of posies. 'Tis the season!\n" * 5,
}
BAD_INPUT = "generated/not-text.bin"


def true_counts(texts: list[str]) -> Counter[str]:
    """Word counts computed without the tasks' code: split on anything but letters and apostrophes, then trim
    apostrophes at the ends ("'Tis" -> "tis", "o'" -> "o", "doesn't" stays)."""
    counts: Counter[str] = Counter()
    for text in texts:
        for token in re.split(r"[^a-z']+", text.lower()):
            word = token.strip("'")
            if word:
                counts[word] += 1
    return counts


@pytest.fixture(scope="module")
def env(azurite: Any) -> dict[str, str]:
    environment = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
                   "PYTHONPATH": str(REPO / "operator")}
    environment.pop("BATCHOP_STORAGE_URL", None)
    return environment


@pytest.fixture(scope="module")
def blobs(azurite: Any) -> Iterator[BlobServiceClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


def bjs(kube: Any) -> dict[str, Any]:
    result = kube.kubectl("get", "bjs", NAME, "-n", NAMESPACE, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def val(value: Any) -> Any:
    return getattr(value, "value", value)


def test_example_is_accepted_by_the_api_server_and_validation(kube: Any) -> None:
    from batchop.spec import validation

    kube.kubectl("create", "namespace", NAMESPACE)
    result = kube.kubectl("apply", "-n", NAMESPACE, "--dry-run=server", "-f", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert validation.validate(yaml.safe_load(EXAMPLE.read_text())["spec"]) == []


def test_fanout_counts_every_input_skips_the_bad_one_and_merges_into_one_blob(
    kube: Any, azurite: Any, local_batch_factory: Any, operator_factory: Any, env: dict[str, str],
    blobs: BlobServiceClient,
) -> None:
    synced = subprocess.run([sys.executable, "-m", "batchop", "blob", "sync", str(REPO / "blob")], env=env,
                            text=True, capture_output=True, timeout=120, check=False)
    assert synced.returncode == 0, synced.stderr
    inputs = blobs.get_container_client("fanout-input")
    for name, text in EXTRA_INPUTS.items():
        inputs.upload_blob(name, text.encode(), overwrite=True)
    inputs.upload_blob(BAD_INPUT, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", overwrite=True)
    texts = [(REPO / "blob" / "fanout-input" / p.name).read_text() for p in (REPO / "blob" / "fanout-input").iterdir()]
    texts += list(EXTRA_INPUTS.values())
    good = len(texts)

    batch = local_batch_factory()
    operator = operator_factory([NAMESPACE], resync=1.0, env={
        "BATCHOP_BATCH_ENDPOINT": batch.endpoint, "BATCHOP_BATCH_ACCOUNT": batch.account,
        "BATCHOP_BATCH_KEY": batch.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    applied = kube.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    schedule_id = wait_for(lambda: bjs(kube).get("status", {}).get("scheduleId"), 60, message="scheduleId")
    job_id = f"{schedule_id}:job-1"

    output = blobs.get_container_client("output")
    prefix = f"{schedule_id}/{job_id}/"
    wait_for(lambda: {"counts.tsv", "summary.json", "manifest.json"} <= {
        b.name[len(prefix):] for b in output.list_blobs(name_starts_with=prefix)}, 240, interval=1.0,
        message=lambda: f"merged output under {prefix}; operator log:\n{operator.logs()[-3000:]}")

    rows = [line.split("\t") for line in output.download_blob(prefix + "counts.tsv").readall().decode().splitlines()]
    merged = {word: int(count) for count, word in rows}
    assert merged == dict(true_counts(texts)), "merged counts equal the independent count of the good inputs"
    assert [int(c) for c, _ in rows] == sorted((int(c) for c, _ in rows), reverse=True)
    summary = json.loads(output.download_blob(prefix + "summary.json").readall())
    assert summary["skipped"] == [BAD_INPUT] and len(summary["counted"]) == good
    assert summary["inputs"] == good + 1 and summary["api"] == "rest", "the node's python3 has no SDK: REST"

    with batch.client() as client:
        job = wait_for(lambda: (j := client.get_job(job_id)) and val(j.state) == "completed" and j, 120,
                       message="job completed")
        staging = client.get_job_schedule(schedule_id).job_specification.job_preparation_task.resource_files
        assert {(f.file_path, (f.http_url or "").split("?")[0]) for f in staging} == {
            (name, f"{azurite.blob_endpoint}/application/{name}") for name in ("fanout.py", "wordcount.py")
        }, "the preparation task's blob references reached Batch as SAS URLs"
        for staged_file in staging:
            query = parse_qs(urlsplit(staged_file.http_url or "").query)
            assert query["sp"] == ["r"] and query["sig"], "a read-only SAS"
        assert job.execution_info.termination_reason == "AllTasksComplete"
        tasks = list(client.list_tasks(job_id))
        maps = [t for t in tasks if t.id.startswith("map-")]
        assert len(maps) == good + 1 and {t.display_name for t in maps} >= {BAD_INPUT, *EXTRA_INPUTS}
        bad = next(t for t in maps if t.display_name == BAD_INPUT)
        assert bad.execution_info.exit_code == 3 and val(bad.execution_info.result) == "failure"
        reduce = next(t for t in tasks if t.id == "reduce")
        assert reduce.execution_info.start_time >= max(t.execution_info.end_time for t in maps)
        counts = client.get_job_task_counts(job_id).task_counts
        assert (counts.completed, counts.succeeded, counts.failed) == (good + 3, good + 2, 1)
        nodes_used = {t.node_info.node_id for t in tasks}
        assert len(nodes_used) >= 2, "the map tasks spread over the pool's nodes"
        statuses = list(client.list_job_preparation_and_release_task_status(job_id))
        assert {s.node_id for s in statuses} == nodes_used
        for status in statuses:
            assert val(status.job_preparation_task_execution_info.result) == "success"
            assert val(status.job_release_task_execution_info.result) == "success"
            staged = Path(batch.info()["workDir"]) / "nodes" / status.node_id / "workitems" / job_id / "job-1" / "stage"
            assert not (staged / "wd").exists(), "the release task removed the staged scripts"

    def recorded() -> dict[str, Any] | None:
        recent = bjs(kube).get("status", {}).get("recentJob") or {}
        return recent if recent.get("id") == job_id and recent.get("state") == "completed" else None

    recent = wait_for(recorded, 60, message="status.recentJob completed")
    assert recent["taskCounts"] == {"active": 0, "running": 0, "completed": good + 3, "succeeded": good + 2,
                                    "failed": 1}
    assert recent["terminateReason"] == "AllTasksComplete"
    assert recent["result"] == "success", "the skipped bad input is a failed task its exit conditions let through"
    kept = wait_for(lambda: next((j for j in bjs(kube).get("status", {}).get("recentJobs") or []
                                  if j.get("id") == job_id and j.get("result")), None), 60, message="recentJobs")
    assert kept["result"] == "success" and kept["taskCounts"] == recent["taskCounts"], "history keeps the counts"
    shown = subprocess.run([sys.executable, "-m", "batchop", "status", "-n", NAMESPACE, "--kubeconfig",
                            str(kube.kubeconfig)], env=env, text=True, capture_output=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"{good + 2}/{good + 3} succeeded, 1 failed" in shown.stdout, shown.stdout
    events = kube.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    messages = [e.get("message", "") for e in json.loads(events)["items"]]
    assert f"job {job_id} succeeded ({good + 3} tasks, 1 failed)" in messages, messages
    kube.kubectl("delete", "-n", NAMESPACE, "-f", str(EXAMPLE), "--wait=true", "--timeout=60s")
    operator.stop()
