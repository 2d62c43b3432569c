"""The resources the operator knows, and the per-resource lock that serialises their reconciles.

Every watch event refreshes the :class:`Tracked` copy of its resource (:meth:`Tracker.observe`): the
account pollers mirror Batch into status for every tracked resource, so they must know all of them, not
only those reconciled since the start. Per resource, reconciles and deletes run one at a time
(:meth:`Tracker.locked`), whether kopf or the poller (drift repair, credential retry, SAS renewal)
started them; the lock of a deleted resource goes with it, so the locks do not grow with churn.

At most ``max_in_flight`` reconciles and deletes run at once (``--max-concurrent-reconciles``, default
:data:`MAX_IN_FLIGHT`), whatever the number of resources. kopf
starts a handler for every object the moment its event arrives: 10,000 resources applied at once were
10,000 reconciles in flight, each holding its desired body, blob references and requests while it waited
for one of the account's few Batch connections, and the process's memory peaked at 750 MiB. A reconcile
now waits for a slot *before* it builds anything; the waiting costs a task each, and the watch is never
blocked (kopf queues events per object, and a handler waiting for a slot holds up only its own object).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY
from batchop.batch.settings import DEFAULTS
from batchop.controller import history
from batchop.controller.history import Inputs
from batchop.controller.reconcile.view import ObjectView, adopts, policy_of
from batchop.observability import metrics

Key = tuple[str, str]
"""A resource's namespace and name."""

MAX_IN_FLIGHT = DEFAULTS.max_concurrent_reconciles
"""Reconciles and deletes running at once by default (the others wait for a slot; see
:attr:`batchop.batch.settings.Settings.max_concurrent_reconciles`)."""


@dataclass(slots=True)
class Tracked:
    """One resource as the poller mirrors it (kept current by the watch events and the reconciles)."""

    namespace: str
    name: str
    uid: str
    generation: int
    endpoint_key: str
    schedule_id: str | None
    policy: str = "manage"
    suspend: bool = False
    desired: dict[str, Any] | None = None
    deleting: bool = False
    synced_reason: str | None = None
    last_sync: datetime | None = None
    retry_delay: float = 0.0  # backoff of retries after recoverable errors (batchop.controller.retry)
    retry_at: float = 0.0
    retry_version: str | None = None
    adopt: bool = False
    history: history.Limits | None = None  # spec.successfulJobsHistoryLimit / failedJobsHistoryLimit
    in_sync_etag: str | None = None
    """The schedule's ETag when it was last found equal to ``desired`` (reset when ``desired`` changes): an
    idle cycle skips normalising and comparing the bodies of schedules whose ETag did not move."""
    version: int = 0
    """Odd while a reconcile or delete of the resource runs, bumped again when it ends (a sequence lock):
    a cycle mirrors and drift-checks a member only if this did not move since its listing started, so a
    create or edit racing with the listing is never taken for drift nor mirrored from a stale page."""
    notes: tuple[str | None, str | None] | None = None
    """The ``adopt`` and ``reconcile-policy`` annotations as last seen (None before the first event)."""
    queued_generation: int = -1
    """The ``metadata.generation`` a reconcile was last started or queued for by a watch event (-1: none yet in
    this process). An event with another generation carries a spec this process has not reconciled: a new
    resource, one seen again after a restart or a shard handover, or an edit (:meth:`batchop.controller.runtime.
    Runtime.handle_event`)."""

    metered: tuple[Mapping[str, Any], bool] | None = None
    """The status object and ``suspend`` the per-resource gauges were last set from: a watch event that brings
    no new status (the writer's known status is the same object) leaves them alone."""
    stepped: Inputs | None = None
    """What the job history's step last judged the member's jobs from, when that left nothing to do
    (:meth:`batchop.controller.history.History._inputs`). None when it must be judged."""
    mirrored: Inputs | None = None
    """What the poller last mirrored the status from, when that wrote nothing and posted no Event (values, and
    objects kept while they do not change): a cycle with the same inputs skips computing the status again
    (:meth:`batchop.controller.poller.Poller.mirror_inputs`). None when it must be computed."""
    owned_marks: tuple[str, bool] | None = None
    """The schedule's ETag when its owner marks were last found to be this resource's, with ``adopt`` then
    (:meth:`batchop.controller.poller.Poller.owned`): each cycle compares the listed ETag with it instead of
    parsing the marks again."""
    _key_of: str | None = field(default=None, init=False, repr=False, compare=False)
    _schedule_key: str = field(default="", init=False, repr=False, compare=False)

    @property
    def schedule_key(self) -> str:
        """``schedule_id`` in lower case ("" when none), as Batch's listings are keyed (its ids are
        case-insensitive): computed once per id, so the status cycle's passes over thousands of members look
        up a string whose hash is already known instead of lower-casing (a new string, hashed anew) in each."""
        sid = self.schedule_id
        if sid is not self._key_of:
            self._key_of = sid
            self._schedule_key = sid.lower() if sid else ""
        return self._schedule_key

    @property
    def busy(self) -> bool:
        return self.version % 2 == 1

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def view(self) -> ObjectView:
        """Enough of the resource for the ownership checks (:func:`batchop.controller.reconcile.ownership.owns`)."""
        annotations = {ANNOTATION_ADOPT: "true"} if self.adopt else {}
        return ObjectView(self.namespace, self.name, self.uid, self.generation, {}, annotations)


