"""The ``finetune`` section of ``experiments/benchmark.py``: a head-only Part B epoch, full forward vs cached features.

Baseline: every image through the frozen MobileNetV2 each epoch; ours: the same epoch on the features
:class:`core.finetune.HeadFeatureCache` computed once (recorded next to it: the cache's one-time cost). One epoch
of each from the same weights and RNG state must give the same loss before timing, so a fast-but-wrong path
cannot win. Generated photos and random backbone weights: the cost does not depend on either.
"""

from __future__ import annotations

import copy
import logging
import time

import torch
from torch import nn

from core.data import DataConfig, make_loaders
from core.finetune import HeadOnly
from core.model import backbone_preprocessing, build_backbone
from core.train import evaluate, train_one_epoch
from experiments.bench.common import BenchConfig, SectionResult, compare, synchronize, write_photo_dataset

log = logging.getLogger(__name__)

ARCH = "mobilenet_v2"


def _epoch(model: nn.Module, strategy: HeadOnly, optimizer, loaders, view, device) -> float:
    model.train()
    strategy.apply_modes(model)
    net, data = (view.module, view) if view is not None else (model, loaders)
    stats = train_one_epoch(net, nn.CrossEntropyLoss(), optimizer, data.train, device, desc="bench")
    evaluate(net, data.val, device, desc="bench val")
    synchronize(device)
    return stats.loss


def bench_finetune(cfg: BenchConfig) -> SectionResult:
    """One head-only epoch (train + val) of MobileNetV2: backbone every epoch vs cached features."""
    size, batch = cfg.image_size or (64 if cfg.quick else 128), cfg.batch_size or 32
    per_class = 8 if cfg.quick else 64
    root = write_photo_dataset(cfg.work_dir / "finetune-photos", classes=5, train_per_class=per_class,
                               test_per_class=2)
    device = torch.device(cfg.device)
    prep = backbone_preprocessing(ARCH, "DEFAULT", size)
    loaders = make_loaders(DataConfig(data_dir=root, image_size=size, resize_size=prep.resize_size, batch_size=batch,
                                      normalization="imagenet", cache_dir=cfg.work_dir / "cache",
                                      device=device.type), preprocessing=prep)
    torch.manual_seed(0)
    base = build_backbone(ARCH, len(loaders.class_names), weights=None).to(device)
    sides = {}
    for name in ("baseline", "ours"):
        model = copy.deepcopy(base)
        strategy = HeadOnly()
        strategy.setup(model, quiet=True)
        optimizer = torch.optim.Adam([p for g in strategy.param_groups(model, 1e-3) for p in g["params"]], lr=1e-3)
        sides[name] = (model, strategy, optimizer)
    model, strategy, _ = sides["ours"]
    model.train()
    strategy.apply_modes(model)
    start = time.perf_counter()
    view = strategy.epoch_view(0, model, loaders, device=device)
    synchronize(device)
    build = time.perf_counter() - start
    if view is None:
        raise RuntimeError("the feature cache refused a head-only epoch without augmentation; see the log")

    losses = []
    for name in ("baseline", "ours"):  # same weights, same RNG state: same loss, or the fast path is wrong
        torch.manual_seed(1)
        m, s, o = sides[name]
        losses.append(_epoch(m, s, o, loaders, view if name == "ours" else None, device))
    if abs(losses[1] - losses[0]) > 1e-4 * max(abs(losses[0]), 1e-8):
        raise RuntimeError(f"refusing to time a wrong path: cached-feature epoch loss {losses[1]} != full "
                           f"forward {losses[0]}")

    items = len(loaders.train.dataset)
    comparison = compare(
        f"head-only epoch, {ARCH} {size}px, {items} train + {len(loaders.val.dataset)} val images",
        lambda: _epoch(*sides["baseline"], loaders, None, device),
        lambda: _epoch(*sides["ours"], loaders, view, device),
        items=items, repeats=cfg.repeats, warmup=cfg.warmup,
        baseline_label="full forward through the frozen backbone", ours_label="cached backbone features")
    baseline_seconds = comparison.summary()["baseline"]["seconds_median"]
    info = {"arch": ARCH, "image_size": size, "batch_size": batch, "train_images": items,
            "val_images": len(loaders.val.dataset), "cache_build_seconds": round(build, 3),
            "cache_build_in_baseline_epochs": round(build / baseline_seconds, 2), "first_epoch_losses": losses}
    return SectionResult([comparison], info)
