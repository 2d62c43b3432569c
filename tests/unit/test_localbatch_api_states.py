"""The API layer's state rules, with a recording fake engine so states stay put.

The real service runs in-process (aiohttp on a background thread) and the unmodified sync SDK
talks to it over HTTP; only the engine is replaced, by one that records the notifications and
never moves a schedule out of ``terminating`` / ``deleting`` by itself.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from localbatch.context import ServiceConfig
from localbatch.service import Service

POOL = {"poolId": "p"}


def _terminate_job(client: BatchClient, job_id: str) -> None:
    from azure.core.rest import HttpRequest

    client.send_request(HttpRequest("POST", f"/jobs/{job_id}/terminate", params={"api-version": "2025-06-01"}))


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def start(self) -> None:
        self.calls.append(("start", ""))

    async def stop(self) -> None:
        self.calls.append(("stop", ""))

    def schedule_changed(self, key: str) -> None:
        self.calls.append(("schedule_changed", key))

    def terminate_schedule(self, key: str) -> None:
        self.calls.append(("terminate_schedule", key))

    def delete_schedule(self, key: str) -> None:
        self.calls.append(("delete_schedule", key))

    def job_created(self, key: str) -> None:
        self.calls.append(("job_created", key))

    def terminate_job(self, key: str, reason: str = "UserTerminate") -> None:
        self.calls.append(("terminate_job", f"{key}:{reason}"))

    def delete_job(self, key: str) -> None:
        self.calls.append(("delete_job", key))

    def delete_pool(self, key: str) -> None:
        self.calls.append(("delete_pool", key))

    def counts(self, job_key: str) -> dict[str, Any]:
        return {
            "taskCounts": {"active": 1, "running": 0, "completed": 0, "succeeded": 0, "failed": 0},
            "taskSlotCounts": {"active": 1, "running": 0, "completed": 0, "succeeded": 0, "failed": 0},
        }


class InProcessService:
    def __init__(self, tmp: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = RecordingEngine()
        config = ServiceConfig(port=0, work_dir=tmp, engine_factory=lambda **_: self.engine)
        self.service = Service(config)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(10)

    def client(self) -> BatchClient:
        return BatchClient(self.service.base_url, AzureNamedKeyCredential("devbatch", self.service.config.key))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    service = InProcessService(tmp_path_factory.mktemp("states"))
    try:
        yield service
    finally:
        service.close()


def _create(client: BatchClient) -> str:
    schedule_id = f"st-{uuid.uuid4().hex[:8]}"
    client.create_job_schedule(
        {
            "id": schedule_id,
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {"poolInfo": {"poolId": "p"}},
        }
    )
    return schedule_id


def _code(call: Any) -> tuple[int, str]:
    with pytest.raises(HttpResponseError) as info:
        call()
    return info.value.status_code, info.value.response.json()["code"]


def test_engine_is_notified_of_every_write(svc: InProcessService) -> None:
    client = svc.client()
    schedule_id = _create(client)
    key = schedule_id.lower()
    client.update_job_schedule(schedule_id, {"metadata": []})
    client.replace_job_schedule(schedule_id, {"jobSpecification": {"poolInfo": {"poolId": "p"}}})
    client.disable_job_schedule(schedule_id)
    client.enable_job_schedule(schedule_id)
    client._terminate_job_schedule_internal(schedule_id)
    assert [c for c in svc.engine.calls if c[1] == key] == [("schedule_changed", key)] * 5 + [
        ("terminate_schedule", key)
    ]
    assert client.get_job_schedule(schedule_id).state == "terminating"


def test_operations_on_a_terminating_schedule_answer_409(svc: InProcessService) -> None:
    client = svc.client()
    schedule_id = _create(client)
    client._terminate_job_schedule_internal(schedule_id)
    for call in (
        lambda: client.update_job_schedule(schedule_id, {"metadata": []}),
        lambda: client.replace_job_schedule(schedule_id, {"jobSpecification": {"poolInfo": {"poolId": "p"}}}),
        lambda: client.disable_job_schedule(schedule_id),
        lambda: client.enable_job_schedule(schedule_id),
        lambda: client._terminate_job_schedule_internal(schedule_id),
    ):
        assert _code(call) == (409, "JobScheduleBeingTerminated")
    client._delete_job_schedule_internal(schedule_id)  # delete is allowed while terminating
    assert client.get_job_schedule(schedule_id).state == "deleting"


def test_operations_on_a_deleting_schedule_answer_409(svc: InProcessService) -> None:
    client = svc.client()
    schedule_id = _create(client)
    client._delete_job_schedule_internal(schedule_id)
    assert ("delete_schedule", schedule_id.lower()) in svc.engine.calls
    for call in (
        lambda: client.update_job_schedule(schedule_id, {"metadata": []}),
        lambda: client.disable_job_schedule(schedule_id),
        lambda: client._terminate_job_schedule_internal(schedule_id),
        lambda: client._delete_job_schedule_internal(schedule_id),
    ):
        assert _code(call) == (409, "JobScheduleBeingDeleted")
    with pytest.raises(ResourceExistsError):
        _ = client.create_job_schedule(
            {"id": schedule_id, "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}
        )


def test_operations_on_a_completed_schedule_answer_409(svc: InProcessService) -> None:
    client = svc.client()
    schedule_id = _create(client)
    obj = svc.service.store.schedules[schedule_id.lower()]
    obj["state"] = "completed"  # what the engine does when a schedule finishes
    assert _code(lambda: client.update_job_schedule(schedule_id, {"metadata": []})) == (409, "JobScheduleCompleted")
    assert _code(lambda: client.disable_job_schedule(schedule_id)) == (409, "JobScheduleCompleted")
    assert _code(lambda: client._terminate_job_schedule_internal(schedule_id)) == (409, "JobScheduleCompleted")
    client._delete_job_schedule_internal(schedule_id)


def test_job_pool_notifications_and_conflicts(svc: InProcessService) -> None:
    client = svc.client()
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    client.create_job({"id": job_id, "poolInfo": {"poolId": "p"}})
    assert ("job_created", job_id) in svc.engine.calls
    assert client.get_job_task_counts(job_id).task_counts.active == 1
    _terminate_job(client, job_id)
    assert ("terminate_job", f"{job_id}:UserTerminate") in svc.engine.calls
    assert _code(lambda: _terminate_job(client, job_id)) == (409, "JobBeingTerminated")
    client._delete_job_internal(job_id)
    assert _code(lambda: client._delete_job_internal(job_id)) == (409, "JobBeingDeleted")
    pool = {
        "id": "pool-1",
        "state": "active",
        "allocationState": "steady",
        "eTag": "0x1",
        "lastModified": "2025-06-01T00:00:00.0000000Z",
    }
    svc.service.store.pools["pool-1"] = pool
    svc.service.store.nodes["pool-1"] = {"tvm-1": {"id": "tvm-1", "state": "idle"}}
    assert client.get_pool("POOL-1").allocation_state == "steady"
    assert [n.id for n in client.list_nodes("pool-1")] == ["tvm-1"]
    client._delete_pool_internal("pool-1")
    assert ("delete_pool", "pool-1") in svc.engine.calls
    assert _code(lambda: client._delete_pool_internal("pool-1")) == (409, "PoolBeingDeleted")


def test_job_quota(tmp_path: Any) -> None:
    service = InProcessService(tmp_path)
    try:
        service.service.config.job_quota = 1
        client = service.client()
        _create(client)
        assert _code(lambda: _create(client)) == (409, "ActiveJobAndScheduleQuotaReached")
    finally:
        service.close()
