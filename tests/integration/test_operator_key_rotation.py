"""Batch account keys rotated as on Azure, and per-resource credentials, with the real parts: the kube-apiserver's
Secrets, a local Batch service of its own (its keys are regenerated here; the session's service is left alone),
the operator as a process.

Rotation (docs/credentials.md, "Rotating the account key"): the Secret is switched to the secondary key, then
the primary is regenerated in "Azure" (``POST /_emulator/keys/regenerate``) at once, while the operator still
holds the primary in its Secret cache. Edits before and after land; Batch's refusal of the cached key makes the
operator read the Secret again at once, so no reconcile fails (no ``AuthenticationFailed`` Event, ``Synced``
stays True), and once the cache time has passed Batch sees no refused request at all.

Two Secrets, one account: each resource is polled with its own key. When one Secret turns wrong, that
resource reports ``AuthenticationFailed`` naming its Secret; the other stays Ready and its poller still works
(a change made behind its back in Batch is put back).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import apply, condition, get, resource, wait_condition

CACHE_SECONDS = 15.0
"""The operator's Secret cache time (``BATCHOP_SECRET_CACHE_SECONDS``) in this module."""
RESYNC = 8.0
"""Long enough that the edit right after the regeneration reaches Batch before the next poll cycle does: the
reconcile, not the poller, is the first to meet the regenerated key (both paths re-read the Secret)."""
LATER = "2099-01-01T00:00:00Z"  # doNotRunUntil: the schedules start no job (credentials are what is tested)


@pytest.fixture(scope="module")
def service(local_batch_factory: Any) -> Any:
    """A local Batch service whose keys these tests regenerate."""
    return local_batch_factory("--no-execute")


@pytest.fixture(scope="module")
def operator(operator_factory: Any, service: Any) -> Any:
    env = {"BATCHOP_SECRET_CACHE_SECONDS": str(CACHE_SECONDS)}
    return operator_factory(["okr-*"], resync=RESYNC, env=env, default_account=False)


@pytest.fixture
def ns(kube: Any, operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "okr") as name:
        yield name


def batch(service: Any) -> Any:
    """An SDK client signing with the secondary key (these tests regenerate only the primary)."""
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    key = service.admin("GET", "keys")["secondary"]
    return BatchClient(service.endpoint, AzureNamedKeyCredential(service.account, key))


