"""Container tasks as Azure Batch runs them on a Linux node, on this machine's container engine.

What :mod:`localbatch.runner` needs to run a task in a container, and what a container pool's node needs
when it starts (see docs/local-batch-service.md, "Container tasks"):

- **Which tasks run in a container.** A pool with ``virtualMachineConfiguration.containerConfiguration`` is
  container-enabled: its job manager task must have ``containerSettings`` (else the task fails at run time
  with ``ContainerTaskSettingsNotFound``, as Azure does), its start task may. A task with
  ``containerSettings`` on a pool without ``containerConfiguration`` fails with ``ContainerInvalidSettings``
  (Azure accepts it at add time and documents no run-time code; this is the closest documented one).
- **The container.** ``<engine> create`` with Batch's own options, then the user's ``containerRunOptions``
  (checked by :func:`parse_run_options`: a safe subset; anything that would leave the sandbox is refused by
  name with ``ContainerInvalidSettings``, the code Azure uses for run options the engine rejects), then
  ``start --attach`` with the output in the task's ``stdout.txt``/``stderr.txt`` on the host. Batch's
  directories are bind-mounted at the same paths (all of ``AZ_BATCH_NODE_ROOT_DIR``, or the
  ``containerHostBatchBindMounts`` chosen), the ``AZ_BATCH_*`` variables and ``environmentSettings`` are
  passed in by name, the working directory is the task's (``taskWorkingDirectory``) or the image's
  (``containerImageDefault``). The container's state and error are read before it is removed
  (``executionInfo.containerInfo``); it is always removed, ``--rm`` or not.
- **Images.** Present in the engine, or pulled; one that cannot be had fails the task with
  ``ContainerInvalidImage`` (a pre-processing error: no exit code, not retried) or, for a pool's
  ``containerImageNames``, makes the node ``unusable`` with that node error.
- **No container left behind.** Every container carries the service's label (:class:`ContainerHost`);
  a kill removes it, pool deletion and shutdown remove what is left, and a service started on the work
  directory of one that was killed removes that one's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from batchwire import containers
from batchwire.redact import redact

log = logging.getLogger("localbatch.containers")

POOL_LABEL: Final = "azurebatch.dev/pool"
NODE_LABEL: Final = "azurebatch.dev/node"
TASK_LABEL: Final = "azurebatch.dev/task"
PULL_TIMEOUT: Final = 600.0
CLI_TIMEOUT: Final = 120.0

INVALID_IMAGE: Final = "One or more container images specified are invalid"
INVALID_SETTINGS: Final = "At least one value of specified task container settings is invalid"
SETTINGS_NOT_FOUND: Final = "Container-enabled compute node requires task container settings"

# -- failures as Batch reports them ----------------------------------------------------------------


def _failure(code: str, message: str, details: Iterable[tuple[str, str]]) -> dict[str, Any]:
    info: dict[str, Any] = {"category": "usererror", "code": code, "message": message}
    info["details"] = [{"name": name, "value": redact(value)} for name, value in details]
    return info


def invalid_image(image: str, why: str) -> dict[str, Any]:
    """``ContainerInvalidImage``: the image is not in the engine and cannot be pulled."""
    return _failure("ContainerInvalidImage", INVALID_IMAGE, [("ContainerImage", image), ("Message", why)])


def invalid_settings(options: str, why: str) -> dict[str, Any]:
    """``ContainerInvalidSettings``: a run option was refused, or the engine could not create the container."""
    return _failure("ContainerInvalidSettings", INVALID_SETTINGS, [("ContainerSettings", options), ("Message", why)])


def settings_not_found() -> dict[str, Any]:
    """``ContainerTaskSettingsNotFound``: a task without containerSettings on a container-enabled pool."""
    return _failure("ContainerTaskSettingsNotFound", SETTINGS_NOT_FOUND, [])


def not_started(image: str, why: str) -> dict[str, Any]:
    """The container was created but its command could not start: the program is not in the image
    (``CommandProgramNotFound``, as for a task on the host), else ``ContainerMiscError``."""
    if "not found" in why or "no such file" in why.lower():
        return _failure("CommandProgramNotFound",
                        f"the program of the command line was not found in the container image {image} (the command "
                        "line runs without a shell: use an absolute path, or /bin/sh -c '...')", [("Message", why)])
    return _failure("ContainerMiscError",
                    "There was an unknown error encountered while attempting to run a Task in a container",
                    [("ContainerImage", image), ("Message", why)])


def engine_unavailable(reason: str) -> dict[str, Any]:
    """Local only: no container engine works on this machine (Azure's container nodes always have one)."""
    return _failure(
        "ContainerEngineUnavailable",
        "this local Batch service found no working container engine (docker with a running daemon, or "
        "podman): install one (Debian: apt-get install podman runc) or run the task without containerSettings",
        [("Message", reason)],
    )


def node_error(failure: Mapping[str, Any]) -> dict[str, Any]:
    """A task-style failure as a node ``errors`` entry (``errorDetails`` instead of ``details``)."""
    return {"code": failure["code"], "message": failure["message"], "errorDetails": list(failure.get("details") or [])}


# -- run options -----------------------------------------------------------------------------------


class OptionRefused(Exception):
    """A ``containerRunOptions`` entry this service does not pass to the engine; the message names it."""


_NAMESPACES: Final = {"--pid", "--ipc", "--uts", "--cgroupns", "--userns"}
"""Namespace options: accepted with a private value, refused with ``host``, ``container:...`` or ``ns:...``."""
_FLAGS: Final = {"--rm", "--init", "--read-only", "-t", "--tty", "-i", "--interactive"}
"""Options without a value that are passed on (``--rm`` is accepted and dropped: the container is always removed)."""
_VALUED: Final = {
    "-e", "--env", "-w", "--workdir", "-u", "--user", "--network", "--net", "-m", "--memory", "--memory-swap",
    "--memory-reservation", "--cpus", "-c", "--cpu-shares", "--cpuset-cpus", "--pids-limit", "--shm-size",
    "--ulimit", "--entrypoint", "-h", "--hostname", "-l", "--label", "--tmpfs", "--stop-timeout", "--stop-signal",
    "--add-host", "--dns", "--env-file", "-v", "--volume", "--mount", *_NAMESPACES,
}
_ESCAPES: Final = {
    "--privileged": "gives the container every capability and the host's devices",
    "--cap-add": "adds capabilities beyond the default set",
    "--device": "exposes a host device", "--device-cgroup-rule": "opens host devices",
    "--security-opt": "changes seccomp, AppArmor or SELinux confinement",
    "--volumes-from": "mounts another container's volumes", "--sysctl": "changes kernel parameters",
    "--cgroup-parent": "moves the container out of the engine's cgroup",
    "--group-add": "adds the container user to host groups",
}

_BATCH_OWNED: Final = {
    "--name": "Batch names the container itself",
    "--runtime": "Batch chooses the runtime (as the Azure docs say of --runtime)",
    "--gpus": "Batch enables GPUs itself on GPU pools, and this local service has none",
}
_NETWORKS: Final = {"none", "host", "bridge", "default", "private", "slirp4netns"}
_VAR: Final = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class RunOptions:
    """The user's options, checked: what goes to ``create``, and which of Batch's defaults they replace."""

    args: list[str] = field(default_factory=list)
    network: bool = False
    """``--network`` given (Batch's ``--network host`` is then not added)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from the task's environment (unknown names are left as written)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_run_options(text: str, env: Mapping[str, str], *, node_root: Path, mounted: Iterable[str]) -> RunOptions:
    """Check ``containerRunOptions`` (``$VARS`` expanded from the task's environment, as Azure does).

    Accepted: a closed list of options that stay inside the container (resources, environment, user, working
    directory, network ``none``/``host``/``bridge``, bind mounts of directories under the node's root).
    Refused by name (:class:`OptionRefused`): options that leave the sandbox, options Batch sets itself,
    mounts outside the node's directories or onto a path Batch mounts (Azure: "Duplicate mount point"),
    and anything not on the list.
    """
    try:
        words = shlex.split(expand(text, env))
    except ValueError as exc:
        raise OptionRefused(f"containerRunOptions cannot be split into arguments: {exc}") from None
    out = RunOptions()
    taken = {os.path.normpath(path) for path in mounted}
    index = 0
    while index < len(words):
        word = words[index]
        name, has_inline, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if not name.startswith("-"):
            raise OptionRefused(f"{word!r} is not an option (the image and command line come from the task)")
        if name in _ESCAPES:
            raise OptionRefused(f"{name} is not allowed: it {_ESCAPES[name]}, which leaves the task's sandbox")
        if name in _BATCH_OWNED:
            raise OptionRefused(f"{name} is not allowed: {_BATCH_OWNED[name]}")
        elif name not in _FLAGS and name not in _VALUED:
            raise OptionRefused(f"{name} is not among the run options this local Batch service accepts "
                                f"({', '.join(sorted(_FLAGS | _VALUED))})")
        if name in _FLAGS:
            if name != "--rm":
                out.args.append(name)
            index += 1
            continue
        if has_inline:
            value = inline
            index += 1
        elif index + 1 < len(words):
            value = words[index + 1]
            index += 2
        else:
            raise OptionRefused(f"{name} needs a value")
        _check_value(name, value, node_root=node_root, taken=taken)
        out.network = out.network or name in ("--network", "--net")
        out.args += [name, value]
    return out


def _shares_host(value: str) -> bool:
    return value == "host" or value.startswith(("container:", "ns:"))


def _check_value(name: str, value: str, *, node_root: Path, taken: set[str]) -> None:
    if name in _NAMESPACES and _shares_host(value):
        raise OptionRefused(f"{name}={value} is not allowed: sharing the host's or another container's namespace "
                            "leaves the task's sandbox")
    if name in ("--network", "--net") and value not in _NETWORKS:
        raise OptionRefused(f"{name} {value} is not allowed: the network is one of {', '.join(sorted(_NETWORKS))} "
                            "(joining another container's or a named namespace leaves the sandbox)")
    if name in ("-l", "--label") and value.startswith("azurebatch.dev/"):
        raise OptionRefused(f"{name} {value} is not allowed: labels azurebatch.dev/* are Batch's own")
    if name == "--env-file":
        _inside(name, value, node_root)
    if name in ("-v", "--volume"):
        parts = value.split(":")
        if len(parts) < 2 or not parts[0].startswith("/"):
            raise OptionRefused(f"{name} {value} is not allowed: only bind mounts of directories under "
                                f"AZ_BATCH_NODE_ROOT_DIR ({node_root}) may be added (named volumes are not)")
        _inside(name, parts[0], node_root)
        _not_taken(parts[1], taken)
    if name == "--mount":
        fields = dict(item.partition("=")[::2] for item in value.split(","))
        kind = fields.get("type", "volume")
        if kind == "tmpfs":
            return
        if kind != "bind":
            raise OptionRefused(f"--mount {value} is not allowed: only type=bind (under AZ_BATCH_NODE_ROOT_DIR) "
                                "and type=tmpfs mounts may be added")
        _inside(name, fields.get("source") or fields.get("src") or "", node_root)
        _not_taken(fields.get("target") or fields.get("destination") or fields.get("dst") or "", taken)


def _inside(name: str, path: str, node_root: Path) -> None:
    resolved = Path(os.path.realpath(path)) if path else Path("/")
    root = Path(os.path.realpath(node_root))
    if resolved != root and root not in resolved.parents:
        raise OptionRefused(f"{name} {path} is not allowed: it reads the host outside the node's directories; "
                            f"only paths under AZ_BATCH_NODE_ROOT_DIR ({node_root}) may be mounted")


def _not_taken(target: str, taken: set[str]) -> None:
    if os.path.normpath(target or "/") in taken:
        raise OptionRefused(f"Duplicate mount point: {target} (Batch mounts it already)")


# -- mounts, environment, the create command ------------------------------------------------------

_MOUNT_VARIABLES: Final = {
    "Shared": ("AZ_BATCH_NODE_SHARED_DIR",),
    "Startup": ("AZ_BATCH_NODE_STARTUP_DIR", "AZ_BATCH_NODE_STARTUP_WORKING_DIR"),
    "VfsMounts": ("AZ_BATCH_NODE_MOUNTS_DIR",),
    "Task": ("AZ_BATCH_TASK_DIR", "AZ_BATCH_TASK_WORKING_DIR"),
    "JobPrep": ("AZ_BATCH_JOB_PREP_DIR", "AZ_BATCH_JOB_PREP_WORKING_DIR"),
    "Applications": (),
}
"""``containerHostBatchBindMounts[].source`` -> the variables naming the directories it mounts."""
_ENGINE_CLIENT_VARIABLES: Final = re.compile(r"^(DOCKER_|CONTAINER|CONTAINERS_|REGISTRY_AUTH_FILE$|XDG_RUNTIME_DIR$)")
"""Variables the engine's CLI reads itself: passed into the container by value, not taken from the CLI's env."""


def batch_mounts(settings: Mapping[str, Any], env: dict[str, str], node_root: Path) -> list[tuple[str, str, bool]]:
    """The bind mounts (same path inside and out) of ``containerHostBatchBindMounts``; drops from ``env``
    the variables of directories not mounted ("any unselected data paths have their associated environment
    variables removed"). Absent: the whole ``AZ_BATCH_NODE_ROOT_DIR``; empty: nothing."""
    entries = settings.get("containerHostBatchBindMounts")
    if entries is None:
        return [(str(node_root), str(node_root), False)]
    chosen: dict[str, bool] = {}
    for entry in entries:
        source = str(entry.get("source") or "")
        chosen[source] = chosen.get(source, True) and bool(entry.get("isReadOnly", False))
    mounts: list[tuple[str, str, bool]] = []
    for source, variables in _MOUNT_VARIABLES.items():
        names = variables or tuple(n for n in env if n.startswith("AZ_BATCH_APP_PACKAGE_"))
        for variable in names:
            path = env.get(variable)
            if source not in chosen:
                env.pop(variable, None)
            elif path and not any(path == m[0] or path.startswith(m[0] + "/") for m in mounts):
                Path(path).mkdir(parents=True, exist_ok=True)
                mounts.append((path, path, chosen[source]))
    return mounts


def service_id(work_dir: Path) -> str:
    """The label value of one service's containers: stable for a work directory, so that a service started
    again on it finds the containers of one that was killed."""
    return hashlib.sha256(str(Path(work_dir).resolve()).encode()).hexdigest()[:12]


def container_name(sid: str, *parts: str) -> str:
    """A container name unique on the machine (the service id and a digest of ``parts``), readable."""
    readable = re.sub(r"[^a-zA-Z0-9_.-]+", "-", "-".join(parts)).strip("-.")[:40]
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]
    return f"lb-{sid[:6]}-{readable}-{digest}"


@dataclass
class ContainerRun:
    """One container task, ready to create: the engine, the container's name, ``create`` argv, the CLI's env."""

    engine: containers.Engine
    name: str
    create: list[str]
    env: dict[str, str]
    settings: dict[str, Any]


def plan(
    engine: containers.Engine,
    settings: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    user_env: Iterable[str],
    node_root: Path,
    working_dir: Path,
    name: str,
    labels: Mapping[str, str],
    command: list[str],
) -> ContainerRun:
    """The ``create`` command of a container task; raises :class:`OptionRefused` for a setting Batch refuses."""
    inside = dict(env)
    mounts = batch_mounts(settings, inside, node_root)
    options = parse_run_options(str(settings.get("containerRunOptions") or ""), env, node_root=node_root,
                                mounted=[m[1] for m in mounts])
    own_dir = (settings.get("workingDirectory") or "taskWorkingDirectory") == "taskWorkingDirectory"
    if own_dir and not any(str(working_dir) == m[1] or str(working_dir).startswith(m[1] + "/") for m in mounts):
        raise OptionRefused("the task's working directory is not mounted (containerHostBatchBindMounts has no "
                            "Task entry): set containerSettings.workingDirectory to containerImageDefault")
    names = [n for n in inside if n.startswith("AZ_BATCH_") or n in set(user_env)]
    by_name = [n for n in names if not _ENGINE_CLIENT_VARIABLES.match(n)]
    batch = engine.create_options(
        name=name, labels=labels, mounts=mounts, env_names=by_name, workdir=str(working_dir) if own_dir else None,
        user=None if engine.rootless else f"{os.getuid()}:{os.getgid()}",
        network=None if options.network else "host",
    )
    for variable in names:
        if variable not in by_name:
            batch += ["-e", f"{variable}={inside[variable]}"]
    argv = engine.create(str(settings["imageName"]), command, options=[*batch, *options.args])
    client_env = {**os.environ, **{n: inside[n] for n in by_name}}
    return ContainerRun(engine=engine, name=name, create=argv, env=client_env, settings=dict(settings))


# -- the engine, images and cleanup for one service -------------------------------------------------


async def _capture(argv: list[str], *, limit: float = CLI_TIMEOUT,
                   env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run an engine command; ``(exit code, stdout, stderr)`` (-1 when it could not run or timed out)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        return -1, "", f"{exc.__class__.__name__}: {exc}"
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"`{' '.join(argv[:3])}` did not finish within {limit:.0f} s"
    except asyncio.CancelledError:
        # Let the engine command finish (a ``create`` cut short could leave a container after its removal).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(proc.wait()), limit)
        raise
    return proc.returncode or 0, out.decode(errors="replace").strip(), err.decode(errors="replace").strip()


async def capture(argv: list[str], *, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """An engine command's ``(exit code, stdout, stderr)``."""
    return await _capture(argv, env=env)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class ContainerHost:
    """One service's view of the container engine: detected once, images ensured, its containers tracked
    and removed. Every container it creates carries ``azurebatch.dev/localbatch=<service id>``."""

    def __init__(self, work_dir: Path) -> None:
        self.service_id = service_id(work_dir)
        self._marker = Path(work_dir) / ".containers-used"
        self.running: set[str] = set()
        """Containers created and not yet removed (a stop removes them synchronously)."""
        self._engine: containers.Engine | None = None
        self._ready = asyncio.Lock()
        self._pulls: dict[str, asyncio.Lock] = {}

    async def engine(self) -> containers.Engine:
        """The engine (detected in a thread the first time); its first use also removes the containers a
        killed service left on this work directory (none of this service's can exist yet)."""
        async with self._ready:
            if self._engine is None:
                engine = await asyncio.to_thread(containers.detect)
                if engine.available:
                    await asyncio.to_thread(self._mark_used)
                    left = await asyncio.to_thread(containers.remove_labelled, engine, self.service_id)
                    if left:
                        log.warning("removed %d container(s) a previous service left: %s", len(left), left)
                    log.info("container engine: %s", engine.describe())
                self._engine = engine
            return self._engine

    def used_before(self) -> bool:
        """True when a service on this work directory used containers (a restart then looks for leftovers)."""
        return self._marker.exists()

    def _mark_used(self) -> None:
        self._marker.parent.mkdir(parents=True, exist_ok=True)
        self._marker.write_text(f"{containers.LABEL}={self.service_id}\n")

    def name_for(self, *parts: str) -> str:
        """A machine-unique container name for the task identified by ``parts``."""
        return container_name(self.service_id, *parts)

    def labels(self, *, pool_id: str, node_id: str, task: str) -> dict[str, str]:
        return {containers.LABEL: self.service_id, POOL_LABEL: f"{self.service_id}/{pool_id}",
                NODE_LABEL: node_id, TASK_LABEL: task}

    async def ensure_image(self, engine: containers.Engine, image: str) -> str | None:
        """None when ``image`` is in the engine or was pulled; else why not (the engine's last words)."""
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:
            code, _out, _err = await _capture(engine.image_exists(image))
            if code == 0:
                return None
            code, _out, err = await _capture(engine.pull(image), limit=PULL_TIMEOUT)
            if code == 0:
                return None
            return last_line(err) or f"`{engine.name} pull {image}` failed with exit code {code}"

    async def state(self, engine: containers.Engine, name: str) -> dict[str, Any] | None:
        """``executionInfo.containerInfo`` of a container (id, ``State.Status``, ``State.Error``), or None."""
        code, out, _err = await _capture(engine.argv("inspect", "--type", "container", "--format",
                                                     "{{.Id}} {{json .State}}", name))
        if code != 0 or not out:
            return None
        container_id, _sep, raw = out.partition(" ")
        try:
            state = json.loads(raw)
        except ValueError:
            state = {}
        info: dict[str, Any] = {"containerId": container_id, "state": str(state.get("Status") or "unknown")}
        if state.get("Error"):
            info["error"] = str(state["Error"])
        return info

    async def kill(self, engine: containers.Engine, name: str) -> None:
        await _capture(engine.argv("kill", name))

    async def remove(self, engine: containers.Engine, name: str) -> None:
        await _capture(engine.rm(name))
        self.running.discard(name)

    async def prune(self, *, pool_id: str | None = None) -> list[str]:
        """Remove this service's containers (of one pool when given): what a pool deletion or stop leaves."""
        engine = self._engine
        if engine is None or not engine.available:
            return []
        value = self.service_id if pool_id is None else f"{self.service_id}/{pool_id}"
        label = containers.LABEL if pool_id is None else POOL_LABEL
        code, out, _err = await _capture(engine.ps(value, label=label))
        names = [n for n in out.splitlines() if n.strip()] if code == 0 else []
        if names:
            await _capture(engine.rm(*names))
        self.running.difference_update(names)
        return names

    def remove_all_now(self) -> None:
        """Synchronously remove every container this service has running (the service is stopping)."""
        engine = self._engine
        if engine is None or not engine.available or not self.running:
            return
        subprocess.run(engine.rm(*sorted(self.running)), capture_output=True, timeout=CLI_TIMEOUT, check=False)
        self.running.clear()
