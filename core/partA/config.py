# ruff: noqa: N999  (module named after the assignment part)
"""``PartAConfig``: one Part A run (CNN knobs + DataConfig + TrainConfig), and its flat form.

Sweeps and the CLI speak in flat keys (``lr``, ``filters``, ...). :func:`coerce_flat` is the one bridge, shared
with Part B's config: it coerces what sweep files and YAML produce (``"1e-3"``, ``3.0`` for an int, ``"true"``,
``"32,64,64,128,128"``) and refuses unknown keys, listing the known ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.data import DataConfig
from core.model import CNNKnobs, CNNSpec, make_spec
from core.train import TrainConfig

__all__ = ["FLAT_KEYS", "MODEL_KEYS", "RECOMMENDED_DATA", "RECOMMENDED_TRAIN", "WEIGHT_DECAY_FOR", "Coercer",
           "PartAConfig", "as_bool", "as_float", "as_int", "as_str", "coerce_flat", "optional"]

Coercer = Callable[[str, Any], Any]  # (flat key, value) -> the typed value, or a ValueError naming the key
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(CNNKnobs))


def as_int(key: str, v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{key}: expected an integer, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    if not isinstance(v, int):
        raise ValueError(f"{key}: expected an integer, got {v!r}")
    return v


def as_float(key: str, v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{key}: expected a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {v!r}") from None


def as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return v.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError(f"{key}: expected true/false, got {v!r}")


def as_str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v.strip().lower()


def optional(coerce: Coercer, zero_is_none: bool = False) -> Coercer:
    def inner(key: str, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null", "")):
            return None
        value = coerce(key, v)
        return None if zero_is_none and value == 0 else value

    return inner


def _int_or_list(key: str, v: Any) -> int | tuple[int, ...]:
    """One int, a list of ints, or a comma-separated string of ints."""
    if isinstance(v, str) and "," in v:
        v = [part for part in v.split(",")]
    if isinstance(v, (list, tuple)):
        return tuple(as_int(f"{key}[{i}]", x) for i, x in enumerate(v))
    return as_int(key, v)


def _organisation(key: str, v: Any) -> str | tuple[int, ...]:
    if isinstance(v, str) and "," not in v:
        return v.strip().lower()
    try:
        value = _int_or_list(key, v)
    except ValueError:
        value = None
    if not isinstance(value, tuple):
        raise ValueError(f"{key} {v!r}: expected same|double|half or 5 comma-separated integers")
    return value


def _float_pair(key: str, v: Any) -> tuple[float, float]:
    """Two numbers: a list/tuple, or a string ``"0.6,1"``."""
    if isinstance(v, str):
        v = [part for part in v.split(",")]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{key}: expected two numbers (min, max), got {v!r}")
    return (as_float(f"{key}[0]", v[0]), as_float(f"{key}[1]", v[1]))


def _path(key: str, v: Any) -> Path:
    if not isinstance(v, (str, Path)):
        raise ValueError(f"{key}: expected a folder path, got {v!r}")
    return Path(v).expanduser()


# flat key -> (section, field, coercer). "device" is the training device; run_partA gives the data loaders
# the resolved one (pinned memory, workers), so DataConfig.device needs no flat key.
FLAT_KEYS: dict[str, tuple[str, str, Coercer]] = {
    "filters": ("model", "filters", as_int),
    "organisation": ("model", "organisation", _organisation),
    "kernel_size": ("model", "kernel_size", _int_or_list),
    "activation": ("model", "activation", as_str),
    "batch_norm": ("model", "batch_norm", as_bool),
    "dropout": ("model", "dropout", as_float),
    "dense_units": ("model", "dense_units", as_int),
    "data_dir": ("data", "data_dir", optional(_path)),
    "image_size": ("data", "image_size", as_int),
    "resize_size": ("data", "resize_size", optional(as_int)),
    "val_fraction": ("data", "val_fraction", as_float),
    "split_seed": ("data", "seed", as_int),
    "batch_size": ("data", "batch_size", as_int),
    "num_workers": ("data", "num_workers", optional(as_int)),
    "augment": ("data", "augment", as_bool),
    "augment_policy": ("data", "augment_policy", as_str),
    "random_erasing": ("data", "random_erasing", as_float),
    "pipeline": ("data", "pipeline", as_str),
    "augment_device": ("data", "augment_device", as_str),
    "crop_scale": ("data", "crop_scale", _float_pair),
    "train_decode_ratio": ("data", "train_decode_ratio", as_float),
    "normalization": ("data", "normalization", as_str),
    "max_per_class": ("data", "max_per_class", optional(as_int)),
    "epochs": ("train", "epochs", as_int),
    "optimizer": ("train", "optimizer", as_str),
    "lr": ("train", "lr", as_float),
    "weight_decay": ("train", "weight_decay", as_float),
    "momentum": ("train", "momentum", as_float),
    "nesterov": ("train", "nesterov", as_bool),
    "scheduler": ("train", "scheduler", as_str),
    "warmup_epochs": ("train", "warmup_epochs", as_float),
    "step_size": ("train", "step_size", optional(as_int)),
    "gamma": ("train", "gamma", as_float),
    "plateau_patience": ("train", "plateau_patience", as_int),
    "label_smoothing": ("train", "label_smoothing", as_float),
    "mixup_alpha": ("train", "mixup_alpha", as_float),
    "cutmix_alpha": ("train", "cutmix_alpha", as_float),
    "ema_decay": ("train", "ema_decay", as_float),
    "tta": ("train", "tta", as_bool),
    "grad_clip": ("train", "grad_clip", optional(as_float, zero_is_none=True)),
    "patience": ("train", "patience", optional(as_int, zero_is_none=True)),
    "min_delta": ("train", "min_delta", as_float),
    "monitor": ("train", "monitor", as_str),
    "seed": ("train", "seed", as_int),
    "amp": ("train", "amp", as_str),
    "channels_last": ("train", "channels_last", as_str),
    "compile": ("train", "compile", as_str),
    "device": ("train", "device", as_str),
}


def coerce_flat(params: Mapping[str, Any], keys: Mapping[str, tuple[str, str, Coercer]],
                what: str) -> dict[str, dict[str, Any]]:
    """``{section: {field: typed value}}`` for flat ``params`` read through ``keys`` (key -> section, field,
    coercer); an unknown key is a ValueError listing the known ones."""
    unknown = sorted(str(k) for k in params if k not in keys)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s) {unknown}; known keys: {sorted(keys)}")
    out: dict[str, dict[str, Any]] = {section: {} for section, _, _ in keys.values()}
    for key, value in params.items():
        section, name, coerce = keys[key]
        out[section][name] = coerce(key, value)
    return out


# The recommended Part A recipe is PartAConfig's defaults, so partA_train.py, every sweep trial and the demo get
# it for whatever a flag or a sweep key does not set. Chosen by whole runs on real photos against the peers'
# pipeline, then by a search over the sweep's whole space: docs/results.md, "How the defaults were chosen".
RECOMMENDED_DATA: dict[str, Any] = {"augment": True, "train_decode_ratio": 1.15, "batch_size": 32}
# weight decay that goes with each optimizer when a flag or sweep key changes the optimizer but not the decay:
# AdamW's is decoupled (0.1 here), for Adam/NAdam/SGD it is an L2 penalty (0.1 would swamp the loss).
WEIGHT_DECAY_FOR: dict[str, float] = {"adamw": 0.1, "adam": 0.0, "nadam": 0.0, "sgd": 5e-4}
RECOMMENDED_TRAIN: dict[str, Any] = {"optimizer": "adamw", "lr": 5.19e-4, "weight_decay": 0.1, "scheduler": "cosine",
                                     "warmup_epochs": 0.5, "label_smoothing": 0.0, "monitor": "val_loss"}


@dataclass(frozen=True)
class PartAConfig(CNNKnobs):
    """One Part A run: the CNN knobs plus the data and training configs (defaults: the recommended recipe, see
    :data:`RECOMMENDED_DATA` / :data:`RECOMMENDED_TRAIN`)."""

    data: DataConfig = field(default_factory=lambda: DataConfig(**RECOMMENDED_DATA))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**RECOMMENDED_TRAIN))

    def __post_init__(self) -> None:
        for name in ("organisation", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.spec(num_classes=2)  # validate the architecture against the image size now

    def spec(self, num_classes: int, image_size: int | None = None) -> CNNSpec:
        """The CNN spec for ``num_classes`` outputs (image size from the data config unless given)."""
        return make_spec(filters=self.filters, organisation=self.organisation, kernel_size=self.kernel_size,
                         activation=self.activation,
                         batch_norm=self.batch_norm, dropout=self.dropout, dense_units=self.dense_units,
                         image_size=image_size or self.data.image_size, in_channels=3, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        """``{"model": {...}, "data": {...}, "train": {...}}`` of plain data (config.yaml's ``config``)."""
        model = {k: (list(v) if isinstance(v := getattr(self, k), tuple) else v) for k in MODEL_KEYS}
        return {"model": model, "data": self.data.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartAConfig:
        """Inverse of :meth:`to_dict` (e.g. a run folder's saved config); unknown keys are errors."""
        unknown = sorted(set(data) - {"model", "data", "train"})
        if unknown:
            raise ValueError(f"unknown PartAConfig sections {unknown}; expected 'model', 'data', 'train'")
        model = dict(data.get("model", {}))
        bad = sorted(set(model) - set(MODEL_KEYS))
        if bad:
            raise ValueError(f"unknown model keys {bad}; expected some of {list(MODEL_KEYS)}")
        data_fields = {f.name for f in dataclasses.fields(DataConfig)}
        bad = sorted(set(data.get("data", {})) - data_fields)
        if bad:
            raise ValueError(f"unknown data keys {bad}; expected some of {sorted(data_fields)}")
        return cls(**model, data=DataConfig(**data.get("data", {})), train=TrainConfig.from_dict(data.get("train", {})))

    def to_flat(self) -> dict[str, Any]:
        """Every flat key with this config's value: ``from_flat(cfg.to_flat()) == cfg``."""
        sections = {"model": self, "data": self.data, "train": self.train}
        return {key: getattr(sections[section], name) for key, (section, name, _) in FLAT_KEYS.items()}

    @classmethod
    def from_flat(cls, params: Mapping[str, Any], base: PartAConfig | None = None) -> PartAConfig:
        """Override ``base`` (default: all defaults) with flat sweep/CLI keys (see :data:`FLAT_KEYS`).

        One coupling: a new ``optimizer`` without a ``weight_decay`` brings its own decay
        (:data:`WEIGHT_DECAY_FOR`) when the base still has its optimizer's, so ``--optimizer adam`` does not
        inherit AdamW's decoupled 0.05 as an L2 penalty.
        """
        base = base if base is not None else cls()
        updates = coerce_flat(params, FLAT_KEYS, "Part A")
        data = replace(base.data, **updates["data"])
        opt = updates["train"].get("optimizer")
        if opt is not None and "weight_decay" not in updates["train"] \
                and base.train.weight_decay == WEIGHT_DECAY_FOR.get(base.train.optimizer):
            updates["train"]["weight_decay"] = WEIGHT_DECAY_FOR.get(opt, base.train.weight_decay)  # follows it
        train = replace(base.train, **updates["train"])
        return replace(base, **updates["model"], data=data, train=train)
