"""The one test pass after training: ``best.pt`` on the official test split, written to the run folder.

Kept apart from :mod:`core.explain.evaluation` (pure functions of label vectors) because this is the step that
touches a model, a loader and files: it loads ``best.pt`` into the run's model, predicts the test split, writes
``test_metrics.json`` and records the test numbers in ``best.pt`` itself. Part A and Part B runs both call it,
so both write one schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.explain.evaluation import compute_metrics, predict
from core.runfiles import write_json
from core.train import RunResult, load_checkpoint, load_weights, save_checkpoint


def evaluate_best_on_test(model: nn.Module, loaders: Any, model_desc: dict, fit_result: RunResult,
                          device: str | torch.device, run_dir, *, tta: bool = False) -> tuple[float, float]:
    """Test accuracy/loss of ``best.pt`` → ``run_dir/test_metrics.json`` and best.pt's metrics, one schema for
    Part A and Part B. Runs once, after training, on the weights validation picked (the EMA when the run kept
    one), with flip TTA when the run's selection used it; ``val/`` is never used for selection.
    """
    best_path = fit_result.best_path
    payload = load_checkpoint(best_path)
    load_weights(model, payload, model_desc, source=str(best_path))
    model.to(device)
    preds = predict(model, loaders.test, device, desc="test", tta=tta)
    metrics = compute_metrics(preds.targets, preds.preds, loaders.class_names).to_dict()
    picked = preds.probs.gather(1, preds.targets[:, None]).clamp_min(1e-12)
    test_acc, test_loss = float(metrics["accuracy"]), float(-picked.log().mean())
    write_json(Path(run_dir) / "test_metrics.json",
               {"test_acc": test_acc, "test_loss": test_loss, "checkpoint": "best.pt",
                "best_epoch": fit_result.best_epoch, "best_val_acc": fit_result.best_val_acc, "tta": tta,
                "test_images": len(loaders.test.dataset), **metrics})
    payload["metrics"].update(test_acc=test_acc, test_loss=test_loss)
    save_checkpoint(best_path, payload)
    return test_acc, test_loss
