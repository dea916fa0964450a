"""Image files → top-k predictions with an onnxruntime session: what ``export/infer.py`` runs.

Pixels come from the training loaders' own :func:`core.data.preprocess.load_image_tensor` with the model's stored
``Preprocessing``, never a second implementation that could drift. Undecodable files are reported and skipped;
decode time is kept apart from model time, so the throughput is not a JPEG-decoder benchmark.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from core.data import IMAGE_EXTENSIONS, ImageDecodeError, load_image_tensor
from export.metadata import ModelMetadata
from export.ort_session import run_logits

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageItem:
    """One file to predict and, with ``--labels-from-folders``, its true label (the parent folder's name)."""

    path: Path
    label: str | None = None


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str | None  # true label, if known
    top_indices: tuple[int, ...]  # best first
    top_probs: tuple[float, ...]  # softmax probabilities, same order

    @property
    def index(self) -> int:
        return self.top_indices[0]


@dataclass
class PredictionRun:
    """Everything one inference pass produced."""

    predictions: list[Prediction]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)
    decode_seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def model_images_per_second(self) -> float:
        return len(self.predictions) / self.model_seconds if self.model_seconds > 0 else math.inf

    @property
    def end_to_end_images_per_second(self) -> float:
        total = self.decode_seconds + self.model_seconds
        return len(self.predictions) / total if total > 0 else math.inf


def collect_images(inputs: Sequence[str | Path], *, labels_from_folders: bool = False) -> list[ImageItem]:
    """Files as given, folders searched recursively for image extensions (hidden entries skipped).

    A missing path is a ``FileNotFoundError``; a folder without image files is a ``ValueError``.
    """
    if not inputs:
        raise ValueError("no images given; pass image files or a folder")
    items: list[ImageItem] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_file():
            items.append(ImageItem(path, path.parent.name if labels_from_folders else None))
        elif path.is_dir():
            found = [f for f in sorted(path.rglob("*"))
                     if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                     and not any(part.startswith(".") for part in f.relative_to(path).parts)]
            if not found:
                raise ValueError(f"folder {path} holds no image files (searched recursively for "
                                 f"{sorted(IMAGE_EXTENSIONS)}); pass image files or a folder that holds some")
            if labels_from_folders and all(f.parent == path for f in found):
                raise ValueError(f"--labels-from-folders needs class sub-folders ({path}/<Class>/*.jpg) but "
                                 f"the images of {path} sit directly in it; drop --labels-from-folders or sort "
                                 "the images into one folder per class")
            items.extend(ImageItem(f, f.parent.name if labels_from_folders else None) for f in found)
        elif path.exists():
            raise ValueError(f"{path} is not a regular file or folder (a FIFO, socket or device); pass image files "
                             "or a folder that holds some")
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}; check the path (relative paths start "
                                    "from the current folder)")
    return items


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_images(
    session: onnxruntime.InferenceSession,
    items: Sequence[ImageItem],
    metadata: ModelMetadata,
    *,
    batch_size: int = 32,
    top_k: int = 5,
    progress: bool | None = None,
) -> PredictionRun:
    """Decode ``items`` with the model's preprocessing and run them in batches of ``batch_size``.

    ``progress=None`` shows a tqdm bar only when stderr is a terminal.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    run = PredictionRun(predictions=[])
    disable = None if progress is None else not progress
    with tqdm(total=len(items), desc="predicting", unit="img", disable=disable) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            tensors, kept = [], []
            t0 = time.perf_counter()
            for item in chunk:
                try:
                    tensors.append(load_image_tensor(item.path, metadata.preprocessing).numpy())
                    kept.append(item)
                except (ImageDecodeError, FileNotFoundError) as exc:
                    log.warning("skipping %s: %s", item.path, getattr(exc, "reason", exc))
                    run.skipped.append((item.path, str(getattr(exc, "reason", exc))))
            run.decode_seconds += time.perf_counter() - t0
            if kept:
                t0 = time.perf_counter()
                logits = run_logits(session, np.stack(tensors))
                run.model_seconds += time.perf_counter() - t0
                probs = softmax(logits)
                k = min(top_k, probs.shape[1])
                order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
                for item, idx, p in zip(kept, order, probs):
                    run.predictions.append(Prediction(item.path, item.label, tuple(int(i) for i in idx),
                                                      tuple(float(p[i]) for i in idx)))
            bar.update(len(chunk))
    if not run.predictions:
        raise ValueError(f"none of the {len(items)} images could be decoded ("
                         + "; ".join(f"{p.name}: {r}" for p, r in run.skipped[:5])
                         + "); pass JPEG/PNG/... files that an image viewer opens")
    return run


@dataclass(frozen=True)
class LabelledScore:
    """Accuracy and confusion counts over the predictions whose true label is a known class."""

    accuracy: float
    num_scored: int
    classes: tuple[str, ...]  # row/column order of ``confusion``
    confusion: np.ndarray  # [len(classes), len(classes)], [true, predicted]
    unknown_labels: tuple[str, ...]  # folder names that are not classes of the model


def score(run: PredictionRun, metadata: ModelMetadata, num_outputs: int) -> LabelledScore | None:
    """``None`` when no prediction carries a label; otherwise accuracy + confusion matrix.

    Labels match class names, or class indices as strings when the model has no names (foreign files).
    """
    from core.explain import confusion_matrix

    labelled = [p for p in run.predictions if p.label is not None]
    if not labelled:
        return None
    names = [metadata.label(i) for i in range(num_outputs)]
    index = {name: i for i, name in enumerate(names)}
    known = [p for p in labelled if p.label in index]
    unknown = tuple(sorted({p.label for p in labelled if p.label not in index}))
    if unknown:
        log.warning("%d labels are not classes of the model and are not scored: %s", len(unknown),
                    ", ".join(unknown[:10]))
    if not known:
        return LabelledScore(float("nan"), 0, (), np.zeros((0, 0), dtype=np.int64), unknown)
    targets = [index[p.label] for p in known]
    preds = [p.index for p in known]
    full = confusion_matrix(targets, preds, num_outputs).numpy()
    involved = sorted(set(targets) | set(preds))  # a 1000-class matrix is unreadable: keep classes in play
    sub = full[np.ix_(involved, involved)]
    acc = float(np.trace(full)) / len(known)
    return LabelledScore(acc, len(known), tuple(names[i] for i in involved), sub, unknown)
