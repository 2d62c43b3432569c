"""Command line of the local Batch service: ``batchop emulator`` and ``python -m localbatch``.

Contract (others script against it)::

    batchop emulator [--host 127.0.0.1] [--port 8090] [--account devbatch] [--key BASE64]
                     [--time-scale 1] [--no-execute] [--no-execute-exit-code 0] [--work-dir DIR]
                     [--state-file F] [--fault-rate 0] [--fault-codes 429,503] [--latency-ms 0]
                     [--tls] [--secondary-key BASE64] [--dedicated-core-quota N]
                     [--low-priority-core-quota N] [--active-jobs-and-schedules-quota N] (alias --job-quota)
                     [--terminating-window S] [--deleting-window S]

On start the first line on stdout is one JSON object (``endpoint``, ``account``, ``key``, ``secondaryKey``,
``admin``, ``certificate``, ``tokenAuthority``, ``workDir``, ``pid``), then a few lines for people.
``--port 0`` picks a free port (read it from that first line). SIGTERM or SIGINT stop it cleanly:
no new requests, engine stopped (task processes killed), state file written; exit code 0.
Exit codes: 0 clean stop, 2 bad arguments, 4 the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from batchwire import logs, redact
from localbatch import __version__
from localbatch.context import DEFAULT_KEY, DEFAULT_SECONDARY_KEY, ServiceConfig
from localbatch.faults import parse_codes
from localbatch.service import Service
from localbatch.windows import DEFAULT_DELETING_SECONDS, DEFAULT_TERMINATING_SECONDS

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4

log = logging.getLogger("localbatch.cli")

DESCRIPTION = (
    "Run the local Azure Batch service: the Batch data-plane REST API (2025-06-01) on this machine, "
    "which the unmodified azure-batch SDK talks to over HTTP, and which really runs the job manager "
    "and start tasks as local processes. Point BatchClient at the printed endpoint with "
    "AzureNamedKeyCredential(account, key)."
)
EPILOG = (
    "Admin API (no credentials from loopback): GET /_emulator/health, /info, /counts, /faults, /clock, "
    "/state, /quotas, /allocation-failures, /windows, /keys; POST /_emulator/faults, /clock, /reset, /quotas, "
    "/allocation-failures, /windows, /keys/regenerate; DELETE /_emulator/counts, /allocation-failures. "
    "Docs: docs/local-batch-service.md"
)


def _codes(text: str) -> list[str]:
    try:
        return parse_codes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("--fault-rate must be between 0 and 1")
    return value


def _scale(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("--time-scale must be > 0 (240 makes PT4H last one real minute)")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a quota must be 0 or more")
    return value


def _window(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a window must be 0 or more Batch seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser, *, with_logging: bool = True) -> None:
    """Add the service's flags to ``parser`` (shared by ``batchop emulator`` and ``python -m localbatch``)."""
    _add_service_arguments(parser)
    _add_fault_arguments(parser)
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate and accept bearer tokens from the built-in token "
        "endpoint (Entra ID stand-in)",
    )
    if with_logging:
        parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
        parser.add_argument(
            "--log-format",
            choices=("auto", "json", "text"),
            default="auto",
            help="auto (default): JSON lines when stderr is not a terminal",
        )


