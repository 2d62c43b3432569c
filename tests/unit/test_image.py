"""What the operator image contains: the build context the Dockerfile sees, built into the wheel it installs.

The image must carry the operator (``batchop``) and the wire facts it shares (``batchwire``) and nothing
else: not the local Batch service (``localbatch``) nor the dev stack (``devstack``), which are for a
developer's machine. This test stages exactly what ``.dockerignore`` lets into the build context and what
the build stage's ``COPY`` lines take from it, builds the wheel from that as ``pip install .`` in the
Dockerfile does, and lists the wheel's files.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _context_files() -> list[Path]:
    """Files of the repository that ``.dockerignore`` lets into the build context (its rules in order; the
    last matching rule wins, ``!`` re-includes, a directory rule covers everything under it)."""
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    kept = []
    for name in tracked:
        included = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule[1:] if negate else rule
            pattern = pattern.rstrip("/")
            hit = (fnmatch.fnmatch(name, pattern) or name.startswith(pattern + "/")
                   or fnmatch.fnmatch(name, pattern.replace("**/", "*/")))
            if hit:
                included = negate
        if included and (ROOT / name).is_file():
            kept.append(Path(name))
    return kept


def _copied(files: list[Path]) -> list[Path]:
    """The files the build stage's ``COPY`` lines take from the context."""
    text = (ROOT / "Dockerfile").read_text()
    build = text[: text.find("\nFROM ", text.find("FROM ") + 1)]
    sources = []
    for line in build.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)\s+(\S+)$", line)
        if match:
            sources += match.group(1).split()
    out = []
    for path in files:
        for source in sources:
            source = source.rstrip("/")
            if str(path) == source or str(path).startswith(source + "/"):
                out.append(path)
    return out


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    context = tmp_path_factory.mktemp("context")
    for path in _copied(_context_files()):
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, context / path)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(context)], check=True, capture_output=True)
    (wheel,) = out.glob("batchop-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_image_holds_the_operator_and_nothing_of_the_local_stack(wheel_files: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_files if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"batchop", "batchwire"}
    assert not [name for name in wheel_files if "localbatch" in name or "devstack" in name]


def test_image_holds_every_layer(wheel_files: list[str]) -> None:
    for layer in ("api", "spec", "batch", "kube", "blob", "controller", "admission", "observability", "cli"):
        assert f"batchop/{layer}/__init__.py" in wheel_files
    sources = {str(p.relative_to(ROOT / "operator")) for p in (ROOT / "operator" / "batchop").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert sources <= set(wheel_files), sorted(sources - set(wheel_files))


def test_context_rules_are_read_as_docker_reads_them() -> None:
    files = {str(p) for p in _context_files()}
    assert "pyproject.toml" in files and "operator/batchop/__init__.py" in files
    assert "operator/localbatch/__init__.py" not in files and "tests/conftest.py" not in files
