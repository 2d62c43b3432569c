"""Unit tests of the local Batch service's account limits, VM sizes, windows and string scalars."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from localbatch import validation, vmsizes, windows
from localbatch.errors import BatchError
from localbatch.quotas import AccountLimits
from localbatch.store import Store


def _pool(store: Store, key: str, vm_size: str, dedicated: int = 0, low: int = 0) -> None:
    store.pools[key] = {"id": key, "vmSize": vm_size, "state": "active"}
    nodes = [True] * dedicated + [False] * low
    store.nodes[key] = {f"{key}-{i}": {"id": f"{key}-{i}", "isDedicated": d} for i, d in enumerate(nodes)}


def test_vm_sizes_match_case_insensitively_with_cores_and_family() -> None:
    size = vmsizes.lookup("STANDARD_d2S_v3")
    assert size is not None and (size.cores, size.family) == (2, "standardDSv3Family")
    assert vmsizes.lookup("Standard_D4_v2").cores == 8  # type: ignore[union-attr]  # Dv2 numbers are not vCPUs
    assert vmsizes.lookup("standard_d2s_v9") is None and vmsizes.lookup(None) is None


def test_grant_counts_other_pools_and_reports_the_binding_quota() -> None:
    store = Store()
    _pool(store, "other", "standard_d4s_v3", dedicated=1)  # 4 dedicated cores of the DSv3 family
    _pool(store, "mine", "standard_d2s_v3")
    limits = AccountLimits(dedicated_cores=10)
    grant = limits.grant(store, "mine", 5, 0)
    assert grant.dedicated == 3 and grant.errors[0]["code"] == "AccountCoreQuotaReached"
    limits.update({"dedicatedCoresPerVMFamily": {"standardDSv3Family": 6}})
    grant = limits.grant(store, "mine", 5, 0)
    assert grant.dedicated == 1
    assert {v["name"]: v["value"] for v in grant.errors[0]["values"]}["CoreQuota"] == "6"
    assert limits.grant(store, "mine", 1, 0).errors == []


def test_grant_low_priority_quota_has_no_families_and_never_shrinks_a_pool() -> None:
    store = Store()
    _pool(store, "mine", "standard_d2s_v3", low=2)
    limits = AccountLimits(low_priority_cores=2, dedicated_cores_per_family={"standarddsv3family": 0})
    grant = limits.grant(store, "mine", 0, 3)
    assert grant.low_priority == 2 and [e["code"] for e in grant.errors] == ["AccountLowPriorityCoreQuotaReached"]


def test_unknown_size_and_injected_failure_grant_no_new_node() -> None:
    store = Store()
    _pool(store, "bad", "standard_x9")
    _pool(store, "busy", "standard_f2s_v2")
    limits = AccountLimits()
    assert limits.grant(store, "bad", 1, 0).errors == [
        {"code": "UnsupportedVMSize", "message": "Requested VM size is not supported."}
    ]
    limits.add_failure({"vmSize": "Standard_F2s_v2"})
    grant = limits.grant(store, "busy", 2, 0)
    assert grant.dedicated == 0 and grant.errors[0]["code"] == "AllocationFailed"
    limits.clear_failures("STANDARD_F2S_V2")
    assert limits.grant(store, "busy", 2, 0).dedicated == 2


@pytest.mark.parametrize("bad", [{"dedicatedCores": -1}, {"dedicatedCores": "4"}, {"nope": 1},
                                 {"dedicatedCoresPerVMFamily": [1]}])
def test_quota_updates_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AccountLimits().update(bad)


def test_active_quota_counts_live_jobs_and_schedules_only() -> None:
    store = Store()
    store.jobs["a"] = {"state": "completed"}
    store.schedules["b"] = {"state": "terminating"}
    limits = AccountLimits(active_jobs_and_schedules=2)
    limits.check_active(store)
    store.jobs["c"] = {"state": "disabled"}
    with pytest.raises(BatchError) as caught:
        limits.check_active(store)
    assert caught.value.code == "ActiveJobAndScheduleQuotaReached" and caught.value.status == 409


def test_completion_keeps_the_state_before_terminating_and_the_etag() -> None:
    store = Store()
    job = {"state": "terminating", "previousState": "active", "previousStateTransitionTime": "t0",
           "stateTransitionTime": "t1", "eTag": "0xABC", "lastModified": "t1", "executionInfo": {}}
    windows.complete(store, job, datetime(2026, 1, 1, tzinfo=UTC))
    assert (job["state"], job["previousState"], job["eTag"], job["lastModified"]) == ("completed", "active",
                                                                                       "0xABC", "t1")
    assert job["executionInfo"]["endTime"].startswith("2026-01-01T00:00:00")


def test_windows_update_is_checked() -> None:
    w = windows.Windows()
    w.update({"terminatingSeconds": 3})
    assert w.to_json() == {"terminatingSeconds": 3.0, "deletingSeconds": 0.0}
    for bad in ({"terminatingSeconds": -1}, {"deletingSeconds": "2"}, {"other": 1}):
        with pytest.raises(ValueError):
            w.update(bad)


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("int", "20", 20), ("int", " -5 ", -5), ("int", "+7", 7), ("bool", "True", True), ("bool", "false", False),
    ("float", "1.5", 1.5), ("float", "2e3", 2000.0),
])
def test_strings_odata_converts_are_accepted(kind: str, text: str, value: Any) -> None:
    assert validation._check_scalar(text, kind, "job.priority") == value


@pytest.mark.parametrize(("kind", "text"), [("int", "1_0"), ("int", "20.0"), ("int", "2147483648"),
                                            ("bool", "1"), ("bool", "yes"), ("float", "abc")])
def test_strings_odata_refuses_are_refused(kind: str, text: str) -> None:
    with pytest.raises(BatchError) as caught:
        validation._check_scalar(text, kind, "job.priority")
    assert caught.value.code == "InvalidPropertyValue"
