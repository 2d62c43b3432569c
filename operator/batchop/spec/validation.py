"""Every check of a BatchJobSchedule spec that can run without Kubernetes or Azure.

The operator runs :func:`validate` before any Azure call, the admission webhook before the API server
stores a resource, and ``batchop render`` offline: one definition, so they agree. The checks:

- the CRD's own schema (generated from the azure-batch SDK, read from :mod:`batchop.api.schema`): types, required
  fields, enums, patterns, lengths, minimums, one-of rules; unknown fields (which a Kubernetes 1.20 API
  server would prune silently) with the closest known name suggested;
- field names of earlier Batch API versions anywhere in the tree (``targetDedicated`` ...), with the
  modern name in the message (:mod:`batchop.api.legacy`);
- what Batch documents in prose: ``recurrenceInterval`` and ``startWindow`` at least one minute, pool
  sizing, blob references, reserved metadata names;
- traps that are legal but almost certainly wrong, as warnings: a job that never finishes
  (``killJobOnCompletion: false`` without a time limit) blocks every later recurrence; retired images;
  SAS tokens pasted into the spec.

Each finding is a :class:`FieldError` whose ``path`` names the field (``spec.jobSpecification...``) and
whose ``message`` names the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from batchop.api import legacy
from batchop.api.legacy import is_forbidden
from batchop.api.names import ANNOTATION_ADOPT, ANNOTATION_RECONCILE_POLICY, RESERVED_METADATA_PREFIX
from batchop.api.patterns import (
    BATCH_ID_PATTERN,
    BATCH_ID_PREFIX_PATTERN,
    BLOB_CONTAINER_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    SCHEDULE_ID_PATTERN,
)
from batchop.api.schema import shared_spec_schema
from batchop.spec import blobrefs, images, naming, sas_lifetime
from batchwire import durations, timestamps

Severity = Literal["error", "warning"]


_MINUTE_TICKS = durations.TICKS_PER_MINUTE
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class FieldError:
    """One finding about one field."""

    path: str
    """Where, e.g. ``spec.jobSpecification.poolInfo.autoPoolSpecification.pool.targetDedicated``."""
    message: str
    """What is wrong and how to fix it."""
    severity: Severity = "error"
    """``error`` refuses the resource; ``warning`` is reported and the resource is accepted."""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        tag = "" if self.is_error else "warning: "
        return f"{tag}{self.path}: {self.message}"


def errors_only(findings: Iterable[FieldError]) -> list[FieldError]:
    """The findings that refuse the resource."""
    return [f for f in findings if f.is_error]


def warnings_only(findings: Iterable[FieldError]) -> list[FieldError]:
    return [f for f in findings if not f.is_error]


def format_findings(findings: Iterable[FieldError]) -> str:
    """One finding per line, errors first (for CLI output, conditions and webhook responses)."""
    ordered = sorted(findings, key=lambda f: (not f.is_error, f.path))
    return "\n".join(str(f) for f in ordered)


def validate(spec: Mapping[str, Any]) -> list[FieldError]:
    """Check a BatchJobSchedule ``spec``; paths start with ``spec.``. Errors and warnings, schema order."""
    out: list[FieldError] = []
    if not isinstance(spec, Mapping):
        return [FieldError("spec", f"expected an object (mapping), got {_kind(spec)}")]
    _SchemaChecker(out).check(spec, shared_spec_schema(), "spec")
    _check_semantics(spec, out)
    return out


def validate_resource(resource: Mapping[str, Any]) -> list[FieldError]:
    """Check a whole BatchJobSchedule object: apiVersion/kind, name, the batchop annotations, the spec."""
    from batchop.api.names import GROUP, KIND, VERSION

    out: list[FieldError] = []
    api_version = resource.get("apiVersion")
    if api_version != f"{GROUP}/{VERSION}":
        out.append(FieldError("apiVersion", f"expected {GROUP}/{VERSION}, got {api_version!r}"))
    if resource.get("kind") != KIND:
        out.append(FieldError("kind", f"expected {KIND}, got {resource.get('kind')!r}"))
    metadata = resource.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not re.match(DNS_SUBDOMAIN_PATTERN, name) or len(name) > 253:
        out.append(FieldError("metadata.name", "a lowercase DNS subdomain name is required (e.g. wordcount)"))
    annotations = metadata.get("annotations") or {} if isinstance(metadata, Mapping) else {}
    policy = annotations.get(ANNOTATION_RECONCILE_POLICY)
    if policy is not None and policy not in ("manage", "skip"):
        out.append(
            FieldError(
                f"metadata.annotations[{ANNOTATION_RECONCILE_POLICY}]",
                f"must be 'manage' (default) or 'skip' (observe only), got {policy!r}",
            )
        )
    adopt = annotations.get(ANNOTATION_ADOPT)
    if adopt is not None and adopt not in ("true", "false"):
        out.append(FieldError(f"metadata.annotations[{ANNOTATION_ADOPT}]", f"must be 'true' or 'false', got {adopt!r}"))
    if "spec" not in resource:
        out.append(FieldError("spec", "required: the schedule and jobSpecification of the Batch job schedule"))
    else:
        out.extend(validate(resource["spec"]))
    return out


# --- schema walk -------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _closest(name: str, known: Iterable[str]) -> str | None:
    known = [k for k in known]
    for candidate in known:
        if candidate.lower() == name.lower():
            return candidate
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


class _SchemaChecker:
    """Walks a value alongside the CRD's structural schema, collecting :class:`FieldError`."""

    def __init__(self, out: list[FieldError]) -> None:
        self.out = out

    def error(self, path: str, message: str, severity: Severity = "error") -> None:
        self.out.append(FieldError(path, message, severity))

    def check(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        kind = schema.get("type")
        if kind == "object":
            self._object(value, schema, path)
        elif kind == "array":
            if not isinstance(value, list):
                self.error(path, f"expected a list, got {_kind(value)}")
                return
            for index, item in enumerate(value):
                self.check(item, schema["items"], f"{path}[{index}]")
        elif kind == "string":
            self._string(value, schema, path)
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(path, f"expected an integer, got {_kind(value)} ({value!r})")
                return
            self._bounds(value, schema, path)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(path, f"expected a number, got {_kind(value)}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                hint = " (write true or false without quotes)" if str(value).lower() in ("true", "false") else ""
                self.error(path, f"expected a boolean, got {_kind(value)} ({value!r}){hint}")

    def _bounds(self, value: int, schema: Mapping[str, Any], path: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            self.error(path, f"must be at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            self.error(path, f"must be at most {schema['maximum']}, got {value}")

    def _object(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        if not isinstance(value, Mapping):
            self.error(path, f"expected an object (mapping), got {_kind(value)}")
            return
        properties: Mapping[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        saw_forbidden = False
        for key, item in value.items():
            child = f"{path}.{key}"
            if key in properties:
                sub = properties[key]
                if is_forbidden(sub):
                    saw_forbidden = True
                    found = legacy.legacy_field(key)
                    pasted = legacy.PASTED_TOP_LEVEL.get(key) if path == "spec" else None
                    self.error(child, pasted or (found.message if found else sub["description"]))
                elif item is not None:  # the API server drops nulls of non-nullable fields
                    self.check(item, sub, child)
            elif isinstance(additional, Mapping):
                if item is not None:
                    self.check(item, additional, child)
            else:
                saw_forbidden = True
                self._unknown(key, properties, child)
        for name in schema.get("required", []):
            if value.get(name) is None and name in properties:
                description = str(properties[name].get("description", "")).split(". ")[0]
                self.error(f"{path}.{name}", f"required field is missing ({description})")
        one_of = schema.get("oneOf")
        if one_of and not saw_forbidden:
            options = [option["required"][0] for option in one_of]
            present = [name for name in options if value.get(name) is not None]
            if len(present) != 1:
                seen = f"found {', '.join(present)}" if present else "none is set"
                self.error(path, f"set exactly one of {', '.join(options)} ({seen})")

    def _unknown(self, key: str, properties: Mapping[str, Any], path: str) -> None:
        found = legacy.legacy_field(key)
        if found:
            where = f" (it belongs in {found.models[0]})" if found.models else ""
            self.error(path, f"{found.message}{where}")
            return
        known = [name for name, sub in properties.items() if not is_forbidden(sub)]
        suggestion = _closest(key, known)
        hint = f"did you mean '{suggestion}'?" if suggestion else f"known fields here: {', '.join(sorted(known))}"
        self.error(path, f"unknown field '{key}' (Kubernetes would drop it silently): {hint}")

    def _string(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        if isinstance(value, datetime | date) and schema.get("format") == "date-time":
            return  # a YAML timestamp: kubectl sends it as the string it was written as
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {_kind(value)} ({value!r}); quote it in YAML")
            return
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            same = [e for e in enum if e.lower() == value.lower()]
            if same:
                self.error(path, f"write {same[0]!r} (Batch's wire value), not {value!r}")
            else:
                self.error(path, f"{value!r} is not one of {', '.join(repr(e) for e in enum)}")
            return
        pattern = schema.get("pattern")
        if pattern == DURATION_PATTERN:
            self._duration(value, path)
            return
        if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
            self.error(path, f"{value!r} is not an RFC 3339 timestamp; write e.g. 2026-01-01T05:30:00Z")
            return
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.error(path, f"must be at least {schema['minLength']} characters long, got {value!r}")
            return
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.error(path, f"must be at most {schema['maxLength']} characters long ({len(value)} given)")
            return
        if pattern and not re.search(pattern, value):
            self.error(path, _pattern_message(pattern, value))

    def _duration(self, value: str, path: str) -> None:
        try:
            durations.parse_ticks(value)
        except durations.DurationError as exc:
            self.error(path, str(exc))
            return
        if not re.match(DURATION_PATTERN, value):
            self.error(path, f"write the duration in upper case without a sign, e.g. {durations.normalize(value)!r}")


def _pattern_message(pattern: str, value: str) -> str:
    if pattern == BLOB_CONTAINER_PATTERN:
        return (
            f"{value!r} is not a valid blob container name: use 3-63 lowercase letters, digits and single "
            "hyphens, starting and ending with a letter or digit"
        )
    if pattern == DNS_SUBDOMAIN_PATTERN:
        return f"{value!r} is not a valid Secret name: use lowercase letters, digits, '-' and '.'"
    if pattern == SCHEDULE_ID_PATTERN:
        return naming.schedule_id_error(value) or f"{value!r} is not a valid schedule id"
    if pattern.startswith("^https?://"):
        return f"{value!r} is not an http(s) URL"
    if pattern in (BATCH_ID_PATTERN, BATCH_ID_PREFIX_PATTERN):
        return f"{value!r} may contain only letters, digits, hyphens and underscores"
    return f"{value!r} does not match the pattern {pattern}"


# --- what Batch documents in prose, and traps ------------------------------------------------------------


def _ticks(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return durations.parse_ticks(value)
    except durations.DurationError:
        return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_TIME.match(value):
        return timestamps.parse(value)
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


TASK_KEYS = ("jobManagerTask", "jobPreparationTask", "jobReleaseTask")


def tasks_of(job_spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(path relative to jobSpecification, task)`` for every task shape in a job specification."""
    found = [(key, _dict(job_spec.get(key))) for key in TASK_KEYS if isinstance(job_spec.get(key), Mapping)]
    pool = _dict(_dict(_dict(job_spec.get("poolInfo")).get("autoPoolSpecification")).get("pool"))
    if isinstance(pool.get("startTask"), Mapping):
        found.append(("poolInfo.autoPoolSpecification.pool.startTask", pool["startTask"]))
    return found


def _check_semantics(spec: Mapping[str, Any], out: list[FieldError]) -> None:
    schedule = _dict(spec.get("schedule"))
    for key in ("recurrenceInterval", "startWindow"):
        ticks = _ticks(schedule.get(key))
        if ticks is not None and ticks < _MINUTE_TICKS:
            out.append(FieldError(f"spec.schedule.{key}", f"must be at least 1 minute (PT1M), got {schedule[key]!r}"))
    until, after = _time(schedule.get("doNotRunUntil")), _time(schedule.get("doNotRunAfter"))
    if until and after and after <= until:
        out.append(FieldError("spec.schedule.doNotRunAfter", "must be later than doNotRunUntil, or no job ever runs"))

    job = _dict(spec.get("jobSpecification"))
    base = "spec.jobSpecification"
    _check_pool(job, base, out)
    _check_never_finishes(spec, job, base, out)
    for relative, task in tasks_of(job):
        task_path = f"{base}.{relative}"
        for index, resource_file in enumerate(_list(task.get("resourceFiles"))):
            _check_resource_file(_dict(resource_file), f"{task_path}.resourceFiles[{index}]", out)
        for index, output in enumerate(_list(task.get("outputFiles"))):
            _check_output_file(_dict(output), f"{task_path}.outputFiles[{index}]", out)
        _check_unique(task.get("environmentSettings"), f"{task_path}.environmentSettings", out, "warning")
    _check_unique(job.get("commonEnvironmentSettings"), f"{base}.commonEnvironmentSettings", out, "warning")

    _check_blob_references(spec, out)
    metadata = spec.get("metadata")
    _check_unique(metadata, "spec.metadata", out, "error")
    for index, item in enumerate(_list(metadata)):
        name = _dict(item).get("name")
        if isinstance(name, str) and name.startswith(RESERVED_METADATA_PREFIX):
            out.append(
                FieldError(
                    f"spec.metadata[{index}].name",
                    f"names starting with {RESERVED_METADATA_PREFIX} are written by the operator: rename {name!r}",
                )
            )


def _check_unique(items: Any, path: str, out: list[FieldError], severity: Severity) -> None:
    seen: set[str] = set()
    for index, item in enumerate(_list(items)):
        name = _dict(item).get("name")
        if isinstance(name, str):
            if name in seen:
                out.append(FieldError(f"{path}[{index}].name", f"duplicate name {name!r}: keep one", severity))
            seen.add(name)


def _check_pool(job: Mapping[str, Any], base: str, out: list[FieldError]) -> None:
    auto = _dict(_dict(job.get("poolInfo")).get("autoPoolSpecification"))
    pool = _dict(auto.get("pool"))
    path = f"{base}.poolInfo.autoPoolSpecification.pool"
    if not pool:
        return
    autoscale = pool.get("enableAutoScale") is True
    targets = [k for k in ("targetDedicatedNodes", "targetLowPriorityNodes") if pool.get(k) is not None]
    if autoscale:
        for key in targets:
            out.append(FieldError(f"{path}.{key}", "must not be set when enableAutoScale is true: remove it"))
        if not pool.get("autoScaleFormula"):
            out.append(FieldError(f"{path}.autoScaleFormula", "required when enableAutoScale is true"))
    elif not targets and not any(legacy.legacy_field(k) for k in pool):
        out.append(
            FieldError(
                f"{path}.targetDedicatedNodes",
                "set targetDedicatedNodes and/or targetLowPriorityNodes (or enableAutoScale with autoScaleFormula)",
            )
        )
    vm = _dict(pool.get("virtualMachineConfiguration"))
    agent = vm.get("nodeAgentSKUId")
    current = images.CURRENT_UBUNTU
    if isinstance(agent, str) and images.retired_node_agent(agent):
        out.append(
            FieldError(
                f"{path}.virtualMachineConfiguration.nodeAgentSKUId",
                f"{agent!r} is retired: Batch no longer creates such nodes; use {current.node_agent_sku_id!r} "
                f"with imageReference {current.publisher}/{current.offer}/{current.sku}",
                "warning",
            )
        )
    image = _dict(vm.get("imageReference"))
    if image and images.retired_image(dict(image)):
        out.append(
            FieldError(
                f"{path}.virtualMachineConfiguration.imageReference",
                f"{image.get('publisher')}/{image.get('offer')}/{image.get('sku')} is retired: use "
                f"publisher {current.publisher}, offer {current.offer}, sku {current.sku}",
                "warning",
            )
        )


def _check_never_finishes(spec: Mapping[str, Any], job: Mapping[str, Any], base: str, out: list[FieldError]) -> None:
    manager = job.get("jobManagerTask")
    has_time_limit = _dict(job.get("constraints")).get("maxWallClockTime") is not None
    terminates = job.get("onAllTasksComplete") == "terminatejob"
    keeps_running = isinstance(manager, Mapping) and manager.get("killJobOnCompletion") is False
    if has_time_limit and keeps_running and not terminates:
        limit = _dict(job.get("constraints")).get("maxWallClockTime")
        out.append(
            FieldError(
                f"{base}.jobManagerTask.killJobOnCompletion",
                f"false: each job (and a job-lifetime auto pool's nodes) stays active until maxWallClockTime "
                f"({limit}) after its job manager task ends, and ends as failed (MaxWallClockTimeExpiry); remove it "
                "(the default is true) unless other tasks are added to the job",
                "warning",
            )
        )
    if has_time_limit or terminates:
        return
    if keeps_running:
        out.append(
            FieldError(
                f"{base}.jobManagerTask.killJobOnCompletion",
                "false without jobSpecification.constraints.maxWallClockTime or onAllTasksComplete: terminatejob: "
                "each job stays active after its job manager task ends, and an active job blocks every later "
                "recurrence; remove it (the default is true), or set onAllTasksComplete: terminatejob or "
                "constraints.maxWallClockTime",
                "warning",
            )
        )
    elif manager is None and _dict(spec.get("schedule")).get("recurrenceInterval"):
        out.append(
            FieldError(
                f"{base}.jobManagerTask",
                "a recurring schedule without a jobManagerTask creates empty jobs that stay active (blocking later "
                "recurrences) unless something adds tasks; add a jobManagerTask or constraints.maxWallClockTime",
                "warning",
            )
        )


def _check_resource_file(resource_file: Mapping[str, Any], path: str, out: list[FieldError]) -> None:
    blob = _dict(resource_file.get("blob"))
    if blob:
        if blob.get("prefix") is not None and resource_file.get("blobPrefix") is not None:
            out.append(FieldError(f"{path}.blobPrefix", "use blob.prefix with a blob reference, not blobPrefix"))
    elif resource_file.get("httpUrl") is not None and not resource_file.get("filePath"):
        out.append(FieldError(f"{path}.filePath", "required with httpUrl: where to put the file on the node"))
    for key in ("httpUrl", "storageContainerUrl"):
        url = resource_file.get(key)
        if isinstance(url, str) and re.search(r"[?&]sig=", url):
            out.append(
                FieldError(
                    f"{path}.{key}",
                    "contains a SAS token, stored in plain text in Kubernetes and silently expiring: use a blob "
                    "reference (blob: {container, path}) and the operator mints and renews the SAS",
                    "warning",
                )
            )


def _check_output_file(output: Mapping[str, Any], path: str, out: list[FieldError]) -> None:
    url = _dict(_dict(output.get("destination")).get("container")).get("containerUrl")
    if isinstance(url, str) and re.search(r"[?&]sig=", url):
        out.append(
            FieldError(
                f"{path}.destination.container.containerUrl",
                "contains a SAS token, stored in plain text in Kubernetes and silently expiring: use "
                "destination.blob: {container, path} and the operator mints and renews the SAS",
                "warning",
            )
        )


def _check_blob_references(spec: Mapping[str, Any], out: list[FieldError]) -> None:
    """Blob references, checked by :mod:`batchop.spec.blobrefs` itself. The schema allows them only where the
    operator resolves them (every task with resource files; outputs on the job manager task)."""
    job = spec.get("jobSpecification")
    if not isinstance(job, Mapping):
        return
    schedule_id = spec.get("scheduleId") if isinstance(spec.get("scheduleId"), str) else "schedule"
    known = {f.path for f in out if f.is_error}
    for problem in blobrefs.validate_references(job, schedule_id=str(schedule_id)):
        covered = any(p == problem.field or p.startswith(problem.field + ".") for p in known)
        if not covered:
            out.append(FieldError(problem.field, problem.message))
    if blobrefs.has_blob_references(job):  # the SAS lifetime must outlive a recurrence plus a job
        try:
            short = sas_lifetime.check_lifetime(_dict(spec.get("storage")), _dict(spec.get("schedule")), job)
        except sas_lifetime.LifetimeError as exc:
            short = sas_lifetime.LifetimeProblem(exc.field, exc.message)
        except ValueError:  # an unparsable duration is reported by its own check
            short = None
        if short is not None and short.field not in known:
            out.append(FieldError(short.field, short.message, "warning"))
