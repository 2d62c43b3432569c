"""The container engine of this machine: which one answers, its quirks, and the command lines that drive it.

Both the local Batch service (which runs container tasks) and the dev stack (which builds images) need
the same engine with the same flags, so the knowledge lives here, below both.

**Which engine.** Docker when its daemon answers ``docker info``; else podman when ``podman info``
answers; ``$BATCHOP_CONTAINER_ENGINE`` (``docker`` or ``podman``) forces one. Nothing is hard-coded per
machine: the quirks below are detected, and the result is cached for the process (:func:`detect`).

**Quirks (podman).** Rootful podman raises a container's open-files and process limits above the
caller's (to 1048576); without ``CAP_SYS_RESOURCE`` the OCI runtime then fails with ``setrlimit ...
Operation not permitted``, so the limits are pinned with ``--ulimit`` (lowering is always allowed; which
values the runtime accepts is found by trying: the caller's own, else 1024). crun refuses cgroup
v1/hybrid hosts (``cgroups in hybrid mode not supported``), so ``--runtime runc`` is tried there. Each
combination, likeliest first, is tried once by starting a container on an empty root filesystem
(``--rootfs``, no image needed) whose command does not exist: exit 127 means the runtime set the
container up and got as far as looking for the command. The first that does is kept for the process.
The machine's global containers configuration is never edited: everything is a flag.

**Labels.** Every container the project creates carries :data:`LABEL` (value: the creator's id, e.g. a
local Batch service's), so that they can be listed and pruned (:meth:`Engine.ps`, :meth:`Engine.rm`).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

LABEL: Final = "azurebatch.dev/localbatch"
"""Label on every container the local Batch service (or the dev stack) creates; value: the creator's id."""
ENGINE_ENV: Final = "BATCHOP_CONTAINER_ENGINE"
"""Set to ``docker`` or ``podman`` to force an engine (the other is then not tried)."""
PROBE_TIMEOUT: Final = 60.0
"""Seconds one probe container may take (the first run of an engine sets up its storage)."""
INFO_TIMEOUT: Final = 20.0

_CAP_SYS_RESOURCE: Final = 24
_PODMAN_RAISED_LIMIT: Final = 1048576
"""What rootful podman sets ``nofile``/``nproc`` to when the caller may raise limits."""


