"""Deletion steps of resources being deleted, and our finalizer removed once Batch has let go.

A resource with ``metadata.deletionTimestamp`` and our finalizer is deleted in steps
(:meth:`batchop.controller.runtime.Runtime.delete`): one step asks Batch to terminate or delete the schedule,
a later one finds it gone. :class:`Deletions` runs those steps:

- one at a time per resource, from the newest body a watch event showed (an event that arrives while a step
  runs or waits for its retry starts nothing: the step already under way, or its retry, covers it);
- a step not done is tried again after the delay its outcome asks for (an unexpected error after
  :data:`~batchop.controller.retry.ERROR_RETRY`), as long as the resource is there;
- when a step is done, our finalizer is removed (:meth:`release`), which lets Kubernetes delete the object;
  a removal that fails is retried like a step (the next step finds the schedule gone at once).

Why not kopf's delete handler: kopf's handlers for creation, update and deletion run its change detection on
every watch event of every resource (an essence of the object built, compared and stored, progress
annotations read, a handler state computed and logged), a fifth of the operator's CPU in a burst of creates
for decisions the runtime already makes from ``metadata.generation``. With only a watch handler, kopf is the
watch and the per-object event queue, and this module is what its delete handler and finalizer did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from batchop.controller.reconcile.outcome import Outcome
from batchop.controller.retry import ERROR_RETRY
from batchop.controller.tracking import Key

log = logging.getLogger(__name__)

NOT_DONE_DELAY = 5.0
"""Seconds before a step that is not done, and named no delay, is tried again."""

Step = Callable[[Mapping[str, Any]], Awaitable[Outcome]]
"""One deletion step of a resource body (:meth:`batchop.controller.runtime.Runtime.delete_step`)."""

Release = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Removes our finalizer from the resource of a body (no-op when it is gone)."""


class Deletions:
    """The deletions under way (see the module docstring)."""

    def __init__(self, step: Step, release: Release) -> None:
        self._step = step
        self._release = release
        self._bodies: dict[Key, Mapping[str, Any]] = {}  # the newest body of each resource being deleted
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._bodies

    def request(self, key: Key, body: Mapping[str, Any]) -> None:
        """A watch event of the resource ``key`` being deleted: run a step now unless one is running or waiting
        for its retry (which then starts from this newer ``body``)."""
        self._bodies[key] = body
        if key not in self._tasks and key not in self._timers:
            self._start(key)

    def forget(self, key: Key) -> None:
        """The resource is gone (a ``DELETED`` event): no further step. One running is left to finish."""
        self._bodies.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        """Stop: retries cancelled, running steps cancelled (the next start resumes every deletion)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._bodies.clear()

    def _start(self, key: Key) -> None:
        self._timers.pop(key, None)
        body = self._bodies.get(key)
        if body is None:
            return
        task = asyncio.create_task(self._run(key, body), name=f"batchop-delete-{key[0]}/{key[1]}")
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))

    def _ended(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _run(self, key: Key, body: Mapping[str, Any]) -> None:
        delay: float | None
        try:
            outcome = await self._step(body)
            delay = None if outcome.done else (outcome.retry_after or NOT_DONE_DELAY)
            if outcome.done:
                await self._release(body)
                self._bodies.pop(key, None)  # a later event of the same deletion (stale) starts a step again
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deletion step of %s/%s failed; retrying in %.0fs", *key, ERROR_RETRY)
            delay = ERROR_RETRY
        if delay is not None and key in self._bodies:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._start, key)
