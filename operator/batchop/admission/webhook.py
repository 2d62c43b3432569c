"""Admission for BatchJobSchedule, served by the operator on kopf's webhook server, one call per write:

- a create goes to the mutating webhook (``/admit``): it refuses a bad spec, and puts the operator's finalizer
  on the new resource (:func:`batchop.admission.checks.finalizers_at_create`) and, when the replicas run
  sharded, its shard label (:meth:`batchop.spec.shardkey.ShardPlan.label_at_create`);
- an update goes to the validating webhook (``/validate``), which refuses a bad spec.

Why the verdict on a create is the mutating webhook's: each admission call is an HTTPS round trip the client's
create waits for, and in a creation burst the second call per new resource cost the API server and the
operator more CPU than the verdict itself (docs/performance.md, eleventh pass). A mutating webhook may refuse a
write; ``reinvocationPolicy: IfNeeded`` has the API server call it again when a later mutating webhook changes
the object, so what it judged is what is stored. Updates need no mutation, and a validating webhook sees the
object after every mutation, so they keep the validating one. ``/finalize``, the path of the mutating webhook
in earlier manifests (finalizer and label only, creates were judged by the validating one), is still answered,
so an upgrade with the old configurations in place loses nothing.

What is checked (:func:`batchop.admission.checks.review`): everything
:func:`batchop.spec.validation.validate_resource` checks
(durations, required fields, types, 2016 field names with their modern replacement, blob references,
Secret names, the batchop annotations), plus what needs the old object: ``spec.scheduleId`` is immutable
once set or once a schedule id is in use (``status.scheduleId``). Messages name the field:
``spec.jobSpecification...targetDedicated: 'targetDedicated' was renamed ...``. Warnings (legal but likely
wrong) are returned as admission warnings, which kubectl prints. Writes that do not change the spec
(finalizers, kopf's annotations, labels) and writes to an object being deleted are always admitted, so
admission can never leave a finalizer stuck. A refused create gets no patch.

Why ``failurePolicy: Ignore`` (and ``timeoutSeconds: 5``): the rules match only ``batchschedules``, so no
other write in the cluster ever waits on batchop; and when the operator is down, edits and finalizer
removals of BatchJobSchedules still go through. Nothing unsafe gets past: the operator runs the same
validation before any Azure call and reports a bad spec as ``Synced=False`` reason ``InvalidSpec``.

Serving (:func:`install`, from ``batchop run --webhook-port``): kopf's :class:`kopf.WebhookServer` with a
certificate batchop generates (:class:`CertificateAuthority`: a private CA kept only in the Pod, a serving
certificate renewed when a third of its life is left; kopf reloads changed files by itself) or one
mounted from cert-manager (``--webhook-cert-dir`` with ``tls.crt``, ``tls.key``, ``ca.crt``). Each time the
server (re)starts, :class:`WebhookRegistrar` writes the CA bundle into both webhook configurations:

- in a cluster (``--webhook-service``): the configurations shipped in ``manifests/webhook/`` are patched
  (caBundle only; RBAC: get+patch on those two objects); a missing one is logged with the fix;
- on the local stack (``--webhook-host``, no service): the configurations are created or replaced, with
  ``clientConfig.url`` pointing at the operator on loopback.

Answering (:func:`answering`): the webhooks' requests are answered by
:func:`batchop.admission.checks.answer` (the verdict and a JSON Patch written directly), not by kopf's admission
machinery, which cost several times the verdicts in a creation burst (docs/performance.md, seventh pass). The
handlers of :func:`register_handler` stay registered with kopf: they tell kopf to start the server, and they
answer a request :func:`~batchop.admission.checks.answer` leaves to kopf, to the same verdict. They are
coroutines: kopf runs a plain function in its thread pool, and the hop to a thread and back cost more CPU than
the verdict itself (sixth pass).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import datetime as dt
import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from batchop.admission import checks
from batchop.admission.options import CONFIGURATION_NAME, WebhookOptions, add_arguments, options_from_args
from batchop.api.names import GROUP, PLURAL, VERSION
from batchop.kube.client import KubeClient, KubeError
from batchop.spec.shardkey import ShardPlan

__all__ = ["CONFIGURATION_NAME", "WebhookOptions", "add_arguments", "options_from_args"]  # re-exported

log = logging.getLogger(__name__)

WEBHOOK_NAME = f"validate.{PLURAL}.{GROUP}"
"""The webhook's name inside the configuration (kubectl prints it when it refuses a write)."""
HANDLER_ID = "validate"
"""The kopf handler id, which is also the URL path the webhook is served at (``/validate``)."""
MUTATING_WEBHOOK_NAME = f"admit.{PLURAL}.{GROUP}"
"""The mutating webhook's name (kubectl prints it when it refuses a create): it judges each new BatchJobSchedule
and puts our finalizer on it (:func:`batchop.admission.checks.finalizers_at_create`)."""
MUTATING_HANDLER_ID = "admit"
LEGACY_MUTATING_HANDLER_ID = "finalize"
"""The mutating webhook's path in earlier manifests, where it only added the finalizer and the shard label."""
TIMEOUT_SECONDS = 5
FAILURE_POLICY = "Ignore"
SERVICE_PORT = 443


