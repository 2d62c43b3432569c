"""The parts that keep the operator's cost linear and its bursts bounded, on their own (no API server, no Batch):
the in-flight limit of reconciles and the history step's result view."""

from __future__ import annotations

import asyncio
from typing import Any

from batchop.controller import history
from batchop.controller.tracking import Tracker


async def test_no_more_reconciles_in_flight_than_the_limit_and_all_finish() -> None:
    tracker = Tracker(max_in_flight=3)
    running = 0
    peak = 0

    async def one(i: int) -> None:
        nonlocal running, peak
        async with tracker.locked(("ns", f"r{i}")):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 10)
    assert peak == 3
    assert not tracker.locks and not tracker.lock_users  # nothing left behind for untracked resources


async def test_a_waiter_on_a_busy_resource_never_blocks_its_holder() -> None:
    """Slot before lock: two reconciles of one resource and a full set of others all finish."""
    tracker = Tracker(max_in_flight=2)
    order: list[str] = []

    async def one(key: str, tag: str) -> None:
        async with tracker.locked(("ns", key)):
            await asyncio.sleep(0.005)
            order.append(tag)

    await asyncio.wait_for(asyncio.gather(one("a", "a1"), one("a", "a2"), one("b", "b"), one("c", "c")), 10)
    assert sorted(order) == ["a1", "a2", "b", "c"] and order.index("a1") < order.index("a2")


def test_history_result_view_reads_the_book_without_copying_it() -> None:
    book: dict[str, tuple[str | None, dict[str, Any] | None]] = {"j1": ("success", None), "j2": (None, None)}
    view = history._Results(book)
    assert view.get("j1") == "success" and view.get("j2") is None and view.get("j3") is None
    book["j3"] = ("failure", {"failed": 1})
    assert view["j3"] == "failure" and len(view) == 3 and set(view) == {"j1", "j2", "j3"}


async def test_long_walks_give_other_tasks_a_turn_every_so_often() -> None:
    """A walk over many resources lets a waiting task (an edit's reconcile) run every ``every`` items, not
    only at its end."""
    from batchop.controller.turns import turns

    seen_at: list[int] = []
    walked = 0

    async def other() -> None:
        while walked < 1000:
            seen_at.append(walked)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    async for _ in turns(range(1000), every=100):
        walked += 1
    await task
    assert [n for n in seen_at if 0 < n < 1000] == list(range(100, 1000, 100))


async def test_walks_in_chunks_give_the_same_turns_and_every_item_once() -> None:
    """:func:`batchop.controller.turns.chunks`, the status cycle's walks: the items in order, in slices of
    ``every``, with a turn for a waiting task after each slice."""
    from batchop.controller.turns import chunks

    seen_at: list[int] = []
    walked: list[int] = []

    async def other() -> None:
        while len(walked) < 1000:
            seen_at.append(len(walked))
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    async for chunk in chunks(list(range(1000)), every=100):
        assert len(chunk) == 100
        walked.extend(chunk)
    await task
    assert walked == list(range(1000))
    assert [n for n in seen_at if 0 < n < 1000] == list(range(100, 1000, 100))
    assert [list(c) async for c in chunks([1, 2, 3], every=2)] == [[1, 2], [3]]
