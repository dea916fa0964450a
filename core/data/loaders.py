"""Data loaders: scan -> validate -> decode cache -> stratified split -> normalisation -> batch sources.

``make_loaders(DataConfig(...))`` is the one entry point. The whole ``train/`` pool and ``val/`` are decoded
once (:mod:`core.data.decode_cache`) *before* the split, so another seed or validation fraction never decodes
again and corrupt files are skipped up front. ``"dataset"`` normalisation is the training subset's mean/std,
``"imagenet"`` ImageNet's; a given ``Preprocessing`` (evaluating a checkpoint) wins over both. Augmentation runs
on the training subset only; with ``train_decode_ratio > 1`` the ``train/`` pool is decoded larger, for the
crop (its statistics give ``"dataset"`` normalisation), and only the validation split is decoded again, at the
model's view: each image once per view that is used. Batches are whole batches on the device
(:mod:`core.data.batching`) or per-sample DataLoaders whose samples draw their own seeds with the order
(:mod:`core.data.sampling`), so workers never change the batches; the per-sample policies (TrivialAugment,
RandAugment, random erasing) select the latter.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.data.augment_policies import check_policy, erasing_ops, policy_ops
from core.data.batching import AUGMENT_DEVICES, PIPELINES, SplitSource, make_batch_sources
from core.data.decode_cache import cache_root, decode_images
from core.data.demo import ensure_demo_dataset
from core.data.download import download_inaturalist
from core.data.imagefolder import Sample, SkippedFile, cap_per_class, scan_dataset, stratified_split
from core.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, normalize
from core.data.sampling import SeededShuffle, call_seeded  # noqa: F401  (re-exported for callers)
from core.runfiles import read_json, write_json, write_text

__all__ = ["DataConfig", "Loaders", "CachedImageDataset", "make_loaders", "ensure_demo_dataset",
           "download_inaturalist", "NORMALIZATIONS"]

log = logging.getLogger(__name__)

NORMALIZATIONS = ("dataset", "imagenet")
_DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides which pixels the model sees; resolved and saved in the run folder."""

    data_dir: Path | None = None  # None -> the generated demo set (ensure_demo_dataset())
    image_size: int = 224
    resize_size: int | None = None  # short side before a centre crop; None = straight resize
    val_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 32
    num_workers: int | None = None  # None -> chosen for the device
    augment: bool = False  # random-resized crop, flip, colour jitter; training subset only
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area range of the random-resized crop (fraction of the image)
    train_decode_ratio: float = 1.0  # training images decoded at round(image_size * this); the crop comes from them
    augment_policy: str = "none"  # none | trivialaugment | randaugment (core.data.augment_policies)
    random_erasing: float = 0.0  # probability of erasing one rectangle per training image; 0 = off
    normalization: str = "dataset"  # "dataset" (train-split mean/std, cached) | "imagenet"
    cache_dir: Path | None = None  # None -> $INAT_CNN_CACHE or ~/.cache/inat-cnn
    max_per_class: int | None = None  # cap per class (tests, quick runs)
    device: str = "cpu"  # the training device: where batches are delivered
    pipeline: str = "batched"  # "batched" (whole batches on the device) | "per_sample" (DataLoader, v2 transforms)
    augment_device: str = "auto"  # where batched augmentation runs: auto (= device) | cpu | cuda

    def __post_init__(self) -> None:
        for name in ("data_dir", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value).expanduser())
        Preprocessing(self.image_size, self.resize_size)  # same checks, same messages
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be None (auto) or >= 0, got {self.num_workers}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; expected one of {NORMALIZATIONS}")
        check_policy(self.augment_policy, self.random_erasing)
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (0.0, -1.0)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {self.crop_scale}")
        if not (isinstance(self.train_decode_ratio, (int, float)) and 1.0 <= self.train_decode_ratio <= 4.0):
            raise ValueError(f"train_decode_ratio must be a number in [1, 4], got {self.train_decode_ratio!r}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ValueError(f"max_per_class must be None or >= 1, got {self.max_per_class}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {self.pipeline!r}; expected one of {PIPELINES}")
        if self.augment_device not in AUGMENT_DEVICES:
            raise ValueError(f"unknown augment_device {self.augment_device!r}; expected one of {AUGMENT_DEVICES}")
        if self.device.split(":")[0] not in _DEVICES:
            raise ValueError(f"unknown device {self.device!r}; expected one of {_DEVICES} (optionally 'cuda:N')")

    @property
    def augments(self) -> bool:
        """True when the training images are randomly transformed in any way."""
        return self.augment or self.augment_policy != "none" or self.random_erasing > 0

    def to_dict(self) -> dict:
        """Plain data for config.yaml / checkpoints (paths as strings)."""
        d = asdict(self)
        for name in ("data_dir", "cache_dir"):
            d[name] = None if d[name] is None else str(d[name])
        return d


def per_sample_augmentation(prep: Preprocessing, *, basic: bool = True, policy: str = "none",
                            random_erasing: float = 0.0, scale: tuple[float, float] = (0.6, 1.0)):
    """Augmentation of a cached uint8 image, ending in the same normalisation as :func:`normalize`.

    ``basic``: mild crop, flip and jitter. Geometry runs on uint8 (cheap), colour on float (faster than
    v2's uint8 colour kernels). The object of an iNaturalist photo keeps its class under all of these.
    ``policy`` and ``random_erasing``: see :mod:`core.data.augment_policies` (the order there). None when
    nothing is on.
    """
    from torchvision.transforms import v2

    geometry = [v2.RandomResizedCrop(prep.image_size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
                v2.RandomHorizontalFlip()] if basic else []
    colour = [v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)] if basic else []
    uint8_stage, erasing = policy_ops(policy), erasing_ops(random_erasing)
    if not (geometry or uint8_stage or erasing):
        return None
    return v2.Compose([*geometry, *uint8_stage, v2.ToDtype(torch.float32, scale=True), *colour,
                       v2.Normalize(list(prep.mean), list(prep.std)), *erasing])


class CachedImageDataset(Dataset):
    """Rows of a decode-cache entry as a dataset of ``(float32 [3,S,S] normalised, int label)``.

    ``samples`` lists ``(path, label)``; ``uint8(i)`` returns the unnormalised, unaugmented image (figures).
    """

    def __init__(self, samples: list[Sample], images: np.ndarray, rows: list[int], prep: Preprocessing,
                 transform=None) -> None:
        if len(samples) != len(rows):
            raise ValueError(f"{len(samples)} samples but {len(rows)} cache rows")
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.preprocessing = prep
        self.transform = transform
        self._images = images
        self._rows = np.asarray(rows, dtype=np.int64)

    @property
    def rows(self) -> np.ndarray:
        """The decode-cache rows of this split, in dataset order."""
        return self._rows

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        """Workers started by spawn/forkserver re-open the memory map instead of receiving a copy."""
        state = dict(self.__dict__)
        filename = getattr(self._images, "filename", None)
        if isinstance(self._images, np.memmap) and filename:
            state["_images"] = Path(filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["_images"], Path):
            state["_images"] = np.load(state["_images"], mmap_mode="r")
        self.__dict__.update(state)

    def uint8(self, i: int) -> torch.Tensor:
        """uint8 ``[3, S, S]`` as decoded (no augmentation, no normalisation)."""
        return torch.from_numpy(np.array(self._images[self._rows[i]]))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``dataset[i]``, or ``dataset[(i, seed)]`` from :class:`~core.data.sampling.SeededShuffle`: then the
        augmentation runs under ``seed``, the same in the main process and in any worker."""
        i, seed = key if isinstance(key, tuple) else (key, None)
        x = self.uint8(i)
        if self.transform is not None:  # augmentation ends with the normalisation
            out = self.transform(x) if seed is None else call_seeded(self.transform, x, seed)
            return out, self.targets[i]
        return normalize(x, self.preprocessing), self.targets[i]


@dataclass
class Loaders:
    """The three loaders plus what produced them; ``write_split`` records it in a run folder."""

    train: Any  # DeviceBatches (pipeline "batched") or DataLoader ("per_sample"): (images, labels) batches
    val: Any
    test: Any
    class_names: list[str]
    preprocessing: Preprocessing  # what the model saw; goes into the checkpoint
    root: Path = Path()
    config: DataConfig = field(default_factory=DataConfig)
    skipped: list[SkippedFile] = field(default_factory=list)

    def write_split(self, run_dir: Path) -> None:
        """``split.json`` (class names, preprocessing, file lists relative to the root) and ``skipped.txt``."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)

        def rel(p: Path) -> str:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                return str(p)

        split = {
            "root": str(self.root),
            "class_names": self.class_names,
            "preprocessing": self.preprocessing.to_dict(),
            "normalization": self.config.normalization,
            "seed": self.config.seed,
            "val_fraction": self.config.val_fraction,
            "max_per_class": self.config.max_per_class,
        }
        for name in ("train", "val", "test"):
            split[name] = [[rel(p), label] for p, label in getattr(self, name).dataset.samples]
        write_json(run_dir / "split.json", split)
        lines = [f"{p}\t{reason}" for p, reason in ((rel(s.path), s.reason) for s in self.skipped)]
        header = f"# {len(lines)} files not used (path relative to {self.root}<TAB>reason)\n"
        write_text(run_dir / "skipped.txt", header + "".join(line + "\n" for line in lines))


def _dataset_mean_std(images: np.ndarray, rows: list[int], key: str,
                      cache_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of ``images[rows] / 255``, cached as JSON (keyed by the entry and the rows)."""
    rows_sorted = np.asarray(sorted(rows), dtype=np.int64)
    row_hash = hashlib.sha256(rows_sorted.tobytes()).hexdigest()[:16]
    path = cache_dir / "decoded" / f"{key}.stats-{row_hash}.json"
    if path.is_file():
        d = read_json(path)
        return tuple(d["mean"]), tuple(d["std"])
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(rows_sorted), 256):
        chunk = np.asarray(images[rows_sorted[start:start + 256]], dtype=np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.square(chunk).sum(axis=(0, 2, 3))
    count = len(rows_sorted) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    result = tuple(round(float(v), 6) for v in mean), tuple(round(max(float(v), 1e-3), 6) for v in std)
    write_json(path, {"mean": result[0], "std": result[1], "rows": len(rows)})
    return result


def _train_source_geometry(geometry: Preprocessing, cfg: DataConfig) -> Preprocessing:
    """The decode the training crops come from: the evaluation view, at ``train_decode_ratio`` times the side.

    Same field of view as evaluation (a straight resize stays one; a short-side resize + centre crop keeps
    its crop fraction), more pixels, so a crop of 60% of the area is resampled *down* (or about 1:1) to the
    model input instead of being blown up from the already-small image.
    """
    if not cfg.augment or cfg.train_decode_ratio == 1.0:
        return geometry
    side = round(geometry.image_size * cfg.train_decode_ratio)
    resize = None if geometry.resize_size is None else round(geometry.resize_size * side / geometry.image_size)
    return Preprocessing(side, resize)


def make_loaders(cfg: DataConfig, preprocessing: Preprocessing | None = None) -> Loaders:
    """Validated, cached, split and normalised loaders for ``cfg`` (see the module docstring)."""
    root = cfg.data_dir if cfg.data_dir is not None else ensure_demo_dataset()
    cache_dir = cfg.cache_dir if cfg.cache_dir is not None else cache_root()
    scan = scan_dataset(root)
    geometry = preprocessing or Preprocessing(cfg.image_size, cfg.resize_size)
    pool = cap_per_class(scan.train, cfg.max_per_class, cfg.seed)
    test = cap_per_class(scan.test, cfg.max_per_class, cfg.seed)
    skipped = list(scan.skipped)

    decoded = {}
    kept: dict[str, list[tuple[Sample, int]]] = {}
    source = _train_source_geometry(geometry, cfg)  # the pool's view: the crop source when it differs
    for name, samples, view in (("train", pool, source), ("test", test, geometry)):
        entry = decode_images([p for p, _ in samples], view, cache_dir, desc=f"decoding {name}/")
        decoded[name] = entry
        kept[name] = [(s, row) for row, s in enumerate(samples) if row not in entry.failed]
        skipped += [SkippedFile(samples[row][0], reason) for row, reason in sorted(entry.failed.items())]
        if entry.failed:
            log.warning("%d of %d %s images could not be decoded and are skipped (see skipped.txt)",
                        len(entry.failed), len(samples), name)
    present = {label for (_, label), _ in kept["train"]}
    lost = [scan.class_names[i] for i in range(len(scan.class_names)) if i not in present]
    if lost:
        bad = [f"{pool[row][0].name} ({reason})" for row, reason in sorted(decoded["train"].failed.items())
               if scan.class_names[pool[row][1]] in lost]
        raise ValueError(f"no decodable training images left for classes {lost} in {root}/train (e.g. "
                         f"{'; '.join(bad[:3])}); replace the unreadable files or remove those class folders from "
                         "train/ and val/")

    row_of = {s[0]: row for s, row in kept["train"]}
    train_samples, val_samples = stratified_split([s for s, _ in kept["train"]], cfg.val_fraction, cfg.seed)
    if not val_samples:  # checked before any epoch (or run folder file): fit would only find an empty loader
        raise ValueError(f"the validation split is empty: {len(train_samples)} training images (max_per_class "
                         f"{cfg.max_per_class}) leave none at val_fraction {cfg.val_fraction}; raise --max-per-class "
                         "to 2 or more (or --val-fraction), or add images")
    train_rows = [row_of[p] for p, _ in train_samples]
    if preprocessing is not None:
        mean, std = preprocessing.mean, preprocessing.std
    elif cfg.normalization == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = _dataset_mean_std(decoded["train"].images, train_rows, decoded["train"].key, cache_dir)
    prep = Preprocessing(geometry.image_size, geometry.resize_size, mean, std)

    transform = per_sample_augmentation(prep, basic=cfg.augment, policy=cfg.augment_policy,
                                        random_erasing=cfg.random_erasing, scale=cfg.crop_scale)
    train_entry = val_entry = decoded["train"]
    val_rows, test_rows = [row_of[p] for p, _ in val_samples], [row for _, row in kept["test"]]
    if source != geometry:  # the crops come from a larger decode (ImageNet's 256 -> 224); validation needs the model's
        val_entry = decode_images([p for p, _ in val_samples], geometry, cache_dir, desc="decoding the val split")
        skipped += [SkippedFile(val_samples[i][0], reason) for i, reason in sorted(val_entry.failed.items())]
        val_rows = [i for i in range(len(val_samples)) if i not in val_entry.failed]
        val_samples = [val_samples[i] for i in val_rows]
    splits = {
        "train": SplitSource(CachedImageDataset(train_samples, train_entry.images, train_rows, prep, transform),
                             train_entry, shuffle=True),
        "val": SplitSource(CachedImageDataset(val_samples, val_entry.images, val_rows, prep), val_entry, shuffle=False),
        "test": SplitSource(CachedImageDataset([s for s, _ in kept["test"]], decoded["test"].images, test_rows, prep),
                            decoded["test"], shuffle=False),
    }
    # TrivialAugment/RandAugment and random erasing are per-sample torchvision transforms: the batched device
    # path cannot apply them, so they select the seeded per-sample DataLoader path (make_batch_sources logs it)
    per_sample_reason = None
    if cfg.augment_policy != "none" or cfg.random_erasing > 0:
        per_sample_reason = f"augment_policy={cfg.augment_policy!r}, random_erasing={cfg.random_erasing}"
    sources = make_batch_sources(splits, cfg, prep.mean, prep.std, prep.image_size,
                                 per_sample_reason=per_sample_reason)
    log.info("data: %s, %d classes, train %d / val %d / test %d images at %dpx, %d skipped", root,
             len(scan.class_names), len(train_rows), len(val_rows), len(test_rows), prep.image_size, len(skipped))
    return Loaders(train=sources["train"], val=sources["val"], test=sources["test"], class_names=list(scan.class_names),
                   preprocessing=prep, root=Path(root), config=cfg, skipped=skipped)