# -- the kopf handlers ------------------------------------------------------------------------------------------


def register_handler(registry: kopf.OperatorRegistry | None = None, plan: ShardPlan | None = None) -> None:
    """Register the validating and the mutating handler with kopf (the default registry unless one is given):
    the answers when :func:`batchop.admission.checks.answer` leaves a request to kopf, and what tells kopf to
    start the server.

    With a sharded ``plan`` the mutating handler also writes the shard label (:meth:`ShardPlan.label_at_create`)
    in the client's create: the resource reaches its owner's label-selected watch at once, where a resource
    created without it waits for a labeller round (up to a retry period) and costs one more write and watch
    event. Every replica serves the webhook with the same ``--shards`` and ``--shard-by``, so every replica
    computes the same label."""
    registry = registry if registry is not None else kopf.get_default_registry()

    @kopf.on.mutate(
        GROUP, VERSION, PLURAL,
        id=MUTATING_HANDLER_ID,
        operations=["CREATE"],
        ignore_failures=True,
        registry=registry,
    )
    async def admit_batchschedule(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **_: Any) -> None:
        new = dict(body)
        _judge("CREATE", new, None, warnings)
        finalizers = checks.finalizers_at_create(new)
        if finalizers is not None:
            patch.meta["finalizers"] = finalizers
        labels = plan.label_at_create(body) if plan is not None else None
        if labels is not None:
            patch.meta["labels"] = labels

    @kopf.on.validate(  # type: ignore[arg-type]
        GROUP, VERSION, PLURAL,
        id=HANDLER_ID,
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
        registry=registry,
    )
    async def validate_batchschedule(
        operation: str | None, body: kopf.Body, old: kopf.Body | None, warnings: list[str], **_: Any
    ) -> None:
        _judge(operation or "", dict(body), dict(old) if old is not None else None, warnings)


def _judge(operation: str, new: dict[str, Any], old: dict[str, Any] | None, warnings: list[str]) -> None:
    """The verdict of :func:`batchop.admission.checks.review` as kopf's handlers give it: its warnings added,
    a refusal raised as :class:`kopf.AdmissionError` (code 422)."""
    verdict = checks.review(operation, new, old)
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=checks.REFUSED_CODE)


