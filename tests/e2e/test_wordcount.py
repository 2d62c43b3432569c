"""The seed's word count end to end on the local stack, as a user runs it.

``batchop blob sync blob/``, ``kubectl apply -f examples/schedule.yaml``, then two recurrences of the PT4H
schedule under a Batch time scale of 240 (one real minute each): every job's output lands in the output
container under its own job id, with the right counts (computed here independently of the task's code).

A second schedule with a short ``sasLifetime`` (Batch at real time, PT1M recurrence) shows the operator
renewing the SAS before it could expire under a job, Azurite refusing the first SAS once it expired, and a
later job succeeding with the renewed one.

Real parts only: kube-apiserver + kubectl, the operator process, the local Batch service executing the
sample's bash/python tasks, Azurite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from tests.fixtures.operator import wait_for

REPO = Path(__file__).resolve().parents[2]
LYRICS = REPO / "blob" / "input" / "the_star_spangled_banner.txt"
NAMESPACE = "wordcount-e2e"


def true_counts(text: str) -> Counter[str]:
    """Word counts computed without the task's code: split on anything but letters and apostrophes, then
    trim apostrophes at the ends ("'Tis" -> "tis", "footsteps'" -> "footsteps", "o'er" stays)."""
    counts: Counter[str] = Counter()
    for token in re.split(r"[^a-z']+", text.lower()):
        word = token.strip("'")
        if word:
            counts[word] += 1
    return counts


def parse_tsv(data: bytes) -> list[tuple[int, str]]:
    rows = []
    for line in data.decode().splitlines():
        count, word = line.split("\t")
        rows.append((int(count), word))
    return rows


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


@pytest.fixture(scope="module")
def namespace(kube: Any) -> str:
    kube.kubectl("create", "namespace", NAMESPACE)
    return NAMESPACE


@pytest.fixture
def test_operator(kube: Any, namespace: str, operator_factory: Any) -> Iterator[Any]:
    """``operator_factory`` for one test: when the test ends, passed or failed, its resources are deleted
    while its operators still run (so their finalizers are released) and then its operators stop. A failed
    test must not leave an operator bound to its Batch service reconciling the next test's resources."""
    started: list[Any] = []

    def factory(*args: Any, **kwargs: Any) -> Any:
        started.append(operator_factory(*args, **kwargs))
        return started[-1]

    yield factory
    kube.kubectl("delete", "bjs", "--all", "-n", namespace, "--wait=true", "--timeout=90s")
    for operator in started:
        operator.stop()


