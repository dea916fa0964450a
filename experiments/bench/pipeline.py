"""The ``pipeline`` section of ``experiments/benchmark.py``: images/s of a whole augmented training epoch
(data + step), the batched device path against the per-sample DataLoader path, side by side in one process.

    python experiments/benchmark.py pipeline --data-dir ../shared/data/flowers5          # + the demo set
    python experiments/benchmark.py pipeline --device cuda --data-dir ../shared/data/flowers5

Baseline: ``pipeline="per_sample"`` and the loop before issue 16 (a read-back every step). Ours:
``pipeline="batched"`` + :func:`core.train.train_one_epoch`, also unaugmented (the CPU goal: augmented >= 90% of
that) and with ``--compile on``. Also data-only and step-only images/s from the same loaders, and on CUDA the
step's FLOP/s against the bf16 matmul peak. The defaults per device are the issue's goals (docs/performance.md).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from experiments.bench.common import BenchConfig, Comparison, SectionResult, compare_many, quiet_loggers, synchronize

log = logging.getLogger(__name__)

CPU_MODEL = {"filters": 16, "organisation": "double", "batch_norm": True, "dropout": 0.0, "dense_units": 256}
CUDA_MODEL = {"filters": 32, "organisation": "double", "batch_norm": True, "dropout": 0.0, "dense_units": 256}


def _old_loop(model, optimizer, loader, device, channels_last: bool, amp_dtype) -> None:
    """The training loop before issue 16: reads the loss and the correct count back every step."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    total, correct = 0.0, 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
            loss = criterion(logits, targets)
        total += loss.item() * len(targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += int((logits.detach().argmax(1) == targets).sum())


class _Side:
    """One path: its loaders, a model copy and optimizer, and the epoch / data-only / step-only callables."""

    def __init__(self, loaders, model: nn.Module, device: torch.device, *, new_loop: bool, compile_: bool = False):
        from core.devices import resolve_amp, resolve_channels_last
        from core.train import default_param_groups, make_optimizer, train_one_epoch

        self.loaders, self.device = loaders, device
        self.amp = resolve_amp("auto", device)
        self.channels_last = resolve_channels_last("auto", device)
        self.model = model.to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer("adam", default_param_groups(self.model, 1e-3, 0.0), lr=1e-3)
        self.runner = torch.compile(self.model) if compile_ else self.model
        self.new_loop, self._train = new_loop, train_one_epoch

    def epoch(self) -> None:
        if self.new_loop:
            self.runner.train()
            self._train(self.runner, nn.CrossEntropyLoss(), self.optimizer, self.loaders.train, self.device,
                        amp_dtype=self.amp, channels_last=self.channels_last, desc="bench")
        else:
            _old_loop(self.runner, self.optimizer, self.loaders.train, self.device, self.channels_last, self.amp)
        synchronize(self.device)

    def data_only(self) -> None:
        for images, _ in self.loaders.train:
            images.to(self.device, non_blocking=True)
        synchronize(self.device)

    def steps(self, batch, count: int):
        images, targets = batch
        loader = [(images.to(self.device), targets.to(self.device))] * count

        def run() -> None:
            self.runner.train()
            self._train(self.runner, nn.CrossEntropyLoss(), self.optimizer, loader, self.device, amp_dtype=self.amp,
                        channels_last=self.channels_last, desc="bench")
            synchronize(self.device)
        return run


def _loaders(root: Path | None, size: int, batch: int, device: torch.device, cache: Path, **kw):
    from core.data import DataConfig, make_loaders

    return make_loaders(DataConfig(data_dir=root, image_size=size, batch_size=batch, device=str(device),
                                   cache_dir=cache, normalization="imagenet", **kw))


def _dataset_rows(name: str, root: Path | None, cfg: BenchConfig, device: torch.device, size: int, batch: int,
                  knobs: dict) -> tuple[list[Comparison], dict]:
    from core.model import build_cnn, make_spec

    cache = cfg.work_dir / "cache"
    paths = {"per-sample + aug": dict(pipeline="per_sample", augment=True),
             "batched + aug": dict(pipeline="batched", augment=True),
             "batched, no aug": dict(pipeline="batched", augment=False),
             "per-sample, no aug": dict(pipeline="per_sample", augment=False)}
    loaders = {k: _loaders(root, size, batch, device, cache, **v) for k, v in paths.items()}
    n = len(loaders["batched + aug"].train.dataset)
    spec = make_spec(image_size=size, num_classes=len(loaders["batched + aug"].class_names), **knobs)
    torch.manual_seed(0)
    model = build_cnn(spec)
    sides = {k: _Side(loaders[k], copy.deepcopy(model), device, new_loop=not k.startswith("per-sample + aug"))
             for k in paths}
    variants = {f"{k} (train_one_epoch)": sides[k].epoch for k in list(paths)[1:]}
    if not cfg.quick:
        sides["batched + aug, --compile on"] = _Side(loaders["batched + aug"], copy.deepcopy(model), device,
                                                     new_loop=True, compile_=True)
        start = time.perf_counter()
        sides["batched + aug, --compile on"].epoch()  # compiles (train graph); timed rounds follow
        compile_seconds = time.perf_counter() - start
        variants["batched + aug, --compile on (after compiling)"] = sides["batched + aug, --compile on"].epoch
    label = f"{name}: full augmented training epoch ({n} images, {size}px, batch {batch})"
    comps = compare_many(label, sides["per-sample + aug"].epoch, variants, items=n, repeats=cfg.repeats,
                         warmup=cfg.warmup, baseline_label="per-sample DataLoader + v2 aug, loss.item() per step")
    info: dict = {"train_images": n, "image_size": size, "batch_size": batch, "model": knobs}
    if not cfg.quick:
        info["compile_seconds_first_epoch"] = round(compile_seconds, 1)
    by = {c.ours_label: statistics.median(c.ours) for c in comps}
    aug, noaug = by["batched + aug (train_one_epoch)"], by["batched, no aug (train_one_epoch)"]
    info["batched_aug_over_noaug"] = aug / noaug
    info["baseline_aug_over_noaug"] = statistics.median(comps[0].baseline) / by["per-sample, no aug (train_one_epoch)"]
    comps[0].extra = {"augmented_over_unaugmented": {"batched": info["batched_aug_over_noaug"],
                                                     "per_sample": info["baseline_aug_over_noaug"]}}
    batch0 = next(iter(loaders["batched, no aug"].train))
    split = compare_many(f"{name}: data only (no step) vs step only (batch on the device)",
                         sides["per-sample + aug"].data_only,
                         {"batched + aug, data only": sides["batched + aug"].data_only,
                          "step only (one batch, 5 steps)": sides["batched, no aug"].steps(batch0, 5)},
                         items=n, repeats=cfg.repeats, warmup=cfg.warmup,
                         baseline_label="per-sample + aug, data only")
    split[1].items = 5 * batch
    split[1].ours = [x / n * 5 * batch for x in split[1].ours]  # 5 steps of one batch, not an epoch
    split[1].ours_cpu = [x / n * 5 * batch for x in split[1].ours_cpu]
    return [*comps, *split], info


def bench_pipeline(cfg: BenchConfig) -> SectionResult:
    """Both datasets, both paths; on CUDA also the step's fraction of the bf16 matmul peak."""
    from core.data import ensure_demo_dataset
    from core.model import count_flops, make_spec
    from core.train import keep_freed_memory
    from experiments.bench.train import STEP_FLOPS_FACTOR, measure_matmul_peak

    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    size = cfg.image_size or (32 if cfg.quick else (224 if cuda else 64))
    batch = cfg.batch_size or (16 if cfg.quick else 64)
    knobs = dict(CUDA_MODEL if cuda else CPU_MODEL)
    if cfg.quick:
        knobs["filters"] = 4
    roots = {}
    if cfg.data_dir is not None:
        roots[f"real photos ({Path(cfg.data_dir).name})"] = Path(cfg.data_dir)
    roots["demo set"] = ensure_demo_dataset(cfg.work_dir / "demo", train_per_class=10, val_per_class=2) \
        if cfg.quick else ensure_demo_dataset()
    comparisons, info = [], {"device": str(device), "datasets": {}}
    with quiet_loggers("core.data.loaders", "core.data.batching", "core.data.decode_cache"), keep_freed_memory():
        for name, root in roots.items():
            comps, dinfo = _dataset_rows(name, root, cfg, device, size, batch, knobs)
            comparisons += comps
            info["datasets"][name] = dinfo
    if cuda:
        peak = measure_matmul_peak(device, n=8192, dtype=torch.bfloat16)
        step_flops = STEP_FLOPS_FACTOR * count_flops(make_spec(image_size=size, num_classes=10, **knobs))
        info["bf16_matmul_peak_gflops"] = round(peak / 1e9, 1)
        for c in comparisons:
            if "step only" in c.ours_label:
                c.extra = {"step_fraction_of_bf16_peak": statistics.median(c.ours) * step_flops / peak,
                           "train_flops_per_image": step_flops}
    return SectionResult(comparisons, info)
