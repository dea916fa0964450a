"""Test-time augmentation: logits averaged over the image and its horizontal flip.

Validation, the test pass and ``evaluate_checkpoint`` all run "a model on a batch", so wrapping the model once
gives them one rule. A subject keeps its class when mirrored and training flips, so both views are valid; the
logits (not the probabilities) are averaged, as timm's ``--tta``. The wrapper has no weights: checkpoints are
saved from the wrapped model, never from the wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FlipTTA", "with_tta"]


class FlipTTA(nn.Module):
    """``forward(x) = (model(x) + model(x.flip(-1))) / 2`` for ``x`` of shape ``[N, C, H, W]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"flip TTA needs image batches [N, C, H, W], got shape {list(x.shape)}")
        return (self.model(x) + self.model(x.flip(-1))) / 2


def with_tta(model: nn.Module, tta: bool) -> nn.Module:
    """``FlipTTA(model)`` when ``tta``, else ``model`` itself."""
    return FlipTTA(model) if tta else model
