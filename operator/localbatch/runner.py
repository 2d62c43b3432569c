"""Running one Batch task for real: resource files, the process, retries, output files.

A task runs as a local process, its command line split with :func:`shlex.split` and executed
without a shell (Batch on Linux does the same: ``/bin/bash -c '...'`` is how users get one), in its
own process group so that terminating it kills everything it started. ``stdout.txt`` and
``stderr.txt`` land in the task directory, the working directory is ``<task dir>/wd``.

A task with ``containerSettings`` runs in a container of this machine's engine (docker or podman,
:mod:`batchwire.containers`) as Azure Batch runs one: ``create`` with Batch's mounts and variables,
``start --attach`` with the output in the same ``stdout.txt``/``stderr.txt``, the container's state kept in
``containerInfo``, the container removed (:mod:`localbatch.container_tasks`). A task on a container pool
without ``containerSettings``, an image that cannot be had or a refused run option end the task before it
starts (a pre-processing error: no exit code, not retried). Without a working engine, the task fails with
``ContainerEngineUnavailable`` (never silently on the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from batchwire import durations
from batchwire.redact import redact
from localbatch import container_tasks, transfer
from localbatch.clock import VirtualClock

log = logging.getLogger("localbatch.runner")

UNLIMITED_RETRIES_CAP = 100
"""``maxTaskRetryCount: -1`` (retry forever) is bounded to this many retries locally."""


def failure(code: str, message: str, category: str = "usererror") -> dict[str, Any]:
    """A wire ``failureInfo``."""
    return {"category": category, "code": code, "message": message}


FAILURE_EXIT_CODE_MESSAGE = "The task exited with an exit code representing a failure"


@dataclass
class TaskRun:
    """Everything needed to run one task (job manager task or start task) on one node."""

    command_line: str
    task_dir: Path
    env: dict[str, str]
    resource_files: list[dict[str, Any]] = field(default_factory=list)
    output_files: list[dict[str, Any]] = field(default_factory=list)
    container_settings: dict[str, Any] | None = None
    max_wall_clock: timedelta | None = None
    max_retries: int = 0
    node_root: Path | None = None
    user_env_names: frozenset[str] = frozenset()
    """Names from ``environmentSettings`` (passed into a container besides the ``AZ_BATCH_*`` ones)."""
    container_pool: bool = False
    """The pool has ``virtualMachineConfiguration.containerConfiguration``."""
    settings_required: bool = False
    """On a container pool this task must have ``containerSettings`` (job manager and regular tasks)."""
    container_labels: dict[str, str] = field(default_factory=dict)

    @property
    def working_dir(self) -> Path:
        return self.task_dir / "wd"


@dataclass
class Outcome:
    """How a task run ended (the fields of the wire ``executionInfo`` it sets)."""

    exit_code: int | None
    failure_info: dict[str, Any] | None
    retry_count: int
    start_time: datetime | None
    end_time: datetime
    container_info: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.failure_info is None


class Hooks:
    """Callbacks a runner reports progress through (state changes land in the Store)."""

    def __init__(
        self,
        on_preparing: Callable[[], None] | None = None,
        on_running: Callable[[datetime, int], None] | None = None,
    ) -> None:
        self.on_preparing = on_preparing or (lambda: None)
        self.on_running = on_running or (lambda _start, _retry: None)


class ProcessTable:
    """The process groups currently running, so that stop/terminate can kill them all."""

    def __init__(self) -> None:
        self._groups: set[int] = set()

    def add(self, pgid: int) -> None:
        self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        self._groups.discard(pgid)

    def __len__(self) -> int:
        return len(self._groups)

    def kill_all(self) -> None:
        for pgid in list(self._groups):
            kill_group(pgid)
        self._groups.clear()


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _die_with_service() -> None:
    """``preexec_fn``: the task's own process gets SIGKILL if the service dies without cleaning up."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def reap_orphans(node_root_prefix: Path) -> int:
    """Kill process groups left by a previous run of the service on the same work dir (it was killed).

    A process belongs to us when its environment has ``AZ_BATCH_NODE_ROOT_DIR`` under
    ``node_root_prefix`` (every task the runner starts has it). Returns how many groups were killed.
    """
    marker = f"AZ_BATCH_NODE_ROOT_DIR={node_root_prefix}/".encode()
    groups: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(int(entry.name)))
    for pgid in groups:
        if pgid != os.getpgrp():
            kill_group(pgid)
    return len(groups)


