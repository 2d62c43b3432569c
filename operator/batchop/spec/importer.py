"""Import: a live Batch job schedule -> the BatchJobSchedule resource that adopts it, changing nothing.

:func:`import_schedule` takes the schedule as Batch returns it (``GET /jobschedules/{id}``) and returns the
resource a user would have written:

- ``metadata.annotations``: ``azurebatch.dev/adopt: "true"``; ``spec.scheduleId`` = the schedule's id;
  ``spec.suspend: true`` when the schedule is disabled (otherwise applying it would enable it);
- ``schedule``, ``jobSpecification`` and ``metadata`` through :func:`batchop.spec.conversion.convert`
  (response-only fields dropped, enum values in wire case, SAS tokens removed and Blob storage URLs turned into
  ``blob:`` references the operator signs; retired images are kept and flagged: changing them would be a
  write);
- read-time defaults removed (:func:`strip_defaults`): a field is dropped when the operator's own comparable
  form (:func:`batchop.spec.normalize.comparable_property`) is the same without it, so what remains is exactly
  what the user would write, and the operator's diff still finds nothing to change;
- the operator's own marks (``azurebatch.dev/owner``, ``uid``) are not copied; a schedule that carries
  another resource's marks is reported: the operator refuses to adopt it from a second resource.

:func:`unchanged_check` proves the result with the operator's own model: the request body the operator would
build (:func:`batchop.spec.mapping.desired_schedule`) is diffed against the live schedule
(:func:`batchop.spec.diff.differences`); an empty list means applying changes nothing. Blob references are
resolved by the caller's :data:`BlobResolver` (``batchop import`` passes one with placeholder SAS,
:func:`batchop.blob.refs.resolve_offline`): resolving them is the storage layer's work, not the model's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchop.api.names import ANNOTATION_ADOPT, GROUP, KIND, VERSION
from batchop.spec import conversion, diff, mapping
from batchop.spec.blobrefs import has_blob_references
from batchop.spec.conversion import Note
from batchop.spec.normalize import comparable_property

SPEC_ORDER = ("scheduleId", "suspend", "account", "storage", "schedule", "jobSpecification", "metadata")

BlobResolver = Callable[[Mapping[str, Any], str], dict[str, Any]]
"""``(jobSpecification, schedule id) -> jobSpecification`` with its blob references replaced by the URLs the
operator would write."""


def strip_defaults(name: str, value: Any) -> Any:
    """``value`` (the ``schedule`` or ``jobSpecification`` property) without every field whose removal leaves its
    comparable form unchanged: Batch's read-time defaults, and empty objects. Children are tried before their
    parent, so an object made only of defaults goes as a whole."""
    if not isinstance(value, dict):
        return value
    target = comparable_property(name, value)
    root = copy.deepcopy(value)

    def same() -> bool:
        return bool(comparable_property(name, root) == target)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        for key in list(node):
            visit(node[key])
            before = list(node.items())
            node.pop(key)
            if not same():
                node.clear()
                node.update(before)

    visit(root)
    return root


@dataclass
class Imported:
    """The resource, what was done to get it (notes for stderr), and the self-check's differences."""

    resource: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    storage_accounts: list[str] = field(default_factory=list)


_QUIET_PATHS = frozenset(conversion.RESPONSE_FIELDS) | {"schedule.doNotRunUntil"}


