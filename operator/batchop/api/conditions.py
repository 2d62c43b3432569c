"""Status conditions: ``Ready`` and ``Synced``, Kubernetes-style.

A condition is ``{type, status, reason, message, observedGeneration, lastTransitionTime}``.
``lastTransitionTime`` changes only when ``status`` changes, so re-reporting the same state never
produces a new status document (and so never a needless patch).

- ``Synced``: did the operator make Batch match the spec? True/``Synced``; False with a terminal reason
  (``InvalidSpec``, ``AlreadyExists``, ``AuthenticationFailed``, ``ScheduleIdImmutable``) or a recoverable
  one (``Throttled``, ``BatchUnavailable``, ``CredentialsNotFound``, ``Conflict``, ``DeletionPending``);
  Unknown/``ReconcileSkipped`` under ``reconcile-policy: skip``.
- ``Ready``: is the schedule there and healthy? True/``Active``, ``Suspended``, ``Completed``;
  False/``NotFound``, ``Pending`` or the ``Synced`` error when nothing exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchop.api.types import Condition
from batchwire import timestamps
from batchwire.redact import redact

READY = "Ready"
SYNCED = "Synced"

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
REASON_PENDING = "Pending"
REASON_NOT_FOUND = "NotFound"
REASON_TERMINATING = "Terminating"


def now_iso() -> str:
    return timestamps.seconds()


def make(type_: str, status: str, reason: str, message: str = "", *, generation: int | None = None) -> Condition:
    """A condition without ``lastTransitionTime`` (added by :func:`merge`). Messages are redacted."""
    cond: Condition = {"type": type_, "status": status, "reason": reason, "message": redact(message)[:1024]}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge(
    existing: Sequence[Mapping[str, Any]] | None, updates: Sequence[Mapping[str, Any]], *, now: str | None = None
) -> list[dict[str, Any]]:
    """Return ``existing`` with ``updates`` applied by type, keeping ``lastTransitionTime`` when the
    status did not change and setting it to ``now`` when it did (or when the condition is new).
    Order: Ready, Synced, then any others as they were."""
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
    order = [READY, SYNCED] + [t for t in by_type if t not in (READY, SYNCED)]
    return [by_type[t] for t in order if t in by_type]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None
