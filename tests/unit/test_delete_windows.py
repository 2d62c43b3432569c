"""The deletion step against Batch's terminating and deleting windows, and the active jobs and schedules quota on
create (batchop.controller.reconcile.delete, batchop.batch.gateway.classify)."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceExistsError

from batchop.api import conditions as cond
from batchop.batch import gateway as gw
from batchop.batch.gateway import BatchError
from batchop.controller.reconcile.delete import delete
from batchop.controller.reconcile.view import ObjectView
from tests.unit.test_gateway import batch_error, error

MARKS = [{"name": "azurebatch.dev/owner", "value": "ns/r"}, {"name": "azurebatch.dev/uid", "value": "u1"}]


class WindowBatch:
    """A schedule that Batch keeps ``terminating`` for ``terminating`` GETs and ``deleting`` for ``deleting`` GETs
    (as Azure does, 5-15 s), then answers 404."""

    def __init__(self, *, terminating: int, deleting: int, metadata: list[dict[str, str]] | None = None) -> None:
        self.state = "active"
        self.left = {"terminating": terminating, "deleting": deleting}
        self.metadata = MARKS if metadata is None else metadata
        self.calls: list[str] = []

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None:
        self.calls.append("get")
        if self.state in self.left:
            if self.left[self.state] == 0:
                self.state = {"terminating": "completed", "deleting": "gone"}[self.state]
            else:
                self.left[self.state] -= 1
        if self.state == "gone":
            return None
        # in the deleting window Azure answers with the previous body; marks may be absent in a sparse answer
        return {"id": schedule_id, "state": self.state, "metadata": self.metadata}, '"etag"'

    async def terminate_schedule(self, schedule_id: str) -> None:
        self.calls.append("terminate")
        self.state = "terminating"

    async def delete_schedule(self, schedule_id: str) -> None:
        self.calls.append("delete")
        self.state = "deleting"

    async def patch_schedule(self, *_: Any) -> None:
        raise AssertionError("no patch while deleting")


def view() -> ObjectView:
    return ObjectView.from_body({"metadata": {"namespace": "ns", "name": "r", "uid": "u1", "generation": 3},
                                 "spec": {}, "status": {"scheduleId": "ns_r"}})


async def test_the_finalizer_stays_through_both_windows_until_the_404() -> None:
    batch = WindowBatch(terminating=2, deleting=3)
    steps = []
    for _ in range(20):
        outcome = await delete(view(), batch)  # type: ignore[arg-type]
        steps.append(outcome)
        if outcome.done:
            break
    assert steps[-1].done and batch.state == "gone"
    waiting = steps[:-1]
    assert all(not s.done and s.retry_after for s in waiting)
    messages = [s.synced["message"] for s in waiting]
    assert any("terminate window (state terminating)" in m for m in messages)
    assert any("delete window (state deleting)" in m for m in messages)
    assert all(s.synced["reason"] == cond.REASON_DELETING and s.synced["status"] == cond.FALSE for s in waiting)
    assert batch.calls.count("terminate") == 1 and batch.calls.count("delete") == 1


async def test_a_schedule_in_the_deleting_window_without_marks_is_still_waited_for() -> None:
    """Whoever deleted it: a 200 with state deleting never releases the finalizer (only the 404 does)."""
    batch = WindowBatch(terminating=0, deleting=2, metadata=[])
    batch.state = "deleting"
    first = await delete(view(), batch)  # type: ignore[arg-type]
    assert not first.done and "delete window" in first.synced["message"]
    outcomes = [await delete(view(), batch) for _ in range(3)]  # type: ignore[arg-type]
    assert outcomes[-1].done and "delete" not in batch.calls


def test_active_job_and_schedule_quota_has_its_own_reason_and_is_retried() -> None:
    exc = error(ResourceExistsError, 409, batch_error("ActiveJobAndScheduleQuotaReached",
                                                      "The specified account has reached its quota of active jobs "
                                                      "and job schedules."))
    err = gw.classify(exc)
    assert isinstance(err, BatchError)
    assert err.reason == cond.REASON_ACTIVE_JOB_QUOTA and not err.terminal
    assert "created when room appears" in err.message
    other = gw.classify(error(ResourceExistsError, 409, batch_error("PoolQuotaReached", "pools")))
    assert other.reason == cond.REASON_QUOTA_REACHED
