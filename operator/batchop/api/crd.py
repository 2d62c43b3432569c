"""The BatchJobSchedule CustomResourceDefinition, assembled in code: the generator behind ``crds/``.

``spec.schedule``, ``spec.jobSpecification`` and ``spec.metadata`` come from the ``azure-batch`` SDK
models (:mod:`batchop.api.sdkmodels`), amended with:

- blob references: ``resourceFiles[].blob {container, path | prefix}`` and
  ``outputFiles[].destination.blob {container, path}``, which the operator resolves into SAS URLs;
- forbidden properties for the field names of earlier API versions (``targetDedicated``, ``runElevated``,
  ``blobSource`` ..., :mod:`batchop.api.legacy`), so that the API server refuses them instead of pruning
  them silently;
- ``oneOf`` rules Batch documents in prose (one source per resource file, ``poolId`` or
  ``autoPoolSpecification``).

The operator's own fields (``scheduleId``, ``suspend``, ``deletionPolicy``, ``account``, ``storage``,
history limits), the status and printer columns are declared here, and the CEL rules of
:mod:`batchop.api.cel_rules` for a variant of the CRD for Kubernetes >= 1.25 (``crds/cel/``).
``python -m batchop.api.crdgen --write`` writes both to ``crds/``, and the ``spec`` schema to the file
:mod:`batchop.api.schema` reads at run time: nothing outside the generator and its tests imports this
module, so the SDK's models are never loaded by the operator to validate a resource.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from azure.batch import models as batch_models

from batchop.api import cel_rules
from batchop.api.legacy import PASTED_TOP_LEVEL, forbidden, legacy_fields_of
from batchop.api.names import GROUP, KIND, PLURAL, SHORT_NAME, VERSION
from batchop.api.patterns import (
    BLOB_CONTAINER_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_NOTE,
    DURATION_PATTERN,
    SCHEDULE_ID_PATTERN,
    URL_PATTERN,
)
from batchop.api.schema import JSONSchema
from batchop.api.sdkmodels import model_schema


def _secret_ref(what: str) -> JSONSchema:
    return {
        "description": f"A Secret in the resource's own namespace holding {what}. Changes to the Secret "
        "take effect without restarting the operator.",
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {
                "description": "The Secret's name.",
                "type": "string",
                "maxLength": 253,
                "pattern": DNS_SUBDOMAIN_PATTERN,
            }
        },
    }


def _container() -> JSONSchema:
    return {
        "description": "The blob container's name (3-63 lowercase letters, digits and hyphens). "
        "It must exist in the storage account.",
        "type": "string",
        "minLength": 3,
        "maxLength": 63,
        "pattern": BLOB_CONTAINER_PATTERN,
    }


RESOURCE_FILE_SOURCES = ("httpUrl", "storageContainerUrl", "autoStorageContainerName", "blob")


def resource_blob_reference() -> JSONSchema:
    return {
        "description": "batchop extension: a blob (path) or every blob under a prefix (prefix) in the storage "
        "account of spec.storage (or the operator's default). The operator replaces it with httpUrl (read SAS) "
        "or storageContainerUrl + blobPrefix (read + list SAS), and renews the SAS before it expires. "
        "Set path or prefix (neither: the whole container), not both. Allowed on the jobManagerTask, the "
        "jobPreparationTask, the jobReleaseTask and the auto pool's startTask.",
        "type": "object",
        "required": ["container"],
        "properties": {
            "container": _container(),
            "path": {"description": "The blob's name within the container, e.g. task.sh (filePath defaults to "
                     "it).", "type": "string",
                     "minLength": 1, "maxLength": 1024},
            "prefix": {"description": "A blob name prefix: every blob starting with it is downloaded "
                       "(filePath is then a directory). Without path and prefix: the whole container.",
                       "type": "string", "maxLength": 1024},
        },
        # No oneOf path/prefix: an empty prefix ("") reaches some API servers (the local stack's 1.20) as null
        # and is refused, so the whole container is written {container} alone; validation refuses both set.
    }


def output_blob_reference() -> JSONSchema:
    return {
        "description": "batchop extension: upload to this container of the storage account of spec.storage "
        "(or the operator's default). The operator replaces it with container.containerUrl (a write + create "
        "SAS) and path, and renews the SAS before it expires. Allowed on the jobManagerTask and the auto pool's "
        "startTask.",
        "type": "object",
        "required": ["container"],
        "properties": {
            "container": _container(),
            "path": {"description": "The destination blob (one file) or virtual directory (a pattern matching "
                     "several files). May contain {scheduleId} and {taskId}. Not {jobId}: every job shares the "
                     "schedule's jobSpecification; write outputs under $AZ_BATCH_JOB_ID and use a wildcard "
                     "filePattern instead.",
                     "type": "string", "maxLength": 1024},
        },
    }


def _customize(model: str, schema: JSONSchema) -> None:
    """Amend SDK model schemas: blob references, one-of rules, forbidden legacy names."""
    properties = schema["properties"]
    if model == "ResourceFile":
        properties["blob"] = resource_blob_reference()
        schema["description"] += (" Exactly one of httpUrl, storageContainerUrl, autoStorageContainerName and "
                                  "blob (batchop's blob reference) must be set.")
        schema["oneOf"] = [{"required": [name]} for name in RESOURCE_FILE_SOURCES]
    elif model == "OutputFileDestination":
        properties["blob"] = output_blob_reference()
        schema["description"] += " Set container, or blob (batchop's blob reference), not both."
        schema["oneOf"] = [{"required": ["container"]}, {"required": ["blob"]}]
    elif model == "BatchPoolInfo":
        schema["description"] += " Set exactly one of poolId and autoPoolSpecification."
        schema["oneOf"] = [{"required": ["poolId"]}, {"required": ["autoPoolSpecification"]}]
    for field in legacy_fields_of(model):
        properties[field.name] = forbidden(field.message)


def _timestamp(description: str) -> JSONSchema:
    return {"description": description, "type": "string", "format": "date-time"}


def _string(description: str, **extra: Any) -> JSONSchema:
    return {"description": description, "type": "string", **extra}


def _integer(description: str, **extra: Any) -> JSONSchema:
    return {"description": description, "type": "integer", **extra}


def _object(description: str, properties: dict[str, JSONSchema], **extra: Any) -> JSONSchema:
    return {"description": description, "type": "object", "properties": properties, **extra}


def _task_counts() -> JSONSchema:
    return _object(
        "Task counts of the job (Batch's taskcounts).",
        {name: _integer(f"Tasks {name}.") for name in ("active", "running", "completed", "succeeded", "failed")},
    )


def _job_fields() -> dict[str, JSONSchema]:
    return {
        "id": _string("The Batch job id ({scheduleId}:job-N)."),
        "state": _string("The job's Batch state: active, disabling, disabled, enabling, terminating, completed "
                         "or deleting."),
        "creationTime": _timestamp("When Batch created the job."),
        "startTime": _timestamp("When the job started."),
        "endTime": _timestamp("When the job completed."),
        "terminateReason": _string("Why the job ended (Batch's executionInfo.terminateReason, e.g. "
                                   "JMComplete, MaxWallClockTimeExpiry, TaskFailed, UserTerminate)."),
        "result": _string("The job's outcome in Batch's task-result words: success, failure; empty while it runs."),
        "taskCounts": _task_counts(),
        "poolId": _string("The pool the job runs on (an auto pool's generated id)."),
    }


def _scheduling_error() -> JSONSchema:
    return _object(
        "Why Batch could not schedule the job (for example its auto pool failed).",
        {
            "category": _string("usererror or servererror."),
            "code": _string("Batch's error code."),
            "message": _string("Batch's message."),
            "details": {
                "description": "Additional name/value details.",
                "type": "array",
                "items": _object("A detail.", {"name": _string("Name."), "value": _string("Value.")}),
            },
        },
    )


def _failed_tasks() -> dict[str, JSONSchema]:
    failure = _object(
        "Why Batch counts the task as failed (its executionInfo.failureInfo).",
        {
            "category": _string("usererror or servererror."),
            "code": _string("Batch's failure code: FailureExitCode, ContainerInvalidImage, BlobAccessDenied..."),
            "message": _string("Batch's message."),
        },
    )
    task = _object(
        "A failed task of the job.",
        {
            "id": _string("The task id (batchop logs --task ID shows its output)."),
            "exitCode": _integer("The process's exit code; absent when no process ran."),
            "failureInfo": failure,
            "startTime": _timestamp("When the task's last attempt started."),
            "endTime": _timestamp("When the task completed."),
            "retryCount": _integer("How often Batch retried the task."),
        },
        required=["id"],
    )
    return {
        "failedTasks": {
            "description": "The first failed tasks of a failed job (at most 3), read once when it failed.",
            "type": "array",
            "items": task,
        },
        "failedTaskCount": _integer("How many tasks of the job failed in all."),
    }


def _kept_job() -> JSONSchema:
    return _object(
        "A finished or running job kept by the history limits.",
        {
            **_job_fields(),
            "output": _object(
                "Where the job's output files go (from its outputFiles destinations).",
                {
                    "container": _string("Blob container."),
                    "path": _string("Blob path or prefix, with {jobId}/{taskId} expanded."),
                    "url": _string("The location's URL, without any SAS."),
                },
            ),
        },
    )


def _condition() -> JSONSchema:
    return _object(
        "A condition of the resource.",
        {
            "type": _string("Ready: the Batch schedule exists as declared and is healthy. Synced: the last "
                            "reconciliation succeeded."),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _string("CamelCase reason. Terminal reasons (the spec or the environment must change): "
                              "InvalidSpec, AlreadyExists, AuthenticationFailed, BatchRejected, SecretNotFound, "
                              "ScheduleIdImmutable. Recoverable ones are retried: Throttled, Unavailable, Pending."),
            "message": _string("Human-readable detail naming the field and the fix."),
            "observedGeneration": _integer("The metadata.generation this condition was computed from."),
            "lastTransitionTime": _timestamp("When status last changed."),
        },
        required=["type", "status"],
    )


def _pool_status() -> JSONSchema:
    return _object(
        "The pool of the most recent job.",
        {
            "id": _string("Pool id."),
            "state": _string("active or deleting."),
            "allocationState": _string("steady, resizing or stopping."),
            "vmSize": _string("The pool's VM size."),
            "currentDedicatedNodes": _integer("Dedicated nodes now in the pool."),
            "currentLowPriorityNodes": _integer("Spot/low-priority nodes now in the pool."),
            "resizeErrors": {
                "description": "Why the pool did not get the nodes it asked for (Batch's resizeErrors: "
                               "AccountCoreQuotaReached, AllocationFailed ...).",
                "type": "array",
                "items": _object("A resize error.", {"code": _string("Batch's code."),
                                                     "message": _string("Batch's message.")}),
            },
            "nodeCounts": _object(
                "The pool's nodes by state (Batch's node counts; only states with nodes, and total), read while the "
                "job is active.",
                {kind: {"description": f"{label} nodes by state (idle, running, startTaskFailed, unusable ...).",
                        "type": "object", "additionalProperties": {"type": "integer"}}
                 for kind, label in (("dedicated", "Dedicated"), ("lowPriority", "Spot/low-priority"))},
            ),
        },
    )


def status_schema() -> JSONSchema:
    """The status the operator writes (through the status subresource only)."""
    recent_job = _object(
        "The schedule's most recent job.",
        {**_job_fields(), "schedulingError": _scheduling_error(), **_failed_tasks(),
         "waitingSince": _timestamp("Set while the active job has had no task running yet: when it began "
                                    "waiting (Batch time). Ready turns False with JobStuck after --job-stuck-after.")},
    )
    return _object(
        "The observed state of the Batch job schedule, written by the operator.",
        {
            "observedGeneration": _integer("The metadata.generation last reconciled."),
            "scheduleId": _string("The Batch job schedule id in use."),
            "state": _string("The schedule's Batch state: active, disabled, terminating, completed or deleting."),
            "nextRunTime": _timestamp("When Batch will create the next job."),
            "lastScheduleTime": _timestamp("When the most recent job was created."),
            "lastSuccessfulTime": _timestamp("When the most recent successful job completed."),
            "recentJob": recent_job,
            "recentJobs": {
                "description": "The jobs kept by successfulJobsHistoryLimit and failedJobsHistoryLimit, newest first.",
                "type": "array",
                "items": _kept_job(),
            },
            "pool": _pool_status(),
            "sas": _object(
                "SAS tokens the operator minted for blob references.",
                {"expiresAt": _timestamp("When the SAS tokens now in the Batch schedule expire.")},
            ),
            "runNow": _string("The last azurebatch.dev/run-now annotation value handled (each value fires once)."),
            "lastSyncTime": _timestamp("When the operator last read the schedule from Batch."),
            "conditions": {
                "description": "Ready (the summary), Synced (the last reconcile), Reconciling and Stalled "
                               "(kstatus' abnormal-true pair); see docs/operator.md for every reason.",
                "type": "array",
                "items": _condition(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    )


def batch_schemas() -> dict[str, JSONSchema]:
    """``schedule``, ``jobSpecification`` and ``metadata`` from the SDK, with batchop's amendments."""
    return {
        "schedule": model_schema(batch_models.BatchJobScheduleConfiguration, customize=_customize),
        "jobSpecification": model_schema(batch_models.BatchJobSpecification, customize=_customize),
        "metadata": {
            "type": "array",
            "items": model_schema(batch_models.BatchMetadataItem, customize=_customize),
        },
    }


