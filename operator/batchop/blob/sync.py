"""Upload a directory tree to Blob storage (``batchop blob sync``) and fetch blobs (``batchop blob get``).

Layout: each top-level folder of the tree is a container (``blob/application`` -> container
``application``), each file below it a blob named by its path under that folder.

Rules of :func:`sync`:

- containers are created when missing;
- a blob whose Content-MD5 equals the local file's MD5 is unchanged and skipped, so a second sync
  uploads nothing (uploads always set Content-MD5, one listing per container gives every hash);
- hidden files and folders (``.gitkeep``, ``.DS_Store``, ``.git``) are never uploaded: a folder that holds
  only such placeholders (``blob/output/``) creates its container and nothing else;
- ``delete=True`` removes blobs that have no local file, but only in containers whose folder has files:
  a placeholder-only container (where jobs write their outputs) is never pruned;
- ``dry_run=True`` plans and reports and changes nothing.

Credentials are a :class:`batchop.blob.settings.StorageSettings`; keys and SAS never appear in output.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, ExponentialRetry

from batchop.api.patterns import BLOB_CONTAINER_PATTERN
from batchop.blob.settings import StorageSettings
from batchwire.exitcodes import FAILURE, INVALID, UNAVAILABLE, CLIError

_CONTAINER = re.compile(BLOB_CONTAINER_PATTERN)
CHUNK = 4 * 1024 * 1024
WORKERS = 8


# -- clients ---------------------------------------------------------------------------------------
def service_client(settings: StorageSettings) -> BlobServiceClient:
    """A Blob service client for ``settings`` (account key, or Entra ID via ``DefaultAzureCredential``)."""
    credential: Any
    if settings.account_key:
        credential = {"account_name": settings.account_name, "account_key": settings.account_key}
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    # The SDK's default retry waits 15 s, then 18 s...: a CLI user should hear of an outage within seconds.
    retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2, random_jitter_range=1)
    return BlobServiceClient(settings.account_url, credential=credential, retry_policy=retry,
                             connection_timeout=10, read_timeout=60)


def storage_error(exc: Exception, settings: StorageSettings, action: str) -> CLIError:
    """A CLIError for a storage failure: names the account and credential source, never the secret."""
    if isinstance(exc, ClientAuthenticationError) or (
        isinstance(exc, HttpResponseError) and exc.status_code == 403
    ):
        return CLIError(f"{action}: {settings.account_url} refused the credential from {settings.source} "
                        f"({_error_code(exc) or 'AuthenticationFailed'}); check the key or the Entra "
                        "ID role (Storage Blob Data Contributor)", FAILURE)
    if isinstance(exc, ServiceRequestError | OSError):
        hint = " (start the local stack: batchop dev up)" if settings.account_url.startswith("http://") else ""
        return CLIError(f"{action}: cannot reach {settings.account_url}{hint}: {exc.__class__.__name__}", UNAVAILABLE)
    if isinstance(exc, HttpResponseError):
        return CLIError(f"{action}: {settings.account_url} answered HTTP {exc.status_code} "
                        f"{_error_code(exc)}".rstrip(), FAILURE)
    return CLIError(f"{action}: {exc.__class__.__name__}: {exc}", FAILURE)


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


# -- local tree ------------------------------------------------------------------------------------
def md5_base64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def _hidden(part: str) -> bool:
    return part.startswith(".")


def _is_container_name(name: str) -> bool:
    """3-63 characters of :data:`batchop.api.patterns.BLOB_CONTAINER_PATTERN`."""
    return 3 <= len(name) <= 63 and _CONTAINER.match(name) is not None


@dataclass
class LocalContainer:
    name: str
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Blob name -> local file."""
    placeholders: int = 0
    """Hidden files skipped (``.gitkeep``...)."""


