"""Which Batch account, credential and gateway each resource uses, kept current for the pollers.

Resolution itself (Secret, endpoint, operator defaults) and the gateways per credential are
:mod:`batchop.batch.credentials`. This keeps, per resource, the credential it was last resolved to and its
``spec.account`` (what resolves it again), grouped by credential: each group is polled by its own poller
with its own gateway (:mod:`batchop.controller.pollers`), so a resource is never mirrored through a key that
is not its own, and a wrong key shows on the resources that use it only.

:meth:`AccountResolver.refresh` re-resolves a group's members from the cached Secrets every poll cycle: a
rotated Secret moves its resources to the group of the new key without a restart and without waiting for a
reconcile. :meth:`AccountResolver.after_refusal` and ``refresh(reread=True)`` are for a key Batch refused:
the Secret is re-read at once (rate-limited per Secret, :meth:`batchop.batch.credentials.SecretSource.reread`)
instead of after the cache time, so switching the Secret to the secondary key and then regenerating the
primary in Azure costs no failed reconcile.

It also hands out the process's one Entra ID credential (:attr:`AccountResolver.entra`): the Batch gateways
without a key and the Blob storage user-delegation SAS sign in with the same identity (on AKS: workload
identity), so one token file, one token cache and one set of sign-in errors serve both.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchop.api import conditions as cond
from batchop.api.types import Condition
from batchop.batch.credentials import (
    AccountRef,
    Accounts,
    CredentialError,
    EntraCredential,
    SecretSource,
    account_inputs,
    resolve,
)
from batchop.batch.gateway import Gateway
from batchop.batch.settings import Settings
from batchop.controller.reconcile.view import ObjectView

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""A resource's namespace and name."""


@dataclass
class _Member:
    """A resource's credential and the ``spec.account`` it was resolved from."""

    namespace: str
    spec: dict[str, Any]
    ref: AccountRef
    inputs: tuple[str, ...]
    """:func:`~batchop.batch.credentials.account_inputs` of ``namespace`` and ``spec``."""


@dataclass
class _Bucket:
    """The members of one credential group that resolve from the same account inputs (so, alike)."""

    keys: set[Key] = field(default_factory=set)
    ref: AccountRef | None = None
    """The credential every member holds (equal refs), None when they may differ (one was assigned another)."""


@dataclass
class Refresh:
    """What re-resolving a credential group changed."""

    moved: set[str] = field(default_factory=set)
    """Credential groups that gained members (their pollers must run)."""
    movers: list[Key] = field(default_factory=list)
    """Members now in another group: their Secret holds another key."""
    stayed: list[Key] = field(default_factory=list)
    """Members still in the group."""
    unresolved: list[Key] = field(default_factory=list)
    """Members whose account no longer resolves (a Secret or key removed): in no group any more."""


