"""Grad-CAM (Captum's ``LayerGradCam``) on CONV5: which regions of each image drove its predicted class.

Numbers only, like :mod:`core.explain.attributions`, whose layer lookup and eval-mode guard it shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.explain.attributions import _eval_mode, conv5


def grad_cam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | torch.Tensor,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps ``[N, H, W]`` (ReLU'd, bilinearly upsampled to the image) for class ``targets[i]``.

    ``layer`` defaults to CONV5; ``targets`` are usually the predicted classes.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    if images.dim() != 4:
        raise ValueError(f"expected a batch of normalised images [N, 3, H, W], got shape {list(images.shape)}")
    t = torch.as_tensor(targets, dtype=torch.int64).flatten()
    if t.numel() != images.shape[0]:
        raise ValueError(f"one target class per image needed: {images.shape[0]} images, {t.numel()} targets")
    layer = conv5(model) if layer is None else layer
    with _eval_mode(model):
        inputs = images.detach().to(layer.weight.device).clone().requires_grad_(True)
        cam = LayerGradCam(model, layer).attribute(inputs, target=t.tolist(), relu_attributions=True)
        up = LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return up[:, 0].float().cpu()
