"""Workload identity end to end on the local stack: AKS's production sign-in path, with no key anywhere.

All parts are real processes:

- kube-apiserver 1.20 (devstack) is the ServiceAccount token issuer, discoverable as an AKS cluster's OIDC issuer
  is: ``--service-account-issuer`` is its own URL, ``/.well-known/openid-configuration`` and ``/openid/v1/jwks``
  are readable without credentials. Tokens come from the TokenRequest API (``kubectl create token``).
- The local Batch service with ``--tls`` is Entra ID (federated identity credentials registered through its
  admin API, as ``az identity federated-credential create`` does in Azure; the token exchange verifies the
  assertion against the issuer's published keys) and Azure Batch (bearer tokens; an identity can be denied
  its role).
- Azurite runs in its OAuth mode (``--oauth basic``, which needs HTTPS): it serves Get User Delegation Key to a
  bearer token and checks the user-delegation SAS that a task of the local Batch service then downloads with.
- The operator is a process with the unmodified azure-identity (``DefaultAzureCredential`` ->
  ``WorkloadIdentityCredential``), azure-batch and azure-storage-blob SDKs.

The operator gets exactly what the AKS webhook injects into a Pod labelled ``azure.workload.identity/use:
"true"`` whose ServiceAccount carries ``azure.workload.identity/client-id``: ``AZURE_CLIENT_ID`` (read back
from the ServiceAccount the overlay renders), ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and
``AZURE_AUTHORITY_HOST`` (here the local service), plus ``SSL_CERT_FILE`` to trust the self-signed certificates.
The token file is maintained as kubelet maintains a projected token volume (:class:`ProjectedToken`). No
``BATCHOP_BATCH_KEY``, no ``AZURE_CLIENT_SECRET``, no credentials Secret, no storage key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from devstack import azurite as azurite_mod
from devstack import kube as devkube
from devstack import ports, procs
from localbatch.tokens import object_id
from tests.fixtures.batch import LocalBatch, start_local_batch
from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import apply, condition, get, patch, resource, wait_condition

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "manifests" / "overlays" / "aks-workload-identity"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
TENANT_ID = "5f0f6bbf-0c37-4a0c-9b4f-2b1c2f7d9e11"
SERVICE_ACCOUNT = "batchop"
ACCESS_TOKEN_SECONDS = 20
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


# -- the parts -------------------------------------------------------------------------------------------------


@dataclass
class IdentityStack:
    """The running parts the tests share, and helpers over the local Entra ID's admin API."""

    kube: Any
    batch: LocalBatch
    issuer: str
    kube_ca: Path
    storage_url: str
    storage_ca: Path
    trust_bundle: Path
    azurite_log: Path
    work: Path
    namespaces: list[str] = field(default_factory=list)

    def federate(self, client_id: str, subject: str, audience: str = EXCHANGE_AUDIENCE) -> None:
        """``az identity federated-credential create --issuer ... --subject ... --audiences ...``, locally."""
        self.batch.admin("POST", "federated-credentials", {
            "clientId": client_id, "issuer": self.issuer, "subject": subject, "audience": audience,
        })

    def sign_ins(self, client_id: str) -> list[dict[str, Any]]:
        return [s for s in self.batch.admin("GET", "entra")["signIns"] if s.get("clientId") == client_id]

    def entra(self, **settings: Any) -> dict[str, Any]:
        return self.batch.admin("POST", "entra", settings)

    def operator_env(self, client_id: str, token_file: Path) -> dict[str, str]:
        """What the AKS webhook sets in the operator's container, pointed at the local Entra ID."""
        return {
            "BATCHOP_BATCH_ENDPOINT": self.batch.endpoint,  # the account, without any key
            "AZURE_CLIENT_ID": client_id,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": self.batch.info_line["tokenAuthority"],
            "SSL_CERT_FILE": str(self.trust_bundle),
        }

    def service_account(self, namespace: str, client_id: str) -> str:
        """The overlay's ServiceAccount, with ``client_id`` in its annotation, applied into ``namespace``;
        returns the client id read back from the cluster (what the webhook would inject)."""
        rendered = self.kube.kubectl("kustomize", str(OVERLAY), check=True).stdout
        import yaml

        (account,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ServiceAccount"]
        account["metadata"]["namespace"] = namespace
        account["metadata"]["annotations"]["azure.workload.identity/client-id"] = client_id
        if namespace not in self.namespaces:
            self.kube.kubectl("create", "namespace", namespace, check=True)
            self.namespaces.append(namespace)
        self.kube.kubectl("apply", "-f", "-", input=json.dumps(account), check=True)
        found = json.loads(self.kube.kubectl("get", "sa", SERVICE_ACCOUNT, "-n", namespace, "-o", "json",
                                             check=True).stdout)
        return str(found["metadata"]["annotations"]["azure.workload.identity/client-id"])


class ProjectedToken:
    """A projected ServiceAccount token volume as kubelet keeps it: each token (TokenRequest, through
    ``kubectl create token``) goes into a new ``..<timestamp>`` directory, the ``..data`` symlink is swapped to it
    atomically, ``azure-identity-token`` points through ``..data`` (kubelet's atomic writer), and the old directory
    is removed. :meth:`start` refreshes it every ``every`` seconds, well before a token expires."""

    def __init__(self, kube: Any, directory: Path, namespace: str, *, audience: str | None = EXCHANGE_AUDIENCE,
                 duration: str = "10m") -> None:
        self.kube = kube
        self.directory = directory
        self.namespace = namespace
        self.audience = audience
        self.duration = duration
        self.path = directory / "azure-identity-token"
        self.written: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def write(self, token: str | None = None) -> dict[str, Any]:
        if token is None:
            args = ["create", "token", SERVICE_ACCOUNT, "-n", self.namespace, "--duration", self.duration]
            args += ["--audience", self.audience] if self.audience else []
            token = self.kube.kubectl(*args, check=True).stdout.strip()
        claims = jwt.decode(token, options={"verify_signature": False})
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        fresh = self.directory / stamp
        fresh.mkdir()
        (fresh / self.path.name).write_text(token)
        link = self.directory / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(stamp)
        data = self.directory / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        os.replace(link, data)
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.path.name}")
        if previous:
            for leftover in (self.directory / previous).iterdir():
                leftover.unlink()
            (self.directory / previous).rmdir()
        self.written.append(claims)
        return claims

    def start(self, every: float) -> ProjectedToken:
        self.write()

        def refresh() -> None:
            while not self._stop.wait(every):
                try:
                    self.write()
                except Exception as exc:  # shown by the test that reads .errors
                    self.errors.append(repr(exc))

        self._thread = threading.Thread(target=refresh, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def _certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 with its own subject: a trust bundle holding two self-signed
    certificates of the same subject (the local service's is CN=localbatch) lets OpenSSL pick the wrong one."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(ports.LOOPBACK))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _start_azurite_oauth(stack_dir: Path, work: Path) -> tuple[str, Path, Path, procs.ProcessRecord]:
    """Azurite's Blob service over HTTPS in OAuth mode (bearer tokens checked for issuer and audience)."""
    cert, key = _certificate(work / "azurite-tls", "azurite-oauth")
    port = ports.free_port()
    argv = [str(azurite_mod.ensure_installed()), "--blobHost", ports.LOOPBACK, "--blobPort", str(port),
            "--location", str(work / "azurite"), "--skipApiVersionCheck", "--disableProductStyleUrl",
            "--oauth", "basic", "--cert", str(cert), "--key", str(key)]
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}
    process, record = procs.start(stack_dir, "azurite-oauth", argv, env=env, stop_timeout=2.0)
    wait_for(lambda: process.poll() is not None or ports.is_listening(port), 30, message="Azurite to listen")
    assert process.poll() is None, Path(record.log).read_text()[-2000:]
    return f"https://{ports.LOOPBACK}:{port}/{azurite_mod.ACCOUNT_NAME}", cert, Path(record.log), record


@pytest.fixture(scope="module")
def stack(kube: Any, stack_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityStack]:
    if kube.external:
        pytest.skip("needs the local kube-apiserver as the token issuer (E2E_KUBECONFIG is set)")
    work = tmp_path_factory.mktemp("workload-identity")
    kube_ca = devkube.serving_certificate(Path(kube.kubeconfig).parent)
    storage_url, storage_ca, azurite_log, azurite_record = _start_azurite_oauth(stack_dir, work)
    # The local service trusts the issuer (to read its keys) and Azurite (tasks download resource files).
    service_bundle = work / "service-trust.pem"
    service_bundle.write_text(kube_ca.read_text() + storage_ca.read_text())
    batch = start_local_batch(work / "localbatch", "--tls", env={"SSL_CERT_FILE": str(service_bundle)})
    try:
        assert batch.certificate and batch.info_line["tokenAuthority"]
        trust = work / "operator-trust.pem"  # the operator trusts the local service and Azurite
        trust.write_text(Path(batch.certificate).read_text() + storage_ca.read_text())
        identity = IdentityStack(kube=kube, batch=batch, issuer=kube.server, kube_ca=kube_ca, storage_url=storage_url,
                                 storage_ca=storage_ca, trust_bundle=trust, azurite_log=azurite_log, work=work)
        yield identity
        for namespace in identity.namespaces:
            kube.kubectl("delete", "namespace", namespace, "--wait=false")
    finally:
        batch.stop()
        procs.stop(stack_dir, azurite_record)


def batch_client(stack: IdentityStack) -> Any:
    """The test's own view of Batch: the unmodified SDK with SharedKey over the same TLS endpoint."""
    return stack.batch.client(connection_verify=stack.batch.certificate)


def _schedule(client: Any, schedule_id: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return client.get_job_schedule(schedule_id)
    except ResourceNotFoundError:
        return None


def _assert_no_secret_in(logs: str, stack: IdentityStack) -> None:
    assert logs, "the operator wrote no log"
    assert stack.batch.key not in logs
    assert not JWT.search(logs), JWT.search(logs)
    assert "SharedKey " not in logs and "sig=" not in logs.replace("sig=REDACTED", "")


# -- the production path ---------------------------------------------------------------------------------------


def test_workload_identity_schedules_created_updated_deleted_through_entra_tokens(
    stack: IdentityStack, kube: Any, operator_factory: Any
) -> None:
    """Create, update and delete through Entra ID tokens exchanged for projected ServiceAccount tokens; access
    tokens live 20 s and the token file is replaced every 10 s, so the run crosses several token lifetimes."""
    sa_namespace = f"wi-sa-{uuid.uuid4().hex[:6]}"
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    stack.entra(accessTokenLifetimeSeconds=ACCESS_TOKEN_SECONDS)
    token = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace).start(every=10)
    stack.batch.reset_counts()
    operator = operator_factory(["wiok-*"], default_account=False, env=stack.operator_env(client_id, token.path))
    for name in ("BATCHOP_BATCH_KEY", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CONNECTION_STRING"):
        assert name not in operator.env
    client = batch_client(stack)
    try:
        with resource_namespace(kube, "wiok") as ns:
            apply(kube, ns, resource("nightly"))
            obj = wait_condition(kube, ns, "nightly", "Synced", "True", timeout=60)
            obj = wait_condition(kube, ns, "nightly", "Ready", "True", timeout=60)
            schedule_id = obj["status"]["scheduleId"]
            created = _schedule(client, schedule_id)
            assert created is not None
            assert {m.name: m.value for m in created.metadata}["azurebatch.dev/uid"] == obj["metadata"]["uid"]

            # Outlive the first access token: the next request needs a fresh exchange.
            first = _granted(stack, client_id)[0]
            wait_for(lambda: len(_granted(stack, client_id)) >= 2 and time.time() > first["at"] + ACCESS_TOKEN_SECONDS,
                     90, message="a second token exchange after the first access token expired")

            patch(kube, ns, "nightly", {"spec": {"jobSpecification": {"jobManagerTask": {
                "id": "main", "commandLine": "/bin/bash -c 'echo updated'"}}}})
            wait_for(lambda: _schedule(client, schedule_id).job_specification.job_manager_task.command_line
                     == "/bin/bash -c 'echo updated'", 60, message="the update in Batch")
            wait_condition(kube, ns, "nightly", "Synced", "True", timeout=30)

            granted = len(_granted(stack, client_id))
            wait_for(lambda: len(_granted(stack, client_id)) > granted, 60, message="one more token exchange")
            kube.kubectl("delete", "bjs", "nightly", "-n", ns, "--wait=false", check=True)
            wait_for(lambda: get(kube, ns, "nightly") is None, 60, message="the resource to be released")
            assert _schedule(client, schedule_id) is None
    finally:
        token.stop()
        client.close()
        operator.stop()

    assert not token.errors, token.errors
    sign_ins = stack.sign_ins(client_id)
    assert len(sign_ins) >= 3, sign_ins
    assert all(s["status"] == 200 and s["grant"] == "federated" for s in sign_ins), sign_ins
    subject = f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}"
    assert {(s["issuer"], s["subject"]) for s in sign_ins} == {(stack.issuer, subject)}
    assert all(s["audiences"] == [EXCHANGE_AUDIENCE] for s in sign_ins)
    written = {(c["iat"], c["exp"]) for c in token.written}
    assert {(s["assertionIssuedAt"], s["assertionExpiresAt"]) for s in sign_ins} <= written  # read from the file
    counts = stack.batch.counts()
    assert counts["create_job_schedule"]["byStatus"] == {"201": 1}, counts
    assert counts.get("update_job_schedule", {}).get("byStatus", {}).get("200", 0) >= 1, counts
    assert counts.get("delete_job_schedule", {}).get("byStatus", {}).get("202", 0) >= 1, counts
    assert not any(code in ("401", "403") for entry in counts.values() for code in entry["byStatus"]), counts
    _assert_no_secret_in(operator.logs(), stack)


def _granted(stack: IdentityStack, client_id: str) -> list[dict[str, Any]]:
    """The client's successful token exchanges, each with ``at`` (seconds since the epoch)."""
    out = []
    for entry in stack.sign_ins(client_id):
        if entry.get("status") == 200:
            out.append({**entry, "at": datetime.fromisoformat(entry["time"]).timestamp()})
    return out


def test_workload_identity_user_delegation_sas_downloaded_by_a_real_task(
    stack: IdentityStack, kube: Any, operator_factory: Any
) -> None:
    """Blob references become user-delegation SAS, minted with the operator's Entra ID token against Azurite in
    OAuth mode; the local Batch service's task downloads the blob with that SAS and reads it."""
    from azure.storage.blob import BlobServiceClient

    container = f"wi-{uuid.uuid4().hex[:8]}"
    with BlobServiceClient(stack.storage_url, credential={"account_name": azurite_mod.ACCOUNT_NAME,
                                                          "account_key": azurite_mod.ACCOUNT_KEY},
                           connection_verify=str(stack.storage_ca)) as uploader:  # the data owner's upload
        uploader.create_container(container).upload_blob("words.txt", b"delegated words")
    sa_namespace = f"wi-sa-{uuid.uuid4().hex[:6]}"
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    token = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace)
    token.write()
    operator = operator_factory(["wiblob-*"], default_account=False, env=stack.operator_env(client_id, token.path))
    client = batch_client(stack)
    try:
        with resource_namespace(kube, "wiblob") as ns:
            body = resource("words", storage={"accountUrl": stack.storage_url})  # no Secret: Entra ID
            task = body["spec"]["jobSpecification"]["jobManagerTask"]
            task["commandLine"] = "/bin/bash -c 'grep -qx \"delegated words\" words.txt'"
            task["resourceFiles"] = [{"blob": {"container": container, "path": "words.txt"}, "filePath": "words.txt"}]
            apply(kube, ns, body)
            obj = wait_condition(kube, ns, "words", "Synced", "True", timeout=90)
            schedule_id = obj["status"]["scheduleId"]
            url = _schedule(client, schedule_id).job_specification.job_manager_task.resource_files[0].http_url
            query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
            assert url.startswith(f"{stack.storage_url}/{container}/words.txt?")
            assert query["skoid"] == object_id(client_id) and query["sktid"] == TENANT_ID  # user delegation
            assert query["sp"] == "r" and query["spr"] == "https" and query["sig"]
            info = wait_for(lambda: _task_done(client, schedule_id), 120, message="the job's task to finish")
            assert info.exit_code == 0 and info.failure_info is None, info
    finally:
        client.close()
        operator.stop()
    downloads = [line for line in stack.azurite_log.read_text().splitlines()
                 if f"GET /{azurite_mod.ACCOUNT_NAME}/{container}/words.txt?" in line]
    assert downloads and all("skoid=" in line and '" 200 ' in line for line in downloads), downloads
    scopes = {s["scope"] for s in stack.sign_ins(client_id) if s["status"] == 200}
    assert scopes == {"https://batch.core.windows.net//.default", "https://storage.azure.com/.default"}, scopes
    _assert_no_secret_in(operator.logs(), stack)


