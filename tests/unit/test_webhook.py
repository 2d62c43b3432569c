"""batchop.admission.webhook: the admission verdicts (on the model's validation), certificates, the configuration
shape."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from batchop.admission import webhook
from batchop.admission.webhook import CertificateAuthority, WebhookOptions, WebhookRegistrar, review
from batchop.api.names import FINALIZER, LABEL_SHARD
from batchop.spec.shardkey import ShardPlan, shard_of

ROOT = Path(__file__).resolve().parents[2]

GOOD_SPEC: dict[str, Any] = {
    "schedule": {"recurrenceInterval": "PT1H"},
    "jobSpecification": {
        "poolInfo": {
            "autoPoolSpecification": {
                "poolLifetimeOption": "job",
                "pool": {
                    "vmSize": "standard_d2s_v3",
                    "virtualMachineConfiguration": {
                        "imageReference": {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy",
                                           "sku": "22_04-lts", "version": "latest"},
                        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                    },
                    "targetDedicatedNodes": 1,
                },
            }
        },
        "jobManagerTask": {"id": "wordcount", "commandLine": "/bin/sh -c 'echo hello'"},
    },
}


def resource(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": "wordcount", "namespace": "default", **metadata},
        "spec": copy.deepcopy(GOOD_SPEC if spec is None else spec),
    }


def with_change(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    obj = resource()
    node = obj["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return obj


def test_good_spec_is_admitted() -> None:
    verdict = review("CREATE", resource())
    assert verdict.allowed, verdict.message


POOL = "jobSpecification.poolInfo.autoPoolSpecification.pool"

BAD_INPUTS = [
    # (what, path to change, value, text the message must contain)
    ("bad duration", "schedule.recurrenceInterval", "1 hour", "spec.schedule.recurrenceInterval"),
    ("interval under a minute", "schedule.recurrenceInterval", "PT30S", "spec.schedule.recurrenceInterval"),
    ("2016 name targetDedicated", f"{POOL}.targetDedicated", 1, "targetDedicatedNodes"),
    ("2016 name maxTasksPerNode", f"{POOL}.maxTasksPerNode", 1, "taskSlotsPerNode"),
    ("2016 name runElevated", "jobSpecification.jobManagerTask.runElevated", True, "userIdentity"),
    ("bad secret name", "account.credentialsSecretRef", {"name": "Batch_Credentials"}, "credentialsSecretRef"),
    ("bad blob reference", "jobSpecification.jobManagerTask.resourceFiles",
     [{"blob": {"container": "Bad_Container!", "path": "x.sh"}, "filePath": "x.sh"}], "resourceFiles[0]"),
    ("bad blob reference on the preparation task", "jobSpecification.jobPreparationTask",
     {"commandLine": "x", "resourceFiles": [{"blob": {"container": "input", "path": "x", "prefix": "y"}}]},
     "spec.jobSpecification.jobPreparationTask.resourceFiles[0].blob: set path (one blob) or prefix"),
    ("output path with {jobId}", "jobSpecification.jobManagerTask.outputFiles",
     [{"filePattern": "*.txt", "destination": {"blob": {"container": "out", "path": "{jobId}/x"}},
       "uploadOptions": {"uploadCondition": "taskcompletion"}}], "{jobId} cannot be filled in"),
    ("bad deletionPolicy", "deletionPolicy", "Keep", "spec.deletionPolicy"),
    ("bad scheduleId", "scheduleId", "has spaces!", "spec.scheduleId"),
]


@pytest.mark.parametrize(("what", "path", "value", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_each_class_of_bad_input_is_refused_naming_the_field(what: str, path: str, value: Any, expected: str) -> None:
    verdict = review("CREATE", with_change(path, value))
    assert not verdict.allowed, what
    assert expected in verdict.message, verdict.message
    assert all(line.startswith("spec") for line in verdict.errors), verdict.errors


def test_missing_required_field_is_refused() -> None:
    verdict = review("CREATE", with_change("jobSpecification", None, delete=True))
    assert not verdict.allowed
    assert "spec.jobSpecification" in verdict.message


def test_bad_annotation_is_refused() -> None:
    verdict = review("CREATE", resource(annotations={"azurebatch.dev/reconcile-policy": "sometimes"}))
    assert not verdict.allowed
    assert "azurebatch.dev/reconcile-policy" in verdict.message


def test_schedule_id_is_immutable_once_set() -> None:
    old = with_change("scheduleId", "nightly")
    new = with_change("scheduleId", "nightly-2")
    verdict = review("UPDATE", new, old)
    assert not verdict.allowed
    assert "spec.scheduleId: is immutable once set" in verdict.message
    removed = resource()
    assert not review("UPDATE", removed, old).allowed
    assert review("UPDATE", copy.deepcopy(old), old).allowed


def test_schedule_id_in_use_cannot_be_changed_by_setting_it() -> None:
    old = resource()
    old["status"] = {"scheduleId": "default_wordcount"}
    assert not review("UPDATE", with_change("scheduleId", "other"), old).allowed
    assert review("UPDATE", with_change("scheduleId", "default_wordcount"), old).allowed
    edited = with_change("suspend", True)
    assert review("UPDATE", edited, old).allowed


def test_metadata_only_updates_and_deletions_are_always_admitted() -> None:
    # An object that is invalid (e.g. stored while the webhook was down) must still lose its finalizer.
    bad = with_change("schedule.recurrenceInterval", "nonsense")
    assert not review("CREATE", bad).allowed
    patched = copy.deepcopy(bad)
    patched["metadata"]["finalizers"] = []
    patched["metadata"]["annotations"] = {"kopf.zalando.org/last-handled-configuration": "{}"}
    assert review("UPDATE", patched, bad).allowed
    deleting = copy.deepcopy(bad)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    deleting["spec"]["suspend"] = True
    assert review("UPDATE", deleting, bad).allowed
    assert review("DELETE", None, bad).allowed


def test_warnings_do_not_refuse() -> None:
    spec = copy.deepcopy(GOOD_SPEC)
    spec["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://a.blob.core.windows.net/c/x.sh?sv=1&sig=abc", "filePath": "x.sh"}]
    verdict = review("CREATE", resource(spec))
    assert verdict.allowed, verdict.message
    assert any("SAS" in w for w in verdict.warnings)


# -- the configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook, file", [(webhook.VALIDATING, "validating_webhook_configuration.yaml"),
                                        (webhook.MUTATING, "mutating_webhook_configuration.yaml")])
def test_shipped_configuration_matches_what_the_operator_registers(hook: webhook.Hook, file: str) -> None:
    shipped = yaml.safe_load((ROOT / "manifests/webhook" / file).read_text())
    registrar = WebhookRegistrar(service=("batchop-system", "batchop-webhook"))
    generated = webhook.configuration_body(registrar.client_config("https://ignored:9443", None, hook), hook=hook)
    assert shipped["kind"] == generated["kind"] == hook.kind
    assert shipped["metadata"]["name"] == generated["metadata"]["name"] == webhook.CONFIGURATION_NAME
    assert shipped["webhooks"] == generated["webhooks"]
    (entry,) = shipped["webhooks"]
    assert entry["failurePolicy"] == "Ignore"
    assert entry["timeoutSeconds"] <= 10
    assert entry["rules"][0]["resources"] == ["batchschedules"]
    assert entry["clientConfig"]["service"]["path"] == f"/{hook.handler}"
    kustomization = yaml.safe_load((ROOT / "manifests/webhook/kustomization.yaml").read_text())
    assert file in kustomization["resources"]


def test_the_mutating_webhook_only_sees_creates() -> None:
    (entry,) = webhook.configuration_body({"url": "https://x/finalize"}, hook=webhook.MUTATING)["webhooks"]
    assert entry["rules"][0]["operations"] == ["CREATE"]
    assert entry["reinvocationPolicy"] == "Never" and entry["sideEffects"] == "None"


def test_local_registrar_uses_the_url_and_handler_path() -> None:
    config = WebhookRegistrar().client_config("https://127.0.0.1:9443", "Q0E=")
    assert config == {"url": "https://127.0.0.1:9443/validate", "caBundle": "Q0E="}
    config = WebhookRegistrar().client_config("https://127.0.0.1:9443", "Q0E=", webhook.MUTATING)
    assert config == {"url": "https://127.0.0.1:9443/finalize", "caBundle": "Q0E="}


def test_rbac_allows_exactly_the_configurations_the_operator_patches() -> None:
    role = yaml.safe_load((ROOT / "manifests/rbac/common/cluster_role.yaml").read_text())
    rules = [r for r in role["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert rules == [{"apiGroups": ["admissionregistration.k8s.io"],
                      "resources": [hook.plural for hook in webhook.HOOKS],
                      "resourceNames": [webhook.CONFIGURATION_NAME], "verbs": ["get", "patch"]}]


# -- the finalizer at admission ---------------------------------------------------------------------------------


def test_a_new_resource_gets_our_finalizer_beside_its_own() -> None:
    assert webhook.finalizers_at_create(resource()) == [FINALIZER]
    assert webhook.finalizers_at_create(resource(finalizers=["example.com/keep"])) == ["example.com/keep", FINALIZER]


def test_a_resource_that_has_it_is_left_alone() -> None:
    assert webhook.finalizers_at_create(resource(finalizers=[FINALIZER])) is None
    assert webhook.finalizers_at_create(None) is None


def _served(registry: Any, obj: dict[str, Any], handler: str) -> dict[str, Any]:
    """The AdmissionReview response kopf's admission machinery gives for a CREATE of ``obj`` to ``handler``."""
    import kopf
    from kopf._cogs.structs import references
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.engines.indexing import OperatorIndexers
    from kopf._core.reactor.inventory import ResourceMemories

    request = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "azurebatch.dev", "version": "v1alpha1", "kind": "BatchJobSchedule"},
        "resource": {"group": "azurebatch.dev", "version": "v1alpha1", "resource": "batchschedules"},
        "operation": "CREATE", "object": obj, "oldObject": None, "dryRun": False,
        "userInfo": {"username": "u"}, "namespace": "default", "name": obj["metadata"]["name"]}}
    insights = references.Insights()
    insights.webhook_resources.add(references.Resource(
        "azurebatch.dev", "v1alpha1", "batchschedules", kind="BatchJobSchedule", namespaced=True, preferred=True,
        verbs=["list", "watch", "patch"]))
    answer = serve_admission_request(request, webhook=handler, settings=kopf.OperatorSettings(), registry=registry,
                                     insights=insights, memories=ResourceMemories(), memobase=object(),
                                     indices=OperatorIndexers().indices)
    return dict(asyncio.run(answer)["response"])


