"""The operator as a process against a real kube-apiserver + etcd and the local Batch service.

Resources are driven with real ``kubectl``; Batch is checked with the unmodified ``azure-batch`` SDK and
the service's admin request counts. One operator process serves the whole module (namespaces ``opt-*``),
each test uses its own namespace.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from batchop.api.names import FINALIZER
from tests.fixtures.operator import resource_namespace, wait_for

RESYNC = 2.0


def resource(name: str, **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", None)
    body: dict[str, Any] = {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {
                "poolInfo": {
                    "autoPoolSpecification": {
                        "autoPoolIdPrefix": "opt",
                        "poolLifetimeOption": "job",
                        "pool": {
                            "vmSize": "standard_d2s_v3",
                            "targetDedicatedNodes": 1,
                            "virtualMachineConfiguration": {
                                "imageReference": {
                                    "publisher": "canonical",
                                    "offer": "ubuntu-24_04-lts",
                                    "sku": "server",
                                },
                                "nodeAgentSKUId": "batch.node.ubuntu 24.04",
                            },
                        },
                    }
                },
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo hello'"},
            },
            **spec,
        },
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


@pytest.fixture(scope="module")
def operator(operator_factory: Any) -> Any:
    return operator_factory(["opt-*"], resync=RESYNC)


@pytest.fixture
def ns(kube: Any, operator: Any) -> Iterator[str]:
    with resource_namespace(kube, "opt") as name:
        yield name


@pytest.fixture
def batch(batch_client: Any) -> Any:
    """The session's SDK client for the local Batch service, under this module's short name."""
    return batch_client


def apply(kube: Any, ns: str, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=True)


def get(kube: Any, ns: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", "bjs", name, "-n", ns, "-o", "json")
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return {}


def wait_condition(
    kube: Any, ns: str, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 40.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kube, ns, name)
        c = condition(obj, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return obj
        return None

    return wait_for(check, timeout, message=f"{ns}/{name} {type_}={status} {reason or ''}")


def schedule_or_none(batch: Any, schedule_id: str) -> Any:
    try:
        return batch.get_job_schedule(schedule_id)
    except ResourceNotFoundError:
        return None


def marks(schedule: Any) -> dict[str, str]:
    return {m.name: m.value for m in schedule.metadata or []}


def events(kube: Any, ns: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "events", "-n", ns, "-o", "json", check=True).stdout
    return json.loads(out)["items"]


def patch(kube: Any, ns: str, name: str, merge: dict[str, Any]) -> None:
    kube.kubectl("patch", "bjs", name, "-n", ns, "--type", "merge", "-p", json.dumps(merge), check=True)


# -- create, status, events --------------------------------------------------------------------------------


def test_create_writes_schedule_with_owner_marks_and_status(kube: Any, ns: str, batch: Any) -> None:
    apply(kube, ns, resource("wordcount"))
    obj = wait_condition(kube, ns, "wordcount", "Synced", "True", "Synced")
    schedule_id = obj["status"]["scheduleId"]
    assert schedule_id == f"{ns}_wordcount"
    schedule = batch.get_job_schedule(schedule_id)
    assert marks(schedule)["azurebatch.dev/owner"] == f"{ns}/wordcount"
    assert marks(schedule)["azurebatch.dev/uid"] == obj["metadata"]["uid"]
    obj = wait_condition(kube, ns, "wordcount", "Ready", "True", "Active")
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["state"] == "active"
    # the create's answer gave the state; the next run is Batch's to compute: the status cycle brings it
    wait_for(lambda: (o := get(kube, ns, "wordcount")) and o["status"].get("nextRunTime"), 30,
             message="nextRunTime in status")
    # the poller mirrors the first job (created at once) and its pool
    obj = wait_for(
        lambda: (o := get(kube, ns, "wordcount")) and (o["status"].get("recentJob") or {}).get("id") and o,
        30,
        message="recentJob in status",
    )
    assert obj["status"]["recentJob"]["id"] == f"{schedule_id}:job-1"
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert not [
        k
        for k in obj["status"]
        if k
        not in {
            "observedGeneration",
            "scheduleId",
            "state",
            "nextRunTime",
            "lastScheduleTime",
            "lastSuccessfulTime",
            "recentJob",
            "recentJobs",
            "runNow",
            "pool",
            "lastSyncTime",
            "conditions",
        }
    ]
    wait_for(lambda: any(e["reason"] == "Created" for e in events(kube, ns)), 20, message="a Created event")
    wait_for(lambda: any(e["reason"] == "JobStarted" for e in events(kube, ns)), 30, message="a JobStarted event")
    # the job (echo hello) succeeds: result, lastSuccessfulTime, event
    obj = wait_for(
        lambda: (o := get(kube, ns, "wordcount")) and o["status"].get("recentJob", {}).get("result") and o,
        90,
        message="the first job's result",
    )
    assert obj["status"]["recentJob"]["result"] == "success", obj["status"]
    assert obj["status"]["recentJob"]["taskCounts"]["succeeded"] == 1
    assert obj["status"]["lastSuccessfulTime"]


def test_status_is_not_patched_when_nothing_changes(kube: Any, ns: str, local_batch: Any) -> None:
    apply(kube, ns, resource("quiet", schedule={"recurrenceInterval": "PT1H", "doNotRunUntil": "2099-01-01T00:00:00Z"}))
    wait_condition(kube, ns, "quiet", "Ready", "True", "Active")
    first = get(kube, ns, "quiet")
    assert first is not None
    # three resync intervals later the object is unchanged (no status patch, no write to Batch)
    local_batch.reset_counts()
    wait_for(lambda: local_batch.count("list_job_schedules") >= 3, 30, message="three poll cycles")
    again = get(kube, ns, "quiet")
    assert again is not None
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    counts = local_batch.counts()
    writes = {op: v["total"] for op, v in counts.items() if not op.startswith(("list_", "get_"))}
    assert not writes, counts


def test_labels_and_other_annotations_start_no_reconcile_a_spec_edit_one(kube: Any, ns: str, local_batch: Any) -> None:
    """A reconcile is asked for by a new metadata.generation (and our own annotations), not by a label or an
    annotation of someone else's: the label's and the annotation's events come before the spec edit's on the same
    object, so once the edit is reconciled they have been handled, and only the edit read the schedule."""
    apply(kube, ns, resource("labelled"))
    wait_condition(kube, ns, "labelled", "Synced", "True")
    local_batch.reset_counts()
    kube.kubectl("label", "bjs", "labelled", "-n", ns, "team=data", check=True)
    kube.kubectl("annotate", "bjs", "labelled", "-n", ns, "example.com/touched=1", check=True)
    patch(kube, ns, "labelled", {"spec": {"successfulJobsHistoryLimit": 2}})
    wait_for(lambda: (o := get(kube, ns, "labelled")) and o["status"].get("observedGeneration") == 2, 30,
             message="the edit reconciled (observedGeneration 2)")
    assert local_batch.count("get_job_schedule") == 1, local_batch.counts()


# -- edit, suspend, resume -----------------------------------------------------------------------------------


def test_edits_patch_only_changed_properties(kube: Any, ns: str, batch: Any, local_batch: Any) -> None:
    apply(kube, ns, resource("edit"))
    obj = wait_condition(kube, ns, "edit", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    local_batch.reset_counts()
    patch(kube, ns, "edit", {"spec": {"schedule": {"recurrenceInterval": "PT2H"}}})
    wait_for(
        lambda: batch.get_job_schedule(schedule_id).schedule.recurrence_interval.total_seconds() == 7200,
        30,
        message="the new interval in Batch",
    )
    body = resource("edit")
    body["spec"]["schedule"] = {"recurrenceInterval": "PT2H"}
    body["spec"]["jobSpecification"]["jobManagerTask"]["commandLine"] = "/bin/bash -c 'echo changed'"
    body["spec"]["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]["targetDedicatedNodes"] = 2
    apply(kube, ns, body)

    def updated() -> bool:
        js = batch.get_job_schedule(schedule_id).job_specification
        pool = js.pool_info.auto_pool_specification.pool
        return js.job_manager_task.command_line.endswith("'echo changed'") and pool.target_dedicated_nodes == 2

    wait_for(updated, 30, message="command line and pool size in Batch")
    obj = wait_for(
        lambda: (o := get(kube, ns, "edit")) and o["status"].get("observedGeneration") == 3 and o,
        30,
        message="observedGeneration 3",
    )
    assert condition(obj, "Synced")["status"] == "True"
    assert local_batch.count("update_job_schedule") == 2
    assert local_batch.count("replace_job_schedule") == 0
    assert local_batch.count("create_job_schedule") == 0


def test_suspend_and_resume(kube: Any, ns: str, batch: Any) -> None:
    apply(kube, ns, resource("pause"))
    obj = wait_condition(kube, ns, "pause", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    patch(kube, ns, "pause", {"spec": {"suspend": True}})
    wait_for(lambda: batch.get_job_schedule(schedule_id).state == "disabled", 30, message="schedule disabled")
    obj = wait_condition(kube, ns, "pause", "Ready", "True", "Suspended")
    assert obj["status"]["state"] == "disabled"
    patch(kube, ns, "pause", {"spec": {"suspend": False}})
    wait_for(lambda: batch.get_job_schedule(schedule_id).state == "active", 30, message="schedule enabled")
    wait_condition(kube, ns, "pause", "Ready", "True", "Active")


# -- delete ----------------------------------------------------------------------------------------------------


def test_delete_policy_delete_removes_schedule_then_releases(kube: Any, ns: str, batch: Any) -> None:
    apply(kube, ns, resource("gone"))
    obj = wait_condition(kube, ns, "gone", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    wait_for(
        lambda: FINALIZER in (get(kube, ns, "gone") or {}).get("metadata", {}).get("finalizers", []),
        20,
        message="the finalizer",
    )
    kube.kubectl("delete", "bjs", "gone", "-n", ns, "--wait=false", check=True)
    wait_for(lambda: get(kube, ns, "gone") is None, 60, message="the object to be released")
    assert schedule_or_none(batch, schedule_id) is None


def test_delete_policy_orphan_strips_marks_and_keeps_schedule(kube: Any, ns: str, batch: Any) -> None:
    apply(kube, ns, resource("keep", deletionPolicy="Orphan", metadata=[{"name": "team", "value": "data"}]))
    obj = wait_condition(kube, ns, "keep", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    wait_for(
        lambda: FINALIZER in (get(kube, ns, "keep") or {}).get("metadata", {}).get("finalizers", []),
        20,
        message="the finalizer",
    )
    kube.kubectl("delete", "bjs", "keep", "-n", ns, "--wait=false", check=True)
    wait_for(lambda: get(kube, ns, "keep") is None, 30, message="the object to be released")
    schedule = batch.get_job_schedule(schedule_id)
    assert marks(schedule) == {"team": "data"}
    assert schedule.state == "active"
    batch.begin_delete_job_schedule(schedule_id)


# -- ownership -------------------------------------------------------------------------------------------------


def _foreign_schedule(batch: Any, schedule_id: str, metadata: list[dict[str, str]]) -> None:
    from azure.batch.models import BatchJobScheduleCreateOptions

    batch.create_job_schedule(
        BatchJobScheduleCreateOptions(
            {
                "id": schedule_id,
                "schedule": {"recurrenceInterval": "PT1H", "doNotRunUntil": "2099-01-01T00:00:00Z"},
                "jobSpecification": {"poolInfo": {"poolId": "elsewhere"}},
                "metadata": metadata,
            }
        )
    )


def test_id_collision_is_terminal_and_never_touches_the_schedule(kube: Any, ns: str, batch: Any) -> None:
    schedule_id = f"taken-{uuid.uuid4().hex[:8]}"
    _foreign_schedule(
        batch,
        schedule_id,
        [{"name": "azurebatch.dev/owner", "value": "other/thing"}, {"name": "azurebatch.dev/uid", "value": "1234"}],
    )
    before = batch.get_job_schedule(schedule_id)
    apply(kube, ns, resource("collide", scheduleId=schedule_id, annotations={"azurebatch.dev/adopt": "true"}))
    obj = wait_condition(kube, ns, "collide", "Synced", "False", "AlreadyExists")
    assert "other/thing" in condition(obj, "Synced")["message"]
    assert "scheduleId" not in obj["status"]
    assert FINALIZER not in (obj["metadata"].get("finalizers") or [])
    after = batch.get_job_schedule(schedule_id)
    assert after.etag == before.etag
    kube.kubectl("delete", "bjs", "collide", "-n", ns, "--timeout=20s", check=True)
    assert batch.get_job_schedule(schedule_id).state == "active"
    batch.begin_delete_job_schedule(schedule_id)


def test_adoption_takes_over_an_unowned_schedule(kube: Any, ns: str, batch: Any) -> None:
    schedule_id = f"legacy-{uuid.uuid4().hex[:8]}"
    _foreign_schedule(batch, schedule_id, [])
    apply(kube, ns, resource("plain", scheduleId=schedule_id))
    wait_condition(kube, ns, "plain", "Synced", "False", "AlreadyExists")
    patch(kube, ns, "plain", {"metadata": {"annotations": {"azurebatch.dev/adopt": "true"}}})
    obj = wait_condition(kube, ns, "plain", "Synced", "True")
    schedule = batch.get_job_schedule(schedule_id)
    assert marks(schedule)["azurebatch.dev/uid"] == obj["metadata"]["uid"]
    assert schedule.job_specification.job_manager_task.id == "main"
    assert any(e["reason"] == "Adopted" for e in events(kube, ns))


def test_reconcile_policy_skip_observes_and_never_writes(kube: Any, ns: str, batch: Any, local_batch: Any) -> None:
    schedule_id = f"watched-{uuid.uuid4().hex[:8]}"
    _foreign_schedule(batch, schedule_id, [])
    before = batch.get_job_schedule(schedule_id).etag
    local_batch.reset_counts()
    apply(
        kube,
        ns,
        resource(
            "observer", scheduleId=schedule_id, suspend=True, annotations={"azurebatch.dev/reconcile-policy": "skip"}
        ),
    )
    obj = wait_condition(kube, ns, "observer", "Synced", "Unknown", "ReconcileSkipped")
    obj = wait_condition(kube, ns, "observer", "Ready", "True", "Active")
    assert obj["status"]["state"] == "active"
    assert batch.get_job_schedule(schedule_id).etag == before
    writes = {op: v["total"] for op, v in local_batch.counts().items() if not op.startswith(("list_", "get_"))}
    assert not writes
    kube.kubectl("delete", "bjs", "observer", "-n", ns, "--timeout=20s", check=True)
    assert batch.get_job_schedule(schedule_id).etag == before
    batch.begin_delete_job_schedule(schedule_id)


def test_a_resource_at_rest_still_mirrors_a_change_in_batch(kube: Any, ns: str, batch: Any, local_batch: Any) -> None:
    """Cycles skip computing the status of a resource whose inputs did not move (Poller.mirror_inputs); a
    change made in Batch after several such cycles still reaches the status in the next one."""
    schedule_id = f"resting-{uuid.uuid4().hex[:8]}"
    _foreign_schedule(batch, schedule_id, [])
    apply(kube, ns, resource("resting", scheduleId=schedule_id,
                             annotations={"azurebatch.dev/reconcile-policy": "skip"}))
    obj = wait_condition(kube, ns, "resting", "Ready", "True", "Active")
    assert obj["status"]["state"] == "active"
    local_batch.reset_counts()
    wait_for(lambda: local_batch.count("list_job_schedules") >= 3, 30, message="three poll cycles at rest")
    rested = get(kube, ns, "resting")
    assert rested is not None and rested["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    batch.disable_job_schedule(schedule_id)  # behind the operator, which only observes this one
    wait_for(lambda: (get(kube, ns, "resting") or {}).get("status", {}).get("state") == "disabled", 30,
             message="status.state mirrors the disabled schedule")
    kube.kubectl("delete", "bjs", "resting", "-n", ns, "--timeout=20s", check=True)
    batch.begin_delete_job_schedule(schedule_id)


# -- drift -------------------------------------------------------------------------------------------------------


def test_out_of_band_change_and_deletion_are_put_back(kube: Any, ns: str, batch: Any) -> None:
    from azure.batch.models import BatchJobScheduleUpdateOptions

    apply(kube, ns, resource("drift"))
    obj = wait_condition(kube, ns, "drift", "Synced", "True")
    schedule_id = obj["status"]["scheduleId"]
    batch.update_job_schedule(schedule_id, BatchJobScheduleUpdateOptions({"schedule": {"recurrenceInterval": "PT5H"}}))
    wait_for(
        lambda: batch.get_job_schedule(schedule_id).schedule.recurrence_interval.total_seconds() == 3600,
        RESYNC * 5,
        message="the interval restored within a resync interval",
    )
    batch.disable_job_schedule(schedule_id)
    wait_for(
        lambda: batch.get_job_schedule(schedule_id).state == "active",
        RESYNC * 5,
        message="re-enabled within a resync interval",
    )
    batch.begin_delete_job_schedule(schedule_id).result()
    wait_for(
        lambda: (s := schedule_or_none(batch, schedule_id)) is not None and s.state == "active",
        30,
        message="the schedule recreated",
    )
    assert any(e["reason"] == "DriftDetected" for e in events(kube, ns))


# -- bad input ---------------------------------------------------------------------------------------------------


def test_bad_spec_is_terminal_and_sends_nothing_to_batch(kube: Any, ns: str, local_batch: Any) -> None:
    local_batch.reset_counts()
    apply(kube, ns, resource("bad", schedule={"recurrenceInterval": "PT30S"}))
    obj = wait_condition(kube, ns, "bad", "Synced", "False", "InvalidSpec")
    assert "spec.schedule.recurrenceInterval" in condition(obj, "Synced")["message"]
    assert local_batch.count("create_job_schedule") == 0
    assert local_batch.count("get_job_schedule") == 0
    assert FINALIZER not in (obj["metadata"].get("finalizers") or [])
    # fixing the spec creates it
    patch(kube, ns, "bad", {"spec": {"schedule": {"recurrenceInterval": "PT1M"}}})
    wait_condition(kube, ns, "bad", "Synced", "True")


def test_batch_400_names_the_rejected_field(kube: Any, ns: str, local_batch: Any) -> None:
    # maxParallelTasks 0 passes the CRD schema and the model's checks; Batch answers 400 InvalidPropertyValue
    body = resource("rejected")
    body["spec"]["jobSpecification"]["maxParallelTasks"] = 0
    apply(kube, ns, body)
    obj = wait_condition(kube, ns, "rejected", "Synced", "False", "InvalidSpec")
    message = condition(obj, "Synced")["message"]
    assert "maxParallelTasks" in message and "InvalidPropertyValue" in message
    assert FINALIZER not in (obj["metadata"].get("finalizers") or [])
    assert "scheduleId" not in obj["status"]
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events(kube, ns))


# -- credentials ---------------------------------------------------------------------------------------------


def _secret(kube: Any, ns: str, name: str, account: str, key: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {
            "accountName": base64.b64encode(account.encode()).decode(),
            "accountKey": base64.b64encode(key.encode()).decode(),
        },
    }
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=True)


def test_missing_secret_then_created(kube: Any, ns: str, local_batch: Any, operator: Any) -> None:
    account = {"endpoint": local_batch.endpoint, "credentialsSecretRef": {"name": "batch-credentials"}}
    apply(kube, ns, resource("secretive", account=account))
    obj = wait_condition(kube, ns, "secretive", "Synced", "False", "CredentialsNotFound")
    assert "batch-credentials" in condition(obj, "Synced")["message"]
    _secret(kube, ns, "batch-credentials", local_batch.account, local_batch.key)
    wait_condition(kube, ns, "secretive", "Synced", "True", timeout=60)
    assert local_batch.key not in operator.logs()


def test_rotated_secret_takes_effect_without_restart(kube: Any, ns: str, local_batch: Any, operator: Any) -> None:
    wrong = base64.b64encode(b"not-the-right-key-at-all-000000").decode()
    _secret(kube, ns, "rotating", local_batch.account, wrong)
    account = {"endpoint": local_batch.endpoint, "credentialsSecretRef": {"name": "rotating"}}
    apply(kube, ns, resource("rotate", account=account))
    obj = wait_condition(kube, ns, "rotate", "Synced", "False", "AuthenticationFailed")
    assert wrong not in json.dumps(obj)
    _secret(kube, ns, "rotating", local_batch.account, local_batch.key)
    wait_condition(kube, ns, "rotate", "Synced", "True", timeout=60)
    assert wrong not in operator.logs()
    assert local_batch.key not in operator.logs()


# -- API budget ------------------------------------------------------------------------------------------------


def test_requests_per_poll_cycle_do_not_grow_with_the_number_of_schedules(kube: Any, ns: str, local_batch: Any) -> None:
    n = 20
    quiet = {"recurrenceInterval": "PT1H", "doNotRunUntil": "2099-01-01T00:00:00Z"}
    docs = [resource(f"many-{i}", schedule=quiet) for i in range(n)]
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
                 check=True)

    def all_ready() -> bool:
        items = json.loads(kube.kubectl("get", "bjs", "-n", ns, "-o", "json", check=True).stdout)["items"]
        return len(items) == n and all(condition(o, "Ready").get("status") == "True" for o in items)

    wait_for(all_ready, 120, 1.0, message=f"{n} resources Ready")
    local_batch.reset_counts()
    wait_for(lambda: local_batch.count("list_job_schedules") >= 5, 30, message="five poll cycles")
    counts = {op: v["total"] for op, v in local_batch.counts().items()}
    cycles = counts["list_job_schedules"]
    # per cycle: one schedule list + one running-jobs list (no job yet, so no pool list); nothing per schedule
    per_cycle = sum(counts.values()) / cycles
    print(f"Batch requests per poll cycle with {n} schedules: {per_cycle:.2f} ({counts})")
    assert per_cycle <= 2.5, counts
    assert not {op for op in counts if op.startswith("get_") or op.endswith("_task_counts")}, counts


def test_liveness_shows_the_watch_listed_and_nothing_failing(operator: Any) -> None:
    import urllib.request

    def health() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))

    watch = wait_for(lambda: (h := health().get("watch")) and h["listed"] and h, 30, message="the watch listed")
    assert watch["failing"] == {}, watch
