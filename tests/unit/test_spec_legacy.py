"""Names and images of earlier Batch API versions: the tables the CRD, validation and convert share
(:mod:`batchop.api.legacy`, :mod:`batchop.spec.images`)."""

from __future__ import annotations

import pytest

from batchop.api import legacy, sdkmodels
from batchop.spec import images


def test_every_legacy_field_is_gone_from_the_sdk_models() -> None:
    """A legacy name that is still a real field of its model would forbid a valid field."""
    from azure.batch import models as batch_models

    for field in legacy.LEGACY_FIELDS:
        for model_name in field.models:
            model = getattr(batch_models, model_name)
            wire = {f._rest_name for f in sdkmodels.rest_fields(model).values()}
            assert field.name not in wire, (model_name, field.name)


def test_replacements_exist_in_the_sdk_models() -> None:
    from azure.batch import models as batch_models

    pool = {f._rest_name for f in sdkmodels.rest_fields(batch_models.BatchPoolSpecification).values()}
    assert {"targetDedicatedNodes", "targetLowPriorityNodes", "taskSlotsPerNode", "virtualMachineConfiguration"} <= pool
    resource_file = {f._rest_name for f in sdkmodels.rest_fields(batch_models.ResourceFile).values()}
    assert "httpUrl" in resource_file


def test_lookup() -> None:
    found = legacy.legacy_field("maxTasksPerNode")
    assert found and found.replacement == "taskSlotsPerNode"
    assert legacy.legacy_field("taskSlotsPerNode") is None
    assert {f.name for f in legacy.legacy_fields_of("BatchStartTask")} == {"runElevated", "certificateReferences"}


@pytest.mark.parametrize(
    ("agent", "retired"),
    [("batch.node.ubuntu 14.04", True), ("batch.node.ubuntu 20.04", True), ("batch.node.centos 7", True),
     ("batch.node.ubuntu 22.04", False), ("batch.node.ubuntu 24.04", False), ("batch.node.windows amd64", False)],
)
def test_retired_node_agents(agent: str, retired: bool) -> None:
    assert images.retired_node_agent(agent) is retired


@pytest.mark.parametrize(
    ("image", "retired"),
    [
        ({"publisher": "Canonical", "offer": "UbuntuServer", "sku": "14.04.4-LTS"}, True),
        ({"publisher": "canonical", "offer": "UbuntuServer", "sku": "18.04-LTS"}, True),
        ({"publisher": "canonical", "offer": "0001-com-ubuntu-server-focal", "sku": "20_04-lts"}, True),
        ({"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}, False),
        ({"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"}, False),
        ({"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2404"}, False),
        ({"virtualMachineImageId": "/subscriptions/x/images/mine"}, False),
    ],
)
def test_retired_images(image: dict[str, str], retired: bool) -> None:
    assert images.retired_image(image) is retired
