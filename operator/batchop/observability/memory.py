"""The operator's memory economies: freed heap back to the OS, and small TLS read buffers.

:func:`release` gives freed heap memory back to the operating system (glibc ``malloc_trim``), at most once
a minute. A burst (1,000 resources applied at once) allocates many short-lived buffers; Python frees them, but glibc
keeps the pages in the process's heap, so the resident size stays at the burst's high-water mark for the
rest of the process's life. ``malloc_trim(0)`` returns the free pages. It is a no-op where glibc is not
the allocator (musl, macOS), and costs a few milliseconds; the poller calls :func:`release` after a cycle.

:func:`small_tls_buffers`: asyncio gives every TLS connection a 256 KiB read buffer
(``asyncio.sslproto.SSLProtocol.max_size``), allocated when the connection opens and held until it closes.
kopf's own API client opens as many connections as it has requests in flight (its connector has no limit):
during a burst of 1,000 creates or deletes 25 to 80 are open (6 to 20 MiB of buffers), and they stay in its
keep-alive pool for 15 to 30 s after it; the heap they grew stays with the process. A TLS record carries at
most 16 KiB, so a 64 KiB buffer still takes four records per read.

:func:`tune_gc`: the objects alive once the operator has started (its imported modules: some hundreds of
thousands) are frozen out of every garbage collection, so a full collection walks only the objects of the
resources. The young generation keeps Python's threshold (700): 50,000 was measured (10,000 idle resources,
one run each, against the run before): 13% less CPU per status cycle but 34 MiB more resident memory (466
against 432 MiB), presumably garbage in reference cycles (futures, responses and their buffers) waiting longer
for the collector.

:func:`settle` freezes the resources' long-lived state the same way once there are many (and each time their
number doubles), so full collections stop walking it.

:func:`collector_paused`: no collection while a page of JSON is decoded.

:data:`GC_CLOCK` times every collection by generation (``gc.callbacks``; two clock reads per collection), for
``batchop_gc_seconds_total`` (:mod:`batchop.observability.metrics`), the counterpart of the
``go_gc_duration_seconds`` a Go controller exports: how much of the operator's CPU the collector takes.
"""

from __future__ import annotations

import asyncio.sslproto
import contextlib
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable, Iterator

MIN_INTERVAL = 60.0
TLS_READ_BUFFER = 64 * 1024

_last = float("-inf")


class CollectorClock:
    """Seconds spent in, and number of, the garbage collector's collections by generation (0, 1, 2)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0
        self.installed = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info.get("generation", 2)
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1

    def install(self) -> None:
        """Start timing collections (once)."""
        if not self.installed:
            self.installed = True
            gc.callbacks.append(self)


#: The process's collection times (installed by :func:`tune_gc`).
GC_CLOCK = CollectorClock()
_trim: Callable[[int], int] | None = None
_loaded = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _loaded
    if not _loaded:
        _loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):
            _trim = None
    return _trim


def release(now: float | None = None) -> bool:
    """Trim the heap unless that was done less than :data:`MIN_INTERVAL` seconds ago. True if trimmed."""
    global _last
    now = time.monotonic() if now is None else now
    if now - _last < MIN_INTERVAL:
        return False
    trim = _malloc_trim()
    if trim is None:
        return False
    _last = now
    trim(0)
    return True


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Make TLS connections opened from now on read into ``size`` bytes instead of asyncio's 256 KiB."""
    asyncio.sslproto.SSLProtocol.max_size = size


FREEZE_FROM = 1000
"""Resources tracked before :func:`settle` first freezes the heap (below it a full collection is cheap)."""

_frozen_at = 0


def settle(resources: int) -> bool:
    """After a status cycle: once the operator tracks :data:`FREEZE_FROM` resources, and again each time the
    number has doubled since, collect everything (one full collection) and freeze what is alive. True if frozen.

    A full collection walks every object the collector tracks, and at 10,000 resources that is millions of
    long-lived dictionaries and lists (statuses, desired bodies, job books) that will never be garbage in a
    reference cycle: it cost about 0.14 s of every status cycle. Frozen objects are still freed when their
    last reference goes; only a reference cycle among them would wait (for the process's life), and the full
    collection right before the freeze leaves none behind. Doubling bounds the freezes to a few per process."""
    global _frozen_at
    if resources < FREEZE_FROM or resources < 2 * _frozen_at:
        return False
    gc.collect()
    gc.freeze()
    _frozen_at = resources
    return True


def tune_gc() -> None:
    """Leave the objects alive now out of every garbage collection (call it once the operator's modules are
    imported), and time collections from now on (:data:`GC_CLOCK`)."""
    gc.freeze()
    GC_CLOCK.install()


_paused = 0


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection inside the block (re-entrant: the collector runs again when the last block has
    left). For a page of JSON being decoded: some 100,000 dicts and lists and no reference cycles, which would
    otherwise set off collection after collection, each walking the page decoded so far.

    Only for blocks that do not wait on anything: a pause around a whole status cycle (its listings freed by
    reference counting at its end, never walked) saved 8% of the CPU per cycle at 10,000 resources but left
    the process at 561 MiB instead of 268 (the reference cycles of a long cycle's requests wait for the
    collector meanwhile), above the shipped memory limit (docs/performance.md, sixth pass)."""
    global _paused
    if _paused == 0 and not gc.isenabled():
        yield  # paused by someone else (a test, the embedding program): theirs to resume
        return
    _paused += 1
    gc.disable()
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            gc.enable()
