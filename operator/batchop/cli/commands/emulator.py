"""``batchop emulator``: run the local Azure Batch service (see docs/local-batch-service.md).

The service lives in :mod:`localbatch` (which never imports batchop); this module only exposes it as a
subcommand with the same flags as ``python -m localbatch``. An installation from the operator image does not
include :mod:`localbatch`, so it is imported when the command runs (:mod:`batchop.cli.localstack`), not
when the parser is built: the subcommand's own parser takes every argument as it is, and the service's
parser (built then, with the service's flags) reads them, ``--help`` included.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from batchop.cli import localstack
from batchwire import API_VERSION
from batchwire.exitcodes import OK, CLIError

PROG = "batchop emulator"
HELP = f"run the local Azure Batch service (Batch REST API {API_VERSION} on this machine)"


def register(subparsers: Any) -> None:
    # No option of its own ('+' is no flag's prefix): every argument after `emulator` reaches the service's
    # parser in run(), `--help` too.
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator", help=HELP, description=HELP, usage=f"{PROG} [--help] [FLAGS ...]", add_help=False,
        prefix_chars="+",
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the service's flags (see --help)")
    parser.set_defaults(func=run)


def _asks_for_help(arguments: Sequence[str]) -> bool:
    flags = arguments[: arguments.index("--")] if "--" in arguments else arguments
    return any(flag in ("-h", "--help") for flag in flags)


def run(args: argparse.Namespace) -> int:
    try:
        with localstack.required():
            from localbatch import cli as localbatch_cli
    except CLIError:
        if not _asks_for_help(args.arguments):
            raise
        print(f"usage: {PROG} [--help] [FLAGS ...]\n\n{HELP[0].upper()}{HELP[1:]}.\n\n"
              f"The service's flags are listed here when it is installed; {localstack.MISSING}")
        return OK
    parser = argparse.ArgumentParser(prog=PROG, description=localbatch_cli.DESCRIPTION, epilog=localbatch_cli.EPILOG)
    localbatch_cli.add_arguments(parser, with_logging=False)
    # the service logs as every batchop command does (batchop --log-level / --log-format)
    service_args = parser.parse_args(
        args.arguments, namespace=argparse.Namespace(log_level=args.log_level, log_format=args.log_format)
    )
    return localbatch_cli.run(service_args)
