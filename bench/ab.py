"""A/B of one benchmark between two commits, alternating runs so that both see the same machine.

    .venv/bin/python bench/ab.py --a cc6d8d6 --b HEAD --rounds 3 convergence --n 1000
    .venv/bin/python bench/ab.py --a cc6d8d6 --b HEAD --rounds 3 economy --n 1000 --skip-baseline

Each commit is checked out into its own temporary git worktree; every round runs the benchmark once in
A's tree, then once in B's (``--runs 1``), each with the same interpreter, so the operator the benchmark
starts (``python -m batchop`` with ``PYTHONPATH=<tree>/operator``) is that commit's code. The machine is
shared and its speed drifts over minutes; alternating puts the drift into both columns alike, and the
table gives the median of the rounds per side with the B/A ratio. Raw runs go to
``bench/results/ab-<benchmark>.json``; ``--markdown`` also writes the table into docs/performance.md
between ``<!-- bench:ab-<benchmark> start -->`` and ``<!-- bench:ab-<benchmark> end -->``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness
import perfdoc

REPO = Path(__file__).resolve().parents[1]

Metric = tuple[str, Callable[[dict[str, Any]], float | None]]


def _per(key: str, per: str = "n") -> Callable[[dict[str, Any]], float | None]:
    return lambda r: (r[key] / r[per]) if r.get(key) is not None and r.get(per) else None


METRICS: dict[str, list[Metric]] = {
    "convergence": [
        ("convergence (s)", lambda r: r.get("operator_seconds")),
        ("floor: SDK creates alone (s)", lambda r: r.get("floor_seconds")),
        ("Kubernetes creates alone (s)", lambda r: r.get("kube_alone_seconds")),
        ("Kubernetes creates beside the operator (s)", lambda r: r.get("kube_create_seconds")),
        ("ratio to (Kubernetes creates alone + floor)",
         lambda r: r["operator_seconds"] / (r["kube_alone_seconds"] + r["floor_seconds"])
         if r.get("kube_alone_seconds") and r.get("floor_seconds") else None),
        ("operator CPU (s)", lambda r: r.get("operator_cpu_seconds")),
        ("operator RSS at the end (MiB)", lambda r: r.get("operator_rss_mib")),
        ("operator peak RSS (MiB)", lambda r: r.get("operator_peak_rss_mib")),
        ("operator CPU per resource (ms)", lambda r: 1000 * r["operator_cpu_seconds"] / r["n"]),
        ("Kubernetes writes per resource", _per("kube_writes")),
        ("Batch requests per resource", lambda r: sum(r["batch_requests"].values()) / r["n"]),
    ],
    "economy": [
        ("Batch requests per cycle", lambda r: r["batchop"].get("batch_per_cycle")),
        ("Kubernetes writes per cycle", lambda r: r["batchop"].get("kube_writes_per_cycle")),
        ("CPU per cycle (s)", lambda r: r["batchop"].get("cpu_per_cycle")),
        ("reaction p50 (s)", lambda r: r.get("reaction_p50")),
        ("reaction p95 (s)", lambda r: r.get("reaction_p95")),
        ("RSS after the edits (MiB)", lambda r: r.get("batchop_rss_after_edits_mib")),
        ("settle (s)", lambda r: r.get("settle_seconds")),
    ],
}


def worktree(ref: str, parent: Path) -> tuple[Path, str]:
    """A detached worktree of ``ref`` under ``parent``; returns it and the commit's short hash. ``ref`` may
    also be a directory holding a checkout (a commit plus uncommitted changes, to A/B one change alone):
    it is used as it is, labelled by its name."""
    if Path(ref).is_dir():
        return Path(ref).resolve(), Path(ref).name
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    tree = parent / commit
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(tree), commit], cwd=REPO, check=True,
                   capture_output=True)
    return tree, commit


def run_once(tree: Path, bench: str, args: Sequence[str]) -> dict[str, Any]:
    """One ``--runs 1`` run of ``bench`` in ``tree``; the result it saved for its first ``--n``."""
    script = tree / "bench" / f"{bench}.py"
    subprocess.run([sys.executable, str(script), *args, "--runs", "1"], cwd=tree, check=True)
    saved = json.loads((tree / "bench" / "results" / f"{bench}.json").read_text())
    newest = max(saved["results"], key=lambda r: r.get("taken", ""))
    return dict(newest)


def table(bench: str, runs: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> str:
    lines = [f"| measure | A: {labels['a']} (median) | B: {labels['b']} (median) | B / A | A runs | B runs |",
             "|---|---|---|---|---|---|"]
    for name, get in METRICS[bench]:
        cells = {}
        values = {}
        for side in ("a", "b"):
            got = [v for v in (get(r) for r in runs[side]) if v is not None]
            values[side] = got
            cells[side] = f"{statistics.median(got):.3g}" if got else "n/a"
        a, b = values["a"], values["b"]
        ratio = (f"{statistics.median(b) / statistics.median(a):.2f}"
                 if a and b and statistics.median(a) else "n/a")
        each = {side: ", ".join(f"{v:.3g}" for v in values[side]) for side in ("a", "b")}
        lines.append(f"| {name} | {cells['a']} | {cells['b']} | {ratio} | {each['a']} | {each['b']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the commit before (git ref, or a checkout's directory)")
    parser.add_argument("--b", default="HEAD", help="the commit after (git ref or directory, default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="write the table into docs/performance.md")
    parser.add_argument("bench", choices=sorted(METRICS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark (without --runs)")
    args = parser.parse_args(argv)
    info = harness.machine()
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="batchop-ab-") as parent:
        trees = {side: worktree(ref, Path(parent)) for side, ref in (("a", args.a), ("b", args.b))}
        try:
            for round_ in range(1, args.rounds + 1):
                for side in ("a", "b"):
                    print(f"ab: round {round_}/{args.rounds}, {side.upper()} ({trees[side][1]})", flush=True)
                    runs[side].append(harness.stamp(run_once(trees[side][0], args.bench, args.args)))
        finally:
            for side, (tree, _) in trees.items():
                if not Path(getattr(args, side)).is_dir():
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    labels = {side: trees[side][1] for side in ("a", "b")}
    text = table(args.bench, runs, labels)
    data = {"machine": info, "labels": labels, "args": args.args, "rounds": args.rounds, "runs": runs}
    path = harness.save_json(f"ab-{args.bench}", data)
    print(text)
    print(f"raw results: {path}")
    if args.markdown:
        command = "python bench/ab.py " + " ".join(sys.argv[1:] if argv is None else argv)
        notes = (f"A = {labels['a']}, B = {labels['b']}; {args.rounds} rounds, A then B in each; medians per side, "
                 "every run listed.")
        perfdoc.replace_section(f"ab-{args.bench}",
                                perfdoc.section(f"A/B: {args.bench}", command, info, text, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
