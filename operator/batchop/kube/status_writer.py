"""The single writer of ``status`` in the operator process.

Handlers and the poller both hand :class:`StatusWriter` the fields they own; it keeps the last written
document per object, merges conditions (``lastTransitionTime`` kept when unchanged), and sends a JSON
merge-patch to the ``/status`` subresource only when the document changed. One writer per process, so two
writers can never undo each other's fields, and a repeated report of the same state costs no request.

``Ready``, ``Reconciling`` and ``Stalled`` are derived here, on every write that carries a condition
(:func:`batchop.api.conditions.summarize`): from the ``Synced`` condition of the last pass and the ``Ready`` the
poller last observed in Batch (remembered per object, apart from the document, because a failed ``Synced``
replaces the document's ``Ready`` until the next successful pass brings the observation back).

Apart from :mod:`batchop.kube.client`: the writer decides *what* to send, the client only sends it, and any
:class:`StatusClient` (a fake in unit tests) will do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from batchop.api import conditions as cond
from batchop.kube.client import KubeError


class StatusClient(Protocol):
    """What the writer needs from the API (:class:`batchop.kube.client.KubeClient` has it): the object, None
    when it is gone; and the status merge-patch, None when the object is gone."""

    async def get_object(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None: ...


OnWritten = Callable[[str, str, dict[str, Any]], None]
"""Called with (namespace, name, status) after each patch."""


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge-patch (RFC 7386) turning ``old`` into ``new`` (lists replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new or new[key] is None:
            if old[key] is not None:
                patch[key] = None
    for key, value in new.items():
        if value is None:
            continue
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value:
            patch[key] = _copy(value)
    return patch


def _prune(value: Any) -> Any:
    """A copy of the JSON ``value`` without the None members of its objects outside arrays (arrays are copied
    as they are; strings and numbers are shared: they are immutable)."""
    if isinstance(value, Mapping):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _copy(value: Any) -> Any:
    """A deep copy of the JSON ``value`` (cheaper than ``copy.deepcopy``, which memoises every object)."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class StatusWriter:
    """The single writer of ``status`` (see the module docstring). ``update`` returns True if it patched."""

    def __init__(self, client: StatusClient, on_written: OnWritten | None = None) -> None:
        self.client = client
        self.on_written = on_written
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._observed: dict[tuple[str, str], dict[str, Any]] = {}  # the Ready last computed from Batch
        self.patches = 0

    def known(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._status.get((namespace, name))

    def seed(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """Remember the status seen on the object, unless this process has written it already."""
        key = (namespace, name)
        if key not in self._status:
            self._status[key] = _prune(dict(status or {}))
            self._remember_observed(key, self._status[key])

    def forget(self, namespace: str, name: str) -> None:
        self._status.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)
        self._observed.pop((namespace, name), None)

    def kept(self, key: tuple[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """:meth:`known` and :meth:`observed` of the object ``key`` (namespace, name) in one call (the status
        cycle asks for both for every resource)."""
        return self._status.get(key), self._observed.get(key)

    def observed(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ``Ready`` last computed from Batch for the object (not the document's, which a failed ``Synced``
        overrides): what the poller compares a new observation with."""
        return self._observed.get((namespace, name))

    def _remember_observed(self, key: tuple[str, str], status: Mapping[str, Any]) -> None:
        """A ``Ready`` read back from the object counts as observed when Batch's state gave it (after a
        restart, until the first poll cycle)."""
        ready = cond.find(status.get("conditions"), cond.READY)
        if ready is not None and ready.get("reason") in cond.OBSERVED_READY_REASONS:
            self._observed.setdefault(key, dict(ready))

    def _conditions(
        self, key: tuple[str, str], old: Mapping[str, Any], updates: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """``updates`` merged into the old conditions, with ``Ready``, ``Reconciling`` and ``Stalled`` derived
        (module docstring): an incoming ``Ready`` is the observation, not the final word."""
        rest = []
        for update in updates:
            if update.get("type") == cond.READY:
                if self._observed.get(key) != update:  # the same every cycle at rest: keep the copy held
                    self._observed[key] = dict(update)
            else:
                rest.append(update)
        merged = cond.merge(old.get("conditions"), rest)
        synced = cond.find(merged, cond.SYNCED)
        generation = next((u["observedGeneration"] for u in updates if u.get("observedGeneration") is not None),
                          (synced or {}).get("observedGeneration"))
        derived = cond.summarize(synced, self._observed.get(key), generation=generation)
        return cond.merge(merged, derived)

    async def update(
        self,
        namespace: str,
        name: str,
        fields: Mapping[str, Any] | None = None,
        conditions: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            old = self._status.get(key)
            if old is None:
                body = await self.client.get_object(namespace, name)
                if body is None:
                    return False
                old = _prune(dict(body.get("status") or {}))
                self._remember_observed(key, old)
            # top-level fields are replaced, never changed in place: a shallow copy keeps ``old`` intact
            new = dict(old)
            for field_name, value in (fields or {}).items():
                if value is None:
                    new.pop(field_name, None)
                else:
                    new[field_name] = _prune(value)
            if conditions:
                new["conditions"] = self._conditions(key, old, conditions)
            if new == old:
                return False
            patch = merge_patch(old, new)
            if not patch:
                self._status[key] = new
                return False
            try:
                result = await self.client.patch_status(namespace, name, patch)
            except KubeError as exc:
                if exc.status == 404:
                    self.forget(namespace, name)
                    return False
                raise
            if result is None:  # the object is gone
                self.forget(namespace, name)
                return False
            self._status[key] = new
            self.patches += 1
            if self.on_written is not None:
                self.on_written(namespace, name, new)
            return True
