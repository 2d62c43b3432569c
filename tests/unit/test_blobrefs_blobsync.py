"""`batchop blob sync` building blocks without storage: the tree scan and progress output."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from batchop.blob import sync as blobsync
from batchwire.exitcodes import INVALID, CLIError

REPO = Path(__file__).resolve().parents[2]


def test_scan_of_the_sample_tree() -> None:
    containers = {c.name: c for c in blobsync.scan(REPO / "blob")}
    assert set(containers) == {"application", "input", "output", "fanout-input"}
    assert sorted(containers["application"].files) == [
        "Containerfile", "fanout.py", "starttask.sh", "task.sh", "wordcount.py"]
    assert len(containers["fanout-input"].files) == 4
    assert list(containers["input"].files) == ["the_star_spangled_banner.txt"]
    assert containers["output"].files == {} and containers["output"].placeholders == 1


def test_scan_skips_hidden_and_keeps_nested_paths(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub" / ".cache").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "a.txt").write_text("a")
    (tmp_path / "data" / "sub" / ".cache" / "x").write_text("x")
    (tmp_path / "data" / ".DS_Store").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / "top-level-file.txt").write_text("no container for me")
    [data] = blobsync.scan(tmp_path)
    assert data.name == "data" and list(data.files) == ["sub/a.txt"] and data.placeholders == 2


@pytest.mark.parametrize("folder", ["Input", "in_put", "ab", "-input", "a--b"])
def test_scan_refuses_folders_that_cannot_be_containers(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder).mkdir()
    with pytest.raises(CLIError) as info:
        blobsync.scan(tmp_path)
    assert info.value.code == INVALID and folder in str(info.value)


def test_scan_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CLIError) as info:
        blobsync.scan(tmp_path / "f")
    assert info.value.code == INVALID


def test_md5_matches_what_storage_reports() -> None:
    import base64
    import hashlib

    path = REPO / "blob" / "input" / "the_star_spangled_banner.txt"
    assert blobsync.md5_base64(path) == base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_progress_per_file_for_small_syncs_and_totals_for_large_ones() -> None:
    small = io.StringIO()
    progress = blobsync.Progress(2, 30, stream=small)
    progress.done("c/a", 10)
    progress.done("c/b", 20)
    assert small.getvalue().splitlines() == ["  c/a (10 B)", "  c/b (20 B)"]

    large = io.StringIO()
    progress = blobsync.Progress(1000, 1000 * 2048, stream=large, interval=3600)
    for i in range(1000):
        progress.done(f"c/{i}", 2048)
    lines = large.getvalue().splitlines()
    assert len(lines) == 2, "the first file and the last one, nothing per file in between"
    assert lines[-1].startswith("  1000/1000 files, 2.0 MiB/2.0 MiB")


def test_split_target() -> None:
    assert blobsync.split_target("output/a/b.txt") == ("output", "a/b.txt")
    assert blobsync.split_target("output") == ("output", "")
    with pytest.raises(CLIError):
        blobsync.split_target("Output/x")


def test_sync_notes_top_level_files_before_touching_storage(tmp_path: Path) -> None:
    from batchop.blob.settings import StorageSettings
    from batchwire.azurite import ACCOUNT_KEY as AZURITE_KEY
    from batchwire.azurite import ACCOUNT_NAME as AZURITE_ACCOUNT

    (tmp_path / "data").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    out = io.StringIO()

    class NoStorage:
        def get_container_client(self, name: str) -> None:
            raise ConnectionError("no storage in a unit test")

    settings = StorageSettings("http://127.0.0.1:9/devstoreaccount1", AZURITE_ACCOUNT, AZURITE_KEY, source="test")
    with pytest.raises(CLIError) as info:
        blobsync.sync(tmp_path, settings, out=out, service=NoStorage())  # type: ignore[arg-type]
    assert "stray.txt is not uploaded" in out.getvalue()
    assert info.value.code == 4 and AZURITE_KEY not in str(info.value)
