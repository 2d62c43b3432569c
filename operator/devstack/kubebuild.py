"""Build kube-apiserver once from Debian's ``kubernetes`` source package and cache it by version.

There is no Docker engine on the machines batchop targets, and Debian ships no kube-apiserver
binary, so the local stack builds one (see docs/local-stack.md):

1. fetch the source with ``apt-get source --download-only kubernetes`` through a private deb-src list
   (the system's apt sources are left untouched);
2. unpack the orig tarball (it includes ``vendor/``);
3. ``make generated_files``;
4. replace the vendored ``github.com/modern-go/reflect2`` 1.0.1 with Debian's 1.0.2 (1.0.1 makes the API
   server die with SIGSEGV on Go >= 1.18 the first time a custom resource is created);
5. ``make WHAT=cmd/kube-apiserver``.

The binary lands in ``<cache>/kube-apiserver/<debian-version>/kube-apiserver``; later runs reuse it. A
file lock serialises concurrent builds (two test sessions wait for one build). Progress goes to stderr,
with each step's typical duration and an overall estimate; the full build log is kept next to the cache.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import system

SOURCE_PACKAGE = "kubernetes"
#: The version this was tried with (Debian bookworm); used when the deb-src index cannot be read.
KNOWN_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
REFLECT2_DIR = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
SYSTEM_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")

#: Typical seconds per step on 2 cores (measured); scaled by core count in the estimate.
STEP_SECONDS: dict[str, float] = {"fetch": 15, "unpack": 10, "generated_files": 60, "reflect2": 1, "build": 200}
STEP_TITLES: dict[str, str] = {
    "fetch": "download Debian source package kubernetes (34 MB)",
    "unpack": "unpack the source",
    "generated_files": "make generated_files",
    "reflect2": "use Debian's reflect2 1.0.2 in vendor/",
    "build": "make WHAT=cmd/kube-apiserver (compiles with Go)",
}


class BuildError(system.PrerequisiteError):
    """The kube-apiserver build failed; the message names the step and the log file."""


@dataclass(frozen=True)
class KubeApiserverBuild:
    version: str
    binary: Path


def root() -> Path:
    return system.cache_dir() / "kube-apiserver"


def _safe(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", version)


def cached_binary(version: str | None = None) -> Path | None:
    """The cached kube-apiserver for ``version`` (any version when None, newest first), or None."""
    if os.environ.get("BATCHOP_KUBE_APISERVER"):
        explicit = Path(os.environ["BATCHOP_KUBE_APISERVER"])
        return explicit if explicit.is_file() else None
    if version is not None:
        candidate = root() / _safe(version) / "kube-apiserver"
        return candidate if candidate.is_file() else None
    if not root().is_dir():
        return None
    found = sorted((p for p in root().glob("*/kube-apiserver") if p.is_file()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def estimate_seconds() -> float:
    """Estimated total build time on this machine (the measured 2-core figure, scaled by cores)."""
    cores = os.cpu_count() or 2
    total = sum(STEP_SECONDS.values())
    compile_part = STEP_SECONDS["build"] + STEP_SECONDS["generated_files"]
    return total - compile_part + compile_part * min(1.0, 2 / cores) ** 0.8


def ensure_kube_apiserver() -> KubeApiserverBuild:
    """Return the cached kube-apiserver, building it first when none is cached (a few minutes, once)."""
    existing = cached_binary()
    if existing is not None:
        return KubeApiserverBuild(version=existing.parent.name, binary=existing)
    root().mkdir(parents=True, exist_ok=True)
    with _lock(root() / ".build.lock"):
        existing = cached_binary()  # another process may have built it while we waited
        if existing is not None:
            return KubeApiserverBuild(version=existing.parent.name, binary=existing)
        return _build()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            system.say("another process is building kube-apiserver; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Progress:
    """Prints step starts and, every ``interval`` seconds, elapsed time against the estimate."""

    def __init__(self, log_path: Path, interval: float = 20.0) -> None:
        self.log_path = log_path
        self.interval = interval
        self.started = time.monotonic()
        self.total = estimate_seconds()
        self.step = ""
        self.step_started = self.started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="kubebuild-progress", daemon=True)

    def __enter__(self) -> _Progress:
        minutes = self.total / 60
        system.say(f"building kube-apiserver from Debian's source package (one time, about {minutes:.0f} min on "
                   f"{os.cpu_count()} cores; cached under {root()}); log: {self.log_path}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def begin(self, step: str) -> None:
        self.step = step
        self.step_started = time.monotonic()
        names = list(STEP_SECONDS)
        index = names.index(step) + 1
        system.say(f"kube-apiserver build [{index}/{len(names)}] {STEP_TITLES[step]} "
                   f"(typically ~{STEP_SECONDS[step]:.0f} s)")

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - self.started
            left = max(0.0, self.total - elapsed)
            percent = min(99, int(100 * elapsed / self.total))
            system.say(f"kube-apiserver build: {self.step} ... {elapsed:.0f} s elapsed, ~{percent}% "
                       f"(about {left:.0f} s left){self._last_log_line()}")

    def _last_log_line(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 400))
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f"; last: {lines[-1][:100]}" if lines else ""


def _run(command: list[str], *, cwd: Path, log: Path, step: str, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}  (in {cwd})\n")
        out.flush()
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        with open(log, errors="replace") as handle:
            tail = "".join(handle.readlines()[-20:])
        raise BuildError(f"kube-apiserver build failed at step '{step}' (`{' '.join(command)}` exit "
                         f"{result.returncode}); full log: {log}\n{tail}")


def _apt_source_options(work: Path) -> list[str]:
    """apt options that read a private deb-src list (a copy of the system's Debian sources) under ``work``."""
    parts = work / "apt-sources"
    lists = work / "apt-lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    parts.mkdir(parents=True, exist_ok=True)
    if SYSTEM_SOURCES.is_file():
        text = SYSTEM_SOURCES.read_text()
        text = re.sub(r"^Types:.*$", "Types: deb-src", text, flags=re.MULTILINE)
    else:
        text = ("Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
                "Types: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
                "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    (parts / "batchop-src.sources").write_text(text)
    return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
            "-o", f"Dir::State::Lists={lists}", "-o", "APT::Sandbox::User=root" if system.is_root() else
            "Debug::NoLocking=1"]


def _build() -> KubeApiserverBuild:
    system.ensure_packages(system.BUILD_PACKAGES, "building kube-apiserver")
    work = root() / "build"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = root() / "build.log"
    log.write_text("")
    started = time.monotonic()
    with _Progress(log) as progress:
        progress.begin("fetch")
        options = _apt_source_options(work)
        _run(["apt-get", *options, "update", "-q"], cwd=work, log=log, step="fetch")
        version = _source_version(options) or KNOWN_VERSION
        download = work / "download"
        download.mkdir()
        _run(["apt-get", *options, "source", "--download-only", "-q", f"{SOURCE_PACKAGE}={version}"],
             cwd=download, log=log, step="fetch")
        progress.begin("unpack")
        tarballs = sorted(download.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
        if not tarballs:
            raise BuildError(f"no orig tarball was downloaded into {download}; see {log}")
        src = work / "src"
        src.mkdir()
        with tarfile.open(tarballs[0]) as archive:
            if hasattr(tarfile, "tar_filter"):  # Python >= 3.11.4 (and backports): refuse unsafe members
                archive.extractall(src, filter="tar")
            else:
                archive.extractall(src)
        children = [p for p in src.iterdir() if p.is_dir()]
        tree = children[0] if len(children) == 1 else src
        env = {**os.environ, "GOFLAGS": "-mod=vendor", "GO111MODULE": "on",
               "GOCACHE": str(root() / "go-build-cache"), "GOPATH": str(work / "gopath"), "KUBE_VERBOSE": "1"}
        progress.begin("generated_files")
        _run(["make", "generated_files"], cwd=tree, log=log, step="generated_files", env=env)
        progress.begin("reflect2")
        vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
        if not REFLECT2_DIR.is_dir():
            raise BuildError(f"{REFLECT2_DIR} is missing: install golang-github-modern-go-reflect2-dev")
        shutil.rmtree(vendored, ignore_errors=True)
        shutil.copytree(REFLECT2_DIR, vendored, ignore=shutil.ignore_patterns("go.mod", "go.sum", "*_test.go"))
        progress.begin("build")
        _run(["make", "WHAT=cmd/kube-apiserver"], cwd=tree, log=log, step="build", env=env)
        built = tree / "_output" / "local" / "bin" / "linux" / _goarch() / "kube-apiserver"
        if not built.is_file():
            found = list((tree / "_output").rglob("kube-apiserver"))
            if not found:
                raise BuildError(f"make finished but no kube-apiserver binary under {tree / '_output'}; see {log}")
            built = found[0]
        target_dir = root() / _safe(version)
        target_dir.mkdir(parents=True, exist_ok=True)
        partial = target_dir / "kube-apiserver.partial"
        shutil.copy2(built, partial)
        partial.replace(target_dir / "kube-apiserver")
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    (target_dir / "build-seconds").write_text(f"{elapsed:.0f}\n")
    system.say(f"kube-apiserver built in {elapsed:.0f} s: {target_dir / 'kube-apiserver'}")
    return KubeApiserverBuild(version=version, binary=target_dir / "kube-apiserver")


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _source_version(options: list[str]) -> str | None:
    """The candidate version of the source package in the private deb-src index."""
    result = subprocess.run(["apt-cache", *options, "showsrc", SOURCE_PACKAGE], capture_output=True, text=True,
                            check=False)
    versions = re.findall(r"^Version: (\S+)$", result.stdout, flags=re.MULTILINE)
    if not versions:
        return None
    compare = ["dpkg", "--compare-versions"]
    best = versions[0]
    for candidate in versions[1:]:
        if subprocess.run([*compare, candidate, "gt", best], check=False).returncode == 0:
            best = candidate
    return best


def main() -> int:
    """``python -m devstack.kubebuild``: build (or find) kube-apiserver and print its path."""
    build = ensure_kube_apiserver()
    print(build.binary)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
