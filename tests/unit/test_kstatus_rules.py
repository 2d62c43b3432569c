"""kstatus, ``kubectl wait --for=condition=Ready`` and Argo CD over every condition combination the operator writes.

Each status below is written by the operator's own :class:`batchop.kube.status_writer.StatusWriter` (which derives
``Ready``, ``Reconciling`` and ``Stalled``), from every ``Synced`` the reconcile can write and every ``Ready`` the
poller can observe, with and without a newer spec generation and a deletion. Then:

- :func:`kstatus` is kstatus' ``Compute`` for a custom resource, rule by rule, from sigs.k8s.io/cli-utils
  ``pkg/kstatus/status``: ``status.go`` ``Compute`` calls ``checkGenericProperties`` (``generic.go``: a
  ``metadata.deletionTimestamp`` is Terminating; ``checkGeneration``: a ``status.observedGeneration`` present and
  different from ``metadata.generation`` is InProgress ``LatestGenerationNotObserved``; then the conditions in
  list order, the first ``Reconciling=True`` InProgress, the first ``Stalled=True`` Failed), then the built-in
  types' rules (``core.go`` ``GetLegacyConditionsFn``: none for a custom resource), then ``checkReadyCondition``
  (``Ready`` True Current, False or Unknown InProgress), else Current.
- :func:`kubectl_wait` is ``kubectl wait --for=condition=Ready`` (kubectl ``pkg/cmd/wait/condition.go``
  ``checkCondition``): the first condition of that type; not met when its ``observedGeneration`` (else
  ``status.observedGeneration``) is older than ``metadata.generation``; else met when its status is True.
- Argo CD: ``examples/argocd/health.lua`` in a Lua 5.1 interpreter, as in test_health_lua.py.

The expectation is the operator's contract (docs/operator.md, "Conditions and reasons"), written here from the
reason sets of :mod:`batchop.api.conditions`, not from the code under test.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from batchop.api import conditions as cond
from batchop.kube.status_writer import StatusWriter

ROOT = Path(__file__).resolve().parents[2]

# -- the rules of the tools ---------------------------------------------------------------------------------------


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus' status of a custom resource (module docstring: the rules of status.go, generic.go, core.go)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    for c in status.get("conditions") or []:
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return "InProgress"
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return "Failed"
    for c in status.get("conditions") or []:
        if c.get("type") != "Ready":
            continue
        if c.get("status") == "True":
            return "Current"
        if c.get("status") in ("False", "Unknown"):
            return "InProgress"
    return "Current"


def kubectl_wait(obj: Mapping[str, Any], type_: str = "Ready", want: str = "True") -> bool:
    """Whether ``kubectl wait --for=condition=<type_>=<want>`` is satisfied (module docstring)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    for c in status.get("conditions") or []:
        if str(c.get("type", "")).lower() != type_.lower() or "status" not in c:
            continue
        generation = meta.get("generation")
        if generation is not None:
            observed = c.get("observedGeneration", status.get("observedGeneration"))
            if observed is not None and observed < generation:
                return False
        return str(c["status"]).lower() == want.lower()
    return False


