"""The operator's own Kubernetes API client: raw ``aiohttp``, for the calls the operator makes itself.

Status patches, finalizers, Events, Secrets and the webhook configuration go through :class:`KubeClient`, one
bounded connection pool; the watch streams (:meth:`KubeClient.stream`, read by :mod:`batchop.kube.watch`)
have a session of their own, so a long watch never holds one of the writes' connections. Neither the client
nor this layer knows kopf: the client takes plain connection values (:class:`ConnectionInfo`) from whoever
found the credentials. The controller and the admission server hand it the ``ConnectionInfo`` of kopf's own
raw login (service account, else kubeconfig), so the operator's writes, its watch and kopf's webhook server
use the same credentials, with no blocking client library and no second configuration path.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import os
import ssl
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from batchop.api.names import API_GROUP_VERSION, KIND, PLURAL
from batchop.observability import metrics
from batchwire import timestamps
from batchwire.redact import redact

log = logging.getLogger(__name__)

FilePath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status

    @classmethod
    def no_credentials(cls) -> KubeError:
        """What the operator says when a login found neither a service account nor a kubeconfig."""
        return cls(0, "no Kubernetes credentials: set KUBECONFIG or run in a cluster")


class ConnectionInfo(Protocol):
    """Where the API server is and how to authenticate, as plain values: the fields of kopf's
    ``kopf.ConnectionInfo``, which fits as it is. Paths and inline data (PEM or base64 PEM) are alternatives."""

    @property
    def server(self) -> str: ...
    @property
    def ca_path(self) -> FilePath | None: ...
    @property
    def ca_data(self) -> str | bytes | None: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def scheme(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def certificate_path(self) -> FilePath | None: ...
    @property
    def certificate_data(self) -> str | bytes | None: ...
    @property
    def private_key_path(self) -> FilePath | None: ...
    @property
    def private_key_data(self) -> str | bytes | None: ...


def _pem(data: str | bytes) -> bytes:
    """kubeconfig's ``*-data`` fields are base64 of PEM; kopf may hand over the PEM itself."""
    raw = data if isinstance(data, bytes) else data.encode()
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


def _load_cert_chain(context: ssl.SSLContext, cert: FilePath | None, cert_data: str | bytes | None,
                     key: FilePath | None, key_data: str | bytes | None) -> None:
    """The client certificate and key into ``context``. :mod:`ssl` reads them only from files: inline data
    goes into a private directory that is removed as soon as they are loaded, so no key is left on disk."""
    if cert is None and cert_data is None:
        return
    with tempfile.TemporaryDirectory(prefix="batchop-tls-") as directory:
        if cert is None:
            cert = Path(directory) / "client.crt"
            cert.write_bytes(_pem(cert_data or b""))
        if key is None and key_data is not None:
            key = Path(directory) / "client.key"  # the directory is the user's alone (mode 0700)
            key.write_bytes(_pem(key_data))
        context.load_cert_chain(certfile=cert, keyfile=key)


MAX_CONNECTIONS = 16
"""Connections to the API server for the operator's own requests (status, finalizer, Events): each TLS
connection holds a 256 KiB read buffer, and 100 (aiohttp's default) opened during a burst of 1,000 creates
cost 25 MiB; 16 in flight keep the API server as busy as it can be on a small control plane."""


