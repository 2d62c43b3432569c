"""The state file (``--state-file``): the whole store and the virtual time, as JSON.

Written atomically (a temporary file in the same directory, fsync, rename), debounced: after a
change the writer waits ``debounce`` seconds so a burst of writes costs one file write; written
once more on shutdown. Loaded on start, restoring the objects, the job counters and the virtual
clock (which never goes backwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from batchwire import timestamps
from localbatch.clock import VirtualClock
from localbatch.store import Store

log = logging.getLogger("localbatch.persistence")
FORMAT_VERSION = 1


def dump(store: Store, clock: VirtualClock) -> dict[str, Any]:
    return {"formatVersion": FORMAT_VERSION, "virtualTime": timestamps.format(clock.now()), **store.snapshot()}


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: Path, store: Store, clock: VirtualClock) -> bool:
    """Restore ``store`` and ``clock`` from ``path``; ``False`` if the file does not exist."""
    if not path.exists():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    store.restore(data)
    if data.get("virtualTime"):
        clock.set_now(timestamps.parse(data["virtualTime"]))
    log.info("state restored", extra={"path": str(path), "schedules": len(store.schedules), "jobs": len(store.jobs)})
    return True


class StateWriter:
    """Writes the state file after store changes (debounced) and on :meth:`stop`."""

    def __init__(self, path: Path, store: Store, clock: VirtualClock, debounce: float = 0.2) -> None:
        self.path = path
        self.store = store
        self.clock = clock
        self.debounce = debounce
        self._task: asyncio.Task[None] | None = None
        self._written_version = -1
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="localbatch-state-writer")

    async def _run(self) -> None:
        while True:
            await self.store.wait_changed()
            await asyncio.sleep(self.debounce)
            self.flush()

    def flush(self) -> None:
        if self.store.version == self._written_version:
            return
        try:
            write_atomic(self.path, dump(self.store, self.clock))
        except OSError as exc:
            log.error("cannot write the state file", extra={"path": str(self.path), "error": str(exc)})
            return
        self._written_version = self.store.version
        self.writes += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
