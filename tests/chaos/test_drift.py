"""Schedules deleted or modified out of band are restored within one resync.

Three schedules are changed behind the operator's back with the SDK: one deleted, one with its command
line changed, one disabled. Each must be back as declared (active, the declared command line, the owner
marks) within one resync interval, plus the time of one poll cycle and the repair itself (slack below),
measured per change; a fourth, untouched, must not be written at all.

A schedule stripped of its owner marks is re-marked (was a strict xfail): the reconcile treats an unmarked
schedule whose id is the resource's own ``status.scheduleId`` as its own.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchop.api.names import MARK_OWNER
from tests.chaos.conftest import Kube, batch_env, command_line, converge, parallel, report, spec

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]
RESYNC = 3.0
SLACK = 7.0  # one poll cycle + the repair requests + our own polling of the state


def test_out_of_band_changes_are_undone_within_one_resync(chaos_kube: Kube, chaos_batch: Any,
                                                          operator_factory: Any) -> None:
    ns = chaos_kube.namespace("chaos-drift")
    operator_factory([ns], resync=RESYNC, env=batch_env(chaos_batch))
    names = ["deleted", "modified", "disabled", "untouched"]
    declared = {name: "v1" for name in names}
    parallel(lambda name: chaos_kube.create(ns, name, spec("v1")), names)
    converge(chaos_kube, chaos_batch, ns, declared, timeout=60)
    ids = {name: chaos_kube.get(ns, name)["status"]["scheduleId"] for name in names}  # type: ignore[index]

    client = chaos_batch.client()
    try:
        schedule = lambda name: chaos_batch.state()["schedules"][ids[name].lower()]  # noqa: E731
        changed_at: dict[str, float] = {}
        client.begin_delete_job_schedule(ids["deleted"])
        changed_at["deleted"] = time.monotonic()
        job_spec = schedule("modified")["jobSpecification"]
        job_spec["jobManagerTask"]["commandLine"] = "/bin/bash -c 'echo tampered'"
        client.update_job_schedule(ids["modified"], {"jobSpecification": job_spec})
        changed_at["modified"] = time.monotonic()
        client.disable_job_schedule(ids["disabled"])
        changed_at["disabled"] = time.monotonic()
        etag_untouched = schedule("untouched")["eTag"]

        def restored(name: str) -> bool:
            found = chaos_batch.state()["schedules"].get(ids[name].lower())
            if not found or found.get("state") != "active":
                return False
            marks = {m["name"]: m["value"] for m in found.get("metadata") or []}
            command = found["jobSpecification"]["jobManagerTask"]["commandLine"]
            return marks.get(MARK_OWNER) == f"{ns}/{name}" and command == command_line("v1")

        took: dict[str, float] = {}
        deadline = time.monotonic() + RESYNC + SLACK + 30
        while len(took) < len(changed_at) and time.monotonic() < deadline:
            for name in changed_at:
                if name not in took and restored(name):
                    took[name] = round(time.monotonic() - changed_at[name], 2)
            time.sleep(0.1)
        assert set(took) == set(changed_at), f"not restored: {set(changed_at) - set(took)}"
        untouched_etag_after = schedule("untouched")["eTag"]
    finally:
        client.close()
    final = converge(chaos_kube, chaos_batch, ns, declared, timeout=30)
    report("drift", operations=len(changed_at), resync_s=RESYNC, restore_s=took, **final.counts())
    assert untouched_etag_after == etag_untouched, "a schedule nobody changed was written"
    slow = {name: t for name, t in took.items() if t > RESYNC + SLACK}
    assert not slow, f"restored later than one resync ({RESYNC}s) + {SLACK}s: {slow}"


def test_stripped_owner_marks_are_restored(chaos_kube: Kube, chaos_batch: Any, operator_factory: Any) -> None:
    ns = chaos_kube.namespace("chaos-marks")
    operator_factory([ns], resync=RESYNC, env=batch_env(chaos_batch))
    chaos_kube.create(ns, "unmarked", spec("v1"))
    converge(chaos_kube, chaos_batch, ns, {"unmarked": "v1"}, timeout=60)
    schedule_id = chaos_kube.get(ns, "unmarked")["status"]["scheduleId"]  # type: ignore[index]
    client = chaos_batch.client()
    try:
        client.update_job_schedule(schedule_id, {"metadata": []})
    finally:
        client.close()
    deadline = time.monotonic() + RESYNC + SLACK
    marks: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = chaos_batch.state()["schedules"].get(schedule_id.lower()) or {}
        marks = {m["name"]: m["value"] for m in found.get("metadata") or []}
        if marks.get(MARK_OWNER) == f"{ns}/unmarked":
            break
        time.sleep(0.2)
    assert marks.get(MARK_OWNER) == f"{ns}/unmarked", f"owner marks not restored: {marks}"
