"""The service as a process: CLI contract, clean SIGTERM exit, state surviving a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.fixtures.batch import REPO, start_local_batch


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = start_local_batch(tmp_path / "one", "--state-file", str(state_file), "--no-execute")
    try:
        client = first.client()
        schedule_id = f"keep-{uuid.uuid4().hex[:8]}"
        client.create_job_schedule(
            {
                "id": schedule_id,
                "schedule": {"recurrenceInterval": "PT1H"},
                "jobSpecification": {"poolInfo": {"poolId": "p"}},
                "metadata": [{"name": "k", "value": "v"}],
            }
        )
        before = client.get_job_schedule(schedule_id)
        first.advance("P1D")
        virtual_before = first.clock()["now"]
    finally:
        assert first.stop() == 0
    saved = json.loads(state_file.read_text())
    assert schedule_id.lower() in saved["schedules"]
    assert not list(tmp_path.glob(".state.json.*.tmp"))

    second = start_local_batch(tmp_path / "two", "--state-file", str(state_file), "--no-execute")
    try:
        after = second.client().get_job_schedule(schedule_id)
        assert after.etag == before.etag
        assert after.metadata[0].value == "v"
        assert after.creation_time == before.creation_time
        assert second.clock()["now"] >= virtual_before
    finally:
        assert second.stop() == 0


def test_first_stdout_line_is_json_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    service = start_local_batch(tmp_path, "--account", "otheraccount", "--time-scale", "240", "--no-execute")
    info = service.info_line
    assert info["account"] == "otheraccount" and info["timeScale"] == 240.0 and info["execute"] is False
    assert info["endpoint"].startswith("http://127.0.0.1:") and info["key"]
    assert service.info()["engine"] is True
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(15) == 0


def test_busy_port_exits_4_and_help_documents_the_contract(local_batch: Any) -> None:
    port = local_batch.endpoint.rsplit(":", 1)[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    busy = subprocess.run(
        [sys.executable, "-m", "localbatch", "--port", port], capture_output=True, text=True, env=env, timeout=30
    )
    assert busy.returncode == 4 and "--port" in busy.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "batchop", "emulator", "--help"], capture_output=True, text=True, env=env, timeout=30
    )
    assert usage.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--account",
        "--key",
        "--time-scale",
        "--no-execute",
        "--work-dir",
        "--state-file",
        "--fault-rate",
        "--fault-codes",
        "--latency-ms",
        "--tls",
    ):
        assert flag in usage.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "localbatch", "--fault-codes", "418"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad.returncode == 2 and "418" in bad.stderr


def test_batchop_emulator_subcommand_serves(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    process = subprocess.Popen(
        [sys.executable, "-m", "batchop", "emulator", "--port", "0", "--no-execute", "--work-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential

        client = BatchClient(info["endpoint"], AzureNamedKeyCredential(info["account"], info["key"]))
        assert list(client.list_job_schedules()) == []
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