def scan(root: Path) -> list[LocalContainer]:
    """The containers and files of a sync tree; refuses folder names that are not valid container names."""
    if not root.is_dir():
        raise CLIError(f"{root} is not a directory: give the folder whose sub-folders are containers (e.g. blob/)",
                       INVALID)
    containers: list[LocalContainer] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        if not _is_container_name(folder.name):
            raise CLIError(f"folder {folder} cannot be a blob container: container names are 3-63 lowercase letters, "
                           "digits and single hyphens; rename the folder", INVALID)
        container = LocalContainer(folder.name, folder)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(_hidden(part) for part in relative.parts):
                if path.is_file():
                    container.placeholders += 1
                continue
            if path.is_file():
                container.files[relative.as_posix()] = path
        containers.append(container)
    return containers


# -- plan ------------------------------------------------------------------------------------------
@dataclass
class ContainerPlan:
    name: str
    exists: bool
    upload: list[tuple[str, Path, str]] = field(default_factory=list)
    """(blob name, file, MD5 base64) to upload."""
    unchanged: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    """Remote blobs without a local file, kept (no --delete, or a placeholder-only container)."""
    create_only: bool = False


def _remote_hashes(client: ContainerClient) -> dict[str, str | None]:
    hashes: dict[str, str | None] = {}
    for blob in client.list_blobs():
        md5 = blob.content_settings.content_md5 if blob.content_settings else None
        hashes[blob.name] = base64.b64encode(bytes(md5)).decode() if md5 else None
    return hashes


def plan(service: BlobServiceClient, containers: list[LocalContainer], *, delete: bool) -> list[ContainerPlan]:
    plans: list[ContainerPlan] = []
    for local in containers:
        client = service.get_container_client(local.name)
        try:
            remote = _remote_hashes(client)
            exists = True
        except ResourceNotFoundError:
            remote, exists = {}, False
        item = ContainerPlan(local.name, exists, create_only=not local.files)
        for name, path in local.files.items():
            md5 = md5_base64(path)
            if remote.get(name) == md5:
                item.unchanged.append(name)
            else:
                item.upload.append((name, path, md5))
        for name in sorted(set(remote) - set(local.files)):
            (item.delete if delete and not item.create_only else item.extra).append(name)
        plans.append(item)
    return plans


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """Progress lines on ``stream``: one per file for small syncs, a running total (bytes, files) for large ones."""

    def __init__(self, total_files: int, total_bytes: int, stream: IO[str] | None = None,
                 per_file_limit: int = 20, interval: float = 1.0) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.stream = stream or sys.stderr
        self.per_file = total_files <= per_file_limit
        self.interval = interval
        self._last = float("-inf")  # the first file is reported at once
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def done(self, label: str, size: int) -> None:
        with self._lock:
            self.files += 1
            self.bytes += size
            now = time.monotonic()
            if self.per_file:
                print(f"  {label} ({_size(size)})", file=self.stream)
            elif now - self._last >= self.interval or self.files == self.total_files:
                self._last = now
                rate = self.bytes / max(now - self._started, 1e-6)
                print(f"  {self.files}/{self.total_files} files, {_size(self.bytes)}/{_size(self.total_bytes)} "
                      f"({_size(int(rate))}/s)", file=self.stream)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


# -- sync ------------------------------------------------------------------------------------------
@dataclass
class SyncResult:
    plans: list[ContainerPlan]
    created: list[str] = field(default_factory=list)
    uploaded: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)


