"""Shared parts of batchop's benchmarks: the local stack, the operator process, counters and statistics.

- :class:`LocalBatchProc`: ``python -m localbatch --no-execute --port 0`` with its admin API
  (request counts per operation, faults, clock).
- :class:`KubeStack`: etcd + kube-apiserver (:mod:`devstack.kube`) with the CRDs applied, a
  ``kubernetes`` client for it, and :meth:`KubeStack.request_counts`: the API server's own
  ``apiserver_request_total`` for ``batchschedules`` by verb, so Kubernetes writes are counted where they
  land (no-op patches included, which a watch would not see).
- :class:`OperatorProc`: ``batchop run`` (or the timer baseline) as a process, with its RSS and CPU time
  read from ``/proc``.
- :func:`create_resources` / :func:`delete_all`: N ``BatchJobSchedule`` objects written through the
  Kubernetes API with a thread pool (``kubectl apply`` one by one is far too slow at 1,000).
- :func:`summary`: median, min and max; :func:`machine`: what the numbers were taken on.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "operator") not in sys.path:
    sys.path.insert(0, str(REPO / "operator"))

warnings.filterwarnings("ignore", message="Unverified HTTPS request")  # the local API server's self-signed cert

GROUP, VERSION, PLURAL = "azurebatch.dev", "v1alpha1", "batchschedules"
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine and statistics ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python and the load average when called."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": model or platform.processor(),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def machine_line(info: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in info["loadavg"])
    return (f"{info['cpu']}, {info['nproc']} cores, {info['memory_gib']} GiB, Python {info['python']}; "
            f"load average at start {load}; {info['time']}")


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values`` (NaN when empty)."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def save_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def scratch(prefix: str) -> Path:
    """A new temporary directory, removed when this benchmark process exits (its stack's etcd data reaches GiBs
    at N = 10,000). ``BATCHOP_BENCH_KEEP=1`` keeps it, to read the logs of the processes it held."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if not os.environ.get("BATCHOP_BENCH_KEEP"):
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy; return its value. Raises TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # transient HTTP errors count as "not yet"
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}"[:2000])


# -- processes -------------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (from ``/proc/<pid>/stat``)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_seconds_fine(pid: int) -> float:
    """CPU seconds of ``pid``'s live threads to the nanosecond (``/proc/<pid>/task/*/schedstat``: time on a CPU).

    Why: ``/proc/<pid>/stat`` counts in ticks of 10 ms, and four status cycles at rest of 1,000 resources take
    0.2 s of CPU: a tick either way moves that figure by 5%, and the 1,000 : 10,000 ratio with it. Threads that
    ended are not counted, so use this for a window in which the process starts or ends no thread (a status cycle
    at rest), beside :func:`proc_cpu_seconds` as the check."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; ``/proc/stat``: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def proc_hwm_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` in MiB (``VmHWM``): the high-water mark of a burst."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LocalBatchProc:
    """The local Batch service as a subprocess (``--no-execute``: no task runs)."""

    def __init__(self, work_dir: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "localbatch", "--port", "0", "--no-execute", "--work-dir", str(work_dir),
                   "--log-level", "WARNING", "--log-format", "json", *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        self.log_path = work_dir / "service.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # handed to the child
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the local Batch service did not start; see {self.log_path}")
        info = json.loads(line)
        self.endpoint: str = info["endpoint"]
        self.account: str = info["account"]
        self.key: str = info["key"]
        # keep draining stdout so the child never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.endpoint}/_emulator/{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def counts(self) -> dict[str, dict[str, Any]]:
        return self.admin("GET", "counts")  # type: ignore[no-any-return]

    def total_requests(self) -> int:
        return sum(int(v["total"]) for v in self.counts().values())

    def reset_counts(self) -> None:
        self.admin("DELETE", "counts")

    def reset(self) -> None:
        self.admin("POST", "reset")

    def faults(self, **settings: Any) -> dict[str, Any]:
        return self.admin("POST", "faults", settings)  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return self.admin("GET", "state")  # type: ignore[no-any-return]

    def env(self) -> dict[str, str]:
        return {"BATCHOP_BATCH_ENDPOINT": self.endpoint, "BATCHOP_BATCH_ACCOUNT": self.account,
                "BATCHOP_BATCH_KEY": self.key}

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class KubeStack:
    """etcd + kube-apiserver under a private state directory, CRDs applied."""

    def __init__(self, state_dir: Path | None = None) -> None:
        from devstack import kube as kube_mod
        from devstack.stack import CRD_DIR

        self.state_dir = state_dir or scratch("batchop-bench-kube-")
        self.endpoints = kube_mod.start(self.state_dir)
        kube_mod.apply_crds(self.endpoints.kubeconfig, kube_mod.crd_files(CRD_DIR))
        self.kubeconfig = self.endpoints.kubeconfig
        self.server = self.endpoints.server
        self.token = self.endpoints.token
        self._local = threading.local()

    def kubectl(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        from devstack import kube as kube_mod

        return kube_mod.kubectl(self.kubeconfig, *args, input=input, check=check)

    def api(self) -> Any:
        """A ``kubernetes.client.CustomObjectsApi`` for this thread (clients are not shared across threads)."""
        api = getattr(self._local, "api", None)
        if api is None:
            from kubernetes import client

            configuration = client.Configuration()
            configuration.host = self.server
            configuration.verify_ssl = False
            configuration.api_key = {"authorization": f"Bearer {self.token}"}
            configuration.connection_pool_maxsize = 4
            api_client = client.ApiClient(configuration)
            api = self._local.api = client.CustomObjectsApi(api_client)
            self._local.core = client.CoreV1Api(api_client)
        return api

    def core(self) -> Any:
        self.api()
        return self._local.core

    def create_namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core().create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        api = self.api()
        if namespace:
            found = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        else:
            found = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        return list(found.get("items") or [])

    def request_counts(self) -> dict[str, int]:
        """``apiserver_request_total`` for ``batchschedules`` (any subresource) summed by verb."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"{self.server}/metrics", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            text = response.read().decode()
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{") or 'resource="batchschedules"' not in line:
                continue
            labels = line[line.index("{") + 1 : line.rindex("}")]
            verb = labels.split('verb="', 1)[1].split('"', 1)[0]
            sub = labels.split('subresource="', 1)[1].split('"', 1)[0] if 'subresource="' in labels else ""
            name = f"{verb} {sub}".strip()
            counts[name] = counts.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts

    def stop(self) -> None:
        from devstack import kube as kube_mod
        from devstack import procs

        procs.stop_all(self.state_dir, order=(kube_mod.APISERVER, kube_mod.ETCD))


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def writes(counts: dict[str, int]) -> int:
    """How many of ``counts`` (from :meth:`KubeStack.request_counts`) are writes."""
    return sum(v for k, v in counts.items() if k.split(" ", 1)[0] in WRITE_VERBS)


def diff_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}


