"""batchop's own watch (:mod:`batchop.kube.watch`) against the real kube-apiserver: the listing, the events of
creates, edits and deletes, namespace patterns and a label selector, and a watch the API server ends and the
watch resumes without listing again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from batchop.kube import watch as watch_mod
from batchop.kube.client import KubeClient
from batchop.kube.watch import ResourceWatch, WatchScope
from tests.unit.test_workqueue import until


@pytest.fixture
def namespaces(kube: Any) -> Iterator[list[str]]:
    prefix = f"kw-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-tmp"]
    for name in names:
        kube.kubectl("create", "namespace", name, check=True)
    try:
        yield names
    finally:
        for name in names:
            kube.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def client(kube_client: KubeClient) -> KubeClient:
    return kube_client


def _create(kube: Any, namespace: str, name: str, labels: Mapping[str, str] | None = None) -> None:
    body = {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {"schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}}
    kube.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=True)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, int]] = []

    async def __call__(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body["metadata"]
        self.seen.append((meta["namespace"], meta["name"], event_type, int(meta.get("generation") or 0)))

    def names(self) -> set[tuple[str, str]]:
        return {(ns, name) for ns, name, _, _ in self.seen}


async def wait(condition: Any, limit: float = 30.0) -> None:
    await until(condition, limit)


async def test_listing_then_events_with_patterns_and_a_label_selector(kube: Any, namespaces: list[str],
                                                                      client: KubeClient) -> None:
    a, b, tmp = namespaces
    prefix = a.rsplit("-", 1)[0]
    on = {"team": "x"}
    _create(kube, a, "before", on)
    _create(kube, a, "unlabelled")
    _create(kube, tmp, "excluded", on)
    recorder = Recorder()
    watch = ResourceWatch(client, WatchScope(namespaces=(f"{prefix}-*, !*-tmp",), label_selector="team=x"), recorder)
    watch.start()
    try:
        await asyncio.wait_for(watch.listed.wait(), 30)
        await wait(lambda: (a, "before", None, 1) in recorder.seen)
        _create(kube, b, "after", on)
        await wait(lambda: (b, "after", "ADDED", 1) in recorder.seen)
        edit = json.dumps({"spec": {"schedule": {"recurrenceInterval": "PT2H"}}})
        kube.kubectl("patch", "bjs", "after", "-n", b, "--type=merge", "-p", edit, check=True)
        await wait(lambda: (b, "after", "MODIFIED", 2) in recorder.seen)
        kube.kubectl("delete", "bjs", "after", "-n", b, check=True)
        await wait(lambda: (b, "after", "DELETED", 2) in recorder.seen)
        _create(kube, tmp, "excluded-later", on)
        _create(kube, a, "unlabelled-later")
        _create(kube, a, "marker", on)
        await wait(lambda: (a, "marker", "ADDED", 1) in recorder.seen)
    finally:
        await watch.stop()
    assert recorder.names() == {(a, "before"), (b, "after"), (a, "marker")}, "patterns and the selector hold"


async def test_a_watch_the_api_server_ends_resumes_without_listing_again(
    kube: Any, namespaces: list[str], client: KubeClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = namespaces[0]
    monkeypatch.setattr(watch_mod, "WATCH_TIMEOUT", 1)
    _create(kube, a, "early")
    recorder = Recorder()
    watch = ResourceWatch(client, WatchScope(namespaces=(a,)), recorder)
    watch.start()
    try:
        await asyncio.wait_for(watch.listed.wait(), 30)
        listed = client.requests
        # the API server ends each one-second watch; the watch asks again from the last version it saw
        await wait(lambda: client.requests - listed >= 3)
        _create(kube, a, "late")
        await wait(lambda: (a, "late", "ADDED", 1) in recorder.seen)
    finally:
        await watch.stop()
    assert recorder.seen.count((a, "early", None, 1)) == 1, "listed once: each resumed watch went on, no re-list"
    assert [e for e in recorder.seen if e[1] == "early"] == [(a, "early", None, 1)], recorder.seen
