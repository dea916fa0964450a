"""``TrainConfig``: every knob of the training loop, validated at construction (before any epoch runs).

Re-exported by ``core.train.trainer``; kept apart so configs can be built and checked without the loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from core.devices import AMP_MODES, CHANNELS_LAST_MODES, COMPILE_MODES
from core.train.optim import OPTIMIZERS, SCHEDULERS

__all__ = ["MONITORS", "TrainConfig"]

# what picks best.pt, worded as the summary line, the sweep's output and report and the docs say it
MONITORS = {"val_acc": "the epoch with the highest val_acc", "val_loss": "the epoch with the lowest val_loss"}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the training loop; validated at construction, before any epoch runs."""

    epochs: int = 10
    optimizer: str = "adam"  # adam | adamw | sgd | nadam
    lr: float = 1e-3
    weight_decay: float = 0.0  # applied to weights only, never to biases / norm scales
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    scheduler: str = "constant"  # constant | cosine | onecycle | step  (stepped per batch)
    warmup_epochs: float = 0.0  # linear warmup (constant/cosine/step); onecycle: its rising fraction
    step_size: int | None = None  # "step": epochs between decays (None = epochs // 3)
    gamma: float = 0.1  # "step" and "plateau": decay factor
    plateau_patience: int = 2  # "plateau": epochs without a val_loss improvement before a decay
    label_smoothing: float = 0.0  # also applies to MixUp/CutMix soft targets
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) per batch; 0 = off (core.train.mixing)
    cutmix_alpha: float = 0.0  # CutMix Beta(alpha, alpha) per batch; 0 = off; both > 0: one of the two per batch
    ema_decay: float = 0.0  # EMA of the weights evaluates and is checkpointed; 0 = off (core.train.ema)
    tta: bool = False  # validation and test logits = mean over the image and its horizontal flip
    grad_clip: float | None = None  # max global grad norm; None = no clipping
    patience: int | None = None  # early stopping on the monitored metric; None = run all epochs
    min_delta: float = 0.0  # improvement of the monitored metric that counts
    monitor: str = "val_acc"  # val_acc | val_loss: what picks best.pt (and early stopping)
    seed: int = 0  # python, numpy, torch and data order
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto | bf16 | fp16 | off  (auto: CUDA bf16/fp16, CPU off)
    channels_last: str = "auto"  # auto | on | off
    compile: str = "auto"  # auto | on | off: torch.compile the model (auto: where measured faster, devices.py)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid; expected {expected}")

        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {list(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise bad("scheduler", f"one of {list(SCHEDULERS)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "a finite float > 0")
        for name in ("weight_decay", "momentum", "min_delta"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise bad(name, "a float >= 0")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise bad("nesterov", "False unless optimizer='sgd' with momentum > 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise bad("warmup_epochs", f"a number in [0, epochs={self.epochs})")
        if self.step_size is not None and (not isinstance(self.step_size, int) or self.step_size < 1):
            raise bad("step_size", "None or an int >= 1")
        if not isinstance(self.plateau_patience, int) or isinstance(self.plateau_patience, bool) \
                or self.plateau_patience < 0:
            raise bad("plateau_patience", "an int >= 0")
        if not 0 < self.gamma <= 1:
            raise bad("gamma", "a float in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a float in [0, 1)")
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value >= 0):
                raise bad(name, "a float >= 0 (0 = off; 0.2-1.0 is usual)")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise bad("ema_decay", "a float in [0, 1) (0 = off; 0.99-0.9999 is usual)")
        if not isinstance(self.tta, bool):
            raise bad("tta", "True or False")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "None or a float > 0")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad("patience", "None or an int >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise bad("seed", "a non-negative int")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"one of {list(AMP_MODES)}")
        if self.monitor not in MONITORS:
            raise bad("monitor", f"one of {list(MONITORS)}")
        if self.compile not in COMPILE_MODES:
            raise bad("compile", f"one of {list(COMPILE_MODES)}")
        if self.channels_last not in CHANNELS_LAST_MODES:
            raise bad("channels_last", f"one of {list(CHANNELS_LAST_MODES)}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)
