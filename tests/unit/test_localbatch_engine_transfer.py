"""Output-file planning and URL handling of the local Batch service's task runner (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchwire.redact import strip_sas
from localbatch import transfer

CONTAINER = "http://127.0.0.1:10000/devstoreaccount1/out?sv=2021-08-06&sp=cw&sig=abc%2B"


def of(pattern: str, path: str | None = None, condition: str = "tasksuccess") -> dict[str, object]:
    container: dict[str, object] = {"containerUrl": CONTAINER}
    if path is not None:
        container["path"] = path
    return {"filePattern": pattern, "destination": {"container": container},
            "uploadOptions": {"uploadCondition": condition}}


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    work = tmp_path / "task" / "wd"
    (work / "logs" / "deep").mkdir(parents=True)
    (work / "logs" / "a.log").write_text("a")
    (work / "logs" / "deep" / "b.log").write_text("b")
    (work / "result.txt").write_text("r")
    (tmp_path / "task" / "stdout.txt").write_text("out")
    return work


def names(plan: list[transfer.Upload]) -> list[str]:
    return sorted(u.blob_name for u in plan)


def test_single_file_path_is_the_blob_name(wd: Path) -> None:
    assert names(transfer.plan_uploads([of("result.txt", "runs/1/result.txt")], wd, {}, succeeded=True)) == [
        "runs/1/result.txt"
    ]
    assert names(transfer.plan_uploads([of("result.txt")], wd, {}, succeeded=True)) == ["result.txt"]
    assert names(transfer.plan_uploads([of("../stdout.txt", "logs/stdout.txt")], wd, {}, succeeded=True)) == [
        "logs/stdout.txt"
    ]


def test_wildcards_keep_the_path_below_the_fixed_part(wd: Path) -> None:
    plan = transfer.plan_uploads([of("logs/**/*.log", "failed")], wd, {}, succeeded=True)
    assert names(plan) == ["failed/a.log", "failed/deep/b.log"]
    assert names(transfer.plan_uploads([of("logs/*.log")], wd, {}, succeeded=True)) == ["a.log"]


def test_upload_conditions(wd: Path) -> None:
    files = [of("result.txt", "s", "tasksuccess"), of("result.txt", "f", "taskfailure"),
             of("result.txt", "c", "taskcompletion")]
    assert names(transfer.plan_uploads(files, wd, {}, succeeded=True)) == ["c", "s"]
    assert names(transfer.plan_uploads(files, wd, {}, succeeded=False)) == ["c", "f"]


def test_environment_variables_in_patterns(wd: Path) -> None:
    env = {"AZ_BATCH_TASK_DIR": str(wd.parent)}
    plan = transfer.plan_uploads([of("$AZ_BATCH_TASK_DIR/stdout.txt", "o.txt")], wd, env, succeeded=True)
    assert names(plan) == ["o.txt"]
    assert names(transfer.plan_uploads([of("%AZ_BATCH_TASK_DIR%/std*.txt")], wd, env, succeeded=True)) == [
        "stdout.txt"
    ]


def test_missing_files_upload_nothing(wd: Path) -> None:
    assert transfer.plan_uploads([of("nope.txt"), of("nope/*.txt")], wd, {}, succeeded=True) == []


def test_blob_url_keeps_the_sas_and_quotes_the_name() -> None:
    url = transfer._blob_url(CONTAINER, "results/job:1 x.txt")
    assert url == ("http://127.0.0.1:10000/devstoreaccount1/out/results/job%3A1%20x.txt"
                   "?sv=2021-08-06&sp=cw&sig=abc%2B")
    assert strip_sas(url) == "http://127.0.0.1:10000/devstoreaccount1/out/results/job%3A1%20x.txt"
    assert transfer._headers_for(url) == {"x-ms-version": "2021-08-06"}


def test_resource_file_paths_cannot_leave_the_working_directory(tmp_path: Path) -> None:
    with pytest.raises(transfer.TransferError) as err:
        transfer._inside(tmp_path, "../../etc/passwd")
    assert err.value.code == "ResourceFileCreateFailed"
    assert transfer._inside(tmp_path, "a/b.txt") == (tmp_path / "a" / "b.txt").resolve()
