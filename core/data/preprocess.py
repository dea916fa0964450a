"""Image preprocessing shared by training, evaluation, explanation, export and inference.

One module because a model is only as good as the agreement between the pixels it was trained on and the
pixels it is served: every path from a file to a tensor goes through :func:`load_uint8` and :func:`normalize`,
and the :class:`Preprocessing` record travels in the checkpoint and the ONNX metadata. ``resize_size=None``
resizes straight to ``image_size`` (Part A); ``resize_size=R`` resizes the short side to R and centre-crops,
as torchvision does (``Preprocessing(224, 256)`` is ImageNet evaluation). JPEGs decode in PIL's ``draft`` mode
to the smallest DCT scale that is still large enough (bounds against torchvision's pipeline:
``tests/test_preprocess.py``, docs/data.md). EXIF orientation is applied, every mode becomes RGB, transparency
is composited onto white, and anything PIL cannot decode raises :class:`ImageDecodeError` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that transpose width and height
DECODE_VERSION = 2  # bump whenever load_uint8's output changes: decode caches keyed on it are rebuilt
_DRAFT_GAP = 1  # decode JPEGs to >= 1x the resize input (PIL's thumbnail uses 2: no gain at 224 from 800x600)
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes the model's input; stored in checkpoints and ONNX metadata."""

    image_size: int  # square side fed to the model
    resize_size: int | None = None  # short side before a centre crop; None = straight to image_size^2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if self.resize_size is not None:
            if (isinstance(self.resize_size, bool) or not isinstance(self.resize_size, int)
                    or self.resize_size < self.image_size):
                raise ValueError(
                    f"resize_size must be None or an int >= image_size ({self.image_size}), "
                    f"got {self.resize_size!r}"
                )
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                if isinstance(value, str):
                    raise TypeError("a string")
                floats = tuple(float(v) for v in value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be 3 numbers (R, G, B), got {value!r}") from exc
            if len(floats) != 3 or not all(math.isfinite(v) for v in floats):
                raise ValueError(f"{name} must be 3 finite numbers (R, G, B), got {value!r}")
            if name == "std" and min(floats) <= 0:
                raise ValueError(f"std must be > 0 per channel, got {value!r}")
            object.__setattr__(self, name, floats)  # lists from JSON/YAML become tuples

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints, floats, lists): safe for ``torch.load(weights_only=True)`` and JSON."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are an error so a typo is never ignored."""
        known = {"image_size", "resize_size", "mean", "std"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        if "image_size" not in d:
            raise ValueError(f"preprocessing dict lacks 'image_size': {d!r}")
        return cls(**d)  # __post_init__ turns JSON/YAML lists into tuples

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, before the crop, for an upright ``width x height`` image."""
        if self.resize_size is None:
            return self.image_size, self.image_size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)


class ImageDecodeError(ValueError):
    """A file that cannot be turned into an RGB image; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path}: {reason}")


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # PIL's convert("RGB") clips 16-bit values at 255 instead of scaling: scale 0..65535 -> 0..255.
        arr = np.asarray(img, dtype=np.float64)
        scaled = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(path, f"unsupported image mode {mode!r} ({exc})") from exc


_TRANSPOSE = {  # EXIF orientation -> the transpose that makes the image upright (as PIL's exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation (1 = upright); a malformed EXIF block counts as upright rather than as corrupt."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # PIL raises assorted errors on broken EXIF; the pixels may still be fine
        return 1
    return value if value in _TRANSPOSE else 1


def _decode(path: str | Path, draft_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Open, fully decode (JPEGs optionally in draft mode), apply EXIF orientation, convert to RGB.

    Returns the image and the upright full-resolution (width, height), which fixes the output geometry
    independently of how much the draft decode reduced the image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            full_w, full_h = img.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and full_w * full_h > limit:  # explicit: warnings filters are not thread-safe
                raise ImageDecodeError(path, f"{full_w}x{full_h} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS "
                                             f"({limit}); raise that limit if the file is trusted")
            orientation = exif_orientation(img)
            if orientation in _SWAPS_AXES:
                full_w, full_h = full_h, full_w
            if draft_side is not None and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                img.draft(img.mode, (draft_side, draft_side))
            img.load()  # decoded pixels stay valid after the file is closed
        if orientation != 1:
            img = img.transpose(_TRANSPOSE[orientation])
        return _to_rgb(img, path), (full_w, full_h)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}") from exc


def _draft_side(prep: Preprocessing) -> int:
    """Smallest side the JPEG decoder may reduce to: what the resize step needs (times the gap)."""
    needed = prep.image_size if prep.resize_size is None else prep.resize_size
    return needed * _DRAFT_GAP


def load_uint8(path: str | Path, prep: Preprocessing) -> torch.Tensor:
    """Decode ``path`` to a uint8 ``[3, S, S]`` tensor at the geometry ``prep`` describes.

    The output geometry is computed from the original (upright) image size, so JPEG draft decoding
    changes pixel values by a few levels at most but never the framing.
    """
    img, (full_w, full_h) = _decode(path, draft_side=_draft_side(prep))
    new_w, new_h = prep.output_size(full_w, full_h)
    if img.size != (new_w, new_h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if prep.resize_size is not None:
        s = prep.image_size
        top = int(round((new_h - s) / 2.0))
        left = int(round((new_w - s) / 2.0))
        img = img.crop((left, top, left + s, top + s))
    # HWC -> CHW in numpy: a single-threaded copy; torch's .contiguous() would start its thread pool
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))


def normalize(x_uint8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 ``[..., 3, S, S]`` in 0..255 -> float32 ``(x / 255 - mean) / std``, same shape."""
    if not isinstance(x_uint8, torch.Tensor) or x_uint8.dtype != torch.uint8:
        got = x_uint8.dtype if isinstance(x_uint8, torch.Tensor) else type(x_uint8).__name__
        raise ValueError(f"normalize expects a torch.uint8 tensor, got {got}")
    if x_uint8.dim() < 3 or x_uint8.shape[-3] != 3:
        raise ValueError(f"normalize expects shape [..., 3, H, W], got {tuple(x_uint8.shape)}")
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x_uint8.device).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x_uint8.device).view(3, 1, 1)
    return (x_uint8.to(torch.float32).div_(255.0) - mean).div_(std)


def load_image_tensor(path: str | Path, prep: Preprocessing) -> torch.Tensor:
    """float32 ``[3, S, S]`` model input for one file: the inference/export/explain entry point."""
    return normalize(load_uint8(path, prep), prep)
