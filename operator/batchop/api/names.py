"""Every name batchop puts on a Kubernetes or Batch object: one home for each.

The API group, version and kind of the custom resource; the finalizer; the annotations users set and
the operator reads; the metadata marks the operator writes on Batch schedules and jobs so that it can
tell its own objects (and their owner) apart from anyone else's. All share :data:`PREFIX`.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "azurebatch.dev"
VERSION: Final = "v1alpha1"
KIND: Final = "BatchJobSchedule"
PLURAL: Final = "batchschedules"
SHORT_NAME: Final = "bjs"
PREFIX: Final = GROUP
"""Prefix of every label, annotation, finalizer and Batch metadata name batchop writes."""
API_GROUP_VERSION: Final = f"{GROUP}/{VERSION}"

FINALIZER: Final = f"{PREFIX}/finalizer"
"""Kept on a resource while its Batch schedule may exist; removed once Batch has let go of it."""

# Annotations a user sets on a BatchJobSchedule.
ANNOTATION_RECONCILE_POLICY: Final = f"{PREFIX}/reconcile-policy"
"""``skip`` pauses reconciliation; ``orphan`` keeps the Batch schedule when the resource is deleted."""
ANNOTATION_ADOPT: Final = f"{PREFIX}/adopt"
"""``"true"``: take over an existing schedule with the same id instead of failing with AlreadyExists."""
ANNOTATION_RUN_NOW: Final = f"{PREFIX}/run-now"
"""Any new value starts one job now, outside the recurrence (once per value)."""

# Marks (metadata name/value pairs) the operator writes on Batch schedules and jobs.
MARK_OWNER: Final = f"{PREFIX}/owner"
"""``namespace/name`` of the resource that owns the schedule."""
MARK_UID: Final = f"{PREFIX}/uid"
"""The owning resource's uid: a resource re-created under the same name is a different owner."""
MARK_SCHEDULE: Final = f"{PREFIX}/schedule"
"""On a run-now job: the schedule it was started for."""
MARK_RUN_NOW: Final = f"{PREFIX}/run-now"
"""On a run-now job: the annotation value that started it."""
OWNER_MARKS: Final = (MARK_OWNER, MARK_UID)
RESERVED_METADATA_PREFIX: Final = f"{PREFIX}/"
"""Batch metadata names under this prefix are the operator's; a spec may not set them."""

# High availability (docs/operator.md, "High availability and sharding").
LEADER_ELECTION_ID: Final = f"batchop.{GROUP}"
"""Default ``--leader-election-id``: the Lease of the one leader; shard Leases are ``<id>-shard-<k>``."""
LEASE_SHARD_INFIX: Final = "-shard-"
LEASE_MEMBERS_SUFFIX: Final = "-members"
"""``<id>-members``: the Lease whose annotations are the replicas' heartbeats (sharded mode only)."""
ANNOTATION_MEMBER_PREFIX: Final = f"members.{PREFIX}/"
"""One annotation per replica on the members Lease: ``members.azurebatch.dev/<hash>: <identity> <time>``."""
LABEL_SHARD: Final = f"{PREFIX}/shard"
"""On a BatchJobSchedule in sharded mode: the shard (``0`` .. ``N-1``) whose Lease holder reconciles it."""
SHARD_BY: Final = ("resource", "account")
"""What ``batchop run --shard-by`` spreads over the shards: resources by name (the default), or whole Batch
accounts (:func:`batchop.spec.shardkey.shard_key`)."""