@dataclass(frozen=True)
class Engine:
    """A container engine's CLI and the flags this machine needs; builds argv lists (runs nothing itself)."""

    name: str
    """``docker`` or ``podman`` (or the one that was looked for, when none is available)."""
    path: str = ""
    version: str = ""
    available: bool = False
    reason: str = ""
    """Why the engine is not available (empty when it is)."""
    rootless: bool = False
    global_options: tuple[str, ...] = ()
    """Options before the subcommand (``--runtime runc``)."""
    run_options: tuple[str, ...] = ()
    """Options every ``run``/``create`` gets (``--ulimit ...``)."""
    quirks: tuple[str, ...] = ()
    """Human-readable notes of what was detected, for logs and ``info``."""
    verified: bool = False
    """True when a probe container started with these flags (podman)."""

    def argv(self, *args: str) -> list[str]:
        """``<engine> <global options> args...``."""
        return [self.path or self.name, *self.global_options, *args]

    def create_options(
        self,
        *,
        name: str,
        labels: Mapping[str, str] | None = None,
        mounts: Iterable[tuple[str, str, bool]] = (),
        env_names: Iterable[str] = (),
        workdir: str | None = None,
        user: str | None = None,
        network: str | None = None,
    ) -> list[str]:
        """The options of ``run``/``create`` the project controls: name, labels, bind mounts (``source,
        target, read_only``), variables passed by name (their values come from the CLI's environment, so
        they never show in a process list), working directory, user, network, and this machine's quirks."""
        options = ["--name", name, *self.run_options]
        for key, value in (labels or {}).items():
            options += ["--label", f"{key}={value}"]
        for source, target, read_only in mounts:  # --mount: paths may hold ':' (job ids do), never ','
            options += ["--mount", f"type=bind,source={source},target={target}{',readonly' if read_only else ''}"]
        for env_name in env_names:
            options += ["-e", env_name]
        if workdir is not None:
            options += ["-w", workdir]
        if user is not None:
            options += ["--user", user]
        if network is not None:
            options += ["--network", network]
        return options

    def run(self, image: str, command: Sequence[str] = (), *, options: Sequence[str] = ()) -> list[str]:
        """``run`` of ``image`` (``options`` from :meth:`create_options` plus any user options)."""
        return self.argv("run", *options, image, *command)

    def create(self, image: str, command: Sequence[str] = (), *, options: Sequence[str] = ()) -> list[str]:
        return self.argv("create", *options, image, *command)

    def start(self, name: str, *, attach: bool = True) -> list[str]:
        return self.argv("start", *(["--attach"] if attach else []), name)

    def rm(self, *names: str, force: bool = True) -> list[str]:
        """Remove containers; ``force`` kills running ones at once (podman would wait 10 s for SIGTERM)."""
        now = ["--time", "0"] if force and self.name == "podman" else []
        return self.argv("rm", *(["--force", *now] if force else []), *names)

    def ps(self, label_value: str | None = None, *, label: str = LABEL, all_states: bool = True) -> list[str]:
        """Names of containers carrying ``label`` (with ``label_value`` when given), one a line."""
        selector = label if label_value is None else f"{label}={label_value}"
        return self.argv("ps", *(["--all"] if all_states else []), "--filter", f"label={selector}",
                         "--format", "{{.Names}}")

    def inspect_state(self, name: str) -> list[str]:
        """``State.Status`` and ``State.Error`` of a container as JSON (the fields Batch's containerInfo uses)."""
        return self.argv("inspect", "--type", "container", "--format", "{{json .State}}", name)

    def image_exists(self, image: str) -> list[str]:
        """Exit 0 when ``image`` is in the engine's local storage (docker has no ``image exists``)."""
        if self.name == "podman":
            return self.argv("image", "exists", image)
        return self.argv("image", "inspect", "--format", "{{.Id}}", image)

    def pull(self, image: str) -> list[str]:
        return self.argv("pull", "--quiet", image) if self.name == "podman" else self.argv("pull", image)

    def import_(self, image: str, *, changes: Sequence[str] = ()) -> list[str]:
        """``import`` a root-filesystem tar from stdin as ``image`` (``changes``: Dockerfile instructions)."""
        args: list[str] = []
        for change in changes:
            args += ["--change", change]
        return self.argv("import", *args, "-", image)

    def build(self, context: str, tag: str, *, file: str | None = None, network_host: bool = False) -> list[str]:
        """``build`` with this machine's flags (podman build takes the same ``--ulimit`` as run)."""
        args = ["build", *self.run_options, "-t", tag]
        if file is not None:
            args += ["-f", file]
        if network_host:
            args += ["--network", "host"]
        return self.argv(*args, context)

    def describe(self) -> str:
        """One line for logs: engine, version, quirks or why it is unavailable."""
        if not self.available:
            return f"no container engine ({self.reason})"
        notes = f"; {', '.join(self.quirks)}" if self.quirks else ""
        return f"{self.name} {self.version}{' (rootless)' if self.rootless else ''}{notes}"


_lock = threading.Lock()
_cached: Engine | None = None


def detect(*, refresh: bool = False) -> Engine:
    """The engine of this machine (cached per process; ``refresh`` looks again, e.g. after an install)."""
    global _cached
    with _lock:
        if _cached is None or refresh:
            _cached = _detect()
        return _cached


def _detect() -> Engine:
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    candidates = [forced] if forced in ("docker", "podman") else ["docker", "podman"]
    reasons: list[str] = []
    for name in candidates:
        engine = _docker() if name == "docker" else _podman()
        if engine.available:
            return engine
        reasons.append(engine.reason)
    return Engine(name=candidates[-1], available=False, reason="; ".join(reasons))


