"""Loops over every resource of an account give the event loop a turn now and then.

A status cycle walks all the account's resources several times (history limits, failed tasks, mirroring).
Most steps are plain computation with no ``await`` that actually waits, so at 10,000 resources one walk held
the event loop for most of a second, and a user's edit (its watch event, its reconcile) waited behind it: the
edit-to-Batch p95 grew with N. :func:`turns` hands the loop over every :data:`TURN_EVERY` items, which bounds
that wait to the cost of :data:`TURN_EVERY` items whatever N.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TypeVar

TURN_EVERY = 200
"""Items between two turns: a few milliseconds of work per item at most, so a turn comes every few tens of
milliseconds, while the cost of the turns themselves (one ``sleep(0)`` each) stays negligible."""

T = TypeVar("T")


async def turns(items: Iterable[T], every: int = TURN_EVERY) -> AsyncIterator[T]:
    """``items`` one by one, with ``await asyncio.sleep(0)`` after every ``every`` of them."""
    for index, item in enumerate(items, 1):
        yield item
        if index % every == 0:
            await asyncio.sleep(0)


async def chunks(items: Sequence[T], every: int = TURN_EVERY) -> AsyncIterator[Sequence[T]]:
    """``items`` in slices of ``every``, with ``await asyncio.sleep(0)`` after each: :func:`turns` for the
    walks over every resource of a status cycle, where a step of an asynchronous generator per item cost more
    than most items' own work (at rest, a few microseconds)."""
    for start in range(0, len(items), every):
        yield items[start : start + every]
        await asyncio.sleep(0)
