"""Steady state with N idle schedules: API economy, reaction time, memory and CPU; vs the per-object timer.

    .venv/bin/python bench/economy.py --n 100 1000 --runs 3

Per run and N, on one fresh local stack (kube-apiserver + etcd, the local Batch service ``--no-execute``):

1. ``batchop run -n <ns> --resync-interval R`` (default R = 30 s, batchop's default) and N resources
   created through the Kubernetes API; wait until all are mirrored and every job-1 has completed and been
   mirrored (idle: nothing changes any more in Batch or in Kubernetes).
2. **batchop at steady state** for ``--cycles`` poll cycles: Batch requests per cycle (the service's own
   admin counts; a cycle = from one schedule listing to the next, :func:`_cycle_marks`), Kubernetes writes per
   cycle (the API server's ``apiserver_request_total`` for ``batchschedules``: POST/PUT/PATCH/DELETE,
   status and no-op patches included), operator CPU seconds per cycle and RSS.
3. **Reaction time**: ``--edits`` resources edited one at a time (``jobManagerTask.commandLine``), each
   timed from the Kubernetes PATCH until the Batch schedule carries the new command line (polled every
   20 ms with ``GET /jobschedules/{id}``); p50 and p95.
4. batchop stopped; **the timer baseline** (``bench/baseline/timer_operator.py``: ``@kopf.timer`` per
   object, interval R, GET schedule + recent job + pool, status patch) started on the same namespace; after
   one interval of warm-up, the same counts over the same number of intervals.

Raw results: ``bench/results/economy.json``; ``--markdown`` updates the economy, reaction and memory
sections of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import perfdoc

TICK = 1 / harness.CLK_TCK
"""One tick of ``/proc/<pid>/stat``'s CPU clock, in seconds."""


def settled(batch: harness.LocalBatchProc, stack: harness.KubeStack, namespace: str, n: int) -> bool:
    """All N mirrored, no job left running in Batch, and every resource shows its completed job-1."""
    state = batch.state()
    if any(j.get("state") != "completed" for j in (state.get("jobs") or {}).values()):
        return False
    objs = stack.list(namespace)
    done = [o for o in objs if harness.mirrored(o)
            and ((o.get("status") or {}).get("recentJob") or {}).get("state") == "completed"]
    return len(done) >= n


def _cycle_marks(batch: harness.LocalBatchProc) -> int:
    """Schedule listings started so far (``list_job_schedules`` requests without ``$skiptoken``): exactly one
    per poll cycle. Above 1,000 schedules a listing takes one request per page, and other listings (jobs)
    may page too, so requests alone do not count cycles."""
    return listing_starts(batch.counts())


def listing_starts(counts: Mapping[str, Mapping[str, Any]]) -> int:
    """Schedule listings started, from the service's admin counts (see :func:`_cycle_marks`)."""
    entry = counts.get("list_job_schedules") or {}
    return int(entry.get("total", 0)) - int(entry.get("nextPages", 0))