def _ops(response: dict[str, Any]) -> list[dict[str, Any]]:
    import base64

    return list(json.loads(base64.b64decode(response["patch"]))) if "patch" in response else []


def test_the_mutating_handler_answers_with_a_json_patch_adding_only_the_finalizer() -> None:
    """The handler as kopf serves it: the AdmissionReview response's patch adds our finalizer and nothing else,
    and a refused spec is the validating webhook's business (the mutating one admits it unchanged otherwise)."""
    import kopf

    registry = kopf.OperatorRegistry()
    webhook.register_handler(registry)

    response = _served(registry, resource(), webhook.MUTATING_HANDLER_ID)
    assert response["allowed"] is True
    assert _ops(response) == [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
    response = _served(registry, resource(finalizers=[FINALIZER]), webhook.MUTATING_HANDLER_ID)
    assert response["allowed"] is True and "patch" not in response
    bad = with_change("schedule.recurrenceInterval", "PT5S")
    assert _served(registry, bad, webhook.VALIDATING.handler)["allowed"] is False


def test_sharded_the_mutating_handler_also_writes_the_shard_label() -> None:
    """With a sharded plan the new resource is stored with the label its owner's watch selects on, the same the
    labeller would write; a label already in range is kept, one out of range (more shards before) replaced."""
    import kopf

    plan = ShardPlan(4, "resource")
    registry = kopf.OperatorRegistry()
    webhook.register_handler(registry, plan)
    obj = resource()
    want = str(plan.shard(obj))
    assert want == str(shard_of(obj["metadata"]["namespace"], obj["metadata"]["name"], 4))

    ops = _ops(_served(registry, obj, webhook.MUTATING_HANDLER_ID))
    assert {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]} in ops
    assert {"op": "add", "path": "/metadata/labels", "value": {LABEL_SHARD: want}} in ops
    labelled = {**obj, "metadata": {**obj["metadata"], "labels": {"team": "a", LABEL_SHARD: "3"}}}
    assert not [op for op in _ops(_served(registry, labelled, webhook.MUTATING_HANDLER_ID)) if "labels" in op["path"]]
    stale = {**obj, "metadata": {**obj["metadata"], "labels": {"team": "a", LABEL_SHARD: "7"}}}
    ops = _ops(_served(registry, stale, webhook.MUTATING_HANDLER_ID))
    assert [op for op in ops if "labels" in op["path"]] == [
        {"op": "replace", "path": f"/metadata/labels/{LABEL_SHARD.replace('/', '~1')}", "value": want}]

    unsharded = kopf.OperatorRegistry()
    webhook.register_handler(unsharded, ShardPlan(1))
    assert _ops(_served(unsharded, obj, webhook.MUTATING_HANDLER_ID)) == [
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]


