"""The flags the scripts share, defined once: the Part A CNN, data, training and device flags.

A flag's dest is its flat config key (:data:`core.partA.FLAT_KEYS`) and its help says the default of the config
the script passes in. Config flags default to "absent" (``argparse.SUPPRESS``), so only what the user typed
overrides that config.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.data import AUGMENT_DEVICES, AUGMENT_POLICIES, NORMALIZATIONS, PIPELINES
from core.devices import AMP_MODES, CHANNELS_LAST_MODES, COMPILE_MODES
from core.model import ACTIVATION_NAMES, CNNSpec, make_spec
from core.partA import FLAT_KEYS, MODEL_KEYS, PartAConfig
from core.train import MONITORS, OPTIMIZERS, SCHEDULERS, TRACKING_MODES

ON_OFF = argparse.BooleanOptionalAction


def _typed(key: str, flag: str, expected: str):
    """An argparse type that parses like the config does (:data:`FLAT_KEYS`), with the flag in its message."""
    def parse(text: str) -> Any:
        try:
            return FLAT_KEYS[key][2](key, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected {expected}") from None
    return parse


# flat key -> (flags, add_argument keywords, help; "{}" is replaced by the config's default)
SPEC_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "filters": (("--filters",), {"type": int}, "filters in the first conv block (default {})"),
    "organisation": (("--organisation", "--organization"),
                     {"type": _typed("organisation", "--organisation",
                                     "same|double|half or 5 comma-separated integers")},
                     "filters per block: same, double, half or 5 comma-separated counts (default {})"),
    "kernel_size": (("--kernel-size",), {"type": _typed("kernel_size", "--kernel-size",
                                                        "an int or 5 comma-separated ints")},
                    "conv kernel size: one int, or 5 comma-separated ints; padding is k//2 (default {})"),
    "activation": (("--activation",), {"type": str.lower},
                   f"activation after every conv and the dense layer: {', '.join(ACTIVATION_NAMES)} (default {{}})"),
    "batch_norm": (("--batch-norm",), {"action": ON_OFF}, "batch norm after every conv (default {})"),
    "dropout": (("--dropout",), {"type": float}, "dropout before the output layer, in [0, 1) (default {})"),
    "dense_units": (("--dense",), {"type": int}, "units in the dense layer (default {})"),
    "image_size": (("--image-size",), {"type": int}, "square input side in pixels (default {})"),
}
DATA_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "data_dir": (("--data-dir",), {"type": Path}, "dataset root with train/ and val/ (default: the generated "
                                                  "demo set)"),
    "max_per_class": (("--max-per-class",), {"type": int}, "use at most this many images per class (quick runs; "
                                                           "default: all)"),
    "batch_size": (("--batch-size",), {"type": int}, "images per batch (default {})"),
    "augment": (("--augment",), {"action": ON_OFF}, "random resized crop, flip and colour jitter on the "
                                                    "training split (default {})"),
    "crop_scale": (("--crop-scale",), {"type": float, "nargs": 2, "metavar": ("MIN", "MAX")},
                   "--augment: area range of the random-resized crop, as fractions (default {})"),
    "train_decode_ratio": (("--train-decode-ratio",), {"type": float},
                           "--augment: decode training images at this times the image size and crop from them "
                           "(ImageNet's 256/224 = 1.14; default {})"),
    "pipeline": (("--pipeline",), {"choices": PIPELINES},
                 "batched: whole batches gathered and augmented on the device; per_sample: DataLoader with "
                 "torchvision transforms per image (default {})"),
    "augment_device": (("--augment-device",), {"choices": AUGMENT_DEVICES},
                       "where batched augmentation runs; auto = the training device (default {})"),
    "augment_policy": (("--augment-policy",), {"choices": AUGMENT_POLICIES},
                       "per-image torchvision policy on top of (or instead of) --augment: TrivialAugmentWide or "
                       "RandAugment(2, 9); selects the per-sample DataLoader path (default {})"),
    "random_erasing": (("--random-erasing",), {"type": float},
                       "probability of erasing one random rectangle of each training image (default {})"),
    "resize_size": (("--resize-size",), {"type": int}, "short side before a centre crop (default: resize "
                                                       "straight)"),
    "val_fraction": (("--val-fraction",), {"type": float}, "fraction of train/ held out for validation "
                                                           "(default {})"),
    "split_seed": (("--split-seed",), {"type": int}, "seed of the stratified train/val split (default {})"),
    "num_workers": (("--num-workers",), {"type": int}, "DataLoader workers (default: chosen for the device)"),
    "normalization": (("--normalization",), {"choices": NORMALIZATIONS},
                      "mean/std of the training split (dataset) or ImageNet's (default {})"),
}
TRAIN_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "epochs": (("--epochs",), {"type": int}, "epochs (default {})"),
    "optimizer": (("--optimizer",), {"choices": OPTIMIZERS}, "optimizer (default {})"),
    "lr": (("--lr",), {"type": float}, "peak learning rate (default {})"),
    "weight_decay": (("--weight-decay",), {"type": float}, "weight decay on weights, not biases/BN (default {})"),
    "momentum": (("--momentum",), {"type": float}, "SGD momentum (default {})"),
    "nesterov": (("--nesterov",), {"action": ON_OFF}, "Nesterov SGD (default {})"),
    "scheduler": (("--scheduler",), {"choices": SCHEDULERS}, "LR schedule (default {})"),
    "warmup_epochs": (("--warmup-epochs",), {"type": float}, "linear LR warmup in epochs (default {})"),
    "step_size": (("--step-size",), {"type": int}, "'step' schedule: epochs between decays (default epochs//3)"),
    "gamma": (("--gamma",), {"type": float}, "'step'/'plateau' schedule: decay factor (default {})"),
    "plateau_patience": (("--plateau-patience",), {"type": int},
                         "'plateau' schedule: epochs without a val_loss improvement before a decay (default {})"),
    "label_smoothing": (("--label-smoothing",), {"type": float}, "label smoothing in [0, 1) (default {})"),
    "mixup_alpha": (("--mixup-alpha",), {"type": float},
                    "MixUp: mix each batch with Beta(a, a) weights, soft targets; 0 = off (default {})"),
    "cutmix_alpha": (("--cutmix-alpha",), {"type": float},
                     "CutMix: paste a Beta(a, a)-sized box between images; 0 = off; with --mixup-alpha too, each "
                     "batch gets one of the two (default {})"),
    "ema_decay": (("--ema-decay",), {"type": float},
                  "evaluate and checkpoint an EMA of the weights with this decay, e.g. 0.99; 0 = off (default {})"),
    "tta": (("--tta",), {"action": ON_OFF},
            "validation and test on the image and its horizontal flip, logits averaged (default {})"),
    "grad_clip": (("--grad-clip",), {"type": float}, "clip the global gradient norm to this (default: no clip)"),
    "patience": (("--patience",), {"type": int}, "early stopping: epochs without a gain of --monitor "
                                                 "(default: off)"),
    "monitor": (("--monitor",), {"choices": MONITORS},
                "what picks best.pt and drives early stopping (default {})"),
    "min_delta": (("--min-delta",), {"type": float}, "gain of --monitor that counts as improvement (default {})"),
    "seed": (("--seed",), {"type": int}, "seeds python, numpy, torch and the data order (default {})"),
    "device": (("--device",), {}, "auto | cpu | cuda | cuda:N (default {})"),
    "amp": (("--amp",), {"choices": AMP_MODES}, "mixed precision; auto = bf16/fp16 on CUDA, off on CPU "
                                                "(default {})"),
    "channels_last": (("--channels-last",), {"choices": CHANNELS_LAST_MODES}, "NHWC memory format (default {})"),
    "compile": (("--compile",), {"choices": COMPILE_MODES},
                "torch.compile the model; auto = on only where measured faster (default {})"),
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):  # a custom organisation, or the crop scale's two numbers
        return ",".join(map(str, value)) if all(isinstance(v, int) for v in value) else " ".join(map(_shown, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_flags(group: argparse._ArgumentGroup, table: Mapping[str, tuple[tuple[str, ...], dict[str, Any], str]],
              defaults: Mapping[str, Any], keys: Iterable[str] | None = None,
              help_overrides: Mapping[str, str] | None = None) -> None:
    """Add ``keys`` (default: all) of ``table`` to ``group``, defaulting to absent, each help with its default
    from ``defaults`` (flat key -> value) unless ``help_overrides`` gives the whole help."""
    overrides = help_overrides or {}
    for key in table if keys is None else keys:
        flags, kwargs, text = table[key]
        text = overrides.get(key) or text.replace("{}", _shown(defaults.get(key)))
        group.add_argument(*flags, dest=key, default=argparse.SUPPRESS, help=text, **kwargs)


def add_spec_flags(parser: argparse.ArgumentParser, defaults: Mapping[str, Any],
                   help_overrides: Mapping[str, str] | None = None) -> None:
    """The architecture flags of :func:`core.model.make_spec`, plus ``--in-channels`` / ``--num-classes``."""
    group = parser.add_argument_group("architecture (Part A CNN)")
    add_flags(group, SPEC_FLAGS, defaults, help_overrides=help_overrides)
    overrides = help_overrides or {}  # absent unless typed: partA_train only checks them against the data
    group.add_argument("--in-channels", type=int, default=argparse.SUPPRESS,
                       help=overrides.get("in_channels", "input channels (default 3, RGB)"))
    group.add_argument("--num-classes", type=int, default=argparse.SUPPRESS,
                       help=overrides.get("num_classes", "output classes (default 10)"))


def add_tracking_flags(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    group.add_argument("--wandb-mode", choices=TRACKING_MODES, default="auto",
                       help="W&B tracking: auto = online with W&B credentials, else offline into the run folder; "
                            "online, offline or disabled (default auto)")


def spec_from_args(args: argparse.Namespace) -> CNNSpec:
    """The spec the flags describe over :class:`PartAConfig`'s defaults; a bad combination raises ValueError."""
    flat = {**PartAConfig().to_flat(), **vars(args)}
    return make_spec(**{k: flat[k] for k in MODEL_KEYS}, image_size=flat["image_size"],
                     in_channels=getattr(args, "in_channels", 3), num_classes=getattr(args, "num_classes", 10))