async def run_task(
    run: TaskRun,
    *,
    clock: VirtualClock,
    session: aiohttp.ClientSession,
    processes: ProcessTable,
    hooks: Hooks,
    container_name: str,
    containers: container_tasks.ContainerHost | None = None,
) -> Outcome:
    """Run ``run`` to completion (retries included) and upload its outputs; cancel-safe (kills the process
    and removes the container).

    An unexpected error of the service itself (a full disk, say) ends the task with a ``servererror``
    failure instead of leaving it running forever.
    """
    try:
        return await _run_task(
            run, clock=clock, session=session, processes=processes, hooks=hooks,
            container=_ContainerSlot(containers, container_name),
        )
    except Exception as exc:  # asyncio.CancelledError is not an Exception: terminate still propagates
        log.exception("running the task in %s failed", run.task_dir)
        detail = redact(f"{exc.__class__.__name__}: {exc}")
        return Outcome(None, failure("TaskRunFailed", f"the local Batch service could not run the task ({detail})",
                                     category="servererror"), 0, None, clock.now())


@dataclass
class _ContainerSlot:
    host: container_tasks.ContainerHost | None
    name: str
    run: container_tasks.ContainerRun | None = None
    info: dict[str, Any] | None = None


@dataclass
class _Attempt:
    exit_code: int | None
    timed_out: bool = False
    launch_error: dict[str, Any] | None = None


async def _run_task(
    run: TaskRun,
    *,
    clock: VirtualClock,
    session: aiohttp.ClientSession,
    processes: ProcessTable,
    hooks: Hooks,
    container: _ContainerSlot,
) -> Outcome:
    run.working_dir.mkdir(parents=True, exist_ok=True)
    hooks.on_preparing()
    start: datetime | None = None
    argv = _argv(run)
    if isinstance(argv, dict):
        return Outcome(None, argv, 0, None, clock.now())
    if run.container_settings is not None or run.container_pool:
        prepared = await _prepare_container(run, argv, container)
        if prepared is not None:
            return Outcome(None, prepared, 0, None, clock.now())
    if container.run is None and not argv:
        return Outcome(None, failure("CommandLaunchFailed", "the command line is empty"), 0, None, clock.now())
    try:
        await transfer.download_resource_files(session, run.resource_files, run.working_dir)
    except transfer.TransferError as exc:
        return Outcome(None, failure(exc.code, exc.message), 0, None, clock.now())
    retries_allowed = UNLIMITED_RETRIES_CAP if run.max_retries < 0 else run.max_retries
    retry = 0
    info: dict[str, Any] | None
    while True:
        start = clock.now()
        hooks.on_running(start, retry)
        if container.run is not None:
            attempt = await _execute_container(container, run, clock=clock, processes=processes)
        else:
            attempt = await _execute(argv, run, env=dict(run.env), clock=clock, processes=processes)
        exit_code = attempt.exit_code
        if attempt.launch_error is not None:  # could not start the program at all (not retried, as in Batch)
            return Outcome(None, attempt.launch_error, retry, start, clock.now(), container_info=container.info)
        if attempt.timed_out:
            info = failure(
                "TaskEnded",
                f"the task ran longer than its constraints.maxWallClockTime ({durations.format(run.max_wall_clock)}) "
                "and was killed"
                if run.max_wall_clock is not None
                else "the task was killed",
            )
            break
        if exit_code == 0:
            info = None
            break
        if retry >= retries_allowed:
            info = failure("FailureExitCode", FAILURE_EXIT_CODE_MESSAGE)
            break
        retry += 1
    outcome = Outcome(exit_code, info, retry, start, clock.now(), container_info=container.info)
    try:
        for item in transfer.plan_uploads(run.output_files, run.working_dir, run.env, succeeded=info is None):
            await transfer.upload(session, item)
    except transfer.TransferError as exc:
        outcome.failure_info = failure(exc.code, exc.message)
    outcome.end_time = clock.now()
    return outcome


def _argv(run: TaskRun) -> list[str] | dict[str, Any]:
    """The command line as arguments (empty: a container runs its image's default command)."""
    try:
        return shlex.split(run.command_line)
    except ValueError as exc:
        return failure("CommandLaunchFailed", f"the command line cannot be split into arguments: {exc}")


