"""Resource-file downloads and output-file uploads, as a Batch node does them, over plain HTTP.

Everything goes through SAS URLs, so Azure Storage and Azurite both work and no storage
credential is ever needed by the service:

- ``httpUrl``: one ``GET``, written to ``filePath`` (relative to the task working directory).
- ``storageContainerUrl`` (+ ``blobPrefix``): the Blob service's List Blobs operation
  (``?restype=container&comp=list&prefix=...`` appended to the SAS URL, following ``NextMarker``),
  then one ``GET`` per blob, written under ``filePath`` (a directory) keeping the blob's path.
- ``outputFiles``: ``PUT`` Block Blob (``x-ms-blob-type: BlockBlob``) of every file matching
  ``filePattern`` (``*``, ``?``, ``**`` and ``[...]``), to ``containerUrl`` + ``path``.

Failures raise :class:`TransferError` carrying the Batch ``failureInfo`` code. Messages show URLs
through :func:`batchwire.redact.strip_sas`, never with a SAS signature.
"""

from __future__ import annotations

import glob
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import aiohttp

from batchwire.redact import strip_sas

DEFAULT_FILE_MODE = 0o770
"""Batch applies mode 0770 to downloaded files on Linux when ``fileMode`` is not set."""
DEFAULT_STORAGE_VERSION = "2021-08-06"
_WILDCARDS = re.compile(r"[*?\[]")


