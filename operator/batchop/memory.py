"""Give freed heap memory back to the operating system (glibc ``malloc_trim``), at most once a minute.

A burst (1,000 resources applied at once) allocates many short-lived buffers; Python frees them, but glibc
keeps the pages in the process's heap, so the resident size stays at the burst's high-water mark for the
rest of the process's life. ``malloc_trim(0)`` returns the free pages. It is a no-op where glibc is not
the allocator (musl, macOS), and costs a few milliseconds; the poller calls :func:`release` after a cycle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

MIN_INTERVAL = 60.0

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
