"""Which batch source feeds the model: whole-batch :class:`DeviceBatches` (default) or per-sample DataLoaders.

``make_loaders`` decides the pixels, this module how they are batched. ``pipeline="batched"``: uint8 images on
``augment_device`` when they fit there, augmented a batch at a time with the same distribution as torchvision's
per-sample transforms (:mod:`core.data.batched_augment`). ``pipeline="per_sample"``: a DataLoader with the
``v2`` transform per image; a transform that exists only per sample selects it too, and the log says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from core.data.batched_augment import BatchAugment
from core.data.device_batches import DeviceBatches, image_store
from core.data.sampling import SeededShuffle
from core.devices import resolve_device

__all__ = ["AUGMENT_DEVICES", "PIPELINES", "SplitSource", "choose_num_workers", "make_batch_sources"]

log = logging.getLogger(__name__)

PIPELINES = ("batched", "per_sample")
AUGMENT_DEVICES = ("auto", "cpu", "cuda")
CROP_RATIO = (3 / 4, 4 / 3)  # aspect range of the random-resized crop (torchvision's default)
JITTER = 0.2  # brightness, contrast and saturation strength of the training augmentation


@dataclass(frozen=True)
class SplitSource:
    """One split: its per-sample dataset (file list, labels, per-sample transform) and its decode-cache entry."""

    dataset: Any  # core.data.loaders.CachedImageDataset
    entry: Any  # core.data.decode_cache.DecodedImages whose rows the dataset uses
    shuffle: bool  # the training split: shuffled, augmented when asked


def choose_num_workers(requested: int | None, device: str, dataset_size: int, batch_size: int,
                       augment: bool) -> int:
    """Workers for the per-sample training loader: the cache leaves little per-sample work, so few are needed.

    0 on CPU (workers would compete with the model for the same cores) and for tiny sets; on CUDA, 2
    (4 with augmentation, which is the only per-sample work left), never more than the cores minus one.
    """
    if requested is not None:
        return requested
    if not device.startswith("cuda") or dataset_size < 4 * batch_size:
        return 0
    return max(0, min(4 if augment else 2, (os.cpu_count() or 1) - 1))


def _drop_last(size: int, batch_size: int) -> bool:
    # a last training batch of one image breaks BatchNorm; dropping that one (random) image is harmless
    return size % batch_size == 1 and size > 1


def _per_sample(splits: dict[str, SplitSource], cfg, device: torch.device) -> dict[str, DataLoader]:
    workers = choose_num_workers(cfg.num_workers, device.type, len(splits["train"].dataset), cfg.batch_size,
                                 getattr(cfg, "augments", cfg.augment))
    out = {}
    for name, split in splits.items():
        num = workers if split.shuffle else min(workers, 2)
        # order and per-sample augmentation seeds: the sampler's generator (saved for resume; core.data.sampling)
        sampler = SeededShuffle(len(split.dataset), torch.Generator().manual_seed(cfg.seed)) if split.shuffle else None
        # the workers' base seed is drawn from `generator` when they start (else from torch's global RNG,
        # which dropout uses): a generator of the loader's own keeps that draw out of training
        worker_seeds = torch.Generator().manual_seed(cfg.seed)
        out[name] = DataLoader(split.dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=num,
                               persistent_workers=num > 0, generator=worker_seeds, pin_memory=device.type == "cuda",
                               drop_last=split.shuffle and _drop_last(len(split.dataset), cfg.batch_size))
    log.info("data path: per-sample DataLoader (%d training workers)", workers)
    return out


def augment_device(cfg, device: torch.device) -> torch.device:
    """Where augmentation runs: ``auto`` = the training device; ``cuda`` needs a CUDA training device."""
    if cfg.augment_device == "auto":
        return device
    if cfg.augment_device == "cuda":
        if device.type != "cuda":
            raise ValueError(f"augment_device 'cuda' needs a CUDA training device (training on {device}); "
                             "use --augment-device auto or cpu")
        return device
    return torch.device("cpu")


def make_batch_sources(splits: dict[str, SplitSource], cfg, mean: tuple[float, ...], std: tuple[float, ...],
                       image_size: int, *, per_sample_reason: str | None = None) -> dict[str, Any]:
    """``{"train", "val", "test"}`` -> batch source, as ``cfg.pipeline`` asks (see the module docstring).

    ``per_sample_reason``: why this config needs the per-sample path (e.g. an augmentation policy), or None.
    """
    device = resolve_device(cfg.device)
    if cfg.pipeline == "per_sample" or per_sample_reason:
        if cfg.pipeline != "per_sample":
            log.info("data path: %s needs per-sample transforms; using the DataLoader path", per_sample_reason)
        return _per_sample(splits, cfg, device)
    where = augment_device(cfg, device)
    spec = BatchAugment(image_size, scale=cfg.crop_scale, ratio=CROP_RATIO, brightness=JITTER, contrast=JITTER,
                        saturation=JITTER) if cfg.augment else None
    out = {}
    for name, split in splits.items():
        ds = split.dataset
        store = image_store(split.entry, where)
        out[name] = DeviceBatches(
            ds, store, list(ds.rows), ds.targets, batch_size=cfg.batch_size, device=device, mean=mean, std=std,
            augment=spec if split.shuffle else None, shuffle=split.shuffle,
            drop_last=split.shuffle and _drop_last(len(ds), cfg.batch_size),
            generator=torch.Generator().manual_seed(cfg.seed) if split.shuffle else None,
            transform_device=store.device if store.device.type == "cuda" else where)
    log.info("data path: batched (%s)", out["train"].where)
    return out
