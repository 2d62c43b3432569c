"""Blob references in a ``jobSpecification``, resolved into the SAS URLs Batch understands.

The references and their offline rules are :mod:`batchop.spec.blobrefs`; here they meet a storage
account, through a :class:`batchop.blob.sas.SasMinter`. They are resolved on the job manager task, the job
preparation and release tasks and the auto pool's start task
(:data:`batchop.spec.blobrefs.REFERENCE_TASKS`), each the same way:

============================================================  ===============================================
reference                                                     becomes (permission of the minted SAS)
============================================================  ===============================================
``resourceFiles[]: {blob: {container, path}, filePath}``      ``{httpUrl: <blob SAS>, filePath}`` (``r``)
``resourceFiles[]: {blob: {container, prefix}, filePath?}``   ``{storageContainerUrl: <container SAS>,
                                                              blobPrefix, filePath?}`` (``rl``)
``outputFiles[].destination: {blob: {container, path?}}``     ``{container: {containerUrl: <container SAS>,
                                                              path}}`` (``cw``)
============================================================  ===============================================

Every container referenced is checked first (exists, credential accepted), so a typo or a revoked key
is a clear condition on the resource, not a failed job hours later. :func:`resolve_offline` does the same
with placeholder SAS and no storage call, for ``batchop render`` and ``batchop import``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchop.blob.sas import READ, READ_LIST, WRITE_CREATE, PlaceholderMinter, SasMinter, StorageAccessError
from batchop.spec.blobrefs import (
    JOB_SPECIFICATION,
    BlobRef,
    BlobReferenceError,
    collect,
    output_path,
    task_id_of,
    task_locations,
    validate_references,
)


@dataclass(frozen=True)
class ResolvedSpec:
    """A ``jobSpecification`` with every blob reference replaced by SAS URLs."""

    job_specification: dict[str, Any]
    expires_at: datetime | None
    """When the minted SAS expire (None when there was nothing to mint)."""
    containers: tuple[str, ...]
    """The containers referenced, sorted (all checked)."""


async def check_containers(refs: list[BlobRef], minter: SasMinter) -> None:
    """Check every referenced container once (concurrently); the first failure names its first field."""
    first_field: dict[str, str] = {}
    for ref in refs:
        first_field.setdefault(ref.container, ref.field)
    names = sorted(first_field)
    results = await asyncio.gather(*(minter.check_container(name) for name in names), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, StorageAccessError):
            raise BlobReferenceError(
                f"{first_field[name]}.container", result.message, reason=result.reason, permanent=result.permanent
            )
        if isinstance(result, BaseException):
            raise result


def _capped_expiry(expiry: datetime, minter: SasMinter) -> datetime:
    """``expiry`` in UTC, whole seconds, no later than the minter can sign (user delegation: 7 days)."""
    expiry = expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry.astimezone(UTC)
    if minter.max_lifetime is not None:
        expiry = min(expiry, datetime.now(UTC) + minter.max_lifetime)
    return expiry.replace(microsecond=0)


class _Signer:
    """Rewrites the references of one task in place, minting each container SAS once per permission."""

    def __init__(self, minter: SasMinter, expiry: datetime, schedule_id: str) -> None:
        self.minter = minter
        self.expiry = expiry
        self.schedule_id = schedule_id
        self._container_urls: dict[tuple[str, str], str] = {}

    async def container_url(self, container: str, permission: str) -> str:
        key = (container, permission)
        if key not in self._container_urls:
            self._container_urls[key] = await self.minter.container_url(container, permission=permission,
                                                                        expiry=self.expiry)
        return self._container_urls[key]

    async def resource_files(self, task: dict[str, Any]) -> None:
        for rf in task.get("resourceFiles") or []:
            if "blob" not in rf:
                continue
            blob = rf.pop("blob")
            if blob.get("path") is not None:
                name = blob["path"].lstrip("/")
                rf["httpUrl"] = await self.minter.blob_url(blob["container"], name, permission=READ,
                                                           expiry=self.expiry)
                rf.setdefault("filePath", name)
            else:
                rf["storageContainerUrl"] = await self.container_url(blob["container"], READ_LIST)
                prefix = blob.get("prefix")
                if prefix:
                    rf["blobPrefix"] = prefix

    async def output_files(self, task: dict[str, Any], where: str) -> None:
        for i, of in enumerate(task.get("outputFiles") or []):
            destination = of.get("destination") or {}
            if "blob" not in destination:
                continue
            blob = destination.pop("blob")
            container: dict[str, Any] = {"containerUrl": await self.container_url(blob["container"], WRITE_CREATE)}
            path = output_path(blob.get("path"), schedule_id=self.schedule_id, task_id=task_id_of(task),
                               field=f"{where}.outputFiles[{i}].destination.blob.path")
            if path:
                container["path"] = path
            destination["container"] = container


async def resolve(
    job_spec: Mapping[str, Any],
    *,
    minter: SasMinter,
    schedule_id: str,
    expiry: datetime,
    field_base: str = JOB_SPECIFICATION,
    check: bool = True,
) -> ResolvedSpec:
    """Return a copy of ``job_spec`` with every blob reference replaced by a SAS URL (see the module docs).

    ``expiry`` is capped by ``minter.max_lifetime`` (user delegation: 7 days). With ``check`` (the
    default) every container is verified first; errors are :class:`BlobReferenceError` naming the
    field and the fix. The input is never modified. SAS URLs are secrets: do not log the result.
    """
    refs = collect(job_spec, field_base)
    problems = validate_references(job_spec, schedule_id=schedule_id, field_base=field_base)
    if problems:
        raise problems[0]
    out = copy.deepcopy(dict(job_spec))
    if not refs:
        return ResolvedSpec(out, None, ())
    expiry = _capped_expiry(expiry, minter)
    if check:
        await check_containers(refs, minter)
    signer = _Signer(minter, expiry, schedule_id)
    for where, task in task_locations(out, field_base):
        assert isinstance(task, dict)
        await signer.resource_files(task)
        await signer.output_files(task, where)
    return ResolvedSpec(out, expiry, tuple(sorted({r.container for r in refs})))


def resolve_offline(job_spec: Mapping[str, Any], *, account_url: str, schedule_id: str,
                    expiry: datetime) -> dict[str, Any]:
    """``job_spec`` resolved as :func:`resolve` would, against ``account_url`` with placeholder SAS
    (:class:`batchop.blob.sas.PlaceholderMinter`): no storage call, nothing minted. For command-line tools
    (it runs its own event loop); raises :class:`BlobReferenceError` like :func:`resolve`."""
    resolved = asyncio.run(resolve(job_spec, minter=PlaceholderMinter(account_url), schedule_id=schedule_id,
                                   expiry=expiry, check=False))
    return resolved.job_specification
