"""Blob references -> SAS URLs: shapes, permission sets, placeholders, container checks (no network); the offline
rules of batchop.spec.blobrefs and the resolution of batchop.blob.refs."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from batchop.blob.refs import resolve, resolve_offline
from batchop.blob.sas import PLACEHOLDER_STORAGE_URL, KeyMinter, StorageAccessError, sas_permissions
from batchop.spec import blobrefs
from batchop.spec.blobrefs import BlobReferenceError, has_blob_references
from batchwire.redact import strip_sas

KEY = base64.b64encode(b"k" * 64).decode()
URL = "https://acct.blob.core.windows.net"
EXPIRY = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class CheckedMinter(KeyMinter):
    """Signs for real with a made-up key; container checks answer from a set instead of the network."""

    def __init__(self, existing: set[str] | None = None, refuse: bool = False) -> None:
        super().__init__(URL, "acct", KEY)
        self.existing = existing if existing is not None else {"application", "input", "output"}
        self.refuse = refuse
        self.checked: list[str] = []

    async def check_container(self, container: str) -> None:
        self.checked.append(container)
        if self.refuse:
            raise StorageAccessError("StorageAuthenticationFailed", "refused", permanent=True)
        if container not in self.existing:
            raise StorageAccessError("ContainerNotFound", f"the blob container {container!r} does not exist",
                                     permanent=True)


def job_spec() -> dict[str, Any]:
    return {
        "priority": 100,
        "jobManagerTask": {
            "id": "wordcount",
            "commandLine": "/bin/bash -c './task.sh'",
            "resourceFiles": [
                {"blob": {"container": "application", "path": "task.sh"}, "filePath": "task.sh"},
                {"blob": {"container": "input", "prefix": ""}, "filePath": "input"},
                {"blob": {"container": "input", "prefix": "lyrics/"}},
                {"httpUrl": "https://example.com/public.txt", "filePath": "public.txt"},
            ],
            "outputFiles": [
                {
                    "filePattern": "results/**/*",
                    "destination": {"blob": {"container": "output", "path": "{scheduleId}"}},
                    "uploadOptions": {"uploadCondition": "tasksuccess"},
                },
                {
                    "filePattern": "../std*.txt",
                    "destination": {"blob": {"container": "output", "path": "{scheduleId}/logs/{taskId}"}},
                    "uploadOptions": {"uploadCondition": "taskcompletion"},
                },
            ],
        },
        "poolInfo": {
            "autoPoolSpecification": {
                "poolLifetimeOption": "job",
                "pool": {
                    "vmSize": "standard_d2s_v3",
                    "startTask": {
                        "commandLine": "/bin/bash -c './starttask.sh'",
                        "resourceFiles": [{"blob": {"container": "application", "path": "starttask.sh"},
                                           "filePath": "starttask.sh"}],
                    },
                },
            }
        },
    }


def test_has_blob_references() -> None:
    spec = job_spec()
    assert has_blob_references(spec)
    assert not has_blob_references({"jobManagerTask": {"resourceFiles": [{"httpUrl": "x", "filePath": "x"}]}})
    assert not has_blob_references({})
    assert not has_blob_references(None)
    only_start = {"poolInfo": spec["poolInfo"]}
    assert has_blob_references(only_start)
    only_output = {"jobManagerTask": {"outputFiles": spec["jobManagerTask"]["outputFiles"][:1]}}
    assert has_blob_references(only_output)


async def test_permission_sets_read_vs_read_list_vs_write_create() -> None:
    spec = job_spec()
    original = copy.deepcopy(spec)
    minter = CheckedMinter()
    resolved = await resolve(spec, minter=minter, schedule_id="default-wordcount", expiry=EXPIRY)
    assert spec == original, "resolve must not modify its input"
    manager = resolved.job_specification["jobManagerTask"]
    task_file, input_all, input_prefix, public = manager["resourceFiles"]

    # one blob: httpUrl, blob SAS (sr=b), read only
    assert strip_sas(task_file["httpUrl"]) == f"{URL}/application/task.sh"
    assert sas_permissions(task_file["httpUrl"]) == "r"
    assert parse_qs(urlsplit(task_file["httpUrl"]).query)["sr"] == ["b"]
    assert task_file["filePath"] == "task.sh" and "blob" not in task_file

    # a prefix: storageContainerUrl, container SAS (sr=c), read + list
    assert strip_sas(input_all["storageContainerUrl"]) == f"{URL}/input"
    assert sas_permissions(input_all["storageContainerUrl"]) == "rl"
    assert parse_qs(urlsplit(input_all["storageContainerUrl"]).query)["sr"] == ["c"]
    assert "blobPrefix" not in input_all  # empty prefix: the whole container
    assert input_prefix["blobPrefix"] == "lyrics/"
    assert sas_permissions(input_prefix["storageContainerUrl"]) == "rl"

    # untouched plain resource file
    assert public == {"httpUrl": "https://example.com/public.txt", "filePath": "public.txt"}

    # outputs: containerUrl, container SAS, create + write, nothing more (no read, no list, no delete)
    results, logs = manager["outputFiles"]
    destination = results["destination"]["container"]
    assert strip_sas(destination["containerUrl"]) == f"{URL}/output"
    assert sas_permissions(destination["containerUrl"]) == "cw"
    assert set(sas_permissions(destination["containerUrl"])) == {"c", "w"}
    assert destination["path"] == "default-wordcount"
    assert "blob" not in results["destination"]
    assert logs["destination"]["container"]["path"] == "default-wordcount/logs/wordcount"

    # start task of the auto pool
    start = resolved.job_specification["poolInfo"]["autoPoolSpecification"]["pool"]["startTask"]
    assert sas_permissions(start["resourceFiles"][0]["httpUrl"]) == "r"
    assert strip_sas(start["resourceFiles"][0]["httpUrl"]) == f"{URL}/application/starttask.sh"

    # every SAS expires at the requested time, https only for a real account
    for url in (task_file["httpUrl"], input_all["storageContainerUrl"], destination["containerUrl"]):
        query = parse_qs(urlsplit(url).query)
        assert query["se"] == ["2030-01-02T03:04:05Z"]
        assert query["spr"] == ["https"]
        assert query["sig"][0]
    assert resolved.expires_at == EXPIRY
    assert resolved.containers == ("application", "input", "output")
    assert sorted(minter.checked) == ["application", "input", "output"]  # each container checked once


async def test_no_references_is_a_copy_without_expiry() -> None:
    spec = {"jobManagerTask": {"id": "t", "commandLine": "echo"}}
    resolved = await resolve(spec, minter=CheckedMinter(), schedule_id="s", expiry=EXPIRY)
    assert resolved.job_specification == spec and resolved.job_specification is not spec
    assert resolved.expires_at is None and resolved.containers == ()


async def test_job_id_placeholder_is_refused_with_the_fix() -> None:
    spec = job_spec()
    spec["jobManagerTask"]["outputFiles"][0]["destination"]["blob"]["path"] = "{scheduleId}/{jobId}"
    minter = CheckedMinter()
    with pytest.raises(BlobReferenceError) as info:
        await resolve(spec, minter=minter, schedule_id="s", expiry=EXPIRY)
    error = info.value
    assert error.field == "spec.jobSpecification.jobManagerTask.outputFiles[0].destination.blob.path"
    assert "$AZ_BATCH_JOB_ID" in error.message and "filePattern" in error.message
    assert error.permanent and error.reason == "InvalidSpec"
    assert minter.checked == [], "bad input must fail before any storage call"


async def test_unknown_placeholder_refused() -> None:
    spec = job_spec()
    spec["jobManagerTask"]["outputFiles"][0]["destination"]["blob"]["path"] = "{date}/x"
    with pytest.raises(BlobReferenceError, match=r"unknown placeholder \{date\}"):
        await resolve(spec, minter=CheckedMinter(), schedule_id="s", expiry=EXPIRY)


async def test_missing_container_is_a_clear_error_naming_the_field() -> None:
    minter = CheckedMinter(existing={"application", "input"})
    with pytest.raises(BlobReferenceError) as info:
        await resolve(job_spec(), minter=minter, schedule_id="s", expiry=EXPIRY)
    assert info.value.reason == "ContainerNotFound"
    assert info.value.field == "spec.jobSpecification.jobManagerTask.outputFiles[0].destination.blob.container"
    assert "'output' does not exist" in info.value.message


async def test_refused_credential_is_permanent() -> None:
    with pytest.raises(BlobReferenceError) as info:
        await resolve(job_spec(), minter=CheckedMinter(refuse=True), schedule_id="s", expiry=EXPIRY)
    assert info.value.reason == "StorageAuthenticationFailed" and info.value.permanent


@pytest.mark.parametrize(
    ("resource_file", "message"),
    [
        ({"blob": {"container": "Input", "path": "a"}, "filePath": "a"}, "not a valid blob container name"),
        ({"blob": {"container": "ab", "path": "a"}, "filePath": "a"}, "not a valid blob container name"),
        ({"blob": {"container": "input", "path": "a", "prefix": "b"}, "filePath": "a"}, "not both"),
        ({"blob": {"container": "input", "path": "a"}, "httpUrl": "https://x/y", "filePath": "a"}, "not both"),
        ({"blob": {"container": "input", "path": ""}, "filePath": "a"}, "non-empty blob name"),
        ({"blob": "input/a", "filePath": "a"}, "must be an object"),
    ],
)
async def test_invalid_references(resource_file: dict[str, Any], message: str) -> None:
    spec = {"jobManagerTask": {"id": "t", "commandLine": "x", "resourceFiles": [resource_file]}}
    with pytest.raises(BlobReferenceError, match=message) as info:
        await resolve(spec, minter=CheckedMinter(), schedule_id="s", expiry=EXPIRY)
    assert info.value.field.startswith("spec.jobSpecification.jobManagerTask.resourceFiles[0].blob")


async def test_expiry_capped_for_user_delegation_minters() -> None:
    class ShortMinter(CheckedMinter):
        max_lifetime = timedelta(days=7)

    far = datetime.now(UTC) + timedelta(days=30)
    resolved = await resolve(job_spec(), minter=ShortMinter(), schedule_id="s", expiry=far)
    assert resolved.expires_at is not None
    assert resolved.expires_at <= datetime.now(UTC) + timedelta(days=7)


def test_validate_references_offline() -> None:
    spec = job_spec()
    assert blobrefs.validate_references(spec) == []
    spec["jobManagerTask"]["outputFiles"][1]["destination"]["blob"]["path"] = "{jobId}"
    problems = blobrefs.validate_references(spec)
    assert [p.field for p in problems] == ["spec.jobSpecification.jobManagerTask.outputFiles[1].destination.blob.path"]


def test_resolve_offline_shows_placeholder_sas_without_storage() -> None:
    """What render and import show: the operator's URLs, signed by nothing (sig=REDACTED), no container check."""
    spec = job_spec()
    resolved = resolve_offline(spec, account_url=PLACEHOLDER_STORAGE_URL + "/", schedule_id="s", expiry=EXPIRY)
    task_file = resolved["jobManagerTask"]["resourceFiles"][0]
    assert task_file["httpUrl"].startswith(f"{PLACEHOLDER_STORAGE_URL}/application/")
    assert "sig=REDACTED" in task_file["httpUrl"] and sas_permissions(task_file["httpUrl"]) == "r"
    assert parse_qs(urlsplit(task_file["httpUrl"]).query)["se"] == ["2030-01-02T03:04:05Z"]
    assert spec == job_spec(), "the input is not modified"
    bad = job_spec()
    bad["jobManagerTask"]["outputFiles"][0]["destination"]["blob"]["path"] = "{jobId}/out"
    with pytest.raises(BlobReferenceError, match=r"\{jobId\}"):
        resolve_offline(bad, account_url=PLACEHOLDER_STORAGE_URL, schedule_id="s", expiry=EXPIRY)


