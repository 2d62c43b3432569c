"""``batchop import SCHEDULE_ID``: the BatchJobSchedule that adopts a live Batch job schedule, changing nothing.

Reads the schedule (``GET /jobschedules/{id}``) and the number of its completed jobs (``GET
/jobschedules/{id}/jobs``, ids and states only), builds the resource with :func:`batchop.spec.importer.import_schedule`
(adopt annotation, ``scheduleId``, only the fields a user would write), checks with the operator's own diff that
applying it writes nothing (:func:`batchop.spec.importer.unchanged_check`), and prints the YAML (or writes ``-o FILE``).
Notes (SAS removed, display name dropped, history limits) go to stderr. Nothing is written to Batch.

The account: ``--account-endpoint`` / ``--account-name`` / ``--account-key``, defaulting to the operator's
``BATCHOP_BATCH_ENDPOINT`` / ``BATCHOP_BATCH_ACCOUNT`` / ``BATCHOP_BATCH_KEY``; no key: Entra ID
(``DefaultAzureCredential``). An endpoint given on the command line is written into ``spec.account.endpoint``.

Exit codes: 0 written, 1 no such schedule or Batch refused, 2 usage (no endpoint), 4 Batch unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchop.api import conditions as cond
from batchop.batch import settings as config
from batchop.blob import refs as blobrefs
from batchop.blob.sas import PLACEHOLDER_STORAGE_URL
from batchop.spec import importer, yamlio
from batchwire import redact
from batchwire.exitcodes import FAILURE, OK, UNAVAILABLE, USAGE, CLIError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="write the BatchJobSchedule that adopts a live Batch job schedule (applying it changes nothing)",
        description="Read a job schedule from an Azure Batch account and write the BatchJobSchedule resource that "
        "adopts it: annotation azurebatch.dev/adopt: \"true\", spec.scheduleId, and only the fields you would write "
        "(Batch's read-time defaults removed, SAS tokens replaced by blob: references). Applying it with kubectl "
        "sends nothing to Batch: the operator finds nothing to change. Reads only; never writes to Batch.",
    )
    parser.add_argument("schedule_id", metavar="SCHEDULE_ID", help="the Batch job schedule id")
    parser.add_argument("--account-endpoint", default=None, metavar="URL",
                        help="Batch account endpoint (default: $BATCHOP_BATCH_ENDPOINT); when given, it is written "
                        "into spec.account.endpoint")
    parser.add_argument("--account-name", default=None, help="account name (default: $BATCHOP_BATCH_ACCOUNT, else "
                        "the endpoint's first label)")
    parser.add_argument("--account-key", default=None,
                        help="account key (default: $BATCHOP_BATCH_KEY; prefer the variable: flags show in ps). No "
                        "key: Entra ID (DefaultAzureCredential)")
    parser.add_argument("--name", default=None, help="the resource's name (default: derived from the schedule id)")
    parser.add_argument("-n", "--namespace", default=None, help="the resource's namespace (default: none written)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write the YAML to FILE instead of standard output")
    parser.set_defaults(func=run)


def _client(endpoint: str, account: str | None, key: str | None) -> Any:
    from azure.batch import BatchClient

    if key:
        from azure.core.credentials import AzureNamedKeyCredential

        redact.register_secret(key)
        return BatchClient(endpoint, AzureNamedKeyCredential(account or "", key))
    from azure.identity import DefaultAzureCredential

    return BatchClient(endpoint, DefaultAzureCredential())


def _fail(exc: Exception, what: str) -> CLIError:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    from batchop.batch.gateway import classify

    if isinstance(exc, ServiceRequestError | OSError):
        return CLIError(f"cannot reach Batch to {what}: {exc}", UNAVAILABLE)
    if isinstance(exc, HttpResponseError):
        err = classify(exc)
        code = UNAVAILABLE if err.reason in (cond.REASON_BATCH_UNAVAILABLE, cond.REASON_THROTTLED) else FAILURE
        return CLIError(f"cannot {what}: {err.message}", code)
    return CLIError(f"cannot {what}: {redact.redact(str(exc))}", FAILURE)


def fetch(client: Any, schedule_id: str) -> tuple[dict[str, Any], int]:
    """The schedule's wire JSON and how many of its jobs are completed."""
    from azure.core.exceptions import ResourceNotFoundError

    def raw(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
        return pipeline_response.http_response.json()

    try:
        schedule = client.get_job_schedule(schedule_id, cls=raw)
    except ResourceNotFoundError:
        raise CLIError(f"the Batch account has no job schedule {schedule_id!r} (ids are case-insensitive; list them "
                       "with az batch job-schedule list)", FAILURE) from None
    except Exception as exc:
        raise _fail(exc, f"read job schedule {schedule_id!r}") from None
    try:
        completed = sum(1 for job in client.list_jobs_from_schedule(schedule_id, select=["id", "state"])
                        if str(job.state) == "completed")
    except Exception as exc:
        raise _fail(exc, f"list the jobs of {schedule_id!r}") from None
    return dict(schedule), completed


def placeholder_resolver(storage_url: str | None) -> importer.BlobResolver:
    """Resolves blob references against ``storage_url`` with placeholder SAS, for the unchanged check: the
    check compares URLs without their SAS, so no token is minted and no storage account contacted."""

    def resolve(job_spec: Mapping[str, Any], schedule_id: str) -> dict[str, Any]:
        return blobrefs.resolve_offline(job_spec, account_url=storage_url or PLACEHOLDER_STORAGE_URL,
                                        schedule_id=schedule_id, expiry=datetime.now(UTC) + timedelta(days=7))

    return resolve


def run(args: argparse.Namespace) -> int:
    settings = config.from_env(batch_endpoint=args.account_endpoint, batch_account=args.account_name,
                               batch_key=args.account_key)
    if not settings.batch_endpoint:
        raise CLIError("no Batch account: pass --account-endpoint or set BATCHOP_BATCH_ENDPOINT", USAGE)
    client = _client(settings.batch_endpoint, settings.default_account, settings.batch_key)
    try:
        schedule, completed = fetch(client, args.schedule_id)
    finally:
        client.close()
    result = importer.import_schedule(schedule, name=args.name, namespace=args.namespace,
                                      account_endpoint=args.account_endpoint, completed_jobs=completed)
    for note in result.notes:
        print(redact.redact(str(note)), file=sys.stderr)
    storage = result.storage_accounts[0] if result.storage_accounts else os.environ.get("BATCHOP_STORAGE_URL")
    differences = importer.unchanged_check(result.resource, schedule, resolve_blobs=placeholder_resolver(storage))
    if differences:
        print("check: applying this resource would change " + ", ".join(differences) + " in Batch; edit those "
              "fields to match the live schedule if that is not intended", file=sys.stderr)
    else:
        print(f"check: applying this resource sends no write to Batch schedule {schedule['id']} (the operator's own "
              "diff finds nothing to change)", file=sys.stderr)
    text = redact.redact(yamlio.dump(result.resource))
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}: kubectl apply -f {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return OK
