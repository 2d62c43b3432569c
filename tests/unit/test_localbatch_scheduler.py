"""Recurrence math of the local Batch service (localbatch.scheduler): pure, no clock, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from localbatch.scheduler import Recurrence, decide

T0 = datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def rec(**schedule: str) -> Recurrence:
    return Recurrence.from_wire(schedule, created=T0)


def test_recurring_without_do_not_run_until_runs_at_creation_and_anchors_next_run() -> None:
    r = rec(recurrenceInterval="PT4H")
    first = r.first_slot_after(None)
    assert first == T0
    d = decide(r, next_run=first, now=T0, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time == T0 + 4 * H and not d.complete
    # A job that ran late does not move the anchor: the next slot is still T0 + 4h.
    d = decide(r, next_run=d.next_run_time, now=T0 + 3 * H, job_active=False, enabled=True)
    assert not d.create_job and d.next_run_time == T0 + 4 * H and d.wake_at == T0 + 4 * H


def test_do_not_run_until_is_the_anchor() -> None:
    r = Recurrence.from_wire({"doNotRunUntil": "2026-01-02T00:00:00Z", "recurrenceInterval": "PT4H"}, created=T0)
    first = r.first_slot_after(None)
    assert first == datetime(2026, 1, 2, tzinfo=UTC)
    assert not decide(r, next_run=first, now=T0, job_active=False, enabled=True).create_job
    d = decide(r, next_run=first, now=first + M, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time == first + 4 * H


def test_due_slot_waits_for_active_job_then_runs_within_window() -> None:
    r = rec(recurrenceInterval="PT4H")
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H + M, job_active=True, enabled=True)
    assert not d.create_job and d.next_run_time == T0 + 4 * H
    assert d.wake_at == T0 + 8 * H  # default startWindow is unlimited, but a slot never carries over
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 5 * H, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time == T0 + 8 * H


def test_start_window_skips_a_recurrence_the_previous_job_blocked() -> None:
    r = rec(recurrenceInterval="PT4H", startWindow="PT30M")
    waiting = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H + 10 * M, job_active=True, enabled=True)
    assert waiting.wake_at == T0 + 4 * H + 30 * M
    # The previous job ends after the window: this recurrence is lost, the next one is pending.
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H + 40 * M, job_active=False, enabled=True)
    assert not d.create_job and d.next_run_time == T0 + 8 * H


def test_missed_slots_are_not_carried_forward() -> None:
    r = rec(recurrenceInterval="PT1H")
    # Service was away for 5.5 hours: only one job, for the latest slot.
    d = decide(r, next_run=T0 + H, now=T0 + 5 * H + 30 * M, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time == T0 + 6 * H


def test_disabled_schedule_creates_no_job_but_can_catch_the_window_when_enabled() -> None:
    r = rec(recurrenceInterval="PT4H", startWindow="PT1H")
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H + M, job_active=False, enabled=False)
    assert not d.create_job and d.next_run_time == T0 + 4 * H
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H + 2 * M, job_active=False, enabled=True)
    assert d.create_job


def test_run_once_creates_one_job_then_completes_when_it_finishes() -> None:
    r = rec()
    first = r.first_slot_after(None)
    d = decide(r, next_run=first, now=T0, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time is None
    running = decide(r, next_run=None, now=T0 + H, job_active=True, enabled=True)
    assert not running.create_job and not running.complete
    assert decide(r, next_run=None, now=T0 + 2 * H, job_active=False, enabled=True).complete


def test_run_once_outside_its_start_window_completes_without_a_job() -> None:
    r = Recurrence.from_wire({"doNotRunUntil": "2026-01-01T06:00:00Z", "startWindow": "PT10M"}, created=T0)
    first = r.first_slot_after(None)
    d = decide(r, next_run=first, now=T0 + 2 * H, job_active=False, enabled=False)
    assert not d.create_job and d.complete


def test_do_not_run_after_stops_jobs_and_completes_after_the_deadline() -> None:
    r = rec(recurrenceInterval="PT4H", doNotRunAfter="2026-01-01T10:00:00Z")
    d = decide(r, next_run=T0 + 4 * H, now=T0 + 4 * H, job_active=False, enabled=True)
    assert d.create_job and d.next_run_time is None  # 13:30 would be after 10:00
    still = decide(r, next_run=None, now=T0 + 4 * H + M, job_active=False, enabled=True)
    assert not still.complete and still.wake_at is not None and still.wake_at > r.do_not_run_after  # type: ignore
    assert not decide(r, next_run=None, now=T0 + 5 * H, job_active=True, enabled=True).complete
    assert decide(r, next_run=None, now=T0 + 5 * H, job_active=False, enabled=True).complete


def test_duration_forms_are_accepted_and_max_window_is_unlimited() -> None:
    r = rec(recurrenceInterval="PT04H00M00S", startWindow="P10675199DT2H48M5.4775807S")
    assert r.interval == 4 * H and r.start_window is None


@given(
    interval_min=st.integers(min_value=1, max_value=600),
    offset_min=st.integers(min_value=0, max_value=100_000),
)
def test_next_run_time_is_always_on_the_anchor_grid_and_in_the_future(interval_min: int, offset_min: int) -> None:
    r = rec(recurrenceInterval=f"PT{interval_min}M")
    now = T0 + timedelta(minutes=offset_min, seconds=7)
    d = decide(r, next_run=T0, now=now, job_active=False, enabled=True)
    assert d.create_job
    assert d.next_run_time is not None and d.next_run_time > now
    assert (d.next_run_time - T0) % timedelta(minutes=interval_min) == timedelta(0)
    assert d.next_run_time - now <= timedelta(minutes=interval_min)
