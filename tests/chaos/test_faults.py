"""Batch answers 20% of requests with 429 (Retry-After), 500, 503 or a reset, with latency.

Under those faults N resources are created, a third edited and a quarter deleted; everything converges
with nothing duplicated or orphaned. Then, with a deterministic fault, a 429 is shown to be honoured: two
429s with ``Retry-After: 3`` on ``create_job_schedule`` delay the create by at least 6 s (the SDK's own
backoff without Retry-After would retry after 0.8 + 1.6 s), and the service counts exactly two 429s for it.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.chaos.conftest import Kube, batch_env, chaos_n, converge, error_statuses, parallel, report, spec
from tests.fixtures.operator import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


def test_faults_converge_without_duplicates(chaos_kube: Kube, chaos_batch: Any, operator_factory: Any) -> None:
    n = chaos_n()
    rng = random.Random(7)
    ns = chaos_kube.namespace("chaos-faults")
    operator = operator_factory([ns], resync=2.0, env=batch_env(chaos_batch))
    chaos_batch.reset_counts()
    chaos_batch.faults(rate=0.2, codes=["429", "500", "503", "reset"], latencyMs=20, retryAfter=1, nextN=0,
                       operations=[])
    injected_before = chaos_batch.admin("GET", "faults")["injected"]
    names = [f"f{i:04d}" for i in range(n)]
    declared = {name: "v1" for name in names}
    parallel(lambda name: chaos_kube.create(ns, name, spec("v1")), names)
    edited = rng.sample(names, max(1, n // 3))
    deleted = rng.sample(names, max(1, n // 4))
    for name in edited:
        declared[name] = "v2"
    parallel(lambda name: chaos_kube.set_command(ns, name, "v2"), edited)
    for name in deleted:
        declared.pop(name)
    parallel(lambda name: chaos_kube.delete(ns, name), deleted)  # racing the creates, under faults
    try:
        final = converge(chaos_kube, chaos_batch, ns, declared, timeout=180 + n * 2, logs=operator.logs)
    finally:
        faults = chaos_batch.admin("GET", "faults")
        chaos_batch.clear_faults()
    statuses = error_statuses(chaos_batch.counts())
    report("faults", operations=n + len(edited) + len(deleted), faults_injected=faults["injected"] - injected_before,
           answers_429=statuses.get("429", 0), answers_500=statuses.get("500", 0),
           answers_503=statuses.get("503", 0), resets=statuses.get("0", 0), **final.counts())
    assert faults["injected"] - injected_before > 0, "no fault was injected: the test proved nothing"
    assert operator.alive


def test_retry_after_is_honoured(chaos_kube: Kube, chaos_batch: Any, operator_factory: Any) -> None:
    ns = chaos_kube.namespace("chaos-429")
    operator_factory([ns], resync=2.0, env=batch_env(chaos_batch))
    chaos_batch.clear_faults()
    chaos_batch.reset_counts()
    chaos_batch.faults(nextN=2, codes=["429"], retryAfter=3, operations=["create_job_schedule"])
    start = time.monotonic()
    chaos_kube.create(ns, "throttled", spec("v1"))

    def created() -> bool:
        counts = chaos_batch.counts().get("create_job_schedule", {}).get("byStatus", {})
        return counts.get("201", 0) >= 1

    wait_for(created, 60, 0.1, "the throttled create to go through")
    elapsed = time.monotonic() - start
    by_status = chaos_batch.counts()["create_job_schedule"]["byStatus"]
    report("retry-after", retry_after_s=3, throttled=by_status.get("429", 0), create_delay_s=round(elapsed, 2))
    assert by_status.get("429") == 2 and by_status.get("201") == 1, by_status
    assert elapsed >= 5.5, f"created {elapsed:.1f}s after two 429s with Retry-After: 3: Retry-After not honoured"
    chaos_batch.clear_faults()
    converge(chaos_kube, chaos_batch, ns, {"throttled": "v1"}, timeout=60)