def _task_done(client: Any, schedule_id: str) -> Any:
    for job in client.list_jobs_from_schedule(schedule_id):
        task = client.get_task(job.id, "main")
        if task.state == "completed":
            return task.execution_info
    return None


# -- bad set-ups, each named -----------------------------------------------------------------------------------


@dataclass
class Setup:
    """One way to get workload identity wrong: what the operator is given, and what it must say."""

    reason: str
    says: tuple[str, ...]
    arrange: Callable[[IdentityStack, Any, str], tuple[str, Path]]
    """(stack, kube, ServiceAccount namespace) -> (client id, token file)."""
    repair: Callable[[IdentityStack, str, str], None] | None = None
    """(stack, client id, ServiceAccount namespace): the fix in Azure, after which the operator recovers."""


def _federated(stack: IdentityStack, kube: Any, sa_namespace: str, **token: Any) -> tuple[str, Path]:
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    projected = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace, **token)
    projected.write()
    return client_id, projected.path


def _subject_elsewhere(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    """The credential names the ServiceAccount of the docs (batchop-system/batchop); the operator runs as
    batchop in another namespace."""
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, "system:serviceaccount:batchop-system:batchop")
    projected = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace)
    projected.write()
    return client_id, projected.path


def _add_subject(stack: IdentityStack, client_id: str, sa_namespace: str) -> None:
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")


