"""Replays the job-schedule flow of the azure-batch SDK's own recorded real traffic against the
local Batch service and compares status codes, Batch headers, defaults, job ids, ETag behaviour
and ``nextRunTime``.

The recording (trimmed copy in ``tests/data/batch_recording_job_schedules.json``, source noted in
it) is ``Azure/azure-sdk-for-python`` ``sdk/batch/azure-batch/tests/recordings/
test_batch.pyTestBatchtest_batch_job_schedules[sync].json``: create, list, get, exists, jobs of the
schedule, disable, enable, PUT, PATCH, terminate, delete, against a real account.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from batchwire import timestamps

RECORDING = Path(__file__).resolve().parents[1] / "data" / "batch_recording_job_schedules.json"
BATCH_HEADERS = ("ETag", "Last-Modified", "Location", "DataServiceId", "DataServiceVersion")


def _send(client: Any, method: str, path: str, body: Any) -> Any:
    request = HttpRequest(method, path, params={"api-version": "2025-06-01"}, json=body)
    try:
        return client.send_request(request)
    except HttpResponseError as exc:
        return exc.response


def _swap(value: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(value).replace(old, new))


def _keys(obj: dict[str, Any]) -> set[str]:
    return set(obj) - {"odata.metadata"}


def test_recorded_job_schedule_flow_replays_identically(local_batch: Any) -> None:
    recording = json.loads(RECORDING.read_text())
    host, recorded_id = recording["host"], recording["scheduleId"]
    schedule_id = f"conformance_{uuid.uuid4().hex[:8]}"
    client = local_batch.client()
    etags: list[str] = []
    created_etag = ""
    for step, entry in enumerate(_swap(recording["entries"], recorded_id, schedule_id)):
        entry = _swap(entry, host, local_batch.endpoint)
        response = _send(client, entry["method"], entry["path"], entry["requestBody"])
        where = f"step {step}: {entry['method']} {entry['path']}"
        assert response.status_code == entry["status"], f"{where}: {response.text()}"
        for name in BATCH_HEADERS:
            if name in entry["responseHeaders"]:
                assert name in response.headers, f"{where}: missing header {name}"
        for name in ("Location", "DataServiceId", "DataServiceVersion"):
            if name in entry["responseHeaders"]:
                assert response.headers[name] == entry["responseHeaders"][name], where
        if entry["method"] == "DELETE":
            assert "ETag" not in response.headers, where  # Batch's delete answer has none
        if "ETag" in response.headers:
            etags.append(response.headers["ETag"])
        expected = entry["responseBody"]
        if expected is None:
            assert response.text() == "", where
            if entry["method"] == "POST" and entry["path"] == "/jobschedules":
                created_etag = response.headers["ETag"]
            continue
        body = response.json()
        assert body["odata.metadata"] == expected["odata.metadata"], where
        if "value" in expected:
            items = [item for item in body["value"] if item["id"].startswith(schedule_id)]
            assert len(items) == len(expected["value"]), where
            pairs = zip(items, expected["value"], strict=True)
        else:
            pairs = iter([(body, expected)])
        for got, want in pairs:
            _compare(got, want, where, created_etag)
    # ETags: the schedule's ETag did not change when Batch created job-1 (create == list == get == head),
    # and changed on every write after that.
    assert etags[0] == created_etag
    writes = etags[-5:]  # disable, enable, PUT, PATCH, terminate
    assert len(set(writes)) == 5 and created_etag not in writes


def _compare(got: dict[str, Any], want: dict[str, Any], where: str, created_etag: str) -> None:
    assert _keys(got) >= _keys(want), f"{where}: missing {_keys(want) - _keys(got)}"
    if ":job-" in want["id"]:  # a job created by the schedule
        assert got["id"] == want["id"]
        assert got["url"] == want["url"]
        for name in (
            "priority",
            "maxParallelTasks",
            "usesTaskDependencies",
            "allowTaskPreemption",
            "constraints",
            "poolInfo",
            "onAllTasksComplete",
            "onTaskFailure",
        ):
            assert got[name] == want[name], f"{where}: job {name}"
        # Batch applies onAllTasksComplete=terminatejob to a job without tasks some time after creating it (the
        # recording caught it still active); the local engine does it at once.
        assert got["state"] in ("active", "terminating", "completed"), where
        assert got["executionInfo"]["poolId"] == want["executionInfo"]["poolId"]
        assert "startTime" in got["executionInfo"]
        return
    assert got["url"] == want["url"] and got["state"] == want["state"], where
    assert got["schedule"] == want["schedule"], f"{where}: schedule normalised as Batch does"
    assert got["jobSpecification"] == want["jobSpecification"], f"{where}: read-time defaults"
    assert list(got["jobSpecification"]) == list(want["jobSpecification"]), f"{where}: property order"
    assert got["eTag"] == created_etag, f"{where}: job creation must not change the schedule's ETag"
    created = timestamps.parse(got["creationTime"])
    assert got["lastModified"] == got["creationTime"] == got["stateTransitionTime"]
    info = got["executionInfo"]
    assert timestamps.parse(info["nextRunTime"]) == created + timedelta(days=1), f"{where}: nextRunTime anchored"
    assert info["recentJob"] == want["executionInfo"]["recentJob"], f"{where}: job-1 created at once"
