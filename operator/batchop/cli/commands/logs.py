"""``batchop logs NAME``: a BatchJobSchedule's task output, read from Batch.

Which job: the most recent one (``status.recentJob``) by default, ``--previous`` the kept job before it
(``status.recentJobs``), ``--job ID`` any. Which task: the job's job manager task by default, ``--task ID`` any,
``--all-tasks`` every task of the job (each under a ``==> task <==`` header). Which file: ``stdout.txt``, or
``stderr.txt`` with ``--stderr``. ``--tail N`` prints the last N lines, ``--since-file-offset N`` starts at byte
N, ``-f`` follows a running task (waiting for it to start) by reading byte ranges (``ocp-range``) every
``--interval`` seconds until the task completes.

``--start-task``: the output of the pool's start task on one compute node instead, for a job that cannot start
because its start task fails (``Ready=False`` reason ``StartTaskFailed`` names this command). The pool is the
job's (``executionInfo.poolId``), the node the first in ``starttaskfailed`` (else the first whose start task ran),
or ``--node ID`` (which implies ``--start-task``); the file is ``startup/stderr.txt``, where a failing start task
says why, or ``startup/stdout.txt`` with ``--stdout``. Read with Batch's compute node file API (``GET
/pools/{pool}/nodes/{node}/files/startup/stderr.txt``, the SDK's ``download_node_file``), the same file as
``az batch node file download --file-path startup/stderr.txt``; the start task's state and failure follow on
stderr. A node's files go with the node: an auto pool is deleted when its job completes.

Files are read with Batch's task-file API (``GET /jobs/{job}/tasks/{task}/files/{path}``) through
:class:`batchop.batch.gateway.Gateway`, in chunks of :data:`CHUNK` bytes. Credentials: the Secret the operator
uses for the resource (``spec.account.credentialsSecretRef``, read through your kubeconfig), or the operator-wide
defaults of the environment (``BATCHOP_BATCH_ENDPOINT``/``_ACCOUNT``/``_KEY``, or the local stack's env file);
``--azure-credential`` uses your own Azure identity instead (``DefaultAzureCredential``). No key is printed.

Batch keeps a task's files on its node only until the task's ``retentionTime`` passes or the node goes (an auto
pool is deleted with its job); then this command says so and how to keep output (``outputFiles`` to Blob
storage). Exit codes (:mod:`batchwire.exitcodes`): 0 shown, 1 not found / not started / files gone, 2 usage or no
credentials, 4 Kubernetes or Batch unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from batchop.batch import credentials
from batchop.batch import settings as batch_settings
from batchop.batch.gateway import BatchError, Gateway
from batchop.cli.commands import status as status_cmd
from batchop.spec import failures
from batchwire import devenv, durations, timestamps
from batchwire.exitcodes import FAILURE, OK, UNAVAILABLE, USAGE, CLIError

CHUNK = 4 * 1024 * 1024
"""Bytes read per request (one ``ocp-range``)."""
GONE_CODES = ("TaskFilesCleanedup", "TaskFilesUnavailable", "NodeNotFound", "PoolNotFound")
KEEP_OUTPUT = (
    "To keep output, upload it to Blob storage with the task's outputFiles (uploadCondition taskcompletion; "
    "see docs/blob-storage.md)"
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "logs",
        help="print a job's task output (stdout/stderr), or its pool's start task output, from Batch",
        description="Print the output of a BatchJobSchedule's job from Batch: the most recent job's job manager "
        "task's stdout.txt by default; with --start-task the start task's stderr.txt on a node of the job's pool "
        "(why a job cannot start: reason StartTaskFailed). Credentials: the resource's Secret (read through your "
        "kubeconfig), the operator's defaults from the environment, or your Azure identity with --azure-credential.",
    )
    parser.add_argument("name", metavar="NAME", help="the BatchJobSchedule")
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig context's)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--job", default=None, metavar="ID", help="a job id (default: the most recent job)")
    which.add_argument("--previous", action="store_true", help="the kept job before the most recent one")
    tasks = parser.add_mutually_exclusive_group()
    tasks.add_argument("--task", default=None, metavar="ID", help="a task id (default: the job manager task)")
    tasks.add_argument("--all-tasks", action="store_true", help="every task of the job, each under a header")
    stream = parser.add_mutually_exclusive_group()
    stream.add_argument("--stderr", action="store_true", help="stderr.txt (default: stdout.txt; with --start-task "
                        "stderr.txt is the default)")
    stream.add_argument("--stdout", action="store_true", help="stdout.txt (the default but with --start-task)")
    parser.add_argument("--start-task", action="store_true",
                        help="the start task's output (startup/stderr.txt) on a node of the job's pool: the first "
                        "node whose start task failed, or --node")
    parser.add_argument("--node", default=None, metavar="ID",
                        help="the compute node whose start task output to print (implies --start-task)")
    parser.add_argument("-f", "--follow", action="store_true", help="follow a running task until it completes")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines")
    start.add_argument("--since-file-offset", type=int, default=0, metavar="N", help="start at byte N")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between reads with -f (default 2)")
    parser.add_argument("--azure-credential", action="store_true",
                        help="use your own Azure identity (DefaultAzureCredential) instead of the resource's key")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.follow and args.all_tasks:
        raise CLIError("-f follows one task: name it with --task (or leave out --all-tasks)", USAGE)
    if (args.tail is not None and args.tail < 0) or args.since_file_offset < 0 or args.interval <= 0:
        raise CLIError("--tail, --since-file-offset and --interval must not be negative", USAGE)
    if _start_task(args) and (args.task or args.all_tasks or args.follow):
        raise CLIError("--start-task and --node print a node's start task output once: leave out --task, "
                       "--all-tasks and -f", USAGE)
    # The SDK logs a traceback at WARNING for every download error whose body it has not read yet; the
    # gateway reads that body and this command reports the error itself, in words.
    logging.getLogger("azure.batch._utils.model_base").setLevel(logging.ERROR)
    custom, default_namespace = status_cmd.api(args.kubeconfig, args.context)
    namespace = args.namespace or default_namespace
    obj = status_cmd.read(custom, namespace=namespace, name=args.name)[0]
    job_id = pick_job(obj, job=args.job, previous=args.previous)
    return asyncio.run(_logs(args, obj, namespace, job_id))


def pick_job(obj: Mapping[str, Any], *, job: str | None, previous: bool) -> str:
    """The job to read: ``job``, else the most recent one in status, else (``previous``) the kept one before it."""
    if job:
        return job
    name = (obj.get("metadata") or {}).get("name")
    status = obj.get("status") or {}
    recent = (status.get("recentJob") or {}).get("id")
    if not recent:
        raise CLIError(f"{name} has run no job yet (status.recentJob is empty): wait for one, or name one with "
                       "--job", FAILURE)
    if not previous:
        return str(recent)
    for kept in status.get("recentJobs") or []:
        if kept.get("id") and kept["id"] != recent:
            return str(kept["id"])
    raise CLIError(f"{name} keeps no job before {recent} (status.recentJobs): name one with --job", FAILURE)


def _environment() -> dict[str, str]:
    """The operator-wide defaults a user may have: the local stack's env file, overridden by the environment."""
    return {**devenv.read_env_file(devenv.env_file()), **os.environ}


