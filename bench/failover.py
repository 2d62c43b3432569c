"""Failover and shard handover times of ``batchop run --leader-elect`` (docs/performance.md, "High availability").

Own stack: etcd + kube-apiserver, the local Batch service (``--no-execute``), operator processes.

- **Failover** (``--kills``, default 10 per kind): two replicas, one resource. Each round kills the Lease
  holder (SIGKILL: a crash; SIGTERM: a shutdown, which releases the Lease), edits the resource at the same
  moment, and measures until the Batch schedule carries the edit (applied by the new leader). The killed
  replica is started again as the standby before the next round. Default Lease timings (15 s / 10 s / 2 s).
- **Shard handover** (``--shards``, default 4, ``--n`` resources, ``--rounds``): one replica holds every
  shard; a second one joins: time from its start until it has applied an edit (made at its start) to a
  resource of a shard it received; then it is killed: time until the survivor applies an edit to a resource
  of the dead replica's shard. RSS of each replica at rest shows what the server-side label selector saves
  (without it, every replica would hold all N resources, as the single one does before the join).

    python bench/failover.py [--kills 10] [--n 200] [--shards 4] [--rounds 3] [--kinds SIGKILL,SIGTERM]

Writes bench/results/failover.json (``--out``) and redraws docs/img/failover.png from it (:mod:`plots`).
SIGTERM rounds edit once the old leader has exited (its
shutdown included in the time), so only the new leader can apply the edit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plots
from harness import (
    GROUP,
    PLURAL,
    VERSION,
    KubeStack,
    LocalBatchProc,
    OperatorProc,
    create_resources,
    machine,
    machine_line,
    percentile,
    save_json,
    scratch,
    summary,
    wait_until,
)

LEASE = "bench-leader"
RESYNC = 10.0


def command_line(tag: str) -> str:
    return f"/bin/bash -c 'echo {tag}'"


def edit(stack: KubeStack, ns: str, name: str, tag: str) -> None:
    patch = {"spec": {"jobSpecification": {"jobManagerTask": {"commandLine": command_line(tag)}}}}
    stack.api().patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)


def batch_command(batch: LocalBatchProc, schedule_id: str) -> str | None:
    schedules = (batch.state().get("schedules") or {}).values()
    schedule = next((s for s in schedules if str(s.get("id")).lower() == schedule_id.lower()), {})
    return ((schedule.get("jobSpecification") or {}).get("jobManagerTask") or {}).get("commandLine")


def schedule_id(stack: KubeStack, ns: str, name: str) -> str:
    obj = stack.api().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return str((obj.get("status") or {})["scheduleId"])


def lease_holder(stack: KubeStack, ns: str, name: str) -> str:
    result = stack.kubectl("get", "lease", name, "-n", ns, "-o", "json")
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "") if result.returncode == 0 else ""


def identity(op: OperatorProc) -> str:
    import re

    found = wait_until(lambda: re.search(r"identity (\S+),", op.logs()), 30, what="identity")
    return str(found.group(1))


def replica(stack: KubeStack, batch: LocalBatchProc, work: Path, ns: str, *extra: str) -> OperatorProc:
    args = ["--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", LEASE, *extra]
    return OperatorProc.batchop(stack, batch, work, [ns], resync=RESYNC, extra=args).start()


def failover(stack: KubeStack, batch: LocalBatchProc, work: Path, kills: int, how: str) -> list[float]:
    ns = f"failover-{how.lower()}"
    stack.create_namespace(ns)
    ops = [replica(stack, batch, work, ns), replica(stack, batch, work, ns)]
    create_resources(stack, ns, ["probe"])
    sid = wait_until(lambda: schedule_id(stack, ns, "probe"), 120, what="the probe's schedule")
    times: list[float] = []
    for round_ in range(kills):
        ids = {identity(op): op for op in ops if op.alive}
        holder = wait_until(lambda ids=ids: lease_holder(stack, ns, LEASE) in ids and lease_holder(stack, ns, LEASE),
                            60, what="a leader")
        leader = ids[holder]
        tag = f"{how}-{round_}"
        started = time.monotonic()
        if how == "SIGKILL":
            leader.kill()
        else:  # the edit after the old leader is gone: only the new one can apply it
            leader.stop()
        edit(stack, ns, "probe", tag)
        wait_until(lambda tag=tag: batch_command(batch, sid) == command_line(tag), 120, 0.05, what=f"edit {tag}")
        times.append(time.monotonic() - started)
        print(f"  {how} round {round_ + 1}: {times[-1]:.2f}s", flush=True)
        if leader.process is not None:
            leader.process.wait(30)
        ops = [op for op in ops if op is not leader] + [replica(stack, batch, work, ns)]
    for op in ops:
        op.stop()
    return times


def _shard_of_names(stack: KubeStack, ns: str) -> dict[str, str]:
    return {o["metadata"]["name"]: (o["metadata"].get("labels") or {}).get("azurebatch.dev/shard", "")
            for o in stack.list(ns)}


def _holders(stack: KubeStack, ns: str, shards: int) -> dict[str, str]:
    return {str(k): lease_holder(stack, ns, f"{LEASE}-shard-{k}") for k in range(shards)}


def _converged(stack: KubeStack, ns: str, n: int) -> bool:
    return sum(1 for o in stack.list(ns) if (o.get("status") or {}).get("scheduleId")) == n


def handover(stack: KubeStack, batch: LocalBatchProc, work: Path, n: int, shards: int, round_: int) -> dict[str, Any]:
    ns = f"handover-{round_}"
    stack.create_namespace(ns)
    first = replica(stack, batch, work, ns, "--shards", str(shards))
    first_id = identity(first)
    names = [f"s{i:04d}" for i in range(n)]
    create_resources(stack, ns, names)
    wait_until(lambda: _converged(stack, ns, n), 60 + n, 1.0, what="convergence with one replica")
    rss_alone = first.rss_mib()
    labels = _shard_of_names(stack, ns)
    ids = {name: schedule_id(stack, ns, name) for name in names}

    started = time.monotonic()
    second = replica(stack, batch, work, ns, "--shards", str(shards))
    second_id = identity(second)
    moved = wait_until(lambda: [k for k, h in _holders(stack, ns, shards).items() if h == second_id], 120,
                       what="a shard for the joiner")
    probe = next(name for name, shard in labels.items() if shard in moved)
    edit(stack, ns, probe, "joined")
    wait_until(lambda: batch_command(batch, ids[probe]) == command_line("joined"), 120, 0.05, what="joiner's edit")
    join_time = time.monotonic() - started
    wait_until(lambda: sorted(_holders(stack, ns, shards).values()).count(second_id) == shards // 2, 120,
               what="balanced shards")
    time.sleep(2 * RESYNC)  # both replicas at rest
    rss = {"alone": rss_alone, "first": first.rss_mib(), "second": second.rss_mib()}

    second_shards = [k for k, h in _holders(stack, ns, shards).items() if h == second_id]
    probe = next(name for name, shard in labels.items() if shard in second_shards)
    started = time.monotonic()
    second.kill()
    edit(stack, ns, probe, "left")
    wait_until(lambda: batch_command(batch, ids[probe]) == command_line("left"), 180, 0.05, what="survivor's edit")
    leave_time = time.monotonic() - started
    assert set(_holders(stack, ns, shards).values()) == {first_id}
    first.stop()
    return {"join_seconds": join_time, "leave_seconds": leave_time, "rss_mib": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="SIGKILL,SIGTERM", help="which failovers to measure")
    parser.add_argument("--out", default="failover", help="bench/results/<out>.json")
    args = parser.parse_args(argv)
    info = machine()
    print(machine_line(info), flush=True)
    work = scratch("batchop-failover-")
    stack = KubeStack()
    batch = LocalBatchProc(work / "batch")
    try:
        result: dict[str, Any] = {"machine": info, "kills": args.kills, "n": args.n, "shards": args.shards}
        for how in [k for k in args.kinds.split(",") if k]:
            times = failover(stack, batch, work, args.kills, how)
            result[how] = {"seconds": times, **summary(times), "p50": percentile(times, 0.5),
                           "p95": percentile(times, 0.95)}
        rounds = [handover(stack, batch, work, args.n, args.shards, r) for r in range(args.rounds)]
        if rounds:
            result["handover"] = {
                "rounds": rounds,
                "join": summary([r["join_seconds"] for r in rounds]),
                "leave": summary([r["leave_seconds"] for r in rounds]),
            }
        print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=str))
        save_json(args.out, result)
        if args.out == "failover":  # the figure docs/performance.md shows is drawn from bench/results/failover.json
            for path, _ in plots.render("failover"):
                print(f"figure: {path}", file=sys.stderr)
    finally:
        batch.stop()
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
