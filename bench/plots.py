"""PNG plots of the benchmark results, into ``docs/img/``, drawn from the same ``bench/results/*.json`` the
tables of ``docs/performance.md`` are rendered from.

:func:`render` is called by :func:`perfdoc.replace_section` for the section it rewrites, so every benchmark
command that regenerates a table (``--markdown``) redraws its figures, and the section shows them above the
table. ``python bench/plots.py`` redraws every figure from the saved results without running anything.

- ``convergence.png`` (section ``convergence``, from ``convergence.json``): seconds to converge against N for
  batchop, the async-SDK floor, the Kubernetes creates alone and their sum (log-log, median with min-max);
- ``economy.png`` (``economy``, from ``economy.json``): Batch requests and operator CPU per status cycle
  against N, batchop and the per-object timer;
- ``memory.png`` (``memory``, from ``economy.json`` and ``convergence.json``): operator RSS against N with no
  resource, at steady state, at the end of a creation burst and at its peak, and the per-object timer's;
- ``failover.png`` (``failover``, from ``failover.json`` when it exists, written by ``bench/failover.py``):
  each time from a leader killed (or stopped) to an edit applied by the new leader, and each shard handover,
  with p50 and p95.

A figure whose results file is missing (or holds no rows for it) is skipped, not drawn empty. Needs
matplotlib (``pip install -e '.[bench]'``); without it the tables are still written and a line says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
IMG = REPO / "docs" / "img"
DPI = 100
SIZE = (9.0, 5.0)  # inches: 900 x 500 pixels at DPI

Rows = list[dict[str, Any]]


def _load(results: Path, name: str) -> Rows:
    path = results / f"{name}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows = data.get("results", data) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)]


Series = tuple[list[int], list[float], list[float], list[float]]


def _series(rows: Rows, get: Callable[[dict[str, Any]], Any]) -> Series:
    """Per N: the median, min and max of ``get(row)`` over the rows that have it."""
    ns, mid, low, high = [], [], [], []
    for n in sorted({int(r["n"]) for r in rows if "n" in r}):
        values = []
        for r in rows:
            if int(r.get("n", -1)) != n:
                continue
            try:
                value = get(r)
            except (KeyError, TypeError):
                continue
            if value is not None:
                values.append(float(value))
        if values:
            ns.append(n)
            mid.append(statistics.median(values))
            low.append(min(values))
            high.append(max(values))
    return ns, mid, low, high


def _line(ax: Any, rows: Rows, get: Callable[[dict[str, Any]], Any], label: str, **style: Any) -> None:
    ns, mid, low, high = _series(rows, get)
    if not ns:
        return
    errors = [[m - lo for m, lo in zip(mid, low, strict=True)], [hi - m for m, hi in zip(mid, high, strict=True)]]
    ax.errorbar(ns, mid, yerr=errors, label=label, marker=style.pop("marker", "o"), capsize=3, **style)


def _figure(columns: int = 1) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    figure.subplots(1, columns)
    return figure


def _axes_n(ax: Any, ylabel: str, *, log_y: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _position: f"{value:,.6g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel("N (resources)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


# -- figures (pure: rows in, matplotlib Figure out) ----------------------------------------------------------


def convergence_figure(rows: Rows) -> Any | None:
    """Seconds from the first create to all mirrored, against N: batchop and what no operator can beat."""
    if not rows:
        return None
    figure = _figure()
    ax = figure.axes[0]
    modes = sorted({r.get("webhook", "off") for r in rows})
    labels = {"off": "no webhooks", "validating": "validating webhook", "both": "both webhooks, as shipped"}
    for index, mode in enumerate(modes):
        label = "batchop (all Ready, status mirrored)" + (f", {labels.get(mode, mode)}" if len(modes) > 1 else "")
        _line(ax, [r for r in rows if r.get("webhook", "off") == mode], lambda r: r["operator_seconds"], label,
              color=("C0", "C4", "C9")[index % 3])

    def kube_alone(r: dict[str, Any]) -> float:  # older results measured the creates beside the operator only
        return float(r.get("kube_alone_seconds") or r["kube_create_seconds"])

    _line(ax, rows, lambda r: kube_alone(r) + r["floor_seconds"],
          "floor: Kubernetes creates + Batch creates", color="C3", linestyle="--")
    _line(ax, rows, kube_alone, "Kubernetes creates alone", color="C2", linestyle=":")
    _line(ax, rows, lambda r: r["floor_seconds"], "Batch creates alone (async SDK)", color="C1", linestyle=":")
    ax.set_title("Convergence of N resources applied at once")
    _axes_n(ax, "seconds")
    return figure


def economy_figure(rows: Rows) -> Any | None:
    """Batch requests and CPU per status cycle against N: one poller per account vs one timer per object."""
    if not rows:
        return None
    figure = _figure(2)
    requests, cpu = figure.axes
    for who, label, color in (("batchop", "batchop (one poller per account)", "C0"),
                              ("baseline", "per-object timer (kopf)", "C7")):
        _line(requests, rows, lambda r, w=who: r[w]["batch_per_cycle"], label, color=color)
        _line(cpu, rows, lambda r, w=who: r[w]["cpu_per_cycle"], label, color=color)
    requests.set_title("Batch requests per status cycle")
    _axes_n(requests, "requests per cycle")
    cpu.set_title("Operator CPU per status cycle")
    _axes_n(cpu, "CPU seconds per cycle")
    return figure


def memory_figure(economy: Rows, convergence: Rows) -> Any | None:
    """Operator RSS against N, idle and in a burst."""
    if not economy and not convergence:
        return None
    figure = _figure()
    ax = figure.axes[0]
    _line(ax, economy, lambda r: r["batchop"]["rss_mib"], "batchop, steady state", color="C0")
    _line(ax, economy, lambda r: r.get("batchop_rss_empty_mib"), "batchop, no resource yet", color="C0",
          linestyle=":", marker="s")
    _line(ax, convergence, lambda r: r["operator_rss_mib"], "batchop, end of creation burst", color="C4",
          linestyle="--")
    _line(ax, convergence, lambda r: r.get("operator_peak_rss_mib"), "batchop, peak during burst", color="C4",
          linestyle="-.", marker="^")
    _line(ax, economy, lambda r: r["baseline"]["rss_mib"], "per-object timer (kopf), steady state", color="C7")
    ax.set_title("Operator memory (RSS)")
    ax.set_ylim(bottom=0)
    _axes_n(ax, "MiB", log_y=False)
    return figure


FAILOVER_GROUPS = (
    ("SIGKILL", None, "leader killed (SIGKILL)", "leader killed"),
    ("SIGTERM", None, "leader stopped (SIGTERM)", "leader stopped"),
    ("handover", "join_seconds", "shard handover: a replica joins", "replica joins"),
    ("handover", "leave_seconds", "shard handover: a replica dies", "replica dies"),
)
"""What ``bench/failover.py`` saves: per kind of kill ``{"seconds": [...]}`` (leader gone -> an edit applied by the
new leader), and the handover rounds ``{"handover": {"rounds": [{"join_seconds", "leave_seconds"}, ...]}}``."""


def _failover_times(data: dict[str, Any]) -> dict[tuple[str, str], list[float]]:
    groups: dict[tuple[str, str], list[float]] = {}
    for key, field, label, tick in FAILOVER_GROUPS:
        part = data.get(key)
        if not isinstance(part, dict):
            continue
        if field is None:
            values = part.get("seconds") or []
        else:
            values = [r[field] for r in part.get("rounds") or [] if isinstance(r, dict) and r.get(field) is not None]
        if values:
            groups[(label, tick)] = [float(v) for v in values]
    return groups


def failover_figure(data: dict[str, Any]) -> Any | None:
    """Each measured failover and shard handover time, per kind, with its p50 (line) and p95 (dashed)."""
    groups = _failover_times(data)
    if not groups:
        return None
    figure = _figure()
    ax = figure.axes[0]
    for index, ((label, _tick), values) in enumerate(groups.items()):
        ordered = sorted(values)
        ax.plot([index] * len(ordered), ordered, "o", alpha=0.6, color=f"C{index}", label=f"{label} (n={len(values)})")
        for q, style in ((0.5, "-"), (0.95, "--")):
            ax.hlines(ordered[min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1)], index - 0.3, index + 0.3,
                      colors=f"C{index}", linestyles=style)
    ax.set_xticks(range(len(groups)), [tick for _label, tick in groups])
    ax.set_xlim(-0.8, len(groups) - 0.2)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds until an edit is applied (line: p50, dashed: p95)")
    ax.set_title("Failover and shard handover")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def _load_raw(results: Path, name: str) -> dict[str, Any]:
    path = results / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return data if isinstance(data, dict) else {}


# -- files ---------------------------------------------------------------------------------------------------


Draw = Callable[[Path], Any]

FIGURES: dict[str, tuple[str, str, frozenset[str], Draw]] = {
    "convergence.png": ("Convergence time against N", "convergence", frozenset({"convergence"}),
                        lambda results: convergence_figure(_load(results, "convergence"))),
    "economy.png": ("Batch requests and CPU per status cycle against N", "economy", frozenset({"economy"}),
                    lambda results: economy_figure(_load(results, "economy"))),
    "memory.png": ("Operator RSS against N", "memory", frozenset({"memory", "convergence"}),
                   lambda results: memory_figure(_load(results, "economy"), _load(results, "convergence"))),
    "failover.png": ("Failover and shard handover times", "failover", frozenset({"failover"}),
                     lambda results: failover_figure(_load_raw(results, "failover"))),
}
"""Per file: its alt text, the ``docs/performance.md`` section that shows it, the sections whose rewrite redraws
it (the memory figure also takes the burst's RSS from the convergence run), and how it is drawn."""


def render(section: str, *, results: Path = RESULTS, out: Path = IMG) -> list[tuple[Path, str]]:
    """Redraw the figures the rewrite of ``section`` touches, from ``results`` into ``out``; returns (file, alt
    text) of those written that ``section`` shows."""
    shown: list[tuple[Path, str]] = []
    for filename, (alt, home, redrawn_by, draw) in FIGURES.items():
        if section not in redrawn_by:
            continue
        try:
            figure = draw(results)
        except ImportError as exc:
            print(f"plots: {filename} not drawn ({exc}); pip install -e '.[bench]'", file=sys.stderr)
            continue
        if figure is None:
            continue
        out.mkdir(parents=True, exist_ok=True)
        path = out / filename
        figure.savefig(path, dpi=DPI)
        if home == section:
            shown.append((path, alt))
    return shown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=IMG)
    args = parser.parse_args(argv)
    for _alt, home, _redrawn_by, _draw in FIGURES.values():
        for path, _ in render(home, results=args.results, out=args.out):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
