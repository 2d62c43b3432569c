"""bench/profile_operator.py's reading of py-spy's collapsed stacks: samples by function and by package (py-spy
names a file relative to its sys.path entry: ``batchop/controller/poller.py``, ``asyncio/events.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import profile_operator  # noqa: E402


def test_frames_are_counted_by_package_as_py_spy_names_their_files(tmp_path: Path) -> None:
    collapsed = tmp_path / "steady.collapsed"
    collapsed.write_text(
        "main (batchop/cli/main.py:62);Poller.cycle (batchop/controller/poller.py:234) 6\n"
        "main (batchop/cli/main.py:62);Handle._run (asyncio/events.py:80);raw_decode (json/decoder.py:353) 3\n"
        "main (batchop/cli/main.py:62);select (selectors.py:415) 1\n"
        "run (/srv/venv/lib/python3.11/site-packages/kopf/_core/reactor/running.py:10) 2\n"
    )
    found = profile_operator.analyse(collapsed, top=10)
    assert found["samples"] == 12
    assert dict(found["packages"]) == {"batchop.controller": 50.0, "json": 25.0, "kopf": 16.7,
                                       "stdlib:selectors": 8.3}
    assert dict(found["inclusive"])["main (cli/main.py)"] == 83.3
    assert dict(found["self"])["Poller.cycle (controller/poller.py)"] == 50.0


async def test_the_in_process_status_cycle_bench_measures_a_cycle_at_rest() -> None:
    """bench/status_cycle.py: its stand-in Batch brings the poller to rest (every member skipped as unchanged,
    schedules + jobs + pools requested) before it times cycles; it refuses to report a cycle that is not."""
    import status_cycle

    found = await status_cycle.measure(30, cycles=2, warmup=3)
    assert found["n"] == 30 and found["cpu_per_cycle"] > 0 and len(found["gc_per_cycle"]) == 3
