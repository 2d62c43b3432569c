"""kopf's last-handled configuration kept in the operator's memory instead of an annotation on every object.

kopf compares each object's *essence* (spec, labels, annotations) with the last one it handled to tell a
create from an update from a no-op. By default it stores that essence as an annotation, which costs one
PATCH and one more watch event per handled change: in a burst of creates, a quarter of all writes. batchop
never reads that annotation back for anything else: the reconcile compares the spec with Batch itself, and
it is idempotent.

:class:`TrackedDiffBase` keeps the essence (compact JSON) on the resource's
:class:`~batchop.controller.tracking.Tracked` entry, so it is freed with the entry when the resource goes.
After a restart nothing is known: kopf sees every object as new and runs the create handler, which is the
same reconcile the resume handler would run. Annotations under the operator's own prefix (``run-now``,
``adopt``, ``reconcile-policy``, kopf's progress) stay out of the essence, as they did with the annotation
storage (the runtime notices those itself).

:class:`UnmarkedProgressStorage` is kopf's progress storage in annotations (handler retries stay visible and
survive a restart) without the ``azurebatch.dev/kopf-managed`` marker, which kopf otherwise adds with the
first handler run of every object: alone, since a handler that succeeds at once leaves no progress behind, so
it was one more PATCH per resource. The marker tells *other* kopf operators to leave our prefix out of their
diffs; no other operator handles BatchJobSchedules, and this one strips its prefix itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

from batchop.controller.tracking import Tracker


class TrackedDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base storage on the tracked entries (see the module docstring)."""

    def __init__(self, tracker: Tracker, prefix: str) -> None:
        super().__init__()
        self.tracker = tracker
        self.prefix = prefix.rstrip("/") + "/"

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if not extra_fields:
            # kopf deep-copies the whole body and then drops all but spec, labels and annotations: the
            # status and ``managedFields`` copied for nothing were most of a burst's deep-copy time. Only the
            # parts the essence keeps are handed on (kopf still copies them, so the essence shares nothing).
            metadata = body.get("metadata") or {}
            kept = {k: metadata[k] for k in ("labels", "annotations") if k in metadata}
            body = cast(kopf.Body, {**{k: v for k, v in body.items() if k != "status"}, "metadata": kept})
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = essence.get("metadata", {}).get("annotations")
        if annotations:
            for key in [k for k in annotations if k.startswith(self.prefix)]:
                del annotations[key]
            self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        entry = self.tracker.get((str(body.metadata.namespace), str(body.metadata.name)))
        if entry is None or entry.uid != body.metadata.uid or entry.essence is None:
            return None
        decoded: kopf.BodyEssence = json.loads(entry.essence)
        return decoded

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        entry = self.tracker.get((str(body.metadata.namespace), str(body.metadata.name)))
        if entry is not None and entry.uid == body.metadata.uid:
            entry.essence = json.dumps(essence, separators=(",", ":"))


class UnmarkedProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations without the ``kopf-managed`` marker (see the module docstring)."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None
