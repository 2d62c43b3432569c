"""The ``batchop status`` table: BatchJobSchedules as ``kubectl get`` shows them, plus their last jobs.

Pure functions of the resources' JSON (as ``kubectl get bjs -o json`` returns them) and the current time, so the
layout is unit-tested. One row per resource (READY, STATE, INTERVAL, NEXT RUN, LAST JOB, LAST RESULT, AGE),
then, indented, one row per job in ``status.recentJobs`` (or ``status.recentJob`` when the list is empty): state,
result, start, end, task counts and output location. Marked ``!``: conditions that are not True, and why the last
job failed (its first failed task and cause, :func:`batchop.spec.failures.job_detail`). A job that waits without a
running task shows it in its RESULT: ``waiting 12m``, or the cause when Batch says why it cannot run
(``QuotaExceeded, waiting 12m``; the ``!`` line under the row says what to do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from batchop.api import conditions
from batchop.spec import failures
from batchwire import timestamps

NONE = "<none>"


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return conditions.find((obj.get("status") or {}).get("conditions"), type_) or {}


def age(created: str | None, now: datetime) -> str:
    """kubectl's short age: ``45s``, ``12m``, ``5h``, ``3d``."""
    if not created:
        return NONE
    try:
        seconds = int((now - timestamps.parse(created)).total_seconds())
    except ValueError:
        return NONE
    seconds = max(0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(value: str | None) -> str:
    """A Batch timestamp, to the second, in UTC (``2026-11-23 18:00:01Z``)."""
    if not value:
        return NONE
    try:
        return timestamps.parse(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except ValueError:
        return str(value)


def tasks(counts: Mapping[str, Any] | None) -> str:
    """``1/1 succeeded``, ``0/2 succeeded, 2 failed``, ``1 running``..."""
    if not counts:
        return NONE
    succeeded, failed = int(counts.get("succeeded") or 0), int(counts.get("failed") or 0)
    active, running = int(counts.get("active") or 0), int(counts.get("running") or 0)
    total = succeeded + failed + active + running
    parts = [f"{succeeded}/{total} succeeded"]
    parts += [f"{n} {label}" for n, label in ((failed, "failed"), (running, "running"), (active, "waiting")) if n]
    return ", ".join(parts)


def output(location: Mapping[str, Any] | None) -> str:
    if not location:
        return NONE
    if location.get("url"):
        return str(location["url"])
    return "/".join(str(p) for p in (location.get("container"), location.get("path")) if p)


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def job_result(obj: Mapping[str, Any], job: Mapping[str, Any], now: datetime) -> str:
    """A job's RESULT cell: its result; for the waiting recent job, how long it waits and why it cannot run."""
    if job.get("result"):
        return str(job["result"])
    recent = (obj.get("status") or {}).get("recentJob") or {}
    since = recent.get("waitingSince") if recent.get("id") == job.get("id") else None
    if since and job.get("state") == "active":
        ready = _condition(obj, conditions.READY)
        cause = f"{ready.get('reason')}, " if ready.get("reason") in conditions.JOB_BLOCKED_REASONS else ""
        return f"{cause}waiting {age(since, now)}"
    return str(job.get("state") or NONE)


def schedule_row(obj: Mapping[str, Any], now: datetime, *, namespace: bool) -> list[str]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    job = status.get("recentJob") or {}
    row = [str(meta.get("namespace"))] if namespace else []
    state = status.get("state") or NONE
    if spec.get("suspend") and state == "active":
        state = "active (suspending)"
    row += [
        str(meta.get("name")),
        str(_condition(obj, conditions.READY).get("status") or NONE),
        str(state),
        str((spec.get("schedule") or {}).get("recurrenceInterval") or "once"),
        when(status.get("nextRunTime")),
        str(job.get("id") or NONE),
        job_result(obj, job, now) if job else NONE,
        age(meta.get("creationTimestamp"), now),
    ]
    return row


def job_rows(obj: Mapping[str, Any], now: datetime | None = None) -> list[list[str]]:
    status = obj.get("status") or {}
    jobs = list(status.get("recentJobs") or [])
    recent = status.get("recentJob") or {}
    if recent and not any(j.get("id") == recent.get("id") for j in jobs):
        jobs = [recent, *jobs]  # the running job, before the kept ones
    now = now or datetime.now(UTC)
    return [
        [
            str(job.get("id") or NONE),
            str(job.get("state") or NONE),
            job_result(obj, job, now) if job.get("state") == "active" else str(job.get("result") or NONE),
            when(job.get("startTime") or job.get("creationTime")),
            when(job.get("endTime")),
            tasks(job.get("taskCounts")),
            output(job.get("output")),
        ]
        for job in jobs
    ]


def problems(obj: Mapping[str, Any]) -> list[str]:
    """The message of each condition that is not True (what to fix), and why the last job failed with the command
    that shows its output, for display under the row."""
    out = []
    seen: set[tuple[Any, Any]] = set()
    for type_ in (conditions.SYNCED, conditions.READY):
        cond = _condition(obj, type_)
        if cond and cond.get("status") != conditions.TRUE and cond.get("message"):
            if (cond.get("reason"), cond.get("message")) in seen:
                continue  # Ready repeats a failed Synced: said once
            seen.add((cond.get("reason"), cond.get("message")))
            out.append(f"{type_} {cond.get('status')} ({cond.get('reason')}): {cond.get('message')}")
    job = (obj.get("status") or {}).get("recentJob") or {}
    if job.get("result") == "failure":
        line = f"job {job.get('id')} failed: {failures.job_detail(job)}"
        if job.get("failedTasks"):
            line += f" (output: batchop logs {(obj.get('metadata') or {}).get('name')} --stderr)"
        out.append(line)
    return out


def render(objects: Sequence[Mapping[str, Any]], *, now: datetime | None = None, all_namespaces: bool = False,
           jobs: bool = True) -> str:
    """The whole table (a line per resource, its jobs and problems below it when ``jobs``)."""
    if not objects:
        return "No BatchJobSchedules found.\n"
    now = now or datetime.now(UTC)
    header = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME", "READY", "STATE", "INTERVAL", "NEXT RUN", "LAST JOB", "LAST RESULT", "AGE"]
    ordered = sorted(objects, key=lambda o: ((o.get("metadata") or {}).get("namespace", ""),
                                             (o.get("metadata") or {}).get("name", "")))
    lines = _table([header] + [schedule_row(o, now, namespace=all_namespaces) for o in ordered])
    if not jobs:
        return "\n".join(lines) + "\n"
    out = lines[:1]
    for line, obj in zip(lines[1:], ordered, strict=True):
        out.append(line)
        for problem in problems(obj):
            out.append(f"    ! {problem}")
        rows = job_rows(obj, now)
        if rows:
            out += _table([["JOB", "STATE", "RESULT", "START", "END", "TASKS", "OUTPUT"], *rows], indent="    ")
    return "\n".join(out) + "\n"
