"""What a failed task says about itself, in the few words a user reads first.

Batch reports a failed task as ``executionInfo {exitCode, result: failure, failureInfo {category, code,
message}}``. A non-zero exit code is ``FailureExitCode`` with a generic message, so the exit code is the news
(``task wordcount exited with 127``); any other code means no process ran to the end for a reason Batch names
(``task wordcount failed: ContainerInvalidImage: ...``). The operator's Warning Event, ``batchop logs``,
``batchop status`` and the Argo CD health message (``examples/argocd/health.lua``, the same words in Lua) all use
:func:`describe` (a job's line: :func:`job_detail`).

:func:`failed_task` turns a wire task into the ``status.recentJob.failedTasks`` item; both are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from batchop.api.types import FailedTask, FailureInfo

SHOWN = 3
"""How many failed tasks ``status.recentJob.failedTasks`` names (the count says how many in all)."""
TASK_SELECT = ("id", "executionInfo")
"""The task properties a failed-task listing needs (``$select``)."""
FAILED_FILTER = "executionInfo/result eq 'failure'"
"""The ``$filter`` of a failed-task listing."""
MESSAGE_LIMIT = 300
"""Longer failure messages are cut (status and Event messages stay readable)."""


def failed_task(task: Mapping[str, Any]) -> FailedTask:
    """The ``failedTasks`` item of a wire task (``id`` and ``executionInfo``)."""
    info = task.get("executionInfo") or {}
    out: dict[str, Any] = {"id": str(task.get("id") or "?")}
    if isinstance(info.get("exitCode"), int):
        out["exitCode"] = info["exitCode"]
    failure = info.get("failureInfo")
    if isinstance(failure, Mapping):
        kept = {k: str(failure[k]) for k in ("category", "code", "message") if failure.get(k) is not None}
        detail = _details(failure.get("details"), kept.get("message", ""))
        if detail:
            kept["message"] = f"{kept['message']} ({detail})" if kept.get("message") else detail
        if "message" in kept and len(kept["message"]) > MESSAGE_LIMIT:
            kept["message"] = kept["message"][: MESSAGE_LIMIT - 3] + "..."
        if kept:
            out["failureInfo"] = cast(FailureInfo, kept)
    for name in ("startTime", "endTime"):
        if info.get(name):
            out[name] = str(info[name])
    if isinstance(info.get("retryCount"), int) and info["retryCount"]:
        out["retryCount"] = info["retryCount"]
    return cast(FailedTask, out)


def _details(details: Any, message: str) -> str:
    """``failureInfo.details`` as ``Name: value; ...``: where Batch puts what the message leaves out (the image
    that could not be had, the run option it refused), minus values the message already says."""
    if not isinstance(details, list):
        return ""
    parts = [f"{item['name']}: {item['value']}" for item in details
             if isinstance(item, Mapping) and item.get("name") and item.get("value")
             and str(item["value"]) not in message]
    return "; ".join(parts)


def failed_tasks(tasks: Iterable[Mapping[str, Any]], limit: int = SHOWN) -> list[FailedTask]:
    """The first ``limit`` failed tasks, in the order Batch listed them."""
    return [failed_task(t) for t in list(tasks)[:limit]]


def describe(task: Mapping[str, Any]) -> str:
    """``task ID exited with N`` or ``task ID failed: CODE: message`` for a ``failedTasks`` item."""
    task_id = task.get("id") or "?"
    failure = task.get("failureInfo") or {}
    code = failure.get("code")
    exit_code = task.get("exitCode")
    if exit_code is not None and code in (None, "FailureExitCode"):
        return f"task {task_id} exited with {exit_code}"
    if code:
        message = str(failure.get("message") or "").strip()
        return f"task {task_id} failed: {code}: {message}" if message else f"task {task_id} failed: {code}"
    return f"task {task_id} failed"


def summary(failed: list[Mapping[str, Any]] | None, count: int | None) -> str | None:
    """The first failed task's cause, and how many others failed: ``task a exited with 1 (and 2 more)``."""
    if not failed:
        return None
    text = describe(failed[0])
    others = max(int(count or len(failed)), len(failed)) - 1
    return f"{text} (and {others} more)" if others > 0 else text


def job_detail(job: Mapping[str, Any]) -> str:
    """Why a failed ``status.recentJob`` failed, in one line: its scheduling error, else its first failed task
    and cause (``task wordcount exited with 127 (and 2 more)``), else how many tasks failed."""
    counts = job.get("taskCounts") or {}
    return (
        (job.get("schedulingError") or {}).get("message")
        or summary(job.get("failedTasks"), job.get("failedTaskCount"))
        or f"{counts.get('failed', 0)} task(s) failed"
    )
