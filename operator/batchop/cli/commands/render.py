"""``batchop render -f schedule.yaml``: the exact Batch request the operator would send, validated offline.

Runs the checks of the admission webhook and of the operator (:func:`batchop.spec.validation.validate_resource`)
without a cluster or an Azure account, then prints the ``POST /jobschedules`` body built by
:func:`batchop.spec.mapping.desired_schedule`. Blob references are shown resolved the way the operator
resolves them (:func:`batchop.blob.refs.resolve`), with placeholder SAS tokens (``sig=REDACTED``): no
storage account is contacted and no SAS is minted. ``--unresolved`` shows them as written.

Exit codes: 0 valid (warnings may be printed), 3 invalid (every finding printed, naming field and fix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchop.api.names import KIND
from batchop.blob import refs as blobrefs
from batchop.blob import settings as storage_config
from batchop.blob.sas import PLACEHOLDER_STORAGE_URL
from batchop.spec import mapping, naming, validation, yamlio
from batchop.spec.blobrefs import BlobReferenceError, has_blob_references
from batchwire import API_VERSION, durations, redact, timestamps
from batchwire.exitcodes import INVALID, OK, CLIError

PLACEHOLDER_UID = "<uid-assigned-by-kubernetes>"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "render",
        help="print the Batch request the operator would send for a BatchJobSchedule, validating it offline",
        description="Validate BatchJobSchedule resources offline with the same checks as the operator and its "
        "admission webhook, then print the body of the Azure Batch request the operator would send "
        f"(POST /jobschedules?api-version={API_VERSION}). Blob references are shown resolved with placeholder SAS "
        "tokens (sig=REDACTED): nothing is contacted, nothing minted. Exit codes: 0 valid (warnings on stderr), "
        "3 invalid (each finding names the field and the fix).",
    )
    parser.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="YAML or JSON file with one or more BatchJobSchedule resources ('-' for stdin)")
    parser.add_argument("-n", "--namespace", default=None,
                        help="namespace when the resource names none (default: default); derives the schedule id")
    parser.add_argument("-o", "--output", choices=("json", "yaml"), default="json",
                        help="format of the request body (default: json)")
    parser.add_argument("--unresolved", action="store_true",
                        help="show blob references as written instead of as the SAS URLs they become")
    parser.add_argument("--storage-url", default=None, metavar="URL",
                        help="blob endpoint used to show resolved references when neither spec.storage.accountUrl "
                        f"nor ${storage_config.ENV_CONNECTION_STRING} / ${storage_config.ENV_STORAGE_URL} is set")
    parser.set_defaults(func=run)


def _read(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read {filename}: {exc.strerror or exc}", INVALID) from None


def load_resources(text: str, source: str) -> list[dict[str, Any]]:
    """The BatchJobSchedule documents of a YAML/JSON text (a ``List`` is unpacked); others are refused."""
    try:
        documents = yamlio.load_all(text)
    except Exception as exc:  # yaml.YAMLError and friends: report, never a traceback
        raise CLIError(f"{source} is not valid YAML or JSON: {exc}", INVALID) from None
    found: list[dict[str, Any]] = []
    for document in documents:
        items = document.get("items", []) if isinstance(document, Mapping) and document.get("kind") == "List" else [
            document]
        for item in items:
            if not isinstance(item, Mapping) or item.get("kind") != KIND:
                kind = item.get("kind") if isinstance(item, Mapping) else type(item).__name__
                raise CLIError(f"{source}: expected kind {KIND}, found {kind!r} (convert a job-schedule JSON with "
                               "`batchop convert` first)", INVALID)
            found.append(dict(item))
    if not found:
        raise CLIError(f"{source} holds no {KIND}", INVALID)
    return found


def storage_url_for(spec: Mapping[str, Any], override: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """``(blob endpoint, where it came from)`` for showing resolved blob references."""
    storage = spec.get("storage")
    if isinstance(storage, Mapping) and storage.get("accountUrl"):
        return str(storage["accountUrl"]).rstrip("/"), "spec.storage.accountUrl"
    if override:
        return override.rstrip("/"), "--storage-url"
    try:
        settings = storage_config.resolve(None, None, env)
    except storage_config.StorageConfigError:
        return PLACEHOLDER_STORAGE_URL, "no storage account configured: set spec.storage.accountUrl or --storage-url"
    return settings.account_url, settings.source


def request_body(resource: Mapping[str, Any], *, namespace: str, resolve: bool, storage_url: str | None = None,
                 env: Mapping[str, str] | None = None, now: datetime | None = None) -> tuple[dict[str, Any], list[str]]:
    """The create body for a (valid) resource, and notes on how it was built (for stderr)."""
    env = os.environ if env is None else env
    metadata = resource.get("metadata") or {}
    spec = resource["spec"]
    name = str(metadata.get("name"))
    namespace = str(metadata.get("namespace") or namespace)
    uid = str(metadata.get("uid") or PLACEHOLDER_UID)
    schedule_id = naming.effective_schedule_id(spec, namespace, name)
    body = mapping.desired_schedule(spec, schedule_id=schedule_id, owner=f"{namespace}/{name}", uid=uid)
    notes = [f"{namespace}/{name}: POST /jobschedules?api-version={API_VERSION} (schedule id {schedule_id})"]
    if spec.get("suspend") is True:
        notes.append(f"then POST /jobschedules/{schedule_id}/disable (spec.suspend: true)")
    if has_blob_references(body["jobSpecification"]):
        if resolve:
            url, source = storage_url_for(spec, storage_url, env)
            lifetime = durations.parse(spec.get("storage", {}).get("sasLifetime", "P7D")) if isinstance(
                spec.get("storage"), Mapping) else timedelta(days=7)
            expiry = (now or datetime.now(UTC)) + lifetime
            body["jobSpecification"] = blobrefs.resolve_offline(body["jobSpecification"], account_url=url,
                                                                schedule_id=schedule_id, expiry=expiry)
            notes.append(f"blob references resolved against {url} ({source}) with placeholder SAS "
                         f"(sig={redact.REDACTED}); the operator mints real ones, valid until about "
                         f"{timestamps.seconds(expiry)}")
        else:
            notes.append("blob references shown unresolved; the operator replaces them with SAS URLs")
    return body, notes


def run(args: argparse.Namespace) -> int:
    source = "standard input" if args.filename == "-" else args.filename
    resources = load_resources(_read(args.filename), source)
    namespace = args.namespace or "default"
    invalid = False
    bodies: list[dict[str, Any]] = []
    for resource in resources:
        name = (resource.get("metadata") or {}).get("name", "?")
        findings = validation.validate_resource(resource)
        for finding in sorted(findings, key=lambda f: (not f.is_error, f.path)):
            print(f"{source}: {name}: {redact.redact(str(finding))}", file=sys.stderr)
        if validation.errors_only(findings):
            invalid = True
            continue
        try:
            body, notes = request_body(resource, namespace=namespace, resolve=not args.unresolved,
                                       storage_url=args.storage_url)
        except BlobReferenceError as exc:
            print(f"{source}: {name}: {exc}", file=sys.stderr)
            invalid = True
            continue
        for note in notes:
            print(f"# {note}", file=sys.stderr)
        bodies.append(body)
    if invalid:
        count = "a resource is" if len(resources) == 1 else "some resources are"
        raise CLIError(f"{count} invalid: fix the fields named above (nothing was sent anywhere)", INVALID)
    payload: Any = bodies[0] if len(bodies) == 1 else bodies
    text = json.dumps(payload, indent=2) + "\n" if args.output == "json" else yamlio.dump(payload)
    sys.stdout.write(redact.redact(text))
    return OK
