"""A container task whose image does not exist: Batch's code, the image's name, in status, Event and logs.

Real parts: kube-apiserver and the real kubectl, the operator process, the local Batch service running
container tasks on the local engine (podman here). The schedule's job manager task names an image that is
neither in the engine nor pullable (no registry is reachable, and the name is made up): the task fails as
Azure fails it (``usererror`` / ``ContainerInvalidImage``, no exit code, not retried), and the resource says
so where a user looks: ``status.recentJob.failedTasks``, the ``JobFailed`` Warning Event and the Argo CD health
message all carry the code and the image's name. No container is left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchwire import containers
from localbatch import container_tasks
from tests.e2e.test_logs import add_secret, apply, bjs, finished_job, schedule
from tests.fixtures.operator import wait_for

MISSING = "localhost/batchop-no-such-image:404"


@pytest.fixture(scope="module")
def batch(local_batch_factory: Any, engine: containers.Engine) -> Any:
    return local_batch_factory()


@pytest.fixture(scope="module")
def namespace(kube: Any, operator_factory: Any, batch: Any) -> Iterator[str]:
    name = f"badimage-{os.getpid()}"
    kube.kubectl("create", "namespace", name, check=True)
    add_secret(kube, name, batch)
    operator_factory([name], resync=1.0, default_account=False)
    yield name
    kube.kubectl("delete", "bjs", "--all", "-n", name, "--wait=true", "--timeout=60s")
    kube.kubectl("delete", "namespace", name, "--wait=false")


def test_container_image_missing_is_named_in_status_event_and_health(
    kube: Any, batch: Any, namespace: str, engine: containers.Engine
) -> None:
    body = schedule("missing-image", batch, "/bin/sh -c 'echo never runs'")
    job_spec = body["spec"]["jobSpecification"]
    job_spec["jobManagerTask"]["containerSettings"] = {"imageName": MISSING}
    job_spec["poolInfo"]["autoPoolSpecification"]["pool"]["virtualMachineConfiguration"][
        "containerConfiguration"] = {"type": "dockerCompatible"}
    apply(kube, namespace, body)

    job = finished_job(kube, namespace, "missing-image", "failure")
    [task] = job["failedTasks"]
    assert "exitCode" not in task, "no process ran"
    failure = task["failureInfo"]
    assert (failure["category"], failure["code"]) == ("usererror", "ContainerInvalidImage"), task
    assert MISSING in failure["message"], "the status names the image"
    assert not task.get("retryCount"), "a pre-processing error is not retried"

    def failed_event() -> str | None:
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "--field-selector", "reason=JobFailed",
                                         "-o", "json", check=True).stdout)["items"]
        return next((e["message"] for e in events if e["involvedObject"]["name"] == "missing-image"), None)

    message = wait_for(failed_event, 30, message="the JobFailed Event")
    assert message.startswith(f"job {job['id']} failed: task wordcount failed: ContainerInvalidImage: "), message
    assert MISSING in message

    from tests.unit.test_health_lua import health  # the Argo CD script, run by a real Lua 5.1

    state, health_message = health(bjs(kube, namespace, "missing-image"))
    assert state == "Degraded" and "ContainerInvalidImage" in health_message and MISSING in health_message

    service_id = container_tasks.service_id(Path(batch.work_dir) / "nodes")
    assert containers.list_labelled(engine, service_id) == [], "no container was left for the failed task"
