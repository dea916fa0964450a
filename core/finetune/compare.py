# ruff: noqa: N999  (module named after the assignment part, like core/finetune/partB.py)
"""Part B's ``--compare``: every fine-tuning strategy side by side, optionally next to a Part A run.

``run_compare`` runs each strategy with :func:`core.finetune.partB.run_partB` into ``<run_dir>/<strategy>/`` and
writes ``comparison.csv``, ``comparison.md``, ``accuracy_curves.png`` and the page ``comparison.html`` (plus a
Part A run folder's row and curve when given, read from its ``test_metrics.json`` and ``metrics.jsonl``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from core.finetune.partB import PartBConfig, PartBRun, run_partB
from core.finetune.strategies import STRATEGIES, count_parameters
from core.reports import COMPARISON_COLUMNS, ComparisonRow, write_comparison
from core.runfiles import own_run_folder, read_json, read_jsonl, read_yaml

logger = logging.getLogger(__name__)


def strategy_runs(cfg: PartBConfig, strategies: tuple[str, ...] | None = None) -> list[PartBConfig]:
    """One config per strategy for ``--compare`` (default: every registered one), validated up front, so a bad k
    fails before any run."""
    strategies = tuple(STRATEGIES) if strategies is None else strategies
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {list(STRATEGIES)}")
    return [dataclasses.replace(cfg, strategy=s) for s in strategies]


def _curve(history: Any) -> tuple[tuple[int, float, float], ...]:
    return tuple((int(h["epoch"]), float(h["train_acc"]), float(h["val_acc"])) for h in history)


def row_from_run(run: PartBRun) -> ComparisonRow:
    r = run.result
    return ComparisonRow(run.name, "partB", run.strategy, r.test_acc, r.best_val_acc, r.best_epoch,
                         run.trainable_params, run.final_trainable_params, r.parameter_count, run.seconds_per_epoch,
                         r.epochs_run, _curve(r.history), r.run_dir)


def read_partA_row(run_dir: Path | str) -> ComparisonRow:  # noqa: N802
    """A Part A run folder (``test_metrics.json``, ``metrics.jsonl``, ``best.pt``) as a comparison row; a sweep
    folder (``best_config.yaml``) stands for its best trial's folder, ``trials/<its name>``."""
    from core.train import load_model

    run_dir = Path(run_dir)
    if (run_dir / "best_config.yaml").is_file() and not (run_dir / "test_metrics.json").is_file():
        best = (read_yaml(run_dir / "best_config.yaml") or {}).get("run_dir")
        run_dir = run_dir / "trials" / Path(str(best)).name if best else run_dir
    needed = [run_dir / f for f in ("test_metrics.json", "metrics.jsonl", "best.pt")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--partA-run {run_dir} is not a finished Part A run folder: missing {missing}; "
                                "pass runs/<name> of a finished partA_train.py run or partA_sweep.py sweep")
    test = read_json(needed[0])
    acc = test.get("test_acc", test.get("accuracy"))
    if not isinstance(acc, (int, float)):
        raise ValueError(f"{needed[0]} has no 'test_acc' number; keys: {sorted(test)}")
    history = read_jsonl(needed[1])
    if not history:
        raise ValueError(f"{needed[1]} is empty: the Part A run has no finished epoch")
    model, _ = load_model(needed[2])
    counts = count_parameters(model)
    best = max(history, key=lambda h: h["val_acc"])
    return ComparisonRow(f"partA:{run_dir.name}", "partA", "scratch", float(acc), float(best["val_acc"]),
                         int(best["epoch"]), counts.total, counts.total, counts.total,
                         sum(h["seconds"] for h in history) / len(history), len(history), _curve(history), run_dir)


def run_compare(cfg: PartBConfig, run_dir: Path | str, *, strategies: tuple[str, ...] | None = None,
                partA_run: Path | str | None = None, tracker_mode: str = "auto", name: str | None = None,  # noqa: N803
                resume: bool = False) -> list[ComparisonRow]:
    """Every strategy on the same data and backbone, then the table and curves (see module docstring)."""
    from core.train import Tracker

    run_dir = Path(run_dir)
    name = name or run_dir.name
    with own_run_folder(run_dir):  # one owner; each strategy's folder is held by its run_partB
        configs = strategy_runs(cfg, None if strategies is None else tuple(strategies))
        part_a = read_partA_row(partA_run) if partA_run is not None else None  # bad folder: fail before training
        rows = [row_from_run(run_partB(c, run_dir / c.strategy, tracker_mode=tracker_mode,
                                          name=f"{name}-{c.strategy}", group=name, resume=resume)) for c in configs]
        rows += [part_a] if part_a is not None else []
        paths = write_comparison(rows, run_dir, cfg=cfg)
        tracker = Tracker.start(run_dir=run_dir, name=name, config=cfg.to_dict(), group=name, job_type="partB-compare",
                                mode=tracker_mode, tags=("partB", "compare", cfg.arch))
        try:
            tracker.log_table("comparison", list(COMPARISON_COLUMNS), [r.values() for r in rows])
            tracker.log_image("accuracy_curves", paths["png"], caption="validation (solid) and train (dashed) accuracy")
        finally:
            tracker.finish()
        return rows