def batch_diff(after: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]) -> dict[str, int]:
    out = {}
    for op, entry in after.items():
        delta = int(entry["total"]) - int((before.get(op) or {}).get("total", 0))
        if delta:
            out[op] = delta
    return out


@dataclass
class OperatorProc:
    """``batchop run`` (or the timer baseline) as a process; JSON logs to ``log_path``."""

    command: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)
    metrics_port: int | None = None

    @classmethod
    def batchop(cls, stack: KubeStack, batch: LocalBatchProc, work: Path, namespaces: Iterable[str],
                *, resync: float, extra: Sequence[str] = (), log_level: str = "INFO") -> OperatorProc:
        port = free_port()
        command = [sys.executable, "-m", "batchop", "--log-format", "json", "--log-level", log_level, "run",
                   "--standalone", "--liveness", f"http://127.0.0.1:{port}/healthz", "--resync-interval", str(resync)]
        for ns in namespaces:
            command += ["-n", ns]
        metrics_port = free_port()
        command += ["--metrics-port", str(metrics_port), *extra]
        return cls(command, _env(stack, batch), work / f"operator-{port}.log", port, metrics_port=metrics_port)

    @classmethod
    def baseline(cls, stack: KubeStack, batch: LocalBatchProc, work: Path, namespace: str,
                 *, interval: float) -> OperatorProc:
        port = free_port()
        script = REPO / "bench" / "baseline" / "timer_operator.py"
        command = [sys.executable, "-m", "kopf", "run", "--standalone", "--quiet", "-n", namespace,
                   "--liveness", f"http://127.0.0.1:{port}/healthz", str(script)]
        env = {**_env(stack, batch), "BASELINE_INTERVAL": str(interval)}
        return cls(command, env, work / f"baseline-{port}.log", port)

    def start(self, timeout: float = 90.0) -> OperatorProc:
        log = open(self.log_path, "ab")  # handed to the child
        self.process = subprocess.Popen(self.command, stdout=log, stderr=log, env=self.env, cwd=REPO)
        log.close()
        self.starts += 1
        wait_until(self._healthy, timeout, 0.2, f"the operator on :{self.port} (log {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the operator exited early; see {self.log_path}:\n{self.logs()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mib(self) -> float:
        return proc_rss_mib(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def cpu_seconds_fine(self) -> float:
        """:func:`proc_cpu_seconds_fine`: to the nanosecond, for windows without thread starts or ends."""
        return proc_cpu_seconds_fine(self.pid)

    def gc_collections(self) -> list[float]:
        """The operator's garbage collections so far, by generation (prometheus-client's
        ``python_gc_collections_total`` on its ``/metrics``); empty when it serves none."""
        return self._by_generation("python_gc_collections_total")

    def gc_frozen(self) -> float:
        """Objects the operator has frozen out of garbage collections (``batchop_gc_frozen_objects``)."""
        values = self._metric_lines("batchop_gc_frozen_objects ")
        return float(values[0].rsplit(" ", 1)[1]) if values else float("nan")

    def gc_seconds(self) -> list[float]:
        """Seconds the operator spent in garbage collections so far, by generation (``batchop_gc_seconds_total``
        on its ``/metrics``); empty when it serves none."""
        return self._by_generation("batchop_gc_seconds_total")

    def _by_generation(self, metric: str) -> list[float]:
        if self.metrics_port is None:
            return []
        values = [0.0, 0.0, 0.0]
        prefix = f'{metric}{{generation="'
        for line in self._metric_lines(prefix):
            values[int(line[len(prefix)])] = float(line.rsplit(" ", 1)[1])
        return values

    def _metric_lines(self, prefix: str) -> list[str]:
        """The lines of the operator's ``/metrics`` that start with ``prefix`` (none when it serves none)."""
        if self.metrics_port is None:
            return []
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _env(stack: KubeStack, batch: LocalBatchProc) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHOP_")}
    env.update({"PYTHONPATH": str(REPO / "operator"), "KUBECONFIG": str(stack.kubeconfig), **batch.env()})
    return env


# -- resources -------------------------------------------------------------------------------------------------


def schedule_spec(recurrence: str = "P1D", prefix: str = "bench") -> dict[str, Any]:
    """An idle-friendly spec: job-1 at creation (auto pool for the job's lifetime), then one job a day."""
    return {
        "schedule": {"recurrenceInterval": recurrence},
        "jobSpecification": {
            "poolInfo": {
                "autoPoolSpecification": {
                    "autoPoolIdPrefix": prefix,
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
            "jobManagerTask": {"id": "main", "commandLine": "/bin/bash -c 'echo hello'"},
        },
    }


def resource(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BatchJobSchedule", "metadata": {"name": name},
            "spec": spec if spec is not None else schedule_spec()}


def parallel(fn: Callable[[Any], Any], items: Sequence[Any], concurrency: int) -> list[Any]:
    """``fn`` over ``items`` with a thread pool of ``concurrency``; returns results in order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(fn, items))


def create_resources(stack: KubeStack, namespace: str, names: Sequence[str], *, concurrency: int = 16,
                     spec: dict[str, Any] | None = None) -> None:
    def create(name: str) -> None:
        stack.api().create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource(name, spec))

    parallel(create, names, concurrency)


def delete_all(stack: KubeStack, namespace: str, *, concurrency: int = 16) -> None:
    from kubernetes.client.exceptions import ApiException

    names = [o["metadata"]["name"] for o in stack.list(namespace)]

    def delete(name: str) -> None:
        try:
            stack.api().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    parallel(delete, names, concurrency)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def mirrored(obj: dict[str, Any]) -> bool:
    """Ready=True with the Batch schedule's state mirrored into status."""
    status = obj.get("status") or {}
    return (condition(obj, "Ready").get("status") == "True" and bool(status.get("scheduleId"))
            and status.get("state") == "active")


def count_mirrored(stack: KubeStack, namespace: str) -> int:
    return sum(1 for o in stack.list(namespace) if mirrored(o))


def merge_results(name: str, fresh: list[dict[str, Any]], ns: Sequence[int]) -> list[dict[str, Any]]:
    """Earlier results of ``bench/results/<name>.json`` for other N, plus ``fresh`` (the Ns just measured)."""
    path = RESULTS / f"{name}.json"
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            kept = [r for r in json.loads(path.read_text()).get("results", []) if r.get("n") not in set(ns)]
        except (ValueError, AttributeError):
            kept = []
    return sorted(kept + fresh, key=lambda r: (r["n"], r.get("run", 0)))


def stamp(result: dict[str, Any]) -> dict[str, Any]:
    """Add when the result was taken and the load average then (the machine is shared)."""
    result["taken"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return result


def taken_line(results: list[dict[str, Any]]) -> str:
    """One line per N: when its runs were taken and the load average around them."""
    parts = []
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n and "taken" in r]
        if rows:
            loads = [r["loadavg"][0] for r in rows]
            parts.append(f"N={n:,}: {rows[0]['taken']} to {rows[-1]['taken']}, 1-min load {min(loads):.1f}-"
                         f"{max(loads):.1f}")
    return "; ".join(parts)
