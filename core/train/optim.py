"""Optimizers and learning-rate schedules by name, as the sweep and the CLI spell them: two registries
(``OPTIMIZERS``, ``SCHEDULERS``: name -> factory). Adding one is a function and a decorator line::

    @register_optimizer("radam")
    def radam(groups, *, lr, weight_decay, **_):
        return torch.optim.RAdam(groups, lr=lr, weight_decay=weight_decay)

Schedules are one small class, :class:`LRSchedule`, stepped per *batch*: each group's LR is its own base LR
times ``f(step)``. Owning this instead of torch's schedulers keeps what gradual unfreezing needs: a group
added mid-training joins the schedule with its LR as base, where torch's schedulers ignore it. ``plateau``
follows ``ReduceLROnPlateau`` (mode min, no cooldown) from the validation loss :meth:`LRSchedule.observe`
gets; ``onecycle`` follows ``OneCycleLR``'s LR shape (no momentum cycling). The formulas: docs/training.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from core.registry import lookup, registrar

__all__ = ["OPTIMIZERS", "SCHEDULERS", "LRSchedule", "default_param_groups", "make_optimizer", "register_optimizer",
           "register_scheduler"]

# name -> factory(groups, *, lr, weight_decay, momentum, nesterov, fused) -> torch.optim.Optimizer
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {}
# name -> multiplier(schedule, step) -> the LR factor of batch ``step``
SCHEDULERS: dict[str, Callable[[LRSchedule, int], float]] = {}
PLATEAU_THRESHOLD = 1e-4  # relative improvement that counts (ReduceLROnPlateau's default, mode "min", rel)

ONECYCLE_DIV = 25.0  # initial LR = max / 25, as torch's OneCycleLR
ONECYCLE_FINAL_DIV = 1e4  # final LR = initial / 1e4


def default_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weights (decayed) and biases/norm scales (never decayed).

    Decaying BatchNorm scales and biases only shrinks them toward zero with no regularising effect
    (the common practice in timm and the torchvision references).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (all requires_grad=False); "
                         "unfreeze something or pass a fine-tuning strategy that does")
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(name: str, param_groups: Iterable[dict[str, Any]], *, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """Build an optimizer by name; groups may carry their own ``lr``/``weight_decay``.

    ``adam`` and ``nadam`` add ``weight_decay`` to the gradient (L2); ``adamw`` decouples it.
    ``adam``, ``adamw`` and ``sgd`` use torch's fused kernels (one kernel per step, CPU and CUDA), which can
    skip a step on the device when told a loss was not finite (``found_inf``, what ``GradScaler`` uses), so
    training never has to read the loss back per step; torch has no fused NAdam.
    """
    groups = list(param_groups)
    return lookup(OPTIMIZERS, "optimizer", name.lower())(groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                                          nesterov=nesterov, fused=_fusable(groups))


register_optimizer = registrar(OPTIMIZERS, "optimizer")  # @register_optimizer("name") on a factory
register_scheduler = registrar(SCHEDULERS, "scheduler")  # @register_scheduler("name") on a multiplier


@register_optimizer("adam")
def _adam(groups: list, *, lr: float, weight_decay: float, fused: bool, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


@register_optimizer("adamw")
def _adamw(groups: list, *, lr: float, weight_decay: float, fused: bool, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


@register_optimizer("sgd")
def _sgd(groups: list, *, lr: float, weight_decay: float, momentum: float, nesterov: bool, fused: bool,
         **_: Any) -> torch.optim.Optimizer:
    if nesterov and momentum <= 0:
        raise ValueError(f"nesterov SGD needs momentum > 0, got momentum={momentum}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           fused=fused or None)


@register_optimizer("nadam")
def _nadam(groups: list, *, lr: float, weight_decay: float, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.NAdam(groups, lr=lr, weight_decay=weight_decay)


FUSED_DEVICES = ("cpu", "cuda")


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """Fused kernels need floating-point parameters on one of :data:`FUSED_DEVICES`."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)


