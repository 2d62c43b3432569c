"""A real Kubernetes API server on loopback: etcd + kube-apiserver, an admin kubeconfig, the CRDs.

Layout under the state directory ``D`` (one per stack)::

    D/kube/etcd/            etcd data
    D/kube/certs/           kube-apiserver's self-signed serving certificate (it writes it itself)
    D/kube/sa.key, sa.pub   service-account signing key pair (openssl)
    D/kube/tokens.csv       static token file: one admin token in group system:masters
    D/kubeconfig            admin kubeconfig (server https://127.0.0.1:<port>, token auth)

Authorization is RBAC, as on a real cluster: the operator's own RBAC manifests can be checked here.

The API server is also the ServiceAccount token issuer, discoverable as an AKS cluster's OIDC issuer is, so that
workload identity can be exercised against it: ``--service-account-issuer`` is the server's own URL, which
serves ``/.well-known/openid-configuration`` and ``/openid/v1/jwks`` (ServiceAccountIssuerDiscovery, on by
default in 1.20) to anyone, unauthenticated clients included (the ClusterRoleBinding
``service-account-issuer-discovery`` Kubernetes documents for this). A token for Entra ID is then
``kubectl create token SA --audience api://AzureADTokenExchange`` (TokenRequest; at least 10 minutes), issued
by ``https://127.0.0.1:<port>`` with subject ``system:serviceaccount:NS:SA``; clients trust the server's
self-signed certificate through :func:`serving_certificate`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack import kubebuild, ports, procs, system

ETCD = "etcd"
APISERVER = "kube-apiserver"
READY_TIMEOUT = 60.0


class KubeStartError(system.PrerequisiteError):
    """etcd or kube-apiserver did not come up; the message names the log to read."""


@dataclass(frozen=True)
class KubeEndpoints:
    """Where the local API server listens and how to talk to it."""

    server: str
    kubeconfig: Path
    token: str
    etcd_url: str

    @property
    def issuer(self) -> str:
        """The ServiceAccount token issuer: the server itself (see the module docstring)."""
        return self.server


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = False,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``kubectl`` with ``kubeconfig``; returns the CompletedProcess (text mode)."""
    binary = system.kubectl_binary()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([binary, *args], input=input, capture_output=True, text=True, env=env, check=check,
                          timeout=timeout)


def start(state_dir: Path) -> KubeEndpoints:
    """Start etcd and kube-apiserver under ``state_dir`` on free loopback ports; wait for ``/readyz``."""
    etcd_bin = system.etcd_binary()
    apiserver_bin = kubebuild.ensure_kube_apiserver().binary
    kube_dir = state_dir / "kube"
    kube_dir.mkdir(parents=True, exist_ok=True)
    token = _prepare_credentials(kube_dir)

    etcd_port, peer_port = ports.free_port(), ports.free_port()
    etcd_url = f"http://{ports.LOOPBACK}:{etcd_port}"
    etcd_argv = [
        etcd_bin, "--name", "batchop-dev", "--data-dir", str(kube_dir / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://{ports.LOOPBACK}:{peer_port}",
        "--initial-advertise-peer-urls", f"http://{ports.LOOPBACK}:{peer_port}",
        "--initial-cluster", f"batchop-dev=http://{ports.LOOPBACK}:{peer_port}",
        "--log-level", "warn",
    ]
    etcd_proc, etcd_record = procs.start(state_dir, ETCD, etcd_argv)
    if not ports.wait_listening(etcd_port, 20):
        raise KubeStartError(f"etcd did not listen on {etcd_url} within 20 s (exit {etcd_proc.poll()}); "
                             f"see {etcd_record.log}")

    secure_port = ports.free_port()
    apiserver_argv = [
        str(apiserver_bin), "--etcd-servers", etcd_url,
        "--bind-address", ports.LOOPBACK, "--secure-port", str(secure_port),
        "--advertise-address", ports.LOOPBACK,
        "--cert-dir", str(kube_dir / "certs"),
        "--token-auth-file", str(kube_dir / "tokens.csv"),
        "--authorization-mode", "RBAC",
        "--service-account-issuer", f"https://{ports.LOOPBACK}:{secure_port}",
        "--service-account-key-file", str(kube_dir / "sa.pub"),
        "--service-account-signing-key-file", str(kube_dir / "sa.key"),
        "--service-cluster-ip-range", "10.0.0.0/24",
        "--enable-priority-and-fairness=false",
        "--v", "1",
    ]
    api_proc, api_record = procs.start(state_dir, APISERVER, apiserver_argv)
    server = f"https://{ports.LOOPBACK}:{secure_port}"
    _wait_ready(server, token, api_proc, api_record)
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, token, ca=serving_certificate(state_dir))
    publish_issuer(kubeconfig)
    return KubeEndpoints(server=server, kubeconfig=kubeconfig, token=token, etcd_url=etcd_url)


