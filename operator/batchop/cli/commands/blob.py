"""``batchop blob``: upload a tree of containers (``sync``) and read blobs back (``get``).

Credentials, first found wins: ``--connection-string``; ``--account-url`` with ``--account-key`` (or
without it: Entra ID through ``DefaultAzureCredential``); ``AZURE_STORAGE_CONNECTION_STRING``;
``BATCHOP_STORAGE_URL`` (Entra ID); ``<--dev-dir>/env`` written by ``batchop dev up``; Azurite's
well-known development account on its default port. Keys and SAS are never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from batchop.blob import settings as storage_config
from batchop.blob import sync as blobsync
from batchwire import devenv, redact
from batchwire.exitcodes import FAILURE, OK, CLIError

CREDENTIALS_HELP = (
    "Credentials, first found wins: --connection-string; --account-url + --account-key (--account-url alone: "
    "Entra ID via DefaultAzureCredential); $AZURE_STORAGE_CONNECTION_STRING; $BATCHOP_STORAGE_URL (Entra ID); the "
    "env file of `batchop dev up` (--dev-dir); Azurite's development account on 127.0.0.1:10000."
)


def _credential_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage account")
    group.add_argument("--connection-string", metavar="CS",
                       help="an Azure Storage connection string with AccountKey (prefer the environment variable "
                       "AZURE_STORAGE_CONNECTION_STRING: flags show up in process lists)")
    group.add_argument("--account-url", metavar="URL", help="blob endpoint, e.g. https://mystorage.blob.core.windows.net")
    group.add_argument("--account-key", metavar="KEY", help="account key for --account-url (omit for Entra ID)")
    group.add_argument("--dev-dir", type=Path, default=None,
                       help="state directory of `batchop dev up` whose env file to read (default: .batchop-dev)")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "blob",
        help="upload a folder tree to Blob storage (sync) and read blobs back (get)",
        description="Blob storage for batch jobs: `sync` uploads a tree whose top-level folders are containers "
        "(like the sample blob/), `get` downloads or prints blobs. " + CREDENTIALS_HELP,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    sync = actions.add_parser(
        "sync",
        help="upload DIR: each top-level folder a container, unchanged blobs skipped",
        description="Upload DIR to Blob storage: each top-level folder becomes a container (created when missing) "
        "and each file below it a blob named by its path under that folder. Blobs whose Content-MD5 matches the "
        "local file are skipped. Hidden files (.gitkeep) are never uploaded, so a folder holding only a placeholder "
        "(blob/output/) just creates its container. --delete removes blobs without a local file, except in such "
        "placeholder-only containers (job outputs are kept). Exit codes: 0 done, 1 some blob failed or the "
        "credential was refused, 3 bad DIR or folder name, 4 storage unreachable. " + CREDENTIALS_HELP,
    )
    sync.add_argument("dir", type=Path, metavar="DIR", help="the tree to upload, e.g. blob/")
    sync.add_argument("--delete", action="store_true",
                      help="delete blobs that have no local file (only in containers whose folder has files)")
    sync.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    sync.add_argument("--workers", type=int, default=blobsync.WORKERS,
                      help=f"parallel uploads (default: {blobsync.WORKERS})")
    _credential_flags(sync)
    sync.set_defaults(func=run_sync)

    get = actions.add_parser(
        "get",
        help="download or print a blob, or every blob under a prefix",
        description="CONTAINER/PATH naming a blob: print it to standard output, or save it with -o FILE (or into "
        "-o DIR). CONTAINER or CONTAINER/PREFIX: list the blobs under it, or download them all into -o DIR "
        "(keeping their paths below the prefix's folder). Exit codes: 0 done, 1 nothing found or the credential "
        "was refused, 3 bad arguments, 4 storage unreachable. " + CREDENTIALS_HELP,
    )
    get.add_argument("target", metavar="CONTAINER[/PATH]", help="e.g. output/wordcount or input/lyrics.txt")
    get.add_argument("-o", "--output", type=Path, metavar="FILE|DIR", help="where to save (default: print / list)")
    _credential_flags(get)
    get.set_defaults(func=run_get)


def settings_from(args: argparse.Namespace) -> storage_config.StorageSettings:
    for secret in (args.connection_string, args.account_key):
        redact.register_secret(secret)
    try:
        return storage_config.for_cli(
            connection_string=args.connection_string,
            account_url=args.account_url,
            account_key=args.account_key,
            env_file=devenv.env_file(args.dev_dir),
        )
    except storage_config.StorageConfigError as exc:
        raise CLIError(f"--connection-string / AZURE_STORAGE_CONNECTION_STRING: {exc.message}", 3) from None


def run_sync(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(f"syncing {args.dir} to {settings.describe()}" + (" (dry run)" if args.dry_run else ""), file=sys.stderr)
    result = blobsync.sync(args.dir, settings, delete=args.delete, dry_run=args.dry_run, workers=args.workers)
    if result.failed:
        raise CLIError(f"{len(result.failed)} blob operation(s) failed; first: {result.failed[0]}", FAILURE)
    return OK


def run_get(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    blobsync.get(args.target, settings, output=args.output)
    return OK
