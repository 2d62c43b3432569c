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

:func:`tune_gc`: the cyclic garbage collector ran every 700 new container objects (Python's default). A status
cycle decodes its listings into hundreds of thousands of dicts and lists that stay alive until the cycle ends,
so each young-generation collection walked the same survivors again: about 40% of the time spent decoding a
page of 1,000 schedules. With 50,000 the walks are rare; the garbage that only the collector frees (objects
in reference cycles) waits for at most 50,000 allocations, a few MiB. The objects alive at start-up (the
imported modules, some hundreds of thousands) are frozen out of every collection.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

MIN_INTERVAL = 60.0
GC_YOUNG_THRESHOLD = 50_000
TLS_READ_BUFFER = 64 * 1024

_last = float("-inf")
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


def tune_gc(young: int = GC_YOUNG_THRESHOLD) -> None:
    """Collect the young generation every ``young`` new container objects, and leave the objects alive now out of
    every collection (call it once the operator's modules are imported)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
