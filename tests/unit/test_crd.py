"""The BatchJobSchedule CRD: generated from the SDK, up to date (the packaged spec schema too), structural, and
shaped as agreed."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.batch import models as batch_models
from hypothesis import given
from hypothesis import strategies as st

from batchop.api import crd as crdmod
from batchop.api import crdgen, legacy, patterns, sdkmodels
from batchop.api import schema as packaged
from batchwire import durations

REPO = Path(__file__).resolve().parents[2]

CRD = yaml.safe_load(crdgen.CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]
SPEC = ROOT["properties"]["spec"]
JOB = SPEC["properties"]["jobSpecification"]
MANAGER = JOB["properties"]["jobManagerTask"]
POOL = JOB["properties"]["poolInfo"]["properties"]["autoPoolSpecification"]["properties"]["pool"]


def test_regenerating_changes_nothing() -> None:
    assert crdgen.CRD_PATH.read_text() == crdgen.render(), "run: python -m batchop.api.crdgen --write"
    assert crdgen.CEL_CRD_PATH.read_text() == crdgen.render(cel=True), "run: python -m batchop.api.crdgen --write"
    assert crdgen.main(["--check"]) == 0


def test_packaged_spec_schema_is_what_the_generator_produces() -> None:
    """Validation reads the packaged file; it must be the generator's spec schema, as in the CRD."""
    assert crdgen.SCHEMA_PATH.read_text(encoding="utf-8") == packaged.dump(crdmod.spec_schema()), (
        "run: python -m batchop.api.crdgen --write")
    assert packaged.spec_schema() == crdmod.spec_schema() == SPEC
    assert packaged.shared_spec_schema() is packaged.shared_spec_schema()
    assert packaged.spec_schema() is not packaged.shared_spec_schema()


def test_packaged_spec_schema_ships_in_the_wheel() -> None:
    """setuptools package data names the file the loader opens."""
    import tomllib

    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert packaged.SCHEMA_FILE in package_data["batchop.api"]
    assert Path(packaged.schema_path()).parent == Path(packaged.__file__).resolve().parent


def test_validation_never_loads_the_sdk_models() -> None:
    """The run-time path (validation, normalisation, conversion) reads the packaged schema only."""
    code = ("import sys; import batchop.spec.validation as v, batchop.spec.normalize, batchop.spec.conversion; "
            "v.validate({}); print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure' "
            "or m in ('batchop.api.crd', 'batchop.api.sdkmodels')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO / "operator")},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_run_time_api_module_is_held_to_the_purity_contract() -> None:
    """.importlinter lists batchop.api module by module; only the generator may be left out."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    listed = set(config["importlinter:contract:spec-pure"]["source_modules"].split())
    modules = {f"batchop.api.{path.stem}" for path in (REPO / "operator/batchop/api").glob("*.py")}
    generator = {"batchop.api.crd", "batchop.api.sdkmodels", "batchop.api.crdgen"}
    assert modules - {"batchop.api.__init__"} - generator == listed - {"batchop.api", "batchop.spec", "batchop.spec.**"}
    assert {"batchop.api", "batchop.spec", "batchop.spec.**"} <= listed


def test_check_fails_on_a_stale_file(tmp_path: Any) -> None:
    paths = ["--dir", str(tmp_path), "--schema", str(tmp_path / packaged.SCHEMA_FILE)]
    assert crdgen.main(["--check", *paths]) == 1  # missing
    assert crdgen.main(["--write", *paths]) == 0
    assert crdgen.main(["--check", *paths]) == 0
    stale = tmp_path / crdgen.FILE_NAME
    stale.write_text(stale.read_text().replace("targetDedicatedNodes", "targetDedicatedNode", 1))
    assert crdgen.main(["--check", *paths]) == 1
    crdgen.main(["--write", *paths])
    copy = tmp_path / packaged.SCHEMA_FILE
    copy.write_text(copy.read_text().replace("targetDedicatedNodes", "targetDedicatedNode", 1))
    assert crdgen.main(["--check", *paths]) == 1


def test_cel_rules_only_in_the_cel_variant() -> None:
    """kubectl's client-side validation against a pre-1.25 API server refuses x-kubernetes-validations."""
    assert "x-kubernetes-validations" not in crdgen.CRD_PATH.read_text()
    cel = yaml.safe_load(crdgen.CEL_CRD_PATH.read_text())
    rules = cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert any("oldSelf.scheduleId" in rule["rule"] for rule in rules)
    # Apart from the rules (and the maxLength batchop.api.cel_rules gives the strings it matches), the same CRD.
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "x-kubernetes-validations"}
        return [strip(v) for v in node] if isinstance(node, list) else node

    cel = strip(cel)
    schedule = cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["schedule"]
    for field in ("recurrenceInterval", "startWindow"):
        schedule["properties"][field].pop("maxLength")
    assert cel == CRD