def test_the_kstatus_helper_follows_the_source() -> None:
    """The helper's rules on kstatus' own examples (status_compute_test.go style): order of conditions matters."""
    base = {"metadata": {"generation": 1}}
    assert kstatus({**base, "status": {}}) == "Current"  # no conditions: assumed current
    assert kstatus({**base, "status": {"observedGeneration": 0}}) == "InProgress"
    assert kstatus({"metadata": {"generation": 2}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}) \
        == "Current"  # no observedGeneration: the generation check is skipped
    both = [{"type": "Stalled", "status": "True"}, {"type": "Reconciling", "status": "True"}]
    assert kstatus({**base, "status": {"conditions": both}}) == "Failed"
    assert kstatus({**base, "status": {"conditions": both[::-1]}}) == "InProgress"
    assert kstatus({**base, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}) == "InProgress"
    assert kstatus({"metadata": {"deletionTimestamp": "x"}, "status": {}}) == "Terminating"
    assert kubectl_wait({"metadata": {"generation": 2},
                         "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}}) \
        is False


# -- every combination the operator writes --------------------------------------------------------------------------

SYNCED_FALSE = sorted({
    cond.REASON_INVALID_SPEC, cond.REASON_ALREADY_EXISTS, cond.REASON_AUTHENTICATION_FAILED, cond.REASON_FORBIDDEN,
    cond.REASON_THROTTLED, cond.REASON_BATCH_UNAVAILABLE, cond.REASON_QUOTA_REACHED, cond.REASON_CONFLICT,
    cond.REASON_BATCH_ERROR, cond.REASON_NOT_FOUND, cond.REASON_ENTRA_SIGN_IN_FAILED, cond.REASON_ID_IMMUTABLE,
    cond.REASON_CREDENTIALS_NOT_FOUND, cond.REASON_ACCOUNT_NOT_CONFIGURED, cond.REASON_DELETION_PENDING,
    cond.REASON_DELETING, cond.REASON_KUBERNETES_UNAVAILABLE, cond.REASON_CONTAINER_NOT_FOUND,
    cond.REASON_STORAGE_AUTHENTICATION_FAILED, cond.REASON_STORAGE_UNAVAILABLE, cond.REASON_ACTIVE_JOB_QUOTA,
    *cond.IDENTITY_SETUP_REASONS,
})
"""Every reason a pass can end with ``Synced=False`` (the gateway's classification, credentials, storage,
Kubernetes, deletion)."""
SYNCED = [None, (cond.TRUE, cond.REASON_SYNCED), (cond.TRUE, cond.REASON_COMPLETED),
          (cond.UNKNOWN, cond.REASON_SKIPPED)] + [(cond.FALSE, r) for r in SYNCED_FALSE]
OBSERVED = [None, *[(cond.TRUE, r) for r in (cond.REASON_ACTIVE, cond.REASON_SUSPENDED, cond.REASON_COMPLETED)],
            *[(cond.FALSE, r) for r in (cond.REASON_NOT_FOUND, cond.REASON_TERMINATING, cond.REASON_DELETING,
                                        *sorted(cond.JOB_BLOCKED_REASONS))]]


class Kube:
    async def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return {"status": {}}

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return {}


async def written(synced: tuple[str, str] | None, observed: tuple[str, str] | None, *, poller_first: bool,
                  generation: int = 2) -> dict[str, Any]:
    """The status the operator's writer leaves after the first-pass mark, the poller and the reconcile wrote."""
    writer = StatusWriter(Kube())
    writer.seed("ns", "r", {})
    await writer.update("ns", "r", None, cond.first_pass(generation)[1:])  # OutcomeWriter.begin
    steps = []
    if observed is not None:
        ready = cond.make(cond.READY, observed[0], observed[1], f"observed {observed[1]}", generation=generation)
        steps.append(({"state": "active"}, [ready]))
    if synced is not None:
        synced_cond = cond.make(cond.SYNCED, synced[0], synced[1], f"pass {synced[1]}", generation=generation)
        steps.append(({"observedGeneration": generation}, [synced_cond]))
    for fields, conditions in steps if poller_first else steps[::-1]:
        await writer.update("ns", "r", fields, conditions)
    return writer.known("ns", "r") or {}


def expected_kstatus(synced: tuple[str, str] | None, observed: tuple[str, str] | None) -> str:
    """The contract (docs/operator.md), from the reason sets alone."""
    if synced is not None and synced[0] == cond.FALSE:
        return "Failed" if synced[1] in cond.STALLED_REASONS else "InProgress"
    if synced is None or observed is None:  # no pass ended yet, or nothing observed yet
        return "InProgress"
    if observed[0] == cond.TRUE:
        return "Current"
    skipped = synced is not None and synced[1] == cond.REASON_SKIPPED
    if observed[1] in cond.JOB_BLOCKED_REASONS or (skipped and observed[1] == cond.REASON_NOT_FOUND):
        return "Failed"
    return "InProgress"


def combinations() -> list[tuple[tuple[str, str] | None, tuple[str, str] | None]]:
    return list(itertools.product(SYNCED, OBSERVED))


def obj(status: Mapping[str, Any], *, generation: int, deleting: bool, suspend: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "ns", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": meta,
            "spec": {"suspend": suspend, "schedule": {}, "jobSpecification": {}}, "status": dict(status)}


def test_every_combination_is_well_formed_and_order_independent() -> None:
    async def run() -> None:
        for synced, observed in combinations():
            status = await written(synced, observed, poller_first=True)
            other = await written(synced, observed, poller_first=False)
            types = [c["type"] for c in status["conditions"]]
            where = f"{synced=} {observed=}: {status['conditions']}"
            assert cond.READY in types and types[0] == cond.READY, where  # Ready always, first
            assert types.count(cond.RECONCILING) == 1 and types.count(cond.STALLED) == 1, where
            trues = [c["type"] for c in status["conditions"] if c["type"] in (cond.RECONCILING, cond.STALLED)
                     and c["status"] == cond.TRUE]
            assert len(trues) <= 1, where  # never Reconciling and Stalled at once
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]]
            assert strip == [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in other["conditions"]], where
            if synced is not None:
                assert status["observedGeneration"] == 2, where  # written on every outcome

    asyncio.run(run())


