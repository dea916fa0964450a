"""``report.html``: the page a person reads after a sweep, offline, in any browser at 1280–1600 px.

Its order follows the questions people ask: did anything fail, which trial won and with what (links to its
folder, ``best.pt`` and its evaluation page), what the sweep says (observations with their support, anecdotal
ones apart), then the interactive figures, the top runs, every trial, the PNGs, the files and the mapping notes.
A sweep without any result shows the failure summary and the tables, never empty placeholder figures.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.reports.analysis import Observation, SweepAnalysis, analyse, fmt, label
from core.reports.evaluation_page import PAGE as EVAL_PAGE
from core.reports.pages import (
    bullets,
    callout,
    cards,
    count_text,
    duration_text,
    esc,
    href,
    image,
    key_values,
    link,
    plotly_figure,
    render_page,
    section,
    table,
    write_page,
)
from core.reports.results import TrialRecord, best_record, pareto_front, ranked, write_best, write_results_csv
from core.reports.sweep_plots import write_sweep_figures
from core.runfiles import read_yaml
from core.train import MONITORS

if TYPE_CHECKING:
    from core.sweep import SweepConfig

logger = logging.getLogger(__name__)

TOP_N = 10
CAPTIONS = {
    "parallel_coordinates": "One line per trial with a result through every searched parameter and the metric. "
                            "Drag along an axis to keep only the lines inside that range; drag an axis title "
                            "to reorder.",
    "importance": "Importance = share of the metric's variance a parameter explains alone (adjusted ε²); "
                  "correlation = Pearson r with the value (or with each categorical value). Hover for the "
                  "trial counts behind each bar.",
    "metric_vs_time": "The sweep metric against the time each trial was created; line = best so far. "
                      "Hover a point for the trial's parameters.",
    "optimization_history": "Metric by trial number (Optuna's history plot); line = best so far.",
    "learning_curves": "The metric per epoch for every trial; orange = stopped early by hyperband.",
}
STATIC_CAPTIONS = {
    "metric_vs_time": "Sweep metric against the time each trial was created; line = best so far.",
    "parallel_coordinates": "One line per trial with a result through every searched parameter and the metric.",
    "importance": "Importance = share of the metric's variance a parameter explains alone (ε²); correlation = "
                  "Pearson r with the value (or with each categorical value).",
    "optimization_history": "Metric by trial number; line = best so far.",
    "learning_curves": "Metric per epoch for every trial; orange = stopped early by hyperband.",
    "cost_front": "The metric against FLOPs and parameters per image (log scale); red, numbered = the "
                  "accuracy–cost front: no other trial is at least as good on the metric, FLOPs and parameters "
                  "at once and better on one (a red point may look beaten in one panel: it is cheaper in the other).",
}
WIDE = ("parallel_coordinates", "importance", "cost_front")  # span both columns of the static figure grid
OTHER_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "test_acc", "best_epoch")  # shown if reported
FILES = {"results.csv": "one row per trial: every metric, parameter, count and time; pareto: on the front",
         "best.pt": "the best trial's checkpoint (rebuilds the model on its own): the trial's epoch with the lowest "
                    "val_loss (--monitor; Part A's default) or the highest val_acc",
         "best_config.yaml": "the best trial's parameters and resolved training config",
         "trials/": "one run folder per trial (metrics.jsonl, checkpoints, trial.json)"}
TITLES = {"parallel_coordinates": "Parallel coordinates", "importance": "Parameter importance and correlation",
          "metric_vs_time": "Metric vs time", "optimization_history": "Optimisation history",
          "learning_curves": "Learning curves"}


def evaluation_page(sweep_dir: Path, best: TrialRecord | None) -> Path | None:
    """The best trial's evaluation page, if ``partA_evaluate`` has written one (for the sweep's ``best.pt``
    or the trial's own checkpoint)."""
    candidates = [Path(sweep_dir) / "eval" / EVAL_PAGE]
    if best is not None and best.run_dir is not None:
        candidates.append(Path(best.run_dir) / "eval" / EVAL_PAGE)
    return next((p for p in candidates if p.is_file()), None)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else "(no message)"


