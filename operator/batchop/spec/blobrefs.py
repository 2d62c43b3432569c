"""Blob references in a ``jobSpecification``: where they may be, their shapes and output paths, checked offline.

batchop extends Batch's shapes (docs/blob-storage.md) so users name containers and paths instead of
pasting SAS tokens, on every task of a ``jobSpecification`` that takes resource files: the job manager task,
the job preparation and release tasks, and the auto pool's start task (:data:`REFERENCE_TASKS`, every place the
CRD's schema lets a ``blob`` be written). Of these, only the job manager task has ``outputFiles`` in Batch's
model (API 2025-06-01):

- ``resourceFiles[]: {blob: {container, path}, filePath?}``: one blob;
- ``resourceFiles[]: {blob: {container, prefix?}, filePath?}``: every blob under a prefix (no prefix: the
  whole container);
- ``outputFiles[].destination: {blob: {container, path?}}``: a container Batch uploads into.

This module holds the rules that need no storage account: the places references are resolved
(:func:`task_locations`), their shapes and container names (:func:`collect`), and output paths, where
``{scheduleId}`` and ``{taskId}`` (the job manager task's id) are filled in (:func:`output_path`).
``{jobId}`` cannot be: the ``jobSpecification`` is shared by every job of the schedule, and Batch uploads
to ``path`` literally (it expands ``$VAR`` only in ``filePattern``). Each job's output lands under its own
job id the way Batch supports it: the task writes under a directory named ``$AZ_BATCH_JOB_ID`` and a
wildcard ``filePattern`` (``results/**/*``) uploads it, keeping each file's path below the pattern's fixed
part (``path/<jobId>/counts.tsv``). A ``{jobId}`` in a path is refused with that advice, before anything is
written to Batch. :mod:`batchop.blob.refs` turns valid references into SAS URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from batchop.api import conditions as cond
from batchop.api.patterns import BLOB_CONTAINER_PATTERN

_CONTAINER = re.compile(BLOB_CONTAINER_PATTERN)
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
OUTPUT_PLACEHOLDERS = ("{scheduleId}", "{jobId}", "{taskId}")

JOB_MANAGER = "jobManagerTask"
JOB_PREPARATION = "jobPreparationTask"
JOB_RELEASE = "jobReleaseTask"
START_TASK_PATH = ("poolInfo", "autoPoolSpecification", "pool", "startTask")
REFERENCE_TASKS: tuple[tuple[str, ...], ...] = ((JOB_MANAGER,), (JOB_PREPARATION,), (JOB_RELEASE,), START_TASK_PATH)
"""Where in a ``jobSpecification`` the tasks whose blob references are resolved are, in resolution order."""
JOB_SPECIFICATION = "spec.jobSpecification"
"""Where a resource's ``jobSpecification`` is: the default base of every field path reported."""

RefKind = Literal["blob", "prefix", "output"]


class BlobReferenceError(Exception):
    """A blob reference that cannot be resolved. ``field`` is the full path (``spec.jobSpecification...``).

    ``reason`` is a condition reason (``InvalidSpec``, ``ContainerNotFound``, ``StorageAuthenticationFailed``,
    ``StorageUnavailable``); ``permanent`` is False only for outages worth retrying.
    """

    def __init__(
        self, field: str, message: str, *, reason: str = cond.REASON_INVALID_SPEC, permanent: bool = True
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class BlobRef:
    """One reference: a blob, a prefix (or whole container) to download, or an output container."""

    kind: RefKind
    field: str
    """The reference's path, e.g. ``spec.jobSpecification.jobManagerTask.resourceFiles[0].blob``."""
    container: str


def task_locations(job_spec: Mapping[str, Any], base: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(path, task)`` of the tasks whose references are resolved (:data:`REFERENCE_TASKS`) that ``job_spec``
    has: the job manager, the job preparation and release tasks, the auto pool's start task."""
    for keys in REFERENCE_TASKS:
        node: Any = job_spec
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            yield f"{base}.{'.'.join(keys)}", node


def has_blob_references(job_spec: Mapping[str, Any] | None) -> bool:
    """True when any task of :data:`REFERENCE_TASKS` uses a ``blob:`` reference: the resource then needs a
    storage account and SAS renewal."""
    if not isinstance(job_spec, Mapping):
        return False
    for _, task in task_locations(job_spec, ""):
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


def task_id_of(task: Mapping[str, Any]) -> str | None:
    """The task's ``id`` when it is a string (``{taskId}`` in output paths)."""
    task_id = task.get("id")
    return task_id if isinstance(task_id, str) else None


def _resource_file_refs(where: str, task: Mapping[str, Any]) -> Iterator[BlobRef]:
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
            yield BlobRef("blob", field, container)
        else:
            yield BlobRef("prefix", field, container)


def _output_file_refs(where: str, task: Mapping[str, Any]) -> Iterator[BlobRef]:
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
        yield BlobRef("output", field, _check_container(blob.get("container"), field))


def collect(job_spec: Mapping[str, Any], base: str = JOB_SPECIFICATION) -> list[BlobRef]:
    """Every reference, in order; raises :class:`BlobReferenceError` at the first malformed one."""
    refs: list[BlobRef] = []
    for where, task in task_locations(job_spec, base):
        refs.extend(_resource_file_refs(where, task))
        refs.extend(_output_file_refs(where, task))
    return refs


def validate_references(job_spec: Mapping[str, Any], *, schedule_id: str = "schedule",
                        field_base: str = JOB_SPECIFICATION) -> list[BlobReferenceError]:
    """Offline checks of every blob reference (shapes, container names, placeholders): no storage calls."""
    problems: list[BlobReferenceError] = []
    try:
        collect(job_spec, field_base)
    except BlobReferenceError as exc:
        problems.append(exc)
        return problems
    for where, task in task_locations(job_spec, field_base):
        task_id = task_id_of(task)
        for i, of in enumerate(task.get("outputFiles") or []):
            blob = (of.get("destination") or {}).get("blob") if isinstance(of, Mapping) else None
            if isinstance(blob, Mapping):
                try:
                    output_path(blob.get("path"), schedule_id=schedule_id, task_id=task_id,
                                field=f"{where}.outputFiles[{i}].destination.blob.path")
                except BlobReferenceError as exc:
                    problems.append(exc)
    return problems
