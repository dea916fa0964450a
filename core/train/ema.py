"""An exponential moving average (EMA) of the weights: what validation, selection and ``best.pt`` use.

The last weights of a short, noisy run wander from batch to batch (issue 15); their average is a smoother model
at no training cost. The update is ``AveragedModel``'s (``torch._foreach_lerp_``) with two differences: the
step count lives in Python, so an update never syncs the host with a GPU, and the decay warms up as
TensorFlow's ``ExponentialMovingAverage(num_updates)`` does, ``d_t = min(decay, (1 + t) / (10 + t))``, so a
short run is not dominated by its random init. Float buffers are averaged too, integer ones copied; the state
goes into ``last.pt``, so a resume continues the same average.
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
