"""The operator's own API client (:class:`batchop.kube.client.KubeClient`) against the real kube-apiserver: the
finalizer add that needs no GET when the object is as last seen, and falls back to a GET when it is not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from batchop.api.names import FINALIZER
from batchop.kube.client import KubeClient


@pytest.fixture
def namespace(kube: Any) -> Iterator[str]:
    name = f"kc-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name, check=True)
    try:
        yield name
    finally:
        # strip every finalizer these tests left, so the namespace can go
        for obj in json.loads(kube.kubectl("get", "bjs", "-n", name, "-o", "json").stdout or '{"items": []}')["items"]:
            kube.kubectl("patch", "bjs", obj["metadata"]["name"], "-n", name, "--type=merge",
                         "-p", '{"metadata": {"finalizers": null}}')
        kube.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def client(kube_client: KubeClient) -> KubeClient:
    return kube_client


def _create(kube: Any, namespace: str, name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if finalizers:
        meta["finalizers"] = finalizers
    body = {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": meta,
            "spec": {"schedule": {"recurrenceInterval": "PT1H"},
                     "jobSpecification": {"poolInfo": {"poolId": "p"}}}}
    kube.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=True)
    return _get(kube, namespace, name)


def _get(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("get", "bjs", name, "-n", namespace, "-o", "json", check=True).stdout))


async def test_finalizer_added_without_a_get_when_the_object_is_as_seen(kube: Any, namespace: str,
                                                                         client: KubeClient) -> None:
    meta = _create(kube, namespace, "fresh")["metadata"]
    before = client.requests
    assert await client.add_finalizer(namespace, "fresh", meta["uid"], FINALIZER, seen=meta)
    assert client.requests - before == 1  # the PATCH alone
    assert _get(kube, namespace, "fresh")["metadata"]["finalizers"] == [FINALIZER]


async def test_a_finalizer_put_on_at_admission_costs_no_request(kube: Any, namespace: str,
                                                                client: KubeClient) -> None:
    """Seen with the finalizer already (the mutating webhook put it on at create): nothing to send."""
    meta = _create(kube, namespace, "admitted", finalizers=["example.com/other", FINALIZER])["metadata"]
    before = client.requests
    assert await client.add_finalizer(namespace, "admitted", meta["uid"], FINALIZER, seen=meta)
    assert client.requests == before
    assert _get(kube, namespace, "admitted")["metadata"]["finalizers"] == ["example.com/other", FINALIZER]


async def test_stale_view_falls_back_and_keeps_finalizers_added_meanwhile(kube: Any, namespace: str,
                                                                          client: KubeClient) -> None:
    meta = _create(kube, namespace, "stale")["metadata"]  # seen with no finalizer
    kube.kubectl("patch", "bjs", "stale", "-n", namespace, "--type=merge",
                 "-p", '{"metadata": {"finalizers": ["example.com/other"]}}', check=True)
    before = client.requests
    assert await client.add_finalizer(namespace, "stale", meta["uid"], FINALIZER, seen=meta)
    assert client.requests - before == 3  # the refused PATCH, the GET, the PATCH
    assert _get(kube, namespace, "stale")["metadata"]["finalizers"] == ["example.com/other", FINALIZER]


async def test_no_finalizer_for_an_object_being_deleted_gone_or_replaced(kube: Any, namespace: str,
                                                                          client: KubeClient) -> None:
    meta = _create(kube, namespace, "going", finalizers=["example.com/other"])["metadata"]
    kube.kubectl("delete", "bjs", "going", "-n", namespace, "--wait=false", check=True)
    # the view predates the deletion: the test fails, the GET shows the deletionTimestamp
    assert not await client.add_finalizer(namespace, "going", meta["uid"], FINALIZER, seen=meta)
    now = _get(kube, namespace, "going")["metadata"]
    assert now["finalizers"] == ["example.com/other"] and now.get("deletionTimestamp")
    assert not await client.add_finalizer(namespace, "going", meta["uid"], FINALIZER, seen=now)

    gone = _create(kube, namespace, "gone")["metadata"]
    kube.kubectl("delete", "bjs", "gone", "-n", namespace, check=True)
    assert not await client.add_finalizer(namespace, "gone", gone["uid"], FINALIZER, seen=gone)

    old = _create(kube, namespace, "replaced")["metadata"]
    kube.kubectl("delete", "bjs", "replaced", "-n", namespace, check=True)
    _create(kube, namespace, "replaced")
    assert not await client.add_finalizer(namespace, "replaced", old["uid"], FINALIZER, seen=old)
    assert not _get(kube, namespace, "replaced")["metadata"].get("finalizers")


async def test_remove_finalizer_keeps_the_others(kube: Any, namespace: str, client: KubeClient) -> None:
    meta = _create(kube, namespace, "both", finalizers=["example.com/other", FINALIZER])["metadata"]
    await client.remove_finalizer(namespace, "both", meta["uid"], FINALIZER)
    assert _get(kube, namespace, "both")["metadata"]["finalizers"] == ["example.com/other"]


async def test_remove_finalizer_as_seen_sends_no_get_and_falls_back_when_the_object_moved(
    kube: Any, namespace: str, client: KubeClient
) -> None:
    meta = _create(kube, namespace, "seen", finalizers=[FINALIZER, "example.com/other"])["metadata"]
    before = client.requests
    await client.remove_finalizer(namespace, "seen", meta["uid"], FINALIZER, seen=meta)
    assert client.requests - before == 1, "one JSON patch, no GET"
    assert _get(kube, namespace, "seen")["metadata"]["finalizers"] == ["example.com/other"]

    moved = _create(kube, namespace, "moved", finalizers=[FINALIZER])["metadata"]
    kube.kubectl("patch", "bjs", "moved", "-n", namespace, "--type", "json", "-p",
                 json.dumps([{"op": "add", "path": "/metadata/finalizers/-", "value": "example.com/late"}]), check=True)
    before = client.requests
    await client.remove_finalizer(namespace, "moved", moved["uid"], FINALIZER, seen=moved)  # a stale view
    assert client.requests - before == 3, "the test failed; a GET and a patch from the fresh object"
    assert _get(kube, namespace, "moved")["metadata"]["finalizers"] == ["example.com/late"]

    old = _create(kube, namespace, "again", finalizers=[FINALIZER])["metadata"]
    kube.kubectl("patch", "bjs", "again", "-n", namespace, "--type", "merge", "-p",
                 json.dumps({"metadata": {"finalizers": None}}), check=True)
    kube.kubectl("delete", "bjs", "again", "-n", namespace, check=True)
    fresh = _create(kube, namespace, "again", finalizers=[FINALIZER])["metadata"]
    await client.remove_finalizer(namespace, "again", old["uid"], FINALIZER, seen=old)  # another object now
    assert _get(kube, namespace, "again")["metadata"]["finalizers"] == [FINALIZER]
    assert fresh["uid"] != old["uid"]
