"""Many Batch accounts: N schedules spread over A accounts, one operator.

    .venv/bin/python bench/many_accounts.py --n 10000 --accounts 50

One local stack (kube-apiserver + etcd) and A local Batch services (``python -m localbatch --no-execute``,
one process each, so each account has its own endpoint, key, schedules and request counts, as real
accounts do). Every account gets a Secret (``accountName``, ``accountKey``) and N / A resources whose
``spec.account`` names its endpoint and Secret, created round-robin, so the operator runs A gateways and A
pollers at once. Per run:

1. **convergence**: from the first Kubernetes create until every resource is ``Ready=True`` with
   ``status.state`` mirrored (a watch stream counts), with the operator's CPU, peak RSS (``VmHWM``) and
   the Kubernetes writes per resource;
2. **steady state**, once every job-1 has completed and been mirrored: ``--cycles`` status cycles of the
   first account (counted from its schedule listings, as ``bench/economy.py`` does); Batch requests per
   cycle *per account* (each service's own counts, divided by that account's own cycles), Kubernetes
   writes per cycle, the operator's CPU seconds per cycle and its RSS;
3. **reaction time**: ``--edits`` edits spread over the accounts, each timed from the Kubernetes PATCH
   until the account's ``GET /jobschedules/{id}`` shows it.

Raw results: ``bench/results/many_accounts.json``; ``--markdown`` writes the table into
``docs/performance.md`` (section ``many-accounts``).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import convergence
import economy
import harness
import perfdoc


def start_services(work: Path, count: int) -> list[harness.LocalBatchProc]:
    """``count`` local Batch services, started a few at a time."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: harness.LocalBatchProc(work / f"batch-{i:02d}"), range(count)))


def secrets(stack: harness.KubeStack, namespace: str, services: list[harness.LocalBatchProc]) -> None:
    for i, service in enumerate(services):
        data = {"accountName": service.account, "accountKey": service.key}
        body = {"metadata": {"name": f"acct-{i:02d}"},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        stack.core().create_namespaced_secret(namespace, body)


def create(stack: harness.KubeStack, namespace: str, services: list[harness.LocalBatchProc], n: int,
           concurrency: int) -> list[tuple[str, int]]:
    """N resources, resource i on account i mod A; returns (name, account index) pairs."""
    base = harness.schedule_spec(prefix="many")
    placed = [(f"s{i:05d}", i % len(services)) for i in range(n)]

    def one(item: tuple[str, int]) -> None:
        name, index = item
        spec = {**base, "account": {"endpoint": services[index].endpoint,
                                    "credentialsSecretRef": {"name": f"acct-{index:02d}"}}}
        stack.api().create_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL,
                                                    harness.resource(name, spec))

    harness.parallel(one, placed, concurrency)
    return placed


def idle(services: list[harness.LocalBatchProc], stack: harness.KubeStack, namespace: str, n: int) -> bool:
    """Every job completed in every account, and every resource shows its completed job-1."""
    for service in services:
        if any(j.get("state") != "completed" for j in (service.state().get("jobs") or {}).values()):
            return False
    done = [o for o in stack.list(namespace) if harness.mirrored(o)
            and ((o.get("status") or {}).get("recentJob") or {}).get("state") == "completed"]
    return len(done) >= n


def steady(services: list[harness.LocalBatchProc], stack: harness.KubeStack, operator: harness.OperatorProc,
           cycles: int, interval: float) -> dict[str, Any]:
    """Counts over ``cycles`` whole cycles of the first account; requests per cycle per account."""
    first = economy._cycle_marks(services[0])
    harness.wait_until(lambda: economy._cycle_marks(services[0]) > first, 3 * interval + 600, 0.05, "a cycle")
    before = [s.counts() for s in services]
    marks = [economy._cycle_marks(s) for s in services]
    kube_before = stack.request_counts()
    cpu0, t0 = operator.cpu_seconds(), time.monotonic()
    target = marks[0] + cycles
    harness.wait_until(lambda: economy._cycle_marks(services[0]) >= target, cycles * (3 * interval + 600), 0.05,
                       f"{cycles} cycles")
    cpu, elapsed = operator.cpu_seconds() - cpu0, time.monotonic() - t0
    per_account = []
    for service, counts, mark in zip(services, before, marks, strict=True):
        requests = sum(harness.batch_diff(service.counts(), counts).values())
        done = max(1, economy._cycle_marks(service) - mark)
        per_account.append(requests / done)
    kube = harness.diff_counts(stack.request_counts(), kube_before)
    return {"cycles": cycles, "period_s": round(elapsed / cycles, 2), "cpu_per_cycle": round(cpu / cycles, 3),
            "batch_per_cycle_per_account": {"median": round(statistics.median(per_account), 2),
                                            "min": round(min(per_account), 2), "max": round(max(per_account), 2)},
            "kube_writes_per_cycle": round(harness.writes(kube) / cycles, 2), "rss_mib": round(operator.rss_mib(), 1)}