def test_names_and_version() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "batchschedules.azurebatch.dev"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("BatchJobSchedule", "batchschedules", ["bjs"])
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Synced", "State", "Interval", "Next Run", "Last Job", "Last Result", "Age",
                             "Pool", "Reason"]
    assert columns["Pool"]["priority"] == 1 and columns["Reason"]["priority"] == 1
    assert all("priority" not in c for name, c in columns.items() if name not in ("Pool", "Reason"))
    assert columns["Synced"]["jsonPath"] == '.status.conditions[?(@.type=="Synced")].status'
    assert columns["Next Run"]["type"] == "string"  # a future 'date' prints as <invalid>


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string); junctors carry only value validations; nothing preserved."""
    for path, node in _nodes(ROOT):
        if path == ".metadata":
            continue
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        for junctor in ("oneOf", "anyOf", "allOf"):
            for option in node.get(junctor, []):
                assert set(option) <= {"required"}, f"{path}.{junctor} sets {set(option)}"
        assert "not" not in node, path
        if node.get("type") == "object" and path:
            assert "properties" in node or "additionalProperties" in node, f"{path} is an open object"


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    missing = [
        path
        for path, node in _nodes(SPEC)
        if not node.get("description") and not (path.endswith(("[]", "{}")) and node.get("type") != "object")
    ]
    assert missing == []
    assert "Job Manager Task" in MANAGER["description"]
    assert "command line" in MANAGER["properties"]["commandLine"]["description"]


def test_fits_in_a_client_side_apply_annotation() -> None:
    assert len(json.dumps(CRD, separators=(",", ":"))) < 256 * 1024


def test_sdk_fields_all_present_with_required_per_sdk() -> None:
    for model, schema in (
        (batch_models.BatchJobManagerTask, MANAGER),
        (batch_models.BatchJobSpecification, JOB),
        (batch_models.BatchPoolSpecification, POOL),
        (batch_models.BatchJobScheduleConfiguration, SPEC["properties"]["schedule"]),
    ):
        wire = {field._rest_name for field in sdkmodels.rest_fields(model).values()}
        assert wire <= set(schema["properties"]), model.__name__
    assert MANAGER["required"] == ["id", "commandLine"]
    assert JOB["required"] == ["poolInfo"]
    assert POOL["required"] == ["vmSize"]
    assert SPEC["properties"]["metadata"]["items"]["required"] == ["name", "value"]
    assert SPEC["required"] == ["schedule", "jobSpecification"]


def test_enums_durations_and_timestamps() -> None:
    auto = JOB["properties"]["poolInfo"]["properties"]["autoPoolSpecification"]
    assert auto["properties"]["poolLifetimeOption"]["enum"] == ["jobschedule", "job"]
    assert JOB["properties"]["onAllTasksComplete"]["enum"] == ["noaction", "terminatejob"]
    container = POOL["properties"]["virtualMachineConfiguration"]["properties"]["containerConfiguration"]
    assert "dockerCompatible" in container["properties"]["type"]["enum"]
    schedule = SPEC["properties"]["schedule"]["properties"]
    assert schedule["recurrenceInterval"]["pattern"] == patterns.DURATION_PATTERN
    assert schedule["doNotRunUntil"]["format"] == "date-time"
    assert auto["properties"]["autoPoolIdPrefix"]["maxLength"] == 20


def test_operator_fields_and_defaults() -> None:
    props = SPEC["properties"]
    assert props["suspend"]["default"] is False
    assert props["deletionPolicy"]["default"] == "Delete"
    assert props["deletionPolicy"]["enum"] == ["Delete", "Orphan"]
    assert props["successfulJobsHistoryLimit"]["default"] == 3
    assert props["failedJobsHistoryLimit"]["default"] == 1
    assert props["account"]["properties"]["credentialsSecretRef"]["required"] == ["name"]


def test_blob_reference_extension() -> None:
    resource_file = MANAGER["properties"]["resourceFiles"]["items"]
    blob = resource_file["properties"]["blob"]
    assert blob["required"] == ["container"]
    assert "oneOf" not in blob  # {container} alone is the whole container; path + prefix refused by validation
    assert {"required": ["blob"]} in resource_file["oneOf"]
    assert "httpUrl" not in resource_file.get("required", [])
    start = POOL["properties"]["startTask"]["properties"]["resourceFiles"]["items"]
    assert "blob" in start["properties"]
    destination = MANAGER["properties"]["outputFiles"]["items"]["properties"]["destination"]
    assert destination["properties"]["blob"]["required"] == ["container"]


@pytest.mark.parametrize(
    ("path", "replacement"),
    [
        (("targetDedicated",), "targetDedicatedNodes"),
        (("maxTasksPerNode",), "taskSlotsPerNode"),
        (("startTask", "runElevated"), "elevationLevel"),
    ],
)
def test_legacy_names_are_forbidden_not_pruned(path: tuple[str, ...], replacement: str) -> None:
    node = POOL
    for name in path:
        node = node["properties"][name]
    assert legacy.is_forbidden(node)
    assert replacement in node["description"]
    assert node["x-kubernetes-int-or-string"] is True
    (only,) = node["enum"]  # the API server's message then names the fix
    assert only.startswith("none: ") and replacement in only
    assert legacy.is_forbidden(MANAGER["properties"]["resourceFiles"]["items"]["properties"]["blobSource"])


def test_status_fields() -> None:
    status = ROOT["properties"]["status"]["properties"]
    for name in ("observedGeneration", "scheduleId", "state", "nextRunTime", "lastScheduleTime",
                 "lastSuccessfulTime", "recentJob", "recentJobs", "pool", "sas", "runNow", "lastSyncTime",
                 "conditions"):
        assert name in status, name
    recent = status["recentJob"]["properties"]
    for name in ("id", "state", "creationTime", "startTime", "endTime", "terminateReason", "result",
                 "taskCounts", "poolId", "schedulingError", "waitingSince"):
        assert name in recent, name
    assert set(status["pool"]["properties"]) == {"id", "state", "allocationState", "vmSize", "currentDedicatedNodes",
                                                  "currentLowPriorityNodes", "resizeErrors", "nodeCounts"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) >= {"type", "status", "reason", "message", "observedGeneration",
                                                      "lastTransitionTime"}


# --- the duration pattern agrees with batchwire's parser -------------------------------------------------

_DURATION = re.compile(patterns.DURATION_PATTERN)


@pytest.mark.parametrize("text", ["PT4H", "P1D", "PT1H30M", "PT0S", "PT0.5S", "P1DT12H", "P2W", "PT01H00M00S",
                                  "P10675199DT2H48M5.4775807S", "P1W2DT3H4M5S"])
def test_duration_pattern_accepts(text: str) -> None:
    assert _DURATION.match(text) and durations.is_duration(text)


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "PT1H ", "4h", "pt4h", "-PT1H", "P1Y", "P1M", "PT1.H", "1H"])
def test_duration_pattern_refuses(text: str) -> None:
    assert not _DURATION.match(text)


@given(
    weeks=st.none() | st.integers(0, 99),
    days=st.none() | st.integers(0, 999),
    hours=st.none() | st.integers(0, 99),
    minutes=st.none() | st.integers(0, 99),
    seconds=st.none() | st.integers(0, 99),
)
def test_duration_pattern_matches_exactly_what_batchwire_parses(
    weeks: int | None, days: int | None, hours: int | None, minutes: int | None, seconds: int | None
) -> None:
    text = "P" + (f"{weeks}W" if weeks is not None else "") + (f"{days}D" if days is not None else "")
    time = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if v is not None)
    for candidate in (text + ("T" + time if time else ""), text + "T" + time):
        assert bool(_DURATION.match(candidate)) == durations.is_duration(candidate), candidate
