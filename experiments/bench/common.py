"""The benchmark framework shared by every section of ``experiments/benchmark.py``.

A module of its own because the sections build :class:`Comparison` objects and cannot import
``experiments/benchmark.py`` while it runs as ``__main__`` (a second copy with its own registry). Baseline and
ours alternate (B, O, then O, B, ...) on the same inputs so drift in machine load hits both; the summary holds
the median and min-max of the throughput and the ratio of the medians.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["BenchConfig", "Comparison", "SectionResult", "compare", "compare_many", "cuda_peak_mb", "device_summary",
           "peak_rss_mb", "quiet_loggers", "reset_peak_memory", "synchronize", "write_photo_dataset", "write_photos"]


@dataclass(frozen=True)
class BenchConfig:
    image_size: int | None  # None -> the section's default
    batch_size: int | None  # None -> the section's default
    quick: bool  # small inputs, for CI and smoke tests
    repeats: int
    warmup: int
    work_dir: Path  # scratch space for generated inputs and caches; deleted afterwards
    device: str = "cpu"  # "cpu" | "cuda[:N]": where the train and sweep sections run (data/infer: CPU)
    data_dir: Path | None = None  # accuracy / pipeline: a real photo folder (train/, val/)
    epochs: int | None = None  # accuracy: epochs per run (None -> the section's default)
    seeds: tuple[int, ...] = (0, 1)  # accuracy: one run per seed and row
    rows: str = "issue"  # accuracy: a preset or comma-separated row keys (experiments/bench/accuracy.py)
    out_dir: Path = Path("runs/bench")  # where the JSON (and the accuracy section's run log) go
    peer_workers: int = 2  # accuracy: DataLoader workers of the peers' pipeline


@dataclass
class Comparison:
    """Throughputs (items per second) of baseline and ours, one per timed repeat."""

    name: str
    baseline_label: str
    ours_label: str
    items: int
    unit: str = "images/s"
    baseline: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)  # items per second of process CPU time
    ours_cpu: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # section-specific numbers (FLOP/s, fraction of peak, ...)

    def summary(self) -> dict:
        """Wall-clock stats are the result; CPU-time ones explain it on a loaded, shared machine."""
        def stats(xs: list[float], cpu: list[float]) -> dict:
            seconds = sorted(self.items / x for x in xs)  # wall time of one call
            return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs,
                    "cpu_median": statistics.median(cpu) if cpu else None,
                    "seconds_median": statistics.median(seconds), "seconds_min": seconds[0],
                    "seconds_max": seconds[-1]}

        def ratio(ours: list[float], base: list[float]) -> float | None:
            return statistics.median(ours) / statistics.median(base) if ours and base else None

        return {"name": self.name, "unit": self.unit, "items": self.items,
                "baseline": {"label": self.baseline_label, **stats(self.baseline, self.baseline_cpu)},
                "ours": {"label": self.ours_label, **stats(self.ours, self.ours_cpu)},
                "ratio": ratio(self.ours, self.baseline), "cpu_ratio": ratio(self.ours_cpu, self.baseline_cpu),
                **self.extra}


@dataclass
class SectionResult:
    comparisons: list[Comparison]
    info: dict = field(default_factory=dict)  # section settings worth recording (sizes, counts)


def compare(name: str, baseline: Callable[[], object], ours: Callable[[], object], *, items: int,
            repeats: int, warmup: int, baseline_label: str = "baseline", ours_label: str = "ours",
            unit: str = "images/s") -> Comparison:
    """Time ``baseline`` and ``ours`` (each processes ``items`` items per call), alternating their order.

    On CUDA the callables must synchronise before returning (see :func:`synchronize`), or the clock
    stops while kernels are still queued.
    """
    (result,) = compare_many(name, baseline, {ours_label: ours}, items=items, repeats=repeats, warmup=warmup,
                             baseline_label=baseline_label, unit=unit)
    result.name = name  # one variant: no ": label" suffix
    return result


def compare_many(name: str, baseline: Callable[[], object], variants: dict[str, Callable[[], object]], *,
                 items: int, repeats: int, warmup: int, baseline_label: str = "baseline",
                 unit: str = "images/s") -> list[Comparison]:
    """Like :func:`compare` for several variants of ours against one baseline, timed once per round.

    Each round runs the baseline and every variant once, in an order rotated by one position per round, so
    no side always runs first or right after the same neighbour. Returns one :class:`Comparison` per variant
    (``name: label``), all sharing the baseline's runs.
    """
    sides = [baseline, *variants.values()]  # index 0 = baseline (a variant may be labelled "baseline" too)
    wall: list[list[float]] = [[] for _ in sides]
    cpu: list[list[float]] = [[] for _ in sides]
    for _ in range(warmup):
        for fn in sides:
            fn()
    for r in range(repeats):
        k = r % len(sides)
        for i in [*range(k, len(sides)), *range(k)]:  # with one variant: alternates baseline-first / ours-first
            start, cpu_start = time.perf_counter(), time.process_time()
            sides[i]()
            wall[i].append(items / max(time.perf_counter() - start, 1e-9))
            cpu[i].append(items / max(time.process_time() - cpu_start, 1e-9))
    return [Comparison(f"{name}: {label}", baseline_label, label, items, unit, baseline=wall[0],
                       ours=wall[i], baseline_cpu=cpu[0], ours_cpu=cpu[i])
            for i, label in enumerate(variants, start=1)]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work; a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_summary(device: torch.device | str) -> dict:
    """What the train and sweep sections run on, for the report header and the JSON."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": str(device), "name": torch.cuda.get_device_name(device),
                "note": "GPU run: our trainer uses AMP (bf16/fp16) and channels_last, our loaders pinned memory"}
    return {"device": "cpu", "name": "cpu", "threads": torch.get_num_threads(),
            "note": "CPU run: our trainer's CPU settings (channels_last, fp32; AMP is off by default on CPU)"}


# ------------------------------------------------------------------------------------------ memory
def reset_peak_memory() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) and CUDA's peak counter; False if RSS cannot be reset."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def cuda_peak_mb() -> float | None:
    """``torch.cuda.max_memory_allocated`` in MB since the last reset; None without CUDA."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of chatty loggers (per-epoch lines, Optuna's per-trial lines) for one block."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


# ---------------------------------------------------------------------------------- generated photos
def _photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Photo-like statistics (smooth structure + sensor noise), so JPEG decode costs what a photo costs."""
    w, h = size
    low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(low, np.float32) + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (800, 600)) -> list[Path]:
    """``count`` 800x600 JPEGs in ``folder/class_0`` and ``folder/class_1`` (alternating)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"class_{i % 2}" / f"photo_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(rng, size).save(path, quality=90)
        paths.append(path)
    return paths


def write_photo_dataset(root: Path, *, classes: int, train_per_class: int, test_per_class: int, seed: int = 0,
                        size: tuple[int, int] = (800, 600)) -> Path:
    """An iNaturalist-layout folder (``train/<class>/``, ``val/<class>/``) of 800x600 JPEGs; returns ``root``."""
    if classes < 2 or train_per_class < 2 or test_per_class < 1:
        raise ValueError(f"need >= 2 classes, >= 2 train and >= 1 test images per class; got {classes}, "
                         f"{train_per_class}, {test_per_class}")
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _photo(rng, size).save(folder / f"photo_{i:04d}.jpg", quality=90)
    return root