class KubeSecrets:
    """Reads a Secret through the user's kubeconfig: the one the operator reads for the resource."""

    def __init__(self) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api()

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        return await asyncio.to_thread(self._read, namespace, name)

    def _read(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CLIError(
                f"cannot read Secret {namespace}/{name} ({exc.status} {exc.reason}): you need get on secrets there, "
                "or pass --azure-credential to use your own Azure identity", FAILURE,
            ) from None
        data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
        return data, str(getattr(secret.metadata, "resource_version", None) or "")


async def connect(obj: Mapping[str, Any], namespace: str, *, azure_credential: bool) -> tuple[Gateway, Any]:
    """A gateway to the resource's Batch account, and the credential to close afterwards (or None)."""
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name")
    settings = batch_settings.from_env(_environment())
    if azure_credential:
        endpoint = (spec.get("account") or {}).get("endpoint") or settings.batch_endpoint
        if not endpoint:
            raise CLIError(f"{name} names no Batch account (spec.account.endpoint) and BATCHOP_BATCH_ENDPOINT is "
                           "not set", USAGE)
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
        return Gateway(endpoint, credential), credential
    try:
        ref = await credentials.resolve(namespace, spec, settings, credentials.SecretSource(KubeSecrets(), ttl=0))
    except credentials.CredentialError as exc:
        raise CLIError(exc.message, USAGE) from None
    if not ref.key:
        raise CLIError(f"{name} reaches {ref.endpoint} with Entra ID (no accountKey in a credentialsSecretRef): "
                       "pass --azure-credential to read its logs with your own Azure identity", USAGE)
    return Gateway(ref.endpoint, credentials.make_credential(ref)), None


async def _logs(args: argparse.Namespace, obj: Mapping[str, Any], namespace: str, job_id: str) -> int:
    gateway, credential = await connect(obj, namespace, azure_credential=args.azure_credential)
    try:
        if _start_task(args):
            return await _show_start_task(args, gateway, job_id)
        return await _show(args, gateway, job_id)
    except BatchError as err:
        code = UNAVAILABLE if err.reason == "BatchUnavailable" else FAILURE
        raise CLIError(f"Batch: {err}", code) from None
    finally:
        await gateway.close()
        if credential is not None:
            await credential.close()


async def _show(args: argparse.Namespace, gateway: Gateway, job_id: str) -> int:
    job = await gateway.get_job(job_id)
    if job is None:
        raise CLIError(f"Batch has no job {job_id} (deleted by the history limits, or by hand)", FAILURE)
    path = "stderr.txt" if args.stderr else "stdout.txt"
    out = sys.stdout.buffer
    result = OK
    for task in await _tasks(args, gateway, job):
        if args.all_tasks:
            out.write(f"==> task {task['id']} ({_task_line(task)}) <==\n".encode())
        try:
            if args.follow:
                task = await _follow(gateway, job_id, task, path, args)
            else:
                out.write(_last_lines(await _read_all(gateway, job_id, task, path, args.since_file_offset), args.tail))
        except CLIError as exc:
            if not args.all_tasks:
                raise
            print(f"batchop logs: {exc}", file=sys.stderr)  # the other tasks' output still counts
            result = exc.code
        out.flush()
        if _failed(task):
            print(f"batchop logs: {failures.describe(failures.failed_task(task))} (job {job_id})", file=sys.stderr)
    return result


async def _tasks(args: argparse.Namespace, gateway: Gateway, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    job_id = str(job["id"])
    if args.all_tasks:
        found = await gateway.list_tasks(job_id, select=["id", "state", "constraints", "executionInfo", "nodeInfo"])
        if not found:
            raise CLIError(f"job {job_id} has no task", FAILURE)
        return found
    task_id = args.task or (job.get("jobManagerTask") or {}).get("id")
    if not task_id:
        raise CLIError(f"job {job_id} has no job manager task: name a task with --task, or use --all-tasks", FAILURE)
    task = await gateway.get_task(job_id, str(task_id))
    if task is None:
        raise CLIError(f"job {job_id} has no task {task_id}", FAILURE)
    return [task]


def _task_line(task: Mapping[str, Any]) -> str:
    info = task.get("executionInfo") or {}
    if task.get("state") != "completed":
        return str(task.get("state", "active"))
    if info.get("result") == "failure":
        return failures.describe(failures.failed_task(task)).removeprefix(f"task {task.get('id')} ")
    return f"exit code {info.get('exitCode')}"


def _failed(task: Mapping[str, Any]) -> bool:
    return (task.get("executionInfo") or {}).get("result") == "failure"


def _last_lines(data: bytes, count: int | None) -> bytes:
    if count is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-count:]) if count > 0 else b""


