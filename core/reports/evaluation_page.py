"""``evaluation.html``: the Part A evaluation as one page a person reads (test metrics and every figure).

``partA_evaluate`` writes six PNGs and three JSON files; the page puts them in reading order with the numbers
that explain them, says which attribution method actually ran (a warning when it is not guided backprop on the
trained model), and names skipped figures with the reason instead of leaving gaps. It links back to the sweep
report or run folder the checkpoint came from, which links here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.reports.pages import (
    bullets,
    callout,
    cards,
    count_text,
    esc,
    href,
    image,
    link,
    percent_text,
    render_page,
    section,
    table,
    write_page,
)

PAGE = "evaluation.html"
FILES = {"test_metrics.json": "accuracy, per-class accuracy, confusion matrix (counts and row-normalised)",
         "predictions_grid.json": "the grid's images: path, true and predicted class, confidence",
         "guided_backprop_conv5.json": "the explained image, the CONV5 neurons and the attribution method"}


def _confused_with(counts: Sequence[Sequence[int]], names: Sequence[str], row: int) -> str:
    """The class this true class is most often predicted as (off the diagonal), with the count."""
    off = [(n, j) for j, n in enumerate(counts[row]) if j != row and n > 0]
    if not off:
        return '<span class="muted">–</span>'
    n, j = max(off)
    return f"{esc(names[j])} ({n})"


def _per_class(metrics: Any) -> str:
    names = metrics.class_names
    worst = min((a, i) for i, a in enumerate(metrics.per_class_accuracy) if a is not None)[1] \
        if any(a is not None for a in metrics.per_class_accuracy) else None
    rows, classes = [], []
    for i, name in enumerate(names):
        correct = metrics.confusion_counts[i][i]
        rows.append([esc(name), str(metrics.per_class_count[i]), str(correct),
                     percent_text(metrics.per_class_accuracy[i]),
                     _confused_with(metrics.confusion_counts, names, i)])
        classes.append("worst" if i == worst else "")
    return table(["class", "test images", "correct", "accuracy", "most common wrong prediction (images)"], rows,
                 numeric=[False, True, True, True, False], row_classes=classes, max_columns=99)


def _back_link(checkpoint: Path, page_dir: Path) -> list[tuple[str, str]]:
    sweep_report = checkpoint.parent / "report.html"
    if sweep_report.is_file():
        return [(href(sweep_report, page_dir), "← sweep report")]
    return [(href(checkpoint.parent, page_dir) + "/", "← run folder")]


def render_evaluation(*, out_dir: Path, checkpoint: Path, data_dir: Path, metrics: Any, grid: Mapping[str, Any],
                      explanations: Mapping[str, Any], params: int | None = None,
                      train_metrics: Mapping[str, Any] | None = None, image_size: int | None = None) -> str:
    """The page as HTML (see :func:`write_evaluation_page`)."""
    out_dir = Path(out_dir)
    train_metrics = dict(train_metrics or {})
    acc_card = (f'<span class="test-accuracy">{percent_text(metrics.accuracy)}</span>',
                f"{metrics.n_correct} of {metrics.n} test images")
    items = [("test accuracy", *acc_card), ("classes", str(len(metrics.class_names)), "")]
    if params is not None:
        items.append(("parameters", count_text(params), "learned weights"))
    if isinstance(train_metrics.get("val_acc"), (int, float)):
        items.append(("validation accuracy", percent_text(train_metrics["val_acc"]),
                      f"at training (epoch {train_metrics.get('epoch', '?')}), used for selection"))
    if image_size:
        items.append(("input size", f"{image_size}×{image_size}\u00a0px", ""))
    body = [cards(items)]
    warnings = [f"Explanations skipped: {esc(explanations['skipped'])}"] if explanations.get("skipped") else []
    if explanations.get("warning"):
        warnings.append(f"Guided backprop: {esc(explanations['warning'])} (the figure is labelled "
                        f"{esc(explanations.get('label', ''))}).")
    warnings += [f"Prediction grid: {esc(n)}" for n in grid.get("notes", ())]
    if warnings:
        body.append(callout(bullets(warnings), "warn"))

    def fig(name: str, caption: str) -> str:
        path = out_dir / name
        return image(path, out_dir, caption) if path.is_file() else ""

    confusion = fig("confusion_matrix.png", "Rows = true class, columns = predicted class; colour = share of the "
                                            "row, numbers = images.")
    body.append(section("Test metrics", f'<div class="grid2"><div>{_per_class(metrics)}</div>{confusion}</div>',
                        anchor="metrics"))
    grid_rows = grid.get("rows", ())
    right = sum(bool(r.get("correct")) for r in grid_rows)
    body.append(section("Predictions on test images", (
        f"<p>{len(grid_rows)} test images, chosen at random per class with the evaluation's seed; "
        f"{right} of {len(grid_rows)} predicted correctly.</p>" if grid_rows else "")
        + '<div class="grid2">'
        + fig("predictions_grid.png", "One row per true class: green = correct, red = wrong, with the "
                                      "predicted class and its confidence.")
        + fig("gradcam.png", "Grad-CAM on the last convolution block (CONV5) for the predicted class, same "
                             "images: where the evidence for the prediction lies.") + "</div>",
        anchor="predictions"))
    filters = fig("filters_conv1.png", "The learned CONV1 filters (RGB, each scaled to its own range).")
    maps = fig("feature_maps_conv1.png", "CONV1 feature maps of one random test image.")
    body.append(section("What the first layer learned",
                        f'<div class="grid2">{filters}{maps}</div>' if filters or maps else "", anchor="filters"))
    method = esc(explanations.get("label", "guided backprop"))
    neurons = esc(explanations.get("neurons", ""))
    body.append(section(f"CONV5 neurons ({method})", fig(
        "guided_backprop_conv5.png", f"{neurons} CONV5 neurons (the most active channels) on one test image, by "
        f"{method}: the pixels each neuron responds to."), anchor="neurons"))
    files = [f"{link(out_dir / n, out_dir)} – {esc(d)}" for n, d in FILES.items() if (out_dir / n).is_file()]
    files.append(f"{link(checkpoint, out_dir)} – the evaluated checkpoint")
    body.append(section("Files", bullets(files), anchor="files"))
    subtitle = (f"checkpoint {link(checkpoint, out_dir)} · test split <code>val/</code> of "
                f"{esc(data_dir)} (never used to select models) · generated {datetime.now():%Y-%m-%d %H:%M}")
    return render_page(title=f"Evaluation: {checkpoint.parent.name}/{checkpoint.name}", subtitle=subtitle,
                       body=body, nav=_back_link(checkpoint, out_dir))


def write_evaluation_page(out_dir: Path, **kwargs: Any) -> Path:
    """Write ``<out_dir>/evaluation.html`` atomically; keyword arguments as :func:`render_evaluation`."""
    return write_page(Path(out_dir) / PAGE, render_evaluation(out_dir=Path(out_dir), **kwargs))