def _add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the service listens, its account, clock, execution and state."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default: 8090; 0 picks a free port)")
    parser.add_argument("--account", default="devbatch", help="Batch account name (default: devbatch)")
    parser.add_argument(
        "--key",
        default=DEFAULT_KEY,
        help="account key, base64 (default: a fixed, documented development key; never use it in Azure)",
    )
    parser.add_argument(
        "--secondary-key",
        default=DEFAULT_SECONDARY_KEY,
        help="the account's secondary key, base64 (default: a fixed development key); both keys sign requests",
    )
    parser.add_argument(
        "--time-scale",
        type=_scale,
        default=1.0,
        help="virtual time runs this many times faster than real time (default: 1; 240: PT4H per real minute)",
    )
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="complete tasks without running anything (for load tests); see --no-execute-exit-code",
    )
    parser.add_argument(
        "--no-execute-exit-code", type=int, default=0, help="exit code of tasks under --no-execute (default: 0)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="node and task directories (default: a new temporary directory)"
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="keep the state in this JSON file (written atomically on change, loaded on start)",
    )


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Injected faults and limits: what a client of Batch must survive."""
    parser.add_argument(
        "--fault-rate", type=_rate, default=0.0, help="fraction of Batch API requests that fail (default: 0)"
    )
    parser.add_argument(
        "--fault-codes",
        type=_codes,
        default=["429", "503"],
        help="comma-separated faults to inject: 429, 500, 503, reset (default: 429,503)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every Batch API request")
    parser.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds on injected 429/503 (default: 1)"
    )
    parser.add_argument(
        "--active-jobs-and-schedules-quota",
        type=_count,
        default=None,
        help="active jobs + job schedules allowed (default unlimited; beyond: 409 ActiveJobAndScheduleQuotaReached)",
    )
    parser.add_argument(
        "--job-quota", type=int, default=0, help="old name of --active-jobs-and-schedules-quota (0 = unlimited)"
    )
    parser.add_argument(
        "--dedicated-core-quota",
        type=_count,
        default=None,
        help="dedicated cores of the account (default unlimited); pools beyond it get resizeErrors "
        "AccountCoreQuotaReached and only the nodes that fit",
    )
    parser.add_argument(
        "--low-priority-core-quota",
        type=_count,
        default=None,
        help="low-priority (Spot) cores of the account (default unlimited)",
    )
    parser.add_argument(
        "--terminating-window",
        type=_window,
        default=DEFAULT_TERMINATING_SECONDS,
        help=f"Batch seconds a job or schedule stays terminating (default {DEFAULT_TERMINATING_SECONDS:g}, as Azure)",
    )
    parser.add_argument(
        "--deleting-window",
        type=_window,
        default=DEFAULT_DELETING_SECONDS,
        help=f"Batch seconds a deleted job or schedule still answers GET as deleting (default "
        f"{DEFAULT_DELETING_SECONDS:g}, as Azure)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localbatch", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"localbatch {__version__}")
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        host=args.host,
        port=args.port,
        account=args.account,
        key=args.key,
        time_scale=args.time_scale,
        execute=not args.no_execute,
        no_execute_exit_code=args.no_execute_exit_code,
        work_dir=args.work_dir,
        state_file=args.state_file,
        fault_rate=args.fault_rate,
        fault_codes=args.fault_codes,
        latency_ms=args.latency_ms,
        retry_after=args.retry_after,
        tls=args.tls,
        job_quota=args.job_quota,
        secondary_key=args.secondary_key,
        dedicated_core_quota=args.dedicated_core_quota,
        low_priority_core_quota=args.low_priority_core_quota,
        active_jobs_and_schedules_quota=args.active_jobs_and_schedules_quota,
        terminating_window=args.terminating_window,
        deleting_window=args.deleting_window,
    )


def banner(svc: Service) -> str:
    """The first stdout line: machine-readable JSON."""
    return json.dumps(
        {
            "endpoint": svc.base_url,
            "account": svc.config.account,
            "key": svc.config.key,
            "secondaryKey": svc.config.secondary_key,
            "admin": f"{svc.base_url}/_emulator",
            "certificate": str(svc.cert_path) if svc.cert_path else None,
            "tokenAuthority": svc.base_url if svc.config.tls else None,
            "workDir": str(svc.work_dir),
            "timeScale": svc.clock.scale,
            "execute": svc.config.execute,
            "pid": os.getpid(),
        }
    )


async def serve(config: ServiceConfig) -> int:
    try:
        svc = Service(config)
    except ValueError as exc:
        print(f"localbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await svc.start()
    except OSError as exc:
        print(
            f"localbatch: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; "
            "choose another --port (0 picks a free one) or stop the process using it",
            file=sys.stderr,
        )
        with contextlib.suppress(Exception):
            await svc.stop()
        return EXIT_UNAVAILABLE
    print(banner(svc), flush=True)
    print(
        f"Local Azure Batch service at {svc.base_url}\n"
        f"  account {config.account}\n"
        f"  key     {config.key}\n"
        f"  admin   {svc.base_url}/_emulator/info\n"
        f"  SDK:    BatchClient({svc.base_url!r}, AzureNamedKeyCredential({config.account!r}, KEY))\n"
        "Stop with Ctrl-C or SIGTERM.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await svc.stop()
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run the service with parsed arguments (``batchop emulator`` calls this)."""
    logs.configure(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "auto"), logger="localbatch")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    redact.register_secret(args.key)
    redact.register_secret(args.secondary_key)
    return asyncio.run(serve(config_from_args(args)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
