"""Job-schedule JSON of any API vintage -> a BatchJobSchedule resource in today's names.

What :func:`convert` does, each step reported as a :class:`Note` (``batchop convert`` prints them):

- 2016-2020 names renamed (``targetDedicated`` -> ``targetDedicatedNodes``, ``maxTasksPerNode`` ->
  ``taskSlotsPerNode``, ``runElevated`` -> ``userIdentity.autoUser.elevationLevel``, ``blobSource`` ->
  ``httpUrl`` or a blob reference); retired features dropped with the replacement named;
- enum values put in Batch's wire case (``Spread`` -> ``spread``);
- retired images and node agents (Ubuntu 14.04 ...) replaced by the current equivalent
  (:data:`batchop.spec.images.CURRENT_UBUNTU`), unless asked to keep them;
- SAS query strings removed from every URL; URLs into Blob storage (``*.blob.core.windows.net`` or an
  Azurite-style ``http://host:port/account/container/path``) become ``blob:`` references, with a warning
  that the old tokens should be revoked; placeholder ``blobSource`` values (``yourbloburi&sas``) become a
  blob reference guessed from ``filePath``, flagged as a guess;
- response-only fields (``odata.metadata``, ``url``, ``eTag``, ``executionInfo`` ...) dropped; ``id``
  kept as ``spec.scheduleId`` and the resource named after it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from batchop.api import legacy
from batchop.api.names import GROUP, KIND, OWNER_MARKS, VERSION
from batchop.api.schema import shared_spec_schema
from batchop.spec import images
from batchwire import azurite, timestamps

NoteKind = Literal["renamed", "replaced", "dropped", "removed-sas", "guess", "warning"]

RESPONSE_FIELDS = (
    "odata.metadata", "url", "eTag", "lastModified", "creationTime", "state", "stateTransitionTime",
    "previousState", "previousStateTransitionTime", "executionInfo", "stats",
)
_SOVEREIGN_BLOB = re.compile(r"^(?P<account>[a-z0-9]{3,24})\.blob\.core\.(windows\.net|chinacloudapi\.cn|"
                             r"usgovcloudapi\.net|cloudapi\.de)$", re.IGNORECASE)
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_TASK_KEYS = ("jobManagerTask", "jobPreparationTask", "jobReleaseTask", "startTask")


@dataclass(frozen=True)
class Note:
    """One thing the conversion did or wants the user to know."""

    kind: NoteKind
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class Conversion:
    """The converted resource and what was done to get it."""

    resource: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    storage_accounts: list[str] = field(default_factory=list)
    """Blob endpoints the original URLs pointed at (the first becomes ``spec.storage.accountUrl``)."""


@dataclass(frozen=True)
class BlobLocation:
    """Where a Blob storage URL points: account endpoint, container, blob path (may be empty)."""

    account_url: str
    container: str
    path: str


def blob_location(url: str) -> BlobLocation | None:
    """Parse a Blob storage URL (account-style host or Azurite path-style); None when it is not one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    segments = [unquote(s) for s in parts.path.split("/") if s != ""]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if _SOVEREIGN_BLOB.match(parts.hostname):
        if not segments:
            return None
        return BlobLocation(f"{parts.scheme}://{netloc}", segments[0], "/".join(segments[1:]))
    path_style = parts.port is not None or parts.hostname in ("localhost", "127.0.0.1", "azurite")
    if path_style and len(segments) >= 2:
        return BlobLocation(f"{parts.scheme}://{netloc}/{segments[0]}", segments[1], "/".join(segments[2:]))
    return None


def has_sas(url: str) -> bool:
    return bool(re.search(r"[?&]sig=", url, re.IGNORECASE))


