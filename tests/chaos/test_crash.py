"""Kill -9 the operator at random points while schedules are created, edited and deleted.

Three phases run against one operator process that is SIGKILLed at a random moment inside each phase (and
once more between phases), then restarted: create N resources, edit the command line of a third of them,
delete a quarter. At the end every remaining resource's schedule exists exactly once with the declared
command line, no schedule is left without a resource, and no deleted resource is stuck on its finalizer.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from tests.chaos.conftest import Kube, batch_env, chaos_n, converge, parallel, report, spec

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


def test_kill_9_mid_flight_loses_and_duplicates_nothing(chaos_kube: Kube, chaos_batch: Any,
                                                        operator_factory: Any) -> None:
    n = chaos_n()
    rng = random.Random(int(time.time()))
    ns = chaos_kube.namespace("chaos-crash")
    operator = operator_factory([ns], resync=2.0, env=batch_env(chaos_batch))
    names = [f"c{i:04d}" for i in range(n)]
    declared: dict[str, str] = {}
    kills = 0

    def run_phase(work: Any, items: list[str]) -> None:
        """Run ``work`` over ``items`` in a thread while the operator is killed at a random moment."""
        nonlocal kills
        worker = threading.Thread(target=parallel, args=(work, items, 6))
        worker.start()
        time.sleep(rng.uniform(0.05, 1.5))
        operator.kill()
        kills += 1
        worker.join()
        time.sleep(rng.uniform(0.0, 1.0))  # the operator stays down for a moment; writes pile up
        operator.start()
        time.sleep(rng.uniform(0.5, 3.0))  # let it work a while, then kill it again mid-reconcile
        operator.kill()
        kills += 1
        operator.start()

    def create(name: str) -> None:
        chaos_kube.create(ns, name, spec("v1"))
        declared[name] = "v1"

    run_phase(create, names)

    edited = rng.sample(names, max(1, n // 3))

    def edit(name: str) -> None:
        chaos_kube.set_command(ns, name, "v2")
        declared[name] = "v2"

    run_phase(edit, edited)

    deleted = rng.sample(names, max(1, n // 4))

    def delete(name: str) -> None:
        chaos_kube.delete(ns, name)
        declared.pop(name, None)

    run_phase(delete, deleted)

    final = converge(chaos_kube, chaos_batch, ns, declared, timeout=120 + n * 1.5, logs=operator.logs)
    counts = chaos_batch.counts()
    creates = counts.get("create_job_schedule", {}).get("byStatus", {})
    report("crash", operations=n + len(edited) + len(deleted), kills=kills,
           creates_201=creates.get("201", 0), creates_409=creates.get("409", 0), **final.counts())
    assert operator.alive
    # every create that Batch accepted belongs to a resource that exists or was deleted cleanly:
    assert creates.get("201", 0) <= n, f"{creates.get('201')} schedules created for {n} resources"
