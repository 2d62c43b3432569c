"""The images the local stack builds, on this machine's container engine: cached, minimal, and not piling up.

- The operator image (``devstack.product_images``) is built again only when its build context changed: a
  second ``ensure`` is a cache hit by the content-hash label. It holds ``batchop`` and ``batchwire`` and not
  the local stack, runs ``batchop`` as uid 65532 on a read-only root file system.
- The word-count sample's image (``blob/application/Containerfile``) counts the sample's words as the plain
  task does, and carries the name ``examples/schedule-container.yaml`` uses.
- A rebuild leaves no untagged image behind: the replaced one is pruned by the project's label.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchwire import containers
from devstack import product_images
from tests.e2e.test_wordcount import LYRICS, parse_tsv, true_counts

REPO = Path(__file__).resolve().parents[2]
TEST_TAG = "localhost/batchop-image-test:prune"


def run(engine: containers.Engine, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(engine.argv(*args), capture_output=True, text=True, timeout=timeout, check=False)


def test_image_of_the_operator_is_cached_by_content_and_holds_only_the_operator(engine: containers.Engine) -> None:
    first = product_images.ensure_operator_image()
    started = time.monotonic()
    again = product_images.ensure_operator_image()
    assert not again.built and again.image_id == first.image_id, "an unchanged context must not be built again"
    assert time.monotonic() - started < 15, "a cache hit is a hash and an inspect, not a build"
    info = product_images.image_info(engine, first.image)
    assert info is not None and info["Labels"][product_images.HASH_LABEL] == first.context_hash

    probe = ("import importlib.util as u, os; "
             "print([m for m in ('batchop.cli.commands.run', 'batchwire', 'localbatch', 'devstack', 'pytest') "
             "if u.find_spec(m)], os.getuid(), os.getgid())")
    done = run(engine, "run", "--rm", *engine.run_options, "--read-only", "--network", "none", "--entrypoint",
               "/opt/batchop/bin/python", first.image, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['batchop.cli.commands.run',", "'batchwire']", "65532", "65532"], done.stdout
    version = run(engine, "run", "--rm", *engine.run_options, "--read-only", "--network", "none", first.image,
                  "--version")
    assert version.returncode == 0 and version.stdout.strip() == "batchop 0.1.0", version.stdout + version.stderr


def test_image_of_the_wordcount_sample_counts_like_the_plain_task(engine: containers.Engine, tmp_path: Path) -> None:
    built = product_images.ensure_wordcount_image()
    alias = product_images.image_info(engine, product_images.WORDCOUNT_PUBLISHED)
    assert alias is not None and alias["Id"] == built.image_id, "the example's image name is the local build"

    work = tmp_path / "task"
    (work / "input").mkdir(parents=True)
    shutil.copy(LYRICS, work / "input" / LYRICS.name)
    done = run(engine, "run", "--rm", *engine.run_options, "--network", "none", "-v", f"{work}:{work}", "-w",
               str(work), "-e", "AZ_BATCH_JOB_ID=job-1", built.image, "/app/task.sh")
    assert done.returncode == 0, done.stderr
    rows = parse_tsv((work / "results" / "job-1" / "counts.tsv").read_bytes())
    assert dict((w, c) for c, w in rows) == dict(true_counts(LYRICS.read_text()))


@pytest.fixture
def test_image(engine: containers.Engine) -> Iterator[str]:
    run(engine, "rmi", "--force", TEST_TAG)  # a killed run's image would make the first build a cache hit
    yield TEST_TAG
    run(engine, "rmi", "--force", TEST_TAG)


def test_image_rebuilt_after_a_change_leaves_no_untagged_image(engine: containers.Engine, tmp_path: Path,
                                                               test_image: str) -> None:
    context = tmp_path / "application"
    shutil.copytree(REPO / "blob" / "application", context)
    spec = product_images.wordcount_spec(tag=test_image, aliases=(), context=context)
    first = product_images.ensure(engine, spec)
    (context / "task.sh").write_text((context / "task.sh").read_text() + "# changed\n")
    second = product_images.ensure(engine, product_images.wordcount_spec(tag=test_image, aliases=(), context=context))
    assert first.built and second.built and second.image_id != first.image_id
    assert run(engine, "image", "inspect", first.image_id).returncode != 0, "the replaced image was pruned"
    dangling = run(engine, "images", "--quiet", "--filter", "dangling=true", "--filter",
                   f"label={product_images.BUILT_BY_LABEL}")
    assert dangling.returncode == 0 and dangling.stdout.strip() == "", dangling.stdout
