"""bench/harness.py's fine CPU clock (``/proc/<pid>/task/*/schedstat``): it agrees with the process's own CPU
time, counts every live thread, and resolves a window far shorter than the 10 ms ticks of ``/proc/<pid>/stat``
(what the status cycle at rest of 1,000 resources needs, docs/performance.md, eleventh pass)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_fine_clock_counts_every_live_thread_as_the_process_time_does() -> None:
    pid = os.getpid()
    spun, release = threading.Event(), threading.Event()

    def work() -> None:
        _spin(0.15)
        spun.set()
        release.wait(10)  # alive, and idle, while the clocks are read

    fine, process = harness.proc_cpu_seconds_fine(pid), time.process_time()
    worker = threading.Thread(target=work)
    worker.start()
    _spin(0.1)
    assert spun.wait(10)
    fine_after, spent = harness.proc_cpu_seconds_fine(pid), time.process_time() - process
    release.set()
    worker.join()
    assert 0.25 <= spent
    assert abs((fine_after - fine) - spent) < 0.01 + 0.05 * spent


def test_the_fine_clock_resolves_what_ticks_do_not() -> None:
    pid = os.getpid()
    fine = harness.proc_cpu_seconds_fine(pid)
    _spin(0.003)  # under one tick of /proc/<pid>/stat
    spent = harness.proc_cpu_seconds_fine(pid) - fine
    assert 0.003 <= spent < 0.003 + 0.005
