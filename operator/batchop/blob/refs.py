"""Blob references in a ``jobSpecification``, resolved into the SAS URLs Batch understands.

batchop extends Batch's shapes (docs/blob-storage.md) so users name containers and paths instead of
pasting SAS tokens. Allowed on the job manager task and on the auto pool's start task:

============================================================  ===============================================
reference                                                     becomes (permission of the minted SAS)
============================================================  ===============================================
``resourceFiles[]: {blob: {container, path}, filePath}``      ``{httpUrl: <blob SAS>, filePath}`` (``r``)
``resourceFiles[]: {blob: {container, prefix}, filePath?}``   ``{storageContainerUrl: <container SAS>,
                                                              blobPrefix, filePath?}`` (``rl``)
``outputFiles[].destination: {blob: {container, path?}}``     ``{container: {containerUrl: <container SAS>,
                                                              path}}`` (``cw``)
============================================================  ===============================================

Output paths: ``{scheduleId}`` and ``{taskId}`` (the job manager task's id) are filled in here.
``{jobId}`` cannot be: the ``jobSpecification`` is shared by every job of the schedule, and Batch
uploads to ``path`` literally (it expands ``$VAR`` only in ``filePattern``; Azure/Batch issue 130).
Each job's output lands under its own job id the way Batch supports it: the task writes under a
directory named ``$AZ_BATCH_JOB_ID`` and a wildcard ``filePattern`` (``results/**/*``) uploads it,
keeping each file's path below the pattern's fixed part (``path/<jobId>/counts.tsv``). A ``{jobId}``
in a path is refused with that advice, before anything is written to Batch.

Every container referenced is checked first (exists, credential accepted), so a typo or a revoked key
is a clear condition on the resource, not a failed job hours later.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchop.blob.sas import READ, READ_LIST, WRITE_CREATE, SasMinter, StorageAccessError

_CONTAINER = re.compile(r"^[a-z0-9](?:-?[a-z0-9])+$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
OUTPUT_PLACEHOLDERS = ("{scheduleId}", "{jobId}", "{taskId}")

JOB_MANAGER = "jobManagerTask"
START_TASK_PATH = ("poolInfo", "autoPoolSpecification", "pool", "startTask")


class BlobReferenceError(Exception):
    """A blob reference that cannot be resolved. ``field`` is the full path (``spec.jobSpecification...``).

    ``reason`` is a condition reason (``InvalidSpec``, ``ContainerNotFound``, ``StorageAuthenticationFailed``,
    ``StorageUnavailable``); ``permanent`` is False only for outages worth retrying.
    """

    def __init__(self, field: str, message: str, *, reason: str = "InvalidSpec", permanent: bool = True) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class ResolvedSpec:
    """A ``jobSpecification`` with every blob reference replaced by SAS URLs."""

    job_specification: dict[str, Any]
    expires_at: datetime | None
    """When the minted SAS expire (None when there was nothing to mint)."""
    containers: tuple[str, ...]
    """The containers referenced, sorted (all checked)."""


@dataclass(frozen=True)
class _Ref:
    kind: str  # "blob" | "prefix" | "output"
    field: str
    container: str


def _task_locations(job_spec: Mapping[str, Any], base: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    manager = job_spec.get(JOB_MANAGER)
    if isinstance(manager, Mapping):
        yield f"{base}.{JOB_MANAGER}", manager
    node: Any = job_spec
    for key in START_TASK_PATH:
        node = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        yield f"{base}.{'.'.join(START_TASK_PATH)}", node


def has_blob_references(job_spec: Mapping[str, Any] | None) -> bool:
    """True when the job manager task or the auto pool's start task uses a ``blob:`` reference."""
    if not isinstance(job_spec, Mapping):
        return False
    for _, task in _task_locations(job_spec, ""):
        for rf in task.get("resourceFiles") or []:
            if isinstance(rf, Mapping) and "blob" in rf:
                return True
        for of in task.get("outputFiles") or []:
            if isinstance(of, Mapping) and "blob" in (of.get("destination") or {}):
                return True
    return False


def _check_container(name: Any, field: str) -> str:
    if not isinstance(name, str) or not (3 <= len(name) <= 63) or not _CONTAINER.match(name):
        raise BlobReferenceError(
            f"{field}.container",
            f"{name!r} is not a valid blob container name: use 3-63 lowercase letters, digits and single hyphens",
        )
    return name


def output_path(template: str | None, *, schedule_id: str, task_id: str | None, field: str) -> str | None:
    """Fill ``{scheduleId}`` and ``{taskId}`` into an output path; refuse ``{jobId}`` and unknown placeholders."""
    if template is None:
        return None
    for placeholder in _PLACEHOLDER.findall(template):
        if placeholder == "{jobId}":
            raise BlobReferenceError(
                field,
                "{jobId} cannot be filled in: every job of a schedule shares this jobSpecification and Azure Batch "
                "uploads to this path literally (it expands $VARIABLES only in filePattern). Have the task write its "
                "outputs under a directory named $AZ_BATCH_JOB_ID and upload them with a wildcard filePattern, e.g. "
                "filePattern: results/**/* with path: {scheduleId} gives <scheduleId>/<jobId>/... per job",
            )
        if placeholder == "{taskId}" and not task_id:
            raise BlobReferenceError(field, "{taskId} needs the task's id (jobManagerTask.id)")
        if placeholder not in OUTPUT_PLACEHOLDERS:
            raise BlobReferenceError(field, f"unknown placeholder {placeholder}: use {{scheduleId}} or {{taskId}}")
    return template.replace("{scheduleId}", schedule_id).replace("{taskId}", task_id or "")


