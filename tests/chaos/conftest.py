"""Shared parts of the resilience (chaos) tests: a dedicated Batch service, a Kubernetes client, invariants.

Every chaos test drives the real parts: ``batchop run`` as a process (``operator_factory``), the real
kube-apiserver + etcd (``kube``), and its own local Batch service (``--no-execute``, so faults, outages
and resets never disturb other tests' service). Resources are written through the Kubernetes API with the
``kubernetes`` client (several at once: that is what makes crashes land mid-flight).

- ``CHAOS_N`` (env, default 30): how many resources a test churns. Bench runs use more
  (``python bench/chaos.py --n 500``).
- ``CHAOS_REPORT`` (env): a JSON-lines file each test appends its counts to (operations, faults injected,
  duplicates, orphans, stuck); ``bench/chaos.py`` turns it into the table of ``docs/reliability.md``.

:func:`check_invariants` is the end state every test demands: every resource's schedule exists exactly
once with the declared command line, Ready; no schedule owned by the namespace without a resource; no
resource left (deleted ones are gone, so no finalizer is stuck).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchop.api.names import MARK_OWNER
from tests.fixtures.batch import LocalBatch, start_local_batch

GROUP, VERSION, PLURAL = "azurebatch.dev", "v1alpha1", "batchschedules"
CHAOS_N = int(os.environ.get("CHAOS_N", "30"))


def chaos_n(default: int = CHAOS_N) -> int:
    return int(os.environ.get("CHAOS_N", str(default)))


def command_line(tag: str) -> str:
    return f"/bin/bash -c 'echo {tag}'"


def spec(tag: str = "v1", recurrence: str = "P1D") -> dict[str, Any]:
    """A small valid spec; ``tag`` goes into the job manager's command line (what edits change)."""
    return {
        "schedule": {"recurrenceInterval": recurrence},
        "jobSpecification": {
            "poolInfo": {
                "autoPoolSpecification": {
                    "autoPoolIdPrefix": "chaos",
                    "poolLifetimeOption": "job",
                    "pool": {
                        "vmSize": "standard_d2s_v3",
                        "targetDedicatedNodes": 1,
                        "virtualMachineConfiguration": {
                            "imageReference": {"publisher": "canonical", "offer": "ubuntu-24_04-lts",
                                               "sku": "server"},
                            "nodeAgentSKUId": "batch.node.ubuntu 24.04",
                        },
                    },
                }
            },
            "jobManagerTask": {"id": "main", "commandLine": command_line(tag)},
        },
    }


def batch_env(batch: LocalBatch) -> dict[str, str]:
    return batch.operator_env()


class Kube:
    """A ``kubernetes`` client per thread for the test API server (the client is not thread-safe)."""

    def __init__(self, kube: Any) -> None:
        self.handle = kube
        self._local = threading.local()

    def api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            import warnings

            from kubernetes import client, config

            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
            api_client = config.new_client_from_config(config_file=str(self.handle.kubeconfig))
            api = self._local.api = client.CustomObjectsApi(api_client)
            self._local.core = client.CoreV1Api(api_client)
        return api

    def core(self) -> Any:
        self.api()
        return self._local.core

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core().create_namespace({"metadata": {"name": name}})
        return name

    def create(self, ns: str, name: str, body_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
        body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BatchJobSchedule",
                                "metadata": {"name": name}, "spec": body_spec}
        if annotations:
            body["metadata"]["annotations"] = annotations
        return self.api().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def set_command(self, ns: str, name: str, tag: str) -> None:
        patch = {"spec": {"jobSpecification": {"jobManagerTask": {"commandLine": command_line(tag)}}}}
        self.api().patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)

    def delete(self, ns: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api().delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api().get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)  # type: ignore[no-any-return]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, ns: str) -> list[dict[str, Any]]:
        return list(self.api().list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL).get("items") or [])

    def events(self, ns: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.core().list_namespaced_event(ns).items]


def parallel(fn: Callable[[Any], Any], items: list[Any], concurrency: int = 8) -> list[Any]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(fn, items))


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


@dataclass
class Verdict:
    """The end state of a chaos test, compared with what was declared."""

    expected: int = 0
    ready: int = 0
    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_spec: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.orphans or self.stuck or self.missing or self.wrong_spec or self.not_ready)

    def counts(self) -> dict[str, int]:
        return {"expected": self.expected, "ready": self.ready, "duplicates": len(self.duplicates),
                "orphans": len(self.orphans), "stuck": len(self.stuck), "missing": len(self.missing),
                "wrong_spec": len(self.wrong_spec), "not_ready": len(self.not_ready)}


