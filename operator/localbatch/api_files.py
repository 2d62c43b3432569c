"""Task and compute-node files, served from the node directories the runner writes, as Azure serves them.

Batch keeps a task's output on the node it ran on: ``stdout.txt``, ``stderr.txt`` and the working directory
``wd/`` in the task directory (``nodeInfo.taskRootDirectory``, ``workitems/{jobId}/job-1/{taskId}`` under the
node's root), the start task's in ``startup/``, a job preparation / release task's in
``workitems/{jobId}/job-1/jobpreparation`` / ``jobrelease``. This module answers the file operations over those
directories (``<work dir>/nodes/<nodeId>/``):

- ``GET  /jobs/{jobId}/tasks/{taskId}/files`` and ``GET /pools/{poolId}/nodes/{nodeId}/files``: list
  (``recursive``, ``$filter=startswith(name,'...')``, ``maxresults``, paged with ``odata.nextLink``). Entries
  are ``{name, url, isDirectory, properties?}``, breadth first, names sorted within a level, directories
  without ``properties`` and files with ``{creationTime, lastModified, contentLength (a string), contentType,
  fileMode}``, as recorded from Azure (``test_batch.pyTestBatchtest_batch_files[async].json``);
- ``GET .../files/{filePath}``: the content (``ocp-range: bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` for a part,
  answered 200 as Azure does; a range starting at or beyond the end is 416 ``InvalidRange``);
- ``HEAD .../files/{filePath}``: the properties as headers: ``Content-Length``, ``Content-Type``,
  ``Last-Modified``, ``ocp-creation-time``, ``ocp-batch-file-isdirectory`` (``True``/``False``),
  ``ocp-batch-file-url`` (the file's URL, percent-encoded), ``ocp-batch-file-mode`` (octal ``st_mode``);
- ``DELETE .../files/{filePath}`` (``recursive=true`` for a non-empty directory): 200.

When the files are gone, the answer is Batch's: a task never scheduled on a node, or whose node is gone (its
pool was deleted: an auto pool goes with its job or schedule), 409 ``TaskFilesUnavailable``; a completed task
whose ``constraints.retentionTime`` has passed (measured from its ``endTime`` on the virtual clock) has its
directory deleted and answers 409 ``TaskFilesCleanedup``; no pool / node: 404 ``PoolNotFound`` /
``NodeNotFound``; no such file: 404 ``FileNotFound``. Paths never leave the task's (node's) directory.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import shutil
import stat
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from batchwire import defaults, durations, timestamps
from localbatch import odata
from localbatch.api_common import service, truthy
from localbatch.context import ServiceContext
from localbatch.errors import BatchError
from localbatch.responses import json_response

JSON = dict[str, Any]

_MESSAGES = {
    "FileNotFound": (404, "The specified file does not exist."),
    "TaskFilesUnavailable": (409, "The files of the specified task are unavailable."),
    "TaskFilesCleanedup": (409, "The files of the specified task are cleanedup."),
    "InvalidRange": (416, "The range specified is invalid for the current size of the resource."),
    "OperationInvalidForCurrentState": (
        409, "The specified operation is not valid for the current state of the resource."
    ),
}


def _error(code: str, reason: str, *values: tuple[str, str]) -> BatchError:
    status, message = _MESSAGES[code]
    return BatchError(code, [*values, ("Reason", reason)], status=status, message=message)


@dataclass(frozen=True)
class FileRoot:
    """A directory whose files a request may reach, and the URL its files are named under."""

    path: Path
    url: str


# -- where the files are ------------------------------------------------------------------------------


def node_root(svc: ServiceContext, node_id: str) -> Path:
    """A node's root directory (the layout of :mod:`localbatch.pools`)."""
    return svc.work_dir / "nodes" / node_id


def _retention_end(task: JSON) -> datetime | None:
    """When a completed task's files go (``endTime`` + ``constraints.retentionTime``), None while it runs."""
    if task.get("state") != "completed":
        return None
    end = (task.get("executionInfo") or {}).get("endTime")
    if not end:
        return None
    retention = (task.get("constraints") or {}).get("retentionTime") or defaults.TASK_CONSTRAINTS_DEFAULTS[
        "retentionTime"
    ]
    try:
        return timestamps.parse(end) + durations.parse(retention)
    except ValueError:
        return None


