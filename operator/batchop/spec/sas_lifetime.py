"""How long the SAS tokens inside a schedule must live, and when they must be renewed: the policy, no minting.

A schedule's ``jobSpecification`` carries the SAS URLs of its blob references (:mod:`batchop.spec.blobrefs`),
and every job Batch starts from it uses them: resource files are read when a job starts, outputs uploaded
when its tasks end. So a SAS must outlive the next job the schedule can start, with some slack:

- :func:`lifetime_of`: ``spec.storage.sasLifetime`` (default P7D, at least PT1M);
- :func:`max_wall_clock`: how long one job can last, its release task included (:data:`DEFAULT_JOB_WINDOW`
  when unbounded);
- :func:`renewal_due`: the SAS must be re-minted now, before the next job could outlive it
  (:func:`required_until`, with :func:`renewal_margin`);
- :func:`check_lifetime`: a ``sasLifetime`` too short for renewal to keep ahead of (:func:`minimum_lifetime`),
  reported by :mod:`batchop.spec.validation` as a warning;
- :func:`held_expiry`: when the SAS a schedule already holds expire, read from the tokens themselves (a
  schedule the operator adopted was written by someone else, so nothing else says it).

:mod:`batchop.blob.sas` mints the tokens with these lifetimes; the operator's poller asks :func:`renewal_due`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from batchwire import durations

DEFAULT_SAS_LIFETIME = timedelta(days=7)
MIN_SAS_LIFETIME = timedelta(minutes=1)
#: When a job's wall clock is unbounded, assume a job runs at most this long (docs/blob-storage.md).
DEFAULT_JOB_WINDOW = timedelta(days=1)
#: A job release task's ``maxWallClockTime`` when it sets none: Batch's default, also the most it accepts.
RELEASE_TASK_WALL_CLOCK = timedelta(minutes=15)
LIFETIME_FIELD = "spec.storage.sasLifetime"


class LifetimeError(ValueError):
    """A ``sasLifetime`` that cannot be used; ``field`` names it, ``message`` the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_lifetime(value: Any, field_name: str = LIFETIME_FIELD) -> timedelta:
    """Parse ``sasLifetime`` (ISO-8601 duration; default P7D, at least PT1M); :class:`LifetimeError` if unusable."""
    if value in (None, ""):
        return DEFAULT_SAS_LIFETIME
    try:
        ticks = durations.parse_ticks(str(value))
    except durations.DurationError as exc:
        raise LifetimeError(field_name, str(exc)) from None
    lifetime = timedelta(microseconds=ticks // 10)
    if lifetime < MIN_SAS_LIFETIME:
        raise LifetimeError(field_name, f"{value} is shorter than the minimum PT1M; use e.g. P7D (the default)")
    return lifetime


def lifetime_of(storage_spec: Mapping[str, Any] | None) -> timedelta:
    """``spec.storage.sasLifetime`` parsed (default P7D)."""
    return parse_lifetime((storage_spec or {}).get("sasLifetime"))


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _duration(value: timedelta | str | None) -> timedelta | None:
    """A bounded duration, or None for absent / Batch's 'unlimited' (TimeSpan.MaxValue-ish) values."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        ticks = durations.parse_ticks(value)
        if ticks >= durations.MAX_TICKS // 2:
            return None
        value = timedelta(microseconds=ticks // 10)
    if value >= timedelta(days=3650):
        return None
    return value


def max_wall_clock(job_spec: Mapping[str, Any]) -> timedelta | None:
    """How long one job of this ``jobSpecification`` can last at most, its job release task included; None
    when unbounded.

    The job's own ``constraints.maxWallClockTime`` bounds it; failing that, a job manager task that
    ends the job (``killJobOnCompletion`` true, the default) bounds it by its own
    ``constraints.maxWallClockTime`` times its tries. A job release task runs when the job ends, and
    Batch marks the job complete only once it has (it reruns after a node reboot): it downloads its
    resource files then, so a job with one lasts up to the release task's ``maxWallClockTime`` longer
    (default and maximum PT15M).
    """
    job_limit = _duration((job_spec.get("constraints") or {}).get("maxWallClockTime"))
    manager = job_spec.get("jobManagerTask") or {}
    task_limit = None
    if manager and manager.get("killJobOnCompletion", True) is not False:
        task_limit = _duration((manager.get("constraints") or {}).get("maxWallClockTime"))
        if task_limit is not None:
            retries = int((manager.get("constraints") or {}).get("maxTaskRetryCount") or 0)
            if retries < 0:
                task_limit = None
            else:
                task_limit = task_limit * (retries + 1)
    bounded = [d for d in (job_limit, task_limit) if d is not None]
    if not bounded:
        return None
    return min(bounded) + release_wall_clock(job_spec)


def release_wall_clock(job_spec: Mapping[str, Any]) -> timedelta:
    """How long the job's release task may run after the job ends (zero without one)."""
    release = job_spec.get("jobReleaseTask")
    if not isinstance(release, Mapping):
        return timedelta(0)
    return _duration(release.get("maxWallClockTime")) or RELEASE_TASK_WALL_CLOCK


def renewal_margin(window: timedelta) -> timedelta:
    """Slack added after a job's window: a tenth of it, at least 30 s, at most 15 min (clock skew, uploads)."""
    return min(timedelta(minutes=15), max(timedelta(seconds=30), window / 10))


def _window(max_wall_clock: timedelta | str | None) -> timedelta:
    window = _duration(max_wall_clock) if not isinstance(max_wall_clock, timedelta) else max_wall_clock
    return DEFAULT_JOB_WINDOW if window is None else window


def required_until(
    *, now: datetime, next_run_time: datetime | None, max_wall_clock: timedelta | str | None
) -> datetime:
    """Until when the SAS in the schedule must stay valid: the end of the next job it could start, plus margin.

    The next job starts at ``next_run_time`` (at once when None or past, e.g. a run-now or a disabled
    schedule being enabled) and reads resource files, then uploads outputs, up to its wall clock later.
    """
    start = _as_utc(now)
    if next_run_time is not None:
        start = max(start, _as_utc(next_run_time))
    window = _window(max_wall_clock)
    return start + window + renewal_margin(window)


def renewal_due(
    expires_at: datetime | None,
    *,
    now: datetime,
    next_run_time: datetime | None,
    max_wall_clock: timedelta | str | None,
) -> bool:
    """True when the schedule's SAS must be re-minted (PATCH of ``jobSpecification``) now.

    That is when the SAS could expire under the next job the schedule will start: before
    ``next_run_time + max_wall_clock + margin`` (:func:`required_until`). It then fires right after
    Batch advances ``nextRunTime`` past the last job the old SAS covers, a whole recurrence before the
    job that needs the new one. ``expires_at`` None (unknown, e.g. after adoption) is due.
    """
    if expires_at is None:
        return True
    needed = required_until(now=now, next_run_time=next_run_time, max_wall_clock=max_wall_clock)
    return _as_utc(expires_at) <= needed


def minimum_lifetime(recurrence_interval: timedelta | str | None, max_wall_clock: timedelta | str | None) -> timedelta:
    """The shortest ``sasLifetime`` that renewal can keep ahead of: one recurrence plus one job window plus margin.

    With a shorter lifetime a freshly minted SAS would already be due for renewal.
    """
    recurrence = _duration(recurrence_interval) or timedelta(0)
    window = _window(max_wall_clock)
    return recurrence + window + renewal_margin(window)


@dataclass(frozen=True)
class LifetimeProblem:
    field: str
    message: str


def check_lifetime(
    storage_spec: Mapping[str, Any] | None, schedule: Mapping[str, Any] | None, job_spec: Mapping[str, Any]
) -> LifetimeProblem | None:
    """A problem when ``spec.storage.sasLifetime`` is too short for this schedule (see :func:`minimum_lifetime`)."""
    lifetime = lifetime_of(storage_spec)
    recurrence = (schedule or {}).get("recurrenceInterval")
    window = max_wall_clock(job_spec)
    minimum = minimum_lifetime(recurrence, window)
    if lifetime > minimum:
        return None
    shown = durations.format_ticks((int(minimum.total_seconds()) + 1) * durations.TICKS_PER_SECOND)
    why = f"one recurrence ({recurrence}) plus " if recurrence else ""
    window_text = durations.format_ticks(int(window.total_seconds()) * durations.TICKS_PER_SECOND) if window else (
        "a default of P1D for an unbounded maxWallClockTime")
    return LifetimeProblem(
        LIFETIME_FIELD,
        f"{(storage_spec or {}).get('sasLifetime') or 'P7D'} is too short: a SAS must outlive {why}one job "
        f"({window_text}) plus margin; use at least {shown}, or bound the job with "
        "jobSpecification.constraints.maxWallClockTime",
    )


SAS_EXPIRY_PARAMETERS = ("se", "ske")
"""A SAS's signed expiry, and for a user-delegation SAS the expiry of the key that signed it: it stops working at
the earlier of the two (Azure Storage, "Create a user delegation SAS")."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def sas_expiry(url: str) -> datetime | None:
    """When the SAS in ``url`` stops working (None: no SAS, or no readable expiry)."""
    if "sig=" not in url:
        return None
    query = parse_qs(urlsplit(url).query)
    if "sig" not in query:
        return None
    found: list[datetime] = []
    for name in SAS_EXPIRY_PARAMETERS:
        for text in query.get(name, []):
            try:
                found.append(_as_utc(datetime.fromisoformat(text)))
            except ValueError:
                continue
    return min(found) if found else None


def held_expiry(job_spec: Mapping[str, Any]) -> datetime | None:
    """When the first SAS held anywhere in ``job_spec`` (resource files, output containers, ...) expires; None
    when it holds none."""
    expiries = [e for text in _strings(job_spec) if (e := sas_expiry(text)) is not None]
    return min(expiries) if expiries else None
