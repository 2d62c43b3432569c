"""``batchop demo --once``: the README's "try it" command, run as a user runs it, reaches a word count.

It starts its own stack (time scale 240), uploads ``blob/``, applies ``examples/schedule.yaml``, and must print
the first job's counts read back from the output container, then stop every process it started.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from devstack import procs, stack

REPO = Path(__file__).resolve().parents[2]
LYRICS = REPO / "blob" / "input" / "the_star_spangled_banner.txt"


@pytest.mark.skipif(not stack.operator_available() or not LYRICS.is_file(), reason="operator or sample not present")
def test_demo_prints_the_word_count_and_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "batchop", "demo", "--once", "--dir", str(state),
                             "--timeout", "240"], capture_output=True, text=True, timeout=400, check=False)
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "$ kubectl get batchschedules" in result.stdout
        assert re.search(r"^wordcount\s+True\s+True\s+active", result.stdout, re.MULTILINE), result.stdout
        word, count = Counter(re.findall(r"[a-z']+", LYRICS.read_text().lower())).most_common(1)[0]
        assert re.search(rf"^{count}\t{re.escape(word)}$", result.stdout, re.MULTILINE), result.stdout
    finally:
        leftovers = [r for r in procs.records(state) if r.alive]
        for record in leftovers:
            procs.stop(state, record)
    assert leftovers == [], "the demo left processes running"
