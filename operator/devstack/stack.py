"""The local stack as one unit: ``up``, ``down`` and ``status`` of kube, Azurite, the Batch service, the operator.

All state lives under one directory (``--dir``, default ``.batchop-dev``)::

    <dir>/stack.json    what runs where (ports, URLs, pids are in pids/)
    <dir>/env           ``export`` lines: KUBECONFIG and the operator's defaults (local Batch + Azurite)
    <dir>/kubeconfig    admin kubeconfig of the local kube-apiserver
    <dir>/pids/*.json   one pid file per process (see :mod:`.procs`)
    <dir>/logs/*.log    one log per process
    <dir>/kube/ <dir>/azurite/ <dir>/batch/   each service's data

The container engine (docker when its daemon answers, else podman, installed when neither is there and apt
can) is detected by ``up`` and shown by ``status``; ``setup`` also builds the local base image and the
word-count sample's image (:mod:`.images`, :mod:`.product_images`). ``down`` removes the containers the stack's
Batch service left and the untagged images the stack built, so that neither piles up across runs.

Every process is started detached, so the stack outlives the ``batchop dev up`` that started it.
``<dir>/owner.lock`` is never held between commands; instead a stale stack (some recorded process dead, e.g.
after a crash or a reboot) is reclaimed by the next ``up``: its remaining processes are stopped and its data
removed before starting afresh.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchwire import containers
from batchwire.devenv import ENV_FILE
from batchwire.exitcodes import FAILURE, UNAVAILABLE, CLIError
from devstack import azurite, images, kube, kubebuild, ports, procs, product_images, system

BATCH = "batch"
OPERATOR = "operator"
STATE_FILE = "stack.json"
BATCH_START_TIMEOUT = 30.0
OPERATOR_START_TIMEOUT = 60.0
#: The project's CRD folder (the repository's ``crds/``); overridable for installed copies.
CRD_DIR = Path(os.environ.get("BATCHOP_CRD_DIR", Path(__file__).resolve().parents[2] / "crds"))


@dataclass
class StackInfo:
    """What ``up`` started; saved as ``<dir>/stack.json``."""

    dir: str
    time_scale: float
    started_at: float
    kubeconfig: str = ""
    kube_server: str = ""
    kube_token: str = ""
    etcd_url: str = ""
    crds: list[str] = field(default_factory=list)
    blob_endpoint: str = ""
    storage_connection_string: str = ""
    batch_endpoint: str = ""
    batch_account: str = ""
    batch_key: str = ""
    operator: bool = False
    operator_health: str = ""
    missing: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    container_engine: dict[str, Any] = field(default_factory=dict)
    """What :func:`engine_facts` says of the engine container tasks run on (empty: none was looked for)."""

    def env(self) -> dict[str, str]:
        """The environment a user (and the operator) needs: KUBECONFIG and the operator's defaults."""
        values = {"KUBECONFIG": self.kubeconfig}
        if self.batch_endpoint:
            values |= {"BATCHOP_BATCH_ENDPOINT": self.batch_endpoint, "BATCHOP_BATCH_ACCOUNT": self.batch_account,
                       "BATCHOP_BATCH_KEY": self.batch_key}
        if self.storage_connection_string:
            values["AZURE_STORAGE_CONNECTION_STRING"] = self.storage_connection_string
        return values

    def export_lines(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


def operator_available() -> bool:
    """True when this checkout has the operator command (``batchop run``)."""
    return importlib.util.find_spec("batchop.cli.commands.run") is not None


def batch_service_available() -> bool:
    return importlib.util.find_spec("localbatch.cli") is not None


def load(state_dir: Path) -> StackInfo | None:
    try:
        return StackInfo(**json.loads((state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save(state_dir: Path, info: StackInfo) -> None:
    partial = state_dir / f"{STATE_FILE}.partial"
    partial.write_text(json.dumps(info.__dict__, indent=2) + "\n")
    partial.chmod(0o600)
    partial.replace(state_dir / STATE_FILE)
    env_file = state_dir / ENV_FILE
    env_file.write_text(info.export_lines())
    env_file.chmod(0o600)


@contextmanager
def _command_lock(state_dir: Path) -> Iterator[None]:
    """Serialise ``up`` / ``down`` on one directory (a second one waits)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".command.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def setup(*, operator_deps: bool = True) -> dict[str, str]:
    """Install every prerequisite (apt packages, the kube-apiserver build, Azurite, a container engine, the
    base and sample images); returns what is where."""
    found = {
        "etcd": system.etcd_binary(),
        "openssl": system.openssl_binary(),
        "kubectl": system.kubectl_binary(),
        "kube-apiserver": str(kubebuild.ensure_kube_apiserver().binary),
        "azurite": str(azurite.ensure_installed()),
    }
    return found | setup_containers()


def setup_containers() -> dict[str, str]:
    """The container engine (installed when none answers), leftovers of earlier runs removed, the local base
    image (built once, about a minute) and the word-count sample's image (built when blob/application changed)."""
    engine = images.ensure_engine()
    removed = product_images.prune_containers(engine) + product_images.prune_images(engine)
    if removed:
        system.say(f"removed {len(removed)} stopped container(s) and untagged image(s) earlier runs left")
    base = images.ensure_base()
    sample = product_images.ensure_wordcount_image()
    return {
        "container engine": describe_engine(engine_facts(engine)),
        "base image": base,
        "word-count image": f"{sample.image} (also {', '.join(sample.aliases)}; {sample.size_mb:g} MB)",
    }


def engine_facts(engine: containers.Engine) -> dict[str, Any]:
    """The engine as ``stack.json`` keeps it: name, version, path, the flags this machine needs, or why none."""
    if not engine.available:
        return {"available": False, "name": engine.name, "reason": engine.reason}
    return {"available": True, "name": engine.name, "version": engine.version, "path": engine.path,
            "rootless": engine.rootless, "flags": " ".join((*engine.global_options, *engine.run_options)),
            "quirks": list(engine.quirks)}


def describe_engine(facts: dict[str, Any]) -> str:
    """One line: ``podman 4.3.1 (flags: --ulimit ...)``, or why there is no engine."""
    if not facts:
        return "not detected"
    if not facts.get("available"):
        return f"none ({facts.get('reason', 'unknown')}); container tasks fail with ContainerEngineUnavailable"
    flags = facts.get("flags") or "none needed"
    return f"{facts['name']} {facts['version']}{' (rootless)' if facts.get('rootless') else ''} (flags: {flags})"


def _detect_engine(info: StackInfo) -> None:
    """Find (or install) the engine container tasks will run on; without one the stack still starts."""
    try:
        engine = images.ensure_engine()
    except system.PrerequisiteError as exc:
        info.container_engine = {"available": False, "name": "", "reason": str(exc)}
        info.missing.append(f"container engine: {exc}")
        return
    info.container_engine = engine_facts(engine)
    system.say(f"container engine: {describe_engine(info.container_engine)}")


def up(state_dir: Path, *, time_scale: float = 1.0, with_operator: bool = True,
       operator_args: list[str] | None = None) -> StackInfo:
    """Start the whole stack under ``state_dir`` (reclaiming a stale one first) and return what runs where.

    Raises :class:`CLIError` when a stack already runs there, or when a part fails to start (everything
    started so far is stopped again).
    """
    state_dir = state_dir.resolve()
    with _command_lock(state_dir):
        _refuse_or_reclaim(state_dir)
        started = time.monotonic()
        info = StackInfo(dir=str(state_dir), time_scale=time_scale, started_at=time.time())
        try:
            _detect_engine(info)
            system.say(f"starting etcd + kube-apiserver under {state_dir}")
            endpoints = kube.start(state_dir)
            info.kubeconfig, info.kube_server = str(endpoints.kubeconfig), endpoints.server
            info.kube_token, info.etcd_url = endpoints.token, endpoints.etcd_url
            crd_files = kube.crd_files(CRD_DIR)
            if crd_files:
                info.crds = kube.apply_crds(endpoints.kubeconfig, crd_files)
            else:
                info.missing.append(f"CRDs: no manifests in {CRD_DIR}")
            system.say("starting Azurite (Blob storage)")
            storage = azurite.start(state_dir)
            info.blob_endpoint, info.storage_connection_string = storage.blob_endpoint, storage.connection_string
            if batch_service_available():
                system.say(f"starting the local Batch service (time scale {time_scale:g})")
                _start_batch(state_dir, info)
            else:
                info.missing.append("local Batch service: the localbatch package is not in this checkout")
            if not with_operator:
                pass
            elif operator_available():
                system.say("starting the operator (batchop run)")
                _start_operator(state_dir, info, operator_args or [])
            else:
                info.missing.append("operator: `batchop run` (batchop/cli/commands/run.py) is not in this checkout yet")
            info.startup_seconds = round(time.monotonic() - started, 1)
            _save(state_dir, info)
        except BaseException:
            procs.stop_all(state_dir, order=procs.STOP_ORDER)
            raise
    return info


def _refuse_or_reclaim(state_dir: Path) -> None:
    """Refuse when a healthy stack runs in ``state_dir``; reclaim a stale one (stop leftovers, wipe data)."""
    records = procs.records(state_dir)
    info = load(state_dir)
    if info is not None and records and all(r.alive for r in records):
        raise CLIError(f"a stack already runs in {state_dir} (pids {', '.join(str(r.pid) for r in records)}); "
                       f"use it (source {state_dir / ENV_FILE}) or stop it first: batchop dev down --dir {state_dir}",
                       FAILURE)
    stopped = procs.stop_all(state_dir, order=procs.STOP_ORDER, timeout=3)  # broken anyway: short grace
    if stopped or info is not None:
        system.say(f"reclaimed a stale stack in {state_dir}" + (f": stopped {', '.join(stopped)}" if stopped else ""))
    remove_containers(state_dir)  # the wipe below removes what tells a new Batch service to look for them
    _wipe(state_dir)


def _wipe(state_dir: Path) -> None:
    for name in ("kube", "azurite", BATCH, "pids"):
        shutil.rmtree(state_dir / name, ignore_errors=True)
    for name in (STATE_FILE, ENV_FILE, "kubeconfig"):
        (state_dir / name).unlink(missing_ok=True)


def _start_batch(state_dir: Path, info: StackInfo) -> None:
    work = state_dir / BATCH / "work"
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "localbatch", "--host", "127.0.0.1", "--port", "0",
            "--time-scale", f"{info.time_scale:g}", "--work-dir", str(work),
            "--state-file", str(state_dir / BATCH / "state.json"), "--log-format", "json"]
    process, record = procs.start_with_stdout(state_dir, BATCH, argv, env=_python_env())
    banner = _first_line(procs.log_dir(state_dir) / f"{BATCH}.out", process, BATCH_START_TIMEOUT)
    if banner is None:
        raise CLIError(f"the local Batch service did not report its endpoint within {BATCH_START_TIMEOUT:.0f} s "
                       f"(exit {process.poll()}); see {record.log}", UNAVAILABLE)
    data = json.loads(banner)
    info.batch_endpoint, info.batch_account, info.batch_key = data["endpoint"], data["account"], data["key"]


def _first_line(path: Path, process: subprocess.Popen[bytes], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
        except OSError:
            text = ""
        if "\n" in text:
            return text.split("\n", 1)[0]
        if process.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def _python_env() -> dict[str, str]:
    """The environment for Python children: this interpreter's package path first (works from a checkout)."""
    source_root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": source_root + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}


def _start_operator(state_dir: Path, info: StackInfo, extra_args: list[str]) -> None:
    """``batchop run -A`` against the local stack, with a liveness endpoint; waits until it answers."""
    env = _python_env() | info.env()
    port = ports.free_port()
    info.operator_health = f"http://{ports.LOOPBACK}:{port}/healthz"
    # The admission webhooks, as on a cluster: served on loopback and registered by the operator itself
    # (Validating- and MutatingWebhookConfiguration batchop.azurebatch.dev with a url), so `kubectl apply`
    # refuses bad specs and new resources carry the finalizer from their create.
    webhook_args = ["--webhook-port", str(ports.free_port()), "--webhook-listen", ports.LOOPBACK,
                    "--webhook-host", ports.LOOPBACK, "--webhook-cert-dir", str(state_dir / "webhook")]
    argv = [sys.executable, "-m", "batchop", "--log-format", "json", "run", "-A", "--standalone",
            "--liveness", info.operator_health, *webhook_args, *extra_args]
    process, record = procs.start(state_dir, OPERATOR, argv, env=env)
    deadline = time.monotonic() + OPERATOR_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CLIError(f"the operator exited with code {process.returncode} while starting; see {record.log}",
                           FAILURE)
        if _http_ok(info.operator_health):
            info.operator = True
            return
        time.sleep(0.2)
    raise CLIError(f"the operator did not answer on {info.operator_health} within {OPERATOR_START_TIMEOUT:.0f} s; "
                   f"see {record.log}", UNAVAILABLE)


def down(state_dir: Path) -> list[str]:
    """Stop every process of the stack in ``state_dir`` and remove its data; returns the names stopped."""
    state_dir = state_dir.resolve()
    if not state_dir.is_dir():
        return []
    with _command_lock(state_dir):
        stopped = procs.stop_all(state_dir, order=procs.STOP_ORDER)
        removed = remove_containers(state_dir)
        if removed:
            system.say(f"removed {len(removed)} container(s) and image(s) the stack left: {', '.join(removed)}")
        _wipe(state_dir)
    return stopped


def remove_containers(state_dir: Path) -> list[str]:
    """After the Batch service stopped: its containers (left only when it was killed) and the untagged images
    the stack built. Nothing is looked up when the service never ran a container."""
    if not batch_service_available():
        return []
    from localbatch import container_tasks

    work = state_dir / BATCH / "work"
    if not container_tasks.ContainerHost(work).used_before():
        return []
    engine = containers.detect()
    if not engine.available:
        return []
    return containers.remove_labelled(engine, container_tasks.service_id(work)) + product_images.prune_images(engine)


def status(state_dir: Path) -> tuple[StackInfo | None, list[ComponentStatus]]:
    """What runs in ``state_dir``: each recorded process with its pid, liveness and a health check."""
    state_dir = state_dir.resolve()
    info = load(state_dir)
    rows = []
    start_order = list(reversed(procs.STOP_ORDER))
    by_start = sorted(procs.records(state_dir),
                      key=lambda r: start_order.index(r.name) if r.name in start_order else len(start_order))
    for record in by_start:
        running = record.alive
        healthy, detail = _health(record.name, info) if running else (False, "not running")
        rows.append(ComponentStatus(record.name, record.pid, running, healthy, detail))
    return info, rows


def _health(name: str, info: StackInfo | None) -> tuple[bool, str]:
    if info is None:
        return False, "no stack.json"
    if name == kube.ETCD:
        return _http_ok(f"{info.etcd_url}/health"), info.etcd_url
    if name == kube.APISERVER:
        ok, detail = kube.readyz(info.kube_server, info.kube_token)
        return ok, f"{info.kube_server} (readyz: {detail})"
    if name == azurite.NAME:
        return azurite.healthy(info.blob_endpoint), info.blob_endpoint
    if name == BATCH:
        return _http_ok(info.batch_endpoint, any_status=True), info.batch_endpoint
    if name == OPERATOR and info.operator_health:
        return _http_ok(info.operator_health), f"liveness {info.operator_health}"
    return True, "running"


def _http_ok(url: str, *, any_status: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return any_status
    except OSError:
        return False


def describe(info: StackInfo) -> dict[str, Any]:
    """A JSON-friendly summary (the key is redacted) for ``batchop dev status --json``."""
    data = dict(info.__dict__)
    for secret in ("kube_token", "batch_key", "storage_connection_string"):
        if data.get(secret):
            data[secret] = "<redacted: see env file>"
    return data