def test_shard_plan_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="shards: 0"):
        ShardPlan(0)
    with pytest.raises(ValueError, match="shard by 'zone'"):
        ShardPlan(2, "zone")


# -- certificates -----------------------------------------------------------------------------------------------


def test_generated_certificate_serves_https_trusted_by_the_ca_bundle(tmp_path: Path) -> None:
    server = webhook.build_server(WebhookOptions(port=0, listen="127.0.0.1", host="127.0.0.1", cert_dir=tmp_path))
    server.port = None  # a free port

    async def answer(request: Any, **_: Any) -> dict[str, Any]:
        return {"echo": request}

    async def main() -> dict[str, Any]:
        calls: list[tuple[str, str | None]] = []

        async def fake_register(url: str, ca_bundle: str | None) -> None:
            calls.append((url, ca_bundle))

        server.registrar.register = fake_register  # type: ignore[method-assign]
        generator = server(answer)
        config = await generator.__anext__()
        try:
            assert calls and calls[0][0] == config["url"]
            cafile = webhook.ca_bundle_of(config)
            assert cafile is not None and b"BEGIN CERTIFICATE" in cafile
            context = ssl.create_default_context(cadata=cafile.decode())
            async with aiohttp.ClientSession() as session, session.post(
                f"{config['url']}/validate", data=json.dumps({"x": 1}), ssl=context
            ) as response:
                assert response.status == 200
                return dict(await response.json())
        finally:
            await generator.aclose()

    assert asyncio.run(main()) == {"echo": {"x": 1}}


