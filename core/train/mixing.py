"""MixUp and CutMix on a training batch: mixed images, soft targets, and the loss that takes them.

Why batch-level and here: both mix *pairs of images of one batch* (image ``i`` with image ``i-1``, as
torchvision's ``transforms.v2.MixUp``/``CutMix`` pair them; the loader shuffles, so pairs are random), so
they run after the batch is on the device, not in the per-sample dataset transform. We use torchvision's
transforms rather than our own: they draw ``lam ~ Beta(alpha, alpha)`` (and CutMix's box) from torch's
global CPU generator, which :mod:`core.train.rng` already snapshots, so a resumed run draws the same
mixes. With both alphas > 0 each batch gets one of the two, chosen with equal odds (torchvision's
reference recipe).

The targets become probabilities ``[N, C]`` (``lam * onehot(y) + (1 - lam) * onehot(y.roll(1))``, where
CutMix's ``lam`` is the kept area); ``nn.CrossEntropyLoss`` accepts them as they are, label smoothing
included, so the criterion does not change. Training accuracy stays on the hard labels of the
unmixed images (``argmax(logits) == y``): with mixing it is a rough signal, the validation numbers are
the ones to read.
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
