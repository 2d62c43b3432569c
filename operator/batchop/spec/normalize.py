"""Desired and observed Batch schedules in one comparable form.

Batch does not echo a request back as sent: it writes durations in their shortest form (``PT1H`` for
``PT01H00M00S``), fills in read-time defaults (``priority: 0``, ``maxWallClockTime`` = TimeSpan.MaxValue,
``killJobOnCompletion: true`` ...), adds server fields (``url``, ``eTag``, ``executionInfo`` ...), and
keeps ``metadata`` as a set. A reconciler that compared raw JSON would update forever, so both sides go
through :func:`comparable` first:

- only ``schedule``, ``jobSpecification`` and ``metadata`` are kept (the properties a PATCH can change);
- durations normalised (:func:`batchwire.durations.normalize`), timestamps re-formatted, enum values in
  their canonical case, guided by the CRD schema;
- Batch's read-time defaults applied on both sides (:mod:`batchwire.defaults`, plus pool and task
  defaults below): applying a default symmetrically is harmless whether or not Batch returns it;
- ``None``, ``{}`` and ``[]`` values dropped (Batch omits them);
- SAS query strings stripped from every URL, so a renewed SAS alone never looks like a change;
- ``metadata`` sorted by name; every other list (``environmentSettings`` ...) keeps its order, as Batch does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from batchop.api.patterns import DURATION_PATTERN
from batchop.api.schema import shared_spec_schema
from batchwire import defaults, durations, timestamps
from batchwire.redact import strip_sas

COMPARED_PROPERTIES = ("schedule", "jobSpecification", "metadata")


# Read-time defaults Batch documents beyond those in batchwire.defaults.
AUTO_POOL_DEFAULTS: dict[str, Any] = {"keepAlive": False}
POOL_DEFAULTS: dict[str, Any] = {
    "taskSlotsPerNode": 1,
    "enableAutoScale": False,
    "enableInterNodeCommunication": False,
    "resizeTimeout": "PT15M",
}
FIXED_POOL_DEFAULTS: dict[str, Any] = {"targetDedicatedNodes": 0, "targetLowPriorityNodes": 0}
START_TASK_DEFAULTS: dict[str, Any] = {"maxTaskRetryCount": 0, "waitForSuccess": True}
PREPARATION_TASK_DEFAULTS: dict[str, Any] = {
    "id": "jobpreparation",
    "waitForSuccess": True,
    "rerunOnNodeRebootAfterSuccess": True,
}
RELEASE_TASK_DEFAULTS: dict[str, Any] = {"id": "jobrelease", "maxWallClockTime": "PT15M", "retentionTime": "P7D"}
AUTO_USER_DEFAULTS: dict[str, Any] = {"elevationLevel": "nonadmin"}


def plain(value: Any) -> Any:
    """A deep copy made of plain ``dict`` and ``list`` only.

    SDK models are ``MutableMapping`` s, not ``dict`` s, and the raw JSON behind a listed model (``_data``)
    can hold nested models: normalising them as they are would skip the defaults of nested objects.
    """
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value



def _setdefaults(target: Any, values: Mapping[str, Any]) -> None:
    if isinstance(target, dict):
        for key, value in values.items():
            if target.get(key) is None:
                target[key] = copy.deepcopy(value)


def _apply_task_defaults(task: Any) -> None:
    if isinstance(task, dict):
        user = task.get("userIdentity")
        if isinstance(user, dict):
            _setdefaults(user.get("autoUser"), AUTO_USER_DEFAULTS)


def with_defaults(job_specification: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a ``jobSpecification`` with every read-time default Batch fills in."""
    job = defaults.apply_job_specification_defaults(plain(job_specification))
    auto = (job.get("poolInfo") or {}).get("autoPoolSpecification")
    if isinstance(auto, dict):
        _setdefaults(auto, AUTO_POOL_DEFAULTS)
        pool = auto.get("pool")
        if isinstance(pool, dict):
            _setdefaults(pool, POOL_DEFAULTS)
            if pool.get("enableAutoScale") is not True:
                _setdefaults(pool, FIXED_POOL_DEFAULTS)
            start = pool.get("startTask")
            if isinstance(start, dict):
                _setdefaults(start, START_TASK_DEFAULTS)
                _apply_task_defaults(start)
    preparation = job.get("jobPreparationTask")
    if isinstance(preparation, dict):
        _setdefaults(preparation, PREPARATION_TASK_DEFAULTS)
        _setdefaults(preparation.setdefault("constraints", {}), defaults.TASK_CONSTRAINTS_DEFAULTS)
        _apply_task_defaults(preparation)
    release = job.get("jobReleaseTask")
    if isinstance(release, dict):
        _setdefaults(release, RELEASE_TASK_DEFAULTS)
        _apply_task_defaults(release)
    _apply_task_defaults(job.get("jobManagerTask"))
    return job


def _normalize(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """Recursively normalise ``value``; returns None for values Batch would omit."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = properties.get(key) or (additional if isinstance(additional, Mapping) else None)
            normalized = _normalize(item, sub)
            if normalized is not None:
                out[key] = normalized
        return out or None
    if isinstance(value, list | tuple):
        items = [_normalize(item, schema.get("items")) for item in value]
        kept = [item for item in items if item is not None]
        return kept or None
    if isinstance(value, datetime):
        return timestamps.format(value)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00.0000000Z"
    if isinstance(value, str):
        return _normalize_string(value, schema)
    return value


def _normalize_string(value: str, schema: Mapping[str, Any]) -> str:
    if schema.get("pattern") == DURATION_PATTERN and durations.is_duration(value):
        return durations.normalize(value)
    if schema.get("format") == "date-time":
        try:
            return timestamps.format(timestamps.parse(value))
        except ValueError:
            return value
    enum = schema.get("enum")
    if enum:
        for member in enum:
            if member.lower() == value.lower():
                return str(member)
    if value.lower().startswith(("http://", "https://")):
        return strip_sas(value)
    return value


def comparable_property(name: str, value: Any) -> Any:
    """One top-level property (``schedule``, ``jobSpecification`` or ``metadata``) in comparable form."""
    if name not in COMPARED_PROPERTIES:
        raise ValueError(f"{name!r} is not compared; only {COMPARED_PROPERTIES}")
    schema = shared_spec_schema()["properties"][name]
    value = plain(value)
    if name == "jobSpecification" and isinstance(value, Mapping):
        value = with_defaults(value)
    normalized = _normalize(value, schema)
    if name == "metadata":
        return sorted(normalized or [], key=lambda item: (str(item.get("name")), str(item.get("value"))))
    if name == "schedule":
        return normalized or {}
    return normalized or {}


def comparable(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Batch schedule (a create body, or a GET of the schedule) reduced to what a PATCH can change.

    Equal results mean "no write needed". Works on partial bodies: only properties present are returned.
    """
    return {name: comparable_property(name, body[name]) for name in COMPARED_PROPERTIES if name in body}
