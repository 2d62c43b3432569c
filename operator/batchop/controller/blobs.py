"""Blob references of a reconcile resolved into SAS URLs, and when the SAS in a schedule must be renewed.

:class:`BlobResolver` is the reconcile's :class:`~batchop.controller.reconcile.ports.BlobResolver`: which
storage account and credential (``spec.storage`` and its Secret, else the operator's defaults, read once
at start from ``AZURE_STORAGE_CONNECTION_STRING`` / ``BATCHOP_STORAGE_URL``), then
:func:`batchop.blob.refs.resolve`. Storage and reference errors become the
:class:`~batchop.batch.gateway.BatchError` the reconcile reports (the field, and whether it is terminal).

:func:`renewal_due` tells the poller when the SAS inside a schedule's ``jobSpecification`` could expire
under the next job, so it re-mints them (a ``jobSpecification`` PATCH) a whole recurrence ahead. It goes by
``status.sas.expiresAt``, which :func:`kept_sas` keeps for every managed schedule, adopted ones included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from batchop.api import conditions as cond
from batchop.api.types import Status, StorageSpec
from batchop.batch.credentials import SecretSource
from batchop.batch.gateway import BatchError
from batchop.blob import refs as blobrefs
from batchop.blob import sas
from batchop.blob.settings import ENV_CONNECTION_STRING, ENV_STORAGE_URL
from batchop.controller.reconcile.view import ObjectView
from batchop.spec.blobrefs import BlobReferenceError, has_blob_references
from batchop.spec.sas_lifetime import held_expiry, max_wall_clock
from batchop.spec.sas_lifetime import renewal_due as sas_renewal_due
from batchwire import timestamps


def storage_defaults(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The operator-wide storage settings from its environment (read once, at start)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in (ENV_CONNECTION_STRING, ENV_STORAGE_URL) if name in environ}


class BlobResolver:
    """Resolves the blob references of a resource's job specification (see the module docstring)."""

    def __init__(self, secrets: SecretSource, defaults: Mapping[str, str], *, credential: Any = None) -> None:
        """``credential``: the process's Entra ID credential for user-delegation SAS (the one the Batch gateways
        use, :attr:`batchop.controller.accounts.AccountResolver.entra`); None lets each minter make its own."""
        self.secrets = secrets
        self.defaults = defaults
        self.credential = credential

    async def __call__(
        self, obj: ObjectView, job_spec: Mapping[str, Any], schedule_id: str
    ) -> tuple[dict[str, Any], str | None]:
        """The job specification with SAS URLs, and when they expire (None: nothing to resolve)."""
        if not has_blob_references(job_spec):
            return dict(job_spec), None
        storage = obj.spec.get("storage") or {}
        try:
            secret_data = await self._secret_data(obj)
            minter = sas.minter_for(storage, secret_data, self.defaults, credential=self.credential)
            expiry = sas.expiry_for(storage, now=datetime.now(UTC), minter=minter)
            resolved = await blobrefs.resolve(job_spec, minter=minter, schedule_id=schedule_id, expiry=expiry)
        except BatchError:
            raise
        except BlobReferenceError as err:
            raise BatchError(str(err), reason=err.reason, terminal=err.permanent, field=err.field) from err
        except sas.StorageAccessError as err:
            raise BatchError(err.message, reason=err.reason, terminal=err.permanent) from err
        except ValueError as err:  # StorageConfigError names the field
            raise BatchError(str(err), reason=cond.REASON_INVALID_SPEC, terminal=True) from err
        expires = timestamps.seconds(resolved.expires_at) if resolved.expires_at else None
        return resolved.job_specification, expires

    async def _secret_data(self, obj: ObjectView) -> dict[str, str] | None:
        """The decoded data of ``spec.storage.credentialsSecretRef``, None when none is referenced."""
        storage: StorageSpec = obj.spec.get("storage") or {}
        secret_ref = storage.get("credentialsSecretRef")
        ref = secret_ref.get("name") if secret_ref else None
        if not ref:
            return None
        found = await self.secrets.get(obj.namespace, str(ref))
        if found is None:
            raise BatchError(
                f"Secret {obj.namespace}/{ref} (spec.storage.credentialsSecretRef) not found: create it "
                "with connectionString, or accountName and accountKey",
                reason=cond.REASON_CREDENTIALS_NOT_FOUND,
                terminal=False,
            )
        return found[0]


def kept_sas(
    previous: Status, outcome_status: Status, writes: list[str], observed: Mapping[str, Any] | None = None
) -> None:
    """``status.sas`` says when the SAS *in Batch* expire: a pass that resolved fresh SAS but wrote no
    ``jobSpecification`` keeps the previous expiry (Batch still holds the SAS minted then).

    With no previous expiry (a schedule adopted as it is: someone else minted the SAS it holds), the expiry
    is read from the SAS in the ``observed`` schedule, so the poller renews them like any other; a schedule
    holding no SAS where the resource's blob references need one counts as expired now (renewed at once)."""
    if "sas" not in outcome_status:
        return
    if any(w == "create" or (w.startswith("patch") and "jobSpecification" in w) for w in writes):
        return
    before = previous.get("sas")
    if before and before.get("expiresAt"):
        outcome_status["sas"] = {"expiresAt": before["expiresAt"]}
    elif observed is not None:
        held = held_expiry(observed.get("jobSpecification") or {})
        outcome_status["sas"] = {"expiresAt": timestamps.seconds(held or datetime.now(UTC))}
    else:
        outcome_status.pop("sas")


def renewal_due(status: Mapping[str, Any] | None, schedule: Mapping[str, Any]) -> bool:
    """True when the SAS inside ``schedule``'s jobSpecification, which expire as ``status.sas`` says, must be
    re-minted now."""
    expires = ((status or {}).get("sas") or {}).get("expiresAt")
    if not expires:
        return False
    next_run = _parse_time((schedule.get("executionInfo") or {}).get("nextRunTime"))
    job_spec = schedule.get("jobSpecification") or {}
    return bool(
        sas_renewal_due(
            _parse_time(expires),
            now=datetime.now(UTC),
            next_run_time=next_run,
            max_wall_clock=max_wall_clock(job_spec),
        )
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return timestamps.parse(str(value))
    except ValueError:
        return None
