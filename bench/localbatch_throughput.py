"""Throughput of the local Batch service, driven by the async azure-batch SDK.

    .venv/bin/python bench/localbatch_throughput.py            # 3 runs, markdown table on stdout
    .venv/bin/python bench/localbatch_throughput.py --runs 5 --creates 3000 --json results.json

Each run starts a fresh ``python -m localbatch --no-execute --port 0`` pinned to one CPU core
(the client runs on the others) and measures, with ``azure.batch.aio.BatchClient`` and
SharedKey auth:

- creates/s: ``create_job_schedule`` at concurrency 32 (each create also makes the engine create
  ``job-1``, as Batch does);
- gets/s: ``get_job_schedule`` at concurrency 32;
- list of 1,000 schedules: latency of one ``GET /jobschedules`` page of 1,000 (through the SDK
  pipeline, JSON received) and of a full ``list_job_schedules()`` iteration (SDK model
  deserialisation included), median of 20.

Reports the median of the runs with min and max, and the machine. Targets: >= 300 creates/s,
list of 1,000 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def start_service(work_dir: Path, core: int | None) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    cmd = [
        sys.executable,
        "-m",
        "localbatch",
        "--port",
        "0",
        "--no-execute",
        "--work-dir",
        str(work_dir),
        "--log-level",
        "WARNING",
        "--log-format",
        "json",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}

    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, preexec_fn=pin)
    assert process.stdout is not None
    info = json.loads(process.stdout.readline())
    return process, info


def body(schedule_id: str) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "schedule": {"recurrenceInterval": "PT4H", "startWindow": "PT1H"},
        "jobSpecification": {"poolInfo": {"poolId": "bench-pool"}, "constraints": {"maxTaskRetryCount": 1}},
        "metadata": [{"name": "azurebatch.dev/owner", "value": "bench/x"}],
    }


async def run_concurrent(n: int, concurrency: int, op: Any) -> float:
    """Run ``op(i)`` for i in range(n) with ``concurrency`` workers; return operations per second."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def one_run(args: argparse.Namespace, core: int | None) -> dict[str, float]:
    from azure.batch.aio import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.rest import HttpRequest

    with tempfile.TemporaryDirectory(prefix="localbatch-bench-") as tmp:
        process, info = start_service(Path(tmp), core)
        try:
            client = BatchClient(info["endpoint"], AzureNamedKeyCredential(info["account"], info["key"]))
            async with client:
                prefix = f"bench{int(time.time() * 1000) % 100000}"
                creates = await run_concurrent(
                    args.creates, args.concurrency, lambda i: client.create_job_schedule(body(f"{prefix}-{i:06d}"))
                )
                gets = await run_concurrent(
                    args.creates, args.concurrency, lambda i: client.get_job_schedule(f"{prefix}-{i:06d}")
                )
                # exactly 1,000 schedules for the list measurement
                listing = [s async for s in client.list_job_schedules()]
                extra = [s.id for s in listing][1000:]
                for schedule_id in extra:
                    await client._delete_job_schedule_internal(schedule_id)
                for _attempt in range(600):  # deletes finish on the engine's loop; wait up to 30 s
                    if len([s async for s in client.list_job_schedules(select=["id"])]) == 1000:
                        break
                    await asyncio.sleep(0.05)
                raw_times, sdk_times = [], []
                request = HttpRequest("GET", "/jobschedules", params={"api-version": "2025-06-01"})
                for _ in range(20):
                    started = time.perf_counter()
                    response = await client.send_request(request)
                    await response.read()
                    raw_times.append(time.perf_counter() - started)
                    assert len(response.json()["value"]) == 1000
                    started = time.perf_counter()
                    items = [s async for s in client.list_job_schedules()]
                    sdk_times.append(time.perf_counter() - started)
                    assert len(items) == 1000
        finally:
            process.terminate()
            process.wait(30)
    return {
        "creates_per_s": creates,
        "gets_per_s": gets,
        "list_1000_ms": statistics.median(raw_times) * 1000,
        "list_1000_sdk_ms": statistics.median(sdk_times) * 1000,
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = runs[0].keys()
    return {
        k: {
            "median": statistics.median(r[k] for r in runs),
            "min": min(r[k] for r in runs),
            "max": max(r[k] for r in runs),
        }
        for k in keys
    }


def table(summary: dict[str, dict[str, float]], args: argparse.Namespace, pinned: bool) -> str:
    labels = {
        "creates_per_s": ("create_job_schedule, concurrency 32 (per second)", ">= 300"),
        "gets_per_s": ("get_job_schedule, concurrency 32 (per second)", ""),
        "list_1000_ms": ("list of 1,000 schedules, one page, HTTP + JSON (ms)", "< 100"),
        "list_1000_sdk_ms": ("list of 1,000 schedules, SDK iteration incl. model deserialisation (ms)", ""),
    }
    lines = [
        f"Machine: {machine()}; service pinned to one core: {'yes' if pinned else 'no'}; "
        f"{args.runs} runs of {args.creates} creates + {args.creates} gets; async SDK, SharedKey, --no-execute.",
        "",
        "| measure | median | min | max | target |",
        "|---|---|---|---|---|",
    ]
    for key, (label, target) in labels.items():
        s = summary[key]
        lines.append(f"| {label} | {s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {target} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--creates", type=int, default=2000, help="schedules created (and got) per run; >= 1000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the service to one core")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.creates < 1000:
        parser.error("--creates must be >= 1000 (the list measurement needs 1,000 schedules)")
    cores = sorted(os.sched_getaffinity(0))
    core = None if args.no_pin or len(cores) < 2 else cores[-1]
    if core is not None:
        os.sched_setaffinity(0, set(cores) - {core})
    runs = []
    for i in range(args.runs):
        result = asyncio.run(one_run(args, core))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()), file=sys.stderr)
        runs.append(result)
    summary = summarise(runs)
    print(table(summary, args, core is not None))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
