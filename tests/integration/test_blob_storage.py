"""Blob storage against a real Azurite: `batchop blob sync/get`, SAS permission sets enforced, expired SAS refused.

Uses the session fixture ``azurite`` (tests/fixtures/stack.py); the CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from batchop.blob import refs as blobrefs
from batchop.blob import sas
from batchop.blob import settings as storage_config
from batchop.spec.blobrefs import BlobReferenceError
from batchwire.azurite import ACCOUNT_KEY

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def connection_string(azurite: Any) -> str:
    return str(azurite.connection_string)


@pytest.fixture(scope="module")
def service(connection_string: str) -> Iterator[BlobServiceClient]:
    with BlobServiceClient.from_connection_string(connection_string) as client:
        yield client


def run_cli(connection_string: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": connection_string}
    env.pop("BATCHOP_STORAGE_URL", None)
    return subprocess.run([sys.executable, "-m", "batchop", "--log-format", "text", "blob", *args], env=env,
                          capture_output=True, timeout=120, cwd=cwd, check=False)


def unique_tree(tmp_path: Path) -> tuple[Path, str]:
    """A copy of blob/ whose containers have unique names (tests share one Azurite)."""
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path / "tree"
    for folder in ("application", "input", "output"):
        source = REPO / "blob" / folder
        target = root / f"{folder}-{suffix}"
        target.mkdir(parents=True)
        for path in source.rglob("*"):
            if path.is_file() and path.name != "Containerfile":  # the sample image's recipe, not a task file
                (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return root, suffix


def test_sync_creates_skips_unchanged_prunes_and_keeps_outputs(
    tmp_path: Path, connection_string: str, service: BlobServiceClient
) -> None:
    root, suffix = unique_tree(tmp_path)
    app, inp, out = f"application-{suffix}", f"input-{suffix}", f"output-{suffix}"

    dry = run_cli(connection_string, "sync", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{app}: would create container".encode() in dry.stdout
    assert not service.get_container_client(app).exists(), "--dry-run must change nothing"

    first = run_cli(connection_string, "sync", str(root))
    assert first.returncode == 0, first.stderr
    assert {c.name for c in service.list_containers(name_starts_with="") if suffix in c.name} == {app, inp, out}
    assert sorted(b.name for b in service.get_container_client(app).list_blobs()) == [
        "fanout.py", "starttask.sh", "task.sh", "wordcount.py"]
    assert list(service.get_container_client(out).list_blobs()) == [], "the .gitkeep placeholder is never uploaded"
    lyrics = service.get_blob_client(inp, "the_star_spangled_banner.txt").download_blob().readall()
    assert lyrics == (REPO / "blob/input/the_star_spangled_banner.txt").read_bytes()

    # second run: everything unchanged, nothing uploaded (content hash)
    etag = service.get_blob_client(app, "task.sh").get_blob_properties().etag
    second = run_cli(connection_string, "sync", str(root))
    assert second.returncode == 0
    assert f"{app}: 0 uploaded, 4 unchanged".encode() in second.stdout
    assert service.get_blob_client(app, "task.sh").get_blob_properties().etag == etag

    # a changed file is uploaded again; a removed one is pruned only with --delete
    (root / app / "task.sh").write_text("#!/bin/bash\necho changed\n")
    (root / app / "wordcount.py").unlink()
    service.get_blob_client(out, "job-1/counts.tsv").upload_blob(b"1\tx\n")  # a job's output
    third = run_cli(connection_string, "sync", str(root))
    assert f"{app}: 1 uploaded, 2 unchanged, 1 remote-only kept".encode() in third.stdout
    assert service.get_blob_client(app, "wordcount.py").exists()
    pruned = run_cli(connection_string, "sync", str(root), "--delete")
    assert pruned.returncode == 0, pruned.stderr
    assert not service.get_blob_client(app, "wordcount.py").exists()
    assert service.get_blob_client(out, "job-1/counts.tsv").exists(), "a placeholder-only container is never pruned"
    assert b"echo changed" in service.get_blob_client(app, "task.sh").download_blob().readall()

    # nothing secret in anything the CLI printed
    for result in (dry, first, second, third, pruned):
        text = (result.stdout + result.stderr).decode()
        assert ACCOUNT_KEY not in text and "sig=" not in text


def test_get_prints_downloads_and_lists(tmp_path: Path, connection_string: str, service: BlobServiceClient) -> None:
    container = f"get-{uuid.uuid4().hex[:8]}"
    client = service.create_container(container)
    client.upload_blob("runs/a/counts.tsv", b"3\tthe\n")
    client.upload_blob("runs/b/counts.tsv", b"4\tthe\n")
    client.upload_blob("other.txt", b"x")

    printed = run_cli(connection_string, "get", f"{container}/runs/a/counts.tsv")
    assert printed.returncode == 0 and printed.stdout == b"3\tthe\n"

    listed = run_cli(connection_string, "get", f"{container}/runs/")
    assert listed.returncode == 0
    assert b"runs/a/counts.tsv" in listed.stdout and b"other.txt" not in listed.stdout

    target = tmp_path / "download"
    downloaded = run_cli(connection_string, "get", f"{container}/runs/", "-o", str(target))
    assert downloaded.returncode == 0, downloaded.stderr
    assert (target / "a/counts.tsv").read_bytes() == b"3\tthe\n"
    assert (target / "b/counts.tsv").read_bytes() == b"4\tthe\n"

    single = tmp_path / "one.tsv"
    assert run_cli(connection_string, "get", f"{container}/runs/b/counts.tsv", "-o", str(single)).returncode == 0
    assert single.read_bytes() == b"4\tthe\n"

    missing = run_cli(connection_string, "get", f"{container}/nothing-here")
    assert missing.returncode == 1 and b"no blob named 'nothing-here'" in missing.stderr
    no_container = run_cli(connection_string, "get", "does-not-exist/x")
    assert no_container.returncode == 1 and b"does not exist" in no_container.stderr
    bad_name = run_cli(connection_string, "get", "Bad_Name/x")
    assert bad_name.returncode == 3


def test_refused_key_and_unreachable_storage_exit_codes(tmp_path: Path, connection_string: str) -> None:
    url, _, _ = storage_config.parse_connection_string(connection_string)
    wrong_key = base64.b64encode(b"0" * 64).decode()
    wrong = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};BlobEndpoint={url}"
    refused = run_cli(wrong, "get", "input/x")
    assert refused.returncode == 1 and b"refused the credential" in refused.stderr
    assert wrong_key.encode() not in refused.stderr
    closed = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};" \
             "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1"
    unreachable = run_cli(closed, "sync", str(REPO / "blob"), "--dry-run")
    assert unreachable.returncode == 4 and b"cannot reach" in unreachable.stderr


def _http(url: str, method: str = "GET", data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method, headers={"x-ms-version": "2021-08-06",
                                                                             **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _with(url: str, extra: str) -> str:
    return f"{url}&{extra}" if "?" in url else f"{url}?{extra}"


def test_resolved_sas_permission_sets_are_enforced_by_storage(
    connection_string: str, service: BlobServiceClient
) -> None:
    suffix = uuid.uuid4().hex[:8]
    app, inp, out = f"app-{suffix}", f"in-{suffix}", f"out-{suffix}"
    for name in (app, inp, out):
        service.create_container(name)
    service.get_blob_client(app, "task.sh").upload_blob(b"echo hi\n")
    service.get_blob_client(inp, "lyrics/a.txt").upload_blob(b"o say\n")
    spec = {
        "jobManagerTask": {
            "id": "wc",
            "commandLine": "/bin/bash -c ./task.sh",
            "resourceFiles": [
                {"blob": {"container": app, "path": "task.sh"}, "filePath": "task.sh"},
                {"blob": {"container": inp, "prefix": "lyrics/"}, "filePath": "input"},
            ],
            "outputFiles": [{"filePattern": "results/**/*",
                             "destination": {"blob": {"container": out, "path": "{scheduleId}"}},
                             "uploadOptions": {"uploadCondition": "tasksuccess"}}],
        }
    }
    minter = sas.minter_for(None, None, {"AZURE_STORAGE_CONNECTION_STRING": connection_string})
    resolved = asyncio.run(blobrefs.resolve(spec, minter=minter, schedule_id="sched",
                                            expiry=datetime.now(UTC) + timedelta(hours=1)))
    manager = resolved.job_specification["jobManagerTask"]
    blob_url = manager["resourceFiles"][0]["httpUrl"]
    list_url = manager["resourceFiles"][1]["storageContainerUrl"]
    out_url = manager["outputFiles"][0]["destination"]["container"]["containerUrl"]

    # read (blob): can read that blob, cannot write it
    assert _http(blob_url) == 200
    assert _http(blob_url, "PUT", b"x", {"x-ms-blob-type": "BlockBlob"}) == 403
    # read + list (container): list and read under the prefix, no write
    assert _http(_with(list_url, "restype=container&comp=list&prefix=lyrics/")) == 200
    in_blob = list_url.replace(f"/{inp}?", f"/{inp}/lyrics/a.txt?")
    assert _http(in_blob) == 200
    assert _http(in_blob, "PUT", b"x", {"x-ms-blob-type": "BlockBlob"}) == 403
    # write + create (container): upload a new blob, but neither list nor read nor delete
    out_blob = out_url.replace(f"/{out}?", f"/{out}/sched/sched:job-1/counts.tsv?")
    assert _http(out_blob, "PUT", b"1\tthe\n", {"x-ms-blob-type": "BlockBlob"}) == 201
    assert service.get_blob_client(out, "sched/sched:job-1/counts.tsv").download_blob().readall() == b"1\tthe\n"
    assert _http(out_blob) == 403
    assert _http(_with(out_url, "restype=container&comp=list")) == 403
    assert _http(out_blob, "DELETE") == 403


def test_azurite_rejects_an_expired_sas(connection_string: str, service: BlobServiceClient) -> None:
    container = f"exp-{uuid.uuid4().hex[:8]}"
    service.create_container(container)
    service.get_blob_client(container, "a.txt").upload_blob(b"a")
    minter = sas.minter_for(None, None, {"AZURE_STORAGE_CONNECTION_STRING": connection_string})
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    url = asyncio.run(minter.blob_url(container, "a.txt", permission=sas.READ, expiry=expiry))
    assert _http(url) == 200
    wait_for(lambda: datetime.now(UTC) > expiry + timedelta(seconds=1), timeout=10)
    assert _http(url) == 403, "an expired SAS must be refused"


def test_resolve_reports_missing_container_and_refused_key(connection_string: str) -> None:
    spec = {"jobManagerTask": {"id": "t", "commandLine": "x", "resourceFiles": [
        {"blob": {"container": f"missing-{uuid.uuid4().hex[:8]}", "path": "a"}, "filePath": "a"}]}}
    minter = sas.minter_for(None, None, {"AZURE_STORAGE_CONNECTION_STRING": connection_string})
    with pytest.raises(BlobReferenceError) as info:
        asyncio.run(blobrefs.resolve(spec, minter=minter, schedule_id="s", expiry=datetime.now(UTC) + timedelta(1)))
    assert info.value.reason == "ContainerNotFound" and info.value.permanent
    assert info.value.field == "spec.jobSpecification.jobManagerTask.resourceFiles[0].blob.container"

    url, name, _ = storage_config.parse_connection_string(connection_string)
    wrong = sas.KeyMinter(url, name, base64.b64encode(b"1" * 64).decode())
    with pytest.raises(BlobReferenceError) as info:
        asyncio.run(blobrefs.resolve(spec, minter=wrong, schedule_id="s", expiry=datetime.now(UTC) + timedelta(1)))
    assert info.value.reason == "StorageAuthenticationFailed" and info.value.permanent
