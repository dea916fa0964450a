"""MixUp and CutMix on a training batch: mixed images, soft targets, and the loss that takes them.

Both mix pairs of images of one batch, so they run on the device batch, not in the dataset transform. They are
torchvision's ``v2.MixUp``/``CutMix``, which draw from torch's global generator that :mod:`core.train.rng`
already snapshots, so a resume draws the same mixes; with both alphas > 0 each batch gets one of the two. The
soft targets go to ``nn.CrossEntropyLoss`` unchanged (label smoothing included); training accuracy stays on the
hard labels, a rough signal with mixing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["BatchMixer", "make_batch_mixer"]

BatchMixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> BatchMixer | None:
    """``(images [N,C,H,W] float, labels [N] int64) -> (mixed images, soft targets [N, num_classes])``.

    None when both alphas are 0 (no mixing). The images may be on any device; so are the outputs.
    """
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not alpha >= 0:
            raise ValueError(f"{name} must be >= 0 (0 = off), got {alpha!r}")
    if not (mixup_alpha or cutmix_alpha):
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"mixing needs num_classes >= 2, got {num_classes!r}")
    from torchvision.transforms import v2

    chosen = []
    if mixup_alpha > 0:
        chosen.append(v2.MixUp(alpha=float(mixup_alpha), num_classes=num_classes))
    if cutmix_alpha > 0:
        chosen.append(v2.CutMix(alpha=float(cutmix_alpha), num_classes=num_classes))
    if not chosen:
        return None
    transform = chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)

    def mix(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed, soft = transform(images, labels)
        return mixed, soft

    return mix