def without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _flow(value: Mapping[str, Any]) -> str:
    """``{container: application, path: task.sh}``: how the YAML reads."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"


def resource_name_for(schedule_id: str) -> str:
    """A Kubernetes name (DNS label) for a schedule id: lowercase, ``_`` and other characters -> ``-``."""
    name = _DNS_LABEL.sub("-", schedule_id.lower()).strip("-")
    return (name[:63].rstrip("-")) or "converted-schedule"


def _replace_key(mapping: dict[str, Any], old: str, items: Mapping[str, Any]) -> None:
    """Replace ``old`` by ``items`` at the same position (so a converted file reads like the original)."""
    entries = list(mapping.items())
    mapping.clear()
    for key, value in entries:
        if key == old:
            mapping.update(items)
        elif key not in items:
            mapping[key] = value


class _Converter:
    def __init__(self, *, keep_images: bool, guess_container: str) -> None:
        self.notes: list[Note] = []
        self.accounts: list[str] = []
        self.keep_images = keep_images
        self.guess_container = guess_container

    def note(self, kind: NoteKind, path: str, message: str) -> None:
        self.notes.append(Note(kind, path, message))

    # --- generic walk: enum case, legacy fields by location -------------------------------------------------

    def walk(self, value: Any, schema: Mapping[str, Any] | None, path: str) -> Any:
        schema = schema or {}
        if isinstance(value, list):
            return [self.walk(item, schema.get("items"), f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, str):
            enum = schema.get("enum")
            if enum and value not in enum:
                same = [e for e in enum if e.lower() == value.lower()]
                if same:
                    self.note("renamed", path, f"{value!r} -> {same[0]!r} (Batch's wire value)")
                    return same[0]
            return value
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = dict(value)
        key = path.rsplit(".", 1)[-1]
        if key in _TASK_KEYS:
            self.task(out, path)
        if key == "pool":
            self.pool(out, path)
        if key == "virtualMachineConfiguration":
            self.image(out, path)
        properties = schema.get("properties", {})
        for name in list(out):
            out[name] = self.walk(out[name], properties.get(name), f"{path}.{name}")
        return out

    # --- specific shapes --------------------------------------------------------------------------------

    def task(self, task: dict[str, Any], path: str) -> None:
        if "runElevated" in task:
            elevated = task.pop("runElevated")
            level = "admin" if elevated is True or str(elevated).lower() == "true" else "nonadmin"
            if "userIdentity" in task:
                self.note("dropped", f"{path}.runElevated",
                          "dropped: userIdentity is already set (runElevated was replaced by userIdentity)")
            else:
                task["runElevated"] = elevated
                _replace_key(task, "runElevated",
                             {"userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": level}}})
                self.note("renamed", f"{path}.runElevated",
                          f"runElevated: {str(elevated).lower()} -> userIdentity.autoUser {{scope: pool, "
                          f"elevationLevel: {level}}}")
        for index, resource_file in enumerate(task.get("resourceFiles") or []):
            if isinstance(resource_file, dict):
                task["resourceFiles"][index] = self.resource_file(resource_file, f"{path}.resourceFiles[{index}]")
        for index, output in enumerate(task.get("outputFiles") or []):
            if isinstance(output, dict):
                self.output_file(output, f"{path}.outputFiles[{index}]")

    def pool(self, pool: dict[str, Any], path: str) -> None:
        for old, new in (("targetDedicated", "targetDedicatedNodes"), ("maxTasksPerNode", "taskSlotsPerNode"),
                         ("targetLowPriority", "targetLowPriorityNodes")):
            if old in pool:
                if new in pool:
                    pool.pop(old)
                    self.note("dropped", f"{path}.{old}", f"dropped: {new} is already set")
                else:
                    _replace_key(pool, old, {new: pool[old]})
                    self.note("renamed", f"{path}.{old}", f"{old} -> {new}")
        for old in ("certificateReferences", "applicationLicenses"):
            if old in pool:
                pool.pop(old)
                found = legacy.legacy_field(old)
                self.note("dropped", f"{path}.{old}", found.message if found else "removed from the Batch API")
        if "cloudServiceConfiguration" in pool:
            pool.pop("cloudServiceConfiguration")
            found = legacy.legacy_field("cloudServiceConfiguration")
            self.note("dropped", f"{path}.cloudServiceConfiguration", found.message if found else "retired")
            if "virtualMachineConfiguration" not in pool:
                pool["virtualMachineConfiguration"] = {
                    "imageReference": {"publisher": "microsoftwindowsserver", "offer": "windowsserver",
                                       "sku": "2022-datacenter-core", "version": "latest"},
                    "nodeAgentSKUId": "batch.node.windows amd64",
                }
                self.note("guess", f"{path}.virtualMachineConfiguration",
                          "GUESS: Cloud Services pools ran Windows; check this Windows Server 2022 image")

    def image(self, vm: dict[str, Any], path: str) -> None:
        reference = vm.get("imageReference")
        agent = vm.get("nodeAgentSKUId")
        retired_image = isinstance(reference, Mapping) and images.retired_image(dict(reference))
        retired_agent = isinstance(agent, str) and images.retired_node_agent(agent)
        if not (retired_image or retired_agent):
            return
        current = images.CURRENT_UBUNTU
        old = (f"{reference.get('publisher')}/{reference.get('offer')}/{reference.get('sku')}"
               if isinstance(reference, Mapping) else "")
        suggestion = (f"{current.publisher}/{current.offer}/{current.sku} with nodeAgentSKUId "
                      f"{current.node_agent_sku_id!r}")
        if self.keep_images:
            self.note("warning", path, f"retired image {old} ({agent}) kept: Batch no longer creates such nodes; "
                      f"use {suggestion}")
            return
        vm["imageReference"] = current.as_reference()
        vm["nodeAgentSKUId"] = current.node_agent_sku_id
        self.note("replaced", path, f"retired image {old} ({agent}) -> {suggestion}: check that your start task "
                  "and scripts work on Ubuntu 24.04 (or pass --keep-images)")

    def _account(self, location: BlobLocation) -> bool:
        """Record the storage account; True when it is the resource's (the first one seen)."""
        if location.account_url not in self.accounts:
            self.accounts.append(location.account_url)
        return location.account_url == self.accounts[0]

    def resource_file(self, rf: dict[str, Any], path: str) -> dict[str, Any]:
        rf = dict(rf)
        if "blobSource" in rf:
            source = rf["blobSource"]
            if not isinstance(source, str) or not source.lower().startswith(("http://", "https://")):
                return self.placeholder(rf, "blobSource", str(source), path)
            if "httpUrl" in rf:
                rf.pop("blobSource")
                self.note("dropped", f"{path}.blobSource", "dropped: httpUrl is already set")
            else:
                _replace_key(rf, "blobSource", {"httpUrl": rf["blobSource"]})
                self.note("renamed", f"{path}.blobSource", "blobSource -> httpUrl")
        for key in ("httpUrl", "storageContainerUrl"):
            url = rf.get(key)
            if not isinstance(url, str):
                continue
            location = blob_location(url)
            sas = has_sas(url)
            if location is None and not url.lower().startswith(("http://", "https://")):
                return self.placeholder(rf, key, url, path)
            if location is not None and self._account(location):
                if key == "httpUrl" and location.path:
                    blob = {"container": location.container, "path": location.path}
                else:
                    prefix = rf.pop("blobPrefix", None) or location.path
                    blob = {"container": location.container}
                    if prefix:  # no prefix: the whole container
                        blob["prefix"] = prefix
                _replace_key(rf, key, {"blob": blob})
                self.note("replaced", f"{path}.{key}", f"Blob storage URL -> blob: {_flow(blob)} (the operator "
                          "mints and renews the SAS)")
                if sas:
                    self.note("removed-sas", f"{path}.{key}", "SAS token removed from the file: revoke it "
                              "(regenerate the account key it was signed with, or delete its stored access policy)")
            elif sas:
                rf[key] = without_query(url)
                self.note("removed-sas", f"{path}.{key}",
                          "SAS token removed (revoke it); this URL is not in the resource's storage account, so "
                          "grant access another way (identityReference, or a public container)")
        return rf

    def placeholder(self, rf: dict[str, Any], key: str, value: str, path: str) -> dict[str, Any]:
        """A value that is not a URL (the seed's "yourbloburi&sas"): guess a blob reference from filePath."""
        file_path = str(rf.get("filePath") or "").strip("/")
        name = file_path.rsplit("/", 1)[-1] or "FILE"
        blob = {"container": self.guess_container, "path": name}
        _replace_key(rf, key, {"blob": blob})
        self.note("warning", f"{path}.{key}", f"{value!r} is a placeholder, not a URL")
        self.note("guess", f"{path}.blob", f"GUESS: blob: {_flow(blob)} from filePath {file_path!r}: check the "
                  "container and path (upload the file with `batchop blob sync`)")
        return rf

    def output_file(self, output: dict[str, Any], path: str) -> None:
        destination = output.get("destination")
        container = destination.get("container") if isinstance(destination, Mapping) else None
        url = container.get("containerUrl") if isinstance(container, Mapping) else None
        if not isinstance(url, str):
            return
        assert isinstance(destination, dict) and isinstance(container, Mapping)
        location = blob_location(url)
        sas = has_sas(url)
        if location is not None and self._account(location):
            blob: dict[str, Any] = {"container": location.container}
            prefix = "/".join(p for p in (location.path, str(container.get("path") or "")) if p)
            if prefix:
                blob["path"] = prefix
            destination.pop("container")
            destination["blob"] = blob
            self.note("replaced", f"{path}.destination.container",
                      f"Blob storage URL -> destination.blob: {_flow(blob)}")
            if sas:
                self.note("removed-sas", f"{path}.destination.container.containerUrl",
                          "SAS token removed: revoke it (it allowed writing into the container)")
        elif sas:
            destination["container"] = {**container, "containerUrl": without_query(url)}
            self.note("removed-sas", f"{path}.destination.container.containerUrl",
                      "SAS token removed (revoke it); grant write access another way (identityReference)")