@pytest.mark.parametrize(("lag", "deleting"), [(False, False), (True, False), (False, True)],
                         ids=["current", "newer-generation", "being-deleted"])
def test_kstatus_and_kubectl_wait_over_every_combination(lag: bool, deleting: bool) -> None:
    async def run() -> int:
        checked = 0
        for synced, observed in combinations():
            status = await written(synced, observed, poller_first=True)
            suspend = observed is not None and observed[1] == cond.REASON_SUSPENDED
            resource = obj(status, generation=3 if lag else 2, deleting=deleting, suspend=suspend)
            got = kstatus(resource)
            where = f"{synced=} {observed=} {lag=} {deleting=}: {got} {status['conditions']}"
            if deleting:
                assert got == "Terminating", where
            elif lag and "observedGeneration" in status:
                assert got == "InProgress", where
            else:
                assert got == expected_kstatus(synced, observed), where
            ready = cond.find(status["conditions"], cond.READY) or {}
            assert kubectl_wait(resource) == (ready.get("status") == cond.TRUE and not lag), where
            assert got != "Current" or ready.get("status") == cond.TRUE or lag, where
            checked += 1
        return checked

    assert asyncio.run(run()) == len(SYNCED) * len(OBSERVED)


def test_argo_cd_agrees_with_kstatus_on_every_combination() -> None:
    """Degraded exactly when kstatus says Failed; Progressing when InProgress; Healthy or Suspended when Current."""
    lupa = pytest.importorskip("lupa.lua51")
    script = (ROOT / "examples/argocd/health.lua").read_text()

    def to_lua(runtime: Any, value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(runtime, v) for v in value])
        return value

    async def run() -> None:
        for (synced, observed), lag in itertools.product(combinations(), (False, True)):
            status = await written(synced, observed, poller_first=True)
            suspend = observed is not None and observed[1] == cond.REASON_SUSPENDED
            resource = obj(status, generation=3 if lag else 2, deleting=False, suspend=suspend)
            runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
            runtime.globals()["obj"] = to_lua(runtime, resource)
            health = str(runtime.execute(script)["status"])
            want = {"Failed": {"Degraded"}, "InProgress": {"Progressing"},
                    "Current": {"Healthy", "Suspended"}}[kstatus(resource)]
            assert health in want, f"{synced=} {observed=} {lag=}: Argo {health}, kstatus {kstatus(resource)}"

    asyncio.run(run())


def test_docs_table_lists_every_reason() -> None:
    """docs/operator.md's table of conditions names every reason of batchop.api.conditions."""
    text = (ROOT / "docs/operator.md").read_text()
    table = text[text.index("### Conditions and reasons"):text.index("### Events")]
    reasons = {v for k, v in vars(cond).items() if k.startswith("REASON_") and isinstance(v, str)}
    missing = sorted(r for r in reasons if f"`{r}`" not in table)
    assert not missing, f"docs/operator.md does not list: {missing}"
