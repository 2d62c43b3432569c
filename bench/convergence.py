"""Convergence: N BatchJobSchedules applied at once until all are Ready with status mirrored, vs the floor.

    .venv/bin/python bench/convergence.py --n 100 1000 --runs 3

Per run and N, on one fresh local stack (kube-apiserver + etcd, the local Batch service ``--no-execute``):

- **floor**: the same N job schedules (the exact bodies batchop would send, with owner marks) created
  directly with the async SDK (``azure.batch.aio``) at the operator's Batch concurrency against the same
  service: the best any operator could do for the Batch part;
- **operator**: a fresh ``batchop run -n <ns>`` is started (liveness answered), then the N resources are
  created through the Kubernetes API (thread pool, ``--kube-concurrency``); the clock runs from the first
  create until every resource has ``Ready=True``, ``status.scheduleId`` and ``status.state == active``
  (the poller mirrored Batch), seen on a watch stream (a repeated LIST of N objects would compete with the
  operator for the cores);
- **kube floor**: the time to create the N objects alone (part of the operator's time: no operator can
  converge before its objects exist).

The ratio operator / floor is reported (target <= 1.5 at N = 1,000), with the Batch requests and the
Kubernetes writes the operator made, and its RSS at the end. Raw results: ``bench/results/convergence.json``;
``--markdown`` updates the convergence section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import perfdoc


def batch_bodies(namespace: str, names: list[str], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The create bodies batchop sends for these resources (same ids, same owner marks shape)."""
    from batchop.spec import mapping, naming

    return [
        mapping.desired_schedule(spec, schedule_id=naming.schedule_id_for(namespace, name),
                                 owner=f"{namespace}/{name}", uid=f"floor-{i}")
        for i, name in enumerate(names)
    ]