def measure(batch: harness.LocalBatchProc, stack: harness.KubeStack, operator: harness.OperatorProc,
            seconds: float, interval: float, *, cycles_from_lists: bool, cycles: int = 0) -> dict[str, Any]:
    """Counts over steady state, normalised per cycle.

    batchop (``cycles_from_lists``): from one poll cycle's schedule listing (:func:`_cycle_marks`) to the
    start of the ``cycles``-th next one, so exactly whole cycles are counted (a cycle's period is the
    interval plus the cycle's own duration). The baseline: ``seconds`` of wall time, cycles = elapsed /
    interval (its timers fire every interval whatever they cost).
    """
    # The operator's /metrics is read before the window, never in it: one read renders every per-resource series
    # (up to five per resource: 50,000 at 10,000 resources), and the three reads counted in the window until
    # 2026-12-07 added their cost to the cycles measured, ten times more at 10,000 than at 1,000. What one read
    # costs the operator is measured on its own (``scrape_cpu_seconds``).
    gc_before = operator.gc_seconds()
    collections_before = operator.gc_collections()
    frozen_before = operator.gc_frozen() if operator.metrics_port else None
    scrape_cpu = None
    if operator.metrics_port:
        scrape_start = operator.cpu_seconds()
        operator.gc_frozen()
        scrape_cpu = operator.cpu_seconds() - scrape_start
    if cycles_from_lists:
        first = _cycle_marks(batch)
        harness.wait_until(lambda: _cycle_marks(batch) > first, 3 * interval + 600, 0.05, "a poll cycle to start")
    batch_before = batch.counts()
    kube_before = stack.request_counts()
    cpu_before, fine_before = operator.cpu_seconds(), operator.cpu_seconds_fine()
    start = time.monotonic()
    if cycles_from_lists:
        target = _cycle_marks(batch) + cycles
        harness.wait_until(lambda: _cycle_marks(batch) >= target, cycles * (3 * interval + 600), 0.05,
                           f"{cycles} poll cycles")  # generous: a cycle of 10,000 on a loaded machine takes minutes
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - start
    fine = operator.cpu_seconds_fine() - fine_before
    ticks = operator.cpu_seconds() - cpu_before
    # the nanosecond clock, unless a thread started or ended in the window (then the two disagree by more than
    # the ticks' own rounding): the tick clock counts ended threads too
    fine_holds = abs(fine - ticks) <= 2 * TICK + 0.05 * ticks
    cpu = fine if fine_holds else ticks
    # the requests are counted before the /metrics reads below: at 10,000 resources those take a second or
    # more, in which the next cycle's listing pages came in and were counted too (until 2026-12-07)
    requests = harness.batch_diff(batch.counts(), batch_before)
    kube = harness.diff_counts(stack.request_counts(), kube_before)
    gc_seconds = [after - before for after, before in zip(operator.gc_seconds(), gc_before, strict=True)]
    collections = [after - before for after, before in zip(operator.gc_collections(), collections_before,
                                                           strict=True)]
    if not cycles_from_lists:
        cycles = max(1, round(elapsed / interval))
    total = sum(requests.values())
    return {
        "seconds": round(elapsed, 1), "cycles": cycles, "period_s": round(elapsed / cycles, 2),
        "batch_requests": requests,
        "batch_per_cycle": round(total / cycles, 2), "kube_requests": kube,
        "kube_writes_per_cycle": round(harness.writes(kube) / cycles, 2),
        "cpu_per_cycle": round(cpu / cycles, 4), "rss_mib": round(operator.rss_mib(), 1),
        # the same window on /proc/<pid>/stat's 10 ms ticks, and which clock cpu_per_cycle is from
        "cpu_per_cycle_ticks": round(ticks / cycles, 3), "cpu_clock": "schedstat" if fine_holds else "ticks",
        # seconds in garbage collections per cycle by generation (batchop only: the baseline serves no metrics)
        "gc_per_cycle": [round(seconds / cycles, 3) for seconds in gc_seconds],
        "gc_collections_per_cycle": [round(count / cycles, 2) for count in collections],
        # objects frozen out of collections at the window's start and end (memory.settle)
        "gc_frozen": [frozen_before, operator.gc_frozen()] if frozen_before is not None else None,
        # operator CPU seconds of one /metrics read (outside the window), what a Prometheus scrape costs it
        "scrape_cpu_seconds": round(scrape_cpu, 3) if scrape_cpu is not None else None,
    }