def _not_started(job_id: str, task: Mapping[str, Any]) -> CLIError:
    state = task.get("state", "active")
    if state == "completed":
        detail = failures.describe(failures.failed_task(task)) if _failed(task) else "it has no output"
        return CLIError(f"task {task['id']} of job {job_id} completed without running on a node ({detail})",
                        FAILURE)
    return CLIError(f"task {task['id']} of job {job_id} has not started yet (state {state}): add -f to wait for it "
                    "and follow its output", FAILURE)


async def _read_all(
    gateway: Gateway, job_id: str, task: Mapping[str, Any], path: str, offset: int, *, missing_ok: bool = False
) -> bytes:
    """The file from ``offset`` to its current end, one ``ocp-range`` of :data:`CHUNK` bytes at a time.
    ``missing_ok``: a file not written yet (the task is still downloading its resource files) reads as empty."""
    if not task.get("nodeInfo"):
        raise _not_started(job_id, task)
    chunks: list[bytes] = []
    while True:
        try:
            data = await gateway.read_task_file(job_id, str(task["id"]), path, start=offset, end=offset + CHUNK - 1)
        except BatchError as err:
            if err.code == "InvalidRange" or (missing_ok and err.code == "FileNotFound"):  # nothing there (yet)
                break
            raise file_error(err, job_id, task, path) from None
        chunks.append(data)
        offset += len(data)
        if len(data) < CHUNK:
            break
    return b"".join(chunks)


