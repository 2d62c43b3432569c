"""Request validation of the local Batch service (the wire schema is generated from the SDK)."""

from __future__ import annotations

from typing import Any

import pytest

from localbatch import validation, wireschema
from localbatch.errors import BatchError


def body(**spec: Any) -> dict[str, Any]:
    return {
        "id": "s1",
        "schedule": {"recurrenceInterval": "PT01H00M00S", "doNotRunUntil": "2025-06-01T00:00:00Z"},
        "jobSpecification": {"poolInfo": {"poolId": "p"}, **spec},
    }


def test_normalises_durations_and_timestamps() -> None:
    out = validation.schedule_create(body(constraints={"maxWallClockTime": "P0DT02H00M00S"}))
    assert out["schedule"] == {"recurrenceInterval": "PT1H", "doNotRunUntil": "2025-06-01T00:00:00.0000000Z"}
    assert out["jobSpecification"]["constraints"] == {"maxWallClockTime": "PT2H"}


def test_enums_are_the_sdk_wire_values() -> None:
    assert wireschema.ENUMS["BatchAllTasksCompleteMode"] == ["noaction", "terminatejob"]
    assert "dockerCompatible" in wireschema.ENUMS["ContainerType"]
    out = validation.schedule_create(body(onAllTasksComplete="TerminateJob"))
    assert out["jobSpecification"]["onAllTasksComplete"] == "terminatejob"  # stored in the wire casing
    with pytest.raises(BatchError) as info:
        validation.schedule_create(body(onAllTasksComplete="terminate"))
    assert ("PropertyName", "onAllTasksComplete") in info.value.values


def test_seed_shape_is_read_like_batch() -> None:
    auto = {
        "poolLifetimeOption": "Job",
        "pool": {"vmSize": "x", "taskSchedulingPolicy": {"nodeFillType": "spread"}},
    }
    out = validation.schedule_create({**body(poolInfo={"autoPoolSpecification": auto}), "odata.metadata": "x"})
    assert "odata.metadata" not in out
    pool_info = out["jobSpecification"]["poolInfo"]["autoPoolSpecification"]
    assert pool_info["poolLifetimeOption"] == "job"
    assert pool_info["pool"]["taskSchedulingPolicy"] == {"nodeFillType": "Spread"}


@pytest.mark.parametrize("renamed", ["targetDedicated", "maxTasksPerNode"])
def test_2016_pool_names_are_refused_with_the_new_name(renamed: str) -> None:
    auto = {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {"vmSize": "x", renamed: 1}}}
    with pytest.raises(BatchError) as info:
        validation.schedule_create(body(poolInfo=auto))
    assert info.value.code == "InvalidRequestBody"
    reason = dict(info.value.values)["Reason"]
    assert renamed in reason and ("targetDedicatedNodes" in reason or "taskSlotsPerNode" in reason)


def test_pool_info_needs_exactly_one_source() -> None:
    with pytest.raises(BatchError):
        validation.schedule_create(body(poolInfo={}))
    auto = {"poolLifetimeOption": "job", "pool": {"vmSize": "x"}, "autoPoolIdPrefix": "x" * 21}
    with pytest.raises(BatchError) as info:
        validation.schedule_create(body(poolInfo={"autoPoolSpecification": auto}))
    assert ("PropertyName", "autoPoolIdPrefix") in info.value.values


def test_update_rules() -> None:
    assert validation.schedule_update({"metadata": []}, replace=False) == {"metadata": []}
    with pytest.raises(BatchError) as info:
        validation.schedule_update({"schedule": {}}, replace=True)
    assert info.value.code == "MissingRequiredProperty"
    with pytest.raises(BatchError):
        validation.schedule_update({"id": "x"}, replace=False)
    with pytest.raises(BatchError):
        validation.schedule_update([], replace=False)
