"""batchop.admission.checks and .webhook: the admission verdicts (on the model's validation), the AdmissionReview
answers (the same as kopf's machinery gives), certificates, the configuration shape."""

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
import jsonpatch
import pytest
import yaml

from batchop.admission import checks, webhook
from batchop.admission.checks import review
from batchop.admission.webhook import CertificateAuthority, WebhookOptions, WebhookRegistrar
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


def test_each_write_calls_one_webhook_the_mutating_one_for_creates_the_validating_one_for_updates() -> None:
    """One admission call per write: a create is judged and mutated in the mutating webhook's call, and called
    again if a later mutating webhook changes it (so what is stored was judged); an update is judged by the
    validating webhook, which sees the object after every mutation."""
    (entry,) = webhook.configuration_body({"url": "https://x/admit"}, hook=webhook.MUTATING)["webhooks"]
    assert entry["rules"][0]["operations"] == ["CREATE"]
    assert entry["reinvocationPolicy"] == "IfNeeded" and entry["sideEffects"] == "None"
    (entry,) = webhook.configuration_body({"url": "https://x/validate"}, hook=webhook.VALIDATING)["webhooks"]
    assert entry["rules"][0]["operations"] == ["UPDATE"]
    assert "reinvocationPolicy" not in entry


def test_local_registrar_uses_the_url_and_handler_path() -> None:
    config = WebhookRegistrar().client_config("https://127.0.0.1:9443", "Q0E=")
    assert config == {"url": "https://127.0.0.1:9443/validate", "caBundle": "Q0E="}
    config = WebhookRegistrar().client_config("https://127.0.0.1:9443", "Q0E=", webhook.MUTATING)
    assert config == {"url": "https://127.0.0.1:9443/admit", "caBundle": "Q0E="}


def test_a_missing_configuration_is_reported_with_what_it_costs_and_the_other_is_still_registered() -> None:
    """In a cluster the shipped configurations are patched; one that is missing (or from manifests that name
    another webhook) does not stop the other from getting its CA bundle, and the error says what the cluster
    is left without."""
    from batchop.kube.client import KubeError

    applied: list[str] = []

    async def apply(self: WebhookRegistrar, client_config: dict[str, Any], hook: webhook.Hook) -> None:
        if hook is webhook.VALIDATING:
            raise KubeError(404, f"{hook.kind} x not found: apply manifests/webhook/")
        applied.append(hook.kind)

    registrar = WebhookRegistrar(service=("batchop-system", "batchop-webhook"))
    registrar.apply = apply.__get__(registrar)  # type: ignore[method-assign]
    with pytest.raises(LookupError) as failed:
        asyncio.run(registrar.register(None, "Q0E="))
    assert applied == ["MutatingWebhookConfiguration"]
    assert "ValidatingWebhookConfiguration x not found" in str(failed.value)
    assert "edits are checked only by the operator" in str(failed.value)


def test_rbac_allows_exactly_the_configurations_the_operator_patches() -> None:
    role = yaml.safe_load((ROOT / "manifests/rbac/common/cluster_role.yaml").read_text())
    rules = [r for r in role["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert rules == [{"apiGroups": ["admissionregistration.k8s.io"],
                      "resources": [hook.plural for hook in webhook.HOOKS],
                      "resourceNames": [webhook.CONFIGURATION_NAME], "verbs": ["get", "patch"]}]


# -- the finalizer at admission ---------------------------------------------------------------------------------


def test_a_new_resource_gets_our_finalizer_beside_its_own() -> None:
    assert checks.finalizers_at_create(resource()) == [FINALIZER]
    assert checks.finalizers_at_create(resource(finalizers=["example.com/keep"])) == ["example.com/keep", FINALIZER]


def test_a_resource_that_has_it_is_left_alone() -> None:
    assert checks.finalizers_at_create(resource(finalizers=[FINALIZER])) is None
    assert checks.finalizers_at_create(None) is None


