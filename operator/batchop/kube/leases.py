"""``coordination.k8s.io/v1`` Leases through the operator's own client (:class:`batchop.kube.client.KubeClient`).

A Lease is read with its ``resourceVersion`` and written back with a ``PUT`` carrying it, so two replicas
that read the same version cannot both win: the API server answers the second with 409 Conflict. That is
the whole of the lock; who may take a Lease and when is :mod:`batchop.controller.election`.

The members Lease is different: each replica writes only its own annotation on it with a JSON merge patch
(no version needed: a merge patch of one key never overwrites another replica's key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from batchwire import timestamps

API = "/apis/coordination.k8s.io/v1"


def micro_time(value: datetime) -> str:
    """``metav1.MicroTime`` as the API server writes it: ``2026-01-02T03:04:05.123456Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that leader election reads and writes (client-go's LeaderElectionRecord)."""

    holder: str = ""
    duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> LeaseRecord:
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"holderIdentity": self.holder, "leaseTransitions": self.transitions}
        if self.duration > 0:  # the API server refuses 0 (the members Lease has no duration)
            spec["leaseDurationSeconds"] = self.duration
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True)
class LeaseState:
    """A Lease as read: its record, ``resourceVersion`` (for the guarded update) and annotations."""

    record: LeaseRecord
    resource_version: str
    annotations: Mapping[str, str]


class Requester(Protocol):
    """What :class:`LeaseClient` needs of :class:`batchop.kube.client.KubeClient`."""

    async def request(
        self, method: str, path: str, *, json: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None: ...


def _path(namespace: str, name: str | None = None) -> str:
    base = f"{API}/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def _state(body: Mapping[str, Any]) -> LeaseState:
    meta = body.get("metadata") or {}
    return LeaseState(
        record=LeaseRecord.from_spec(body.get("spec") or {}),
        resource_version=str(meta.get("resourceVersion") or ""),
        annotations=dict(meta.get("annotations") or {}),
    )


class LeaseClient:
    """get / create / guarded update of one namespace's Leases. Errors are
    :class:`batchop.kube.client.KubeError` (409: someone else wrote first)."""

    def __init__(self, kube: Requester, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def get(self, name: str) -> LeaseState | None:
        body = await self.kube.request("GET", _path(self.namespace, name))
        return None if body is None else _state(body)

    async def create(self, name: str, record: LeaseRecord, labels: Mapping[str, str] | None = None) -> LeaseState:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels or {})},
            "spec": record.spec(),
        }
        created = await self.kube.request("POST", _path(self.namespace), json=body)
        return _state(created or body)

    async def update(self, name: str, record: LeaseRecord, resource_version: str) -> LeaseState:
        """``PUT`` the record, accepted only if the Lease is still at ``resource_version`` (else 409)."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": self.namespace, "resourceVersion": resource_version},
            "spec": record.spec(),
        }
        updated = await self.kube.request("PUT", _path(self.namespace, name), json=body)
        return _state(updated or body)

    async def annotate(self, name: str, annotations: Mapping[str, str | None]) -> LeaseState | None:
        """Merge-patch annotations (None removes one) without a version: each writer owns its own keys.
        None when the Lease does not exist."""
        patch = {"metadata": {"annotations": dict(annotations)}}
        body = await self.kube.request(
            "PATCH", _path(self.namespace, name), json=patch, content_type="application/merge-patch+json"
        )
        return None if body is None else _state(body)


def now_micro() -> str:
    return micro_time(datetime.now(UTC))


def parse_time(value: str | None) -> datetime | None:
    return timestamps.parse(value) if value else None
