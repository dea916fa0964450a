"""Head-only epochs on cached backbone features: the same result as the full forward, at a fraction of the cost.

While only the head trains on unaugmented images, the frozen backbone computes the same features every
epoch; computing them once gives the same logits, loss and weights (up to float reassociation). It is used
only when that holds — no augmentation, every stochastic module outside the head part in eval mode, no
mixing, EMA or TTA — else the full forward runs and the log says why. The *head part* includes the
parameter-free siblings of the head (the dropout before it still runs per step), and the feature batches
follow the image batches' own order and draws (:func:`_follow`), so the RNG stream and a resume are unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

logger = logging.getLogger(__name__)

CHUNK = 64  # images per forward pass while caching


@dataclass
class FeatureView:
    """What ``fit`` trains and validates instead of the full model for one epoch."""

    module: nn.Module  # the head part (its parameters are the model's own)
    train: DataLoader  # (features, labels) batches, same order as loaders.train
    val: DataLoader


class _IndexedTensors(torch.utils.data.Dataset):
    """``ds[list_of_indices]`` -> one gather per batch (no per-image indexing on the device)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list) -> tuple[torch.Tensor, torch.Tensor]:
        # a sampler may yield (index, augmentation seed) pairs (core.data.SeededShuffle): no augmentation here
        positions = [i[0] if isinstance(i, (tuple, list)) else i for i in index]
        idx = torch.as_tensor(positions, dtype=torch.int64, device=self.labels.device)
        return self.features[idx], self.labels[idx]


class _OrderedBatches:
    """Feature batches in the order ``source.batch_order()`` gives (the source's own draws, nothing else)."""

    def __init__(self, source: Any, data: _IndexedTensors) -> None:
        self.source, self.data = source, data

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        for idx in self.source.batch_order():
            yield self.data[idx.tolist()]


def _follow(source: Any, data: _IndexedTensors) -> Any:
    """Feature batches drawn exactly as ``source`` draws its image batches (order and random numbers).

    A ``DataLoader``: the same sampler (and so the same generator and shuffle) with the same batch size and
    ``drop_last``, and a new iterator draws its base seed from the same generator, as the image loader's does.
    Any other batch source must offer ``batch_order()``: one epoch's dataset positions per batch, drawing what
    its own iteration draws.
    """
    if isinstance(source, DataLoader):
        sampler = source.sampler if source.batch_sampler is not None else SequentialSampler(data)
        return DataLoader(data, sampler=BatchSampler(sampler, source.batch_size or 1, source.drop_last),
                          batch_size=None, generator=source.generator)
    if callable(getattr(source, "batch_order", None)):
        return _OrderedBatches(source, data)
    raise TypeError(f"cannot follow the batch order of {type(source).__name__}: it is no DataLoader and has no "
                    "batch_order()")


def head_part_name(model: nn.Module, head: str) -> str:
    """The head, widened to its parent while every sibling is parameter-free (never the whole model)."""
    name = head
    while "." in name:
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name)
        own = model.get_submodule(name)
        if any(next(child.parameters(), None) is not None for child in parent.children() if child is not own):
            break
        name = parent_name
    return name


def _stochastic(module: nn.Module) -> bool:
    from torchvision.ops import StochasticDepth

    return isinstance(module, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm, StochasticDepth))


def why_not_cacheable(model: nn.Module, part: str, loaders: Any) -> str | None:
    """None when features before ``part`` are step-independent; else the reason, for the log."""
    config = getattr(loaders, "config", None)
    if config is None or getattr(config, "augments", True):
        return "the training images are augmented"
    for split in ("train", "val"):
        source = getattr(loaders, split)
        if not isinstance(source, DataLoader) and not callable(getattr(source, "batch_order", None)):
            return f"the {split} batches come from a {type(source).__name__} without batch_order()"
    for name, module in model.named_modules():
        inside = name == part or name.startswith(part + ".")
        if not inside and module.training and _stochastic(module):
            return f"{name} ({type(module).__name__}) is in training mode outside the head"
    return None


class HeadFeatureCache:
    """Backbone features of the train and val images, computed once and reused by every head-only epoch."""

    def __init__(self, head: str) -> None:
        self.head = head
        self._features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._refused: str | None = None

    def view(self, model: nn.Module, loaders: Any, *, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> FeatureView | None:
        """The cached view for this epoch, or None (logged once) when it would not be exact."""
        part = head_part_name(model, self.head)
        reason = why_not_cacheable(model, part, loaders)
        if reason is not None:
            if reason != self._refused:
                logger.info("head-only epoch on the full forward: %s", reason)
                self._refused = reason
            return None
        module = model.get_submodule(part)
        if not self._features:
            for split in ("train", "val"):
                self._features[split] = self._compute(model, module, getattr(loaders, split).dataset, device,
                                                      amp_dtype)
            feats = self._features["train"][0]
            logger.info("head-only epochs train on cached features at %s: %d + %d images x %s (%.1f MB)", part,
                        len(feats), len(self._features["val"][0]), list(feats.shape[1:]),
                        sum(f.numel() * f.element_size() for f, _ in self._features.values()) / 2**20)
        return FeatureView(module, _follow(loaders.train, _IndexedTensors(*self._features["train"])),
                           _follow(loaders.val, _IndexedTensors(*self._features["val"])))

    @torch.no_grad()
    def _compute(self, model: nn.Module, module: nn.Module, dataset, device: torch.device,
                 amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
        was_training = module.training
        module.eval()  # no dropout draw while caching: the generator stream stays the full forward's
        labels = []
        try:
            for start in range(0, len(dataset), CHUNK):
                items = [dataset[i] for i in range(start, min(start + CHUNK, len(dataset)))]
                images = torch.stack([x for x, _ in items]).to(device)
                labels += [int(y) for _, y in items]
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    model(images)
        finally:
            handle.remove()
            module.train(was_training)
        return torch.cat(captured), torch.tensor(labels, dtype=torch.int64, device=device)
