"""A failed job names its failed tasks: the words (batchop.spec.failures), the status and Event
(batchop.controller.status) and the poller's cost: one filtered listing per failed job, once."""

from __future__ import annotations

from typing import Any

from batchop.batch.gateway import BatchError, GatewayStats
from batchop.controller import status as st
from batchop.controller.poller import Poller, Tracked
from batchop.kube.status_writer import StatusWriter
from batchop.spec import failures

EXITED = {"id": "wordcount", "executionInfo": {
    "startTime": "2026-01-01T01:00:01Z", "endTime": "2026-01-01T01:00:03Z", "exitCode": 127, "result": "failure",
    "retryCount": 0, "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                                     "message": "The task exited with an exit code representing a failure"}}}
NO_IMAGE = {"id": "render", "executionInfo": {
    "endTime": "2026-01-01T01:00:05Z", "result": "failure", "retryCount": 2,
    "failureInfo": {"category": "usererror", "code": "ContainerInvalidImage", "message": "no such image: nope:1"}}}


def test_describe_names_the_task_and_its_cause() -> None:
    assert failures.describe(failures.failed_task(EXITED)) == "task wordcount exited with 127"
    assert failures.describe(failures.failed_task(NO_IMAGE)) == (
        "task render failed: ContainerInvalidImage: no such image: nope:1"
    )
    assert failures.describe({"id": "x"}) == "task x failed"
    shown = failures.failed_tasks([EXITED, NO_IMAGE])
    assert failures.summary(shown, 5) == "task wordcount exited with 127 (and 4 more)"
    assert failures.summary(shown[:1], 1) == "task wordcount exited with 127"
    assert failures.summary([], 3) is None


def test_failed_task_item_keeps_what_status_shows() -> None:
    assert failures.failed_task(EXITED) == {
        "id": "wordcount", "exitCode": 127, "startTime": "2026-01-01T01:00:01Z", "endTime": "2026-01-01T01:00:03Z",
        "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                        "message": "The task exited with an exit code representing a failure"},
    }
    item = failures.failed_task(NO_IMAGE)
    assert "exitCode" not in item and item["retryCount"] == 2
    long = {"id": "t", "executionInfo": {"failureInfo": {"code": "X", "message": "m" * 1000}}}
    assert len(failures.failed_task(long)["failureInfo"]["message"]) == failures.MESSAGE_LIMIT
    assert len(failures.failed_tasks([EXITED] * 10)) == failures.SHOWN


def test_failure_details_name_what_the_message_leaves_out() -> None:
    """Batch puts the image it could not have (or the run option it refused) in ``failureInfo.details``; the
    status item's message carries it, once, so status, Event and health name it."""
    task = {"id": "wordcount", "executionInfo": {"result": "failure", "failureInfo": {
        "category": "usererror", "code": "ContainerInvalidImage",
        "message": "One or more container images specified are invalid",
        "details": [{"name": "ContainerImage", "value": "localhost/nope:1"},
                    {"name": "Message", "value": "One or more container images specified are invalid"}]}}}
    item = failures.failed_task(task)
    assert item["failureInfo"]["message"] == (
        "One or more container images specified are invalid (ContainerImage: localhost/nope:1)")
    assert failures.describe(item) == (
        "task wordcount failed: ContainerInvalidImage: One or more container images specified are invalid "
        "(ContainerImage: localhost/nope:1)")
    bare = {"id": "t", "executionInfo": {"failureInfo": {"code": "X", "details": [{"name": "Why", "value": "v"}]}}}
    assert failures.failed_task(bare)["failureInfo"]["message"] == "Why: v"


JOB = {"id": "s:job-1", "state": "completed", "creationTime": "2026-01-01T01:00:00Z",
       "executionInfo": {"startTime": "2026-01-01T01:00:00Z", "endTime": "2026-01-01T01:00:06Z", "poolId": "p"}}
FAILED_COUNTS = {"active": 0, "running": 0, "completed": 3, "succeeded": 1, "failed": 2}


def test_recent_job_and_event_name_the_first_failed_task() -> None:
    failed = {"failedTasks": failures.failed_tasks([EXITED, NO_IMAGE]), "failedTaskCount": 2}
    job = st.recent_job(JOB, FAILED_COUNTS, failed=failed)
    assert job is not None and job["result"] == "failure"
    assert [t["id"] for t in job["failedTasks"]] == ["wordcount", "render"] and job["failedTaskCount"] == 2
    success = st.recent_job(JOB, {**FAILED_COUNTS, "failed": 0}, failed=failed)
    assert success is not None and "failedTasks" not in success, "only a failed job names failed tasks"
    events = st.transitions({"recentJob": {"id": "s:job-1", "state": "active"}}, {"recentJob": job})
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Warning", "JobFailed", "job s:job-1 failed: task wordcount exited with 127 (and 1 more)")
    ]
    bare = st.recent_job(JOB, FAILED_COUNTS)
    assert bare is not None
    assert failures.job_detail(bare) == "2 task(s) failed", "without the listing: the count, as before"


class FailingGateway:
    """Batch with one schedule whose job ``job-N`` has failed, ``failed`` tasks of three failing."""

    def __init__(self) -> None:
        self.stats = GatewayStats()
        self.job_number = 1
        self.task_listings: list[dict[str, Any]] = []
        self.refuse = False

    @property
    def job_id(self) -> str:
        return f"s:job-{self.job_number}"

    def _count(self, op: str) -> None:
        self.stats.requests[op] += 1
        self.stats.responses[200] += 1

    async def list_schedules(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_schedules")
        return [{"id": "s", "state": "active", "executionInfo": {"recentJob": {"id": self.job_id}},
                 "metadata": [{"name": "azurebatch.dev/uid", "value": "u"}],
                 "jobSpecification": {}}]  # listed whole: the fake ignores $select

    async def list_jobs(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_jobs")
        return [{**JOB, "id": self.job_id}]

    async def list_pools(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_pools")
        return []

    async def get_job(self, job_id: str) -> dict[str, Any]:
        self._count("get_job")
        return {**JOB, "id": job_id}

    async def task_counts(self, job_id: str) -> dict[str, Any]:
        self._count("task_counts")
        return FAILED_COUNTS

    async def delete_job(self, job_id: str) -> None:
        self._count("delete_job")

    async def list_tasks(self, job_id: str, **query: Any) -> list[dict[str, Any]]:
        self._count("list_tasks")
        self.task_listings.append({"job": job_id, **query})
        if self.refuse:
            raise BatchError("Batch is unavailable (ServerBusy)", reason="BatchUnavailable", terminal=False,
                             status=503)
        return [EXITED, NO_IMAGE][: query.get("limit") or 2]


def poller_for(gateway: FailingGateway, writer: StatusWriter, events: list[str]) -> Poller:
    member = Tracked("ns", "report", "u", 1, "e", "s")

    async def post(_member: Tracked, event: st.EventSpec) -> None:
        events.append(f"{event.reason}: {event.message}")

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    return Poller("e", gateway=lambda: gateway, members=lambda: [member], writer=writer, post_event=post,
                  on_drift=nothing, refresh_credentials=nothing, changed_properties=lambda d, o: [])


class FakeKube:
    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": {}}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return {}


async def test_poller_lists_failed_tasks_once_per_failed_job_and_reuses_status_after_a_restart() -> None:
    gateway = FailingGateway()
    writer = StatusWriter(FakeKube())
    events: list[str] = []
    writer.seed("ns", "report", {"recentJob": {"id": "s:job-0", "state": "active"}})
    poller = poller_for(gateway, writer, events)
    for _ in range(4):
        await poller.cycle()
    assert gateway.task_listings == [{"job": "s:job-1", "filter": "executionInfo/result eq 'failure'",
                                      "select": ["id", "executionInfo"], "limit": 3}], "one listing, once"
    recent = (writer.known("ns", "report") or {})["recentJob"]
    assert [t["id"] for t in recent["failedTasks"]] == ["wordcount", "render"] and recent["failedTaskCount"] == 2
    assert recent["failedTasks"][0]["exitCode"] == 127
    assert "JobFailed: job s:job-1 failed: task wordcount exited with 127 (and 1 more)" in events

    restarted = poller_for(gateway, writer, events)  # a new process: the status already names the tasks
    for _ in range(2):
        await restarted.cycle()
    assert len(gateway.task_listings) == 1, "a status that names the failed tasks is reused, not re-read"

    gateway.job_number, gateway.refuse = 2, True  # the next job fails, and the listing fails once
    await restarted.cycle()
    assert len(gateway.task_listings) == 2
    assert (writer.known("ns", "report") or {})["recentJob"].get("failedTasks") is None
    gateway.refuse = False
    await restarted.cycle()
    await restarted.cycle()
    assert len(gateway.task_listings) == 3, "retried once after the failure, then known"
    assert (writer.known("ns", "report") or {})["recentJob"]["failedTasks"][0]["id"] == "wordcount"
