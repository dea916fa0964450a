"""Parameter bookkeeping for the strategies: exact counts, a block's parameters, and its optimizer groups.

Why apart from :mod:`core.finetune.strategies`: counting and grouping are plain functions of a model and a
block; the strategies decide *which* blocks and *which* LR, these say what that means in parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from core.model import Block

__all__ = ["ParamCount", "block_parameters", "count_parameters"]


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model: nn.Module) -> ParamCount:
    """Exact trainable / total parameter counts (shared tensors counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def block_parameters(model: nn.Module, block: Block) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if block.owns(name)]


def _groups_for(model: nn.Module, block: Block, lr: float) -> list[dict[str, Any]]:
    """One block's optimizer groups: decayed weights, and biases/norm scales with weight_decay 0."""
    params = block_parameters(model, block)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "lr": lr, "name": block.name},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{block.name}/no_decay"}]
    return [g for g in groups if g["params"]]
