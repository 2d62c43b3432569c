"""bench/plots.py on tiny result files: the figures carry the expected series and values, the PNGs are real
images of the expected size, a missing result draws nothing, and perfdoc puts each section's images above its
table (the hook the benchmark commands' ``--markdown`` goes through)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import perfdoc  # noqa: E402
import plots  # noqa: E402

CONVERGENCE = [
    {"n": 10, "run": 1, "operator_seconds": 2.0, "floor_seconds": 0.2, "kube_create_seconds": 0.5,
     "operator_rss_mib": 80.0, "operator_peak_rss_mib": 90.0},
    {"n": 10, "run": 2, "operator_seconds": 4.0, "floor_seconds": 0.4, "kube_create_seconds": 0.7,
     "operator_rss_mib": 82.0},
    {"n": 100, "run": 1, "operator_seconds": 20.0, "floor_seconds": 2.0, "kube_create_seconds": 6.0,
     "operator_rss_mib": 140.0, "operator_peak_rss_mib": 150.0},
]
ECONOMY = [
    {"n": 10, "run": 1, "batchop": {"batch_per_cycle": 3.0, "cpu_per_cycle": 0.03, "rss_mib": 85.0},
     "baseline": {"batch_per_cycle": 30.0, "cpu_per_cycle": 0.9, "rss_mib": 96.0}, "batchop_rss_empty_mib": 74.0},
    {"n": 100, "run": 1, "batchop": {"batch_per_cycle": 3.5, "cpu_per_cycle": 0.4, "rss_mib": 144.0},
     "batchop_rss_empty_mib": 74.0},  # no baseline at this N: --skip-baseline
]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "convergence.json").write_text(json.dumps({"machine": {}, "results": CONVERGENCE}))
    (folder / "economy.json").write_text(json.dumps({"machine": {}, "results": ECONOMY}))
    return folder


def series(ax: Any) -> dict[str, tuple[list[float], list[float]]]:
    """Legend label -> (x, y) of each error-bar series drawn on ``ax``."""
    return {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}


def test_convergence_figure_has_batchop_and_the_floors(results: Path) -> None:
    figure = plots.convergence_figure(plots._load(results, "convergence"))
    drawn = series(figure.axes[0])
    assert drawn["batchop (all Ready, status mirrored)"] == ([10, 100], [3.0, 20.0])  # medians per N
    assert drawn["Batch creates alone (async SDK)"] == ([10, 100], [pytest.approx(0.3), 2.0])
    assert drawn["Kubernetes creates alone"] == ([10, 100], [pytest.approx(0.6), 6.0])
    assert drawn["floor: Kubernetes creates + Batch creates"] == ([10, 100], [pytest.approx(0.9), 8.0])
    assert figure.axes[0].get_xscale() == "log" and figure.axes[0].get_yscale() == "log"


def test_economy_and_memory_figures(results: Path) -> None:
    economy = plots.economy_figure(plots._load(results, "economy"))
    requests, cpu = (series(ax) for ax in economy.axes)
    assert requests["batchop (one poller per account)"] == ([10, 100], [3.0, 3.5])
    assert requests["per-object timer (kopf)"] == ([10], [30.0])  # only where it was measured
    assert cpu["batchop (one poller per account)"] == ([10, 100], [0.03, 0.4])
    memory = series(plots.memory_figure(plots._load(results, "economy"), plots._load(results, "convergence")).axes[0])
    assert memory["batchop, steady state"] == ([10, 100], [85.0, 144.0])
    assert memory["batchop, no resource yet"] == ([10, 100], [74.0, 74.0])
    assert memory["batchop, end of creation burst"] == ([10, 100], [81.0, 140.0])
    assert memory["batchop, peak during burst"] == ([10, 100], [90.0, 150.0])
    assert memory["per-object timer (kopf), steady state"] == ([10], [96.0])


FAILOVER = {  # the shape bench/failover.py saves
    "machine": {}, "kills": 3,
    "SIGKILL": {"seconds": [16.0, 14.0, 18.0], "median": 16.0},
    "SIGTERM": {"seconds": [1.2, 0.9, 1.1], "median": 1.1},
    "handover": {"rounds": [{"join_seconds": 3.0, "leave_seconds": 17.0},
                            {"join_seconds": 2.5, "leave_seconds": 16.0}]},
}


def test_failover_figure_shows_each_kill_and_handover() -> None:
    ax = plots.failover_figure(FAILOVER).axes[0]
    points = {line.get_label(): sorted(line.get_ydata()) for line in ax.lines}
    assert points == {
        "leader killed (SIGKILL) (n=3)": [14.0, 16.0, 18.0],
        "leader stopped (SIGTERM) (n=3)": [0.9, 1.1, 1.2],
        "shard handover: a replica joins (n=2)": [2.5, 3.0],
        "shard handover: a replica dies (n=2)": [16.0, 17.0],
    }
    assert plots.failover_figure({"machine": {}}) is None  # nothing measured yet: no figure


def test_render_writes_real_pngs_and_skips_missing_results(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "img"
    written = plots.render("convergence", results=results, out=out)
    assert [(p.name, alt) for p, alt in written] == [("convergence.png", "Convergence time against N")]
    assert (out / "memory.png").exists()  # the burst's RSS feeds the memory figure: redrawn too, shown elsewhere
    for name in ("convergence.png", "memory.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            assert image.size == (int(plots.SIZE[0] * plots.DPI), int(plots.SIZE[1] * plots.DPI))
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # not blank
    assert plots.render("failover", results=results, out=out) == []  # no failover.json: nothing drawn
    assert not (out / "failover.png").exists()
    (results / "failover.json").write_text(json.dumps(FAILOVER))
    assert [p.name for p, _ in plots.render("failover", results=results, out=out)] == ["failover.png"]


def test_perfdoc_shows_the_sections_figures_above_its_table(results: Path, tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "performance.md"
    doc.parent.mkdir()
    doc.write_text("# Performance\n\n<!-- bench:convergence start -->\nold\n<!-- bench:convergence end -->\n")
    info = {"cpu": "cpu", "nproc": 2, "memory_gib": 1, "python": "3.11", "loadavg": [0, 0, 0], "time": "now"}
    body = perfdoc.section("Convergence", "python bench/convergence.py", info, "| N |\n|---|\n| 10 |", "Notes.")
    perfdoc.replace_section("convergence", body, doc=doc, results=results)
    text = doc.read_text()
    image = "![Convergence time against N](img/convergence.png)"
    assert image in text and "old" not in text
    assert text.index("Machine:") < text.index(image) < text.index("| N |")
    assert "memory.png" not in text
    assert (doc.parent / "img" / "convergence.png").exists()
    perfdoc.replace_section("convergence", body, doc=doc, results=results)  # again: still one image
    assert doc.read_text().count(image) == 1
