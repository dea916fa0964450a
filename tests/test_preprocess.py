"""core.data.preprocess: geometry against torchvision (the oracle), colour modes, EXIF, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms as T

from core.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    Preprocessing,
    load_image_tensor,
    load_uint8,
    normalize,
)


def _noise_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def _torchvision_uint8(img: Image.Image, prep: Preprocessing) -> torch.Tensor:
    steps = [T.Resize((prep.image_size, prep.image_size))] if prep.resize_size is None else [
        T.Resize(prep.resize_size), T.CenterCrop(prep.image_size)]
    return T.Compose([*steps, T.PILToTensor()])(img)


# ---------------------------------------------------------------- Preprocessing record
@pytest.mark.parametrize("kwargs", [
    {"image_size": 0}, {"image_size": 32.0}, {"image_size": True},
    {"image_size": 64, "resize_size": 32}, {"image_size": 64, "mean": (0.5, 0.5)},
    {"image_size": 64, "std": (0.2, 0.0, 0.2)}, {"image_size": 64, "mean": "abc"},
])
def test_preprocessing_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="image_size|resize_size|mean|std"):
        Preprocessing(**kwargs)


@given(size=st.integers(1, 512), extra=st.one_of(st.none(), st.integers(0, 64)),
       mean=st.tuples(*[st.floats(-2, 2)] * 3), std=st.tuples(*[st.floats(0.01, 2)] * 3))
def test_preprocessing_dict_round_trip(size, extra, mean, std):
    prep = Preprocessing(size, None if extra is None else size + extra, mean, std)
    d = prep.to_dict()
    assert all(isinstance(v, (int, float, list, type(None))) for v in d.values()), f"not plain data: {d}"
    assert Preprocessing.from_dict(d) == prep, f"round trip changed {prep} into {Preprocessing.from_dict(d)}"


def test_from_dict_names_unknown_key():
    with pytest.raises(ValueError, match="crop_pct"):
        Preprocessing.from_dict({"image_size": 32, "crop_pct": 0.9})


# ---------------------------------------------------------------- geometry: torchvision is the oracle
@given(w=st.integers(8, 120), h=st.integers(8, 120), size=st.integers(4, 48),
       extra=st.one_of(st.none(), st.integers(0, 24)), seed=st.integers(0, 3))
def test_png_geometry_equals_torchvision_exactly(tmp_path_factory, w, h, size, extra, seed):
    """PNGs are never draft-decoded, so our pixels must equal torchvision's PIL pipeline bit for bit."""
    prep = Preprocessing(size, None if extra is None else size + extra)
    img = _noise_image(w, h, seed)
    path = tmp_path_factory.mktemp("png") / "x.png"
    img.save(path)
    ours = load_uint8(path, prep)
    ref = _torchvision_uint8(img, prep)
    assert ours.dtype == torch.uint8, f"got {ours.dtype}"
    assert ours.shape == (3, size, size), f"got {tuple(ours.shape)}"
    assert torch.equal(ours, ref), f"{w}x{h} -> {prep}: max diff {(ours.int() - ref.int()).abs().max()}"


@pytest.mark.parametrize("prep", [Preprocessing(32), Preprocessing(32, 40)])
def test_large_jpeg_draft_decode_stays_close_to_full_decode(tmp_path, prep):
    """A smooth 800x600 JPEG, draft-decoded, is within 2 uint8 levels (mean) of the full decode."""
    yy, xx = np.mgrid[0:600, 0:800]
    arr = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=92)
    ours = load_uint8(path, prep).int()
    ref = _torchvision_uint8(Image.open(path).convert("RGB"), prep).int()
    diff = (ours - ref).abs().float()
    assert diff.mean() <= 2.0 and diff.max() <= 12, f"mean {diff.mean():.2f} max {diff.max():.0f} levels"


def test_load_image_tensor_equals_torchvision_normalised(tmp_path):
    img = _noise_image(50, 30, 1)
    path = tmp_path / "n.png"
    img.save(path)
    prep = Preprocessing(24, 28, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    ref = T.Compose([T.Resize(28), T.CenterCrop(24), T.ToTensor(), T.Normalize(prep.mean, prep.std)])(img)
    ours = load_image_tensor(path, prep)
    assert ours.dtype == torch.float32 and ours.shape == (3, 24, 24)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0, msg="normalised tensor differs from torchvision")


def test_normalize_batched_and_rejects_bad_input():
    x = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    prep = Preprocessing(5)
    out = normalize(x, prep)
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x.float() / 255)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert x.dtype == torch.uint8, "input must not be modified"
    with pytest.raises(ValueError, match="uint8"):
        normalize(x.float(), prep)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        normalize(torch.zeros(4, 5, 5, dtype=torch.uint8), prep)


# ---------------------------------------------------------------- colour modes, EXIF, bad files
def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _pixel(path: Path, size: int, x: int = 0, y: int = 0) -> tuple[int, ...]:
    """The RGB pixel the training path decodes (``load_uint8`` of a ``size``-square image: no resize)."""
    return tuple(load_uint8(path, Preprocessing(size))[:, y, x].tolist())


