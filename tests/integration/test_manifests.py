"""manifests/ against the real local kube-apiserver (1.20) with the real kubectl: server dry-run, real apply,
idempotent re-apply with nothing to diff, the hardening fields kept by the server, least-privilege RBAC
checked with ``kubectl auth can-i`` as the operator's ServiceAccount, the namespaced and AKS variants, the
two-replica Deployment with its PodDisruptionBudget and the leader election Lease rights.

The PodDisruptionBudget ships as ``policy/v1`` (Kubernetes 1.21 and later); an API server that serves only
``policy/v1beta1`` (the local 1.20) receives the same object under that version, whose fields are the same
(:func:`for_this_server`): everything else is applied exactly as ``kubectl kustomize`` renders it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import kube as devkube

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "batchop-system"
SA = f"system:serviceaccount:{NAMESPACE}:batchop"
VWC = "batchop.azurebatch.dev"
WEBHOOK_KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
CLUSTER_OBJECTS = ["clusterrole/batchop", "clusterrole/batchop-cluster", "clusterrolebinding/batchop",
                   "clusterrolebinding/batchop-cluster"]


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return devkube.kubectl(kubeconfig, *args, input=input)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"kubectl failed ({result.returncode}): {result.stderr}\n{result.stdout}"
    return result.stdout


def for_this_server(kubeconfig: Path, tree: Path) -> str:
    """``kubectl kustomize tree``, with the PodDisruptionBudget's version lowered to ``policy/v1beta1`` when
    the server does not serve ``policy/v1`` (see the module docstring)."""
    rendered = ok(kubectl(kubeconfig, "kustomize", str(tree)))
    if "policy/v1\n" in ok(kubectl(kubeconfig, "api-versions")):
        return rendered
    return rendered.replace("apiVersion: policy/v1\nkind: PodDisruptionBudget",
                            "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget")


def apply_tree(kubeconfig: Path, tree: Path, *flags: str, verb: str = "apply") -> subprocess.CompletedProcess[str]:
    """``kubectl apply|diff [flags] -k tree``, through :func:`for_this_server`."""
    return kubectl(kubeconfig, verb, *flags, "-f", "-", input=for_this_server(kubeconfig, tree))


@pytest.fixture(scope="module")
def kubeconfig(kube: Any) -> Path:
    return Path(kube.kubeconfig)


@pytest.fixture(scope="module")
def installed(kubeconfig: Path) -> Iterator[str]:
    """``kubectl apply -k manifests/`` once for the module. The cluster is shared with other suites: the
    webhook configuration found before (e.g. registered by an operator under test) is put back afterwards,
    and the cluster-scoped objects the install added are removed (never the CRD: others use it)."""
    saved = []
    for kind in WEBHOOK_KINDS:
        before = kubectl(kubeconfig, "get", kind, VWC, "-o", "json")
        if before.returncode == 0:
            saved.append(json.loads(before.stdout))
    dry_run_before_namespace = apply_tree(kubeconfig, MANIFESTS, "--dry-run=server")
    output = ok(apply_tree(kubeconfig, MANIFESTS))
    try:
        yield output + "\n--- dry run before install ---\n" + dry_run_before_namespace.stdout + \
            dry_run_before_namespace.stderr
    finally:
        for kind in WEBHOOK_KINDS:
            kubectl(kubeconfig, "delete", "--ignore-not-found", kind, VWC)
        kubectl(kubeconfig, "delete", "--ignore-not-found", *CLUSTER_OBJECTS)
        kubectl(kubeconfig, "-n", NAMESPACE, "delete", "--ignore-not-found", "deployment/batchop",
                "service/batchop-webhook", "service/batchop-metrics", "configmap/batchop-config",
                "serviceaccount/batchop", "role/batchop", "rolebinding/batchop", "poddisruptionbudget/batchop",
                "role/batchop-leader-election", "rolebinding/batchop-leader-election")
        for body in saved:
            for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
                body["metadata"].pop(key, None)
            kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(body))


def test_server_dry_run_and_apply(installed: str, kubeconfig: Path) -> None:
    for kind in ("namespace/batchop-system", "customresourcedefinition.apiextensions.k8s.io/batchschedules",
                 "serviceaccount/batchop", "clusterrole.rbac.authorization.k8s.io/batchop",
                 "deployment.apps/batchop", "service/batchop-webhook", "service/batchop-metrics",
                 f"validatingwebhookconfiguration.admissionregistration.k8s.io/{VWC}",
                 f"mutatingwebhookconfiguration.admissionregistration.k8s.io/{VWC}"):
        assert kind in installed
    # On a fresh cluster the dry run cannot place namespaced objects in a namespace that does not exist yet
    # (a kubectl limitation, docs/install.md); every other object passes, and the only errors are that one.
    _, _, dry = installed.partition("--- dry run before install ---")
    errors = [line for line in dry.splitlines() if line.startswith("Error")]
    assert all(f'namespaces "{NAMESPACE}" not found' in line for line in errors), errors
    # Installed (or with the namespace present), the server dry run of the whole tree succeeds.
    out = ok(apply_tree(kubeconfig, MANIFESTS, "--dry-run=server"))
    assert "deployment.apps/batchop" in out and "(server dry run)" in out


def test_second_apply_changes_nothing_and_diff_is_empty(installed: str, kubeconfig: Path) -> None:
    out = ok(apply_tree(kubeconfig, MANIFESTS))
    changed = [line for line in out.splitlines() if line.strip() and not line.endswith(" unchanged")]
    assert not changed, changed
    diff = apply_tree(kubeconfig, MANIFESTS, verb="diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_hardening_survives_the_api_server(installed: str, kubeconfig: Path) -> None:
    deployment = json.loads(ok(kubectl(kubeconfig, "-n", NAMESPACE, "get", "deployment", "batchop", "-o", "json")))
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pod["serviceAccountName"] == "batchop"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # kept by 1.20
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--leader-elect" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}} in \
        container["env"]
    budget = json.loads(ok(kubectl(kubeconfig, "-n", NAMESPACE, "get", "poddisruptionbudget", "batchop", "-o", "json")))
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert container["image"] == "ghcr.io/batchop/batchop:0.1.0"


def test_the_image_is_set_in_one_place() -> None:
    mentions = [p.relative_to(ROOT) for p in MANIFESTS.rglob("*.yaml") if "ghcr.io/batchop/batchop" in p.read_text()]
    assert mentions == [Path("manifests/manager/kustomization.yaml")]


def can_i(kubeconfig: Path, verb: str, resource: str, namespace: str | None = "default",
          name: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource if name is None else f"{resource}/{name}", "--as", SA]
    args += ["-n", namespace] if namespace else []
    result = kubectl(kubeconfig, *args)
    return result.stdout.strip() == "yes"


ALLOWED = [
    ("list", "batchschedules.azurebatch.dev"), ("watch", "batchschedules.azurebatch.dev"),
    ("get", "batchschedules.azurebatch.dev"), ("patch", "batchschedules.azurebatch.dev"),
    ("patch", "batchschedules.azurebatch.dev/status"), ("create", "events"), ("patch", "events"),
    ("get", "secrets"),
]
DENIED = [
    ("update", "batchschedules.azurebatch.dev"), ("delete", "batchschedules.azurebatch.dev"),
    ("create", "batchschedules.azurebatch.dev"), ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"),
    ("get", "configmaps"), ("create", "pods"), ("delete", "events"),
]


LEASES = "leases.coordination.k8s.io"
LEASE = "batchop.azurebatch.dev"


def test_rbac_grants_what_the_operator_uses(installed: str, kubeconfig: Path) -> None:
    for verb, resource in ALLOWED:
        assert can_i(kubeconfig, verb, resource, "some-team"), f"{verb} {resource} should be allowed"
    for verb in ("get", "update"):
        assert can_i(kubeconfig, verb, LEASES, NAMESPACE, LEASE), f"{verb} of the operator's Lease"
    assert can_i(kubeconfig, "create", LEASES, NAMESPACE)  # create cannot be limited by name (RBAC)
    assert can_i(kubeconfig, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    for kind in WEBHOOK_KINDS:
        assert can_i(kubeconfig, "patch", f"{kind}s.admissionregistration.k8s.io", None, VWC)


def test_rbac_grants_nothing_more(installed: str, kubeconfig: Path) -> None:
    for verb, resource in DENIED:
        assert not can_i(kubeconfig, verb, resource, "some-team"), f"{verb} {resource} should be denied"
    for kind in WEBHOOK_KINDS:
        webhooks = f"{kind}s.admissionregistration.k8s.io"
        assert not can_i(kubeconfig, "patch", webhooks, None, "someone-elses-webhook")
        assert not can_i(kubeconfig, "create", webhooks, None)
        assert not can_i(kubeconfig, "delete", webhooks, None, VWC)
    assert not can_i(kubeconfig, "update", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can_i(kubeconfig, "update", LEASES, NAMESPACE, "kube-scheduler")  # only its own Lease
    assert not can_i(kubeconfig, "get", LEASES, NAMESPACE, "someone-elses-lease")
    assert not can_i(kubeconfig, "delete", LEASES, NAMESPACE, LEASE)
    assert not can_i(kubeconfig, "list", LEASES, NAMESPACE)
    assert not can_i(kubeconfig, "create", LEASES, "some-team")  # only in the operator's own namespace


@pytest.mark.parametrize("variant", ["namespaced", "overlays/aks-workload-identity", "overlays/sharded"])
def test_variants_pass_a_server_dry_run(installed: str, kubeconfig: Path, variant: str) -> None:
    out = ok(apply_tree(kubeconfig, MANIFESTS / variant, "--dry-run=server"))
    assert "deployment.apps/batchop" in out
    rendered = ok(kubectl(kubeconfig, "kustomize", str(MANIFESTS / variant)))
    if variant == "namespaced":
        assert "kind: Role\n" in rendered and "--namespace=$(POD_NAMESPACE)" in rendered
        assert "--all-namespaces" not in rendered
    elif variant == "overlays/sharded":
        assert "--shards=6" in rendered
    else:
        assert "azure.workload.identity/client-id" in rendered and 'azure.workload.identity/use: "true"' in rendered


def test_sharded_overlay_grants_exactly_the_leases_its_shards_use(kubeconfig: Path) -> None:
    """The Role of the sharded overlay names every Lease ``--shards N`` makes the operator use, and no other."""
    import yaml

    from batchop.api.names import LEASE_MEMBERS_SUFFIX
    from batchop.controller.election import ElectionConfig
    from batchop.controller.sharding import lease_name

    docs = [d for d in yaml.safe_load_all(ok(kubectl(kubeconfig, "kustomize", str(MANIFESTS / "overlays/sharded"))))
            if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (shards,) = [int(a.split("=", 1)[1]) for a in container["args"] if a.startswith("--shards=")]
    assert "--leader-elect" in container["args"] and deployment["spec"]["replicas"] > 1
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "batchop-leader-election"]
    config = ElectionConfig(identity="x", namespace=deployment["metadata"]["namespace"])
    named = {name: set(rule["verbs"]) for rule in role["rules"] for name in rule.get("resourceNames", [])}
    wanted = {lease_name(config, k, shards) for k in range(shards)}
    assert {n for n, verbs in named.items() if {"get", "update"} <= verbs} == wanted
    assert named[f"{config.name}{LEASE_MEMBERS_SUFFIX}"] >= {"patch"}
    assert any(rule["verbs"] == ["create"] and "resourceNames" not in rule for rule in role["rules"])


def test_workload_identity_overlay_is_what_the_aks_webhook_expects(kubeconfig: Path) -> None:
    """The overlay renders with kubectl's kustomize into what the AKS workload identity webhook acts on: the
    ServiceAccount the Deployment runs as carries ``azure.workload.identity/client-id`` (a client id), the Pod
    template the label ``azure.workload.identity/use: "true"`` (a string), no key is set anywhere, and the
    federated credential docs/credentials.md tells to create names exactly this ServiceAccount."""
    import re

    import yaml

    rendered = ok(kubectl(kubeconfig, "kustomize", str(MANIFESTS / "overlays/aks-workload-identity")))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert 'azure.workload.identity/use: "true"' in rendered  # quoted: the webhook matches the string "true"
    account_name = pod["spec"]["serviceAccountName"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account_name]
    client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", client_id)
    namespace = deployment["metadata"]["namespace"]
    assert account["metadata"]["namespace"] == namespace
    (container,) = pod["spec"]["containers"]
    assert not {e["name"] for e in container.get("env", [])} & {
        "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"}  # the webhook's
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "batchop-config"]
    assert {"BATCHOP_BATCH_ENDPOINT", "BATCHOP_STORAGE_URL"} <= set(config["data"])
    set_here = set(config["data"]) | {e["name"] for e in container.get("env", [])}
    assert not set_here & {"BATCHOP_BATCH_KEY", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CONNECTION_STRING"}
    assert not [d for d in docs if d["kind"] == "Secret"]
    guide = (ROOT / "docs" / "credentials.md").read_text()
    assert f"--subject system:serviceaccount:{namespace}:{account_name}" in guide
    assert "--audiences api://AzureADTokenExchange" in guide and "az identity federated-credential create" in guide
    assert '--issuer "$ISSUER"' in guide and "oidcIssuerProfile.issuerUrl" in guide


def test_operator_fills_the_shipped_webhook_ca_bundle_with_only_its_rights(
    installed: str, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In a cluster the operator patches the caBundle of the shipped configuration (service mode); the exact JSON
    patch is allowed to its ServiceAccount, and afterwards the install still shows no diff."""
    from batchop.admission import webhook

    authority = webhook.CertificateAuthority(tmp_path, ["batchop-webhook.batchop-system.svc"])
    bundle = __import__("base64").b64encode(authority.ca_pem).decode()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registrar = webhook.WebhookRegistrar(service=(NAMESPACE, "batchop-webhook"))
    asyncio.run(registrar.register("https://ignored", bundle))
    for hook in webhook.HOOKS:
        kind = hook.kind.lower()
        stored = json.loads(ok(kubectl(kubeconfig, "get", kind, VWC, "-o", "json")))
        (entry,) = stored["webhooks"]
        assert entry["clientConfig"]["caBundle"] == bundle
        assert entry["clientConfig"]["service"] == {"name": "batchop-webhook", "namespace": NAMESPACE,
                                                    "path": f"/{hook.handler}", "port": 443}
        assert entry["failurePolicy"] == "Ignore" and entry["timeoutSeconds"] == 5
        # The same patch as the operator's ServiceAccount (RBAC: get + patch on these two objects).
        patch = json.dumps([{"op": "test", "path": "/webhooks/0/name", "value": hook.webhook},
                            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}])
        ok(kubectl(kubeconfig, "--as", SA, "patch", kind, VWC, "--type", "json", "-p", patch))
    # caBundle is not in the manifests, so kubectl's three-way diff leaves it alone: still nothing to diff.
    diff = apply_tree(kubeconfig, MANIFESTS, verb="diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr
