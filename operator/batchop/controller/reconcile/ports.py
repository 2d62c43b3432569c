"""What the decisions need from outside, as protocols: the Batch gateway, the finalizer guard, the blob
resolver, and the spec functions (:class:`Model`).

Each is passed in, so a unit test runs a whole pass against a fake gateway and the real model, and the
runtime supplies the real ones (:class:`batchop.batch.gateway.Gateway`,
:class:`batchop.controller.finalizer.FinalizerHold`, :class:`batchop.controller.blobs.BlobResolver`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from batchop.controller.reconcile.view import ObjectView
from batchop.spec import diff, mapping, naming, validation


class ScheduleGateway(Protocol):
    """The Batch calls a reconcile makes (:class:`batchop.batch.gateway.Gateway` has them all)."""

    async def get_schedule(self, schedule_id: str) -> tuple[dict[str, Any], str | None] | None: ...
    async def create_schedule(self, body: Mapping[str, Any]) -> str | None: ...
    async def patch_schedule(self, schedule_id: str, properties: Mapping[str, Any], etag: str | None) -> None: ...
    async def disable_schedule(self, schedule_id: str) -> None: ...
    async def enable_schedule(self, schedule_id: str) -> None: ...
    async def terminate_schedule(self, schedule_id: str) -> None: ...
    async def delete_schedule(self, schedule_id: str) -> None: ...
    async def create_job(self, body: Mapping[str, Any]) -> None: ...
    async def get_job(self, job_id: str) -> dict[str, Any] | None: ...


class Hold(Protocol):
    """The deletion guard around a create: ``acquire`` adds the finalizer before the first Batch write
    (False: the resource is gone or being deleted, do not create); ``release`` removes it again when Batch
    refused the create for good."""

    async def acquire(self) -> bool: ...
    async def release(self) -> None: ...


class BlobResolver(Protocol):
    """Replaces the blob references of a job specification with SAS URLs: the resolved copy, and when the
    SAS expire (ISO time; None when there was nothing to resolve)."""

    async def __call__(
        self, obj: ObjectView, job_spec: Mapping[str, Any], schedule_id: str
    ) -> tuple[dict[str, Any], str | None]: ...


@dataclass(frozen=True)
class Model:
    """The spec functions a reconcile uses (:mod:`batchop.spec`), replaceable in tests."""

    validate: Callable[[Mapping[str, Any]], Sequence[validation.FieldError]]
    schedule_id_for: Callable[[str, str], str]
    schedule_id_error: Callable[[object], str | None]
    desired_schedule: Callable[..., dict[str, Any]]
    changed_properties: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]


def default_model() -> Model:
    """The real model, from :mod:`batchop.spec`."""
    return Model(
        validate=validation.validate,
        schedule_id_for=naming.schedule_id_for,
        schedule_id_error=naming.schedule_id_error,
        desired_schedule=mapping.desired_schedule,
        changed_properties=diff.changed_properties,
    )
