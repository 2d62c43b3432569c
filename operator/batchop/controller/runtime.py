"""The operator's in-process state and the glue between kopf, Kubernetes, credentials and Batch.

:class:`Runtime` holds: the Kubernetes client and the :class:`~batchop.kube.client.StatusWriter`, the Secret
cache and the per-account gateways (:mod:`batchop.batch.credentials`), the tracked resources, and one
:class:`~batchop.controller.poller.Poller` task per Batch account. The kopf handlers
(:mod:`batchop.controller.handlers`)
only call :meth:`Runtime.observe`, :meth:`Runtime.reconcile` and :meth:`Runtime.delete`.

Per resource, reconciles are serialised with a lock, whether kopf or the poller (drift repair,
credential retry, SAS renewal) started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from batchop.api import conditions as cond
from batchop.api.names import FINALIZER
from batchop.batch.credentials import Accounts, CredentialError, SecretSource, resolve
from batchop.batch.gateway import INVALID_SPEC, BatchError
from batchop.batch.settings import Settings
from batchop.controller import history
from batchop.controller import reconcile as rc
from batchop.controller.poller import Poller, Tracked
from batchop.controller.status import EventSpec, observed_status
from batchop.kube.client import KubeClient, StatusWriter
from batchop.observability import metrics
from batchwire import timestamps

log = logging.getLogger(__name__)

# Events for Batch writes, by the first word of Outcome.writes entries.
_WRITE_EVENTS = {
    "create": ("Created", "created Batch schedule {id}"),
    "adopt": ("Adopted", "adopted the existing Batch schedule {id}"),
    "patch": ("Updated", "updated Batch schedule {id} ({detail}); later jobs use the change"),
    "disable": ("Suspended", "disabled Batch schedule {id}"),
    "enable": ("Resumed", "enabled Batch schedule {id}"),
    "terminate": ("Terminating", "terminating Batch schedule {id}"),
    "delete": ("Deleting", "deleting Batch schedule {id}"),
    "orphan": ("Orphaned", "removed the owner marks from Batch schedule {id} and let it go"),
    "runnow": ("RunNow", "started job {detail} now from Batch schedule {id} (azurebatch.dev/run-now)"),
}


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    from batchwire import timestamps

    try:
        return timestamps.parse(str(value))
    except ValueError:
        return None


class _Hold:
    """Adds / removes our finalizer around a create (see :class:`batchop.controller.reconcile.Hold`)."""

    def __init__(self, runtime: Runtime, view: rc.ObjectView) -> None:
        self.runtime = runtime
        self.view = view

    async def acquire(self) -> bool:
        return await self.runtime._hold(self.view)

    async def release(self) -> None:

        remove = getattr(self.runtime.kube, "remove_finalizer", None)
        if remove is not None:
            await remove(self.view.namespace, self.view.name, self.view.uid, FINALIZER)


class Runtime:
    def __init__(self, settings: Settings, *, kube: Any = None, model: rc.Model | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.model = model
        self.writer: StatusWriter | None = None
        self.secrets: SecretSource | None = None
        self.accounts = Accounts(settings)
        self.tracked: dict[tuple[str, str], Tracked] = {}
        self.pollers: dict[str, tuple[Poller, asyncio.Task[None]]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._lock_users: dict[tuple[str, str], int] = {}  # reconciles/deletes holding or awaiting the lock
        self._refs: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()  # endpoint -> (namespace, spec) to re-resolve

    async def start(self, kopf_settings: Any = None) -> None:
        if self.kube is None:
            self.kube = KubeClient(settings=kopf_settings)
        if self.model is None:
            self.model = rc.default_model()
        self.writer = StatusWriter(self.kube, on_written=self._observe_metrics)
        self.secrets = SecretSource(self.kube, ttl=self.settings.secret_cache_seconds)

    async def stop(self) -> None:
        for _, task in self.pollers.values():
            task.cancel()
        for _, task in self.pollers.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.accounts.close()
        if self.kube is not None and hasattr(self.kube, "close"):
            await self.kube.close()

    # -- tracking ---------------------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Keep the tracked copy of a resource current (from every watch event)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self.tracked.pop(key, None)
            self._drop_lock(key)
            if self.writer:
                self.writer.forget(*key)
            metrics.forget_resource(*key)
            return
        assert self.writer is not None
        self.writer.seed(key[0], key[1], body.get("status"))
        view = rc.ObjectView.from_body(body)
        entry = self.tracked.get(key)
        known = self.writer.known(*key) or {}
        if entry is None or entry.uid != view.uid:
            entry = Tracked(view.namespace, view.name, view.uid, view.generation, "", None)
            self.tracked[key] = entry
            synced = cond.find(known.get("conditions"), cond.SYNCED)
            entry.synced_reason = str(synced.get("reason")) if synced else None
        entry.generation = view.generation
        entry.policy = view.policy
        entry.suspend = bool(view.spec.get("suspend"))
        entry.adopt = view.adopt
        entry.history = history.limits_of(view.spec)
        entry.deleting = bool(meta.get("deletionTimestamp"))
        entry.schedule_id = known.get("scheduleId") or entry.schedule_id
        self._observe_metrics(key[0], key[1], known)  # per-resource gauges, also for objects never patched here

    def _observe_metrics(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        entry = self.tracked.get((namespace, name))
        metrics.observe_resource(namespace, name, spec={"suspend": bool(entry and entry.suspend)}, status=status)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _drop_lock(self, key: tuple[str, str]) -> None:
        """Forget the lock of a resource that is gone, unless a reconcile or delete holds or awaits it (then
        the last of them drops it): one lock per resource ever seen would grow with churn."""
        if key not in self.tracked and not self._lock_users.get(key):
            self._locks.pop(key, None)
            self._lock_users.pop(key, None)

    @contextlib.asynccontextmanager
    async def _locked(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """The resource's lock and its busy mark (:meth:`_busy`) for one reconcile or delete."""
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with self._lock(key), self._busy(key):
                yield
        finally:
            self._lock_users[key] -= 1
            self._drop_lock(key)

    # -- reconcile ----------------------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], *, force: tuple[str, ...] = ()) -> rc.Outcome:
        view = rc.ObjectView.from_body(body)
        key = (view.namespace, view.name)
        async with self._locked(key):
            with metrics.reconcile_timer("reconcile"):
                return await self._reconcile(view, force)

    @contextlib.asynccontextmanager
    async def _busy(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Mark the tracked resource as being reconciled (see :attr:`batchop.controller.poller.Tracked.version`)."""
        entry = self.tracked.get(key)
        if entry is not None:
            entry.version += 1
        try:
            yield
        finally:
            if entry is not None:
                entry.version += 1

    async def _reconcile(self, view: rc.ObjectView, force: tuple[str, ...]) -> rc.Outcome:
        assert self.writer is not None and self.model is not None
        key = (view.namespace, view.name)
        view.status = self.writer.known(*key) or view.status
        entry = self.tracked.get(key)
        try:
            ref = await resolve(view.namespace, view.spec, self.settings, self.secrets)  # type: ignore[arg-type]
        except CredentialError as err:
            outcome = rc.Outcome(
                synced=cond.make(cond.SYNCED, cond.FALSE, err.reason, err.message, generation=view.generation),
                retry_after=max(self.settings.resync_interval, 5.0),
                done=False,
            )
            await self._write(view, outcome, entry)
            return outcome
        gateway = self.accounts.gateway_for(ref)
        self._refs.setdefault(ref.endpoint_key, (view.namespace, dict(view.spec)))
        if entry is not None:
            entry.endpoint_key = ref.endpoint_key
        self._ensure_poller(ref.endpoint_key)

        previous_sas = (view.status.get("sas") or {}).get("expiresAt")
        outcome = await rc.apply(
            view, gateway, model=self.model, resolve_blobs=self._resolver(view), force=force, hold=_Hold(self, view)
        )
        wrote_job_spec = any(
            w == "create" or (w.startswith("patch") and "jobSpecification" in w) for w in outcome.writes
        )
        if "sas" in outcome.status and not wrote_job_spec:
            if previous_sas:
                outcome.status["sas"] = {"expiresAt": previous_sas}  # Batch still holds the SAS minted then
            else:
                outcome.status.pop("sas")
        if "adopt" in outcome.writes and not await self._hold_after_adopt(view):
            # the resource was deleted while we adopted the schedule: nothing will ever release it, so we do
            self._spawn_cleanup(view, outcome, gateway)
            return outcome
        if "create" in outcome.writes and outcome.observed is not None and outcome.status.get("scheduleId"):
            # Batch's answer to the GET after the create: Ready and the state in the same status write,
            # instead of a second patch by the next poll cycle
            mirrored = observed_status(
                schedule_id=str(outcome.status["scheduleId"]),
                schedule=outcome.observed,
                job=None,
                task_counts=None,
                pool=None,
                previous={},
                generation=view.generation,
            )
            now = datetime.now(UTC)
            outcome.status.update(
                state=mirrored["state"],
                nextRunTime=mirrored["nextRunTime"],
                lastSyncTime=timestamps.seconds(now),
            )
            outcome.ready = mirrored["conditions"][0]
            if entry is not None:
                entry.last_sync = now
        if outcome.status.get("scheduleId"):
            self.accounts.promote(ref)  # Batch answered with these credentials: the account's poller uses them
            self._refs[ref.endpoint_key] = (view.namespace, dict(view.spec))
        await self._write(view, outcome, entry)
        if "create" in outcome.writes and self.writer.known(*key) is None:
            # the status write found no object: it vanished while we created its schedule (its finalizer
            # removed by hand, or never in place), so no delete handler will ever run for it: we clean up
            self._spawn_cleanup(view, outcome, gateway)
            return outcome
        if entry is not None:
            if outcome.desired is not None and outcome.status.get("scheduleId"):
                entry.desired = outcome.desired
                entry.in_sync_etag = None
            entry.schedule_id = outcome.status.get("scheduleId") or entry.schedule_id
        if outcome.writes:
            poller = self.pollers.get(ref.endpoint_key)
            if poller:
                poller[0].wake()
        return outcome

    async def _hold(self, view: rc.ObjectView) -> bool:
        """Add our finalizer right after a schedule was created or adopted (before the status write), so a
        deletion from now on waits for the delete handler. False: the resource is already gone or going."""

        add = getattr(self.kube, "add_finalizer", None)
        if add is None:
            return True
        try:
            return bool(await add(view.namespace, view.name, view.uid, FINALIZER, seen=view.seen))
        except Exception as exc:
            # Never create without the finalizer in place: a deletion in that window would orphan the
            # schedule. Not creating now is safe; the error is retried like any other recoverable one.
            log.warning("could not add the finalizer to %s/%s: %s", view.namespace, view.name, exc)
            raise BatchError(
                f"could not add the finalizer {FINALIZER} before creating the Batch schedule: {exc}; retrying",
                reason=cond.REASON_KUBERNETES_UNAVAILABLE,
                terminal=False,
            ) from exc

    async def _hold_after_adopt(self, view: rc.ObjectView) -> bool:
        """:meth:`_hold` after an adoption, which wrote nothing to Batch: when the finalizer cannot be added
        now, the status write follows and kopf adds it (the ``when=`` filter sees ``status.scheduleId``)."""
        try:
            return await self._hold(view)
        except BatchError:
            return True

    def _spawn_cleanup(self, view: rc.ObjectView, outcome: rc.Outcome, gateway: Any) -> None:
        gone = rc.ObjectView(
            view.namespace,
            view.name,
            view.uid,
            view.generation,
            view.spec,
            view.annotations,
            {"scheduleId": outcome.schedule_id},
        )
        log.warning(
            "%s/%s was deleted while its Batch schedule %s was being created or adopted: applying deletionPolicy %s",
            view.namespace,
            view.name,
            outcome.schedule_id,
            view.spec.get("deletionPolicy") or "Delete",
        )

        async def cleanup() -> None:
            for _ in range(300):
                step = await rc.delete(gone, gateway)
                if step.done:
                    return
                await asyncio.sleep(step.retry_after or 2.0)
            log.error("gave up deleting Batch schedule %s of vanished %s/%s", outcome.schedule_id, *gone_key)

        gone_key = (view.namespace, view.name)
        task = asyncio.get_running_loop().create_task(cleanup(), name=f"cleanup {outcome.schedule_id}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _resolver(self, view: rc.ObjectView) -> rc.BlobResolver | None:
        try:
            from batchop.blob import refs as blobrefs
            from batchop.blob import sas
        except ImportError:  # pragma: no cover - the blob module is part of the package
            return None

        async def resolve_blobs(job_spec: Mapping[str, Any], schedule_id: str) -> tuple[dict[str, Any], str | None]:
            if not blobrefs.has_blob_references(job_spec):
                return dict(job_spec), None
            storage = view.spec.get("storage") or {}
            secret_data = None
            ref = (storage.get("credentialsSecretRef") or {}).get("name")
            try:
                if ref:
                    found = await self.secrets.get(view.namespace, str(ref))  # type: ignore[union-attr]
                    if found is None:
                        raise BatchError(
                            f"Secret {view.namespace}/{ref} (spec.storage.credentialsSecretRef) not found: create it "
                            "with connectionString, or accountName and accountKey",
                            reason="CredentialsNotFound",
                            terminal=False,
                        )
                    secret_data = found[0]
                defaults = {k: v for k, v in os.environ.items() if k.startswith(("AZURE_STORAGE", "BATCHOP_STORAGE"))}
                minter = sas.minter_for(storage, secret_data, defaults)
                expiry = sas.expiry_for(storage, now=datetime.now(UTC), minter=minter)
                resolved = await blobrefs.resolve(job_spec, minter=minter, schedule_id=schedule_id, expiry=expiry)
            except BatchError:
                raise
            except blobrefs.BlobReferenceError as err:
                raise BatchError(str(err), reason=err.reason, terminal=err.permanent, field=err.field) from err
            except sas.StorageAccessError as err:
                raise BatchError(err.message, reason=err.reason, terminal=err.permanent) from err
            except ValueError as err:  # StorageConfigError names the field
                raise BatchError(str(err), reason=INVALID_SPEC, terminal=True) from err
            expires = timestamps.seconds(resolved.expires_at) if resolved.expires_at else None
            return resolved.job_specification, expires

        return resolve_blobs

    async def _write(self, view: rc.ObjectView, outcome: rc.Outcome, entry: Tracked | None) -> None:
        assert self.writer is not None
        previous = self.writer.known(view.namespace, view.name) or {}
        old_synced = cond.find(previous.get("conditions"), cond.SYNCED) or {}
        conditions = [outcome.synced]
        if outcome.ready is not None:
            conditions.append(outcome.ready)
        await self.writer.update(view.namespace, view.name, outcome.status, conditions)
        if entry is not None:
            entry.synced_reason = str(outcome.synced.get("reason"))
            if outcome.synced.get("status") != cond.FALSE:
                entry.retry_delay = 0.0
        schedule_id = outcome.schedule_id or outcome.status.get("scheduleId")
        for write in outcome.writes:
            word, _, detail = write.partition(":")
            if word in _WRITE_EVENTS:
                reason, template = _WRITE_EVENTS[word]
                await self._event(view, EventSpec("Normal", reason, template.format(id=schedule_id, detail=detail)))
        synced = outcome.synced
        if synced.get("status") == cond.FALSE and (
            old_synced.get("reason") != synced.get("reason") or old_synced.get("message") != synced.get("message")
        ):
            if synced.get("reason") not in (cond.REASON_DELETING,):
                await self._event(view, EventSpec("Warning", str(synced.get("reason")), str(synced.get("message"))))

    async def _event(self, view: rc.ObjectView, event: EventSpec) -> None:
        if self.kube is None:
            return
        obj = {"namespace": view.namespace, "name": view.name, "uid": view.uid}
        await self.kube.post_event(obj, type_=event.type, reason=event.reason, message=event.message)

    async def delete(self, body: Mapping[str, Any]) -> rc.Outcome:
        view = rc.ObjectView.from_body(body)
        key = (view.namespace, view.name)
        async with self._locked(key):
            assert self.writer is not None
            view.status = self.writer.known(*key) or view.status
            entry = self.tracked.get(key)
            if entry is not None:
                entry.deleting = True
            if view.policy == "skip":
                return rc.Outcome(synced={}, done=True)
            if not view.status.get("scheduleId"):
                # our finalizer without a recorded id: the status write after a create did not land (deleted
                # or crashed right after the create). Look for the schedule under the id it would have;
                # rc.delete only touches it if it carries this object's uid mark.
                assert self.model is not None
                derived = str(view.spec.get("scheduleId") or self.model.schedule_id_for(view.namespace, view.name))
                if self.model.schedule_id_error(derived):
                    return rc.Outcome(synced={}, done=True)
                view.status = {**view.status, "scheduleId": derived}
            try:
                ref = await resolve(view.namespace, view.spec, self.settings, self.secrets)  # type: ignore[arg-type]
            except CredentialError as err:
                outcome = rc.Outcome(
                    synced=cond.make(
                        cond.SYNCED,
                        cond.FALSE,
                        cond.REASON_DELETION_PENDING,
                        f"cannot delete Batch schedule {view.status.get('scheduleId')}: {err.message}; retrying",
                        generation=view.generation,
                    ),
                    retry_after=max(self.settings.resync_interval, 5.0),
                    done=False,
                )
                await self._write(view, outcome, entry)
                return outcome
            outcome = await rc.delete(view, self.accounts.gateway_for(ref))
            if not outcome.done:
                await self._write(view, outcome, entry)
            else:
                for write in outcome.writes:
                    word = write.partition(":")[0]
                    if word in _WRITE_EVENTS:
                        reason, template = _WRITE_EVENTS[word]
                        await self._event(
                            view, EventSpec("Normal", reason, template.format(id=outcome.schedule_id, detail=""))
                        )
            return outcome

    # -- pollers -----------------------------------------------------------------------------------------

    def _ensure_poller(self, endpoint_key: str) -> None:
        if endpoint_key in self.pollers:
            return
        assert self.model is not None
        poller = Poller(
            endpoint_key,
            gateway=lambda: self.accounts.current(endpoint_key),
            members=lambda: list(self.tracked.values()),
            writer=self.writer,
            post_event=self._post_member_event,
            on_drift=self._repair,
            on_retry=self._retry,
            refresh_credentials=lambda: self._refresh(endpoint_key),
            changed_properties=self.model.changed_properties,
            interval=self.settings.resync_interval,
            heartbeat=self.settings.sync_heartbeat,
            task_count_refreshes=self.settings.task_count_refreshes,
            renewal_due=self._renewal_due,
        )
        task = asyncio.get_running_loop().create_task(poller.run(), name=f"poller {endpoint_key}")
        self.pollers[endpoint_key] = (poller, task)

    async def _refresh(self, endpoint_key: str) -> None:
        """Re-resolve the account's credentials (cached Secret read) so a rotated key is used."""
        found = self._refs.get(endpoint_key)
        if found is None:
            return
        try:
            ref = await resolve(found[0], found[1], self.settings, self.secrets)  # type: ignore[arg-type]
        except CredentialError:
            return
        if ref.endpoint_key == endpoint_key:
            self.accounts.gateway_for(ref)

    async def _post_member_event(self, member: Tracked, event: EventSpec) -> None:
        await self._event(rc.ObjectView(member.namespace, member.name, member.uid, member.generation, {}), event)

    async def _repair(self, member: Tracked, why: str, force: tuple[str, ...] = ()) -> None:
        """Re-run reconcile for a tracked resource (drift, retryable error, SAS renewal)."""
        if self.kube is None:
            return
        body = await self.kube.get_object(member.namespace, member.name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        log.info("reconciling %s/%s: %s", member.namespace, member.name, why)
        try:
            await self.reconcile(body, force=force)
        except Exception:
            log.exception("reconcile of %s/%s after %r failed", member.namespace, member.name, why)

    async def _retry(self, member: Tracked, why: str) -> None:
        """Retry a resource stuck on a reason that can clear without a spec change, without hammering Batch:
        at once when its credentials Secret changed (rotation), else with a backoff doubling from one resync
        interval up to 5 minutes. ``CredentialsNotFound`` costs no Batch request and is retried every cycle."""
        loop = asyncio.get_running_loop()
        version = await self._secret_version(member)
        changed = version is not None and version != member.retry_version
        if member.synced_reason != "CredentialsNotFound" and not changed and loop.time() < member.retry_at:
            return
        member.retry_version = version
        member.retry_delay = min(max(member.retry_delay * 2, self.settings.resync_interval), 300.0)
        member.retry_at = loop.time() + member.retry_delay
        await self._repair(member, why)

    async def _secret_version(self, member: Tracked) -> str | None:
        """``resourceVersion`` of the resource's credentials Secret (from the short cache), None if none."""
        body = await self.kube.get_object(member.namespace, member.name) if self.kube is not None else None
        ref = (((body or {}).get("spec") or {}).get("account") or {}).get("credentialsSecretRef") or {}
        if not ref.get("name") or self.secrets is None:
            return None
        found = await self.secrets.get(member.namespace, str(ref["name"]))
        return found[1] if found else "missing"

    def _renewal_due(self, member: Tracked, schedule: Mapping[str, Any]) -> bool:
        """True when the SAS inside the schedule's jobSpecification must be re-minted now."""
        if self.writer is None:
            return False
        known = self.writer.known(member.namespace, member.name) or {}
        expires = (known.get("sas") or {}).get("expiresAt")
        if not expires:
            return False
        from batchop.blob import sas

        next_run = _parse_time((schedule.get("executionInfo") or {}).get("nextRunTime"))
        job_spec = schedule.get("jobSpecification") or {}
        return bool(
            sas.renewal_due(
                _parse_time(expires),
                now=datetime.now(UTC),
                next_run_time=next_run,
                max_wall_clock=sas.max_wall_clock(job_spec),
            )
        )
