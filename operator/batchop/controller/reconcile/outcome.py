"""What a reconcile pass found and did: :class:`Outcome`, and :class:`Progress` while the pass runs.

The decisions fill one :class:`Progress` (the status fields to write, the Batch writes done, what was
observed) and end it with the ``Synced`` condition they arrived at (:meth:`Progress.finish`), or with a
:class:`~batchop.batch.gateway.BatchError` (:meth:`Progress.failed`). The runtime writes the outcome into
status, posts its Events and retries when ``retry_after`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchop.api import conditions as cond
from batchop.api.types import Condition, Status
from batchop.batch.gateway import BatchError
from batchop.controller.reconcile.view import ObjectView

RETRY_DEFAULT = 10.0
"""Seconds before a recoverable error is retried when Batch named no ``Retry-After``."""
RETRY_DELETE_WAIT = 1.0
"""Seconds between the steps of a deletion waiting for Batch to let go of the schedule."""


@dataclass
class Outcome:
    """What a reconcile pass found and did.

    ``status`` holds the reconcile-owned status fields to write (``scheduleId``, ``observedGeneration``,
    ``sas``, ``runNow``); ``synced`` the ``Synced`` condition; ``ready`` a ``Ready`` condition when the pass
    knows better than the poller (e.g. nothing exists). ``retry_after`` set means "not done, try again then".
    ``writes`` lists the Batch writes done (for logs, Events and tests: ``create``, ``adopt``,
    ``patch:<properties>``, ``disable``, ``enable``, ``runnow:<job>``, ``terminate``, ``delete``,
    ``orphan``); ``done`` on deletion means the finalizer may go.
    """

    synced: Condition
    status: Status = field(default_factory=Status)
    ready: Condition | None = None
    retry_after: float | None = None
    writes: list[str] = field(default_factory=list)
    done: bool = True
    schedule_id: str | None = None
    desired: dict[str, Any] | None = None
    observed: dict[str, Any] | None = None

    @property
    def terminal(self) -> bool:
        return self.synced.get("status") == cond.FALSE and self.retry_after is None


def synced_false(obj: ObjectView, reason: str, message: str) -> Condition:
    return cond.make(cond.SYNCED, cond.FALSE, reason, message, generation=obj.generation)


def error_outcome(obj: ObjectView, err: BatchError, schedule_id: str | None, *, deleting: bool = False) -> Outcome:
    """A Batch (or storage, or Kubernetes) error as the outcome: terminal ones are not retried, except while
    deleting, which never lets go of a schedule silently (``DeletionPending``)."""
    reason = err.reason
    message = err.message
    if deleting:
        reason = cond.REASON_DELETION_PENDING
        message = f"waiting to delete Batch schedule {schedule_id}: {err.message}; retrying"
    retry = None if err.terminal and not deleting else (err.retry_after or RETRY_DEFAULT)
    return Outcome(synced=synced_false(obj, reason, message), retry_after=retry, done=False, schedule_id=schedule_id)


@dataclass
class Progress:
    """One pass under way: the schedule id, the desired body, and what the decisions did so far."""

    schedule_id: str
    desired: dict[str, Any]
    status: Status = field(default_factory=Status)
    writes: list[str] = field(default_factory=list)
    observed: dict[str, Any] | None = None

    def finish(
        self, synced: Condition, *, ready: Condition | None = None, retry_after: float | None = None, done: bool = True
    ) -> Outcome:
        """The pass ends with ``synced``."""
        return Outcome(
            synced=synced,
            status=self.status,
            ready=ready,
            retry_after=retry_after,
            writes=self.writes,
            done=done,
            schedule_id=self.schedule_id,
            desired=self.desired,
            observed=self.observed,
        )

    def failed(self, obj: ObjectView, err: BatchError) -> Outcome:
        """The pass ends with ``err``; the status fields and writes done so far are kept."""
        outcome = error_outcome(obj, err, self.schedule_id)
        outcome.status.update(self.status)
        outcome.writes = self.writes
        return outcome
