"""Field names of earlier Azure Batch API versions, what replaced them, and how the CRD refuses them.

Job-schedule JSON written for the 2016 API (the seed's ``create_jobsched.json``) still circulates.
Kubernetes would silently prune the old names (``targetDedicated`` ...) from a resource, so they are
part of the contract: the CRD declares each one a :func:`forbidden` property of the models it belonged to,
:mod:`batchop.spec.validation` rejects them with the modern name in the message, and ``batchop convert``
rewrites them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LegacyField:
    """A property an earlier Batch API accepted and API 2025-06-01 does not."""

    name: str
    """The old property name, e.g. ``targetDedicated``."""
    models: tuple[str, ...]
    """The ``azure.batch.models`` classes it belonged to (where the CRD declares it forbidden)."""
    replacement: str
    """The modern property (or path) to use instead; empty when the feature is gone."""
    message: str
    """The whole fix, as shown to the user."""


_TASKS = ("BatchJobManagerTask", "BatchJobPreparationTask", "BatchJobReleaseTask", "BatchStartTask")

LEGACY_FIELDS: tuple[LegacyField, ...] = (
    LegacyField(
        "targetDedicated",
        ("BatchPoolSpecification",),
        "targetDedicatedNodes",
        "'targetDedicated' was renamed 'targetDedicatedNodes' in API 2017-05-01: use targetDedicatedNodes "
        "(and targetLowPriorityNodes for Spot/low-priority nodes)",
    ),
    LegacyField(
        "targetLowPriority",
        ("BatchPoolSpecification",),
        "targetLowPriorityNodes",
        "'targetLowPriority' is not a Batch property: use targetLowPriorityNodes",
    ),
    LegacyField(
        "maxTasksPerNode",
        ("BatchPoolSpecification",),
        "taskSlotsPerNode",
        "'maxTasksPerNode' was renamed 'taskSlotsPerNode' in API 2020-09-01: use taskSlotsPerNode",
    ),
    LegacyField(
        "runElevated",
        _TASKS,
        "userIdentity.autoUser.elevationLevel",
        "'runElevated' was replaced by 'userIdentity' in API 2017-01-01: use "
        "userIdentity: {autoUser: {scope: pool, elevationLevel: admin}} for runElevated: true "
        "(elevationLevel: nonadmin for false)",
    ),
    LegacyField(
        "blobSource",
        ("ResourceFile",),
        "httpUrl",
        "'blobSource' was replaced in API 2018-12-01: use httpUrl (a URL with its own read SAS), "
        "storageContainerUrl (+ blobPrefix), or a blob reference blob: {container, path} that the operator "
        "turns into a SAS URL for you",
    ),
    LegacyField(
        "certificateReferences",
        ("BatchPoolSpecification", "BatchStartTask"),
        "virtualMachineConfiguration.extensions",
        "Batch certificates were retired in February 2024 and 'certificateReferences' removed: use the Azure Key "
        "Vault VM extension (virtualMachineConfiguration.extensions) instead",
    ),
    LegacyField(
        "cloudServiceConfiguration",
        ("BatchPoolSpecification",),
        "virtualMachineConfiguration",
        "Cloud Services pools were retired in 2024 and 'cloudServiceConfiguration' removed: use "
        "virtualMachineConfiguration with an imageReference and nodeAgentSKUId",
    ),
    LegacyField(
        "applicationLicenses",
        ("BatchPoolSpecification",),
        "",
        "'applicationLicenses' was removed from the Batch API (rendering licenses were retired): delete it",
    ),
    LegacyField(
        "odata.metadata",
        (),
        "",
        "'odata.metadata' is a field of Batch responses, not of requests: delete it",
    ),
)

_BY_NAME = {field.name: field for field in LEGACY_FIELDS}

# Keys of a pasted job-schedule JSON that are not BatchJobSchedule spec fields.
PASTED_TOP_LEVEL: dict[str, str] = {
    "id": "the schedule id is 'spec.scheduleId' (or derived from namespace and name when omitted)",
    "displayName": "a schedule's displayName cannot be set through batchop: delete it (Batch cannot change it later)",
    "odata.metadata": _BY_NAME["odata.metadata"].message,
}


def legacy_field(name: str) -> LegacyField | None:
    """The legacy field called ``name``, if it is one."""
    return _BY_NAME.get(name)


def legacy_fields_of(model: str) -> tuple[LegacyField, ...]:
    """Legacy fields that belonged to the ``azure.batch.models`` class ``model``."""
    return tuple(field for field in LEGACY_FIELDS if model in field.models)


FORBIDDEN_PREFIX = "REMOVED from the Batch API:"
"""How the description of a :func:`forbidden` property starts."""


def forbidden(message: str) -> dict[str, Any]:
    """A property that is known only to be refused, so the API server names the fix instead of pruning it.

    Its only allowed value is the fix itself, so the API server's own answer reads
    ``targetDedicated: Unsupported value: 1: supported values: "none: ... use targetDedicatedNodes"``
    (tried on kube-apiserver 1.20; ``not: {}`` refuses too but says only "must not validate the schema").
    ``x-kubernetes-int-or-string`` keeps it structural without a ``type`` (the old fields were integers,
    booleans and strings). :mod:`batchop.spec.validation` refuses any value, that one included.
    """
    return {
        "description": f"{FORBIDDEN_PREFIX} {message}",
        "x-kubernetes-int-or-string": True,
        "enum": [f"none: {message}"],
    }


def is_forbidden(schema: dict[str, Any]) -> bool:
    """True for a property schema made by :func:`forbidden`."""
    return str(schema.get("description", "")).startswith(FORBIDDEN_PREFIX)