def _request(obj: dict[str, Any] | None, operation: str = "CREATE", old: dict[str, Any] | None = None,
             resource: str = "batchschedules") -> dict[str, Any]:
    name = (obj or old or {}).get("metadata", {}).get("name", "")
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "azurebatch.dev", "version": "v1alpha1", "kind": "BatchJobSchedule"},
        "resource": {"group": "azurebatch.dev", "version": "v1alpha1", "resource": resource},
        "operation": operation, "object": obj, "oldObject": old, "dryRun": False,
        "userInfo": {"username": "u"}, "namespace": "default", "name": name}}


def _kopf_served(registry: Any, request: dict[str, Any], handler: str) -> dict[str, Any]:
    """The AdmissionReview response kopf's admission machinery gives to ``request`` for ``handler``."""
    return dict(asyncio.run(_kopf_answer(registry, request, handler)))


def _kopf_answer(registry: Any, request: dict[str, Any], handler: str) -> Any:
    """kopf's admission machinery answering ``request`` for ``handler`` (a coroutine)."""
    import kopf
    from kopf._cogs.structs import references
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.engines.indexing import OperatorIndexers
    from kopf._core.reactor.inventory import ResourceMemories

    insights = references.Insights()
    insights.webhook_resources.add(references.Resource(
        "azurebatch.dev", "v1alpha1", "batchschedules", kind="BatchJobSchedule", namespaced=True, preferred=True,
        verbs=["list", "watch", "patch"]))
    return serve_admission_request(request, webhook=handler, settings=kopf.OperatorSettings(), registry=registry,
                                   insights=insights, memories=ResourceMemories(), memobase=object(),
                                   indices=OperatorIndexers().indices)


def _served(plan: ShardPlan | None, request: dict[str, Any], handler: str, *, as_kopf: bool = True) -> dict[str, Any]:
    """The response the operator's server gives (:func:`webhook.answering`), checked (unless not ``as_kopf``)
    against kopf's machinery running the registered handlers for the same request: the same verdict, warnings and
    resulting object."""
    import kopf

    async def kopf_machinery(request: Any, **_: Any) -> Any:
        raise AssertionError("a review of a BatchJobSchedule reached kopf's machinery")

    ours = asyncio.run(webhook.answering(kopf_machinery, plan)(request, webhook=handler))
    if not as_kopf:
        return dict(ours["response"])
    registry = kopf.OperatorRegistry()
    webhook.register_handler(registry, plan)
    kopf_says = _kopf_served(registry, request, handler)
    mine, theirs = ours["response"], kopf_says["response"]
    assert (ours["apiVersion"], ours["kind"]) == (kopf_says["apiVersion"], kopf_says["kind"])
    assert mine["uid"] == theirs["uid"] and mine["allowed"] == theirs["allowed"]
    assert mine.get("status") == theirs.get("status") and mine.get("warnings") == theirs.get("warnings")
    obj = request["request"]["object"]
    assert _patched(obj, mine) == _patched(obj, theirs)
    return dict(mine)


def _ops(response: dict[str, Any]) -> list[dict[str, Any]]:
    import base64

    assert ("patch" in response) == (response.get("patchType") == "JSONPatch")
    return list(json.loads(base64.b64decode(response["patch"]))) if "patch" in response else []


def _patched(obj: dict[str, Any] | None, response: dict[str, Any]) -> dict[str, Any] | None:
    return jsonpatch.apply_patch(obj, _ops(response)) if obj is not None else None


