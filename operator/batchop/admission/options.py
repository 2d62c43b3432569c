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
"""The name of the Validating- and the MutatingWebhookConfiguration (manifests/webhook/, RBAC resourceNames)."""
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


_DEFAULTS = WebhookOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--webhook-*`` flags to ``batchop run`` (each also read from ``BATCHOP_WEBHOOK_*``)."""
    env = os.environ.get
    group = parser.add_argument_group("admission webhook (docs/configuration.md)")
    group.add_argument("--webhook-port", type=int, default=int(env(f"{_ENV_PREFIX}PORT", "0") or 0),
                       help="serve the admission webhooks (/validate, /finalize) on this HTTPS port (0: no webhook; "
                            "env BATCHOP_WEBHOOK_PORT)")
    group.add_argument("--webhook-listen", default=env(f"{_ENV_PREFIX}LISTEN", _DEFAULTS.listen),
                       help=f"address to listen on (default {_DEFAULTS.listen}; env BATCHOP_WEBHOOK_LISTEN)")
    group.add_argument("--webhook-host", default=env(f"{_ENV_PREFIX}HOST", _DEFAULTS.host),
                       help="without --webhook-service: the host the API server calls "
                            f"(https://HOST:PORT/validate; default {_DEFAULTS.host}; env BATCHOP_WEBHOOK_HOST)")
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
                       help=f"name of the Validating- and MutatingWebhookConfiguration (default {CONFIGURATION_NAME})")


def options_from_args(args: argparse.Namespace) -> WebhookOptions:
    """The options of a ``batchop run`` command line (one parsed with :func:`add_arguments`' flags)."""
    return WebhookOptions(
        port=int(args.webhook_port or 0),
        listen=args.webhook_listen or _DEFAULTS.listen,
        host=args.webhook_host or _DEFAULTS.host,
        service=args.webhook_service,
        namespace=args.webhook_namespace,
        cert_dir=args.webhook_cert_dir,
        configuration=args.webhook_configuration or _DEFAULTS.configuration,
    )
