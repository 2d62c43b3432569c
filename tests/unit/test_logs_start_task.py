"""`batchop logs --start-task` without a cluster: which node it picks, how it reads the node file in ranges, what
it says about the start task and about files that are gone, and its exit codes (a fake gateway that answers like
Batch; the real service and CLI run in tests/e2e/test_logs_start_task.py)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest

from batchop.batch.gateway import BatchError
from batchop.cli import main as cli
from batchop.cli.commands import logs
from batchwire.exitcodes import FAILURE, UNAVAILABLE, USAGE, CLIError

FAILED = {"id": "tvm-2", "state": "starttaskfailed",
          "startTaskInfo": {"state": "completed", "result": "failure", "exitCode": 3,
                            "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                                            "message": "The task exited with an exit code representing a failure"}}}
IDLE = {"id": "tvm-1", "state": "idle", "startTaskInfo": {"state": "completed", "result": "success", "exitCode": 0}}
STARTING = {"id": "tvm-3", "state": "starting"}


def error(code: str, status: int = 404, reason: str = "NotFound") -> BatchError:
    return BatchError(f"Batch request failed ({code})", reason=reason, terminal=False, status=status, code=code)


class NodeBatch:
    """A job on pool ``p`` whose nodes hold ``files`` (``{(node, path): bytes}``)."""

    def __init__(self, nodes: list[dict[str, Any]], files: dict[tuple[str, str], bytes]) -> None:
        self.nodes = nodes
        self.files = files
        self.reads: list[tuple[str, str, int, int]] = []
        self.job: dict[str, Any] | None = {"id": "s:job-1", "executionInfo": {"poolId": "p"}}
        self.list_error: BatchError | None = None

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self.job

    async def list_nodes(self, pool_id: str, **_: Any) -> list[dict[str, Any]]:
        if self.list_error is not None:
            raise self.list_error
        return self.nodes

    async def read_node_file(self, pool_id: str, node_id: str, path: str, *, start: int | None = None,
                             end: int | None = None) -> bytes:
        assert start is not None and end is not None
        self.reads.append((node_id, path, start, end))
        if (node_id, path) not in self.files:
            raise error("FileNotFound")
        content = self.files[(node_id, path)]
        if start >= len(content):
            raise error("InvalidRange", 416)
        return content[start:end + 1]


def args(**overrides: Any) -> argparse.Namespace:
    values = {"start_task": True, "node": None, "stdout": False, "stderr": False, "tail": None,
              "since_file_offset": 0}
    return argparse.Namespace(**{**values, **overrides})


def show(batch: NodeBatch, **overrides: Any) -> int:
    return asyncio.run(logs._show_start_task(args(**overrides), batch, "s:job-1"))  # type: ignore[arg-type]


def test_picks_the_first_failed_node_else_one_whose_start_task_ran_else_the_named_one() -> None:
    assert logs.pick_node([STARTING, IDLE, FAILED], "p", None)["id"] == "tvm-2"
    assert logs.pick_node([STARTING, IDLE], "p", None)["id"] == "tvm-1"
    assert logs.pick_node([IDLE, FAILED], "p", "TVM-1")["id"] == "tvm-1"
    with pytest.raises(CLIError, match="pool p has no node tvm-9 \\(its nodes: tvm-1, tvm-2\\)"):
        logs.pick_node([IDLE, FAILED], "p", "tvm-9")
    with pytest.raises(CLIError, match="has no node \\(yet\\)"):
        logs.pick_node([], "p", None)
    with pytest.raises(CLIError, match="no node of pool p has run a start task \\(node states: starting\\)"):
        logs.pick_node([STARTING], "p", None)


def test_start_task_line_says_how_it_ended() -> None:
    assert logs.start_task_line(FAILED, "p") == \
        "the start task on node tvm-2 of pool p (node state starttaskfailed) exited with 3"
    assert logs.start_task_line(IDLE, "p").endswith("(node state idle) exited with 0")
    unusable = {"id": "n", "state": "starttaskfailed", "startTaskInfo": {
        "state": "completed", "result": "failure",
        "failureInfo": {"code": "ResourceFileDownloadFailed", "message": "403 on setup.sh"}}}
    assert logs.start_task_line(unusable, "p").endswith("failed: ResourceFileDownloadFailed: 403 on setup.sh")
    running = {"id": "n", "state": "waitingforstarttask", "startTaskInfo": {"state": "running"}}
    assert logs.start_task_line(running, "p").endswith("is running")


def test_prints_stderr_in_ranges_by_default_and_stdout_on_request(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    monkeypatch.setattr(logs, "CHUNK", 4)
    batch = NodeBatch([IDLE, FAILED], {("tvm-2", "startup/stderr.txt"): b"no such package\n",
                                       ("tvm-2", "startup/stdout.txt"): b"step 1\nstep 2\n"})
    assert show(batch) == 0
    out = capsysbinary.readouterr()
    assert out.out == b"no such package\n"
    assert out.err == b"batchop logs: the start task on node tvm-2 of pool p (node state starttaskfailed) " \
                      b"exited with 3\n"
    assert [r[2:] for r in batch.reads] == [(0, 3), (4, 7), (8, 11), (12, 15), (16, 19)]
    assert show(batch, stdout=True, tail=1) == 0
    assert capsysbinary.readouterr().out == b"step 2\n"
    assert show(batch, since_file_offset=3) == 0
    assert capsysbinary.readouterr().out == b"such package\n"


def test_what_is_missing_is_exit_1_and_an_unreachable_batch_exit_4() -> None:
    batch = NodeBatch([FAILED], {})
    with pytest.raises(CLIError, match=r"node tvm-2 of pool p has no startup/stderr\.txt") as caught:
        show(batch)
    assert caught.value.code == FAILURE
    batch.list_error = error("PoolNotFound")
    with pytest.raises(CLIError, match="pool p of job s:job-1 is gone") as caught:
        show(batch)
    assert caught.value.code == FAILURE
    batch.list_error = BatchError("no answer", reason="BatchUnavailable", terminal=False)
    with pytest.raises(CLIError, match="cannot read the nodes of pool p") as caught:
        show(batch)
    assert caught.value.code == UNAVAILABLE
    batch.list_error = None
    batch.job = {"id": "s:job-1", "executionInfo": {}}
    with pytest.raises(CLIError, match="has no pool yet") as caught:
        show(batch)
    batch.job = None
    with pytest.raises(CLIError, match="Batch has no job s:job-1"):
        show(batch)
    gone = logs.node_error(error("NodeNotFound"), "p", FAILED, "j", "startup/stderr.txt")
    assert gone.code == FAILURE and "node tvm-2 of pool p is gone" in str(gone)


def test_usage_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for extra in (["--all-tasks"], ["--task", "t"], ["-f"]):
        monkeypatch.setattr("sys.argv", ["batchop", "logs", "wc", "--start-task", *extra])
        assert cli.main() == USAGE, extra
    monkeypatch.setattr("sys.argv", ["batchop", "logs", "wc", "--stderr", "--stdout"])
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        cli.main()
    assert exited.value.code == USAGE
    monkeypatch.setattr("sys.argv", ["batchop", "logs", "wc", "--node", "n1", "-f"])  # --node implies --start-task
    assert cli.main() == USAGE
    assert "--start-task" in capsys.readouterr().err