def sync(
    root: Path,
    settings: StorageSettings,
    *,
    delete: bool = False,
    dry_run: bool = False,
    out: IO[str] | None = None,
    workers: int = WORKERS,
    service: BlobServiceClient | None = None,
) -> SyncResult:
    """Make each container match its folder under ``root`` (see the module docs). Raises CLIError on setup errors;
    per-blob failures are collected in ``SyncResult.failed``."""
    out = out or sys.stdout
    containers = scan(root)
    if not containers:
        raise CLIError(f"{root} has no sub-folders: each top-level folder becomes a container (e.g. {root}/input/)",
                       INVALID)
    for stray in sorted(p.name for p in root.iterdir() if p.is_file() and not _hidden(p.name)):
        print(f"note: {root / stray} is not uploaded: only files inside a top-level folder (a container) are",
              file=out)
    service = service or service_client(settings)
    try:
        plans = plan(service, containers, delete=delete)
    except Exception as exc:
        raise storage_error(exc, settings, "listing blobs") from None
    result = SyncResult(plans)
    _create_containers(service, settings, result, dry_run=dry_run, out=out)
    uploads = [(item.name, name, path, md5) for item in plans for name, path, md5 in item.upload]
    deletes = [(item.name, name) for item in plans for name in item.delete]
    if dry_run:
        for container, name, path, _ in uploads:
            print(f"{container}/{name}: would upload ({_size(path.stat().st_size)})", file=out)
        for container, name in deletes:
            print(f"{container}/{name}: would delete", file=out)
    else:
        _transfer(service, settings, result, uploads, deletes, workers=workers, out=out)
    for item in plans:
        print(f"{item.name}: {_summary(item, dry_run=dry_run)}", file=out)
    return result


Upload = tuple[str, str, Path, str]
"""(container, blob name, file, MD5 base64)."""


def _create_containers(service: BlobServiceClient, settings: StorageSettings, result: SyncResult, *,
                       dry_run: bool, out: IO[str]) -> None:
    prefix = "would " if dry_run else ""
    for item in result.plans:
        if item.exists:
            continue
        print(f"{item.name}: {prefix}create container", file=out)
        if dry_run:
            continue
        try:
            service.create_container(item.name)
        except ResourceExistsError:
            pass
        except Exception as exc:
            raise storage_error(exc, settings, f"creating container {item.name}") from None
        result.created.append(item.name)


def _upload_one(service: BlobServiceClient, container: str, name: str, path: Path, md5: str) -> int:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    content = ContentSettings(content_type=content_type, content_md5=bytearray(base64.b64decode(md5)))
    size = path.stat().st_size
    with path.open("rb") as data:
        service.get_blob_client(container, name).upload_blob(
            data, overwrite=True, content_settings=content, length=size, max_concurrency=2
        )
    return size


def _delete_one(service: BlobServiceClient, container: str, name: str) -> int:
    try:
        service.get_blob_client(container, name).delete_blob(delete_snapshots="include")
    except ResourceNotFoundError:
        pass
    return 0


