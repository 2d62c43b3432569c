"""The Batch service is down during creates and deletes.

Half the resources exist and are Ready; the service is stopped (its state kept in a state file); while it
is down the other half is created and a quarter of the first half deleted. The conditions must say so:
new resources ``Synced=False`` with reason ``BatchUnavailable``, deleted ones still present (finalizer
held: never orphaned silently) with ``Synced=False`` reason ``DeletionPending``. After the service comes
back on the same port with the same state, everything converges: created, deleted from Batch and released.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from batchop.api.names import FINALIZER
from tests.chaos.conftest import (
    Kube,
    batch_env,
    chaos_n,
    condition,
    converge,
    owned_schedules,
    parallel,
    report,
    restartable_batch,
    spec,
)
from tests.fixtures.operator import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_outage_is_reported_and_nothing_is_orphaned(chaos_kube: Kube, operator_factory: Any,
                                                     tmp_path: Path) -> None:
    n = max(4, chaos_n())
    rng = random.Random(8)
    port = _free_port()
    batch = restartable_batch(tmp_path / "batch", port)
    try:
        ns = chaos_kube.namespace("chaos-outage")
        operator = operator_factory([ns], resync=2.0, env=batch_env(batch))
        first = [f"o{i:04d}" for i in range(n // 2)]
        second = [f"o{i:04d}" for i in range(n // 2, n)]
        declared = {name: "v1" for name in first}
        parallel(lambda name: chaos_kube.create(ns, name, spec("v1")), first)
        converge(chaos_kube, batch, ns, declared, timeout=60 + n)

        batch.stop()
        down_at = time.monotonic()
        deleted = rng.sample(first, max(1, len(first) // 4))
        parallel(lambda name: chaos_kube.create(ns, name, spec("v1")), second)
        parallel(lambda name: chaos_kube.delete(ns, name), deleted)

        def reported() -> bool:
            for name in second:
                c = condition(chaos_kube.get(ns, name), "Synced")
                if c.get("status") != "False" or c.get("reason") != "BatchUnavailable":
                    return False
            for name in deleted:
                obj = chaos_kube.get(ns, name)
                if obj is None or FINALIZER not in (obj["metadata"].get("finalizers") or []):
                    raise AssertionError(f"{name} was released while Batch was down: its schedule is orphaned")
                c = condition(obj, "Synced")
                if c.get("status") != "False" or c.get("reason") != "DeletionPending":
                    return False
            return True

        wait_for(reported, 90 + n, 1.0, "conditions saying Batch is unavailable")
        reported_after = time.monotonic() - down_at
        message = condition(chaos_kube.get(ns, deleted[0]), "Synced").get("message", "")
        assert "retrying" in message, message

        batch = restartable_batch(tmp_path / "batch", port)
        back_at = time.monotonic()
        for name in second:
            declared[name] = "v1"
        for name in deleted:
            declared.pop(name)
        final = converge(chaos_kube, batch, ns, declared, timeout=120 + n * 2)
        recovered_after = time.monotonic() - back_at
        assert not set(owned_schedules(batch, ns)) & set(deleted)
        report("outage", operations=len(first) + len(second) + len(deleted), created_during=len(second),
               deleted_during=len(deleted), outage_s=round(back_at - down_at, 1),
               reported_after_s=round(reported_after, 1), recovered_after_s=round(recovered_after, 1),
               **final.counts())
        assert operator.alive
    finally:
        batch.stop()
