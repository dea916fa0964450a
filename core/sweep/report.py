"""``report.html``: one self-contained page per sweep (inline CSS, PNGs embedded as base64, no scripts).

It opens offline from a laptop, a cluster scratch folder or an e-mail attachment: the best trial, the
observations computed by :mod:`core.sweep.analysis`, the top runs, every figure, the full results table,
and the notes on how the config was mapped to the backend.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.runfiles import write_text
from core.sweep.analysis import SweepAnalysis, fmt, label
from core.sweep.config import SweepConfig
from core.sweep.results import TrialRecord, ranked, results_columns, results_rows

TOP_N = 10
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}.meta{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1.5rem;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.best{background:#eef6ee;border:1px solid #b8dcb8;padding:.6rem 1rem;border-radius:6px}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.85rem}.n{color:#777;font-size:.85em}
"""
CAPTIONS = {
    "metric_vs_time": "Sweep metric against the time each trial was created; line = best so far.",
    "parallel_coordinates": "One line per finished trial through every searched parameter and the metric.",
    "importance": "Importance = share of the metric's variance a parameter explains alone (ε²); correlation = "
                  "Pearson r with the value (or with each categorical value).",
    "optimization_history": "Metric by trial number; line = best so far.",
    "learning_curves": "Metric per epoch for every trial; orange = stopped early by hyperband.",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return _e(value)


def _table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *, left: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{_e(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if c in left else ""}">{_cell(r.get(c))}</td>' for c in columns) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(*, cfg: SweepConfig, sweep_name: str, backend: str, records: Sequence[TrialRecord],
                  analysis: SweepAnalysis, figures: Mapping[str, Path], notes: Sequence[str] = (),
                  outputs: Mapping[str, Path] | None = None) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    best = ranked(records, cfg)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sweep {_e(sweep_name)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Sweep {_e(sweep_name)}</h1>",
             f"<p class='meta'>backend <b>{_e(backend)}</b> · method <b>{_e(cfg.method)}</b> · metric "
             f"<b>{_e(cfg.metric.name)}</b> ({_e(cfg.metric.goal)}) · {len(records)} trials · generated "
             f"{datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]
    if best:
        b = best[0]
        items = "".join(f"<li><code>{_e(k)}</code> = {_e(label(v))}</li>" for k, v in b.hyperparameters.items())
        parts.append(f"<div class='best'><b>Best: trial {b.number}</b>, {_e(cfg.metric.name)} = {fmt(b.objective)}"
                     f" ({_e(b.state.lower())}); {_e(b.result.parameter_count)} parameters, FLOPs {_e(b.result.flops)}"
                     f"<ul>{items}</ul>run folder: <code>{_e(b.run_dir)}</code></div>")
    parts.append("<h2>Observations</h2><ul>")
    for o in analysis.observations:
        parts.append(f"<li>{_e(o.text)} <span class='n'>[{o.support} trials]</span></li>")
    parts.append("</ul>")
    if best:
        cols = ["number", "state", cfg.metric.name] + [p.name for p in cfg.searched] + ["params", "flops", "seconds"]
        parts.append(f"<h2>Top {min(TOP_N, len(best))} runs</h2>")
        parts.append(_table(cols, results_rows(best[:TOP_N], cfg), left=("state",)))
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        parts.append(f"<figure>{_img(path)}<figcaption>{_e(CAPTIONS.get(name, name))}</figcaption></figure>")
    parts.append("<h2>All trials</h2>")
    parts.append(_table(results_columns(records, cfg), results_rows(records, cfg), left=("state", "run_dir", "error")))
    if outputs:
        parts.append("<h2>Files</h2><ul>" + "".join(f"<li>{_e(k)}: <code>{_e(v)}</code></li>"
                                                    for k, v in outputs.items()) + "</ul>")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: Path, **kwargs: Any) -> Path:
    """Write ``report.html`` atomically; keyword arguments as :func:`render_report`."""
    write_text(path, render_report(**kwargs))
    return Path(path)
