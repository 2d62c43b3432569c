"""A resource deleted right after it was created must not leave its Batch schedule behind.

When the operator added its finalizer only once ``status.scheduleId`` was written, a resource deleted
while its create was in flight disappeared from Kubernetes at once, and the schedule the operator created
a moment later had no resource any more: an orphan in Batch, silently. Found by the
fault test (deletes arriving while 20% of Batch requests fail), reproduced here without any fault by
deleting resources 0 to 300 ms after creating them.

Fixed (was a strict xfail): the runtime adds the finalizer itself right after the create, before the status
write, and cleans up the schedule when the resource is already gone; the delete handler also runs for an
object that carries the finalizer but no ``status.scheduleId``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.chaos.conftest import Kube, batch_env, owned_schedules, report, spec
from tests.fixtures.operator import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
DELAYS = (0.0, 0.05, 0.1, 0.2, 0.3)


def test_delete_right_after_create_leaves_no_schedule(chaos_kube: Kube, chaos_batch: Any,
                                                       operator_factory: Any) -> None:
    ns = chaos_kube.namespace("chaos-race")
    operator_factory([ns], resync=2.0, env=batch_env(chaos_batch))
    names = []
    for i, delay in enumerate(DELAYS):
        name = f"r{i}"
        chaos_kube.create(ns, name, spec("v1"))
        time.sleep(delay)
        chaos_kube.delete(ns, name)
        names.append(name)
    wait_for(lambda: not chaos_kube.list(ns), 60, 0.5, "every resource to be gone")
    # give the operator time to finish what it started (and to clean up, if it does)
    settled = time.monotonic() + 15
    while time.monotonic() < settled and owned_schedules(chaos_batch, ns):
        time.sleep(1)
    left = owned_schedules(chaos_batch, ns)
    report("create-delete race", operations=2 * len(names), orphans=len(left))
    assert not left, f"schedules left in Batch for deleted resources: {sorted(left)}"