def _task_dir(svc: ServiceContext, task: JSON) -> Path | None:
    info = task.get("nodeInfo") or {}
    if not info.get("nodeId") or not info.get("taskRootDirectory"):
        return None
    return node_root(svc, str(info["nodeId"])) / str(info["taskRootDirectory"]).replace("\\", "/")


def sweep_expired(svc: ServiceContext, node_id: str | None = None) -> None:
    """Delete the directories of completed tasks whose retention time has passed (on ``node_id``, or all)."""
    now = svc.clock.now()
    for tasks in svc.store.tasks.values():
        for task in tasks.values():
            if node_id is not None and (task.get("nodeInfo") or {}).get("nodeId") != node_id:
                continue
            end = _retention_end(task)
            directory = _task_dir(svc, task)
            if end is not None and now >= end and directory is not None and directory.exists():
                shutil.rmtree(directory, ignore_errors=True)


def _task_root(request: web.Request) -> FileRoot:
    """The directory of the task named in the path, or Batch's error for why its files are not there."""
    svc = service(request)
    job_key = request.match_info["jobId"].lower()
    job = svc.store.jobs.get(job_key)
    if job is None:
        raise BatchError("JobNotFound")
    task = svc.store.tasks.get(job_key, {}).get(request.match_info["taskId"].lower())
    if task is None:
        raise BatchError("TaskNotFound")
    info = task.get("nodeInfo") or {}
    directory = _task_dir(svc, task)
    if directory is None:
        state = task.get("state", "active")
        raise _error("TaskFilesUnavailable", f"the task has not been scheduled on a compute node yet (state {state})")
    node = svc.store.nodes.get(str(info.get("poolId", "")).lower(), {}).get(str(info["nodeId"]))
    if node is None:
        raise _error(
            "TaskFilesUnavailable",
            f"the compute node {info['nodeId']} the task ran on no longer exists (pool {info.get('poolId')} was "
            "deleted); upload output with outputFiles to keep it",
        )
    end = _retention_end(task)
    if end is not None and svc.clock.now() >= end:
        shutil.rmtree(directory, ignore_errors=True)
        retention = (task.get("constraints") or {}).get("retentionTime")
        raise _error(
            "TaskFilesCleanedup",
            f"the task's retentionTime ({retention}) passed at {timestamps.format(end)}; its files were deleted",
        )
    return FileRoot(directory, f"{svc.base_url}/jobs/{job['id']}/tasks/{task['id']}/files")


def _node_root(request: web.Request) -> FileRoot:
    svc = service(request)
    pool = svc.store.pools.get(request.match_info["poolId"].lower())
    if pool is None:
        raise BatchError("PoolNotFound")
    node_id = request.match_info["nodeId"]
    node = next((n for n in svc.store.nodes.get(pool["id"].lower(), {}).values() if n["id"].lower() == node_id.lower()),
                None)
    if node is None:
        raise BatchError("NodeNotFound")
    sweep_expired(svc, node["id"])
    return FileRoot(node_root(svc, node["id"]), f"{svc.base_url}/pools/{pool['id']}/nodes/{node['id']}/files")


def _resolve(root: FileRoot, raw: str) -> tuple[Path, str]:
    """The file a path names inside ``root`` (``\\`` and ``/`` both separate), and its normal name."""
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    name = "/".join(parts)
    if not parts or ".." in parts:
        raise _error("FileNotFound", f"{raw!r} is not a path inside the directory", ("FilePath", raw))
    target = root.path / name
    base = root.path.resolve()
    try:
        resolved = target.resolve()
    except OSError:
        resolved = target
    if resolved != base and not resolved.is_relative_to(base):
        raise _error("FileNotFound", f"{name} leads outside the directory", ("FilePath", name))
    if not target.exists() and not target.is_symlink():
        raise _error("FileNotFound", f"no file {name}", ("FilePath", name))
    return target, name


# -- entries and headers ------------------------------------------------------------------------------


def _virtual(svc: ServiceContext, epoch_seconds: float) -> datetime:
    """A disk timestamp on the service's virtual clock (as far back from virtual now as it is from real now)."""
    return svc.clock.now() - timedelta(seconds=(time.time() - epoch_seconds) * svc.clock.scale)


