"""``batchop convert FILE.json``: an Azure Batch job-schedule JSON of any API vintage -> a BatchJobSchedule.

The YAML goes to standard output; every rename, replacement, removed SAS token and guess goes to standard
error (see :mod:`batchop.spec.conversion`), followed by what validation still has to say. Exit codes: 0
converted and valid (warnings may remain), 3 unreadable input, or converted but still invalid (the YAML is
printed anyway, and each remaining problem names the field to fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from batchop.spec import conversion, validation, yamlio
from batchwire import API_VERSION, redact
from batchwire.exitcodes import INVALID, OK, CLIError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "convert",
        help="turn a job-schedule JSON (any Batch API vintage, e.g. 2016) into a BatchJobSchedule YAML",
        description="Convert an Azure Batch job-schedule JSON (a POST /jobschedules body or a GET response, any API "
        f"version since 2016) into a BatchJobSchedule resource in today's field names (API {API_VERSION}). Renames "
        "(targetDedicated -> targetDedicatedNodes, maxTasksPerNode -> taskSlotsPerNode, runElevated -> "
        "userIdentity, blobSource -> blob references), retired images replaced by Ubuntu 24.04, SAS tokens removed "
        "(Blob storage URLs become blob: references the operator signs itself): each change is reported on stderr. "
        "Exit codes: 0 done, 3 unreadable input or a result that still needs fixing (printed anyway).",
    )
    parser.add_argument("file", metavar="FILE.json", help="the job-schedule JSON (or YAML); '-' for stdin")
    parser.add_argument("--name", default=None, help="the resource's name (default: derived from the schedule id)")
    parser.add_argument("--namespace", default=None, help="the resource's namespace (default: none written)")
    parser.add_argument("--keep-images", action="store_true",
                        help="keep retired images and node agents (flag them) instead of replacing them")
    parser.add_argument("--guess-container", default="application", metavar="NAME",
                        help="container guessed for placeholder blobSource values (default: application, as in the "
                        "seed's blob/ layout)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write the YAML to FILE instead of standard output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = "standard input" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror or exc}", INVALID) from None
    try:
        documents = yamlio.load_all(text)
    except Exception as exc:  # YAML/JSON syntax errors: a message, not a traceback
        raise CLIError(f"{source} is not valid JSON or YAML: {exc}", INVALID) from None
    if len(documents) != 1:
        raise CLIError(f"{source}: expected one job-schedule object, found {len(documents)} documents", INVALID)
    try:
        result = conversion.convert(documents[0], name=args.name, namespace=args.namespace,
                                    keep_images=args.keep_images, guess_container=args.guess_container)
    except ValueError as exc:
        raise CLIError(f"{source}: {exc}", INVALID) from None
    for note in result.notes:
        print(redact.redact(str(note)), file=sys.stderr)
    findings = validation.validate_resource(result.resource)
    for finding in sorted(findings, key=lambda f: (not f.is_error, f.path)):
        print(f"check: {redact.redact(str(finding))}", file=sys.stderr)
    yaml_text = yamlio.dump(result.resource)
    if args.output:
        args.output.write_text(yaml_text)
    else:
        sys.stdout.write(yaml_text)
    counts = {kind: sum(1 for n in result.notes if n.kind == kind) for kind in ("renamed", "replaced", "removed-sas",
                                                                                "guess")}
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items() if count) or "nothing to change"
    print(f"converted {source}: {summary}", file=sys.stderr)
    errors = validation.errors_only(findings)
    if errors:
        raise CLIError(f"the converted resource still has {len(errors)} problem(s) listed above: edit the YAML",
                       INVALID)
    return OK
