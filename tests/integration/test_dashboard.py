"""The Grafana dashboard and the Prometheus Operator examples against a running operator: every PromQL
expression of examples/grafana/batchop-dashboard.json (panels and variables) and of
examples/prometheus/prometheusrule.yaml is parsed (promql-parser, the Prometheus grammar), and each metric it
selects must be one the operator really exports on ``/metrics`` (histogram ``_bucket``/``_sum``/``_count`` and
counter ``_total`` samples as exported), with the label values it pins. The scrape follows real reconciles (one
schedule made Ready, one refused as InvalidSpec), so the controller-runtime, workqueue and REST client series
are shown to move. The ServiceMonitor and PodMonitor must select the Service, Pods and port of manifests/."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.operator import wait_for
from tests.integration.test_metrics_scrape import condition, get, schedule

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples/grafana/batchop-dashboard.json"
PROMETHEUS = ROOT / "examples/prometheus"
NAMESPACE = "metrics-test"  # the namespace test_metrics_scrape.schedule() writes
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
"""Labels Prometheus adds at scrape time (and ``namespace`` when it is the target's): never in /metrics."""
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")
CONVENTIONS = [
    "controller_runtime_reconcile_total", "controller_runtime_reconcile_errors_total",
    "controller_runtime_reconcile_time_seconds_bucket", "controller_runtime_max_concurrent_reconciles",
    "controller_runtime_active_workers", "workqueue_depth", "workqueue_adds_total",
    "workqueue_queue_duration_seconds_bucket", "workqueue_work_duration_seconds_bucket", "workqueue_retries_total",
    "workqueue_unfinished_work_seconds", "workqueue_longest_running_processor_seconds", "rest_client_requests_total",
]

Samples = dict[str, list[dict[str, str]]]
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",)}
"""The sample names of a family of each type in the text format (prometheus-client's parser strips ``_total``
from a counter family's name)."""


def scrape(port: int) -> tuple[set[str], Samples]:
    """``/metrics`` parsed by prometheus-client's own text parser: every sample name a declared family can
    have (a labelled family with no series yet is declared but has no sample, e.g. the throttling counter
    before any 429), and the label sets of the samples present."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    declared: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        declared.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            declared.add(sample.name)
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return declared, samples


def value(port: int, metric: str, /, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_port(kube: Any, operator_factory: Any) -> Iterator[int]:
    """An operator with /metrics, after one schedule became Ready and one was refused (InvalidSpec)."""
    kube.kubectl("create", "namespace", NAMESPACE)
    port = _free_port()
    operator_factory([NAMESPACE], resync=2.0, args=["--metrics-port", str(port)])
    good, bad = schedule("dashboard-good"), schedule("dashboard-bad")
    bad["spec"]["schedule"]["recurrenceInterval"] = "PT30S"  # under Batch's minimum: refused before any Azure call
    for body in (good, bad):
        assert kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body)).returncode == 0
    wait_for(lambda: condition(get(kube, "dashboard-good"), "Ready").get("status") == "True", 60,
             message="dashboard-good to be Ready")
    wait_for(lambda: condition(get(kube, "dashboard-bad"), "Synced").get("reason") == "InvalidSpec", 60,
             message="dashboard-bad to be InvalidSpec")
    yield port
    kube.kubectl("-n", NAMESPACE, "delete", "bjs", "dashboard-good", "dashboard-bad", "--wait=false")
    wait_for(lambda: not [o for o in json.loads(kube.kubectl("-n", NAMESPACE, "get", "bjs", "-o", "json").stdout)
                          ["items"] if o["metadata"]["name"].startswith("dashboard-")],
             90, message="the test resources to be deleted")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every target of every panel (rows' nested panels too) and every query variable."""
    board = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(board["panels"]):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        assert targets and all(t.get("expr") for t in targets), f"panel {panel['title']!r} has no query"
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in targets]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"variable {variable['name']}: {query}"
        found.append((f"variable {variable['name']!r}", match.group(1)))
    return found


def rule_exprs() -> list[tuple[str, str]]:
    rule = yaml.safe_load((PROMETHEUS / "prometheusrule.yaml").read_text())
    return [(f"rule {r['alert']!r}", str(r["expr"])) for g in rule["spec"]["groups"] for r in g["rules"]]


