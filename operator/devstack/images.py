"""Container images built on this machine (no registry is needed), and the engine that runs them.

Container tasks of the local Batch service, the samples and the operator image need base images, and a
developer's machine may reach no container registry. So the stack builds its own from Debian packages:

- :func:`ensure_busybox` -> ``localhost/batchop-busybox:bookworm``: Debian's ``busybox-static`` binary and
  its applets in an otherwise empty root filesystem (about 2 MB, built in a second); what fast tests run.
- :func:`ensure_base` -> ``localhost/batchop-base:bookworm``: Debian bookworm ``minbase`` with ``python3``
  (``debootstrap`` from the mirror apt already uses, then ``import``); about a minute once, 260 MB. The base
  of the wordcount sample's image and of the operator image built locally (``FROM localhost/batchop-base:bookworm``).

Both are idempotent: an image already in the engine is not built again. The root filesystem tarball is
cached under ``<cache>/images/`` (``~/.cache/batchop/images``), so an engine whose storage was reset gets
the image back by a re-import of a few seconds. A file lock serialises concurrent builds. Progress,
with an estimate, goes to stderr, as for the kube-apiserver build (:mod:`devstack.kubebuild`).

:func:`ensure_engine` returns the container engine (:mod:`batchwire.containers`), installing Debian's
``podman`` and ``runc`` first when no engine answers and apt can (as root; otherwise the error names the
``sudo apt-get install`` line).
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from batchwire import containers
from devstack import system

BUSYBOX_IMAGE = "localhost/batchop-busybox:bookworm"
BASE_IMAGE = "localhost/batchop-base:bookworm"
ENGINE_PACKAGES: tuple[str, ...] = ("podman", "runc")
"""Debian's podman, and runc (crun, podman's default runtime, cannot run on cgroup v1/hybrid hosts)."""
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_BINARY = Path("/bin/busybox")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
BASE_SECONDS = 60.0
"""Typical seconds for debootstrap + import of the base image (measured: 55 s + 4 s on 2 cores)."""
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILT_BY_LABEL = "azurebatch.dev/built-by=batchop"


class ImageBuildError(system.PrerequisiteError):
    """Building an image failed; the message names the step and the log."""


def root() -> Path:
    """Where image root filesystems are cached: ``<cache>/images``."""
    return system.cache_dir() / "images"


def ensure_engine() -> containers.Engine:
    """The container engine that runs here, installing ``podman`` and ``runc`` (Debian) when none answers.

    Raises :class:`system.PrerequisiteError` (exit code 4) when no engine can be had: not root (the
    message has the ``sudo apt-get install`` line), no apt, or an engine that is installed but cannot
    start a container (the message has what it printed).
    """
    engine = containers.detect()
    if engine.available:
        return engine
    if shutil.which("podman") is None or shutil.which("runc") is None:
        system.ensure_packages(ENGINE_PACKAGES, "running containers (container tasks, local images)")
        engine = containers.detect(refresh=True)
    if not engine.available:
        raise system.PrerequisiteError(f"no container engine works here: {engine.reason}")
    return engine


def image_exists(engine: containers.Engine, image: str) -> bool:
    """True when ``image`` is in the engine's local storage."""
    done = subprocess.run(engine.image_exists(image), capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def ensure_busybox() -> str:
    """``localhost/batchop-busybox:bookworm``, built first when the engine lacks it (about a second).

    The image holds ``/bin/busybox`` from Debian's ``busybox-static`` (installed when missing), a link per
    applet in ``/bin`` (``sh``, ``cat``, ``env``, ...), ``/tmp`` and an ``/etc/passwd`` with root and nobody.
    """
    engine = ensure_engine()
    if image_exists(engine, BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    with _lock("busybox"):
        if image_exists(engine, BUSYBOX_IMAGE):
            return BUSYBOX_IMAGE
        system.ensure_packages([BUSYBOX_PACKAGE], "the busybox test image")
        binary = BUSYBOX_BINARY
        if not _is_static(binary):
            raise ImageBuildError(f"{binary} is not a static binary: is {BUSYBOX_PACKAGE} installed?")
        tarball = root() / "busybox-rootfs.tar"
        with tempfile.TemporaryDirectory(prefix="batchop-busybox-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _busybox_rootfs(binary, rootfs)
            _tar(rootfs, tarball)
        _import(engine, tarball, BUSYBOX_IMAGE, cmd='["/bin/sh"]')
    return BUSYBOX_IMAGE


def ensure_base() -> str:
    """``localhost/batchop-base:bookworm``: Debian bookworm (``minbase``) with ``python3``, for images built
    on it (``FROM localhost/batchop-base:bookworm``). Built once, about a minute (``debootstrap`` from the
    mirror apt uses; needs root); later calls return at once. Returns the image name.
    """
    engine = ensure_engine()
    if image_exists(engine, BASE_IMAGE):
        return BASE_IMAGE
    with _lock("base"):
        if image_exists(engine, BASE_IMAGE):
            return BASE_IMAGE
        tarball = root() / f"base-{SUITE}-rootfs.tar"
        if not tarball.is_file():
            _build_base_rootfs(tarball)
        _import(engine, tarball, BASE_IMAGE, cmd='["/bin/bash"]')
    return BASE_IMAGE


def _build_base_rootfs(tarball: Path) -> None:
    system.ensure_packages(["debootstrap"], "building the Debian base image")
    if not system.is_root():
        raise system.PrerequisiteError(
            "building the Debian base image needs root (debootstrap); run: sudo "
            f"{sys.executable} -m devstack.images base"
        )
    mirror = apt_mirror()
    log = root() / "base-build.log"
    log.write_text("")
    work = Path(tempfile.mkdtemp(prefix="batchop-base-", dir=root()))
    rootfs = work / "rootfs"
    command = ["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(rootfs), mirror]
    try:
        with _Progress(f"building {BASE_IMAGE} (debootstrap {SUITE} + python3 from {mirror}; one time)",
                       BASE_SECONDS, log):
            _run_logged(command, log)
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / leftover).glob("*.deb"):
                    item.unlink()
            _tar(rootfs, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def apt_mirror(sources: Sequence[Path] = (Path("/etc/apt/sources.list.d/debian.sources"),
                                            Path("/etc/apt/sources.list"))) -> str:
    """The Debian mirror apt already uses (the first ``URIs:``/``deb`` line of the bookworm suite)."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, flags=re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, flags=re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            found = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line.strip() + " ")
            if found and "security" not in found.group(1):
                return found.group(1)
    return DEFAULT_MIRROR


def _is_static(binary: Path) -> bool:
    """True when ``binary`` needs no dynamic loader (an empty root filesystem has none)."""
    try:
        head = binary.read_bytes()[:4096]
    except OSError:
        return False
    return b"/lib64/ld-linux" not in head and b"/lib/ld-linux" not in head and b"ld-musl" not in head


def _busybox_rootfs(binary: Path, rootfs: Path) -> None:
    (rootfs / "bin").mkdir(parents=True)
    for sub in ("tmp", "etc", "root", "proc", "sys", "dev"):
        (rootfs / sub).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(binary, rootfs / "bin" / "busybox")
    listing = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout
    for applet in sorted(set(listing.split())):
        if applet != "busybox" and "/" not in applet:
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "usr").mkdir()
    (rootfs / "usr" / "bin").symlink_to("../bin")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def _tar(rootfs: Path, tarball: Path) -> None:
    """``tar -C rootfs -c .`` into ``tarball`` (written beside it, then renamed: never half a file)."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    with open(partial, "wb") as out:
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=out, check=True)
    partial.replace(tarball)


def _import(engine: containers.Engine, tarball: Path, image: str, *, cmd: str) -> None:
    changes = [f"CMD {cmd}", f"ENV PATH={IMAGE_PATH}", "WORKDIR /", f"LABEL {BUILT_BY_LABEL}"]
    with open(tarball, "rb") as source:
        done = subprocess.run(engine.import_(image, changes=changes), stdin=source, capture_output=True,
                              text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"`{engine.name} import - {image}` failed (exit {done.returncode}): "
                              f"{done.stderr.strip()[-500:]}")
    system.say(f"image {image} is ready ({engine.describe()})")


def _run_logged(command: list[str], log: Path) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise ImageBuildError(f"`{' '.join(command)}` failed (exit {done.returncode}); log: {log}\n{tail}")


@contextmanager
def _lock(name: str) -> Iterator[None]:
    root().mkdir(parents=True, exist_ok=True)
    with open(root() / f".{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            system.say(f"another process is building the {name} image; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Progress:
    """Says what is being built with an estimate, then every ``interval`` seconds how far along it is."""

    def __init__(self, title: str, estimate: float, log: Path, interval: float = 15.0) -> None:
        self.title = title
        self.estimate = estimate
        self.log = log
        self.interval = interval
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="image-progress", daemon=True)

    def __enter__(self) -> _Progress:
        system.say(f"{self.title}: about {self.estimate:.0f} s; log: {self.log}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        system.say(f"{self.title}: done in {time.monotonic() - self.started:.0f} s")

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - self.started
            percent = min(99, int(100 * elapsed / self.estimate))
            system.say(f"image build: {elapsed:.0f} s elapsed, ~{percent}% "
                       f"(about {max(0.0, self.estimate - elapsed):.0f} s left)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.images [busybox|base|engine]``: build (or find) an image and print its name."""
    what = (list(argv) if argv is not None else sys.argv[1:]) or ["busybox"]
    for name in what:
        if name == "engine":
            print(ensure_engine().describe())
        elif name == "busybox":
            print(ensure_busybox())
        elif name == "base":
            print(ensure_base())
        else:
            print(f"unknown image {name!r}: busybox, base or engine", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
