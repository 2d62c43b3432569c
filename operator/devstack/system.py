"""System prerequisites: Debian packages installed with apt-get, found tools, the cache directory.

Everything the local stack needs beyond Python comes from Debian (etcd, Go and friends to build
kube-apiserver, kubectl when absent) or npm (Azurite, see :mod:`.azurite`). As root, missing packages are
installed with a message saying why; otherwise :class:`PrerequisiteError` names the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from batchwire.exitcodes import UNAVAILABLE, CLIError

#: Debian packages needed to run the stack (etcd) and to build kube-apiserver once.
RUNTIME_PACKAGES: tuple[str, ...] = ("etcd-server", "openssl")
BUILD_PACKAGES: tuple[str, ...] = ("golang-go", "rsync", "make", "golang-github-modern-go-reflect2-dev")
#: kubectl: when none is on PATH, Debian's kubectl (same release line as the kube-apiserver we build).
KUBECTL_PACKAGE = "kubernetes-client"
#: Node.js + npm, to install Azurite project-locally.
NODE_PACKAGES: tuple[str, ...] = ("nodejs", "npm")


class PrerequisiteError(CLIError):
    """A system prerequisite is missing and cannot be installed from here; the message names the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message, UNAVAILABLE)


def cache_dir() -> Path:
    """Where builds and downloads are cached: ``$BATCHOP_CACHE_DIR`` or ``$XDG_CACHE_HOME/batchop``
    (``~/.cache/batchop`` by default)."""
    explicit = os.environ.get("BATCHOP_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchop"


def say(message: str) -> None:
    """Progress for a human: on stderr, flushed at once (stdout stays machine-readable)."""
    print(f"batchop: {message}", file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


def package_installed(package: str) -> bool:
    """True when dpkg reports ``package`` as installed (``install ok installed``)."""
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    status = result.stdout.strip()
    return result.returncode == 0 and status.endswith(" installed")


_apt_updated = False


def ensure_packages(packages: Iterable[str], why: str) -> None:
    """Install the Debian ``packages`` not yet installed, saying ``why``.

    Runs ``apt-get update`` once per process (the image may ship without lists) and then
    ``apt-get install -y --no-install-recommends``. Not root: raises :class:`PrerequisiteError` naming
    the exact command. No apt-get (not Debian): raises naming the packages.
    """
    global _apt_updated
    missing = [p for p in dict.fromkeys(packages) if not package_installed(p)]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if shutil.which("apt-get") is None:
        raise PrerequisiteError(f"{why} needs the Debian packages {' '.join(missing)}, and apt-get is not available; "
                                "install their equivalents with your system's package manager")
    if not is_root():
        raise PrerequisiteError(f"{why} needs Debian packages that are not installed; run: "
                                f"sudo apt-get update && sudo {' '.join(command)}")
    say(f"installing Debian packages for {why}: {' '.join(missing)} (apt-get, one time)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        _run_apt(["apt-get", "update", "-q"], env)
        _apt_updated = True
    _run_apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env)


def _run_apt(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise PrerequisiteError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{tail}")


def require_tool(name: str, package: str, why: str) -> str:
    """The path of executable ``name``, installing Debian ``package`` first when it is not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    ensure_packages([package], why)
    found = shutil.which(name)
    if not found:
        raise PrerequisiteError(f"{name} is still not on PATH after installing {package}")
    return found


def etcd_binary() -> str:
    """Path of etcd (Debian ``etcd-server``), installed when missing."""
    return require_tool("etcd", "etcd-server", "the local stack (etcd)")


def openssl_binary() -> str:
    return require_tool("openssl", "openssl", "the local stack (service-account keys)")


def kubectl_binary() -> str:
    """Path of kubectl: the one on PATH, else Debian's ``kubernetes-client`` installed now."""
    return require_tool("kubectl", KUBECTL_PACKAGE, "kubectl (used to apply CRDs and by the tests)")


def npm_binary() -> str:
    """Path of npm (Debian ``npm`` + ``nodejs`` when missing)."""
    found = shutil.which("npm")
    if found:
        return found
    ensure_packages(NODE_PACKAGES, "Azurite (Node.js + npm)")
    found = shutil.which("npm")
    if not found:
        raise PrerequisiteError("npm is still not on PATH after installing nodejs and npm")
    return found
