"""Running one Batch task for real: resource files, the process, retries, output files.

A task runs as a local process, its command line split with :func:`shlex.split` and executed
without a shell (Batch on Linux does the same: ``/bin/bash -c '...'`` is how users get one), in its
own process group so that terminating it kills everything it started. ``stdout.txt`` and
``stderr.txt`` land in the task directory, the working directory is ``<task dir>/wd``.

A task with ``containerSettings`` runs through ``docker``/``podman run`` when a container engine
answers; otherwise it fails with ``ContainerEngineUnavailable`` (never silently on the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from batchwire import durations
from batchwire.redact import redact
from localbatch import transfer
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
        self._containers: set[tuple[str, str]] = set()

    def add(self, pgid: int) -> None:
        self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        self._groups.discard(pgid)

    def __len__(self) -> int:
        return len(self._groups)

    def kill_all(self) -> None:
        for pgid in list(self._groups):
            kill_group(pgid)
        for cli, name in list(self._containers):
            subprocess.run([cli, "rm", "-f", name], capture_output=True, timeout=30, check=False)
        self._groups.clear()
        self._containers.clear()


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


_engine_cache: dict[str, str | None] = {}


def container_engine() -> str | None:
    """``docker`` or ``podman`` if its CLI is installed *and* reaches a running engine, else ``None``."""
    if "engine" not in _engine_cache:
        found: str | None = None
        for cli in ("docker", "podman"):
            path = shutil.which(cli)
            if not path:
                continue
            try:
                done = subprocess.run([path, "info"], capture_output=True, timeout=15, check=False)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                found = path
                break
        _engine_cache["engine"] = found
    return _engine_cache["engine"]


async def run_task(
    run: TaskRun,
    *,
    clock: VirtualClock,
    session: aiohttp.ClientSession,
    processes: ProcessTable,
    hooks: Hooks,
    container_name: str,
) -> Outcome:
    """Run ``run`` to completion (retries included) and upload its outputs; cancel-safe (kills the process).

    An unexpected error of the service itself (a full disk, say) ends the task with a ``servererror``
    failure instead of leaving it running forever.
    """
    try:
        return await _run_task(
            run, clock=clock, session=session, processes=processes, hooks=hooks, container_name=container_name
        )
    except Exception as exc:  # asyncio.CancelledError is not an Exception: terminate still propagates
        log.exception("running the task in %s failed", run.task_dir)
        detail = redact(f"{exc.__class__.__name__}: {exc}")
        return Outcome(None, failure("TaskRunFailed", f"the local Batch service could not run the task ({detail})",
                                     category="servererror"), 0, None, clock.now())


async def _run_task(
    run: TaskRun,
    *,
    clock: VirtualClock,
    session: aiohttp.ClientSession,
    processes: ProcessTable,
    hooks: Hooks,
    container_name: str,
) -> Outcome:
    run.working_dir.mkdir(parents=True, exist_ok=True)
    hooks.on_preparing()
    start: datetime | None = None
    try:
        await transfer.download_resource_files(session, run.resource_files, run.working_dir)
    except transfer.TransferError as exc:
        return Outcome(None, failure(exc.code, exc.message), 0, None, clock.now())
    argv = _argv(run, container_name)
    if isinstance(argv, dict):
        return Outcome(None, argv, 0, None, clock.now())
    retries_allowed = UNLIMITED_RETRIES_CAP if run.max_retries < 0 else run.max_retries
    retry = 0
    info: dict[str, Any] | None
    while True:
        start = clock.now()
        hooks.on_running(start, retry)
        exit_code, timed_out, launch_error = await _execute(
            argv, run, clock=clock, processes=processes, container=container_name
        )
        if launch_error is not None:  # could not start the program at all (not retried, as in Batch)
            return Outcome(None, launch_error, retry, start, clock.now())
        if timed_out:
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
    outcome = Outcome(exit_code, info, retry, start, clock.now())
    if run.container_settings is not None:
        outcome.container_info = {"containerId": container_name, "state": "exited"}
    try:
        for item in transfer.plan_uploads(run.output_files, run.working_dir, run.env, succeeded=info is None):
            await transfer.upload(session, item)
    except transfer.TransferError as exc:
        outcome.failure_info = failure(exc.code, exc.message)
    outcome.end_time = clock.now()
    return outcome


def _argv(run: TaskRun, container_name: str) -> list[str] | dict[str, Any]:
    try:
        argv = shlex.split(run.command_line)
    except ValueError as exc:
        return failure("CommandLaunchFailed", f"the command line cannot be split into arguments: {exc}")
    if not argv:
        return failure("CommandLaunchFailed", "the command line is empty")
    settings = run.container_settings
    if settings is None:
        return argv
    engine = container_engine()
    if engine is None:
        return failure(
            "ContainerEngineUnavailable",
            "the task has containerSettings but this local Batch service found no working container engine "
            "(docker or podman CLI talking to a running daemon); start one, or remove containerSettings to run "
            "the command line on the host",
        )
    root = str(run.node_root or run.task_dir)
    cmd = [engine, "run", "--rm", "--name", container_name, "--network", "host", "-v", f"{root}:{root}"]
    if (settings.get("workingDirectory") or "taskWorkingDirectory") == "taskWorkingDirectory":
        cmd += ["-w", str(run.working_dir)]
    for name, value in run.env.items():
        if name.startswith("AZ_BATCH_") or name in run.user_env_names:
            cmd += ["-e", f"{name}={value}"]
    cmd += shlex.split(settings.get("containerRunOptions") or "")
    cmd.append(settings["imageName"])
    return cmd + argv


async def _execute(
    argv: list[str], run: TaskRun, *, clock: VirtualClock, processes: ProcessTable, container: str
) -> tuple[int | None, bool, dict[str, Any] | None]:
    """Run once: ``(exit code, timed out, None)``, or ``(None, False, failureInfo)`` when it cannot start."""
    env = dict(run.env)
    with (run.task_dir / "stdout.txt").open("ab") as out, (run.task_dir / "stderr.txt").open("ab") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=run.working_dir, env=env, stdout=out, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_service,
            )
        except (FileNotFoundError, NotADirectoryError):
            return None, False, failure(
                "CommandProgramNotFound",
                f"the program {argv[0]!r} of the command line was not found (the command line runs without a "
                "shell: use an absolute path, ./name for a resource file, or /bin/bash -c '...')",
            )
        except OSError as exc:
            return None, False, failure(
                "CommandLaunchFailed",
                f"the program {argv[0]!r} could not be started ({exc.strerror or exc.__class__.__name__}); "
                "a script needs fileMode with the execute bit (e.g. 0755) and a #! line",
            )
    pgid = proc.pid
    processes.add(pgid)
    try:
        deadline = clock.now() + run.max_wall_clock if run.max_wall_clock is not None else None
        while True:
            wait = 0.5 if deadline is None else min(0.5, clock.real_seconds_until(deadline))
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    code = await proc.wait()
                return code, False, None
            except TimeoutError:
                if deadline is not None and clock.now() >= deadline:
                    kill_group(pgid)
                    await proc.wait()
                    return proc.returncode, True, None
    finally:
        if proc.returncode is None:
            kill_group(pgid)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await proc.wait()
        kill_group(pgid)  # grandchildren left in the group
        processes.discard(pgid)
        if run.container_settings is not None and container_engine():
            rm = [container_engine() or "docker", "rm", "-f", container]
            await asyncio.to_thread(subprocess.run, rm, capture_output=True, check=False)

