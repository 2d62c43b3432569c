"""The controller's watch of ``batchschedules``: list, then watch from the listing's ``resourceVersion``, each
event handed to one handler, one object at a time.

Why not kopf's watch: kopf's way from a watch event to a handler (its per-object queue and worker, the body,
patch and memory objects, the handler's causes and keyword arguments, the reaction applied afterwards) costs
about 0.6 ms of CPU per event, nearly four times this watch (``bench/watch_path.py``). With two or three
events per created resource, that was a third of the operator's CPU in a burst, for nothing
batchop used: the runtime decides every reconcile itself. kopf keeps the admission webhook server, the
liveness endpoint and the operator's lifecycle.

- **Scope** (:class:`WatchScope`): cluster-wide; one watch per namespace for exact names; for patterns
  (``*``, ``?``, ``!``, ``,``, with kopf's meaning, :func:`namespace_matches`) one cluster-wide watch whose
  events are filtered here. A label selector (a replica's shards) is sent to the API server.
- **Listing**: paged (``limit``), every object handed over with the event type ``None`` (as kopf's initial
  listing), then a watch from the listing's ``resourceVersion`` with bookmarks. A watch the API server ends
  (its timeout) resumes from the last version seen; ``410 Gone`` (the version is too old, as an event or as
  the answer's status) lists again, and an object known before but missing from the new listing is handed
  over as ``DELETED``.
- **Errors**: a failed list or watch is retried with a backoff doubling to :data:`MAX_BACKOFF` (the CRD not
  installed yet, the API server away); each failure is logged as a warning.
- **Order** (:class:`Dispatcher`): one object's events run one after the other, never two at once; an event
  that arrives while the object's handler runs replaces any other still waiting (the newest state is what
  matters). Objects are keyed by ``metadata.uid``, so a resource deleted and created again under the same name
  is two objects. Different objects run concurrently: the runtime's work queue bounds the reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batchop.api.names import API_GROUP_VERSION, PLURAL
from batchop.kube.client import KubeError

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any], str | None], Awaitable[None]]
"""``handler(body, event_type)``: ``event_type`` is ``ADDED`` / ``MODIFIED`` / ``DELETED``, None for a listing."""

PAGE = 500
"""Objects per page of a listing."""

WATCH_TIMEOUT = 60
"""Seconds the API server keeps one watch request open (``timeoutSeconds``); the watch then resumes."""

READ_TIMEOUT = WATCH_TIMEOUT + 30.0
"""Seconds without a byte after which a watch connection counts as dead (a node or a load balancer gone)."""

MAX_BACKOFF = 5.0
"""The longest wait between two failed attempts to list or watch: short, since every event waits for the watch
to come back, and a list or watch every 5 s is no load for an API server that is up."""

GONE = 410
"""The API server's answer when a watch's ``resourceVersion`` is too old (or a listing's ``continue`` expired):
list again."""

DRAIN_TIMEOUT = 5.0
"""Seconds :meth:`ResourceWatch.stop` lets running handlers finish before it cancels them."""


class Streamer(Protocol):
    """What the watch needs of :class:`batchop.kube.client.KubeClient`."""

    async def request(self, method: str, path: str) -> dict[str, Any] | None: ...

    def stream(self, path: str, *, read_timeout: float) -> Any: ...


def is_pattern(namespace: str) -> bool:
    """True for a namespace given as a pattern rather than a name."""
    return any(c in namespace for c in "*?!,")


def namespace_matches(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` matches one of ``patterns``, each read as kopf reads ``--namespace``: comma-separated
    globs, left to right; the first inclusive glob matches, a ``!glob`` excludes what matched so far, a later
    inclusive glob matches again only what the first one matched; a pattern starting with ``!`` starts from
    ``*``. ``"myapp-*, !*-pr-*"`` matches ``myapp-live`` but not ``myapp-pr-4``."""
    for pattern in patterns:
        globs = [glob.strip() for glob in pattern.split(",")]
        if not globs or globs[0].startswith("!"):
            globs.insert(0, "*")
        matches = first = fnmatch.fnmatchcase(name, globs[0])
        for glob in globs[1:]:
            if glob.startswith("!"):
                matches = matches and not fnmatch.fnmatchcase(name, glob[1:])
            else:
                matches = matches or (first and fnmatch.fnmatchcase(name, glob))
        if matches:
            return True
    return False


@dataclass(frozen=True)
class WatchScope:
    """Which ``batchschedules`` the controller watches: ``batchop run -n`` / ``-A``, and a replica's shards."""

    namespaces: tuple[str, ...] = ()
    """Names or patterns; empty: cluster-wide."""
    label_selector: str | None = None

    @functools.cached_property
    def patterned(self) -> bool:
        """True when a namespace is given as a pattern: one cluster-wide watch, filtered here."""
        return any(is_pattern(ns) for ns in self.namespaces)

    def paths(self) -> list[str]:
        """The collection paths to list and watch: one per exact namespace, else one cluster-wide."""
        if self.namespaces and not self.patterned:
            return [f"/apis/{API_GROUP_VERSION}/namespaces/{ns}/{PLURAL}" for ns in dict.fromkeys(self.namespaces)]
        return [f"/apis/{API_GROUP_VERSION}/{PLURAL}"]

    def admits(self, obj: Mapping[str, Any]) -> bool:
        """True for an object in a watched namespace (patterns are filtered here, names by the path)."""
        if not self.patterned:
            return True
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        return namespace_matches(namespace, self.namespaces)

    def describe(self) -> str:
        where = "all namespaces" if not self.namespaces else "namespaces " + ", ".join(self.namespaces)
        return where + (f", labels {self.label_selector}" if self.label_selector else "")


class Dispatcher:
    """Hands events to the handler, one object at a time (see the module docstring)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, tuple[Mapping[str, Any], str | None]] = {}

    def put(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        if key in self._running:
            self._waiting[key] = (body, event_type)
            return
        self._running[key] = asyncio.create_task(self._run(key, body, event_type), name=f"watch event {key}")

    async def _run(self, key: str, body: Mapping[str, Any], event_type: str | None) -> None:
        try:
            while True:
                try:
                    await self.handler(body, event_type)
                except Exception:
                    meta = body.get("metadata") or {}
                    log.exception("handling a %s event of %s/%s failed", event_type or "listing",
                                  meta.get("namespace"), meta.get("name"))
                waiting = self._waiting.pop(key, None)
                if waiting is None:
                    return
                body, event_type = waiting
        finally:
            self._running.pop(key, None)

    @property
    def busy(self) -> int:
        return len(self._running)

    async def stop(self, grace: float = DRAIN_TIMEOUT) -> None:
        """Let running handlers finish for up to ``grace`` seconds, then cancel the rest; waiting events go."""
        self._waiting.clear()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


class ResourceWatch:
    """List and watch the scope's paths, feeding a :class:`Dispatcher` (see the module docstring)."""

    def __init__(self, client: Streamer, scope: WatchScope, handler: Handler) -> None:
        self.client = client
        self.scope = scope
        self.dispatcher = Dispatcher(handler)
        self.listed = asyncio.Event()
        """Set once every path has been listed (and its objects handed over) at least once."""
        self._tasks: list[asyncio.Task[None]] = []
        self._listed_paths: set[str] = set()
        self._failing: dict[str, str] = {}  # path -> the last error, while its list or watch keeps failing

    def health(self) -> dict[str, Any]:
        """What the liveness endpoint shows of the watch: listed yet, and what keeps failing (never raises:
        a watch that cannot list is a warning in the log and here, not a reason to restart the operator)."""
        return {"listed": self.listed.is_set(), "failing": dict(self._failing), "busy": self.dispatcher.busy}

    def start(self) -> None:
        """Start watching, in the running event loop."""
        log.info("Watching %s in %s", PLURAL, self.scope.describe())
        self._tasks = [asyncio.create_task(self._follow(path), name=f"watch {path}") for path in self.scope.paths()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.dispatcher.stop()

    def _query(self, **params: str | int) -> str:
        if self.scope.label_selector:
            params["labelSelector"] = self.scope.label_selector
        return urllib.parse.urlencode(params)

    async def _follow(self, path: str) -> None:
        """List, watch, resume or list again, for as long as the task runs."""
        cursor = _Cursor()
        failures = 0
        while True:
            try:
                if cursor.version is None:
                    cursor.version = await self._list(path, cursor.known)
                    self._listed_paths.add(path)
                    if len(self._listed_paths) == len(self._tasks):
                        self.listed.set()
                self._failing.pop(path, None)
                await self._watch(path, cursor)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server away, the CRD missing, a broken connection
                if isinstance(exc, KubeError) and exc.status == GONE:  # as an ERROR event or as the status
                    cursor.version = None
                    failures = 0
                else:
                    failures = await self._failed(path, exc, failures)

    async def _failed(self, path: str, exc: Exception, failures: int) -> int:
        """Note and log a failed list or watch, then wait the backoff; the count of failures in a row."""
        self._failing[path] = _reason(exc)
        failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 8))
        log.warning("Watching %s failed (%s); trying again in %.0fs", path, _reason(exc), delay)
        await asyncio.sleep(delay)
        return failures

    async def _list(self, path: str, known: dict[str, Mapping[str, Any]]) -> str:
        """One full listing, every object handed over; the listing's ``resourceVersion``."""
        seen: dict[str, Mapping[str, Any]] = {}
        token: str | None = None
        version = ""
        while True:
            params: dict[str, str | int] = {"limit": PAGE}
            if token:
                params["continue"] = token
            page = await self.client.request("GET", f"{path}?{self._query(**params)}")
            if page is None:
                raise KubeError(404, f"{path} is not served (is the CustomResourceDefinition installed?)")
            for item in page.get("items") or ():
                if self.scope.admits(item):
                    meta = item.get("metadata") or {}
                    seen[str(meta.get("uid"))] = _stub(meta)
                    self.dispatcher.put(item, None)
            listing_meta = page.get("metadata") or {}
            version = str(listing_meta.get("resourceVersion") or version)
            token = listing_meta.get("continue")
            if not token:
                break
        for uid, meta in known.items():
            if uid not in seen:  # deleted while the watch was away
                self.dispatcher.put({"metadata": dict(meta)}, "DELETED")
        known.clear()
        known.update(seen)
        return version

    async def _watch(self, path: str, cursor: _Cursor) -> None:
        """One watch request from the cursor's version until the API server ends it or the connection breaks;
        the cursor follows every event, so the next request resumes where this one stopped."""
        query = self._query(watch="true", allowWatchBookmarks="true", resourceVersion=str(cursor.version),
                            timeoutSeconds=WATCH_TIMEOUT)
        async for event in self.client.stream(f"{path}?{query}", read_timeout=READ_TIMEOUT):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                raise KubeError(int(obj.get("code") or 500), str(obj.get("message") or obj))
            meta = obj.get("metadata") or {}
            cursor.version = str(meta.get("resourceVersion") or cursor.version)
            if kind == "BOOKMARK" or not self.scope.admits(obj):
                continue
            uid = str(meta.get("uid"))
            if kind == "DELETED":
                cursor.known.pop(uid, None)
            else:
                cursor.known[uid] = _stub(meta)
            self.dispatcher.put(obj, kind)


@dataclass
class _Cursor:
    """Where one path's watch stands: the last ``resourceVersion`` seen (None: list first) and the objects
    known, by uid (enough of each to hand over its deletion after a re-list)."""

    version: str | None = None
    known: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def _stub(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of an object between listings: enough to hand over its deletion."""
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid")}


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
