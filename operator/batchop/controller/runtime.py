"""The object the watch feeds: composes the controller's parts and runs one reconcile or deletion.

:class:`Runtime` is built complete in one step from the settings and a Kubernetes client, and holds:

- :class:`~batchop.controller.tracking.Tracker`: the tracked resources and the per-resource locks;
- :class:`~batchop.controller.accounts.AccountResolver`: account, credential and gateway per resource;
- :class:`~batchop.controller.blobs.BlobResolver`: blob references into SAS (storage defaults read once);
- :class:`~batchop.controller.outcomes.OutcomeWriter`: outcomes into status (one
  :class:`~batchop.kube.status_writer.StatusWriter`) and Events (:class:`~batchop.controller.events.EventPoster`);
- :class:`~batchop.controller.pollers.Pollers`: one poller per account credential, whose drift repairs and retries go
  through :class:`~batchop.controller.retry.Repairer` and :class:`~batchop.controller.retry.RetryScheduler`;
- :class:`~batchop.controller.cleanup.OrphanCleanup`: schedules of resources that vanished during a create;
- :class:`~batchop.controller.workqueue.WorkQueue`: the reconciles watch events asked for that found no free
  slot (:meth:`Runtime.reconcile_or_park`), run in order by a few tasks of its own;
- :class:`~batchop.controller.deletions.Deletions`: the deletion steps of resources being deleted, and our
  finalizer removed after the last.

:meth:`Runtime.handle_event` takes every watch event (:mod:`batchop.kube.watch`, or kopf's ``on.event`` under
kopf's peering) and decides: which events ask for a reconcile (a ``metadata.generation`` not reconciled yet in
this process, a changed ``adopt`` / ``reconcile-policy``, a new ``run-now``), which for a deletion step, and the
retries.

The decisions themselves are :mod:`batchop.controller.reconcile`: plain functions over a gateway, guarded
by :class:`~batchop.controller.finalizer.FinalizerHold`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

from batchop.api import conditions as cond
from batchop.api.names import FINALIZER
from batchop.api.types import Status
from batchop.batch.credentials import AccountRef, CredentialError, SecretSource, endpoint_of
from batchop.batch.gateway import Gateway
from batchop.batch.settings import Settings
from batchop.controller import runnow
from batchop.controller.accounts import AccountResolver, Refresh, name_secret, refused
from batchop.controller.blobs import BlobResolver, kept_sas, renewal_due, storage_defaults
from batchop.controller.cleanup import OrphanCleanup
from batchop.controller.deletions import Deletions
from batchop.controller.events import EventPoster
from batchop.controller.finalizer import FinalizerHold
from batchop.controller.outcomes import OutcomeWriter, mirror_created
from batchop.controller.poller import Poller
from batchop.controller.pollers import Pollers
from batchop.controller.poolhealth import account_of
from batchop.controller.ports import Kube
from batchop.controller.reconcile.apply import apply
from batchop.controller.reconcile.delete import delete, released
from batchop.controller.reconcile.outcome import Outcome
from batchop.controller.reconcile.ports import Model, default_model
from batchop.controller.reconcile.view import ObjectView
from batchop.controller.retry import ERROR_RETRY, Repairer, RetryScheduler
from batchop.controller.status import EventSpec
from batchop.controller.tracking import Key, Tracked, Tracker
from batchop.controller.workqueue import Parked, WorkQueue
from batchop.kube.status_writer import StatusWriter
from batchop.observability import metrics

log = logging.getLogger(__name__)

CREDENTIALS_RETRY_MIN = 5.0
"""Seconds: the shortest wait before an object whose account cannot be resolved is tried again."""


def count_failed(outcome: Outcome) -> None:
    """A watch-started reconcile (run at once or from the work queue) that ended ``Synced=False``: one error."""
    if outcome.synced.get("status") == cond.FALSE:
        metrics.count_error("reconcile", str(outcome.synced.get("reason")))


class Runtime:
    """The controller (see the module docstring): :meth:`observe`, :meth:`reconcile`, :meth:`delete`."""

    def __init__(
        self, settings: Settings, kube: Kube, *, model: Model | None = None, storage: Mapping[str, str] | None = None
    ) -> None:
        """``storage``: the operator-wide storage settings (default: from the environment, read now)."""
        self.settings = settings
        self.kube = kube
        self.model = model or default_model()
        self.tracker = Tracker(settings.max_concurrent_reconciles)
        self.writer = StatusWriter(kube, on_written=self._observe_metrics)
        self.secrets = SecretSource(kube, ttl=settings.secret_cache_seconds)
        self.accounts = AccountResolver(settings, self.secrets)
        self.events = EventPoster(kube)
        self.outcomes = OutcomeWriter(self.writer, self.events)
        self.blobs = BlobResolver(self.secrets, storage_defaults() if storage is None else storage,
                                  credential=self.accounts.entra)
        self.cleanup = OrphanCleanup()
        self.repair = Repairer(kube, self.reconcile)
        self.retry = RetryScheduler(kube, self.secrets, self.repair, settings.resync_interval)
        self._member_lists: dict[str, list[Tracked]] = {}  # group -> its tracked resources (see _members_of)
        self._members_stamp: tuple[int, int] = (-1, -1)
        self.pollers = Pollers(self._poller, occupied=self.accounts.occupied)
        self.credentials_retry = max(settings.resync_interval, CREDENTIALS_RETRY_MIN)
        self.queue = WorkQueue(self._run_parked, workers=self.tracker.max_in_flight)
        self._retries: dict[Key, asyncio.TimerHandle] = {}
        self._retrying: set[asyncio.Task[None]] = set()
        self.deletions = Deletions(self.delete_step, self._release)

    async def close(self) -> None:
        await self.queue.close()
        await self.deletions.close()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for task in list(self._retrying):
            task.cancel()
        await asyncio.gather(*self._retrying, return_exceptions=True)
        await self.pollers.stop()
        await self.accounts.close()
        await self.kube.close()

    # -- watch events --------------------------------------------------------------------------------------

    async def handle_event(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """One watch event (``event_type`` None: the initial listing), everything it asks for:

        - the tracked copy refreshed (:meth:`observe`); ``DELETED``: the resource forgotten;
        - being deleted, with our finalizer or a Batch schedule: a deletion step
          (:class:`~batchop.controller.deletions.Deletions`);
        - a reconcile (at once, or parked) when the event brings a generation this process has not reconciled
          (a new resource, every resource after a start or a shard handover, an edit of the spec), or a change
          that moves no generation: ``adopt``, ``reconcile-policy``, a new ``run-now``. A recoverable outcome is
          tried again after the delay it asks for, an unexpected error after :data:`ERROR_RETRY`;
        - otherwise a resource with a Batch schedule that lacks our finalizer gets it back.

        Labels and other annotations are not the reconcile's inputs, so their changes ask for nothing."""
        due = self.observe(body, event_type)
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.deletions.forget(key)
            return
        finalizers = meta.get("finalizers") or ()
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers or (body.get("status") or {}).get("scheduleId"):
                self.deletions.request(key, body)  # without our finalizer (removed by hand): while the object lasts
            return
        entry = self.tracker.get(key)
        generation = int(meta.get("generation") or 0)
        if entry is not None and entry.queued_generation != generation:
            entry.queued_generation = generation
            due = True
        if due:
            log.debug("%s/%s: reconcile due (generation %d, %s)", *key, generation, event_type or "listing")
            await self._reconcile_event(body, key)
        elif FINALIZER not in finalizers and (body.get("status") or {}).get("scheduleId"):
            await FinalizerHold(self.kube, ObjectView.from_body(body)).after_adopt()

    async def _reconcile_event(self, body: Mapping[str, Any], key: Key) -> None:
        try:
            outcome = await self.reconcile_or_park(body)
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying in %.0fs", *key, ERROR_RETRY)
            self._retry_later(key, ERROR_RETRY)
            return
        if outcome is None:
            return  # parked: the work queue runs it, and its retries
        count_failed(outcome)
        if outcome.retry_after is not None:
            self._retry_later(key, outcome.retry_after)

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> bool:
        """Keep the tracked copy of a resource current (every watch event). True when a reconcile is due that no
        new generation asks for: a new ``run-now`` value, or a changed ``adopt`` / ``reconcile-policy``."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if event_type == "DELETED":
            self.queue.drop((namespace, name))
            retry = self._retries.pop((namespace, name), None)
            if retry is not None:
                retry.cancel()
            self.tracker.forget((namespace, name))
            self.accounts.forget((namespace, name))
            self.writer.forget(namespace, name)
            metrics.forget_resource(namespace, name)
            return False
        self.writer.seed(namespace, name, body.get("status"))
        known = self.writer.known(namespace, name) or {}
        notes_changed = self.tracker.observe(body, known)
        self._observe_metrics(namespace, name, known)  # per-resource gauges, also for objects never patched here
        if meta.get("deletionTimestamp"):
            return False
        return notes_changed or runnow.pending(body, known)

    def _observe_metrics(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        entry = self.tracker.get((namespace, name))
        suspend = bool(entry and entry.suspend)
        if entry is not None:
            if entry.metered is not None and entry.metered[0] is status and entry.metered[1] == suspend:
                return  # the writer replaces a status whole, never in place: the same object, the same gauges
            entry.metered = (status, suspend)
        metrics.observe_resource(namespace, name, spec={"suspend": suspend}, status=status)

    def _status_of(self, view: ObjectView) -> Status:
        """The freshest status: the one this process last wrote or saw, else the body's."""
        return cast(Status, self.writer.known(view.namespace, view.name) or view.status)

    # -- reconcile -------------------------------------------------------------------------------------------

    async def reconcile_or_park(self, body: Mapping[str, Any]) -> Outcome | None:
        """A watch event's reconcile: at once when a slot is free, else parked in :attr:`queue` (None), so a
        waiting resource holds a small view instead of the whole event and its task. A parked resource's later
        events are parked behind it, which keeps its reconciles in order (:mod:`batchop.controller.workqueue`)."""
        view = ObjectView.from_body(body)
        if self.queue.holds(view.key) or self.tracker.slots.locked():
            self.queue.put(view)
            return None
        return await self._reconcile_view(view)

    async def reconcile(self, body: Mapping[str, Any], *, force: tuple[str, ...] = ()) -> Outcome:
        """One reconcile of the resource ``body`` (serialised per resource)."""
        return await self._reconcile_view(ObjectView.from_body(body), force)

    async def _run_parked(self, parked: Parked) -> None:
        """A parked reconcile, unless its resource is gone or a newer spec was seen (then a newer view is
        parked behind it); a recoverable outcome is retried after the delay it asks for."""
        view = parked.view
        entry = self.tracker.get(view.key)
        if entry is None or entry.uid != view.uid or entry.deleting or entry.generation > view.generation:
            parked.request.done()
            return
        try:
            outcome = await self._reconcile_view(view, parked.force, parked.request)
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying in %.0fs", *view.key, ERROR_RETRY)
            self._retry_later(view.key, ERROR_RETRY)
            return
        count_failed(outcome)
        if outcome.retry_after is not None:
            self._retry_later(view.key, outcome.retry_after)

    def _retry_later(self, key: Key, delay: float) -> None:
        """A retry after ``delay``: the resource read afresh and reconciled."""
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        self._retries[key] = asyncio.get_running_loop().call_later(delay, self._retry_now, key)

    def _retry_now(self, key: Key) -> None:
        self._retries.pop(key, None)
        entry = self.tracker.get(key)
        if entry is None or entry.deleting or self.queue.holds(key):
            return  # gone, going, or a newer pass is on its way anyway
        task = asyncio.create_task(self._retry(key, f"retry after {entry.synced_reason}"))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def _retry(self, key: Key, why: str) -> None:
        """The object read afresh and reconciled again; its outcome may ask for the next retry, as often as
        it takes (a resource whose credentials never resolved has no poller to retry it)."""
        try:
            body = await self.kube.get_object(*key)
        except Exception as exc:
            log.warning("could not read %s/%s for its retry (%s); again in %.0fs", *key, exc, ERROR_RETRY)
            self._retry_later(key, ERROR_RETRY)
            return
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        log.info("reconciling %s/%s: %s", *key, why)
        await self._reconcile_event(body, key)

    async def _reconcile_view(
        self, view: ObjectView, force: tuple[str, ...] = (), request: metrics.QueueItem | None = None
    ) -> Outcome:
        retry = self._retries.pop(view.key, None)
        if retry is not None:
            retry.cancel()  # this pass is the retry
        async with self.tracker.locked(view.key, request) as entry:
            with metrics.reconcile_timer("reconcile") as run:
                try:
                    outcome = await self._reconcile(view, entry, force)
                finally:
                    await self.outcomes.settle(view)  # a first-pass mark never outlives its pass
                run.settle(outcome.synced, outcome.retry_after)  # controller-runtime's result label
                return outcome

    async def _reconcile(self, view: ObjectView, entry: Tracked | None, force: tuple[str, ...]) -> Outcome:
        view.status = self._status_of(view)
        self.outcomes.begin(view)  # Ready=Unknown if a resource's very first pass takes a while
        try:
            ref = await self.accounts.resolve(view)
        except CredentialError as err:
            synced = cond.make(cond.SYNCED, cond.FALSE, err.reason, err.message, generation=view.generation)
            unresolved = Outcome(synced=synced, retry_after=self.credentials_retry, done=False)
            await self.outcomes.write(view, unresolved, entry)
            return unresolved
        hold = FinalizerHold(self.kube, view)
        ref, gateway, outcome = await self._apply(view, ref, force, hold)
        if entry is not None:
            entry.endpoint_key = ref.endpoint_key
        self.pollers.ensure(ref.credential_id)
        kept_sas(view.status, outcome.status, outcome.writes, outcome.observed)
        if "adopt" in outcome.writes and not await hold.after_adopt():
            # the resource was deleted while we adopted the schedule: nothing will ever release it, so we do
            self.cleanup.spawn(view, outcome.schedule_id, gateway)
            return outcome
        if "create" in outcome.writes:
            mirror_created(view, outcome, entry)
        await self.outcomes.write(view, outcome, entry)
        if "create" in outcome.writes and self.writer.known(view.namespace, view.name) is None:
            # the status write found no object: it vanished while we created its schedule (its finalizer
            # removed by hand, or never in place), so no deletion step will ever run for it: we clean up
            self.cleanup.spawn(view, outcome.schedule_id, gateway)
            return outcome
        if entry is not None:
            _remember(entry, outcome)
        if outcome.writes:
            self.pollers.wake(ref.credential_id)
        return outcome

    async def _apply(
        self, view: ObjectView, ref: AccountRef, force: tuple[str, ...], hold: FinalizerHold
    ) -> tuple[AccountRef, Gateway, Outcome]:
        """One pass with the resource's own credential. When Batch refuses its key, the Secret is read again at
        once (not after the cache time; at most once a second per Secret) and, if it holds another key by now
        (switched to the secondary key, then the primary regenerated), the pass runs once more with that."""
        gateway = self.accounts.gateway_for(ref, view)
        outcome = await apply(view, gateway, model=self.model, resolve_blobs=self.blobs, force=force, hold=hold)
        if refused(outcome.synced):
            fresh = await self.accounts.after_refusal(ref, view)
            if fresh is not None:
                ref, gateway = fresh, self.accounts.gateway_for(fresh, view)
                outcome = await apply(view, gateway, model=self.model, resolve_blobs=self.blobs, force=force, hold=hold)
            name_secret(outcome.synced, ref)
        return ref, gateway, outcome

    # -- delete ----------------------------------------------------------------------------------------------

    async def delete_step(self, body: Mapping[str, Any]) -> Outcome:
        """:meth:`delete`, timed and counted as the ``delete`` handler's run."""
        with metrics.reconcile_timer("delete") as run:
            outcome = await self.delete(body)
            run.settle(outcome.synced, outcome.retry_after)
        return outcome

    async def _release(self, body: Mapping[str, Any]) -> None:
        """Our finalizer off the resource: its deletion is done (no-op when it is gone or replaced)."""
        meta = body.get("metadata") or {}
        await self.kube.remove_finalizer(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")),
                                         FINALIZER, seen=meta)

    async def delete(self, body: Mapping[str, Any]) -> Outcome:
        """One deletion step of the resource ``body`` (serialised per resource); ``done``: the finalizer may go."""
        view = ObjectView.from_body(body)
        stored_id = view.status.get("scheduleId")
        async with self.tracker.locked(view.key) as entry:
            view.status = self._status_of(view)
            if entry is not None:
                entry.deleting = True
            if view.policy == "skip":
                return released(None)
            recorded = bool(view.status.get("scheduleId") or stored_id)
            if not recorded and not self._derive_schedule_id(view):
                return released(None)
            try:
                ref = await self.accounts.resolve(view)
            except CredentialError as err:
                if not recorded:
                    return await self._release_unchecked(view, err)
                message = f"cannot delete Batch schedule {view.status.get('scheduleId')}: {err.message}; retrying"
                synced = cond.make(
                    cond.SYNCED, cond.FALSE, cond.REASON_DELETION_PENDING, message, generation=view.generation
                )
                pending = Outcome(synced=synced, retry_after=self.credentials_retry, done=False)
                await self.outcomes.write(view, pending, entry)
                return pending
            outcome = await delete(view, self.accounts.deletion_gateway(ref))
            if outcome.done:
                await self.outcomes.announce(view, outcome)
            else:
                await self.outcomes.write(view, outcome, entry)
            return outcome

    async def _release_unchecked(self, view: ObjectView, err: CredentialError) -> Outcome:
        """Our finalizer, no schedule id ever recorded, and no credentials to look in Batch with: let the
        resource go, with a Warning naming the id.

        Why not wait for credentials: the finalizer is put on every new resource at admission, so most such
        resources never reached Batch (a typo in the Secret's name, deleted before the first reconcile), and
        waiting would hold them until someone removed the finalizer by hand. A schedule can exist only if a create
        landed and its status write did not (an operator killed in between), and the credentials broke before
        any replica reconciled the resource again (a restart resumes every resource at once and records the id)."""
        schedule_id = view.status.get("scheduleId")
        message = (f"deleted without looking in Batch: no schedule id was ever recorded for this resource and its "
                   f"credentials do not resolve ({err.message}); only an operator stopped between a create and its "
                   f"status write could have left a Batch schedule {schedule_id} behind")
        log.warning("%s/%s: %s", view.namespace, view.name, message)
        await self.events.post(view.namespace, view.name, view.uid, EventSpec("Warning", "DeletedUnchecked", message))
        return released(None)

    def _derive_schedule_id(self, view: ObjectView) -> bool:
        """Our finalizer without a recorded id: the status write after a create did not land (deleted or crashed
        right after the create). Look for the schedule under the id it would have; the deletion touches it
        only if it carries this object's uid mark. False: no valid id, nothing can exist."""
        derived = str(view.spec.get("scheduleId") or self.model.schedule_id_for(view.namespace, view.name))
        if self.model.schedule_id_error(derived):
            return False
        status = view.status.copy()
        status["scheduleId"] = derived
        view.status = status
        return True

    # -- pollers ---------------------------------------------------------------------------------------------

    def _poller(self, group: str) -> Poller:
        """The poller of one credential group: its members, through that credential's own gateway."""
        return Poller(
            endpoint_of(group),
            gateway=lambda: self.accounts.gateway(group),
            members=lambda: self._members_of(group),
            writer=self.writer,
            post_event=self._post_member_event,
            on_drift=self.repair,
            on_retry=self.retry,
            refresh_credentials=lambda: self._refresh_credentials(group),
            on_refused=lambda members: self._refused(group, members),
            changed_properties=self.model.changed_properties,
            interval=self.settings.resync_interval,
            heartbeat=self.settings.sync_heartbeat,
            heartbeat_rate=self.settings.sync_heartbeat_rate,
            resources=lambda: len(self.tracker.entries),
            task_count_refreshes=self.settings.task_count_refreshes,
            stuck_after=self.settings.job_stuck_after,
            account=account_of(group),
            renewal_due=self._renewal_due,
        )

    def _members_of(self, group: str) -> list[Tracked]:
        """The tracked resources of a credential group (not to be changed by the caller: kept and handed out
        again until a resource joins or leaves a group or the tracker).

        Why kept: each poller asks twice a cycle, and building it from the group's keys was a pass over every
        resource each time, a few percent of a cycle at 10,000 resources for a list that rarely changes."""
        stamp = (self.tracker.changes, self.accounts.changes)
        if stamp != self._members_stamp:
            self._member_lists.clear()
            self._members_stamp = stamp
        found = self._member_lists.get(group)
        if found is None:
            found = [entry for key in self.accounts.members_of(group) if (entry := self.tracker.get(key)) is not None]
            self._member_lists[group] = found
        return found

    async def _refresh_credentials(self, group: str) -> None:
        """Each member's credential resolved again (Secrets from the cache): a Secret switched to another key
        moves its resources to that key's poller; one that no longer resolves is reconciled, which says why."""
        await self._regroup(await self.accounts.refresh(group))

    async def _refused(self, group: str, members: list[Tracked]) -> None:
        """Batch refused the group's key while polling: the members' Secrets are read again at once (not after
        the cache time); those still on this key are reconciled with it, each showing the refusal itself."""
        result = await self.accounts.refresh(group, reread=True)
        await self._regroup(result)
        stayed = set(result.stayed)
        for member in members:
            if member.key in stayed:
                await self.retry(member, "Batch refused its credentials")

    async def _regroup(self, result: Refresh) -> None:
        """Start the pollers of new keys; reconcile who failed with the old key, and who has none any more."""
        for group in result.moved:
            self.pollers.ensure(group)
            self.pollers.wake(group)
        for key in result.movers:
            entry = self.tracker.get(key)
            if entry is not None and entry.synced_reason == cond.REASON_AUTHENTICATION_FAILED:
                await self.retry(entry, "its Secret holds another key now")
        for key in result.unresolved:
            entry = self.tracker.get(key)
            if entry is not None:
                await self.retry(entry, "its credentials no longer resolve")

    async def _post_member_event(self, member: Tracked, event: EventSpec) -> None:
        await self.events.post(member.namespace, member.name, member.uid, event)

    def _renewal_due(self, member: Tracked, schedule: Mapping[str, Any]) -> bool:
        """True when the SAS inside the schedule's jobSpecification must be re-minted now."""
        return renewal_due(self.writer.known(member.namespace, member.name), schedule)


def _remember(entry: Tracked, outcome: Outcome) -> None:
    """What the poller's drift check compares with: the desired body just applied, and the schedule id."""
    if outcome.desired is not None and outcome.status.get("scheduleId"):
        entry.desired = outcome.desired
        entry.in_sync_etag = in_sync_etag(outcome)
    entry.schedule_id = outcome.status.get("scheduleId") or entry.schedule_id


def in_sync_etag(outcome: Outcome) -> str | None:
    """The ETag under which the pass found the schedule equal to the desired body (created from it, or compared
    and left alone), so the poller's drift check need not compare it again until the ETag moves; None when the
    pass changed the schedule after reading it (a PATCH, enable, disable) or did not end in sync."""
    observed = outcome.observed or {}
    etag = observed.get("eTag")
    if not etag or outcome.synced.get("reason") != cond.REASON_SYNCED or outcome.synced.get("status") != cond.TRUE:
        return None
    return str(etag) if all(write == "create" for write in outcome.writes) else None
