"""Time the admission webhook: the webhook alone, and what a user feels at ``kubectl apply``.

    .venv/bin/python bench/webhook_latency.py [--requests 200] [--applies 20] [--markdown]

Starts a private kube-apiserver (harness.KubeStack) and ``batchop run --webhook-port`` (no Batch account needed:
only admission is measured), then measures

- the webhook itself: AdmissionReviews of a create POSTed straight to ``https://127.0.0.1:PORT/admit`` (the
  mutating webhook, the one call a create makes; a new TLS connection each, as the API server may), for a good
  spec (admitted, with the finalizer's patch) and a bad one (refused);
- ``kubectl apply --dry-run=server`` of a good spec with the webhook registered and without it (the same
  API server), so the difference is what admission adds to an apply.

Results: bench/results/webhook_latency.json; ``--markdown`` writes the section ``webhook`` of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harness import KubeStack, free_port, machine, percentile, save_json, wait_until
from perfdoc import replace_section, section

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "webhook-bench"
CONFIGURATION = "bench-webhook.azurebatch.dev"
KINDS = ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")

SPEC: dict[str, Any] = {
    "apiVersion": "azurebatch.dev/v1alpha1",
    "kind": "BatchJobSchedule",
    "metadata": {"name": "bench", "namespace": NAMESPACE},
    "spec": {
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {
            "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "job", "pool": {
                "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1,
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts", "sku": "server"},
                    "nodeAgentSKUId": "batch.node.ubuntu 24.04"}}}},
            "jobManagerTask": {"id": "main", "commandLine": "/bin/sh -c 'echo hi'"},
        },
    },
}


def review_body(obj: dict[str, Any]) -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "operation": "CREATE", "userInfo": {"username": "bench"}, "object": obj,
                    "kind": {"group": "azurebatch.dev", "version": "v1alpha1", "kind": "BatchJobSchedule"},
                    "resource": {"group": "azurebatch.dev", "version": "v1alpha1", "resource": "batchschedules"}},
    }).encode()


def time_reviews(port: int, cafile: Path, obj: dict[str, Any], n: int) -> tuple[list[float], bool]:
    context = ssl.create_default_context(cafile=str(cafile))
    data = review_body(obj)
    times: list[float] = []
    allowed = False
    for _ in range(n + 1):
        request = urllib.request.Request(f"https://127.0.0.1:{port}/admit", data=data,
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            allowed = bool(json.loads(response.read())["response"]["allowed"])
        times.append(time.perf_counter() - started)
    return times[1:], allowed  # the first includes the server's warm-up


def time_applies(stack: KubeStack, n: int) -> list[float]:
    text = yaml.safe_dump(SPEC)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = stack.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
    return times


def stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 0.5) * 1000, "p95_ms": percentile(values, 0.95) * 1000,
            "max_ms": max(values) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--applies", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    info = machine()
    stack = KubeStack()
    cert_dir = Path(tempfile.mkdtemp(prefix="batchop-bench-webhook-"))
    port, health = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(stack.kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    command = [sys.executable, "-m", "batchop", "--log-format", "json", "run", "-n", NAMESPACE,
               "--liveness", f"http://127.0.0.1:{health}/healthz", "--webhook-port", str(port),
               "--webhook-listen", "127.0.0.1", "--webhook-configuration", CONFIGURATION,
               "--webhook-cert-dir", str(cert_dir)]
    log = open(cert_dir / "operator.log", "wb")
    operator = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    started = time.monotonic()
    try:
        stack.create_namespace(NAMESPACE)
        wait_until(lambda: all(stack.kubectl("get", kind, CONFIGURATION).returncode == 0 for kind in KINDS),
                   60, what="the webhook configurations")
        registered_s = time.monotonic() - started
        bad = json.loads(json.dumps(SPEC))
        bad["spec"]["schedule"]["recurrenceInterval"] = "PT30S"
        wait_until(lambda: "denied" in stack.kubectl("apply", "--dry-run=server", "-f", "-",
                                                     input=yaml.safe_dump(bad)).stderr, 60, what="the webhook")
        good_times, good_allowed = time_reviews(port, cert_dir / "ca.crt", SPEC, args.requests)
        bad_times, bad_allowed = time_reviews(port, cert_dir / "ca.crt", bad, args.requests)
        assert good_allowed and not bad_allowed
        with_webhook = time_applies(stack, args.applies)
        for kind in KINDS:
            stack.kubectl("delete", kind, CONFIGURATION)
        without = time_applies(stack, args.applies)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(20)
        log.close()
        stack.stop()
    result = {"machine": info, "requests": args.requests, "applies": args.applies,
              "registered_after_start_s": registered_s,
              "review_good": stats(good_times), "review_bad": stats(bad_times),
              "apply_with_webhook": stats(with_webhook), "apply_without_webhook": stats(without)}
    save_json("webhook_latency", result)
    rows = [("AdmissionReview, good spec (admitted)", result["review_good"]),
            ("AdmissionReview, bad spec (refused)", result["review_bad"]),
            ("`kubectl apply --dry-run=server`, webhook registered", result["apply_with_webhook"]),
            ("`kubectl apply --dry-run=server`, no webhook", result["apply_without_webhook"])]
    table = "| measure | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|\n" + "\n".join(
        f"| {name} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['max_ms']:.1f} |" for name, s in rows)
    print(table)
    print(f"webhook configurations registered {registered_s:.1f} s after the operator started")
    if args.markdown:
        notes = (f"{args.requests} AdmissionReviews of a create per row straight to `/admit`, the one call a "
                 "create makes (a new TLS connection each); "
                 f"{args.applies} server-side dry-run applies per row (kubectl process start included). The "
                 f"operator registered its webhook configurations {registered_s:.1f} s after it started. The "
                 "webhook's `timeoutSeconds` is 5 s.")
        replace_section("webhook", section("Admission webhook", "bench/webhook_latency.py --markdown", info,
                                           table, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
