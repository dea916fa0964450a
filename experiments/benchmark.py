"""Benchmarks: our path against the naive baseline, side by side in one process, with the ratio.

    python experiments/benchmark.py data                 # decode cache vs PIL decode every epoch, 224 px
    python experiments/benchmark.py data --quick --image-size 64
    python experiments/benchmark.py all --quick

Method (the same for every section): baseline and ours run in the same process on the same inputs,
alternated (B, O, then O, B, ...) so drift in machine load hits both; ``--warmup`` untimed rounds first,
then ``--repeats`` timed rounds; we report the median and the min-max of the throughput and the ratio
ours/baseline of the medians, plus the peak resident memory of each section. Results go to
``<out-dir>/<timestamp>.json`` (written atomically) and a table on stdout.

Adding a section: write ``def bench_x(cfg: BenchConfig) -> SectionResult`` and decorate it with
``@register("x")``. Only implemented sections are registered, so the CLI offers exactly what runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("benchmark")


@dataclass(frozen=True)
class BenchConfig:
    image_size: int | None  # None -> the section's default
    batch_size: int | None  # None -> the section's default
    quick: bool  # small inputs, for CI and smoke tests
    repeats: int
    warmup: int
    work_dir: Path  # scratch space for generated inputs and caches; deleted afterwards


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

    def summary(self) -> dict:
        """Wall-clock stats are the result; CPU-time ones explain it on a loaded, shared machine."""
        def stats(xs: list[float], cpu: list[float]) -> dict:
            return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs,
                    "cpu_median": statistics.median(cpu)}

        return {"name": self.name, "unit": self.unit, "items": self.items,
                "baseline": {"label": self.baseline_label, **stats(self.baseline, self.baseline_cpu)},
                "ours": {"label": self.ours_label, **stats(self.ours, self.ours_cpu)},
                "ratio": statistics.median(self.ours) / statistics.median(self.baseline),
                "cpu_ratio": statistics.median(self.ours_cpu) / statistics.median(self.baseline_cpu)}


@dataclass
class SectionResult:
    comparisons: list[Comparison]
    info: dict = field(default_factory=dict)  # section settings worth recording (sizes, counts)


Section = Callable[[BenchConfig], SectionResult]
SECTIONS: dict[str, Section] = {}


def register(name: str) -> Callable[[Section], Section]:
    def add(fn: Section) -> Section:
        if name in SECTIONS or name == "all":
            raise ValueError(f"benchmark section {name!r} is already registered (or reserved)")
        SECTIONS[name] = fn
        return fn
    return add


def compare(name: str, baseline: Callable[[], object], ours: Callable[[], object], *, items: int,
            repeats: int, warmup: int, baseline_label: str = "baseline", ours_label: str = "ours",
            unit: str = "images/s") -> Comparison:
    """Time ``baseline`` and ``ours`` (each processes ``items`` items per call), alternating their order."""
    result = Comparison(name, baseline_label, ours_label, items, unit)
    for _ in range(warmup):
        baseline()
        ours()
    for r in range(repeats):
        pair = [("baseline", baseline), ("ours", ours)]
        for label, fn in pair if r % 2 == 0 else reversed(pair):  # process time includes helper threads
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            elapsed = max(time.perf_counter() - start, 1e-9)
            cpu = max(time.process_time() - cpu_start, 1e-9)
            getattr(result, label).append(items / elapsed)
            getattr(result, f"{label}_cpu").append(items / cpu)
    return result


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---------------------------------------------------------------- data section
def _write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 800x600 JPEGs with photo-like statistics (smooth structure + sensor noise), 2 classes."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((800, 600),
                                                                                      Image.Resampling.BICUBIC)
        arr = np.asarray(low, np.float32) + rng.normal(0, 6, (600, 800, 3)).astype(np.float32)
        path = folder / f"class_{i % 2}" / f"photo_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _drain(loader) -> None:
    for _ in loader:
        pass


@register("data")
def bench_data(cfg: BenchConfig) -> SectionResult:
    """PIL full decode + resize every epoch (torchvision ImageFolder) vs the decode cache."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    from core.data import CachedImageDataset, _augmentation
    from core.decode_cache import decode_images, reset_cache_stats
    from core.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

    size, batch = cfg.image_size or 224, cfg.batch_size or 32
    count = 16 if cfg.quick else 128
    log.info("data: writing %d 800x600 JPEGs", count)
    paths = _write_photos(cfg.work_dir / "photos", count)
    prep = Preprocessing(size)
    naive_tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    naive_aug_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(),
                              T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    naive = DataLoader(datasets.ImageFolder(cfg.work_dir / "photos", naive_tf), batch_size=batch, num_workers=0)
    naive_aug = DataLoader(datasets.ImageFolder(cfg.work_dir / "photos", naive_aug_tf), batch_size=batch)

    entry = decode_images(paths, prep, cfg.work_dir / "cache")
    labels = [(p, int(p.parent.name[-1])) for p in paths]
    cached = DataLoader(CachedImageDataset(labels, entry.images, list(range(count)), prep), batch_size=batch)
    cached_aug = DataLoader(CachedImageDataset(labels, entry.images, list(range(count)), prep,
                                               _augmentation(prep)), batch_size=batch)
    builds = iter(range(10**6))

    def cold_build() -> None:  # a fresh cache folder and no in-memory entry: a real miss every call
        reset_cache_stats(forget_memory=True)
        decode_images(paths, prep, cfg.work_dir / f"cold-{next(builds)}", num_threads=1)  # same as baseline

    common = {"items": count, "repeats": cfg.repeats, "warmup": cfg.warmup}
    comparisons = [
        compare("epoch, warm cache", lambda: _drain(naive), lambda: _drain(cached),
                baseline_label="PIL decode+resize each epoch", ours_label="cached uint8", **common),
        compare("epoch with augmentation", lambda: _drain(naive_aug), lambda: _drain(cached_aug),
                baseline_label="PIL decode+RandomResizedCrop+jitter", ours_label="cached uint8 + v2 aug", **common),
        compare("first epoch (cache build)", lambda: _drain(naive), cold_build,
                baseline_label="PIL full decode+resize", ours_label="draft decode into cache, 1 thread", **common),
    ]
    reset_cache_stats(forget_memory=True)
    info = {"images": count, "source_size": [800, 600], "image_size": size, "batch_size": batch,
            "cache_bytes": int(entry.images.nbytes)}
    return SectionResult(comparisons, info)


