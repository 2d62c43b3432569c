"""The status cycle at rest, in one process: CPU per cycle of :class:`batchop.controller.poller.Poller` at N.

    .venv/bin/python bench/status_cycle.py --n 1000 10000 --cycles 20
    .venv/bin/python bench/status_cycle.py --n 10000 --tree /tmp/before      # another checkout's code

What ``bench/economy.py --rest 330`` measures end to end (a real operator, API server and Batch service) takes
half an hour for both sizes. This takes a minute and measures only the operator's own code of a cycle at rest:
N managed resources, each with a completed job on a deleted auto pool, in sync with Batch, their status written.
Batch is a stand-in that answers from memory, but its schedule listing is JSON bytes decoded on every cycle (as
the real gateway does, so every listed object is new each cycle, as in production); no HTTP, no TLS, no
Kubernetes. The poller, history, status writer and garbage collector settings are the operator's own
(:func:`batchop.observability.memory.tune_gc`, and :func:`~batchop.observability.memory.settle` at rest).

Prints, per N, the median CPU seconds per cycle over ``--cycles`` cycles (after warm-up cycles that write the
statuses and settle the heap) and the ratio of the largest N to the smallest; ``--json`` writes the numbers.
Use it to A/B a change of the cycle's code quickly; the figures of record stay those of ``bench/economy.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PAGE = 1000


def _schedule(i: int) -> dict[str, Any]:
    sid = f"bjs-ns-s{i:05d}-0a1b2c3d"
    base = "https://acct.westeurope.batch.azure.com"
    return {
        "id": sid, "url": f"{base}/jobschedules/{sid}", "eTag": "0x8DD1F0A2B3C4D5E", "state": "active",
        "lastModified": "2026-12-07T05:01:02.1234567Z",
        "executionInfo": {"nextRunTime": "2026-12-08T00:00:00Z",
                          "recentJob": {"id": f"{sid}:job-1", "url": f"{base}/jobs/{sid}:job-1"}},
        "metadata": [{"name": "azurebatch.dev/owner", "value": f"ns/s{i:05d}"},
                     {"name": "azurebatch.dev/uid", "value": f"00000000-0000-0000-0000-{i:012d}"}],
    }


def _job(sid: str) -> dict[str, Any]:
    return {"id": f"{sid}:job-1", "state": "completed", "creationTime": "2026-12-07T05:00:00Z",
            "stateTransitionTime": "2026-12-07T05:00:30Z",
            "executionInfo": {"startTime": "2026-12-07T05:00:01Z", "endTime": "2026-12-07T05:00:30Z",
                              "poolId": f"{sid}-pool", "terminateReason": "AllTasksComplete"}}


class Batch:
    """The Batch calls of a cycle at rest, from memory (listings decoded from JSON bytes each time)."""

    def __init__(self, n: int) -> None:
        from batchop.batch.gateway import GatewayStats

        self.stats = GatewayStats()
        schedules = [_schedule(i) for i in range(n)]
        self.pages = [json.dumps({"value": schedules[i : i + PAGE]}).encode() for i in range(0, n, PAGE)]
        self.jobs = {s["id"].lower() + ":job-1": _job(s["id"]) for s in schedules}
        self.full_jobs = json.dumps({"value": list(self.jobs.values())}).encode()

    def _count(self, op: str) -> None:
        self.stats.requests[op] += 1
        self.stats.responses[200] += 1

    async def list_schedules(self, **_: Any) -> list[dict[str, Any]]:
        from batchop.observability import memory

        items: list[dict[str, Any]] = []
        for page in self.pages:
            self._count("list_schedules")
            with memory.collector_paused():
                items.extend(json.loads(page)["value"])
            await asyncio.sleep(0)
        return items

    async def list_jobs(self, *, filter: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self._count("list_jobs")
        return json.loads(self.full_jobs)["value"] if filter is None else []  # at rest: nothing since

    async def list_pools(self, **_: Any) -> list[dict[str, Any]]:
        self._count("list_pools")
        return []  # the auto pools went with their jobs

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        self._count("get_job")
        return dict(self.jobs[job_id.lower()])

    async def task_counts(self, job_id: str) -> dict[str, Any]:
        self._count("task_counts")
        return {"active": 0, "running": 0, "completed": 1, "succeeded": 1, "failed": 0}

    async def get_schedule(self, schedule_id: str) -> None:
        raise AssertionError("a schedule in sync is never read whole")

    async def list_tasks(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []


class Kube:
    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": {}}


async def measure(n: int, cycles: int, warmup: int) -> dict[str, Any]:
    from batchop.controller.poller import Poller
    from batchop.controller.tracking import Tracked
    from batchop.kube.status_writer import StatusWriter
    from batchop.observability import memory

    batch = Batch(n)
    desired = {"schedule": {"recurrenceInterval": "P1D"},
               "jobSpecification": {"poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job"}}}}
    members = [Tracked("ns", f"s{i:05d}", f"00000000-0000-0000-0000-{i:012d}", 1, "e", _schedule(i)["id"],
                       desired=desired, in_sync_etag="0x8DD1F0A2B3C4D5E") for i in range(n)]

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    poller = Poller("e", gateway=lambda: batch, members=lambda: members, writer=StatusWriter(Kube()),  # type: ignore[arg-type]
                    post_event=nothing, on_drift=nothing, refresh_credentials=nothing,
                    changed_properties=lambda d, o: [])
    for _ in range(warmup):
        report = await poller.cycle()
    memory.settle(n)  # as the poller does after two quiet cycles
    times = []
    collector = list(memory.GC_CLOCK.seconds)
    for _ in range(cycles):
        start = time.process_time()
        report = await poller.cycle()
        times.append(time.process_time() - start)
    collector = [(after - before) / cycles for after, before in zip(memory.GC_CLOCK.seconds, collector, strict=True)]
    assert report.unchanged == n, f"not at rest: {report}"
    assert report.requests == -(-n // PAGE) + 2, f"requests: {report.requests}"  # schedules, jobs, pools
    return {"n": n, "cpu_per_cycle": round(statistics.median(times), 4), "min": round(min(times), 4),
            "max": round(max(times), 4), "gc_per_cycle": [round(c, 4) for c in collector]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout whose operator/ is measured")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.tree.resolve() / "operator"))
    from batchop.observability import memory

    memory.tune_gc()
    results = []
    for n in args.n:
        gc.collect()
        found = asyncio.run(measure(n, args.cycles, args.warmup))
        results.append(found)
        print(f"N={n:,}: {found['cpu_per_cycle'] * 1000:.1f} ms CPU per cycle "
              f"({found['min'] * 1000:.1f}-{found['max'] * 1000:.1f}), of which the collector "
              f"{sum(found['gc_per_cycle']) * 1000:.1f} ms (by generation: "
              f"{', '.join(f'{c * 1000:.1f}' for c in found['gc_per_cycle'])})", flush=True)
    if len(results) > 1:
        ratio = results[-1]["cpu_per_cycle"] / results[0]["cpu_per_cycle"]
        print(f"ratio {results[-1]['n']:,} / {results[0]['n']:,}: {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"tree": str(args.tree), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
