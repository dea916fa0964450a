"""Training throughput of the ``accuracy`` rows, measured side by side: one epoch (data + step) per row per round.

Why a separate measurement: the accuracy runs take many minutes each and run one after another, so on a machine
shared with other jobs their own images/s reflect the load of the moment as much as the code. Here every row's
training pass (its pipeline, its model, its optimizer; no validation) is timed in the same rounds, alternating
the order (``experiments/bench/common.py``'s method), so the ratios compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from experiments.bench.common import Comparison, compare_many

__all__ = ["epoch_runner", "time_rows"]


def _peer_runner(row, data_dir: Path, size: int, workers: int) -> tuple[Callable[[], object], int]:
    from core.data import DataConfig, make_loaders
    from core.model import build_cnn, make_spec
    from experiments.bench.peer import peer_init, peer_loaders, peer_optimizer, peer_train_epoch

    split = make_loaders(DataConfig(data_dir=data_dir, image_size=size))
    samples = {name: list(getattr(split, name).dataset.samples) for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model_keys = {k: v for k, v in row.flat.items() if k in ("filters", "organisation", "kernel_size", "activation",
                                                            "batch_norm", "dense_units", "dropout")}
    model = peer_init(build_cnn(make_spec(**model_keys, image_size=size, num_classes=len(split.class_names))))
    loader = peer_loaders(samples, size, row.flat["batch_size"], 0, num_workers=workers)["train"]
    optimizer, criterion = peer_optimizer(model, row.flat["lr"], row.flat["weight_decay"]), nn.CrossEntropyLoss()
    return (lambda: peer_train_epoch(model, loader, optimizer, criterion)), len(samples["train"])


def _our_runner(row, data_dir: Path, size: int, transform) -> tuple[Callable[[], object], int]:
    from core.data import make_loaders
    from core.devices import resolve_channels_last, resolve_device
    from core.model import build_cnn
    from core.partA import PartAConfig
    from core.train import default_param_groups, make_optimizer, train_one_epoch

    cfg = PartAConfig.from_flat({**row.flat, "data_dir": data_dir, "image_size": size, "device": "cpu"})
    t, device = cfg.train, resolve_device("cpu")
    loaders = make_loaders(cfg.data)
    if transform is not None:
        loaders.train.dataset.transform = transform(loaders.preprocessing)
    torch.manual_seed(0)
    model = build_cnn(cfg.spec(len(loaders.class_names), loaders.preprocessing.image_size))
    channels_last = resolve_channels_last(t.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(t.optimizer, default_param_groups(model, t.lr, t.weight_decay), lr=t.lr,
                               weight_decay=t.weight_decay, momentum=t.momentum, nesterov=t.nesterov)
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

    def run() -> object:
        model.train()
        return train_one_epoch(model, criterion, optimizer, loaders.train, device, channels_last=channels_last,
                               desc="throughput")
    return run, len(loaders.train.dataset)


def epoch_runner(row, data_dir: Path, size: int, workers: int, transform=None) -> tuple[Callable[[], object], int]:
    """(one training epoch of ``row``, images per epoch); ``transform(prep)`` replaces our training transform."""
    if row.pipeline == "peer":
        return _peer_runner(row, data_dir, size, workers)
    return _our_runner(row, data_dir, size, transform)


def time_rows(rows: dict, data_dir: Path, size: int, workers: int, *, repeats: int, warmup: int,
              transforms: dict) -> list[Comparison]:
    """One training epoch per row per round, the first row as the baseline of the others."""
    runners = {key: epoch_runner(row, data_dir, size, workers, transforms.get(key)) for key, row in rows.items()}
    (base_key, (base, items)), *others = runners.items()
    return compare_many("one training epoch (data + step)", base, {k: run for k, (run, _) in others}, items=items,
                        repeats=repeats, warmup=warmup, baseline_label=base_key)
