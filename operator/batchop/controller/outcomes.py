"""Reports a reconcile's or a deletion step's outcome: its status fields and conditions, and its Events.

All status goes through the one :class:`~batchop.kube.status_writer.StatusWriter` of the process, which patches
only when the document changed. The ``Synced`` condition comes from the outcome, and ``Ready`` when the pass
knew better than the poller; the writer derives ``Ready``, ``Reconciling`` and ``Stalled`` from them. Every
outcome writes ``observedGeneration``, failures included: a tool that compares it with ``metadata.generation``
(kstatus, Argo CD) then knows the failure is about the current spec. The Events follow
(:class:`~batchop.controller.events.EventPoster`). The tracked copy learns the new ``Synced`` reason, which the
poller's retries go by.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from batchop.api import conditions as cond
from batchop.api.types import Condition
from batchop.controller.events import EventPoster
from batchop.controller.reconcile.outcome import Outcome
from batchop.controller.reconcile.view import ObjectView
from batchop.controller.status import observed_status
from batchop.controller.tracking import Tracked
from batchop.kube.client import KubeError
from batchop.kube.status_writer import StatusWriter
from batchwire import timestamps

log = logging.getLogger(__name__)

FIRST_MARK_DELAY = 2.0
"""Seconds a resource's first pass may take before ``Ready=Unknown`` is written on its own (see
:meth:`OutcomeWriter.begin`)."""


class FirstMark:
    """A status write that happens after ``delay`` unless settled before: settling cancels it if it has not
    started, and waits for it if it has."""

    def __init__(self, write: Callable[[], Awaitable[None]], delay: float) -> None:
        self._started = False
        self._task = asyncio.create_task(self._run(write, delay))

    async def _run(self, write: Callable[[], Awaitable[None]], delay: float) -> None:
        await asyncio.sleep(delay)
        self._started = True
        await write()

    async def settle(self) -> None:
        if not self._started:
            self._task.cancel()
        await asyncio.wait([self._task])  # never raises: a cancelled or failed mark is simply over
        if not self._task.cancelled() and self._task.exception() is not None:
            log.warning("could not mark a resource as reconciling: %s", self._task.exception())


class OutcomeWriter:
    """Writes outcomes into status and posts their Events."""

    def __init__(self, writer: StatusWriter, events: EventPoster, first_mark_delay: float = FIRST_MARK_DELAY) -> None:
        self.writer = writer
        self.events = events
        self.first_mark_delay = first_mark_delay
        self._marks: dict[tuple[str, str], FirstMark] = {}

    def begin(self, view: ObjectView) -> None:
        """Before the first pass of a resource that has no ``Ready`` yet: ``Ready=Unknown``, ``Reconciling=True``,
        written only if the pass has not reported within :data:`FIRST_MARK_DELAY` (once per resource: a resource
        that has any ``Ready`` is left alone). A pass that ends sooner writes ``Ready`` in its own status patch,
        so a burst costs one status write per resource, not two; a pass held up (a rate limit, a slow Batch, an
        unreachable Secret) still shows ``Ready=Unknown`` within the delay."""
        known = self.writer.known(view.namespace, view.name)
        if known is None or cond.find(known.get("conditions"), cond.READY) is not None:
            return
        key = (view.namespace, view.name)
        if key not in self._marks:
            self._marks[key] = FirstMark(lambda: self._mark(view), self.first_mark_delay)

    async def _mark(self, view: ObjectView) -> None:
        # Reconciling only: the writer derives Ready=Unknown from "no Synced, nothing observed yet"
        try:
            await self.writer.update(view.namespace, view.name, None, cond.first_pass(view.generation)[1:])
        except (KubeError, OSError, TimeoutError) as err:  # advisory: the pass itself reports an unreachable API server
            log.warning("could not mark %s/%s as reconciling: %s", view.namespace, view.name, err)

    async def settle(self, view: ObjectView) -> None:
        """The pass is over (or about to write): drop its pending mark, or let a mark already on the wire land
        first, so that it can never overwrite the pass's own ``Ready``."""
        mark = self._marks.pop((view.namespace, view.name), None)
        if mark is not None:
            await mark.settle()

    async def write(self, view: ObjectView, outcome: Outcome, entry: Tracked | None) -> None:
        """Status (fields and conditions), the tracked ``Synced`` reason, then the Events."""
        await self.settle(view)
        previous = self.writer.known(view.namespace, view.name) or {}
        old_synced = cond.find(previous.get("conditions"), cond.SYNCED) or {}
        conditions: list[Condition] = [outcome.synced]
        if outcome.ready is not None:
            conditions.append(outcome.ready)
        if view.generation:
            outcome.status.setdefault("observedGeneration", view.generation)
        await self.writer.update(view.namespace, view.name, outcome.status, conditions)
        if entry is not None:
            entry.synced_reason = str(outcome.synced.get("reason"))
            if outcome.synced.get("status") != cond.FALSE:
                entry.retry_delay = 0.0
        await self.announce(view, outcome)
        await self.events.for_synced(view.namespace, view.name, view.uid, old_synced, outcome.synced)

    async def announce(self, view: ObjectView, outcome: Outcome) -> None:
        """The Events of the outcome's Batch writes only."""
        schedule_id = outcome.schedule_id or outcome.status.get("scheduleId")
        await self.events.for_writes(view.namespace, view.name, view.uid, outcome.writes, schedule_id)


def mirror_created(view: ObjectView, outcome: Outcome, entry: Tracked | None) -> None:
    """Fold the schedule a pass created or found (its state, ``Ready``; ``nextRunTime`` when it was read from
    Batch) into the same status write as ``scheduleId``, instead of a second patch by the next poll cycle."""
    if outcome.observed is None or not outcome.status.get("scheduleId"):
        return
    mirrored = observed_status(
        schedule_id=outcome.status["scheduleId"],
        schedule=outcome.observed,
        job=None,
        task_counts=None,
        pool=None,
        previous={},
        generation=view.generation,
    )
    now = datetime.now(UTC)
    outcome.status["state"] = mirrored.get("state")
    outcome.status["nextRunTime"] = mirrored.get("nextRunTime")
    outcome.status["lastSyncTime"] = timestamps.seconds(now)
    outcome.ready = mirrored["conditions"][0]
    if entry is not None:
        entry.last_sync = now
