"""batchop.api.cel_rules: every CEL rule evaluated with a real CEL interpreter (cel-python) on good and bad
values, each bad value also refused by batchop.spec.validation (the rules are a subset of the webhook), and the
rules placed on the generated spec schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from batchop.api import cel_rules
from batchop.api.cel_rules import RULES, CelRule
from batchop.api.crd import spec_schema
from batchop.spec import validation

celpy = pytest.importorskip("celpy")

POOL = {
    "vmSize": "standard_d2s_v3",
    "virtualMachineConfiguration": {
        "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
        "nodeAgentSKUId": "batch.node.ubuntu 24.04"},
    "targetDedicatedNodes": 1,
}
SPEC: dict[str, Any] = {
    "schedule": {"recurrenceInterval": "PT1H"},
    "jobSpecification": {
        "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": POOL}},
        "jobManagerTask": {"id": "main", "commandLine": "/bin/sh -c 'echo hi'"},
    },
}


def evaluate(rule: CelRule, value: Any) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule.rule))
    return bool(program.evaluate({"self": celpy.json_to_cel(value)}))


def rules_at(path: str) -> list[CelRule]:
    found = [r for r in RULES if r.path == path]
    assert found, path
    return found


def spec_with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


def refused(spec: dict[str, Any]) -> list[str]:
    return [str(f) for f in validation.validate(spec) if f.is_error]


@pytest.mark.parametrize(("value", "ok"), [
    ("PT1M", True), ("PT1H", True), ("P1D", True), ("PT90S", True), ("PT1M30S", True), ("PT4H", True),
    ("PT30S", False), ("PT59S", False), ("PT0M30S", False), ("PT0H0M10.5S", False),
])
@pytest.mark.parametrize("field", ["recurrenceInterval", "startWindow"])
def test_schedule_durations_at_least_a_minute(field: str, value: str, ok: bool) -> None:
    (rule,) = rules_at(f"schedule.{field}")
    assert evaluate(rule, value) is ok
    if not ok:
        assert any(f"spec.schedule.{field}" in e for e in refused(spec_with(f"schedule.{field}", value)))


def test_blob_reference_path_or_prefix() -> None:
    for rule in rules_at("jobSpecification.jobManagerTask.resourceFiles[].blob"):
        assert evaluate(rule, {"container": "input", "path": "a.txt"})
        assert evaluate(rule, {"container": "input", "prefix": "data/"})
        assert evaluate(rule, {"container": "input"})
        assert not evaluate(rule, {"container": "input", "path": "a", "prefix": "b"})
    bad = [{"blob": {"container": "input", "path": "a", "prefix": "b"}, "filePath": "x"}]
    assert refused(spec_with("jobSpecification.jobManagerTask.resourceFiles", bad))


@pytest.mark.parametrize("task", ["jobPreparationTask", "jobReleaseTask",
                                  "poolInfo.autoPoolSpecification.pool.startTask"])
def test_blob_references_on_every_task_that_takes_resource_files(task: str) -> None:
    """The operator resolves blob references on the preparation, release and start tasks too: a good one is
    admitted, one with both path and prefix refused by the same rule as on the job manager task."""
    (rule,) = rules_at(f"jobSpecification.{task}.resourceFiles[].blob")
    assert evaluate(rule, {"container": "input", "path": "a"})
    assert not evaluate(rule, {"container": "input", "path": "a", "prefix": "b"})
    good = [{"blob": {"container": "input", "path": "a"}, "filePath": "a"}]
    assert not refused(spec_with(f"jobSpecification.{task}", {"commandLine": "x", "resourceFiles": good}))
    bad = [{"blob": {"container": "input", "path": "a", "prefix": "b"}, "filePath": "a"}]
    assert refused(spec_with(f"jobSpecification.{task}", {"commandLine": "x", "resourceFiles": bad}))


def test_output_path_without_job_id() -> None:
    (rule,) = rules_at("jobSpecification.*.outputFiles[].destination.blob")
    assert evaluate(rule, {"container": "out", "path": "{scheduleId}/x"})
    assert evaluate(rule, {"container": "out"})
    assert not evaluate(rule, {"container": "out", "path": "{jobId}/x"})
    outputs = [{"filePattern": "*", "destination": {"blob": {"container": "out", "path": "{jobId}/x"}},
                "uploadOptions": {"uploadCondition": "taskcompletion"}}]
    assert refused(spec_with("jobSpecification.jobManagerTask.outputFiles", outputs))


def test_autoscale_rules() -> None:
    targets, formula = rules_at("jobSpecification.poolInfo.autoPoolSpecification.pool")
    fixed = dict(POOL)
    scaled = {**{k: v for k, v in POOL.items() if k != "targetDedicatedNodes"}, "enableAutoScale": True,
              "autoScaleFormula": "$TargetDedicatedNodes = 1;"}
    assert evaluate(targets, fixed) and evaluate(formula, fixed)
    assert evaluate(targets, scaled) and evaluate(formula, scaled)
    both = {**scaled, "targetDedicatedNodes": 1}
    assert not evaluate(targets, both)
    no_formula = {k: v for k, v in scaled.items() if k != "autoScaleFormula"}
    assert not evaluate(formula, no_formula)
    path = "jobSpecification.poolInfo.autoPoolSpecification.pool"
    assert refused(spec_with(path, both))
    assert refused(spec_with(path, no_formula))


def test_apply_places_every_rule_on_the_generated_schema() -> None:
    schema = spec_schema()
    result = cel_rules.apply(schema)
    assert "x-kubernetes-validations" not in str(schema.get("properties", {}).get("schedule"))  # input untouched
    placed = {path: node["x-kubernetes-validations"] for path, node in cel_rules.schema_nodes(result)
              if path and "x-kubernetes-validations" in node}
    for rule in RULES:
        assert any(rule.entry() in entries for path, entries in placed.items() if cel_rules._matches(path, rule.path))
    interval = dict(cel_rules.schema_nodes(result))["schedule.recurrenceInterval"]
    assert interval["maxLength"] == cel_rules.DURATION_MAX_LENGTH
    # The output rule reaches every task that has outputFiles.
    outputs = [p for p in placed if p.endswith("outputFiles[].destination.blob")]
    assert "jobSpecification.jobManagerTask.outputFiles[].destination.blob" in outputs
    # Idempotent.
    assert cel_rules.apply(result) == result


def test_a_rule_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(LookupError, match=r"nowhere\.field"):
        cel_rules.apply(spec_schema(), (CelRule("nowhere.field", "true", "x"),))
