"""The `batchop status` table (pure rendering) and the CLI's argument handling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from batchop.cli import main as cli
from batchop.cli import statustable

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def obj(name: str, ns: str = "default", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-11-23T07:00:00Z"},
            "spec": {"schedule": {"recurrenceInterval": "PT4H"}}, "status": status}


def test_rows_show_schedule_jobs_tasks_and_outputs() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Active"}
    jobs = [
        {"id": "default_wc:job-3", "state": "active", "startTime": "2026-11-23T11:00:00Z",
         "taskCounts": {"active": 0, "running": 1, "succeeded": 0, "failed": 0}},
        {"id": "default_wc:job-2", "state": "completed", "result": "failure", "startTime": "2026-11-23T07:00:00Z",
         "endTime": "2026-11-23T07:01:00.1234567Z", "taskCounts": {"succeeded": 0, "failed": 1},
         "output": {"container": "output", "path": "default_wc", "url": "http://blob/output/default_wc"}},
    ]
    text = statustable.render([obj("wc", state="active", nextRunTime="2026-11-23T15:00:00Z",
                                   recentJob={"id": "default_wc:job-3", "state": "active"}, recentJobs=jobs,
                                   conditions=[ready])], now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATE", "INTERVAL", "NEXT", "RUN", "LAST", "JOB", "LAST", "RESULT",
                                "AGE"]
    assert lines[1].split()[:4] == ["wc", "True", "active", "PT4H"]
    assert "2026-11-23 15:00:00Z" in lines[1] and lines[1].rstrip().endswith("5h")
    assert lines[2].split()[0] == "JOB" and lines[2].startswith("    ")
    assert "0/1 succeeded, 1 running" in lines[3]
    assert "0/1 succeeded, 1 failed" in lines[4] and "http://blob/output/default_wc" in lines[4]
    assert "2026-11-23 07:01:00Z" in lines[4]


def test_all_namespaces_problems_and_empty() -> None:
    failing = obj("bad", ns="team", conditions=[
        {"type": "Ready", "status": "False", "reason": "NotFound", "message": "Batch has no schedule"},
        {"type": "Synced", "status": "False", "reason": "InvalidSpec", "message": "spec.schedule: fix it"}])
    text = statustable.render([failing, obj("a", ns="alpha")], now=NOW, all_namespaces=True)
    lines = text.splitlines()
    assert lines[0].startswith("NAMESPACE") and lines[1].startswith("alpha") and lines[2].startswith("team")
    assert "! Synced False (InvalidSpec): spec.schedule: fix it" in text
    assert statustable.render([], now=NOW) == "No BatchJobSchedules found.\n"
    assert len(statustable.render([failing], now=NOW, jobs=False).splitlines()) == 2


def test_age_and_tasks_formats() -> None:
    assert statustable.age("2026-11-23T11:59:30Z", NOW) == "30s"
    assert statustable.age("2026-11-23T11:00:00Z", NOW) == "60m"
    assert statustable.age("2026-11-20T12:00:00Z", NOW) == "3d"
    assert statustable.tasks(None) == "<none>"
    assert statustable.tasks({"succeeded": 2, "active": 1}) == "2/3 succeeded, 1 waiting"


def test_cli_refuses_name_with_all_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "x", "-A"]) == 2
    assert "NAME cannot be used with -A" in capsys.readouterr().err


def test_cli_without_a_cluster_is_unavailable(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["status", "--kubeconfig", str(tmp_path / "missing")]) == 4
    assert "no Kubernetes configuration" in capsys.readouterr().err


def test_a_failed_last_job_says_which_task_failed_and_how_to_see_its_output() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Active"}
    failed = {"id": "default_wc:job-2", "state": "completed", "result": "failure",
              "taskCounts": {"succeeded": 0, "failed": 1}, "failedTaskCount": 1,
              "failedTasks": [{"id": "wordcount", "exitCode": 127,
                               "failureInfo": {"category": "usererror", "code": "FailureExitCode"}}]}
    text = statustable.render([obj("wc", state="active", recentJob=failed, conditions=[ready])], now=NOW)
    assert ("    ! job default_wc:job-2 failed: task wordcount exited with 127 (output: batchop logs wc --stderr)"
            in text.splitlines())
    counted = {**failed, "failedTasks": None, "failedTaskCount": None}
    text = statustable.render([obj("wc", state="active", recentJob=counted, conditions=[ready])], now=NOW)
    assert "    ! job default_wc:job-2 failed: 1 task(s) failed" in text.splitlines()
    success = {**failed, "result": "success"}
    assert "!" not in statustable.render([obj("wc", recentJob=success, conditions=[ready])], now=NOW)