def _described_batch_schemas() -> dict[str, JSONSchema]:
    """:func:`batch_schemas` with descriptions that say how each part relates to Batch's own shapes."""
    batch = batch_schemas()
    batch["schedule"]["description"] = (
        "When Batch creates jobs (Batch's BatchJobScheduleConfiguration). " + batch["schedule"]["description"]
        + " An empty schedule runs one job at once."
    )
    batch["jobSpecification"]["description"] = (
        "The jobs Batch creates on the schedule (Batch's BatchJobSpecification, API 2025-06-01, camelCase)."
    )
    batch["metadata"]["description"] = (
        "Batch metadata of the schedule. Names starting with azurebatch.dev/ are reserved for the operator."
    )
    return batch


def _account() -> JSONSchema:
    return _object(
        "The Batch account. Default: the operator's (BATCHOP_BATCH_ENDPOINT, BATCHOP_BATCH_ACCOUNT, "
        "BATCHOP_BATCH_KEY).",
        {
            "endpoint": _string("The account endpoint, e.g. https://myaccount.westeurope.batch.azure.com.",
                                pattern=URL_PATTERN),
            "credentialsSecretRef": _secret_ref(
                "the keys accountName and accountKey (Shared Key). Without it the operator uses "
                "Microsoft Entra ID (DefaultAzureCredential, e.g. AKS workload identity)"
            ),
        },
    )


