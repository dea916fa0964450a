"""Test-time augmentation: logits averaged over the image and its horizontal flip.

Why a wrapper module: validation during training, the test evaluation after it and
``evaluate_checkpoint`` all run "a model on a batch"; wrapping the model once makes every one of them
use the same rule without each learning about TTA. A flower (or any iNaturalist subject) keeps its
class when mirrored, and the training augmentation flips, so the two views are equally valid; the
mean of the logits (not of the probabilities) is the usual choice (timm's ``--tta`` as well).
The wrapper holds no weights of its own: ``state_dict`` keys stay the model's under ``model.``, so
checkpoints are saved from the wrapped model, never from the wrapper.
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