def _file_times(svc: ServiceContext, info: os.stat_result) -> tuple[datetime, datetime]:
    modified = _virtual(svc, info.st_mtime)
    created = min(_virtual(svc, info.st_ctime), modified)
    return created, modified


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _entry(svc: ServiceContext, root: FileRoot, name: str, info: os.stat_result) -> JSON:
    is_dir = stat.S_ISDIR(info.st_mode)
    entry: JSON = {"name": name, "url": f"{root.url}/{name}", "isDirectory": is_dir}
    if not is_dir:
        created, modified = _file_times(svc, info)
        entry["properties"] = {
            "creationTime": timestamps.format(created),
            "lastModified": timestamps.format(modified),
            "contentLength": str(info.st_size),
            "contentType": _content_type(name),
            "fileMode": format(info.st_mode, "o"),
        }
    return entry


def _walk(root: FileRoot, recursive: bool) -> Iterator[tuple[str, os.stat_result]]:
    """``(name, stat)`` below ``root``, breadth first, sorted by name within a level; links to outside skipped."""
    if not root.path.is_dir():
        return
    base = root.path.resolve()
    queue: deque[tuple[Path, str]] = deque([(root.path, "")])
    while queue:
        directory, prefix = queue.popleft()
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for child in children:
            path = Path(child.path)
            try:
                if child.is_symlink() and not path.resolve().is_relative_to(base):
                    continue
                info = child.stat()
            except OSError:
                continue
            name = f"{prefix}{child.name}"
            yield name, info
            if recursive and stat.S_ISDIR(info.st_mode) and not child.is_symlink():
                queue.append((path, f"{name}/"))


def _property_headers(svc: ServiceContext, root: FileRoot, name: str, info: os.stat_result) -> dict[str, str]:
    is_dir = stat.S_ISDIR(info.st_mode)
    created, modified = _file_times(svc, info)
    return {
        "Content-Type": "application/octet-stream" if is_dir else _content_type(name),
        "Last-Modified": timestamps.rfc1123(modified),
        "ocp-creation-time": timestamps.rfc1123(created),
        "ocp-batch-file-isdirectory": "True" if is_dir else "False",
        "ocp-batch-file-url": quote(f"{root.url}/{name}", safe=""),
        "ocp-batch-file-mode": format(info.st_mode, "o"),
    }


def _not_modified(request: web.Request, modified: datetime) -> bool:
    """``If-Modified-Since`` (True: answer 304) and ``If-Unmodified-Since`` (412) against the file's time."""
    from email.utils import parsedate_to_datetime

    stamp = modified.replace(microsecond=0)
    for name in ("If-Modified-Since", "If-Unmodified-Since"):
        text = request.headers.get(name)
        if not text:
            continue
        try:
            since = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise BatchError("InvalidHeaderValue", [("HeaderName", name), ("HeaderValue", text)]) from None
        if name == "If-Unmodified-Since" and stamp > since:
            raise BatchError("ConditionNotMet")
        if name == "If-Modified-Since" and stamp <= since:
            return True
    return False


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def parse_range(text: str | None, size: int) -> tuple[int, int] | None:
    """``ocp-range`` as ``(start, end exclusive)``; None for the whole file. ``bytes=a-b`` (both included, the
    end clamped to the size), ``bytes=a-``, ``bytes=-n`` (the last n). A range that selects no byte (a start at
    or beyond the end) is 416 ``InvalidRange``; anything else unreadable 400 ``InvalidHeaderValue``."""
    if text is None or not text.strip():
        return None
    match = _RANGE.fullmatch(text)
    if match is None or not (match[1] or match[2]) or (match[1] and match[2] and int(match[2]) < int(match[1])):
        raise BatchError("InvalidHeaderValue", [
            ("HeaderName", "ocp-range"), ("HeaderValue", text),
            ("Reason", "write bytes=START-END (both included), bytes=START- or bytes=-COUNT"),
        ])
    if not match[1]:
        count = int(match[2])
        if count == 0 or size == 0:
            raise _error("InvalidRange", f"{text} selects no byte of a {size}-byte file")
        return max(0, size - count), size
    start = int(match[1])
    if start >= size:
        raise _error("InvalidRange", f"{text} starts at or beyond the end of the {size}-byte file")
    return start, size if not match[2] else min(size, int(match[2]) + 1)


