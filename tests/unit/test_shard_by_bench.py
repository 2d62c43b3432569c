"""bench/shard_by.py's table on a tiny hand-made result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import shard_by  # noqa: E402

pytestmark = pytest.mark.unit


def result(mode: str, listings: float, held: list[int]) -> dict[str, object]:
    return {"mode": mode, "n": 2000, "accounts": 20, "replicas": 2, "shards": 6, "run": 1, "converged_seconds": 41.26,
            "steady": {"intervals": 3.0, "cpu_per_interval": 0.4567, "rss_mib": [101.4, 99.6],
                       "listings_per_interval_per_account": {"median": listings, "min": listings, "max": listings},
                       "batch_per_interval_per_account": {"median": 3.5, "min": 3.0, "max": 4.25}},
            "resources_per_replica": held}


def test_table_has_one_row_per_mode_with_every_column() -> None:
    text = shard_by.table([result("resource", 2.0, [1000, 1000]), result("account", 1.0, [1300, 700])])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[1].count("|---") == lines[0].count(" | ") + 1
    assert lines[2] == ("| resource | 2,000 | 20 | 2 (6) | 41.3 | 2.00 (2.00-2.00) | 3.50 (3.00-4.25) | 0.457 "
                        "| 1000 / 1000 | 101 / 100 |")
    assert lines[3].startswith("| account |") and "| 1300 / 700 |" in lines[3]
