"""Containers the local stack's Batch service left do not pile up: ``batchop dev down`` removes them by label.

A Batch service removes its own containers as it goes and when it stops; one that was killed leaves them.
``devstack.stack.down`` then removes every container carrying that stack's service id (whatever its state),
and leaves the containers of any other service alone. The generic prune at ``batchop dev setup`` removes only
stopped project containers older than a few minutes, so it never races a live service.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchwire import containers
from devstack import images, product_images, stack
from localbatch import container_tasks
from tests.fixtures.operator import wait_for


@pytest.fixture
def made(engine: containers.Engine) -> Iterator[list[str]]:
    """Names of the containers a test created; all removed at the end whatever happened."""
    names: list[str] = []
    yield names
    for name in names:  # one at a time: a name already removed must not keep the others
        subprocess.run(engine.rm(name), capture_output=True, timeout=120, check=False)


def create(engine: containers.Engine, label_value: str, names: list[str]) -> str:
    """A stopped (created, never started) container labelled as a Batch service's with ``label_value``."""
    name = f"batchop-hygiene-{uuid.uuid4().hex[:8]}"
    options = engine.create_options(name=name, labels={containers.LABEL: label_value})
    done = subprocess.run(engine.create(images.ensure_busybox(), ["true"], options=options), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    names.append(name)
    return name


def test_image_hygiene_down_removes_the_killed_services_containers_only(
    engine: containers.Engine, tmp_path: Path, made: list[str]
) -> None:
    state_dir = tmp_path / "stack"
    work = state_dir / stack.BATCH / "work"
    work.mkdir(parents=True)
    container_tasks.ContainerHost(work)._mark_used()  # what the service writes when it first uses the engine
    ours = create(engine, container_tasks.service_id(work), made)
    other_service = f"hygiene-{uuid.uuid4().hex[:8]}"
    theirs = create(engine, other_service, made)

    stack.down(state_dir)

    assert containers.list_labelled(engine, container_tasks.service_id(work)) == [], f"{ours} was left"
    assert containers.list_labelled(engine, other_service) == [theirs], "another service's container was touched"


def test_image_hygiene_setup_prune_removes_old_stopped_containers_only(engine: containers.Engine,
                                                                       made: list[str]) -> None:
    label_value = f"hygiene-{uuid.uuid4().hex[:8]}"
    recent = create(engine, label_value, made)
    product_images.prune_containers(engine)  # as `batchop dev setup` does
    assert containers.list_labelled(engine, label_value) == [recent], \
        f"a container created less than {product_images.STALE_CONTAINER_AGE} ago may still be a live service's"
    # the same container, once older than the age given, goes (the age is the engine's `until` filter)
    wait_for(lambda: (product_images.prune_containers(engine, older_than="1s", label_value=label_value) or True)
             and not containers.list_labelled(engine, label_value), 30, 0.5, "the stopped container to be pruned")
