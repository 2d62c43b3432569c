"""High availability at scale: 1, 2, 3 ... sharded replicas with N resources; convergence, CPU and RSS per replica.

    .venv/bin/python bench/ha_scale.py --n 10000 --replicas 1 2 3 --shards 6 [--runs 1] [--cycles 2]
        [--interval 30] [--timeout 1800] [--out bench/results/ha_scale.json] [--markdown]

One local stack (kube-apiserver + etcd, the local Batch service ``--no-execute``) for the whole run. For each
replica count R (and each run), in a fresh namespace that also holds the Leases, with the Batch service reset:

1. **start**: R replicas of ``batchop run --leader-elect --shards S`` (the same S for every R, so that with R = 1
   one replica holds all S shards), with the operator flags of ``bench/convergence.py`` (``--max-concurrency 8``,
   ``--requests-per-second 1000``, ``--resync-interval`` = ``--interval``); wait until every shard Lease
   ``<id>-shard-<k>`` is held by one of them and the shards are spread (each replica holds S // R or
   S // R + 1, read from the Leases' ``holderIdentity``); then each replica's RSS **at rest** (``VmRSS``);
2. **burst**: N resources created through the Kubernetes API (thread pool); **convergence** = from the first
   create until every resource is ``Ready=True`` with ``status.scheduleId`` and ``status.state == active``
   (counted from a watch stream, as ``bench/convergence.py`` does; the shard labels are written by the
   replicas in that time); per replica the CPU seconds used over the burst (``utime + stime`` before and
   after) and its **peak RSS** (``VmHWM``); the resources each replica holds (those whose shard label is one
   of the shards its Leases hold);
3. **steady state**, once every job-1 has completed and been mirrored (as ``bench/economy.py`` waits) and one
   more interval has passed: counted over whole status cycles. Every replica polls the account for its own
   shards, so every replica's cycle starts with its own schedule listing (``list_job_schedules`` requests
   without ``$skiptoken`` in the service's admin counts, ``economy._cycle_marks``). The window runs from the
   start of one listing (any replica's) until R x ``--cycles`` further listings have started: on average
   ``--cycles`` cycles of each replica (the replicas' pollers are not in phase; when two listings start within
   one poll of the counts, the cycles are the listings counted / R). Per replica: **CPU seconds per cycle**
   (its CPU over the window / those cycles) and **RSS at steady state** at the end of the window; in total:
   **Batch requests per cycle** (every request in the window / those cycles, so the cycles of all R replicas
   are in it) and Kubernetes writes per cycle. At small N a whole cycle takes a few milliseconds, so the
   window's two ends (read by polling the counts) may cut a cycle's requests on either side: the requests per
   cycle are only exact when a listing takes longer than a poll (large N);
4. every resource deleted (``harness.delete_all``) and waited for until gone (the replicas remove their
   finalizers and the Batch schedules), then the replicas stopped (SIGTERM, all at once). With
   ``--fresh-stack`` the replicas are stopped at once and the whole stack is discarded instead: each replica
   count then starts on a new API server, etcd and Batch service.

Raw results (per R: per-replica lists and their max and sum, machine and load average) go to ``--out``
(default ``bench/results/ha_scale.json``), saved after each R; ``--markdown`` prints the table
(stdout). Progress (elapsed time, mirrored count) goes to stderr while it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import convergence
import economy
import harness
from batchop.api.names import LABEL_SHARD, LEASE_SHARD_INFIX

LEASE_ID = "bench-ha"
PER_REPLICA_METRICS = ("shards_held", "resources", "cpu_burst_s", "rss_rest_mib", "rss_peak_mib", "rss_steady_mib",
                       "cpu_per_cycle_s")
DEFAULT_OUT = harness.RESULTS / "ha_scale.json"


# -- pure parts ---------------------------------------------------------------------------------------------------


def expected_shares(shards: int, replicas: int) -> list[int]:
    """How many shards each of ``replicas`` holds once balanced, largest first: shard ``k`` goes to the
    ``k mod R``-th live member (:mod:`batchop.controller.sharding`), so S // R or S // R + 1 each."""
    if replicas <= 0:
        return []
    return sorted((shards // replicas + (1 if i < shards % replicas else 0) for i in range(replicas)), reverse=True)


def holders_from_leases(leases: Iterable[tuple[str, str | None]], lease_id: str, shards: int) -> dict[int, str]:
    """``{shard: holderIdentity}`` from ``(Lease name, holderIdentity)`` pairs; Leases of other ids, shards out
    of ``0..S-1`` and released Leases (empty holder) are left out."""
    prefix = f"{lease_id}{LEASE_SHARD_INFIX}"
    holders: dict[int, str] = {}
    for name, holder in leases:
        if not name.startswith(prefix) or not holder:
            continue
        suffix = name[len(prefix):]
        if suffix.isdigit() and int(suffix) < shards:
            holders[int(suffix)] = holder
    return holders


def shards_by_replica(holders: Mapping[int, str], identities: Sequence[str]) -> dict[str, list[int]]:
    """The shards each identity holds (every identity present, an empty list when it holds none)."""
    out: dict[str, list[int]] = {identity: [] for identity in identities}
    for shard, holder in sorted(holders.items()):
        if holder in out:
            out[holder].append(shard)
    return out


def spread_ok(holders: Mapping[int, str], identities: Sequence[str], shards: int) -> bool:
    """Every shard ``0..S-1`` held by one of ``identities`` and the shards balanced over them (each holds its
    share: S // R or S // R + 1)."""
    if any(holders.get(k) not in identities for k in range(shards)):
        return False
    counts = sorted((len(held) for held in shards_by_replica(holders, identities).values()), reverse=True)
    return counts == expected_shares(shards, len(identities))


def resources_per_shard(objects: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many resources carry each shard label value (``""``: not labelled yet)."""
    return Counter(str(((o.get("metadata") or {}).get("labels") or {}).get(LABEL_SHARD, "")) for o in objects)


def resources_held(per_shard: Mapping[str, int], shards: Iterable[int]) -> int:
    """Resources whose shard label is one of ``shards``."""
    return sum(per_shard.get(str(k), 0) for k in shards)


def aggregate(replicas: Sequence[Mapping[str, Any]], metrics: Sequence[str] = PER_REPLICA_METRICS
              ) -> dict[str, dict[str, float]]:
    """``{"max": {metric: value}, "sum": {metric: value}}`` over the replicas; values that are missing, None or
    NaN are skipped, a metric no replica has is NaN."""
    out: dict[str, dict[str, float]] = {"max": {}, "sum": {}}
    for metric in metrics:
        values = [float(r[metric]) for r in replicas
                  if r.get(metric) is not None and not math.isnan(float(r[metric]))]
        out["max"][metric] = max(values) if values else float("nan")
        out["sum"][metric] = sum(values) if values else float("nan")
    return out


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def table(results: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table, one row per replica count and run (runs numbered when there are several)."""
    lines = ["| N | R | shards | convergence (s) | CPU burst per replica (s, max) | RSS steady per replica (MiB, max) "
             "| RSS peak per replica (MiB, max) | CPU per cycle per replica (s, max) | Batch requests per cycle |",
             "|---" * 9 + "|"]
    runs = {r.get("run", 1) for r in results}
    for r in sorted(results, key=lambda r: (r["n"], r["replicas"], r.get("run", 1))):
        top = (r.get("max") or {})
        label = f"{r['replicas']}" + (f" (run {r.get('run', 1)})" if len(runs) > 1 else "")
        steady = r.get("steady") or {}
        lines.append(
            f"| {r['n']:,} | {label} | {r['shards']} | {_fmt(r.get('convergence_s'), '{:.1f}')} "
            f"| {_fmt(top.get('cpu_burst_s'), '{:.1f}')} | {_fmt(top.get('rss_steady_mib'), '{:.0f}')} "
            f"| {_fmt(top.get('rss_peak_mib'), '{:.0f}')} | {_fmt(top.get('cpu_per_cycle_s'), '{:.2f}')} "
            f"| {_fmt(steady.get('batch_per_cycle'), '{:.1f}')} |")
    return "\n".join(lines)


# -- progress -----------------------------------------------------------------------------------------------------


class Ticker:
    """Prints ``message()`` to stderr every ``every`` seconds while in the ``with`` block, prefixed with the
    time since ``since`` (``time.monotonic``)."""

    def __init__(self, prefix: str, since: float, message: Callable[[], str], every: float) -> None:
        self.prefix, self.since, self.message, self.every = prefix, since, message, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                text = self.message()
            except Exception as exc:  # a transient API error must not end the progress line
                text = f"({exc.__class__.__name__})"
            log(f"{self.prefix} {time.monotonic() - self.since:7.1f}s {text}")

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the stack side -----------------------------------------------------------------------------------------------


def lease_holders(stack: harness.KubeStack, namespace: str, shards: int) -> dict[int, str]:
    """``{shard: holderIdentity}`` of the shard Leases in ``namespace`` (one LIST)."""
    from kubernetes import client

    leases = client.CoordinationV1Api(stack.core().api_client).list_namespaced_lease(namespace).items
    pairs = [(lease.metadata.name, lease.spec.holder_identity if lease.spec else None) for lease in leases]
    return holders_from_leases(pairs, LEASE_ID, shards)


def identity(op: harness.OperatorProc) -> str:
    """The replica's Lease identity, from its ``Leader election on: identity ...`` log line."""
    found = harness.wait_until(lambda: re.search(r"identity (\S+),", op.logs()), 60, what="identity")
    return str(found.group(1))


def start_replicas(stack: harness.KubeStack, batch: harness.LocalBatchProc, work: Path, namespace: str,
                   count: int, args: argparse.Namespace, more: Sequence[str] = ()) -> list[harness.OperatorProc]:
    """``count`` replicas of ``batchop run --leader-elect --shards S`` (``more``: further flags)."""
    extra = ["--max-concurrency", str(args.batch_concurrency), "--requests-per-second", str(args.requests_per_second),
             "--leader-elect", "--leader-election-namespace", namespace, "--leader-election-id", LEASE_ID,
             "--shards", str(args.shards), *more]
    ops: list[harness.OperatorProc] = []
    try:
        for _ in range(count):
            ops.append(harness.OperatorProc.batchop(stack, batch, work, [namespace], resync=args.interval,
                                                    extra=extra).start())
    except BaseException:
        stop_replicas(ops)
        raise
    return ops


def stop_replicas(ops: Sequence[harness.OperatorProc]) -> None:
    """SIGTERM to every replica at once (one at a time, each stop would hand its shards to the others first)."""
    if ops:
        harness.parallel(lambda op: op.stop(), list(ops), len(ops))


def check_alive(ops: Sequence[harness.OperatorProc]) -> None:
    for op in ops:
        if not op.alive:
            raise RuntimeError(f"a replica exited; see {op.log_path}:\n{op.logs()[-2000:]}")


def wait_converged(watcher: convergence.MirrorWatch, n: int, timeout: float, ops: Sequence[harness.OperatorProc]
                   ) -> None:
    """``watcher.wait`` in short slices, so that a replica that exits fails the run at once."""
    deadline = time.monotonic() + timeout
    while True:
        check_alive(ops)
        try:
            watcher.wait(n, min(5.0, max(0.1, deadline - time.monotonic())))
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise


def wait_for(ops: Sequence[harness.OperatorProc], predicate: Callable[[], Any], timeout: float, interval: float,
             what: str) -> Any:
    """``harness.wait_until`` in slices of 10 s with the replicas checked in between (``wait_until`` takes an
    exception of the predicate for "not yet", so a dead replica would otherwise show only at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        check_alive(ops)
        try:
            return harness.wait_until(predicate, min(10.0, max(0.1, deadline - time.monotonic())), interval, what)
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}") from None


def remaining(stack: harness.KubeStack, namespace: str) -> int:
    """Resources left in ``namespace`` (a LIST of one item: cheap at any N)."""
    found = stack.api().list_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL,
                                                      limit=1)
    items = found.get("items") or []
    return len(items) + int((found.get("metadata") or {}).get("remainingItemCount") or 0)


def steady(batch: harness.LocalBatchProc, stack: harness.KubeStack, ops: Sequence[harness.OperatorProc],
           cycles: int, interval: float) -> tuple[dict[str, Any], list[float]]:
    """Counts over R x ``cycles`` schedule listings (see the module docstring); the totals and each replica's CPU
    seconds per cycle."""
    listings = len(ops) * cycles
    first = economy._cycle_marks(batch)
    wait_for(ops, lambda: economy._cycle_marks(batch) > first, 3 * interval + 600, 0.05, "a poll cycle to start")
    batch_before = batch.counts()
    kube_before = stack.request_counts()
    cpu_before = [op.cpu_seconds() for op in ops]
    start = time.monotonic()
    marks = economy.listing_starts(batch_before)
    wait_for(ops, lambda: economy._cycle_marks(batch) >= marks + listings, listings * (3 * interval + 600), 0.05,
             f"{listings} schedule listings")
    elapsed = time.monotonic() - start
    cpu = [op.cpu_seconds() - before for op, before in zip(ops, cpu_before, strict=True)]
    batch_after = batch.counts()
    kube = harness.diff_counts(stack.request_counts(), kube_before)
    requests = harness.batch_diff(batch_after, batch_before)
    # two listings may start within one poll of the counts: normalise by the listings actually counted
    seen = max(listings, economy.listing_starts(batch_after) - marks)
    per = seen / len(ops)  # cycles of each replica, on average
    totals = {
        "seconds": round(elapsed, 1), "cycles": cycles, "listings": seen, "cycles_measured": round(per, 2),
        "period_s": round(elapsed / per, 2), "batch_requests": requests,
        "batch_per_cycle": round(sum(requests.values()) / per, 2), "kube_requests": kube,
        "kube_writes_per_cycle": round(harness.writes(kube) / per, 2),
    }
    return totals, [c / per for c in cpu]


# -- one replica count --------------------------------------------------------------------------------------------


def one_count(stack: harness.KubeStack, batch: harness.LocalBatchProc, work: Path, replicas: int, run: int,
              args: argparse.Namespace) -> dict[str, Any]:
    n, shards = args.n, args.shards
    namespace = f"ha-{replicas}r-{run}-{int(time.time()) % 100000}"
    names = [f"s{i:05d}" for i in range(n)]
    tag = f"[R={replicas} run {run}]"
    began = time.monotonic()
    batch.reset()
    stack.create_namespace(namespace)
    result: dict[str, Any] = {"n": n, "replicas": replicas, "shards": shards, "run": run, "namespace": namespace,
                              "interval": args.interval}
    ops = start_replicas(stack, batch, work, namespace, replicas, args)
    try:
        ids = [identity(op) for op in ops]
        log(f"{tag} {time.monotonic() - began:7.1f}s {replicas} replica(s) started; waiting for {shards} shards "
            f"to spread")
        spread_from = time.monotonic()

        def spread() -> dict[int, str] | None:
            found = lease_holders(stack, namespace, shards)
            return found if spread_ok(found, ids, shards) else None

        holders = wait_for(ops, spread, 120 + 30 * replicas, 0.5, f"{shards} shards spread over {replicas} replica(s)")
        result["spread_s"] = round(time.monotonic() - spread_from, 1)
        time.sleep(args.rest)  # the controllers of the shards just taken have started and settled
        check_alive(ops)
        held = shards_by_replica(holders, ids)
        rss_rest = [op.rss_mib() for op in ops]

        # burst
        watcher = convergence.MirrorWatch(stack, namespace)
        kube_before = stack.request_counts()
        cpu_before = [op.cpu_seconds() for op in ops]

        def creating() -> str:  # objects seen on the watch stream so far
            return f"creating: {len(watcher.state):,} of {n:,} created, {sum(watcher.state.values()):,} mirrored"

        start = time.perf_counter()
        with Ticker(tag, began, creating, args.progress):
            harness.create_resources(stack, namespace, names, concurrency=args.kube_concurrency,
                                     spec=harness.schedule_spec(prefix="ha"))
        result["kube_create_s"] = round(time.perf_counter() - start, 2)
        with Ticker(tag, began, lambda: f"converging: {sum(watcher.state.values()):,} of {n:,} mirrored",
                    args.progress):
            wait_converged(watcher, n, args.timeout, ops)
        result["convergence_s"] = round(watcher.done_at - start, 2)
        cpu_burst = [op.cpu_seconds() - before for op, before in zip(ops, cpu_before, strict=True)]
        peak = [harness.proc_hwm_mib(op.pid) for op in ops]
        result["kube_writes_burst"] = harness.writes(harness.diff_counts(stack.request_counts(), kube_before))
        result["loadavg_burst"] = [round(x, 2) for x in harness.machine()["loadavg"]]
        per_shard = resources_per_shard(stack.list(namespace))
        result["resources_per_shard"] = dict(sorted(per_shard.items()))
        after = lease_holders(stack, namespace, shards)
        result["shards_moved_during_burst"] = after != holders
        result["schedules_in_batch"] = len(batch.state().get("schedules") or {})
        log(f"{tag} {time.monotonic() - began:7.1f}s converged in {result['convergence_s']:.1f}s (kube creates "
            f"{result['kube_create_s']:.1f}s); CPU per replica {', '.join(f'{c:.1f}' for c in cpu_burst)} s; peak "
            f"RSS {', '.join(f'{p:.0f}' for p in peak)} MiB; schedules in Batch {result['schedules_in_batch']:,}")
        if result["schedules_in_batch"] != n:
            raise AssertionError(f"{result['schedules_in_batch']} schedules in Batch for {n} resources")

        # steady state
        settle_from = time.monotonic()
        with Ticker(tag, began, lambda: "waiting for every job-1 to complete and be mirrored", args.progress):
            wait_for(ops, lambda: economy.settled(batch, stack, namespace, n), args.timeout, 5.0,
                     f"{n} idle resources")
            time.sleep(args.interval + 1)  # one more full cycle: the last completions mirrored everywhere
        result["settle_s"] = round(time.monotonic() - settle_from, 1)
        log(f"{tag} {time.monotonic() - began:7.1f}s idle; counting {replicas} x {args.cycles} schedule listings")
        with Ticker(tag, began, lambda: f"steady state: {economy._cycle_marks(batch)} schedule listings so far",
                    args.progress):
            totals, cpu_cycle = steady(batch, stack, ops, args.cycles, args.interval)
        check_alive(ops)
        rss_steady = [op.rss_mib() for op in ops]
        result["steady"] = totals

        result["per_replica"] = [
            {"identity": ids[i], "shards": held[ids[i]], "shards_held": len(held[ids[i]]),
             "resources": resources_held(per_shard, held[ids[i]]), "cpu_burst_s": round(cpu_burst[i], 2),
             "rss_rest_mib": round(rss_rest[i], 1), "rss_peak_mib": round(peak[i], 1),
             "rss_steady_mib": round(rss_steady[i], 1), "cpu_per_cycle_s": round(cpu_cycle[i], 3)}
            for i in range(replicas)
        ]
        result.update(aggregate(result["per_replica"]))
        log(f"{tag} {time.monotonic() - began:7.1f}s steady: {totals['batch_per_cycle']} Batch requests per cycle, "
            f"period {totals['period_s']}s; per replica: " + "; ".join(
                f"{r['shards']} {r['resources']:,} resources, {r['cpu_per_cycle_s']:.2f} CPU s/cycle, RSS "
                f"{r['rss_steady_mib']:.0f} MiB" for r in result["per_replica"]))

        if args.fresh_stack:  # the stack goes with its resources: nothing to clean up
            result["delete_s"] = 0.0
            result["total_s"] = round(time.monotonic() - began, 1)
            return harness.stamp(result)
        # clean up: the replicas remove their finalizers and the Batch schedules
        delete_from = time.monotonic()
        harness.delete_all(stack, namespace, concurrency=args.kube_concurrency)
        with Ticker(tag, began, lambda: f"deleting: {remaining(stack, namespace):,} left", args.progress):
            wait_for(ops, lambda: remaining(stack, namespace) == 0, args.timeout, 2.0,
                     f"the {n} resources of {namespace} to be deleted")
        result["delete_s"] = round(time.monotonic() - delete_from, 1)
    finally:
        stop_replicas(ops)
    result["total_s"] = round(time.monotonic() - began, 1)
    log(f"{tag} {result['total_s']:7.1f}s done (deleted in {result['delete_s']:.1f}s)")
    return harness.stamp(result)


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="number of resources")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3], help="replica counts, one after another")
    parser.add_argument("--shards", type=int, default=6, help="operator --shards, the same for every replica count")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=2, help="status cycles of each replica counted at steady state")
    parser.add_argument("--interval", type=float, default=30.0, help="operator --resync-interval (s)")
    parser.add_argument("--batch-concurrency", type=int, default=8, help="operator --max-concurrency")
    parser.add_argument("--requests-per-second", type=float, default=1000.0,
                        help="operator --requests-per-second, per replica (default 1000, as bench/convergence.py)")
    parser.add_argument("--kube-concurrency", type=int, default=16)
    parser.add_argument("--rest", type=float, default=5.0,
                        help="seconds after the shards have spread before the RSS at rest is read")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds allowed for convergence, for settling and for deletion (each)")
    parser.add_argument("--progress", type=float, default=15.0, help="seconds between progress lines on stderr")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON results file")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table")
    parser.add_argument("--fresh-stack", action="store_true",
                        help="a new API server, etcd and Batch service for each replica count instead of deleting "
                             "the N resources between counts (minutes at N = 10,000)")
    args = parser.parse_args(argv)
    if args.shards < 2:
        parser.error("--shards must be at least 2 (one shard is plain leader election: no shard Leases)")

    info = harness.machine()
    log(harness.machine_line(info))
    command = "python bench/ha_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = harness.scratch("batchop-bench-ha-")
    results: list[dict[str, Any]] = []
    began = time.monotonic()
    stack: harness.KubeStack | None = None
    batch: harness.LocalBatchProc | None = None
    try:
        for run in range(1, args.runs + 1):
            for replicas in args.replicas:
                if stack is None or batch is None:
                    where = work / f"r{replicas}-{run}" if args.fresh_stack else work
                    stack, batch = harness.KubeStack(where / "kube"), harness.LocalBatchProc(where / "batch")
                results.append(one_count(stack, batch, work, replicas, run, args))
                save(args.out, {"machine": info, "args": vars(args), "command": command, "results": results})
                if args.fresh_stack:
                    batch.stop()
                    stack.stop()
                    stack = batch = None
    finally:
        if batch is not None:
            batch.stop()
        if stack is not None:
            stack.stop()
    log(f"all done in {time.monotonic() - began:.0f}s; raw results: {args.out}")
    if args.markdown:
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