def test_mode_conversions(tmp_path):
    gray = _save(Image.new("L", (8, 8), 100), tmp_path / "g.png")
    assert _pixel(gray, 8) == (100, 100, 100)

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black -> white background shows
    rgba_path = _save(rgba, tmp_path / "a.png")
    assert _pixel(rgba_path, 8) == (255, 255, 255), "transparent pixel must be white"
    assert _pixel(rgba_path, 8, 1, 1) == (255, 0, 0), "opaque pixel must keep its colour"

    la = _save(Image.new("LA", (4, 4), (50, 0)), tmp_path / "la.png")
    assert _pixel(la, 4) == (255, 255, 255), "transparent LA must composite onto white"

    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert _pixel(_save(pal, tmp_path / "p.png"), 4) == (10, 20, 30)
    assert _pixel(_save(pal, tmp_path / "pt.png", transparency=1), 4) == (255, 255, 255)

    cmyk = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    r, g, b = _pixel(cmyk, 16, 8, 8)
    assert r > 200 and g < 60 and b < 60, f"CMYK pure red decoded as {(r, g, b)}"
    assert load_uint8(cmyk, Preprocessing(8)).shape == (3, 8, 8)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535, 1000]] * 4, dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I"), "test needs a 16-bit PNG"
    px = [_pixel(path, 4, x)[0] for x in range(4)]
    assert px == [0, 128, 255, 4], f"16-bit values should scale by 1/257, got {px}"


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(img, tmp_path / f"r{suffix}", exif=exif.tobytes())
    upright = load_uint8(path, Preprocessing(20))  # 20x40 upright, squeezed to 20x20
    top, bottom = upright[:, 2, 10].tolist(), upright[:, 17, 10].tolist()
    assert top[0] > 200 and bottom[2] > 200, f"left (red) must end on top: top={top} bottom={bottom}"
    # resize_size uses the upright aspect: short side is the width
    t = load_uint8(path, Preprocessing(10, 10))
    assert t[0, 1, 5] > 200 and t[2, 8, 5] > 200, "crop must come from the upright image"


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        load_uint8(text, Preprocessing(8))

    buf = io.BytesIO()
    _noise_image(64, 64, 0).save(buf, format="JPEG", quality=90)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="trunc.jpg") as info:
        load_uint8(truncated, Preprocessing(8))
    assert info.value.path == truncated and isinstance(info.value, ValueError)

    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_uint8(tmp_path / "missing.jpg", Preprocessing(8))


# ---------------------------------------------------------------- real photos, real ImageNet model
def test_imagenet_preprocessing_matches_torchvision_on_real_photos(shared_dir):
    """Resize(256) -> CenterCrop(224): within 3 levels mean / 80 max per photo, identical top-1.

    Measured: 0 / 0 for the PNG and the photos too small to draft-decode, 0.4 / 9 and 2.4 / 63 for the
    two large JPEGs (decoded at 1/2 and 1/4 by libjpeg before the resize).
    """
    import torchvision

    weights = shared_dir / "weights" / "mobilenet_v2_imagenet1k_from_qnnpack.pth"
    photos = sorted(p for p in (shared_dir / "photos").iterdir() if p.suffix in (".jpg", ".png"))
    expected = {"eskimo_dog.png": 248, "hog.jpg": 341, "horse_cart.jpg": 603, "refrigerator.jpg": 760,
                "samoyed.jpg": 258}
    assert {p.name for p in photos} >= set(expected), f"photos found: {[p.name for p in photos]}"
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    prep = Preprocessing(224, 256)
    ref_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = torch.stack([load_image_tensor(p, prep) for p in photos])
    ref = torch.stack([ref_tf(Image.open(p).convert("RGB")) for p in photos])
    levels = ((ours - ref) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255).abs()
    for i, p in enumerate(photos):
        assert levels[i].mean() <= 3 and levels[i].max() <= 80, (
            f"{p.name}: mean {levels[i].mean():.2f} max {levels[i].max():.1f} uint8 levels from torchvision")
    with torch.no_grad():
        top_ours = model(ours).argmax(1).tolist()
        top_ref = model(ref).argmax(1).tolist()
    assert top_ours == top_ref, f"top-1 differs: ours {top_ours} torchvision {top_ref}"
    assert top_ours == [expected[p.name] for p in photos], f"top-1 {top_ours} vs README labels"


def test_decompression_bomb_limit_is_an_error_naming_the_file(tmp_path, monkeypatch):
    over = _save(_noise_image(12, 12, 0), tmp_path / "over.png")  # 144 pixels: over the limit (PIL only warns)
    bomb = _save(_noise_image(20, 20, 0), tmp_path / "bomb.png")  # 400 pixels: over 2x the limit (PIL raises)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match=r"over.png.*12x12 pixels exceeds PIL.Image.MAX_IMAGE_PIXELS"), \
            pytest.warns(Image.DecompressionBombWarning):
        load_uint8(over, Preprocessing(8))
    with pytest.raises(ImageDecodeError, match=r"bomb.png.*DecompressionBombError"):
        load_uint8(bomb, Preprocessing(8))
