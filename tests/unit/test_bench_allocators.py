"""bench/tracemalloc_operator.py's books of the two allocators: pymalloc's read off ``sys._debugmallocstats``
(which C writes to file descriptor 2), glibc's from ``mallinfo2``."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import tracemalloc_operator  # noqa: E402


def test_pymalloc_books_move_with_what_python_holds() -> None:
    before = tracemalloc_operator._pymalloc()
    assert set(before) == {"arenas", "in_use", "free_blocks", "free_pools"}
    held = [[i] for i in range(200_000)]  # small lists: pymalloc's blocks, several 1 MiB arenas' worth
    after = tracemalloc_operator._pymalloc()
    assert after["in_use"] - before["in_use"] > 200_000 * 32
    assert after["arenas"] > before["arenas"]
    del held


def test_glibc_books_count_what_malloc_hands_out() -> None:
    books = tracemalloc_operator._glibc()
    if not books:  # not glibc (musl, macOS): nothing to read
        return
    before = books["in_use"] + books["mmap"]
    held = bytearray(8 * 2**20)  # beyond pymalloc's 512-byte blocks: malloc's
    after = tracemalloc_operator._glibc()
    assert after["in_use"] + after["mmap"] - before >= 8 * 2**20
    del held


class _Keeper:
    def __init__(self) -> None:
        self.kept: list[dict[str, object]] = []


def test_holders_name_who_keeps_what_a_line_allocated() -> None:
    import json
    import tracemalloc

    tracemalloc.start(8)
    try:
        keeper = _Keeper()
        keeper.kept = [json.loads(json.dumps({"spec": {"n": i}})) for i in range(5)]
        found = tracemalloc_operator._holders(["decoder.py:353", "nowhere.py:1"], per=2)
    finally:
        tracemalloc.stop()
    chains = found["decoder.py:353"]
    assert len(chains) == 2
    assert all(chain[0] in ("dict['spec']", "dict['n']") and "_Keeper" in chain for chain in chains), chains
    assert found["nowhere.py:1"] == []