# -- certificates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """Where the serving certificate lives: ``bundle`` holds the key and the certificate (one file, so a
    rotation is one atomic rename), ``ca`` the CA certificate the API server trusts."""

    bundle: Path
    ca: Path


class CertificateAuthority:
    """A private CA (in memory, for the life of the process) issuing the webhook's serving certificate.

    ``lifetime`` is the serving certificate's validity; :meth:`renew_if_due` re-issues it once less than a
    third of it is left. Files are written 0600 into ``directory`` and replaced atomically.
    """

    def __init__(self, directory: Path, hostnames: Iterable[str], *,
                 lifetime: dt.timedelta = dt.timedelta(days=90)) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.hostnames = [h for h in dict.fromkeys(hostnames) if h]
        self.lifetime = lifetime
        self.not_after: dt.datetime | None = None
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchop webhook CA")])
        self._name = name
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.files = CertFiles(bundle=directory / "webhook.pem", ca=directory / "ca.crt")
        _write_atomically(self.files.ca, self.ca_pem)

    @property
    def ca_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._ca.public_bytes(serialization.Encoding.PEM)

    def issue(self) -> None:
        """Issue a new serving certificate and key for :attr:`hostnames` and write them."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for host in self.hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        not_after = now + self.lifetime
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.hostnames[0][:64])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        _write_atomically(self.files.bundle, pem_key + cert.public_bytes(serialization.Encoding.PEM))
        self.not_after = not_after
        log.info("Issued the webhook serving certificate for %s, valid until %s",
                 ", ".join(self.hostnames), not_after.isoformat())

    def renew_if_due(self, now: dt.datetime | None = None) -> bool:
        """Issue a new serving certificate when none exists or less than a third of its life is left."""
        now = now or dt.datetime.now(dt.UTC)
        if self.not_after is None or self.not_after - now < self.lifetime / 3:
            self.issue()
            return True
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the webhook configuration ----------------------------------------------------------------------------------


def kube_login(settings: kopf.OperatorSettings | None = None) -> kopf.ConnectionInfo:
    """The credentials kopf itself logs in with (service account, else kubeconfig), for
    :class:`batchop.kube.client.KubeClient`: the registrar writes with the same identity the operator watches
    with. :class:`batchop.kube.client.KubeError` when there are none."""
    settings = settings if settings is not None else kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise KubeError.no_credentials()
    return info


@dataclass(frozen=True)
class Hook:
    """One of the two webhook configurations batchop registers (and manifests/webhook/ ships)."""

    kind: str
    plural: str
    webhook: str
    handler: str
    operations: tuple[str, ...]
    missing: str
    """What a cluster without this configuration gets, for the log line that says so."""

    @property
    def path(self) -> str:
        return f"/apis/admissionregistration.k8s.io/v1/{self.plural}"


VALIDATING = Hook("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", WEBHOOK_NAME, HANDLER_ID,
                  ("UPDATE",), "edits are checked only by the operator, which reports a bad spec as InvalidSpec")
MUTATING = Hook("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", MUTATING_WEBHOOK_NAME,
                MUTATING_HANDLER_ID, ("CREATE",), "new resources are checked only by the operator, which reports a "
                "bad spec as InvalidSpec, and it adds its finalizer itself (one more write each)")
HOOKS = (VALIDATING, MUTATING)


def webhook_entry(client_config: Mapping[str, Any], hook: Hook = VALIDATING) -> dict[str, Any]:
    """The one webhook of a configuration, as batchop registers it (and as manifests/webhook/ ships it)."""
    entry: dict[str, Any] = {
        "name": hook.webhook,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": FAILURE_POLICY,
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
        "clientConfig": dict(client_config),
        "rules": [{
            "apiGroups": [GROUP],
            "apiVersions": [VERSION],
            "resources": [PLURAL],
            "operations": list(hook.operations),
            "scope": "Namespaced",
        }],
    }
    if hook is MUTATING:  # judged again if a later mutating webhook changes the object: what is stored was judged
        entry["reinvocationPolicy"] = "IfNeeded"
    return entry


def configuration_body(client_config: Mapping[str, Any], name: str = CONFIGURATION_NAME,
                       hook: Hook = VALIDATING) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": hook.kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "batchop",
                                              "app.kubernetes.io/component": "webhook"}},
        "webhooks": [webhook_entry(client_config, hook)],
    }


