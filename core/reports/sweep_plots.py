"""Sweep figures (matplotlib, Agg, no pyplot): the panels the assignment asks for, as PNGs (listed in
docs/reports.md).

Figures draw what :mod:`core.reports.analysis` and the records hold and compute no statistics. A figure with
nothing to draw is not written at all: an empty placeholder tells a reader nothing the report's text does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.reports.analysis import SweepAnalysis, label
from core.reports.pages import save_figure
from core.reports.results import TrialRecord, best_so_far, learning_curve, pareto_front

if TYPE_CHECKING:
    from core.sweep import SweepConfig

STATE_COLOURS = {"COMPLETE": "#2166ac", "PRUNED": "#f4a582", "FAIL": "#b2182b"}
FIGURES = ("metric_vs_time", "parallel_coordinates", "importance", "optimization_history", "learning_curves",
           "cost_front")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")  # long tick labels never overlap a panel
    FigureCanvasAgg(fig)
    return fig


def _scatter_by_state(ax, xs, records: Sequence[TrialRecord]) -> None:
    for state, colour in STATE_COLOURS.items():
        pts = [(x, r.objective) for x, r in zip(xs, records) if r.state == state and r.objective is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, label=state.lower(), zorder=3, s=28)


def _plotbest_so_far(done: Sequence[TrialRecord], xs: Sequence, cfg: SweepConfig, path: Path, *, xlabel: str,
                      title: str, dates: bool = False) -> Path | None:
    """Trials (``done``, in x order) scattered by state plus the best-so-far step line."""
    if not done:
        return None
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    _scatter_by_state(ax, xs, done)
    ax.step(xs, best_so_far([r.objective for r in done], cfg.metric.maximize), where="post", color="#555555",
            lw=1.2, label="best so far")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(cfg.metric.name)
    ax.set_title(title)
    ax.legend(fontsize=8)
    if dates:
        fig.autofmt_xdate()
    return save_figure(fig, path)


def plot_metric_vs_time(records: Sequence[TrialRecord], cfg: SweepConfig, path: Path) -> Path | None:
    done = sorted((r for r in records if r.has_result and r.started_at is not None), key=lambda r: r.started_at)
    return _plotbest_so_far(done, [r.started_at for r in done], cfg, path, xlabel="trial created at",
                             title=f"{cfg.metric.name} vs created time", dates=True)


def plot_optimization_history(records: Sequence[TrialRecord], cfg: SweepConfig, path: Path) -> Path | None:
    done = sorted((r for r in records if r.has_result), key=lambda r: r.number)
    return _plotbest_so_far(done, [r.number for r in done], cfg, path, xlabel="trial number",
                             title="optimisation history")


def _axis_positions(values: list, numeric: bool, log_scale: bool) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values → [0, 1] positions and tick labels for one parallel-coordinates axis."""
    if numeric:
        x = np.array(values, dtype=float)
        xs = np.log10(x) if log_scale else x
        lo, hi = float(xs.min()), float(xs.max())
        pos = (xs - lo) / (hi - lo) if hi > lo else np.full(len(xs), 0.5)
        return pos, [(0.0, label(float(x.min()))), (1.0, label(float(x.max())))] if hi > lo else [(0.5, label(x[0]))]
    levels = sorted({repr(v): v for v in values}.items())
    index = {k: i for i, (k, _) in enumerate(levels)}
    k = len(levels)
    pos = np.array([index[repr(v)] / (k - 1) if k > 1 else 0.5 for v in values])
    ticks = [(i / (k - 1) if k > 1 else 0.5, label(v)) for i, (_, v) in enumerate(levels)]
    return pos, ticks


def plot_parallel_coordinates(records: Sequence[TrialRecord], analysis: SweepAnalysis, cfg: SweepConfig,
                              path: Path) -> Path | None:
    done = [r for r in records if r.has_result]
    names = [p.name for p in cfg.searched]
    if not done or not names:
        return None
    # at most 12 in wide (1200 px at the report's width: text stays ~10 px); more axes share the width
    fig = _figure(min(12.0, max(6.0, 1.3 * (len(names) + 1))), 5.0)
    kinds = {e.name: e for e in analysis.effects}
    columns, ticks = [], []
    for name in names:
        e = kinds.get(name)
        numeric = e is not None and e.kind == "numeric"
        pos, tk = _axis_positions([r.hyperparameters.get(name) for r in done], numeric, bool(e and e.log_scale))
        columns.append(pos)
        ticks.append(tk)
    y = np.array([r.objective for r in done], dtype=float)
    ypos, ytk = _axis_positions(list(y), True, False)
    columns.append(ypos)
    ticks.append(ytk)
    data = np.stack(columns, axis=1)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis"]
    good = ypos if cfg.metric.maximize else 1.0 - ypos
    for row, g in sorted(zip(data, good), key=lambda t: t[1]):  # best drawn last, on top
        ax.plot(range(data.shape[1]), row, color=cmap(g), alpha=0.85, lw=1.6)
    for i, tk in enumerate(ticks):
        ax.axvline(i, color="#333333", lw=0.8)
        for p, text in tk:
            ax.text(i + 0.04, p, text, fontsize=9, va="center", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 0.5})
    ax.set_xticks(range(data.shape[1]))
    ax.set_xticklabels(names + [cfg.metric.name], rotation=30, ha="right", fontsize=10)
    ax.set_yticks([])
    ax.set_xlim(-0.2, data.shape[1] - 0.6)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"parallel coordinates ({len(done)} trials, colour = {cfg.metric.name})")
    return save_figure(fig, path)