class TransferError(Exception):
    """A resource-file download or output-file upload failed; ``code`` is the Batch failureInfo code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _headers_for(url: str) -> dict[str, str]:
    version = parse_qs(urlsplit(url).query).get("sv", [DEFAULT_STORAGE_VERSION])[0]
    return {"x-ms-version": version}


def _with_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _blob_url(container_url: str, blob_name: str) -> str:
    parts = urlsplit(container_url)
    path = parts.path.rstrip("/") + "/" + quote(blob_name, safe="/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise TransferError(
            "ResourceFileCreateFailed", f"the file path {relative!r} leaves the task working directory"
        )
    return target


# -- downloads -------------------------------------------------------------------------------------
async def download_resource_files(
    session: aiohttp.ClientSession, resource_files: list[dict[str, Any]], working_dir: Path
) -> list[Path]:
    """Download every resource file into ``working_dir``; return the files written."""
    written: list[Path] = []
    for rf in resource_files:
        mode = int(rf["fileMode"], 8) if rf.get("fileMode") else DEFAULT_FILE_MODE
        if rf.get("httpUrl"):
            file_path = rf.get("filePath") or Path(urlsplit(rf["httpUrl"]).path).name
            target = _inside(working_dir, file_path)
            await _get_to_file(session, rf["httpUrl"], target, container=False)
            os.chmod(target, mode)
            written.append(target)
        elif rf.get("storageContainerUrl"):
            base = _inside(working_dir, rf.get("filePath") or ".")
            for name in await _list_blobs(session, rf["storageContainerUrl"], rf.get("blobPrefix") or ""):
                target = _inside(base, name)
                await _get_to_file(session, _blob_url(rf["storageContainerUrl"], name), target, container=True)
                os.chmod(target, mode)
                written.append(target)
        elif rf.get("autoStorageContainerName"):
            raise TransferError(
                "ResourceContainerNotFound",
                "resourceFiles.autoStorageContainerName needs a linked auto-storage account, which the local Batch "
                "service does not have; use storageContainerUrl with a SAS URL instead",
            )
        else:
            raise TransferError("BlobNotFound", "a resource file needs httpUrl or storageContainerUrl")
    return written


async def _list_blobs(session: aiohttp.ClientSession, container_url: str, prefix: str) -> list[str]:
    names: list[str] = []
    marker = ""
    while True:
        extra = f"restype=container&comp=list&prefix={quote(prefix, safe='')}"
        if marker:
            extra += f"&marker={quote(marker, safe='')}"
        url = _with_query(container_url, extra)
        try:
            async with session.get(url, headers=_headers_for(container_url)) as resp:
                body = await resp.read()
                if resp.status in (401, 403):
                    raise TransferError(
                        "ResourceContainerAccessDenied",
                        f"listing blobs of {strip_sas(container_url)} was refused ({resp.status}); the SAS needs "
                        "read and list permissions and must not have expired",
                    )
                if resp.status == 404:
                    raise TransferError(
                        "ResourceContainerNotFound", f"the container {strip_sas(container_url)} does not exist"
                    )
                if resp.status != 200:
                    raise TransferError(
                        "ResourceContainerListMiscError",
                        f"listing blobs of {strip_sas(container_url)} failed with HTTP {resp.status}",
                    )
        except TimeoutError:
            raise TransferError(
                "ResourceContainerListTimedOut", f"listing blobs of {strip_sas(container_url)} timed out"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransferError(
                "ResourceContainerListMiscError", f"cannot reach {strip_sas(container_url)}: {exc.__class__.__name__}"
            ) from None
        root = ET.fromstring(body)
        for blob in root.iter("Blob"):
            name = blob.findtext("Name") or ""
            if name and not name.endswith("/"):  # skip directory markers (hierarchical namespace)
                names.append(name)
        marker = (root.findtext("NextMarker") or "").strip()
        if not marker:
            return names


async def _get_to_file(session: aiohttp.ClientSession, url: str, target: Path, *, container: bool) -> None:
    try:
        async with session.get(url, headers=_headers_for(url)) as resp:
            if resp.status in (401, 403):
                raise TransferError(
                    "BlobAccessDenied",
                    f"downloading {strip_sas(url)} was refused ({resp.status}); the SAS needs read permission "
                    "and must not have expired",
                )
            if resp.status == 404:
                raise TransferError("BlobNotFound", f"{strip_sas(url)} does not exist")
            if resp.status != 200:
                raise TransferError(
                    "BlobDownloadMiscError", f"downloading {strip_sas(url)} failed: HTTP {resp.status}"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    out.write(chunk)
    except TimeoutError:
        raise TransferError("BlobDownloadTimedOut", f"downloading {strip_sas(url)} timed out") from None
    except aiohttp.ClientError as exc:
        raise TransferError(
            "BlobDownloadMiscError", f"cannot download {strip_sas(url)}: {exc.__class__.__name__}"
        ) from None


# -- uploads ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    source: Path
    blob_name: str
    container_url: str


def plan_uploads(
    output_files: list[dict[str, Any]], working_dir: Path, env: dict[str, str], *, succeeded: bool
) -> list[Upload]:
    """The uploads ``outputFiles`` asks for after a task that ``succeeded`` (exit code 0) or not."""
    plan: list[Upload] = []
    for of in output_files:
        condition = (of.get("uploadOptions") or {}).get("uploadCondition", "tasksuccess")
        if (condition == "tasksuccess" and not succeeded) or (condition == "taskfailure" and succeeded):
            continue
        container = ((of.get("destination") or {}).get("container")) or {}
        container_url = container.get("containerUrl")
        if not container_url:
            continue
        pattern = _expand(of["filePattern"], env)
        dest = (container.get("path") or "").strip("/")
        if not _WILDCARDS.search(pattern):
            source = Path(pattern) if os.path.isabs(pattern) else working_dir / pattern
            if source.is_file():
                plan.append(Upload(source, dest or source.name, container_url))
            continue
        base = _static_prefix(pattern)
        root = Path(base) if os.path.isabs(base) else (working_dir / base)
        matches = sorted(glob.glob(pattern if os.path.isabs(pattern) else str(working_dir / pattern), recursive=True))
        for match in matches:
            source = Path(match)
            if not source.is_file():
                continue
            try:
                relative = source.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                relative = source.name
            plan.append(Upload(source, f"{dest}/{relative}" if dest else relative, container_url))
    return plan


async def upload(session: aiohttp.ClientSession, item: Upload) -> None:
    url = _blob_url(item.container_url, item.blob_name)
    data = item.source.read_bytes()
    headers = {**_headers_for(url), "x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
    try:
        async with session.put(url, data=data, headers=headers) as resp:
            await resp.read()
            if resp.status in (401, 403):
                raise TransferError(
                    "FileUploadAccessDenied",
                    f"uploading {item.source.name} to {strip_sas(url)} was refused ({resp.status}); the SAS needs "
                    "write (and create) permission and must not have expired",
                )
            if resp.status == 404:
                raise TransferError(
                    "FileUploadContainerNotFound",
                    f"the output container {strip_sas(item.container_url)} does not exist; create it first",
                )
            if resp.status not in (200, 201):
                raise TransferError("FileUploadMiscError", f"uploading to {strip_sas(url)} failed: HTTP {resp.status}")
    except TimeoutError:
        raise TransferError("FileUploadTimedOut", f"uploading to {strip_sas(url)} timed out") from None
    except aiohttp.ClientError as exc:
        message = f"cannot upload to {strip_sas(url)}: {exc.__class__.__name__}"
        raise TransferError("FileUploadMiscError", message) from None


def _static_prefix(pattern: str) -> str:
    """The directory part of ``pattern`` before its first wildcard (``out/**/*.txt`` -> ``out``)."""
    head = _WILDCARDS.split(pattern, maxsplit=1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _expand(text: str, env: dict[str, str]) -> str:
    """Expand ``$VAR`` / ``${VAR}`` / ``%VAR%`` from the task environment (Batch allows them in filePattern)."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return env.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)|%(\w+)%", repl, text)
