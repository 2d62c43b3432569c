"""What a reconcile needs to know about one resource, taken once from its body.

The decisions read the resource through :class:`ObjectView` only, never the raw body: a unit test builds
one directly, and the poller builds one from its tracked copy for the ownership checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY
from batchop.api.types import Spec, Status

SEEN_METADATA = ("uid", "resourceVersion", "finalizers", "deletionTimestamp")
"""The metadata a finalizer add without a GET needs (:meth:`batchop.kube.client.KubeClient.add_finalizer`)."""


@dataclass
class ObjectView:
    """One resource as a reconcile sees it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: Spec
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: Status = field(default_factory=Status)
    seen: Mapping[str, Any] = field(default_factory=dict)
    """The metadata of the watch event (:data:`SEEN_METADATA`)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectView:
        meta = body.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=cast(Spec, dict(body.get("spec") or {})),
            annotations=dict(meta.get("annotations") or {}),
            status=cast(Status, dict(body.get("status") or {})),
            seen={k: meta[k] for k in SEEN_METADATA if k in meta},
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def owner(self) -> str:
        """The owner mark's value: ``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def policy(self) -> str:
        return policy_of(self.annotations)

    @property
    def adopt(self) -> bool:
        return adopts(self.annotations)

    @property
    def suspend(self) -> bool:
        return bool(self.spec.get("suspend"))


def policy_of(annotations: Mapping[str, Any]) -> str:
    """``azurebatch.dev/reconcile-policy``: ``manage`` (default) or ``skip``."""
    return str(annotations.get(ANNOTATION_RECONCILE_POLICY) or "manage").strip().lower()


def adopts(annotations: Mapping[str, Any]) -> bool:
    """``azurebatch.dev/adopt: "true"``: take over an unowned schedule with the same id."""
    return str(annotations.get(ANNOTATION_ADOPT) or "").strip().lower() == "true"
