"""Matplotlib figures for Part A evaluation: prediction grid, Grad-CAM grid, filters, feature maps,
guided backprop, confusion matrix.

Figures draw the numbers they are given and compute none (scaling a map for display aside), on an Agg canvas
with the object-oriented API (no ``pyplot`` global state, safe in threads and under pytest); every PNG is
written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.reports import save_figure

CORRECT_COLOUR = "#1a9850"  # green
WRONG_COLOUR = "#d73027"  # red
WARNING_COLOUR = "#b2182b"
TICK, CROSS = "\u2713", "\u2717"  # ✓ ✗ (both in DejaVu Sans, matplotlib's default font)

ImageLike = torch.Tensor | np.ndarray


def _hwc_uint8(image: ImageLike) -> np.ndarray:
    """uint8 ``[3, H, W]`` tensor (channels first, like ``dataset.uint8(i)``) or ``[H, W, 3]`` array
    → ``[H, W, 3]`` uint8 array."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor [3, H, W], got shape {list(image.shape)}")
        a = image.detach().cpu().numpy().transpose(1, 2, 0)
    else:
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[-1] not in (1, 3):
            raise ValueError(f"expected an image array [H, W, 3], got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (unnormalised pixels), got dtype {a.dtype}")
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def _unit(a: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] for display; a constant map becomes zeros."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _signed_unit(a: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Zero at mid-grey, scaled by a high percentile of the magnitude and clipped to [0, 1].

    Gradients are sparse with a few extreme pixels; scaling by the maximum would leave the rest grey.
    """
    a = np.asarray(a, dtype=np.float64)
    m = float(np.percentile(np.abs(a), percentile))
    m = m if m > 0 else float(np.abs(a).max())
    return np.clip(a / (2 * m) + 0.5, 0.0, 1.0) if m > 0 else np.full_like(a, 0.5)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 CPU copy of a tensor, or the array as given."""
    return values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass(frozen=True)
class GridCell:
    """One image of the prediction grid: where it goes and what the model said about it."""

    image: ImageLike  # uint8 [3, H, W], unnormalised (``dataset.uint8(i)``)
    true_label: int
    pred_label: int
    confidence: float  # probability of ``pred_label``
    row: int  # the class row (usually ``true_label``)
    col: int  # 0 .. per_class - 1

    @property
    def correct(self) -> bool:
        return self.true_label == self.pred_label


def _grid(cells: Sequence[GridCell], class_names: Sequence[str], per_class: int, notes: Sequence[str],
          title: str, heatmaps: torch.Tensor | np.ndarray | None, cell_inches: float) -> Figure:
    rows = len(class_names)
    if not cells:
        raise ValueError("no grid cells to draw: the selection is empty")
    if heatmaps is not None and len(heatmaps) != len(cells):
        raise ValueError(f"one heatmap per cell needed: {len(cells)} cells, {len(heatmaps)} heatmaps")
    for cell in cells:
        if not (0 <= cell.row < rows and 0 <= cell.col < per_class):
            raise ValueError(f"cell at (row {cell.row}, col {cell.col}) is outside the {rows}x{per_class} grid")
        for label in (cell.true_label, cell.pred_label):
            if not 0 <= label < len(class_names):
                raise ValueError(f"label {label} is not a class index in [0, {len(class_names)})")
    footer = len(notes) * 0.22 + 0.1
    head = 0.25 + 0.22 * (title.count("\n") + 1) + 0.4  # margin + title lines + the first row's cell titles
    fig = _new_figure(per_class * cell_inches + 1.2, rows * (cell_inches + 0.45) + head + footer)
    top = 1 - head / fig.get_figheight()
    bottom = (footer + 0.05) / fig.get_figheight()
    axes = fig.subplots(rows, per_class, squeeze=False,
                        gridspec_kw={"left": 1.1 / fig.get_figwidth(), "right": 0.98, "top": top,
                                     "bottom": bottom, "hspace": 0.42, "wspace": 0.08})
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / fig.get_figheight(), va="top")
    for r in range(rows):
        for c in range(per_class):
            ax = axes[r][c]
            _bare(ax)
            if c == 0:
                ax.set_ylabel(class_names[r], fontsize=9, rotation=0, ha="right", va="center", labelpad=6)
            for spine in ax.spines.values():
                spine.set_visible(False)
    for i, cell in enumerate(cells):
        ax = axes[cell.row][cell.col]
        ax.imshow(_hwc_uint8(cell.image))
        if heatmaps is not None:
            ax.imshow(_unit(np.asarray(heatmaps[i])), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        colour = CORRECT_COLOUR if cell.correct else WRONG_COLOUR
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
        mark = TICK if cell.correct else CROSS
        ax.set_title(f"true: {class_names[cell.true_label]}\n{mark} pred: {class_names[cell.pred_label]} "
                     f"({cell.confidence:.0%})", fontsize=7.5, color=colour, pad=3)
    filled = {(cell.row, cell.col) for cell in cells}
    for r in range(rows):
        for c in range(per_class):
            if (r, c) not in filled:
                axes[r][c].text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="grey",
                                transform=axes[r][c].transAxes)
    for j, note in enumerate(notes):
        fig.text(0.02, (footer - 0.2 - j * 0.22) / fig.get_figheight(), note, fontsize=8, color=WARNING_COLOUR)
    return fig


