"""Batched per-sample augmentation: random-resized crop + flip in one ``grid_sample``, jitter as per-sample scalars.

torchvision's per-sample transforms cost about a millisecond per image on one core, so on a GPU the data path
would set the pace (issue 16). Here a batch of cached ``uint8`` images becomes the normalised model input in a
handful of tensor ops, on the CPU or the GPU: :func:`sample_params` draws every random number on the CPU from
the loader's generator (so a resume redraws the same), crop boxes by torchvision's own rule;
:class:`BatchTransform` resamples each box with one bilinear ``grid_sample`` — exactly
``resized_crop(..., antialias=False)``, so keep the crop source at most ~1.5x the model input
(``DataConfig.train_decode_ratio``); colour jitter uses torchvision's formulas in a fixed order, which without
the clamps commute. ``tests/test_batched_augment.py`` checks all three against torchvision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentParams", "BatchAugment", "BatchTransform", "pack_params", "sample_params"]

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_TRIES = 10  # torchvision's RandomResizedCrop attempts before the central fallback


@dataclass(frozen=True)
class BatchAugment:
    """What to draw per sample: the crop's area/aspect ranges, the flip probability and the jitter strengths."""

    out_size: int
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.flip_p <= 1:
            raise ValueError(f"flip_p must be a probability, got {self.flip_p}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} jitter must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample draws for one batch (CPU tensors): crop boxes in whole pixels, flips and jitter factors."""

    top: torch.Tensor  # int64 [B]
    left: torch.Tensor  # int64 [B]
    height: torch.Tensor  # int64 [B]
    width: torch.Tensor  # int64 [B]
    flip: torch.Tensor  # bool [B]
    brightness: torch.Tensor  # float32 [B]
    contrast: torch.Tensor  # float32 [B]
    saturation: torch.Tensor  # float32 [B]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64) * (hi - lo) + lo


def sample_params(n: int, height: int, width: int, spec: BatchAugment, generator: torch.Generator) -> AugmentParams:
    """All random numbers of one batch of ``n`` images of ``height x width`` (see the module docstring, step 1)."""
    area = height * width
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    target = area * _uniform(n, spec.scale[0], spec.scale[1], generator, (_TRIES,))
    aspect = torch.exp(_uniform(n, log_lo, log_hi, generator, (_TRIES,)))
    w = torch.round(torch.sqrt(target * aspect)).to(torch.int64)  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)
    # the central fallback, exactly as torchvision computes it
    in_ratio = width / height
    if in_ratio < spec.ratio[0]:
        fw, fh = width, int(round(width / spec.ratio[0]))
    elif in_ratio > spec.ratio[1]:
        fw, fh = int(round(height * spec.ratio[1])), height
    else:
        fw, fh = width, height
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)
    u_top, u_left = torch.rand(n, generator=generator, dtype=torch.float64), torch.rand(
        n, generator=generator, dtype=torch.float64)
    top = torch.minimum((u_top * (height - h + 1)).floor().to(torch.int64), height - h)  # randint(0, H - h + 1)
    left = torch.minimum((u_left * (width - w + 1)).floor().to(torch.int64), width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    flip = torch.rand(n, generator=generator) < spec.flip_p

    def factor(x: float) -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - x), 1 + x, generator).to(torch.float32)

    return AugmentParams(top, left, h, w, flip, factor(spec.brightness), factor(spec.contrast),
                         factor(spec.saturation))


def pack_params(p: AugmentParams, height: int, width: int) -> torch.Tensor:
    """float32 ``[B, 9]``: the 6 affine coefficients (output -> box, flipped) then the 3 jitter factors.

    One tensor per batch, so a CUDA batch needs one pinned host-to-device copy (a copy from pageable memory
    would make the host wait for the GPU's queue).
    """
    sx = p.width.double() / width * torch.where(p.flip, -1.0, 1.0).double()
    sy = p.height.double() / height
    tx = (2 * p.left + p.width).double() / width - 1
    ty = (2 * p.top + p.height).double() / height - 1
    zero = torch.zeros_like(sx)
    return torch.stack([sx, zero, tx, zero, sy, ty, p.brightness.double(), p.contrast.double(),
                        p.saturation.double()], 1).float()


class BatchTransform:
    """uint8 batches -> normalised float32 model input on one device; constants live on that device.

    ``spec=None``: normalisation only (validation, test, training without augmentation). With a spec, call
    with the :func:`pack_params` tensor of the batch (already on this device).
    """

    def __init__(self, spec: BatchAugment | None, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device | str) -> None:
        self.spec, self.device = spec, torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1).to(self.device)
        self.grey = torch.tensor(_GREY, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)

    def jitter(self, x: torch.Tensor, factors: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Brightness, contrast, saturation (``factors``: ``[B, 3]``) on float images, in place.

        ``scale`` multiplies the input first (1/255 for raw uint8 values), folded into the brightness factor.
        """
        b, c, s = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
        x.mul_(b * scale).clamp_(0.0, 1.0)
        grey_mean = (x.mean(dim=(2, 3), keepdim=True) * self.grey).sum(dim=1, keepdim=True)  # mean of the grey image
        x.mul_(c).add_((1 - c) * grey_mean).clamp_(0.0, 1.0)  # torchvision's _blend: c x + (1 - c) mean
        grey = torch.einsum("bchw,c->bhw", x, self.grey.view(3)).unsqueeze(1)
        return x.mul_(s).add_(grey.mul_(1 - s)).clamp_(0.0, 1.0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] -> ``(x - mean) / std`` per channel, in place."""
        return x.sub_(self.mean).mul_(self.inv_std)

    def grid(self, packed: torch.Tensor) -> torch.Tensor:
        """The sampling grid ``[B, S, S, 2]`` of the boxes: the maps are axis-aligned, so x depends on the column
        only and y on the row only (what ``affine_grid`` computes, without its batched 3x2 matmul)."""
        size = self.spec.out_size
        u = (torch.arange(size, dtype=torch.float32, device=packed.device) * 2 + 1) / size - 1  # pixel centres
        xs = packed[:, 0:1] * u + packed[:, 2:3]  # [B, S]
        ys = packed[:, 4:5] * u + packed[:, 5:6]
        return torch.stack((xs[:, None, :].expand(-1, size, -1), ys[:, :, None].expand(-1, -1, size)), dim=-1)

    def __call__(self, images: torch.Tensor, packed: torch.Tensor | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}")
        if self.spec is None:
            return self.normalize(images.to(torch.float32).div_(255.0))
        if packed is None or packed.shape != (images.shape[0], 9):
            raise ValueError("an augmenting BatchTransform needs the batch's pack_params tensor [B, 9]")
        # resample the raw 0..255 values (the output is smaller than the input: less to convert afterwards)
        x = F.grid_sample(images.to(torch.float32), self.grid(packed), mode="bilinear", padding_mode="border",
                          align_corners=False)
        return self.normalize(self.jitter(x, packed[:, 6:], scale=1 / 255))
