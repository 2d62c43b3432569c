"""examples/argocd/health.lua run by a real Lua 5.1 interpreter (Argo CD's gopher-lua is Lua 5.1), on status
documents built by the operator's own status code (batchop.controller.status, batchop.api.conditions) for every
condition
combination it produces."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchop.api import conditions as cond
from batchop.api.conditions import REASON_ACCOUNT_NOT_CONFIGURED
from batchop.batch import gateway
from batchop.controller import status
from batchop.spec import failures

lupa = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "examples/argocd/health.lua").read_text()
HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended"}
# Reasons that need the user to act: the ones the operator marks Stalled (batchop.api.conditions.STALLED_REASONS),
# which include the gateway's terminal ones and the storage checks' permanent ones.
STORAGE_PERMANENT = {"ContainerNotFound", "StorageAuthenticationFailed"}
TERMINAL = set(cond.STALLED_REASONS)
assert set(gateway.TERMINAL_REASONS) | STORAGE_PERMANENT | cond.IDENTITY_SETUP_REASONS <= TERMINAL


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run health.lua as Argo CD does: ``obj`` is a global, the chunk returns ``{status, message}``."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals()["obj"] = to_lua(runtime, obj)
    result = runtime.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


# -- status documents as the operator builds them --------------------------------------------------------------

SCHEDULE_ID = "default_wordcount"


def batch_schedule(state: str) -> dict[str, Any]:
    return {"id": SCHEDULE_ID, "state": state,
            "executionInfo": {"nextRunTime": "2026-01-01T01:00:00Z", "recentJob": {"id": f"{SCHEDULE_ID}:job-1"}}}


def batch_job(result: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A wire job and its task counts giving ``result`` (None: no job yet; "running": not finished)."""
    if result is None:
        return None, None
    job: dict[str, Any] = {"id": f"{SCHEDULE_ID}:job-1", "state": "active", "creationTime": "2026-01-01T00:00:00Z",
                           "executionInfo": {"startTime": "2026-01-01T00:00:01Z", "poolId": "auto-1"}}
    counts = {"active": 0, "running": 1, "completed": 0, "succeeded": 0, "failed": 0}
    if result in ("success", "failure", "scheduling-error"):
        job["state"] = "completed"
        job["executionInfo"]["endTime"] = "2026-01-01T00:05:00Z"
        counts = {"active": 0, "running": 0, "completed": 1, "succeeded": 1, "failed": 0}
        if result == "failure":
            counts = {"active": 0, "running": 0, "completed": 1, "succeeded": 0, "failed": 1}
        if result == "scheduling-error":
            job["executionInfo"]["schedulingError"] = {"category": "usererror", "code": "AutoPoolCreationFailed",
                                                       "message": "the vmSize is not available"}
    return job, counts


def build(*, batch_state: str | None, job_result: str | None, synced: tuple[str, str] | None,
          suspend: bool = False, generation: int = 2, observed: int | None = 2,
          ready_override: tuple[str, str] | None = None) -> dict[str, Any]:
    """A BatchJobSchedule as stored after the poller (Ready, Batch state) and the handlers (Synced) wrote."""
    job, counts = batch_job(job_result)
    doc = status.observed_status(schedule_id=SCHEDULE_ID, schedule=batch_schedule(batch_state) if batch_state else None,
                                 job=job, task_counts=counts, pool=None, previous={}, generation=observed)
    observed_ready = doc.pop("conditions")[0]
    if ready_override is not None:
        observed_ready = cond.make(cond.READY, ready_override[0], ready_override[1], "from the poller",
                                   generation=observed)
    synced_cond = None
    if synced is not None:
        synced_cond = cond.make(cond.SYNCED, synced[0], synced[1], f"{synced[1]} message", generation=observed)
    # as the status writer derives them (batchop.kube.status_writer): Ready, Reconciling, Stalled
    updates = ([synced_cond] if synced_cond else []) + cond.summarize(synced_cond, observed_ready,
                                                                      generation=observed)
    doc = {k: v for k, v in doc.items() if v is not None}
    doc["conditions"] = cond.merge([], updates, now="2026-01-01T00:00:00Z")
    if observed is not None and synced is not None and synced[0] == cond.TRUE:
        doc["observedGeneration"] = observed
    doc["scheduleId"] = SCHEDULE_ID
    return {
        "apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule",
        "metadata": {"name": "wordcount", "namespace": "default", "generation": generation},
        "spec": {"suspend": suspend, "schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": {}},
        "status": doc,
    }


