"""History limits: what to keep and delete, output locations, and the per-account book against a fake gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from batchop.batch.gateway import BatchError
from batchop.controller import history, runnow


def job(n: int, state: str = "completed", sid: str = "s", *, minute: int | None = None, **extra: Any) -> dict[str, Any]:
    minute = n if minute is None else minute
    stamp = f"2026-01-01T00:{minute:02d}:00Z"
    out = {"id": f"{sid}:job-{n}", "state": state, "creationTime": stamp, "stateTransitionTime": stamp,
           "executionInfo": {"startTime": stamp, **({"endTime": stamp} if state == "completed" else {})}}
    out.update(extra)
    return out


def test_limits_default_like_cronjob() -> None:
    assert history.limits_of({}) == history.Limits(3, 1)
    assert history.limits_of({"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 5}) == history.Limits(0, 5)
    assert history.limits_of({"successfulJobsHistoryLimit": True}) == history.Limits(3, 1)


def test_plan_keeps_newest_per_result_running_and_unjudged_jobs() -> None:
    jobs = [job(n) for n in range(1, 10)] + [job(10, "active"), job(11, minute=11)]
    results = {f"s:job-{n}": ("failure" if n % 3 == 0 else "success") for n in range(1, 10)}
    decided = history.plan(jobs, results, history.Limits(2, 1))
    kept = [j["id"] for j in decided.keep]
    assert kept == ["s:job-11", "s:job-10", "s:job-9", "s:job-8", "s:job-7"]  # 11 unjudged, 10 running
    assert sorted(decided.delete) == sorted(["s:job-1", "s:job-2", "s:job-3", "s:job-4", "s:job-5", "s:job-6"])


def test_plan_protects_the_recent_job_even_with_limit_zero() -> None:
    jobs = [job(1), job(2)]
    decided = history.plan(jobs, {"s:job-1": "success", "s:job-2": "success"}, history.Limits(0, 0), {"s:job-2"})
    assert [j["id"] for j in decided.keep] == ["s:job-2"] and decided.delete == ["s:job-1"]


def test_plan_orders_by_creation_time_then_job_number() -> None:
    jobs = [job(9, minute=1), job(10, minute=1), job(2, minute=5)]
    decided = history.plan(jobs, {j["id"].lower(): "success" for j in jobs}, history.Limits(2, 0))
    assert [j["id"] for j in decided.keep] == ["s:job-2", "s:job-10"] and decided.delete == ["s:job-9"]


def test_schedule_of_scheduled_and_run_now_jobs() -> None:
    prefixes = {runnow.job_prefix("s"): "s"}
    assert history.schedule_of("S:job-12", prefixes) == "s"
    assert history.schedule_of(runnow.job_id("s", "u", "v"), prefixes) == "s"
    assert history.schedule_of("adhoc", prefixes) is None
    assert history.schedule_of("x-runnow-0123456789", prefixes) is None


def test_output_location_from_the_resolved_job_specification() -> None:
    spec = {"jobManagerTask": {"outputFiles": [
        {"filePattern": "err", "destination": {"container": {
            "containerUrl": "https://acct.blob.core.windows.net/logs?sv=1&sig=SECRET", "path": "s/failed"}},
         "uploadOptions": {"uploadCondition": "taskfailure"}},
        {"filePattern": "r/**/*", "destination": {"container": {
            "containerUrl": "https://acct.blob.core.windows.net/output?sv=1&sig=SECRET", "path": "s"}},
         "uploadOptions": {"uploadCondition": "tasksuccess"}},
    ]}}
    ok = history.output_location(spec, "success")
    assert ok == {"container": "output", "path": "s", "url": "https://acct.blob.core.windows.net/output/s"}
    failed = history.output_location(spec, "failure")
    assert failed is not None and failed["url"] == "https://acct.blob.core.windows.net/logs/s/failed"
    assert "sig" not in str(ok) + str(failed)
    assert history.output_location({"jobManagerTask": {}}, None) is None
    only_failures = {"jobManagerTask": {"outputFiles": spec["jobManagerTask"]["outputFiles"][:1]}}
    assert history.output_location(only_failures, "success") is None  # nothing uploaded on success
    assert history.output_location(only_failures, None) == failed  # still running: where it may go
    blob = {"jobManagerTask": {"outputFiles": [{"destination": {"blob": {"container": "output", "path": "x"}}}]}}
    assert history.output_location(blob) == {"container": "output", "path": "x"}


@dataclass
class Member:
    namespace: str = "ns"
    name: str = "r"
    schedule_id: str | None = "s"
    policy: str = "manage"
    deleting: bool = False
    history: history.Limits | None = None
    stepped: history.Inputs | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def schedule_key(self) -> str:
        return (self.schedule_id or "").lower()


class FakeGateway:
    def __init__(self, jobs: list[dict[str, Any]], failed: set[str]) -> None:
        self.jobs = {j["id"].lower(): j for j in jobs}
        self.failed = failed
        self.calls: list[tuple[str, Any]] = []

    async def list_jobs(self, *, filter: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list", filter))
        if filter is None:
            return list(self.jobs.values())
        since = filter.split("datetime'")[1].rstrip("'")
        return [j for j in self.jobs.values() if j["state"] != "completed" or j["stateTransitionTime"] >= since]

    async def task_counts(self, job_id: str) -> dict[str, Any] | None:
        self.calls.append(("counts", job_id))
        if job_id.lower() not in self.jobs:
            return None
        bad = job_id in self.failed
        return {"active": 0, "running": 0, "completed": 1, "succeeded": 0 if bad else 1, "failed": 1 if bad else 0}

    async def delete_job(self, job_id: str) -> None:
        self.calls.append(("delete", job_id))
        if job_id.lower() not in self.jobs:
            raise BatchError("gone", reason="NotFound", terminal=False, status=404)
        del self.jobs[job_id.lower()]


SCHEDULE = {"id": "s", "state": "active", "executionInfo": {"recentJob": {"id": "s:job-6"}},
            "jobSpecification": {"jobManagerTask": {"outputFiles": [{"destination": {"container": {
                "containerUrl": "http://127.0.0.1:10000/devstoreaccount1/output?sig=X", "path": "s"}}}]}}}


async def run_cycle(book: history.History, gw: FakeGateway, members: list[Member],
                    schedule: dict[str, Any] | None = None, previous: dict[str, Any] | None = None) -> None:
    await book.list_jobs(gw, [m.schedule_id for m in members if m.schedule_id], select=["id"])
    await book.step(gw, members, {"s": schedule or SCHEDULE}, counts={}, previous=lambda m: previous or {},
                    owned=lambda s, m: True)


async def test_book_enforces_limits_with_few_requests() -> None:
    jobs = [job(n) for n in range(1, 7)] + [job(1, sid="other"), {**job(7, "active")}]
    gw = FakeGateway(jobs, failed={"s:job-3", "s:job-6"})
    book = history.History()
    member = Member(history=history.Limits(2, 1))
    await run_cycle(book, gw, [member])
    assert gw.calls[0] == ("list", None)  # the first listing is full
    assert sorted(id_ for op, id_ in gw.calls if op == "delete") == ["s:job-1", "s:job-2", "s:job-3"]
    kept = book.recent[member.key]
    assert [k["id"] for k in kept] == ["s:job-7", "s:job-6", "s:job-5", "s:job-4"]
    assert kept[1]["result"] == "failure" and kept[2]["result"] == "success"
    assert kept[2]["output"]["url"] == "http://127.0.0.1:10000/devstoreaccount1/output/s"
    assert "other:job-1" in gw.jobs  # never touched
    # steady state: one incremental listing, nothing else
    gw.calls.clear()
    await run_cycle(book, gw, [member])
    assert len(gw.calls) == 1 and gw.calls[0][0] == "list" and "stateTransitionTime ge" in str(gw.calls[0][1])
    # a new job completes: one count, one delete
    gw.jobs["s:job-7"] = job(7, minute=30)
    gw.jobs["s:job-8"] = job(8, "active", minute=31)
    gw.calls.clear()
    await run_cycle(book, gw, [member])
    ops = [op for op, _ in gw.calls]
    assert ops == ["list", "counts", "delete"] and ("delete", "s:job-4") in gw.calls


async def test_a_member_at_rest_is_not_judged_again_until_its_inputs_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a step judged every completed job of a schedule and deleted nothing, the next cycles skip the member
    (no plan, the same ``recentJobs`` list) until a job of its schedule changes, its limits change, or a step
    left something to do (a job beyond the limits it may not delete, a job left unjudged)."""
    planned: list[str] = []
    real = history.plan

    def counting(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        planned.append("plan")
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(history, "plan", counting)
    gw = FakeGateway([job(n) for n in range(4, 7)], failed=set())
    book = history.History()
    member = Member(history=history.Limits(5, 5))
    await run_cycle(book, gw, [member])
    kept = book.recent[member.key]
    assert member.stepped is not None and len(planned) == 1
    for _ in range(2):
        await run_cycle(book, gw, [member])
    assert len(planned) == 1 and book.recent[member.key] is kept

    gw.jobs["s:job-7"] = job(7, minute=30)  # a job completes
    await run_cycle(book, gw, [member])
    assert len(planned) == 2 and [k["id"] for k in book.recent[member.key]][:1] == ["s:job-7"]
    member.history = history.Limits(1, 1)  # the limits change: the older jobs go
    await run_cycle(book, gw, [member])
    assert len(planned) == 3 and [k["id"] for k in book.recent[member.key]] == ["s:job-7", "s:job-6"]  # + recent
    assert ("delete", "s:job-4") in gw.calls and ("delete", "s:job-5") in gw.calls

    observed = Member(name="o", policy="skip", history=history.Limits(1, 1))  # beyond the limits, not ours
    gw2 = FakeGateway([job(n) for n in range(1, 4)], failed=set())
    book2 = history.History()
    for _ in range(2):
        await run_cycle(book2, gw2, [observed])
    assert observed.stepped is None and len(planned) == 5

    unjudged = Member(name="u", history=history.Limits(5, 5))
    book3 = history.History(count_fetches=1)  # one task-count read a cycle: two cycles to judge two jobs
    gw3 = FakeGateway([job(1), job(2)], failed=set())
    await run_cycle(book3, gw3, [unjudged])
    assert unjudged.stepped is None
    await run_cycle(book3, gw3, [unjudged])
    assert unjudged.stepped is not None and all(k.get("result") for k in book3.recent[unjudged.key])


async def test_skip_policy_and_foreign_schedules_are_never_written() -> None:
    gw = FakeGateway([job(n) for n in range(1, 6)], failed=set())
    book = history.History()
    await run_cycle(book, gw, [Member(policy="skip", history=history.Limits(1, 1))])
    assert not [c for c in gw.calls if c[0] == "delete"]
    book2 = history.History()
    await book2.list_jobs(gw, ["s"], select=["id"])
    await book2.step(gw, [Member(history=history.Limits(1, 1))], {"s": SCHEDULE}, counts={},
                     previous=lambda m: {}, owned=lambda s, m: False)
    assert not [c for c in gw.calls if c[0] == "delete"]


async def test_results_shown_in_status_are_reused_after_a_restart() -> None:
    gw = FakeGateway([job(1), job(2)], failed=set())
    previous = {"recentJobs": [{"id": "s:job-1", "result": "success"}, {"id": "s:job-2", "result": "failure"}]}
    book = history.History()
    await run_cycle(book, gw, [Member(history=history.Limits(5, 5))], previous=previous)
    assert not [c for c in gw.calls if c[0] == "counts"]
    assert [k["result"] for k in book.recent[("ns", "r")]] == ["failure", "success"]


async def test_a_newer_run_now_job_is_the_recent_job() -> None:
    rn = runnow.job_id("s", "u", "v")
    gw = FakeGateway([job(1), {**job(0, minute=50), "id": rn}], failed=set())
    book = history.History()
    await book.list_jobs(gw, ["s"], select=["id"])
    schedule = {"executionInfo": {"recentJob": {"id": "s:job-1"}}}
    assert book.recent_job_id("s", schedule) == rn
    assert book.recent_job_id("s", {"executionInfo": {"recentJob": {"id": "s:job-9"}}}) == "s:job-9"  # unseen yet
    assert book.recent_job_id(None, schedule) == "s:job-1"


async def test_an_incremental_listing_forgets_deleted_running_jobs_and_new_schedules_relist() -> None:
    gw = FakeGateway([job(1, "active")], failed=set())
    book = history.History()
    await book.list_jobs(gw, ["s"], select=["id"])
    del gw.jobs["s:job-1"]
    await book.list_jobs(gw, ["s"], select=["id"])
    assert book.jobs_of("s") == []
    gw.calls.clear()
    await book.list_jobs(gw, ["s", "t"], select=["id"])
    assert gw.calls == [("list", None)]


def test_a_job_listed_again_unchanged_keeps_the_books_copy_and_index() -> None:
    book = history.History()
    book.list_filter(["s", "t"])
    book.ingest([job(1, sid="s"), job(2, "active", sid="s"), job(1, sid="t")], full=True)
    first = book.jobs["s:job-1"]
    assert [j["id"] for j in book.jobs_of("s")] == ["s:job-1", "s:job-2"]
    index = book._index
    book.list_filter(["s", "t"])
    book.ingest([job(1, sid="s"), job(2, "active", sid="s"), job(1, sid="t")], full=False)  # equal, new objects
    assert book.jobs["s:job-1"] is first and book._index is index
    book.list_filter(["s", "t"])
    book.ingest([job(1, sid="s"), job(2, sid="s", minute=9), job(1, sid="t")], full=False)  # job-2 completed
    assert book.jobs["s:job-1"] is first
    assert book.jobs["s:job-2"]["state"] == "completed"
    assert [j["state"] for j in book.jobs_of("s")] == ["completed", "completed"]  # the index follows the change


class ClockedGateway(FakeGateway):
    """A gateway that knows Batch's clock (``Gateway.batch_now``), as the real one does."""

    def __init__(self, jobs: list[dict[str, Any]], now: datetime) -> None:
        super().__init__(jobs, failed=set())
        self.now = now

    def batch_now(self) -> datetime:
        return self.now


async def test_a_steady_account_lists_only_its_running_jobs_once_the_margin_has_passed() -> None:
    """The listing's point moves with Batch's clock when nothing changes: jobs that completed long ago are not
    listed again every cycle (they were, while the newest transition listed stayed the point)."""
    jobs = [job(n, minute=n) for n in range(1, 9)] + [job(9, "active", minute=9)]
    gw = ClockedGateway(jobs, now=datetime(2026, 1, 1, 0, 10, tzinfo=UTC))
    book = history.History()
    await book.list_jobs(gw, ["s"], select=["id"])  # full
    listed = await book.list_jobs(gw, ["s"], select=["id"])  # since 00:10 - 5 min: jobs 5..9
    assert sorted(j["id"] for j in listed) == [f"s:job-{n}" for n in range(5, 10)]
    gw.now = datetime(2026, 1, 1, 0, 40, tzinfo=UTC)  # half an hour on, nothing changed
    await book.list_jobs(gw, ["s"], select=["id"])
    listed = await book.list_jobs(gw, ["s"], select=["id"])
    assert [j["id"] for j in listed] == ["s:job-9"], "only the running job"
    assert "stateTransitionTime ge datetime'2026-01-01T00:35:00" in str(gw.calls[-1][1])
    gw.jobs["s:job-9"] = job(9, minute=41)  # it completes: listed once, as a transition
    listed = await book.list_jobs(gw, ["s"], select=["id"])
    assert [j["id"] for j in listed] == ["s:job-9"] and book.jobs["s:job-9"]["state"] == "completed"


async def test_without_batchs_clock_the_point_is_the_newest_transition_listed() -> None:
    gw = FakeGateway([job(n, minute=n) for n in range(1, 9)], failed=set())
    book = history.History()
    await book.list_jobs(gw, ["s"], select=["id"])
    await book.list_jobs(gw, ["s"], select=["id"])
    assert "stateTransitionTime ge datetime'2026-01-01T00:03:00" in str(gw.calls[-1][1])
