"""core.data.batched_augment against torchvision: the same random-crop/flip/jitter distribution, the same pixels.

Oracles: torchvision's own sampler (``transforms.RandomResizedCrop.get_params``, ``ColorJitter``'s factor range)
for the statistics, ``transforms.v2.functional.resized_crop`` / ``adjust_*`` for the pixels. Statistical
tolerances come from the sample size: means within 5 standard errors, two-sample Kolmogorov-Smirnov distances
below the critical value at alpha = 1e-6 (a correct sampler fails with probability ~1e-6 per check).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from core.data import BatchAugment, BatchTransform, pack_params, sample_params

DRAWS = 20_000
KS_C = math.sqrt(-0.5 * math.log(1e-6 / 2))  # two-sample KS critical coefficient at alpha = 1e-6


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max gap between the empirical CDFs)."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, grid, right=True).double() / len(a)
    fb = torch.searchsorted(b, grid, right=True).double() / len(b)
    return float((fa - fb).abs().max())


def _ks_limit(n: int, m: int) -> float:
    return KS_C * math.sqrt((n + m) / (n * m))


def _assert_same_distribution(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    ours, ref = ours.double(), ref.double()
    se = math.sqrt(ours.var() / len(ours) + ref.var() / len(ref))
    gap = abs(float(ours.mean() - ref.mean()))
    assert gap <= 5 * se + 1e-12, \
        f"{name}: mean {ours.mean():.5f} vs torchvision {ref.mean():.5f} (> 5 SE = {5 * se:.5f})"
    d, limit = _ks(ours, ref), _ks_limit(len(ours), len(ref))
    assert d <= limit, f"{name}: KS distance {d:.4f} > {limit:.4f} (alpha 1e-6) against torchvision's draws"


def _torchvision_boxes(height: int, width: int, scale, ratio, n: int) -> torch.Tensor:
    torch.manual_seed(1)
    img = torch.empty(3, height, width)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)])


@pytest.mark.parametrize("height,width,scale", [(110, 110, (0.6, 1.0)), (48, 80, (0.08, 1.0)),
                                               (40, 30, (0.6, 1.0))])
def test_crop_boxes_follow_torchvisions_distribution(height, width, scale):
    spec = BatchAugment(32, scale=scale)
    p = sample_params(DRAWS, height, width, spec, torch.Generator().manual_seed(0))
    ref = _torchvision_boxes(height, width, scale, spec.ratio, DRAWS)  # columns: top, left, height, width
    ours = torch.stack([p.top, p.left, p.height, p.width], 1)
    assert (ours[:, 2] >= 1).all() and (ours[:, 0] + ours[:, 2] <= height).all(), "a box leaves the image (rows)"
    assert (ours[:, 3] >= 1).all() and (ours[:, 1] + ours[:, 3] <= width).all(), "a box leaves the image (cols)"

    def features(b: torch.Tensor) -> dict[str, torch.Tensor]:
        top, left, h, w = (b[:, i].double() for i in range(4))
        return {"area fraction": h * w / (height * width), "log aspect w/h": torch.log(w / h),
                "centre row": (top + h / 2) / height, "centre column": (left + w / 2) / width,
                "top offset": top, "left offset": left}

    mine, theirs = features(ours), features(ref)
    for name in mine:
        _assert_same_distribution(f"{height}x{width} scale {scale}: {name}", mine[name], theirs[name])



def _augment(images, p, spec, mean, std):
    """The training path's two steps: the draws packed for the batch, then the one-grid_sample transform."""
    return BatchTransform(spec, mean, std, images.device)(images, pack_params(p, images.shape[2], images.shape[3]))

