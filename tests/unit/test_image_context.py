"""The build context and content hash of the images the local stack builds (``devstack.product_images``).

The operator image is rebuilt exactly when what goes into it changed, so the hash must cover every file of
the context (content and executable bit), the build arguments and the base image, and nothing else; and the
context must be what ``.dockerignore`` lets in, which ``tests/unit/test_image.py`` reads independently.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from devstack import product_images
from devstack.product_images import ImageSpec, content_hash, ignored
from tests.unit.test_image import _context_files

ROOT = Path(__file__).resolve().parents[2]


def test_image_context_is_what_dockerignore_lets_in() -> None:
    ours = set(product_images.context_files(ROOT))
    assert "pyproject.toml" in ours and "operator/batchop/cli/commands/run.py" in ours
    assert not [name for name in ours if name.startswith(("operator/localbatch/", "operator/devstack/", "tests/"))]
    assert not [name for name in ours if "__pycache__" in name or ".egg-info" in name]
    assert ours == {str(p) for p in _context_files()}


def test_image_dockerignore_rules_last_match_wins_and_cover_parents() -> None:
    rules = ["*", "!operator/batchop/", "operator/**/__pycache__", "operator/*.egg-info"]
    assert ignored("tests/conftest.py", rules)
    assert not ignored("operator/batchop/api/names.py", rules)
    assert ignored("operator/batchop/api/__pycache__/names.cpython-311.pyc", rules)
    assert ignored("operator/batchop.egg-info/PKG-INFO", rules)


def test_image_hash_follows_content_mode_arguments_and_base(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    script = tmp_path / "task.sh"
    script.write_text("echo one\n")
    spec = ImageSpec(tag="t", context=tmp_path, files=("Containerfile", "task.sh"), containerfile="Containerfile",
                     build_args=(("BASE_IMAGE", "b"),))
    first = content_hash(spec, "base-1")
    assert content_hash(spec, "base-1") == first
    assert content_hash(spec, "base-2") != first
    assert content_hash(replace(spec, build_args=(("BASE_IMAGE", "c"),)), "base-1") != first
    script.chmod(0o755)
    moded = content_hash(spec, "base-1")
    assert moded != first
    script.write_text("echo two\n")
    changed = content_hash(spec, "base-1")
    assert changed not in (first, moded)
    (tmp_path / "unused.txt").write_text("not in the context")
    assert content_hash(spec, "base-1") == changed, "a file outside the context does not count"


def test_image_operator_context_holds_the_dockerfile_and_builds_from_wheels() -> None:
    spec = product_images.operator_spec("localhost/base:1")
    assert "Dockerfile" in spec.files and spec.wheels
    assert dict(spec.build_args) == {"PYTHON_IMAGE": "localhost/base:1", "PIP_SOURCE": "wheels"}
