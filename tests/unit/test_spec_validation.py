"""Validation that runs before any Azure call, in the webhook and in `batchop render`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from batchop.spec.validation import FieldError, errors_only, format_findings, validate, validate_resource

SEED = Path(__file__).resolve().parents[2] / "examples" / "legacy" / "create_jobsched.json"


def modern_spec() -> dict[str, Any]:
    """The seed's schedule in today's names, with blob references."""
    return {
        "schedule": {"doNotRunUntil": "2026-04-29T05:30:00.000Z", "recurrenceInterval": "PT4H"},
        "jobSpecification": {
            "priority": 100,
            "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": -1},
            "jobManagerTask": {
                "id": "mytask1",
                "commandLine": "/bin/bash -c 'export LC_ALL=en_US.UTF-8; ./task.sh'",
                "resourceFiles": [{"blob": {"container": "application", "path": "task.sh"}, "filePath": "task.sh"}],
                "outputFiles": [
                    {
                        "filePattern": "output/*.txt",
                        "destination": {"blob": {"container": "output", "path": "{scheduleId}"}},
                        "uploadOptions": {"uploadCondition": "tasksuccess"},
                    }
                ],
                "environmentSettings": [{"name": "VAR1", "value": "hello"}],
                "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
                "runExclusive": True,
            },
            "poolInfo": {
                "autoPoolSpecification": {
                    "autoPoolIdPrefix": "mypool",
                    "poolLifetimeOption": "job",
                    "pool": {
                        "vmSize": "STANDARD_D2S_V3",
                        "virtualMachineConfiguration": {
                            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                            "nodeAgentSKUId": "batch.node.ubuntu 24.04",
                        },
                        "targetDedicatedNodes": 1,
                        "taskSlotsPerNode": 1,
                        "taskSchedulingPolicy": {"nodeFillType": "spread"},
                        "startTask": {
                            "commandLine": "/bin/bash -c ./starttask.sh",
                            "resourceFiles": [{"blob": {"container": "application", "path": "starttask.sh"},
                                               "filePath": "starttask.sh"}],
                            "waitForSuccess": True,
                        },
                    },
                }
            },
        },
        "metadata": [{"name": "myproperty", "value": "myvalue"}],
        "account": {"endpoint": "http://127.0.0.1:8443/acct", "credentialsSecretRef": {"name": "batch-credentials"}},
        "storage": {"credentialsSecretRef": {"name": "storage.credentials"}, "sasLifetime": "P7D"},
        "suspend": False,
        "deletionPolicy": "Delete",
    }


def _at(findings: list[FieldError], path: str) -> FieldError:
    matches = [f for f in findings if f.path == path]
    assert matches, f"nothing at {path}; got:\n{format_findings(findings)}"
    return matches[0]


def _mutated(change: Any) -> list[FieldError]:
    spec = modern_spec()
    change(spec)
    return validate(spec)


POOL = "spec.jobSpecification.poolInfo.autoPoolSpecification.pool"
MANAGER = "spec.jobSpecification.jobManagerTask"


def test_modern_spec_is_clean() -> None:
    assert validate(modern_spec()) == []


def test_seed_2016_names_are_rejected_with_the_modern_name() -> None:
    seed = json.loads(SEED.read_text())
    findings = validate(seed)
    assert "targetDedicatedNodes" in _at(findings, f"{POOL}.targetDedicated").message
    assert "taskSlotsPerNode" in _at(findings, f"{POOL}.maxTasksPerNode").message
    assert "elevationLevel: admin" in _at(findings, f"{MANAGER}.runElevated").message
    assert "elevationLevel" in _at(findings, f"{POOL}.startTask.runElevated").message
    blob_source = _at(findings, f"{MANAGER}.resourceFiles[0].blobSource").message
    assert "httpUrl" in blob_source and "blob: {container, path}" in blob_source
    assert "scheduleId" in _at(findings, "spec.id").message
    assert _at(findings, "spec.odata.metadata").is_error
    assert "'spread'" in _at(findings, f"{POOL}.taskSchedulingPolicy.nodeFillType").message
    retired = _at(findings, f"{POOL}.virtualMachineConfiguration.nodeAgentSKUId")
    assert retired.severity == "warning" and "batch.node.ubuntu 24.04" in retired.message
    # no noise: the resource file's one-of rule is not reported on top of blobSource
    assert not [f for f in findings if f.path == f"{MANAGER}.resourceFiles[0]"]


def test_legacy_name_in_the_wrong_place_still_names_the_modern_one() -> None:
    findings = _mutated(lambda s: s["jobSpecification"].__setitem__("targetDedicated", 2))
    assert "targetDedicatedNodes" in _at(findings, "spec.jobSpecification.targetDedicated").message


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("comandLine", "commandLine"), ("CommandLine", "commandLine"), ("enviromentSettings", "environmentSettings")],
)
def test_unknown_fields_suggest_the_closest_name(typo: str, suggestion: str) -> None:
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"].__setitem__(typo, "x"))
    finding = _at(findings, f"{MANAGER}.{typo}")
    assert f"did you mean '{suggestion}'" in finding.message and "drop it silently" in finding.message


def test_durations() -> None:
    findings = _mutated(lambda s: s["schedule"].__setitem__("recurrenceInterval", "4 hours"))
    assert "ISO-8601" in _at(findings, "spec.schedule.recurrenceInterval").message
    findings = _mutated(lambda s: s["schedule"].__setitem__("recurrenceInterval", "PT30S"))
    assert "at least 1 minute" in _at(findings, "spec.schedule.recurrenceInterval").message
    findings = _mutated(lambda s: s["schedule"].__setitem__("startWindow", "PT59S"))
    assert "at least 1 minute" in _at(findings, "spec.schedule.startWindow").message
    findings = _mutated(lambda s: s["schedule"].__setitem__("recurrenceInterval", "pt4h"))
    assert "'PT4H'" in _at(findings, "spec.schedule.recurrenceInterval").message
    assert validate({**modern_spec(), "schedule": {"recurrenceInterval": "PT1M", "startWindow": "PT01H00M00S"}}) == []


def test_required_fields() -> None:
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"].pop("commandLine"))
    assert "required" in _at(findings, f"{MANAGER}.commandLine").message
    findings = _mutated(lambda s: s["jobSpecification"].pop("poolInfo"))
    _at(findings, "spec.jobSpecification.poolInfo")
    findings = _mutated(lambda s: s.pop("schedule"))
    _at(findings, "spec.schedule")


def test_enums_and_types() -> None:
    auto = "spec.jobSpecification.poolInfo.autoPoolSpecification"
    findings = _mutated(lambda s: s["jobSpecification"]["poolInfo"]["autoPoolSpecification"].__setitem__(
        "poolLifetimeOption", "Job"))
    assert "write 'job'" in _at(findings, f"{auto}.poolLifetimeOption").message
    findings = _mutated(lambda s: s.__setitem__("deletionPolicy", "Keep"))
    assert "'Delete', 'Orphan'" in _at(findings, "spec.deletionPolicy").message
    findings = _mutated(lambda s: s.__setitem__("suspend", "true"))
    assert "without quotes" in _at(findings, "spec.suspend").message
    findings = _mutated(lambda s: s["jobSpecification"].__setitem__("priority", "high"))
    assert "integer" in _at(findings, "spec.jobSpecification.priority").message
    findings = _mutated(lambda s: s["jobSpecification"].__setitem__("priority", 5000))
    assert "at most 1000" in _at(findings, "spec.jobSpecification.priority").message


def test_blob_references() -> None:
    rf = f"{MANAGER}.resourceFiles[0]"
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]["blob"].__setitem__(
        "container", "My_Container"))
    assert "container name" in _at(findings, f"{rf}.blob.container").message
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]["blob"].__setitem__(
        "prefix", "data/"))
    assert "not both" in _at(findings, f"{rf}.blob").message
    whole_container = _spec_with(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0].__setitem__(
        "blob", {"container": "application"}))
    assert validate(whole_container) == []
    assert validate(_spec_with(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0].pop(
        "filePath"))) == []  # the resolver defaults filePath to the blob's name
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0].__setitem__(
        "httpUrl", "https://x.blob.core.windows.net/c/t.sh"))
    assert "exactly one of httpUrl" in _at(findings, rf).message
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["outputFiles"][0]["destination"]["blob"]
                        .__setitem__("path", "{job}/out"))
    assert "{scheduleId}" in _at(findings, f"{MANAGER}.outputFiles[0].destination.blob.path").message
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["outputFiles"][0]["destination"]["blob"]
                        .__setitem__("path", "{jobId}/out"))
    assert "AZ_BATCH_JOB_ID" in _at(findings, f"{MANAGER}.outputFiles[0].destination.blob.path").message
    for task in ("jobPreparationTask", "jobReleaseTask"):  # resolved there too: accepted, checked alike
        assert validate(_spec_with(lambda s, t=task: s["jobSpecification"].__setitem__(t, {
            "commandLine": "true", "resourceFiles": [{"blob": {"container": "app", "path": "p.sh"}}]}))) == []
        findings = _mutated(lambda s, t=task: s["jobSpecification"].__setitem__(t, {
            "commandLine": "true", "resourceFiles": [{"blob": {"container": "app", "path": "p", "prefix": "q"}}]}))
        assert "not both" in _at(findings, f"spec.jobSpecification.{task}.resourceFiles[0].blob").message
    # one message per problem: the container name is reported by the schema check only
    findings = _mutated(lambda s: s["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]["blob"].__setitem__(
        "container", "x"))
    assert len([f for f in findings if "container" in f.path]) == 1


def test_sas_in_the_spec_is_a_warning() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["jobSpecification"]["jobManagerTask"]["resourceFiles"][0] = {
            "httpUrl": "https://a.blob.core.windows.net/app/task.sh?sv=2024&sig=abc", "filePath": "task.sh"}
    finding = _at(_mutated(change), f"{MANAGER}.resourceFiles[0].httpUrl")
    assert finding.severity == "warning" and "blob reference" in finding.message


def test_names_and_ids() -> None:
    findings = _mutated(lambda s: s["account"]["credentialsSecretRef"].__setitem__("name", "Batch_Creds"))
    assert "Secret name" in _at(findings, "spec.account.credentialsSecretRef.name").message
    findings = _mutated(lambda s: s.__setitem__("scheduleId", "my.schedule"))
    assert "letters, digits, hyphens and underscores" in _at(findings, "spec.scheduleId").message
    findings = _mutated(lambda s: s["jobSpecification"]["poolInfo"]["autoPoolSpecification"].__setitem__(
        "autoPoolIdPrefix", "p" * 21))
    prefix = _at(findings, "spec.jobSpecification.poolInfo.autoPoolSpecification.autoPoolIdPrefix")
    assert "at most 20" in prefix.message


def test_pool_sizing_and_pool_info() -> None:
    findings = _mutated(lambda s: s["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"].pop(
        "targetDedicatedNodes"))
    assert "targetLowPriorityNodes" in _at(findings, f"{POOL}.targetDedicatedNodes").message
    findings = _mutated(lambda s: s["jobSpecification"]["poolInfo"].__setitem__("poolId", "shared"))
    assert "exactly one of poolId, autoPoolSpecification" in _at(findings, "spec.jobSpecification.poolInfo").message
    findings = _mutated(lambda s: s["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"].__setitem__(
        "enableAutoScale", True))
    assert _at(findings, f"{POOL}.autoScaleFormula").is_error
    assert "enableAutoScale" in _at(findings, f"{POOL}.targetDedicatedNodes").message


def test_job_that_never_finishes_is_a_warning() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["jobSpecification"]["jobManagerTask"]["killJobOnCompletion"] = False
        spec["jobSpecification"].pop("constraints")
    findings = _mutated(change)
    finding = _at(findings, f"{MANAGER}.killJobOnCompletion")
    assert finding.severity == "warning" and "blocks every later recurrence" in finding.message
    assert errors_only(findings) == []

    def terminating(spec: dict[str, Any]) -> None:
        change(spec)
        spec["jobSpecification"]["onAllTasksComplete"] = "terminatejob"
    assert validate(_spec_with(terminating)) == []


def _spec_with(change: Any) -> dict[str, Any]:
    spec = modern_spec()
    change(spec)
    return spec


def test_reserved_and_duplicate_metadata() -> None:
    findings = _mutated(lambda s: s["metadata"].append({"name": "azurebatch.dev/owner", "value": "me"}))
    assert "written by the operator" in _at(findings, "spec.metadata[1].name").message
    findings = _mutated(lambda s: s["metadata"].append({"name": "myproperty", "value": "again"}))
    assert "duplicate" in _at(findings, "spec.metadata[1].name").message


def test_nulls_are_ignored_like_the_api_server_does() -> None:
    spec = modern_spec()
    spec["schedule"]["startWindow"] = None
    assert validate(spec) == []


def test_not_a_mapping() -> None:
    assert validate([]) == [FieldError("spec", "expected an object (mapping), got a list")]  # type: ignore[arg-type]


def test_validate_resource_checks_annotations_and_envelope() -> None:
    resource = {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": "wordcount", "annotations": {"azurebatch.dev/reconcile-policy": "observe"}},
        "spec": modern_spec(),
    }
    findings = validate_resource(resource)
    assert [f.path for f in findings] == ["metadata.annotations[azurebatch.dev/reconcile-policy]"]
    resource["metadata"]["annotations"] = {"azurebatch.dev/adopt": "true", "azurebatch.dev/reconcile-policy": "skip"}
    assert validate_resource(resource) == []
    broken = copy.deepcopy(resource)
    broken["kind"] = "CronJob"
    del broken["spec"]
    assert {f.path for f in validate_resource(broken)} == {"kind", "spec"}


def test_findings_read_well() -> None:
    finding = FieldError("spec.x", "fix it", "warning")
    assert str(finding) == "warning: spec.x: fix it"
    text = format_findings([finding, FieldError("spec.y", "broken")])
    assert text.splitlines() == ["spec.y: broken", "warning: spec.x: fix it"]
