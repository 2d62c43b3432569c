"""Unit tests for the local stack's plain parts: pid-file supervision, ownership locks, kube-apiserver build
helpers, the env file and the demo's manifest reading. Real processes (``sleep``), no services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchop.cli.commands import demo
from devstack import kube, kubebuild, procs, system
from devstack.stack import StackInfo


def _wait_dead(record: procs.ProcessRecord, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive:
            return True
        time.sleep(0.05)
    return False


def test_start_records_a_detached_process_and_stop_kills_its_whole_group(tmp_path: Path) -> None:
    # The parent shell leaves a grandchild behind: stop must take the whole process group.
    process, record = procs.start(tmp_path, "sleeper", ["bash", "-c", "sleep 300 & echo $! > child.pid; wait"],
                                  cwd=tmp_path)
    deadline = time.monotonic() + 5
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert record.alive
    assert os.getsid(process.pid) == process.pid  # own session: survives the CLI, no terminal signals
    assert [r.name for r in procs.records(tmp_path)] == ["sleeper"]
    assert procs.stop(tmp_path, record, timeout=5) is True
    assert not record.alive
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert procs.records(tmp_path) == []


def test_a_record_with_another_start_time_never_matches_a_reused_pid(tmp_path: Path) -> None:
    process, record = procs.start(tmp_path, "sleeper", ["sleep", "300"])
    impostor = procs.ProcessRecord(name="old", pid=record.pid, start_time=record.start_time - 1, argv=[], log="")
    try:
        assert record.alive
        assert not impostor.alive
        procs.write_record(tmp_path, impostor)
        assert procs.stop(tmp_path, impostor) is False  # not signalled: it is not the recorded process
        assert record.alive
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(300)"
    process, record = procs.start_with_stdout(tmp_path, "stubborn", [sys.executable, "-c", code])
    out = procs.log_dir(tmp_path) / "stubborn.out"
    deadline = time.monotonic() + 10
    while "ready" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    assert procs.stop(tmp_path, record, timeout=0.5) is True
    assert 0.5 <= time.monotonic() - started < 5  # SIGTERM was ignored for 0.5 s, then SIGKILL
    assert not record.alive
    process.wait(5)


def test_owned_dir_lock_is_exclusive_and_released_when_the_owner_dies(tmp_path: Path) -> None:
    target = tmp_path / "session"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from devstack.procs import OwnedDir; from pathlib import "
         "Path; owned = OwnedDir(Path(sys.argv[1])); assert owned.try_acquire(); print('held', flush=True); "
         "time.sleep(300)",
         str(target)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert procs.OwnedDir(target).try_acquire() is False
        assert procs.reclaim_orphans(tmp_path) == [] and target.exists()  # live owner: left alone
    finally:
        holder.kill()
        holder.wait()
    mine = procs.OwnedDir(target)
    assert mine.try_acquire() is True
    mine.release()
    procs.reclaim_orphans(tmp_path)
    assert not target.exists()  # dead owner: reclaimed


def test_kubebuild_uses_a_private_deb_src_list_and_estimates_minutes(tmp_path: Path) -> None:
    options = kubebuild._apt_source_options(tmp_path)
    assert "Dir::Etc::SourceList=/dev/null" in options
    text = (tmp_path / "apt-sources" / "batchop-src.sources").read_text()
    assert "Types: deb-src" in text and "Types: deb\n" not in text
    assert 120 < kubebuild.estimate_seconds() < 900


def test_kubebuild_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHOP_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BATCHOP_KUBE_APISERVER", raising=False)
    assert kubebuild.cached_binary() is None
    binary = tmp_path / "kube-apiserver" / "1.2.3-1" / "kube-apiserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    assert kubebuild.cached_binary() == binary
    assert kubebuild.cached_binary("1.2.3-1") == binary
    assert kubebuild.cached_binary("9.9.9") is None


def test_missing_package_as_non_root_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "is_root", lambda: False)
    monkeypatch.setattr(system, "package_installed", lambda package: False)
    with pytest.raises(system.PrerequisiteError, match=r"sudo apt-get install -y --no-install-recommends nope-pkg"):
        system.ensure_packages(["nope-pkg"], "a test")


def test_crd_files_pick_only_custom_resource_definitions(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\nresources: [a.yaml]\n")
    assert kube.crd_files(tmp_path) == [tmp_path / "a.yaml"]


def test_env_file_quotes_values_for_the_shell() -> None:
    info = StackInfo(dir="/d", time_scale=1, started_at=0, kubeconfig="/d/kubeconfig",
                     batch_endpoint="http://127.0.0.1:1", batch_account="devbatch", batch_key="k/+=",
                     storage_connection_string="A=b;C=d;")
    lines = info.export_lines()
    result = subprocess.run(["bash", "-c", f"{lines}\nenv"], capture_output=True, text=True, check=True)
    assert "AZURE_STORAGE_CONNECTION_STRING=A=b;C=d;" in result.stdout
    assert "BATCHOP_BATCH_KEY=k/+=" in result.stdout
    assert "KUBECONFIG=/d/kubeconfig" in result.stdout


def test_demo_reads_the_output_location_from_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "s.yaml"
    manifest.write_text("""
spec:
  jobSpecification:
    jobManagerTask:
      outputFiles:
        - filePattern: ../std*.txt
          destination: {blob: {container: logs, path: "{jobId}/logs"}}
        - filePattern: counts.txt
          destination: {blob: {container: output, path: "wordcount/{jobId}/counts.txt"}}
""")
    assert demo.output_location(manifest) == ("output", "wordcount/")


def test_demo_waits_for_every_last_result_in_the_table() -> None:
    from batchop.cli.commands.demo import _results_shown

    header = "NAME   READY   STATE    LAST JOB   LAST RESULT   AGE\n"
    assert _results_shown(header + "wc     True    active   job-1      success       3s\n")
    assert not _results_shown(header + "wc     True    active   job-1                    3s\n")
    assert not _results_shown(header + "a      True    active   job-1      failure       3s\n"
                                       "b      True    active                            3s\n")
    assert not _results_shown("No resources found\n")
