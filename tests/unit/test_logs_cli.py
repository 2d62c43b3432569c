"""`batchop logs` without a cluster: which job it picks, how it reads a file in ranges and follows a task, and
what it says when the files are gone (a fake gateway that answers like Batch)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest

from batchop.batch.gateway import BatchError
from batchop.cli import main as cli
from batchop.cli.commands import logs
from batchwire.exitcodes import FAILURE, CLIError

RESOURCE = {"metadata": {"name": "wc"}, "status": {
    "recentJob": {"id": "s:job-3"},
    "recentJobs": [{"id": "s:job-3"}, {"id": "s:job-2"}, {"id": "s:job-1"}]}}
RUNNING = {"id": "t", "state": "running", "nodeInfo": {"poolId": "p", "nodeId": "n"},
           "constraints": {"retentionTime": "PT1H"}, "executionInfo": {"startTime": "2026-01-01T00:00:00Z"}}


def test_pick_job() -> None:
    assert logs.pick_job(RESOURCE, job=None, previous=False) == "s:job-3"
    assert logs.pick_job(RESOURCE, job=None, previous=True) == "s:job-2"
    assert logs.pick_job(RESOURCE, job="other", previous=False) == "other"
    with pytest.raises(CLIError, match="--job"):
        logs.pick_job({"metadata": {"name": "wc"}, "status": {"recentJob": {"id": "a"}, "recentJobs": [{"id": "a"}]}},
                      job=None, previous=True)
    with pytest.raises(CLIError, match="no job yet"):
        logs.pick_job({"metadata": {"name": "wc"}, "status": {}}, job=None, previous=False)


def error(code: str, status: int = 409) -> BatchError:
    return BatchError(f"Batch request failed ({code})", reason="Conflict", terminal=False, status=status, code=code)


class FileGateway:
    """A task whose stdout grows by ``steps`` while it runs, then completes."""

    def __init__(self, steps: list[bytes], chunk: int) -> None:
        self.steps = steps
        self.content = b""
        self.reads: list[tuple[int, int | None]] = []
        self.chunk = chunk
        self.state = "running"

    async def read_task_file(self, job_id: str, task_id: str, path: str, *, start: int | None = None,
                             end: int | None = None) -> bytes:
        assert start is not None and end is not None and end - start + 1 == self.chunk
        self.reads.append((start, end))
        if start >= len(self.content):
            raise error("InvalidRange", 416)
        return self.content[start:end + 1]

    async def get_task(self, job_id: str, task_id: str) -> dict[str, Any]:
        if self.steps:  # each status check: the task wrote more output meanwhile
            self.content += self.steps.pop(0)
        else:
            self.state = "completed"
        return {**RUNNING, "state": self.state}


def test_read_all_reads_in_ranges_until_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "CHUNK", 4)
    gateway = FileGateway([], 4)
    gateway.content = b"0123456789"
    data = asyncio.run(logs._read_all(gateway, "j", RUNNING, "stdout.txt", 0))  # type: ignore[arg-type]
    assert data == b"0123456789" and gateway.reads == [(0, 3), (4, 7), (8, 11)]
    gateway.reads.clear()
    assert asyncio.run(logs._read_all(gateway, "j", RUNNING, "stdout.txt", 8)) == b"89"  # type: ignore[arg-type]
    assert asyncio.run(logs._read_all(gateway, "j", RUNNING, "stdout.txt", 12)) == b""  # type: ignore[arg-type]


def test_follow_prints_growth_and_ends_with_the_task(monkeypatch: pytest.MonkeyPatch,
                                                    capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    monkeypatch.setattr(logs, "CHUNK", 3)
    gateway = FileGateway([b"line 1\n", b"", b"line 2\nline 3\n", b"line 4\n"], 3)
    gateway.content = b"old\n"
    args = argparse.Namespace(interval=0.001, since_file_offset=0, tail=1)
    done = asyncio.run(logs._follow(gateway, "j", dict(RUNNING), "stdout.txt", args))  # type: ignore[arg-type]
    assert done["state"] == "completed"
    assert capsysbinary.readouterr().out == b"old\nline 1\nline 2\nline 3\nline 4\n"
    args = argparse.Namespace(interval=0.001, since_file_offset=0, tail=1)
    gateway = FileGateway([], 3)
    gateway.content = b"a\nb\nc\n"
    asyncio.run(logs._follow(gateway, "j", dict(RUNNING), "stdout.txt", args))  # type: ignore[arg-type]
    assert capsysbinary.readouterr().out == b"c\n", "--tail applies to what was there when -f started"


def test_follow_waits_for_a_file_not_written_yet(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """A task that is still downloading its resource files has no stdout.txt yet: -f keeps waiting for it."""

    class Preparing(FileGateway):
        async def read_task_file(self, job_id: str, task_id: str, path: str, *, start: int | None = None,
                                 end: int | None = None) -> bytes:
            if not self.content:
                raise error("FileNotFound", 404)
            return await super().read_task_file(job_id, task_id, path, start=start, end=end)

    gateway = Preparing([b"", b"ready\n"], logs.CHUNK)
    args = argparse.Namespace(interval=0.001, since_file_offset=0, tail=None)
    asyncio.run(logs._follow(gateway, "j", dict(RUNNING), "stdout.txt", args))  # type: ignore[arg-type]
    assert capsysbinary.readouterr().out == b"ready\n"
    with pytest.raises(CLIError, match=r"has no stdout\.txt"):  # without -f, a missing file is an answer
        asyncio.run(logs._read_all(Preparing([], 1), "j", RUNNING, "stdout.txt", 0))  # type: ignore[arg-type]


def test_gone_files_say_why_and_how_to_keep_output() -> None:
    done = {**RUNNING, "state": "completed", "executionInfo": {"endTime": "2026-01-01T00:10:00Z"}}
    cleaned = logs.file_error(error("TaskFilesCleanedup"), "j", done, "stdout.txt")
    assert cleaned.code == FAILURE
    assert "retention time (PT1H) passed at 2026-01-01T01:10:00" in str(cleaned) and "outputFiles" in str(cleaned)
    pool = logs.file_error(error("TaskFilesUnavailable"), "j", done, "stdout.txt")
    assert "pool p was deleted" in str(pool) and "keepAlive" in str(pool) and "outputFiles" in str(pool)
    waiting = logs.file_error(error("TaskFilesUnavailable"), "j", {"id": "t", "state": "active"}, "stdout.txt")
    assert "has not started yet (state active)" in str(waiting) and "-f" in str(waiting)
    missing = logs.file_error(error("FileNotFound", 404), "j", done, "stderr.txt")
    assert str(missing) == "task t of job j has no stderr.txt"
    busy = logs.file_error(BatchError("Batch is unavailable", reason="BatchUnavailable", terminal=False), "j", done,
                           "stdout.txt")
    assert busy.code == 4


def test_not_started_task_without_follow_is_an_error() -> None:
    with pytest.raises(CLIError, match="has not started yet") as raised:
        asyncio.run(logs._read_all(FileGateway([], 1), "j", {"id": "t", "state": "active"}, "stdout.txt", 0))  # type: ignore[arg-type]
    assert raised.value.code == FAILURE


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", "wc", "-f", "--all-tasks"]) == 2
    assert "--task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["logs", "wc", "--tail", "3", "--since-file-offset", "10"])
    assert usage.value.code == 2


def test_kubectl_plugin_is_the_same_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["kubectl-batchop", "--help"])
    with pytest.raises(SystemExit):
        cli.kubectl_main()
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl batchop") and "logs" in out and "status" in out
