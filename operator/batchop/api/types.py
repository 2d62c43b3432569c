"""The shapes of the BatchJobSchedule documents the operator reads and writes, as typed dictionaries.

The status document (``status``: its fields, conditions, ``recentJob``, ``recentJobs``, ``pool``, ``sas``)
and the ``spec`` fields the controller reads, as :class:`typing.TypedDict` s: the type checker knows every
key the operator uses, and at run time they are the plain dicts the API server sends and receives (no
conversion, no copy). :mod:`batchop.api.crd` declares the same shapes as the CRD's OpenAPI schema.

In a status *update* (the fields handed to :class:`batchop.kube.client.StatusWriter`) a ``None`` value
removes the field; a status read back from the API server has no ``None`` values.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict


class Condition(TypedDict, total=False):
    """A Kubernetes-style condition (``Ready`` or ``Synced``, :mod:`batchop.api.conditions`); the schema
    requires only ``type`` and ``status``."""

    type: Required[str]
    status: Required[str]
    reason: str
    message: str
    observedGeneration: int
    lastTransitionTime: str


class TaskCounts(TypedDict, total=False):
    """A job's task counts (Batch's ``taskcounts``)."""

    active: int
    running: int
    completed: int
    succeeded: int
    failed: int


class SchedulingError(TypedDict, total=False):
    """Why Batch could not schedule a job (its ``executionInfo.schedulingError``)."""

    category: str
    code: str
    message: str


class FailureInfo(TypedDict, total=False):
    """Why Batch counts a task as failed (its ``executionInfo.failureInfo``)."""

    category: str
    code: str
    message: str


class FailedTask(TypedDict, total=False):
    """One failed task of a failed job: what ``batchop logs --task`` names and Events quote."""

    id: Required[str]
    exitCode: int
    """Absent when the task never ran a process (a resource file, the image or the command failed first)."""
    failureInfo: FailureInfo
    startTime: str
    endTime: str
    retryCount: int


class JobSummary(TypedDict, total=False):
    """What status says of any job: the fields ``status.recentJob`` and ``status.recentJobs`` items share."""

    id: Required[str]
    state: str
    creationTime: str
    startTime: str
    endTime: str
    terminateReason: str
    result: str
    """``success`` or ``failure`` once the job completed."""
    taskCounts: TaskCounts
    poolId: str


class RecentJob(JobSummary, total=False):
    """``status.recentJob``: the schedule's most recent job."""

    schedulingError: SchedulingError
    failedTasks: list[FailedTask]
    """The first few failed tasks of a failed job (at most :data:`batchop.spec.failures.SHOWN`)."""
    failedTaskCount: int
    """How many tasks of the job failed in all."""
    waitingSince: str
    """Set while the active job has had no task running: its creation time (Batch time)."""


class OutputLocation(TypedDict, total=False):
    """Where a job's output files go: a blob container, a path in it and the URL (no SAS)."""

    container: Required[str]
    path: str
    url: str


class KeptJob(JobSummary, total=False):
    """One item of ``status.recentJobs``: a job kept by the history limits."""

    output: OutputLocation


class PoolStatus(TypedDict, total=False):
    """``status.pool``: the pool of the most recent job."""

    id: str
    state: str
    allocationState: str
    vmSize: str
    currentDedicatedNodes: int
    currentLowPriorityNodes: int
    resizeErrors: list[dict[str, str]]
    """Batch's ``resizeErrors`` (code, message): why the pool did not get its nodes."""
    nodeCounts: dict[str, dict[str, int]]
    """``{dedicated: {state: n, total: n}, lowPriority: {...}}``, from ``GET /nodecounts`` while the job is active."""


class SasStatus(TypedDict):
    """``status.sas``: when the SAS tokens now in the Batch schedule expire."""

    expiresAt: str


class Status(TypedDict, total=False):
    """The ``status`` of a BatchJobSchedule. The reconcile writes ``observedGeneration``, ``scheduleId``,
    ``sas``, ``runNow`` and the ``Synced`` condition; the account poller the Batch state, the jobs, the pool,
    ``lastSyncTime`` and the ``Ready`` condition (see docs/operator.md)."""

    observedGeneration: int
    scheduleId: str
    state: str | None
    nextRunTime: str | None
    lastScheduleTime: str | None
    lastSuccessfulTime: str | None
    recentJob: RecentJob | None
    recentJobs: list[KeptJob] | None
    pool: PoolStatus | None
    sas: SasStatus
    runNow: str
    lastSyncTime: str
    conditions: list[Condition]


class SecretRef(TypedDict):
    """A Secret in the resource's own namespace."""

    name: str


class AccountSpec(TypedDict, total=False):
    """``spec.account``: the Batch account and its credentials."""

    endpoint: str
    credentialsSecretRef: SecretRef


class StorageSpec(TypedDict, total=False):
    """``spec.storage``: the storage account blob references point into."""

    accountUrl: str
    credentialsSecretRef: SecretRef
    sasLifetime: str


class MetadataItem(TypedDict):
    """One Batch metadata name/value pair (a schedule's or a job's)."""

    name: str
    value: str


class Spec(TypedDict, total=False):
    """The ``spec`` of a BatchJobSchedule: the operator's own fields, and Batch's ``schedule``,
    ``jobSpecification`` and ``metadata`` in Batch's wire shape (camelCase)."""

    scheduleId: str
    suspend: bool
    deletionPolicy: str
    """``Delete`` (default) or ``Orphan``."""
    account: AccountSpec
    storage: StorageSpec
    successfulJobsHistoryLimit: int
    failedJobsHistoryLimit: int
    schedule: dict[str, Any]
    jobSpecification: dict[str, Any]
    metadata: list[MetadataItem]
