"""The ``batchop`` command line: one entry point, one module per subcommand.

Each module in :mod:`batchop.cli.commands` exposes ``register(subparsers)``, which adds its
subparser and sets ``func`` (``func(args) -> int``) as the default. Exit codes are those of
:mod:`batchwire.exitcodes`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from batchop import __version__
from batchop.observability import logs
from batchwire.exitcodes import INTERRUPTED, CLIError

# Subcommand modules under batchop.cli.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = (
    "run",
    "emulator",
    "dev",
    "demo",
    "blob",
    "convert",
    "render",
    "import_",  # module import_.py: the subcommand is `import`
    "status",
    "logs",
)

log = logging.getLogger("batchop")


def build_parser(prog: str = "batchop") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Azure Batch job schedules as Kubernetes resources: the operator, its local stack and tools.",
    )
    parser.add_argument("--version", action="version", version=f"batchop {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="auto (default): JSON lines when stderr is not a terminal, text otherwise",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"batchop.cli.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "batchop") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"batchop {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return INTERRUPTED


def kubectl_main() -> int:
    """``kubectl-batchop``: the same commands as a kubectl plugin (``kubectl batchop logs NAME``); kubectl finds
    it on ``PATH`` and passes the arguments after ``batchop`` and its own environment (``KUBECONFIG``)."""
    return main(prog="kubectl batchop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