def prep_release_spec() -> dict[str, Any]:
    """A job whose preparation task stages a script and a prefix, and whose release task fetches one blob."""
    return {
        "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/p.sh'"},
        "jobPreparationTask": {
            "id": "stage",
            "commandLine": "/bin/bash -c 'ls'",
            "resourceFiles": [
                {"blob": {"container": "application", "path": "p.sh"}, "filePath": "p.sh"},
                {"blob": {"container": "input", "prefix": "lyrics/"}, "filePath": "lyrics"},
            ],
        },
        "jobReleaseTask": {
            "id": "cleanup",
            "commandLine": "/bin/bash -c './bye.sh'",
            "resourceFiles": [{"blob": {"container": "application", "path": "bye.sh"}}],
        },
    }


def test_has_blob_references_on_preparation_and_release_tasks() -> None:
    spec = prep_release_spec()
    spec.pop("jobReleaseTask")
    assert has_blob_references(spec)
    only_release = prep_release_spec()
    only_release.pop("jobPreparationTask")
    assert has_blob_references(only_release)
    plain = {"jobPreparationTask": {"commandLine": "x", "resourceFiles": [{"httpUrl": "https://x/y", "filePath": "y"}]}}
    assert not has_blob_references(plain)


async def test_preparation_and_release_references_become_sas_urls() -> None:
    spec = prep_release_spec()
    minter = CheckedMinter()
    resolved = await resolve(spec, minter=minter, schedule_id="s", expiry=EXPIRY)
    assert spec == prep_release_spec(), "resolve must not modify its input"
    prep = resolved.job_specification["jobPreparationTask"]
    script, lyrics = prep["resourceFiles"]
    assert strip_sas(script["httpUrl"]) == f"{URL}/application/p.sh" and sas_permissions(script["httpUrl"]) == "r"
    assert script["filePath"] == "p.sh" and "blob" not in script
    assert strip_sas(lyrics["storageContainerUrl"]) == f"{URL}/input"
    assert sas_permissions(lyrics["storageContainerUrl"]) == "rl"
    assert lyrics["blobPrefix"] == "lyrics/" and lyrics["filePath"] == "lyrics"
    (bye,) = resolved.job_specification["jobReleaseTask"]["resourceFiles"]
    assert strip_sas(bye["httpUrl"]) == f"{URL}/application/bye.sh" and bye["filePath"] == "bye.sh"
    assert parse_qs(urlsplit(bye["httpUrl"]).query)["se"] == ["2030-01-02T03:04:05Z"]
    assert resolved.containers == ("application", "input") and sorted(minter.checked) == ["application", "input"]
    assert "'blob'" not in str(resolved.job_specification), "no reference left for Batch to refuse"


