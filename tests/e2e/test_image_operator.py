"""The operator image, built from this checkout and run as the Deployment runs it, against the local stack.

The image is the repository's ``Dockerfile`` built on the local base image (``devstack.product_images``; built
again only when the operator changed, by a content hash of the build context). The container is started
from the manifests as rendered by ``kubectl kustomize manifests/namespaced`` (the single-namespace install, so
that it serves only this test's namespace on a shared API server): its ``args`` with ``$(POD_NAMESPACE)``
expanded, the ConfigMap's variables, and the Pod's security settings translated into engine flags (user
65532, read-only root file system, ``/tmp`` as a size-limited tmpfs, every capability dropped, no privilege
escalation). What a cluster would provide otherwise is given as close as one machine allows: host networking
with free ports in place of 8080/8000/9443, a kubeconfig file in place of the service account, the
``batchop-credentials`` Secret's variables pointing at the local Batch service and Azurite.

It then drives the image as a user drives the operator: ``batchop blob sync blob/``, ``kubectl apply`` of
``examples/schedule.yaml``, until the resource is Ready and its first job succeeded with the right word counts;
the liveness probe's path answers, the metrics port serves the operator's metrics, and the webhook server
wrote its CA into its ValidatingWebhookConfiguration (``--webhook-service``: only ``caBundle`` is patched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from batchwire import containers
from devstack import product_images
from tests.e2e.test_wordcount import LYRICS, parse_tsv, true_counts
from tests.fixtures.operator import resource_namespace, wait_for

REPO = Path(__file__).resolve().parents[2]
CONTAINER_LABEL = "image-e2e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rendered(kube: Any) -> list[dict[str, Any]]:
    """The single-namespace install as ``kubectl kustomize`` renders it."""
    result = kube.kubectl("kustomize", str(REPO / "manifests" / "namespaced"), check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents if doc["kind"] == kind]
    return found


@dataclass
class PodRun:
    """A Deployment's Pod translated into one engine ``run``: argv parts, env, and where its probes answer."""

    args: list[str]
    env: dict[str, str]
    options: list[str]
    host_ports: dict[str, int] = field(default_factory=dict)
    """containerPort name -> the free host port that replaces it (host network)."""
    probe_path: str = "/healthz"
    probe_port: str = "healthz"


