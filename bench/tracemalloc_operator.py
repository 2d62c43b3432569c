"""``batchop`` with :mod:`tracemalloc` on; ``SIGUSR1`` writes a snapshot summary (bench/memory_profile.py).

    python bench/tracemalloc_operator.py <batchop arguments>

The summary goes to ``$BATCHOP_TRACEMALLOC_OUT`` as JSON: ``traced`` and ``peak`` bytes, and the ``top``
source lines by bytes held (whole call chains, innermost last, with ``$BATCHOP_TRACEMALLOC_FRAMES`` > 1);
with ``$BATCHOP_TRACEMALLOC_FRAMES`` = 0 tracemalloc stays off (its own tables would blur the resident size)
and only the census and the allocators' books are written. ``allocators`` splits the heap between Python's
small-object allocator (pymalloc: its 1 MiB arenas, the blocks in use, the free blocks and pools inside them)
and glibc's ``malloc`` (``mallinfo2``: bytes in use, free inside its heaps, and in ``mmap`` blocks): where
resident memory beyond what is in use sits. A bench tool only: the product never turns tracemalloc on.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType

_PYMALLOC = {
    "arenas": r"# arenas allocated current\s*=\s*([\d,]+)",
    "in_use": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
    "free_blocks": r"# bytes in available blocks\s*=\s*([\d,]+)",
    "free_pools": r"unused pools \* \d+ bytes\s*=\s*([\d,]+)",
}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _pymalloc() -> dict[str, int]:
    """pymalloc's books from ``sys._debugmallocstats`` (written by C to file descriptor 2)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found = {key: re.search(pattern, text) for key, pattern in _PYMALLOC.items()}
    return {key: int(m.group(1).replace(",", "")) for key, m in found.items() if m}


def _glibc() -> dict[str, int]:
    """glibc's books over all its arenas (``mallinfo2``); empty where glibc is not the allocator."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmap": info.hblkhd}


def _dump(_signum: int, _frame: FrameType | None) -> None:
    gc.collect()
    traced, peak = tracemalloc.get_traced_memory()
    top = []
    if tracemalloc.is_tracing():
        frames = tracemalloc.get_traceback_limit()
        stats = tracemalloc.take_snapshot().statistics("lineno" if frames == 1 else "traceback")
        top = [{"where": " <- ".join(str(f) for f in reversed(s.traceback)), "bytes": s.size, "count": s.count}
               for s in stats[:400]]
    out = Path(os.environ["BATCHOP_TRACEMALLOC_OUT"])
    tmp = out.with_suffix(".tmp")
    objects = gc.get_objects()  # what a full collection walks: the containers the collector tracks, by type
    census = collections.Counter(type(o).__name__ for o in objects).most_common(15)
    tmp.write_text(json.dumps({"traced": traced, "peak": peak, "top": top, "tracked": len(objects),
                               "frozen": gc.get_freeze_count(), "census": census,
                               "allocators": {"pymalloc": _pymalloc(), "glibc": _glibc()}}))
    tmp.replace(out)


def main() -> int:
    frames = int(os.environ.get("BATCHOP_TRACEMALLOC_FRAMES", "1"))
    if frames > 0:
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR1, _dump)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from batchop.cli.main import main as batchop_main

    return batchop_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
