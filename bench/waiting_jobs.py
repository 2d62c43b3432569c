"""Batch requests per poll cycle while every job waits on a pool Batch cannot fill (a dedicated core quota of 0).

    .venv/bin/python bench/waiting_jobs.py --n 5 20 --cycles 5

Per N, on a fresh local Batch service (``--no-execute``) with ``POST /_emulator/quotas {"dedicatedCores": 0}``:
N job schedules with batchop's owner marks are created through the azure-batch SDK, each with one active job
whose auto pool carries ``AccountCoreQuotaReached``. Then the operator's own poller (``batchop.controller.poller``,
the tree this script sits in, with a real ``Gateway`` and an in-memory status writer: no Kubernetes) runs one
warm-up cycle and ``--cycles`` measured ones; the table gives the Batch requests per measured cycle by operation
(the gateway's own counts) and the ``Ready`` reasons it arrived at. ``--operator-tree DIR`` measures the poller
of another tree (``git archive`` of a commit into DIR) against this tree's local service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

if "--operator-tree" in sys.argv:  # before batchop is imported: the poller of that tree, this tree's service
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--operator-tree") + 1]) / "operator"))

from batchop.api import conditions as cond
from batchop.batch.gateway import Gateway, Limits
from batchop.controller.poller import Poller
from batchop.controller.tracking import Tracked
from batchop.kube.status_writer import StatusWriter


class MemoryKube:
    """Status patches kept in memory (the poller's writer needs an API; the numbers here are Batch's)."""

    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": {}}

    async def patch_status(self, namespace: str, name: str, patch: Any) -> dict[str, Any]:
        return {}


def schedule_body(i: int) -> dict[str, Any]:
    return {
        "id": f"bench_wait{i}",
        "schedule": {"recurrenceInterval": "PT1H"},
        "metadata": [{"name": "azurebatch.dev/owner", "value": f"bench/wait{i}"},
                     {"name": "azurebatch.dev/uid", "value": f"u{i}"}],
        "jobSpecification": {
            "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "wait", "poolLifetimeOption": "job", "pool": {
                "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                    "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}}},
            "jobManagerTask": {"id": "main", "commandLine": "/bin/true"},
        },
    }


async def one_run(batch: harness.LocalBatchProc, n: int, cycles: int) -> dict[str, Any]:
    from azure.batch.aio import BatchClient
    from azure.batch.models import BatchJobScheduleCreateOptions
    from azure.core.credentials import AzureNamedKeyCredential

    credential = AzureNamedKeyCredential(batch.account, batch.key)
    async with BatchClient(batch.endpoint, credential) as client:
        for i in range(n):
            await client.create_job_schedule(BatchJobScheduleCreateOptions(schedule_body(i)))
    gateway = Gateway(batch.endpoint, credential, limits=Limits(requests_per_second=1000.0))
    members = [Tracked("bench", f"wait{i}", f"u{i}", 1, batch.endpoint, f"bench_wait{i}") for i in range(n)]
    writer = StatusWriter(MemoryKube())
    for member in members:  # what the reconcile wrote after the create
        synced = cond.make(cond.SYNCED, cond.TRUE, cond.REASON_SYNCED, "created", generation=1)
        await writer.update("bench", member.name, {"observedGeneration": 1}, [synced])

    async def nothing(*_: Any, **__: Any) -> None:
        return None

    poller = Poller(batch.endpoint, gateway=lambda: gateway, members=lambda: members, writer=writer,
                    post_event=nothing, on_drift=nothing, refresh_credentials=nothing,
                    changed_properties=lambda d, o: [])
    try:
        deadline = time.monotonic() + 60
        while len({p["id"] for p in await gateway.list_pools(select=["id"])}) < n:  # every job has its pool
            if time.monotonic() > deadline:
                raise TimeoutError("the jobs' pools did not appear")
            await asyncio.sleep(0.5)
        await poller.cycle()  # warm-up: the first cycle also reads each new job's task counts
        before = Counter(gateway.stats.requests)
        for _ in range(cycles):
            await poller.cycle()
        ops = Counter(gateway.stats.requests)
        ops.subtract(before)
        reasons = Counter(str((cond.find((writer.known("bench", m.name) or {}).get("conditions"), cond.READY)
                               or {}).get("reason")) for m in members)
    finally:
        await gateway.close()
    return {"n": n, "per_cycle": sum(ops.values()) / cycles,
            "by_operation": {op: count / cycles for op, count in sorted(ops.items()) if count},
            "ready": dict(reasons)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--operator-tree", default=None, help="measure the poller of this tree instead")
    args = parser.parse_args(argv)
    print("| N waiting | Batch requests per cycle | by operation | Ready |")
    print("|---|---|---|---|")
    for n in args.n:
        batch = harness.LocalBatchProc(Path(tempfile.mkdtemp(prefix="batchop-bench-wait-")))
        try:
            batch.admin("POST", "quotas", {"dedicatedCores": 0})
            result = asyncio.run(one_run(batch, n, args.cycles))
        finally:
            batch.stop()
        ops = ", ".join(f"{op} {count:g}" for op, count in result["by_operation"].items())
        ready = ", ".join(f"{reason} {count}" for reason, count in sorted(result["ready"].items()))
        print(f"| {n} | {result['per_cycle']:g} | {ops} | {ready} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
