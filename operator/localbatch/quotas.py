"""The account's limits: core quotas, the active jobs and schedules quota, injected allocation failures.

Azure Batch (service mode) enforces, per account (docs "Batch service quotas and limits"):

- a dedicated core quota for the whole account and one per VM family (``dedicatedCoreQuota``,
  ``dedicatedCoreQuotaPerVMFamily``), and one low-priority (Spot) core quota without families;
- a quota of active jobs and job schedules (default 100-300 per account, at most 1,000; completed
  jobs do not count); creating one more answers ``409 ActiveJobAndScheduleQuotaReached``.

A pool that would exceed a core quota is not refused: it gets the nodes that fit and a
``resizeErrors`` entry, its ``allocationState`` goes ``steady`` (codes of the SDK's
``PoolResizeErrorCodes``: ``AccountCoreQuotaReached`` "The specified account has reached core
quota", ``AccountLowPriorityCoreQuotaReached`` "... low priority core quota", ``AllocationFailed``
"Desired number of nodes could not be allocated", ``UnsupportedVMSize`` "Requested VM size is not
supported."). The ``values`` of a quota error (``VmSize``, ``VmFamily``, ``CoreQuota``) are this
service's: Azure documents no values for it.

Allocation failures are injected per VM size through the admin API (``/_emulator/allocation-failures``):
a pool of that size gets the configured resize error and no node, as when a size is not available
in the region. Every limit can change at run time; :meth:`localbatch.pools.Pools.retry_allocations`
then lets short pools grow, as a resize on Azure does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localbatch import vmsizes
from localbatch.errors import BatchError
from localbatch.store import JSON, Store

QUOTA_KEYS = ("dedicatedCores", "lowPriorityCores", "activeJobsAndSchedules")
FAMILY_KEY = "dedicatedCoresPerVMFamily"
LIVE_STATES = ("active", "disabling", "disabled", "enabling", "terminating")
"""Jobs and schedules in these states count against the active quota (completed ones do not)."""

MESSAGES = {
    "AccountCoreQuotaReached": "The specified account has reached core quota",
    "AccountLowPriorityCoreQuotaReached": "The specified account has reached low priority core quota",
    "AllocationFailed": "Desired number of nodes could not be allocated",
    "UnsupportedVMSize": "Requested VM size is not supported.",
}


def _limit(value: Any, name: str) -> int | None:
    """A quota value from JSON: a non-negative integer, or None (unlimited)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or null (unlimited)")
    return value


@dataclass
class Grant:
    """What an allocation may have: total dedicated and low-priority nodes, and the resize errors."""

    dedicated: int
    low_priority: int
    errors: list[JSON] = field(default_factory=list)


