"""The ``sweep`` section of ``experiments/benchmark.py``: wall time of a 4-trial x 2-epoch Part A sweep on a
generated dataset of 800x600 JPEGs, ours (:func:`core.sweep.run_sweep`, local backend) vs four notebook-style runs
(PIL full decode every epoch, NCHW fp32 eager Adam, a new decode per trial).

Each of ours' sweeps starts cold (a new cache folder) and runs inside :func:`core.train.memory.keep_freed_memory`,
so the baseline timed next does not profit from its allocator policy; variants and baseline alternate per round.
Also: one epoch end to end from the runs themselves, and the scale-out rows (:mod:`experiments.bench.sweep_scale`).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.bench.common import (
    BenchConfig,
    Comparison,
    SectionResult,
    compare_many,
    quiet_loggers,
    synchronize,
    write_photo_dataset,
)

log = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "gelu", "silu", "mish")  # the 4 grid points: one knob, same cost model per trial


@dataclass(frozen=True)
class SweepWorkload:
    """What both sides run: the dataset and the Part A settings of every trial (the grid is ``activations``)."""

    root: Path
    image_size: int
    batch_size: int
    epochs: int = 2
    filters: int = 32
    organisation: str = "same"
    lr: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    activations: tuple[str, ...] = ACTIVATIONS


def _part_a_configs(w: SweepWorkload, device: torch.device, cache_dir: Path | None = None, amp: str = "auto"):
    """(base config, one PartAConfig per trial), exactly as the sweep's trials build them."""
    from core.data import DataConfig
    from core.partA import PartAConfig
    from core.train import TrainConfig

    base = PartAConfig(filters=w.filters, organisation=w.organisation,
                       data=DataConfig(data_dir=w.root, image_size=w.image_size, batch_size=w.batch_size,
                                       val_fraction=w.val_fraction, seed=w.seed, cache_dir=cache_dir),
                       train=TrainConfig(epochs=w.epochs, lr=w.lr, seed=w.seed, device=str(device), amp=amp))
    return base, [PartAConfig.from_flat({"activation": a}, base) for a in w.activations]


# ---------------------------------------------------------------------------------------------- ours
@dataclass
class OursRun:
    epoch_seconds: list[list[float]]  # per trial, per epoch (train + val), from metrics.jsonl
    images_decoded: int
    misses: int


def run_ours(w: SweepWorkload, out_dir: Path, name: str, device: torch.device, amp: str = "auto") -> OursRun:
    """One full sweep from a cold decode cache into ``out_dir/name`` (``amp``: TrainConfig.amp of every trial)."""
    from core.data import cache_stats, reset_cache_stats
    from core.runfiles import read_jsonl
    from core.sweep import SweepSettings, parse_sweep_config, partA_program, run_sweep

    base, _ = _part_a_configs(w, device, cache_dir=out_dir / f"{name}-cache", amp=amp)
    cfg = parse_sweep_config({"name": name, "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
                              "parameters": {"activation": {"values": list(w.activations)}}})
    settings = SweepSettings(name=name, out_dir=out_dir, backend="local", tracker_mode="disabled", seed=w.seed)
    reset_cache_stats(forget_memory=True)
    summary = run_sweep(cfg, settings, partA_program(base))
    synchronize(device)
    states = [r.state for r in summary.records]
    if states != ["COMPLETE"] * len(w.activations):
        raise RuntimeError(f"benchmark sweep {name} did not complete all {len(w.activations)} trials: {states}")
    epochs = [[float(line["seconds"]) for line in read_jsonl(Path(r.run_dir) / "metrics.jsonl")]
              for r in sorted(summary.records, key=lambda r: r.number)]
    stats = cache_stats()
    return OursRun(epochs, stats.images_decoded, stats.misses)


# ------------------------------------------------------------------------------------------ baseline
@dataclass
class BaselineRun:
    epoch_seconds: list[list[float]]  # per trial, per epoch (train + val)
    images: dict[str, int]  # train / val / test sizes


