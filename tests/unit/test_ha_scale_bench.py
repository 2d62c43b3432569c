"""bench/ha_scale.py's pure parts on tiny hand-made inputs: shard shares, holders read from Leases, the spread
check, resources held per replica, the max / sum over replicas and the Markdown table."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import economy  # noqa: E402
import ha_scale  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("shards", "replicas", "shares"), [
    (6, 1, [6]), (6, 2, [3, 3]), (6, 3, [2, 2, 2]), (4, 3, [2, 1, 1]), (2, 3, [1, 1, 0]), (6, 0, []),
])
def test_expected_shares(shards: int, replicas: int, shares: list[int]) -> None:
    assert ha_scale.expected_shares(shards, replicas) == shares


def test_holders_from_leases_keeps_only_held_shard_leases_of_the_id() -> None:
    leases = [
        ("bench-ha-shard-0", "a"), ("bench-ha-shard-1", "b"), ("bench-ha-shard-2", ""),  # released
        ("bench-ha-shard-3", None), ("bench-ha-shard-9", "a"),  # out of range
        ("bench-ha-members", None), ("other-shard-1", "c"), ("bench-ha-shard-x", "a"),
    ]
    assert ha_scale.holders_from_leases(leases, "bench-ha", 4) == {0: "a", 1: "b"}


def test_shards_by_replica_lists_every_identity() -> None:
    holders = {0: "a", 1: "b", 2: "a", 3: "stranger"}
    assert ha_scale.shards_by_replica(holders, ["a", "b", "c"]) == {"a": [0, 2], "b": [1], "c": []}


def test_spread_ok() -> None:
    ids = ["a", "b"]
    assert ha_scale.spread_ok({0: "a", 1: "b", 2: "a", 3: "b"}, ids, 4)
    assert not ha_scale.spread_ok({0: "a", 1: "a", 2: "a", 3: "b"}, ids, 4)  # 3 + 1: not balanced yet
    assert not ha_scale.spread_ok({0: "a", 1: "b", 2: "a"}, ids, 4)  # shard 3 not held
    assert not ha_scale.spread_ok({0: "a", 1: "b", 2: "a", 3: "gone"}, ids, 4)  # held by a replica not ours
    assert ha_scale.spread_ok({0: "a", 1: "a", 2: "a", 3: "a"}, ["a"], 4)  # one replica holds them all
    assert ha_scale.spread_ok({0: "a", 1: "b", 2: "c", 3: "a"}, ["a", "b", "c"], 4)  # 2 + 1 + 1
    assert not ha_scale.spread_ok({0: "a", 1: "b", 2: "b", 3: "b"}, ["a", "b", "c"], 4)  # c holds none


def test_resources_held_per_replica() -> None:
    objects = [{"metadata": {"labels": {"azurebatch.dev/shard": k}}} for k in ["0", "1", "1", "2", "3", "3", "3"]]
    objects.append({"metadata": {"name": "unlabelled"}})
    per_shard = ha_scale.resources_per_shard(objects)
    assert per_shard == {"0": 1, "1": 2, "2": 1, "3": 3, "": 1}
    assert ha_scale.resources_held(per_shard, [0, 2]) == 2
    assert ha_scale.resources_held(per_shard, [1, 3]) == 5
    assert ha_scale.resources_held(per_shard, []) == 0


def test_aggregate_max_and_sum_skip_missing_values() -> None:
    replicas = [
        {"cpu_burst_s": 3.0, "rss_steady_mib": 100.0, "resources": 60, "rss_rest_mib": None},
        {"cpu_burst_s": 5.0, "rss_steady_mib": 90.0, "resources": 40, "rss_rest_mib": float("nan")},
    ]
    got = ha_scale.aggregate(replicas, ["cpu_burst_s", "rss_steady_mib", "resources", "rss_rest_mib", "absent"])
    assert got["max"]["cpu_burst_s"] == 5.0 and got["sum"]["cpu_burst_s"] == 8.0
    assert got["max"]["rss_steady_mib"] == 100.0 and got["sum"]["rss_steady_mib"] == 190.0
    assert got["sum"]["resources"] == 100
    assert math.isnan(got["max"]["rss_rest_mib"]) and math.isnan(got["sum"]["absent"])


def _result(replicas: int, convergence: float, cpu: list[float], rss: list[float], run: int = 1) -> dict[str, object]:
    per = [{"cpu_burst_s": c, "rss_steady_mib": r, "rss_peak_mib": r + 10, "cpu_per_cycle_s": c / 100}
           for c, r in zip(cpu, rss, strict=True)]
    return {"n": 1000, "replicas": replicas, "shards": 6, "run": run, "convergence_s": convergence,
            "per_replica": per, **ha_scale.aggregate(per), "steady": {"batch_per_cycle": 3.0 * replicas}}


def test_table_one_row_per_replica_count_with_the_max_over_replicas() -> None:
    text = ha_scale.table([_result(2, 12.34, [4.0, 6.0], [120.0, 150.4]), _result(1, 20.0, [9.0], [200.0])])
    lines = text.splitlines()
    assert lines[0].startswith("| N | R | shards | convergence (s) | CPU burst per replica (s, max) |")
    assert lines[1] == "|---" * 9 + "|"
    assert lines[2] == "| 1,000 | 1 | 6 | 20.0 | 9.0 | 200 | 210 | 0.09 | 3.0 |"
    assert lines[3] == "| 1,000 | 2 | 6 | 12.3 | 6.0 | 150 | 160 | 0.06 | 6.0 |"
    assert len(lines) == 4


def test_table_names_runs_when_several_and_shows_missing_as_na() -> None:
    partial = {"n": 10, "replicas": 3, "shards": 6, "run": 2, "convergence_s": 1.5}  # stopped before steady state
    text = ha_scale.table([_result(3, 2.0, [1.0, 1.0, 1.0], [80.0, 80.0, 80.0]), partial])
    rows = text.splitlines()[2:]
    assert rows[0].startswith("| 10 | 3 (run 2) | 6 | 1.5 | n/a | n/a | n/a | n/a | n/a |")
    assert rows[1].startswith("| 1,000 | 3 (run 1) |")


def test_listing_starts_counts_first_pages_only() -> None:
    counts = {"list_job_schedules": {"total": 25, "nextPages": 18}, "list_jobs": {"total": 40, "nextPages": 30}}
    assert economy.listing_starts(counts) == 7
    assert economy.listing_starts({}) == 0