def put_secret(kube: Any, ns: str, name: str, account: str, key: str) -> None:
    """Create or replace the Secret as ``kubectl apply`` (or ``kubectl edit``) does."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
              "stringData": {"accountName": account, "accountKey": key}}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(secret), check=True)


def schedule_resource(name: str, service: Any, secret: str) -> dict[str, Any]:
    return resource(name, account={"endpoint": service.endpoint, "credentialsSecretRef": {"name": secret}},
                    schedule={"recurrenceInterval": "PT1H", "doNotRunUntil": LATER})


def edit(kube: Any, ns: str, name: str, priority: int) -> None:
    patch = {"spec": {"jobSpecification": {"priority": priority}}}
    kube.kubectl("patch", "bjs", name, "-n", ns, "--type", "merge", "-p", json.dumps(patch), check=True)


def wait_landed(kube: Any, ns: str, name: str, service: Any, priority: int, timeout: float = 40.0) -> dict[str, Any]:
    """The edit is in Batch and the resource says so (``Synced`` True for its generation)."""

    def landed() -> dict[str, Any] | None:
        obj = get(kube, ns, name) or {}
        status = obj.get("status") or {}
        synced = condition(obj, "Synced")
        if synced.get("status") != "True" or status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        with batch(service) as client:
            spec = client.get_job_schedule(status["scheduleId"]).job_specification
        return obj if spec.priority == priority else None

    return wait_for(landed, timeout, message=f"priority {priority} of {ns}/{name} in Batch, Synced True")


def refused(service: Any) -> int:
    """Requests the service refused with 403 since its counts were reset."""
    return sum(int(entry["byStatus"].get("403", 0)) for entry in service.counts().values())


def warnings(kube: Any, ns: str, reason: str) -> list[dict[str, Any]]:
    result = kube.kubectl("get", "events", "-n", ns, "-o", "json", check=True)
    return [e for e in json.loads(result.stdout)["items"] if e.get("reason") == reason]


def test_rotation_as_on_azure_needs_no_restart_and_fails_no_reconcile(
    kube: Any, ns: str, service: Any, operator: Any
) -> None:
    keys = service.admin("GET", "keys")
    service.reset_counts()
    put_secret(kube, ns, "batch-credentials", service.account, keys["primary"])
    secret_created = time.monotonic()
    for name in ("rot-a", "rot-b"):
        apply(kube, ns, schedule_resource(name, service, "batch-credentials"))
    for name in ("rot-a", "rot-b"):
        wait_condition(kube, ns, name, "Ready", "True", timeout=60)
    edit(kube, ns, "rot-a", 5)
    wait_landed(kube, ns, "rot-a", service, 5)

    polls = service.count("list_job_schedules")
    wait_for(lambda: service.count("list_job_schedules") > polls, RESYNC + 10, message="a poll cycle to end")
    # the runbook: kubectl edit secret (to the secondary key), then az batch account keys renew --key-name primary
    put_secret(kube, ns, "batch-credentials", service.account, keys["secondary"])
    switched = time.monotonic()
    renewed = service.admin("POST", "keys/regenerate", {"keyName": "primary"})
    assert renewed["secondary"] == keys["secondary"] and renewed["primary"] != keys["primary"]
    edit(kube, ns, "rot-b", 7)  # reconciled with the primary still cached: refused once, the Secret read again
    wait_landed(kube, ns, "rot-b", service, 7)
    if switched - secret_created < CACHE_SECONDS - 3:
        # the operator's first read of the Secret came after it was created: its copy still held the primary
        assert refused(service) >= 1, "the operator never used the cached primary after it was regenerated"

    wait_for(lambda: time.monotonic() > switched + CACHE_SECONDS, CACHE_SECONDS + 5, message="the cache time")
    service.reset_counts()
    edit(kube, ns, "rot-a", 9)
    edit(kube, ns, "rot-b", 11)
    wait_landed(kube, ns, "rot-a", service, 9)
    wait_landed(kube, ns, "rot-b", service, 11)
    wait_for(lambda: service.count("list_job_schedules", 200) >= 2, 2 * RESYNC + 10,
             message="poll cycles with the new key")
    assert refused(service) == 0, f"Batch refused requests after the cache time: {service.counts()}"

    assert not warnings(kube, ns, "AuthenticationFailed"), "a reconcile failed during the rotation"
    for name in ("rot-a", "rot-b"):
        obj = get(kube, ns, name)
        assert condition(obj, "Synced")["status"] == "True" and condition(obj, "Ready")["status"] == "True"
    assert operator.alive, "no restart"
    log = operator.logs()
    for key in (keys["primary"], keys["secondary"], renewed["primary"]):
        assert key not in log and key not in json.dumps(get(kube, ns, "rot-a"))


def test_two_secrets_for_one_account_each_resource_uses_its_own(
    kube: Any, ns: str, service: Any, operator: Any
) -> None:
    key = service.admin("GET", "keys")["secondary"]
    put_secret(kube, ns, "team-a", service.account, key)
    put_secret(kube, ns, "team-b", service.account, key)
    apply(kube, ns, schedule_resource("own-a", service, "team-a"))
    apply(kube, ns, schedule_resource("own-b", service, "team-b"))
    a = wait_condition(kube, ns, "own-a", "Ready", "True", timeout=60)
    wait_condition(kube, ns, "own-b", "Ready", "True", timeout=60)

    wrong = base64.b64encode(b"not the account key of this Batch account, 64 bytes long!!!!!!!!").decode()
    put_secret(kube, ns, "team-b", service.account, wrong)  # b's Secret turns wrong; nobody edits b
    b = wait_condition(kube, ns, "own-b", "Synced", "False", "AuthenticationFailed", timeout=CACHE_SECONDS + 30)
    message = condition(b, "Synced")["message"]
    assert f"Secret {ns}/team-b" in message and wrong not in message and key not in message
    assert condition(b, "Ready")["status"] == "False", "Ready follows a failed pass (docs/operator.md)"
    assert warnings(kube, ns, "AuthenticationFailed"), "the refusal is an Event of own-b"

    # a is still polled, with its own key: a change behind its back is noticed and put back
    schedule_id = a["status"]["scheduleId"]
    with batch(service) as client:
        client.disable_job_schedule(schedule_id)

    def enabled_again() -> bool:
        with batch(service) as client:
            return str(client.get_job_schedule(schedule_id).state) in ("active", "BatchJobScheduleState.ACTIVE")

    wait_for(enabled_again, 30, message="own-a's poller to put its schedule back (drift)")
    a = get(kube, ns, "own-a")
    assert condition(a, "Ready")["status"] == "True" and condition(a, "Synced")["status"] == "True"
    assert all(e["involvedObject"]["name"] == "own-b" for e in warnings(kube, ns, "AuthenticationFailed"))

    put_secret(kube, ns, "team-b", service.account, key)  # fixed: b recovers by itself
    wait_condition(kube, ns, "own-b", "Synced", "True", timeout=CACHE_SECONDS + 2 * RESYNC + 30)
    wait_condition(kube, ns, "own-b", "Ready", "True", timeout=2 * RESYNC + 10)
