# ruff: noqa: N999  (module named after the assignment part, like core/partA/run.py)
"""One Part B run, composed: pretrained backbone + fine-tuning strategy + ``core.train.trainer.fit`` + test metrics.

``run_partB`` writes the same run folder as ``run_partA``, so evaluation, export and sweep tools read it
unchanged. The backbone (and so its weights: cache, download or the error naming the file to place) comes
*before* the data is decoded. :meth:`PartBConfig.from_flat` takes the flat keys of :data:`PARTB_KEYS`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision

from core.data import DataConfig, Preprocessing, make_loaders
from core.explain import evaluate_best_on_test
from core.finetune.strategies import FinetuneStrategy, count_parameters, make_strategy
from core.model import backbone_preprocessing, build_backbone, family_of, layout_of, measured_flops, replace_head
from core.partA import FLAT_KEYS, Coercer, as_bool, as_float, as_int, as_str, coerce_flat, optional
from core.runfiles import own_run_folder, write_yaml
from core.train import RunResult, TrainConfig, fit

logger = logging.getLogger(__name__)

# flat key -> (section, field, coercer): the strategy's own keys, then the data and training keys Part B takes
PARTB_KEYS: dict[str, tuple[str, str, Coercer]] = {
    "arch": ("top", "arch", as_str), "strategy": ("top", "strategy", as_str), "k": ("top", "k", as_int),
    "unfreeze_every": ("top", "unfreeze_every", as_int), "backbone_lr_mult": ("top", "backbone_lr_mult", as_float),
    "bn_eval": ("top", "bn_eval", as_bool), "weights": ("top", "weights", optional(lambda key, v: str(v))),
    "image_size": ("top", "image_size", optional(as_int)), "lp_epochs": ("top", "lp_epochs", as_int),
    "layer_decay": ("top", "layer_decay", optional(as_float)), "feature_cache": ("top", "feature_cache", as_bool),
    **{k: FLAT_KEYS[k] for k in ("data_dir", "augment", "augment_policy", "random_erasing", "batch_size",
                                 "max_per_class", "lr", "weight_decay", "optimizer", "epochs", "scheduler",
                                 "warmup_epochs", "label_smoothing", "mixup_alpha", "cutmix_alpha", "ema_decay",
                                 "tta", "patience", "seed", "device")},
}
PARTB_FLAT_KEYS = tuple(PARTB_KEYS)


@dataclass(frozen=True)
class PartBConfig:
    """Everything one Part B run needs; validated at construction, before any weights or data are touched."""

    arch: str = "vgg16"
    strategy: str = "head"  # head | top-k | full | gradual | lp-ft | layer-decay (core.finetune.strategies)
    k: int = 2  # top-k: blocks unfrozen from the top (see core.model.backbones for the blocks per family)
    unfreeze_every: int = 1  # gradual: epochs between two unfreezings
    lp_epochs: int = 1  # lp-ft: epochs of linear probing (head only) before everything fine-tunes
    layer_decay: float | None = None  # block i of n at lr * layer_decay**(n - i); layer-decay: None = 0.75
    feature_cache: bool = True  # head-only epochs without augmentation train on cached backbone features
    backbone_lr_mult: float = 0.1  # backbone LR = lr * this; the new head trains at lr (lp-ft: FT phase LR)
    bn_eval: bool = False  # keep every BatchNorm in eval mode (folded-BN weights); frozen BN always is
    weights: str | None = "DEFAULT"  # DEFAULT | a torchvision weights name | None (random init)
    weights_file: Path | None = None  # state dict of the 1000-class model (then weights must be None)
    image_size: int | None = None  # None = the weights' own crop size (224 for most)
    data: DataConfig = field(default_factory=lambda: DataConfig(normalization="imagenet"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", str(self.arch).lower())
        family_of(self.arch)  # unknown arch -> ValueError listing the supported ones
        if isinstance(self.weights, str) and self.weights.lower() == "none":
            object.__setattr__(self, "weights", None)
        if self.weights_file is not None:
            object.__setattr__(self, "weights_file", Path(self.weights_file).expanduser())
            if self.weights is not None:
                raise ValueError(f"weights={self.weights!r} and weights_file={str(self.weights_file)!r} "
                                 "both given; pass one (weights=None with a weights file)")
        self.make_strategy()  # unknown strategy / bad k / bad unfreeze_every fail here
        self.preprocessing()  # unknown weights name / impossible image size fail here

    def make_strategy(self) -> FinetuneStrategy:
        return make_strategy(self.strategy, k=self.k, unfreeze_every=self.unfreeze_every,
                             backbone_lr_mult=self.backbone_lr_mult, bn_eval=self.bn_eval, lp_epochs=self.lp_epochs,
                             layer_decay=self.layer_decay, feature_cache=self.feature_cache)

    def preprocessing(self) -> Preprocessing:
        """The weights' resize/crop/mean/std, at ``image_size`` when given."""
        return backbone_preprocessing(self.arch, self.weights, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "train")}
        d["weights_file"] = None if self.weights_file is None else str(self.weights_file)
        return {**d, "data": self.data.to_dict(), "train": self.train.to_dict()}

    def to_flat(self) -> dict[str, Any]:
        """Every flat key (:data:`PARTB_KEYS`) with this config's value."""
        sections = {"top": self, "data": self.data, "train": self.train}
        return {key: getattr(sections[section], name) for key, (section, name, _) in PARTB_KEYS.items()}

    @classmethod
    def from_flat(cls, params: Mapping[str, Any], base: PartBConfig | None = None) -> PartBConfig:
        """A config from flat sweep/CLI keys over ``base``, coerced as Part A's are; ``seed`` also seeds the
        split (one seed, as the CLI has always had)."""
        updates = coerce_flat(params, PARTB_KEYS, "Part B")
        base = base or cls()
        data = dataclasses.replace(base.data, **updates["data"])
        if "seed" in updates["train"]:
            data = dataclasses.replace(data, seed=updates["train"]["seed"])
        train = dataclasses.replace(base.train, **updates["train"])
        return dataclasses.replace(base, **updates["top"], data=data, train=train)


