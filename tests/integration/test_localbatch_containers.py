"""The local Batch service runs container tasks as Azure Batch does, on this machine's real engine.

Through the unmodified SDK over HTTP, against ``python -m localbatch`` and the engine that
:func:`devstack.images.ensure_engine` finds or installs (podman here, with the flags it detected), with the
busybox image built locally (:func:`devstack.images.ensure_busybox`; no registry is needed): a task runs in
the image with a resource file in and an output file out, sees Batch's variables and directories; a start
task runs in a container too; an image that cannot be had, run options that leave the sandbox and settings
that do not fit the pool fail as Azure fails them; a pool whose image cannot be fetched gets ``unusable``
nodes and its job waits. After every test no container of the service is left (listed by its label), also
after a wall-clock limit, a job terminate, a pool deletion, a service stop and a service killed and started
again.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from batchwire import containers
from tests.integration.test_localbatch_exec import Blobs, wait_for

SLEEPER = "/bin/sh -c 'echo started; sleep 300'"


@pytest.fixture(scope="module")
def image() -> str:
    """The busybox image, built here when missing; skips only when no container engine can be had at all."""
    from devstack import images, system

    try:
        images.ensure_engine()
        return images.ensure_busybox()
    except system.PrerequisiteError as exc:
        pytest.skip(f"no container engine can be installed or run on this machine: {exc}")


@pytest.fixture(scope="module")
def engine(image: str) -> containers.Engine:
    return containers.detect()


def service_label(service: Any) -> str:
    """The label value every container of ``service`` carries (``azurebatch.dev/localbatch=<id>``)."""
    label: str = service.info()["containerLabel"]
    name, _sep, value = label.partition("=")
    assert name == containers.LABEL and value
    return value


@pytest.fixture(scope="module")
def svc(local_batch_factory: Callable[..., Any], engine: containers.Engine) -> Iterator[Any]:
    """A service of its own (its own container label), whose leftovers are removed whatever the tests did."""
    service = local_batch_factory()
    yield service
    containers.remove_labelled(engine, service_label(service))


@pytest.fixture
def client(svc: Any, engine: containers.Engine) -> Iterator[Any]:
    """The SDK client; after the test, no container of the service may remain."""
    batch = svc.client()
    yield batch
    batch.close()
    label = service_label(svc)
    wait_for(lambda: not containers.list_labelled(engine, label), limit=15,
             what=f"no container left with {containers.LABEL}={label}")


@pytest.fixture(scope="module")
def blobs(azurite: Any) -> Blobs:
    return Blobs(azurite)


def pool(*, images: list[str] | None = None, container: bool = True, keep: bool = False,
         start_task: dict[str, Any] | None = None) -> dict[str, Any]:
    vm: dict[str, Any] = {
        "imageReference": {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204"},
        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
    }
    if container:
        vm["containerConfiguration"] = {"type": "dockerCompatible", "containerImageNames": images or []}
    spec: dict[str, Any] = {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "virtualMachineConfiguration": vm}
    if start_task:
        spec["startTask"] = start_task
    return {"autoPoolSpecification": {"autoPoolIdPrefix": "ctr", "poolLifetimeOption": "job", "keepAlive": keep,
                                      "pool": spec}}


def run_job(client: Any, task: dict[str, Any], *, pool_info: dict[str, Any] | None = None,
            wait: bool = True) -> str:
    job_id = f"ctr-{uuid.uuid4().hex[:8]}"
    client.create_job({"id": job_id, "poolInfo": pool_info or pool(),
                       "jobManagerTask": {"id": "jm", **task}})
    if wait:
        wait_for(lambda: client.get_job(job_id).state == "completed", limit=60, what=f"{job_id} completed")
    return job_id


def settings(image: str, **extra: Any) -> dict[str, Any]:
    return {"imageName": image, **extra}


def detail(info: Any, name: str) -> str:
    return next((d.value for d in info.details or [] if d.name == name), "")


def test_container_engine_detected_with_flags_that_run_a_container(engine: containers.Engine, image: str) -> None:
    assert engine.available, engine.reason
    if engine.name == "podman":
        assert engine.verified, "podman's flags are proven by a probe container"
    done = subprocess.run(engine.run(image, ["/bin/sh", "-c", "echo ran"], options=[
        "--rm", *engine.run_options, "--label", f"{containers.LABEL}=test-probe"]),
        capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "ran\n"), done.stderr
    assert not containers.list_labelled(engine, "test-probe")


def test_container_task_runs_in_image_with_resource_file_env_and_output_file(
    client: Any, svc: Any, image: str, blobs: Blobs
) -> None:
    data, out = blobs.container("ctr-in"), blobs.container("ctr-out")
    blobs.put(data, "words.txt", "one two three four\n")
    output = blobs.container_url(out, write=True, create=True)
    start = {"commandLine": "/bin/sh -c 'grep -c . /etc/passwd > $AZ_BATCH_NODE_SHARED_DIR/start-passwd-lines'",
             "containerSettings": settings(image), "waitForSuccess": True}
    script = (
        "mkdir -p out; set -- $(cat words.txt); echo $# > out/count.txt; "
        "echo \"lines=$(grep -c . /etc/passwd) start=$(cat $AZ_BATCH_NODE_SHARED_DIR/start-passwd-lines)\"; "
        "echo \"pwd=$(pwd) wd=$AZ_BATCH_TASK_WORKING_DIR task=$AZ_BATCH_TASK_ID greeting=$GREETING\"; "
        "echo to-stderr >&2"
    )
    job_id = run_job(client, {
        "commandLine": f"/bin/sh -c '{script}'",
        "containerSettings": settings(image, containerRunOptions="--rm"),
        "resourceFiles": [{"httpUrl": blobs.blob_url(data, "words.txt"), "filePath": "words.txt"}],
        "outputFiles": [
            {"filePattern": "out/*.txt", "destination": {"container": {"containerUrl": output, "path": "results"}},
             "uploadOptions": {"uploadCondition": "tasksuccess"}},
            {"filePattern": "../std*.txt", "destination": {"container": {"containerUrl": output, "path": "logs"}},
             "uploadOptions": {"uploadCondition": "taskcompletion"}},
        ],
        "environmentSettings": [{"name": "GREETING", "value": "hello"}],
    }, pool_info=pool(images=[image], start_task=start, keep=True))
    task = client.get_task(job_id, "jm")
    info = task.execution_info
    assert info.result == "success" and info.exit_code == 0 and info.failure_info is None, info
    assert info.container_info.container_id and info.container_info.state == "exited"
    assert blobs.read(out, "results/count.txt") == "4\n"
    stdout = blobs.read(out, "logs/stdout.txt")
    wd = f"{svc.work_dir}/nodes/nodes/{task.node_info.node_id}/{task.node_info.task_root_directory}/wd"
    # The image's /etc/passwd has two lines (the host's has more): both ran in the container.
    assert "lines=2 start=2\n" in stdout
    assert f"pwd={wd} wd={wd} task=jm greeting=hello\n" in stdout
    assert blobs.read(out, "logs/stderr.txt") == "to-stderr\n"
    assert Path(wd, "..", "stdout.txt").read_text() == stdout, "stdout.txt is in the task directory on the host"
    node = client.get_node(task.node_info.pool_id, task.node_info.node_id)
    assert node.start_task_info.result == "success" and node.start_task_info.container_info.state == "exited"
    client.begin_delete_pool(task.node_info.pool_id, polling_interval=0.2).result(timeout=30)


def test_container_run_options_inside_the_sandbox_are_passed_on(client: Any, image: str) -> None:
    job_id = run_job(client, {
        "commandLine": "/bin/sh -c 'echo \"$EXTRA $(pwd) $(id -u)\"; cat /proc/self/cgroup > /dev/null'",
        "containerSettings": settings(image, containerRunOptions="--rm -e EXTRA=x --memory 64m --cpus 1 "
                                      "--network none --workdir /tmp --user 65534:65534 --read-only"),
        "outputFiles": [],
    })
    info = client.get_task(job_id, "jm").execution_info
    assert info.result == "success", info.failure_info


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("--privileged", "--privileged"),
        ("--pid=host", "--pid"),
        ("-v /etc:/host-etc", "-v /etc"),
        ("--cap-add SYS_ADMIN", "--cap-add"),
        ("--security-opt seccomp=unconfined", "--security-opt"),
        ("--network container:other", "--network"),
        ("--device /dev/kmsg", "--device"),
        ("-v $AZ_BATCH_NODE_ROOT_DIR:$AZ_BATCH_NODE_ROOT_DIR", "Duplicate mount point"),
    ],
)
def test_container_run_options_that_leave_the_sandbox_are_refused_by_name(
    client: Any, image: str, options: str, named: str
) -> None:
    job_id = run_job(client, {"commandLine": "/bin/true",
                              "containerSettings": settings(image, containerRunOptions=options),
                              "constraints": {"maxTaskRetryCount": 2}})
    info = client.get_task(job_id, "jm").execution_info
    assert info.result == "failure" and info.exit_code is None and info.retry_count == 0
    failure = info.failure_info
    assert (failure.category, failure.code) == ("usererror", "ContainerInvalidSettings")
    assert failure.message == "At least one value of specified task container settings is invalid"
    assert detail(failure, "ContainerSettings") == options
    assert named in detail(failure, "Message")


def test_container_image_missing_fails_task_with_container_invalid_image_not_retried(client: Any) -> None:
    missing = f"localhost/batchop-missing-{uuid.uuid4().hex[:6]}:none"
    job_id = run_job(client, {"commandLine": "/bin/true", "containerSettings": {"imageName": missing},
                              "constraints": {"maxTaskRetryCount": 3}})
    task = client.get_task(job_id, "jm")
    info = task.execution_info
    assert task.state == "completed" and info.result == "failure"
    assert info.exit_code is None and info.retry_count == 0 and info.container_info is None
    failure = info.failure_info
    assert (failure.category, failure.code) == ("usererror", "ContainerInvalidImage")
    assert failure.message == "One or more container images specified are invalid"
    assert detail(failure, "ContainerImage") == missing and detail(failure, "Message")


def test_container_settings_must_match_the_pool(client: Any, image: str) -> None:
    on_plain_pool = run_job(client, {"commandLine": "/bin/true", "containerSettings": settings(image)},
                            pool_info=pool(container=False))
    failure = client.get_task(on_plain_pool, "jm").execution_info.failure_info
    assert (failure.category, failure.code) == ("usererror", "ContainerInvalidSettings")
    assert "containerConfiguration" in detail(failure, "Message")

    without_settings = run_job(client, {"commandLine": "/bin/true"})
    info = client.get_task(without_settings, "jm").execution_info
    assert info.result == "failure" and info.exit_code is None
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "ContainerTaskSettingsNotFound")
    assert info.failure_info.message == "Container-enabled compute node requires task container settings"


def test_container_pool_image_missing_makes_node_unusable_with_error(client: Any, image: str) -> None:
    """As on Azure: the node is unusable with the error, takes no task, and the job waits (active)."""
    missing = f"localhost/batchop-missing-{uuid.uuid4().hex[:6]}:none"
    job_id = run_job(client, {"commandLine": "/bin/true", "containerSettings": settings(image)},
                     pool_info=pool(images=[image, missing], keep=True), wait=False)
    pool_id = client.get_job(job_id).execution_info.pool_id
    (node,) = wait_for(lambda: [n for n in client.list_nodes(pool_id) if n.state == "unusable"], limit=60,
                       what="the node unusable")
    job = client.get_job(job_id)
    assert job.state == "active" and job.execution_info.scheduling_error is None
    assert client.get_task(job_id, "jm").state == "active"
    (error,) = node.errors
    assert error.code == "ContainerInvalidImage"
    assert error.message == "One or more container images specified are invalid"
    details = {d.name: d.value for d in error.error_details}
    assert details["ContainerImage"] == missing and details["Message"]
    assert client.get_node(pool_id, node.id).errors[0].code == "ContainerInvalidImage"
    assert client.get_pool(pool_id).allocation_state == "steady"
    assert node.start_task_info is None, "the start task does not run on a node that failed its images"
    client.begin_delete_job(job_id, polling_interval=0.2).result(timeout=30)
    client.begin_delete_pool(pool_id, polling_interval=0.2).result(timeout=30)


def test_container_wall_clock_limit_kills_and_removes_the_container(client: Any, image: str) -> None:
    job_id = run_job(client, {"commandLine": SLEEPER, "containerSettings": settings(image),
                              "constraints": {"maxWallClockTime": "PT2S"}})
    info = client.get_task(job_id, "jm").execution_info
    assert info.result == "failure" and info.failure_info.code == "TaskEnded"
    assert info.container_info.state == "exited"


def running_container(client: Any, svc: Any, engine: containers.Engine, job_id: str) -> None:
    """Wait until the job's task runs and its container exists."""
    wait_for(lambda: client.get_task(job_id, "jm").state == "running", what=f"{job_id} running")
    wait_for(lambda: containers.list_labelled(engine, service_label(svc)), what="the task's container")