def plot_prediction_grid(cells: Sequence[GridCell], class_names: Sequence[str], path: Path | str, *,
                         per_class: int = 3, notes: Sequence[str] = (), title: str | None = None,
                         cell_inches: float = 1.6, dpi: int = 100) -> Path:
    """Rows = classes, ``per_class`` test images each; green frame + ✓ when right, red frame + ✗ when wrong.

    ``notes`` (e.g. "class X has only 2 test images") are printed in red under the grid.
    """
    title = title or (f"Test predictions: {per_class} random test images per class\n"
                      f"green {TICK} = correct, red {CROSS} = wrong; (confidence)")
    fig = _grid(cells, class_names, per_class, notes, title, None, cell_inches)
    return save_figure(fig, path, dpi)


def plot_gradcam_grid(cells: Sequence[GridCell], heatmaps: torch.Tensor | np.ndarray, class_names: Sequence[str],
                      path: Path | str, *, per_class: int = 3, notes: Sequence[str] = (), layer: str = "CONV5",
                      cell_inches: float = 1.6, dpi: int = 100) -> Path:
    """The prediction grid with each image's Grad-CAM map (for its predicted class) overlaid, red = high."""
    title = f"Grad-CAM on {layer} for the predicted class (each map scaled to its own max)"
    fig = _grid(cells, class_names, per_class, notes, title, heatmaps, cell_inches)
    return save_figure(fig, path, dpi)