class KubeClient:
    """A minimal async client for the calls the operator makes itself, its watch included."""

    def __init__(self, info: ConnectionInfo) -> None:
        self._info = info
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self.requests = 0

    @property
    def server(self) -> str:
        return str(self._info.server).rstrip("/")

    def _ssl(self) -> ssl.SSLContext | bool:
        info = self._info
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context()
        if info.ca_path:
            context.load_verify_locations(cafile=info.ca_path)
        elif info.ca_data:
            context.load_verify_locations(cadata=_pem(info.ca_data).decode("ascii"))
        if info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _load_cert_chain(context, info.certificate_path, info.certificate_data or None,
                         info.private_key_path, info.private_key_data or None)
        return context

    def _headers(self) -> dict[str, str]:
        info = self._info
        if info.token:
            return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
        if info.username and info.password:
            raw = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    async def _request(
        self, method: str, path: str, *, json: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=MAX_CONNECTIONS),
                # no total: a request queued for one of the MAX_CONNECTIONS must wait, not time out (at
                # N = 10,000 a total of 30 s failed tens of thousands of finalizer adds: a retry storm)
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30),
                trace_configs=[metrics.rest_client_trace()],  # rest_client_requests_total
            )
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        self.requests += 1
        async with self._session.request(method, self.server + path, json=json, headers=headers) as response:
            if response.status == 404:
                return None
            if response.status >= 400:
                raise KubeError(response.status, redact(await response.text())[:500])
            return dict(await response.json())

    async def request(
        self, method: str, path: str, *, json: Any = None, content_type: str | None = None
    ) -> dict[str, Any] | None:
        """Any API request (``path`` from ``/api`` or ``/apis``): the JSON answer, None on 404, else
        :class:`KubeError`."""
        return await self._request(method, path, json=json, content_type=content_type)

    async def stream(self, path: str, *, read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """A watch request's events as they come, one JSON document per line. :class:`KubeError` for an error
        answer; ``read_timeout``: seconds without a byte before the stream counts as dead.

        Lines are split here rather than with aiohttp's ``readline``, which refuses a line longer than its
        buffer: one event carries a whole object, and an object's status may be large."""
        if self._streams is None:
            self._streams = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                trace_configs=[metrics.rest_client_trace()],  # a watch counts once, when its answer starts
            )
        self.requests += 1
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        async with self._streams.get(self.server + path, headers=self._headers(), timeout=timeout) as response:
            if response.status >= 400:
                raise KubeError(response.status, redact(await response.text())[:500])
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                if b"\n" not in chunk:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield jsonlib.loads(line)
            if pending.strip():
                yield jsonlib.loads(pending)

    async def close(self) -> None:
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()
        self._session = self._streams = None

    # -- resources ------------------------------------------------------------------------------------

    @staticmethod
    def _object_path(namespace: str, name: str) -> str:
        return f"/apis/{API_GROUP_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def _json_patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None:
        return await self._request(
            "PATCH", self._object_path(namespace, name), json=ops, content_type="application/json-patch+json"
        )

    async def get_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", self._object_path(namespace, name))

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._request(
            "PATCH",
            self._object_path(namespace, name) + "/status",
            json={"status": patch},
            content_type="application/merge-patch+json",
        )

    async def add_finalizer(
        self, namespace: str, name: str, uid: str, finalizer: str, *, seen: Mapping[str, Any] | None = None
    ) -> bool:
        """Add ``finalizer`` to the object with this ``uid`` unless present. False when the object is gone,
        replaced (another uid) or already being deleted (Kubernetes refuses new finalizers then).

        ``seen``: the object's ``metadata`` as the caller last saw it (a watch event). When it has a
        ``resourceVersion`` and lacks the finalizer, one JSON patch adds it with a ``test`` of that
        ``resourceVersion``: no GET. The API server applies it only to exactly the object seen (same uid, same
        finalizers, not being deleted); any change since makes the test fail, and the GET path below runs."""
        if seen is not None and seen.get("resourceVersion") and seen.get("uid") == uid:
            if seen.get("deletionTimestamp"):
                return False
            added = await self._add_finalizer_as_seen(namespace, name, finalizer, seen)
            if added is not None:
                return added
        return await self._add_finalizer_after_get(namespace, name, uid, finalizer)

    async def _add_finalizer_as_seen(
        self, namespace: str, name: str, finalizer: str, seen: Mapping[str, Any]
    ) -> bool | None:
        """The GET-free add of :meth:`add_finalizer`; None when it cannot decide (the object changed since) and the
        GET path must run.

        Already in ``seen`` (put there at admission by the mutating webhook): True, no request. The object can
        only lose it again through its owner's deletion step or by hand, and a create that races either is
        caught by the status write after it (:mod:`batchop.controller.cleanup`)."""
        present = list(seen.get("finalizers") or [])
        if finalizer in present:
            return True
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": seen["resourceVersion"]},
            {"op": "add", "path": "/metadata/finalizers", "value": [*present, finalizer]},
        ]
        try:
            result = await self._json_patch(namespace, name, ops)
        except KubeError as exc:
            if exc.status not in (409, 422):  # 422: the object changed since it was seen
                raise
            return None
        return result is not None

    async def _add_finalizer_after_get(self, namespace: str, name: str, uid: str, finalizer: str) -> bool:
        body = await self.get_object(namespace, name)
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("uid") != uid or meta.get("deletionTimestamp"):
            return False
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return True
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
        if finalizers:
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
        try:
            result = await self._json_patch(namespace, name, ops)
        except KubeError as exc:
            if exc.status in (409, 422):  # another uid (test failed), or the object is being deleted
                return False
            raise
        return result is not None

    async def remove_finalizer(
        self, namespace: str, name: str, uid: str, finalizer: str, *, seen: Mapping[str, Any] | None = None
    ) -> None:
        """Remove ``finalizer`` from the object with this ``uid`` (no-op when absent or gone).

        ``seen``: the object's ``metadata`` as the caller last saw it (a watch event). With the finalizer in it,
        one JSON patch removes it with a ``test`` of the ``uid`` and the whole finalizer list seen: no GET. Any
        change since (another finalizer added or removed, the object replaced or gone) fails the test, and the
        GET path below runs."""
        if seen is not None and seen.get("uid") == uid and finalizer in (seen.get("finalizers") or []):
            present = list(seen.get("finalizers") or [])
            ops: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": "/metadata/finalizers", "value": present},
                {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in present if f != finalizer]},
            ]
            try:
                await self._json_patch(namespace, name, ops)
                return
            except KubeError as exc:
                if exc.status not in (409, 422):
                    raise
        body = await self.get_object(namespace, name)
        meta = (body or {}).get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if body is None or meta.get("uid") != uid or finalizer not in finalizers:
            return
        ops = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != finalizer]},
        ]
        try:
            await self._json_patch(namespace, name, ops)
        except KubeError as exc:
            if exc.status not in (409, 422):
                raise
            await self.remove_finalizer(namespace, name, uid, finalizer)  # the list changed meanwhile: again

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """The Secret's decoded ``data`` and its ``resourceVersion``, None when it does not exist."""
        body = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if body is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}
        data.update(body.get("stringData") or {})
        return data, str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def post_event(self, obj: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the object (``involvedObject``), message redacted."""
        namespace = obj["namespace"]
        now = timestamps.seconds()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{obj['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_GROUP_VERSION,
                "kind": KIND,
                "name": obj["name"],
                "namespace": namespace,
                "uid": obj.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": redact(message)[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "batchop"},
            "reportingComponent": "batchop",
        }
        try:
            await self._request("POST", f"/api/v1/namespaces/{namespace}/events", json=event)
        except (TimeoutError, KubeError, aiohttp.ClientError) as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, obj["name"], exc)
