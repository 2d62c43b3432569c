"""Static checks of what ships: the rendered manifests agree with the CLI (every Deployment arg parses with the
real ``batchop`` parser, every ConfigMap key is read by the operator), and the Dockerfile follows its rules."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchop.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_SOURCE = "\n".join(p.read_text() for p in (ROOT / "operator/batchop").rglob("*.py"))

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")


@functools.cache
def render(path: str) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


VARIANTS = ["manifests", "manifests/namespaced", "manifests/overlays/aks-workload-identity", "manifests/overlays/cel"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_args_parse_with_the_real_cli(variant: str) -> None:
    deployment = find(render(variant), "Deployment", "batchop")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "run"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert args.webhook_port == ports["webhook"]
    webhook_service = find(render(variant), "Service", "batchop-webhook")
    assert args.webhook_service == webhook_service["metadata"]["name"]
    assert webhook_service["spec"]["ports"][0]["targetPort"] == "webhook"


def test_only_the_cel_overlay_carries_cel_rules() -> None:
    for variant in VARIANTS:
        (crd,) = [d for d in render(variant) if d["kind"] == "CustomResourceDefinition"]
        assert ("x-kubernetes-validations" in str(crd)) is (variant == "manifests/overlays/cel"), variant


def test_configmap_keys_are_read_by_the_operator() -> None:
    config = find(render("manifests"), "ConfigMap", "batchop-config")
    for key in config["data"]:
        assert f'"{key}"' in OPERATOR_SOURCE, f"{key} is not read anywhere in operator/batchop"


def test_everything_lands_in_one_namespace_and_the_webhook_points_at_its_service() -> None:
    docs = render("manifests")
    namespaced = [d for d in docs if d["kind"] in ("ServiceAccount", "ConfigMap", "Service", "Deployment")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"batchop-system"}
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert {s["namespace"] for b in bindings for s in b["subjects"]} == {"batchop-system"}
    vwc = find(docs, "ValidatingWebhookConfiguration", "batchop.azurebatch.dev")
    assert vwc["webhooks"][0]["clientConfig"]["service"] == {
        "name": "batchop-webhook", "namespace": "batchop-system", "path": "/validate", "port": 443}


def test_dockerfile_rules() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+-slim", base.group(1)), "pinned slim base"
    final = text[text.rfind("\nFROM "):]
    assert re.search(r"^USER 65532", final, re.M), "non-root in the final stage"
    assert "pip install" not in final and "apt-get" not in final, "no build tools in the final stage"
    assert "COPY --from=build /opt/batchop /opt/batchop" in final
    assert 'ENTRYPOINT ["batchop"]' in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1:][:4] == [
        "!pyproject.toml", "!README.md", "!operator/batchop/", "!operator/batchwire/"]
