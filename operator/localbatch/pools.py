"""Pools and compute nodes: auto pools, node lifecycle, start tasks, node directories.

An auto pool is created the moment its job (``poolLifetimeOption: job``) or the first job of its
schedule (``jobschedule``) is created, with id ``{autoPoolIdPrefix}_{GUID}`` (a bare upper-case GUID
without a prefix, as Azure names them). Allocation is ``resizing`` -> ``steady``; each node goes
``creating`` -> ``starting`` -> ``waitingforstarttask`` (when the start task has ``waitForSuccess``)
-> ``idle``, or ``starttaskfailed``; it is ``running`` while tasks run on it. A ``starttaskfailed``
node takes no task and the job waits, as on Azure.

A pool gets only the nodes the account's core quotas allow (:mod:`localbatch.quotas`), none for an
unknown VM size or an injected allocation failure; the shortfall goes into ``resizeErrors``, and
:meth:`Pools.retry_allocations` lets short pools grow when the limits change.

Each node is a directory ``<work_dir>/nodes/<nodeId>/`` laid out as on a Batch Linux node:
``startup/`` (the start task: ``stdout.txt``, ``stderr.txt``, ``wd/``), ``shared/``,
``workitems/<jobId>/job-1/<taskId>/`` (a job task: ``stdout.txt``, ``stderr.txt``, ``wd/``).

Unlike Batch, the directories are kept after their pool is deleted, so finished tasks' output can
still be read (a completed task's own directory goes once its ``retentionTime`` has passed:
:mod:`localbatch.engine_tasks`).

A pool with ``virtualMachineConfiguration.containerConfiguration`` is container-enabled: while a node
is ``starting`` its ``containerImageNames`` are fetched (present in the engine, or pulled); an image that
cannot be had makes the node ``unusable`` with a ``ContainerInvalidImage`` entry in its ``errors`` (Azure:
"The node errors property reports a failure to download a container and sets the node state to
unusable"), and the start task does not run. Deleting a pool removes the containers left on its nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from batchwire import durations, timestamps
from localbatch import container_tasks, runner
from localbatch.clock import VirtualClock
from localbatch.quotas import AccountLimits
from localbatch.store import JSON, Store

MAX_NODES_PER_POOL = 16
"""Nodes are local directories and processes: a pool never gets more than this many locally."""
NODE_AGENT_VERSION = "1.12.9"
BUSY_STATES = ("running",)
FAILED_STATES = ("starttaskfailed", "unusable")
"""Node states that take no task; a job whose pool has only such nodes waits (as on Azure)."""


class PoolUnavailable(Exception):
    """A job cannot get a node: the pool failed (every node's start task failed) or was deleted."""

    def __init__(self, code: str, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []


def auto_pool_id(prefix: str | None) -> str:
    suffix = str(uuid.uuid4()).upper()
    return f"{prefix}_{suffix}" if prefix else suffix


def node_id_for(pool_id: str, index: int, dedicated: bool = True) -> str:
    digest = hashlib.sha256(f"{pool_id.lower()}/{index}/{uuid.uuid4()}".encode()).hexdigest()
    return f"tvmps_{digest}_{'d' if dedicated else 'p'}"


class Pools:
    """Owns ``store.pools`` and ``store.nodes`` over time."""

    def __init__(
        self,
        store: Store,
        clock: VirtualClock,
        *,
        work_dir: Path,
        base_url: str,
        account_name: str,
        execute: bool,
        session: Callable[[], aiohttp.ClientSession],
        processes: runner.ProcessTable,
        containers: container_tasks.ContainerHost,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        node_step_seconds: float,
        limits: AccountLimits | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.work_dir = work_dir
        self.base_url = base_url.rstrip("/")
        self.account_name = account_name
        self.execute = execute
        self._session = session
        self.processes = processes
        self.containers = containers
        self._spawn = spawn
        self.node_step_seconds = node_step_seconds
        self.limits = limits or AccountLimits()
        self._events: dict[str, asyncio.Event] = {}
        self._allocations: dict[str, list[asyncio.Task[Any]]] = {}
        self._booting: set[str] = set()
        """Nodes whose boot (image prefetch, start task) an allocation is running."""

    # -- wire objects -----------------------------------------------------------------------------
    def node_root(self, node_id: str) -> Path:
        return self.work_dir / "nodes" / node_id

    def create_auto_pool(self, auto_pool_spec: JSON) -> str:
        """Create an auto pool from ``autoPoolSpecification`` (synchronously) and start allocating it."""
        spec = auto_pool_spec.get("pool") or {}
        now = self.clock.now()
        stamp = timestamps.format(now)
        pool_id = auto_pool_id(auto_pool_spec.get("autoPoolIdPrefix"))
        pool: JSON = {"id": pool_id}
        if spec.get("displayName"):
            pool["displayName"] = spec["displayName"]
        pool.update(
            {
                "creationTime": stamp,
                "state": "active",
                "stateTransitionTime": stamp,
                "allocationState": "resizing",
                "allocationStateTransitionTime": stamp,
                "vmSize": spec.get("vmSize", ""),
                "resizeTimeout": durations.normalize(spec.get("resizeTimeout") or "PT15M"),
                "currentDedicatedNodes": 0,
                "currentLowPriorityNodes": 0,
                "targetDedicatedNodes": int(spec.get("targetDedicatedNodes") or 0),
                "targetLowPriorityNodes": int(spec.get("targetLowPriorityNodes") or 0),
                "enableAutoScale": bool(spec.get("enableAutoScale", False)),
                "enableInterNodeCommunication": bool(spec.get("enableInterNodeCommunication", False)),
                "taskSlotsPerNode": int(spec.get("taskSlotsPerNode") or 1),
                "taskSchedulingPolicy": spec.get("taskSchedulingPolicy") or {"nodeFillType": "spread"},
            }
        )
        for name in (
            "virtualMachineConfiguration", "autoScaleFormula", "autoScaleEvaluationInterval", "networkConfiguration",
            "applicationPackageReferences", "userAccounts", "metadata", "mountConfiguration", "upgradePolicy",
        ):
            if spec.get(name) is not None:
                pool[name] = copy.deepcopy(spec[name])
        if spec.get("startTask"):
            start_task = copy.deepcopy(spec["startTask"])
            start_task.setdefault("maxTaskRetryCount", 0)
            start_task.setdefault("waitForSuccess", True)
            start_task.setdefault("userIdentity", {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}})
            pool["startTask"] = start_task
        key = self.store.key(pool_id)
        self.store.pools[key] = pool
        self.store.nodes[key] = {}
        self.store.touch(pool, now)
        self.start_allocation(key)
        return pool_id

    def start_allocation(self, key: str) -> None:
        """Allocate (or grow) pool ``key`` in the background; earlier allocations keep booting their nodes."""
        running = [task for task in self._allocations.get(key, []) if not task.done()]
        self._allocations[key] = [*running, self._spawn(self._allocate(key))]

    def retry_allocations(self) -> None:
        """Quotas or allocation failures changed: every active pool short of its target resizes again
        (as a resize on Azure does), its ``resizeErrors`` cleared until the new attempt settles."""
        for key, pool in self.store.pools.items():
            if pool.get("state") != "active":
                continue
            dedicated, low = self._target_nodes(pool)
            if len(self.store.nodes.get(key, {})) >= dedicated + low:
                continue
            now = timestamps.format(self.clock.now())
            pool["allocationState"] = "resizing"
            pool["allocationStateTransitionTime"] = now
            pool.pop("resizeErrors", None)
            self.store.mark_changed()
            self.start_allocation(key)

    def _target_nodes(self, pool: JSON) -> tuple[int, int]:
        if pool.get("enableAutoScale"):
            return 1, 0  # the formula is not evaluated locally: one dedicated node
        dedicated = min(int(pool.get("targetDedicatedNodes") or 0), MAX_NODES_PER_POOL)
        low = min(int(pool.get("targetLowPriorityNodes") or 0), MAX_NODES_PER_POOL - dedicated)
        return dedicated, low

    def _set_node_state(self, node: JSON, state: str) -> None:
        if node.get("state") != state:
            node["state"] = state
            node["stateTransitionTime"] = timestamps.format(self.clock.now())
            self.store.mark_changed()

    async def _allocate(self, key: str) -> None:
        """Bring a pool's nodes up to what its target and the account's quotas allow (or, after a
        restart, finish bringing them up); a shortfall is reported in ``resizeErrors``."""
        pool = self.store.pools.get(key)
        if pool is None or pool.get("state") != "active":
            return
        nodes = self.store.nodes.setdefault(key, {})
        dedicated, low = self._target_nodes(pool)
        grant = self.limits.grant(self.store, key, dedicated, low)
        stamp = timestamps.format(self.clock.now())
        have_dedicated = sum(1 for n in nodes.values() if n.get("isDedicated"))
        have_low = len(nodes) - have_dedicated
        wanted = [True] * max(grant.dedicated - have_dedicated, 0) + [False] * max(grant.low_priority - have_low, 0)
        for is_dedicated in wanted:
            index = len(nodes)
            node_id = node_id_for(pool["id"], index, is_dedicated)
            nodes[node_id] = self._new_node(pool, node_id, index, is_dedicated, stamp)
        self.store.mark_changed()
        await asyncio.sleep(self.node_step_seconds)
        for node in nodes.values():
            if node["state"] == "creating":
                self._set_node_state(node, "starting")
            self._make_node_dirs(node["id"])
        now = self.clock.now()
        pool["currentDedicatedNodes"] = sum(1 for n in nodes.values() if n.get("isDedicated"))
        pool["currentLowPriorityNodes"] = sum(1 for n in nodes.values() if not n.get("isDedicated"))
        pool["allocationState"] = "steady"
        pool["allocationStateTransitionTime"] = timestamps.format(now)
        if grant.errors:
            pool["resizeErrors"] = grant.errors
        else:
            pool.pop("resizeErrors", None)
        self.store.touch(pool, now)
        self.signal(key)
        await asyncio.sleep(self.node_step_seconds)
        starting = [n for n in nodes.values()
                    if n["state"] in ("starting", "waitingforstarttask") and n["id"] not in self._booting]
        self._booting.update(n["id"] for n in starting)
        try:
            await asyncio.gather(*(self._boot_node(key, node) for node in starting))
        finally:
            self._booting.difference_update(n["id"] for n in starting)

    def _new_node(self, pool: JSON, node_id: str, index: int, dedicated: bool, stamp: str) -> JSON:
        vm = pool.get("virtualMachineConfiguration") or {}
        node: JSON = {
            "id": node_id,
            "state": "creating",
            "schedulingState": "enabled",
            "stateTransitionTime": stamp,
            "lastBootTime": stamp,
            "allocationTime": stamp,
            "ipAddress": f"10.0.0.{4 + index}",
            "affinityId": f"TVM:{node_id}",
            "vmSize": pool.get("vmSize", ""),
            "totalTasksRun": 0,
            "totalTasksSucceeded": 0,
            "runningTasksCount": 0,
            "runningTaskSlotsCount": 0,
            "isDedicated": dedicated,
            "nodeAgentInfo": {"version": NODE_AGENT_VERSION, "lastUpdateTime": stamp},
            "virtualMachineInfo": {"imageReference": copy.deepcopy(vm.get("imageReference") or {})},
        }
        if pool.get("startTask"):
            node["startTask"] = copy.deepcopy(pool["startTask"])
        return node

    def _make_node_dirs(self, node_id: str) -> None:
        root = self.node_root(node_id)
        for sub in ("shared", "startup", "workitems", "applications", "fsmounts", "volatile", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def node_env(self, pool: JSON, node_id: str) -> dict[str, str]:
        """The ``AZ_BATCH_*`` variables every task on a node sees."""
        root = self.node_root(node_id)
        return {
            "AZ_BATCH_ACCOUNT_NAME": self.account_name,
            "AZ_BATCH_ACCOUNT_URL": self.base_url,
            "AZ_BATCH_POOL_ID": pool["id"],
            "AZ_BATCH_NODE_ID": node_id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true",
            "AZ_BATCH_NODE_ROOT_DIR": str(root),
            "AZ_BATCH_NODE_SHARED_DIR": str(root / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(root / "startup"),
            "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(root / "startup" / "wd"),
            "AZ_BATCH_NODE_MOUNTS_DIR": str(root / "fsmounts"),
            "AZ_BATCH_CERTIFICATES_DIR": str(root / "certs"),
            "AZ_BATCH_OS_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "1000000000",
        }

    async def _boot_node(self, key: str, node: JSON) -> None:
        pool = self.store.pools.get(key)
        if pool is None:
            return
        if self.execute and container_configuration(pool) is not None:
            error = await self._prefetch_images(container_configuration(pool) or {})
            if error is not None:
                node["errors"] = [container_tasks.node_error(error)]
                self._set_node_state(node, "unusable")
                self.signal(key)
                return
        start_task = pool.get("startTask")
        if not start_task:
            self._set_node_state(node, "idle")
            self.signal(key)
            return
        wait = bool(start_task.get("waitForSuccess", True))
        self._set_node_state(node, "waitingforstarttask" if wait else "idle")
        self.signal(key)
        outcome = await self._run_start_task(pool, node, start_task)
        if wait:
            self._set_node_state(node, "idle" if outcome.succeeded else "starttaskfailed")
        self.signal(key)

    async def _prefetch_images(self, config: JSON) -> JSON | None:
        """Fetch a container pool's ``containerImageNames``; the failure that makes the node unusable, or None."""
        engine = await self.containers.engine()
        if not engine.available:
            return container_tasks.engine_unavailable(engine.reason)
        for image in config.get("containerImageNames") or []:
            why = await self.containers.ensure_image(engine, str(image))
            if why is not None:
                return container_tasks.invalid_image(str(image), why)
        return None

    async def _run_start_task(self, pool: JSON, node: JSON, start_task: JSON) -> runner.Outcome:
        info: JSON = {"state": "running", "startTime": timestamps.format(self.clock.now()), "retryCount": 0}
        node["startTaskInfo"] = info
        self.store.mark_changed()
        if not self.execute:
            outcome = runner.Outcome(0, None, 0, self.clock.now(), self.clock.now())
        else:
            root = self.node_root(node["id"])
            env = {**base_env(root), **self.node_env(pool, node["id"])}
            env["AZ_BATCH_TASK_DIR"] = str(root / "startup")
            env["AZ_BATCH_TASK_WORKING_DIR"] = str(root / "startup" / "wd")
            user_env = {e["name"]: e.get("value", "") for e in start_task.get("environmentSettings") or []}
            env.update(user_env)
            run = runner.TaskRun(
                command_line=start_task.get("commandLine", ""),
                task_dir=root / "startup",
                env=env,
                resource_files=start_task.get("resourceFiles") or [],
                container_settings=start_task.get("containerSettings"),
                max_retries=int(start_task.get("maxTaskRetryCount") or 0),
                node_root=root,
                user_env_names=frozenset(user_env),
                container_pool=container_configuration(pool) is not None,
                container_labels=self.containers.labels(pool_id=pool["id"], node_id=node["id"], task="starttask"),
            )

            def running(start: datetime, retry: int) -> None:
                info["startTime"] = timestamps.format(start)
                info["retryCount"] = retry
                if retry:
                    info["lastRetryTime"] = timestamps.format(start)
                self.store.mark_changed()

            outcome = await runner.run_task(
                run, clock=self.clock, session=self._session(), processes=self.processes,
                hooks=runner.Hooks(on_running=running), containers=self.containers,
                container_name=self.containers.name_for(node["id"], "starttask"),
            )
        info.update(
            {
                "state": "completed",
                "endTime": timestamps.format(outcome.end_time),
                "retryCount": outcome.retry_count,
                "result": "success" if outcome.succeeded else "failure",
            }
        )
        if outcome.exit_code is not None:
            info["exitCode"] = outcome.exit_code
        if outcome.failure_info:
            info["failureInfo"] = outcome.failure_info
        if outcome.container_info:
            info["containerInfo"] = outcome.container_info
        self.store.mark_changed()
        return outcome

    # -- scheduling tasks on nodes ----------------------------------------------------------------
    def signal(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def acquire_node(
        self, key: str, *, slots: int = 1, exclusive: bool = False, exclude: frozenset[str] = frozenset()
    ) -> str:
        """Wait for a node of pool ``key`` that can take a task and mark it busy; return its id.

        ``exclude``: nodes the task must not use (its job's preparation task failed there). With
        ``nodeFillType`` ``Spread`` the least busy node is chosen, with ``Pack`` the first with room."""
        while True:
            pool = self.store.pools.get(key)
            if pool is None or pool.get("state") != "active":
                raise PoolUnavailable(
                    "PoolNotFound" if pool is None else "PoolBeingDeleted",
                    f"the pool {key} was deleted before the job's tasks could run",
                )
            nodes = list(self.store.nodes.get(key, {}).values())
            capacity = int(pool.get("taskSlotsPerNode") or 1)
            if str((pool.get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread")).lower() == "spread":
                nodes.sort(key=lambda n: int(n.get("runningTaskSlotsCount") or 0))
            for node in nodes:
                if node["state"] not in ("idle", "running") or node["id"] in exclude:
                    continue
                used = int(node.get("runningTaskSlotsCount") or 0)
                if (exclusive and used) or (used and used + slots > capacity):
                    continue
                node["runningTasksCount"] = int(node.get("runningTasksCount") or 0) + 1
                node["runningTaskSlotsCount"] = used + slots
                self._set_node_state(node, "running")
                return str(node["id"])
            # Nodes whose start task failed, and unusable nodes (a container image that cannot be had),
            # take no task: the job waits, as on Azure, until a node can take it or the job ends.
            event = self._events.setdefault(key, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await event.wait()

    def release_node(self, key: str, node_id: str, *, slots: int, task_info: JSON | None) -> None:
        node = self.store.nodes.get(key, {}).get(node_id)
        if node is None:
            return
        node["runningTasksCount"] = max(0, int(node.get("runningTasksCount") or 0) - 1)
        node["runningTaskSlotsCount"] = max(0, int(node.get("runningTaskSlotsCount") or 0) - slots)
        if task_info is not None:
            node["totalTasksRun"] = int(node.get("totalTasksRun") or 0) + 1
            if (task_info.get("executionInfo") or {}).get("result") == "success":
                node["totalTasksSucceeded"] = int(node.get("totalTasksSucceeded") or 0) + 1
            recent = node.setdefault("recentTasks", [])
            recent.append(task_info)
            del recent[:-10]
        if node["state"] == "running" and not node["runningTasksCount"]:
            self._set_node_state(node, "idle")
        self.store.mark_changed()
        self.signal(key)

    # -- deletion ---------------------------------------------------------------------------------
    def delete_pool(self, key: str) -> asyncio.Task[Any] | None:
        """Mark a pool ``deleting`` and tear it down (nodes, directories) in the background."""
        pool = self.store.pools.get(key)
        if pool is None:
            return None
        if pool.get("state") != "deleting":
            now = self.clock.now()
            pool["state"] = "deleting"
            pool["stateTransitionTime"] = timestamps.format(now)
            pool["allocationState"] = "resizing"
            pool["allocationStateTransitionTime"] = timestamps.format(now)
            self.store.touch(pool, now)
        self.signal(key)
        return self._spawn(self._teardown(key))

    async def _teardown(self, key: str) -> None:
        allocations = [task for task in self._allocations.pop(key, []) if not task.done()]
        for allocation in allocations:
            allocation.cancel()
        await asyncio.gather(*allocations, return_exceptions=True)
        nodes = self.store.nodes.get(key, {})
        for node in nodes.values():
            self._set_node_state(node, "leavingpool")
        pool = self.store.pools.get(key)
        if pool is not None:
            await self.containers.prune(pool_id=pool["id"])
        await asyncio.sleep(self.node_step_seconds)
        # The node directories stay (Batch would delete them with the VMs): locally, stdout.txt and
        # stderr.txt of finished jobs are what a developer wants to read.
        self.store.nodes.pop(key, None)
        self.store.pools.pop(key, None)
        self._events.pop(key, None)
        self.store.mark_changed()

    # -- restart ----------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a state-file restore: finish deletions, resume allocations, free nodes whose tasks died."""
        for key, pool in list(self.store.pools.items()):
            if pool.get("state") == "deleting":
                self.delete_pool(key)
                continue
            for node in self.store.nodes.get(key, {}).values():
                node["runningTasksCount"] = 0
                node["runningTaskSlotsCount"] = 0
                if node["state"] == "running":
                    self._set_node_state(node, "idle")
                elif node["state"] in ("creating", "starting", "waitingforstarttask"):
                    self._set_node_state(node, "starting")
                elif node["state"] == "leavingpool":
                    self._set_node_state(node, "idle")
            if pool.get("allocationState") != "steady" or any(
                n["state"] == "starting" for n in self.store.nodes.get(key, {}).values()
            ):
                self.start_allocation(key)


def container_configuration(pool: JSON) -> JSON | None:
    """The pool's ``virtualMachineConfiguration.containerConfiguration`` (None: not container-enabled)."""
    config = (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
    return config if isinstance(config, dict) else None


def base_env(node_root: Path) -> dict[str, str]:
    """What a Batch node's task sees besides the ``AZ_BATCH_*`` variables (no service secrets leak in)."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(node_root / "home"),
        "LANG": "C.UTF-8",
        "USER": "_azbatch",
    }
