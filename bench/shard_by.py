"""Shards by resource or by Batch account: what each costs the accounts and the replicas.

    .venv/bin/python bench/shard_by.py --n 2000 --accounts 20 --replicas 2 --shards 6 [--modes resource account]
        [--interval 10] [--cycles 3] [--runs 1] [--markdown]

For each ``--shard-by`` mode (and run), on a fresh local stack (kube-apiserver + etcd) and A fresh local Batch
services (``--no-execute``, one process per account, as ``bench/many_accounts.py`` starts them):

1. **start**: R replicas of ``batchop run --leader-elect --shards S --shard-by MODE``; wait until the shard
   Leases are spread over all of them;
2. **burst**: N resources round-robin over the A accounts (each names its account's endpoint and Secret);
   **convergence** = from the first create until every resource is ``Ready=True`` and mirrored;
3. **steady state**, once every job-1 has completed and been mirrored and one more interval has passed: a
   window of ``--cycles`` resync intervals of wall-clock time. Per account: **schedule listings per
   interval** (``list_job_schedules`` without ``$skiptoken``: one per poller, so the number of replicas that
   poll the account) and **Batch requests per interval**; in total: the replicas' **CPU per interval** (all of
   them together); per replica: the **resources it holds** (by the shard labels and the Leases) and its RSS.

Raw results: ``bench/results/shard_by.json``; ``--markdown`` writes the table into docs/performance.md
(section ``shard-by``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import convergence
import economy
import ha_scale
import harness
import many_accounts
import perfdoc
from batchop.api.names import SHARD_BY


def window(services: list[harness.LocalBatchProc], ops: list[harness.OperatorProc], cycles: int,
           interval: float) -> dict[str, Any]:
    """Counts over ``cycles`` resync intervals of wall-clock time, starting at a listing of the first account."""
    first = economy._cycle_marks(services[0])
    harness.wait_until(lambda: economy._cycle_marks(services[0]) > first, 3 * interval + 600, 0.05, "a cycle")
    before = [s.counts() for s in services]
    cpu0 = [op.cpu_seconds() for op in ops]
    t0 = time.monotonic()
    time.sleep(cycles * interval)
    elapsed = time.monotonic() - t0
    intervals = elapsed / interval
    cpu = sum(op.cpu_seconds() - c for op, c in zip(ops, cpu0, strict=True))
    listings, requests = [], []
    for service, counts in zip(services, before, strict=True):
        now = service.counts()
        listings.append((economy.listing_starts(now) - economy.listing_starts(counts)) / intervals)
        requests.append(sum(harness.batch_diff(now, counts).values()) / intervals)
    return {"intervals": round(intervals, 2),
            "listings_per_interval_per_account": _spread(listings),
            "batch_per_interval_per_account": _spread(requests),
            "cpu_per_interval": round(cpu / intervals, 3),
            "rss_mib": [round(op.rss_mib(), 1) for op in ops]}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def one_mode(args: argparse.Namespace, mode: str, run: int) -> dict[str, Any]:
    work = harness.scratch(f"batchop-bench-shardby-{mode}-")
    stack = harness.KubeStack(work / "kube")
    services: list[harness.LocalBatchProc] = []
    ops: list[harness.OperatorProc] = []
    namespace = f"shardby-{mode}-{run}"
    out: dict[str, Any] = {"mode": mode, "n": args.n, "accounts": args.accounts, "replicas": args.replicas,
                           "shards": args.shards, "run": run}
    try:
        services = many_accounts.start_services(work, args.accounts)
        stack.create_namespace(namespace)
        many_accounts.secrets(stack, namespace, services)
        ops = ha_scale.start_replicas(stack, services[0], work, namespace, args.replicas, args,
                                      ["--shard-by", mode])
        identities = [ha_scale.identity(op) for op in ops]
        harness.wait_until(lambda: ha_scale.spread_ok(ha_scale.lease_holders(stack, namespace, args.shards),
                                                      identities, args.shards), 120, 0.5, "the shards spread")
        watcher = convergence.MirrorWatch(stack, namespace)
        cpu0 = [op.cpu_seconds() for op in ops]
        start = time.perf_counter()
        many_accounts.create(stack, namespace, services, args.n, args.kube_concurrency)
        watcher.wait(args.n, args.timeout)
        out["converged_seconds"] = round(watcher.done_at - start, 2)
        out["burst_cpu_seconds"] = round(sum(op.cpu_seconds() - c for op, c in zip(ops, cpu0, strict=True)), 2)
        print(f"{mode}: converged {out['converged_seconds']}s, CPU {out['burst_cpu_seconds']}s", flush=True)
        harness.wait_until(lambda: many_accounts.idle(services, stack, namespace, args.n), args.timeout, 2.0, "idle")
        time.sleep(args.interval + 1)
        out["steady"] = window(services, ops, args.cycles, args.interval)
        holders = ha_scale.lease_holders(stack, namespace, args.shards)
        per_shard = ha_scale.resources_per_shard(stack.list(namespace))
        held = ha_scale.shards_by_replica(holders, identities)
        out["resources_per_replica"] = [ha_scale.resources_held(per_shard, held[i]) for i in identities]
        print(f"{mode}: steady {out['steady']}, resources per replica {out['resources_per_replica']}", flush=True)
    finally:
        ha_scale.stop_replicas(ops)
        for service in services:
            service.stop()
        stack.stop()
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| --shard-by | N | accounts | replicas (shards) | converged (s) | schedule listings per interval per "
             "account (min-max) | Batch requests per interval per account (min-max) | CPU per interval, all "
             "replicas (s) | resources per replica | RSS per replica (MiB) |",
             "|---" * 10 + "|"]
    for r in results:
        s = r["steady"]
        li, rq = s["listings_per_interval_per_account"], s["batch_per_interval_per_account"]
        lines.append(
            f"| {r['mode']} | {r['n']:,} | {r['accounts']} | {r['replicas']} ({r['shards']}) "
            f"| {r['converged_seconds']:.1f} | {li['median']:.2f} ({li['min']:.2f}-{li['max']:.2f}) "
            f"| {rq['median']:.2f} ({rq['min']:.2f}-{rq['max']:.2f}) | {s['cpu_per_interval']:.3f} "
            f"| {' / '.join(str(x) for x in r['resources_per_replica'])} "
            f"| {' / '.join(f'{x:.0f}' for x in s['rss_mib'])} |")
    return "\n".join(lines)


NOTES = """\
R replicas with S shard Leases, A local Batch services (one process per account), N resources round-robin
over the accounts, each naming its account's endpoint and credentials Secret; a fresh stack per mode.
*Schedule listings per interval per account*: how many replicas poll each account (each poller starts one
listing per resync interval). *Batch requests per interval per account*: every request the account's service
answered in the window, per interval. *CPU per interval*: all replicas together. *Resources per replica*:
by the shard labels and the shard Leases' holders at the end of the window: sharding by account moves whole
accounts, so the balance is as even as the accounts' hashes fall."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--modes", nargs="+", default=list(SHARD_BY), choices=SHARD_BY)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--interval", type=float, default=10.0, help="operator --resync-interval")
    parser.add_argument("--cycles", type=int, default=3, help="resync intervals in the steady window")
    many_accounts.add_load_arguments(parser)
    args = parser.parse_args(argv)
    info = harness.machine()
    results = []
    for run in range(1, args.runs + 1):
        for mode in args.modes:
            results.append(harness.stamp(one_mode(args, mode, run)))
            harness.save_json("shard_by", {"machine": info, "args": vars(args), "results": results})
    text = table(results)
    print(text)
    if args.markdown:
        command = "python bench/shard_by.py " + " ".join(sys.argv[1:] if argv is None else argv)
        perfdoc.replace_section("shard-by", perfdoc.section(
            "Shards by resource or by account", command, info, text, NOTES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
