# ruff: noqa: N999  (module named after the assignment part)
"""One Part A run, composed: data → spec → model → counts → fit → test evaluation → run folder.

``run_partA`` is what ``experiments/partA_train.py`` and every sweep trial call; the run folder's files are in
docs/CONTRACTS.md. The test split is evaluated once, with the best-validation checkpoint, after training, and
never influences selection; a run stopped by a prune or by ``stop`` skips it (its number would only be a
temptation) and its W&B run is tagged ``stopped``. The W&B run's config is ``config.yaml``'s: every flat key at
the top level (the names a sweep's parameters use), plus counts, classes, split sizes and preprocessing.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core.data import make_loaders
from core.devices import check_batch_fits, resolve_device
from core.explain import evaluate_best_on_test
from core.model import build_cnn, count_flops, count_params
from core.partA.config import PartAConfig
from core.runfiles import masked_argv, own_run_folder, write_yaml
from core.train import (
    EpochStats,
    RunResult,
    StopRequest,
    Tracker,
    check_run_start,
    fit,
    seed_everything,
    stop_after_training,
)

__all__ = ["run_partA"]

log = logging.getLogger(__name__)


def _resolved_config(cfg: PartAConfig, spec, loaders, params: int, flops: int) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "flat": cfg.to_flat(),
        "spec": spec.to_dict(),
        "class_names": loaders.class_names,
        "preprocessing": loaders.preprocessing.to_dict(),
        "data_root": str(loaders.root),
        "sizes": {name: len(getattr(loaders, name).dataset) for name in ("train", "val", "test")},
        "params": params,
        "flops": flops,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "command": masked_argv(sys.argv),  # a --storage URL's password never reaches config.yaml or W&B
    }


def _wandb_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The W&B run's config: flat trainer keys on top (what sweep parameters are named), then the rest."""
    rest = {k: resolved[k] for k in ("flops", "class_names", "sizes", "preprocessing", "spec", "data_root",
                                     "versions")}
    return {**resolved["flat"], "parameter_count": resolved["params"], "num_classes": len(resolved["class_names"]),
            **rest}


def run_partA(cfg: PartAConfig, run_dir: Path | str, *, tracker_mode: str = "auto", name: str | None = None,  # noqa: N802
              group: str | None = None, resume: bool = False,
              on_epoch_end: Callable[[int, EpochStats], None] | None = None, project: str = "inat-cnn",
              evaluate_test: bool = True, stop: StopRequest | None = None) -> RunResult:
    """Train and evaluate one Part A configuration into ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)  # the weight init; fit re-seeds (or restores) the rest
    with torch.device("meta"):  # what a training batch keeps, before any image is decoded
        check_batch_fits(build_cnn(cfg.spec(2)), (cfg.data.batch_size, 3, *[cfg.data.image_size] * 2), device)
    loaders = make_loaders(replace(cfg.data, device=str(device)))
    spec = cfg.spec(num_classes=len(loaders.class_names), image_size=loaders.preprocessing.image_size)
    model = build_cnn(spec)
    params, flops = count_params(spec), count_flops(spec)
    model_desc = {"kind": "cnn", "spec": spec.to_dict()}
    with own_run_folder(run_dir):  # inputs checked above; a second process here is refused before any write
        check_run_start(run_dir, resume, model_desc, cfg.train)  # again under the lock: refuse before any write
        resolved = _resolved_config(cfg, spec, loaders, params, flops)
        write_yaml(run_dir / "config.yaml", resolved)
        loaders.write_split(run_dir)
        meta = {"model_desc": model_desc, "class_names": loaders.class_names,
                "preprocessing": loaders.preprocessing.to_dict(),
                "extra": {"run_config": cfg.to_dict(), "params": params, "flops": flops}}

        # the context manager finishes the W&B run with exit code 0, 130 (Ctrl-C) or 1 (any other error)
        with Tracker.start(run_dir=run_dir, name=name or run_dir.name, group=group, job_type="partA", project=project,
                           mode=tracker_mode, resume=resume, config=_wandb_config(resolved)) as tracker:
            tracker.set_summary({"parameter_count": params, "flops": flops})
            log.info("Part A run %s: %s params, %.3f GFLOPs/image, %d classes", run_dir, f"{params:,}", flops / 1e9,
                     len(loaders.class_names))
            result = fit(model, loaders, cfg.train, run_dir=run_dir, checkpoint_meta=meta, tracker=tracker,
                         resume=resume, on_epoch_end=on_epoch_end, device=device, stop=stop)
            result = stop_after_training(replace(result, parameter_count=params, flops=flops), stop)
            if evaluate_test and result.best_path is not None and not result.pruned:
                test_acc, test_loss = evaluate_best_on_test(model, loaders, model_desc, result, device, run_dir,
                                                            tta=cfg.train.tta)
                result = replace(result, test_acc=test_acc, test_loss=test_loss)
                log.info("test accuracy of best.pt (epoch %d): %.1f%%", result.best_epoch, 100 * test_acc)
            # the summary's val_acc is what a W&B sweep optimises: the best epoch's, as the local backend does
            tracker.set_summary({**result.metrics(), "epochs_run": result.epochs_run,
                                 "stopped_reason": result.stopped_reason or ""})
            if result.pruned:
                tracker.mark_stopped(result.stopped_reason or "stopped")
        return result


