"""batchop.observability.metrics: gauges from status objects, the Batch pipeline policy over real HTTP, reconcile
timing."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core import AsyncPipelineClient, PipelineClient
from azure.core.pipeline.policies import AsyncRetryPolicy, RetryPolicy
from azure.core.rest import HttpRequest
from prometheus_client import CollectorRegistry

from batchop.observability import metrics
from batchop.observability.metrics import Metrics, MetricsPolicy, operation_name


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


READY = {"type": "Ready", "status": "True", "reason": "Synced"}
NOT_READY = {"type": "Ready", "status": "False", "reason": "InvalidSpec"}


def test_gauges_follow_status(m: Metrics, registry: CollectorRegistry) -> None:
    status = {
        "state": "active",
        "conditions": [READY],
        "nextRunTime": "2026-01-01T00:00:00Z",
        "recentJob": {"id": "s:job-1", "state": "completed", "result": "success"},
        "sas": {"expiresAt": "2026-01-08T00:00:00Z"},
    }
    m.observe_resource("ns", "wc", spec={"suspend": False}, status=status)
    labels = {"namespace": "ns", "name": "wc"}
    assert value(registry, "batchop_schedule_ready", **labels) == 1
    assert value(registry, "batchop_schedule_suspended", **labels) == 0
    assert value(registry, "batchop_schedule_last_job_succeeded", **labels) == 1
    assert value(registry, "batchop_schedule_next_run_timestamp_seconds", **labels) == 1767225600
    assert value(registry, "batchop_sas_expiry_timestamp_seconds", **labels) == 1767830400

    status = {"state": "disabled", "conditions": [NOT_READY], "recentJob": {"result": "failure"}}
    m.observe_resource("ns", "wc", spec={"suspend": True}, status=status)
    assert value(registry, "batchop_schedule_ready", **labels) == 0
    assert value(registry, "batchop_schedule_suspended", **labels) == 1
    assert value(registry, "batchop_schedule_last_job_succeeded", **labels) == 0
    # No next run, no SAS any more: the series go away rather than keep a stale value.
    assert value(registry, "batchop_schedule_next_run_timestamp_seconds", **labels) is None
    assert value(registry, "batchop_sas_expiry_timestamp_seconds", **labels) is None


def test_state_disabled_counts_as_suspended_and_no_result_before_first_job(m: Metrics,
                                                                           registry: CollectorRegistry) -> None:
    m.observe_resource("ns", "a", spec={}, status={"state": "disabled", "recentJob": {"state": "active"}})
    assert value(registry, "batchop_schedule_suspended", namespace="ns", name="a") == 1
    assert value(registry, "batchop_schedule_last_job_succeeded", namespace="ns", name="a") is None
    m.observe_resource("ns", "b", spec=None, status=None)
    assert value(registry, "batchop_schedule_ready", namespace="ns", name="b") == 0


def test_forget_resource_removes_every_series(m: Metrics, registry: CollectorRegistry) -> None:
    status = {"conditions": [READY], "recentJob": {"result": "success"}, "nextRunTime": "2026-01-01T00:00:00Z",
              "sas": {"expiresAt": "2026-01-08T00:00:00Z"}}
    m.observe_resource("ns", "wc", spec={}, status=status)
    m.observe_resource("ns", "other", spec={}, status=status)
    m.forget_resource("ns", "wc")
    m.forget_resource("ns", "never-seen")
    for metric in ("batchop_schedule_ready", "batchop_schedule_suspended", "batchop_schedule_last_job_succeeded",
                 "batchop_schedule_next_run_timestamp_seconds", "batchop_sas_expiry_timestamp_seconds"):
        assert value(registry, metric, namespace="ns", name="wc") is None
        assert value(registry, metric, namespace="ns", name="other") is not None


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "https://a.westeurope.batch.azure.com/jobschedules?api-version=2025-06-01&$filter=x",
         "GET /jobschedules"),
        ("get", "https://a.batch.azure.com/jobschedules/ns-wordcount-1a2b?api-version=1", "GET /jobschedules/{id}"),
        ("POST", "http://127.0.0.1:1/jobschedules/My%20Id/disable", "POST /jobschedules/{id}/disable"),
        ("GET", "http://h/jobs/s:job-1/taskcounts", "GET /jobs/{id}/taskcounts"),
        ("GET", "http://h/jobs/s:job-1/tasks/jobmanager", "GET /jobs/{id}/tasks/{id}"),
        ("GET", "http://h/", "GET /"),
    ],
)
def test_operation_names_carry_no_ids(method: str, url: str, expected: str) -> None:
    assert operation_name(method, url) == expected


class _Handler(BaseHTTPRequestHandler):
    """/ok -> 200; /busy -> 429 once per path then 200; /down -> connection closed without an answer."""

    throttled: set[str] = set()

    def do_GET(self) -> None:
        if self.path.startswith("/down"):
            self.close_connection = True
            self.wfile.flush()
            self.connection.close()
            return
        if self.path.startswith("/busy") and self.path not in self.throttled:
            self.throttled.add(self.path)
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # silence
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_policy_counts_each_attempt_and_throttles_sync(m: Metrics, registry: CollectorRegistry,
                                                       http_url: str) -> None:
    retry = RetryPolicy(retry_total=2, retry_backoff_factor=0, retry_connect=0, retry_read=0)
    client = PipelineClient(http_url, policies=[retry, MetricsPolicy(m)])
    assert client.send_request(HttpRequest("GET", f"{http_url}/jobschedules/a")).status_code == 200
    response = client.send_request(HttpRequest("GET", f"{http_url}/busy/sync/x"))
    assert response.status_code == 200  # the retry policy retried the 429
    with pytest.raises(Exception):  # noqa: B017 - azure-core raises its ServiceRequest/Response error
        client.send_request(HttpRequest("GET", f"{http_url}/down/x"))

    assert value(registry, "batchop_batch_requests_total", operation="GET /jobschedules/{id}", status="200") == 1
    assert value(registry, "batchop_batch_requests_total", operation="GET /busy/{id}/x", status="429") == 1
    assert value(registry, "batchop_batch_requests_total", operation="GET /busy/{id}/x", status="200") == 1
    assert value(registry, "batchop_batch_throttled_total", operation="GET /busy/{id}/x") == 1
    assert value(registry, "batchop_batch_throttled_total", operation="GET /jobschedules/{id}") is None
    assert value(registry, "batchop_batch_requests_total", operation="GET /down/{id}", status="error") >= 1
    assert value(registry, "batchop_batch_request_duration_seconds_count", operation="GET /busy/{id}/x") == 2
    assert value(registry, "batchop_batch_request_duration_seconds_sum", operation="GET /jobschedules/{id}") > 0


async def test_policy_in_async_pipeline(m: Metrics, registry: CollectorRegistry, http_url: str) -> None:
    retry = AsyncRetryPolicy(retry_total=2, retry_backoff_factor=0)
    async with AsyncPipelineClient(http_url, policies=[retry, MetricsPolicy(m)]) as client:
        response = await client.send_request(HttpRequest("GET", f"{http_url}/busy/async/y"))
        assert response.status_code == 200
    assert value(registry, "batchop_batch_requests_total", operation="GET /busy/{id}/y", status="429") == 1
    assert value(registry, "batchop_batch_requests_total", operation="GET /busy/{id}/y", status="200") == 1
    assert value(registry, "batchop_batch_throttled_total", operation="GET /busy/{id}/y") == 1


def test_reconcile_timer_records_duration_and_errors(m: Metrics, registry: CollectorRegistry) -> None:
    with m.reconcile_timer("create"):
        pass
    with pytest.raises(RuntimeError), m.reconcile_timer("create"):
        raise RuntimeError("boom")
    assert value(registry, "batchop_reconcile_duration_seconds_count", handler="create") == 2
    assert value(registry, "batchop_reconcile_errors_total", handler="create", error="RuntimeError") == 1
    assert value(registry, "batchop_reconcile_errors_total", handler="update", error="RuntimeError") is None


def test_metrics_server_serves_the_registry(m: Metrics, registry: CollectorRegistry) -> None:
    m.observe_resource("ns", "served", spec={}, status={"conditions": [READY]})
    port = metrics.start_metrics_server(0, addr="127.0.0.1", registry=registry)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'batchop_schedule_ready{name="served",namespace="ns"} 1.0' in text
    assert "# HELP batchop_batch_requests_total" in text


def test_module_level_helpers_use_the_default_metrics() -> None:
    metrics.observe_resource("helpers-ns", "x", spec={"suspend": True}, status={})
    assert metrics.METRICS.registry.get_sample_value(
        "batchop_schedule_suspended", {"namespace": "helpers-ns", "name": "x"}) == 1
    metrics.forget_resource("helpers-ns", "x")
    assert metrics.METRICS.registry.get_sample_value(
        "batchop_schedule_suspended", {"namespace": "helpers-ns", "name": "x"}) is None
    with metrics.reconcile_timer("helpers"):
        pass


def test_count_error_records_condition_reasons(m: Metrics, registry: CollectorRegistry) -> None:
    m.count_error("reconcile", "Throttled")
    m.count_error("reconcile", "Throttled")
    assert value(registry, "batchop_reconcile_errors_total", handler="reconcile", error="Throttled") == 2
    metrics.count_error("reconcile", "InvalidSpec")
    assert metrics.METRICS.registry.get_sample_value(
        "batchop_reconcile_errors_total", {"handler": "reconcile", "error": "InvalidSpec"}) >= 1
