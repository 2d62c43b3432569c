"""Job-schedule recurrence as Azure Batch computes it: pure functions of times, no I/O.

A schedule's run times ("slots") are anchored to the schedule, not to when jobs ran: the anchor is
``doNotRunUntil`` when set, otherwise the schedule's creation time (or, for a run-once schedule,
the time its ``schedule`` was last set), and slot ``k`` is ``anchor + k * recurrenceInterval``.

Rules (Batch REST reference, ``BatchJobScheduleConfiguration``):

- At most one active job per schedule. When a slot is due while the previous job still runs (or the
  schedule is disabled), Batch waits; if no job could be created within ``startWindow`` of the slot,
  the slot is skipped. A due slot is never carried into the next interval, so a ``startWindow`` at
  least as long as the interval behaves as an infinite one.
- No ``recurrenceInterval``: one job, at the anchor, within ``startWindow``; the schedule completes
  once that job has finished (or the window passed without one).
- No job is created after ``doNotRunAfter``; once it has passed and no job is active, the schedule
  completes.

The engine keeps a schedule's pending slot in ``executionInfo.nextRunTime`` (so it survives a
restart) and asks :func:`decide` what to do whenever time passes or a job ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchwire import durations, timestamps


@dataclass(frozen=True)
class Recurrence:
    """The time rules of one schedule, parsed from its wire ``schedule`` object."""

    anchor: datetime
    """Slot 0: ``doNotRunUntil`` if set, else the schedule's creation (or last ``schedule`` change)."""
    interval: timedelta | None
    """``recurrenceInterval``; ``None`` for a run-once schedule."""
    start_window: timedelta | None
    """``startWindow``; ``None`` means unlimited."""
    do_not_run_after: datetime | None

    @classmethod
    def from_wire(cls, schedule: dict[str, Any] | None, *, created: datetime) -> Recurrence:
        """Build from a wire ``schedule`` object (``None``/``{}``: run once, now)."""
        schedule = schedule or {}
        until = schedule.get("doNotRunUntil")
        after = schedule.get("doNotRunAfter")
        interval = schedule.get("recurrenceInterval")
        window = schedule.get("startWindow")
        return cls(
            anchor=timestamps.parse(until) if until else created,
            interval=_duration(interval),
            start_window=_duration(window),
            do_not_run_after=timestamps.parse(after) if after else None,
        )

    # -- slots ------------------------------------------------------------------------------------
    def slot_at_or_before(self, when: datetime) -> datetime | None:
        """The latest slot not later than ``when`` (``None`` before the anchor)."""
        if when < self.anchor:
            return None
        if self.interval is None:
            return self.anchor
        k = (when - self.anchor) // self.interval
        return self.anchor + k * self.interval

    def first_slot_after(self, when: datetime | None) -> datetime | None:
        """The first slot strictly after ``when`` (the anchor when ``when`` is ``None`` or earlier).

        ``None`` when there is none: a run-once schedule already past its anchor, or a slot later
        than ``doNotRunAfter``.
        """
        if when is None or when < self.anchor:
            slot: datetime | None = self.anchor
        elif self.interval is None:
            slot = None
        else:
            k = (when - self.anchor) // self.interval + 1
            slot = self.anchor + k * self.interval
        return self._allowed(slot)

    def window_end(self, slot: datetime) -> datetime | None:
        """When the chance to create the job of ``slot`` is lost (``None``: never, for run-once)."""
        limits = []
        if self.start_window is not None:
            limits.append(slot + self.start_window)
        if self.interval is not None:
            limits.append(slot + self.interval)  # never carried into the next interval
        return min(limits) if limits else None

    def _allowed(self, slot: datetime | None) -> datetime | None:
        if slot is None or (self.do_not_run_after is not None and slot > self.do_not_run_after):
            return None
        return slot


@dataclass(frozen=True)
class Decision:
    """What the engine must do for one schedule at one instant."""

    create_job: bool
    """Create the job of the due slot now."""
    next_run_time: datetime | None
    """The new ``executionInfo.nextRunTime`` (``None``: no further job will be created)."""
    complete: bool
    """The schedule has nothing left to do: move it to ``completed``."""
    wake_at: datetime | None
    """The next instant at which :func:`decide` may answer differently by the passing of time alone
    (job ends and enable/disable are notified separately)."""


def decide(
    rec: Recurrence,
    *,
    next_run: datetime | None,
    now: datetime,
    job_active: bool,
    enabled: bool,
) -> Decision:
    """Decide for a schedule whose pending slot is ``next_run`` (from :meth:`Recurrence.first_slot_after`).

    ``next_run`` is ``None`` once the schedule will create no more jobs (its run-once job was created,
    or the next slot is after ``doNotRunAfter``).
    """
    if next_run is None or rec._allowed(next_run) is None:
        return _finished(rec, now=now, job_active=job_active)
    if now < next_run:
        return Decision(False, next_run, False, next_run)
    slot = rec.slot_at_or_before(now)
    assert slot is not None  # now >= next_run >= anchor
    slot = max(slot, next_run) if rec.interval is None else slot
    if rec._allowed(slot) is None or (rec.do_not_run_after is not None and now > rec.do_not_run_after):
        return _finished(rec, now=now, job_active=job_active)
    end = rec.window_end(slot)
    if end is not None and now >= end:  # the chance for this slot is lost
        following = rec.first_slot_after(slot)
        if following is None:
            return _finished(rec, now=now, job_active=job_active)
        return decide(rec, next_run=following, now=now, job_active=job_active, enabled=enabled)
    if job_active or not enabled:
        wake = end
        if rec.do_not_run_after is not None and (wake is None or rec.do_not_run_after < wake):
            wake = rec.do_not_run_after
        return Decision(False, slot, False, wake)
    following = rec.first_slot_after(slot)
    if following is None:
        wake = rec.do_not_run_after if rec.interval is not None else None
        return Decision(True, None, False, wake)
    return Decision(True, following, False, following)


def _finished(rec: Recurrence, *, now: datetime, job_active: bool) -> Decision:
    """No more slots: complete once no job is active (and, when recurring, ``doNotRunAfter`` passed)."""
    if job_active:
        return Decision(False, None, False, None)
    if rec.interval is not None and rec.do_not_run_after is not None and now <= rec.do_not_run_after:
        return Decision(False, None, False, rec.do_not_run_after + timedelta(microseconds=1))
    return Decision(False, None, True, None)


def _duration(text: str | None) -> timedelta | None:
    if not text:
        return None
    value = durations.parse(text)
    return None if value >= timedelta(days=10_000_000) else value
