"""``batchop emulator``: run the local Azure Batch service (see docs/local-batch-service.md).

The service lives in :mod:`localbatch` (which never imports batchop); this module only exposes
it as a subcommand with the same flags as ``python -m localbatch``.
"""

from __future__ import annotations

import argparse
from typing import Any

from localbatch import cli as localbatch_cli


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run the local Azure Batch service (Batch REST API 2025-06-01 on this machine)",
        description=localbatch_cli.DESCRIPTION,
        epilog=localbatch_cli.EPILOG,
    )
    localbatch_cli.add_arguments(parser, with_logging=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return localbatch_cli.run(args)
