"""The local Batch service serves task and node files as Azure does, read with the unmodified azure-batch SDK.

A real task runs (stdout, stderr, files in its working directory), then the SDK's own file operations read it:
``list_task_files`` (plain, ``recursive``, ``$filter``, paged), ``download_task_file`` (whole and ``ocp_range``),
``get_task_file_properties``, ``delete_task_file``, and the node operations (``list_node_files``,
``download_node_file`` of the start task's output, ``get_node_file_properties``). Then the ways files go, with
Azure's codes: retention time passed (``TaskFilesCleanedup``, the directory deleted), the pool deleted
(``TaskFilesUnavailable``, ``PoolNotFound``), a task never scheduled (``TaskFilesUnavailable``), a missing file
(``FileNotFound``), an unsatisfiable range (``InvalidRange``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

JM_SCRIPT = (
    "/bin/bash -c 'echo hello; echo oops >&2; mkdir -p out/deep; printf abcdefghij > out/deep/data.bin; "
    "echo note > out/note.txt; exit 3'"
)
START_TASK = {"commandLine": "/bin/bash -c 'echo node is ready'", "waitForSuccess": True}


def wait_for(predicate: Callable[[], Any], limit: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def files_batch(local_batch_factory: Callable[..., Any]) -> Any:
    """A service of its own: the retention test moves its clock forward."""
    return local_batch_factory()


def kept_pool(prefix: str) -> dict[str, Any]:
    """An auto pool that outlives its job (``keepAlive``), so the task's node and files stay."""
    return {"autoPoolSpecification": {"autoPoolIdPrefix": prefix, "poolLifetimeOption": "job", "keepAlive": True,
                                      "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                                               "startTask": START_TASK}}}


def run_job(client: Any, prefix: str, **task: Any) -> tuple[str, Any]:
    job_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.create_job({"id": job_id, "poolInfo": kept_pool(prefix),
                       "jobManagerTask": {"id": "jm", "commandLine": JM_SCRIPT, **task}})
    found = wait_for(lambda: (t := client.get_task(job_id, "jm")).state == "completed" and t, what=f"{job_id} done")
    return job_id, found


def read(client: Any, job_id: str, path: str, **kwargs: Any) -> bytes:
    return b"".join(client.download_task_file(job_id, "jm", path, **kwargs))


def error_code(exc: HttpResponseError) -> str | None:
    """Batch's error code. The SDK raises a download's error before reading its body (its exception policy runs
    on the unread stream, on Azure too), so the body is read here when the SDK did not parse it."""
    if exc.error is not None and exc.error.code:
        return str(exc.error.code)
    if exc.response is None:
        return None
    with contextlib.suppress(Exception):
        exc.response.read()
    try:
        return str(exc.response.json().get("code"))
    except Exception:
        return None


def test_task_files_with_the_sdk(files_batch: Any) -> None:
    client = files_batch.client()
    job_id, task = run_job(client, "files")
    assert task.execution_info.exit_code == 3

    top = {f.name: f for f in client.list_task_files(job_id, "jm")}
    assert set(top) == {"stdout.txt", "stderr.txt", "wd"}
    assert top["wd"].is_directory and top["wd"].properties is None
    stdout = top["stdout.txt"]
    assert not stdout.is_directory and stdout.properties.content_length == 6
    assert stdout.properties.content_type == "text/plain" and stdout.properties.last_modified is not None
    assert stdout.url == f"{files_batch.endpoint}/jobs/{job_id}/tasks/jm/files/stdout.txt"

    deep = [f.name for f in client.list_task_files(job_id, "jm", recursive=True)]
    assert deep == ["stderr.txt", "stdout.txt", "wd", "wd/out", "wd/out/deep", "wd/out/note.txt",
                    "wd/out/deep/data.bin"], "breadth first, sorted by name within a level"
    under_out = client.list_task_files(job_id, "jm", recursive=True, filter="startswith(name,'wd/out/')")
    filtered = [f.name for f in under_out]
    assert filtered == ["wd/out/deep", "wd/out/note.txt", "wd/out/deep/data.bin"]
    assert [f.name for f in client.list_task_files(job_id, "jm", recursive=True, max_results=2)] == deep, "paged"

    assert read(client, job_id, "stdout.txt") == b"hello\n"
    assert read(client, job_id, "stderr.txt") == b"oops\n"
    assert read(client, job_id, "wd/out/deep/data.bin", ocp_range="bytes=2-5") == b"cdef"
    assert read(client, job_id, "wd/out/deep/data.bin", ocp_range="bytes=8-100") == b"ij", "end clamped"
    assert read(client, job_id, "wd/out/deep/data.bin", ocp_range="bytes=7-") == b"hij"
    assert read(client, job_id, "wd/out/deep/data.bin", ocp_range="bytes=-4") == b"ghij"
    with pytest.raises(HttpResponseError) as beyond:
        read(client, job_id, "stdout.txt", ocp_range="bytes=6-10")
    assert beyond.value.status_code == 416 and error_code(beyond.value) == "InvalidRange"

    props = client.get_task_file_properties(job_id, "jm", "wd/out/deep/data.bin")
    assert props.content_length == 10 and props.is_directory is False
    assert props.file_mode == "100644" and props.creation_time is not None and props.last_modified is not None
    # the header is the percent-encoded URL, as Azure sends it (and the SDK hands it on unchanged)
    assert unquote(props.url) == f"{files_batch.endpoint}/jobs/{job_id}/tasks/jm/files/wd/out/deep/data.bin"
    assert client.get_task_file_properties(job_id, "jm", "wd").is_directory is True

    for missing in ("nope.txt", "../../../../../etc/passwd", "wd/../../stdout.txt/../../.."):
        with pytest.raises(ResourceNotFoundError) as gone:
            read(client, job_id, missing)
        assert error_code(gone.value) == "FileNotFound", missing

    client.delete_task_file(job_id, "jm", "wd/out/note.txt")
    with pytest.raises(ResourceNotFoundError):
        client.get_task_file_properties(job_id, "jm", "wd/out/note.txt")
    with pytest.raises(HttpResponseError) as not_empty:
        client.delete_task_file(job_id, "jm", "wd/out")
    assert not_empty.value.status_code == 409
    client.delete_task_file(job_id, "jm", "wd/out", recursive=True)
    assert [f.name for f in client.list_task_files(job_id, "jm", recursive=True)] == ["stderr.txt", "stdout.txt", "wd"]


def test_node_files_hold_the_start_task_output_and_the_task_directory(files_batch: Any) -> None:
    client = files_batch.client()
    job_id, task = run_job(client, "nodefiles")
    pool_id, node_id = task.node_info.pool_id, task.node_info.node_id
    names = {f.name for f in client.list_node_files(pool_id, node_id, recursive=True)}
    assert {"startup", "startup/stdout.txt", "shared", "workitems", f"workitems/{job_id}/job-1/jm/stdout.txt"} <= names
    assert b"".join(client.download_node_file(pool_id, node_id, "startup/stdout.txt")) == b"node is ready\n"
    task_dir = task.node_info.task_root_directory
    assert b"".join(client.download_node_file(pool_id, node_id, f"{task_dir}/stderr.txt")) == b"oops\n"
    props = client.get_node_file_properties(pool_id, node_id, "startup/stdout.txt")
    assert props.content_length == len(b"node is ready\n") and not props.is_directory
    with pytest.raises(ResourceNotFoundError) as no_node:
        list(client.list_node_files(pool_id, "tvmps_nosuchnode_d"))
    assert error_code(no_node.value) == "NodeNotFound"


def test_async_sdk_reads_ranges_of_a_scheduled_jobs_task(files_batch: Any) -> None:
    """Jobs of a schedule have a ``:`` in their id and file paths a ``/``: both survive the aio transport."""
    client = files_batch.client()
    schedule_id = f"files-{uuid.uuid4().hex[:6]}"
    client.create_job_schedule({"id": schedule_id, "schedule": {},
                                "jobSpecification": {"poolInfo": kept_pool("sched"),
                                                     "jobManagerTask": {"id": "jm", "commandLine": JM_SCRIPT}}})
    job_id = f"{schedule_id}:job-1"
    wait_for(lambda: (t := client.get_task(job_id, "jm")).state == "completed" and t, what=f"{job_id} done")

    async def ranges() -> tuple[bytes, int]:
        async with files_batch.aio_client() as aio:
            stream = await aio.download_task_file(job_id, "jm", "wd/out/deep/data.bin", ocp_range="bytes=0-2")
            head = b"".join([chunk async for chunk in stream])
            props = await aio.get_task_file_properties(job_id, "jm", "stdout.txt")
            return head, props.content_length

    assert asyncio.run(ranges()) == (b"abc", 6)


def test_files_go_when_the_retention_time_passes(files_batch: Any) -> None:
    client = files_batch.client()
    job_id, task = run_job(client, "retain", constraints={"retentionTime": "PT1H"})
    assert read(client, job_id, "stdout.txt") == b"hello\n"
    work_dir = Path(files_batch.info()["workDir"])
    task_dir = work_dir / "nodes" / task.node_info.node_id / task.node_info.task_root_directory
    assert (task_dir / "stdout.txt").exists(), f"the service's work dir layout changed: {task_dir}"

    files_batch.advance("PT2H")
    for call in (lambda: read(client, job_id, "stdout.txt"), lambda: list(client.list_task_files(job_id, "jm"))):
        with pytest.raises(HttpResponseError) as cleaned:
            call()
        assert cleaned.value.status_code == 409 and error_code(cleaned.value) == "TaskFilesCleanedup"
        assert "retentionTime (PT1H)" in str(cleaned.value)
    assert not task_dir.exists(), "Batch deletes the task's directory once its retention time passed"
    names = {f.name for f in client.list_node_files(task.node_info.pool_id, task.node_info.node_id, recursive=True)}
    assert "startup/stdout.txt" in names and not any(n.startswith(f"workitems/{job_id}/job-1/jm/") for n in names)


def test_files_are_unavailable_once_the_pool_is_gone_or_before_the_task_ran(files_batch: Any) -> None:
    client = files_batch.client()
    job_id, task = run_job(client, "gone")
    pool_id = task.node_info.pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.1).result(timeout=30)

    def unavailable() -> HttpResponseError | None:
        try:
            read(client, job_id, "stdout.txt")
        except HttpResponseError as exc:
            return exc if error_code(exc) == "TaskFilesUnavailable" else None
        return None

    gone = wait_for(unavailable, what="TaskFilesUnavailable after the pool was deleted")
    assert gone.status_code == 409 and pool_id in str(gone)
    with pytest.raises(ResourceNotFoundError) as no_pool:
        list(client.list_node_files(pool_id, task.node_info.node_id))
    assert error_code(no_pool.value) == "PoolNotFound"

    waiting = f"waiting-{uuid.uuid4().hex[:6]}"
    client.create_job({"id": waiting, "poolInfo": {"poolId": "no-such-pool"},
                       "jobManagerTask": {"id": "jm", "commandLine": "/bin/true"}})
    with pytest.raises(HttpResponseError) as not_yet:
        read(client, waiting, "stdout.txt")
    assert not_yet.value.status_code == 409 and error_code(not_yet.value) == "TaskFilesUnavailable"
    assert "not been scheduled" in str(not_yet.value)
    client.begin_delete_job(waiting, polling_interval=0.1).result(timeout=30)
