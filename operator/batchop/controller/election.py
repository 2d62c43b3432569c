"""Leader election on a ``coordination.k8s.io/v1`` Lease, with the semantics of client-go's
``tools/leaderelection`` (what controller-runtime's ``--leader-elect`` runs):

- **acquire or renew** (:meth:`LeaseLock.try_acquire_or_renew`, client-go's ``tryAcquireOrRenew``): read the
  Lease; if another identity holds it and the record has not changed for ``leaseDurationSeconds`` *as
  observed on this replica's own clock* (never by comparing ``renewTime`` with the local wall clock, so
  clock skew between nodes does not matter), it is still theirs. Otherwise write it back with our
  ``holderIdentity`` and a fresh ``renewTime``, guarded by the ``resourceVersion`` read: of two candidates
  only one update succeeds. ``acquireTime`` and ``leaseTransitions`` move only when the holder changes.
- **renew deadline**: the holder renews every ``retry period``; :meth:`LeaseLock.valid` is true only while
  the last successful renewal was *sent* less than ``renew deadline`` ago. Others may take the Lease only
  ``lease duration`` after they last saw it change, so a holder that cannot renew (API server unreachable,
  process paused) stops counting itself the holder at least ``lease duration - renew deadline`` (5 s with
  the defaults) before anyone else can take over. Every Batch write is fenced on :meth:`LeaseLock.valid`
  (:mod:`batchop.batch.gateway`'s write fence), so a replica that lost its Lease writes nothing.
- **release** (client-go's ``ReleaseOnCancel``): on shutdown the holder writes ``holderIdentity: ""``,
  ``leaseDurationSeconds: 1``, so a standby takes over at its next retry instead of after the full duration.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batchop.api.names import LEADER_ELECTION_ID
from batchop.kube.client import KubeError
from batchop.kube.leases import LeaseClient, LeaseRecord, LeaseState, now_micro

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The Pod's own namespace (the service-account mount), else ``default`` (as controller-runtime does)."""
    try:
        namespace = path.read_text().strip()
    except OSError:
        return "default"
    return namespace or "default"


def default_identity() -> str:
    """``<hostname>_<uuid>``: the Pod name (its hostname) for people, a uuid so that a restarted container
    under the same name is a new holder (controller-runtime's choice)."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class ElectionConfig:
    """The flags of ``batchop run --leader-elect``; durations in seconds (controller-runtime's defaults)."""

    namespace: str
    identity: str
    name: str = LEADER_ELECTION_ID
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> None:
        """client-go's own rules: lease duration > renew deadline > retry period (x1.2 jitter) > 0."""
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("--leader-election-lease-duration must be greater than the renew deadline")
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError("--leader-election-renew-deadline must be greater than 1.2 x the retry period")
        if not self.retry_period > 0:
            raise ValueError("--leader-election-retry-period must be positive")


class LeaseLock:
    """One Lease, held the client-go way (see the module docstring). Not thread-safe for writers: one event
    loop runs :meth:`try_acquire_or_renew` / :meth:`release`; :meth:`valid` may be read from any thread."""

    def __init__(
        self, leases: LeaseClient, config: ElectionConfig, name: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.leases = leases
        self.config = config
        self.name = name
        self.clock = clock
        self.observed: LeaseRecord | None = None
        self.observed_version = ""
        self.observed_at = 0.0
        self.renewed_at: float | None = None
        """Local clock when the last successful acquire/renew request was sent (None: not ours)."""

    @property
    def is_holder(self) -> bool:
        """The last record seen names us (it may no longer be valid: see :meth:`valid`)."""
        return self.observed is not None and self.observed.holder == self.config.identity

    def valid(self, margin: float = 0.0) -> bool:
        """True while we hold the Lease and renewed it less than ``renew deadline - margin`` ago."""
        renewed = self.renewed_at
        return renewed is not None and self.clock() - renewed < self.config.renew_deadline - margin

    def _observe(self, state: LeaseState) -> None:
        if state.record != self.observed:
            self.observed = state.record
            self.observed_at = self.clock()
        self.observed_version = state.resource_version

    def _taken_by_another(self) -> bool:
        record = self.observed
        if record is None or not record.holder or record.holder == self.config.identity:
            return False
        return self.observed_at + record.duration > self.clock()

    def _next_record(self) -> LeaseRecord:
        now = now_micro()
        duration = int(self.config.lease_duration)
        old = self.observed
        if old is not None and old.holder == self.config.identity:
            return LeaseRecord(self.config.identity, duration, old.acquire_time or now, now, old.transitions)
        transitions = (old.transitions + 1) if old is not None else 0
        return LeaseRecord(self.config.identity, duration, now, now, transitions)

    async def observe(self) -> None:
        """Read the Lease without trying to take it: a replica that may have to take it over later (a shard of
        another replica) starts counting the lease duration from when the record last changed, not from when it
        begins to want it."""
        try:
            state = await self.leases.get(self.name)
        except (KubeError, OSError, TimeoutError) as exc:
            log.debug("Could not read the Lease %s/%s: %s", self.leases.namespace, self.name, exc)
            return
        if state is not None:
            self._observe(state)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's ``tryAcquireOrRenew``): True when we hold the Lease afterwards."""
        sent = self.clock()
        try:
            state = await self.leases.get(self.name)
            if state is None:
                record = LeaseRecord(self.config.identity, int(self.config.lease_duration), now_micro(), now_micro())
                self._observe(await self.leases.create(self.name, record))
                self.renewed_at = sent
                log.info("Acquired the Lease %s/%s (created it)", self.leases.namespace, self.name)
                return True
            self._observe(state)
            if self._taken_by_another():
                self.renewed_at = None
                return False
            was_ours = self.is_holder
            self._observe(await self.leases.update(self.name, self._next_record(), self.observed_version))
        except (KubeError, OSError, TimeoutError) as exc:
            if not (isinstance(exc, KubeError) and exc.status == 409):
                log.warning("Could not acquire or renew the Lease %s/%s: %s", self.leases.namespace, self.name, exc)
            return False
        self.renewed_at = sent
        if not was_ours:
            log.info("Acquired the Lease %s/%s (transition %d)", self.leases.namespace, self.name,
                     self.observed.transitions if self.observed else 0)
        return True

    async def release(self, attempts: int = 3) -> bool:
        """Give the Lease up at once (``ReleaseOnCancel``): holder empty, duration 1 s, same transitions. A
        conflict (a renewal cut short by the shutdown still landed) is read again and retried while the Lease
        is still ours."""
        self.renewed_at = None
        for _ in range(attempts):
            if not self.is_holder:
                return True
            assert self.observed is not None
            now = now_micro()
            record = LeaseRecord("", 1, now, now, self.observed.transitions)
            try:
                self._observe(await self.leases.update(self.name, record, self.observed_version))
            except KubeError as exc:
                if exc.status != 409:
                    log.warning("Could not release the Lease %s/%s: %s", self.leases.namespace, self.name, exc)
                    return False
                await self.observe()
                continue
            except (OSError, TimeoutError) as exc:
                log.warning("Could not release the Lease %s/%s: %s", self.leases.namespace, self.name, exc)
                return False
            log.info("Released the Lease %s/%s", self.leases.namespace, self.name)
            return True
        return False
