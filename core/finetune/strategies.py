"""Fine-tuning strategies as small objects with Lightning-style hooks (``BackboneFinetuning``).

Objects, not flags: which parameters train, at what learning rate and when that changes is one decision per
strategy, and the trainer only calls the hooks: ``setup`` (freeze, before the optimizer exists),
``param_groups`` (discriminative or layer-decayed LRs), ``on_epoch_start`` (frozen BatchNorm back to eval;
``gradual`` *adds* an optimizer group rather than rebuilding the optimizer, so the head's state is kept) and
``epoch_view`` (the cached-feature view while only the head trains). Epochs are 0-based, as ``fit`` counts
them. The strategies and their options: docs/partB.md. A new one is a subclass and
``@register_strategy("mine")``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from core.finetune.feature_cache import HeadFeatureCache
from core.finetune.groups import _groups_for, block_parameters, count_parameters
from core.model import BackboneLayout, Block, layout_of
from core.registry import lookup, registrar

logger = logging.getLogger(__name__)


class FinetuneStrategy:
    """Base: trains the head plus the last ``trained_blocks(epoch)`` blocks; subclasses pick that number."""

    name = "base"

    def __init__(self, backbone_lr_mult: float = 0.1, bn_eval: bool = False, layer_decay: float | None = None,
                 feature_cache: bool = True) -> None:
        if not backbone_lr_mult > 0:
            raise ValueError(f"backbone_lr_mult must be > 0, got {backbone_lr_mult!r}")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1] (timm uses 0.65-0.85), got {layer_decay!r}")
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.bn_eval = bool(bn_eval)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.feature_cache = bool(feature_cache)
        self._cache: HeadFeatureCache | None = None
        self.layout: BackboneLayout | None = None
        self._lr: float | None = None
        self._trained = 0  # how many blocks (from the top) are unfrozen right now

    # --- what subclasses decide -------------------------------------------------------------
    def trained_blocks(self, epoch: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define trained_blocks(epoch)")

    def validate(self, layout: BackboneLayout) -> None:
        """Fail fast when the strategy does not fit the model (e.g. k larger than the block count)."""

    def describe(self) -> dict[str, Any]:
        """Plain-data record of the strategy for config.yaml and W&B."""
        return {"strategy": self.name, "backbone_lr_mult": self.backbone_lr_mult, "bn_eval": self.bn_eval,
                "layer_decay": self.layer_decay, "feature_cache": self.feature_cache}

    # --- hooks the trainer calls --------------------------------------------------------------
    def setup(self, model: nn.Module, *, quiet: bool = False) -> None:
        """Freeze everything but the head and the blocks that train at epoch 0 (logs the counts unless quiet)."""
        self.layout = layout_of(model)
        self.validate(self.layout)
        self._cache = None  # features of another model (or device) are no use
        for p in model.parameters():
            p.requires_grad_(False)
        self._trained = self._clamped(0)
        for block in self._active_blocks():
            for p in block_parameters(model, block):
                p.requires_grad_(True)
        self.apply_modes(model)
        counts = count_parameters(model)
        say = logger.debug if quiet else logger.info
        say("strategy %s: %d / %d parameters trainable (%.1f%%), blocks %s", self.name, counts.trainable,
            counts.total, 100 * counts.fraction, [b.name for b in self._active_blocks()])

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups at epoch 0: head at ``lr``, each unfrozen block at ``lr * backbone_lr_mult``."""
        layout = self._require_setup()
        self._lr = float(lr)
        groups = _groups_for(model, layout.head_block(), self._lr)
        for block in self._active_blocks()[1:]:
            groups += _groups_for(model, block, self.block_lr(block))
        return groups

    def block_lr(self, block: Block) -> float:
        """A backbone block's LR at epoch 0 of the schedule: ``lr * backbone_lr_mult`` or layer-decayed."""
        if self._lr is None:
            raise RuntimeError(f"{self.name}: call param_groups(model, lr) first")
        if self.layer_decay is None:
            return self._lr * self.backbone_lr_mult
        blocks = self._require_setup().blocks
        return self._lr * self.layer_decay ** (len(blocks) - blocks.index(block))

    def epoch_view(self, epoch: int, model: nn.Module, loaders: Any, *, device: torch.device,
                   amp_dtype: torch.dtype | None = None) -> Any:
        """Cached-feature view for a head-only epoch (see :mod:`core.finetune.feature_cache`), else None."""
        layout = self._require_setup()
        if not self.feature_cache or self._trained > 0:
            return None
        if self._cache is None:
            self._cache = HeadFeatureCache(layout.head)
        return self._cache.view(model, loaders, device=device, amp_dtype=amp_dtype)

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze what is due at ``epoch`` (adding param groups), then put frozen parts in eval mode."""
        layout = self._require_setup()
        due = self._clamped(epoch)
        if due > self._trained:
            if self._lr is None:
                raise RuntimeError(f"{self.name}: call param_groups(model, lr) before on_epoch_start")
            new = self._blocks_from_top(due)[self._trained:due]
            factor = _schedule_factor(optimizer)
            for block in new:
                for p in block_parameters(model, block):
                    p.requires_grad_(True)
                for group in _groups_for(model, block, self.block_lr(block)):
                    group["base_lr"] = group["lr"]  # core.train.optim.LRSchedule scales from here
                    group["lr"] = group["lr"] * factor
                    optimizer.add_param_group(group)
            self._trained = due
            logger.info("epoch %d: unfroze %s (%d of %d blocks now train)", epoch,
                        [b.name for b in new], due, len(layout.blocks))
        self.apply_modes(model)

    # --- helpers ------------------------------------------------------------------------------
    def apply_modes(self, model: nn.Module) -> None:
        """Frozen blocks to eval mode (BatchNorm stats and dropout fixed); all BN if ``bn_eval``."""
        layout = self._require_setup()
        active = {b.name for b in self._active_blocks()}
        for block in layout.blocks:
            if block.name in active:
                continue
            for prefix in block.prefixes:
                module = _find_module(model, prefix)
                if module is not None:
                    module.eval()
        if self.bn_eval:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _require_setup(self) -> BackboneLayout:
        if self.layout is None:
            raise RuntimeError(f"strategy {self.name!r}: call setup(model) first")
        return self.layout

    def _clamped(self, epoch: int) -> int:
        return max(0, min(self.trained_blocks(epoch), len(self._require_setup().blocks)))

    def _blocks_from_top(self, n: int) -> list[Block]:
        return list(reversed(self._require_setup().blocks))[:n]

    def _active_blocks(self) -> list[Block]:
        """Head first, then the unfrozen blocks from the top."""
        return [self._require_setup().head_block()] + self._blocks_from_top(self._trained)


def _find_module(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return model.get_submodule(dotted)
    except AttributeError:  # a bare parameter such as ViT's class_token
        return None


def _schedule_factor(optimizer: torch.optim.Optimizer) -> float:
    """Current LR / base LR of the first group, so a late group joins at the same point of the schedule."""
    group = optimizer.param_groups[0]
    base = group.get("base_lr", group.get("initial_lr", group["lr"]))
    return group["lr"] / base if base else 1.0


class HeadOnly(FinetuneStrategy):
    name = "head"

    def trained_blocks(self, epoch: int) -> int:
        return 0


class TopK(FinetuneStrategy):
    name = "top-k"

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"top-k needs k >= 1 blocks, got {k!r} (k=0 is --strategy head)")
        self.k = k

    def validate(self, layout: BackboneLayout) -> None:
        if self.k > len(layout.blocks):
            raise ValueError(f"k={self.k} but {layout.family} has only {len(layout.blocks)} blocks "
                             f"{[b.name for b in layout.blocks]}; use a smaller k or --strategy full")

    def trained_blocks(self, epoch: int) -> int:
        return self.k

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "k": self.k}


class Full(FinetuneStrategy):
    name = "full"

    def trained_blocks(self, epoch: int) -> int:
        return len(self._require_setup().blocks)


class Gradual(FinetuneStrategy):
    name = "gradual"

    def __init__(self, unfreeze_every: int = 1, max_blocks: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(unfreeze_every, bool) or not isinstance(unfreeze_every, int) or unfreeze_every < 1:
            raise ValueError(f"unfreeze_every must be an int >= 1 epochs, got {unfreeze_every!r}")
        if max_blocks is not None and (not isinstance(max_blocks, int) or max_blocks < 1):
            raise ValueError(f"max_blocks must be None (all) or an int >= 1, got {max_blocks!r}")
        self.unfreeze_every = unfreeze_every
        self.max_blocks = max_blocks

    def trained_blocks(self, epoch: int) -> int:
        n = epoch // self.unfreeze_every
        return n if self.max_blocks is None else min(n, self.max_blocks)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "unfreeze_every": self.unfreeze_every, "max_blocks": self.max_blocks}


class LPFT(FinetuneStrategy):
    """Linear probe for ``lp_epochs`` (head only at ``lr``, on cached features when allowed), then full fine-tuning.

    The fine-tuning phase runs *every* parameter, the probed head included, at the small fine-tuning LR
    ``lr * backbone_lr_mult`` (times ``layer_decay ** (n - i)`` for block ``i`` when set), as the paper
    fine-tunes with one small LR: the probe's LR on the whole network wrecks the pretrained features.
    """

    name = "lp-ft"

    def __init__(self, lp_epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(lp_epochs, bool) or not isinstance(lp_epochs, int) or lp_epochs < 1:
            raise ValueError(f"lp-ft needs lp_epochs >= 1 epochs of linear probing, got {lp_epochs!r} "
                             "(0 is --strategy full)")
        self.lp_epochs = lp_epochs

    def trained_blocks(self, epoch: int) -> int:
        return 0 if epoch < self.lp_epochs else len(self._require_setup().blocks)

    def block_lr(self, block: Block) -> float:
        base = super().block_lr(block)
        return base if self.layer_decay is None else base * self.backbone_lr_mult

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        probing = self._trained == 0
        super().on_epoch_start(epoch, model, optimizer)
        if probing and self._trained > 0:  # the probe is over: the head joins the fine-tuning LR
            for group in optimizer.param_groups:
                if group.get("name") in ("head", "head/no_decay"):
                    if "base_lr" in group:  # core.train.optim.LRSchedule scales from here
                        group["base_lr"] *= self.backbone_lr_mult
                    group["lr"] *= self.backbone_lr_mult

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lp_epochs": self.lp_epochs}


class LayerDecay(Full):
    """Everything trains; block ``i`` of ``n`` at ``lr * layer_decay ** (n - i)`` (timm's ``--layer-decay``)."""

    name = "layer-decay"

    def __init__(self, layer_decay: float | None = None, **kwargs: Any) -> None:
        super().__init__(layer_decay=DEFAULT_LAYER_DECAY if layer_decay is None else layer_decay, **kwargs)


DEFAULT_LAYER_DECAY = 0.75


# name -> factory(options, common): ``options`` holds k, unfreeze_every, max_blocks and lp_epochs, ``common`` the
# keyword arguments of FinetuneStrategy (backbone_lr_mult, bn_eval, layer_decay, feature_cache)
Factory = Callable[[Mapping[str, Any], dict[str, Any]], FinetuneStrategy]
STRATEGIES: dict[str, Factory] = {
    "head": lambda o, common: HeadOnly(**common),
    "top-k": lambda o, common: TopK(o["k"], **common),
    "full": lambda o, common: Full(**common),
    "gradual": lambda o, common: Gradual(o["unfreeze_every"], o["max_blocks"], **common),
    "lp-ft": lambda o, common: LPFT(o["lp_epochs"], **common),
    "layer-decay": lambda o, common: LayerDecay(**common),
}
ALIASES = {"lpft": "lp-ft", "topk": "top-k"}


register_strategy = registrar(STRATEGIES, "strategy")  # @register_strategy("name") on a factory(options, common)


def make_strategy(name: str, *, k: int = 2, unfreeze_every: int = 1, max_blocks: int | None = None,
                  backbone_lr_mult: float = 0.1, bn_eval: bool = False, lp_epochs: int = 1,
                  layer_decay: float | None = None, feature_cache: bool = True) -> FinetuneStrategy:
    """A strategy by CLI name (:data:`STRATEGIES`); ``layer_decay`` also applies to top-k/full/gradual/lp-ft."""
    key = str(name).lower().replace("_", "-")
    factory = lookup(STRATEGIES, "strategy", ALIASES.get(key, key))
    return factory({"k": k, "unfreeze_every": unfreeze_every, "max_blocks": max_blocks, "lp_epochs": lp_epochs},
                           {"backbone_lr_mult": backbone_lr_mult, "bn_eval": bn_eval, "layer_decay": layer_decay,
                            "feature_cache": feature_cache})
