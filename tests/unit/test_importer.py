"""Import: a live schedule (as Batch returns it, read-time defaults included) -> the adopting resource."""

from __future__ import annotations

import copy
from typing import Any

from batchop.cli.commands.import_ import placeholder_resolver
from batchop.spec import importer, mapping, validation
from batchwire import defaults


def live(**extra: Any) -> dict[str, Any]:
    job_spec = defaults.apply_job_specification_defaults({
        "priority": 5,
        "constraints": {"maxWallClockTime": "PT1H"},
        "jobManagerTask": {"id": "main", "commandLine": "/bin/true",
                           "environmentSettings": [{"name": "A", "value": "1"}]},
        "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "l", "poolLifetimeOption": "jobschedule",
                                               "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1}}},
    })
    out = {"odata.metadata": "https://a.westeurope.batch.azure.com/$metadata#jobschedules/@Element",
           "id": "Legacy_1", "url": "https://a/jobschedules/Legacy_1", "eTag": "0x8D", "lastModified": "x",
           "creationTime": "2026-01-01T00:00:00Z", "state": "active", "stateTransitionTime": "x",
           "schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": job_spec,
           "executionInfo": {"nextRunTime": "2026-01-01T01:00:00Z", "recentJob": {"id": "Legacy_1:job-1"}},
           "metadata": [{"name": "team", "value": "data"}]}
    out.update(extra)
    return out


def test_import_writes_only_what_a_user_would_write() -> None:
    result = importer.import_schedule(live(), namespace="batch")
    res = result.resource
    assert res["metadata"] == {"name": "legacy-1", "namespace": "batch",
                               "annotations": {"azurebatch.dev/adopt": "true"}}
    spec = res["spec"]
    assert list(spec) == ["scheduleId", "schedule", "jobSpecification", "metadata"]
    assert spec["scheduleId"] == "Legacy_1"
    assert spec["jobSpecification"] == {
        "priority": 5,
        "constraints": {"maxWallClockTime": "PT1H"},
        "jobManagerTask": {"id": "main", "commandLine": "/bin/true",
                           "environmentSettings": [{"name": "A", "value": "1"}]},
        "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "l", "poolLifetimeOption": "jobschedule",
                                               "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1}}},
    }
    assert spec["metadata"] == [{"name": "team", "value": "data"}]
    assert not validation.errors_only(validation.validate_resource(res))
    assert importer.unchanged_check(res, live()) == []


def test_a_disabled_schedule_is_imported_suspended_and_marks_are_reported() -> None:
    marked = live(state="disabled", metadata=[*mapping.owner_marks(owner="a/b", uid="u"), {"name": "k", "value": "v"}])
    result = importer.import_schedule(marked)
    assert result.resource["spec"]["suspend"] is True
    assert result.resource["spec"]["metadata"] == [{"name": "k", "value": "v"}]
    assert any("managed by a/b" in n.message for n in result.notes)
    assert importer.unchanged_check(result.resource, marked) == []


def test_sas_urls_become_blob_references_and_the_check_still_finds_nothing() -> None:
    schedule = live()
    schedule["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://acct.blob.core.windows.net/app/task.sh?sv=1&se=x&sig=SECRET", "filePath": "task.sh"}]
    result = importer.import_schedule(schedule)
    files = result.resource["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"]
    assert files == [{"blob": {"container": "app", "path": "task.sh"}, "filePath": "task.sh"}]
    assert result.resource["spec"]["storage"] == {"accountUrl": "https://acct.blob.core.windows.net"}
    assert "SECRET" not in str(result.resource)
    assert any(n.kind == "removed-sas" for n in result.notes)
    resolver = placeholder_resolver(result.storage_accounts[0])
    assert importer.unchanged_check(result.resource, schedule, resolve_blobs=resolver) == []
    assert importer.unchanged_check(result.resource, schedule) != [], "unresolved references differ from URLs"


def test_the_check_names_what_would_change() -> None:
    result = importer.import_schedule(live())
    edited = copy.deepcopy(result.resource)
    edited["spec"]["jobSpecification"]["priority"] = 7
    assert importer.unchanged_check(edited, live()) == ["jobSpecification.priority"]


def test_strip_defaults_drops_whole_default_objects_only() -> None:
    job_spec = defaults.apply_job_specification_defaults({"jobManagerTask": {"id": "m", "commandLine": "x",
                                                                             "runExclusive": False}})
    stripped = importer.strip_defaults("jobSpecification", job_spec)
    assert stripped == {"jobManagerTask": {"id": "m", "commandLine": "x", "runExclusive": False}}


def test_notes_about_accounts_and_history() -> None:
    result = importer.import_schedule(live(), account_endpoint="https://a.westeurope.batch.azure.com",
                                      completed_jobs=12)
    assert result.resource["spec"]["account"] == {"endpoint": "https://a.westeurope.batch.azure.com"}
    assert any("12 completed" in n.message for n in result.notes)


def test_import_cli_needs_an_account(monkeypatch: Any, capsys: Any) -> None:
    from batchop.cli import main as cli

    for name in ("BATCHOP_BATCH_ENDPOINT", "BATCHOP_BATCH_ACCOUNT", "BATCHOP_BATCH_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["import", "some-schedule"]) == 2
    assert "--account-endpoint" in capsys.readouterr().err
