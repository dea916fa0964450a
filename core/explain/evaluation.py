"""Test-set metrics and the seeded choice of images per class, as plain functions of labels.

The numbers in ``test_metrics.json`` must be checkable by hand, so they are computed from two integer vectors
(true and predicted labels) with no model, loader or plotting; :func:`predict` is the one function that runs a
model, in dataset order so a prediction traces back to ``loader.dataset.samples[i]``. The confusion matrix has
true classes on rows; "normalised" divides each row by its count (the diagonal is per-class accuracy), and a
class with no test images gets ``None``, not 0, which would claim it was measured.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from core.train import with_tta

logger = logging.getLogger(__name__)

LabelsLike = Sequence[int] | torch.Tensor


def _as_labels(values: LabelsLike, name: str, num_classes: int | None = None) -> torch.Tensor:
    """1-D int64 CPU tensor of class indices, validated against ``num_classes`` when given."""
    t = torch.as_tensor(values).detach().cpu()
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {list(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.numel():
            raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if num_classes is not None and t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} holds class index {bad}, outside [0, {num_classes}) for {num_classes} classes")
    return t


def _check_pair(targets: LabelsLike, preds: LabelsLike, num_classes: int | None) -> tuple[torch.Tensor, ...]:
    t = _as_labels(targets, "targets", num_classes)
    p = _as_labels(preds, "preds", num_classes)
    if t.numel() != p.numel():
        raise ValueError(f"targets and preds differ in length: {t.numel()} vs {p.numel()}")
    if t.numel() == 0:
        raise ValueError("no predictions to score: targets and preds are empty (is the test split empty?)")
    return t, p


def accuracy(targets: LabelsLike, preds: LabelsLike) -> float:
    """Fraction of ``preds`` equal to ``targets`` (in [0, 1])."""
    t, p = _check_pair(targets, preds, None)
    return float((t == p).sum()) / t.numel()


def confusion_matrix(targets: LabelsLike, preds: LabelsLike, num_classes: int) -> torch.Tensor:
    """Counts ``[num_classes, num_classes]`` (int64): entry ``[i, j]`` = images of class ``i`` predicted ``j``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    t, p = _check_pair(targets, preds, num_classes)
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _square(counts: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(counts)
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a confusion matrix must be square [C, C], got shape {list(c.shape)}")
    return c


def normalise_rows(counts: torch.Tensor) -> torch.Tensor:
    """Each row divided by its sum (float64); rows that sum to zero stay zero."""
    c = _square(counts).to(torch.float64)
    totals = c.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, c / totals.clamp(min=1), torch.zeros_like(c))


def per_class_accuracy(counts: torch.Tensor) -> list[float | None]:
    """Diagonal over row sums of a confusion matrix; ``None`` for a class with no images."""
    c = _square(counts)
    totals = c.sum(dim=1)
    return [float(c[i, i]) / int(totals[i]) if int(totals[i]) else None for i in range(c.shape[0])]


@dataclass(frozen=True)
class TestMetrics:
    """Everything ``test_metrics.json`` holds; ``to_dict`` is its exact content."""

    __test__ = False  # not a pytest test class despite the name

    class_names: tuple[str, ...]
    n: int
    n_correct: int
    accuracy: float
    per_class_accuracy: tuple[float | None, ...]
    per_class_count: tuple[int, ...]
    confusion_counts: tuple[tuple[int, ...], ...]
    confusion_normalised: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "n_correct": self.n_correct,
            "class_names": list(self.class_names),
            "per_class": {
                name: {"accuracy": acc, "n": count}
                for name, acc, count in zip(self.class_names, self.per_class_accuracy, self.per_class_count)
            },
            "confusion_matrix": {
                "rows": "true class",
                "columns": "predicted class",
                "counts": [list(r) for r in self.confusion_counts],
                "normalised": [list(r) for r in self.confusion_normalised],
            },
        }


