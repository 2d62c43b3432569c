"""The per-object timer poller: the common kopf pattern, kept as a benchmark baseline (NOT a batchop mode).

One ``@kopf.timer`` per ``BatchJobSchedule``: every ``BASELINE_INTERVAL`` seconds (default 30) it GETs the
object's Batch schedule, the schedule's recent job and that job's pool, and patches the object's status with
what it read. That is 3 Batch requests and one Kubernetes write per object per interval, whatever changed:
the cost batchop's one-poller-per-account design (:mod:`batchop.controller.poller`) is measured against in
``bench/economy.py``.

It does not create, edit or delete anything in Batch: the schedules are created by batchop first (the
benchmark stops batchop before it starts this). The schedule id is read from ``status.scheduleId``.

    KUBECONFIG=... BATCHOP_BATCH_ENDPOINT=... BATCHOP_BATCH_ACCOUNT=... BATCHOP_BATCH_KEY=... \\
        kopf run --standalone -n NS bench/baseline/timer_operator.py
"""

from __future__ import annotations

import os
from typing import Any

import kopf
from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

INTERVAL = float(os.environ.get("BASELINE_INTERVAL", "30"))
_client: BatchClient | None = None


def client() -> BatchClient:
    global _client
    if _client is None:
        credential = AzureNamedKeyCredential(os.environ["BATCHOP_BATCH_ACCOUNT"], os.environ["BATCHOP_BATCH_KEY"])
        _client = BatchClient(os.environ["BATCHOP_BATCH_ENDPOINT"], credential)
    return _client


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="baseline.bench")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="baseline.bench")


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if _client is not None:
        await _client.close()


@kopf.timer("azurebatch.dev", "v1alpha1", "batchschedules", interval=INTERVAL)
async def poll(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    """GET schedule, recent job, pool; patch status with them (every tick, changed or not)."""
    schedule_id = (status or {}).get("scheduleId")
    if not schedule_id:
        return
    batch = client()
    try:
        schedule = (await batch.get_job_schedule(schedule_id)).as_dict()
    except ResourceNotFoundError:
        patch.status["state"] = None
        return
    info = schedule.get("executionInfo") or {}
    patch.status["state"] = schedule.get("state")
    patch.status["nextRunTime"] = info.get("nextRunTime")
    recent = (info.get("recentJob") or {}).get("id")
    if not recent:
        return
    try:
        job = (await batch.get_job(recent)).as_dict()
    except ResourceNotFoundError:
        return
    patch.status["recentJob"] = {"id": recent, "state": job.get("state")}
    pool_id = (job.get("executionInfo") or {}).get("poolId")
    if not pool_id:
        return
    try:
        pool = (await batch.get_pool(pool_id)).as_dict()
        patch.status["pool"] = {"id": pool_id, "state": pool.get("state")}
    except ResourceNotFoundError:
        patch.status["pool"] = {"id": pool_id, "state": "deleted"}
