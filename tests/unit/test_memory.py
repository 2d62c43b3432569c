"""batchop.memory: the heap trim runs, and at most once per interval."""

from __future__ import annotations

from batchop import memory


def test_release_trims_at_most_once_per_interval() -> None:
    memory._last = float("-inf")
    assert memory.release(now=1000.0) is True, "glibc's malloc_trim should be found on Linux"
    assert memory.release(now=1000.0 + memory.MIN_INTERVAL / 2) is False
    assert memory.release(now=1000.0 + memory.MIN_INTERVAL + 1) is True