def plot_importance(analysis: SweepAnalysis, cfg: SweepConfig, path: Path) -> Path | None:
    effects = list(analysis.effects)
    corr_rows: list[tuple[str, float]] = []
    for e in effects:
        if e.kind == "numeric" and e.correlation is not None:
            corr_rows.append((e.name + (" (log)" if e.log_scale else ""), e.correlation))
        for g in e.groups if e.kind == "categorical" else ():
            if g.correlation is not None:
                corr_rows.append((f"{e.name}={g.label}", g.correlation))
    if not effects:
        return None
    fig = _figure(11, max(3.0, 0.32 * max(len(effects), len(corr_rows)) + 1.4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = [e.name for e in effects][::-1]
    imps = [e.importance or 0.0 for e in effects][::-1]
    bars = ax1.barh(names, imps, color="#4393c3")
    # the value beside every bar: a zero-length bar (ε² clipped at 0) reads as "0.00", not as a missing bar
    ax1.bar_label(bars, labels=["n/a" if e.importance is None else f"{e.importance:.2f}" for e in effects][::-1],
                  padding=3, fontsize=8)
    ax1.set_xlim(0, max(0.05, max(imps) * 1.25))
    ax1.set_title(f"importance (ε², {analysis.n_used} trials)")
    ax1.set_xlabel("share of variance explained")
    ax1.tick_params(axis="y", labelsize=8)
    if corr_rows:
        labels_, rs = zip(*corr_rows[::-1])
        ax2.barh(labels_, rs, color=["#1a9850" if r >= 0 else "#d73027" for r in rs])
        ax2.set_xlim(-1, 1)
        ax2.axvline(0, color="#333333", lw=0.8)
        ax2.tick_params(axis="y", labelsize=8)
    ax2.set_title(f"correlation with {cfg.metric.name}")
    ax2.set_xlabel("Pearson r")
    return save_figure(fig, path)


def plot_learning_curves(records: Sequence[TrialRecord], cfg: SweepConfig, path: Path) -> Path | None:
    curves = [(r, learning_curve(r, cfg.metric.name))
              for r in records]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return None
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    for r, c in curves:
        ax.plot([e for e, _ in c], [v for _, v in c], marker="o", ms=3, lw=1.2,
                color=STATE_COLOURS.get(r.state, "#777777"), alpha=0.8)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max(e for _, c in curves for e, _ in c)
    ax.set_xlim(0.8, last + 0.2)  # one epoch still gets a readable axis (not 0.95..1.05)
    if last <= 20:
        ax.set_xticks(range(1, int(last) + 1))
    ax.set_ylabel(cfg.metric.name)
    ax.set_title("learning curves (orange = stopped early)")
    return save_figure(fig, path)


def plot_cost_front(records: Sequence[TrialRecord], cfg: SweepConfig, path: Path) -> Path | None:
    """Two panels, the metric against FLOPs and against parameters (log x); front trials red and numbered."""
    front = {r.number for r in pareto_front(records, cfg)}
    done = [r for r in records if r.has_result and r.result is not None and r.result.flops
            and r.result.parameter_count]
    if not front:
        return None
    fig = _figure(10, 4)
    for i, (key, name) in enumerate((("flops", "FLOPs per image"), ("parameter_count", "parameters"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for on, colour in ((False, "#aaaaaa"), (True, "#b2182b")):
            pts = [(getattr(r.result, key), r.objective, r.number) for r in done if (r.number in front) == on]
            if pts:
                ax.scatter([x for x, _, _ in pts], [y for _, y, _ in pts], color=colour, s=30, zorder=3,
                           label="accuracy–cost front" if on else "other trials")
            for x, y, n in pts if on else ():
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(cfg.metric.name)
        ax.set_title(f"{cfg.metric.name} vs {name}")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_sweep_figures(records: Sequence[TrialRecord], analysis: SweepAnalysis, cfg: SweepConfig,
                        out_dir: Path) -> dict[str, Path]:
    """Write every sweep figure there is something to draw for into ``out_dir``; returns figure name → PNG path."""
    out_dir = Path(out_dir)
    written = {
        "metric_vs_time": plot_metric_vs_time(records, cfg, out_dir / "metric_vs_time.png"),
        "parallel_coordinates": plot_parallel_coordinates(records, analysis, cfg,
                                                          out_dir / "parallel_coordinates.png"),
        "importance": plot_importance(analysis, cfg, out_dir / "importance.png"),
        "optimization_history": plot_optimization_history(records, cfg, out_dir / "optimization_history.png"),
        "learning_curves": plot_learning_curves(records, cfg, out_dir / "learning_curves.png"),
        "cost_front": plot_cost_front(records, cfg, out_dir / "cost_front.png"),
    }
    return {name: path for name, path in written.items() if path is not None}