@dataclass
class WebhookRegistrar:
    """Writes the serving CA (and, without a Service, the URL) into the validating and the mutating webhook
    configurations (both named ``name``).

    ``service``: ``(namespace, name)`` of the webhook Service; then the configurations must exist (shipped by
    the manifests) and only ``caBundle`` is patched (a missing one is logged with what that costs, and the
    other is still patched). Without: ``clientConfig.url`` is used and each whole configuration is
    created or replaced (the local stack, where the operator has the rights).
    """

    name: str = CONFIGURATION_NAME
    service: tuple[str, str] | None = None

    def client_config(self, url: str | None, ca_bundle: str | None, hook: Hook = VALIDATING) -> dict[str, Any]:
        """The ``clientConfig`` to register; ``url`` (the server's, from kopf) is needed only without a Service."""
        config: dict[str, Any]
        if self.service is not None:
            namespace, service = self.service
            config = {"service": {"namespace": namespace, "name": service, "path": f"/{hook.handler}",
                                  "port": SERVICE_PORT}}
        elif url:
            config = {"url": f"{url.rstrip('/')}/{hook.handler}"}
        else:
            raise ValueError("the webhook server reported no URL and there is no --webhook-service to use instead")
        if ca_bundle:
            config["caBundle"] = ca_bundle
        return config

    async def register(self, url: str | None, ca_bundle: str | None) -> None:
        failures: list[str] = []
        for hook in HOOKS:
            try:
                await self.apply(self.client_config(url, ca_bundle, hook), hook)
            except (KubeError, LookupError) as exc:
                failures.append(f"{exc} ({hook.missing})")
        if failures:
            raise LookupError("; ".join(failures))

    async def apply(self, client_config: dict[str, Any], hook: Hook = VALIDATING) -> None:
        """Create the configuration (local mode), or patch its ``caBundle`` / webhook entry, with the
        operator's own raw API client (:class:`batchop.kube.client.KubeClient`: no client library loaded)."""
        path = f"{hook.path}/{self.name}"
        kube = KubeClient(kube_login())
        try:
            current = await kube.request("GET", path)
            if current is None:
                if self.service is not None:
                    raise KubeError(404, f"{hook.kind} {self.name} not found: apply manifests/webhook/")
                await kube.request("POST", hook.path, json=configuration_body(client_config, self.name, hook))
                log.info("Created the %s %s for %s", hook.kind, self.name, _where(client_config))
                return
            webhooks = current.get("webhooks") or []
            index = next((i for i, w in enumerate(webhooks) if w.get("name") == hook.webhook), None)
            if self.service is not None:
                if index is None:
                    raise LookupError(f"{hook.kind} {self.name} has no webhook {hook.webhook}: "
                                      "re-apply manifests/webhook/")
                patch: list[dict[str, Any]] = [
                    {"op": "test", "path": f"/webhooks/{index}/name", "value": hook.webhook},
                    {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                     "value": client_config.get("caBundle", "")},
                ]
            else:
                patch = [{"op": "replace", "path": "/webhooks", "value": [webhook_entry(client_config, hook)]}]
            await kube.request("PATCH", path, json=patch, content_type="application/json-patch+json")
            log.info("Updated the %s %s for %s", hook.kind, self.name, _where(client_config))
        finally:
            await kube.close()


def _where(client_config: Mapping[str, Any]) -> str:
    service = client_config.get("service")
    if service:
        return f"service {service['namespace']}/{service['name']}"
    return str(client_config.get("url"))


# -- the server -------------------------------------------------------------------------------------------------


