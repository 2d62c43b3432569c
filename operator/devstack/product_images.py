"""The product's own images, built on this machine by the local stack: the operator image and the sample's.

- :func:`ensure_operator_image` -> ``localhost/batchop:dev``: the repository's ``Dockerfile`` on the local base
  image (:func:`devstack.images.ensure_base`, Debian bookworm + python3, which has neither pip nor ensurepip)
  with ``PIP_SOURCE=wheels``: the operator's dependencies are collected as wheels on this machine first
  (``pip wheel`` with the host's own pip settings, cached per ``pyproject.toml`` under
  ``~/.cache/batchop/wheels/``) and installed in the build with ``--no-index``, so the build needs no network.
  The build context is what ``.dockerignore`` lets in, staged in a temporary directory with the wheels.
- :func:`ensure_wordcount_image` -> ``localhost/batchop-wordcount:1``: ``blob/application/Containerfile`` on the
  local base. It is also tagged with the name ``examples/schedule-container.yaml`` uses,
  ``myregistry.azurecr.io/wordcount:1``: the engine finds that image locally and pulls nothing, so the example
  applies unchanged on the local stack (on Azure, the same name is the user's registry).

A build is cached by a content hash of what it is made from (every file of its build context, the build
arguments, the base image's id), kept in the image as the label ``azurebatch.dev/context-hash``: an image whose
label matches is not built again, so the operator image is rebuilt only when the operator (or the base)
changed. Every image built here carries ``azurebatch.dev/built-by=batchop``; :func:`prune_images` removes the
untagged ones by that label (the image a rebuild replaced, intermediate layers), and
:func:`prune_containers` the stopped containers the project left (``azurebatch.dev/localbatch``).
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchwire import containers
from devstack import images, system

REPO = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE = "localhost/batchop:dev"
WORDCOUNT_IMAGE = "localhost/batchop-wordcount:1"
WORDCOUNT_PUBLISHED = "myregistry.azurecr.io/wordcount:1"
"""The image name of ``examples/schedule-container.yaml`` (a user's registry); the local build carries it too."""
HASH_LABEL = "azurebatch.dev/context-hash"
BUILT_BY_LABEL = images.BUILT_BY_LABEL
BASE_PYTHON = (3, 11)
"""The Python of the local base image (Debian bookworm's): the host's wheels must be built for it."""
OPERATOR_SECONDS = 35.0
"""Typical seconds to build the operator image on the local base (measured: 34 s on 2 cores)."""
WORDCOUNT_SECONDS = 5.0
BUILD_TIMEOUT = 1800.0
STALE_CONTAINER_AGE = "10m"
"""Stopped project containers created longer ago than this are garbage: a live service removes its own within a
second of their end, and creates each just before starting it."""


class ImageBuildError(system.PrerequisiteError):
    """An image could not be built; the message names the step and the log."""


@dataclass(frozen=True)
class ImageSpec:
    """What one image is built from: files of a context directory, the Containerfile among them, arguments."""

    tag: str
    context: Path
    files: tuple[str, ...]
    containerfile: str
    build_args: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = ()
    wheels: bool = False
    """Stage ``wheels/`` (the operator's dependencies, built on the host) into the context."""
    estimate: float = 30.0
    title: str = ""


@dataclass(frozen=True)
class BuiltImage:
    """An image ready in the engine: its name, id, size, content hash, and whether this call built it."""

    image: str
    image_id: str
    size_bytes: int
    context_hash: str
    built: bool
    seconds: float
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size_mb(self) -> float:
        return round(self.size_bytes / 1e6, 1)


# -- build contexts ------------------------------------------------------------------------------------------


def dockerignore_rules(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ignored(name: str, rules: Sequence[str]) -> bool:
    """Whether ``.dockerignore`` ``rules`` keep the file ``name`` out of the context: the last rule that matches
    the path or one of its parent directories wins, ``!`` re-includes (Docker's reading of the file)."""
    parts = name.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = (rule[1:] if negate else rule).strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            excluded = not negate
    return excluded


def context_files(root: Path = REPO, ignore_file: str = ".dockerignore") -> tuple[str, ...]:
    """The files of ``root`` that its ``.dockerignore`` lets into a build context, sorted.

    Only the trees its ``!`` rules name are walked (the rules start with ``*``), so a large checkout (``.venv``,
    ``.git``) costs nothing; a rule with a wildcard in a ``!`` pattern makes the whole tree walked.
    """
    rules = dockerignore_rules(root / ignore_file)
    starts = [r[1:].strip("/") for r in rules if r.startswith("!")]
    if not rules or rules[0] != "*" or any(ch in s for s in starts for ch in "*?["):
        starts = [""]
    found: set[str] = set()
    for start in starts:
        top = root / start
        candidates = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file())
        for path in candidates:
            name = path.relative_to(root).as_posix()
            if not ignored(name, rules):
                found.add(name)
    return tuple(sorted(found))


def content_hash(spec: ImageSpec, base_id: str) -> str:
    """sha256 of everything the image is made from: each file's path, executable bit and bytes, the build
    arguments and aliases, the base image's id."""
    digest = hashlib.sha256()
    for name in sorted(spec.files):
        path = spec.context / name
        digest.update(f"{name}\0{os.access(path, os.X_OK)}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps([spec.containerfile, list(spec.build_args), list(spec.aliases), spec.wheels,
                              base_id]).encode())
    return digest.hexdigest()


