"""``batchop run --leader-elect``: Leases on the main event loop, kopf in threads of its own.

Why threads: ``kopf.operator`` owns its event loop. When it stops it cancels *every* task created in the loop
since it started (its ``run_tasks``), and each one installs its own SIGTERM handler. Two kopf operators, or
one stopped and started again as shards move, cannot share a loop with the Lease renewals. So:

- the **main loop** runs the Lease rounds (:class:`batchop.controller.sharding.Coordinator`), the shard
  labeller, the control loop below and the signal handlers; nothing there waits on reconciling;
- the **admission thread** runs a kopf operator with only the validating webhook and the liveness
  endpoint, on every replica, leader or not, from start to exit;
- the **controller thread** runs the full kopf operator (the handlers of :mod:`batchop.controller.handlers`)
  only while this replica holds Leases, its watch (:mod:`batchop.kube.watch`) listing only its shards (a
  server-side label selector). It is stopped and started again with the new set whenever the Leases held
  change. Its tasks see
  :data:`batchop.batch.gateway.WRITE_FENCE`, so no Batch write leaves it once a Lease it runs for is no
  longer valid, even before the control loop has stopped it.

Shutdown (SIGTERM, SIGINT): stop the controller, release every Lease (``ReleaseOnCancel``), leave the
members, stop the admission thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from batchop.batch.gateway import WRITE_FENCE
from batchop.controller.election import ElectionConfig
from batchop.controller.sharding import Coordinator, Labeler, selector
from batchop.kube.client import KubeClient
from batchop.kube.leases import LeaseClient
from batchop.kube.watch import WatchScope
from batchop.spec.shardkey import ShardPlan

log = logging.getLogger(__name__)

STOP_TIMEOUT = 20.0
"""Seconds a kopf thread gets to stop; a controller that does not stop by then ends the process (its Leases
then expire as after a crash, and the fence has kept it from Batch meanwhile)."""


Controller = tuple[kopf.OperatorRegistry, Callable[[], dict[str, Any]] | None]
"""What ``build_controller`` makes: a fresh controller registry, and its watch's health (None: kopf's watch)."""


@dataclass
class Scope:
    """What the kopf operators watch (``batchop run -n`` / ``-A``) and where liveness is served."""

    namespaces: tuple[str, ...] = ()
    clusterwide: bool = True
    liveness: str | None = None

    def watch(self, label_selector: str | None = None) -> WatchScope:
        """The controller's watch of this scope (``-A`` wins over ``-n``, as for kopf)."""
        return WatchScope(namespaces=() if self.clusterwide else self.namespaces, label_selector=label_selector)


class KopfThread:
    """One kopf operator in a thread with its own event loop."""

    def __init__(self, name: str, build: Callable[[], kopf.OperatorRegistry], scope: Scope, *,
                 liveness: str | None = None, fence: Callable[[], str | None] | None = None) -> None:
        self.name = name
        self.build = build
        self.scope = scope
        self.liveness = liveness
        self.fence = fence
        self.ready = threading.Event()
        self._stop: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.failed = False

    def start(self) -> KopfThread:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        WRITE_FENCE.set(self.fence)  # this thread's context: every task of its loop inherits it
        try:
            asyncio.run(self._operate())
        except Exception:
            self.failed = True
            log.exception("The %s stopped with an error", self.name)

    async def _operate(self) -> None:
        await kopf.operator(
            registry=self.build(),
            standalone=True,
            clusterwide=self.scope.clusterwide,
            namespaces=self.scope.namespaces,
            liveness_endpoint=self.liveness,
            stop_flag=self._stop,
            ready_flag=self.ready,
        )

    async def stop(self) -> bool:
        """Ask kopf to stop and wait for the thread; False when it did not end within :data:`STOP_TIMEOUT`."""
        if not self._stop.done():
            self._stop.set_result(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, STOP_TIMEOUT)
        return not self._thread.is_alive()