def _collect(job_spec: Mapping[str, Any], base: str) -> list[_Ref]:
    refs: list[_Ref] = []
    for where, task in _task_locations(job_spec, base):
        for i, rf in enumerate(task.get("resourceFiles") or []):
            if not isinstance(rf, Mapping) or "blob" not in rf:
                continue
            field = f"{where}.resourceFiles[{i}].blob"
            blob = rf.get("blob")
            if not isinstance(blob, Mapping):
                raise BlobReferenceError(field, "must be an object {container, path} or {container, prefix}")
            for other in ("httpUrl", "storageContainerUrl", "autoStorageContainerName"):
                if rf.get(other) is not None:
                    raise BlobReferenceError(field, f"set blob or {other}, not both")
            container = _check_container(blob.get("container"), field)
            has_path, has_prefix = blob.get("path") is not None, blob.get("prefix") is not None
            if has_path and has_prefix:
                raise BlobReferenceError(field, "set path (one blob) or prefix (every blob under it), not both")
            if has_path:
                if not isinstance(blob["path"], str) or not blob["path"].strip("/"):
                    raise BlobReferenceError(f"{field}.path", "must be a non-empty blob name, e.g. task.sh")
                refs.append(_Ref("blob", field, container))
            else:
                refs.append(_Ref("prefix", field, container))
        for i, of in enumerate(task.get("outputFiles") or []):
            destination = of.get("destination") if isinstance(of, Mapping) else None
            if not isinstance(destination, Mapping) or "blob" not in destination:
                continue
            field = f"{where}.outputFiles[{i}].destination.blob"
            blob = destination.get("blob")
            if not isinstance(blob, Mapping):
                raise BlobReferenceError(field, "must be an object {container, path}")
            if destination.get("container") is not None:
                raise BlobReferenceError(field, "set destination.blob or destination.container, not both")
            refs.append(_Ref("output", field, _check_container(blob.get("container"), field)))
    return refs


async def check_containers(refs: list[_Ref], minter: SasMinter) -> None:
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


async def resolve(
    job_spec: Mapping[str, Any],
    *,
    minter: SasMinter,
    schedule_id: str,
    expiry: datetime,
    field_base: str = "spec.jobSpecification",
    check: bool = True,
) -> ResolvedSpec:
    """Return a copy of ``job_spec`` with every blob reference replaced by a SAS URL (see the module docs).

    ``expiry`` is capped by ``minter.max_lifetime`` (user delegation: 7 days). With ``check`` (the
    default) every container is verified first; errors are :class:`BlobReferenceError` naming the
    field and the fix. The input is never modified. SAS URLs are secrets: do not log the result.
    """
    refs = _collect(job_spec, field_base)
    problems = validate_references(job_spec, schedule_id=schedule_id, field_base=field_base)
    if problems:
        raise problems[0]
    out = copy.deepcopy(dict(job_spec))
    if not refs:
        return ResolvedSpec(out, None, ())
    expiry = expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry.astimezone(UTC)
    if minter.max_lifetime is not None:
        expiry = min(expiry, datetime.now(UTC) + minter.max_lifetime)
    expiry = expiry.replace(microsecond=0)
    if check:
        await check_containers(refs, minter)

    container_urls: dict[tuple[str, str], str] = {}

    async def container_url(container: str, permission: str) -> str:
        key = (container, permission)
        if key not in container_urls:
            container_urls[key] = await minter.container_url(container, permission=permission, expiry=expiry)
        return container_urls[key]

    for where, task in _task_locations(out, field_base):
        assert isinstance(task, dict)
        task_id = task.get("id") if isinstance(task.get("id"), str) else None
        for rf in task.get("resourceFiles") or []:
            if "blob" not in rf:
                continue
            blob = rf.pop("blob")
            if blob.get("path") is not None:
                name = blob["path"].lstrip("/")
                rf["httpUrl"] = await minter.blob_url(blob["container"], name, permission=READ, expiry=expiry)
                rf.setdefault("filePath", name)
            else:
                rf["storageContainerUrl"] = await container_url(blob["container"], READ_LIST)
                prefix = blob.get("prefix")
                if prefix:
                    rf["blobPrefix"] = prefix
        for i, of in enumerate(task.get("outputFiles") or []):
            destination = of.get("destination") or {}
            if "blob" not in destination:
                continue
            blob = destination.pop("blob")
            container: dict[str, Any] = {"containerUrl": await container_url(blob["container"], WRITE_CREATE)}
            path = output_path(blob.get("path"), schedule_id=schedule_id, task_id=task_id,
                               field=f"{where}.outputFiles[{i}].destination.blob.path")
            if path:
                container["path"] = path
            destination["container"] = container
    return ResolvedSpec(out, expiry, tuple(sorted({r.container for r in refs})))


def validate_references(job_spec: Mapping[str, Any], *, schedule_id: str = "schedule",
                        field_base: str = "spec.jobSpecification") -> list[BlobReferenceError]:
    """Offline checks of every blob reference (shapes, container names, placeholders): no storage calls."""
    problems: list[BlobReferenceError] = []
    try:
        _collect(job_spec, field_base)
    except BlobReferenceError as exc:
        problems.append(exc)
        return problems
    for where, task in _task_locations(job_spec, field_base):
        task_id = task.get("id") if isinstance(task.get("id"), str) else None
        for i, of in enumerate(task.get("outputFiles") or []):
            blob = (of.get("destination") or {}).get("blob") if isinstance(of, Mapping) else None
            if isinstance(blob, Mapping):
                try:
                    output_path(blob.get("path"), schedule_id=schedule_id, task_id=task_id,
                                field=f"{where}.outputFiles[{i}].destination.blob.path")
                except BlobReferenceError as exc:
                    problems.append(exc)
    return problems