def plot_filters(weights: torch.Tensor, path: Path | str, *, title: str = "CONV1 filters", dpi: int = 100) -> Path:
    """Each first-layer filter ``[in, k, k]`` as a small image: RGB when ``in == 3`` (min-max per filter),
    else the mean over input channels in grey."""
    w = _numpy(weights)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights [out, in, k, k], got shape {w.shape}")
    n = w.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = _new_figure(cols * 0.9 + 0.4, rows * 0.9 + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    kind = "RGB" if w.shape[1] == 3 else "mean over input channels"
    fig.suptitle(f"{title}: {n} filters, {w.shape[2]}x{w.shape[3]}, {kind}", fontsize=10)
    for i, ax in enumerate(axes.flat):
        _bare(ax)
        if i >= n:
            ax.axis("off")
            continue
        f = w[i].transpose(1, 2, 0) if w.shape[1] == 3 else w[i].mean(axis=0)
        ax.imshow(_unit(f), cmap=None if w.shape[1] == 3 else "gray", interpolation="nearest")
        ax.set_title(str(i), fontsize=6, pad=1)
    return save_figure(fig, path, dpi)


def plot_feature_maps(image: ImageLike, maps: torch.Tensor, path: Path | str, *, layer: str = "CONV1",
                      caption: str = "", max_maps: int = 64, dpi: int = 100) -> Path:
    """The input image, then each channel of ``maps`` ``[C, H, W]`` (viridis, each scaled to its own range)."""
    m = _numpy(maps)
    if m.ndim != 3:
        raise ValueError(f"expected feature maps [C, H, W], got shape {m.shape}")
    shown = min(m.shape[0], max_maps)
    cols = math.ceil(math.sqrt(shown + 1))
    rows = math.ceil((shown + 1) / cols)
    fig = _new_figure(cols * 1.1 + 0.3, rows * 1.15 + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    more = f" (first {shown} of {m.shape[0]})" if shown < m.shape[0] else ""
    fig.suptitle(f"{layer} feature maps{more}" + (f"\n{caption}" if caption else ""), fontsize=9)
    for i, ax in enumerate(axes.flat):
        _bare(ax)
        if i == 0:
            ax.imshow(_hwc_uint8(image))
            ax.set_title("input", fontsize=7, pad=1)
        elif i <= shown:
            ax.imshow(_unit(m[i - 1]), cmap="viridis", interpolation="nearest")
            ax.set_title(f"ch {i - 1}", fontsize=6, pad=1)
        else:
            ax.axis("off")
    return save_figure(fig, path, dpi)


def plot_neuron_attributions(image: ImageLike, attributions: torch.Tensor, neuron_labels: Sequence[str],
                             path: Path | str, *, method_label: str, warning: str | None = None,
                             layer: str = "CONV5", caption: str = "", dpi: int = 100) -> Path:
    """The input image (left) next to one attribution map per neuron (grid of 2 rows).

    Maps keep their sign: mid-grey is zero, each map scaled by its own 99.5th-percentile magnitude. ``method_label``
    titles the figure ("guided backprop", "plain gradient (saliency)", ...); ``warning`` is shown in red.
    """
    a = _numpy(attributions)
    if a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(f"expected attributions [k, 3, H, W], got shape {a.shape}")
    if len(neuron_labels) != a.shape[0]:
        raise ValueError(f"one label per neuron needed: {a.shape[0]} maps, {len(neuron_labels)} labels")
    k = a.shape[0]
    cols = math.ceil(k / 2)
    fig = _new_figure(2.6 + cols * 1.45, 3.9 + (0.3 if warning else 0))
    grid = fig.add_gridspec(2, cols + 2, width_ratios=[2, 0.15] + [1] * cols, top=0.78 - (0.06 if warning else 0),
                            bottom=0.04, left=0.02, right=0.99, hspace=0.35, wspace=0.1)
    fig.suptitle(f"{layer} neurons: {method_label}" + (f"\n{caption}" if caption else ""), fontsize=10, y=0.98)
    if warning:
        fig.text(0.5, 0.80, f"WARNING: {warning}", ha="center", fontsize=7.5, color=WARNING_COLOUR, wrap=True)
    ax = fig.add_subplot(grid[:, 0])
    _bare(ax)
    ax.imshow(_hwc_uint8(image))
    ax.set_title("input", fontsize=9)
    for i in range(k):
        ax = fig.add_subplot(grid[i // cols, 2 + i % cols])
        _bare(ax)
        ax.imshow(_signed_unit(a[i].transpose(1, 2, 0)))
        ax.set_title(neuron_labels[i], fontsize=6.5, pad=2)
    return save_figure(fig, path, dpi)


def plot_confusion_matrix(counts: Sequence[Sequence[int]] | torch.Tensor,
                          normalised: Sequence[Sequence[float]] | torch.Tensor, class_names: Sequence[str],
                          path: Path | str, *, title: str = "Confusion matrix (test set)", dpi: int = 100) -> Path:
    """Cells coloured by the row-normalised value, annotated with the count and the row percentage."""
    c = np.asarray(counts.tolist() if isinstance(counts, torch.Tensor) else counts)
    p = np.asarray(normalised.tolist() if isinstance(normalised, torch.Tensor) else normalised, dtype=float)
    n = len(class_names)
    if c.shape != (n, n) or p.shape != (n, n):
        raise ValueError(f"counts {c.shape} and normalised {p.shape} must both be [{n}, {n}] for {n} class names")
    side = max(4.0, 0.62 * n + 2.2)
    fig = _new_figure(side + 0.8, side)
    ax = fig.add_axes((0.26, 0.24, 0.62, 0.66))
    im = ax.imshow(p, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="fraction of the true class")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{c[i, j]}\n{p[i, j]:.0%}", ha="center", va="center", fontsize=6.5,
                    color="white" if p[i, j] > 0.5 else "black")
    return save_figure(fig, path, dpi)