@dataclass(frozen=True)
class PartBRun:
    """One Part B run: the training result every run shares, plus what only fine-tuning has to say."""

    name: str
    arch: str
    strategy: str
    trainable_params: int  # at epoch 0
    final_trainable_params: int  # after the last epoch (grows with gradual)
    seconds_per_epoch: float
    result: RunResult  # parameter_count = all parameters of the backbone with its new head


def run_partB(cfg: PartBConfig, run_dir: Path | str, *, tracker_mode: str = "auto",  # noqa: N802
              name: str | None = None, group: str | None = None, resume: bool = False,
              on_epoch_end: Any = None, stop: Any = None) -> PartBRun:
    """Build, fine-tune and test one backbone/strategy; writes the run folder (see module docstring).

    ``stop`` (a ``core.train.StopRequest``) ends training before the next batch, as in ``run_partA``.
    """
    from core.devices import check_batch_fits, resolve_device
    from core.train import Tracker, check_run_start, seed_everything, stop_after_training

    run_dir = Path(run_dir)
    name = name or run_dir.name
    device = resolve_device(cfg.train.device)
    prep = cfg.preprocessing()
    seed_everything(cfg.train.seed)  # random init (weights none) and the new head; fit re-seeds the rest
    model = build_backbone(cfg.arch, None, weights=cfg.weights, weights_file=cfg.weights_file)
    layout = layout_of(model)
    strategy = cfg.make_strategy()
    strategy.validate(layout)  # e.g. k larger than the block count: fail before decoding data
    with torch.device("meta"):  # what a training batch keeps (the epoch-0 trainable blocks), before any decode
        twin = torchvision.models.get_model(cfg.arch, num_classes=2)  # the architecture alone: no weights, no log
        cfg.make_strategy().setup(twin, quiet=True)
        check_batch_fits(twin, (cfg.data.batch_size, 3, prep.image_size, prep.image_size), device)
    data_cfg = dataclasses.replace(cfg.data, image_size=prep.image_size, resize_size=prep.resize_size,
                                   normalization="imagenet", device=str(device))
    loaders = make_loaders(data_cfg, preprocessing=prep)
    num_classes = len(loaders.class_names)
    replace_head(model, layout, num_classes)
    model_desc = {"kind": "backbone", "arch": cfg.arch, "num_classes": num_classes}
    with own_run_folder(run_dir):  # inputs checked above; a second process here is refused before any write
        check_run_start(run_dir, resume, model_desc, cfg.train)  # again under the lock: refuse before any write
        loaders.write_split(run_dir)
        strategy.setup(model, quiet=True)  # fit() repeats it on the device; here it gives the epoch-0 counts
        counts = count_parameters(model)
        flops = measured_flops(model, (1, 3, prep.image_size, prep.image_size))
        resolved = {**cfg.to_dict(), "data": data_cfg.to_dict(), "preprocessing": prep.to_dict(),
                    "strategy_detail": strategy.describe(), "class_names": loaders.class_names,
                    "params": {"trainable": counts.trainable, "total": counts.total}}
        write_yaml(run_dir / "config.yaml", resolved)
        meta = {"model_desc": model_desc, "class_names": loaders.class_names, "preprocessing": prep.to_dict(),
                "extra": {"partB": strategy.describe()}}
        # the context manager finishes the W&B run with exit code 0, 130 (Ctrl-C) or 1 (any other error)
        with Tracker.start(run_dir=run_dir, name=name, config=resolved, group=group, job_type="partB",
                           mode=tracker_mode, tags=("partB", cfg.arch, cfg.strategy), resume=resume) as tracker:
            result = fit(model, loaders, cfg.train, run_dir=run_dir, checkpoint_meta=meta, tracker=tracker,
                         strategy=strategy, resume=resume, on_epoch_end=on_epoch_end, device=device, stop=stop)
            result = stop_after_training(dataclasses.replace(result, parameter_count=counts.total, flops=flops), stop)
            if result.best_path is not None and not result.pruned:
                test_acc, test_loss = evaluate_best_on_test(model, loaders, model_desc, result, device, run_dir,
                                                            tta=cfg.train.tta)
                result = dataclasses.replace(result, test_acc=test_acc, test_loss=test_loss)
            seconds = [h["seconds"] for h in result.history]
            out = PartBRun(name, cfg.arch, cfg.strategy, counts.trainable, count_parameters(model).trainable,
                           sum(seconds) / len(seconds) if seconds else math.nan, result)
            # the summary's val_acc is what a W&B sweep optimises: the best epoch's, as the local backend does
            tracker.set_summary({**result.metrics(), "trainable_params": out.trainable_params,
                                 "total_params": counts.total, "flops": flops,
                                 "seconds_per_epoch": out.seconds_per_epoch})
            if result.pruned:
                tracker.mark_stopped(result.stopped_reason or "stopped")
        logger.info("%s: test_acc %s  best val_acc %.1f%% at epoch %d  trainable %d / %d", name,
                    "-" if result.test_acc is None else f"{100 * result.test_acc:.1f}%", 100 * result.best_val_acc,
                    result.best_epoch, out.trainable_params, counts.total)
        return out