@dataclass
class Supervisor:
    """Runs the replica (see the module docstring). ``build_controller`` and ``build_admission`` make fresh
    kopf registries (a new controller runtime, clients and gateways for each start)."""

    config: ElectionConfig
    kube: KubeClient
    build_controller: Callable[[str | None], Controller]
    """A fresh controller whose watch sends this label selector (None: unsharded)."""
    build_admission: Callable[[], kopf.OperatorRegistry]
    scope: Scope
    plan: ShardPlan = field(default_factory=ShardPlan)
    """How many shards, and what they spread (the same plan the admission webhook labels new resources by)."""
    coordinator: Coordinator = field(init=False)
    labeler: Labeler | None = field(init=False)

    @property
    def shards(self) -> int:
        return self.plan.shards

    def __post_init__(self) -> None:
        self.coordinator = Coordinator(LeaseClient(self.kube, self.config.namespace), self.config, self.shards)
        self.labeler = Labeler(self.kube, self.plan, self.scope.namespaces) if self.shards > 1 else None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._controller: KopfThread | None = None
        self._running: frozenset[int] = frozenset()
        self._watch_health: Callable[[], dict[str, Any]] | None = None

    def watch_health(self) -> dict[str, Any]:
        """The liveness endpoint's ``watch`` entry: whether this replica reconciles (which shards), and its
        watch's health (:meth:`batchop.kube.watch.ResourceWatch.health`). Read from the admission thread."""
        controller, health = self._controller, self._watch_health
        if controller is None or not controller.alive or health is None:
            return {"reconciling": []}
        try:
            return {"reconciling": sorted(self._running), **health()}
        except RuntimeError:  # the controller's loop changed a dict while this thread copied it: next probe
            return {"reconciling": sorted(self._running)}

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        admission = KopfThread("admission webhook", self.build_admission, self.scope,
                               liveness=self.scope.liveness).start()
        log.info("Leader election on: identity %s, Lease %s/%s, %d shard(s)", self.config.identity,
                 self.config.namespace, self.config.name, self.shards)
        background = [asyncio.create_task(self._lease_loop())]
        if self.labeler is not None:
            background.append(asyncio.create_task(self._label_loop()))
        try:
            await self._control_loop(admission)
        finally:
            for task in background:
                task.cancel()
            # no round in flight while we release; bounded, so a cancellation lost in a race cannot hold shutdown
            await asyncio.wait(background, timeout=self.config.renew_deadline / 2)
            await self._stop_controller()
            await self.coordinator.leave()
            await admission.stop()
            await self.kube.close()
        return 1 if admission.failed else 0

    async def _lease_loop(self) -> None:
        period = self.config.retry_period
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(self.config.renew_deadline / 2):
                    await self.coordinator.round()
            except TimeoutError:
                log.warning("A Lease round took longer than %.1fs", self.config.renew_deadline / 2)
            self._changed.set()
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, period - elapsed))

    async def _label_loop(self) -> None:
        assert self.labeler is not None
        while not self._stopping.is_set():
            try:
                await self.labeler.round()
            except Exception as exc:  # the API server may be away; the next round tries again
                log.warning("Could not label resources with their shard: %s", exc)
            await asyncio.sleep(self.config.retry_period)

    async def _control_loop(self, admission: KopfThread) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.retry_period):
                    await self._changed.wait()
            self._changed.clear()
            if not admission.alive:
                log.error("The admission webhook thread ended: stopping")
                return
            await self._converge()

    async def _converge(self) -> None:
        """Run the controller for exactly the shards held and wanted; give back the unwanted ones once the
        controller that covered them has stopped."""
        held, desired = self.coordinator.held(), self.coordinator.desired()
        target = held & desired
        controller = self._controller
        if controller is not None and (target != self._running or not controller.alive):
            await self._stop_controller()
        if self._controller is None:
            unwanted = [k for k, lock in self.coordinator.locks.items() if lock.is_holder and k not in desired]
            if unwanted:
                await self.coordinator.release(unwanted)
            if target and not self._stopping.is_set():
                self._start_controller(target)

    def _start_controller(self, shards: frozenset[int]) -> None:
        label_selector = selector(shards) if self.shards > 1 else None
        log.info("Reconciling %s", f"shards {sorted(shards)}" if self.shards > 1 else "as the leader")

        def build() -> kopf.OperatorRegistry:  # in the controller's thread
            registry, self._watch_health = self.build_controller(label_selector)
            return registry

        self._controller = KopfThread("controller", build, self.scope, fence=self.coordinator.fence(shards)).start()
        self._running = shards

    async def _stop_controller(self) -> None:
        controller, self._controller = self._controller, None
        if controller is None:
            return
        log.info("Stopping the controller for %s", sorted(self._running))
        self._running = frozenset()
        self._watch_health = None
        if not await controller.stop():
            log.error("The controller did not stop within %.0fs: exiting", STOP_TIMEOUT)
            os._exit(1)


def run(supervisor: Supervisor) -> int:
    """Run until SIGTERM/SIGINT; the exit code."""
    return asyncio.run(supervisor.run())
