"""Benchmarks: our path against the naive baseline, side by side in one process, with the ratio.

    python experiments/benchmark.py all                  # every section at its full size (docs/performance.md)
    python experiments/benchmark.py train                # training step of the Part A CNN, 224 px, batch 32
    python experiments/benchmark.py data --quick --image-size 64
    python experiments/benchmark.py finetune --image-size 128  # head-only Part B epoch: cached features
    python experiments/benchmark.py all --quick          # a smoke test of every section (seconds)

Sections: ``train``, ``data``, ``sweep``, ``infer``, ``finetune`` (each in experiments/bench/). Baseline and
ours run alternated on the same inputs, so drift in machine load hits both; the median and min-max of
``--repeats`` timed rounds after ``--warmup`` untimed ones, and the peak memory, go to
``<out-dir>/<timestamp>.json`` and a table. A new section is ``@register("x") def bench_x(cfg) -> SectionResult``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.cli import UsageError, configure_logging, run_script
from core.runfiles import to_plain, write_json
from experiments.bench.common import (
    BenchConfig,
    Comparison,
    SectionResult,
    compare,
    cuda_peak_mb,
    device_summary,
    peak_rss_mb,
    reset_peak_memory,
)

__all__ = ["SECTIONS", "BenchConfig", "Comparison", "SectionResult", "compare", "format_table", "get_args_parser",
           "main", "register", "run_sections"]

log = logging.getLogger("benchmark")

Section = Callable[[BenchConfig], SectionResult]
SECTIONS: dict[str, Section] = {}


def register(name: str) -> Callable[[Section], Section]:
    def add(fn: Section) -> Section:
        if name in SECTIONS or name == "all":
            raise ValueError(f"benchmark section {name!r} is already registered (or reserved)")
        SECTIONS[name] = fn
        return fn
    return add


# ---------------------------------------------------------------- sections that live in experiments/bench/
# name -> (module holding ``bench_<name>(cfg)``, what it compares); imported only when the section runs
DELEGATED: dict[str, tuple[str, str]] = {
    "infer": ("experiments.bench.infer_cases", "torch eager vs channels_last vs onnxruntime fp32 vs INT8, batch 1 "
                                               "and 32"),
    "data": ("experiments.bench.data", "PIL full decode + resize every epoch (torchvision ImageFolder) vs the decode "
                                       "cache"),
    "train": ("experiments.bench.train", "Part A CNN training step, ours vs an NCHW fp32 loop, FLOP/s vs matmul peak"),
    "sweep": ("experiments.bench.sweep", "4-trial x 2-epoch sweep, ours (run_sweep + decode cache) vs 4 notebook runs"),
    "finetune": ("experiments.bench.finetune", "head-only Part B epoch: full forward through the frozen backbone vs "
                                               "cached features"),
    "pipeline": ("experiments.bench.pipeline", "a whole augmented training epoch: batched device path vs per-sample "
                                               "DataLoader path"),
    "accuracy": ("experiments.bench.accuracy", "whole Part A runs on real photos: peers' pipeline vs ours, test "
                                               "accuracy and images/s"),
}


def _delegate(name: str, module: str, doc: str) -> Section:
    def run(cfg: BenchConfig) -> SectionResult:
        return getattr(importlib.import_module(module), f"bench_{name}")(cfg)

    run.__name__, run.__doc__ = f"bench_{name}", f"{doc} ({module})."
    return run


for _name, (_module, _doc) in DELEGATED.items():
    register(_name)(_delegate(_name, _module, _doc))


# ---------------------------------------------------------------- runner
def run_sections(names: list[str], cfg: BenchConfig) -> dict:
    results = {}
    for name in names:
        exact = reset_peak_memory()
        start = time.perf_counter()
        section = SECTIONS[name](cfg)
        cuda_mb = cuda_peak_mb()
        results[name] = {"comparisons": [c.summary() for c in section.comparisons], "info": section.info,
                         "seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                         "peak_rss_scope": "section" if exact else "process",
                         **({"cuda_max_allocated_mb": round(cuda_mb, 1)} if cuda_mb is not None else {})}
    return results


def _extra_line(c: dict) -> str | None:
    """FLOP/s rows of the train section: achieved GFLOP/s and the fraction of the measured peak; the pipeline
    section's augmented/unaugmented ratio and the step's fraction of the bf16 peak."""
    if "augmented_over_unaugmented" in c:
        r = c["augmented_over_unaugmented"]
        return (f"    augmented / unaugmented epoch images/s: batched {r['batched']:.0%}, "
                f"per-sample {r['per_sample']:.0%}")
    if "step_fraction_of_bf16_peak" in c:
        return f"    step: {c['step_fraction_of_bf16_peak']:.1%} of the bf16 matmul peak measured in this run"
    if "ours_gflops" not in c:
        return None
    def frac(key: str) -> str:  # above 100% the peak was not the machine's best in those rounds: say so
        f = c[key]
        return f"{f:.0%}" if f <= 1 else f"{f:.0%} (measurement fault: above the peak timed in the same rounds)"

    line = (f"    FLOP/s ({c['flops_convention']}): baseline {c['baseline_gflops']:.1f} GFLOP/s "
            f"= {frac('baseline_fraction_of_fp32_peak')} of the fp32 matmul peak timed in the same rounds, ours "
            f"{c['ours_gflops']:.1f} GFLOP/s = {frac('ours_fraction_of_fp32_peak')}")
    if "ours_fraction_of_bf16_peak" in c:
        line += f" (of the bf16 matmul peak: {frac('ours_fraction_of_bf16_peak')})"
    return line


def format_table(results: dict, device: dict | None = None) -> str:
    """One block per comparison: median [min-max] of each side, seconds per call and the ratio of the medians."""
    lines = []
    if device is not None:
        lines.append(f"device for train/sweep: {device['device']} ({device['name']}); {device['note']}")
    for name, res in results.items():
        cuda = f", CUDA max allocated {res['cuda_max_allocated_mb']} MB" if "cuda_max_allocated_mb" in res else ""
        lines.append(f"[{name}] peak RSS {res['peak_rss_mb']} MB ({res['peak_rss_scope']}){cuda}, {res['seconds']} s")
        if "rows" in res["info"]:
            from experiments.bench.accuracy import format_rows

            lines.extend(format_rows(res["info"]))
        peak = res["info"].get("matmul_peak_gflops")
        if peak:
            lines.append(f"  measured peaks (GFLOP/s; fp32/bf16 = torch.mm, conv_fp32 = one large conv): {peak}")
        for c in res["comparisons"]:
            ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.2f}x"
            cpu = "" if c["cpu_ratio"] is None else f"  (per CPU second: {c['cpu_ratio']:.2f}x)"
            lines.append(f"  {c['name']} ({c['unit']}, median [min-max]):  ratio ours/baseline {ratio}{cpu}")
            for side in ("baseline", "ours"):
                d = c[side]
                cpu_col = "" if d["cpu_median"] is None else f"  cpu {d['cpu_median']:.1f}"
                lines.append(f"    {side:<8} {d['median']:>10.2f} [{d['min']:.2f}-{d['max']:.2f}]{cpu_col}  "
                             f"{d['seconds_median']:.3g} s/call  {d['label']}")
            extra = _extra_line(c)
            if extra:
                lines.append(extra)
    return "\n".join(lines)


SECTION_ORDER = ("train", "data", "pipeline", "sweep", "infer", "finetune", "accuracy")  # issue order; unknown last
NOT_IN_ALL = ("accuracy",)  # whole training runs on a real photo folder: run it by name, with --data-dir


def _section_rank(name: str) -> tuple[int, str]:
    return (SECTION_ORDER.index(name) if name in SECTION_ORDER else len(SECTION_ORDER), name)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark our code paths against naive baselines, side by side.")
    p.add_argument("section", choices=[*sorted(SECTIONS), "all"], help="which benchmark section to run")
    p.add_argument("--image-size", type=int, default=None, help="model input side in px (default: per section)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: per section)")
    p.add_argument("--quick", action="store_true", help="small inputs and 3 repeats: a smoke test, not a result")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 5, quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench"), help="where <timestamp>.json goes")
    p.add_argument("--device", default="auto",
                   help="where train and sweep run: auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, the core count); the matmul peak is "
                        "measured at the same count. On a box shared with other jobs, 1 is steadier")
    real = p.add_argument_group("accuracy section (whole training runs on real photos)")
    real.add_argument("--data-dir", type=Path, default=None, help="photo folder with train/ and val/ (accuracy: "
                                                                 "required)")
    real.add_argument("--epochs", type=int, default=None, help="epochs per run (default 15, quick 2)")
    real.add_argument("--seeds", default="0,1", help="comma-separated training seeds, one run each (default 0,1)")
    real.add_argument("--rows", default="issue", help="a preset (issue, ablation) or comma-separated row keys of "
                                                      "experiments/bench/accuracy.py (default issue)")
    real.add_argument("--peer-workers", type=int, default=2, help="DataLoader workers of the peers' pipeline "
                                                                  "(default 2)")
    return p


def _check_real_photo_flags(args: argparse.Namespace) -> None:
    """Exit with a one-line message for a bad accuracy/pipeline flag, before anything runs."""
    if args.data_dir is not None and not (args.data_dir / "train").is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no train/ folder there; pass a dataset root with train/ "
                         "and val/ (e.g. ../shared/data/flowers5)")
    if args.section == "accuracy":
        from experiments.bench.accuracy import parse_rows

        if args.data_dir is None:
            raise UsageError("the accuracy section needs --data-dir (a folder with train/ and val/, e.g. "
                             "../shared/data/flowers5)")
        try:
            parse_rows(args.rows)
        except ValueError as err:
            raise UsageError(f"--rows: {err}") from None


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds must be comma-separated non-negative ints, got {text!r}")
    return seeds


def benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes)."""
    configure_logging(logging.INFO, "%(message)s")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    _check_real_photo_flags(args)
    from core.devices import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise UsageError(f"--device: {err}") from err
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None  # a busy box skews every number
    everything = [n for n in sorted(SECTIONS, key=_section_rank) if n not in NOT_IN_ALL]
    names = everything if args.section == "all" else [args.section]
    with tempfile.TemporaryDirectory(prefix="inat-bench-") as work:
        cfg = BenchConfig(args.image_size, args.batch_size, args.quick, repeats, args.warmup, Path(work), str(device),
                          data_dir=args.data_dir, epochs=args.epochs, seeds=_seeds(args.seeds), rows=args.rows,
                          out_dir=args.out_dir, peer_workers=args.peer_workers)
        log.info("benchmark %s on %s, %d torch threads", ", ".join(names), device, torch.get_num_threads())
        results = run_sections(names, cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out_dir / f"{stamp}.json"
    for n in range(1, 100):  # two runs in the same second keep both files
        if not out.exists():
            break
        out = args.out_dir / f"{stamp}-{n}.json"
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv if argv is not None else sys.argv[1:],
              "config": {k: v for k, v in to_plain(cfg).items() if k != "work_dir"},
              "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                       "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
                       "load_average_start": load_start,
                       "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                       "env": {k: v for k, v in os.environ.items()  # these change both sides' speed
                               if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_")) or k == "LD_PRELOAD"},
                       **device_summary(device)},
              "sections": results}
    write_json(out, report)  # atomic (core.runfiles)
    print(format_table(results, device_summary(device)))
    print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script("benchmark", get_args_parser(), lambda args: benchmark(args, argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())
