"""Status conditions, Kubernetes-style and kstatus-compatible: ``Ready``, ``Synced``, ``Reconciling``, ``Stalled``.

A condition is ``{type, status, reason, message, observedGeneration, lastTransitionTime}``.
``lastTransitionTime`` changes only when ``status`` changes, so re-reporting the same state never
produces a new status document (and so never a needless patch).

- ``Synced``: did the operator make Batch match the spec? True/``Synced``; False with a terminal reason
  (``InvalidSpec``, ``AlreadyExists``, ``AuthenticationFailed``, ``ScheduleIdImmutable``) or a recoverable
  one (``Throttled``, ``BatchUnavailable``, ``CredentialsNotFound``, ``Conflict``, ``DeletionPending``);
  Unknown/``ReconcileSkipped`` under ``reconcile-policy: skip``. Written by the reconcile.
- ``Ready``: the one summary tools read. Always present from the first pass on: Unknown/``Reconciling`` while
  the first pass runs; False with the ``Synced`` reason whenever ``Synced`` is False; else what Batch reports
  (True/``Active``, ``Suspended``, ``Completed``; False/``NotFound``, ``Terminating``, ``Deleting``, or a job
  that cannot run: ``QuotaExceeded``, ``AllocationFailed``, ``StartTaskFailed``, ``JobStuck``).
- ``Reconciling`` and ``Stalled``: kstatus' abnormal-true pair (sigs.k8s.io/cli-utils ``pkg/kstatus/status``,
  ``generic.go`` ``checkGenericProperties``: the first ``Reconciling=True`` makes a resource InProgress, the
  first ``Stalled=True`` makes it Failed; without them a ``Ready=False`` is only InProgress, never Failed).
  ``Stalled=True`` when only a change outside the operator's retries mends it (:data:`STALLED_REASONS`: the
  spec, a Secret, a role, a quota, the pool's image or start task); ``Reconciling=True`` while the operator's
  own retries or Batch's own progress are expected to get there. Never both True.

:func:`summarize` derives ``Ready``, ``Reconciling`` and ``Stalled`` from ``Synced`` and what the poller
observed in Batch; :class:`batchop.kube.status_writer.StatusWriter` applies it on every write, so no writer
can leave them inconsistent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchop.api.types import Condition
from batchwire import timestamps
from batchwire.redact import redact

READY = "Ready"
SYNCED = "Synced"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_ORDER = (READY, SYNCED, RECONCILING, STALLED)

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

# Reasons of a failed Batch request (batchop.batch.gateway.classify). Terminal: the spec, the credentials or
# the id must change. Recoverable: the operator retries by itself.
REASON_INVALID_SPEC = "InvalidSpec"
REASON_ALREADY_EXISTS = "AlreadyExists"
REASON_AUTHENTICATION_FAILED = "AuthenticationFailed"
REASON_FORBIDDEN = "Forbidden"
REASON_THROTTLED = "Throttled"
REASON_BATCH_UNAVAILABLE = "BatchUnavailable"
REASON_QUOTA_REACHED = "QuotaReached"
REASON_CONFLICT = "Conflict"
REASON_BATCH_ERROR = "BatchError"

# Entra ID sign-in and authorization (workload identity on AKS): what Entra ID or Batch refused, each naming what
# to fix in Azure or in the manifests (batchop.batch.credentials.explain_sign_in, the gateway for Batch's 403).
# All are retried: the fix happens outside the resource (a federated credential, a role, the Pod's token file).
REASON_FEDERATED_SUBJECT_MISMATCH = "FederatedSubjectMismatch"
REASON_FEDERATED_AUDIENCE_MISMATCH = "FederatedAudienceMismatch"
REASON_FEDERATED_ISSUER_MISMATCH = "FederatedIssuerMismatch"
REASON_FEDERATED_CREDENTIAL_MISMATCH = "FederatedCredentialMismatch"
REASON_FEDERATED_TOKEN_EXPIRED = "FederatedTokenExpired"
REASON_FEDERATED_TOKEN_INVALID = "FederatedTokenInvalid"
REASON_FEDERATED_TOKEN_FILE_MISSING = "FederatedTokenFileMissing"
REASON_IDENTITY_NOT_FOUND = "IdentityNotFound"
REASON_WORKLOAD_IDENTITY_NOT_CONFIGURED = "WorkloadIdentityNotConfigured"
REASON_ENTRA_SIGN_IN_FAILED = "EntraSignInFailed"
REASON_BATCH_ROLE_MISSING = "BatchRoleMissing"
IDENTITY_SETUP_REASONS = frozenset({
    REASON_FEDERATED_SUBJECT_MISMATCH, REASON_FEDERATED_AUDIENCE_MISMATCH, REASON_FEDERATED_ISSUER_MISMATCH,
    REASON_FEDERATED_CREDENTIAL_MISMATCH, REASON_FEDERATED_TOKEN_EXPIRED, REASON_FEDERATED_TOKEN_INVALID,
    REASON_FEDERATED_TOKEN_FILE_MISSING, REASON_IDENTITY_NOT_FOUND, REASON_WORKLOAD_IDENTITY_NOT_CONFIGURED,
    REASON_BATCH_ROLE_MISSING,
})
"""Sign-in failures that only a change in Azure or in the manifests mends (the operator keeps retrying them, so
that the fix is picked up without a restart): health checks show them as Degraded, not Progressing."""

# The other reasons.
REASON_SYNCED = "Synced"
REASON_SKIPPED = "ReconcileSkipped"
REASON_ID_IMMUTABLE = "ScheduleIdImmutable"
REASON_CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
REASON_ACCOUNT_NOT_CONFIGURED = "AccountNotConfigured"
REASON_DELETION_PENDING = "DeletionPending"
REASON_DELETING = "Deleting"
REASON_KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
REASON_ACTIVE = "Active"
REASON_SUSPENDED = "Suspended"
REASON_COMPLETED = "Completed"
REASON_NOT_FOUND = "NotFound"
REASON_TERMINATING = "Terminating"
REASON_RECONCILING = "Reconciling"
"""``Ready=Unknown`` and ``Reconciling=True`` while the operator has not finished its first pass."""
REASON_RECONCILED = "Reconciled"
"""``Reconciling=False``: nothing left to do for this generation."""
REASON_NOT_STALLED = "NotStalled"
"""``Stalled=False``."""
REASON_ACTIVE_JOB_QUOTA = "ActiveJobAndScheduleQuotaReached"
"""Batch refused the create: the account's quota of active jobs and job schedules is reached (Azure's error code,
kept as the reason). Retried; never counted as created (no ``scheduleId``)."""

# Blob storage (batchop.blob.sas, batchop.spec.blobrefs report these as text; their one home is here).
REASON_CONTAINER_NOT_FOUND = "ContainerNotFound"
REASON_STORAGE_AUTHENTICATION_FAILED = "StorageAuthenticationFailed"
REASON_STORAGE_UNAVAILABLE = "StorageUnavailable"

# A job that cannot run (the poller, from the pool's resizeErrors, the node counts and how long the job waited).
REASON_QUOTA_EXCEEDED = "QuotaExceeded"
REASON_ALLOCATION_FAILED = "AllocationFailed"
REASON_START_TASK_FAILED = "StartTaskFailed"
REASON_JOB_STUCK = "JobStuck"
JOB_BLOCKED_REASONS = frozenset({REASON_QUOTA_EXCEEDED, REASON_ALLOCATION_FAILED, REASON_START_TASK_FAILED,
                                 REASON_JOB_STUCK})
"""``Ready=False`` reasons of a schedule whose current job cannot run; they clear by themselves when Batch
recovers (the poller recomputes them every cycle)."""

OBSERVED_READY_REASONS = frozenset({REASON_ACTIVE, REASON_SUSPENDED, REASON_COMPLETED, REASON_NOT_FOUND,
                                    REASON_TERMINATING, REASON_DELETING}) | JOB_BLOCKED_REASONS
"""The reasons of a ``Ready`` computed from Batch's state (by the poller, or right after a create), as opposed to
a ``Ready`` copied from a failed ``Synced``."""

STALLED_REASONS = frozenset({
    REASON_INVALID_SPEC, REASON_ALREADY_EXISTS, REASON_AUTHENTICATION_FAILED, REASON_FORBIDDEN,
    REASON_ID_IMMUTABLE, REASON_CREDENTIALS_NOT_FOUND, REASON_ACCOUNT_NOT_CONFIGURED,
    REASON_CONTAINER_NOT_FOUND, REASON_STORAGE_AUTHENTICATION_FAILED, REASON_QUOTA_REACHED,
    REASON_ACTIVE_JOB_QUOTA,
}) | IDENTITY_SETUP_REASONS | JOB_BLOCKED_REASONS
"""Reasons that set ``Stalled=True`` (kstatus Failed, Argo CD Degraded): a person must change something (the
spec, a Secret, a role assignment, a quota, an image or start task). The operator still retries or re-observes
the ones that can clear without a spec change, and ``Stalled`` turns False by itself when they do."""

DELETION_REASONS = frozenset({REASON_DELETING, REASON_DELETION_PENDING})


def now_iso() -> str:
    return timestamps.seconds()


def make(type_: str, status: str, reason: str, message: str = "", *, generation: int | None = None) -> Condition:
    """A condition without ``lastTransitionTime`` (added by :func:`merge`). Messages are redacted; an empty one is
    left out (the API server's merge patch turns an empty string inside a list into null, which the schema
    refuses)."""
    cond: Condition = {"type": type_, "status": status, "reason": reason}
    if message:
        cond["message"] = redact(message)[:1024]
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge(
    existing: Sequence[Mapping[str, Any]] | None, updates: Sequence[Mapping[str, Any]], *, now: str | None = None
) -> list[dict[str, Any]]:
    """Return ``existing`` with ``updates`` applied by type, keeping ``lastTransitionTime`` when the
    status did not change and setting it to ``now`` when it did (or when the condition is new).
    Order: Ready, Synced, Reconciling, Stalled, then any others as they were."""
    stamp = now or now_iso()
    by_type: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in existing or [] if c.get("type")}
    for update in updates:
        type_ = str(update["type"])
        old = by_type.get(type_)
        new = dict(update)
        if old is not None and old.get("status") == new.get("status") and old.get("lastTransitionTime"):
            new["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            new["lastTransitionTime"] = stamp
        by_type[type_] = new
    order = list(CONDITION_ORDER) + [t for t in by_type if t not in CONDITION_ORDER]
    return [by_type[t] for t in order if t in by_type]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def _trio(ready: Condition, *, reconciling: Condition | None = None, stalled: Condition | None = None,
          generation: int | None = None) -> list[Condition]:
    """``Ready`` plus ``Reconciling`` and ``Stalled`` (False unless given)."""
    return [
        ready,
        reconciling or make(RECONCILING, FALSE, REASON_RECONCILED, "nothing left to do for this generation",
                            generation=generation),
        stalled or make(STALLED, FALSE, REASON_NOT_STALLED, "nothing needs a person to act", generation=generation),
    ]


def _because(reason: str, message: str, generation: int | None, *, stalled: bool) -> list[Condition]:
    ready = make(READY, FALSE, reason, message, generation=generation)
    cause = make(STALLED if stalled else RECONCILING, TRUE, reason, message, generation=generation)
    if stalled:
        return _trio(ready, stalled=cause, generation=generation)
    return _trio(ready, reconciling=cause, generation=generation)


def first_pass(generation: int | None) -> list[Condition]:
    """``Ready=Unknown``, ``Reconciling=True`` (reason ``Reconciling``): written before the first pass does
    anything, so that no tool ever sees the resource without ``Ready`` and takes it for Current."""
    message = "the operator is applying the resource for the first time"
    return _trio(make(READY, UNKNOWN, REASON_RECONCILING, message, generation=generation),
                 reconciling=make(RECONCILING, TRUE, REASON_RECONCILING, message, generation=generation),
                 generation=generation)


def summarize(
    synced: Mapping[str, Any] | None, observed: Mapping[str, Any] | None, *, generation: int | None = None
) -> list[Condition]:
    """``Ready``, ``Reconciling`` and ``Stalled`` from ``Synced`` (the last pass) and ``observed`` (the ``Ready``
    the poller computed from Batch, None before it has), by these rules:

    - ``Synced`` False: ``Ready=False`` with its reason and message; ``Stalled=True`` for :data:`STALLED_REASONS`,
      else ``Reconciling=True`` (deletion waiting, outages, throttling, conflicts are the operator's to retry);
    - no pass ended yet, or nothing observed yet: ``Ready=Unknown``, ``Reconciling=True``;
    - observed True: ``Ready`` as observed; neither reconciling nor stalled;
    - observed False: ``Ready`` as observed; ``Stalled=True`` when the job cannot run (:data:`JOB_BLOCKED_REASONS`)
      or an observe-only resource's schedule is missing (nothing will create it); else ``Reconciling=True``.
    """
    if synced is not None and synced.get("status") == FALSE:
        reason = str(synced.get("reason") or REASON_BATCH_ERROR)
        stalled = reason in STALLED_REASONS and reason not in DELETION_REASONS
        return _because(reason, str(synced.get("message") or ""), generation, stalled=stalled)
    if synced is None:  # no pass has ended yet: what Batch shows is not (yet) this resource's doing
        return first_pass(generation)
    if observed is None:
        message = "waiting for the first observation of the Batch schedule"
        return _trio(make(READY, UNKNOWN, REASON_RECONCILING, message, generation=generation),
                     reconciling=make(RECONCILING, TRUE, REASON_RECONCILING, message, generation=generation),
                     generation=generation)
    ready = make(READY, str(observed.get("status")), str(observed.get("reason")), str(observed.get("message") or ""),
                 generation=generation)
    if ready["status"] == TRUE:
        return _trio(ready, generation=generation)
    reason = ready["reason"]
    skipped = synced is not None and synced.get("reason") == REASON_SKIPPED
    stalled = reason in JOB_BLOCKED_REASONS or (skipped and reason == REASON_NOT_FOUND)
    return _because(reason, ready.get("message", ""), generation, stalled=stalled)
