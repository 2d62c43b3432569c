"""Desired bodies against the local Batch service through the unmodified SDK: what Batch reads back compares equal.

The operator writes only when :func:`batchop.spec.diff.changed_properties` says so; if the normalisation missed
anything Batch does to a schedule (defaults, duration format, metadata order), it would update forever.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.batch import models as batch_models

from batchop.blob import refs as blobrefs
from batchop.spec import conversion, diff, mapping
from batchwire import azurite
from tests.unit.test_spec_diff import resolved_spec


@pytest.fixture(scope="module")
def batch(local_batch_factory: Callable[..., Any]) -> Any:
    service = local_batch_factory("--no-execute")
    client = service.client()
    yield client
    client.close()


def _create(batch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    schedule_id = f"roundtrip-{uuid.uuid4().hex[:8]}"
    body = mapping.desired_schedule(spec, schedule_id=schedule_id, owner="default/roundtrip", uid="uid-1")
    batch.create_job_schedule(batch_models.BatchJobScheduleCreateOptions(body))
    return body


def _create_resolved(batch: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Create with blob references resolved the operator's way (placeholder SAS: nothing is downloaded here)."""
    schedule_id = f"roundtrip-{uuid.uuid4().hex[:8]}"
    body = mapping.desired_schedule(spec, schedule_id=schedule_id, owner="default/roundtrip", uid="uid-1")
    body["jobSpecification"] = blobrefs.resolve_offline(body["jobSpecification"], account_url=azurite.BLOB_URL,
                                                        schedule_id=schedule_id,
                                                        expiry=datetime.now(UTC) + timedelta(days=1))
    batch.create_job_schedule(batch_models.BatchJobScheduleCreateOptions(body))
    return body


def _observed(batch: Any, schedule_id: str) -> dict[str, Any]:
    return dict(batch.get_job_schedule(schedule_id).as_dict())


def _listed(batch: Any, schedule_id: str) -> dict[str, Any]:
    """What the operator's poller sees: a listed model's raw JSON (``_data``), with ``$select``."""
    from batchop.controller.poller import SCHEDULE_SELECT

    found = [item._data for item in batch.list_job_schedules(select=SCHEDULE_SELECT) if item.id == schedule_id]
    return dict(found[0])


def test_created_schedule_reads_back_equal(batch: Any) -> None:
    body = _create(batch, resolved_spec())
    observed = _observed(batch, body["id"])
    assert observed["jobSpecification"] != body["jobSpecification"]  # Batch added its defaults
    assert diff.changed_properties(body, observed) == [], diff.differences(body, observed)
    listed = _listed(batch, body["id"])
    assert diff.changed_properties(body, listed) == [], diff.differences(body, listed)
    assert mapping.is_owned_by(observed, owner="default/roundtrip", uid="uid-1")


def test_converted_2016_seed_reads_back_equal(batch: Any) -> None:
    """The seed's start task has no maxTaskRetryCount: its read-time default must not look like drift."""
    seed = Path(__file__).resolve().parents[2] / "examples" / "legacy" / "create_jobsched.json"
    spec = conversion.convert(json.loads(seed.read_text())).resource["spec"]
    spec.pop("scheduleId")
    body = _create_resolved(batch, spec)
    for observed in (_observed(batch, body["id"]), _listed(batch, body["id"])):
        assert diff.changed_properties(body, observed) == [], diff.differences(body, observed)


def test_sdk_style_durations_read_back_equal(batch: Any) -> None:
    spec = resolved_spec()
    spec["schedule"] = {"recurrenceInterval": "PT04H00M00S", "startWindow": "PT01H30M00S"}
    spec["jobSpecification"]["constraints"]["maxWallClockTime"] = "PT01H00M00S"
    body = _create(batch, spec)
    observed = _observed(batch, body["id"])
    assert observed["schedule"]["recurrenceInterval"] == "PT4H"
    assert diff.changed_properties(body, observed) == []


def test_patch_of_changed_properties_converges(batch: Any) -> None:
    body = _create(batch, resolved_spec())
    spec = resolved_spec()
    spec["schedule"]["recurrenceInterval"] = "PT2H"
    spec["jobSpecification"]["jobManagerTask"]["commandLine"] = "/bin/bash -c 'echo v2'"
    desired = mapping.desired_schedule(spec, schedule_id=body["id"], owner="default/roundtrip", uid="uid-1")
    observed = _observed(batch, body["id"])
    changed = diff.changed_properties(desired, observed)
    assert changed == ["schedule", "jobSpecification"]
    batch.update_job_schedule(body["id"], batch_models.BatchJobScheduleUpdateOptions(
        mapping.update_body(desired, changed)))
    assert diff.changed_properties(desired, _observed(batch, body["id"])) == []
