"""An operator run scraped and judged as users do: Prometheus ``/metrics`` during a real run (counters move),
``kubectl diff`` empty after the operator reconciled (it never writes spec; the schema's defaults cause no
drift), and the Argo CD health check (examples/argocd/health.lua in Lua 5.1) on the live status objects.

Set ``BATCHOP_CAPTURE_STATUS=1`` to save those objects under tests/fixtures/status-captures/ (the unit test
tests/unit/test_health_lua.py replays them)."""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.operator import wait_for
from tests.unit.test_health_lua import health

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "metrics-test"
CAPTURES = ROOT / "tests/fixtures/status-captures"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$")


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "azurebatch.dev/v1alpha1",
        "kind": "BatchJobSchedule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {
                "poolInfo": {"autoPoolSpecification": {
                    "autoPoolIdPrefix": "metrics", "poolLifetimeOption": "job",
                    "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                             "virtualMachineConfiguration": {
                                 "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts",
                                                    "sku": "server"},
                                 "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}}},
                "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo hello'"},
            },
            **spec,
        },
    }
    return body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def total(samples: dict[str, float], metric: str, /, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{")[0] == metric and all(w in k for w in wanted))


@pytest.fixture(scope="module")
def metrics_port(kube: Any, operator_factory: Any) -> Iterator[int]:
    kube.kubectl("create", "namespace", NAMESPACE)
    port = _free_port()
    operator_factory([NAMESPACE], resync=2.0, args=["--metrics-port", str(port)])
    yield port
    kube.kubectl("-n", NAMESPACE, "delete", "bjs", "--all", "--wait=false")
    wait_for(lambda: not json.loads(kube.kubectl("-n", NAMESPACE, "get", "bjs", "-o", "json").stdout)["items"],
             90, message="the test resources to be deleted")


def get(kube: Any, name: str) -> dict[str, Any]:
    result = kube.kubectl("-n", NAMESPACE, "get", "bjs", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def capture(name: str, obj: dict[str, Any], expected: str) -> None:
    if os.environ.get("BATCHOP_CAPTURE_STATUS") != "1":
        return
    CAPTURES.mkdir(parents=True, exist_ok=True)
    meta = obj["metadata"]
    keep = {"name": meta["name"], "namespace": meta["namespace"], "generation": meta["generation"]}
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep, "spec": obj["spec"],
            "status": obj["status"]}
    (CAPTURES / f"{name}.yaml").write_text(
        "# Captured from tests/integration/test_metrics_scrape.py (BATCHOP_CAPTURE_STATUS=1): a real status.\n"
        + yaml.safe_dump({"expectedHealth": expected, "object": body}, sort_keys=False))


def test_metrics_move_diff_is_empty_and_health_follows(metrics_port: int, kube: Any, tmp_path: Path) -> None:
    before = scrape(metrics_port)
    requests_before = total(before, "batchop_batch_requests_total")

    manifest = tmp_path / "hourly.yaml"
    manifest.write_text(yaml.safe_dump(schedule("hourly")))
    assert kube.kubectl("apply", "-f", str(manifest)).returncode == 0
    ready = wait_for(lambda: condition(get(kube, "hourly"), "Ready").get("status") == "True" and get(kube, "hourly"),
                     60, message="hourly to be Ready")
    # Healthy as soon as the schedule exists.
    status, message = health(ready)
    assert status in ("Healthy", "Degraded"), message  # Degraded only if its first job already failed
    capture("ready", ready, status)

    after = wait_for(lambda: (s := scrape(metrics_port)) and total(s, "batchop_schedule_ready", name="hourly") == 1
                     and s, 30, message="the ready gauge")
    assert total(after, "batchop_batch_requests_total") > requests_before
    assert total(after, "batchop_batch_requests_total", operation="POST /jobschedules") >= 1
    assert total(after, "batchop_batch_request_duration_seconds_count") > 0
    assert total(after, "batchop_reconcile_duration_seconds_count", handler="reconcile") >= 1
    assert total(after, "batchop_schedule_suspended", name="hourly") == 0

    # The operator never writes spec, and the schema's defaults cause no drift: nothing to diff, nothing to apply.
    diff = kube.kubectl("diff", "-f", str(manifest))
    assert diff.returncode == 0, diff.stdout + diff.stderr
    again = kube.kubectl("apply", "-f", str(manifest))
    assert again.stdout.strip().endswith("unchanged"), again.stdout
    # The poller keeps polling: requests keep counting without any change to the object.
    polled = wait_for(lambda: (s := scrape(metrics_port)) and total(s, "batchop_batch_requests_total")
                      > total(after, "batchop_batch_requests_total") and s, 30, message="poll requests to count")
    assert total(polled, "batchop_batch_requests_total", operation="GET /jobschedules") >= 1

    # Suspend: Argo CD shows Suspended once Batch reports the schedule disabled; the gauge follows.
    suspended = schedule("hourly", suspend=True)
    manifest.write_text(yaml.safe_dump(suspended))
    assert kube.kubectl("apply", "-f", str(manifest)).returncode == 0
    obj = wait_for(lambda: (o := get(kube, "hourly")).get("status", {}).get("state") == "disabled" and
                   condition(o, "Ready").get("reason") == "Suspended" and o, 60, message="hourly to be disabled")
    status, message = health(obj)
    assert status == "Suspended", message
    capture("suspended", obj, status)
    wait_for(lambda: total(scrape(metrics_port), "batchop_schedule_suspended", name="hourly") == 1, 30,
             message="the suspended gauge")
    assert kube.kubectl("diff", "-f", str(manifest)).returncode == 0


def test_invalid_spec_is_degraded_and_counted(metrics_port: int, kube: Any) -> None:
    # No webhook in this module: the bad spec is stored, and the operator refuses it before any Azure call.
    bad = schedule("too-often")
    bad["spec"]["schedule"]["recurrenceInterval"] = "PT30S"
    assert kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad)).returncode == 0
    obj = wait_for(lambda: (o := get(kube, "too-often")) and condition(o, "Synced").get("reason") == "InvalidSpec"
                   and o, 60, message="too-often to be InvalidSpec")
    status, message = health(obj)
    assert status == "Degraded" and "InvalidSpec" in message, message
    capture("invalid-spec", obj, status)
    samples = wait_for(lambda: (s := scrape(metrics_port)) and total(
        s, "batchop_reconcile_errors_total", error="InvalidSpec") >= 1 and s, 30, message="the error counter")
    assert total(samples, "batchop_schedule_ready", name="too-often") == 0


def test_failed_job_is_degraded_and_shows_in_the_gauge(metrics_port: int, kube: Any) -> None:
    failing = schedule("failing")
    failing["spec"]["jobSpecification"]["jobManagerTask"]["commandLine"] = "/bin/bash -c 'exit 3'"
    assert kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(failing)).returncode == 0
    obj = wait_for(lambda: (o := get(kube, "failing")) and (o.get("status") or {}).get("recentJob", {}).get(
        "result") == "failure" and o, 90, message="the first job of failing to fail")
    status, message = health(obj)
    assert status == "Degraded" and "failed" in message, message
    capture("last-job-failed", obj, status)
    wait_for(lambda: (s := scrape(metrics_port)) and f'batchop_schedule_last_job_succeeded{{name="failing",'
             f'namespace="{NAMESPACE}"}}' in s and total(s, "batchop_schedule_last_job_succeeded", name="failing") == 0,
             30, message="the last-job gauge to say failure")
