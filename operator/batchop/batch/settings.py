"""Operator settings: flags of ``batchop run``, with environment variables as defaults.

| flag | environment | default |
|---|---|---|
| ``--batch-endpoint`` | ``BATCHOP_BATCH_ENDPOINT`` | none (then every object needs ``spec.account``) |
| ``--batch-account`` | ``BATCHOP_BATCH_ACCOUNT`` | the first label of the endpoint's host |
| ``--batch-key`` | ``BATCHOP_BATCH_KEY`` | none: Entra ID (``DefaultAzureCredential``) |
| ``--resync-interval`` | ``BATCHOP_RESYNC_INTERVAL`` | 30 s |
| ``--max-concurrency`` | ``BATCHOP_MAX_CONCURRENCY`` | 8 requests in flight per account |
| ``--requests-per-second`` | ``BATCHOP_REQUESTS_PER_SECOND`` | 20 per account |
| (no flag) | ``BATCHOP_SECRET_CACHE_SECONDS`` | 10 s (a key Batch refuses is read again at once) |
| ``--job-stuck-after`` | ``BATCHOP_JOB_STUCK_AFTER`` | 3600 s of Batch time |
| ``--max-concurrent-reconciles`` | ``BATCHOP_MAX_CONCURRENT_RECONCILES`` | 64 reconciles and deletes at once |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class Settings:
    batch_endpoint: str | None = None
    batch_account: str | None = None
    batch_key: str | None = None
    resync_interval: float = 30.0
    max_concurrency: int = 8
    requests_per_second: float = 20.0
    secret_cache_seconds: float = 10.0
    sync_heartbeat: float = 600.0
    """``status.lastSyncTime`` is refreshed on any change, and otherwise at most this often."""
    sync_heartbeat_rate: float = 2.0
    """...and with at most this many such refreshes (status writes) per second on average, all the resources of
    the process together (with shards: of the replica): above ``sync_heartbeat x sync_heartbeat_rate`` resources
    (1,200) a steady resource's refresh comes less often (every N / 2 seconds), so that resources that do not
    change cost the API server a bounded write rate, not N / 600 writes a second (17 at 10,000)."""
    task_count_refreshes: int = 20
    """How many running jobs per cycle get their task counts refreshed (bounded, see poller)."""
    job_stuck_after: float = 3600.0
    """Seconds of Batch time an active job may wait without a running task before ``Ready`` turns False with
    ``JobStuck`` (Azure allocates an auto pool's nodes in minutes; an hour with no task running is not normal)."""
    max_concurrent_reconciles: int = 64
    """Reconciles and deletes running at once; the others wait in the work queue
    (:mod:`batchop.controller.workqueue`). The default is 8 accounts' worth of the default Batch concurrency
    per account (8), so a burst keeps every account's connections busy; controller-runtime's option of the
    same name defaults to 1."""

    @property
    def default_account(self) -> str | None:
        return self.batch_account or account_from_endpoint(self.batch_endpoint)


def account_from_endpoint(endpoint: str | None) -> str | None:
    """``https://myaccount.westeurope.batch.azure.com`` -> ``myaccount`` (None for IPs/localhost)."""
    if not endpoint:
        return None
    host = urlparse(endpoint).hostname or ""
    if not host or host.replace(".", "").isdigit() or "." not in host:
        return None
    return host.split(".")[0]


DEFAULTS = Settings()
"""Every setting's default (the dataclass's): flags and help texts read them from here."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return float(raw) if raw not in (None, "") else default


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment, with non-None ``overrides`` (flags) winning."""
    env = os.environ if env is None else env
    values: dict[str, object] = {
        "batch_endpoint": env.get("BATCHOP_BATCH_ENDPOINT") or None,
        "batch_account": env.get("BATCHOP_BATCH_ACCOUNT") or None,
        "batch_key": env.get("BATCHOP_BATCH_KEY") or None,
        "resync_interval": _float(env, "BATCHOP_RESYNC_INTERVAL", DEFAULTS.resync_interval),
        "max_concurrency": int(_float(env, "BATCHOP_MAX_CONCURRENCY", DEFAULTS.max_concurrency)),
        "requests_per_second": _float(env, "BATCHOP_REQUESTS_PER_SECOND", DEFAULTS.requests_per_second),
        "secret_cache_seconds": _float(env, "BATCHOP_SECRET_CACHE_SECONDS", DEFAULTS.secret_cache_seconds),
        "job_stuck_after": _float(env, "BATCHOP_JOB_STUCK_AFTER", DEFAULTS.job_stuck_after),
        "max_concurrent_reconciles": int(
            _float(env, "BATCHOP_MAX_CONCURRENT_RECONCILES", DEFAULTS.max_concurrent_reconciles)
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