# -- the two images ------------------------------------------------------------------------------------------


def operator_spec(base: str = images.BASE_IMAGE, *, tag: str = OPERATOR_IMAGE) -> ImageSpec:
    files = context_files(REPO)
    files = files if "Dockerfile" in files else (*files, "Dockerfile")  # docker sends it besides the context
    return ImageSpec(tag=tag, context=REPO, files=files,
                     containerfile="Dockerfile", build_args=(("PYTHON_IMAGE", base), ("PIP_SOURCE", "wheels")),
                     wheels=True, estimate=OPERATOR_SECONDS, title=f"the operator image {tag}")


def wordcount_spec(base: str = images.BASE_IMAGE, *, tag: str = WORDCOUNT_IMAGE,
                   aliases: tuple[str, ...] = (WORDCOUNT_PUBLISHED,), context: Path | None = None) -> ImageSpec:
    root = context or REPO / "blob" / "application"
    files = tuple(sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")))
    return ImageSpec(tag=tag, context=root, files=files, containerfile="Containerfile",
                     build_args=(("BASE_IMAGE", base),), aliases=aliases, estimate=WORDCOUNT_SECONDS,
                     title=f"the word-count sample image {tag}")


def ensure_operator_image(*, tag: str = OPERATOR_IMAGE) -> BuiltImage:
    """The operator image built from this checkout on the local base (built only when the operator changed)."""
    engine = images.ensure_engine()
    return ensure(engine, operator_spec(images.ensure_base(), tag=tag))


def ensure_wordcount_image() -> BuiltImage:
    """The word-count sample's image (and its alias), built only when ``blob/application`` changed."""
    engine = images.ensure_engine()
    return ensure(engine, wordcount_spec(images.ensure_base()))


# -- building ------------------------------------------------------------------------------------------------


def image_info(engine: containers.Engine, image: str) -> dict[str, Any] | None:
    """``Id``, ``Size`` and ``Labels`` of ``image``, or None when the engine does not have it."""
    done = _capture(engine.argv("image", "inspect", "--format", "{{.Id}} {{.Size}} {{json .Config.Labels}}", image))
    if done.returncode != 0 or not done.stdout.strip():
        return None
    image_id, size, labels = done.stdout.strip().split(" ", 2)
    try:
        parsed = json.loads(labels) or {}
    except ValueError:
        parsed = {}
    return {"Id": image_id, "Size": int(size), "Labels": parsed}


def ensure(engine: containers.Engine, spec: ImageSpec) -> BuiltImage:
    """``spec``'s image, built when the engine has none with the same content hash; aliases tagged."""
    started = time.monotonic()
    base = dict(spec.build_args).get("PYTHON_IMAGE") or dict(spec.build_args).get("BASE_IMAGE") or ""
    base_info = image_info(engine, base) if base else None
    digest = content_hash(spec, base_info["Id"] if base_info else base)
    with _lock(spec.tag):
        info = image_info(engine, spec.tag)
        built = info is None or info["Labels"].get(HASH_LABEL) != digest
        if info is None or built:
            _build(engine, spec, digest)
            prune_images(engine)
            info = image_info(engine, spec.tag)
            if info is None:
                raise ImageBuildError(f"{spec.tag} is not in {engine.name}'s storage after its build")
        for alias in spec.aliases:
            _check(engine.argv("tag", spec.tag, alias), f"tag {spec.tag} as {alias}")
    return BuiltImage(image=spec.tag, image_id=info["Id"], size_bytes=info["Size"], context_hash=digest,
                      built=built, seconds=round(time.monotonic() - started, 1), aliases=spec.aliases)


def build_argv(engine: containers.Engine, spec: ImageSpec, context: Path, digest: str) -> list[str]:
    """``build`` with this machine's engine flags, the labels, the arguments; one image, no layer images kept
    (podman's ``--layers=false``: the content hash already decides when to build)."""
    args = ["build", *engine.run_options]
    args += ["--layers=false"] if engine.name == "podman" else ["--progress=plain"]
    args += ["-f", str(context / spec.containerfile), "--label", BUILT_BY_LABEL, "--label", f"{HASH_LABEL}={digest}"]
    for key, value in spec.build_args:
        args += ["--build-arg", f"{key}={value}"]
    return engine.argv(*args, "-t", spec.tag, str(context))


def _build(engine: containers.Engine, spec: ImageSpec, digest: str) -> None:
    log = images.root() / f"build-{_slug(spec.tag)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="batchop-context-", dir=images.root()) as tmp:
        context = Path(tmp)
        for name in spec.files:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(spec.context / name, context / name)
        if spec.wheels:
            _stage_wheels(context)
        argv = build_argv(engine, spec, context, digest)
        system.say(f"building {spec.title or spec.tag} with {engine.describe()}: about {spec.estimate:.0f} s; "
                   f"log: {log}")
        _run_with_progress(argv, log, spec.estimate)


def _run_with_progress(argv: list[str], log: Path, estimate: float) -> None:
    """Run a build, its output into ``log``; each build step is shown with the time so far and the estimate."""
    started = time.monotonic()
    with open(log, "w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if _is_step(line):
                elapsed = time.monotonic() - started
                system.say(f"  {line.strip()[:100]} ({elapsed:.0f} s, about {max(0.0, estimate - elapsed):.0f} s left)")
        code = process.wait(timeout=BUILD_TIMEOUT)
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise ImageBuildError(f"`{' '.join(argv[:2])} build ...` failed (exit {code}); log: {log}\n{tail}")
    system.say(f"  built in {time.monotonic() - started:.0f} s")


_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: |^#\d+ \[[^\]]+\] ")
"""A build step's first line: podman's ``[2/5] STEP 3/6: RUN ...``, docker's plain ``#7 [build 2/4] RUN ...``."""


def _is_step(line: str) -> bool:
    return _STEP.match(line.strip()) is not None


# -- the operator's dependencies as wheels -------------------------------------------------------------------


def wheel_dir() -> Path:
    """The cached wheels of the operator's dependencies (and pip, setuptools) for the base image's Python."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return system.cache_dir() / "wheels" / f"py{BASE_PYTHON[0]}{BASE_PYTHON[1]}-{key}"


def _stage_wheels(context: Path) -> None:
    source = ensure_wheels(context)
    target = context / "wheels"
    target.mkdir()
    for wheel in source.glob("*.whl"):
        shutil.copy2(wheel, target / wheel.name)


def ensure_wheels(context: Path) -> Path:
    """Build (once per ``pyproject.toml``) the wheels the image installs from, with this machine's pip: the
    dependencies of the staged ``context``, pip (run from its wheel in the build) and setuptools (the build
    backend). The operator's own wheel is left out: the build installs it from the context's sources."""
    target = wheel_dir()
    if (target / ".complete").is_file():
        return target
    if sys.version_info[:2] != BASE_PYTHON:
        raise ImageBuildError(
            f"the local base image has Python {'.'.join(map(str, BASE_PYTHON))} and this interpreter is "
            f"{sys.version.split()[0]}: its wheels would not install there. Run this from a Python "
            f"{'.'.join(map(str, BASE_PYTHON))} virtualenv, or build with a public base and the index: "
            "docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm .")
    system.say(f"collecting the operator's dependency wheels into {target} (pip wheel, once per pyproject.toml)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir",
            str(partial), str(context), "pip", "setuptools"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"`pip wheel` for the operator image failed (exit {done.returncode}):\n"
                              f"{done.stderr.strip()[-2000:]}")
    for own in partial.glob("batchop-*.whl"):
        own.unlink()
    (partial / ".complete").write_text(" ".join(argv) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


# -- hygiene -------------------------------------------------------------------------------------------------


def prune_images(engine: containers.Engine) -> list[str]:
    """Remove untagged images built here (label ``azurebatch.dev/built-by=batchop``): the image a rebuild
    replaced and any layer image. Images in use by a container are kept by the engine itself."""
    done = _capture(engine.argv("image", "prune", "--force", "--filter", f"label={BUILT_BY_LABEL}"))
    return [line.strip() for line in done.stdout.splitlines()
            if line.strip() and not line.startswith("Total reclaimed")]


def prune_containers(engine: containers.Engine, *, older_than: str = STALE_CONTAINER_AGE,
                     label_value: str | None = None) -> list[str]:
    """Remove the project's stopped containers (label ``azurebatch.dev/localbatch``, of one creator when
    ``label_value`` is given) created longer than ``older_than`` ago: what killed services and runs left. A
    running service removes its own at once, so a young one may still be in use and is kept."""
    selector = containers.LABEL if label_value is None else f"{containers.LABEL}={label_value}"
    done = _capture(engine.argv("container", "prune", "--force", "--filter", f"label={selector}",
                                "--filter", f"until={older_than}"))
    return [line.strip() for line in done.stdout.splitlines()
            if line.strip() and not line.startswith("Total reclaimed")]


# -- helpers -------------------------------------------------------------------------------------------------


def _capture(argv: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, -1, "", str(exc))


def _check(argv: list[str], what: str) -> None:
    done = _capture(argv)
    if done.returncode != 0:
        raise ImageBuildError(f"could not {what}: {done.stderr.strip()[-500:]}")


def _slug(tag: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in tag.rsplit("/", 1)[-1])


@contextmanager
def _lock(tag: str) -> Iterator[None]:
    """One build of ``tag`` at a time on this machine (a second process waits, then finds it cached)."""
    images.root().mkdir(parents=True, exist_ok=True)
    with open(images.root() / f".build-{_slug(tag)}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devstack.product_images [operator|wordcount|prune]``: build (or find) and print each."""
    what = (list(argv) if argv is not None else sys.argv[1:]) or ["operator", "wordcount"]
    for name in what:
        if name == "prune":
            engine = images.ensure_engine()
            for removed in prune_images(engine) + prune_containers(engine):
                print(f"removed {removed}")
            continue
        if name not in ("operator", "wordcount"):
            print(f"unknown image {name!r}: operator, wordcount or prune", file=sys.stderr)
            return 2
        built = ensure_operator_image() if name == "operator" else ensure_wordcount_image()
        state = f"built in {built.seconds:g} s" if built.built else "up to date"
        print(f"{built.image} {built.image_id[:12]} {built.size_mb:g} MB ({state})"
              + "".join(f"; also {alias}" for alias in built.aliases))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
