"""The ``--webhook-*`` flags of ``batchop run`` and their :class:`WebhookOptions`.

Apart from :mod:`batchop.admission.webhook` (which imports kopf) so that building the CLI parser loads no operator
machinery: ``batchop run`` must decide what kopf may import before kopf is first imported
(:func:`batchop.cli.commands.run.skip_optional_kopf_clients`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from batchop.api.names import GROUP

CONFIGURATION_NAME = f"batchop.{GROUP}"
"""The ValidatingWebhookConfiguration's name (manifests/webhook/, RBAC resourceNames)."""
_ENV_PREFIX = "BATCHOP_WEBHOOK_"


@dataclass(frozen=True)
class WebhookOptions:
    """``batchop run`` webhook flags (see :func:`add_arguments`)."""

    port: int = 0
    listen: str = "0.0.0.0"
    host: str = "127.0.0.1"
    service: str | None = None
    namespace: str | None = None
    cert_dir: Path | None = None
    configuration: str = CONFIGURATION_NAME

    @property
    def enabled(self) -> bool:
        return self.port > 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--webhook-*`` flags to ``batchop run`` (each also read from ``BATCHOP_WEBHOOK_*``)."""
    env = os.environ.get
    group = parser.add_argument_group("admission webhook (docs/configuration.md)")
    group.add_argument("--webhook-port", type=int, default=int(env(f"{_ENV_PREFIX}PORT", "0") or 0),
                       help="serve the validating admission webhook on this HTTPS port (0: no webhook; "
                            "env BATCHOP_WEBHOOK_PORT)")
    group.add_argument("--webhook-listen", default=env(f"{_ENV_PREFIX}LISTEN", "0.0.0.0"),
                       help="address to listen on (default 0.0.0.0; env BATCHOP_WEBHOOK_LISTEN)")
    group.add_argument("--webhook-host", default=env(f"{_ENV_PREFIX}HOST", "127.0.0.1"),
                       help="without --webhook-service: the host the API server calls "
                            "(https://HOST:PORT/validate; default 127.0.0.1; env BATCHOP_WEBHOOK_HOST)")
    group.add_argument("--webhook-service", default=env(f"{_ENV_PREFIX}SERVICE") or None,
                       help="in a cluster: the webhook Service's name (its namespace: --webhook-namespace or "
                            "$POD_NAMESPACE); the configuration shipped in manifests/webhook/ gets the caBundle "
                            "(env BATCHOP_WEBHOOK_SERVICE)")
    group.add_argument("--webhook-namespace", default=env(f"{_ENV_PREFIX}NAMESPACE") or env("POD_NAMESPACE"),
                       help="namespace of --webhook-service (default $POD_NAMESPACE)")
    group.add_argument("--webhook-cert-dir", type=Path, default=env(f"{_ENV_PREFIX}CERT_DIR") or None,
                       help="directory with tls.crt, tls.key and ca.crt (e.g. a cert-manager Secret); "
                            "default: generate a private CA and certificate and renew them (env "
                            "BATCHOP_WEBHOOK_CERT_DIR)")
    group.add_argument("--webhook-configuration", default=env(f"{_ENV_PREFIX}CONFIGURATION", CONFIGURATION_NAME),
                       help=f"name of the ValidatingWebhookConfiguration (default {CONFIGURATION_NAME})")


def options_from_args(args: argparse.Namespace) -> WebhookOptions:
    return WebhookOptions(
        port=int(getattr(args, "webhook_port", 0) or 0),
        listen=getattr(args, "webhook_listen", "0.0.0.0") or "0.0.0.0",
        host=getattr(args, "webhook_host", "127.0.0.1") or "127.0.0.1",
        service=getattr(args, "webhook_service", None),
        namespace=getattr(args, "webhook_namespace", None),
        cert_dir=getattr(args, "webhook_cert_dir", None),
        configuration=getattr(args, "webhook_configuration", CONFIGURATION_NAME) or CONFIGURATION_NAME,
    )