@pytest.mark.parametrize("task", ["jobPreparationTask", "jobReleaseTask"])
async def test_preparation_and_release_errors_name_their_field(task: str) -> None:
    spec = prep_release_spec()
    spec[task]["resourceFiles"][0]["blob"]["container"] = "Bad_Name"
    with pytest.raises(BlobReferenceError, match="not a valid blob container name") as info:
        await resolve(spec, minter=CheckedMinter(), schedule_id="s", expiry=EXPIRY)
    assert info.value.field == f"spec.jobSpecification.{task}.resourceFiles[0].blob.container"
    assert [p.field for p in blobrefs.validate_references(spec)] == [info.value.field]
    missing = prep_release_spec()
    missing[task]["resourceFiles"][0]["blob"]["container"] = "nowhere"
    with pytest.raises(BlobReferenceError) as found:
        await resolve(missing, minter=CheckedMinter(), schedule_id="s", expiry=EXPIRY)
    assert found.value.reason == "ContainerNotFound"
    assert found.value.field == f"spec.jobSpecification.{task}.resourceFiles[0].blob.container"


def test_every_place_the_schema_takes_a_blob_reference_is_resolved() -> None:
    """The CRD's schema amends ResourceFile and OutputFile wherever the SDK's models use them: each of those
    places must be one the resolver rewrites, or a reference written there would reach Batch unresolved."""
    from batchop.api import cel_rules, crd

    places = [path for path, _ in cel_rules.schema_nodes(crd.spec_schema()) if path.endswith(".blob")]
    assert len(places) == 5, places
    for place in places:
        job: dict[str, Any] = {}
        node: Any = job
        keys = place.split(".")[1:]
        for key in keys[:-1]:
            listed = key.endswith("[]")
            name = key.removesuffix("[]")
            child: dict[str, Any] = {}
            node[name] = [child] if listed else child
            node = child
        node["blob"] = {"container": "application", "path": "x.sh"}
        assert has_blob_references(job), place
        resolved = resolve_offline(job, account_url=URL, schedule_id="s", expiry=EXPIRY)
        assert "'blob'" not in str(resolved), place
