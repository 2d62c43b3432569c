"""``batchop run``: the operator (kopf), reconciling BatchJobSchedules against Azure Batch.

Standalone by default (no kopf peering, no Lease: run one replica, ``strategy: Recreate``). With
``--leader-elect`` any number of replicas run and the holder of a Lease reconciles
(:mod:`batchop.controller.supervisor`); with ``--shards N`` as well, the resources are spread over N Leases.
Namespaces: ``-n NS`` (repeatable, globs allowed) or ``-A`` for all. Settings come from flags, else
environment variables (see :mod:`batchop.batch.settings`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from batchop.api.names import SHARD_BY
from batchop.batch import settings as config
from batchop.observability import memory
from batchwire.exitcodes import UNAVAILABLE, USAGE, CLIError

log = logging.getLogger(__name__)


def skip_optional_kopf_clients() -> None:
    """Keep the ``kubernetes`` client library out of the operator process.

    kopf imports it, when installed, only to recognise its model classes in helpers batchop never calls
    (``kopf.adopt`` and friends); loading it costs about 19 MiB of resident memory. batchop's own requests
    use :class:`batchop.kube.client.KubeClient`. Other commands (``batchop status``) still use the library.
    Must run before the first ``import kopf`` of the process; a no-op after it."""
    import sys

    if "kopf" in sys.modules:
        return
    for name in ("kubernetes", "kubernetes_asyncio", "pykube"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # "import halted": kopf's ImportError path


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the operator: reconcile BatchJobSchedules against Azure Batch",
        description=(
            "Run the batchop operator (kopf). It creates, updates, suspends and deletes Azure Batch job "
            "schedules to match BatchJobSchedule resources, and mirrors each schedule's state, latest job and "
            "pool into the resource's status. Flags default to the environment variables shown."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; globs and !exclusions as kopf accepts them)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    parser.add_argument(
        "--standalone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run without kopf peering (default: on; run exactly one replica)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    _add_batch_arguments(parser)
    _add_election_arguments(parser)
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    from batchop.admission import options as webhook_options

    webhook_options.add_arguments(parser)
    parser.set_defaults(func=run)


def _add_election_arguments(parser: argparse.ArgumentParser) -> None:
    """Leader election and shards (docs/operator.md, "High availability and sharding"); controller-runtime's
    flag names and defaults."""
    from batchop.api.names import LEADER_ELECTION_ID

    group = parser.add_argument_group("high availability (docs/operator.md)")
    group.add_argument("--leader-elect", action="store_true",
                       help="run several replicas: only the holder of the Lease reconciles (default: off, one replica)")
    group.add_argument("--leader-election-namespace", default=None, metavar="NS",
                       help="namespace of the Lease(s) (default: the Pod's own namespace, else default)")
    group.add_argument("--leader-election-id", default=LEADER_ELECTION_ID, metavar="NAME",
                       help=f"name of the Lease (default {LEADER_ELECTION_ID}; shards: NAME-shard-K, NAME-members)")
    group.add_argument("--leader-election-lease-duration", type=float, default=15.0, metavar="SECONDS",
                       help="how long a standby waits after the last renewal it saw before it takes the Lease (15)")
    group.add_argument("--leader-election-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                       help="a holder that could not renew for this long stops reconciling (10)")
    group.add_argument("--leader-election-retry-period", type=float, default=2.0, metavar="SECONDS",
                       help="how often Leases are renewed or tried (2)")
    group.add_argument("--shards", type=int, default=1, metavar="N",
                       help="with --leader-elect: spread the resources over N shards, one Lease each, balanced "
                            "over the replicas (default 1: one leader)")
    group.add_argument("--shard-by", choices=SHARD_BY, default=SHARD_BY[0],
                       help="with --shards: spread resources by name (resource, the default: even shards) or by "
                            "Batch account (account: each account's resources in one shard, so one replica lists "
                            "and rate-limits each account)")


def _election_config(args: argparse.Namespace) -> Any:
    """The :class:`batchop.controller.election.ElectionConfig` of the flags, checked (``CLIError`` USAGE)."""
    from batchop.controller.election import ElectionConfig, default_identity, default_namespace

    if args.shards < 1:
        raise CLIError("--shards must be at least 1", USAGE)
    if args.shards > 1 and not args.leader_elect:
        raise CLIError("--shards needs --leader-elect (each shard is a Lease)", USAGE)
    if args.shard_by != SHARD_BY[0] and args.shards == 1:
        raise CLIError(f"--shard-by {args.shard_by} needs --shards N with N > 1", USAGE)
    config = ElectionConfig(
        namespace=args.leader_election_namespace or default_namespace(),
        identity=default_identity(),
        name=args.leader_election_id,
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
    )
    try:
        config.check()
    except ValueError as exc:
        raise CLIError(str(exc), USAGE) from None
    return config


def _add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The operator's Batch settings (:mod:`batchop.batch.settings`; each flag defaults to its env variable)."""
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="poll each Batch account this often; drift is put back within one interval "
        f"(env BATCHOP_RESYNC_INTERVAL, default {config.DEFAULTS.resync_interval:g})",
    )
    parser.add_argument(
        "--batch-endpoint", default=None, help="default Batch account endpoint (env BATCHOP_BATCH_ENDPOINT)"
    )
    parser.add_argument("--batch-account", default=None, help="default Batch account name (env BATCHOP_BATCH_ACCOUNT)")
    parser.add_argument(
        "--batch-key",
        default=None,
        help="default Batch account key (env BATCHOP_BATCH_KEY; prefer the env var: flags show in ps). "
        "No key: Entra ID (DefaultAzureCredential)",
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None,
        help=f"Batch requests in flight per account (default {config.DEFAULTS.max_concurrency})",
    )
    parser.add_argument(
        "--requests-per-second", type=float, default=None,
        help=f"Batch request rate limit per account (default {config.DEFAULTS.requests_per_second:g})",
    )
    parser.add_argument(
        "--job-stuck-after", type=float, default=None, metavar="SECONDS",
        help="seconds of Batch time a job may wait without a running task before Ready turns False with JobStuck "
        f"(env BATCHOP_JOB_STUCK_AFTER, default {config.DEFAULTS.job_stuck_after:g})",
    )
    parser.add_argument(
        "--max-concurrent-reconciles", type=int, default=None, metavar="N",
        help="reconciles and deletes running at once; the others wait in the work queue "
        f"(env BATCHOP_MAX_CONCURRENT_RECONCILES, default {config.DEFAULTS.max_concurrent_reconciles})",
    )


def _settings(args: argparse.Namespace) -> config.Settings:
    settings = config.from_env(
        batch_endpoint=args.batch_endpoint,
        batch_account=args.batch_account,
        batch_key=args.batch_key,
        resync_interval=args.resync_interval,
        max_concurrency=args.max_concurrency,
        requests_per_second=args.requests_per_second,
        job_stuck_after=getattr(args, "job_stuck_after", None),
        max_concurrent_reconciles=getattr(args, "max_concurrent_reconciles", None),
    )
    if settings.resync_interval <= 0:
        raise CLIError("--resync-interval must be a positive number of seconds", USAGE)
    if settings.job_stuck_after <= 0:
        raise CLIError("--job-stuck-after must be a positive number of seconds", USAGE)
    if settings.max_concurrent_reconciles < 1:
        raise CLIError("--max-concurrent-reconciles must be at least 1", USAGE)
    return settings


def run(args: argparse.Namespace) -> int:
    skip_optional_kopf_clients()
    memory.small_tls_buffers()
    # The Batch SDK's client (and the models it pulls in) is imported by the first gateway, which the first
    # reconcile builds: imported here instead, so the first resource applied does not wait 0.1-0.2 s of CPU
    # for it in the middle of a burst. The other commands keep importing it only when they need it.
    import azure.batch.aio  # noqa: F401
    import kopf

    from batchop.controller import handlers
    from batchop.kube.client import KubeError
    from batchwire.redact import register_secret

    settings = _settings(args)
    replicated = args.leader_elect or args.shards != 1 or args.shard_by != SHARD_BY[0]
    election = _election_config(args) if replicated else None
    register_secret(settings.batch_key)
    if args.metrics_port:
        from batchop.observability.metrics import start_metrics_server

        start_metrics_server(args.metrics_port)
    memory.tune_gc()
    if election is not None:
        return _run_replicated(args, settings, election)
    scope = _scope(args)
    # kopf's peering (--no-standalone) pauses only kopf's own watch: then kopf watches, else batchop does
    watch = scope.watch() if args.standalone else None
    try:
        registry, _runtime, _watch = handlers.build(settings, watch)
    except KubeError as exc:  # no credentials: nothing to watch with
        raise CLIError(str(exc), UNAVAILABLE) from None
    from batchop.admission import options as webhook_options
    from batchop.admission import webhook

    try:
        webhook.install(registry, webhook_options.options_from_args(args))
    except ValueError as exc:
        raise CLIError(str(exc), USAGE) from exc
    log.info(
        "starting batchop operator (%s, resync every %ss)",
        "all namespaces" if scope.clusterwide else "namespaces " + ", ".join(scope.namespaces),
        settings.resync_interval,
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=args.standalone,
            liveness_endpoint=args.liveness,
            clusterwide=scope.clusterwide,
            namespaces=scope.namespaces,
        )
    )
    return 0


def _scope(args: argparse.Namespace) -> Any:
    from batchop.controller.supervisor import Scope

    namespaces = tuple(args.namespaces or ())
    return Scope(namespaces=namespaces, clusterwide=bool(args.all_namespaces) or not namespaces,
                 liveness=args.liveness)


def _run_replicated(args: argparse.Namespace, settings: config.Settings, election: Any) -> int:
    """``--leader-elect``: Leases on the main loop, the webhook on every replica, the controller while leading
    (:mod:`batchop.controller.supervisor`)."""
    import kopf

    from batchop.admission import options as webhook_options
    from batchop.admission import webhook
    from batchop.controller import handlers, supervisor
    from batchop.kube.client import KubeClient
    from batchop.spec.shardkey import ShardPlan

    info = handlers.login(kopf.OperatorSettings())
    if info is None:
        raise CLIError("no Kubernetes credentials: set KUBECONFIG or run in a cluster", UNAVAILABLE)
    admission = kopf.OperatorRegistry()
    kopf.on.login(registry=admission)(_login)
    plan = ShardPlan(args.shards, args.shard_by, settings.batch_endpoint)
    try:
        webhook.install(admission, webhook_options.options_from_args(args), plan)
    except ValueError as exc:
        raise CLIError(str(exc), USAGE) from exc

    scope = _scope(args)

    def build_controller(label_selector: str | None) -> supervisor.Controller:
        registry, _runtime, watch = handlers.build(settings, scope.watch(label_selector))
        return registry, (watch.health if watch is not None else None)

    replica = supervisor.Supervisor(
        config=election, kube=KubeClient(info), build_controller=build_controller,
        build_admission=lambda: admission, scope=scope, plan=plan,
    )
    # the liveness endpoint is the admission thread's, on every replica: it shows the controller's watch
    kopf.on.probe(id="watch", registry=admission)(lambda **_: replica.watch_health())
    log.info("starting batchop operator with leader election (resync every %ss)", settings.resync_interval)
    return supervisor.run(replica)


def _login(settings: Any, **_: Any) -> Any:
    from batchop.controller import handlers

    return handlers.login(settings)