def reaction(batch: harness.LocalBatchProc, stack: harness.KubeStack, namespace: str, names: list[str],
             edits: int, run: int) -> list[float]:
    """Seconds from the Kubernetes PATCH of a command line to the Batch schedule carrying it."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    client = BatchClient(batch.endpoint, AzureNamedKeyCredential(batch.account, batch.key))
    api = stack.api()
    step = max(1, len(names) // edits)
    times = []
    try:
        for i in range(edits):
            name = names[(i * step) % len(names)]
            obj = api.get_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL, name)
            schedule_id = obj["status"]["scheduleId"]
            command = f"/bin/bash -c 'echo edit {run}-{i}'"
            patch = {"spec": {"jobSpecification": {"jobManagerTask": {"commandLine": command}}}}
            start = time.perf_counter()
            api.patch_namespaced_custom_object(harness.GROUP, harness.VERSION, namespace, harness.PLURAL, name, patch)

            def applied(schedule_id: str = schedule_id, command: str = command) -> bool:
                got = client.get_job_schedule(schedule_id).job_specification.job_manager_task.command_line
                return got == command

            harness.wait_until(applied, 120, 0.02, f"edit of {name} in Batch")
            times.append(time.perf_counter() - start)
    finally:
        client.close()
    return times


def one_run(stack: harness.KubeStack, batch: harness.LocalBatchProc, work: Path, n: int, run: int,
            args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"econ-{n}-{run}-{int(time.time()) % 100000}"
    names = [f"s{i:05d}" for i in range(n)]
    batch.reset()
    stack.create_namespace(namespace)
    extra = ["--max-concurrency", str(args.batch_concurrency), "--requests-per-second", str(args.requests_per_second)]
    operator = harness.OperatorProc.batchop(stack, batch, work, [namespace], resync=args.interval, extra=extra)
    operator.start()
    result: dict[str, Any] = {"n": n, "run": run, "interval": args.interval}
    try:
        time.sleep(2)
        result["batchop_rss_empty_mib"] = round(operator.rss_mib(), 1)  # started, watching, no resource yet
        start = time.monotonic()
        harness.create_resources(stack, namespace, names, concurrency=16, spec=harness.schedule_spec(prefix="eco"))
        harness.wait_until(lambda: settled(batch, stack, namespace, n), args.timeout, 1.0, f"{n} idle resources")
        result["settle_seconds"] = round(time.monotonic() - start, 1)
        # one more full cycle so the last job completions are mirrored everywhere before counting
        time.sleep(args.interval + 1)
        if args.rest:  # the long-run steady state: jobs past the history's margin, the heap frozen at rest
            time.sleep(args.rest)
        result["rest_seconds"] = args.rest
        result["batchop"] = measure(batch, stack, operator, 0, args.interval, cycles_from_lists=True,
                                    cycles=args.cycles)
        times = reaction(batch, stack, namespace, names, args.edits, run)
        result["reaction_seconds"] = [round(t, 3) for t in times]
        result["reaction_p50"] = round(harness.percentile(times, 0.5), 3)
        result["reaction_p95"] = round(harness.percentile(times, 0.95), 3)
        result["batchop_rss_after_edits_mib"] = round(operator.rss_mib(), 1)
    finally:
        operator.stop()
    if not args.skip_baseline:
        baseline = harness.OperatorProc.baseline(stack, batch, work, namespace, interval=args.interval)
        baseline.start()
        try:
            time.sleep(args.interval + 1)  # warm-up: every object's timer has started
            result["baseline"] = measure(batch, stack, baseline, args.cycles * args.interval, args.interval,
                                         cycles_from_lists=False)
        finally:
            baseline.stop()
    b = result["batchop"]
    line = (f"N={n} run {run}: batchop {b['batch_per_cycle']} Batch req/cycle, {b['kube_writes_per_cycle']} kube "
            f"writes/cycle, {b['cpu_per_cycle']} CPU s/cycle, RSS {b['rss_mib']} MiB; reaction p50 "
            f"{result['reaction_p50']}s p95 {result['reaction_p95']}s")
    if "baseline" in result:
        x = result["baseline"]
        line += (f"; baseline {x['batch_per_cycle']} Batch req/cycle, {x['kube_writes_per_cycle']} kube writes/cycle, "
                 f"{x['cpu_per_cycle']} CPU s/cycle, RSS {x['rss_mib']} MiB")
    print(line, flush=True)
    return result


def _cell(rows: list[dict[str, Any]], get: Any, fmt: str = "{:.1f}") -> str:
    values = [float(get(r)) for r in rows if get(r) is not None]
    if not values:
        return "n/a"
    s = harness.summary(values)
    if len(values) == 1:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def _per_resource(result: dict[str, Any], n: int) -> float | None:
    empty = result.get("batchop_rss_empty_mib")
    if empty is None:
        return None
    return (float(result["batchop"]["rss_mib"]) - float(empty)) * 1024 / n


def tables(results: list[dict[str, Any]]) -> tuple[str, str, str]:
    economy = ["| N | operator | Batch requests per cycle | Kubernetes writes per cycle | CPU s per cycle "
               "| RSS (MiB) |", "|---" * 6 + "|"]
    react = ["| N idle | edits per run | p50 (s) | p95 (s) | max (s) |", "|---" * 5 + "|"]
    memory = ["| N | batchop RSS, no resource yet (MiB) | batchop RSS at steady state (MiB) | per resource (KiB) "
              "| batchop CPU per cycle (ms) | timer baseline RSS (MiB) |", "|---" * 6 + "|"]
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        for who, label in (("batchop", "batchop"), ("baseline", "per-object timer (kopf)")):
            have = [r for r in rows if who in r]
            if not have:
                continue
            economy.append(
                f"| {n:,} | {label} | {_cell(have, lambda r, w=who: r[w]['batch_per_cycle'])} "
                f"| {_cell(have, lambda r, w=who: r[w]['kube_writes_per_cycle'])} "
                f"| {_cell(have, lambda r, w=who: r[w]['cpu_per_cycle'], '{:.2f}')} "
                f"| {_cell(have, lambda r, w=who: r[w]['rss_mib'], '{:.0f}')} |")
        all_times = [t for r in rows for t in r["reaction_seconds"]]
        react.append(f"| {n:,} | {len(rows[0]['reaction_seconds'])} "
                     f"| {_cell(rows, lambda r: r['reaction_p50'], '{:.2f}')} "
                     f"| {_cell(rows, lambda r: r['reaction_p95'], '{:.2f}')} | {max(all_times):.2f} |")
        based = [r for r in rows if "baseline" in r]
        memory.append(f"| {n:,} | {_cell(rows, lambda r: r.get('batchop_rss_empty_mib'), '{:.0f}')} "
                      f"| {_cell(rows, lambda r: r['batchop']['rss_mib'], '{:.0f}')} "
                      f"| {_cell(rows, lambda r, n=n: _per_resource(r, n), '{:.0f}')} "
                      f"| {_cell(rows, lambda r: r['batchop']['cpu_per_cycle'] * 1000, '{:.0f}')} "
                      f"| {_cell(based, lambda r: r['baseline']['rss_mib'], '{:.0f}')} |")
    return "\n".join(economy), "\n".join(react), "\n".join(memory)


ECONOMY_NOTES = """\
A cycle for batchop is one status poll of the account, measured over whole cycles (from the first page of
one schedule listing to that of the N-th next; a listing takes one request per 1,000 items; the period is
the interval plus the cycle's own duration); for the
baseline, one timer interval (every object's timer fires once). Batch requests are the service's own
admin counts per operation; Kubernetes writes are the API server's `apiserver_request_total` for
`batchschedules` with verb POST, PUT, PATCH or DELETE (status subresource and no-op patches included).
Targets: Batch requests per cycle no more than list paging needs (a handful), Kubernetes writes 0 when
nothing changed."""

REACTION_NOTES = """\
From the Kubernetes PATCH of `spec.jobSpecification.jobManagerTask.commandLine` on one resource (with
the other N-1 idle) until `GET /jobschedules/{id}` shows the new command line (polled every 20 ms)."""

MEMORY_NOTES = """\
RSS of the operator process (`VmRSS`) at steady state with N idle resources. Target: <= 150 MiB at
N = 1,000. CPU per cycle is in the economy table."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=30.0, help="resync / timer interval in seconds")
    parser.add_argument("--cycles", type=int, default=3, help="cycles measured at steady state")
    parser.add_argument("--edits", type=int, default=20, help="edits timed for the reaction time")
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--requests-per-second", type=float, default=1000.0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--rest", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long at rest before counting cycles (default 0: count from the first "
                             "idle cycle; 330 counts the long-run steady state: every job past the status "
                             "history's 5-minute margin, the heap frozen at rest)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--markdown", action="store_true", help="write the tables into docs/performance.md")
    parser.add_argument("--render", action="store_true",
                        help="only render bench/results/economy.json (no run); with --markdown, into the doc")
    args = parser.parse_args(argv)

    if args.render:
        saved = json.loads((harness.RESULTS / "economy.json").read_text())
        economy, react, memory = tables(saved["results"])
        print(economy, react, memory, sep="\n\n")
        if args.markdown:
            _write_doc(saved["results"], saved["machine"], saved.get("command", "python bench/economy.py"))
        return 0
    command = "python bench/economy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = harness.machine()
    work = harness.scratch("batchop-bench-econ-")
    stack = harness.KubeStack(work / "kube")
    batch = harness.LocalBatchProc(work / "batch")
    results: list[dict[str, Any]] = []
    try:
        for n in args.n:
            for run in range(1, args.runs + 1):
                results.append(harness.stamp(one_run(stack, batch, work, n, run, args)))
                merged = harness.merge_results("economy", results, args.n)
                harness.save_json("economy", {"machine": info, "args": vars(args), "command": command,
                                              "results": merged})
    finally:
        batch.stop()
        stack.stop()
    results = harness.merge_results("economy", results, args.n)
    economy, react, memory = tables(results)
    print(economy, react, memory, sep="\n\n")
    if args.markdown:
        _write_doc(results, info, command)
    return 0


def _write_doc(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> None:
    """The economy, reaction and memory sections of docs/performance.md from ``results``."""
    economy, react, memory = tables(results)
    taken = f"\n\nRows taken (N may come from separate invocations): {harness.taken_line(results)}."
    perfdoc.replace_section("economy", perfdoc.section("API economy at steady state", command, info,
                                                       economy, ECONOMY_NOTES + taken))
    perfdoc.replace_section("reaction", perfdoc.section("Reaction time", command, info, react,
                                                        REACTION_NOTES + taken))
    perfdoc.replace_section("memory", perfdoc.section("Memory and CPU", command, info, memory,
                                                      MEMORY_NOTES + taken))


if __name__ == "__main__":
    raise SystemExit(main())
