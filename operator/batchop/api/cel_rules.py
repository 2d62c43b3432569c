"""CEL rules (``x-kubernetes-validations``) of the CRD variant served to Kubernetes >= 1.25.

The admission webhook (:mod:`batchop.admission.webhook`) runs the whole of :mod:`batchop.spec.validation`, but
only while the operator runs (``failurePolicy: Ignore``). These rules let the API server itself refuse the
mistakes that a structural schema cannot express, also when the operator is down. Each rule is a subset of what
:func:`batchop.spec.validation.validate` refuses (tested), with a message naming the field and the fix.

:data:`RULES` places each rule by a path in the ``spec`` schema: property names joined by ``.``, ``[]`` for
array items, ``*`` for any one property. :func:`apply` attaches them to a spec schema (a copy); the CRD
generator (:mod:`batchop.api.crd`) calls it for the CEL variant (``crds/cel/``) and adds :data:`SPEC_RULES`,
the transition rules of ``spec`` as a whole.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: An ISO 8601 duration shorter than one minute: only seconds below 60, hours and minutes zero or absent.
_UNDER_A_MINUTE = r"^PT(0+H)?(0+M)?([0-5]?[0-9](\\.[0-9]+)?S)?$"
#: Durations are short strings; a bound keeps the API server's CEL cost estimate of ``matches`` small.
DURATION_MAX_LENGTH = 64


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry and where it goes."""

    path: str
    """Where in the spec schema (``schedule.recurrenceInterval``, ``*.resourceFiles[].blob``...)."""
    rule: str
    """The CEL expression; ``self`` is the value at :attr:`path`."""
    message: str
    """What the API server answers when the rule is false: the field and the fix."""
    max_length: int | None = None
    """For string rules: the ``maxLength`` the node gets if it has none (bounds CEL's cost estimate)."""

    def entry(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


RULES: tuple[CelRule, ...] = (
    CelRule(
        "schedule.recurrenceInterval",
        f"!self.matches('{_UNDER_A_MINUTE}')",
        "spec.schedule.recurrenceInterval must be at least 1 minute (PT1M): Batch refuses shorter intervals",
        DURATION_MAX_LENGTH,
    ),
    CelRule(
        "schedule.startWindow",
        f"!self.matches('{_UNDER_A_MINUTE}')",
        "spec.schedule.startWindow must be at least 1 minute (PT1M): Batch refuses shorter windows",
        DURATION_MAX_LENGTH,
    ),
    CelRule(
        "jobSpecification.jobManagerTask.resourceFiles[].blob",
        "!(has(self.path) && has(self.prefix))",
        "blob: set path (one blob) or prefix (every blob under it), not both",
    ),
    CelRule(
        "jobSpecification.poolInfo.autoPoolSpecification.pool.startTask.resourceFiles[].blob",
        "!(has(self.path) && has(self.prefix))",
        "blob: set path (one blob) or prefix (every blob under it), not both",
    ),
    CelRule(
        "jobSpecification.jobPreparationTask.resourceFiles[].blob",
        "!(has(self.path) && has(self.prefix))",
        "blob: set path (one blob) or prefix (every blob under it), not both",
    ),
    CelRule(
        "jobSpecification.jobReleaseTask.resourceFiles[].blob",
        "!(has(self.path) && has(self.prefix))",
        "blob: set path (one blob) or prefix (every blob under it), not both",
    ),
    CelRule(
        "jobSpecification.*.outputFiles[].destination.blob",
        "!has(self.path) || !self.path.contains('{jobId}')",
        "destination.blob.path: {jobId} cannot be filled in (every job shares the jobSpecification): write "
        "outputs under $AZ_BATCH_JOB_ID and upload them with a wildcard filePattern",
    ),
    CelRule(
        "jobSpecification.poolInfo.autoPoolSpecification.pool",
        "!(has(self.enableAutoScale) && self.enableAutoScale) || "
        "(!has(self.targetDedicatedNodes) && !has(self.targetLowPriorityNodes))",
        "pool: targetDedicatedNodes and targetLowPriorityNodes must not be set when enableAutoScale is true "
        "(the autoScaleFormula sizes the pool): remove them",
    ),
    CelRule(
        "jobSpecification.poolInfo.autoPoolSpecification.pool",
        "!(has(self.enableAutoScale) && self.enableAutoScale) || has(self.autoScaleFormula)",
        "pool: enableAutoScale needs an autoScaleFormula (e.g. '$TargetDedicatedNodes = 1;')",
    ),
)


SPEC_RULES: tuple[dict[str, str], ...] = (
    {
        "rule": "!has(oldSelf.scheduleId) || (has(self.scheduleId) && self.scheduleId == oldSelf.scheduleId)",
        "message": "spec.scheduleId is immutable once set: create a new resource for a new schedule id",
    },
)
"""Rules of ``spec`` itself (transition rules: ``oldSelf`` is the stored object)."""


def schema_nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema with its path (``a.b[].c``), parents first."""
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from schema_nodes(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from schema_nodes(schema["items"], f"{path}[]")


def _matches(path: str, pattern: str) -> bool:
    parts, wanted = path.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def apply(spec_schema: dict[str, Any], rules: tuple[CelRule, ...] = RULES) -> dict[str, Any]:
    """A copy of ``spec_schema`` with :data:`RULES` attached. Raises ``LookupError`` for a rule that matches
    nothing (the schema changed: the rule must follow)."""
    result = copy.deepcopy(spec_schema)
    nodes = list(schema_nodes(result))
    for rule in rules:
        found = [node for path, node in nodes if _matches(path, rule.path)]
        if not found:
            raise LookupError(f"CEL rule path {rule.path!r} matches nothing in the spec schema")
        for node in found:
            entries = node.setdefault("x-kubernetes-validations", [])
            if rule.entry() not in entries:
                entries.append(rule.entry())
            if rule.max_length is not None and node.get("type") == "string" and "maxLength" not in node:
                node["maxLength"] = rule.max_length
    return result
