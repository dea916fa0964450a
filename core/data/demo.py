"""A deterministic 10-class demo dataset in the iNaturalist-12K layout, generated once into the cache.

Every script must run end to end with no download. The classes carry iNaturalist-12K's names, but each is a
(shape, texture) pair, with colour, position, scale, background and clutter random and shared by all classes,
so a model must learn shape and texture: a small CNN learns it within a few CPU epochs without reaching 100% at
once. Each image has its own seeded RNG, and the set is renamed into place, so an interrupted or concurrent
generation never leaves a half set that looks complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.data.decode_cache import cache_root

log = logging.getLogger(__name__)

DEMO_VERSION = 1  # bump when the drawing changes: existing demo folders are regenerated
DEMO_CLASSES: dict[str, tuple[str, str]] = {  # iNaturalist-12K class name -> (shape, texture)
    "Amphibia": ("circle", "solid"),
    "Animalia": ("circle", "stripes"),
    "Arachnida": ("triangle", "solid"),
    "Aves": ("triangle", "stripes"),
    "Fungi": ("square", "solid"),
    "Insecta": ("square", "stripes"),
    "Mammalia": ("star", "solid"),
    "Mollusca": ("star", "stripes"),
    "Plantae": ("cross", "solid"),
    "Reptilia": ("cross", "stripes"),
}
_MARKER = ".demo-complete.json"


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float,
                  rng: random.Random) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` of radius ``r`` centred at (cx, cy), rotated by ``angle`` radians."""
    if shape == "circle":
        aspect = rng.uniform(0.8, 1.0)
        local = [(math.cos(t), aspect * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 36, endpoint=False)]
    elif shape in ("triangle", "square"):
        k = 3 if shape == "triangle" else 4
        local = [(math.cos(2 * math.pi * i / k), math.sin(2 * math.pi * i / k)) for i in range(k)]
    elif shape == "star":
        local = [((1.0 if i % 2 == 0 else 0.42) * math.cos(math.pi * i / 5),
                  (1.0 if i % 2 == 0 else 0.42) * math.sin(math.pi * i / 5)) for i in range(10)]
    elif shape == "cross":
        w = 0.33
        local = [(w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1), (w, -1), (w, -w),
                 (1, -w), (1, w)]
    else:
        raise ValueError(f"unknown shape {shape!r}; expected circle, triangle, square, star or cross")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in local]


def _colour(rng: random.Random, far_from: tuple[float, ...] | None = None, min_dist: float = 110.0) -> tuple:
    for _ in range(50):
        c = tuple(rng.randrange(256) for _ in range(3))
        if far_from is None or math.dist(c, far_from) >= min_dist:
            return c
    return tuple(255 - int(v) for v in far_from)  # the complement is always far enough


def draw_demo_image(shape: str, texture: str, seed: str) -> Image.Image:
    """One demo image of ``shape`` with ``texture``; ``seed`` fixes everything else."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(rng.getrandbits(64))
    w, h = rng.randint(96, 200), rng.randint(96, 200)
    # background: a gentle gradient between two nearby colours, plus noise
    c0 = np.array(_colour(rng), float)
    c1 = np.clip(c0 + np.array([rng.uniform(-70, 70) for _ in range(3)]), 0, 255)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    bg = (c0 * (1 - t) + c1 * t).astype(np.float32) + 8 * nprng.standard_normal((h, w, 3), dtype=np.float32)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = min(w, h)
    for _ in range(rng.randint(1, 4)):  # clutter: lines and blobs, never a class shape
        col = _colour(rng)
        if rng.random() < 0.5:
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            length, a = rng.uniform(0.15, 0.4) * side, rng.uniform(0, math.pi)
            draw.line([(x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a))], fill=col,
                      width=rng.randint(1, 3))
        else:
            r = rng.uniform(0.03, 0.08) * side
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            draw.ellipse([x0 - r, y0 - r * rng.uniform(0.5, 1), x0 + r, y0 + r], fill=col)
    # the object
    r = rng.uniform(0.3, 0.46) * side
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon(_shape_points(shape, cx, cy, r, rng.uniform(0, 2 * math.pi), rng), fill=255)
    main = _colour(rng, far_from=tuple((c0 + c1) / 2), min_dist=140.0)  # stands out from the background
    if texture == "solid":
        fill = Image.new("RGB", (w, h), main)
    elif texture == "stripes":
        period, phi = rng.uniform(0.08, 0.14) * side, rng.uniform(0, math.pi)  # survives resizing to 32 px
        yy, xx = np.mgrid[0:h, 0:w]
        on = ((xx * math.cos(phi) + yy * math.sin(phi)) % period) < period / 2
        second = np.array(_colour(rng, far_from=main), np.uint8)
        fill = Image.fromarray(np.where(on[..., None], np.array(main, np.uint8), second).astype(np.uint8))
    else:
        raise ValueError(f"unknown texture {texture!r}; expected solid or stripes")
    img.paste(fill, (0, 0), mask)
    return img


def _write_one(job: tuple[Path, str, str, str]) -> None:
    path, shape, texture, seed = job
    draw_demo_image(shape, texture, seed).save(path, quality=88)


def _generate(folder: Path, train_per_class: int, val_per_class: int, seed: int) -> None:
    jobs = []
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, (shape, texture) in DEMO_CLASSES.items():
            out = folder / split / name
            out.mkdir(parents=True)
            jobs += [(out / f"{name.lower()}_{i:04d}.jpg", shape, texture,
                      f"demo-{DEMO_VERSION}-{seed}-{split}-{name}-{i}") for i in range(count)]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(_write_one, jobs))  # each image has its own RNG: order-independent


def ensure_demo_dataset(root: Path | None = None, *, train_per_class: int = 100, val_per_class: int = 30,
                        seed: int = 0) -> Path:
    """Path of the demo set (``root/train``, ``root/val``), generating it the first time (~2-3 s).

    ``root`` defaults to ``$INAT_CNN_CACHE/demo``. An existing folder that is not a demo set is never
    touched: that is an error. A demo set from another version or with other counts is regenerated.
    """
    if train_per_class < 2 or val_per_class < 1:
        raise ValueError(f"need train_per_class >= 2 and val_per_class >= 1, got {train_per_class}, "
                         f"{val_per_class}")
    root = Path(root).expanduser() if root is not None else cache_root() / "demo"
    wanted = {"version": DEMO_VERSION, "train_per_class": train_per_class, "val_per_class": val_per_class,
              "seed": seed, "classes": list(DEMO_CLASSES)}
    marker = root / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == wanted:
                return root
        except ValueError:
            pass
        log.info("demo set at %s is from another version or configuration; regenerating", root)
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not a generated demo set; pass an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        log.info("generating the demo dataset into %s (%d classes x %d+%d images)", root, len(DEMO_CLASSES),
                 train_per_class, val_per_class)
        _generate(tmp, train_per_class, val_per_class, seed)
        (tmp / _MARKER).write_text(json.dumps(wanted), encoding="utf-8")
        if root.exists():
            root.rmdir()  # empty (checked above)
        try:
            os.replace(tmp, root)
        except OSError:  # another process won the race: use its copy if it is complete
            if not (root / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
