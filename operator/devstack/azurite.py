"""Azurite (the Azure Storage emulator, Blob service only), installed project-locally and run on loopback.

Installed once with ``npm install azurite@<pinned>`` into ``<cache>/azurite/<version>/`` (never globally),
run as ``azurite-blob`` on a free loopback port with its data under the stack directory. It runs with
``--skipApiVersionCheck`` because the installed ``azure-storage-blob`` may speak a newer REST API version
than the pinned Azurite knows; it does *not* run with ``--loose``, so requests Azurite does not support fail
loudly here rather than on Azure.

Azurite sometimes takes 10-30 s to exit on SIGTERM/SIGINT after serving requests (it waits for its HTTP
server to drain); its data is disposable, so it gets 2 s before SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from batchwire.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from devstack import ports, procs, system

VERSION = "3.37.0"
NAME = "azurite"


class AzuriteError(system.PrerequisiteError):
    """Azurite could not be installed or started; the message names the log."""


@dataclass(frozen=True)
class AzuriteEndpoints:
    blob_endpoint: str
    account_name: str
    account_key: str
    connection_string: str
    port: int


def install_dir() -> Path:
    return system.cache_dir() / "azurite" / VERSION


def binary() -> Path:
    return install_dir() / "node_modules" / ".bin" / "azurite-blob"


def ensure_installed() -> Path:
    """The ``azurite-blob`` script, npm-installing the pinned Azurite first when absent (about 40 s, once)."""
    if binary().exists():
        return binary()
    npm = system.npm_binary()
    install_dir().mkdir(parents=True, exist_ok=True)
    with open(install_dir().parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary().exists():
            return binary()
        system.say(f"installing Azurite {VERSION} with npm into {install_dir()} (one time, about 40 s)")
        started = time.monotonic()
        (install_dir() / "package.json").write_text('{"name": "batchop-azurite", "private": true}\n')
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(install_dir()),
             f"azurite@{VERSION}"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or not binary().exists():
            raise AzuriteError(f"npm install azurite@{VERSION} failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()[-1500:]}")
        system.say(f"Azurite installed in {time.monotonic() - started:.0f} s")
    return binary()


def connection_string(blob_endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={blob_endpoint};")


def start(state_dir: Path, timeout: float = 30.0) -> AzuriteEndpoints:
    """Start Azurite's Blob service on a free loopback port, data under ``<dir>/azurite``; wait until it answers."""
    script = ensure_installed()
    data = state_dir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    port = ports.free_port()
    argv = [str(script), "--blobHost", ports.LOOPBACK, "--blobPort", str(port), "--location", str(data),
            "--skipApiVersionCheck", "--disableProductStyleUrl"]
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}  # always the well-known account
    process, record = procs.start(state_dir, NAME, argv, env=env, stop_timeout=2.0)
    endpoint = f"http://{ports.LOOPBACK}:{port}/{ACCOUNT_NAME}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AzuriteError(f"Azurite exited with code {process.returncode} while starting; see {record.log}")
        if healthy(endpoint):
            return AzuriteEndpoints(blob_endpoint=endpoint, account_name=ACCOUNT_NAME, account_key=ACCOUNT_KEY,
                                    connection_string=connection_string(endpoint), port=port)
        time.sleep(0.2)
    raise AzuriteError(f"Azurite did not answer on {endpoint} within {timeout:.0f} s; see {record.log}")


def healthy(blob_endpoint: str, timeout: float = 2.0) -> bool:
    """True when Azurite answers HTTP on its Blob endpoint (an unauthenticated list gets a 403: that is fine)."""
    try:
        with urllib.request.urlopen(f"{blob_endpoint}?comp=list", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
