"""Where the operator's CPU goes: py-spy profiles of ``batchop run`` in a creation burst and at steady state.

    .venv/bin/python bench/profile_operator.py --n 10000 --out /tmp/perf/profile-10000
    .venv/bin/python bench/profile_operator.py --n 1000 --tree /tmp/perf/before --out /tmp/perf/before-1000

One local stack (kube-apiserver + etcd, the local Batch service ``--no-execute``); the operator's code comes
from ``--tree`` (default: this checkout), so the same script profiles a commit before a change. py-spy
(the ``bench`` extra: ``pip install -e .[bench]``) samples the operator process from outside
(``--nonblocking``: the process is never paused) into collapsed stacks:

1. **burst**: from the first Kubernetes create of N resources until every one is mirrored (``Ready=True``,
   ``status.state``), with the operator's CPU seconds, its peak RSS (``VmHWM``) and its RSS at the end;
2. **steady**: once every job-1 has completed and been mirrored (and ``--rest`` seconds more), ``--cycles``
   whole status cycles (counted from the service's schedule listings as in ``bench/economy.py``), with CPU
   seconds per cycle and RSS.

The operator serves both admission webhooks, as shipped (``--webhook``; the profiles in docs/performance.md
before its seventh pass ran with none, which ``--webhook off`` reproduces).

For each phase it writes ``<out>/<phase>.collapsed`` (flamegraph input: ``flamegraph.pl`` or speedscope.app
read it) and prints the functions with the most samples on their own (self) and anywhere on the stack
(inclusive), and the share of samples by package. ``<out>/summary.json`` holds the numbers.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import convergence
import economy
import harness

PYSPY = Path(sys.executable).parent / "py-spy"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class Sampler:
    """``py-spy record`` attached to a process until :meth:`stop` (SIGINT makes py-spy write its output)."""

    def __init__(self, pid: int, out: Path, rate: int, native: bool = False) -> None:
        self.out = out
        command = [str(PYSPY), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                   "--output", str(out), *(["--native"] if native else ["--nonblocking"])]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _package(path: str) -> str:
    """A frame's file as a package name: ``kopf``, ``batchop.controller``, ``azure``, ``asyncio``..."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/operator/" in path:
        parts = path.split("/operator/", 1)[1].split("/")
        return ".".join(parts[:2]) if len(parts) > 2 else parts[0]
    if "/" in path and not path.startswith(("/", "<")):  # py-spy names files relative to their sys.path entry
        parts = path.split("/")
        if parts[0] in ("batchop", "batchwire", "localbatch") and len(parts) > 2:
            return ".".join(parts[:2])
        return parts[0]
    name = path.rsplit("/", 1)[-1]
    return f"stdlib:{name.removesuffix('.py')}"