def _storage() -> JSONSchema:
    return _object(
        "The storage account that blob references point into. Default: the operator's "
        "(AZURE_STORAGE_CONNECTION_STRING or BATCHOP_STORAGE_URL).",
        {
            "accountUrl": _string("The blob endpoint, e.g. https://mystorage.blob.core.windows.net.",
                                  pattern=URL_PATTERN),
            "credentialsSecretRef": _secret_ref(
                "the key connectionString, or accountName and accountKey. Without it the operator uses "
                "Microsoft Entra ID (user delegation SAS)"
            ),
            "sasLifetime": _string(f"How long minted SAS tokens live (default P7D). {DURATION_NOTE}",
                                   pattern=DURATION_PATTERN),
        },
    )


def _operator_fields() -> dict[str, JSONSchema]:
    """The ``spec`` fields that are batchop's own, not Batch's."""
    return {
        "scheduleId": _string(
            "The Batch job schedule id: letters, digits, hyphens and underscores, at most 64 characters. "
            "Default: derived from namespace and name (namespace_name, shortened with a stable hash suffix). "
            "Immutable once set.",
            pattern=SCHEDULE_ID_PATTERN,
            maxLength=64,
        ),
        "suspend": {
            "description": "true disables the Batch schedule (no new jobs); false enables it again.",
            "type": "boolean",
            "default": False,
        },
        "deletionPolicy": _string(
            "What deleting the resource does: Delete terminates and deletes the Batch schedule (and its jobs); "
            "Orphan removes the operator's marks and leaves the schedule running in Batch.",
            enum=["Delete", "Orphan"],
            default="Delete",
        ),
        "account": _account(),
        "storage": _storage(),
        "successfulJobsHistoryLimit": _integer(
            "How many successful jobs of the schedule to keep in Batch; older ones are deleted.",
            minimum=0, default=3,
        ),
        "failedJobsHistoryLimit": _integer(
            "How many failed jobs of the schedule to keep in Batch; older ones are deleted.",
            minimum=0, default=1,
        ),
    }