def test_certificate_is_renewed_when_a_third_of_its_life_is_left(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path, ["batchop-webhook.ns.svc"], lifetime=dt.timedelta(days=3))
    assert authority.renew_if_due()
    first = authority.files.bundle.read_bytes()
    assert not authority.renew_if_due()
    assert authority.files.bundle.read_bytes() == first
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=1)
    assert authority.renew_if_due(later)
    assert authority.files.bundle.read_bytes() != first
    assert (authority.files.bundle.stat().st_mode & 0o777) == 0o600
    # The CA does not change with the serving certificate: the registered caBundle stays valid.
    assert authority.files.ca.read_bytes() == authority.ca_pem


def test_mounted_certificates_are_used_as_given(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path / "gen", ["127.0.0.1"])
    authority.issue()
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / "tls.crt").write_bytes(authority.files.bundle.read_bytes())
    (mounted / "tls.key").write_bytes(authority.files.bundle.read_bytes())
    (mounted / "ca.crt").write_bytes(authority.ca_pem)
    server = webhook.build_server(WebhookOptions(port=9443, cert_dir=mounted))
    assert server.authority is None
    assert server.certfile == mounted / "tls.crt" and server.cafile == mounted / "ca.crt"


def test_service_mode_needs_a_namespace() -> None:
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        webhook.build_server(WebhookOptions(port=9443, service="batchop-webhook"))


