"""`batchop convert`: job-schedule JSON of any vintage -> a valid BatchJobSchedule in today's names."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchop.cli import main as cli
from batchop.spec import conversion
from batchop.spec.validation import errors_only, validate_resource

SEED = Path(__file__).resolve().parents[2] / "examples" / "legacy" / "create_jobsched.json"
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def seed() -> dict[str, Any]:
    return json.loads(SEED.read_text())


def _kinds(result: conversion.Conversion) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for note in result.notes:
        out.setdefault(note.kind, []).append(note.path)
    return out


def test_seed_converts_to_a_valid_resource_in_todays_names() -> None:
    result = conversion.convert(seed(), namespace="default", now=NOW)
    resource = result.resource
    assert resource["apiVersion"] == "azurebatch.dev/v1alpha1" and resource["kind"] == "BatchJobSchedule"
    assert resource["metadata"] == {"name": "myjobschedule1", "namespace": "default"}
    spec = resource["spec"]
    assert spec["scheduleId"] == "myjobschedule1"
    assert errors_only(validate_resource(resource)) == []
    text = json.dumps(spec)
    for old in ("targetDedicated\"", "maxTasksPerNode", "runElevated", "blobSource", "odata", "14.04", "Spread"):
        assert old not in text, old
    pool = spec["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]
    assert pool["targetDedicatedNodes"] == 1 and pool["taskSlotsPerNode"] == 1
    assert list(pool).index("targetDedicatedNodes") == 3  # renamed in place, not moved to the end
    assert pool["virtualMachineConfiguration"] == {
        "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
        "nodeAgentSKUId": "batch.node.ubuntu 24.04",
    }
    manager = spec["jobSpecification"]["jobManagerTask"]
    assert manager["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}
    assert manager["resourceFiles"] == [
        {"blob": {"container": "application", "path": "task.sh"}, "filePath": "task.sh"}]
    start = pool["startTask"]
    assert start["resourceFiles"][0]["blob"] == {"container": "application", "path": "starttask.sh"}
    assert start["userIdentity"]["autoUser"]["elevationLevel"] == "admin"
    assert manager["killJobOnCompletion"] is False  # behaviour kept; validation warns about it
    assert "storage" not in spec  # placeholders name no account


def test_seed_every_change_is_reported() -> None:
    kinds = _kinds(conversion.convert(seed(), now=NOW))
    pool = "jobSpecification.poolInfo.autoPoolSpecification.pool"
    assert set(kinds["renamed"]) == {
        "jobSpecification.jobManagerTask.runElevated", f"{pool}.targetDedicated", f"{pool}.maxTasksPerNode",
        f"{pool}.startTask.runElevated", f"{pool}.taskSchedulingPolicy.nodeFillType",
    }
    assert kinds["replaced"] == [f"{pool}.virtualMachineConfiguration"]
    assert len(kinds["guess"]) == 2 and all(p.endswith(".blob") for p in kinds["guess"])
    assert "odata.metadata" in kinds["dropped"]
    assert "schedule.doNotRunUntil" in kinds["warning"]  # 2016: runs at once


def test_keep_images_flags_instead_of_replacing() -> None:
    result = conversion.convert(seed(), keep_images=True, now=NOW)
    vm = result.resource["spec"]["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"][
        "virtualMachineConfiguration"]
    assert vm["nodeAgentSKUId"] == "batch.node.ubuntu 14.04"
    flagged = [n for n in result.notes if n.kind == "warning" and n.path.endswith("virtualMachineConfiguration")]
    assert flagged and "batch.node.ubuntu 24.04" in flagged[0].message


def modern_json() -> dict[str, Any]:
    return {
        "id": "Nightly_Report",
        "displayName": "nightly",
        "url": "https://acct.westeurope.batch.azure.com/jobschedules/Nightly_Report",
        "eTag": "0x1",
        "schedule": {"recurrenceInterval": "P1D"},
        "jobSpecification": {
            "jobManagerTask": {
                "id": "report",
                "commandLine": "/bin/sh -c ./run.sh",
                "resourceFiles": [
                    {"httpUrl": "https://mystore.blob.core.windows.net/scripts/run.sh?sv=2020&sp=r&sig=abc%2B",
                     "filePath": "run.sh"},
                    {"storageContainerUrl": "https://mystore.blob.core.windows.net/input?sv=2020&sp=rl&sig=xyz",
                     "blobPrefix": "2024/"},
                    {"httpUrl": "https://other.blob.core.windows.net/c/x.sh?sig=zzz", "filePath": "x.sh"},
                    {"httpUrl": "https://example.com/tool.sh", "filePath": "tool.sh"},
                ],
                "outputFiles": [{
                    "filePattern": "out/**/*",
                    "destination": {"container": {
                        "containerUrl": "https://mystore.blob.core.windows.net/output?sv=1&sp=cw&sig=www",
                        "path": "reports"}},
                    "uploadOptions": {"uploadCondition": "TaskSuccess"},
                }],
            },
            "poolInfo": {"poolId": "shared-pool"},
        },
        "metadata": [{"name": "azurebatch.dev/owner", "value": "x/y"}, {"name": "team", "value": "data"}],
    }


def test_sas_urls_become_blob_references_and_tokens_are_gone() -> None:
    result = conversion.convert(modern_json(), now=NOW)
    spec = result.resource["spec"]
    assert "sig=" not in json.dumps(result.resource)
    assert result.resource["metadata"]["name"] == "nightly-report" and spec["scheduleId"] == "Nightly_Report"
    files = spec["jobSpecification"]["jobManagerTask"]["resourceFiles"]
    assert files[0] == {"blob": {"container": "scripts", "path": "run.sh"}, "filePath": "run.sh"}
    assert files[1] == {"blob": {"container": "input", "prefix": "2024/"}}
    assert files[2] == {"httpUrl": "https://other.blob.core.windows.net/c/x.sh", "filePath": "x.sh"}
    assert files[3] == {"httpUrl": "https://example.com/tool.sh", "filePath": "tool.sh"}
    output = spec["jobSpecification"]["jobManagerTask"]["outputFiles"][0]
    assert output["destination"] == {"blob": {"container": "output", "path": "reports"}}
    assert output["uploadOptions"]["uploadCondition"] == "tasksuccess"
    assert spec["storage"] == {"accountUrl": "https://mystore.blob.core.windows.net"}
    assert spec["metadata"] == [{"name": "team", "value": "data"}]
    kinds = _kinds(result)
    assert len(kinds["removed-sas"]) == 4
    assert all("revoke" in n.message for n in result.notes if n.kind == "removed-sas")
    assert {"url", "eTag", "displayName", "metadata"} <= set(kinds["dropped"])
    assert errors_only(validate_resource(result.resource)) == []


def test_azurite_urls_use_the_operators_default_account() -> None:
    document = modern_json()
    document["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "http://127.0.0.1:10000/devstoreaccount1/application/task.sh?sv=1&sig=abc", "filePath": "t.sh"}
    ]
    document["jobSpecification"]["jobManagerTask"].pop("outputFiles")
    result = conversion.convert(document, now=NOW)
    spec = result.resource["spec"]
    assert spec["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]["blob"] == {
        "container": "application", "path": "task.sh"}
    assert "storage" not in spec


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://acct.blob.core.windows.net/c/a/b.txt?sig=x", ("https://acct.blob.core.windows.net", "c", "a/b.txt")),
        ("http://localhost:10000/devstoreaccount1/c", ("http://localhost:10000/devstoreaccount1", "c", "")),
        ("https://example.com/c/x", None),
        ("yourbloburi&sas", None),
    ],
)
def test_blob_location(url: str, expected: tuple[str, str, str] | None) -> None:
    location = conversion.blob_location(url)
    assert (location and (location.account_url, location.container, location.path)) == expected


def test_refuses_what_is_not_a_job_schedule() -> None:
    with pytest.raises(ValueError, match="jobSpecification"):
        conversion.convert({"id": "x"})
    with pytest.raises(ValueError, match="already a BatchJobSchedule"):
        conversion.convert({"kind": "BatchJobSchedule", "jobSpecification": {}})


def test_cli_converts_the_seed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["convert", str(SEED), "--name", "wordcount", "--namespace", "demo"]) == 0
    out, err = capsys.readouterr()
    resource = yaml.safe_load(out)
    assert resource["metadata"] == {"name": "wordcount", "namespace": "demo"}
    assert "targetDedicated -> targetDedicatedNodes" in err and "GUESS" in err
    assert "check: warning: spec.jobSpecification.jobManagerTask.killJobOnCompletion" in err
    assert "converted" in err.splitlines()[-1]
    target = tmp_path / "out.yaml"
    assert cli.main(["convert", str(SEED), "-o", str(target)]) == 0
    assert yaml.safe_load(target.read_text())["spec"]["scheduleId"] == "myjobschedule1"


def test_cli_invalid_input_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["convert", str(bad)]) == 3
    assert "not valid JSON" in capsys.readouterr().err
    assert cli.main(["convert", str(tmp_path / "missing.json")]) == 3
    still_invalid = tmp_path / "still.json"
    document = modern_json()
    document["jobSpecification"]["jobManagerTask"].pop("commandLine")
    still_invalid.write_text(json.dumps(document))
    assert cli.main(["convert", str(still_invalid)]) == 3
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["kind"] == "BatchJobSchedule"  # printed anyway, to be fixed
    assert "jobManagerTask.commandLine" in err


def test_whole_container_url_becomes_a_container_only_reference() -> None:
    document = modern_json()
    document["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"storageContainerUrl": "https://mystore.blob.core.windows.net/input?sv=1&sp=rl&sig=x", "filePath": "in"}]
    result = conversion.convert(document, now=NOW)
    files = result.resource["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"]
    assert files == [{"blob": {"container": "input"}, "filePath": "in"}]
    assert errors_only(validate_resource(result.resource)) == []
