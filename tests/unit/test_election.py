"""Leader election, shards and the Batch write fence, on an in-memory Lease store with a hand-driven clock.

The store behaves as the API server does for Leases: ``resourceVersion`` grows on every write, an update with
an older one is refused with 409, a create of an existing name with 409. The real API server runs the same
code in tests/integration/test_leader_election.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import pytest

from batchop.batch.gateway import WRITE_FENCE, Fenced, FencePolicy
from batchop.controller.election import ElectionConfig, LeaseLock, default_namespace
from batchop.controller.sharding import Coordinator, assign, selector
from batchop.kube.client import KubeError
from batchop.kube.leases import LeaseClient
from batchop.spec.shardkey import shard_of


class Store:
    """Leases in memory, answering :meth:`LeaseClient`'s requests as the API server would."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    async def request(self, method: str, path: str, *, json: Any = None, content_type: str | None = None) -> Any:
        if self.down:
            raise OSError("connection refused")
        name = path.rsplit("/", 1)[1]
        if method == "POST":
            name = json["metadata"]["name"]
            if name in self.objects:
                raise KubeError(409, "AlreadyExists")
            return self._write(name, json)
        current = self.objects.get(name)
        if current is None:
            return None
        if method == "GET":
            return copy.deepcopy(current)
        if method == "PUT":
            if json["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise KubeError(409, "Conflict")
            return self._write(name, {**json, "metadata": {**current["metadata"], **json["metadata"]}})
        annotations = dict(current["metadata"].get("annotations") or {})
        for key, value in json["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return self._write(name, {**current, "metadata": {**current["metadata"], "annotations": annotations}})

    def _write(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = body
        return copy.deepcopy(body)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(identity: str) -> ElectionConfig:
    return ElectionConfig(namespace="ns", identity=identity, name="lock")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_one_of_two_candidates_wins_and_the_other_waits_a_full_duration() -> None:
    store, clock = Store(), Clock()
    a = LeaseLock(LeaseClient(store, "ns"), config("a"), "lock", clock=clock)
    b = LeaseLock(LeaseClient(store, "ns"), config("b"), "lock", clock=clock)
    assert run(a.try_acquire_or_renew()) and a.valid()
    assert not run(b.try_acquire_or_renew()) and not b.valid()
    clock.now += 14.0  # a has not renewed, but b saw the record only 14 s ago
    assert not run(b.try_acquire_or_renew())
    clock.now += 1.5
    assert run(b.try_acquire_or_renew()) and b.valid()
    spec = store.objects["lock"]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1 and spec["leaseDurationSeconds"] == 15


def test_the_holder_stops_counting_itself_holder_at_the_renew_deadline_before_anyone_can_take_it() -> None:
    store, clock = Store(), Clock()
    a = LeaseLock(LeaseClient(store, "ns"), config("a"), "lock", clock=clock)
    b = LeaseLock(LeaseClient(store, "ns"), config("b"), "lock", clock=clock)
    assert run(a.try_acquire_or_renew())
    assert not run(b.try_acquire_or_renew())  # b observes the record now
    store.down = True  # a loses the API server
    clock.now += 9.9
    assert not run(a.try_acquire_or_renew()) and a.valid()
    clock.now += 0.2
    assert not a.valid()  # 10.1 s after its last renewal: a no longer writes
    store.down = False
    clock.now += 4.0
    assert not run(b.try_acquire_or_renew())  # 14.1 s after b saw it: still a's
    clock.now += 1.0
    assert run(b.try_acquire_or_renew())
    assert not run(a.try_acquire_or_renew()) and not a.valid()


def test_release_lets_the_standby_take_over_at_once() -> None:
    store, clock = Store(), Clock()
    a = LeaseLock(LeaseClient(store, "ns"), config("a"), "lock", clock=clock)
    b = LeaseLock(LeaseClient(store, "ns"), config("b"), "lock", clock=clock)
    run(a.try_acquire_or_renew())
    assert not run(b.try_acquire_or_renew())
    assert run(a.release()) and not a.valid()
    spec = store.objects["lock"]["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert run(b.try_acquire_or_renew())  # no waiting: the holder is empty
    assert store.objects["lock"]["spec"]["leaseTransitions"] == 1


def test_a_renewal_keeps_acquire_time_and_transitions() -> None:
    store, clock = Store(), Clock()
    a = LeaseLock(LeaseClient(store, "ns"), config("a"), "lock", clock=clock)
    run(a.try_acquire_or_renew())
    first = dict(store.objects["lock"]["spec"])
    clock.now += 2
    run(a.try_acquire_or_renew())
    again = store.objects["lock"]["spec"]
    assert again["acquireTime"] == first["acquireTime"] and again["leaseTransitions"] == 0


def test_shard_of_is_stable_and_spreads() -> None:
    assert shard_of("team-a", "nightly", 4) == shard_of("team-a", "nightly", 4)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of("ns", f"s{i}", 4)] += 1
    assert min(counts) > 900
    assert selector([2, 0]) == "azurebatch.dev/shard in (0,2)"


def test_shards_are_balanced_over_members_and_return_to_the_survivor() -> None:
    store, clock = Store(), Clock()
    a = Coordinator(LeaseClient(store, "ns"), config("a"), 4, clock=clock)
    run(a.round())
    assert a.held() == a.desired() == frozenset({0, 1, 2, 3})
    b = Coordinator(LeaseClient(store, "ns"), config("b"), 4, clock=clock)
    run(b.round())
    run(a.round())
    assert a.desired() == frozenset({0, 1}) and b.desired() == frozenset({2, 3})  # a keeps its first share
    assert b.held() == frozenset()  # a still holds them: b waits for a to hand them over
    run(a.release(a.held() - a.desired()))
    run(b.round())
    assert b.held() == frozenset({2, 3}) and a.held() == frozenset({0, 1})
    run(a.round())
    assert a.desired() == frozenset({0, 1}) and b.desired() == frozenset({2, 3}), "stable once handed over"
    for _ in range(9):  # b dies; a keeps renewing every 2 s
        clock.now += 2
        run(a.round())
    assert a.desired() == frozenset({0, 1, 2, 3}) and a.held() == frozenset({0, 1, 2, 3})


def test_fence_reports_a_lost_lease_and_gateway_refuses_the_write() -> None:
    store, clock = Store(), Clock()
    a = Coordinator(LeaseClient(store, "ns"), config("a"), 1, clock=clock)
    run(a.round())
    fence = a.fence(a.held())
    assert fence() is None
    clock.now += 11
    assert "lock" in str(fence())

    class Request:
        def __init__(self, method: str) -> None:
            self.http_request = type("R", (), {"method": method})()

    token = WRITE_FENCE.set(fence)
    try:
        FencePolicy().on_request(Request("GET"))  # reads are never fenced
        with pytest.raises(Fenced) as refused:
            FencePolicy().on_request(Request("PATCH"))
        assert not refused.value.terminal
    finally:
        WRITE_FENCE.reset(token)
    FencePolicy().on_request(Request("PATCH"))  # no fence set: standalone mode


def test_config_rules_and_default_namespace(tmp_path: Any) -> None:
    with pytest.raises(ValueError):
        ElectionConfig("ns", "a", lease_duration=10, renew_deadline=10).check()
    with pytest.raises(ValueError):
        ElectionConfig("ns", "a", renew_deadline=2, retry_period=2).check()
    ElectionConfig("ns", "a").check()
    assert default_namespace(tmp_path / "missing") == "default"
    (tmp_path / "namespace").write_text("batchop-system\n")
    assert default_namespace(tmp_path / "namespace") == "batchop-system"


def _moves(before: dict[int, str], after: dict[int, str]) -> int:
    return sum(before.get(k) != member for k, member in after.items())


def test_assignment_is_balanced_and_moves_only_what_must_move() -> None:
    shards = 6
    three = assign(shards, ["a", "b", "c"], {})
    assert sorted(Counter(three.values()).values()) == [2, 2, 2]
    assert assign(shards, ["c", "a", "b"], three) == three, "the same Leases give the same answer in any order"
    # c restarts under a new identity d: d takes c's two shards, a and b keep theirs
    after_c = assign(shards, ["a", "b"], three)  # c gone: its shards go to the survivors
    assert _moves(three, after_c) == 2 and sorted(Counter(after_c.values()).values()) == [3, 3]
    with_d = assign(shards, ["a", "b", "d"], after_c)
    assert _moves(after_c, with_d) == 2 and sorted(Counter(with_d.values()).values()) == [2, 2, 2]
    for member in ("a", "b"):  # each gave up one of the three it held, and kept the other two
        kept = {k for k, m in with_d.items() if m == member}
        assert len(kept) == 2 and kept <= {k for k, m in after_c.items() if m == member}
    # a fourth member joins: 6 shards over 4 members is 2, 2, 1, 1; it gets one, taken from a holder of 2
    four = assign(shards, ["a", "b", "d", "e"], with_d)
    assert sorted(Counter(four.values()).values()) == [1, 1, 2, 2] and _moves(with_d, four) == 1
    assert list(four.values()).count("e") == 1
    # a holder still named on a shard it should give up, and a shard held by nobody
    assert assign(2, ["a", "b"], {0: "a", 1: "a"}) == {0: "a", 1: "b"}
    # b holds one and gets the extra share; a shard held by nobody and one held by a member gone are spread
    assert assign(3, ["a", "b"], {0: None, 1: "gone", 2: "b"}) == {0: "a", 1: "b", 2: "b"}


def test_round_robin_would_have_moved_more() -> None:
    """What the sticky assignment saves over ``sorted(members)[k mod members]`` when a member is replaced."""
    shards = 6

    def round_robin(members: list[str]) -> dict[int, str]:
        ordered = sorted(members)
        return {k: ordered[k % len(ordered)] for k in range(shards)}

    before = round_robin(["b", "c", "d"])
    replaced = round_robin(["c", "d", "e"])  # b replaced by e, which sorts last: every shard moves
    assert _moves(before, replaced) == 6
    sticky = assign(shards, ["c", "d", "e"], {k: m for k, m in before.items() if m != "b"})
    assert _moves(before, sticky) == 2