def _failures(records: Sequence[TrialRecord], page_dir: Path) -> str:
    failed = [r for r in records if r.state == "FAIL"]
    if not failed:
        return ""
    groups: dict[str, list[TrialRecord]] = {}
    for r in failed:
        groups.setdefault(_first_line(r.error or ""), []).append(r)
    first = failed[0]
    where = link(first.run_dir, page_dir) if first.run_dir else "(no folder recorded)"
    if first.run_dir is not None and (Path(first.run_dir) / "trial.json").is_file():
        where += ", " + link(Path(first.run_dir) / "trial.json", page_dir, "trial.json")
    head = (f"<h2>{len(failed)} of {len(records)} trials failed</h2><p>First error: trial {first.number}, "
            f"folder {where}</p><pre>{esc(first.error or '(no message recorded)')}</pre>")
    def folders(rs: Sequence[TrialRecord]) -> str:
        return ", ".join(link(r.run_dir, page_dir, str(r.number)) for r in rs[:12]) + (" …" if len(rs) > 12 else "")

    if len(groups) > 1:
        rows = [[esc(msg), str(len(rs)), folders(rs)] for msg, rs in groups.items()]
        head += table(["error (first line)", "trials", "trial folders"], rows, numeric=[False, True, False])
    elif len(failed) > 1:
        head += f"<p>All {len(failed)} failed with this error; trial folders: {folders(failed)}.</p>"
    return callout(head, "bad")


def _best(best: TrialRecord | None, cfg: SweepConfig, page_dir: Path, records: Sequence[TrialRecord]) -> str:
    if best is None:
        running = sum(r.state in ("RUNNING", "WAITING") for r in records)
        why = f"{running} still running" if running else "none finished"
        return callout(f"<h2>No result yet</h2><p>No trial has a {esc(cfg.metric.name)} value ({len(records)} "
                       f"trials, {why}). Figures appear once a trial finishes.</p>", "warn")
    metric = cfg.metric.name
    params, flops = _size(best)
    items = [(f"best {metric} (trial {best.number})", f'<span class="best-value">{fmt(best.objective)}</span>',
              esc(f"{cfg.metric.goal}, {best.state.lower()}")),
             ("parameters", params, "learned weights"), ("FLOPs per image", flops, "one forward pass"),
             ("epochs", esc(best.result.epochs_run if best.result else ""), ""),
             ("training time", duration_text(best.seconds), "")]
    for k in ("test_acc", "val_loss"):
        if k in best.metrics and k != metric:
            items.append((k, fmt(best.metrics[k]), "not used for selection" if k.startswith("test") else ""))
    searched = {p.name for p in cfg.searched}
    values = key_values((k, esc(label(v))) for k, v in best.hyperparameters.items() if k in searched)
    fixed = ", ".join(f"{esc(p.name)} = {esc(label(p.values[0]))}" for p in cfg.parameters if p.is_constant)
    ev = evaluation_page(page_dir, best)
    rule = MONITORS.get(trial_config(best, "train").get("monitor"))
    rule = f" ({esc(rule)}, its --monitor)" if rule else ""
    files = [f"trial folder {link(best.run_dir, page_dir)}", f"checkpoint {link(page_dir / 'best.pt', page_dir)}{rule}",
             f"configuration {link(page_dir / 'best_config.yaml', page_dir)}"]
    if ev is not None:
        files.insert(0, f'<b><a href="{href(ev, page_dir)}">evaluation page</a></b> (test metrics, prediction grid, '
                        "Grad-CAM, filters, guided backprop)")
    else:
        command = ["python", "experiments/partA_evaluate.py", "--checkpoint", str(Path(page_dir, "best.pt"))]
        data_dir = trial_config(best, "data").get("data_dir")
        command += ["--data-dir", str(data_dir)] if data_dir else []
        files.append(f"evaluate it: <code>{esc(shlex.join(command))}</code>, then rerun the sweep command (it "
                     "only rebuilds this page) to link the evaluation here")
    body = (f"<h2>Best trial: {best.number}</h2>" + cards(items)
            + (f"<h3>Parameters</h3>{values}" if searched else "")
            + (f'<p class="muted">Fixed for every trial: {fixed}</p>' if fixed else "") + bullets(files))
    return callout(body, "good")


def trial_config(r: TrialRecord, part: str) -> dict:
    """One part (``data``, ``train``) of the trial's resolved ``config.yaml``; empty when it cannot be read."""
    path = Path(r.run_dir) / "config.yaml" if r.run_dir is not None else None
    try:
        doc = (read_yaml(path) or {}) if path is not None and path.is_file() else {}
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return {}
    found = (doc.get("config", doc) if isinstance(doc, dict) else {}).get(part)
    return found if isinstance(found, dict) else {}