def _default_audience(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    """A ServiceAccount token for the API server's own audience, not for api://AzureADTokenExchange."""
    return _federated(stack, kube, sa_namespace, audience=None)


def _no_file(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    return client_id, stack.work / f"never-projected-{sa_namespace}" / "azure-identity-token"


def _without_batch_role(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    client_id, path = _federated(stack, kube, sa_namespace)
    denied = set(stack.batch.admin("GET", "entra")["clientsWithoutBatchRole"]) | {client_id}
    stack.entra(clientsWithoutBatchRole=sorted(denied))
    return client_id, path


def _grant_batch_role(stack: IdentityStack, client_id: str, sa_namespace: str) -> None:
    denied = set(stack.batch.admin("GET", "entra")["clientsWithoutBatchRole"]) - {client_id}
    stack.entra(clientsWithoutBatchRole=sorted(denied))


def _expired_token(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    """A token signed with the API server's own ServiceAccount key (a valid signature) that expired an hour ago:
    TokenRequest never issues one, a stale copy of a projected token is one."""
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    context = ssl.create_default_context(cafile=str(stack.kube_ca))
    with urllib.request.urlopen(f"{stack.issuer}/openid/v1/jwks", context=context) as response:
        (published,) = json.loads(response.read())["keys"]
    now = int(time.time())
    claims = {"iss": stack.issuer, "sub": f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}",
              "aud": [EXCHANGE_AUDIENCE], "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    signing_key = (Path(kube.kubeconfig).parent / "kube" / "sa.key").read_text()
    token = jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": published["kid"]})
    projected = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace)
    projected.write(token)
    return client_id, projected.path


def _placeholder_client_id(stack: IdentityStack, kube: Any, sa_namespace: str) -> tuple[str, Path]:
    """The overlay applied without putting the identity's client id in: the placeholder reaches Entra ID."""
    rendered = kube.kubectl("kustomize", str(OVERLAY), check=True).stdout
    placeholder = re.search(r"azure.workload.identity/client-id: (\S+)", rendered)
    assert placeholder is not None
    _, path = _federated(stack, kube, sa_namespace)
    return placeholder.group(1).strip("'\""), path


SETUPS = {
    "subject": Setup("FederatedSubjectMismatch",
                     ("az identity federated-credential create", "--subject system:serviceaccount:{ns}:batchop",
                      "serviceAccountName", "AADSTS700213"),
                     _subject_elsewhere, _add_subject),
    "audience": Setup("FederatedAudienceMismatch",
                      ("audience {issuer}", "api://AzureADTokenExchange", "azure.workload.identity/use",
                       "AADSTS700212"),
                      _default_audience),
    "token-file": Setup("FederatedTokenFileMissing",
                        ("never-projected-{ns}/azure-identity-token", "AZURE_FEDERATED_TOKEN_FILE",
                         'azure.workload.identity/use: "true"', "azure.workload.identity/client-id",
                         "--enable-workload-identity"),
                        _no_file),
    "batch-role": Setup("BatchRoleMissing",
                        ("AuthorizationFailure", "az role assignment create", "Azure Batch Job Submitter"),
                        _without_batch_role, _grant_batch_role),
    "expired-token": Setup("FederatedTokenExpired", ("AADSTS700024", "kubelet"), _expired_token),
    "client-id": Setup("IdentityNotFound",
                       ("00000000-0000-0000-0000-000000000000", "azure.workload.identity/client-id",
                        "az identity show", "AADSTS700016"),
                       _placeholder_client_id),
}


@pytest.mark.parametrize("case", list(SETUPS))
def test_workload_identity_bad_setup_is_named(
    stack: IdentityStack, kube: Any, operator_factory: Any, case: str
) -> None:
    setup = SETUPS[case]
    sa_namespace = f"wi-sa-{uuid.uuid4().hex[:6]}"
    client_id, token_file = setup.arrange(stack, kube, sa_namespace)
    prefix = f"wibad{list(SETUPS).index(case)}"
    operator = operator_factory([f"{prefix}-*"], default_account=False, env=stack.operator_env(client_id, token_file))
    try:
        with resource_namespace(kube, prefix) as ns:
            apply(kube, ns, resource("misconfigured"))
            obj = wait_condition(kube, ns, "misconfigured", "Synced", "False", setup.reason, timeout=60)
            message = condition(obj, "Synced")["message"]
            for fragment in setup.says:
                assert fragment.format(ns=sa_namespace, issuer=stack.issuer) in message, (fragment, message)
            assert condition(obj, "Ready").get("status") != "True"
            if setup.repair is not None:  # fixed in Azure: the operator retries by itself and gets through
                setup.repair(stack, client_id, sa_namespace)
                wait_condition(kube, ns, "misconfigured", "Synced", "True", timeout=90)
            else:  # nothing in Batch, and the operator could never sign in to delete: let the resource go
                operator.stop()
                kube.kubectl("delete", "bjs", "misconfigured", "-n", ns, "--wait=false", check=True)
                with contextlib.suppress(Exception):
                    kube.kubectl("patch", "bjs", "misconfigured", "-n", ns, "--type", "json", "-p",
                                 '[{"op": "remove", "path": "/metadata/finalizers"}]')
    finally:
        operator.stop()
    _assert_no_secret_in(operator.logs(), stack)
