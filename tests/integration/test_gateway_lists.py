"""The gateway's listings (raw wire JSON through the SDK client's pipeline) against the local Batch service:
the same items the SDK's own pagers give, across pages, with ``$filter`` and ``$select``; errors classified
as for any other call; throttling retried by the SDK's retry policy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential

from batchop.batch import gateway as gw
from batchop.batch.gateway import BatchError, Gateway, Limits


def _raw(item: Any) -> dict[str, Any]:
    """The wire JSON behind an SDK model (the SDK's models are mappings over their raw JSON), to compare the
    gateway's raw reads with what the SDK reads."""
    if isinstance(item, dict):
        return item
    data = getattr(item, "_data", None)
    return data if isinstance(data, dict) else dict(item)


def _body(schedule_id: str) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "schedule": {"recurrenceInterval": "P1D"},
        "jobSpecification": {"poolInfo": {"poolId": "nopool"}, "metadata": [{"name": "k", "value": "v w"}]},
    }


@pytest.fixture
async def gateway(local_batch: Any) -> AsyncIterator[Gateway]:
    g = Gateway(local_batch.endpoint, AzureNamedKeyCredential(local_batch.account, local_batch.key),
                limits=Limits(requests_per_second=1000, retry_backoff_factor=0.05))
    try:
        yield g
    finally:
        await g.close()


async def test_listing_equals_the_sdk_pager_across_pages(gateway: Gateway, aio_batch_client: Any,
                                                         local_batch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"gl{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}_{i}" for i in range(5)]
    for schedule_id in ids:
        await gateway.create_schedule(_body(schedule_id))
    query = " or ".join(f"id eq '{i}'" for i in ids[:4])  # quotes and spaces, percent-encoded
    select = ["id", "state", "eTag", "jobSpecification", "metadata"]

    monkeypatch.setattr(gw, "LIST_PAGE_SIZE", 3)  # 4 matches: two pages, the second via odata.nextLink
    local_batch.reset_counts()
    listed = await gateway.list_schedules(filter=query, select=select)
    assert local_batch.count("list_job_schedules") == 2
    assert local_batch.counts()["list_job_schedules"]["nextPages"] == 1  # the admin counts tell pages apart
    assert gateway.stats.requests["list_schedules"] == 1  # one listing, whatever its pages

    pager = [_raw(s) async for s in aio_batch_client.list_job_schedules(filter=query, select=select)]
    assert sorted(s["id"] for s in listed) == sorted(ids[:4])
    assert sorted(listed, key=lambda s: s["id"]) == sorted(pager, key=lambda s: s["id"])
    assert all(type(s) is dict and set(s) <= {*select, "url"} for s in listed)
    assert {"name": "k", "value": "v w"} in listed[0]["jobSpecification"]["metadata"]

    jobs = await gateway.list_jobs(filter=f"startswith(id, '{prefix}')", select=["id", "state"])
    assert sorted(j["id"] for j in jobs) == sorted(f"{i}:job-1" for i in ids)


async def test_listing_errors_are_classified_and_429s_retried(gateway: Gateway, local_batch: Any) -> None:
    with pytest.raises(BatchError) as refused:
        await gateway.list_schedules(filter="id eq", select=["id"])  # not a filter Batch can parse
    assert refused.value.status == 400 and refused.value.terminal

    local_batch.reset_counts()
    local_batch.faults(codes=["429"], retryAfter=0, nextN=2, operations=["list_job_schedules"])
    try:
        assert isinstance(await gateway.list_schedules(select=["id"]), list)  # retried past both 429s
    finally:
        local_batch.clear_faults()
    assert gateway.stats.throttled == 2
    assert local_batch.count("list_job_schedules", 429) == 2 and local_batch.count("list_job_schedules", 200) == 1


async def test_reads_equal_the_sdk_models_raw_json_and_404_is_none(gateway: Gateway, aio_batch_client: Any,
                                                                     local_batch: Any) -> None:
    """``get_schedule``, ``get_job``, ``get_task`` and ``task_counts`` read wire JSON through the pipeline:
    the same JSON as the SDK's models hold, the ETag from the header, and a missing object as None."""
    schedule_id = f"gr{uuid.uuid4().hex[:6]}_a"
    created = await gateway.create_schedule(_body(schedule_id))
    found = await gateway.get_schedule(schedule_id)
    assert found is not None
    body, etag = found
    sdk = await aio_batch_client.get_job_schedule(schedule_id)
    assert type(body) is dict and body == _raw(sdk)
    assert etag and etag == body["eTag"]
    assert created == etag and body["state"] == "active", "the create's answer names the schedule as read back"
    local_batch.reset_counts()
    assert await gateway.get_schedule(schedule_id + "_missing") is None
    assert local_batch.count("get_job_schedule", 404) == 1

    job_id = f"gr{uuid.uuid4().hex[:6]}-job_1"
    await gateway.create_job({"id": job_id, "poolInfo": {"poolId": "nopool"}})
    job = await gateway.get_job(job_id)
    assert job is not None and job["id"] == job_id and job == _raw(await aio_batch_client.get_job(job_id))
    counts = await gateway.task_counts(job_id)
    assert counts == {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
    assert await gateway.get_task(job_id, "none") is None
    assert await gateway.get_job(job_id + "x") is None and await gateway.task_counts(job_id + "x") is None


async def test_answers_are_decoded_once_not_also_by_the_pipeline(gateway: Gateway, local_batch: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's ContentDecodePolicy would decode each answer into its context besides the gateway's own
    decoding: listings and reads are sent as streams, so it leaves them alone (errors are still classified)."""
    from azure.core.pipeline.policies import ContentDecodePolicy

    decoded: list[int] = []
    original = ContentDecodePolicy.deserialize_from_http_generics

    def counting(*args: Any, **kwargs: Any) -> Any:
        decoded.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ContentDecodePolicy, "deserialize_from_http_generics", staticmethod(counting))
    schedule_id = f"gd{uuid.uuid4().hex[:6]}"
    await gateway.create_schedule(_body(schedule_id))
    decoded.clear()
    assert [s["id"] for s in await gateway.list_schedules(filter=f"id eq '{schedule_id}'", select=["id"])] == [
        schedule_id]
    assert (await gateway.get_schedule(schedule_id)) is not None and await gateway.get_schedule("nope") is None
    assert decoded == []
    with pytest.raises(BatchError) as refused:
        await gateway.list_schedules(filter="id eq", select=["id"])
    assert refused.value.status == 400 and refused.value.code == "InvalidQueryParameterValue"  # the body was read
