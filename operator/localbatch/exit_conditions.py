"""What a completed task means for its job and its dependants: Batch's ``exitConditions``, as pure functions.

A task's ``exitConditions`` (API 2025-06-01, ``ExitConditions``) map how it completed to ``ExitOptions``
``{jobAction, dependencyAction}``:

- an exit code listed in ``exitCodes`` (first match), else one inside an ``exitCodeRanges`` entry (inclusive);
- a pre-processing error (the task could not start: resource files, a missing program, container set-up;
  no exit code) -> ``preProcessingError``;
- a file upload error -> ``fileUploadError``, unless the exit code was listed in ``exitCodes`` /
  ``exitCodeRanges``, which then takes precedence (the SDK's ``ExitConditions.file_upload_error``);
- anything else that is not a success -> ``default``. Exit code 0 uses ``default`` only when listed
  explicitly ("If you want non-default behavior on exit code 0, you must list it explicitly").

Missing values take Batch's defaults (``ExitOptions``): ``jobAction`` ``none`` for exit code 0 and
``terminate`` otherwise; ``dependencyAction`` ``satisfy`` for exit code 0 and ``block`` otherwise.
``jobAction`` is only carried out when the job's ``onTaskFailure`` is ``performexitoptionsjobaction``
and the task failed (``onTaskFailure``: "A Task is considered to have failed if has a failureInfo").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

PRE_PROCESSING_CODES_PREFIXES = ("Blob", "ResourceContainer", "ResourceFile", "Command", "Container")
"""``failureInfo.code`` prefixes of errors before the command line ran (no exit code)."""


@dataclass(frozen=True)
class Outcome:
    """How a task completed, as far as exit conditions care."""

    exit_code: int | None
    failure_code: str | None
    """``executionInfo.failureInfo.code`` (None: the task succeeded)."""

    @property
    def succeeded(self) -> bool:
        return self.failure_code is None

    @property
    def upload_error(self) -> bool:
        return (self.failure_code or "").startswith("FileUpload")

    @property
    def pre_processing_error(self) -> bool:
        return self.failure_code is not None and self.exit_code is None and not self.upload_error


@dataclass(frozen=True)
class ExitOptions:
    job_action: str
    """``none``, ``disable`` or ``terminate``."""
    dependency_action: str
    """``satisfy`` or ``block``."""


def outcome_of(task: JSON) -> Outcome:
    """The outcome recorded in a completed task's ``executionInfo``."""
    info = task.get("executionInfo") or {}
    failure = info.get("failureInfo") or {}
    code = info.get("exitCode")
    failed = info.get("result") == "failure" or bool(failure)
    return Outcome(code if isinstance(code, int) else None, (failure.get("code") or "TaskFailed") if failed else None)


def _listed(conditions: JSON, exit_code: int | None) -> JSON | None:
    if exit_code is None:
        return None
    for mapping in conditions.get("exitCodes") or []:
        if mapping.get("code") == exit_code:
            return dict(mapping.get("exitOptions") or {})
    for mapping in conditions.get("exitCodeRanges") or []:
        if int(mapping.get("start", 0)) <= exit_code <= int(mapping.get("end", -1)):
            return dict(mapping.get("exitOptions") or {})
    return None


def evaluate(conditions: JSON | None, outcome: Outcome) -> ExitOptions:
    """The ``ExitOptions`` that apply to ``outcome`` under ``conditions`` (a task's ``exitConditions``)."""
    conditions = conditions or {}
    chosen = _listed(conditions, outcome.exit_code)
    # The defaults follow the exit code when a listed exit code decided, else whether the task succeeded.
    clean = outcome.exit_code == 0 if chosen is not None else outcome.succeeded
    if chosen is None and not outcome.succeeded:
        if outcome.upload_error and conditions.get("fileUploadError") is not None:
            chosen = dict(conditions["fileUploadError"])
        elif outcome.pre_processing_error and conditions.get("preProcessingError") is not None:
            chosen = dict(conditions["preProcessingError"])
        else:
            chosen = dict(conditions.get("default") or {})
    chosen = chosen or {}
    return ExitOptions(
        job_action=str(chosen.get("jobAction") or ("none" if clean else "terminate")),
        dependency_action=str(chosen.get("dependencyAction") or ("satisfy" if clean else "block")),
    )


def job_action(job: JSON, task: JSON) -> str:
    """What a completed task does to its job: ``none``, ``disable`` or ``terminate``.

    Only a failed task acts, and only when the job's ``onTaskFailure`` is ``performexitoptionsjobaction``
    (``noaction``, the default, ignores every exit condition's ``jobAction``).
    """
    outcome = outcome_of(task)
    if outcome.succeeded or (job.get("onTaskFailure") or "noaction") != "performexitoptionsjobaction":
        return "none"
    return evaluate(task.get("exitConditions"), outcome).job_action


def dependency_action(task: JSON) -> str:
    """``satisfy`` or ``block``: what a completed task means for the tasks that depend on it."""
    return evaluate(task.get("exitConditions"), outcome_of(task)).dependency_action


def uses_job_action(conditions: JSON | None) -> bool:
    """Whether any ``ExitOptions`` of ``conditions`` sets ``jobAction`` (refused when ``onTaskFailure`` is
    ``noaction``)."""
    return any("jobAction" in options for options in _all_options(conditions))


def uses_dependency_action(conditions: JSON | None) -> bool:
    """Whether any ``ExitOptions`` sets ``dependencyAction`` (refused without ``usesTaskDependencies``)."""
    return any("dependencyAction" in options for options in _all_options(conditions))


def _all_options(conditions: JSON | None) -> list[JSON]:
    conditions = conditions or {}
    found = [m.get("exitOptions") or {} for m in conditions.get("exitCodes") or []]
    found += [m.get("exitOptions") or {} for m in conditions.get("exitCodeRanges") or []]
    found += [conditions[k] for k in ("preProcessingError", "fileUploadError", "default") if conditions.get(k)]
    return found
