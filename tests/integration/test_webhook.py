"""The validating webhook end to end: ``batchop run --webhook-port`` against the real kube-apiserver 1.20 registers
its ValidatingWebhookConfiguration (generated CA), and ``kubectl apply`` of each class of bad input is refused with
a message naming the field, while good input is admitted."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from batchop.api.names import FINALIZER
from tests.fixtures.operator import wait_for

NAMESPACE = "webhook-test"
CONFIGURATION = "batchop-test-webhook.azurebatch.dev"  # not the shipped name: other suites may register that one

GOOD: dict[str, Any] = {
    "apiVersion": "azurebatch.dev/v1alpha1",
    "kind": "BatchJobSchedule",
    "metadata": {"name": "good", "namespace": NAMESPACE},
    "spec": {
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {
            "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {
                "vmSize": "standard_d2s_v3",
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy",
                                       "sku": "22_04-lts", "version": "latest"},
                    "nodeAgentSKUId": "batch.node.ubuntu 22.04"},
                "targetDedicatedNodes": 1}}},
            "jobManagerTask": {"id": "hello", "commandLine": "/bin/sh -c 'echo hello'"},
        },
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def variant(name: str, path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(GOOD)
    obj["metadata"]["name"] = name
    node = obj["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


@pytest.fixture(scope="module")
def webhook_operator(kube: Any, operator_factory: Callable[..., Any]) -> Iterator[Any]:
    kube.kubectl("create", "namespace", NAMESPACE)
    port = _free_port()
    operator = operator_factory(
        [NAMESPACE],
        args=["--webhook-port", str(port), "--webhook-listen", "127.0.0.1", "--webhook-host", "127.0.0.1",
              "--webhook-configuration", CONFIGURATION],
    )

    def registered() -> bool:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            got = kube.kubectl("get", kind, CONFIGURATION, "-o", "json")
            if got.returncode != 0:
                return False
            (hook,) = json.loads(got.stdout)["webhooks"]
            if not hook["clientConfig"].get("caBundle") or str(port) not in hook["clientConfig"]["url"]:
                return False
        return True

    wait_for(registered, 60, message=f"the operator to register {CONFIGURATION}")
    # Registered is not yet serving: wait until a bad spec is actually refused by the webhook.
    probe = variant("probe", "schedule.recurrenceInterval", "PT5S")
    wait_for(lambda: "denied the request" in apply(kube, probe).stderr, 60, message="the webhook to answer")
    try:
        yield operator
    finally:
        kube.kubectl("-n", NAMESPACE, "delete", "batchschedules", "--all", "--timeout=60s")
        kube.kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")
        kube.kubectl("delete", "mutatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")


def apply(kube: Any, obj: dict[str, Any], *extra: str) -> Any:
    return kube.kubectl("apply", *extra, "-f", "-", input=yaml.safe_dump(obj))


BAD = [
    ("bad duration", "schedule.recurrenceInterval", "every hour", "spec.schedule.recurrenceInterval"),
    ("interval under a minute", "schedule.recurrenceInterval", "PT30S", "at least 1 minute"),
    ("2016 field name", "jobSpecification.poolInfo.autoPoolSpecification.pool.maxTasksPerNode", 2,
     "taskSlotsPerNode"),
    ("2016 field name on a task", "jobSpecification.jobManagerTask.runElevated", True, "userIdentity"),
    ("secret name", "account", {"endpoint": "https://a.westeurope.batch.azure.com",
                                "credentialsSecretRef": {"name": "Not_A_Secret"}},
     "spec.account.credentialsSecretRef.name"),
    ("missing required field", "schedule", None, 'missing required field "schedule"'),
    ("blob reference", "jobSpecification.jobManagerTask.resourceFiles",
     [{"blob": {"container": "UPPER", "path": "run.sh"}, "filePath": "run.sh"}],
     "jobManagerTask.resourceFiles"),
    ("bad blob reference on the release task", "jobSpecification.jobReleaseTask",
     {"commandLine": "x", "resourceFiles": [{"blob": {"container": "input", "path": "x", "prefix": "logs/"}}]},
     "or prefix (every blob under it), not both"),

    ("unknown output placeholder", "jobSpecification.jobManagerTask.outputFiles",
     [{"filePattern": "*.txt", "destination": {"blob": {"container": "out", "path": "{date}/x"}},
       "uploadOptions": {"uploadCondition": "taskcompletion"}}], "unknown placeholder {date}"),
]


@pytest.mark.parametrize(("what", "path", "value", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_at_apply(webhook_operator: Any, kube: Any, what: str, path: str, value: Any,
                                       expected: str) -> None:
    obj = variant(what.replace(" ", "-").replace("2016-", "old-"), path, value)
    if value is None:
        del obj["spec"][path]
    result = apply(kube, obj)
    assert result.returncode != 0, f"{what} was admitted"
    assert expected in result.stderr, result.stderr
    # Refused by the schema or by the webhook, nothing was stored.
    assert kube.kubectl("-n", NAMESPACE, "get", "bjs", obj["metadata"]["name"]).returncode != 0


def test_webhook_is_what_refuses(webhook_operator: Any, kube: Any) -> None:
    """One admission call per write: a create is refused by the mutating webhook (the one that also adds the
    finalizer), an edit by the validating one, with the same message."""
    result = apply(kube, variant("short", "schedule.recurrenceInterval", "PT30S"))
    assert 'admission webhook "admit.batchschedules.azurebatch.dev" denied the request' in result.stderr
    assert "spec.schedule.recurrenceInterval: must be at least 1 minute" in result.stderr
    assert apply(kube, variant("short", "schedule.recurrenceInterval", "PT1H")).returncode == 0
    result = apply(kube, variant("short", "schedule.recurrenceInterval", "PT30S"))
    assert 'admission webhook "validate.batchschedules.azurebatch.dev" denied the request' in result.stderr
    assert "spec.schedule.recurrenceInterval: must be at least 1 minute" in result.stderr


def test_server_dry_run_is_checked_too(webhook_operator: Any, kube: Any) -> None:
    result = apply(kube, variant("dry", "schedule.recurrenceInterval", "PT30S"), "--dry-run=server")
    assert result.returncode != 0 and "denied the request" in result.stderr


def test_good_input_is_admitted_and_schedule_id_is_immutable(webhook_operator: Any, kube: Any) -> None:
    obj = variant("pinned", "scheduleId", "webhook-test-pinned")
    result = apply(kube, obj)
    assert result.returncode == 0, result.stderr
    changed = variant("pinned", "scheduleId", "webhook-test-other")
    result = apply(kube, changed)
    assert result.returncode != 0
    assert "spec.scheduleId: is immutable once set" in result.stderr, result.stderr
    # An ordinary edit of the same object goes through.
    edited = variant("pinned", "suspend", True)
    edited["spec"]["scheduleId"] = "webhook-test-pinned"
    assert apply(kube, edited).returncode == 0


def test_warnings_are_shown_but_admit(webhook_operator: Any, kube: Any) -> None:
    obj = variant("with-sas", "jobSpecification.jobManagerTask.resourceFiles",
                  [{"httpUrl": "https://a.blob.core.windows.net/c/run.sh?sv=2022-11-02&sig=abc", "filePath": "run.sh"}])
    result = apply(kube, obj)
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr and "SAS" in result.stderr


def test_blob_references_on_preparation_and_release_tasks_are_admitted(webhook_operator: Any, kube: Any) -> None:
    obj = variant("prep-release-blobs", "jobSpecification.jobPreparationTask",
                  {"commandLine": "/bin/true", "resourceFiles": [{"blob": {"container": "input", "path": "x.sh"}}]})
    obj["spec"]["jobSpecification"]["jobReleaseTask"] = {
        "commandLine": "/bin/true", "resourceFiles": [{"blob": {"container": "input", "prefix": "cleanup/"}}]}
    result = apply(kube, obj, "--dry-run=server")
    assert result.returncode == 0, result.stderr


def _get(kube: Any, name: str) -> dict[str, Any] | None:
    got = kube.kubectl("-n", NAMESPACE, "get", "bjs", name, "-o", "json", "--show-managed-fields")
    return dict(json.loads(got.stdout)) if got.returncode == 0 else None


def _ready(obj: dict[str, Any] | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def test_a_new_resource_carries_the_finalizer_from_its_create(webhook_operator: Any, kube: Any,
                                                              local_batch: Any) -> None:
    """The mutating webhook puts the finalizer on at admission (a server dry run shows it: no operator write
    can be involved there), and the operator creates the schedule without writing the finalizer itself: no
    manager but the client that created the resource owns ``metadata.finalizers``."""
    obj = variant("finalized", "scheduleId", "webhook-test-finalized")
    dry = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(obj))
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["metadata"]["finalizers"] == [FINALIZER]
    assert apply(kube, obj).returncode == 0
    stored = wait_for(lambda: next((o for o in [_get(kube, "finalized")] if _ready(o)), None), 60,
                      message="the resource to be Ready")
    assert stored["metadata"]["finalizers"] == [FINALIZER]
    assert stored["status"]["scheduleId"] == "webhook-test-finalized"
    owners = [m for m in stored["metadata"]["managedFields"]
              if "f:finalizers" in (m.get("fieldsV1") or {}).get("f:metadata", {})]
    # (the API server of the local stack records admission's own changes under no manager; an operator PATCH
    # would show as an entry of the operator's manager owning f:finalizers, without f:spec)
    assert all("f:spec" in m["fieldsV1"] for m in owners), stored["metadata"]["managedFields"]
    with local_batch.client() as client:
        assert client.get_job_schedule("webhook-test-finalized").id == "webhook-test-finalized"
    assert kube.kubectl("-n", NAMESPACE, "delete", "bjs", "finalized", "--timeout=60s").returncode == 0
    with local_batch.client() as client:
        assert "webhook-test-finalized" not in [s.id for s in client.list_job_schedules()]


def test_a_resource_that_never_reached_batch_is_deleted_at_once(webhook_operator: Any, kube: Any) -> None:
    """Finalized at admission, but its Secret does not exist: deleting it does not wait for credentials. The
    finalizer goes at once, and a Warning names the schedule id nobody looked for."""
    obj = variant("no-secret", "account", {"endpoint": "https://nowhere.westeurope.batch.azure.com",
                                          "credentialsSecretRef": {"name": "no-such-secret"}})
    assert apply(kube, obj).returncode == 0
    stored = _get(kube, "no-secret")
    assert stored is not None and stored["metadata"]["finalizers"] == [FINALIZER]
    wait_for(lambda: ((_get(kube, "no-secret") or {}).get("status") or {}).get("conditions"), 60,
             message="the operator to report the missing Secret")
    assert kube.kubectl("-n", NAMESPACE, "delete", "bjs", "no-secret", "--timeout=30s").returncode == 0
    events = json.loads(kube.kubectl("-n", NAMESPACE, "get", "events", "-o", "json",
                                     "--field-selector", "reason=DeletedUnchecked").stdout)["items"]
    assert [e for e in events if e["involvedObject"]["name"] == "no-secret"
            and "no schedule id was ever recorded" in e["message"]], events
