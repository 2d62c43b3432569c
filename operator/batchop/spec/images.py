"""Marketplace images and node agents Batch has retired, and the image suggested instead.

Job-schedule JSON of earlier years names images Batch no longer creates nodes from (Ubuntu 14.04-20.04,
CentOS ...). :mod:`batchop.spec.validation` warns about them and ``batchop convert`` replaces them with
:data:`CURRENT_UBUNTU` (unless asked to keep them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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
