"""Decode cache: every image decoded once per geometry, stored as one compact uint8 ``.npy`` per file list.

Decoding a photo costs more than a small CNN's forward pass, and a sweep trains the same files dozens of times.
:func:`decode_images` decodes a file list once into ``<cache_dir>/decoded/<key>.npy`` (``[N, 3, S, S]``) plus a
sidecar listing the failures; later calls memory-map it, so epochs, trials and processes never decode again and
DataLoader workers share the pages. The key hashes the geometry, the decoder version and each file's path, size
and mtime (normalisation happens after the cache, so it is not in the key). Entries are written atomically,
sidecar last, under a per-key lock: concurrent workers decode a list once. Counters: :func:`cache_stats`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.data.preprocess import DECODE_VERSION, ImageDecodeError, Preprocessing, load_uint8
from core.runfiles import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored layout or the decoder's output changes
_MEMORY_ENTRIES = 8  # memory-mapped entries kept open per process (they cost address space, not RAM)


def cache_root() -> Path:
    """``$INAT_CNN_CACHE`` if set, else ``~/.cache/inat-cnn``: the demo set, downloads and decodes live here."""
    env = os.environ.get("INAT_CNN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "inat-cnn"


@dataclass(frozen=True)
class CacheStats:
    """Process-wide counters: tests and the sweep assert that a second trial decodes nothing."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    images_decoded: int = 0


_stats = CacheStats()
_memory: OrderedDict[str, DecodedImages] = OrderedDict()


def cache_stats() -> CacheStats:
    """A snapshot of the counters since the process started (or :func:`reset_cache_stats`)."""
    return _stats


def reset_cache_stats(*, forget_memory: bool = False) -> None:
    """Zero the counters; ``forget_memory=True`` also drops in-process entries (the next call reads disk)."""
    global _stats
    _stats = CacheStats()
    if forget_memory:
        _memory.clear()


def _count(**deltas: int) -> None:
    global _stats
    _stats = replace(_stats, **{k: getattr(_stats, k) + v for k, v in deltas.items()})


@dataclass(frozen=True)
class DecodedImages:
    """One cache entry: ``images[i]`` is ``paths[i]`` decoded (zeros where ``i in failed``)."""

    key: str
    npy_path: Path | None  # None for an empty list (nothing stored)
    paths: tuple[Path, ...]
    images: np.ndarray  # uint8 [N, 3, S, S], memory-mapped read-only
    failed: dict[int, str]  # row -> reason the file could not be decoded


def cache_key(paths: Sequence[Path], prep: Preprocessing) -> str:
    """Hash of the decode geometry and each file's (absolute path, size, mtime)."""
    h = hashlib.sha256()
    header = [CACHE_FORMAT, DECODE_VERSION, prep.image_size, prep.resize_size]
    h.update(json.dumps(header).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"image file disappeared while building the decode cache: {p}") from exc
        h.update(b"\n" + os.fsencode(Path(p).resolve()) + f"\t{st.st_size}\t{st.st_mtime_ns}".encode())  # any bytes
    return h.hexdigest()[:32]


@contextmanager
def _file_lock(lock_path: Path):
    """Exclusive advisory lock (POSIX); elsewhere a no-op, and concurrent builders just race harmlessly."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_entry(folder: Path, key: str, paths: tuple[Path, ...], prep: Preprocessing) -> DecodedImages | None:
    meta_path, npy_path = folder / f"{key}.json", folder / f"{key}.npy"
    if not (meta_path.is_file() and npy_path.is_file()):
        return None
    try:
        meta = read_json(meta_path)
        images = np.load(npy_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("decode cache entry %s is unreadable (%s); decoding again", npy_path, exc)
        return None
    expected = (len(paths), 3, prep.image_size, prep.image_size)
    if images.shape != expected or images.dtype != np.uint8 or meta.get("format") != CACHE_FORMAT:
        log.warning("decode cache entry %s has shape %s, expected %s; decoding again", npy_path, images.shape,
                    expected)
        return None
    failed = {int(k): v for k, v in meta.get("failed", {}).items()}
    return DecodedImages(key, npy_path, paths, images, failed)


def _decode_one(args: tuple[Path, Preprocessing]) -> np.ndarray | str:
    path, prep = args
    try:
        return load_uint8(path, prep).numpy()
    except (ImageDecodeError, FileNotFoundError) as exc:
        return str(exc)


def _check_room(folder: Path, n: int, s: int) -> None:
    """Refuse (ValueError, exit 2) before allocating an array the disk or the machine's memory cannot hold."""
    need, free = n * 3 * s * s, shutil.disk_usage(folder).free
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else need
    if need > free or need > ram:
        raise ValueError(f"{n} images at {s}x{s} px need {need / 1e9:,.1f} GB of decoded pixels, but the decode cache "
                         f"{folder} has {free / 1e9:,.1f} GB free and this machine {ram / 1e9:,.1f} GB of RAM; lower "
                         "--image-size or --max-per-class (or set INAT_CNN_CACHE to a bigger disk)")


