"""One poller task per Batch credential, started by the first reconcile that uses it.

Each :class:`~batchop.controller.poller.Poller` mirrors the tracked resources of one credential group (one
account endpoint, account name and key: :attr:`batchop.batch.credentials.AccountRef.credential_id`) with one
listing per cycle, through that credential's gateway. Resources whose Secrets hold the same key share a
poller; two Secrets with different keys for one account give two pollers, so each resource is polled with
its own credential and a wrong key shows on its own resources only. A reconcile that wrote to Batch wakes
its group's poller, so the next cycle comes at once instead of at the next interval. A poller whose group
has no member any more (its key was rotated away, its resources deleted) is stopped when another starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from batchop.controller.poller import Poller


class Pollers:
    """The running pollers by credential group."""

    def __init__(self, make: Callable[[str], Poller], occupied: Callable[[str], bool] | None = None) -> None:
        """``occupied(group)``: whether the group still has members (default: always)."""
        self._make = make
        self._occupied = occupied or (lambda _group: True)
        self.running: dict[str, tuple[Poller, asyncio.Task[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def ensure(self, group: str) -> None:
        """Start the group's poller unless it runs; stop those whose group is empty."""
        if group in self.running:
            return
        self.prune()
        poller = self._make(group)
        task = asyncio.get_running_loop().create_task(poller.run(), name=f"poller {group}")
        self.running[group] = (poller, task)

    def wake(self, group: str) -> None:
        """Run the group's next cycle now."""
        found = self.running.get(group)
        if found is not None:
            found[0].wake()

    def prune(self) -> None:
        """Stop the pollers of groups without members."""
        for group in [g for g in self.running if not self._occupied(g)]:
            _, task = self.running.pop(group)
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def stop(self) -> None:
        tasks = [task for _, task in self.running.values()] + list(self._stopping)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