def test_the_mutating_webhook_answers_with_a_json_patch_adding_only_the_finalizer() -> None:
    """The answer the API server reads: its patch adds our finalizer and nothing else, the same object as kopf's
    machinery would give; a bad spec is refused, with the same message as the validating webhook gives, and
    without a patch."""
    response = _served(None, _request(resource()), webhook.MUTATING_HANDLER_ID)
    assert response["allowed"] is True
    assert _patched(resource(), response)["metadata"]["finalizers"] == [FINALIZER]
    assert _patched(resource(), response) == {**resource(), "metadata": {**resource()["metadata"],
                                                                         "finalizers": [FINALIZER]}}
    theirs = resource(finalizers=["example.com/keep"])
    assert _patched(theirs, _served(None, _request(theirs), webhook.MUTATING_HANDLER_ID))["metadata"][
        "finalizers"] == ["example.com/keep", FINALIZER]
    response = _served(None, _request(resource(finalizers=[FINALIZER])), webhook.MUTATING_HANDLER_ID)
    assert response["allowed"] is True and "patch" not in response
    bad = with_change("schedule.recurrenceInterval", "PT5S")
    refused = _served(None, _request(bad), webhook.MUTATING_HANDLER_ID)
    assert refused["allowed"] is False and refused["status"]["code"] == 422 and "patch" not in refused
    assert "spec.schedule.recurrenceInterval" in refused["status"]["message"]
    assert refused["status"] == _served(None, _request(bad), webhook.VALIDATING.handler)["status"]
    warned = resource()
    warned["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://a.blob.core.windows.net/c/x.sh?sv=1&sig=abc", "filePath": "x.sh"}]
    response = _served(None, _request(warned), webhook.MUTATING_HANDLER_ID)
    assert response["allowed"] is True and response["warnings"] == review("CREATE", warned).warnings
    assert _patched(warned, response)["metadata"]["finalizers"] == [FINALIZER]
    # Only creates are mutated. (kopf's machinery would run the handler for any operation: its `operations` only
    # shape the webhook configuration's rules, so the API server never sends it an update.)
    update = _request(resource(), "UPDATE", old=resource())
    assert "patch" not in _served(None, update, webhook.MUTATING_HANDLER_ID, as_kopf=False)