def _in_the_past(value: str, now: datetime | None) -> bool:
    try:
        return timestamps.parse(value) < (now or datetime.now(UTC))
    except ValueError:
        return False


def _refuse_unconvertible(document: Any) -> None:
    if not isinstance(document, Mapping):
        raise ValueError("expected a JSON object with schedule and jobSpecification")
    if document.get("kind") == KIND:
        raise ValueError(f"this is already a {KIND}; use `batchop render` to check it")
    if "jobSpecification" not in document:
        raise ValueError("no jobSpecification: is this an Azure Batch job schedule (POST /jobschedules body)?")


def _pop_top_level(source: dict[str, Any], converter: _Converter) -> Any:
    """Remove the fields no resource carries (response fields, ``displayName``); return the schedule's ``id``."""
    for key in RESPONSE_FIELDS:
        if key in source:
            source.pop(key)
            converter.note("dropped", key, "a field of Batch responses, not of requests")
    schedule_id = source.pop("id", None)
    if "displayName" in source:
        converter.note("dropped", "displayName", f"{source.pop('displayName')!r}: batchop does not set display names "
                       "(Batch cannot change them later)")
    return schedule_id


def _spec_of(source: dict[str, Any], schedule_id: Any, converter: _Converter, now: datetime | None) -> dict[str, Any]:
    """``spec`` from what is left of the document: ``schedule``, ``jobSpecification``, ``metadata``."""
    schema = shared_spec_schema()["properties"]
    spec: dict[str, Any] = {}
    if isinstance(schedule_id, str) and schedule_id:
        spec["scheduleId"] = schedule_id
    spec["schedule"] = converter.walk(source.pop("schedule", {}) or {}, schema["schedule"], "schedule")
    until = spec["schedule"].get("doNotRunUntil")
    if isinstance(until, str) and _in_the_past(until, now):
        converter.note("warning", "schedule.doNotRunUntil", f"{until} is in the past: the first job starts as soon "
                       "as the schedule is created (delete doNotRunUntil, or set a future time)")
    spec["jobSpecification"] = converter.walk(source.pop("jobSpecification"), schema["jobSpecification"],
                                              "jobSpecification")
    metadata = source.pop("metadata", None)
    if metadata:
        kept = [item for item in metadata if not (isinstance(item, Mapping) and item.get("name") in OWNER_MARKS)]
        if len(kept) != len(metadata):
            converter.note("dropped", "metadata", "batchop's own marks (the operator writes them)")
        if kept:
            spec["metadata"] = kept
    for key in source:
        converter.note("dropped", key, "not a job-schedule property")
    return spec


