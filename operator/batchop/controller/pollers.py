"""One poller task per Batch account, started by the first reconcile that uses the account.

Each :class:`~batchop.controller.poller.Poller` mirrors every tracked resource of its account with one
listing per cycle; a reconcile that wrote to Batch wakes its account's poller, so the next cycle comes at
once instead of at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from batchop.controller.poller import Poller


class Pollers:
    """The running pollers by account endpoint."""

    def __init__(self, make: Callable[[str], Poller]) -> None:
        self._make = make
        self.running: dict[str, tuple[Poller, asyncio.Task[None]]] = {}

    def ensure(self, endpoint_key: str) -> None:
        """Start the account's poller unless it runs."""
        if endpoint_key in self.running:
            return
        poller = self._make(endpoint_key)
        task = asyncio.get_running_loop().create_task(poller.run(), name=f"poller {endpoint_key}")
        self.running[endpoint_key] = (poller, task)

    def wake(self, endpoint_key: str) -> None:
        """Run the account's next cycle now."""
        found = self.running.get(endpoint_key)
        if found is not None:
            found[0].wake()

    async def stop(self) -> None:
        for _, task in self.running.values():
            task.cancel()
        for _, task in self.running.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
