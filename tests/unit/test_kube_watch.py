"""batchop's own watch (batchop.kube.watch) against a scripted API server: listing pages, the watch's events,
resume and re-list, deletions seen only by a re-list, namespace patterns as kopf reads them, one object at a
time. The same watch against a real kube-apiserver: tests/integration/test_kube_watch.py."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from batchop.kube.client import KubeError
from batchop.kube.watch import Dispatcher, ResourceWatch, WatchScope, namespace_matches
from tests.unit.test_workqueue import until


def obj(name: str, *, ns: str = "a", uid: str | None = None, rv: str = "1", generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": uid or f"uid-{ns}-{name}", "resourceVersion": rv,
                         "generation": generation}}


class ScriptedServer:
    """Answers listings from ``pages`` (one list of pages per listing, in order) and watches from ``watches``
    (one list of events per watch request; an exception is raised instead of streaming)."""

    def __init__(self, listings: list[list[dict[str, Any]]], watches: list[Any]) -> None:
        self.listings = listings
        self.watches = watches
        self.requests: list[str] = []
        self.watch_paths: list[str] = []

    async def request(self, method: str, path: str) -> dict[str, Any] | None:
        self.requests.append(path)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        pages = self.listings[0]
        index = int(query["continue"][0]) if "continue" in query else 0
        page = dict(pages[index])
        if index + 1 < len(pages):
            page["metadata"] = {**page.get("metadata", {}), "continue": str(index + 1)}
        else:
            self.listings.pop(0)
        return page

    async def stream(self, path: str, *, read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        self.watch_paths.append(path)
        if not self.watches:
            await asyncio.Event().wait()  # a quiet watch: stays open
        script = self.watches.pop(0)
        if isinstance(script, BaseException):
            raise script
        for event in script:
            yield event


def listing(*items: dict[str, Any], rv: str = "10") -> dict[str, Any]:
    return {"items": list(items), "metadata": {"resourceVersion": rv}}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, body: Mapping[str, Any], event_type: str | None) -> None:
        self.seen.append((body["metadata"]["name"], event_type))


async def run_watch(server: ScriptedServer, scope: WatchScope, until_seen: Any) -> Recorder:
    """Run the watch until the recorder holds ``until_seen`` events (a number, or a predicate of them)."""
    recorder = Recorder()
    watch = ResourceWatch(server, scope, recorder)
    watch.start()
    done = until_seen if callable(until_seen) else (lambda seen: len(seen) >= until_seen)
    try:
        await until(lambda: done(recorder.seen))
    finally:
        await watch.stop()
    return recorder


def per_object(seen: list[tuple[str, str | None]]) -> dict[str, list[str | None]]:
    """Each object's events in order (objects run concurrently: only one object's order is defined)."""
    found: dict[str, list[str | None]] = {}
    for name, event_type in seen:
        found.setdefault(name, []).append(event_type)
    return found


async def test_paged_listing_then_the_watch_from_the_listing_version() -> None:
    pages = [{"items": [obj("r1")]}, listing(obj("r2"), rv="42")]
    events = [{"type": "ADDED", "object": obj("r3", rv="43")}, {"type": "MODIFIED", "object": obj("r1", rv="44")}]
    server = ScriptedServer([pages], [events])
    recorder = await run_watch(server, WatchScope(namespaces=("a",)), lambda seen: ("r1", "MODIFIED") in seen)
    assert per_object(recorder.seen) == {"r1": [None, "MODIFIED"], "r2": [None], "r3": ["ADDED"]}
    assert server.requests[0].startswith("/apis/azurebatch.dev/v1alpha1/namespaces/a/batchschedules?limit=500")
    assert "continue=1" in server.requests[1]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(server.watch_paths[0]).query)
    assert query["resourceVersion"] == ["42"] and query["watch"] == ["true"]
    assert query["allowWatchBookmarks"] == ["true"]


async def test_a_watch_ended_by_the_server_resumes_from_the_last_version_bookmarks_included() -> None:
    first = [{"type": "ADDED", "object": obj("r1", rv="11")},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}]
    second = [{"type": "MODIFIED", "object": obj("r1", rv="16")}]
    server = ScriptedServer([[listing(rv="10")]], [first, second])
    recorder = await run_watch(server, WatchScope(), 2)
    assert recorder.seen == [("r1", "ADDED"), ("r1", "MODIFIED")]
    versions = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)["resourceVersion"] for p in server.watch_paths]
    assert versions[:2] == [["10"], ["15"]], "resumed after the bookmark, no re-list"
    assert len(server.requests) == 1
    assert server.watch_paths[0].startswith("/apis/azurebatch.dev/v1alpha1/batchschedules?"), "cluster-wide"


async def test_gone_lists_again_and_an_object_missing_from_the_new_listing_is_deleted() -> None:
    gone = [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}]
    server = ScriptedServer([[listing(obj("r1"), obj("r2"), rv="10")], [listing(obj("r2"), rv="30")]], [gone])
    recorder = await run_watch(server, WatchScope(), lambda seen: ("r1", "DELETED") in seen)
    assert per_object(recorder.seen) == {"r1": [None, "DELETED"], "r2": [None, None]}
    assert len(server.requests) == 2


async def test_a_failed_listing_is_retried_with_a_warning(caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from batchop.kube import watch as watch_mod

    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fast_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(watch_mod.asyncio, "sleep", fast_sleep)

    class Failing(ScriptedServer):
        failures = 2

        async def request(self, method: str, path: str) -> dict[str, Any] | None:
            if self.failures:
                self.failures -= 1
                raise KubeError(403, "forbidden")
            return await super().request(method, path)

    server = Failing([[listing(obj("r1"))]], [])
    recorder = await run_watch(server, WatchScope(), 1)
    assert recorder.seen == [("r1", None)]
    assert [s for s in sleeps if s >= 0.5][:2] == [1.0, 2.0], "the backoff doubles"
    assert "Kubernetes API 403: forbidden" in caplog.text


async def test_patterns_watch_cluster_wide_and_filter_by_namespace() -> None:
    scope = WatchScope(namespaces=("team-*, !team-tmp",))
    assert scope.paths() == ["/apis/azurebatch.dev/v1alpha1/batchschedules"]
    events = [{"type": "ADDED", "object": obj("x", ns="team-tmp")}, {"type": "ADDED", "object": obj("y", ns="b")},
              {"type": "ADDED", "object": obj("z", ns="team-a")}]
    server = ScriptedServer([[listing(obj("w", ns="other"), obj("v", ns="team-b"))]], [events])
    recorder = await run_watch(server, scope, 2)
    await asyncio.sleep(0)
    assert recorder.seen == [("v", None), ("z", "ADDED")]


def test_exact_namespaces_are_one_watch_each_and_the_label_selector_is_sent() -> None:
    scope = WatchScope(namespaces=("a", "b", "a"), label_selector="azurebatch.dev/shard in (0,2)")
    assert scope.paths() == ["/apis/azurebatch.dev/v1alpha1/namespaces/a/batchschedules",
                             "/apis/azurebatch.dev/v1alpha1/namespaces/b/batchschedules"]
    watch = ResourceWatch(ScriptedServer([], []), scope, Recorder())
    assert "labelSelector=azurebatch.dev%2Fshard+in+%280%2C2%29" in watch._query(limit=1)


@pytest.mark.parametrize(("name", "patterns", "expected"), [
    ("myapp-live", ["myapp-*, !*-pr-*, *pr-123"], True),
    ("myapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], True),
    ("myapp-pr-456", ["myapp-*, !*-pr-*, *pr-123"], False),
    ("otherapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], False),
    ("otherapp-pr-123", ["!*-pr-*, *pr-123"], True),
    ("anything", ["!*-pr-*"], True),
    ("x-pr-1", ["!*-pr-*"], False),
    ("b", ["a", "b"], True),
    ("c", ["a", "b?"], False),
    ("b1", ["a", "b?"], True),
])
def test_namespace_patterns_read_as_kopf_reads_them(name: str, patterns: list[str], expected: bool) -> None:
    import kopf._cogs.structs.references as kopf_references

    assert namespace_matches(name, patterns) is expected
    assert any(kopf_references.match_namespace(name, p) for p in patterns) is expected, "kopf agrees"


async def test_one_object_at_a_time_and_the_newest_waiting_event_wins() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def handler(body: Mapping[str, Any], event_type: str | None) -> None:
        started.append(f"{body['metadata']['name']}@{body['metadata']['resourceVersion']}")
        if body["metadata"]["name"] == "slow" and body["metadata"]["resourceVersion"] == "1":
            await release.wait()

    dispatcher = Dispatcher(handler)
    dispatcher.put(obj("slow", rv="1"), "ADDED")
    await until(lambda: started == ["slow@1"])
    dispatcher.put(obj("slow", rv="2"), "MODIFIED")
    dispatcher.put(obj("slow", rv="3"), "MODIFIED")
    dispatcher.put(obj("fast", rv="1"), "ADDED")
    await until(lambda: "fast@1" in started)
    assert started == ["slow@1", "fast@1"], "another object is not held up; this one waits"
    release.set()
    await until(lambda: dispatcher.busy == 0)
    assert started == ["slow@1", "fast@1", "slow@3"], "rv 2 was replaced by rv 3 while waiting"


async def test_a_handler_error_is_logged_and_the_next_event_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str | None] = []

    async def handler(body: Mapping[str, Any], event_type: str | None) -> None:
        calls.append(event_type)
        if event_type == "ADDED":
            raise RuntimeError("boom")

    dispatcher = Dispatcher(handler)
    dispatcher.put(obj("r"), "ADDED")
    await until(lambda: dispatcher.busy == 0)
    dispatcher.put(obj("r"), "MODIFIED")
    await until(lambda: calls == ["ADDED", "MODIFIED"])
    assert "handling a ADDED event of a/r failed" in caplog.text


async def test_stop_lets_a_running_handler_finish_within_the_grace_then_cancels() -> None:
    finished: list[str] = []

    async def handler(body: Mapping[str, Any], event_type: str | None) -> None:
        if body["metadata"]["name"] == "stuck":
            await asyncio.Event().wait()
        await asyncio.sleep(0.01)
        finished.append(body["metadata"]["name"])

    dispatcher = Dispatcher(handler)
    dispatcher.put(obj("quick"), "ADDED")
    dispatcher.put(obj("stuck"), "ADDED")
    await dispatcher.stop(grace=0.2)
    assert finished == ["quick"] and dispatcher.busy == 0


async def test_health_shows_what_keeps_failing_until_a_listing_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchop.kube import watch as watch_mod

    gate = asyncio.Event()
    real_sleep = asyncio.sleep

    async def gated_sleep(delay: float) -> None:
        if delay >= 0.5:  # the watch's backoff: held until the test opens the gate
            await gate.wait()
        await real_sleep(0)

    monkeypatch.setattr(watch_mod.asyncio, "sleep", gated_sleep)

    class FailingOnce(ScriptedServer):
        failed = False

        async def request(self, method: str, path: str) -> dict[str, Any] | None:
            if not self.failed:
                self.failed = True
                raise KubeError(404, "the server could not find the requested resource")
            return await super().request(method, path)

    recorder = Recorder()
    watch = ResourceWatch(FailingOnce([[listing(obj("r1"))]], []), WatchScope(), recorder)
    watch.start()
    try:
        await until(lambda: watch.health()["failing"])
        assert watch.health() == {"listed": False, "busy": 0, "failing": {
            "/apis/azurebatch.dev/v1alpha1/batchschedules": "Kubernetes API 404: the server could not find the "
                                                            "requested resource"}}
        gate.set()
        await until(lambda: recorder.seen == [("r1", None)])
        assert watch.health()["listed"] is True and watch.health()["failing"] == {}
    finally:
        await watch.stop()


async def test_a_broken_watch_connection_resumes_from_the_last_version_without_listing_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import aiohttp

    from batchop.kube import watch as watch_mod

    real_sleep = asyncio.sleep

    async def fast_sleep(delay: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(watch_mod.asyncio, "sleep", fast_sleep)

    class Breaking(ScriptedServer):
        async def stream(self, path: str, *, read_timeout: float) -> AsyncIterator[dict[str, Any]]:
            if len(self.watch_paths) == 0:
                self.watch_paths.append(path)
                yield {"type": "ADDED", "object": obj("r1", rv="12")}
                raise aiohttp.ClientPayloadError("Response payload is not completed")
            async for event in super().stream(path, read_timeout=read_timeout):
                yield event

    server = Breaking([[listing(rv="10")]], [[{"type": "MODIFIED", "object": obj("r1", rv="13")}]])
    recorder = await run_watch(server, WatchScope(), lambda seen: ("r1", "MODIFIED") in seen)
    assert recorder.seen == [("r1", "ADDED"), ("r1", "MODIFIED")]
    versions = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)["resourceVersion"][0] for p in server.watch_paths]
    assert versions[:2] == ["10", "12"], "resumed from the last event's version"
    assert len(server.requests) == 1, "no second listing"
    assert "Response payload is not completed" in caplog.text


async def test_gone_as_the_answers_status_lists_again_too() -> None:
    gone = KubeError(410, "too old resource version: 10 (40)")
    server = ScriptedServer([[listing(obj("r1"), rv="10")], [listing(obj("r1"), rv="40")]], [gone])
    recorder = await run_watch(server, WatchScope(), 2)
    assert recorder.seen == [("r1", None), ("r1", None)] and len(server.requests) == 2, "listed again at once"
