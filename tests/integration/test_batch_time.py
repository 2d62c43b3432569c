"""Batch time at a time scale above 1: the local service's ``Date`` is its own (virtual) clock, as Azure's ``Date``
is Azure's clock, and the operator's ``JobStuck`` threshold (``--job-stuck-after``, Batch seconds) counts it.

A local Batch service of this module's own at ``--time-scale 60`` (one real second is a Batch minute), read with the
unmodified azure-batch SDK and with the operator's own gateway; one operator process with ``--job-stuck-after 900``
(15 Batch minutes: 15 real seconds here, where a threshold counted in real seconds would take 15 real minutes).

- ``Date`` of answers (success and error alike) lies on the service's clock, also after the clock was moved a month
  forward; SharedKey requests still authenticate then (the service checks the request's ``ocp-date`` against real
  time, as Azure does against its clock, which is real time);
- the gateway's ``batch_now`` (the clock the operator measures waiting on) follows the service's clock;
- a job that cannot run (a pool of 0 nodes) is ``Ready=True`` while it has waited less than the threshold in Batch
  time and ``Ready=False JobStuck`` once more than the threshold has passed in Batch time, never before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from batchop.api import conditions as cond
from batchop.batch.gateway import Gateway
from batchwire import timestamps
from tests.fixtures.operator import resource_namespace, wait_for

SCALE = 60.0
STUCK_AFTER = 900.0  # Batch seconds


@pytest.fixture(scope="module")
def service(local_batch_factory: Any) -> Any:
    return local_batch_factory("--time-scale", f"{SCALE:g}")


def virtual_now(service: Any) -> datetime:
    return datetime.fromisoformat(service.clock()["now"])


def dates_of(service: Any, call: Any) -> list[datetime]:
    """The ``Date`` of every answer to the SDK requests ``call(client)`` sends."""
    seen: list[datetime] = []

    def hook(response: Any) -> None:
        seen.append(parsedate_to_datetime(response.http_response.headers["Date"]))

    with service.client(raw_response_hook=hook) as client:
        with pytest.raises(ResourceNotFoundError):  # an error answer carries Batch's clock too
            client.get_job("no-such-job")
        call(client)
    return seen


def test_date_is_the_services_clock_and_the_sdk_keeps_working_when_it_runs_ahead(service: Any) -> None:
    before = virtual_now(service)
    dates = dates_of(service, lambda client: list(client.list_pools()))
    after = virtual_now(service)
    assert len(dates) == 2
    for date in dates:  # Date has whole seconds: up to one second below the clock read before
        assert before - timedelta(seconds=1) <= date <= after, (before, date, after)

    service.advance("P30D")  # Batch's clock a month ahead of the client's: the SDK does not read Date
    ahead = virtual_now(service)
    dates = dates_of(service, lambda client: list(client.list_pools()))
    assert all(date >= ahead - timedelta(seconds=1) for date in dates)
    assert all(date - datetime.now(ahead.tzinfo) > timedelta(days=29) for date in dates)


def test_the_gateway_measures_on_the_services_clock(service: Any) -> None:
    from azure.core.credentials import AzureNamedKeyCredential

    async def read() -> datetime:
        gateway = Gateway(service.endpoint, AzureNamedKeyCredential(service.account, service.key))
        try:
            await gateway.list_pools()
            return gateway.batch_now()
        finally:
            await gateway.close()

    before = virtual_now(service)
    seen = asyncio.run(read())
    after = virtual_now(service)
    assert before - timedelta(seconds=1) <= seen <= after + timedelta(seconds=SCALE), (before, seen, after)


# -- JobStuck in Batch time ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(operator_factory: Any, service: Any) -> Any:
    return operator_factory(["btime-*"], resync=1.0, env=service.operator_env(), default_account=False,
                            args=["--job-stuck-after", f"{STUCK_AFTER:g}"])


@pytest.fixture
def ns(kube: Any, operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "btime") as name:
        yield name


def waiting_resource(name: str) -> dict[str, Any]:
    """A schedule whose job waits on a pool that asks for no node: nothing runs, and nothing fails either."""
    pool = {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0,
            "virtualMachineConfiguration": {
                "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}
    return {
        "apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": {"name": name},
        "spec": {
            "schedule": {"recurrenceInterval": "P7D"},
            "jobSpecification": {
                "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "bt", "poolLifetimeOption": "job",
                                                       "pool": pool}},
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo never runs'"},
            },
        },
    }


def test_job_stuck_fires_after_the_threshold_in_batch_time(kube: Any, ns: str, service: Any) -> None:
    name = "waits"
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(waiting_resource(name)), check=True)
    waited_while_ready: list[float] = []

    def observe() -> tuple[dict[str, Any], float] | None:
        result = kube.kubectl("get", "bjs", name, "-n", ns, "-o", "json", check=True)
        now = virtual_now(service)  # read after the status: the operator decided at or before this Batch time
        status = json.loads(result.stdout).get("status") or {}
        since = (status.get("recentJob") or {}).get("waitingSince")
        ready = cond.find(status.get("conditions"), cond.READY) or {}
        if not since:
            return None
        waited = (now - timestamps.parse(since)).total_seconds()
        if ready.get("reason") == cond.REASON_JOB_STUCK:
            return ready, waited
        assert ready.get("status") == cond.TRUE, ready
        waited_while_ready.append(waited)
        return None

    # 60 real seconds are one Batch hour: enough for a threshold of 15 Batch minutes, far too short for 15 real ones
    ready, waited = wait_for(observe, 60, 0.5, message=f"{ns}/{name} Ready=False JobStuck")
    assert waited > STUCK_AFTER, f"JobStuck after {waited:.0f} Batch seconds of waiting (threshold {STUCK_AFTER:g})"
    assert waited_while_ready and min(waited_while_ready) < STUCK_AFTER, "seen Ready while the job waited briefly"
    assert "more than 15m00s of Batch time" in ready["message"]
    assert ready["status"] == cond.FALSE