def import_schedule(
    schedule: Mapping[str, Any],
    *,
    name: str | None = None,
    namespace: str | None = None,
    account_endpoint: str | None = None,
    completed_jobs: int | None = None,
) -> Imported:
    """The adopting resource for a live ``schedule`` (wire JSON of ``GET /jobschedules/{id}``)."""
    schedule_id = schedule.get("id")
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ValueError("the schedule has no id: pass the body of GET /jobschedules/{id}")
    marks = mapping.marks_of(schedule)
    converted = conversion.convert(schedule, name=name, namespace=namespace, keep_images=True)
    notes = [n for n in converted.notes
             if n.path not in _QUIET_PATHS and not (n.kind == "dropped" and n.path == "metadata")]
    spec = converted.resource["spec"]
    for prop in ("schedule", "jobSpecification"):
        if prop in spec:
            spec[prop] = strip_defaults(prop, spec[prop])
    if str(schedule.get("state") or "").lower() == "disabled":
        spec["suspend"] = True
        notes.append(Note("warning", "spec.suspend", "the schedule is disabled: suspend: true keeps it so"))
    elif schedule.get("state") not in (None, "active"):
        notes.append(Note("warning", "state", f"the schedule is {schedule.get('state')}: Batch accepts no changes "
                          "to it; the resource will only report it"))
    if account_endpoint:
        spec["account"] = {"endpoint": account_endpoint}
        notes.append(Note("warning", "spec.account", "add credentialsSecretRef (a Secret with accountName and "
                          "accountKey) unless the operator reaches this account with Entra ID"))
    if marks:
        notes.append(Note("warning", "metadata", f"the schedule is managed by {marks.get(mapping.MARK_OWNER)} (uid "
                          f"{marks.get(mapping.MARK_UID)}): the operator refuses to adopt it from another resource; "
                          "delete that resource with deletionPolicy: Orphan first"))
    if completed_jobs:
        notes.append(Note("warning", "spec.successfulJobsHistoryLimit",
                          f"{completed_jobs} completed job(s) of this schedule exist in Batch; the operator keeps the "
                          "newest 3 successful and 1 failed (CronJob's defaults) and deletes older ones: set "
                          "successfulJobsHistoryLimit / failedJobsHistoryLimit to keep more"))
    notes = [n for n in notes if n.kind != "renamed" or _exists(spec, n.path)]  # renamed, then found a default
    if any(n.kind == "removed-sas" for n in notes):
        notes.append(Note("warning", "jobSpecification", "the live schedule keeps its current SAS tokens until the "
                          "operator next writes jobSpecification (any change to it): revoke them only after that"))
    ordered = {key: spec[key] for key in SPEC_ORDER if key in spec}
    ordered.update((k, v) for k, v in spec.items() if k not in ordered)
    metadata = dict(converted.resource["metadata"])
    metadata["annotations"] = {ANNOTATION_ADOPT: "true"}
    resource = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": ordered}
    return Imported(resource, notes, list(converted.storage_accounts))


def _exists(tree: Any, path: str) -> bool:
    node = tree
    for part in path.replace("[", ".[").split("."):
        if part.startswith("[") and part.endswith("]") and part[1:-1].isdigit():
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return False
            node = node[index]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return False
    return True


def _desired_request(resource: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """The create body the operator would send for ``resource``, without its owner marks (adopting an unmarked
    schedule writes none); blob references as written."""
    spec = resource["spec"]
    meta = resource.get("metadata") or {}
    desired = mapping.desired_schedule(spec, schedule_id=str(spec.get("scheduleId") or observed.get("id")),
                                       owner=f"{meta.get('namespace', 'default')}/{meta.get('name')}", uid="import")
    desired["metadata"] = mapping.without_owner_marks(desired["metadata"])
    return desired


def unchanged_check(resource: Mapping[str, Any], observed: Mapping[str, Any], *,
                    resolve_blobs: BlobResolver | None = None) -> list[str]:
    """Dotted paths where the operator's request for ``resource`` would differ from the live schedule
    ``observed`` (owner marks aside: adoption of an unmarked schedule writes nothing); ``[]`` = no write.
    A resource with blob references needs ``resolve_blobs``, or its resource files differ from the live URLs."""
    desired = _desired_request(resource, observed)
    if resolve_blobs is not None and has_blob_references(desired["jobSpecification"]):
        desired["jobSpecification"] = resolve_blobs(desired["jobSpecification"], str(desired["id"]))
    live = {**observed, "metadata": mapping.without_owner_marks(observed.get("metadata"))}
    return diff.differences(desired, live)
