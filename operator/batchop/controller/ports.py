"""What the controller needs from the Kubernetes API, as protocols, one per concern.

:class:`batchop.kube.client.KubeClient` provides them all (:class:`Kube`); each part of the runtime asks only
for the calls it makes, so a unit test hands it a fake with just those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ObjectReader(Protocol):
    async def get_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The BatchJobSchedule, None when it does not exist."""
        ...


class FinalizerApi(Protocol):
    async def add_finalizer(
        self, namespace: str, name: str, uid: str, finalizer: str, *, seen: Mapping[str, Any] | None = None
    ) -> bool: ...

    async def remove_finalizer(
        self, namespace: str, name: str, uid: str, finalizer: str, *, seen: Mapping[str, Any] | None = None
    ) -> None: ...


class EventApi(Protocol):
    async def post_event(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None: ...


class SecretApi(Protocol):
    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """The Secret's decoded data and its ``resourceVersion``, None when it does not exist."""
        ...


class StatusApi(ObjectReader, Protocol):
    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...


class Kube(StatusApi, FinalizerApi, EventApi, SecretApi, Protocol):
    """Everything the runtime calls on the API server (besides kopf's own watching)."""

    async def close(self) -> None: ...