class LRSchedule:
    """Per-batch LR multiplier over all parameter groups; ``state_dict`` is just the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, *, epochs: int, steps_per_epoch: int,
                 warmup_epochs: float = 0.0, step_size: int | None = None, gamma: float = 0.1,
                 min_lr_ratio: float = 0.0, patience: int = 2) -> None:
        lookup(SCHEDULERS, "scheduler", name)
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"a schedule needs epochs >= 1 and steps_per_epoch >= 1, got {epochs}, {steps_per_epoch}")
        if not 0 <= warmup_epochs < epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}), got {warmup_epochs}")
        self.optimizer = optimizer
        self.name = name
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = round(warmup_epochs * steps_per_epoch)
        self.step_size = step_size if step_size is not None else max(1, epochs // 3)
        self.gamma = gamma
        self.min_lr_ratio = min_lr_ratio
        self.pct = warmup_epochs / epochs if warmup_epochs > 0 else 0.3
        self.last_step = 0
        self.patience = patience
        self.reductions, self.best, self.bad_epochs = 0, math.inf, 0  # "plateau" state
        self._apply()

    def observe(self, val_loss: float) -> None:
        """End of an epoch: the validation loss; only ``plateau`` uses it (to decide on a reduction)."""
        if self.name != "plateau":
            return
        if val_loss < self.best * (1 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.reductions, self.bad_epochs = self.reductions + 1, 0
            self._apply()

    def multiplier(self, step: int) -> float:
        """The LR factor for batch number ``step`` (0-based, counted over the whole run)."""
        return SCHEDULERS[self.name](self, min(step, self.total_steps))

    def _apply(self) -> None:
        factor = self.multiplier(self.last_step)
        for group in self.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])  # new groups join with the LR they were added with
            group["lr"] = group["base_lr"] * factor

    def step(self) -> None:
        """Advance one batch and set every group's LR."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        state = {"name": self.name, "last_step": self.last_step}
        if self.name == "plateau":
            state.update(reductions=self.reductions, best=self.best, bad_epochs=self.bad_epochs)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"scheduler state is for {state.get('name')!r}, this schedule is {self.name!r}")
        self.last_step = int(state["last_step"])
        if self.name == "plateau":
            self.reductions, self.bad_epochs = int(state["reductions"]), int(state["bad_epochs"])
            self.best = float(state["best"])
        self._apply()


def _after_warmup(multiplier: Callable[[LRSchedule, int], float]) -> Callable[[LRSchedule, int], float]:
    """A linear warmup over the schedule's ``warmup_steps``, then ``multiplier``."""
    def warmed(s: LRSchedule, t: int) -> float:
        return (t + 1) / (s.warmup_steps + 1) if t < s.warmup_steps else multiplier(s, t)
    return warmed


@register_scheduler("constant")
@_after_warmup
def _constant(s: LRSchedule, t: int) -> float:
    return 1.0


@register_scheduler("cosine")
@_after_warmup
def _cosine(s: LRSchedule, t: int) -> float:
    frac = (t - s.warmup_steps) / max(1, s.total_steps - s.warmup_steps)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * (1 + math.cos(math.pi * frac)) / 2


@register_scheduler("onecycle")
def _onecycle(s: LRSchedule, t: int) -> float:  # its own warmup: the first ``pct`` of the steps
    up = max(1, round(s.pct * s.total_steps))
    lo, hi, end = 1 / ONECYCLE_DIV, 1.0, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
    if t < up:
        return lo + (hi - lo) * (1 - math.cos(math.pi * t / up)) / 2
    frac = (t - up) / max(1, s.total_steps - up)
    return end + (hi - end) * (1 + math.cos(math.pi * frac)) / 2


@register_scheduler("step")
@_after_warmup
def _step(s: LRSchedule, t: int) -> float:
    return s.gamma ** (t // s.steps_per_epoch // s.step_size)


@register_scheduler("plateau")
@_after_warmup
def _plateau(s: LRSchedule, t: int) -> float:
    return s.gamma ** s.reductions
