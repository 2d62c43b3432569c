"""Run now: deterministic job ids, the job body, once per value (JobExists = done), against a fake gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchop.api import names
from batchop.batch.gateway import BatchError
from batchop.controller import runnow

SPEC = {
    "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "jobschedule", "pool": {"vmSize": "s"}}},
    "jobManagerTask": {"id": "main", "commandLine": "/bin/true"},
    "metadata": [{"name": "team", "value": "data"}, {"name": "azurebatch.dev/uid", "value": "stale"}],
}


def test_requested_only_for_a_new_non_blank_value() -> None:
    assert runnow.requested({names.ANNOTATION_RUN_NOW: "a"}, {}) == "a"
    assert runnow.requested({names.ANNOTATION_RUN_NOW: "a"}, {"runNow": "a"}) is None
    assert runnow.requested({names.ANNOTATION_RUN_NOW: "b"}, {"runNow": "a"}) == "b"
    assert runnow.requested({names.ANNOTATION_RUN_NOW: "  "}, {}) is None
    assert runnow.requested({}, {"runNow": "a"}) is None


def test_job_id_is_deterministic_and_depends_on_uid_and_value() -> None:
    first = runnow.job_id("default_wordcount", "uid-1", "2024-05-01")
    assert first == runnow.job_id("default_wordcount", "uid-1", "2024-05-01")
    assert first.startswith("default_wordcount-runnow-") and len(first) == len("default_wordcount-runnow-") + 10
    assert first != runnow.job_id("default_wordcount", "uid-1", "2024-05-02")
    assert first != runnow.job_id("default_wordcount", "uid-2", "2024-05-01")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=64),
       st.text(min_size=1, max_size=80))
def test_job_ids_are_valid_batch_ids_and_recognised(schedule_id: str, value: str) -> None:
    jid = runnow.job_id(schedule_id, "uid", value)
    assert len(jid) <= 64
    assert all(c.isalnum() or c in "-_" for c in jid)
    assert runnow.is_run_now_job(jid, schedule_id)
    assert runnow.is_run_now_job(jid.upper(), schedule_id.lower())


def test_a_schedule_never_claims_another_schedules_run_now_jobs() -> None:
    other = runnow.job_id("a-runnow-x", "uid", "v")
    assert not runnow.is_run_now_job(other, "a")
    assert not runnow.is_run_now_job("a:job-1", "a")
    mine = runnow.job_id("a", "uid", "v")
    assert not runnow.is_run_now_job(mine[:-1] + "g", "a"), "the suffix is lower-case hex only"
    assert not runnow.is_run_now_job(mine + "0", "a") and not runnow.is_run_now_job(mine[:-1], "a")
    long_a, long_b = "s" * 60 + "aa", "s" * 60 + "bb"
    assert runnow.job_prefix(long_a) != runnow.job_prefix(long_b)
    assert not runnow.is_run_now_job(runnow.job_id(long_a, "u", "v"), long_b)


def test_job_body_is_standalone_and_marked() -> None:
    body = runnow.job_body(SPEC, job_id_="s-runnow-0123456789", schedule_id="s", owner="ns/x", uid="u1", value="v")
    assert body["id"] == "s-runnow-0123456789"
    assert body["poolInfo"]["autoPoolSpecification"]["poolLifetimeOption"] == "job"
    assert SPEC["poolInfo"]["autoPoolSpecification"]["poolLifetimeOption"] == "jobschedule"  # not mutated
    marks = {m["name"]: m["value"] for m in body["metadata"]}
    assert marks == {"team": "data", "azurebatch.dev/schedule": "s", "azurebatch.dev/run-now": "v",
                     "azurebatch.dev/owner": "ns/x", "azurebatch.dev/uid": "u1"}
    assert body["jobManagerTask"] == SPEC["jobManagerTask"]


class FakeJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.fail: BatchError | None = None

    async def create_job(self, body: Mapping[str, Any]) -> None:
        self.creates += 1
        if self.fail:
            raise self.fail
        if body["id"].lower() in self.jobs:
            raise BatchError("exists", reason="Conflict", terminal=False, status=409, code="JobExists")
        self.jobs[body["id"].lower()] = dict(body)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id.lower())


async def test_start_creates_once_and_a_retry_after_a_crash_is_done() -> None:
    gw = FakeJobs()
    kw = {"job_specification": SPEC, "schedule_id": "s", "owner": "ns/x", "uid": "u1", "value": "v"}
    first = await runnow.start(gw, **kw)
    again = await runnow.start(gw, **kw)  # the status write was lost: the same request again
    assert first.created and not again.created and first.job_id == again.job_id
    assert len(gw.jobs) == 1 and gw.creates == 2


async def test_start_refuses_a_job_of_another_resource_and_propagates_errors() -> None:
    gw = FakeJobs()
    jid = runnow.job_id("s", "u1", "v")
    gw.jobs[jid] = {"id": jid, "metadata": [{"name": "azurebatch.dev/uid", "value": "other"}]}
    with pytest.raises(BatchError) as refused:
        await runnow.start(gw, job_specification=SPEC, schedule_id="s", owner="ns/x", uid="u1", value="v")
    assert refused.value.terminal and "run-now" in refused.value.message
    gw.fail = BatchError("busy", reason="BatchUnavailable", terminal=False, status=503)
    with pytest.raises(BatchError):
        await runnow.start(gw, job_specification=SPEC, schedule_id="s", owner="ns/x", uid="u1", value="w")


def test_pending_uses_the_freshest_status_and_ignores_deletions() -> None:
    body = {"metadata": {"annotations": {names.ANNOTATION_RUN_NOW: "b"}}, "status": {"runNow": "a"}}
    assert runnow.pending(body, None)
    assert not runnow.pending(body, {"runNow": "b"})  # the operator wrote it; the event's body is older
    assert not runnow.pending({**body, "metadata": {**body["metadata"], "deletionTimestamp": "x"}}, None)


async def test_a_created_job_is_read_back_for_its_state() -> None:
    gw = FakeJobs()
    started = await runnow.start(gw, job_specification=SPEC, schedule_id="s", owner="ns/x", uid="u1", value="v")
    assert started.created and started.state is None  # the fake stores no state
    gw.jobs[started.job_id.lower()]["state"] = "active"
    again = await runnow.start(gw, job_specification=SPEC, schedule_id="s", owner="ns/x", uid="u1", value="v")
    assert not again.created and again.state == "active"