def reaction(services: list[harness.LocalBatchProc], stack: harness.KubeStack, namespace: str,
             placed: list[tuple[str, int]], edits: int) -> list[float]:
    """Seconds from the PATCH of a command line to its account's schedule carrying it."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    api = stack.api()
    step = max(1, len(placed) // max(1, edits))
    times = []
    for i in range(edits):
        name, index = placed[(i * step + i) % len(placed)]
        service = services[index]
        client = BatchClient(service.endpoint, AzureNamedKeyCredential(service.account, service.key))
        try:
            obj = api.get_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL, name)
            schedule_id = obj["status"]["scheduleId"]
            command = f"/bin/bash -c 'echo edit {i}'"
            patch = {"spec": {"jobSpecification": {"jobManagerTask": {"commandLine": command}}}}
            start = time.perf_counter()
            api.patch_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL, name, patch)

            def applied(client: Any = client, schedule_id: str = schedule_id, command: str = command) -> bool:
                got = client.get_job_schedule(schedule_id).job_specification.job_manager_task.command_line
                return bool(got == command)

            harness.wait_until(applied, 120, 0.02, f"edit of {name} in Batch")
            times.append(time.perf_counter() - start)
        finally:
            client.close()
    return times


def one_run(args: argparse.Namespace, run: int) -> dict[str, Any]:
    work = harness.scratch("batchop-bench-many-")
    stack = harness.KubeStack(work / "kube")
    services: list[harness.LocalBatchProc] = []
    namespace = f"many-{args.n}-{run}"
    result: dict[str, Any] = {"n": args.n, "accounts": args.accounts, "run": run}
    try:
        services = start_services(work, args.accounts)
        stack.create_namespace(namespace)
        secrets(stack, namespace, services)
        extra = ["--max-concurrency", str(args.batch_concurrency), "--requests-per-second",
                 str(args.requests_per_second)]
        operator = harness.OperatorProc.batchop(stack, services[0], work, [namespace], resync=args.interval,
                                                extra=extra)
        operator.start()
        try:
            _measure(args, stack, services, operator, namespace, result)
        finally:
            operator.stop()
    finally:
        for service in services:
            service.stop()
        stack.stop()
    return result


def _measure(args: argparse.Namespace, stack: harness.KubeStack, services: list[harness.LocalBatchProc],
             operator: harness.OperatorProc, namespace: str, out: dict[str, Any]) -> None:
    """The three phases into ``out``, saved after each (a long run that is stopped keeps what it measured)."""
    out["rss_empty_mib"] = round(operator.rss_mib(), 1)
    watcher = convergence.MirrorWatch(stack, namespace)
    kube_before = stack.request_counts()
    cpu0 = operator.cpu_seconds()
    start = time.perf_counter()
    placed = create(stack, namespace, services, args.n, args.kube_concurrency)
    out["kube_create_seconds"] = round(time.perf_counter() - start, 2)
    watcher.wait(args.n, args.timeout)
    out["converged_seconds"] = round(watcher.done_at - start, 2)
    out["burst_cpu_seconds"] = round(operator.cpu_seconds() - cpu0, 2)
    out["burst_kube_writes"] = harness.writes(harness.diff_counts(stack.request_counts(), kube_before))
    out["peak_rss_mib"] = round(harness.proc_hwm_mib(operator.pid), 1)
    out["schedules"] = sum(len(s.state().get("schedules") or {}) for s in services)
    out["loadavg_burst"] = [round(x, 2) for x in harness.machine()["loadavg"]]
    print(f"converged {out['converged_seconds']}s (kube creates {out['kube_create_seconds']}s), CPU "
          f"{out['burst_cpu_seconds']}s, writes {out['burst_kube_writes']}, peak RSS {out['peak_rss_mib']} MiB, "
          f"schedules {out['schedules']}", flush=True)
    harness.save_json("many_accounts-partial", {"args": vars(args), "results": [harness.stamp(dict(out))]})
    harness.wait_until(lambda: idle(services, stack, namespace, args.n), args.timeout, 2.0, "idle")
    time.sleep(args.interval + 1)
    out["steady"] = steady(services, stack, operator, args.cycles, args.interval)
    print(f"steady: {out['steady']}", flush=True)
    harness.save_json("many_accounts-partial", {"args": vars(args), "results": [harness.stamp(dict(out))]})
    times = reaction(services, stack, namespace, placed, args.edits)
    out["reaction_seconds"] = [round(t, 3) for t in times]
    out["reaction_p50"] = round(harness.percentile(times, 0.5), 3)
    out["reaction_p95"] = round(harness.percentile(times, 0.95), 3)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| N | accounts | converged (s) | kube creates alone (s) | writes per resource | burst CPU per resource "
             "(ms) | peak RSS (MiB) | Batch requests per cycle per account (min-max) | Kubernetes writes per cycle "
             "| CPU per cycle (s) | cycle period (s) | RSS steady (MiB) | edit -> Batch p50 / p95 (s) | 1-min load |",
             "|---" * 14 + "|"]
    for r in results:
        s = r["steady"]
        b = s["batch_per_cycle_per_account"]
        lines.append(
            f"| {r['n']:,} | {r['accounts']} | {r['converged_seconds']:.1f} | {r['kube_create_seconds']:.1f} "
            f"| {r['burst_kube_writes'] / r['n']:.2f} | {1000 * r['burst_cpu_seconds'] / r['n']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {b['median']:.1f} ({b['min']:.1f}-{b['max']:.1f}) "
            f"| {s['kube_writes_per_cycle']:.1f} | {s['cpu_per_cycle']:.2f} | {s['period_s']:.1f} "
            f"| {s['rss_mib']:.0f} | {r['reaction_p50']:.2f} / {r['reaction_p95']:.2f} "
            f"| {r['loadavg'][0]:.1f} |")
    return "\n".join(lines)


NOTES = """\
One operator, A local Batch services (one process per account: its own endpoint, key, schedules and request
counts), N resources round-robin over them, each naming its account's endpoint and credentials Secret.
*Batch requests per cycle per account*: each service's own request counts over the measured window divided
by that account's own cycles (its schedule listings), median over the accounts with min-max. *CPU per
cycle*: the operator's CPU over whole cycles of the first account, while all A pollers run (every poller
has the same interval), so it is the CPU of one cycle of *every* account. Writes and CPU per resource are
over the burst (from the first create until all are mirrored)."""


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The operator's Batch limits, the client's concurrency, the timeout and ``--markdown`` (this benchmark's
    and ``bench/shard_by.py``'s)."""
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--requests-per-second", type=float, default=1000.0)
    parser.add_argument("--kube-concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--markdown", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--interval", type=float, default=30.0, help="operator --resync-interval")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--edits", type=int, default=10)
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    info = harness.machine()
    results = []
    for run in range(1, args.runs + 1):
        results.append(harness.stamp(one_run(args, run)))
        harness.save_json("many_accounts", {"machine": info, "args": vars(args), "results": results})
    text = table(results)
    print(text)
    if args.markdown:
        command = "python bench/many_accounts.py " + " ".join(sys.argv[1:] if argv is None else argv)
        taken = "; ".join(f"run {r['run']}: {r['taken']}, 1-min load {r['loadavg'][0]:.1f}" for r in results)
        perfdoc.replace_section("many-accounts", perfdoc.section(
            "Many accounts", command, info, text, NOTES + f"\n\nRuns taken: {taken}."))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