def selectors(expr: str) -> list[tuple[str, list[tuple[str, Any, str]]]]:
    """The metric selectors of a PromQL expression (Grafana's range variables taken as 5m): name and matchers."""
    tree = promql_parser.parse(GRAFANA_RANGES.sub("5m", expr))
    found: list[tuple[str, list[tuple[str, Any, str]]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, m.op, m.value) for m in node.matchers.matchers]
            name = node.name or next((v for n, op, v in matchers if n == "__name__"), None)
            assert name, f"a selector without a metric name in {expr}"
            found.append((name, [m for m in matchers if m[0] != "__name__"]))

    promql_parser.walk(tree, visit)
    return found


def test_every_query_names_metrics_the_operator_exports(metrics_port: int) -> None:
    declared, samples = scrape(metrics_port)
    checked: set[str] = set()
    missing: list[str] = []
    for where, expr in dashboard_exprs() + rule_exprs():
        for name, matchers in selectors(expr):
            checked.add(name)
            if name not in declared:
                missing.append(f"{where}: {name} is not exported")
                continue
            for label, op, wanted in matchers if name in samples else ():
                if op != promql_parser.MatchOp.Equal or label in TARGET_LABELS or "$" in wanted:
                    continue
                if not any(labels.get(label) == wanted for labels in samples[name]):
                    missing.append(f"{where}: no {name} sample has {label}={wanted!r}")
    assert not missing, "\n".join(missing)
    # the dashboard shows what a controller-runtime dashboard shows, and batchop's own families
    assert set(CONVENTIONS) <= checked, set(CONVENTIONS) - checked
    assert {"batchop_schedule_ready", "batchop_batch_requests_total",
            "batchop_batch_request_duration_seconds_bucket", "batchop_reconcile_errors_total"} <= checked


def test_the_conventional_series_follow_real_reconciles(metrics_port: int, kube: Any) -> None:
    ctrl = {"controller": "batchjobschedule"}
    queue = {"name": "batchjobschedule", "controller": "batchjobschedule"}
    assert value(metrics_port, "controller_runtime_reconcile_total", **ctrl, result="success") >= 1
    assert value(metrics_port, "controller_runtime_reconcile_total", **ctrl, result="error") >= 1  # InvalidSpec
    assert value(metrics_port, "controller_runtime_terminal_reconcile_errors_total", **ctrl) >= 1
    assert value(metrics_port, "controller_runtime_reconcile_time_seconds_count", **ctrl) >= 2
    assert value(metrics_port, "controller_runtime_max_concurrent_reconciles", **ctrl) >= 1
    assert value(metrics_port, "workqueue_adds_total", **queue) >= 2
    assert value(metrics_port, "workqueue_work_duration_seconds_count", **queue) >= 2
    assert value(metrics_port, "workqueue_queue_duration_seconds_count", **queue) >= 2
    # the running operator times its garbage collections (memory.tune_gc installs the clock at start)
    assert value(metrics_port, "batchop_gc_seconds_total", generation="0") > 0
    host = urlsplit(kube.server).netloc
    # the status of dashboard-good was patched by the operator's own client, and answered 200
    assert value(metrics_port, "rest_client_requests_total", code="200", method="PATCH", host=host) >= 1


def test_service_and_pod_monitors_select_the_shipped_operator() -> None:
    manager = ROOT / "manifests/manager"
    namespace = yaml.safe_load((ROOT / "manifests/manager/namespace.yaml").read_text())["metadata"]["name"]
    service = yaml.safe_load((manager / "metrics_service.yaml").read_text())
    deployment = yaml.safe_load((manager / "deployment.yaml").read_text())
    container_ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    args = [a for c in deployment["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
    metrics_port = next(p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
                        if p["name"] == "metrics")["containerPort"]
    assert f"--metrics-port={metrics_port}" in args

    service_monitor = yaml.safe_load((PROMETHEUS / "servicemonitor.yaml").read_text())
    assert service_monitor["kind"] == "ServiceMonitor"
    assert service_monitor["spec"]["namespaceSelector"]["matchNames"] == [namespace]
    wanted = service_monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    endpoint = service_monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True

    pod_monitor = yaml.safe_load((PROMETHEUS / "podmonitor.yaml").read_text())
    assert pod_monitor["kind"] == "PodMonitor"
    assert pod_monitor["spec"]["namespaceSelector"]["matchNames"] == [namespace]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in container_ports and endpoint["honorLabels"] is True