async def _prepare_container(run: TaskRun, command: list[str], slot: _ContainerSlot) -> dict[str, Any] | None:
    """Decide whether and how the task runs in a container (``slot.run``); a failureInfo when it cannot.

    The checks of Azure's node agent before the task starts, in its order: settings against the pool, the
    image (present or pulled), then the container's options.
    """
    settings = run.container_settings
    if settings is None:
        return container_tasks.settings_not_found() if run.settings_required else None
    options = str(settings.get("containerRunOptions") or "")
    if not run.container_pool:
        return container_tasks.invalid_settings(
            options, "the task has containerSettings but its pool has no "
            "virtualMachineConfiguration.containerConfiguration (its nodes run no container engine): "
            "give the pool a containerConfiguration, or remove the task's containerSettings")
    if slot.host is None:
        return container_tasks.engine_unavailable("this service was started without container support")
    engine = await slot.host.engine()
    if not engine.available:
        return container_tasks.engine_unavailable(engine.reason)
    image = str(settings["imageName"])
    why = await slot.host.ensure_image(engine, image)
    if why is not None:
        return container_tasks.invalid_image(image, why)
    try:
        slot.run = container_tasks.plan(
            engine, settings, env=run.env, user_env=run.user_env_names, node_root=run.node_root or run.task_dir,
            working_dir=run.working_dir, name=slot.name, labels=run.container_labels, command=command,
        )
    except container_tasks.OptionRefused as exc:
        return container_tasks.invalid_settings(options, str(exc))
    return None


async def _execute_container(
    slot: _ContainerSlot, run: TaskRun, *, clock: VirtualClock, processes: ProcessTable
) -> _Attempt:
    """One attempt in a container: ``create`` (refused options fail here, as in Azure), ``start --attach``
    with the output in the task directory, then the container's state into ``containerInfo``, and removal."""
    assert slot.run is not None and slot.host is not None
    plan, host = slot.run, slot.host
    host.running.add(plan.name)
    slot.info = None
    try:
        code, _out, err = await container_tasks.capture(plan.create, env=plan.env)
        if code != 0:
            options = str(plan.settings.get("containerRunOptions") or "")
            why = container_tasks.last_line(err) or f"`{plan.engine.name} create` exited with {code}"
            return _Attempt(None, launch_error=container_tasks.invalid_settings(options, why))

        async def stop() -> None:
            await host.kill(plan.engine, plan.name)

        attempt = await _execute(plan.engine.start(plan.name), run, env=plan.env, clock=clock, processes=processes,
                                 on_timeout=stop)
        slot.info = await host.state(plan.engine, plan.name)
        if attempt.exit_code and not attempt.timed_out and (slot.info or {}).get("state") in ("created", "configured"):
            why = _tail(run.task_dir / "stderr.txt") or f"`{plan.engine.name} start` exited with {attempt.exit_code}"
            if slot.info is not None:
                slot.info.setdefault("error", why)
            return _Attempt(None, launch_error=container_tasks.not_started(str(plan.settings["imageName"]), why))
        return attempt
    finally:
        if slot.info is None:
            slot.info = await host.state(plan.engine, plan.name)
        await host.remove(plan.engine, plan.name)


def _tail(path: Path) -> str:
    """The last line of a file (the engine's message when a container could not start)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 2000))
            return container_tasks.last_line(handle.read().decode(errors="replace"))
    except OSError:
        return ""


async def _execute(
    argv: list[str], run: TaskRun, *, env: dict[str, str], clock: VirtualClock, processes: ProcessTable,
    on_timeout: Callable[[], Awaitable[None]] | None = None,
) -> _Attempt:
    """Run once: the exit code and whether it timed out, or a failureInfo when the program cannot start."""
    with (run.task_dir / "stdout.txt").open("ab") as out, (run.task_dir / "stderr.txt").open("ab") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=run.working_dir, env=env, stdout=out, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_service,
            )
        except (FileNotFoundError, NotADirectoryError):
            return _Attempt(None, launch_error=failure(
                "CommandProgramNotFound",
                f"the program {argv[0]!r} of the command line was not found (the command line runs without a "
                "shell: use an absolute path, ./name for a resource file, or /bin/bash -c '...')",
            ))
        except OSError as exc:
            return _Attempt(None, launch_error=failure(
                "CommandLaunchFailed",
                f"the program {argv[0]!r} could not be started ({exc.strerror or exc.__class__.__name__}); "
                "a script needs fileMode with the execute bit (e.g. 0755) and a #! line",
            ))
    pgid = proc.pid
    processes.add(pgid)
    try:
        deadline = clock.now() + run.max_wall_clock if run.max_wall_clock is not None else None
        while True:
            wait = 0.5 if deadline is None else min(0.5, clock.real_seconds_until(deadline))
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    code = await proc.wait()
                return _Attempt(code)
            except TimeoutError:
                if deadline is not None and clock.now() >= deadline:
                    if on_timeout is not None:
                        await on_timeout()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(5):
                                await proc.wait()
                    kill_group(pgid)
                    await proc.wait()
                    return _Attempt(proc.returncode, timed_out=True)
    finally:
        if proc.returncode is None:
            kill_group(pgid)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await proc.wait()
        kill_group(pgid)  # grandchildren left in the group
        processes.discard(pgid)