def _capture(argv: Sequence[str], timeout: float = INFO_TIMEOUT) -> tuple[int, str, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, "", f"{exc.__class__.__name__}: {exc}"
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _docker() -> Engine:
    path = shutil.which("docker")
    if path is None:
        return Engine(name="docker", reason="docker is not installed")
    code, out, err = _capture([path, "info", "--format", "{{.ServerVersion}}"])
    if code != 0 or not out:
        return Engine(name="docker", path=path, reason=f"docker's daemon does not answer ({_last_line(err)})")
    return Engine(name="docker", path=path, version=out, available=True)


def _podman() -> Engine:
    path = shutil.which("podman")
    if path is None:
        return Engine(name="podman", reason="podman is not installed")
    code, out, err = _capture([path, "info", "--format", "json"])
    if code != 0:
        return Engine(name="podman", path=path, reason=f"`podman info` failed ({_last_line(err)})")
    try:
        info = json.loads(out)
    except ValueError:
        info = {}
    host = info.get("host") or {}
    version = str((info.get("version") or {}).get("Version") or "")
    rootless = bool((host.get("security") or {}).get("rootless"))
    runtime = str((host.get("ociRuntime") or {}).get("name") or "")
    base = Engine(name="podman", path=path, version=version, available=True, rootless=rootless)
    return _probe(base, _candidates(rootless=rootless, runtime=runtime))


@dataclass(frozen=True)
class Quirks:
    """One combination of the flags podman may need here."""

    runc: bool = False
    """Use ``--runtime runc`` (crun cannot run here)."""
    limits: tuple[tuple[str, str], ...] = ()
    """``--ulimit`` values (``nofile``, ``S:H``) pinned below what podman would set (raising is not permitted)."""


def _candidates(*, rootless: bool, runtime: str) -> list[Quirks]:
    """Every combination worth trying, the likeliest for this host first (from facts that need no run)."""
    caller = tuple((flag, f"{_limit(resource.getrlimit(limit)[0])}:{_limit(resource.getrlimit(limit)[1])}")
                   for flag, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)))
    low = (("nofile", "1024:1024"), ("nproc", "1024:1024"))
    need_limits = not rootless and not has_capability(_CAP_SYS_RESOURCE) and _limits_below_podman_default()
    limit_choices: list[tuple[tuple[str, str], ...]] = [caller, low, ()] if need_limits else [(), caller, low]
    can_runc = shutil.which("runc") is not None
    runc_first = runtime == "crun" and not cgroup_v2_only() and can_runc
    runc_choices = [True, False] if runc_first else [False, True] if can_runc and runtime != "runc" else [False]
    return [Quirks(runc=r, limits=lim) for r in runc_choices for lim in limit_choices]


def _with_quirks(engine: Engine, quirks: Quirks) -> Engine:
    global_options: tuple[str, ...] = ("--runtime", "runc") if quirks.runc else ()
    run_options: list[str] = []
    notes: list[str] = []
    if quirks.runc:
        notes.append("runtime runc (crun cannot run containers here)")
    for flag, value in quirks.limits:
        run_options += ["--ulimit", f"{flag}={value}"]
    if quirks.limits:
        notes.append(f"ulimits {' '.join(f'{f}={v}' for f, v in quirks.limits)} (raising them is not permitted here)")
    return replace(engine, global_options=global_options, run_options=tuple(run_options), quirks=tuple(notes))


def _limit(value: int) -> str:
    return "-1" if value == resource.RLIM_INFINITY else str(value)


def has_capability(bit: int) -> bool:
    """True when this process's effective capability set has ``bit`` (``/proc/self/status`` CapEff)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    found = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", text, flags=re.MULTILINE)
    if found is None:
        return False
    return bool(int(found.group(1), 16) >> bit & 1)


def _limits_below_podman_default() -> bool:
    for limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC):
        _soft, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY and hard < _PODMAN_RAISED_LIMIT:
            return True
    return False


def cgroup_v2_only() -> bool:
    """True on a pure cgroup v2 host (no v1 hierarchy mounted), where crun works."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return True
    kinds = {line.split()[2] for line in mounts if len(line.split()) > 2}
    return "cgroup" not in kinds


def _probe(engine: Engine, candidates: Sequence[Quirks]) -> Engine:
    """Try each combination of flags on an empty root filesystem (no image needed) and keep the first
    with which the OCI runtime gets as far as looking for the command: exit 127, "command not found",
    means the container was set up (limits and cgroups accepted). None works: the engine is unavailable,
    with what the first attempt printed."""
    first_error = ""
    with tempfile.TemporaryDirectory(prefix="batchop-probe-") as rootfs:
        for quirks in candidates:
            candidate = _with_quirks(engine, quirks)
            argv = candidate.argv("run", "--rm", "--network", "none", *candidate.run_options,
                                  "--label", f"{LABEL}=probe", "--rootfs", rootfs, "/.batchop-probe")
            code, _out, err = _capture(argv, timeout=PROBE_TIMEOUT)
            if code == 127:
                return replace(candidate, verified=True)
            first_error = first_error or _last_line(err) or f"exit {code}"
    return replace(engine, available=False, reason=f"podman cannot start a container here ({first_error})")


def list_labelled(engine: Engine, label_value: str | None = None) -> list[str]:
    """Names of the containers (any state) that carry :data:`LABEL` (with ``label_value`` when given)."""
    if not engine.available:
        return []
    code, out, _err = _capture(engine.ps(label_value))
    return [line for line in out.splitlines() if line.strip()] if code == 0 else []


def remove_labelled(engine: Engine, label_value: str | None = None) -> list[str]:
    """Force-remove the containers :func:`list_labelled` finds; returns their names."""
    names = list_labelled(engine, label_value)
    if names:
        _capture(engine.rm(*names), timeout=120)
    return names