def analyse(collapsed: Path, top: int) -> dict[str, Any]:
    """Self and inclusive samples per function, and self samples per package, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        names = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame.strip())
            func, path = (match["func"], match["file"]) if match else (frame, "")
            names.append((f"{func} ({'/'.join(path.rsplit('/', 2)[-2:])})", path))
        if not names:
            continue
        own[names[-1][0]] += count
        packages[_package(names[-1][1])] += count
        for name in {n for n, _ in names}:
            inclusive[name] += count

    def rows(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * c / max(1, total), 1)) for name, c in counter.most_common(top)]

    return {"samples": total, "self": rows(own), "inclusive": rows(inclusive), "packages": rows(packages)}


def report(phase: str, found: dict[str, Any]) -> None:
    print(f"\n== {phase}: {found['samples']} samples")
    for title in ("packages", "self", "inclusive"):
        print(f"-- {title} (% of samples)")
        for name, share in found[title]:
            print(f"  {share:5.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--tree", type=Path, default=harness.REPO, help="checkout whose operator/ is profiled")
    parser.add_argument("--out", type=Path, required=True, help="directory for the profiles and summary.json")
    parser.add_argument("--resync", type=float, default=30.0)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--native", action="store_true",
                        help="py-spy --native: C frames too (the garbage collector's time shows as gc_collect_main); "
                             "py-spy then pauses the process for each sample")
    parser.add_argument("--phases", nargs="+", default=["burst", "steady"], choices=["burst", "steady"])
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--rest", type=float, default=0.0, metavar="SECONDS",
                        help="steady phase: wait this long at rest before sampling (330 profiles the long-run "
                             "steady state `bench/economy.py --rest 330` measures: jobs past the history's "
                             "5-minute margin, the heap frozen at rest)")
    parser.add_argument("--webhook", choices=("off", "validating", "both"), default="both",
                        help="the operator's admission webhooks, as in bench/convergence.py (default: both, "
                             "what ships)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `batchop run` arguments")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    info = harness.machine()
    work = harness.scratch("batchop-bench-prof-")
    stack = harness.KubeStack(work / "kube")
    batch = harness.LocalBatchProc(work / "batch")
    namespace = f"prof-{args.n}-{int(time.time()) % 100000}"
    summary: dict[str, Any] = {"machine": info, "n": args.n, "tree": str(args.tree), "args": vars(args)}
    try:
        stack.create_namespace(namespace)
        extra = ["--requests-per-second", "1000", *args.extra]
        if args.webhook != "off":
            extra += convergence.webhook_arguments(work / "webhook")
        operator = harness.OperatorProc.batchop(stack, batch, work, [namespace], resync=args.resync, extra=extra)
        operator.env["PYTHONPATH"] = str(args.tree.resolve() / "operator")
        operator.start()
        try:
            if args.webhook != "off":
                convergence.wait_for_webhooks(stack, namespace, args.tree, mutating=args.webhook == "both")
            summary.update(_phases(args, stack, batch, operator, namespace))
        finally:
            operator.stop()
            convergence.remove_webhooks(stack)
    finally:
        batch.stop()
        stack.stop()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nsummary: {args.out / 'summary.json'}")
    return 0


def _phases(args: argparse.Namespace, stack: harness.KubeStack, batch: harness.LocalBatchProc,
            operator: harness.OperatorProc, namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_empty_mib": round(operator.rss_mib(), 1)}
    names = [f"p{i:05d}" for i in range(args.n)]
    sampler = (Sampler(operator.pid, args.out / "burst.collapsed", args.rate, args.native)
               if "burst" in args.phases else None)
    watcher = convergence.MirrorWatch(stack, namespace)
    cpu0 = operator.cpu_seconds()
    start = time.perf_counter()
    harness.create_resources(stack, namespace, names, spec=harness.schedule_spec(prefix="prof"))
    created = time.perf_counter() - start
    watcher.wait(args.n, args.timeout)
    out["burst"] = {"seconds": round(watcher.done_at - start, 2), "kube_create_seconds": round(created, 2),
                    "cpu_seconds": round(operator.cpu_seconds() - cpu0, 2), "rss_mib": round(operator.rss_mib(), 1),
                    "peak_rss_mib": round(harness.proc_hwm_mib(operator.pid), 1),
                    "loadavg": harness.machine()["loadavg"]}
    print(f"burst: {out['burst']}", flush=True)
    if sampler is not None:
        sampler.stop()
        out["burst"]["profile"] = analyse(sampler.out, args.top)
        report("burst", out["burst"]["profile"])
    if "steady" not in args.phases:
        return out
    harness.wait_until(lambda: economy.settled(batch, stack, namespace, args.n), args.timeout, 2.0, "idle")
    time.sleep(args.resync + 1 + args.rest)
    first = economy._cycle_marks(batch)
    harness.wait_until(lambda: economy._cycle_marks(batch) > first, 3 * args.resync + 600, 0.05, "a cycle")
    sampler = Sampler(operator.pid, args.out / "steady.collapsed", args.rate, args.native)
    target = economy._cycle_marks(batch) + args.cycles
    cpu0, t0 = operator.cpu_seconds(), time.monotonic()
    harness.wait_until(lambda: economy._cycle_marks(batch) >= target, args.cycles * (3 * args.resync + 600), 0.05,
                       "cycles")
    cpu, elapsed = operator.cpu_seconds() - cpu0, time.monotonic() - t0
    sampler.stop()
    out["steady"] = {"cycles": args.cycles, "cpu_per_cycle": round(cpu / args.cycles, 3),
                     "period_s": round(elapsed / args.cycles, 2), "rss_mib": round(operator.rss_mib(), 1),
                     "peak_rss_mib": round(harness.proc_hwm_mib(operator.pid), 1),
                     "loadavg": harness.machine()["loadavg"], "profile": analyse(sampler.out, args.top)}
    print(f"steady: cpu/cycle {out['steady']['cpu_per_cycle']} s, period {out['steady']['period_s']} s, "
          f"RSS {out['steady']['rss_mib']} MiB", flush=True)
    report("steady", out["steady"]["profile"])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
