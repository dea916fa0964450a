"""An exponential moving average (EMA) of the weights: what validation, selection and ``best.pt`` use.

Why: the last weights of a short, noisy run wander from batch to batch (the late-epoch swings of
issue 15); their running average is a smoother, usually better model at no training cost. This is
what ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` computes (the same
``torch._foreach_lerp_`` update), with two differences that matter here: the step count lives in
Python, so an update never syncs the host with a GPU (``AveragedModel`` tests ``n_averaged == 0`` on
the device every step), and the decay warms up as TensorFlow's ``ExponentialMovingAverage`` with
``num_updates`` does, so a run of a few hundred steps is not dominated by its random init::

    d_t = min(decay, (1 + t) / (10 + t))      t = updates before this one (0, 1, 2, ...)
    ema_0 = w_0 (the weights after the first optimizer step)
    ema_t = d_t * ema_{t-1} + (1 - d_t) * w_t

Buffers are averaged too (BatchNorm running statistics, as ``AveragedModel(use_buffers=True)``),
except integer ones (``num_batches_tracked``), which are copied. The state (averaged weights and
the update count) goes into ``last.pt``, so a resumed run continues the same average.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]

WARMUP_OFFSET = 10  # (1 + t) / (10 + t): TensorFlow's ExponentialMovingAverage(num_updates=t)


class WeightEMA:
    """EMA copy of ``model`` (``.module``, eval mode, no gradients); call :meth:`update` after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay of update number ``updates`` (0-based): warmed up, capped at ``decay``."""
        return min(self.decay, (1 + updates) / (WARMUP_OFFSET + updates))

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        own = list(self.module.parameters()) + list(self.module.buffers())
        theirs = list(model.parameters()) + list(model.buffers())
        if len(own) != len(theirs):
            raise ValueError(f"EMA: the model has {len(theirs)} parameters+buffers, the average {len(own)}; "
                             "build the WeightEMA from this model")
        return list(zip(own, theirs))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average."""
        pairs = self._pairs(model)
        if self.updates == 0:
            for mine, cur in pairs:
                mine.copy_(cur)
        else:
            weight = 1.0 - self.decay_at(self.updates)
            floats = [(m, c) for m, c in pairs if m.is_floating_point()]
            if floats:
                torch._foreach_lerp_([m for m, _ in floats], [c.detach() for _, c in floats], weight)
            for mine, cur in pairs:
                if not mine.is_floating_point():
                    mine.copy_(cur)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Averaged weights (CPU) and the update count: weights_only-safe, for ``last.pt``."""
        return {"decay": self.decay, "updates": self.updates,
                "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"EMA state has decay {state['decay']}, this run {self.decay}")
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