def test_flip_rate_and_jitter_factors_match_torchvision():
    spec = BatchAugment(16)
    p = sample_params(DRAWS, 20, 20, spec, torch.Generator().manual_seed(3))
    rate, se = float(p.flip.double().mean()), math.sqrt(0.25 / DRAWS)
    assert abs(rate - 0.5) <= 5 * se, f"flip rate {rate:.4f}, expected 0.5 +- {5 * se:.4f}"
    torch.manual_seed(2)
    jitter = T.ColorJitter(0.2, 0.2, 0.2)
    ref = torch.tensor([[f for f in jitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation,
                                                      None)[1:4]] for _ in range(DRAWS)])
    for i, name in enumerate(("brightness", "contrast", "saturation")):
        ours = getattr(p, name)
        assert 0.8 <= float(ours.min()) and float(ours.max()) <= 1.2, f"{name} factors leave [0.8, 1.2]"
        _assert_same_distribution(f"{name} factor", ours, ref[:, i])


def test_same_generator_state_gives_the_same_draws():
    spec = BatchAugment(16)
    a = sample_params(64, 40, 30, spec, torch.Generator().manual_seed(7))
    b = sample_params(64, 40, 30, spec, torch.Generator().manual_seed(7))
    for field in dataclasses.fields(a):
        assert torch.equal(getattr(a, field.name), getattr(b, field.name)), f"{field.name} differs for one seed"


def test_crop_and_flip_pixels_equal_torchvisions_resized_crop():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 40, 50), dtype=torch.uint8, generator=g)
    spec = BatchAugment(24, brightness=0.0, contrast=0.0, saturation=0.0)
    p = sample_params(32, 40, 50, spec, g)
    out = _augment(images, p, spec, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (32, 3, 24, 24) and out.dtype == torch.float32, f"got {out.dtype} {tuple(out.shape)}"
    assert p.flip.any() and not p.flip.all(), "the draw should hold both flipped and unflipped samples"
    for k in range(32):
        x = images[k].float() / 255
        ref = TF.resized_crop(x, int(p.top[k]), int(p.left[k]), int(p.height[k]), int(p.width[k]), [24, 24],
                              antialias=False)
        ref = ref.flip(-1) if p.flip[k] else ref
        # the outermost output pixels may read one pixel beyond the box (grid_sample sees the whole image,
        # resized_crop only the crop, and clamps): compare the interior
        gap = float((out[k] - ref)[:, 1:-1, 1:-1].abs().max())
        assert gap < 1e-4, f"sample {k}: {gap:.2e} from torchvision's resized_crop (box {p.height[k]}x{p.width[k]})"


def test_jitter_and_normalisation_equal_torchvisions_functions():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=g)
    spec = BatchAugment(20)
    p = sample_params(16, 20, 20, spec, g)
    whole = torch.full((16,), 20, dtype=torch.int64)
    p = dataclasses.replace(p, top=torch.zeros(16, dtype=torch.int64), left=torch.zeros(16, dtype=torch.int64),
                            height=whole, width=whole, flip=torch.zeros(16, dtype=torch.bool))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = _augment(images, p, spec, mean, std)
    for k in range(16):
        x = TF.adjust_brightness(images[k].float() / 255, float(p.brightness[k]))
        x = TF.adjust_contrast(x, float(p.contrast[k]))
        x = TF.normalize(TF.adjust_saturation(x, float(p.saturation[k])), list(mean), list(std))
        gap = float((out[k] - x).abs().max())
        assert gap < 1e-5, f"sample {k}: jitter+normalise {gap:.2e} away from torchvision's adjust_* + normalize"


def test_normalise_only_transform_equals_core_normalize():
    from core.data import Preprocessing, normalize

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    prep = Preprocessing(8, None, (0.3, 0.4, 0.5), (0.2, 0.3, 0.4))
    out = BatchTransform(None, prep.mean, prep.std, "cpu")(images)
    assert torch.allclose(out, normalize(images, prep), atol=1e-6), "batched normalisation differs from normalize()"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="scale must satisfy"):
        BatchAugment(8, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="brightness jitter"):
        BatchAugment(8, brightness=1.5)
    transform = BatchTransform(BatchAugment(8), (0.5,) * 3, (0.5,) * 3, "cpu")
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, H, W\]"):
        transform(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="pack_params"):
        transform(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    packed = pack_params(sample_params(2, 8, 8, BatchAugment(8), torch.Generator()), 8, 8)
    assert transform(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), packed).shape == (2, 3, 8, 8)
