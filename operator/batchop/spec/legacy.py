"""Names and images from earlier Azure Batch API versions, and what replaced them.

Job-schedule JSON written for the 2016 API (the seed's ``create_jobsched.json``) still circulates.
Kubernetes would silently prune the old names (``targetDedicated`` ...) from a resource, so they are
known here: the CRD lists them as forbidden properties, :mod:`batchop.spec.validation` rejects them
with the modern name in the message, and ``batchop convert`` rewrites them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Image:
    """A Marketplace image reference with the Batch node agent it needs."""

    publisher: str
    offer: str
    sku: str
    node_agent_sku_id: str

    def as_reference(self) -> dict[str, str]:
        return {"publisher": self.publisher, "offer": self.offer, "sku": self.sku, "version": "latest"}


CURRENT_UBUNTU = Image("canonical", "ubuntu-24_04-lts", "server", "batch.node.ubuntu 24.04")
"""The image suggested in place of a retired Linux image."""

# Node agents Batch no longer offers (the images behind them are out of support).
_RETIRED_NODE_AGENT = re.compile(
    r"^batch\.node\.(ubuntu (14|16|18|20)\.04|centos .*|debian (8|9|10)|opensuse .*|oracle .*|el 7)$",
    re.IGNORECASE,
)
_RETIRED_UBUNTU_SKU = re.compile(r"^(14|16|18|20)[._]04", re.IGNORECASE)
_RETIRED_OFFERS = re.compile(
    r"^(ubuntuserver|0001-com-ubuntu-server-focal|centos.*|debian-(8|9|10)|openlogic.*)$", re.IGNORECASE
)


def retired_node_agent(node_agent_sku_id: str) -> bool:
    """True for a ``nodeAgentSKUId`` of a retired image (``batch.node.ubuntu 14.04`` ...)."""
    return bool(_RETIRED_NODE_AGENT.match(node_agent_sku_id.strip()))


def retired_image(image_reference: dict[str, object]) -> bool:
    """True for a Marketplace image reference Batch no longer supports (Ubuntu 14.04-20.04, CentOS ...)."""
    offer = str(image_reference.get("offer") or "")
    sku = str(image_reference.get("sku") or "")
    if not offer:
        return False
    if offer.lower() == "ubuntuserver":
        return True  # the UbuntuServer offer ended with 18.04; later releases have their own offers
    if _RETIRED_OFFERS.match(offer):
        return True
    return "ubuntu" in offer.lower() and bool(_RETIRED_UBUNTU_SKU.match(sku))