def batchop(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", "--log-format", "text", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def bjs(kube: Any, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "bjs", name, "-n", NAMESPACE, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


OUTPUTS = {"counts.tsv", "node-info.txt"}
"""What each job of examples/schedule.yaml uploads (its jobManagerTask's outputFiles)."""


def output_jobs(blobs: BlobServiceClient, schedule_id: str) -> dict[str, set[str]]:
    """Job id -> files found under output/<scheduleId>/<jobId>/."""
    found: dict[str, set[str]] = {}
    for blob in blobs.get_container_client("output").list_blobs(name_starts_with=f"{schedule_id}/"):
        _, job_id, name = blob.name.split("/", 2)
        found.setdefault(job_id, set()).add(name)
    return found


def no_secret_anywhere(kube: Any, name: str) -> None:
    status = json.dumps(bjs(kube, name).get("status", {}))
    events = kube.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    for text in (status, events):
        assert "sig=" not in text and "AccountKey" not in text, "a SAS or key leaked into status or events"


def job_spec_urls(batch: Any, schedule_id: str) -> list[str]:
    with batch.client() as client:
        schedule = client.get_job_schedule(schedule_id)
        manager = schedule.job_specification.job_manager_task
        start = schedule.job_specification.pool_info.auto_pool_specification.pool.start_task
        urls = [rf.http_url or rf.storage_container_url for rf in manager.resource_files]
        urls += [rf.http_url for rf in start.resource_files]
        urls += [of.destination.container.container_url for of in manager.output_files]
        return urls


@pytest.fixture(scope="module")
def fast_batch(local_batch_factory: Any) -> Any:
    """A local Batch service executing tasks with virtual time 240x (PT4H per real minute)."""
    return local_batch_factory("--time-scale", "240")


@pytest.fixture(scope="module")
def realtime_batch(local_batch_factory: Any) -> Any:
    """A local Batch service executing tasks at real time (SAS expiry is real time in Azurite)."""
    return local_batch_factory()


def operator_env(batch: Any, azurite: Any) -> dict[str, str]:
    return {"BATCHOP_BATCH_ENDPOINT": batch.endpoint, "BATCHOP_BATCH_ACCOUNT": batch.account,
            "BATCHOP_BATCH_KEY": batch.key, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}


@pytest.mark.parametrize("example", ["schedule.yaml", "schedule-container.yaml"])
def test_examples_are_accepted_by_the_api_server_and_validation(kube: Any, namespace: str, example: str) -> None:
    from batchop.spec import validation

    path = REPO / "examples" / example
    result = kube.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert validation.validate(yaml.safe_load(path.read_text())["spec"]) == []


def test_wordcount_two_recurrences_each_job_output_under_its_job_id(
    kube: Any, azurite: Any, fast_batch: Any, test_operator: Any, namespace: str, env: dict[str, str],
    blobs: BlobServiceClient,
) -> None:
    synced = batchop(env, "blob", "sync", str(REPO / "blob"))
    assert synced.returncode == 0, synced.stderr
    operator = test_operator([namespace], resync=1.0, env=operator_env(fast_batch, azurite))

    applied = kube.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "schedule.yaml"))
    assert applied.returncode == 0, applied.stderr
    schedule_id = wait_for(lambda: bjs(kube, "wordcount").get("status", {}).get("scheduleId"), 60,
                           message="status.scheduleId")

    def two_jobs_uploaded() -> dict[str, set[str]] | None:
        # a task's output files land one after the other: wait for both of each of the first two jobs
        found = output_jobs(blobs, schedule_id)
        first_two = sorted(found)[:2]
        return found if len(first_two) == 2 and all(found[j] >= OUTPUTS for j in first_two) else None

    jobs = wait_for(two_jobs_uploaded, 240, interval=1.0,
                    message=lambda: f"outputs of two jobs of {schedule_id}; found {output_jobs(blobs, schedule_id)}; "
                                    f"operator log:\n{operator.logs()[-5000:]}")
    expected = true_counts(LYRICS.read_text())
    pools = set()
    for job_id in sorted(jobs)[:2]:
        assert re.fullmatch(rf"{re.escape(schedule_id)}:job-\d+", job_id), job_id
        assert jobs[job_id] == OUTPUTS
        rows = parse_tsv(blobs.get_blob_client("output", f"{schedule_id}/{job_id}/counts.tsv").download_blob()
                         .readall())
        assert dict((w, c) for c, w in rows) == dict(expected), f"wrong counts in {job_id}"
        assert rows == sorted(rows, key=lambda r: (-r[0], r[1])), "not sorted by frequency, then word"
        assert rows[0] == (expected["the"], "the")
        node_info = blobs.get_blob_client("output", f"{schedule_id}/{job_id}/node-info.txt").download_blob()
        info = dict(line.split("=", 1) for line in node_info.readall().decode().splitlines())
        assert info["greeting"] == "Chao", "the pool's start task ran with its environment settings"
        pools.add(info["pool"])
    assert len(pools) == 2, "poolLifetimeOption job: each job ran on its own auto pool"

    status = bjs(kube, "wordcount")["status"]
    expires = datetime.fromisoformat(status["sas"]["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7), "default sasLifetime P7D"
    permissions = {re.search(r"[?&]sp=([a-z]+)", url).group(1) for url in job_spec_urls(fast_batch, schedule_id)}
    assert permissions == {"r", "rl", "cw"}
    no_secret_anywhere(kube, "wordcount")
    assert "sig=" not in operator.logs()
    assert f"{namespace}/wordcount: SAS renewal" not in operator.logs(), "a P7D SAS needs no renewal yet"

    printed = batchop(env, "blob", "get", f"output/{schedule_id}/{sorted(jobs)[0]}/counts.tsv")
    assert printed.returncode == 0 and printed.stdout.splitlines()[0] == f"{expected['the']}\tthe"
    deleted = kube.kubectl("delete", "-n", namespace, "-f", str(REPO / "examples" / "schedule.yaml"),
                           "--wait=true", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr


def _status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"x-ms-version": "2021-08-06"}), timeout=10):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def test_short_sas_lifetime_is_renewed_before_a_job_could_outlive_it(
    kube: Any, azurite: Any, realtime_batch: Any, test_operator: Any, namespace: str, env: dict[str, str],
    blobs: BlobServiceClient,
) -> None:
    assert batchop(env, "blob", "sync", str(REPO / "blob")).returncode == 0
    operator = test_operator([namespace], resync=1.0, env=operator_env(realtime_batch, azurite))
    document = yaml.safe_load((REPO / "examples" / "schedule.yaml").read_text())
    document["metadata"]["name"] = "wordcount-short-sas"
    spec = document["spec"]
    # one job a minute (Batch's minimum), each bounded to 20 s: a SAS must outlive 60 + 20 s + 30 s margin;
    # 115 s is just enough, so the operator must renew after every job for the next one to work.
    spec["schedule"] = {"recurrenceInterval": "PT1M"}
    spec["jobSpecification"]["constraints"]["maxWallClockTime"] = "PT20S"
    spec["storage"] = {"sasLifetime": "PT1M55S"}
    applied = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    assert applied.returncode == 0, applied.stderr

    name = "wordcount-short-sas"
    schedule_id = wait_for(lambda: bjs(kube, name).get("status", {}).get("scheduleId"), 60, message="scheduleId")
    first_expiry_text = wait_for(lambda: bjs(kube, name).get("status", {}).get("sas", {}).get("expiresAt"), 30,
                                 message="status.sas.expiresAt")
    first_expiry = datetime.fromisoformat(first_expiry_text.replace("Z", "+00:00"))
    first_urls = job_spec_urls(realtime_batch, schedule_id)
    task_url = first_urls[0]
    assert _status_code(task_url) == 200

    # the operator renews (a new expiresAt, new SAS in Batch) before the first SAS expires
    renewed_text = wait_for(
        lambda: (e := bjs(kube, name).get("status", {}).get("sas", {}).get("expiresAt")) != first_expiry_text and e,
        100, interval=1.0, message=lambda: f"SAS renewal; operator log:\n{operator.logs()[-3000:]}",
    )
    assert datetime.now(UTC) < first_expiry, "renewed before the first SAS expired"
    assert datetime.fromisoformat(renewed_text.replace("Z", "+00:00")) > first_expiry
    assert job_spec_urls(realtime_batch, schedule_id)[0] != task_url, "Batch holds the renewed SAS"

    # the first SAS expires and Azurite refuses it ...
    wait_for(lambda: datetime.now(UTC) > first_expiry + timedelta(seconds=2), 130, interval=1.0,
             message="first SAS expiry")
    assert _status_code(task_url) == 403, "Azurite must refuse an expired SAS"

    # ... and a job created after that still succeeds, with outputs under its own job id
    expired_at = first_expiry

    def later_job_output() -> str | None:
        with realtime_batch.client() as client:
            for job in client.list_jobs_from_schedule(schedule_id):
                created = job.creation_time
                if created and created > expired_at and str(job.state) in ("completed", "BatchJobState.COMPLETED"):
                    if "counts.tsv" in output_jobs(blobs, schedule_id).get(job.id, set()):
                        return job.id
        return None

    job_id = wait_for(
        later_job_output, 120, interval=2.0,
        message=lambda: f"a completed job created after the first SAS expired; log:\n{operator.logs()[-3000:]}",
    )
    rows = parse_tsv(blobs.get_blob_client("output", f"{schedule_id}/{job_id}/counts.tsv").download_blob().readall())
    assert dict((w, c) for c, w in rows) == dict(true_counts(LYRICS.read_text()))
    no_secret_anywhere(kube, name)
    logs = operator.logs()
    assert "sig=" not in logs
    # renewal is one PATCH per job that needed it, never a loop (the operator checks every second)
    renewals = logs.count(f"{namespace}/{name}: SAS renewal")
    with realtime_batch.client() as client:
        jobs_created = len(list(client.list_jobs_from_schedule(schedule_id)))
    assert 1 <= renewals <= jobs_created + 1, (renewals, jobs_created)
    deleted = kube.kubectl("delete", "bjs", name, "-n", namespace, "--wait=true", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