def _build_entry(folder: Path, key: str, paths: tuple[Path, ...], prep: Preprocessing,
                 num_threads: int, desc: str) -> DecodedImages:
    n, s = len(paths), prep.image_size
    _check_room(folder, n, s)
    failed: dict[int, str] = {}
    with atomic_path(folder / f"{key}.npy", suffix=".npy.tmp") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, s, s))
        jobs = ((p, prep) for p in paths)
        with ThreadPoolExecutor(max_workers=num_threads) as pool, \
                tqdm(total=n, desc=desc, unit="img", disable=None, leave=False) as bar:
            for i, result in enumerate(pool.map(_decode_one, jobs)):
                if isinstance(result, str):
                    failed[i] = result
                else:
                    out[i] = result
                bar.update(1)
        out.flush()
        del out
    meta = {"format": CACHE_FORMAT, "count": n, "image_size": s, "resize_size": prep.resize_size,
            "failed": {str(k): v for k, v in failed.items()}, "paths": [str(p) for p in paths]}
    write_json(folder / f"{key}.json", meta)
    images = np.load(folder / f"{key}.npy", mmap_mode="r")
    return DecodedImages(key, folder / f"{key}.npy", paths, images, failed)


def decode_images(paths: Sequence[Path], prep: Preprocessing, cache_dir: Path | None = None, *,
                  num_threads: int | None = None, desc: str = "decoding") -> DecodedImages:
    """Decoded uint8 images for ``paths`` at ``prep``'s geometry: from memory, from disk, or decoded now.

    Files that cannot be decoded are not fatal here: their rows are zeros and ``failed`` says why, so the
    caller decides (``core.data.loaders`` skips them and lists them in the run folder).
    """
    paths = tuple(Path(p) for p in paths)
    key = cache_key(paths, prep)
    if key in _memory:
        _memory.move_to_end(key)
        _count(memory_hits=1)
        log.info("decode cache hit (memory): %d images at %dpx, key %s", len(paths), prep.image_size, key)
        return _memory[key]
    if not paths:
        return DecodedImages(key, None, paths, np.zeros((0, 3, prep.image_size, prep.image_size), np.uint8), {})
    folder = (cache_dir if cache_dir is not None else cache_root()) / "decoded"
    folder.mkdir(parents=True, exist_ok=True)
    entry = _read_entry(folder, key, paths, prep)
    if entry is None:
        with _file_lock(folder / f"{key}.lock"):
            entry = _read_entry(folder, key, paths, prep)  # another process may have just built it
            if entry is None:
                threads = num_threads or max(1, min(8, os.cpu_count() or 1))
                log.info("decode cache miss: decoding %d images at %dpx (%d threads), key %s", len(paths),
                         prep.image_size, threads, key)
                entry = _build_entry(folder, key, paths, prep, threads, desc)
                _count(misses=1, images_decoded=len(paths))
            else:
                _count(disk_hits=1)
    else:
        _count(disk_hits=1)
        log.info("decode cache hit (disk): %d images at %dpx, key %s", len(paths), prep.image_size, key)
    _memory[key] = entry
    while len(_memory) > _MEMORY_ENTRIES:
        _memory.popitem(last=False)
    return entry