class RegisteringWebhookServer(kopf.WebhookServer):
    """kopf's webhook server, plus: answer our two webhooks directly (:func:`answering`); register the CA bundle
    after each (re)start; renew a generated certificate."""

    def __init__(self, *, registrar: WebhookRegistrar, authority: CertificateAuthority | None = None,
                 renew_check_interval: float = 3600.0, plan: ShardPlan | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registrar = registrar
        self.authority = authority
        self.renew_check_interval = renew_check_interval
        self.plan = plan

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        renewer = asyncio.create_task(self._renew_forever()) if self.authority is not None else None
        try:
            async for client_config in super().__call__(answering(fn, self.plan)):
                try:
                    await self.registrar.register(client_config["url"], client_config.get("caBundle"))
                except Exception as exc:  # the operator still works without admission (failurePolicy Ignore)
                    log.error("Could not register the admission webhook in %s: %s", self.registrar.name, exc)
                yield client_config
        finally:
            if renewer is not None:
                renewer.cancel()

    async def _renew_forever(self) -> None:
        assert self.authority is not None
        while True:
            await asyncio.sleep(self.renew_check_interval)
            try:
                self.authority.renew_if_due()
            except Exception as exc:
                log.error("Could not renew the webhook certificate: %s", exc)


def answering(fn: kopf.WebhookFn, plan: ShardPlan | None = None) -> kopf.WebhookFn:
    """A webhook function for kopf's server: requests to ``/admit``, ``/validate`` and ``/finalize`` answered with
    :func:`batchop.admission.checks.answer`; any other request, or one that function leaves (None), passed to
    ``fn``, kopf's admission machinery, which runs the handlers of :func:`register_handler` to the same verdict."""
    roles = {MUTATING_HANDLER_ID: (True, True), HANDLER_ID: (False, True), LEGACY_MUTATING_HANDLER_ID: (True, False)}

    async def serve(request: Any, *, webhook: str | None = None, **kwargs: Any) -> Any:
        role = roles.get(webhook or "")
        if role is not None:
            mutating, judging = role
            try:
                response = checks.answer(request, mutating=mutating, judging=judging, plan=plan)
            except Exception:  # a check that fails on some input: kopf's machinery answers as it always did
                log.exception("Could not answer the %s admission request; kopf's handlers answer it", webhook)
                response = None
            if response is not None:
                return response
        return await fn(request, webhook=webhook, **kwargs)

    return serve


def build_server(options: WebhookOptions, plan: ShardPlan | None = None) -> RegisteringWebhookServer:
    """The webhook server for ``options`` (certificates issued or loaded, registrar chosen), answering the
    mutating webhook for the replica set's shard ``plan``."""
    if options.service:
        if not options.namespace:
            raise ValueError("--webhook-service needs --webhook-namespace (or the POD_NAMESPACE env variable)")
        registrar = WebhookRegistrar(options.configuration, service=(options.namespace, options.service))
        hostnames = [f"{options.service}.{options.namespace}.svc", f"{options.service}.{options.namespace}.svc"
                     ".cluster.local", options.service]
        host = f"{options.service}.{options.namespace}.svc"
    else:
        registrar = WebhookRegistrar(options.configuration)
        hostnames = [options.host, "localhost", "127.0.0.1"]
        host = options.host
    common: dict[str, Any] = {"addr": options.listen, "port": options.port, "host": host, "plan": plan}
    if options.cert_dir is not None and (options.cert_dir / "tls.crt").exists():
        return RegisteringWebhookServer(
            registrar=registrar, certfile=options.cert_dir / "tls.crt", pkeyfile=options.cert_dir / "tls.key",
            cafile=(options.cert_dir / "ca.crt") if (options.cert_dir / "ca.crt").exists() else None, **common)
    directory = options.cert_dir
    if directory is None:  # a private key of our own: gone with the process (a Pod's /tmp goes anyway)
        directory = Path(tempfile.mkdtemp(prefix="batchop-webhook-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    authority = CertificateAuthority(directory, hostnames)
    authority.issue()
    return RegisteringWebhookServer(
        registrar=registrar, authority=authority, certfile=authority.files.bundle,
        pkeyfile=authority.files.bundle, cafile=authority.files.ca, **common)


def install(registry: kopf.OperatorRegistry, options: WebhookOptions,
            plan: ShardPlan | None = None) -> RegisteringWebhookServer | None:
    """When ``options.enabled``: register the admission handlers on ``registry`` (with the replica set's shard
    ``plan``, if sharded) and a startup handler that
    sets kopf's admission server (certificates are issued now, so a bad ``--webhook-cert-dir`` fails at once).
    ``batchop run`` calls this with :func:`options_from_args`.

    aiohttp's access log is held to warnings: one INFO line per admission request (one per write) would
    cost more CPU than the answer itself in a burst, and tells nothing the metrics and the API server's own
    audit log do not."""
    if not options.enabled:
        return None
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    register_handler(registry, plan)
    server = build_server(options, plan)

    @kopf.on.startup(registry=registry)
    def admission_server(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = server
        settings.admission.managed = None  # batchop registers the configuration itself (WebhookRegistrar)

    return server


def ca_bundle_of(config: Mapping[str, Any]) -> bytes | None:
    """The PEM CA bundle of a webhook clientConfig (tests and troubleshooting)."""
    value = config.get("caBundle")
    return base64.b64decode(value) if value else None