def test_the_validating_webhook_answers_as_the_verdict_says() -> None:
    """Admitted, refused (422 with every error), warned, and the writes that are always admitted: the same answer
    as kopf's machinery gives with the registered handler."""
    assert _served(None, _request(resource()), webhook.HANDLER_ID) == {"uid": "u1", "allowed": True}
    two = with_change("schedule.recurrenceInterval", "PT5S")
    two["spec"]["deletionPolicy"] = "Keep"
    assert len(review("CREATE", two).errors) == 2
    response = _served(None, _request(two), webhook.HANDLER_ID)
    assert response["allowed"] is False and response["status"]["message"] == review("CREATE", two).message
    warned = resource()
    warned["spec"]["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://a.blob.core.windows.net/c/x.sh?sv=1&sig=abc", "filePath": "x.sh"}]
    expected = review("CREATE", warned)
    assert expected.allowed and expected.warnings
    response = _served(None, _request(warned), webhook.HANDLER_ID)
    assert response["allowed"] is True and response["warnings"] == expected.warnings
    renamed = resource()
    renamed["spec"]["scheduleId"] = "other"
    was = resource()
    was["spec"]["scheduleId"] = "first"
    response = _served(None, _request(renamed, "UPDATE", old=was), webhook.HANDLER_ID)
    assert response["allowed"] is False and "spec.scheduleId" in response["status"]["message"]
    deleting = {**two, "metadata": {**two["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert _served(None, _request(deleting, "UPDATE", old=two), webhook.HANDLER_ID)["allowed"] is True
    assert _served(None, _request(None, "DELETE", old=two), webhook.HANDLER_ID)["allowed"] is True


def test_the_mutating_path_of_earlier_manifests_still_adds_the_finalizer_and_judges_nothing() -> None:
    """``/finalize``, the mutating webhook of earlier manifests (their validating webhook judged creates): after an
    upgrade with those configurations in place, new resources still get the finalizer, and a bad spec is still
    refused once, by the validating webhook."""
    bad = with_change("schedule.recurrenceInterval", "PT5S")
    response = _served(None, _request(bad), webhook.LEGACY_MUTATING_HANDLER_ID, as_kopf=False)
    assert response["allowed"] is True and "warnings" not in response
    assert _patched(bad, response)["metadata"]["finalizers"] == [FINALIZER]
    assert _served(None, _request(bad), webhook.HANDLER_ID)["allowed"] is False


def test_requests_the_answer_does_not_know_go_to_kopfs_machinery() -> None:
    """Another resource, a subresource, a request without its user, another webhook path: kopf answers them."""
    passed: list[str | None] = []

    async def kopf_machinery(request: Any, *, webhook: str | None = None, **_: Any) -> Any:
        passed.append(webhook)
        return {"response": {"uid": request["request"]["uid"], "allowed": True}}

    serve = webhook.answering(kopf_machinery)
    other = _request(resource(), resource="configmaps")
    subresource = _request(resource())
    subresource["request"]["subResource"] = "status"
    anonymous = _request(resource())
    del anonymous["request"]["userInfo"]
    for request, path in [(other, webhook.HANDLER_ID), (subresource, webhook.MUTATING_HANDLER_ID),
                          (anonymous, webhook.HANDLER_ID), (_request(resource()), "elsewhere")]:
        asyncio.run(serve(request, webhook=path))
    assert passed == [webhook.HANDLER_ID, webhook.MUTATING_HANDLER_ID, webhook.HANDLER_ID, "elsewhere"]
    assert checks.answer(other, mutating=False) is None
    assert checks.answer({"request": None}, mutating=True) is None


def test_a_check_that_fails_leaves_the_answer_to_kopfs_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a check on some input: kopf's machinery runs the same handler, and answers as it always did
    (refused with code 500), instead of the server failing the call (which the API server would ignore)."""
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a check that fails")

    monkeypatch.setattr(checks.validation, "validate_resource", broken)
    import kopf

    registry = kopf.OperatorRegistry()
    webhook.register_handler(registry)

    async def kopf_machinery(request: Any, *, webhook: str | None = None, **_: Any) -> Any:
        return await _kopf_answer(registry, request, webhook or "")

    request = _request(resource())
    answer = asyncio.run(webhook.answering(kopf_machinery)(request, webhook=webhook.HANDLER_ID))
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["code"] == 500


def test_sharded_the_mutating_webhook_also_writes_the_shard_label() -> None:
    """With a sharded plan the new resource is stored with the label its owner's watch selects on, the same the
    labeller would write; a label already in range is kept, one out of range (more shards before) replaced;
    other labels stay. Each answer gives the object kopf's machinery would."""
    plan = ShardPlan(4, "resource")
    obj = resource()
    want = str(plan.shard(obj))
    assert want == str(shard_of(obj["metadata"]["namespace"], obj["metadata"]["name"], 4))

    stored = _patched(obj, _served(plan, _request(obj), webhook.MUTATING_HANDLER_ID))
    assert stored["metadata"]["labels"] == {LABEL_SHARD: want} and stored["metadata"]["finalizers"] == [FINALIZER]
    labelled = {**obj, "metadata": {**obj["metadata"], "labels": {"team": "a", LABEL_SHARD: "3"}}}
    ops = _ops(_served(plan, _request(labelled), webhook.MUTATING_HANDLER_ID))
    assert not [op for op in ops if "labels" in op["path"]]
    stale = {**obj, "metadata": {**obj["metadata"], "labels": {"team": "a", LABEL_SHARD: "7"}}}
    stored = _patched(stale, _served(plan, _request(stale), webhook.MUTATING_HANDLER_ID))
    assert stored["metadata"]["labels"] == {"team": "a", LABEL_SHARD: want}

    stored = _patched(obj, _served(ShardPlan(1), _request(obj), webhook.MUTATING_HANDLER_ID))
    assert "labels" not in stored["metadata"] and stored["metadata"]["finalizers"] == [FINALIZER]


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
    mutating = handlers[webhook.MUTATING_HANDLER_ID]
    # coroutines: kopf would run a plain function in its thread pool, a thread hop per admission request
    assert all(asyncio.iscoroutinefunction(h.fn) for h in handlers.values())

    bad = with_change("schedule.recurrenceInterval", "PT10S")
    warnings: list[str] = []
    with pytest.raises(kopf.AdmissionError, match=r"spec\.schedule\.recurrenceInterval") as refused:
        asyncio.run(handler.fn(operation="CREATE", body=kopf.Body(bad), old=None, warnings=warnings))
    assert refused.value.code == 422
    asyncio.run(handler.fn(operation="CREATE", body=kopf.Body(resource()), old=None, warnings=warnings))
    with pytest.raises(kopf.AdmissionError, match=r"spec\.schedule\.recurrenceInterval") as refused:
        asyncio.run(mutating.fn(body=kopf.Body(bad), patch=kopf.Patch(), warnings=warnings))
    assert refused.value.code == 422
    patch = kopf.Patch()
    asyncio.run(mutating.fn(body=kopf.Body(resource()), patch=patch, warnings=warnings))
    assert patch.meta["finalizers"] == [FINALIZER]

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