def compute_metrics(targets: LabelsLike, preds: LabelsLike, class_names: Sequence[str]) -> TestMetrics:
    """Overall and per-class accuracy plus the confusion matrix (counts and row-normalised)."""
    names = tuple(str(n) for n in class_names)
    if not names:
        raise ValueError("class_names is empty; pass the checkpoint's class names")
    counts = confusion_matrix(targets, preds, len(names))
    n = int(counts.sum())
    n_correct = int(counts.diagonal().sum())
    return TestMetrics(
        class_names=names,
        n=n,
        n_correct=n_correct,
        accuracy=n_correct / n,
        per_class_accuracy=tuple(per_class_accuracy(counts)),
        per_class_count=tuple(int(v) for v in counts.sum(dim=1)),
        confusion_counts=tuple(tuple(int(v) for v in row) for row in counts),
        confusion_normalised=tuple(tuple(float(v) for v in row) for row in normalise_rows(counts)),
    )


@dataclass(frozen=True)
class PerClassSelection:
    """Up to ``k`` dataset indices per class, drawn with ``seed``; ``available`` counts every class."""

    k: int
    seed: int
    indices: tuple[tuple[int, ...], ...]  # indices[c] = chosen dataset indices of class c, ascending
    available: tuple[int, ...]  # available[c] = how many images class c has

    @property
    def shortfalls(self) -> dict[int, int]:
        """Classes with fewer than ``k`` images → how many they have."""
        return {c: n for c, n in enumerate(self.available) if n < self.k}

    def flat(self) -> list[tuple[int, int]]:
        """``(class, dataset index)`` pairs, class by class."""
        return [(c, i) for c, chosen in enumerate(self.indices) for i in chosen]


def select_per_class(labels: LabelsLike, num_classes: int, k: int = 3, seed: int = 0) -> PerClassSelection:
    """Draw ``k`` images of every class at random (seeded), not the first ``k`` of the folder.

    The draw for class ``c`` depends only on ``seed``, ``c`` and the indices of that class, so adding
    images of one class does not change which images the others show.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (images per class) must be a positive int, got {k!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    t = _as_labels(labels, "labels", num_classes).tolist()
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(t):
        by_class[label].append(index)
    chosen = []
    for c, pool in enumerate(by_class):
        rng = random.Random(f"{seed}/{c}")  # str seeds hash with sha512: stable across runs and platforms
        chosen.append(tuple(sorted(rng.sample(pool, min(k, len(pool))))))
    return PerClassSelection(k=k, seed=seed, indices=tuple(chosen), available=tuple(map(len, by_class)))


@dataclass(frozen=True)
class Predictions:
    """Model outputs over a loader, in dataset order."""

    targets: torch.Tensor  # int64 [N]
    preds: torch.Tensor  # int64 [N]
    probs: torch.Tensor  # float32 [N, C], softmax of the logits

    @property
    def confidences(self) -> torch.Tensor:
        """Probability of the predicted class, float32 [N]."""
        return self.probs.gather(1, self.preds[:, None]).squeeze(1)


def predict(model: nn.Module, loader: Any, device: str | torch.device = "cpu", *,
            desc: str | None = None, tta: bool = False) -> Predictions:
    """Run ``model`` over ``loader`` (batches of ``(images, labels)``) in eval mode; restores the mode after.

    The loader must not shuffle, or ``Predictions`` rows will not line up with ``loader.dataset``.
    ``desc`` names a progress bar (shown on a terminal only). ``tta``: logits are the mean over each
    image and its horizontal flip (:class:`core.train.FlipTTA`).
    """
    sampler = getattr(loader, "sampler", None)
    if sampler is not None and isinstance(sampler, torch.utils.data.RandomSampler):
        raise ValueError("predict needs an unshuffled loader (shuffle=False) so rows match dataset indices")
    was_training = model.training
    model.eval()
    net = with_tta(model, tta)
    targets, preds, probs = [], [], []
    try:
        with torch.inference_mode():
            # one iter(): tqdm.auto would call iter() twice, starting two passes of a loader with workers
            bar = tqdm(iter(loader), total=len(loader), desc=desc, unit="batch", disable=None if desc else True,
                       leave=False)
            for images, labels in bar:
                logits = net(images.to(device))
                p = torch.softmax(logits.float(), dim=1).cpu()
                probs.append(p)
                preds.append(p.argmax(dim=1))
                targets.append(torch.as_tensor(labels).to(torch.int64).cpu())
    finally:
        model.train(was_training)
    if not targets:
        raise ValueError("the loader yielded no batches; is the test split empty?")
    return Predictions(targets=torch.cat(targets), preds=torch.cat(preds), probs=torch.cat(probs))
