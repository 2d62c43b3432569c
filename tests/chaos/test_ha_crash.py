"""Replicas with leader election killed at random while schedules are created, edited and deleted.

Three ``batchop run --leader-elect`` replicas (short Lease timings: 6 s / 4 s / 1 s) share one namespace. In
each phase (create N, edit a third, delete a quarter) replicas are killed at random moments, the Lease holder
most of all (SIGKILL mostly, SIGTERM sometimes), and started again. A second run does the same with
``--shards 2``. At the end every remaining resource's schedule exists exactly once with the declared command
line, Ready; no schedule is left without a resource; no deleted resource is stuck.

**No write without the Lease.** Every replica reaches Batch through one recording proxy, and names itself in
its User-Agent (``AZURE_HTTP_USER_AGENT``, which azure-core appends). A thread reads the Lease(s) every
0.1 s. A Batch write (anything but GET) that a replica sent while two reads around it show its resource's
Lease held by another identity (or by none), with nothing changed in between, is a violation; none may happen.
A read is as of some instant during the kubectl call, so a write close to a change of holder is judged by
neither side (a write that lands after its replica lost the Lease for longer than a read is caught).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from batchop.spec.shardkey import shard_of
from tests.chaos.conftest import Kube, batch_env, chaos_n, converge, parallel, report, spec
from tests.fixtures.operator import OperatorProcess, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]
TIMING = ["--leader-election-lease-duration", "6", "--leader-election-renew-deadline", "4",
          "--leader-election-retry-period", "1"]


@dataclass
class Proxy:
    """An HTTP proxy to the local Batch service recording (time, User-Agent, method, path) of each request."""

    target: str
    port: int = 0
    log: list[tuple[float, str, str, str]] = field(default_factory=list)

    def start(self) -> Proxy:
        ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve(ready)), daemon=True).start()
        ready.wait(10)
        return self

    async def _serve(self, ready: threading.Event) -> None:
        import aiohttp
        import yarl
        from aiohttp import web

        session = aiohttp.ClientSession(auto_decompress=False)

        async def forward(request: web.Request) -> web.Response:
            agent = request.headers.get("User-Agent", "")
            body = await request.read()
            if request.method not in ("GET", "HEAD"):
                about = request.path
                if request.method == "POST" and body:  # a create names its object in the body
                    with contextlib.suppress(ValueError, AttributeError):
                        about += f" id={json.loads(body).get('id')}"
                self.log.append((time.monotonic(), agent, request.method, about))
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            url = yarl.URL(self.target + request.raw_path, encoded=True)
            # exactly the headers received: aiohttp must not add a Content-Type the SharedKey signature did not cover
            skip = [] if "Content-Type" in request.headers else ["Content-Type"]
            async with session.request(request.method, url, headers=headers, data=body or None,
                                       skip_auto_headers=skip) as answer:
                body = await answer.read()
                out = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding")}
                return web.Response(status=answer.status, headers=out, body=body)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        await asyncio.Event().wait()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Snapshot:
    """One read of a Lease: it showed ``holder`` (and ``transitions``) at some instant between ``start`` and
    ``end`` (monotonic seconds: the kubectl call's start and return)."""

    start: float
    end: float
    holder: str
    transitions: int


class LeaseWatch:
    """Reads the Leases (kubectl) every 0.1 s in a thread and keeps every read (:class:`Snapshot`)."""

    def __init__(self, kube: Any, namespace: str, names: list[str]) -> None:
        self.kube, self.namespace, self.names = kube, namespace, names
        self.snapshots: dict[str, list[Snapshot]] = {n: [] for n in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            result = self.kube.kubectl("get", "leases", "-n", self.namespace, "-o", "json")
            ended = time.monotonic()
            if result.returncode == 0:
                for item in json.loads(result.stdout)["items"]:
                    history = self.snapshots.get(item["metadata"]["name"])
                    if history is not None:
                        spec = item["spec"]
                        history.append(Snapshot(started, ended, str(spec.get("holderIdentity") or ""),
                                                int(spec.get("leaseTransitions") or 0)))
            self._stop.wait(0.1)

    def changes(self) -> int:
        """Holder changes seen, over all Leases."""
        return sum(sum(1 for a, b in itertools.pairwise(h) if a.holder != b.holder)
                   for h in self.snapshots.values())

    def surely_held_by(self, lease: str, moment: float) -> str | None:
        """The holder at ``moment`` when the reads prove it: two reads on either side of the moment (the first
        returned before it, the next started after it) that show the same holder and the same transition count.
        A holder change always changes one of the two (a release keeps the count but empties the holder; every
        take-over adds one), so nothing changed in between. None when the reads do not prove it (a change
        close to the moment: a poll's answer is as of some instant during the call, not when it returns)."""
        reads = self.snapshots[lease]
        for before, after in itertools.pairwise(reads):
            if before.end < moment < after.start:
                same = (before.holder, before.transitions) == (after.holder, after.transitions)
                return before.holder if same else None
        return None


def _slot_identities(op: OperatorProcess) -> set[str]:
    return set(re.findall(r"identity (\S+),", op.logs()))


def _violations(proxy: Proxy, watch: LeaseWatch, slots: list[OperatorProcess], lease_of: Any) -> list[str]:
    """Writes sent by a replica while its resource's Lease was, provably, held by another identity (or
    released): see :meth:`LeaseWatch.surely_held_by`."""
    identities = {f"replica-{i}": _slot_identities(op) for i, op in enumerate(slots)}
    found = []
    for moment, agent, method, path in proxy.log:
        slot = next((s for s in identities if s in agent), None)
        lease = lease_of(path)
        if slot is None or lease is None:
            continue
        holder = watch.surely_held_by(lease, moment)
        if holder is not None and holder not in identities[slot]:
            found.append(f"{slot} {method} {path} while {lease} was held by {holder or 'nobody'}")
    return found


def _schedule_lease(prefix: str, shards: int, ns: str) -> Any:
    """From a Batch request path to the Lease of the resource it is about (schedule ids end in the name)."""

    def lease_of(path: str) -> str | None:
        if shards == 1:
            return prefix
        match = re.search(r"_(h\d{4})\b", path)
        return f"{prefix}-shard-{shard_of(ns, match.group(1), shards)}" if match else None

    return lease_of


@pytest.fixture(scope="module")
def proxy(chaos_batch: Any) -> Iterator[Proxy]:
    yield Proxy(chaos_batch.endpoint).start()


@pytest.mark.parametrize("shards", [1, 2])
def test_replicas_killed_at_random_lose_duplicate_and_leak_nothing(
    chaos_kube: Kube, chaos_batch: Any, operator_factory: Any, proxy: Proxy, shards: int
) -> None:
    n = chaos_n()
    rng = random.Random(int(time.time()))
    ns = chaos_kube.namespace(f"chaos-ha{shards}")
    lease = f"ha-{shards}"
    args = ["--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", lease, *TIMING,
            "--shards", str(shards)]
    slots = [
        operator_factory([ns], resync=2.0, args=args,
                         env={**batch_env(chaos_batch), "BATCHOP_BATCH_ENDPOINT": proxy.endpoint,
                              "AZURE_HTTP_USER_AGENT": f"replica-{i}"})
        for i in range(3)
    ]
    leases = [lease] if shards == 1 else [f"{lease}-shard-{k}" for k in range(shards)]
    names = [f"h{i:04d}" for i in range(n)]
    declared: dict[str, str] = {}
    kills = {"SIGKILL": 0, "SIGTERM": 0, "leader": 0}

    def holders() -> set[str]:
        out = set()
        for item in leases:
            result = chaos_kube.handle.kubectl("get", "lease", item, "-n", ns, "-o", "jsonpath={.spec.holderIdentity}")
            out.add(result.stdout.strip())
        return out

    def victim() -> OperatorProcess:
        leaders = [op for op in slots if _slot_identities(op) & holders()]
        if leaders and rng.random() < 0.75:
            kills["leader"] += 1
            return rng.choice(leaders)
        return rng.choice(slots)

    def crash(op: OperatorProcess) -> None:
        if rng.random() < 0.75:
            op.kill()
            kills["SIGKILL"] += 1
        else:
            op.stop()
            kills["SIGTERM"] += 1

    def run_phase(work: Any, items: list[str]) -> None:
        worker = threading.Thread(target=parallel, args=(work, items, 6))
        worker.start()
        for _ in range(2):
            time.sleep(rng.uniform(0.2, 2.0))
            op = victim()
            crash(op)
            time.sleep(rng.uniform(0.0, 1.5))
            op.start()
        worker.join()

    def create(name: str) -> None:
        chaos_kube.create(ns, name, spec("v1"))
        declared[name] = "v1"

    def edit(name: str) -> None:
        chaos_kube.set_command(ns, name, "v2")
        declared[name] = "v2"

    def delete(name: str) -> None:
        chaos_kube.delete(ns, name)
        declared.pop(name, None)

    with LeaseWatch(chaos_kube.handle, ns, leases) as watch:
        wait_for(lambda: "" not in holders(), 60, message="the Leases to be held")
        run_phase(create, names)
        edited = rng.sample(names, max(1, n // 3))
        run_phase(edit, edited)
        deleted = rng.sample(names, max(1, n // 4))
        run_phase(delete, deleted)
        final = converge(chaos_kube, chaos_batch, ns, declared, timeout=180 + n * 1.5,
                         logs=lambda: "\n".join(op.logs() for op in slots))
    violations = _violations(proxy, watch, slots, _schedule_lease(lease, shards, ns))
    fenced = sum(op.logs().count("Batch write not sent") for op in slots)
    writes = sum(1 for _, agent, _, _ in proxy.log if "replica-" in agent)
    report(f"ha-crash-{shards}", operations=n + len(edited) + len(deleted), writes=writes, fenced=fenced,
           violations=len(violations), transitions=watch.changes(), **kills,
           **final.counts())
    assert not violations, violations[:20]
    for op in slots:
        op.stop()


def test_lease_reads_prove_a_holder_only_between_equal_reads() -> None:
    watch = LeaseWatch(None, "ns", ["l"])
    watch.snapshots["l"] = [Snapshot(0.0, 0.2, "a", 1), Snapshot(0.3, 0.5, "a", 1), Snapshot(0.6, 0.8, "", 1),
                            Snapshot(0.9, 1.1, "b", 2), Snapshot(1.2, 1.4, "b", 2)]
    assert watch.surely_held_by("l", 0.25) == "a"
    assert watch.surely_held_by("l", 0.55) is None  # a release in between: not proven either way
    assert watch.surely_held_by("l", 1.15) == "b"
    assert watch.surely_held_by("l", 0.1) is None and watch.surely_held_by("l", 2.0) is None
    assert watch.changes() == 2
