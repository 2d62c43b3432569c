"""bench/convergence.py's table on a tiny result: the ratios and the machine's CPU against what a run at the
target ratio would have (the column that says whether the target is within this machine's reach at all)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import convergence  # noqa: E402

ROW = {"n": 1000, "run": 1, "webhook": "both", "operator_seconds": 10.0, "floor_seconds": 2.0,
       "kube_create_seconds": 7.0, "kube_alone_seconds": 3.0, "ratio": 5.0, "batch_requests": {"create": 1000},
       "kube_writes": 2100, "operator_cpu_seconds": 4.0, "operator_rss_mib": 120.0, "operator_peak_rss_mib": 121.0,
       "machine_busy_cpu_seconds": 19.5, "cores": 2}


def test_the_table_sets_the_machines_cpu_against_a_run_at_the_target_ratio() -> None:
    row = {**ROW, "floor_busy_cpu_seconds": 2.5, "kube_alone_busy_cpu_seconds": 5.25}
    line = convergence.table([row]).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == len(convergence.table([row]).splitlines()[0].strip("|").split("|")) == 17
    assert cells[6].startswith("2.00 ")  # 10 / (3 + 2)
    assert cells[-2].startswith("1.95 (1.95-1.95) of 2 (0.21")  # 19.5 CPU s in 10 s, 4 of them the operator's
    # the floors took 7.75 CPU s, the run 19.5; at 1.3 x (3 + 2) s on 2 cores a run would have 13.0
    assert cells[-1] == "7.8 (7.8-7.8) / 19.5 (19.5-19.5) / 13.0 (13.0-13.0)"


def test_results_from_before_the_floors_were_timed_show_no_budget() -> None:
    cells = [c.strip() for c in convergence.table([dict(ROW)]).splitlines()[2].strip("|").split("|")]
    assert cells[-1] == "n/a" and cells[6].startswith("2.00 ")