def _observation(o: Observation) -> str:
    badge = (f'<span class="badge anecdotal" title="rests on fewer than 3 trials">anecdotal: {o.support} '
             f"trial{'s' * (o.support != 1)}</span>" if o.anecdotal else
             f'<span class="badge">{o.support} trials</span>' if o.claim else "")
    return f"{esc(o.text)}{badge}"


def _observations(analysis: SweepAnalysis) -> str:
    solid = [o for o in analysis.observations if not o.anecdotal]
    weak = [o for o in analysis.observations if o.anecdotal]
    body = bullets((_observation(o) for o in solid), "obs")
    if weak:
        body += ("<h3>Anecdotal (fewer than 3 trials behind each; run more trials before trusting them)</h3>"
                 + bullets((_observation(o) for o in weak), "obs"))
    return body


def _size(r: TrialRecord) -> list[str]:
    """Formatted parameter count and FLOPs of a trial's model (blank before its run counted them)."""
    res = r.result
    return [count_text(res.parameter_count if res else None), count_text(res.flops if res else None, "FLOPs")]


def _state(r: TrialRecord) -> str:
    return f'<span class="state-{esc(r.state.lower())}">{esc(r.state.lower())}</span>'


def _top_table(done: Sequence[TrialRecord], cfg: SweepConfig, page_dir: Path) -> str:
    names = [p.name for p in cfg.searched]
    columns = ["trial", cfg.metric.name, *names, "params", "FLOPs", "time"]
    rows = [[link(r.run_dir, page_dir, str(r.number)), fmt(r.objective),
             *[esc(label(r.hyperparameters.get(n))) for n in names], *_size(r), duration_text(r.seconds)]
            for r in done]
    numeric = [True, True, *[False] * len(names), True, True, True]
    return table(columns, rows, numeric=numeric, row_classes=["best"] + [""] * (len(rows) - 1))


def _front(records: Sequence[TrialRecord], cfg: SweepConfig, figures: Mapping[str, Path], page_dir: Path) -> str:
    """The accuracy–cost front: its figure and one row per trial on it, cheapest first."""
    front = sorted(pareto_front(records, cfg), key=lambda r: r.result.flops)
    if not front:
        return ""
    rows = [[link(r.run_dir, page_dir, str(r.number)), fmt(r.objective), *_size(r)] for r in front]
    fig = image(figures["cost_front"], page_dir, esc(STATIC_CAPTIONS["cost_front"])) if "cost_front" in figures else ""
    return fig + table(["trial", cfg.metric.name, "params", "FLOPs"], rows, numeric=[True] * 4)


def _all_tables(records: Sequence[TrialRecord], cfg: SweepConfig, page_dir: Path) -> str:
    metric = cfg.metric.name
    reported = {k for r in records for k in r.metrics}
    others = [k for k in OTHER_METRICS if k in reported and k != metric]  # the rest: results.csv
    columns = ["trial", "state", metric, *others, "params", "FLOPs", "epochs", "started", "time", "folder"]
    day = {r.started_at.date() for r in records if r.started_at is not None}
    stamp = "%H:%M:%S" if len(day) <= 1 else "%m-%d %H:%M"
    rows, errors = [], {}
    for i, r in enumerate(records):
        rows.append([str(r.number) + (f" (re-run of {r.retry_of})" if r.retry_of is not None else ""), _state(r),
                     fmt(r.objective), *[fmt(r.metrics.get(k)) if k in r.metrics else "" for k in others],
                     *_size(r), esc(r.result.epochs_run if r.result else ""),
                     esc(r.started_at.strftime(stamp) if r.started_at else ""), duration_text(r.seconds),
                     link(r.run_dir, page_dir, Path(r.run_dir).name) if r.run_dir else ""])
        if r.error:
            errors[i] = f"<pre>{esc(r.error)}</pre>"
    numeric = [True, False, True, *[True] * len(others), True, True, True, False, True, False]
    out = ("<h3>Results</h3><p class='muted'>Every metric and timestamp: results.csv.</p>"
           + table(columns, rows, numeric=numeric, after_rows=errors, max_columns=99))
    names = [p.name for p in cfg.searched]
    if names:
        prow = [[str(r.number), fmt(r.objective),
                 *[esc(label(r.hyperparameters[n])) if n in r.hyperparameters else "" for n in names]] for r in records]
        out += "<h3>Parameters</h3>" + table(["trial", metric, *names], prow, key_columns=2,
                                              numeric=[True, True, *[False] * len(names)])
    return out