@dataclass
class AccountLimits:
    """The account's quotas (None: unlimited) and the injected allocation failures, by VM size."""

    dedicated_cores: int | None = None
    low_priority_cores: int | None = None
    active_jobs_and_schedules: int | None = None
    dedicated_cores_per_family: dict[str, int] = field(default_factory=dict)
    """Keyed by the family name lower-cased (``standarddsv3family``)."""
    allocation_failures: dict[str, JSON] = field(default_factory=dict)
    """Keyed by the VM size lower-cased: ``{"vmSize", "code", "message"}``."""

    # -- admin API ----------------------------------------------------------------------------------
    def to_json(self) -> JSON:
        return {
            "dedicatedCores": self.dedicated_cores,
            "lowPriorityCores": self.low_priority_cores,
            "activeJobsAndSchedules": self.active_jobs_and_schedules,
            FAMILY_KEY: {_family_name(k): v for k, v in sorted(self.dedicated_cores_per_family.items())},
        }

    def update(self, data: JSON) -> None:
        """Set any subset of the quotas (``null`` clears one); unknown keys are refused."""
        unknown = [k for k in data if k not in (*QUOTA_KEYS, FAMILY_KEY)]
        if unknown:
            raise ValueError(f"unknown quota {unknown[0]!r}; use {', '.join((*QUOTA_KEYS, FAMILY_KEY))}")
        values = {k: _limit(data[k], k) for k in QUOTA_KEYS if k in data}
        families = data.get(FAMILY_KEY)
        if families is not None and not isinstance(families, dict):
            raise ValueError(f"{FAMILY_KEY} must be an object {{family: cores}}")
        parsed = {str(k).lower(): _limit(v, f"{FAMILY_KEY}.{k}") for k, v in (families or {}).items()}
        if "dedicatedCores" in values:
            self.dedicated_cores = values["dedicatedCores"]
        if "lowPriorityCores" in values:
            self.low_priority_cores = values["lowPriorityCores"]
        if "activeJobsAndSchedules" in values:
            self.active_jobs_and_schedules = values["activeJobsAndSchedules"]
        for family, cores in parsed.items():
            if cores is None:
                self.dedicated_cores_per_family.pop(family, None)
            else:
                self.dedicated_cores_per_family[family] = cores

    def add_failure(self, data: JSON) -> JSON:
        """Inject an allocation failure for ``vmSize`` (code default ``AllocationFailed``)."""
        vm_size = data.get("vmSize")
        if not isinstance(vm_size, str) or not vm_size.strip():
            raise ValueError("vmSize is required (for example standard_d2s_v3)")
        code = str(data.get("code") or "AllocationFailed")
        failure = {"vmSize": vm_size, "code": code, "message": str(data.get("message") or MESSAGES.get(code, code))}
        self.allocation_failures[vm_size.strip().lower()] = failure
        return failure

    def clear_failures(self, vm_size: str | None = None) -> None:
        if vm_size:
            self.allocation_failures.pop(vm_size.strip().lower(), None)
        else:
            self.allocation_failures.clear()

    def failures_json(self) -> JSON:
        return {"value": list(self.allocation_failures.values())}

    # -- the active jobs and schedules quota ---------------------------------------------------------
    def check_active(self, store: Store) -> None:
        """Raise 409 ``ActiveJobAndScheduleQuotaReached`` if one more job or schedule would exceed it."""
        quota = self.active_jobs_and_schedules
        if quota is None:
            return
        live = sum(1 for s in store.schedules.values() if s.get("state") in LIVE_STATES)
        live += sum(1 for j in store.jobs.values() if j.get("state") in LIVE_STATES)
        if live >= quota:
            raise BatchError("ActiveJobAndScheduleQuotaReached")

    # -- core quotas ---------------------------------------------------------------------------------
    def grant(self, store: Store, pool_key: str, want_dedicated: int, want_low: int) -> Grant:
        """How many nodes pool ``pool_key`` may have of each kind, counting every other pool's nodes."""
        pool = store.pools[pool_key]
        vm_name = str(pool.get("vmSize") or "")
        have = list(store.nodes.get(pool_key, {}).values())
        have_dedicated = sum(1 for n in have if n.get("isDedicated"))
        have_low = len(have) - have_dedicated
        failure = self.allocation_failures.get(vm_name.strip().lower())
        size = vmsizes.lookup(vm_name)
        if failure is not None or size is None:
            code = failure["code"] if failure else "UnsupportedVMSize"
            error: JSON = {"code": code, "message": failure["message"] if failure else MESSAGES[code]}
            return Grant(have_dedicated, have_low, [error] if want_dedicated + want_low > len(have) else [])
        used_dedicated, used_family, used_low = _usage(store, pool_key, size.family)
        errors: list[JSON] = []
        dedicated = want_dedicated
        for quota, used in ((self.dedicated_cores, used_dedicated),
                            (self.dedicated_cores_per_family.get(size.family.lower()), used_family)):
            if quota is not None and dedicated * size.cores > quota - used:
                dedicated = max(have_dedicated, (quota - used) // size.cores)
                errors = [_quota_error("AccountCoreQuotaReached", size, quota)]
        low = want_low
        if self.low_priority_cores is not None and low * size.cores > self.low_priority_cores - used_low:
            low = max(have_low, (self.low_priority_cores - used_low) // size.cores)
            errors.append(_quota_error("AccountLowPriorityCoreQuotaReached", size, self.low_priority_cores))
        return Grant(max(dedicated, 0), max(low, 0), errors)


def _usage(store: Store, pool_key: str, family: str) -> tuple[int, int, int]:
    """Cores held by the nodes of every pool but ``pool_key``: dedicated, dedicated of ``family``, low."""
    dedicated = in_family = low = 0
    for key, nodes in store.nodes.items():
        if key == pool_key or not nodes:
            continue
        size = vmsizes.lookup(str((store.pools.get(key) or {}).get("vmSize") or ""))
        cores = size.cores if size else 0
        for node in nodes.values():
            if node.get("isDedicated"):
                dedicated += cores
                in_family += cores if size is not None and size.family == family else 0
            else:
                low += cores
    return dedicated, in_family, low


def _quota_error(code: str, size: vmsizes.VmSize, quota: int) -> JSON:
    return {
        "code": code,
        "message": MESSAGES[code],
        "values": [
            {"name": "VmSize", "value": size.name},
            {"name": "VmFamily", "value": size.family},
            {"name": "CoreQuota", "value": str(quota)},
        ],
    }


def _family_name(key: str) -> str:
    """The family's name as the size table spells it (keys are stored lower-cased)."""
    for size in vmsizes.SIZES.values():
        if size.family.lower() == key:
            return size.family
    return key