class Tracker:
    """The tracked resources by key, and one lock per resource while it is tracked or in use."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.entries: dict[Key, Tracked] = {}
        self.locks: dict[Key, asyncio.Lock] = {}
        self.lock_users: dict[Key, int] = {}  # reconciles/deletes holding or awaiting the lock
        self.slots = asyncio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.changes = 0
        """Bumped whenever an entry is added, replaced or forgotten (lists of entries built from keys are kept
        until it moves: :meth:`batchop.controller.runtime.Runtime.members_of`)."""
        metrics.set_max_concurrent_reconciles(max_in_flight)

    def get(self, key: Key) -> Tracked | None:
        return self.entries.get(key)

    def members(self) -> list[Tracked]:
        return list(self.entries.values())

    def observe(self, body: Mapping[str, Any], known: Mapping[str, Any]) -> bool:
        """Refresh the tracked copy from a watch event's ``body``; ``known`` is the freshest status. True when
        the ``adopt`` or ``reconcile-policy`` annotation changed since the previous event (kopf leaves
        annotations under its own prefix out of the diff that drives update handlers)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        uid = str(meta.get("uid") or "")
        generation = int(meta.get("generation") or 0)
        entry = self.entries.get(key)
        if entry is None or entry.uid != uid:
            entry = Tracked(key[0], key[1], uid, generation, "", None)
            self.entries[key] = entry
            self.changes += 1
            synced = cond.find(known.get("conditions"), cond.SYNCED)
            entry.synced_reason = str(synced.get("reason")) if synced else None
        spec = body.get("spec") or {}
        notes = meta.get("annotations") or {}
        entry.generation = generation
        entry.policy = policy_of(notes)
        entry.suspend = bool(spec.get("suspend"))
        entry.adopt = adopts(notes)
        entry.history = history.limits_of(spec)
        entry.deleting = bool(meta.get("deletionTimestamp"))
        entry.schedule_id = known.get("scheduleId") or entry.schedule_id
        seen = (notes.get(ANNOTATION_ADOPT), notes.get(ANNOTATION_RECONCILE_POLICY))
        changed = entry.notes is not None and entry.notes != seen
        entry.notes = seen
        return changed

    def forget(self, key: Key) -> None:
        """The resource is gone (a DELETED event)."""
        if self.entries.pop(key, None) is not None:
            self.changes += 1
        self._drop_lock(key)

    def _drop_lock(self, key: Key) -> None:
        """Forget the lock of a resource that is gone, unless a reconcile or delete holds or awaits it (then
        the last of them drops it)."""
        if key not in self.entries and not self.lock_users.get(key):
            self.locks.pop(key, None)
            self.lock_users.pop(key, None)

    @contextlib.asynccontextmanager
    async def locked(self, key: Key, request: metrics.QueueItem | None = None) -> AsyncIterator[Tracked | None]:
        """Hold one of the in-flight slots, then the resource's lock, for one reconcile or delete, its
        :attr:`Tracked.version` odd meanwhile. Yields the tracked entry (None for a resource no watch event
        showed yet). The slot comes first: whoever holds a resource's lock already has a slot, so a waiter
        can never keep a lock holder from finishing. ``request``: the ``workqueue_*`` item of a reconcile that
        was queued before (:mod:`batchop.controller.workqueue`), else one is made now."""
        self.lock_users[key] = self.lock_users.get(key, 0) + 1
        if request is None:
            request = metrics.reconcile_requested()  # the workqueue metrics: waiting until the slot and lock are held
        try:
            lock = self.locks.get(key)
            if lock is None:
                lock = self.locks[key] = asyncio.Lock()
            async with self.slots, lock:
                request.start()
                entry = self.entries.get(key)
                if entry is not None:
                    entry.version += 1
                try:
                    yield entry
                finally:
                    if entry is not None:
                        entry.version += 1
        finally:
            request.done()
            self.lock_users[key] -= 1
            self._drop_lock(key)
