"""Scan and validate an ImageFolder dataset root, and split it: what ``core.data.loaders`` trains on, decided up front.

Layout: ``<root>/train/<Class>/*`` and ``<root>/val/<Class>/*``; ``train/`` is split into train and
validation subsets, the official ``val/`` is the test set and is never used for model selection. Nothing is
silently dropped: a missing folder, fewer than 2 classes, classes that differ between the splits or an empty
class folder stop with the fix; non-image, hidden and special files are skipped, counted and listed in the run
folder's ``skipped.txt`` (the whole table: docs/data.md).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
LAYOUT_HELP = ("expected <root>/train/<Class>/<image files> and <root>/val/<Class>/<image files> "
               "(iNaturalist-12K: the inaturalist_12K folder of nature_12K.zip; "
               "`python experiments/prepare_data.py --download` fetches it)")

Sample = tuple[Path, int]


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not used, and why; written to ``skipped.txt`` in the run folder."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ImageFolderScan:
    """The validated content of a dataset root (before decoding)."""

    root: Path
    class_names: tuple[str, ...]
    train: tuple[Sample, ...]  # the official train/ folder: to be split into train + validation
    test: tuple[Sample, ...]  # the official val/ folder
    skipped: tuple[SkippedFile, ...]


def _not_a_file(path: Path) -> str:
    if path.is_symlink():
        return "symlinked folder (not followed)" if path.is_dir() else "broken symlink (its target does not exist)"
    return "not a regular file (a FIFO, socket or device)"


def _scan_split(split_dir: Path) -> tuple[dict[str, list[Path]], list[SkippedFile]]:
    """Class name -> sorted image paths (recursively), plus everything that is not used."""
    classes: dict[str, list[Path]] = {}
    skipped: list[SkippedFile] = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            skipped.append(SkippedFile(entry, "hidden " + ("folder" if entry.is_dir() else "file")))
        elif not entry.is_dir():
            skipped.append(SkippedFile(entry, "file outside a class folder"))
        else:
            files: list[Path] = []
            for f in sorted(entry.rglob("*")):
                rel_parts = f.relative_to(entry).parts
                if any(part.startswith(".") for part in rel_parts):
                    if f.is_file():
                        skipped.append(SkippedFile(f, "hidden file"))
                elif f.is_file():
                    if f.suffix.lower() in IMAGE_EXTENSIONS:
                        files.append(f)
                    else:
                        skipped.append(SkippedFile(f, f"not an image file (extension {f.suffix or 'none'!r})"))
                elif not f.is_dir() or f.is_symlink():
                    skipped.append(SkippedFile(f, _not_a_file(f)))
            classes[entry.name] = files
    return classes, skipped


def scan_dataset(root: Path) -> ImageFolderScan:
    """Validate the layout of ``root`` and list its images; raises on anything that must stop training."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; {LAYOUT_HELP}")
    split_dirs = {"train": root / "train", "val": root / "val"}
    for name, d in split_dirs.items():
        if not d.is_dir():
            raise FileNotFoundError(f"dataset root {root} has no {name}/ folder; {LAYOUT_HELP}")
    train_classes, skipped = _scan_split(split_dirs["train"])
    test_classes, skipped_test = _scan_split(split_dirs["val"])
    skipped += skipped_test
    if len(train_classes) < 2:
        found = f"only 1 class folder {sorted(train_classes)}" if train_classes else "no class folders"
        raise ValueError(f"{split_dirs['train']} has {found}: a classifier needs at least 2 classes; add class "
                         f"folders; {LAYOUT_HELP}")
    if set(train_classes) != set(test_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_val = sorted(set(test_classes) - set(train_classes))
        raise ValueError(f"class folders differ between {split_dirs['train']} and {split_dirs['val']}: "
                         f"only in train/: {only_train}, only in val/: {only_val}; make both hold the same "
                         "class folders")
    for split, classes in (("train", train_classes), ("val", test_classes)):
        empty = [name for name, files in classes.items() if not files]
        if empty:
            raise ValueError(f"class folders without image files in {split_dirs[split]}: {empty} "
                             f"(extensions read: {sorted(IMAGE_EXTENSIONS)}); remove or fill them")
    class_names = tuple(sorted(train_classes))
    index = {name: i for i, name in enumerate(class_names)}
    train = tuple((p, index[c]) for c in class_names for p in train_classes[c])
    test = tuple((p, index[c]) for c in class_names for p in test_classes[c])
    if skipped:
        log.warning("%d files in %s are not used (not images, hidden, or outside class folders); "
                    "the list goes to skipped.txt in the run folder", len(skipped), root)
    return ImageFolderScan(root, class_names, train, test, tuple(skipped))


def _by_class(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    groups: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s[1]].append(s)
    return groups


def cap_per_class(samples: Sequence[Sample], max_per_class: int | None, seed: int) -> list[Sample]:
    """At most ``max_per_class`` samples of each class, a seeded random subset; order kept."""
    if max_per_class is None:
        return list(samples)
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be None or >= 1, got {max_per_class}")
    keep: set[Path] = set()
    for label, group in sorted(_by_class(samples).items()):
        chosen = random.Random(f"cap-{seed}-{label}").sample(group, min(max_per_class, len(group)))
        keep.update(p for p, _ in chosen)
    return [s for s in samples if s[0] in keep]


def stratified_split(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each class ``round(n * val_fraction)`` to validation (>= 1 when the class has >= 2 images).

    Seeded per class (string seeds are hashed deterministically by ``random``), so a class's split does
    not depend on the other classes; a single-image class stays in training, with a warning.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train: list[Sample] = []
    val: list[Sample] = []
    for label, group in sorted(_by_class(samples).items()):
        group = sorted(group)
        n = len(group)
        n_val = min(max(1, round(n * val_fraction)), n - 1) if n >= 2 else 0
        if n_val == 0:
            log.warning("class %r (label %d) has a single training image (%s): none left for validation; add "
                        "images to %s for its validation accuracy to mean something", group[0][0].parent.name,
                        label, group[0][0].name, group[0][0].parent)
        order = list(range(n))
        random.Random(f"split-{seed}-{label}").shuffle(order)
        val_idx = set(order[:n_val])
        for i, s in enumerate(group):
            (val if i in val_idx else train).append(s)
    return train, val