def run_baseline(w: SweepWorkload, out_dir: Path, device: torch.device) -> BaselineRun:
    """The notebook way, once per configuration: every epoch decodes every JPEG again."""
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets
    from torchvision import transforms as T

    from core.data import IMAGENET_MEAN, IMAGENET_STD
    from core.model import build_cnn

    _, configs = _part_a_configs(w, device)
    tf = T.Compose([T.Resize((w.image_size, w.image_size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out_dir.mkdir(parents=True, exist_ok=True)
    criterion = nn.CrossEntropyLoss()
    all_epochs: list[list[float]] = []
    sizes: dict[str, int] = {}
    for trial, cfg in enumerate(configs):
        full = datasets.ImageFolder(w.root / "train", tf)  # a new dataset per trial: nothing is reused
        test = datasets.ImageFolder(w.root / "val", tf)
        n_val = max(1, round(len(full) * w.val_fraction))
        train, val = random_split(full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(w.seed))
        sizes = {"train": len(train), "val": len(val), "test": len(test)}
        train_loader = DataLoader(train, batch_size=w.batch_size, shuffle=True, num_workers=0)
        val_loader = DataLoader(val, batch_size=w.batch_size, num_workers=0)
        test_loader = DataLoader(test, batch_size=w.batch_size, num_workers=0)
        torch.manual_seed(w.seed)
        model = build_cnn(cfg.spec(num_classes=len(full.classes), image_size=w.image_size)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=w.lr)
        best, epochs = -1.0, []
        for _ in range(w.epochs):
            t0 = time.perf_counter()
            model.train()
            for images, targets in train_loader:
                images, targets = images.to(device), targets.to(device)
                optimizer.zero_grad()
                loss = criterion(model(images), targets)
                loss.backward()
                optimizer.step()
                loss.item()
            acc = _accuracy(model, val_loader, device)
            epochs.append(time.perf_counter() - t0)
            if acc > best:
                best = acc
                torch.save(model.state_dict(), out_dir / f"trial{trial}-best.pt")
        model.load_state_dict(torch.load(out_dir / f"trial{trial}-best.pt", weights_only=True))
        _accuracy(model, test_loader, device)
        all_epochs.append(epochs)
    return BaselineRun(all_epochs, sizes)


def _accuracy(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for images, targets in loader:
            logits = model(images.to(device))
            correct += int((logits.argmax(1).cpu() == targets).sum())
            seen += len(targets)
    return correct / max(seen, 1)


# ----------------------------------------------------------------------------------------- section
def _preload() -> None:
    """Import what either side imports lazily, so a timed call never pays a first import (matters with --quick,
    which has no warm-up round)."""
    import matplotlib.pyplot  # noqa: F401  (the sweep figures)
    import optuna  # noqa: F401
    import torchvision.datasets  # noqa: F401

    import core.partA  # noqa: F401
    import core.sweep  # noqa: F401  (its face loads the backends, figures and report)


@dataclass(frozen=True)
class SweepVariant:
    label: str
    amp: str = "auto"  # TrainConfig.amp of every trial
    keep_freed: bool = False  # the whole sweep inside keep_freed_memory(): fit's policy, undone afterwards
    policy_off: bool = False  # the whole sweep with INAT_CNN_KEEP_FREED_MEMORY=0 (fit leaves glibc alone)


@contextlib.contextmanager
def _policy_off():
    """``INAT_CNN_KEEP_FREED_MEMORY=0`` for one block, so ``fit`` leaves glibc's allocator alone."""
    import os

    from core.train import ENV_SWITCH

    before = os.environ.get(ENV_SWITCH)
    os.environ[ENV_SWITCH] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENV_SWITCH]
        else:
            os.environ[ENV_SWITCH] = before


def _variants(device: torch.device) -> list[SweepVariant]:
    """Ours with the trainer's defaults (on a glibc CPU: glibc keeps freed memory, as ``fit`` sets it, undone
    after each sweep); there also without that policy, and with the opt-in bf16."""
    from core.train import ENV_SWITCH, glibc, policy_enabled
    from experiments.bench.train import bf16_cpu_supported

    policy = device.type == "cpu" and glibc() is not None and policy_enabled()
    variants = [SweepVariant("defaults", keep_freed=policy)]
    if policy:
        variants.append(SweepVariant(f"defaults, {ENV_SWITCH}=0 (allocator untouched)", policy_off=True))
        if bf16_cpu_supported():
            variants.append(SweepVariant("--amp bf16", amp="bf16", keep_freed=True))
    return variants


def bench_sweep(cfg: BenchConfig) -> SectionResult:
    """Alternate whole sweeps (baseline, ours, ...) and derive the epoch-2+ comparison from the same runs."""
    from core.train import keep_freed_memory

    device = torch.device(cfg.device)
    size = cfg.image_size or (32 if cfg.quick else 224)
    batch = cfg.batch_size or (8 if cfg.quick else 32)
    classes, per_class, test_per_class = (2, 10, 2) if cfg.quick else (4, 30, 6)
    # a whole sweep per call: fewer rounds than the cheap sections (quick: one, no warm-up)
    repeats, warmup = (1, 0) if cfg.quick else (min(cfg.repeats, 3), min(cfg.warmup, 1))
    log.info("sweep: writing %d 800x600 JPEGs", classes * (per_class + test_per_class))
    root = write_photo_dataset(cfg.work_dir / "sweep-photos", classes=classes, train_per_class=per_class,
                               test_per_class=test_per_class)
    w = SweepWorkload(root=root, image_size=size, batch_size=batch)
    variants = _variants(device)
    ours_runs: dict[str, list[OursRun]] = {v.label: [] for v in variants}
    base_runs: list[BaselineRun] = []
    counter = iter(range(10**6))

    def ours(v: SweepVariant) -> Callable[[], None]:
        def run() -> None:
            with keep_freed_memory() if v.keep_freed else _policy_off() if v.policy_off else contextlib.nullcontext():
                ours_runs[v.label].append(run_ours(w, cfg.work_dir / "sweeps", f"bench{next(counter)}", device,
                                                   amp=v.amp))
        return run

    def baseline() -> None:
        base_runs.append(run_baseline(w, cfg.work_dir / "baseline", device))

    trials = len(w.activations)
    _preload()
    with quiet_loggers("core", "optuna", "matplotlib"):
        import optuna

        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            sweeps = compare_many(f"{trials}-trial x {w.epochs}-epoch sweep, {size}px", baseline,
                                  {v.label: ours(v) for v in variants}, items=trials, repeats=repeats, warmup=warmup,
                                  unit="trials/s",
                                  baseline_label="ImageFolder+PIL decode each epoch, NCHW fp32, per-trial decode")
        finally:
            optuna.logging.set_verbosity(verbosity)
    for comp in sweeps:
        comp.ours_label = f"run_sweep ({comp.ours_label}): decode cache once, our trainer, checkpoints + report"
    timed_base = base_runs[warmup:]
    sizes = base_runs[-1].images
    epoch_items = sizes["train"] + sizes["val"]
    epochs = []
    for v in variants:
        epoch = Comparison(f"one epoch end to end (train+val), epoch >= 2, {size}px: {v.label}",
                           "baseline epoch (decode every epoch)", f"ours (cached, {v.label})", epoch_items)
        epoch.baseline = [epoch_items / s for r in timed_base for t in r.epoch_seconds for s in t[1:]]
        epoch.ours = [epoch_items / s for r in ours_runs[v.label][warmup:] for t in r.epoch_seconds for s in t[1:]]
        epoch.extra = {"note": "runs = one per trial and epoch >= 2, from the timed sweeps; wall clock only"}
        epochs.append(epoch)
    timed = [r for v in variants for r in ours_runs[v.label][warmup:]]
    info = {"image_size": size, "batch_size": batch, "epochs": w.epochs, "trials": trials, "device": str(device),
            "grid": {"activation": list(w.activations)}, "model": {"filters": w.filters,
                                                                  "organisation": w.organisation},
            "classes": classes, "images": {**sizes, "source_size": [800, 600]}, "repeats": repeats,
            "warmup": warmup, "ours_images_decoded_per_sweep": sorted({r.images_decoded for r in timed}),
            "ours_cache_misses_per_sweep": sorted({r.misses for r in timed}),
            "baseline_images_decoded_per_sweep": trials * (w.epochs * epoch_items + sizes["test"]),
            "ours_epoch1_seconds_median": {v.label: statistics.median(t[0] for r in ours_runs[v.label][warmup:]
                                                                       for t in r.epoch_seconds) for v in variants}}
    from experiments.bench.sweep_scale import bench_sweep_scale

    with quiet_loggers("core", "optuna"):
        scale, info["scale_out"] = bench_sweep_scale(cfg)
    return SectionResult([*sweeps, *epochs, *scale], info)


__all__ = ["ACTIVATIONS", "BaselineRun", "OursRun", "SweepVariant", "SweepWorkload", "bench_sweep", "run_baseline",
           "run_ours"]