def _read(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


# -- handlers -------------------------------------------------------------------------------------------


def _list(request: web.Request, root: FileRoot) -> web.Response:
    svc = service(request)
    query = request.query
    predicate = odata.compile_filter(query.get("$filter"))
    limit = odata.parse_max_results(query.get("maxresults"))
    skip = int(query["$skiptoken"]) if query.get("$skiptoken", "").isdigit() else 0
    entries = [_entry(svc, root, name, info) for name, info in _walk(root, truthy(query.get("recursive")))]
    if predicate is not None:
        entries = [e for e in entries if predicate(e)]
    page = entries[skip : skip + limit]
    out: JSON = {"odata.metadata": f"{svc.base_url}/$metadata#files", "value": page}
    if skip + limit < len(entries):
        params = {**{k: v for k, v in query.items() if k != "$skiptoken"}, "$skiptoken": str(skip + limit)}
        out["odata.nextLink"] = f"{svc.base_url}{request.path}?{urlencode(params, quote_via=quote, safe='')}"
    return json_response(out)


async def _get(request: web.Request, root: FileRoot) -> web.Response:
    svc = service(request)
    path, name = _resolve(root, request.match_info["filePath"])
    info = path.stat()
    headers = _property_headers(svc, root, name, info)
    if _not_modified(request, _file_times(svc, info)[1]):
        return web.Response(status=304, headers=headers)
    if stat.S_ISDIR(info.st_mode):
        raise _error("FileNotFound", f"{name} is a directory: list it with GET .../files?recursive=true",
                     ("FilePath", name))
    span = parse_range(request.headers.get("ocp-range"), info.st_size) or (0, info.st_size)
    body = await asyncio.to_thread(_read, path, *span)
    return web.Response(status=200, body=body, headers=headers)


def _head(request: web.Request, root: FileRoot) -> web.Response:
    svc = service(request)
    path, name = _resolve(root, request.match_info["filePath"])
    info = path.stat()
    headers = _property_headers(svc, root, name, info)
    if _not_modified(request, _file_times(svc, info)[1]):
        return web.Response(status=304, headers=headers)
    size = 0 if stat.S_ISDIR(info.st_mode) else info.st_size
    return web.Response(status=200, headers={**headers, "Content-Length": str(size)})


def _delete(request: web.Request, root: FileRoot) -> web.Response:
    path, name = _resolve(root, request.match_info["filePath"])
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()) and not truthy(request.query.get("recursive")):
            raise _error("OperationInvalidForCurrentState", f"{name} is a directory with files: pass recursive=true",
                         ("FilePath", name))
        shutil.rmtree(path)
    else:
        path.unlink()
    return web.Response(status=200)


async def list_task_files(request: web.Request) -> web.Response:
    return _list(request, _task_root(request))


async def download_task_file(request: web.Request) -> web.Response:
    return await _get(request, _task_root(request))


async def get_task_file_properties(request: web.Request) -> web.Response:
    return _head(request, _task_root(request))


async def delete_task_file(request: web.Request) -> web.Response:
    return _delete(request, _task_root(request))


async def list_node_files(request: web.Request) -> web.Response:
    return _list(request, _node_root(request))


async def download_node_file(request: web.Request) -> web.Response:
    return await _get(request, _node_root(request))


async def get_node_file_properties(request: web.Request) -> web.Response:
    return _head(request, _node_root(request))


async def delete_node_file(request: web.Request) -> web.Response:
    return _delete(request, _node_root(request))


_TASK_FILE = "/jobs/{jobId}/tasks/{taskId}/files/{filePath:.+}"
_NODE_FILE = "/pools/{poolId}/nodes/{nodeId}/files/{filePath:.+}"

ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/jobs/{jobId}/tasks/{taskId}/files", "list_task_files", list_task_files),
    ("GET", _TASK_FILE, "download_task_file", download_task_file),
    ("HEAD", _TASK_FILE, "get_task_file_properties", get_task_file_properties),
    ("DELETE", _TASK_FILE, "delete_task_file", delete_task_file),
    ("GET", "/pools/{poolId}/nodes/{nodeId}/files", "list_node_files", list_node_files),
    ("GET", _NODE_FILE, "download_node_file", download_node_file),
    ("HEAD", _NODE_FILE, "get_node_file_properties", get_node_file_properties),
    ("DELETE", _NODE_FILE, "delete_node_file", delete_node_file),
]
"""Operation names are the SDK's method names (the admin API counts requests by them)."""
