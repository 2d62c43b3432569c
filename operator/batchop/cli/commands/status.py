"""``batchop status [NAME] [-n NS | -A]``: BatchJobSchedules and their last jobs as a readable table.

Reads the resources from the cluster of the current kubeconfig (``--kubeconfig``, ``$KUBECONFIG``, or
``~/.kube/config``; in a pod, its service account) and prints :func:`batchop.cli.statustable.render`: no Batch
credentials are needed, everything shown is what the operator mirrored into ``status``.

Exit codes: 0 shown, 1 NAME not found, 4 the cluster cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batchop.api.names import GROUP, PLURAL, VERSION
from batchop.cli import statustable
from batchwire.exitcodes import FAILURE, OK, UNAVAILABLE, CLIError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show BatchJobSchedules with their last jobs, task counts and output locations",
        description="Show BatchJobSchedules like `kubectl get bjs`, each followed by the jobs the operator keeps "
        "(status.recentJobs): state, result, start, end, task counts and where the output went. Reads the "
        "cluster of your kubeconfig; no Batch credentials needed.",
    )
    parser.add_argument("name", nargs="?", default=None, metavar="NAME", help="one resource (default: all)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    parser.add_argument("--no-jobs", action="store_true", help="one line per resource, without the job rows")
    parser.set_defaults(func=run)


def api(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """A CustomObjectsApi and the context's default namespace (``batchop logs`` reads the cluster the same way)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c.get("name") == context), active)
        namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            message = f"no Kubernetes configuration: {exc} (set --kubeconfig or KUBECONFIG)"
            raise CLIError(message, UNAVAILABLE) from None
        namespace = "default"
    return client.CustomObjectsApi(), namespace


def read(api: Any, *, namespace: str | None, name: str | None) -> list[dict[str, Any]]:
    """The resources to show (one when ``name``; all namespaces when ``namespace`` is None)."""
    from kubernetes.client.exceptions import ApiException

    try:
        if name:
            assert namespace is not None
            return [api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)]
        if namespace is None:
            return list(api.list_cluster_custom_object(GROUP, VERSION, PLURAL).get("items") or [])
        return list(api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL).get("items") or [])
    except ApiException as exc:
        if exc.status == 404 and name:
            raise CLIError(f"batchschedule {namespace}/{name} not found", FAILURE) from None
        if exc.status == 404:
            raise CLIError("the BatchJobSchedule CRD is not installed: kubectl apply -k crds/", FAILURE) from None
        raise CLIError(f"the Kubernetes API refused the request ({exc.status} {exc.reason})", FAILURE) from None
    except OSError as exc:
        raise CLIError(f"cannot reach the Kubernetes API: {exc}", UNAVAILABLE) from None
    except Exception as exc:  # urllib3 connection errors are not OSErrors
        if type(exc).__module__.startswith("urllib3"):
            raise CLIError(f"cannot reach the Kubernetes API: {exc}", UNAVAILABLE) from None
        raise


def run(args: argparse.Namespace) -> int:
    if args.all_namespaces and args.name:
        raise CLIError("NAME cannot be used with -A: name a namespace with -n", 2)
    custom, default_namespace = api(args.kubeconfig, args.context)
    namespace = None if args.all_namespaces else (args.namespace or default_namespace)
    objects = read(custom, namespace=namespace, name=args.name)
    sys.stdout.write(statustable.render(objects, all_namespaces=args.all_namespaces, jobs=not args.no_jobs))
    return OK