def _set_storage(spec: dict[str, Any], converter: _Converter) -> None:
    """``spec.storage.accountUrl`` for the account the blob references point into, unless it is Azurite's."""
    if converter.accounts and converter.accounts[0].rstrip("/").endswith("/" + azurite.ACCOUNT_NAME):
        converter.note("warning", "storage", f"blob references point into Azurite's {azurite.ACCOUNT_NAME}: "
                       "spec.storage is left out so the operator's default account (the local stack's Azurite) is "
                       "used")
    elif converter.accounts:
        spec["storage"] = {"accountUrl": converter.accounts[0]}
        converter.note("warning", "spec.storage.accountUrl",
                       f"{converter.accounts[0]}: blob references point into this account; add "
                       "credentialsSecretRef (a Secret with connectionString) or give the operator Entra ID access, "
                       "or delete spec.storage to use the operator's default account")


def convert(
    document: Mapping[str, Any],
    *,
    name: str | None = None,
    namespace: str | None = None,
    keep_images: bool = False,
    guess_container: str = "application",
    now: datetime | None = None,
) -> Conversion:
    """Convert a job-schedule JSON object (a create body, a GET response, any API vintage) into a resource."""
    _refuse_unconvertible(document)
    converter = _Converter(keep_images=keep_images, guess_container=guess_container)
    source = copy.deepcopy(dict(document))
    schedule_id = _pop_top_level(source, converter)
    spec = _spec_of(source, schedule_id, converter, now)
    _set_storage(spec, converter)
    resource_name = name or resource_name_for(schedule_id if isinstance(schedule_id, str) else "")
    metadata_out: dict[str, Any] = {"name": resource_name}
    if namespace:
        metadata_out["namespace"] = namespace
    resource = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata_out, "spec": spec}
    return Conversion(resource, converter.notes, converter.accounts)