def test_install_registers_the_handler_and_the_server(tmp_path: Path) -> None:
    import kopf

    registry = kopf.OperatorRegistry()
    assert webhook.install(registry, WebhookOptions(port=0)) is None  # disabled: nothing registered
    assert not registry._webhooks.get_all_handlers()

    server = webhook.install(registry, WebhookOptions(port=9443, cert_dir=tmp_path))
    assert server is not None and server.port == 9443
    handlers = {h.id: h for h in registry._webhooks.get_all_handlers()}
    assert set(handlers) == {webhook.HANDLER_ID, webhook.MUTATING_HANDLER_ID}
    handler = handlers[webhook.HANDLER_ID]
    assert handler.ignore_failures and set(handler.operations or ()) == {"CREATE", "UPDATE"}
    assert handlers[webhook.MUTATING_HANDLER_ID].ignore_failures
    assert set(handlers[webhook.MUTATING_HANDLER_ID].operations or ()) == {"CREATE"}
    # coroutines: kopf would run a plain function in its thread pool, a thread hop per admission request
    assert all(asyncio.iscoroutinefunction(h.fn) for h in handlers.values())

    bad = with_change("schedule.recurrenceInterval", "PT10S")
    warnings: list[str] = []
    with pytest.raises(kopf.AdmissionError, match=r"spec\.schedule\.recurrenceInterval") as refused:
        asyncio.run(handler.fn(operation="CREATE", body=kopf.Body(bad), old=None, warnings=warnings))
    assert refused.value.code == 422
    asyncio.run(handler.fn(operation="CREATE", body=kopf.Body(resource()), old=None, warnings=warnings))

    settings = kopf.OperatorSettings()
    (startup,) = registry._activities.get_all_handlers()
    startup.fn(settings=settings)
    assert settings.admission.server is server and settings.admission.managed is None


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@pytest.mark.skipif(SERVICE_ACCOUNT_TOKEN.exists(), reason="in a pod the service account wins over KUBECONFIG")
def test_the_registrar_hands_the_client_kopfs_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchop.kube.client import KubeClient

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = KubeClient(webhook.kube_login())
    assert client.server == "https://127.0.0.1:6443"
    assert client._headers() == {"Authorization": "Bearer t0ken"}


@pytest.mark.skipif(SERVICE_ACCOUNT_TOKEN.exists(), reason="in a pod the service account is always there")
def test_no_credentials_is_a_kube_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchop.kube.client import KubeError

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    with pytest.raises(KubeError, match="no Kubernetes credentials"):
        webhook.kube_login()


def test_a_generated_certificate_directory_goes_with_the_process() -> None:
    """Without --webhook-cert-dir the CA and its private key live in a temporary directory, removed when the
    process exits."""
    import subprocess
    import sys

    code = ("from batchop.admission.webhook import build_server, WebhookOptions\n"
            "server = build_server(WebhookOptions(port=0, listen='127.0.0.1', host='127.0.0.1'))\n"
            "print(server.authority.directory)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})
    directory = Path(result.stdout.strip().splitlines()[-1])
    assert directory.name.startswith("batchop-webhook-")
    assert not directory.exists()
