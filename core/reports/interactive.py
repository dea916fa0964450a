"""Interactive sweep figures (plotly) for ``report.html``: hover a line, brush an axis, zoom, hide a series.

The offline report should be explorable as W&B's sweep page is, without a server; the figures draw the same
records and statistics as the PNGs, never new ones. ``optuna.visualization`` draws the history from an in-memory
study built from the records (:func:`study_from_records`), which serves both backends and leaves out discarded
attempts; a PRUNED trial with a value counts as a result. The others are built here because Optuna's cannot
show them the same way across versions: a brushable parcoords, ε² and r with their trial counts, hyperband stops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.reports.analysis import SweepAnalysis, fmt, label
from core.reports.results import TrialRecord, best_so_far, learning_curve

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

    from core.sweep import SweepConfig

logger = logging.getLogger(__name__)

STATE_COLOURS = {"COMPLETE": "#2166ac", "PRUNED": "#e08214", "FAIL": "#b2182b"}


def _primitive(value: Any) -> Any:
    """Optuna choices must be None/bool/int/float/str: lists (a custom filter list) become their label."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else label(value)


def _numeric(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def study_from_records(records: Sequence[TrialRecord], cfg: SweepConfig) -> optuna.Study:
    """An in-memory Optuna study holding the records' results (see the module docstring)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    done = [r for r in records if r.has_result]
    distributions: dict[str, Any] = {}
    for p in cfg.searched:
        seen = [r.hyperparameters.get(p.name) for r in done if p.name in r.hyperparameters]
        if _numeric(seen) and len(set(seen)) > 1:
            lo, hi = float(min(seen)), float(max(seen))
            distributions[p.name] = FloatDistribution(lo, hi, log=lo > 0 and "log" in p.distribution)
        elif seen:
            distributions[p.name] = CategoricalDistribution(sorted({_primitive(v) for v in seen}, key=repr))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line from core
    try:
        study = optuna.create_study(direction="maximize" if cfg.metric.maximize else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    by_number = {r.number: r for r in done}
    for number in range(max(by_number) + 1 if by_number else 0):
        r = by_number.get(number)
        if r is None:
            study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"placeholder": True}))
            continue
        hp = r.hyperparameters
        params = {k: (float(hp[k]) if isinstance(d, FloatDistribution) else _primitive(hp[k]))
                  for k, d in distributions.items() if k in hp}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=float(r.objective), params=params,
                                     distributions={k: distributions[k] for k in params},
                                     user_attrs={"state": r.state}))
    return study


def _hover(r: TrialRecord, cfg: SweepConfig) -> str:
    lines = [f"<b>trial {r.number}</b> ({r.state.lower()})", f"{cfg.metric.name} = {fmt(r.objective)}"]
    lines += [f"{p.name} = {label(r.hyperparameters.get(p.name))}" for p in cfg.searched if p.name in r.hyperparameters]
    return "<br>".join(lines)


def _dimension(name: str, values: list[Any], numeric: bool, log_scale: bool) -> dict[str, Any]:
    """One parcoords axis: numbers as they are (log10 for log-scaled parameters, ticks in real units),
    anything else as evenly spaced levels with their labels."""
    import numpy as np

    if numeric:
        x = np.array(values, dtype=float)
        xs = np.log10(x) if log_scale else x
        lo, hi = float(xs.min()), float(xs.max())
        ticks = list(np.linspace(lo, hi, 5)) if hi > lo else [lo]
        shown = [10 ** t for t in ticks] if log_scale else ticks
        pad = 0.0 if hi > lo else 1.0
        return {"label": name + (" (log)" if log_scale else ""), "values": list(xs), "range": [lo - pad, hi + pad],
                "tickvals": ticks, "ticktext": [label(float(v)) for v in shown]}
    levels = sorted({label(v) for v in values}, key=lambda t: (len(t), t))
    index = {t: i for i, t in enumerate(levels)}
    return {"label": name, "values": [index[label(v)] for v in values], "tickvals": list(range(len(levels))),
            "ticktext": levels, "range": [-0.3, len(levels) - 0.7] if len(levels) > 1 else [-1, 1]}


def parallel_coordinates(records: Sequence[TrialRecord], analysis: SweepAnalysis,
                         cfg: SweepConfig) -> go.Figure | None:
    """Plotly's parcoords (not Optuna's, which is drawn differently across Optuna versions): brushing an
    axis filters the lines, dragging an axis title reorders the axes; the metric is the last axis."""
    import plotly.graph_objects as go

    done = [r for r in records if r.has_result]
    kinds = {e.name: e for e in analysis.effects}
    dims = []
    for p in cfg.searched:
        vals = [r.hyperparameters.get(p.name) for r in done]
        if not done or any(v is None for v in vals):
            continue
        e = kinds.get(p.name)
        numeric = e.kind == "numeric" if e is not None else (not p.is_categorical and _numeric(vals)
                                                              and len(set(vals)) > 6)
        dims.append(_dimension(p.name, vals, numeric, bool(e and e.log_scale)))
    if not dims:
        return None
    y = [r.objective for r in done]
    dims.append({**_dimension(cfg.metric.name, y, True, False), "label": f"<b>{cfg.metric.name}</b>"})
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=-25, labelside="bottom", labelfont={"size": 13}, tickfont={"size": 12},
        rangefont={"size": 1, "color": "rgba(0,0,0,0)"},
        line={"color": y, "colorscale": "Viridis", "reversescale": not cfg.metric.maximize, "showscale": True,
              "colorbar": {"title": {"text": cfg.metric.name}}}))
    fig.update_layout(title=f"Parallel coordinates: {len(done)} trials, colour = {cfg.metric.name} "
                            f"({'bright' if cfg.metric.maximize else 'dark'} = better)",
                      margin={"l": 80, "r": 80, "t": 80, "b": 120})
    return fig


def importance(analysis: SweepAnalysis, cfg: SweepConfig) -> go.Figure | None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    effects = [e for e in analysis.effects if e.importance is not None]
    if not effects:
        return None
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.22,
                        subplot_titles=(f"importance (ε², {analysis.n_used} trials)",
                                        f"correlation with {cfg.metric.name} (Pearson r)"))
    names = [e.name for e in effects][::-1]
    hover = [f"<b>{e.name}</b><br>ε² = {e.importance:.3f} over {e.n} trials<br>" + "<br>".join(
        f"{g.label}: mean {fmt(g.mean)} ({g.n} trial{'s' * (g.n != 1)})" for g in e.groups) for e in effects][::-1]
    fig.add_trace(go.Bar(x=[e.importance for e in effects][::-1], y=names, orientation="h", marker_color="#4393c3",
                         text=[f"{e.importance:.2f}" for e in effects][::-1], textposition="outside",
                         hovertext=hover, hoverinfo="text", name="ε²"), row=1, col=1)
    corr: list[tuple[str, float, int]] = []
    for e in effects:
        if e.kind == "numeric" and e.correlation is not None:
            corr.append((e.name + (" (log)" if e.log_scale else ""), e.correlation, e.n))
        for g in e.groups if e.kind == "categorical" else ():
            if g.correlation is not None:
                corr.append((f"{e.name}={g.label}", g.correlation, g.n))
    corr = corr[::-1]
    fig.add_trace(go.Bar(x=[c[1] for c in corr], y=[c[0] for c in corr], orientation="h",
                         marker_color=["#1a9850" if c[1] >= 0 else "#d73027" for c in corr],
                         hovertext=[f"{c[0]}: r = {c[1]:+.2f} ({c[2]} trials)" for c in corr], hoverinfo="text",
                         name="r"), row=1, col=2)
    fig.update_xaxes(range=[0, max(0.05, max(e.importance for e in effects) * 1.25)], title="share of variance",
                     row=1, col=1)
    fig.update_xaxes(range=[-1, 1], title="Pearson r", zeroline=True, row=1, col=2)
    fig.update_yaxes(tickmode="linear", dtick=1, automargin=True)  # every label, not every other one
    fig.update_layout(showlegend=False, bargap=0.25, height=max(380, 24 * max(len(effects), len(corr)) + 150))
    return fig


def metric_vs_time(records: Sequence[TrialRecord], cfg: SweepConfig) -> go.Figure | None:
    import plotly.graph_objects as go

    done = sorted((r for r in records if r.has_result and r.started_at is not None), key=lambda r: r.started_at)
    if not done:
        return None
    fig = go.Figure()
    for state, colour in STATE_COLOURS.items():
        pts = [r for r in done if r.state == state]
        if pts:
            fig.add_trace(go.Scatter(x=[r.started_at for r in pts], y=[r.objective for r in pts], mode="markers",
                                     name=state.lower(), marker={"color": colour, "size": 10},
                                     hovertext=[_hover(r, cfg) for r in pts], hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[r.started_at for r in done], y=best_so_far([r.objective for r in done],
                                                                            cfg.metric.maximize),
                             mode="lines", line={"shape": "hv", "color": "#555555"}, name="best so far",
                             hoverinfo="skip"))
    fig.update_layout(title=f"{cfg.metric.name} vs the time each trial was created", xaxis_title="created at",
                      yaxis_title=cfg.metric.name)
    return fig


def optimization_history(records: Sequence[TrialRecord], cfg: SweepConfig) -> go.Figure | None:
    from optuna.visualization import plot_optimization_history

    study = study_from_records(records, cfg)
    if not any(t.value is not None for t in study.trials):
        return None
    fig = plot_optimization_history(study, target_name=cfg.metric.name)
    fig.update_layout(title=f"Optimisation history: {cfg.metric.name} by trial number")
    return fig


def learning_curves(records: Sequence[TrialRecord], cfg: SweepConfig) -> go.Figure | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    shown: set[str] = set()
    for r in records:
        curve = learning_curve(r, cfg.metric.name)
        if not curve:
            continue
        state = r.state if r.state in STATE_COLOURS else "COMPLETE"
        fig.add_trace(go.Scatter(x=[e for e, _ in curve], y=[v for _, v in curve], mode="lines+markers",
                                 name=state.lower(), legendgroup=state, showlegend=state not in shown,
                                 line={"color": STATE_COLOURS[state]}, opacity=0.8,
                                 hovertext=[_hover(r, cfg) + f"<br>epoch {e}: {fmt(v)}" for e, v in curve],
                                 hoverinfo="text"))
        shown.add(state)
    if not fig.data:
        return None
    fig.update_layout(title=f"Learning curves: {cfg.metric.name} per epoch (orange = stopped early)",
                      xaxis_title="epoch", yaxis_title=cfg.metric.name, xaxis={"dtick": 1})
    return fig


def interactive_figures(records: Sequence[TrialRecord], analysis: SweepAnalysis,
                        cfg: SweepConfig) -> dict[str, go.Figure]:
    """Name → plotly figure, for the figures there is something to draw for (none without a result)."""
    figures = {
        "parallel_coordinates": parallel_coordinates(records, analysis, cfg),
        "importance": importance(analysis, cfg),
        "metric_vs_time": metric_vs_time(records, cfg),
        "optimization_history": optimization_history(records, cfg),
        "learning_curves": learning_curves(records, cfg),
    }
    return {k: v for k, v in figures.items() if v is not None}