SYNCED_OK = (cond.TRUE, cond.REASON_SYNCED)

SCENARIOS: list[tuple[str, dict[str, Any], str]] = [
    ("no status yet", {"batch_state": None, "job_result": None, "synced": None}, "Progressing"),
    ("exists, before its first run", {"batch_state": "active", "job_result": None, "synced": SYNCED_OK}, "Healthy"),
    ("first job running", {"batch_state": "active", "job_result": "running", "synced": SYNCED_OK}, "Healthy"),
    ("last job succeeded", {"batch_state": "active", "job_result": "success", "synced": SYNCED_OK}, "Healthy"),
    ("last job failed", {"batch_state": "active", "job_result": "failure", "synced": SYNCED_OK}, "Degraded"),
    ("auto pool failed", {"batch_state": "active", "job_result": "scheduling-error", "synced": SYNCED_OK},
     "Degraded"),
    ("suspended", {"batch_state": "disabled", "job_result": "success", "synced": SYNCED_OK, "suspend": True},
     "Suspended"),
    ("suspend applied, poller not yet", {"batch_state": "active", "job_result": None, "synced": SYNCED_OK,
                                         "suspend": True}, "Progressing"),
    ("resume applied, poller not yet", {"batch_state": "disabled", "job_result": None, "synced": SYNCED_OK},
     "Progressing"),
    ("suspend edited, not applied yet", {"batch_state": "active", "job_result": None, "synced": SYNCED_OK,
                                         "suspend": True, "observed": 1}, "Progressing"),
    ("edit not applied yet", {"batch_state": "active", "job_result": "success", "synced": SYNCED_OK,
                              "observed": 1}, "Progressing"),
    ("created, poller not yet", {"batch_state": None, "job_result": None, "synced": SYNCED_OK}, "Progressing"),
    ("completed", {"batch_state": "completed", "job_result": "success", "synced": (cond.TRUE, cond.REASON_COMPLETED)},
     "Healthy"),
    ("terminating", {"batch_state": "terminating", "job_result": None, "synced": SYNCED_OK}, "Progressing"),
    ("deleting", {"batch_state": "deleting", "job_result": None, "synced": (cond.TRUE, cond.REASON_DELETING)},
     "Progressing"),
    ("deletion pending", {"batch_state": "active", "job_result": None,
                          "synced": (cond.FALSE, cond.REASON_DELETION_PENDING)}, "Progressing"),
    ("invalid spec, nothing created", {"batch_state": None, "job_result": None,
                                       "synced": (cond.FALSE, cond.REASON_INVALID_SPEC), "observed": 2}, "Degraded"),
    ("invalid edit of an existing schedule", {"batch_state": "active", "job_result": "success",
                                              "synced": (cond.FALSE, cond.REASON_INVALID_SPEC)}, "Degraded"),
    ("id owned by someone else", {"batch_state": None, "job_result": None,
                                  "synced": (cond.FALSE, cond.REASON_ALREADY_EXISTS)}, "Degraded"),
    ("auth refused", {"batch_state": None, "job_result": None,
                      "synced": (cond.FALSE, cond.REASON_AUTHENTICATION_FAILED)}, "Degraded"),
    ("scheduleId changed", {"batch_state": "active", "job_result": None,
                            "synced": (cond.FALSE, cond.REASON_ID_IMMUTABLE)}, "Degraded"),
    ("secret missing", {"batch_state": None, "job_result": None,
                        "synced": (cond.FALSE, cond.REASON_CREDENTIALS_NOT_FOUND)}, "Degraded"),
    ("no account configured", {"batch_state": None, "job_result": None,
                               "synced": (cond.FALSE, REASON_ACCOUNT_NOT_CONFIGURED)}, "Degraded"),
    ("blob container missing", {"batch_state": None, "job_result": None,
                                "synced": (cond.FALSE, "ContainerNotFound")}, "Degraded"),
    ("storage briefly down", {"batch_state": "active", "job_result": None,
                              "synced": (cond.FALSE, "StorageUnavailable")}, "Progressing"),
    ("throttled before create", {"batch_state": None, "job_result": None,
                                 "synced": (cond.FALSE, cond.REASON_THROTTLED)}, "Progressing"),
    ("Batch down, schedule exists", {"batch_state": "active", "job_result": None,
                                     "synced": (cond.FALSE, cond.REASON_BATCH_UNAVAILABLE)}, "Progressing"),
    ("old invalid spec, new edit pending", {"batch_state": None, "job_result": None,
                                            "synced": (cond.FALSE, cond.REASON_INVALID_SPEC), "observed": 1},
     "Progressing"),
    ("observe only, exists", {"batch_state": "active", "job_result": "success",
                              "synced": (cond.UNKNOWN, cond.REASON_SKIPPED), "observed": None}, "Healthy"),
    ("observe only, disabled", {"batch_state": "disabled", "job_result": None,
                                "synced": (cond.UNKNOWN, cond.REASON_SKIPPED), "observed": None}, "Suspended"),
    ("observe only, missing", {"batch_state": None, "job_result": None,
                               "synced": (cond.UNKNOWN, cond.REASON_SKIPPED), "observed": None}, "Degraded"),
    ("active jobs quota on create", {"batch_state": None, "job_result": None,
                                     "synced": (cond.FALSE, cond.REASON_ACTIVE_JOB_QUOTA)}, "Degraded"),
    *[(f"job cannot run: {reason}", {"batch_state": "active", "job_result": "running", "synced": SYNCED_OK,
                                     "ready_override": (cond.FALSE, reason)}, "Degraded")
      for reason in sorted(cond.JOB_BLOCKED_REASONS)],
    ("job blocked, new edit being applied", {"batch_state": "active", "job_result": "running", "synced": SYNCED_OK,
                                             "ready_override": (cond.FALSE, cond.REASON_QUOTA_EXCEEDED),
                                             "observed": 1}, "Progressing"),
    ("window: deleting after delete", {"batch_state": "deleting", "job_result": None,
                                       "synced": (cond.FALSE, cond.REASON_DELETING)}, "Progressing"),
]