class AccountResolver:
    """Resolves resources to accounts and gateways; keeps each resource's credential group current."""

    def __init__(self, settings: Settings, secrets: SecretSource) -> None:
        self.settings = settings
        self.secrets = secrets
        self.accounts = Accounts(settings)
        self._members: dict[Key, _Member] = {}
        self._buckets: dict[str, dict[tuple[str, ...], _Bucket]] = {}  # group -> account inputs -> members
        self.changes = 0
        """Bumped whenever a resource joins or leaves a group (lists of a group's members are kept until it
        moves: :meth:`batchop.controller.runtime.Runtime.members_of`)."""

    @property
    def entra(self) -> EntraCredential:
        """The Entra ID credential of every account without a key, for Blob storage too."""
        return self.accounts.entra

    async def resolve(self, view: ObjectView) -> AccountRef:
        """The resource's account and credential. Raises :class:`~batchop.batch.credentials.CredentialError`."""
        return await resolve(view.namespace, view.spec, self.settings, self.secrets)

    def gateway_for(self, ref: AccountRef, view: ObjectView) -> Gateway:
        """The gateway of ``ref``'s credential; the resource is polled with this credential from now on."""
        self._assign(view.key, view.namespace, {"account": copy.deepcopy(view.spec.get("account") or {})}, ref)
        return self.accounts.gateway_for(ref)

    def deletion_gateway(self, ref: AccountRef) -> Gateway:
        """The gateway of ``ref``'s credential, for a deletion step."""
        return self.accounts.gateway_for(ref)

    def group_of(self, key: Key) -> str | None:
        """The credential group (:attr:`AccountRef.credential_id`) the resource is polled in, None if none."""
        member = self._members.get(key)
        return member.ref.credential_id if member else None

    def members_of(self, group: str) -> frozenset[Key]:
        return frozenset().union(*(bucket.keys for bucket in self._buckets.get(group, {}).values()))

    def occupied(self, group: str) -> bool:
        """Whether any resource is in the group (without copying its keys)."""
        return bool(self._buckets.get(group))

    def gateway(self, group: str) -> Gateway | None:
        """The gateway a group's poller uses (None once no resource holds its key)."""
        return self.accounts.gateway(group)

    async def refresh(self, group: str, *, reread: bool = False) -> Refresh:
        """Re-resolve every member of ``group`` (Secrets from the cache; with ``reread``, each Secret read
        again at once, as after Batch refused the group's key). Members whose credential changed join the
        group of the new one.

        Why by bucket: resources with the same account inputs resolve alike, so each distinct one is resolved
        once per refresh (at 10,000 resources on one account, one resolution instead of 10,000 a cycle), and a
        bucket whose members all hold the credential it resolves to again is done without a step per member:
        this runs for every group every status cycle, and the per-member pass (and a sort of every key) was a
        tenth of a cycle's CPU at 10,000 resources."""
        result = Refresh()
        for bucket in list(self._buckets.get(group, {}).values()):
            keys = bucket.keys.copy()
            if not keys:
                continue
            some = self._members[next(iter(keys))]
            secret = some.ref.secret
            if reread and secret is not None:
                await self.secrets.reread(*secret)
            ref: AccountRef | None
            try:
                ref = await resolve(some.namespace, some.spec, self.settings, self.secrets)
                self.accounts.gateway_for(ref)
            except CredentialError:
                ref = None
            if ref is not None and bucket.ref == ref:
                result.stayed.extend(keys)  # every member holds it already: nothing to assign
                continue
            for key in sorted(keys):
                member = self._members.get(key)
                if member is None:
                    continue  # forgotten while the Secret was read
                if ref is None:
                    self.forget(key)
                    result.unresolved.append(key)
                    continue
                self._assign(key, member.namespace, member.spec, ref)
                if ref.credential_id == group:
                    result.stayed.append(key)
                else:
                    result.moved.add(ref.credential_id)
                    result.movers.append(key)
            if ref is not None and ref.credential_id == group and bucket.keys == keys:
                bucket.ref = ref  # each member assigned ref just now
        result.unresolved.sort()
        result.movers.sort()
        return result

    async def after_refusal(self, ref: AccountRef, view: ObjectView) -> AccountRef | None:
        """Batch refused ``ref``'s key: read its Secret again now rather than when the cache expires. The fresh
        credential when it differs (the Secret was switched to another key meanwhile), else None."""
        if ref.secret is None:
            return None
        await self.secrets.reread(*ref.secret)
        try:
            fresh = await self.resolve(view)
        except CredentialError:
            return None
        if fresh.credential_id == ref.credential_id:
            return None
        log.info("Batch refused the key of %s for %s/%s; the Secret holds another key now: using it",
                 ref.source.split("@", 1)[0], view.namespace, view.name)
        return fresh

    def forget(self, key: Key) -> None:
        """The resource is gone, or has no credential any more: it leaves its group."""
        member = self._members.pop(key, None)
        if member is not None:
            self._leave(key, member)
            self.changes += 1

    def _assign(self, key: Key, namespace: str, spec: dict[str, Any], ref: AccountRef) -> None:
        previous = self._members.get(key)
        if previous is not None and previous.ref == ref and previous.spec is spec and previous.namespace == namespace:
            return  # re-resolved as before (every member, every cycle): no new objects to keep
        inputs = account_inputs(namespace, spec)
        if previous is not None:
            self._leave(key, previous)
        self._members[key] = _Member(namespace, spec, ref, inputs)
        bucket = self._buckets.setdefault(ref.credential_id, {}).get(inputs)
        if bucket is None:
            bucket = self._buckets[ref.credential_id][inputs] = _Bucket(ref=ref)
        elif bucket.ref is not None and bucket.ref != ref:
            bucket.ref = None  # members with different refs: the next refresh assigns each
        bucket.keys.add(key)
        if previous is None or previous.ref.credential_id != ref.credential_id:
            self.changes += 1  # joined a group (a reconcile resolving it as before changes no group)

    def _leave(self, key: Key, member: _Member) -> None:
        group = member.ref.credential_id
        buckets = self._buckets.get(group)
        bucket = buckets.get(member.inputs) if buckets is not None else None
        if buckets is not None and bucket is not None:
            bucket.keys.discard(key)
            if not bucket.keys:
                del buckets[member.inputs]
                if not buckets:
                    del self._buckets[group]

    async def close(self) -> None:
        await self.accounts.close()


def name_secret(synced: Condition, ref: AccountRef) -> None:
    """Say which Secret's key Batch refused, in the ``Synced`` message (the resource's own credential)."""
    secret = ref.secret
    if secret is None or synced.get("reason") != cond.REASON_AUTHENTICATION_FAILED:
        return
    where = f"Secret {secret[0]}/{secret[1]} (spec.account.credentialsSecretRef)"
    message = str(synced.get("message") or "")
    if where in message:
        return
    named = message.replace("the credentials Secret", where, 1)
    synced["message"] = named if named != message else f"{message} (the key of {where})"


def refused(synced: Mapping[str, Any]) -> bool:
    """Whether a pass ended because Batch refused the credentials."""
    return synced.get("reason") == cond.REASON_AUTHENTICATION_FAILED
