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

    pager = [gw._raw(s) async for s in aio_batch_client.list_job_schedules(filter=query, select=select)]
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
