"""The resilience (chaos) tests at a larger N, with their counts written into ``docs/reliability.md``.

    .venv/bin/python bench/chaos.py --n 500              # all of tests/chaos with CHAOS_N=500
    .venv/bin/python bench/chaos.py --n 200 -k crash     # one test
    .venv/bin/python bench/chaos.py --from bench/results/chaos-20.jsonl --markdown   # table from a report

Runs ``pytest -m chaos tests/chaos`` with ``CHAOS_N`` and ``CHAOS_REPORT`` (each test appends its counts:
operations, kills, faults injected, duplicates, orphans, stuck...) to ``bench/results/chaos-<n>.jsonl``,
then, with ``--markdown``, replaces the results section of ``docs/reliability.md`` (between
``<!-- chaos:results start -->`` and ``<!-- chaos:results end -->``) with a table of those counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

DOC = harness.REPO / "docs" / "reliability.md"
COLUMNS = ("operations", "kills", "faults_injected", "duplicates", "orphans", "stuck", "missing", "wrong_spec",
           "not_ready")


def run_pytest(n: int, report: Path, select: str | None, examples: int | None) -> int:
    env = {**os.environ, "CHAOS_N": str(n), "CHAOS_REPORT": str(report)}
    if examples:
        env["CHAOS_EXAMPLES"] = str(examples)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "chaos", "tests/chaos",
               "--durations=0", "-o", "timeout=3600"]
    if select:
        command += ["-k", select]
    print("+", " ".join(command), f"(CHAOS_N={n})", flush=True)
    return subprocess.call(command, cwd=harness.REPO, env=env)


def _detail(line: dict[str, Any]) -> str:
    skip = {"test", "n", "time", "expected", "ready", *COLUMNS} - {"kills", "faults_injected"}
    parts = []
    for key, value in line.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def table(lines: list[dict[str, Any]]) -> str:
    out = ["| test | N | operations | duplicates | orphans | stuck | missing / wrong spec / not ready | details |",
           "|---" * 8 + "|"]
    for line in lines:
        shards = [v for k, v in line.items() if k.startswith("shard_") and isinstance(v, dict)]

        def get(key: str, line: dict[str, Any] = line, shards: list[dict[str, Any]] = shards) -> Any:
            return sum(int(s.get(key, 0)) for s in shards) if shards else line.get(key, "-")

        out.append(
            f"| {line['test']} | {line['n']} | {line.get('operations', '-')} | {get('duplicates')} | {get('orphans')} "
            f"| {get('stuck')} | {get('missing')} / {get('wrong_spec')} / {get('not_ready')} | {_detail(line)} |"
        )
    return "\n".join(out)


def replace_section(name: str, body: str) -> None:
    start, end = f"<!-- chaos:{name} start -->", f"<!-- chaos:{name} end -->"
    text = DOC.read_text() if DOC.exists() else "# Reliability\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="CHAOS_N: resources per test")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression (one test)")
    parser.add_argument("--examples", type=int, default=None, help="CHAOS_EXAMPLES for the hypothesis test")
    parser.add_argument("--from", dest="source", default=None, help="only render this JSON-lines report")
    parser.add_argument("--markdown", action="store_true", help="write the table into docs/reliability.md")
    args = parser.parse_args(argv)

    code = 0
    if args.source:
        report = Path(args.source)
    else:
        harness.RESULTS.mkdir(parents=True, exist_ok=True)
        report = harness.RESULTS / f"chaos-{args.n}.jsonl"
        report.unlink(missing_ok=True)
        started = time.monotonic()
        code = run_pytest(args.n, report, args.select, args.examples)
        print(f"pytest exit {code} after {time.monotonic() - started:.0f}s")
    lines = [json.loads(x) for x in report.read_text().splitlines() if x.strip()] if report.exists() else []
    print(table(lines))
    if args.markdown and lines:
        info = harness.machine()
        n = lines[0]["n"]
        body = (f"Command: `python bench/chaos.py --n {n}` (pytest -m chaos with CHAOS_N={n}); "
                f"{lines[0]['time']} to {lines[-1]['time']}; machine: {harness.machine_line(info)}.\n\n"
                + table(lines))
        replace_section("results", body)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