def file_error(err: BatchError, job_id: str, task: Mapping[str, Any], path: str) -> CLIError:
    """What a failed file read means for the user, and how to keep output next time."""
    task_id = task.get("id")
    if err.code == "TaskFilesCleanedup":
        retention = (task.get("constraints") or {}).get("retentionTime") or "P7D"
        end = (task.get("executionInfo") or {}).get("endTime")
        when = f" at {timestamps.format(timestamps.parse(end) + durations.parse(retention))}" if end else ""
        return CLIError(f"the files of task {task_id} of job {job_id} are gone: its retention time ({retention}) "
                        f"passed{when} and Batch deleted them. {KEEP_OUTPUT}, or set a longer "
                        "jobManagerTask.constraints.retentionTime", FAILURE)
    if err.code in GONE_CODES:
        if not task.get("nodeInfo"):
            return _not_started(job_id, task)
        pool = (task.get("nodeInfo") or {}).get("poolId")
        return CLIError(f"the files of task {task_id} of job {job_id} are gone with the node it ran on: pool {pool} "
                        "was deleted (an auto pool with poolLifetimeOption job is deleted when its job completes). "
                        f"{KEEP_OUTPUT}, or keep the pool (keepAlive, or poolLifetimeOption jobschedule)", FAILURE)
    if err.code == "FileNotFound":
        return CLIError(f"task {task_id} of job {job_id} has no {path}", FAILURE)
    code = UNAVAILABLE if err.reason == "BatchUnavailable" else FAILURE
    return CLIError(f"cannot read {path} of task {task_id} of job {job_id}: {err}", code)