# ---------------------------------------------------------------- infer section (owner: export)
@register("infer")
def bench_infer(cfg: BenchConfig) -> SectionResult:
    """torch eager vs channels_last vs onnxruntime fp32 vs INT8, batch 1 and 32 (cases: export/bench_infer.py)."""
    from export.bench_infer import infer_cases

    for noisy in ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx"):  # exporter chatter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    batches = (1, cfg.batch_size) if cfg.batch_size and cfg.batch_size != 1 else (1, 32)
    cases, info = infer_cases(cfg.work_dir, image_size=cfg.image_size or (64 if cfg.quick else 224),
                              batch_sizes=batches, quick=cfg.quick)
    common = {"repeats": cfg.repeats, "warmup": cfg.warmup}
    return SectionResult([compare(c.name, c.baseline, c.ours, items=c.items, baseline_label=c.baseline_label,
                                  ours_label=c.ours_label, **common) for c in cases], info)


# ---------------------------------------------------------------- runner
def run_sections(names: list[str], cfg: BenchConfig) -> dict:
    results = {}
    for name in names:
        exact = _reset_peak_rss()
        start = time.perf_counter()
        section = SECTIONS[name](cfg)
        results[name] = {"comparisons": [c.summary() for c in section.comparisons], "info": section.info,
                         "seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(_peak_rss_mb(), 1),
                         "peak_rss_scope": "section" if exact else "process"}
    return results


def format_table(results: dict) -> str:
    """One block per comparison: median [min-max] of each side and the ratio of the medians."""
    lines = []
    for name, res in results.items():
        lines.append(f"[{name}] peak RSS {res['peak_rss_mb']} MB ({res['peak_rss_scope']}), {res['seconds']} s")
        for c in res["comparisons"]:
            lines.append(f"  {c['name']} ({c['unit']}, median [min-max]):  ratio ours/baseline {c['ratio']:.1f}x"
                         f"  (per CPU second: {c['cpu_ratio']:.1f}x)")
            for side in ("baseline", "ours"):
                d = c[side]
                lines.append(f"    {side:<8} {d['median']:>10.1f} [{d['min']:.1f}-{d['max']:.1f}]  "
                             f"cpu {d['cpu_median']:.1f}  {d['label']}")
    return "\n".join(lines)


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark our code paths against naive baselines, side by side.")
    p.add_argument("section", choices=[*sorted(SECTIONS), "all"], help="which benchmark section to run")
    p.add_argument("--image-size", type=int, default=None, help="model input side in px (default: per section)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: per section)")
    p.add_argument("--quick", action="store_true", help="small inputs and 3 repeats: a smoke test, not a result")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 5, quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench"), help="where <timestamp>.json goes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, value in (("--image-size", args.image_size), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise SystemExit(f"{name} must be >= 1, got {value}")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {args.warmup}")
    names = sorted(SECTIONS) if args.section == "all" else [args.section]
    with tempfile.TemporaryDirectory(prefix="inat-bench-") as work:
        cfg = BenchConfig(args.image_size, args.batch_size, args.quick, repeats, args.warmup, Path(work))
        results = run_sections(names, cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out_dir / f"{stamp}.json"
    for n in range(1, 100):  # two runs in the same second keep both files
        if not out.exists():
            break
        out = args.out_dir / f"{stamp}-{n}.json"
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv if argv is not None else sys.argv[1:],
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "work_dir"},
              "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                       "platform": platform.platform(), "torch_threads": torch.get_num_threads()},
              "sections": results}
    _write_json_atomic(out, report)
    print(format_table(results))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