@pytest.mark.parametrize(("what", "kwargs", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(what: str, kwargs: dict[str, Any], expected: str) -> None:
    got, message = health(build(**kwargs))
    assert got == expected, f"{what}: {got} ({message})"
    assert message


def test_degraded_messages_say_why() -> None:
    _, message = health(build(batch_state="active", job_result="scheduling-error", synced=SYNCED_OK))
    assert "failed" in message and "vmSize" in message
    _, message = health(build(batch_state=None, job_result=None, synced=(cond.FALSE, cond.REASON_INVALID_SPEC)))
    assert message.startswith("InvalidSpec")


def test_terminal_reasons_match_the_operator() -> None:
    table = re.search(r"local TERMINAL = \{(.*?)\}", SCRIPT, re.S)
    assert table is not None
    in_lua = set(re.findall(r"(\w+) = true", table.group(1)))
    assert in_lua == TERMINAL


ALL_SYNCED = [None, SYNCED_OK, (cond.TRUE, cond.REASON_COMPLETED), (cond.TRUE, cond.REASON_DELETING),
              (cond.UNKNOWN, cond.REASON_SKIPPED), (cond.FALSE, cond.REASON_DELETION_PENDING),
              (cond.FALSE, cond.REASON_ID_IMMUTABLE), (cond.FALSE, cond.REASON_CREDENTIALS_NOT_FOUND)] + [
    (cond.FALSE, r) for r in (cond.REASON_INVALID_SPEC, cond.REASON_ALREADY_EXISTS, cond.REASON_AUTHENTICATION_FAILED,
                              cond.REASON_FORBIDDEN, cond.REASON_THROTTLED, cond.REASON_BATCH_UNAVAILABLE,
                              cond.REASON_QUOTA_REACHED, cond.REASON_CONFLICT, cond.REASON_NOT_FOUND,
                              cond.REASON_BATCH_ERROR,
                              REASON_ACCOUNT_NOT_CONFIGURED, "ContainerNotFound", "StorageAuthenticationFailed",
                              "StorageUnavailable", *sorted(cond.IDENTITY_SETUP_REASONS),
                              cond.REASON_ENTRA_SIGN_IN_FAILED)]
ALL_STATES = [None, "active", "disabled", "completed", "terminating", "deleting"]
ALL_JOBS = [None, "running", "success", "failure", "scheduling-error"]


def test_every_combination_maps_to_a_sound_health() -> None:
    count = 0
    for batch_state, job_result, synced, suspend, observed in itertools.product(
        ALL_STATES, ALL_JOBS, ALL_SYNCED, (False, True), (2, 1, None)
    ):
        if batch_state is None and job_result is not None:
            continue  # no job without a schedule
        obj = build(batch_state=batch_state, job_result=job_result, synced=synced, suspend=suspend, observed=observed)
        got, message = health(obj)
        count += 1
        where = f"{batch_state=} {job_result=} {synced=} {suspend=} {observed=}: {got} ({message})"
        assert got in HEALTH and message, where
        current = observed == 2
        if synced is not None and synced[0] == cond.FALSE and synced[1] in TERMINAL and current:
            assert got == "Degraded", where
        if got == "Healthy":
            assert batch_state in ("active", "completed"), where
            assert job_result not in ("failure", "scheduling-error"), where
            assert not suspend, where
        if got == "Suspended":
            assert batch_state == "disabled", where
        if batch_state == "active" and synced == SYNCED_OK and current and not suspend and job_result in (
            None, "running", "success"
        ):
            assert got == "Healthy", where  # Healthy as soon as the schedule exists
    assert count > 500


def test_configmap_patch_embeds_the_same_script() -> None:
    patch = yaml.safe_load((ROOT / "examples/argocd/argocd-cm-patch.yaml").read_text())
    embedded = patch["data"]["resource.customizations.health.azurebatch.dev_BatchJobSchedule"]
    assert embedded.strip() == SCRIPT.strip()


CAPTURED = ROOT / "tests/fixtures/status-captures"


@pytest.mark.parametrize("path", sorted(CAPTURED.glob("*.yaml")) if CAPTURED.exists() else [],
                         ids=lambda p: p.stem)
def test_captured_status_objects(path: Path) -> None:
    """Status objects captured from an integration run (tests/integration/test_manifests.py writes them)."""
    capture = yaml.safe_load(path.read_text())
    got, message = health(capture["object"])
    assert got == capture["expectedHealth"], message


FAILED_TASK_CASES = [
    ([{"id": "wordcount", "exitCode": 127,
       "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": "exit code failure"}}], 1),
    ([{"id": "render", "failureInfo": {"category": "usererror", "code": "ContainerInvalidImage",
                                       "message": "no such image: nope:1"}},
      {"id": "b", "exitCode": 1}], 7),
    ([{"id": "x", "failureInfo": {"code": "TaskEnded"}}], None),
    ([{"id": "y"}], 1),
]


@pytest.mark.parametrize(("tasks", "count"), FAILED_TASK_CASES)
def test_failed_job_message_names_the_task_as_the_event_does(tasks: list[dict[str, Any]], count: int | None) -> None:
    """The health message carries the JobFailed Event's words (batchop.spec.failures.job_detail)."""
    obj = build(batch_state="active", job_result="failure", synced=SYNCED_OK)
    job = obj["status"]["recentJob"]
    job["failedTasks"] = tasks
    if count is not None:
        job["failedTaskCount"] = count
    got, message = health(obj)
    assert got == "Degraded"
    assert message == f"Last job {job['id']} failed: {failures.job_detail(job)}"
    assert tasks[0]["id"] in message
