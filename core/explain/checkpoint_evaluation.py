"""Evaluate a checkpoint on the official test split and explain what it learned: the Part A evaluation run.

``evaluate_checkpoint(EvalConfig(...))`` writes the test metrics, the figures and ``evaluation.html`` into
``cfg.out_dir`` (listed in ``experiments/partA_evaluate.py``); the attribution figures need a Part A SmallCNN and
are skipped with a warning for Part B backbones. :func:`log_evaluation` sends them to a W&B run.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from core.data import DataConfig, Preprocessing, make_loaders
from core.devices import resolve_device
from core.explain import attributions as explain
from core.explain import figures as plots
from core.explain.evaluation import compute_metrics, predict, select_per_class
from core.explain.gradcam import grad_cam
from core.reports import write_evaluation_page
from core.runfiles import own_run_folder, to_plain, write_json
from core.train import TRACKING_MODES, Tracker, load_model

log = logging.getLogger(__name__)

FIGURES = ("confusion_matrix.png", "predictions_grid.png", "gradcam.png", "filters_conv1.png",
           "feature_maps_conv1.png", "guided_backprop_conv5.png")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; built from the CLI flags."""

    checkpoint: Path
    data_dir: Path | None = None  # None -> the generated demo set
    out_dir: Path | None = None  # None -> <checkpoint folder>/eval
    seed: int = 0  # picks the grid images and the explained image
    per_class: int = 3  # grid images per class
    neurons: int = 10  # CONV5 neurons for guided backprop
    guided_mode: str = "auto"  # auto | relu-swap | saliency (see core.explain.attributions)
    wandb_mode: str = "auto"  # auto | online | offline | disabled
    device: str = "auto"
    batch_size: int = 64
    max_per_class: int | None = None  # cap test images per class (quick looks)
    tta: bool | None = None  # flip TTA for the metrics; None = as the run was trained (its TrainConfig.tta)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        if self.out_dir is None:
            object.__setattr__(self, "out_dir", self.checkpoint.parent / "eval")
        if self.guided_mode not in explain.GUIDED_MODES:
            raise ValueError(f"unknown guided mode {self.guided_mode!r}; expected one of {list(explain.GUIDED_MODES)}")
        if self.wandb_mode not in TRACKING_MODES:
            raise ValueError(f"unknown W&B mode {self.wandb_mode!r}; expected one of {list(TRACKING_MODES)}")
        for name in ("per_class", "neurons", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")



def _grid(out_dir: Path, model, test_ds, preds, class_names: list[str], cfg: EvalConfig, device) -> dict[str, Any]:
    """10x3 prediction grid (+ Grad-CAM on the same images when the model supports it)."""
    labels = [label for _, label in test_ds.samples]  # the contract: .samples is [(path, label)]
    per_class = min(cfg.per_class, max(labels.count(c) for c in range(len(class_names))))
    if per_class < cfg.per_class:  # no 100000-row grid for classes of 4 images
        log.warning("--per-class %d: the largest class has %d test images, so the grid shows %d per class",
                    cfg.per_class, per_class, per_class)
    sel = select_per_class(labels, len(class_names), per_class, cfg.seed)
    notes = [f"{class_names[c]} has only {n} test image{'s' * (n != 1)} (fewer than {per_class})"
             for c, n in sel.shortfalls.items()]
    for note in notes:
        log.warning("prediction grid: %s", note)
    cells, rows = [], []
    for c, chosen in enumerate(sel.indices):
        for col, i in enumerate(chosen):
            p, conf = int(preds.preds[i]), float(preds.confidences[i])
            cells.append(plots.GridCell(test_ds.uint8(i), c, p, conf, row=c, col=col))
            rows.append({"index": i, "path": str(test_ds.samples[i][0]), "true": class_names[c],
                         "pred": class_names[p], "confidence": conf, "correct": c == p})
    plots.plot_prediction_grid(cells, class_names, out_dir / "predictions_grid.png", per_class=per_class,
                               notes=notes)
    write_json(out_dir / "predictions_grid.json", {"seed": cfg.seed, "per_class": per_class, "notes": notes,
                                                   "cells": rows})
    try:
        layer = explain.conv5(model)
    except ValueError as exc:
        log.warning("Grad-CAM skipped: %s", exc)
        return {"rows": rows, "notes": notes}
    images = torch.stack([test_ds[r["index"]][0] for r in rows]).to(device)
    cams = grad_cam(model, images, [int(preds.preds[r["index"]]) for r in rows], layer)
    plots.plot_gradcam_grid(cells, cams, class_names, out_dir / "gradcam.png", per_class=per_class, notes=notes)
    return {"rows": rows, "notes": notes}


def _explanations(out_dir: Path, model, test_ds, preds, class_names: list[str], cfg: EvalConfig) -> dict[str, Any]:
    """CONV1 filters and feature maps, guided backprop on CONV5 neurons, for one seeded random test image."""
    try:
        layer5 = explain.conv5(model)
    except ValueError as exc:
        log.warning("explanations skipped (they are for Part A models): %s", exc)
        return {"skipped": str(exc)}
    index = random.Random(cfg.seed).randrange(len(test_ds))
    image, label = test_ds[index]
    shown = test_ds.uint8(index)
    path = test_ds.samples[index][0]
    pred = int(preds.preds[index])
    caption = (f"{Path(path).parent.name}/{Path(path).name}: true {class_names[int(label)]}, "
               f"predicted {class_names[pred]} ({float(preds.confidences[index]):.0%})")
    plots.plot_filters(explain.first_layer_filters(model), out_dir / "filters_conv1.png", title="CONV1 filters")
    plots.plot_feature_maps(shown, explain.first_layer_feature_maps(model, image), out_dir / "feature_maps_conv1.png",
                            layer="CONV1 (conv output, before BN and activation)", caption=caption)
    k = min(cfg.neurons, layer5.out_channels)
    if k < cfg.neurons:
        log.warning("CONV5 has only %d channels: explaining %d neurons instead of %d", k, k, cfg.neurons)
    result = explain.explain_neurons(model, image, k=k, mode=cfg.guided_mode, layer=layer5)
    labels = [f"ch {n.channel} @ ({n.y},{n.x})" for n in result.neurons]
    plots.plot_neuron_attributions(shown, result.attributions, labels, out_dir / "guided_backprop_conv5.png",
                                   method_label=result.label, warning=result.warning, caption=caption)
    record = {**result.to_dict(), "image": {"index": index, "path": str(path), "true": class_names[int(label)],
                                            "pred": class_names[pred]}}
    write_json(out_dir / "guided_backprop_conv5.json", record)
    return {"method": result.method, "label": result.label, "warning": result.warning, "neurons": k,
            "image_index": index}


def evaluate_checkpoint(cfg: EvalConfig) -> dict[str, Any]:
    """Everything the script does; returns a summary (also what goes to the W&B run summary)."""
    device = resolve_device(cfg.device)
    model, payload = load_model(cfg.checkpoint, device)
    prep = Preprocessing.from_dict(payload["preprocessing"])
    class_names = list(payload["class_names"])
    loaders = make_loaders(DataConfig(data_dir=cfg.data_dir, image_size=prep.image_size, resize_size=prep.resize_size,
                                      batch_size=cfg.batch_size, seed=cfg.seed, max_per_class=cfg.max_per_class,
                                      device=str(device)), preprocessing=prep)
    if list(loaders.class_names) != class_names:
        raise ValueError(f"the checkpoint was trained on classes {class_names} but {loaders.root}/val has "
                         f"{list(loaders.class_names)}; pass the --data-dir the model was trained on")
    test_ds = loaders.test.dataset
    out_dir = Path(cfg.out_dir)
    tta = cfg.tta if cfg.tta is not None else bool(payload["train_config"].get("tta", False))
    preds = predict(model, loaders.test, device, desc="test", tta=tta)
    metrics = compute_metrics(preds.targets, preds.preds, class_names)
    log.info("test accuracy %.2f%% (%d/%d) on %s", 100 * metrics.accuracy, metrics.n_correct, metrics.n, loaders.root)
    with own_run_folder(out_dir):  # inputs checked above; one evaluation writes a folder at a time
        write_json(out_dir / "test_metrics.json", {
            **metrics.to_dict(), "split": "val/ (the official test split)", "checkpoint": str(cfg.checkpoint),
            "tta": tta, "data_dir": str(loaders.root), "model_desc": payload["model_desc"],
            "preprocessing": prep.to_dict()})
        plots.plot_confusion_matrix(metrics.confusion_counts, metrics.confusion_normalised, class_names,
                                    out_dir / "confusion_matrix.png",
                                    title=f"Confusion matrix, test set (accuracy {metrics.accuracy:.1%}, "
                                          f"n={metrics.n})")
        grid = _grid(out_dir, model, test_ds, preds, class_names, cfg, device)
        explained = _explanations(out_dir, model, test_ds, preds, class_names, cfg)
        page = write_evaluation_page(out_dir, checkpoint=cfg.checkpoint, data_dir=loaders.root, metrics=metrics,
                                     grid=grid, explanations=explained,
                                     params=sum(p.numel() for p in model.parameters()),
                                     train_metrics=payload.get("metrics"), image_size=prep.image_size)
        log.info("evaluation page: %s", page)
    return {"metrics": metrics, "grid": grid, "explanations": explained, "out_dir": out_dir, "page": page}


def log_evaluation(cfg: EvalConfig, summary: dict[str, Any]) -> None:
    """Figures, the grid's predictions table and the test accuracy to a W&B run (job type "evaluate")."""
    out_dir: Path = summary["out_dir"]
    metrics = summary["metrics"]
    tracker = Tracker.start(run_dir=out_dir, name=f"eval-{cfg.checkpoint.parent.name}",
                            config=to_plain(asdict(cfg)), job_type="evaluate", mode=cfg.wandb_mode,
                            group=cfg.checkpoint.parent.name, tags=("partA", "evaluate"))
    try:
        for name in FIGURES:
            if (out_dir / name).is_file():
                tracker.log_image(name.removesuffix(".png"), out_dir / name)
        columns = ["path", "true", "pred", "confidence", "correct"]
        tracker.log_table("test_predictions_grid", columns, [[r[c] for c in columns] for r in summary["grid"]["rows"]])
        tracker.set_summary({"test_acc": metrics.accuracy, "test_n": metrics.n,
                             **{f"test_acc/{n}": a for n, a in zip(metrics.class_names, metrics.per_class_accuracy)
                                if a is not None}})
    finally:
        tracker.finish()
