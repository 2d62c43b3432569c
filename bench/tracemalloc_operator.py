"""``batchop`` with :mod:`tracemalloc` on; ``SIGUSR1`` writes a snapshot summary (bench/memory_profile.py).

    python bench/tracemalloc_operator.py <batchop arguments>

The summary goes to ``$BATCHOP_TRACEMALLOC_OUT`` as JSON: ``traced`` and ``peak`` bytes, and the ``top``
source lines by bytes held (whole call chains, innermost last, with ``$BATCHOP_TRACEMALLOC_FRAMES`` > 1);
with ``$BATCHOP_TRACEMALLOC_HOLDERS`` (source lines, ``file.py:123``, comma-separated), ``holders`` names, for
a few live objects allocated there, who holds them: chains of referrers up to the module or task that keeps
them alive; with ``$BATCHOP_TRACEMALLOC_FRAMES`` = 0 tracemalloc stays off (its own tables would blur the resident size)
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


def _describe(obj: object) -> str:
    name = type(obj).__name__
    if isinstance(obj, dict):
        return f"dict{sorted(map(str, obj))[:6]}"
    if isinstance(obj, FrameType):
        return f"frame {obj.f_code.co_name} ({Path(obj.f_code.co_filename).name}:{obj.f_lineno})"
    return name


def _chain(obj: object, depth: int, seen: set[int]) -> list[str]:
    """One path of referrers from ``obj`` upwards (the first referrer not already on the path each time),
    leaving out this module's own frames and lists."""
    path: list[str] = []
    for _ in range(depth):
        refs = gc.get_referrers(obj)
        holders = [r for r in refs if id(r) not in seen
                   and not (isinstance(r, FrameType) and r.f_code.co_filename == __file__)]
        seen.update((id(refs), id(holders)))  # the next step's referrers include these two lists
        if not holders:
            break
        obj = holders[0]
        seen.add(id(obj))
        path.append(_describe(obj))
    return path


def _holders(patterns: list[str], per: int = 3, depth: int = 8) -> dict[str, list[list[str]]]:
    """For each source line in ``patterns``, who holds a few live containers allocated there."""
    found: dict[str, list[list[str]]] = {p: [] for p in patterns}
    if not patterns:
        return found
    objects = gc.get_objects()
    seen = {id(objects), id(found)}
    wanted = {(name, int(line)) for name, line in (p.rsplit(":", 1) for p in patterns)}
    names: dict[str, str] = {}
    for obj in objects:
        if all(len(v) >= per for v in found.values()):
            break
        trace = tracemalloc._get_object_traceback(obj)  # type: ignore[attr-defined]  # raw (filename, lineno) pairs: no objects per frame
        if not trace:
            continue
        for filename, lineno in trace:
            name = names.get(filename) or names.setdefault(filename, Path(filename).name)
            if (name, lineno) in wanted and len(found[pattern := f"{name}:{lineno}"]) < per:
                found[pattern].append([_describe(obj), *_chain(obj, depth, seen | {id(obj)})])
                break
    del objects
    return found


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
                               "holders": _holders([p for p in os.environ.get("BATCHOP_TRACEMALLOC_HOLDERS", "")
                                                    .split(",") if p]) if tracemalloc.is_tracing() else {},
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
