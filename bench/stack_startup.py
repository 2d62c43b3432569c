"""Time the local stack: ``batchop dev up`` (prerequisites cached) and ``batchop dev down``, a few runs.

    .venv/bin/python bench/stack_startup.py [--runs 3] [--no-operator] [--json FILE]

Each run starts a fresh stack in a temporary directory with the real CLI, reads the stack's own startup time
(``stack.json``: from the first process started to everything ready, CRDs Established, operator answering its
liveness probe) and the CLI's wall time, then times ``batchop dev down``. Prints median, min and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(operator: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="batchop-bench-stack-") as tmp:
        state = Path(tmp) / "state"
        args = [sys.executable, "-m", "batchop", "dev", "up", "--dir", str(state)]
        if not operator:
            args.append("--no-operator")
        started = time.monotonic()
        up = subprocess.run(args, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if up.returncode != 0:
            raise SystemExit(f"dev up failed: {up.stderr}")
        startup = json.loads((state / "stack.json").read_text())["startup_seconds"]
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "batchop", "dev", "down", "--dir", str(state)], capture_output=True,
                       check=True)
        return {"up_cli_wall_s": wall, "stack_startup_s": startup, "down_s": time.monotonic() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-operator", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = [run_once(not args.no_operator) for _ in range(args.runs)]
    summary = {
        key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs),
              "max": max(r[key] for r in runs)}
        for key in runs[0]
    }
    for key, values in summary.items():
        print(f"{key:<16} median {values['median']:6.1f}  min {values['min']:6.1f}  max {values['max']:6.1f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
