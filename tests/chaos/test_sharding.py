"""Two operator processes sharded by namespace never touch each other's resources.

Operators A (``-n <ns-a>``) and B (``-n <ns-b>``) share one cluster and one Batch account. Both shards
converge; then B is stopped and, in B's namespace, a resource is created, one edited and one deleted.
For several of A's poll cycles nothing happens to them (no status, no Batch schedule, the old command
line kept, the deleted one held by its finalizer), and A's log never names B's namespace. When B is back,
its shard converges.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchop.api.names import FINALIZER
from tests.chaos.conftest import (
    Kube,
    batch_env,
    chaos_n,
    command_line,
    converge,
    owned_schedules,
    parallel,
    report,
    spec,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]
RESYNC = 2.0


def test_namespace_shards_stay_apart(chaos_kube: Kube, chaos_batch: Any, operator_factory: Any) -> None:
    per_shard = max(3, chaos_n() // 2)
    ns_a, ns_b = chaos_kube.namespace("chaos-shard-a"), chaos_kube.namespace("chaos-shard-b")
    env = batch_env(chaos_batch)
    op_a = operator_factory([ns_a], resync=RESYNC, env=env)
    op_b = operator_factory([ns_b], resync=RESYNC, env=env)
    names = [f"s{i:04d}" for i in range(per_shard)]
    declared_a = {name: "v1" for name in names}
    declared_b = {name: "v1" for name in names}
    parallel(lambda name: chaos_kube.create(ns_a, name, spec("v1")), names)
    parallel(lambda name: chaos_kube.create(ns_b, name, spec("v1")), names)
    converge(chaos_kube, chaos_batch, ns_a, declared_a, timeout=60 + per_shard)
    converge(chaos_kube, chaos_batch, ns_b, declared_b, timeout=60 + per_shard)
    assert ns_b not in op_a.logs() and ns_a not in op_b.logs()

    op_b.stop()
    edited, deleted = names[0], names[1]
    chaos_kube.create(ns_b, "while-b-is-down", spec("v1"))
    chaos_kube.set_command(ns_b, edited, "v2")
    chaos_kube.delete(ns_b, deleted)
    schedule_id = chaos_kube.get(ns_b, edited)["status"]["scheduleId"]  # type: ignore[index]
    time.sleep(4 * RESYNC + 2)  # several of A's cycles: a fixed window in which nothing may happen

    new = chaos_kube.get(ns_b, "while-b-is-down")
    assert new is not None and not new.get("status"), f"someone reconciled B's resource: {new.get('status')}"
    owned = owned_schedules(chaos_batch, ns_b)
    assert "while-b-is-down" not in owned
    kept = chaos_batch.state()["schedules"][schedule_id.lower()]["jobSpecification"]["jobManagerTask"]["commandLine"]
    assert kept == command_line("v1"), "B's edit was applied while B was down"
    held = chaos_kube.get(ns_b, deleted)
    assert held is not None and FINALIZER in held["metadata"].get("finalizers", []), "B's delete was processed"
    assert deleted in owned
    assert ns_b not in op_a.logs(), "operator A logged about B's namespace"

    op_b.start()
    declared_b["while-b-is-down"] = "v1"
    declared_b[edited] = "v2"
    declared_b.pop(deleted)
    final_b = converge(chaos_kube, chaos_batch, ns_b, declared_b, timeout=60 + per_shard)
    final_a = converge(chaos_kube, chaos_batch, ns_a, declared_a, timeout=30)
    report("sharding", operations=2 * per_shard + 3, shard_a=final_a.counts(), shard_b=final_b.counts(),
           cross_shard_writes=0)
    assert ns_a not in op_b.logs() and ns_b not in op_a.logs()
