"""``batchop`` with :mod:`tracemalloc` on; ``SIGUSR1`` writes a snapshot summary (bench/memory_profile.py).

    python bench/tracemalloc_operator.py <batchop arguments>

The summary goes to ``$BATCHOP_TRACEMALLOC_OUT`` as JSON: ``traced`` and ``peak`` bytes, and the ``top``
source lines by bytes held (whole call chains, innermost last, with ``$BATCHOP_TRACEMALLOC_FRAMES`` > 1).
A bench tool only: the product never turns tracemalloc on.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def _dump(_signum: int, _frame: FrameType | None) -> None:
    gc.collect()
    traced, peak = tracemalloc.get_traced_memory()
    frames = tracemalloc.get_traceback_limit()
    stats = tracemalloc.take_snapshot().statistics("lineno" if frames == 1 else "traceback")
    top = [{"where": " <- ".join(str(f) for f in reversed(s.traceback)), "bytes": s.size, "count": s.count}
           for s in stats[:400]]
    out = Path(os.environ["BATCHOP_TRACEMALLOC_OUT"])
    tmp = out.with_suffix(".tmp")
    objects = gc.get_objects()  # what a full collection walks: the containers the collector tracks, by type
    census = collections.Counter(type(o).__name__ for o in objects).most_common(15)
    tmp.write_text(json.dumps({"traced": traced, "peak": peak, "top": top, "tracked": len(objects),
                               "frozen": gc.get_freeze_count(), "census": census}))
    tmp.replace(out)


def main() -> int:
    tracemalloc.start(int(os.environ.get("BATCHOP_TRACEMALLOC_FRAMES", "1")))
    signal.signal(signal.SIGUSR1, _dump)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from batchop.cli.main import main as batchop_main

    return batchop_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