async def floor(batch: harness.LocalBatchProc, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Seconds to create ``bodies`` with the async SDK, ``concurrency`` in flight."""
    from azure.batch.aio import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    client = BatchClient(batch.endpoint, AzureNamedKeyCredential(batch.account, batch.key))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            await client.create_job_schedule(body)  # type: ignore[arg-type]

    async with client:
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


class MirrorWatch:
    """Counts mirrored resources from a watch stream (cheap: no repeated LIST of N objects competing with the
    operator for the machine's cores); ``done_at`` is the ``perf_counter`` time the N-th became mirrored."""

    def __init__(self, stack: harness.KubeStack, namespace: str) -> None:
        self.stack, self.namespace = stack, namespace
        self.state: dict[str, bool] = {}
        self.done_at = 0.0
        self.progress: list[tuple[float, int]] = []
        self._target = 0
        self._event = threading.Event()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(30)

    def _run(self) -> None:
        from kubernetes import watch

        api = self.stack.api()
        version = api.list_namespaced_custom_object(harness.GROUP, harness.VERSION, self.namespace,
                                                    harness.PLURAL)["metadata"]["resourceVersion"]
        self._ready.set()
        while not self._event.is_set():
            stream = watch.Watch().stream(api.list_namespaced_custom_object, harness.GROUP, harness.VERSION,
                                          self.namespace, harness.PLURAL, resource_version=version,
                                          timeout_seconds=60)
            for event in stream:
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                self.state[obj["metadata"]["name"]] = event["type"] != "DELETED" and harness.mirrored(obj)
                count = sum(self.state.values())
                now = time.perf_counter()
                if not self.progress or (self.progress[-1][1] != count and now - self.progress[-1][0] > 0.5):
                    self.progress.append((now, count))
                if self._target and count >= self._target and not self._event.is_set():
                    self.done_at = now
                    self._event.set()
                    return

    def wait(self, n: int, timeout: float) -> list[tuple[float, int]]:
        self._target = n
        if not self._event.wait(timeout):
            raise TimeoutError(f"{sum(self.state.values())} of {n} mirrored after {timeout}s")
        return list(self.progress)


def one_run(stack: harness.KubeStack, batch: harness.LocalBatchProc, work: Path, n: int, run: int,
            args: argparse.Namespace, webhook: str = "off") -> dict[str, Any]:
    namespace = f"conv-{n}-{run}-{int(time.time()) % 100000}"
    names = [f"s{i:05d}" for i in range(n)]
    spec = harness.schedule_spec(prefix="conv")

    batch.reset()
    busy_before = harness.machine_busy_seconds()
    floor_seconds = asyncio.run(floor(batch, batch_bodies(namespace, names, spec), args.batch_concurrency))
    floor_busy = harness.machine_busy_seconds() - busy_before
    batch.reset()
    alone = f"{namespace}-alone"  # the Kubernetes floor: the same creates with no operator running
    stack.create_namespace(alone)
    busy_before = harness.machine_busy_seconds()
    start = time.perf_counter()
    harness.create_resources(stack, alone, names, concurrency=args.kube_concurrency, spec=spec)
    kube_alone = time.perf_counter() - start
    kube_alone_busy = harness.machine_busy_seconds() - busy_before
    harness.delete_all(stack, alone, concurrency=args.kube_concurrency)

    stack.create_namespace(namespace)
    extra = ["--max-concurrency", str(args.batch_concurrency), "--requests-per-second", str(args.requests_per_second)]
    if webhook != "off":
        extra += webhook_arguments(work / f"webhook-{n}-{run}-{webhook}")
    operator = harness.OperatorProc.batchop(stack, batch, work, [namespace], resync=args.resync, extra=extra)
    operator.env["PYTHONPATH"] = str(args.tree.resolve() / "operator")
    operator.start()
    if webhook != "off":
        wait_for_webhooks(stack, namespace, args.tree, mutating=webhook == "both")
    try:
        kube_before = stack.request_counts()
        cpu_before = operator.cpu_seconds()
        watcher = MirrorWatch(stack, namespace)
        own_before = time.process_time()
        busy_before = harness.machine_busy_seconds()
        start = time.perf_counter()
        harness.create_resources(stack, namespace, names, concurrency=args.kube_concurrency, spec=spec)
        created = time.perf_counter() - start
        progress = [(round(t - start, 2), c) for t, c in watcher.wait(n, args.timeout)]
        total = watcher.done_at - start
        cpu = operator.cpu_seconds() - cpu_before
        busy = harness.machine_busy_seconds() - busy_before  # until now, a little after done_at
        client_cpu = time.process_time() - own_before  # the creating client and the watch, in this process
        kube = harness.diff_counts(stack.request_counts(), kube_before)
        counts = batch.counts()
        rss = operator.rss_mib()
        peak = harness.proc_hwm_mib(operator.pid)
    finally:
        operator.stop()
        remove_webhooks(stack)
    state = batch.state()
    schedules = len(state.get("schedules") or {})
    result = {
        "n": n, "run": run, "operator_seconds": round(total, 3), "floor_seconds": round(floor_seconds, 3),
        "kube_create_seconds": round(created, 3), "kube_alone_seconds": round(kube_alone, 3),
        "webhook": webhook, "ratio": round(total / floor_seconds, 2),
        "batch_requests": {op: v["total"] for op, v in counts.items()},
        "kube_requests": kube, "kube_writes": harness.writes(kube), "operator_cpu_seconds": round(cpu, 2),
        "operator_rss_mib": round(rss, 1), "operator_peak_rss_mib": round(peak, 1),
        "schedules_in_batch": schedules, "progress": progress[-40:],
        "machine_busy_cpu_seconds": round(busy, 2), "client_cpu_seconds": round(client_cpu, 2),
        "floor_busy_cpu_seconds": round(floor_busy, 2), "kube_alone_busy_cpu_seconds": round(kube_alone_busy, 2),
        "cores": os.cpu_count(),
    }
    print(f"N={n} run {run}: operator {total:.2f}s (kube creates {created:.2f}s, alone {kube_alone:.2f}s), "
          f"webhooks {webhook}, floor {floor_seconds:.2f}s, "
          f"ratio {total / floor_seconds:.2f}, Batch requests {sum(result['batch_requests'].values())}, "
          f"kube writes {result['kube_writes']}, CPU {cpu:.1f}s, RSS {rss:.0f} MiB (peak {peak:.0f}), "
          f"schedules {schedules}; machine busy {busy:.1f} CPU s ({busy / total:.2f} of {os.cpu_count()} cores), "
          f"client {client_cpu:.1f}, others (API server, etcd, Batch service) {busy - cpu - client_cpu:.1f}; "
          f"the floors alone: {kube_alone_busy:.1f} + {floor_busy:.1f} CPU s", flush=True)
    if schedules != n:
        raise AssertionError(f"{schedules} schedules in Batch for {n} resources")
    return result


WEBHOOK_CONFIGURATION = "bench-convergence.azurebatch.dev"
TARGET_RATIO = 1.3
"""The burst target: convergence at most this times (Kubernetes creates alone + Batch floor)."""


def webhook_arguments(cert_dir: Path) -> list[str]:
    """``batchop run`` arguments serving the admission webhooks on loopback, registered for the local stack."""
    return ["--webhook-port", str(harness.free_port()), "--webhook-listen", "127.0.0.1", "--webhook-host", "127.0.0.1",
            "--webhook-configuration", WEBHOOK_CONFIGURATION, "--webhook-cert-dir", str(cert_dir)]


def wait_for_webhooks(stack: harness.KubeStack, namespace: str, tree: Path, *, mutating: bool) -> None:
    """Until the operator has registered its webhook configurations (two, or one for an operator from ``tree``
    before the mutating webhook); ``mutating=False`` then deletes the mutating one (the validating one alone)."""
    registers_mutating = "MutatingWebhookConfiguration" in (
        tree / "operator" / "batchop" / "admission" / "webhook.py").read_text()

    def registered(kind: str) -> bool:
        return stack.kubectl("get", kind, WEBHOOK_CONFIGURATION).returncode == 0

    harness.wait_until(lambda: registered("validatingwebhookconfiguration") and (
        not registers_mutating or registered("mutatingwebhookconfiguration")), 60,
        what="the webhook configurations")
    if not mutating:
        stack.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found")

    def as_wanted() -> bool:  # the API server applies configuration changes a little later: ask it
        probe = json.dumps({**harness.resource("webhook-probe"), "metadata": {"name": "webhook-probe",
                                                                             "namespace": namespace}})
        got = stack.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=probe)
        finalized = got.returncode == 0 and bool(json.loads(got.stdout)["metadata"].get("finalizers"))
        return got.returncode == 0 and finalized == mutating

    wanted = "both webhooks" if mutating else "the validating webhook alone"
    harness.wait_until(as_wanted, 60, what=f"the API server calling {wanted}")


def remove_webhooks(stack: harness.KubeStack) -> None:
    """The configurations of a stopped operator go too (a later create would call a closed port)."""
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        stack.kubectl("delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found")


NOTES = """\
Times from the first Kubernetes create to every resource `Ready=True` with `status.state` mirrored from
Batch (median of the runs, min-max in parentheses). *Floor*: the same N schedule bodies created with the async
SDK at the operator's Batch concurrency against the same service. *Kube creates alone*: the N objects written
through the Kubernetes API (part of the operator's time: no operator converges before its objects exist), so
*ratio to kube creates + floor* is the operator against the floor of any Kubernetes operator on this machine.
Operator run with `--max-concurrency 8` (its default) and `--requests-per-second 1000` (its default of
20/s per account would by itself hold 1,000 creates to 50 s: a deliberate protection against Azure
throttling, not a cost of the design).

*Machine CPU*: the CPU seconds the whole machine was busy (all processes, `/proc/stat`) during the two floors
together, during the operator's run, and what a run at the target ratio would have (1.3 x (kube creates alone
+ floor) x cores). When the operator's run needs more CPU than that budget, no change to the operator's own
speed reaches the target on this machine: the API server, etcd and the Batch service share its cores, and
the work they do for an operator (its status write, the admission call, its Events, the watch) counts."""


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| N | webhooks | operator (s) | floor: async SDK (s) | ratio | kube creates alone (s) "
             "| ratio to kube creates alone + floor | kube creates beside the operator (s) "
             "| ratio to those + floor | Batch requests | Kubernetes writes per resource "
             "| operator CPU (s) | CPU per resource (ms) | RSS at end (MiB) | peak RSS (MiB) "
             "| machine busy: cores used (operator's share of the busy CPU) "
             "| machine CPU (s): the floors / the operator's run / a run at 1.3x |", "|---" * 17 + "|"]
    for n, webhook in sorted({(r["n"], r.get("webhook", "off")) for r in results}):
        rows = [r for r in results if r["n"] == n and r.get("webhook", "off") == webhook]

        def cell(key: str, fmt: str = "{:.2f}", rows: list[dict[str, Any]] = rows) -> str:
            s = harness.summary([float(r[key]) for r in rows])
            return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"

        for r in rows:
            r["ratio_kube"] = round(r["operator_seconds"] / (r["kube_create_seconds"] + r["floor_seconds"]), 2)
            if r.get("kube_alone_seconds"):
                r["ratio_alone"] = round(r["operator_seconds"] / (r["kube_alone_seconds"] + r["floor_seconds"]), 2)
            r["writes_per_resource"] = round(r["kube_writes"] / r["n"], 3)
            r["cpu_ms_per_resource"] = round(1000 * r["operator_cpu_seconds"] / r["n"], 2)
            if r.get("machine_busy_cpu_seconds"):
                r["busy_cores"] = round(r["machine_busy_cpu_seconds"] / r["operator_seconds"], 2)
                r["operator_share"] = round(r["operator_cpu_seconds"] / r["machine_busy_cpu_seconds"], 2)
        budget = "n/a"
        if all(r.get("floor_busy_cpu_seconds") is not None and r.get("machine_busy_cpu_seconds") for r in rows):
            for r in rows:
                r["floors_busy_cpu_seconds"] = round(r["floor_busy_cpu_seconds"] + r["kube_alone_busy_cpu_seconds"], 2)
                r["target_cpu_seconds"] = round(
                    TARGET_RATIO * (r["kube_alone_seconds"] + r["floor_seconds"]) * (r.get("cores") or 1), 2)
            budget = (f"{cell('floors_busy_cpu_seconds', '{:.1f}')} / {cell('machine_busy_cpu_seconds', '{:.1f}')} "
                      f"/ {cell('target_cpu_seconds', '{:.1f}')}")
        busy = "n/a"
        if all(r.get("busy_cores") for r in rows):
            busy = f"{cell('busy_cores')} of {rows[0].get('cores')} ({cell('operator_share')})"
        peaks = [float(r["operator_peak_rss_mib"]) for r in rows if r.get("operator_peak_rss_mib")]
        peak = harness.summary(peaks)["median"] if peaks else float("nan")
        batch_req = harness.summary([float(sum(r["batch_requests"].values())) for r in rows])
        alone = all(r.get("kube_alone_seconds") for r in rows)
        lines.append(
            f"| {n:,} | {webhook} | {cell('operator_seconds')} | {cell('floor_seconds')} | {cell('ratio')} "
            f"| {cell('kube_alone_seconds') if alone else 'n/a'} | {cell('ratio_alone') if alone else 'n/a'} "
            f"| {cell('kube_create_seconds')} | {cell('ratio_kube')} | {batch_req['median']:.0f} "
            f"| {cell('writes_per_resource')} "
            f"| {cell('operator_cpu_seconds', '{:.1f}')} | {cell('cpu_ms_per_resource', '{:.1f}')} "
            f"| {cell('operator_rss_mib', '{:.0f}')} | {peak:.0f} | {busy} | {budget} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000], help="numbers of resources")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-concurrency", type=int, default=8,
                        help="operator --max-concurrency and the floor's concurrency (default 8, batchop's default)")
    parser.add_argument("--requests-per-second", type=float, default=1000.0,
                        help="operator --requests-per-second (default 1000: the rate limit out of the way; "
                        "batchop's product default is 20/s per account)")
    parser.add_argument("--kube-concurrency", type=int, default=16)
    parser.add_argument("--webhook", choices=("off", "validating", "both"), nargs="+", default=["off"],
                        help="the operator's admission webhooks: off (default), the validating one alone, or both "
                        "(what ships: since the admit webhook a create calls the mutating one alone, which checks "
                        "it and adds the finalizer; before, it called both); several: each run measures them in "
                        "turn")
    parser.add_argument("--resync", type=float, default=30.0, help="operator --resync-interval")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--tree", type=Path, default=harness.REPO,
                        help="checkout whose operator/ is measured (default: this one), e.g. a git worktree of an "
                        "earlier commit")
    parser.add_argument("--markdown", action="store_true", help="write the table into docs/performance.md")
    parser.add_argument("--render", action="store_true",
                        help="only render bench/results/convergence.json (no run); with --markdown, into the doc")
    args = parser.parse_args(argv)

    if args.render:
        saved = json.loads((harness.RESULTS / "convergence.json").read_text())
        print(table(saved["results"]))
        if args.markdown:
            _write_doc(saved["results"], saved["machine"], saved.get("command", "python bench/convergence.py"))
        return 0
    info = harness.machine()
    work = harness.scratch("batchop-bench-conv-")
    stack = harness.KubeStack(work / "kube")
    batch = harness.LocalBatchProc(work / "batch")
    results: list[dict[str, Any]] = []
    try:
        for n in args.n:
            for run in range(1, args.runs + 1):
                for webhook in args.webhook:
                    results.append(harness.stamp(one_run(stack, batch, work, n, run, args, webhook)))
    finally:
        batch.stop()
        stack.stop()
    results = harness.merge_results("convergence", results, args.n)
    command = "python bench/convergence.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {"machine": info, "args": vars(args), "command": command, "results": results}
    path = harness.save_json("convergence", data)
    print(table(results))
    print(f"raw results: {path}")
    if args.markdown:
        _write_doc(results, info, command)
    return 0


def _write_doc(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> None:
    perfdoc.replace_section("convergence", perfdoc.section(
        "Convergence", command, info, table(results),
        NOTES + f"\n\nRows taken (N may come from separate invocations): {harness.taken_line(results)}."))


if __name__ == "__main__":
    raise SystemExit(main())
