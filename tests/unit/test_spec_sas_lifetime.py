"""The SAS lifetime policy: how long a SAS must live and when it must be renewed (pure, no storage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchop.spec import sas_lifetime
from batchop.spec.sas_lifetime import LifetimeError, parse_lifetime, renewal_due, required_until

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_parse_lifetime() -> None:
    assert parse_lifetime(None) == timedelta(days=7)
    assert parse_lifetime("PT2M30S") == timedelta(seconds=150)
    assert sas_lifetime.lifetime_of({"sasLifetime": "P1D"}) == timedelta(days=1)
    with pytest.raises(LifetimeError, match="shorter than the minimum PT1M") as info:
        parse_lifetime("PT10S")
    assert info.value.field == "spec.storage.sasLifetime"
    with pytest.raises(ValueError):
        parse_lifetime("seven days")


def test_renewal_not_due_while_the_next_job_is_covered() -> None:
    expires = NOW + timedelta(days=7)
    assert not renewal_due(expires, now=NOW, next_run_time=NOW + timedelta(hours=4), max_wall_clock="PT1H")


def test_renewal_due_when_the_next_job_could_outlive_the_sas() -> None:
    # next run in 4 h, a job may run 1 h: a SAS expiring in 5 h (no margin left) must be renewed now
    expires = NOW + timedelta(hours=5)
    assert renewal_due(expires, now=NOW, next_run_time=NOW + timedelta(hours=4), max_wall_clock="PT1H")
    # ... but one expiring in 6 h covers that job with margin
    assert not renewal_due(NOW + timedelta(hours=6), now=NOW, next_run_time=NOW + timedelta(hours=4),
                           max_wall_clock=timedelta(hours=1))


def test_renewal_uses_a_default_window_for_unbounded_jobs() -> None:
    unbounded = "P10675199DT2H48M5.4775807S"
    next_run = NOW + timedelta(hours=4)
    assert renewal_due(NOW + timedelta(hours=20), now=NOW, next_run_time=next_run, max_wall_clock=unbounded)
    assert not renewal_due(NOW + timedelta(days=2), now=NOW, next_run_time=next_run, max_wall_clock=None)


def test_renewal_without_next_run_assumes_a_job_may_start_now() -> None:
    assert required_until(now=NOW, next_run_time=None, max_wall_clock="PT10M") == NOW + timedelta(minutes=11)
    assert required_until(now=NOW, next_run_time=NOW - timedelta(hours=1), max_wall_clock="PT10M") == (
        NOW + timedelta(minutes=11)
    )
    assert renewal_due(None, now=NOW, next_run_time=None, max_wall_clock=None)
    assert renewal_due(NOW - timedelta(seconds=1), now=NOW, next_run_time=None, max_wall_clock="PT1M")


def test_fresh_sas_of_a_sufficient_lifetime_is_not_due_again() -> None:
    """No renewal loop: right after minting with lifetime > minimum_lifetime, renewal is not due."""
    recurrence, window = timedelta(minutes=1), timedelta(seconds=30)
    lifetime = sas_lifetime.minimum_lifetime(recurrence, window) + timedelta(seconds=1)
    for elapsed in range(0, 60, 5):  # any moment within a recurrence, the next run at most one interval away
        now = NOW + timedelta(seconds=elapsed)
        next_run = NOW + recurrence
        assert not renewal_due(now + lifetime, now=now, next_run_time=next_run, max_wall_clock=window)


def test_max_wall_clock_of_a_job_spec() -> None:
    assert sas_lifetime.max_wall_clock({"constraints": {"maxWallClockTime": "PT1H"}}) == timedelta(hours=1)
    manager = {"jobManagerTask": {"constraints": {"maxWallClockTime": "PT10M", "maxTaskRetryCount": 2}}}
    assert sas_lifetime.max_wall_clock(manager) == timedelta(minutes=30)
    manager["jobManagerTask"]["killJobOnCompletion"] = False
    assert sas_lifetime.max_wall_clock(manager) is None
    assert sas_lifetime.max_wall_clock({"constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S"}}) is None


def test_check_lifetime() -> None:
    job = {"constraints": {"maxWallClockTime": "PT1H"}}
    assert sas_lifetime.check_lifetime({"sasLifetime": "P7D"}, {"recurrenceInterval": "PT4H"}, job) is None
    problem = sas_lifetime.check_lifetime({"sasLifetime": "PT4H"}, {"recurrenceInterval": "PT4H"}, job)
    assert problem is not None and problem.field == "spec.storage.sasLifetime"
    assert "PT5H6M1S" in problem.message


def test_a_release_task_extends_the_job_window_by_its_wall_clock() -> None:
    """A release task runs (and downloads its resource files) when the job ends, and again after a node reboot:
    the SAS it holds must outlive the job by the release task's maxWallClockTime (Batch's default PT15M)."""
    job: dict[str, Any] = {"constraints": {"maxWallClockTime": "PT1H"}, "jobReleaseTask": {"commandLine": "x"}}
    assert sas_lifetime.max_wall_clock(job) == timedelta(hours=1, minutes=15)
    job["jobReleaseTask"]["maxWallClockTime"] = "PT5M"
    assert sas_lifetime.max_wall_clock(job) == timedelta(hours=1, minutes=5)
    manager = {"jobManagerTask": {"constraints": {"maxWallClockTime": "PT10M"}}, "jobReleaseTask": {"commandLine": "x"}}
    assert sas_lifetime.max_wall_clock(manager) == timedelta(minutes=25)
    assert sas_lifetime.max_wall_clock({"jobReleaseTask": {"commandLine": "x"}}) is None  # unbounded stays so
    # the window rule: a SAS expiring before the next job's release task could have run is due for renewal
    next_run = NOW + timedelta(hours=4)
    window = sas_lifetime.max_wall_clock(job)
    ends = next_run + timedelta(hours=1)  # the job's own limit; its release task may run until ends + PT5M
    assert renewal_due(ends + timedelta(minutes=3), now=NOW, next_run_time=next_run, max_wall_clock=window)
    assert not renewal_due(ends + timedelta(minutes=5) + timedelta(minutes=6, seconds=31), now=NOW,
                           next_run_time=next_run, max_wall_clock=window)
    # and check_lifetime asks for the longer minimum
    problem = sas_lifetime.check_lifetime({"sasLifetime": "PT5H6M1S"}, {"recurrenceInterval": "PT4H"}, job)
    assert problem is not None and "PT5H11M31S" in problem.message
