"""Killing a test run midway leaves no stray process for long: the next session reclaims it.

A real pytest run using the ``kube`` and ``azurite`` fixtures is started, then SIGKILLed (no teardown runs),
which leaves etcd, kube-apiserver and Azurite running as strays. What the next session does at start
(:func:`tests.fixtures.stack.claim_session_dir`) must stop all of them and remove the orphaned directory,
while leaving a concurrent live session's directory alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devstack import procs
from tests.fixtures.stack import claim_session_dir

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import time

    def test_hold(kube, azurite):
        print("READY", kube.server, azurite.blob_endpoint, flush=True)
        time.sleep(600)
""")


def _start_holder(tmp_path: Path, root: Path) -> subprocess.Popen[str]:
    (tmp_path / "test_hold.py").write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'operator'}", "BATCHOP_TEST_STACK_ROOT": str(root)}
    env.pop("E2E_KUBECONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "tests.fixtures.stack", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-o", "addopts=", "test_hold.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_ready(process: subprocess.Popen[str], timeout: float = 120) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("READY"):
            return line
    raise AssertionError("the holder session never became ready:\n" + "".join(seen[-30:]))


def test_sigkilled_session_leaves_strays_that_the_next_session_reclaims(tmp_path: Path) -> None:
    root = tmp_path / "stacks"
    holder = _start_holder(tmp_path, root)
    try:
        _wait_ready(holder)
        os.kill(holder.pid, signal.SIGKILL)  # like a killed CI job: no fixture teardown runs
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    orphaned = [d for d in root.iterdir() if d.is_dir()]
    assert len(orphaned) == 1
    strays = procs.records(orphaned[0])
    assert sorted(r.name for r in strays) == ["azurite", "etcd", "kube-apiserver"]
    assert all(r.alive for r in strays), "the parent's death alone must not be what stops them"

    live = procs.OwnedDir(root / "concurrent-live-session")
    assert live.try_acquire()
    sleeper, sleeper_record = procs.start(live.path, "other", ["sleep", "300"])
    try:
        owned = claim_session_dir(root)  # what the next test session does first
        owned.release()
        assert not any(r.alive for r in strays), [r for r in strays if r.alive]
        assert not orphaned[0].exists()
        assert sleeper_record.alive and live.path.exists()  # a live concurrent session is left alone
    finally:
        procs.stop(live.path, sleeper_record)
        sleeper.wait(5)
        live.release()
        procs.reclaim_orphans(root)
