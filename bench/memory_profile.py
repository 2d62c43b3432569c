"""Where the operator's memory goes: tracemalloc snapshots of ``batchop run`` at N = 0 and with N idle resources.

    .venv/bin/python bench/memory_profile.py --n 1000

One local stack (kube-apiserver + etcd, the local Batch service ``--no-execute``); the operator runs under
``bench/tracemalloc_operator.py`` (``batchop run`` with :mod:`tracemalloc` on, one frame per allocation,
a snapshot written on ``SIGUSR1``). The script takes a snapshot with no resource, creates N, waits until all
are mirrored and a few status cycles have passed, takes another, and prints RSS, the memory Python traces,
and the source lines that grew most between the two. tracemalloc costs memory and CPU of its own: read
the RSS figures in ``docs/performance.md`` from ``bench/economy.py``, and these for where the growth is.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

WRAPPER = Path(__file__).resolve().parent / "tracemalloc_operator.py"


def snapshot(operator: harness.OperatorProc, out: Path, timeout: float = 600.0) -> dict[str, Any]:
    """Ask the operator for a snapshot (SIGUSR1) and read it once written."""
    out.unlink(missing_ok=True)
    assert operator.process is not None
    operator.process.send_signal(signal.SIGUSR1)
    harness.wait_until(out.exists, timeout, 0.2, f"snapshot {out}")  # written to a temp file, then renamed
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--resync", type=float, default=5.0, help="operator --resync-interval")
    parser.add_argument("--cycles", type=int, default=3, help="status cycles to wait once all are mirrored")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=1,
                        help="frames kept per allocation (>1: call chains; 0: tracemalloc off, the resident size "
                        "and the allocators' books as the product runs)")
    parser.add_argument("--holders", nargs="*", default=[], metavar="FILE:LINE",
                        help="source lines (e.g. decoder.py:353) whose live objects' holders to print")
    args = parser.parse_args(argv)

    work = harness.scratch("batchop-bench-mem-")
    stack = harness.KubeStack(work / "kube")
    batch = harness.LocalBatchProc(work / "batch")
    namespace = f"mem-{int(time.time()) % 100000}"
    dump = work / "snapshot.json"
    stop: Any = None
    try:
        stack.create_namespace(namespace)
        operator = harness.OperatorProc.batchop(
            stack, batch, work, [namespace], resync=args.resync, extra=["--requests-per-second", "1000"]
        )
        operator.command[1:3] = [str(WRAPPER)]  # python bench/tracemalloc_operator.py <batchop args>
        operator.env["BATCHOP_TRACEMALLOC_OUT"] = str(dump)
        operator.env["BATCHOP_TRACEMALLOC_FRAMES"] = str(args.frames)
        operator.env["BATCHOP_TRACEMALLOC_HOLDERS"] = ",".join(args.holders)
        operator.start()
        stop = operator.stop
        time.sleep(args.resync * 2)  # idle cycles with nothing tracked
        empty = snapshot(operator, dump)
        empty_rss = operator.rss_mib()
        names = [f"m{i:05d}" for i in range(args.n)]
        harness.create_resources(stack, namespace, names, spec=harness.schedule_spec(prefix="mem"))
        harness.wait_until(
            lambda: sum(harness.mirrored(o) for o in stack.list(namespace)) >= args.n, 900, 2.0, "all mirrored"
        )
        time.sleep(args.resync * args.cycles)
        full = snapshot(operator, dump)
        full_rss = operator.rss_mib()
        operator.stop()
    finally:
        if stop is not None:
            stop()  # also when a wait timed out: never leave the operator running
        batch.stop()
        stack.stop()

    before = {row["where"]: row["bytes"] for row in empty["top"]}
    growth = sorted(
        ((row["bytes"] - before.get(row["where"], 0), row["where"]) for row in full["top"]), reverse=True
    )[: args.top]
    per = (full["traced"] - empty["traced"]) / max(1, args.n) / 1024
    print(f"RSS: {empty_rss:.0f} MiB with no resource, {full_rss:.0f} MiB with {args.n} "
          f"({(full_rss - empty_rss) * 1024 / max(1, args.n):.0f} KiB each)")
    print(f"traced by Python: {empty['traced'] / 2**20:.1f} MiB, then {full['traced'] / 2**20:.1f} MiB "
          f"({per:.1f} KiB per resource); peak {full['peak'] / 2**20:.1f} MiB")
    if "tracked" in full:
        print(f"objects the garbage collector tracks (not frozen): {empty['tracked']:,} with no resource, "
              f"{full['tracked']:,} with {args.n} ({(full['tracked'] - empty['tracked']) / max(1, args.n):.0f} each); "
              f"by type: " + ", ".join(f"{name} {count:,}" for name, count in full["census"]))
    for label, snap in (("no resource", empty), (f"{args.n}", full)):
        books = snap.get("allocators") or {}
        py, libc = books.get("pymalloc") or {}, books.get("glibc") or {}
        if py:
            print(f"allocators with {label}: pymalloc {py['arenas']} arenas of 1 MiB: "
                  f"{py['in_use'] / 2**20:.1f} MiB in use, {py['free_blocks'] / 2**20:.1f} MiB in free blocks, "
                  f"{py['free_pools'] / 2**20:.1f} MiB in free pools; glibc heap {libc.get('heap', 0) / 2**20:.1f} MiB "
                  f"({libc.get('in_use', 0) / 2**20:.1f} in use, {libc.get('free', 0) / 2**20:.1f} free), "
                  f"mmap {libc.get('mmap', 0) / 2**20:.1f} MiB")
    for where, chains in (full.get("holders") or {}).items():
        print(f"held, of what {where} allocated:")
        for chain in chains:
            print("  " + " <- ".join(chain))
    if not full["top"]:
        return 0
    print("largest growth by source line:")
    for grown, where in growth:
        print(f"  {grown / 2**20:8.2f} MiB  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