def publish_issuer(kubeconfig: Path) -> None:
    """Let unauthenticated clients read the issuer's discovery document and keys, as an OIDC issuer's readers
    (Entra ID, here the local token service) do: they hold no credential for this cluster."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "service-account-issuer-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
    }
    result = kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(binding))
    if result.returncode != 0:
        raise KubeStartError(f"publishing the ServiceAccount issuer failed: {result.stderr.strip()}")


def serving_certificate(state_dir: Path) -> Path:
    """The API server's self-signed serving certificate (with its CA), written under ``state_dir`` at start:
    the file a client of the issuer's discovery endpoints trusts."""
    return state_dir / "kube" / "certs" / "apiserver.crt"


def _prepare_credentials(kube_dir: Path) -> str:
    """Service-account key pair and a static admin token (reused when the files exist)."""
    openssl = system.openssl_binary()
    key, pub = kube_dir / "sa.key", kube_dir / "sa.pub"
    if not key.exists() or not pub.exists():
        subprocess.run([openssl, "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run([openssl, "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                       capture_output=True)
    tokens = kube_dir / "tokens.csv"
    if tokens.exists():
        return tokens.read_text().split(",", 1)[0]
    token = secrets.token_hex(24)
    tokens.write_text(f'{token},admin,admin,"system:masters"\n')
    tokens.chmod(0o600)
    return token


def _wait_ready(server: str, token: str, process: subprocess.Popen[bytes], record: procs.ProcessRecord) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise KubeStartError(f"kube-apiserver exited with code {process.returncode} while starting; "
                                 f"see {record.log}")
        ok, last = readyz(server, token)
        if ok:
            return
        time.sleep(0.25)
    raise KubeStartError(f"kube-apiserver at {server} not ready within {READY_TIMEOUT:.0f} s ({last}); "
                         f"see {record.log}")


def readyz(server: str, token: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(ready, detail) from GET ``/readyz`` with the admin token (the serving cert is self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except OSError as exc:
        return False, str(exc)


def write_kubeconfig(path: Path, server: str, token: str, *, ca: Path | None = None) -> None:
    """An admin kubeconfig (JSON is valid YAML) for ``server`` with bearer ``token``. With ``ca`` (the server's
    self-signed certificate and its CA, :func:`serving_certificate`) clients verify the server against it as
    ``certificate-authority-data``, as on any cluster: no client skips verification (nor warns that it does)."""
    cluster: dict[str, object] = {"server": server, "insecure-skip-tls-verify": True}
    if ca is not None:
        cluster = {"server": server, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "batchop-dev", "cluster": cluster}],
        "users": [{"name": "batchop-admin", "user": {"token": token}}],
        "contexts": [{"name": "batchop-dev", "context": {"cluster": "batchop-dev", "user": "batchop-admin",
                                                         "namespace": "default"}}],
        "current-context": "batchop-dev",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def crd_files(crd_dir: Path) -> list[Path]:
    """The YAML files in ``crd_dir`` that hold a CustomResourceDefinition (a kustomization.yaml is skipped)."""
    found = []
    for path in sorted([*crd_dir.glob("*.yaml"), *crd_dir.glob("*.yml")]):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue
        if any(isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition" for d in documents):
            found.append(path)
    return found


def apply_crds(kubeconfig: Path, files: Sequence[Path], timeout: float = 60.0) -> list[str]:
    """``kubectl apply`` each CRD file and wait until every CRD is Established; returns the CRD names."""
    names: list[str] = []
    for path in files:
        result = kubectl(kubeconfig, "apply", "-f", str(path), "-o", "name")
        if result.returncode != 0 and "x-kubernetes-validations" in result.stderr:
            # The local kube-apiserver is 1.20: its OpenAPI predates CEL rules (1.23+), so kubectl's client-side
            # schema check refuses the field. The server accepts the CRD (and ignores the rules); newer clusters
            # take the first, validated apply.
            result = kubectl(kubeconfig, "apply", "--validate=false", "-f", str(path), "-o", "name")
        if result.returncode != 0:
            raise system.PrerequisiteError(f"kubectl apply -f {path} failed: {result.stderr.strip()}")
        names += [line.strip() for line in result.stdout.splitlines() if line.strip()]
    crds = [n for n in names if n.startswith("customresourcedefinition")]
    if crds:
        wait_established(kubeconfig, crds, timeout)
    return crds


def wait_established(kubeconfig: Path, crds: Sequence[str], timeout: float = 60.0) -> None:
    """Poll until every CRD in ``crds`` has condition Established=True.

    Not ``kubectl wait``: right after an apply the CRD may have no ``status.conditions`` yet, and kubectl 1.32
    against a 1.20 API server then fails at once ("conditions accessor error") instead of waiting.
    """
    deadline = time.monotonic() + timeout
    pending = list(crds)
    last = ""
    while True:
        result = kubectl(kubeconfig, "get", *pending, "-o", "json")
        if result.returncode == 0:
            document = json.loads(result.stdout)
            items = document.get("items", [document])
            ready = {
                f"customresourcedefinition.apiextensions.k8s.io/{item['metadata']['name']}"
                for item in items
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in item.get("status", {}).get("conditions") or [])
            }
            pending = [name for name in pending if name not in ready]
            if not pending:
                return
            last = f"not yet Established: {', '.join(pending)}"
        else:
            last = result.stderr.strip()
        if time.monotonic() >= deadline:
            raise system.PrerequisiteError(f"CRDs not Established within {timeout:.0f} s ({last})")
        time.sleep(0.2)