def render_report(*, cfg: SweepConfig, sweep_name: str, backend: str, records: Sequence[TrialRecord],
                  analysis: SweepAnalysis, figures: Mapping[str, Path], notes: Sequence[str] = (),
                  outputs: Mapping[str, Path] | None = None, page_dir: Path = Path(".")) -> str:
    """The report as an HTML string; links are relative to ``page_dir`` (the folder of report.html)."""
    from core.reports.interactive import interactive_figures

    page_dir = Path(page_dir)
    done = ranked(records, cfg)
    best = done[0] if done else None
    states = ", ".join(f"{n} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
                       if (n := sum(r.state == s for r in records)))
    subtitle = (f"backend <b>{esc(backend)}</b> · method <b>{esc(cfg.method)}</b> · metric "
                f"<b>{esc(cfg.metric.name)}</b> ({esc(cfg.metric.goal)}) · {len(records)} trials"
                f"{' (' + esc(states) + ')' if states else ''} · generated {datetime.now():%Y-%m-%d %H:%M}")
    live = interactive_figures(records, analysis, cfg) if done else {}
    explore = "".join(f"<h3>{esc(TITLES[k])}</h3>" + plotly_figure(fig, f"plot-{k}", esc(CAPTIONS[k]))
                      for k, fig in live.items())
    static = "".join(image(p, page_dir, esc(STATIC_CAPTIONS.get(k, k)), wide=k in WIDE) for k, p in figures.items()
                     if k != "cost_front")
    ev = evaluation_page(page_dir, best)
    nav = [(href(ev, page_dir), "evaluation of the best trial")] if ev else []
    if outputs and "results.csv" in outputs:
        nav.append((href(outputs["results.csv"], page_dir), "results.csv"))
    files = ""
    if outputs:
        files = bullets(f"{link(v, page_dir)} – {esc(FILES.get(k, 'static figure' if k.endswith('.png') else k))}"
                        for k, v in outputs.items() if k != "report.html")
    body = [
        _failures(records, page_dir),
        _best(best, cfg, page_dir, records),
        section("What the sweep says", _observations(analysis), anchor="observations"),
        section("Accuracy–cost front", _front(records, cfg, figures, page_dir), anchor="front"),
        section("Explore (interactive)", explore, anchor="explore"),
        section(f"Top {min(TOP_N, len(done))} runs by {cfg.metric.name}",
                _top_table(done[:TOP_N], cfg, page_dir) if done else "", anchor="top"),
        section("All trials", _all_tables(records, cfg, page_dir) if records else "", anchor="trials"),
        section("Static figures (PNG, for the README and papers)",
                f'<div class="grid2">{static}</div>' if static else "", anchor="figures"),
        section("Files", files, anchor="files"),
        section("Notes", bullets(esc(n) for n in notes), anchor="notes"),
    ]
    return render_page(title=f"Sweep {sweep_name}", subtitle=subtitle, body=body, nav=nav, interactive=bool(live))


def write_report(path: Path, **kwargs: Any) -> Path:
    """Write ``report.html`` atomically; keyword arguments as :func:`render_report` (``page_dir`` = its folder)."""
    return write_page(path, render_report(page_dir=Path(path).parent, **kwargs))


def write_sweep_outputs(cfg: SweepConfig, records: Sequence[TrialRecord], *, sweep_dir: Path, sweep_name: str,
                        backend: str, notes: Sequence[str] = ()) -> dict[str, Path]:
    """results.csv, best.pt, best_config.yaml, figures and report.html in ``sweep_dir``."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {"results.csv": write_results_csv(sweep_dir / "results.csv", records, cfg)}
    outputs.update(write_best(sweep_dir, best_record(records, cfg), cfg, sweep_name=sweep_name))
    analysis = analyse(records, cfg)
    figures = write_sweep_figures(records, analysis, cfg, sweep_dir)
    outputs.update({f"{k}.png": v for k, v in figures.items()})
    outputs["trials/"] = sweep_dir / "trials"
    outputs["report.html"] = sweep_dir / "report.html"
    write_report(sweep_dir / "report.html", cfg=cfg, sweep_name=sweep_name, backend=backend, records=records,
                 analysis=analysis, figures=figures, notes=notes, outputs=outputs)
    return outputs
