"""Reconciles that wait for a slot, held as small views in a queue of our own instead of as kopf handlers.

At most ``--max-concurrent-reconciles`` reconciles run at once (64 by default). kopf starts a handler for
every object the moment its event arrives, so a handler that waits for a slot keeps all of kopf's machinery
for that object alive while it waits: the raw event, its body wrappers and patch, the causes, a logger, the
worker task and a dozen coroutine frames, some 17 KiB per waiting object. In a burst of 10,000 applied
resources most of them wait, and those short-lived contexts, interleaved with every resource's long-lived
state, left a third of the heap as free space the allocator could not return after the burst.

When no slot is free, the handler now *parks* the resource instead: its :class:`ObjectView` (namespace,
name, uid, generation, spec, annotations; a few KiB) goes into :class:`WorkQueue`, keyed by resource, and
the handler returns at once, so kopf frees its context. Up to ``workers`` drain tasks take the resources in
the order they were parked and run each reconcile exactly as the handler would have.

Like a controller-runtime work queue, a resource is in the queue at most once: a newer event of a parked
resource replaces its view and keeps its place in line, and the ``workqueue_*`` metrics count it once, from
when it was parked. While a resource is parked or running from the queue, its newer events are parked too,
so the reconciles of one resource keep their order. A recoverable outcome is retried after the delay it asks
for (``retry``, which reads the object afresh), where kopf would have retried its handler; a resource deleted
meanwhile is dropped (:meth:`WorkQueue.drop`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchop.controller.reconcile.view import ObjectView
from batchop.controller.tracking import Key
from batchop.observability import metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parked:
    """One resource waiting in the queue: its newest view, the forced steps of every event it stands for, and
    its ``workqueue_*`` item (counted from when it was first parked)."""

    view: ObjectView
    force: tuple[str, ...]
    request: metrics.QueueItem


Run = Callable[[Parked], Awaitable[None]]
"""Runs one parked reconcile to its end (the runtime's, which takes a slot and the resource's lock)."""


class WorkQueue:
    """Parked reconciles and the tasks that drain them (see the module docstring)."""

    def __init__(self, run: Run, workers: int) -> None:
        self._run = run
        self.workers = workers
        self._items: dict[Key, Parked] = {}
        self._running: collections.Counter[Key] = collections.Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._items)

    def holds(self, key: Key) -> bool:
        """Whether the resource is parked or running from the queue: its next event must queue behind it."""
        return key in self._items or self._running[key] > 0

    def put(self, view: ObjectView, force: tuple[str, ...] = ()) -> None:
        """Park a reconcile of ``view``; a parked one of the same resource takes the newer view."""
        old = self._items.get(view.key)
        if old is not None:
            old.view = view
            old.force = tuple(dict.fromkeys((*old.force, *force)))
        else:
            self._items[view.key] = Parked(view, force, metrics.reconcile_requested())
            log.debug("%s/%s parked in the work queue (%d waiting)", *view.key, len(self._items))
        if len(self._tasks) < self.workers:
            task = asyncio.create_task(self._drain(), name="batchop-workqueue")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def drop(self, key: Key) -> None:
        """The resource is gone: forget its parked reconcile."""
        parked = self._items.pop(key, None)
        if parked is not None:
            parked.request.done()

    async def close(self) -> None:
        """Stop the drain tasks; what is still parked is given up (the next start resumes every resource)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for key in list(self._items):
            self.drop(key)

    async def _drain(self) -> None:
        while self._items:
            key = next(iter(self._items))
            parked = self._items.pop(key)
            self._running[key] += 1
            try:
                await self._run(parked)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile of %s/%s failed", *key)
            finally:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
