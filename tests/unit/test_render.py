"""`batchop render`: the exact Batch request, validated offline with the webhook's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchop.blob.sas import PLACEHOLDER_STORAGE_URL
from batchop.cli import main as cli
from batchop.cli.commands import render
from tests.unit.test_spec_validation import modern_spec

NO_STORAGE_ENV = {"PATH": "/usr/bin"}


def _resource(name: str = "wordcount", spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule",
            "metadata": {"name": name, **metadata}, "spec": spec if spec is not None else modern_spec()}


def _write(tmp_path: Path, *resources: dict[str, Any]) -> Path:
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump_all(list(resources), sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("BATCHOP_STORAGE_URL", raising=False)


def test_prints_the_create_body_with_placeholder_sas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = modern_spec()
    spec["storage"] = {"accountUrl": "https://mystore.blob.core.windows.net"}
    assert cli.main(["render", "-f", str(_write(tmp_path, _resource(spec=spec))), "-n", "team-a"]) == 0
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert body["id"] == "team-a_wordcount"
    assert {"name": "azurebatch.dev/owner", "value": "team-a/wordcount"} in body["metadata"]
    manager = body["jobSpecification"]["jobManagerTask"]
    url = manager["resourceFiles"][0]["httpUrl"]
    assert url.startswith("https://mystore.blob.core.windows.net/application/task.sh?") and url.endswith("sig=REDACTED")
    assert "blob" not in manager["resourceFiles"][0]
    container = manager["outputFiles"][0]["destination"]["container"]
    assert "sp=cw" in container["containerUrl"] and container["path"] == "team-a_wordcount"
    assert "POST /jobschedules?api-version=2025-06-01" in err and "spec.storage.accountUrl" in err


def test_same_body_as_the_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from batchop.spec import mapping

    resource = _resource(namespace="ns1", uid="1234")
    assert cli.main(["render", "-f", str(_write(tmp_path, resource)), "--unresolved", "-o", "yaml"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out) == mapping.desired_schedule(modern_spec(), schedule_id="ns1_wordcount",
                                                           owner="ns1/wordcount", uid="1234")
    assert "unresolved" in err


def test_user_sas_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = modern_spec()
    spec["jobSpecification"]["jobManagerTask"]["resourceFiles"] = [
        {"httpUrl": "https://a.blob.core.windows.net/c/t.sh?sv=1&sig=SECRETSIGNATURE", "filePath": "t.sh"}]
    assert cli.main(["render", "-f", str(_write(tmp_path, _resource(spec=spec)))]) == 0
    out, err = capsys.readouterr()
    assert "SECRETSIGNATURE" not in out + err and "sig=REDACTED" in out
    assert "warning: spec.jobSpecification.jobManagerTask.resourceFiles[0].httpUrl" in err


def test_invalid_exits_3_naming_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = modern_spec()
    spec["jobSpecification"]["poolInfo"]["autoPoolSpecification"]["pool"]["targetDedicated"] = 1
    spec["schedule"]["recurrenceInterval"] = "PT30S"
    assert cli.main(["render", "-f", str(_write(tmp_path, _resource(spec=spec)))]) == 3
    out, err = capsys.readouterr()
    assert out == ""  # nothing rendered for an invalid resource
    assert "pool.targetDedicated: 'targetDedicated' was renamed 'targetDedicatedNodes'" in err
    assert "spec.schedule.recurrenceInterval: must be at least 1 minute" in err
    assert "nothing was sent" in err


def test_several_resources_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _resource("a"), {"kind": "List", "items": [_resource("b")]})
    assert cli.main(["render", "-f", str(path), "--unresolved"]) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)] == ["default_a", "default_b"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("kind: ConfigMap\nmetadata: {name: x}\n", "expected kind BatchJobSchedule"), ("a: [", "not valid YAML"),
     ("", "holds no BatchJobSchedule")],
)
def test_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    assert cli.main(["render", "-f", str(path)]) == 3
    assert fragment in capsys.readouterr().err


def test_timestamps_stay_strings_as_kubectl_sends_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_resource()).replace("'2026-04-29T05:30:00.000Z'", "2026-04-29T05:30:00.000Z"))
    assert "'2026" not in path.read_text()
    assert cli.main(["render", "-f", str(path), "--unresolved"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"]["doNotRunUntil"] == "2026-04-29T05:30:00.000Z"


def test_storage_url_sources() -> None:
    assert render.storage_url_for({}, None, {})[0] == PLACEHOLDER_STORAGE_URL
    assert render.storage_url_for({}, "https://x.blob.core.windows.net/", {})[0] == "https://x.blob.core.windows.net"
    env = {"BATCHOP_STORAGE_URL": "https://envacct.blob.core.windows.net"}
    assert render.storage_url_for({}, None, env)[0] == "https://envacct.blob.core.windows.net"
    spec = {"storage": {"accountUrl": "https://spec.blob.core.windows.net"}}
    assert render.storage_url_for(spec, "https://flag", env)[0] == "https://spec.blob.core.windows.net"


def test_suspended_schedule_notes_the_disable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = modern_spec()
    spec["suspend"] = True
    assert cli.main(["render", "-f", str(_write(tmp_path, _resource(spec=spec))), "--unresolved"]) == 0
    assert "/disable" in capsys.readouterr().err


def test_preparation_and_release_references_are_rendered_resolved(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Rendering the fan-out example shows its preparation task's scripts as read SAS URLs, as the operator sends
    them (no blob reference left for Batch to refuse)."""
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "schedule-fanout.yaml").read_text())
    spec = example["spec"]
    spec["jobSpecification"]["jobReleaseTask"]["resourceFiles"] = [{"blob": {"container": "application",
                                                                             "prefix": "cleanup/"}}]
    spec["storage"] = {"accountUrl": "https://mystore.blob.core.windows.net"}
    assert cli.main(["render", "-f", str(_write(tmp_path, _resource("fanout", spec))), "-n", "team-a"]) == 0
    out, _ = capsys.readouterr()
    job = json.loads(out)["jobSpecification"]
    staged = {rf["filePath"]: rf["httpUrl"] for rf in job["jobPreparationTask"]["resourceFiles"]}
    assert set(staged) == {"fanout.py", "wordcount.py"}
    for name, url in staged.items():
        assert url.startswith(f"https://mystore.blob.core.windows.net/application/{name}?") and "sp=r&" in url
    (release,) = job["jobReleaseTask"]["resourceFiles"]
    assert release["storageContainerUrl"].startswith("https://mystore.blob.core.windows.net/application?")
    assert "sp=rl" in release["storageContainerUrl"] and release["blobPrefix"] == "cleanup/"
    assert '"blob"' not in out