def pod_run(deployment: dict[str, Any], config: dict[str, Any], namespace: str) -> PodRun:
    """The Deployment's container as engine flags; anything it sets that is not translated fails the test."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: (p["containerPort"], _free_port()) for p in container["ports"]}
    args = [a.replace("$(POD_NAMESPACE)", namespace) for a in container["args"]]
    for _name, (inside, outside) in ports.items():
        args = [re.sub(rf"(?<=[:=]){inside}(?=\b)", str(outside), a) for a in args]
    downward = {"metadata.namespace": namespace, "metadata.name": f"batchop-image-e2e-{uuid.uuid4().hex[:8]}"}
    env = dict(config["data"])
    for variable in container.get("env", []):
        path = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        assert path in downward, f"untranslated env {variable}"
        env[variable["name"]] = downward[path]
    pod_security, security = spec["securityContext"], container["securityContext"]
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"  # the engine's default profile
    options = ["--user", f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    options += [f"--cap-drop={cap}" for cap in security["capabilities"]["drop"]]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        size = volumes[mount["name"]]["emptyDir"]["sizeLimit"]  # only emptyDir volumes are expected
        options += ["--tmpfs", f"{mount['mountPath']}:rw,size={size.removesuffix('i').lower()},mode=1777"]
    probe = container["livenessProbe"]["httpGet"]
    assert container["readinessProbe"]["httpGet"] == probe
    run = PodRun(args=args, env=env, options=options, host_ports={k: v[1] for k, v in ports.items()},
                 probe_path=probe["path"], probe_port=probe["port"])
    return run


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture(scope="module")
def operator_image(engine: containers.Engine) -> product_images.BuiltImage:
    started = time.monotonic()
    built = product_images.ensure_operator_image()
    print(f"\noperator image {built.image}: {built.size_mb:g} MB, "
          f"{'built' if built.built else 'cached'} in {time.monotonic() - started:.1f} s")
    return built


@pytest.fixture(scope="module")
def fast_batch(local_batch_factory: Any) -> Any:
    """A local Batch service executing tasks with virtual time 240x (the sample's first job starts at once)."""
    return local_batch_factory("--time-scale", "240")


class OperatorContainer:
    """The operator running from the image; removed on :meth:`stop` (and by label if a run was killed)."""

    def __init__(self, engine: containers.Engine, image: str, run: PodRun, env: dict[str, str],
                 mounts: list[tuple[str, str, bool]]) -> None:
        self.engine = engine
        self.name = f"batchop-image-e2e-{uuid.uuid4().hex[:8]}"
        options = engine.create_options(name=self.name, labels={containers.LABEL: CONTAINER_LABEL}, mounts=mounts,
                                        env_names=sorted(env), network="host") + run.options
        self.argv = engine.run(image, run.args, options=["--detach", *options])
        self.env = {**os.environ, **env}
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        done = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(self.argv)}\n{done.stderr}"

    def logs(self) -> str:
        done = subprocess.run(self.engine.argv("logs", self.name), capture_output=True, text=True, timeout=60,
                              check=False)
        return (done.stdout + done.stderr)[-4000:]

    def inspect(self) -> dict[str, Any]:
        """The engine's view of the container (empty when it does not exist)."""
        done = subprocess.run(self.engine.argv("inspect", "--type", "container", self.name), capture_output=True,
                              text=True, timeout=60, check=False)
        return dict(json.loads(done.stdout)[0]) if done.returncode == 0 else {}

    def stop(self) -> None:
        subprocess.run(self.engine.argv("stop", "-t", "20", self.name), capture_output=True, timeout=60, check=False)
        subprocess.run(self.engine.rm(self.name), capture_output=True, timeout=60, check=False)


@pytest.fixture
def leftovers(engine: containers.Engine) -> Iterator[None]:
    """No container of this test outlives it, also when an earlier run was killed midway."""
    containers.remove_labelled(engine, CONTAINER_LABEL)
    yield
    containers.remove_labelled(engine, CONTAINER_LABEL)


WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def webhook_configuration(documents: list[dict[str, Any]], name: str, marker: str,
                          kind: str = "ValidatingWebhookConfiguration") -> dict[str, Any]:
    """One of the install's webhook configurations under a name of this test's own, selecting no namespace
    (the Service it names has no endpoints here: no write may be routed to it)."""
    body = of_kind(documents, kind)
    body["metadata"]["name"] = name
    for webhook in body["webhooks"]:
        webhook["namespaceSelector"] = {"matchLabels": {"batchop-test/image-e2e": marker}}
    return body


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def test_image_runs_the_operator_as_the_deployment_does(
    kube: Any, azurite: Any, fast_batch: Any, engine: containers.Engine, operator_image: product_images.BuiltImage,
    leftovers: None, tmp_path: Path,
) -> None:
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
           "PYTHONPATH": str(REPO / "operator")}
    synced = subprocess.run([sys.executable, "-m", "batchop", "blob", "sync", str(REPO / "blob")], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert synced.returncode == 0, synced.stderr

    documents = rendered(kube)
    marker = uuid.uuid4().hex[:8]
    config_name = f"batchop-image-e2e-{marker}.azurebatch.dev"
    for kind in WEBHOOK_KINDS:
        applied = kube.kubectl("apply", "-f", "-",
                               input=json.dumps(webhook_configuration(documents, config_name, marker, kind)))
        assert applied.returncode == 0, applied.stderr
    kubeconfig = tmp_path / "kubeconfig"  # readable by uid 65532, as a mounted service-account token is
    shutil.copy(kube.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)
    tmp_path.chmod(0o755)

    logs = ""
    try:
        with resource_namespace(kube, "image") as namespace:
            run = pod_run(of_kind(documents, "Deployment"), of_kind(documents, "ConfigMap"), namespace)
            secret = {"BATCHOP_BATCH_ENDPOINT": fast_batch.endpoint, "BATCHOP_BATCH_ACCOUNT": fast_batch.account,
                      "BATCHOP_BATCH_KEY": fast_batch.key,
                      "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
            env_in = {**run.env, **secret, "KUBECONFIG": "/var/run/batchop/kubeconfig",
                      "BATCHOP_WEBHOOK_CONFIGURATION": config_name}
            container = OperatorContainer(engine, operator_image.image, run, env_in,
                                          [(str(kubeconfig), "/var/run/batchop/kubeconfig", True)])
            try:
                _drive(kube, container, run, namespace, config_name, azurite)
            finally:
                logs = container.logs()
                if not container.inspect().get("State", {}).get("Running"):
                    print(f"the operator container is not running; its log:\n{logs}")
                # the namespace's resources are released while the operator still runs (context exit below)
                kube.kubectl("delete", "bjs", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
                container.stop()
    finally:
        for kind in WEBHOOK_KINDS:
            kube.kubectl("delete", kind.lower(), config_name, "--ignore-not-found")
    assert "sig=" not in logs and fast_batch.key not in logs, "a SAS or key in the operator's log"


def _drive(kube: Any, container: OperatorContainer, run: PodRun, namespace: str, config_name: str,
           azurite: Any) -> None:
    container.start()
    healthz = run.host_ports[run.probe_port]
    wait_for(lambda: http_get(healthz, run.probe_path)[0] == 200, 90, 0.2,
             f"the image's liveness probe on :{healthz}{run.probe_path}; logs:\n{container.logs()}")
    pod_ready = time.monotonic() - container.started
    state = container.inspect()
    assert state["Config"]["User"] == "65532:65532" and state["HostConfig"]["ReadonlyRootfs"] is True
    assert "CAP_NET_BIND_SERVICE" in {c.upper() for c in state["HostConfig"]["CapDrop"] or []} or \
        "ALL" in (state["HostConfig"]["CapDrop"] or []), state["HostConfig"]["CapDrop"]

    applied_at = time.monotonic()
    applied = kube.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "schedule.yaml"))
    assert applied.returncode == 0, applied.stderr

    def get() -> dict[str, Any]:
        return dict(json.loads(kube.kubectl("get", "bjs", "wordcount", "-n", namespace, "-o", "json",
                                            check=True).stdout))

    wait_for(lambda: condition(get(), "Ready").get("status") == "True", 60, 0.3,
             f"Ready=True; operator logs:\n{container.logs()}")
    resource_ready = time.monotonic() - applied_at
    obj = wait_for(lambda: (o := get()) and (o["status"].get("recentJob") or {}).get("result") and o, 150, 1.0,
                   f"the first job's result; operator logs:\n{container.logs()}")
    job_done = time.monotonic() - applied_at
    assert obj["status"]["recentJob"]["result"] == "success", obj["status"]
    job_id, schedule_id = obj["status"]["recentJob"]["id"], obj["status"]["scheduleId"]
    with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        data = blobs.get_blob_client("output", f"{schedule_id}/{job_id}/counts.tsv").download_blob().readall()
    assert dict((w, c) for c, w in parse_tsv(data)) == dict(true_counts(LYRICS.read_text()))

    status, text = http_get(run.host_ports["metrics"], "/metrics")
    assert status == 200 and re.search(r'^batchop_schedule_ready\{[^}]*name="wordcount"[^}]*\} 1\.0$', text, re.M), \
        text[:2000]
    assert "batchop_batch_requests_total" in text
    for kind in WEBHOOK_KINDS:
        webhook = json.loads(kube.kubectl("get", kind.lower(), config_name, "-o", "json", check=True).stdout)
        assert webhook["webhooks"][0]["clientConfig"].get("caBundle"), f"the webhook server registered its CA in {kind}"
    print(f"\nimage {container.name}: liveness answered {pod_ready:.1f} s after start; resource Ready "
          f"{resource_ready:.1f} s after apply; first job succeeded and seen {job_done:.1f} s after apply")