def owned_schedules(batch: LocalBatch, ns: str) -> dict[str, list[dict[str, Any]]]:
    """Batch schedules whose owner mark is in ``ns``, by owner name (from the service's full state)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for schedule in (batch.state().get("schedules") or {}).values():
        marks = {m.get("name"): m.get("value") for m in schedule.get("metadata") or []}
        owner = str(marks.get(MARK_OWNER) or "")
        if owner.startswith(f"{ns}/"):
            found.setdefault(owner.split("/", 1)[1], []).append(schedule)
    return found


def verdict(kube: Kube, batch: LocalBatch, ns: str, declared: dict[str, str]) -> Verdict:
    """Compare the cluster and Batch with ``declared`` (resource name -> command-line tag)."""
    result = Verdict(expected=len(declared))
    objects = {o["metadata"]["name"]: o for o in kube.list(ns)}
    schedules = owned_schedules(batch, ns)
    for name, obj in objects.items():
        if name not in declared:
            result.stuck.append(f"{name} (deleted, finalizers {obj['metadata'].get('finalizers')})")
    for name, tag in declared.items():
        obj = objects.get(name)
        mine = schedules.get(name, [])
        if len(mine) > 1:
            result.duplicates.append(f"{name}: {[s['id'] for s in mine]}")
        if obj is None or not mine:
            result.missing.append(f"{name} (resource {'present' if obj else 'absent'}, {len(mine)} schedules)")
            continue
        live = [s for s in mine if s.get("state") in ("active", "disabled")]
        command = (((live or mine)[0].get("jobSpecification") or {}).get("jobManagerTask") or {}).get("commandLine")
        if command != command_line(tag):
            result.wrong_spec.append(f"{name}: {command!r} != {command_line(tag)!r}")
        if condition(obj, "Ready").get("status") == "True" and condition(obj, "Synced").get("status") == "True":
            result.ready += 1
        else:
            result.not_ready.append(f"{name}: Ready={condition(obj, 'Ready')} Synced={condition(obj, 'Synced')}")
    for owner, mine in schedules.items():
        if owner not in declared:
            result.orphans.append(f"{owner}: {[(s['id'], s.get('state')) for s in mine]}")
    return result


def converge(
    kube: Kube,
    batch: LocalBatch,
    ns: str,
    declared: dict[str, str],
    timeout: float,
    logs: Callable[[], str] | None = None,
) -> Verdict:
    """Wait (with a deadline) until the verdict is clean; fail with the last verdict otherwise, and with the
    operator's log lines about the resources at fault when ``logs`` gives the operator's log."""
    deadline = time.monotonic() + timeout
    last = verdict(kube, batch, ns, declared)
    while not last.ok and time.monotonic() < deadline:
        time.sleep(1.0)
        last = verdict(kube, batch, ns, declared)
    if not last.ok:
        pytest.fail(f"not converged after {timeout:.0f}s: {last}{_log_excerpt(last, logs)}", pytrace=False)
    return last


def _log_excerpt(last: Verdict, logs: Callable[[], str] | None, limit: int = 60) -> str:
    """The operator's log lines (kopf's per-handler chatter left out) naming a resource the verdict faults."""
    if logs is None:
        return ""
    problems = last.duplicates + last.orphans + last.stuck + last.missing + last.wrong_spec + last.not_ready
    names = {re.split(r"[ :]", p, maxsplit=1)[0] for p in problems}
    pattern = re.compile("|".join(rf"(?<![0-9a-z]){re.escape(n)}(?![0-9a-z])" for n in sorted(names)))
    lines = [
        line
        for line in logs().splitlines()
        if pattern.search(line) and "Handler 'register" not in line and "is invoked" not in line
    ]
    return f"\noperator log about {sorted(names)} (last {limit} lines):\n" + "\n".join(lines[-limit:])


def report(test: str, **counts: Any) -> None:
    """Append this test's counts to ``$CHAOS_REPORT`` (JSON lines) when set; print them either way."""
    line = {"test": test, "n": chaos_n(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **counts}
    print(json.dumps(line))
    target = os.environ.get("CHAOS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(line) + "\n")


def error_statuses(counts: dict[str, Any]) -> dict[str, int]:
    """Answers by status over all operations (``{"429": n, "201": m, ...}``)."""
    out: dict[str, int] = {}
    for entry in counts.values():
        for status, n in (entry.get("byStatus") or {}).items():
            out[status] = out.get(status, 0) + int(n)
    return out


@pytest.fixture(scope="module")
def chaos_kube(kube: Any) -> Kube:
    return Kube(kube)


@pytest.fixture(scope="module")
def chaos_batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBatch]:
    """A local Batch service of this module's own (``--no-execute``)."""
    service = start_local_batch(tmp_path_factory.mktemp("chaos-batch"), "--no-execute")
    try:
        yield service
    finally:
        service.stop()


def restartable_batch(work_dir: Path, port: int) -> LocalBatch:
    """A service on a fixed ``port`` keeping its state in ``work_dir/state.json`` (survives a restart)."""
    return start_local_batch(work_dir, "--no-execute", "--port", str(port), "--state-file",
                             str(work_dir / "state.json"))
