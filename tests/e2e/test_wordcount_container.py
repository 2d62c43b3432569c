"""The containerised word count end to end on the local stack, as a user runs it.

The word-count image is built from ``blob/application/Containerfile`` on the local base image
(``devstack.product_images``: built only when the application changed) and carries the name the example
uses, so ``examples/schedule-container.yaml`` is applied unchanged: ``batchop blob sync blob/``, ``kubectl
apply``, then the local Batch service (virtual time 240x) starts a container pool's node, which finds the
image in the local engine, and runs the job manager task in a container. The counts uploaded from it are
the plain sample's (``tests/e2e/test_wordcount.py`` computes them independently of the task's code), the
task reports the container it ran in, and no container is left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from batchwire import containers
from devstack import procs, product_images, stack
from localbatch import container_tasks
from tests.e2e.test_wordcount import LYRICS, output_jobs, parse_tsv, true_counts
from tests.fixtures.operator import resource_namespace, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "schedule-container.yaml"


@pytest.fixture(scope="module")
def wordcount_image(engine: containers.Engine) -> product_images.BuiltImage:
    built = product_images.ensure_wordcount_image()
    print(f"\nword-count image {built.image}: {built.size_mb:g} MB, "
          f"{'built' if built.built else 'cached'} in {built.seconds:g} s")
    return built


@pytest.fixture(scope="module")
def fast_batch(local_batch_factory: Any) -> Any:
    """A local Batch service executing tasks with virtual time 240x (PT4H per real minute)."""
    return local_batch_factory("--time-scale", "240")


@pytest.fixture(scope="module")
def blobs(azurite: Any) -> Iterator[BlobServiceClient]:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


def test_wordcount_container_example_counts_like_the_plain_sample(
    kube: Any, azurite: Any, fast_batch: Any, operator_factory: Any, engine: containers.Engine,
    wordcount_image: product_images.BuiltImage, blobs: BlobServiceClient,
) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    task = document["spec"]["jobSpecification"]["jobManagerTask"]
    assert task["containerSettings"]["imageName"] == product_images.WORDCOUNT_PUBLISHED, \
        "the example names the image the local stack builds"

    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
           "PYTHONPATH": str(REPO / "operator")}
    env.pop("BATCHOP_STORAGE_URL", None)
    synced = subprocess.run([sys.executable, "-m", "batchop", "blob", "sync", str(REPO / "blob")], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert synced.returncode == 0, synced.stderr

    with resource_namespace(kube, "wcc") as namespace:
        operator = operator_factory([namespace], resync=1.0, env={
            "BATCHOP_BATCH_ENDPOINT": fast_batch.endpoint, "BATCHOP_BATCH_ACCOUNT": fast_batch.account,
            "BATCHOP_BATCH_KEY": fast_batch.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
        applied = kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
        assert applied.returncode == 0, applied.stderr

        def resource() -> dict[str, Any]:
            return dict(json.loads(kube.kubectl("get", "bjs", "wordcount-container", "-n", namespace, "-o", "json",
                                                check=True).stdout))

        schedule_id = wait_for(lambda: resource().get("status", {}).get("scheduleId"), 60, message="scheduleId")
        jobs = wait_for(lambda: output_jobs(blobs, schedule_id), 240, 1.0,
                        f"the first job's output; operator log:\n{operator.logs()[-3000:]}\nBatch log:\n"
                        f"{_service_log(fast_batch)}")
        job_id = sorted(jobs)[0]
        assert re.fullmatch(rf"{re.escape(schedule_id)}:job-\d+", job_id), job_id
        assert jobs[job_id] == {"counts.tsv"}, "no start task here: counts only"
        rows = parse_tsv(blobs.get_blob_client("output", f"{schedule_id}/{job_id}/counts.tsv").download_blob()
                         .readall())
        assert dict((w, c) for c, w in rows) == dict(true_counts(LYRICS.read_text()))
        assert rows == sorted(rows, key=lambda r: (-r[0], r[1]))

        with fast_batch.client() as client:
            manager = client.get_task(job_id, task["id"])
        info = manager.execution_info
        assert info.exit_code == 0 and info.result and str(info.result).lower().endswith("success"), info
        assert info.container_info is not None and info.container_info.container_id, \
            "the task ran in a container and Batch reports it"
        obj = wait_for(lambda: (o := resource()) and (o["status"].get("recentJob") or {}).get("result") and o,
                       120, 1.0, "the job's result in status")
        assert obj["status"]["recentJob"]["result"] == "success", obj["status"]
        kube.kubectl("delete", "bjs", "wordcount-container", "-n", namespace, "--wait=true", "--timeout=60s")

    service_id = container_tasks.service_id(Path(fast_batch.work_dir) / "nodes")  # its --work-dir
    wait_for(lambda: not containers.list_labelled(engine, service_id), 60, 1.0,
             "the job's containers to be removed with its pool")


def _service_log(batch: Any) -> str:
    path = Path(batch.work_dir) / "service.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def test_demo_with_containers_prints_the_counts_and_leaves_nothing(
    tmp_path: Path, engine: containers.Engine, wordcount_image: product_images.BuiltImage
) -> None:
    """``batchop demo --containers --once``: the containerised sample through the README's demo, on its own
    stack: the table shows the container schedule Ready with a successful job, the counts are printed, and no
    process or container of that stack is left."""
    state = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "batchop", "demo", "--containers", "--once", "--dir", str(state),
                             "--timeout", "240"], capture_output=True, text=True, timeout=400, check=False)
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"image {product_images.WORDCOUNT_IMAGE} = {product_images.WORDCOUNT_PUBLISHED}" in result.stdout
        assert re.search(r"^wordcount-container\s+True\s+True\s+active\s.*\ssuccess\s", result.stdout, re.MULTILINE), \
            result.stdout
        lines = [line for line in result.stdout.splitlines() if re.fullmatch(r"\d+\t[a-z']+", line)]
        expected = true_counts(LYRICS.read_text())
        assert lines and all(expected[w] == int(c) for c, w in (line.split("\t") for line in lines)), lines
        assert lines[0] == f"{expected['the']}\tthe"
    finally:
        leftovers = [r for r in procs.records(state) if r.alive]
        for record in leftovers:
            procs.stop(state, record)
    assert leftovers == [], "the demo left processes running"
    service_id = container_tasks.service_id(state.resolve() / stack.BATCH / "work")
    assert containers.list_labelled(engine, service_id) == [], "the demo's stack left containers"
