"""kopf's diff-base storage, kept empty: batchop registers no handler that kopf's diffs drive.

kopf builds each object's *essence* (spec, labels, annotations: a deep copy), fetches the last handled one and
compares them on every watch event, whatever handlers are registered, to tell a create from an update from a
no-op. batchop's only resource handler is a watch handler, which does not use that diff
(:mod:`batchop.controller.handlers`), so :class:`NoDiffBase` builds nothing and keeps nothing: no copy of
every object per event, and no essence held per resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that is always empty (see the module docstring)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None
