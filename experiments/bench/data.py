"""The ``data`` section of ``experiments/benchmark.py``: PIL full decode + resize every epoch (torchvision
``ImageFolder``) against the decode cache, with and without per-sample augmentation, and the cache build itself.
"""

from __future__ import annotations

import logging

from experiments.bench.common import BenchConfig, SectionResult, compare, write_photos

log = logging.getLogger(__name__)


def _drain(loader) -> None:
    for _ in loader:
        pass


def bench_data(cfg: BenchConfig) -> SectionResult:
    """PIL full decode + resize every epoch (torchvision ImageFolder) vs the decode cache."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    from core.data import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        CachedImageDataset,
        Preprocessing,
        decode_images,
        per_sample_augmentation,
        reset_cache_stats,
    )

    size, batch = cfg.image_size or 224, cfg.batch_size or 32
    count = 16 if cfg.quick else 128
    log.info("data: writing %d 800x600 JPEGs", count)
    paths = write_photos(cfg.work_dir / "photos", count)
    prep = Preprocessing(size)
    naive_tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    naive_aug_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(),
                              T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    naive = DataLoader(datasets.ImageFolder(cfg.work_dir / "photos", naive_tf), batch_size=batch, num_workers=0)
    naive_aug = DataLoader(datasets.ImageFolder(cfg.work_dir / "photos", naive_aug_tf), batch_size=batch)

    entry = decode_images(paths, prep, cfg.work_dir / "cache")
    labels = [(p, int(p.parent.name[-1])) for p in paths]
    cached = DataLoader(CachedImageDataset(labels, entry.images, list(range(count)), prep), batch_size=batch)
    cached_aug = DataLoader(CachedImageDataset(labels, entry.images, list(range(count)), prep,
                                               per_sample_augmentation(prep)), batch_size=batch)
    builds = iter(range(10**6))

    def cold_build() -> None:  # a fresh cache folder and no in-memory entry: a real miss every call
        reset_cache_stats(forget_memory=True)
        decode_images(paths, prep, cfg.work_dir / f"cold-{next(builds)}", num_threads=1)  # same as baseline

    common = {"items": count, "repeats": cfg.repeats, "warmup": cfg.warmup}
    comparisons = [
        compare("epoch, warm cache", lambda: _drain(naive), lambda: _drain(cached),
                baseline_label="PIL decode+resize each epoch", ours_label="cached uint8", **common),
        compare("epoch with augmentation", lambda: _drain(naive_aug), lambda: _drain(cached_aug),
                baseline_label="PIL decode+RandomResizedCrop+jitter", ours_label="cached uint8 + v2 aug", **common),
        compare("first epoch (cache build)", lambda: _drain(naive), cold_build,
                baseline_label="PIL full decode+resize", ours_label="draft decode into cache, 1 thread", **common),
    ]
    reset_cache_stats(forget_memory=True)
    info = {"images": count, "source_size": [800, 600], "image_size": size, "batch_size": batch,
            "cache_bytes": int(entry.images.nbytes)}
    return SectionResult(comparisons, info)
