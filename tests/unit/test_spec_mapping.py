"""The Batch request bodies built from a spec: create body with owner marks, PATCH bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from azure.batch import models as batch_models

from batchop.spec import mapping
from tests.unit.test_spec_validation import modern_spec


def desired() -> dict:
    return mapping.desired_schedule(modern_spec(), schedule_id="default_wordcount", owner="default/wordcount",
                                    uid="9f1c-uid")


def test_create_body_shape() -> None:
    body = desired()
    assert list(body) == ["id", "schedule", "jobSpecification", "metadata"]
    assert body["id"] == "default_wordcount"
    assert body["schedule"] == modern_spec()["schedule"]
    assert body["jobSpecification"] == modern_spec()["jobSpecification"]  # blob refs left for the resolver
    assert body["metadata"] == [
        {"name": "myproperty", "value": "myvalue"},
        {"name": "azurebatch.dev/owner", "value": "default/wordcount"},
        {"name": "azurebatch.dev/uid", "value": "9f1c-uid"},
    ]
    for operator_field in ("account", "storage", "suspend", "deletionPolicy"):
        assert operator_field not in body and operator_field not in body["jobSpecification"]
    json.dumps(body)  # wire-ready


def test_create_body_is_what_the_sdk_sends() -> None:
    """The SDK's own model accepts the body and serialises the same wire names back."""
    spec = modern_spec()
    for task in (spec["jobSpecification"]["jobManagerTask"],
                 spec["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]["startTask"]):
        task["resourceFiles"] = [{"httpUrl": "https://a.blob.core.windows.net/app/t.sh", "filePath": "t.sh"}]
    spec["jobSpecification"]["jobManagerTask"].pop("outputFiles")
    body = mapping.desired_schedule(spec, schedule_id="s", owner="ns/n", uid="u")
    model = batch_models.BatchJobScheduleCreateOptions(body)
    assert model.job_specification.pool_info.auto_pool_specification.pool.target_dedicated_nodes == 1
    assert model.job_specification.job_manager_task.user_identity.auto_user.elevation_level == "admin"
    assert model.as_dict() == body


def test_none_dropped_and_timestamps_stringified() -> None:
    spec = modern_spec()
    spec["schedule"] = {"doNotRunUntil": datetime(2026, 4, 29, 5, 30, tzinfo=UTC), "startWindow": None}
    body = mapping.desired_schedule(spec, schedule_id="s", owner="ns/n", uid="u")
    assert body["schedule"] == {"doNotRunUntil": "2026-04-29T05:30:00.0000000Z"}


def test_omitted_schedule_is_run_once_now() -> None:
    spec = modern_spec()
    del spec["schedule"]
    assert mapping.desired_schedule(spec, schedule_id="s", owner="ns/n", uid="u")["schedule"] == {}


def test_stale_marks_in_user_metadata_are_replaced() -> None:
    spec = modern_spec()
    spec["metadata"].append({"name": "azurebatch.dev/owner", "value": "someone/else"})
    body = mapping.desired_schedule(spec, schedule_id="s", owner="ns/n", uid="u")
    assert mapping.marks_of(body) == {"azurebatch.dev/owner": "ns/n", "azurebatch.dev/uid": "u"}


def test_ownership_checks() -> None:
    body = desired()
    assert mapping.is_owned_by(body, owner="default/wordcount", uid="9f1c-uid")
    assert mapping.is_owned_by(body, owner="default/wordcount")
    assert not mapping.is_owned_by(body, owner="default/wordcount", uid="other")
    assert not mapping.is_owned_by(body, owner="other/wordcount")
    assert not mapping.is_owned_by({"id": "x"}, owner="default/wordcount")
    assert mapping.without_owner_marks(body["metadata"]) == [{"name": "myproperty", "value": "myvalue"}]


def test_update_body_sends_whole_properties() -> None:
    body = desired()
    patch = mapping.update_body(body, ["jobSpecification", "metadata"])
    assert patch == {"jobSpecification": body["jobSpecification"], "metadata": body["metadata"]}
    patch["jobSpecification"]["priority"] = 1
    assert body["jobSpecification"]["priority"] == 100  # a copy
    with pytest.raises(ValueError, match="cannot be changed"):
        mapping.update_body(body, ["id"])


def test_requires_a_job_specification() -> None:
    with pytest.raises(ValueError, match="jobSpecification"):
        mapping.desired_schedule({"schedule": {}}, schedule_id="s", owner="ns/n", uid="u")