def _transfer(service: BlobServiceClient, settings: StorageSettings, result: SyncResult, uploads: list[Upload],
              deletes: list[tuple[str, str]], *, workers: int, out: IO[str]) -> None:
    """Run the uploads and deletes on ``workers`` threads, reporting progress; failures go to ``result.failed``."""
    total = sum(path.stat().st_size for _, _, path, _ in uploads)
    progress = Progress(len(uploads), total, stream=out)
    if uploads:
        print(f"uploading {len(uploads)} file(s), {_size(total)}", file=out)
    jobs: dict[Future[int], tuple[str, str, bool]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for container, name, path, md5 in uploads:
            jobs[pool.submit(_upload_one, service, container, name, path, md5)] = (container, name, True)
        for container, name in deletes:
            jobs[pool.submit(_delete_one, service, container, name)] = (container, name, False)
        for future in as_completed(jobs):
            container, name, is_upload = jobs[future]
            try:
                size = future.result()
            except Exception as exc:
                error = storage_error(exc, settings, f"{'uploading' if is_upload else 'deleting'} {container}/{name}")
                result.failed.append(str(error))
                print(f"  FAILED {error}", file=out)
                continue
            if is_upload:
                result.uploaded += 1
                progress.done(f"{container}/{name}", size)
            else:
                result.deleted += 1
                print(f"  deleted {container}/{name}", file=out)


def _summary(item: ContainerPlan, *, dry_run: bool) -> str:
    """One container's line at the end: uploads, unchanged, deletes and what was kept."""
    parts = [f"{len(item.upload)} would upload" if dry_run else f"{len(item.upload)} uploaded",
             f"{len(item.unchanged)} unchanged"]
    if item.delete:
        parts.append(f"{len(item.delete)} {'to delete' if dry_run else 'deleted'}")
    if item.extra:
        why = "placeholder-only folder: outputs kept" if item.create_only else "use --delete to prune"
        parts.append(f"{len(item.extra)} remote-only kept ({why})")
    return ", ".join(parts)


# -- get -------------------------------------------------------------------------------------------
def split_target(target: str) -> tuple[str, str]:
    """``container[/path]`` -> (container, path)."""
    container, _, path = target.strip().lstrip("/").partition("/")
    if not _is_container_name(container):
        raise CLIError(f"{container!r} is not a blob container name (3-63 lowercase letters, digits, hyphens): "
                       "use CONTAINER[/PATH]", INVALID)
    return container, path


def list_prefix(client: ContainerClient, prefix: str) -> Iterator[Any]:
    return iter(client.list_blobs(name_starts_with=prefix or None))


def get(
    target: str,
    settings: StorageSettings,
    *,
    output: Path | None = None,
    stdout: IO[bytes] | None = None,
    out: IO[str] | None = None,
    service: BlobServiceClient | None = None,
) -> int:
    """Download one blob (to ``output`` or ``stdout``) or every blob under a prefix (to directory ``output``,
    or list them when there is no ``output``). Returns the number of blobs written or listed."""
    out = out or sys.stderr
    container, path = split_target(target)
    service = service or service_client(settings)
    client = service.get_container_client(container)
    action = f"reading {container}/{path}" if path else f"reading container {container}"
    try:
        if path and not path.endswith("/"):
            blob = client.get_blob_client(path)
            try:
                blob.get_blob_properties()
                return _download_one(blob, path, output, stdout, out)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "ContainerNotFound":
                    raise
        items = list(list_prefix(client, path))
        if not items:
            client.get_container_properties()  # ContainerNotFound beats "nothing under the prefix"
            where = f"no blob named {path!r} or starting with it" if path else "no blobs"
            raise CLIError(f"container {container} has {where}", FAILURE)
        if output is None:
            for item in items:
                print(f"{item.size:>12}  {item.name}", file=sys.stdout)
            print(f"{len(items)} blob(s); add -o DIR to download them", file=out)
            return len(items)
        if output.exists() and not output.is_dir():
            raise CLIError(f"-o {output}: a prefix has several blobs; give a directory", INVALID)
        base = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        for item in items:
            relative = item.name[len(base):]
            target_path = (output / relative).resolve()
            if output.resolve() not in target_path.parents:
                raise CLIError(f"blob name {item.name!r} would leave {output}", FAILURE)
            target_path.parent.mkdir(parents=True, exist_ok=True)
            with target_path.open("wb") as handle:
                client.get_blob_client(item.name).download_blob().readinto(handle)
            print(f"  {container}/{item.name} -> {target_path} ({_size(item.size)})", file=out)
        return len(items)
    except CLIError:
        raise
    except ResourceNotFoundError:
        raise CLIError(f"container {container} does not exist at {settings.account_url}", FAILURE) from None
    except Exception as exc:
        raise storage_error(exc, settings, action) from None


def _download_one(blob: Any, name: str, output: Path | None, stdout: IO[bytes] | None, out: IO[str]) -> int:
    if output is None:
        sink = stdout or sys.stdout.buffer
        blob.download_blob().readinto(sink)
        sink.flush()
        return 1
    target = output / name.rsplit("/", 1)[-1] if output.is_dir() else output
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        blob.download_blob().readinto(handle)
    print(f"  {name} -> {target}", file=out)
    return 1


