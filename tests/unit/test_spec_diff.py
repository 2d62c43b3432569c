"""Desired vs observed: equal when Batch merely echoed the request its own way, different on real changes."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

from azure.batch import models as batch_models
from azure.batch._utils.model_base import SdkJSONEncoder

from batchop.spec import diff, mapping, normalize
from batchwire import defaults, durations
from batchwire.redact import strip_sas
from tests.unit.test_spec_validation import modern_spec


def resolved_spec() -> dict[str, Any]:
    """The modern spec as the blob resolver leaves it: SAS URLs in place of blob references."""
    spec = modern_spec()
    job = spec["jobSpecification"]
    job["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://acct.blob.core.windows.net/application/task.sh?sv=2025-01-05&se=2026&sp=r&sig=AAA%3D",
         "filePath": "task.sh"}
    ]
    job["jobManagerTask"]["outputFiles"][0]["destination"] = {
        "container": {"containerUrl": "https://acct.blob.core.windows.net/output?sv=2025&sp=cw&sig=BBB", "path": "out"}
    }
    job["poolInfo"]["autoPoolSpecification"]["pool"]["startTask"]["resourceFiles"] = [
        {"httpUrl": "http://127.0.0.1:10000/devstoreaccount1/application/starttask.sh?sv=1&sig=CCC",
         "filePath": "starttask.sh"}
    ]
    return spec


def desired() -> dict[str, Any]:
    return mapping.desired_schedule(resolved_spec(), schedule_id="default_wordcount", owner="default/wordcount",
                                    uid="uid-1")


def _normalize_durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalize_durations(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_durations(v) for v in value]
    if isinstance(value, str) and value.startswith("P") and durations.is_duration(value):
        return durations.normalize(value)
    return value


def read_back(body: dict[str, Any]) -> dict[str, Any]:
    """What the local Batch service returns for a created schedule: sent through the SDK's encoder, read-time
    defaults (batchwire.defaults), durations normalised, server fields added, metadata in another order."""
    sent = json.loads(json.dumps(batch_models.BatchJobScheduleCreateOptions(body), cls=SdkJSONEncoder))
    stored = _normalize_durations(sent)
    stored["jobSpecification"] = defaults.apply_job_specification_defaults(stored["jobSpecification"])
    stored["metadata"] = list(reversed(stored["metadata"]))
    stored.update(
        {
            "odata.metadata": "https://acct.batch/$metadata#jobschedules/@Element",
            "url": "https://acct.batch/jobschedules/default_wordcount",
            "eTag": "0x8DBAED6F7336C7A",
            "lastModified": "2026-11-23T21:00:00.0000000Z",
            "creationTime": "2026-11-23T21:00:00.0000000Z",
            "state": "active",
            "stateTransitionTime": "2026-11-23T21:00:00.0000000Z",
            "executionInfo": {"nextRunTime": "2026-11-24T01:00:00.0000000Z",
                              "recentJob": {"id": "default_wordcount:job-1", "url": "https://acct.batch/jobs/x"}},
        }
    )
    return stored


def test_read_back_from_the_local_batch_service_compares_equal() -> None:
    body = desired()
    observed = read_back(body)
    assert observed["jobSpecification"]["constraints"]["maxWallClockTime"] == "PT1H"
    assert observed["jobSpecification"]["jobManagerTask"]["killJobOnCompletion"] is True  # a default appeared
    assert diff.changed_properties(body, observed) == []
    assert diff.differences(body, observed) == []


def test_sdk_timedelta_durations_compare_equal() -> None:
    """A client that built the body with timedelta sends PT04H00M00S; Batch says PT4H."""
    body = desired()
    sent = batch_models.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=4))
    wire = json.loads(json.dumps(sent, cls=SdkJSONEncoder))
    assert wire["recurrenceInterval"] != "PT4H"
    observed = read_back(body)
    body["schedule"]["recurrenceInterval"] = wire["recurrenceInterval"]
    assert diff.changed_properties(body, observed) == []


def test_renewed_sas_alone_is_not_a_change() -> None:
    body = desired()
    observed = read_back(body)
    rf = observed["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]
    rf["httpUrl"] = rf["httpUrl"].replace("sig=AAA%3D", "sig=ZZZ").replace("se=2026", "se=2027")
    assert diff.changed_properties(body, observed) == []


def test_pool_read_time_defaults_are_not_drift() -> None:
    body = desired()
    observed = read_back(body)
    pool = observed["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]
    pool.update(enableAutoScale=False, enableInterNodeCommunication=False, resizeTimeout="PT15M",
                targetLowPriorityNodes=0)
    observed["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["keepAlive"] = False
    assert diff.changed_properties(body, observed) == []


def _changed(change: Any) -> tuple[list[str], list[str]]:
    body = desired()
    observed = read_back(body)
    change(observed)
    return diff.changed_properties(body, observed), diff.differences(body, observed)


def test_real_changes_are_found() -> None:
    props, paths = _changed(lambda o: o["schedule"].__setitem__("recurrenceInterval", "PT2H"))
    assert props == ["schedule"] and paths == ["schedule.recurrenceInterval"]
    props, paths = _changed(lambda o: o["jobSpecification"]["jobManagerTask"].__setitem__("commandLine", "x"))
    assert props == ["jobSpecification"] and paths == ["jobSpecification.jobManagerTask.commandLine"]
    props, _ = _changed(lambda o: o["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"].__setitem__(
        "targetDedicatedNodes", 3))
    assert props == ["jobSpecification"]
    props, _ = _changed(lambda o: o["metadata"].pop())
    assert props == ["metadata"]
    props, _ = _changed(lambda o: o["jobSpecification"]["jobManagerTask"]["environmentSettings"].append(
        {"name": "EXTRA", "value": "1"}))
    assert props == ["jobSpecification"]
    props, _ = _changed(lambda o: o["jobSpecification"]["jobManagerTask"].__setitem__("killJobOnCompletion", False))
    assert props == ["jobSpecification"]


def test_storage_account_change_is_a_change() -> None:
    props, _ = _changed(lambda o: o["jobSpecification"]["jobManagerTask"]["resourceFiles"][0].__setitem__(
        "httpUrl", "https://other.blob.core.windows.net/application/task.sh?sig=AAA"))
    assert props == ["jobSpecification"]


def test_environment_order_matters_metadata_order_does_not() -> None:
    body = desired()
    body["jobSpecification"]["jobManagerTask"]["environmentSettings"] = [{"name": "A", "value": "1"},
                                                                         {"name": "B", "value": "2"}]
    observed = read_back(body)
    assert diff.changed_properties(body, observed) == []
    observed["jobSpecification"]["jobManagerTask"]["environmentSettings"].reverse()
    assert diff.changed_properties(body, observed) == ["jobSpecification"]


def test_schedule_deleted_properties_compare_as_empty() -> None:
    body = desired()
    assert diff.changed_properties(body, {"id": "default_wordcount"}) == ["schedule", "jobSpecification", "metadata"]
    partial = {"schedule": body["schedule"]}
    assert diff.changed_properties(partial, read_back(body)) == []


def test_comparable_keeps_only_patchable_properties_and_does_not_mutate() -> None:
    body = desired()
    before = copy.deepcopy(body)
    form = normalize.comparable(read_back(body))
    assert set(form) == {"schedule", "jobSpecification", "metadata"}
    assert body == before
    assert strip_sas("https://a/b?sv=1&sig=x") == "https://a/b"
    assert strip_sas("https://a/b?comp=list") == "https://a/b?comp=list"
    assert normalize.comparable_property("schedule", {"doNotRunUntil": "2026-04-29T05:30:00Z"}) == {
        "doNotRunUntil": "2026-04-29T05:30:00.0000000Z"}


def test_sdk_models_nested_in_observed_compare_like_dicts() -> None:
    """A listed schedule's raw JSON (``model._data``) can hold nested SDK models (Mappings, not dicts): their
    defaults must be applied too, or the start task's ``maxTaskRetryCount`` looks like drift forever."""
    body = desired()
    observed = read_back(body)
    auto = observed["jobSpecification"]["poolInfo"]["autoPoolSpecification"]
    start = auto["pool"]["startTask"]
    assert "maxTaskRetryCount" not in start
    auto["pool"]["startTask"] = batch_models.BatchStartTask(start)
    assert not isinstance(auto["pool"]["startTask"], dict)
    observed["jobSpecification"] = batch_models.BatchJobSpecification(observed["jobSpecification"])
    assert diff.changed_properties(body, observed) == []
