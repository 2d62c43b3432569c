"""The generated CRD on a real kube-apiserver (the local 1.20 one, or E2E_KUBECONFIG's), driven with kubectl."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_spec_validation import modern_spec

SEED = Path(__file__).resolve().parents[2] / "examples" / "legacy" / "create_jobsched.json"


def _resource(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule", "metadata": {"name": name},
         "spec": spec}
    )


def _namespace(kube: Any) -> str:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name, check=True)
    return name


def test_crd_is_established_and_structural(kube: Any) -> None:
    result = kube.kubectl("get", "crd", "batchschedules.azurebatch.dev", "-o", "json", check=True)
    conditions = {c["type"]: c["status"] for c in json.loads(result.stdout)["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert "NonStructuralSchema" not in conditions


def test_modern_spec_is_accepted_with_schema_defaults(kube: Any) -> None:
    ns = _namespace(kube)
    try:
        kube.kubectl("apply", "-n", ns, "-f", "-", input=_resource("wordcount", modern_spec()), check=True)
        spec = json.loads(kube.kubectl("get", "bjs", "wordcount", "-n", ns, "-o", "json", check=True).stdout)["spec"]
        assert spec["suspend"] is False and spec["deletionPolicy"] == "Delete"
        assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 1
        # nothing pruned: the blob references and every Batch field survive the round trip
        sent = modern_spec()
        assert spec["jobSpecification"] == sent["jobSpecification"]
        status = {"status": {"state": "active", "nextRunTime": "2026-11-24T01:00:00.1234567Z",
                             "recentJob": {"id": "x:job-1", "result": "Succeeded"}, "pool": {"id": "mypool-1"},
                             "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                             "lastTransitionTime": "2026-11-23T21:00:00Z"},
                                            {"type": "Synced", "status": "True", "reason": "Synced",
                                             "lastTransitionTime": "2026-11-23T21:00:00Z"}]}}
        kube.kubectl("patch", "bjs", "wordcount", "-n", ns, "--subresource=status", "--type=merge", "-p",
                     json.dumps(status), check=True)
        table = kube.kubectl("get", "bjs", "-n", ns, "-o", "wide", check=True).stdout.splitlines()
        assert table[0].split() == ["NAME", "READY", "SYNCED", "STATE", "INTERVAL", "NEXT", "RUN", "LAST",
                                    "JOB", "LAST", "RESULT", "AGE", "POOL", "REASON"]
        row = table[1].split()
        assert row[:7] == ["wordcount", "True", "True", "active", "PT4H", "2026-11-24T01:00:00.1234567Z", "x:job-1"]
        assert row[7] == "Succeeded" and row[-2:] == ["mypool-1", "Ready"]
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false")


def test_2016_names_are_refused_naming_the_modern_field(kube: Any) -> None:
    seed = json.loads(SEED.read_text())
    seed.pop("id")
    seed.pop("odata.metadata")
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=_resource("seed", seed))
    assert result.returncode != 0
    pool = "spec.jobSpecification.poolInfo.autoPoolSpecification.pool"
    for field, modern in (
        (f"{pool}.targetDedicated", "targetDedicatedNodes"),
        (f"{pool}.maxTasksPerNode", "taskSlotsPerNode"),
        ("spec.jobSpecification.jobManagerTask.runElevated", "elevationLevel: admin"),
        ("spec.jobSpecification.jobManagerTask.resourceFiles.blobSource", "httpUrl"),
    ):
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"* {field}:")]
        assert any(modern in line for line in lines), (field, result.stderr)


def test_schema_refuses_bad_values(kube: Any) -> None:
    spec = modern_spec()
    spec["schedule"]["recurrenceInterval"] = "4 hours"
    spec["jobSpecification"]["jobManagerTask"]["resourceFiles"][0]["blob"]["container"] = "Bad_Name"
    spec["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["poolLifetimeOption"] = "forever"
    del spec["jobSpecification"]["jobManagerTask"]["commandLine"]
    # --validate=false: the API server's own schema must refuse it. (kubectl's client-side check, once the
    # server publishes the CRD's OpenAPI, stops at the first error and would hide the others.)
    result = kube.kubectl("apply", "--dry-run=server", "--validate=false", "-f", "-", input=_resource("bad", spec))
    assert result.returncode != 0
    for fragment in ("spec.schedule.recurrenceInterval", "blob.container", "poolLifetimeOption",
                     "jobManagerTask.commandLine: Required value"):
        assert fragment in result.stderr, (fragment, result.stderr)


def _explain(kube: Any, path: str, timeout: float = 30.0) -> str:
    """``kubectl explain``, once the API server has published the CRD's OpenAPI (asynchronous after Established)."""
    deadline = time.monotonic() + timeout
    while True:
        result = kube.kubectl("explain", path)
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return str(result.stdout)
        time.sleep(0.5)


def test_kubectl_explain_is_useful(kube: Any) -> None:
    out = _explain(kube, "bjs.spec.jobSpecification.jobManagerTask")
    assert "Job Manager Task" in out and "commandLine\t<string> -required-" in out
    out = _explain(kube, "bjs.spec.jobSpecification.jobManagerTask.resourceFiles.blob")
    assert "batchop extension" in out


def test_converted_seed_is_accepted_and_renders(kube: Any, tmp_path: Path) -> None:
    """`batchop convert` of the 2016 seed -> the API server accepts it -> `batchop render` validates it."""
    from batchop.cli import main as cli

    converted = tmp_path / "seed.yaml"
    assert cli.main(["convert", str(SEED), "--name", "seed-converted", "-o", str(converted)]) == 0
    result = kube.kubectl("apply", "--dry-run=server", "-f", str(converted))
    assert result.returncode == 0, result.stderr
    assert cli.main(["render", "-f", str(converted), "--unresolved"]) == 0