@functools.cache
def _spec_schema() -> JSONSchema:
    properties: dict[str, JSONSchema] = {**_operator_fields(), **_described_batch_schemas()}
    for name, message in PASTED_TOP_LEVEL.items():
        properties[name] = forbidden(message)
    return {
        "description": "The desired Batch job schedule. schedule, jobSpecification and metadata use Azure Batch's "
        "own shapes and camelCase names (API 2025-06-01), so a job-schedule JSON can be pasted as YAML.",
        "type": "object",
        "required": ["schedule", "jobSpecification"],
        "properties": properties,
    }


def spec_schema() -> JSONSchema:
    """The generated ``spec`` schema (a fresh copy: callers may change it); the operator reads the packaged copy,
    :func:`batchop.api.schema.shared_spec_schema`."""
    return copy.deepcopy(_spec_schema())


def printer_columns() -> list[JSONSchema]:
    return [
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
         "description": "The Ready condition."},
        {"name": "Synced", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Synced")].status',
         "description": "The Synced condition: did the operator make Batch match the spec."},
        {"name": "State", "type": "string", "jsonPath": ".status.state", "description": "Batch schedule state."},
        {"name": "Interval", "type": "string", "jsonPath": ".spec.schedule.recurrenceInterval",
         "description": "Recurrence interval."},
        # a string, not a date: kubectl prints future dates as <invalid>
        {"name": "Next Run", "type": "string", "jsonPath": ".status.nextRunTime",
         "description": "When Batch creates the next job (UTC)."},
        {"name": "Last Job", "type": "string", "jsonPath": ".status.recentJob.id", "description": "Most recent job."},
        {"name": "Last Result", "type": "string", "jsonPath": ".status.recentJob.result",
         "description": "Result of the most recent job."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Pool", "type": "string", "jsonPath": ".status.pool.id", "priority": 1,
         "description": "Pool of the most recent job."},
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
         "priority": 1, "description": "The Ready condition's reason (QuotaExceeded, StartTaskFailed, ...)."},
    ]


def crd(*, cel: bool = False) -> dict[str, Any]:
    """The whole CustomResourceDefinition (apiextensions.k8s.io/v1); ``cel`` adds the rules of
    :mod:`batchop.api.cel_rules` (Kubernetes >= 1.25)."""
    spec = spec_schema()
    if cel:
        spec = cel_rules.apply(spec)
        spec["x-kubernetes-validations"] = [dict(rule) for rule in cel_rules.SPEC_RULES]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "batchop", "app.kubernetes.io/part-of": "batchop"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["azurebatch"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "An Azure Batch job schedule, reconciled by batchop: Batch runs its "
                            "jobs; the resource declares it and reports what ran.",
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }
