"""What admission decides, as pure functions: the verdict on a BatchJobSchedule (:func:`review`), what a new one is
stored with (:func:`finalizers_at_create`, the shard label of :meth:`batchop.spec.shardkey.ShardPlan.label_at_create`),
and the AdmissionReview answer the API server reads (:func:`answer`).

Why the answer is built here and not by kopf's admission machinery: kopf turns each request into a handler
cause, runs its handler framework, and builds a JSON Patch by deep-copying the object and diffing it with the
patched copy. In a creation burst that cost some 15% of the operator's CPU, several times the verdicts themselves
(docs/performance.md, seventh pass). Here the answer is the verdict and, for a new resource, one or two JSON
Patch operations written directly. kopf's server still does
the rest (TLS, the serving certificate's reloads, the routes):
:class:`batchop.admission.webhook.RegisteringWebhookServer` hands it a function that answers with
:func:`answer` and passes anything else to kopf.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchop.api.names import FINALIZER, GROUP, PLURAL, VERSION
from batchop.spec import validation
from batchop.spec.shardkey import ShardPlan

REFUSED_CODE = 422
"""The HTTP code of a refused write (Unprocessable Entity, as the API server's own validation answers)."""


@dataclass(frozen=True)
class Review:
    """The verdict on one admission request."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors

    @property
    def message(self) -> str:
        """All errors, one per line (what kubectl shows after ``denied the request:``)."""
        return "\n".join(self.errors)


def review(operation: str, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None = None) -> Review:
    """Check one CREATE or UPDATE of a BatchJobSchedule; anything else is admitted."""
    if operation not in ("CREATE", "UPDATE") or not isinstance(new, Mapping):
        return Review()
    if operation == "UPDATE" and old is not None:
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            return Review()  # being deleted: only finalizers can change; never hold them up
        if new.get("spec") == old.get("spec") and _batchop_annotations(new) == _batchop_annotations(old):
            return Review()  # finalizers, kopf's annotations, labels: nothing we judge
    findings = validation.validate_resource(new)
    if operation == "UPDATE" and old is not None:
        findings.extend(_immutable_schedule_id(new, old))
    errors = [str(f) for f in findings if f.is_error]
    warnings = [f"{f.path}: {f.message}" for f in findings if not f.is_error]
    return Review(errors=errors, warnings=warnings)


def _batchop_annotations(obj: Mapping[str, Any]) -> dict[str, Any]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    watched = (validation.ANNOTATION_RECONCILE_POLICY, validation.ANNOTATION_ADOPT)
    return {k: v for k, v in annotations.items() if k in watched}


def _immutable_schedule_id(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[validation.FieldError]:
    new_id = (new.get("spec") or {}).get("scheduleId")
    old_id = (old.get("spec") or {}).get("scheduleId")
    in_use = (old.get("status") or {}).get("scheduleId")
    if old_id and new_id != old_id:
        return [validation.FieldError(
            "spec.scheduleId",
            f"is immutable once set: it was {old_id!r}, the update sets {new_id!r}; to use another Batch schedule "
            "id, create a new BatchJobSchedule (and delete this one)",
        )]
    if not old_id and in_use and new_id and new_id != in_use:
        return [validation.FieldError(
            "spec.scheduleId",
            f"this resource already manages the Batch schedule {in_use!r}; setting scheduleId to {new_id!r} would "
            f"change its identity: set it to {in_use!r} or leave it out, or create a new BatchJobSchedule",
        )]
    return []


def finalizers_at_create(new: Mapping[str, Any] | None) -> list[str] | None:
    """The ``metadata.finalizers`` a new BatchJobSchedule is stored with: its own plus ours; None when ours is
    there already (nothing to change).

    Why at admission: the operator must have its finalizer on the object before the first Batch write, so a
    deletion at any moment cannot orphan the schedule. Added here, it is part of the client's own create, and
    the operator's PATCH for it (one Kubernetes write and one watch event per new resource) is not needed. When
    the webhook is not called (the operator down, ``failurePolicy: Ignore``), the operator adds it itself
    before the create, as without this webhook."""
    if not isinstance(new, Mapping):
        return None
    present = list(((new.get("metadata") or {}).get("finalizers")) or [])
    if FINALIZER in present:
        return None
    return [*present, FINALIZER]


# -- the AdmissionReview answer -------------------------------------------------------------------------------


def mutation(new: Mapping[str, Any] | None, plan: ShardPlan | None = None) -> list[dict[str, Any]]:
    """The JSON Patch (RFC 6902) operations of the mutating webhook for a new object: our finalizer beside its
    own, and with a sharded ``plan`` the shard label. ``add`` on an existing member replaces it (RFC 6902 4.1),
    so one form serves a list or map that is there and one that is not."""
    if not isinstance(new, Mapping):
        return []
    ops: list[dict[str, Any]] = []
    finalizers = finalizers_at_create(new)
    if finalizers is not None:
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": finalizers})
    labels = plan.label_at_create(new) if plan is not None else None
    if labels is not None:
        present = (new.get("metadata") or {}).get("labels")
        if isinstance(present, Mapping):
            ops.extend({"op": "add", "path": f"/metadata/labels/{_pointer(key)}", "value": value}
                       for key, value in labels.items())
        else:
            ops.append({"op": "add", "path": "/metadata/labels", "value": dict(labels)})
    return ops


def _pointer(key: str) -> str:
    """A map key as one JSON Pointer token (RFC 6901: ``~`` and ``/`` escaped)."""
    return key.replace("~", "~0").replace("/", "~1")


def answer(request: Mapping[str, Any], *, mutating: bool, judging: bool = True,
           plan: ShardPlan | None = None) -> dict[str, Any] | None:
    """The ``AdmissionReview`` answer to ``request``; None for a request that is not a plain review of a
    BatchJobSchedule (another resource or version, a subresource, a request without its object or user): kopf's
    machinery answers those as before.

    ``judging``: the verdict of :func:`review`, admitted or refused (code 422, the errors one per line), with its
    warnings. ``mutating``: for a CREATE that is admitted, a patch when something is added (:func:`mutation`).
    The shipped configurations ask for both on a create (the mutating webhook, ``/admit``: one admission call
    per new resource) and for the verdict alone on an update (the validating webhook, ``/validate``);
    ``/finalize``, the mutating path of earlier manifests, asks for the patch alone."""
    payload = request.get("request")
    if not isinstance(payload, Mapping):
        return None
    resource = payload.get("resource")
    new, old = payload.get("object"), payload.get("oldObject")
    if (not isinstance(resource, Mapping) or payload.get("subResource")
            or (resource.get("group"), resource.get("version"), resource.get("resource")) != (GROUP, VERSION, PLURAL)
            or payload.get("userInfo") is None or not isinstance(new if new is not None else old, Mapping)
            or (new is not None and not isinstance(new.get("metadata"), Mapping))):
        return None
    operation = str(payload.get("operation") or "")
    response: dict[str, Any] = {"uid": payload.get("uid", ""), "allowed": True}
    if judging:
        verdict = review(operation, new, old)
        if verdict.warnings:
            response["warnings"] = list(verdict.warnings)
        if not verdict.allowed:
            response["allowed"] = False
            response["status"] = {"message": verdict.message, "code": REFUSED_CODE}
    if mutating and response["allowed"] and operation == "CREATE":
        ops = mutation(new, plan)
        if ops:
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode("ascii")
            response["patchType"] = "JSONPatch"
    return {"apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
            "kind": request.get("kind", "AdmissionReview"), "response": response}
