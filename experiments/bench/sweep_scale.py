"""The scale-out half of the ``sweep`` section: trials per minute with 1 and 2 processes on one storage (SQLite
and PostgreSQL), and what the storage costs per trial.

Trials/min uses trials that sleep, so processes do not compete for the CPU (as real training on one GPU each
would not), measured from the storage's own timestamps (worker start-up not counted); ideal is 2x. The
overhead per trial compares no-op trials under Optuna alone with ``run_local``'s bookkeeping. PostgreSQL is a
throwaway local server (:mod:`experiments.bench.pgcluster`) with durable defaults; without its binaries its
rows are left out and ``info`` says why.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.cli import configure_logging
from experiments.bench.common import BenchConfig, Comparison

log = logging.getLogger(__name__)

SPACE = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
         "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
                        "act": {"values": ["relu", "gelu", "silu"]}}}


@dataclass(frozen=True)
class SleepTrial:
    """A trial program that takes ``seconds`` without using the CPU (picklable: it runs in spawned workers)."""

    seconds: float

    def configure(self, values):
        return dict(values)

    def run(self, config, run_dir, **_):
        from core.train import RunResult

        time.sleep(self.seconds)
        return RunResult(best_val_acc=0.5, best_epoch=1, history=({"epoch": 1, "val_acc": 0.5},))


def _settings(url: str, name: str, budget: int, work: Path, workers: int):
    from core.sweep import SweepSettings

    return SweepSettings(name=name, out_dir=work, backend="local", count=budget, storage=url, workers=workers,
                         tracker_mode="disabled", heartbeat_interval=30, grace_period=120)


def _steady_rate(url: str, name: str) -> float:
    """Trials per second between the first trial's start and the last one's end, from the storage."""
    import optuna

    trials = [t for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
              if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / max(span, 1e-9)


def _ours(url: str, work: Path, budget: int, seconds: float, workers: int, counter) -> float:
    from core.sweep import parse_sweep_config
    from core.sweep.backends.local import run_local

    name = f"scale{next(counter)}"
    run_local(parse_sweep_config(SPACE), _settings(url, name, budget, work, workers), SleepTrial(seconds))
    return _steady_rate(url, name)


def _optuna_alone(url: str, budget: int, counter) -> float:
    import optuna

    name = f"plain{next(counter)}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) * 0 + 0.5, n_trials=budget)
    return _steady_rate(url, name)


def _alternate(name: str, base: Callable[[], float], ours: Callable[[], float], *, repeats: int, items: int,
               unit: str, baseline_label: str, ours_label: str, scale: float = 1.0) -> Comparison:
    """Rates measured by the callables themselves (steady state), alternating which side goes first."""
    comp = Comparison(name, baseline_label, ours_label, items, unit)
    for r in range(repeats):
        order = [(comp.baseline, base), (comp.ours, ours)]
        for dest, fn in (order if r % 2 == 0 else order[::-1]):
            dest.append(fn() * scale)
    return comp


def bench_scale(cfg: BenchConfig, storages: dict[str, str], work: Path) -> tuple[list[Comparison], dict]:
    """The comparisons for each storage URL in ``storages`` (label → URL) and the overheads in ``info``."""
    import itertools

    import optuna

    counter = itertools.count()
    seconds, budget, noop_budget = (0.2, 6, 10) if cfg.quick else (1.0, 16, 40)
    repeats = 1 if cfg.quick else min(cfg.repeats, 3)
    comps: list[Comparison] = []
    overhead: dict[str, dict] = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for label, url in storages.items():
            log.info("sweep scale-out: %s", label)
            comps.append(_alternate(
                f"{budget} trials of {seconds:g} s on one {label} study, 1 vs 2 processes",
                lambda url=url: _ours(url, work, budget, seconds, 1, counter),
                lambda url=url: _ours(url, work, budget, seconds, 2, counter),
                repeats=repeats, items=budget, unit="trials/min", scale=60.0,
                baseline_label="run_local, 1 process", ours_label="run_local --workers 2 (spawned processes)"))
            comp = _alternate(
                f"storage overhead per trial, no-op trials, {label}",
                lambda url=url: _optuna_alone(url, noop_budget, counter),
                lambda url=url: _ours(url, work, noop_budget, 0.0, 1, counter),
                repeats=repeats, items=noop_budget, unit="no-op trials/s",
                baseline_label="Optuna alone: study.optimize(no-op) on the same storage",
                ours_label="run_local: slot claim, seeded sampler, heartbeat, attrs, trial folder + trial.json")
            comps.append(comp)
            overhead[label] = {"ours_ms_per_trial": round(1000 / statistics.median(comp.ours), 1),
                               "optuna_alone_ms_per_trial": round(1000 / statistics.median(comp.baseline), 1)}
    finally:
        optuna.logging.set_verbosity(verbosity)
    for comp in comps:
        if comp.unit == "trials/min":
            ideal = 60.0 / seconds
            comp.extra = {"ideal_trials_per_min_1_process": ideal, "ideal_trials_per_min_2_processes": 2 * ideal}
    info = {"trial_seconds": seconds, "trials": budget, "noop_trials": noop_budget, "repeats": repeats,
            "storage_overhead_ms_per_trial": overhead}
    return comps, info


def bench_sweep_scale(cfg: BenchConfig) -> tuple[list[Comparison], dict]:
    """SQLite in the work folder, and PostgreSQL when its binaries exist."""
    from core.sweep.backends.local import sqlite_url
    from experiments.bench.pgcluster import find_pg_bindir, start_cluster

    work = cfg.work_dir / "scale"
    work.mkdir(parents=True, exist_ok=True)
    storages = {"SQLite": sqlite_url(work / "optuna.db")}
    cluster = None
    note = None
    if find_pg_bindir() is None:
        note = "PostgreSQL rows skipped: no PostgreSQL binaries (apt-get install postgresql)"
    else:
        cluster = start_cluster(fast=False)
        storages["PostgreSQL"] = cluster.url()
    try:
        comps, info = bench_scale(cfg, storages, work)
    finally:
        if cluster is not None:
            cluster.stop()
    if note:
        info["note"] = note
    info["storages"] = sorted(storages)
    return comps, info


def main(argv: list[str] | None = None) -> int:
    """Only the scale-out rows: ``python -m experiments.bench.sweep_scale [--quick]`` (what
    ``experiments/benchmark.py sweep`` ends with, without the training sweeps before them)."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description="Sweep scale-out rows of the benchmark's sweep section.")
    parser.add_argument("--quick", action="store_true", help="0.2 s trials, 1 repeat: a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per comparison (at most 3)")
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING, "%(levelname)s:%(name)s:%(message)s")
    with tempfile.TemporaryDirectory(prefix="inat-cnn-scale-") as work:
        cfg = BenchConfig(image_size=None, batch_size=None, quick=args.quick, repeats=args.repeats, warmup=0,
                          work_dir=Path(work))
        comps, info = bench_sweep_scale(cfg)
    for c in comps:
        d = c.summary()
        print(f"{d['name']} ({d['unit']}): baseline {d['baseline']['median']:.2f} "
              f"[{d['baseline']['min']:.2f}-{d['baseline']['max']:.2f}] {d['baseline']['label']}; "
              f"ours {d['ours']['median']:.2f} [{d['ours']['min']:.2f}-{d['ours']['max']:.2f}] {d['ours']['label']}; "
              f"ratio {d['ratio']:.2f}")
    print(json.dumps(info, indent=1))
    return 0


__all__ = ["SleepTrial", "bench_scale", "bench_sweep_scale", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
