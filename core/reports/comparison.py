"""Part B's strategy comparison: ``comparison.csv``, ``comparison.md``, ``accuracy_curves.png`` and ``comparison.html``.

One :class:`ComparisonRow` per run (a strategy's Part B run, or a Part A run's row). ``comparison.md`` is for a
write-up; the page answers at a glance which strategy won on the test set and by how much over Part A from
scratch, what each trained and how long an epoch took, with links to each run's files and evaluation page.
:mod:`core.finetune.compare` runs the strategies and hands over the rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.reports.evaluation_page import PAGE as EVALUATION
from core.reports.pages import (
    bullets,
    callout,
    count_text,
    esc,
    href,
    image,
    link,
    percent_text,
    render_page,
    save_figure,
    section,
    table,
    write_page,
)
from core.runfiles import write_text

if TYPE_CHECKING:
    from core.finetune import PartBConfig

PAGE = "comparison.html"
EVAL_PAGE = Path("eval") / EVALUATION  # where partA_evaluate writes for <run>/best.pt
WHAT_TRAINS = {"head": "the new classifier head only", "top-k": "the head and the top k backbone blocks",
               "full": "every layer", "gradual": "the head, then one more block from the top every few epochs",
               "scratch": "every layer, from random initialisation (Part A)"}


COMPARISON_COLUMNS = ("run", "kind", "strategy", "test_acc", "best_val_acc", "epochs_to_best",
                      "trainable_params", "final_trainable_params", "total_params", "seconds_per_epoch",
                      "epochs_run")


@dataclass(frozen=True)
class ComparisonRow:
    run: str
    kind: str  # "partB" | "partA"
    strategy: str
    test_acc: float | None
    best_val_acc: float
    epochs_to_best: int
    trainable_params: int  # at the first epoch
    final_trainable_params: int  # at the last epoch (differs for gradual)
    total_params: int
    seconds_per_epoch: float
    epochs_run: int
    curve: tuple[tuple[int, float, float], ...] = ()  # (epoch, train_acc, val_acc)
    run_dir: Path | None = None  # the run's folder (links on comparison.html)

    def values(self) -> list[Any]:
        return [getattr(self, c) for c in COMPARISON_COLUMNS]


def _trainable(row: ComparisonRow, fmt: Callable[[int], str] = count_text) -> str:
    """The trainable parameters, ``12,810`` or, when unfreezing grew them, ``12,810 → 1,218,890``."""
    start, end = fmt(row.trainable_params), fmt(row.final_trainable_params)
    return start if row.trainable_params == row.final_trainable_params else f"{start} → {end}"


def _share(row: ComparisonRow) -> str:
    return percent_text(row.final_trainable_params / row.total_params) if row.total_params else ""


def _links(row: ComparisonRow, page_dir: Path) -> str:
    if row.run_dir is None:
        return ""
    out = [link(Path(row.run_dir), page_dir, "folder", code=False)]
    if (Path(row.run_dir) / "test_metrics.json").is_file():
        out.append(link(Path(row.run_dir) / "test_metrics.json", page_dir, "test\u00a0metrics", code=False))
    if (Path(row.run_dir) / EVAL_PAGE).is_file():
        out.append(f'<a href="{href(Path(row.run_dir) / EVAL_PAGE, page_dir)}">evaluation</a>')
    return " · ".join(out)


def _summary(rows: Sequence[ComparisonRow]) -> str:
    tested = [r for r in rows if r.test_acc is not None]
    if not tested:
        return callout("<p>No run has a test accuracy (every run was stopped before its test pass).</p>", "warn")
    best = max(tested, key=lambda r: r.test_acc)
    tied = [r for r in tested if r.test_acc == best.test_acc]
    value = f'<span class="best-value">{percent_text(best.test_acc)}</span>'
    if len(tied) > 1:
        lines = [f"<b>Best test accuracy: {value}</b>, a tie between {esc(', '.join(r.strategy for r in tied))}: "
                 "the test set cannot tell them apart."]
    else:
        lines = [f"<b>Best test accuracy: {esc(best.strategy)}</b> ({esc(best.run)}), {value}, training "
                 f"{_share(best)} of the parameters ({_trainable(best)} of {count_text(best.total_params)})."]
    scratch = [r for r in tested if r.kind == "partA"]
    if scratch and best.kind != "partA" and len(tied) == 1:
        a = scratch[0]
        lines.append(f"Part A from scratch ({esc(a.run)}): {percent_text(a.test_acc)}, "
                     f"{100 * (best.test_acc - a.test_acc):+.1f} points for {esc(best.strategy)}.")
    cheapest = min((r for r in tested if r.kind != "partA"), key=lambda r: r.seconds_per_epoch, default=None)
    if cheapest is not None and cheapest is not best:
        lines.append(f"Fastest per epoch: {esc(cheapest.strategy)} ({cheapest.seconds_per_epoch:.1f}\u00a0s, "
                     f"test {percent_text(cheapest.test_acc)}) vs {best.seconds_per_epoch:.1f}\u00a0s for "
                     f"{esc(best.strategy)}.")
    lines.append("Test accuracy is on the held-out test split (val/), never used to pick epochs or settings; "
                 "validation accuracy picked each run's best epoch.")
    return callout(bullets(lines), "good")


def render_comparison(rows: Sequence[ComparisonRow], run_dir: Path, *, figure: Path | None = None,
                      cfg: PartBConfig | None = None, files: Sequence[Path] = ()) -> str:
    """The page as HTML (see :func:`write_comparison_page`)."""
    run_dir = Path(run_dir)
    tested = [r.test_acc for r in rows if r.test_acc is not None]
    top = max(tested) if tested else None
    columns = ["run", "strategy", "what trains", "test acc", "best val acc", "epochs to best", "trainable params",
               "trainable share", "total params", "s / epoch", "files"]
    trains = dict(WHAT_TRAINS)
    if cfg is not None:
        trains["top-k"] = f"the head and the top {cfg.k} backbone block{'s' * (cfg.k != 1)}"
        trains["gradual"] = f"the head, then one more block from the top every {cfg.unfreeze_every} epoch(s)"
    body_rows = [[esc(r.run), esc(r.strategy), esc(trains.get(r.strategy, "")), percent_text(r.test_acc),
                  percent_text(r.best_val_acc), f"{r.epochs_to_best} of {r.epochs_run}", _trainable(r), _share(r),
                  count_text(r.total_params), f"{r.seconds_per_epoch:.1f}", _links(r, run_dir)] for r in rows]
    numeric = [False, False, False, True, True, True, True, True, True, True, False]
    classes = ["best" if top is not None and r.test_acc == top else "" for r in rows]
    body = [_summary(rows),
            section("Strategies side by side", table(columns, body_rows, numeric=numeric, row_classes=classes,
                                                     max_columns=99), anchor="table")]
    if figure is not None and Path(figure).is_file():
        body.append(section("Accuracy per epoch", image(Path(figure), run_dir, "Validation (solid) and train "
                                                        "(dashed) accuracy per epoch, one colour per run."),
                            anchor="curves"))
    if files:
        body.append(section("Files", bullets(link(f, run_dir) for f in files), anchor="files"))
    setup = ""
    if cfg is not None:
        size = cfg.image_size or "the weights' own"
        weights = "random init" if cfg.weights is None and cfg.weights_file is None else (
            str(cfg.weights_file.name) if cfg.weights_file else f"torchvision {cfg.weights}")
        epochs = f"{cfg.train.epochs} epoch{'s' * (cfg.train.epochs != 1)}"
        setup = (f"backbone <b>{esc(cfg.arch)}</b> ({esc(weights)}) · {esc(size)}\u00a0px · {epochs}"
                 f" · lr {cfg.train.lr:g} (backbone ×{cfg.backbone_lr_mult:g}) · ")
    nav = [(href(Path(r.run_dir) / EVAL_PAGE, run_dir), f"evaluation of {r.run}") for r in rows
           if r.kind == "partA" and r.run_dir is not None and (Path(r.run_dir) / EVAL_PAGE).is_file()]
    return render_page(title=f"Part B comparison: {run_dir.name}", nav=nav, body=body,
                       subtitle=f"{setup}{len(rows)} runs · generated {datetime.now():%Y-%m-%d %H:%M}")


def write_comparison_page(rows: Sequence[ComparisonRow], run_dir: Path, **kwargs: Any) -> Path:
    """Write ``<run_dir>/comparison.html`` atomically; keyword arguments as :func:`render_comparison`."""
    return write_page(Path(run_dir) / PAGE, render_comparison(rows, Path(run_dir), **kwargs))


def write_comparison(rows: list[ComparisonRow], run_dir: Path | str, *, cfg: PartBConfig | None = None
                     ) -> dict[str, Path]:
    """``comparison.csv`` (all columns), ``comparison.md`` (readable table), ``accuracy_curves.png`` and
    ``comparison.html`` (``cfg`` adds the backbone and settings to its header)."""
    run_dir = Path(run_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COMPARISON_COLUMNS)
    writer.writerows(r.values() for r in rows)
    paths = {"csv": run_dir / "comparison.csv", "md": run_dir / "comparison.md", "png": run_dir / "accuracy_curves.png"}
    write_text(paths["csv"], buf.getvalue())
    lines = ["| run | strategy | test acc | best val acc | epochs to best | trainable params | total params "
             "| s/epoch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.run} | {r.strategy} | {_pct(r.test_acc)} | {_pct(r.best_val_acc)} | {r.epochs_to_best} | "
              f"{_trainable(r, '{:,}'.format)} | {r.total_params:,} | {r.seconds_per_epoch:.1f} |" for r in rows]
    write_text(paths["md"], "\n".join(lines) + "\n")
    plot_accuracy_curves(rows, paths["png"])
    paths["html"] = write_comparison_page(rows, run_dir, figure=paths["png"], cfg=cfg,
                                          files=[paths["csv"], paths["md"], paths["png"]])
    return paths


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def plot_accuracy_curves(rows: list[ComparisonRow], path: Path) -> Path:
    """Validation (solid) and train (dashed) accuracy per epoch, one colour per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        colour = f"C{i % 10}"
        epochs = [e for e, _, _ in row.curve]
        ax.plot(epochs, [100 * v for _, _, v in row.curve], "-o", color=colour, ms=3,
                label=f"{row.run} (test {_pct(row.test_acc)})")
        ax.plot(epochs, [100 * t for _, t, _ in row.curve], "--", color=colour, alpha=0.5)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy vs epoch: validation (solid), train (dashed)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max((e for row in rows for e, _, _ in row.curve), default=1)
    ax.set_xlim(0.8, last + 0.2)  # one epoch still gets a readable axis (not 0.95..1.05)
    if last <= 20:
        ax.set_xticks(range(1, last + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