def test_container_job_terminate_removes_the_running_container(
    client: Any, svc: Any, engine: containers.Engine, image: str
) -> None:
    job_id = run_job(client, {"commandLine": SLEEPER, "containerSettings": settings(image)}, wait=False)
    running_container(client, svc, engine, job_id)
    client.begin_terminate_job(job_id, {"terminateReason": "UserTerminate"}, polling_interval=0.2).result(timeout=30)
    assert client.get_task(job_id, "jm").execution_info.failure_info.code == "TaskEnded"
    assert not containers.list_labelled(engine, service_label(svc))


def test_container_pool_delete_removes_the_running_container(
    client: Any, svc: Any, engine: containers.Engine, image: str
) -> None:
    job_id = run_job(client, {"commandLine": SLEEPER, "containerSettings": settings(image)},
                     pool_info=pool(keep=True), wait=False)
    running_container(client, svc, engine, job_id)
    pool_id = client.get_job(job_id).execution_info.pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)
    assert not containers.list_labelled(engine, service_label(svc))
    wait_for(lambda: client.get_job(job_id).state == "completed", what="the job of the deleted pool completed")


def test_container_service_stop_and_restart_after_kill_leave_no_container(
    local_batch_factory: Callable[..., Any], engine: containers.Engine, image: str, tmp_path: Path
) -> None:
    work = tmp_path / "svc"
    service = local_batch_factory(work_dir=work)
    label = service_label(service)
    try:
        with service.client() as batch:
            job_id = run_job(batch, {"commandLine": SLEEPER, "containerSettings": settings(image)}, wait=False)
            running_container(batch, service, engine, job_id)
        service.stop()
        assert not containers.list_labelled(engine, label), "a stopped service removes its containers"

        killed = local_batch_factory(work_dir=work)
        with killed.client() as batch:
            job_id = run_job(batch, {"commandLine": SLEEPER, "containerSettings": settings(image)}, wait=False)
            running_container(batch, killed, engine, job_id)
        killed.process.kill()
        killed.process.wait(10)
        assert containers.list_labelled(engine, label), "SIGKILL gives the service no chance to clean up"
        again = local_batch_factory(work_dir=work)
        assert service_label(again) == label
        wait_for(lambda: not containers.list_labelled(engine, label), limit=30,
                 what="the restarted service removed the killed one's container")
        again.stop()
    finally:
        containers.remove_labelled(engine, label)