async def _follow(
    gateway: Gateway, job_id: str, task: dict[str, Any], path: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Print the file as it grows until the task completes; returns the completed task."""
    task_id = str(task["id"])
    task = await _wait_started(gateway, job_id, task, args.interval)
    offset, first = args.since_file_offset, True
    out = sys.stdout.buffer
    while True:
        data = await _read_all(gateway, job_id, task, path, offset, missing_ok=True)
        offset += len(data)
        out.write(_last_lines(data, args.tail) if first else data)
        out.flush()
        first = False
        if not data:
            current = await gateway.get_task(job_id, task_id)
            if current is None:
                raise CLIError(f"task {task_id} of job {job_id} is gone (its job was deleted)", FAILURE)
            if current.get("state") == "completed":
                try:
                    out.write(await _read_all(gateway, job_id, current, path, offset, missing_ok=True))
                except CLIError as exc:  # the node went with its job: what was printed is all there is
                    print(f"batchop logs: {exc}", file=sys.stderr)
                return current
        await asyncio.sleep(args.interval)


async def _wait_started(gateway: Gateway, job_id: str, task: dict[str, Any], interval: float) -> dict[str, Any]:
    """The task once it runs on a node (its output exists from then on); says once that it waits."""
    told = False
    while not task.get("nodeInfo"):
        if task.get("state") == "completed":
            raise _not_started(job_id, task)
        if not told:
            print(f"batchop logs: waiting for task {task['id']} of job {job_id} to start (state "
                  f"{task.get('state', 'active')})", file=sys.stderr)
            told = True
        await asyncio.sleep(interval)
        found = await gateway.get_task(job_id, str(task["id"]))
        if found is None:
            raise CLIError(f"task {task['id']} of job {job_id} is gone (its job was deleted)", FAILURE)
        task = found
    return task


# -- a node's start task output ----------------------------------------------------------------------------

NODE_SELECT = ["id", "state", "startTaskInfo"]
"""The node properties ``--start-task`` needs (``$select``)."""


def _start_task(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "start_task", False) or getattr(args, "node", None))


async def _show_start_task(args: argparse.Namespace, gateway: Gateway, job_id: str) -> int:
    """Print the start task's output on the chosen node of the job's pool; its state and failure on stderr."""
    pool_id = await job_pool(gateway, job_id)
    try:
        nodes = await gateway.list_nodes(pool_id, select=NODE_SELECT)
    except BatchError as err:
        raise node_error(err, pool_id, None, job_id) from None
    node = pick_node(nodes, pool_id, args.node)
    path = "startup/stdout.txt" if getattr(args, "stdout", False) else "startup/stderr.txt"
    data = await _read_node_file(gateway, pool_id, node, path, args.since_file_offset, job_id)
    out = sys.stdout.buffer
    out.write(_last_lines(data, args.tail))
    out.flush()
    print(f"batchop logs: {start_task_line(node, pool_id)}", file=sys.stderr)
    return OK


async def job_pool(gateway: Gateway, job_id: str) -> str:
    """The pool the job runs on (its auto pool, or the pool it names)."""
    job = await gateway.get_job(job_id)
    if job is None:
        raise CLIError(f"Batch has no job {job_id} (deleted by the history limits, or by hand)", FAILURE)
    pool_id = (job.get("executionInfo") or {}).get("poolId") or (job.get("poolInfo") or {}).get("poolId")
    if not pool_id:
        raise CLIError(f"job {job_id} has no pool yet (executionInfo.poolId is empty): Batch creates its auto pool "
                       "when the job starts; try again in a moment", FAILURE)
    return str(pool_id)


def pick_node(nodes: list[dict[str, Any]], pool_id: str, wanted: str | None) -> dict[str, Any]:
    """``wanted`` (any case), else the first node whose start task failed, else the first whose start task ran."""
    if wanted:
        found = next((n for n in nodes if str(n.get("id", "")).lower() == wanted.lower()), None)
        if found is None:
            known = ", ".join(str(n.get("id")) for n in nodes[:5]) or "none"
            raise CLIError(f"pool {pool_id} has no node {wanted} (its nodes: {known})", FAILURE)
        return found
    if not nodes:
        raise CLIError(f"pool {pool_id} has no node (yet): see status.pool of the resource for resizeErrors and "
                       "node counts", FAILURE)
    failed = next((n for n in nodes if str(n.get("state", "")).lower() == "starttaskfailed"), None)
    if failed is not None:
        return failed
    ran = next((n for n in nodes if n.get("startTaskInfo")), None)
    if ran is not None:
        return ran
    states = ", ".join(sorted({str(n.get("state")) for n in nodes}))
    raise CLIError(f"no node of pool {pool_id} has run a start task (node states: {states}): the pool has no start "
                   "task, or its nodes are still starting", FAILURE)


async def _read_node_file(
    gateway: Gateway, pool_id: str, node: Mapping[str, Any], path: str, offset: int, job_id: str
) -> bytes:
    """The node file from ``offset`` to its end, one ``ocp-range`` of :data:`CHUNK` bytes at a time."""
    chunks: list[bytes] = []
    node_id = str(node["id"])
    while True:
        try:
            data = await gateway.read_node_file(pool_id, node_id, path, start=offset, end=offset + CHUNK - 1)
        except BatchError as err:
            if err.code == "InvalidRange":  # an empty file, or nothing after the offset
                break
            raise node_error(err, pool_id, node, job_id, path) from None
        chunks.append(data)
        offset += len(data)
        if len(data) < CHUNK:
            break
    return b"".join(chunks)


def node_error(err: BatchError, pool_id: str, node: Mapping[str, Any] | None, job_id: str,
               path: str | None = None) -> CLIError:
    """What a failed node listing or node file read means for the user."""
    node_id = (node or {}).get("id")
    if err.code == "PoolNotFound":
        return CLIError(f"pool {pool_id} of job {job_id} is gone, and its nodes' files with it (an auto pool with "
                        "poolLifetimeOption job is deleted when its job completes)", FAILURE)
    if err.code == "NodeNotFound":
        return CLIError(f"node {node_id} of pool {pool_id} is gone (the pool shrank or was deleted)", FAILURE)
    if err.code == "FileNotFound":
        state = ((node or {}).get("startTaskInfo") or {}).get("state") or "not started"
        return CLIError(f"node {node_id} of pool {pool_id} has no {path}: its start task has not written it "
                        f"(start task {state})", FAILURE)
    code = UNAVAILABLE if err.reason == "BatchUnavailable" else FAILURE
    where = f"{path} of node {node_id}" if path else f"the nodes of pool {pool_id}"
    return CLIError(f"cannot read {where}: {err}", code)


def start_task_line(node: Mapping[str, Any], pool_id: str) -> str:
    """The start task's state on the node, in a line: ``the start task on node N of pool P exited with 3``."""
    info = node.get("startTaskInfo") or {}
    where = f"the start task on node {node.get('id')} of pool {pool_id} (node state {node.get('state')})"
    if info.get("result") == "failure":
        item = failures.failed_task({"id": "start", "executionInfo": info})
        return f"{where} {failures.describe(item).removeprefix('task start ')}"
    if info.get("state") == "completed":
        return f"{where} exited with {info.get('exitCode', 0)}"
    return f"{where} is {info.get('state') or 'not started'}"
