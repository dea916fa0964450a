# ruff: noqa: N999  (module named after the assignment part, like core/partA.py)
"""One Part B run, composed: pretrained backbone + fine-tuning strategy + ``core.train.fit`` + test metrics.

``run_partB`` is to Part B what ``core.partA.run_partA`` is to Part A, and writes the same run folder
(``config.yaml``, ``split.json``, ``metrics.jsonl``, ``best.pt``, ``last.pt``, ``test_metrics.json``), so
the evaluation, export and sweep tools read it unchanged. Order matters: the backbone (and so its
weights: cache, download or the error naming the file to place) comes *before* the data is decoded
and long before the first epoch. ``run_compare`` (``--compare``) runs every strategy
into ``<run_dir>/<strategy>/`` and writes ``comparison.csv``, ``comparison.md`` and ``accuracy_curves.png``
(plus a Part A run folder's row and curve when given).

Sweeps: :meth:`PartBConfig.from_flat` takes the flat keys of ``experiments/configs/partB_sweep.yaml``
(``PARTB_FLAT_KEYS``) and :class:`PartBTrial` is the sweep trial function (same shape as
``core.sweep_trial.PartATrial``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.backbones import backbone_preprocessing, build_backbone, family_of, layout_of, replace_head
from core.data import DataConfig, make_loaders
from core.evaluation import evaluate_best_on_test
from core.finetune import STRATEGY_NAMES, FinetuneStrategy, count_parameters, make_strategy
from core.preprocess import Preprocessing
from core.runfiles import read_json, read_jsonl, write_text, write_yaml
from core.train import TrainConfig, fit

logger = logging.getLogger(__name__)

STRATEGY_KEYS = ("arch", "strategy", "k", "unfreeze_every", "backbone_lr_mult", "bn_eval", "weights", "image_size")
DATA_KEYS = ("augment", "batch_size", "max_per_class")
TRAIN_KEYS = ("lr", "weight_decay", "optimizer", "epochs", "scheduler", "warmup_epochs", "label_smoothing",
              "patience", "seed")
PARTB_FLAT_KEYS = STRATEGY_KEYS + DATA_KEYS + TRAIN_KEYS


@dataclass(frozen=True)
class PartBConfig:
    """Everything one Part B run needs; validated at construction, before any weights or data are touched."""

    arch: str = "vgg16"
    strategy: str = "head"  # head | top-k | full | gradual
    k: int = 2  # top-k: blocks unfrozen from the top (see core.backbones for the blocks per family)
    unfreeze_every: int = 1  # gradual: epochs between two unfreezings
    backbone_lr_mult: float = 0.1  # backbone LR = lr * this; the new head trains at lr
    bn_eval: bool = False  # keep every BatchNorm in eval mode (folded-BN weights); frozen BN always is
    weights: str | None = "DEFAULT"  # DEFAULT | a torchvision weights name | None (random init)
    weights_file: Path | None = None  # state dict of the 1000-class model (then weights must be None)
    image_size: int | None = None  # None = the weights' own crop size (224 for most)
    data: DataConfig = field(default_factory=lambda: DataConfig(normalization="imagenet"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", str(self.arch).lower())
        family_of(self.arch)  # unknown arch -> ValueError listing the supported ones
        if isinstance(self.weights, str) and self.weights.lower() == "none":
            object.__setattr__(self, "weights", None)
        if self.weights_file is not None:
            object.__setattr__(self, "weights_file", Path(self.weights_file).expanduser())
            if self.weights is not None:
                raise ValueError(f"weights={self.weights!r} and weights_file={str(self.weights_file)!r} "
                                 "both given; pass one (weights=None with a weights file)")
        self.make_strategy()  # unknown strategy / bad k / bad unfreeze_every fail here
        self.preprocessing()  # unknown weights name / impossible image size fail here

    def make_strategy(self) -> FinetuneStrategy:
        return make_strategy(self.strategy, k=self.k, unfreeze_every=self.unfreeze_every,
                             backbone_lr_mult=self.backbone_lr_mult, bn_eval=self.bn_eval)

    def preprocessing(self) -> Preprocessing:
        """The weights' resize/crop/mean/std, at ``image_size`` when given."""
        return backbone_preprocessing(self.arch, self.weights, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "train")}
        d["weights_file"] = None if self.weights_file is None else str(self.weights_file)
        return {**d, "data": self.data.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_flat(cls, params: dict[str, Any], base: PartBConfig | None = None) -> PartBConfig:
        """A config from flat sweep keys (``PARTB_FLAT_KEYS``) over ``base``; unknown keys are an error."""
        unknown = sorted(set(params) - set(PARTB_FLAT_KEYS))
        if unknown:
            raise ValueError(f"unknown Part B sweep keys {unknown}; expected some of {list(PARTB_FLAT_KEYS)}")
        base = base or cls()
        top = {k: params[k] for k in STRATEGY_KEYS if k in params}
        data = dataclasses.replace(base.data, **{k: params[k] for k in DATA_KEYS if k in params})
        if "seed" in params:  # one seed for the split and the training, as the CLI does
            data = dataclasses.replace(data, seed=params["seed"])
        train = dataclasses.replace(base.train, **{k: params[k] for k in TRAIN_KEYS if k in params})
        return dataclasses.replace(base, **top, data=data, train=train)


@dataclass(frozen=True)
class PartBResult:
    """What one run produced; attribute names follow ``core.partA.RunResult`` where they overlap."""

    name: str
    arch: str
    strategy: str
    best_val_acc: float
    best_epoch: int  # epochs to best (1-based)
    test_acc: float | None  # None when a sweep pruned the run (StopTraining): no test number to tempt anyone
    test_loss: float | None
    trainable_params: int  # at epoch 0
    final_trainable_params: int  # after the last epoch (grows with gradual)
    total_params: int
    seconds_per_epoch: float
    epochs_run: int
    history: tuple[dict[str, Any], ...]
    run_dir: Path
    best_path: Path | None

    @property
    def params(self) -> int:
        return self.total_params

    flops = None  # not counted for torchvision backbones


def run_partB(cfg: PartBConfig, run_dir: Path | str, *, tracker_mode: str = "auto",  # noqa: N802
              name: str | None = None, group: str | None = None, resume: bool = False,
              on_epoch_end: Any = None) -> PartBResult:
    """Build, fine-tune and test one backbone/strategy; writes the run folder (see module docstring)."""
    from core.devices import resolve_device
    from core.rng import seed_everything
    from core.tracking import Tracker

    run_dir = Path(run_dir)
    name = name or run_dir.name
    device = resolve_device(cfg.train.device)
    prep = cfg.preprocessing()
    seed_everything(cfg.train.seed)  # random init (weights none) and the new head; fit re-seeds the rest
    model = build_backbone(cfg.arch, None, weights=cfg.weights, weights_file=cfg.weights_file)
    strategy = cfg.make_strategy()
    strategy.validate(layout_of(model))  # e.g. k larger than the block count: fail before decoding data
    data_cfg = dataclasses.replace(cfg.data, image_size=prep.image_size, resize_size=prep.resize_size,
                                   normalization="imagenet", device=device.type)
    loaders = make_loaders(data_cfg, preprocessing=prep)
    num_classes = len(loaders.class_names)
    replace_head(model, layout_of(model), num_classes)
    run_dir.mkdir(parents=True, exist_ok=True)
    loaders.write_split(run_dir)
    strategy.setup(model, quiet=True)  # fit() repeats it on the device; here it gives the epoch-0 counts
    counts = count_parameters(model)
    resolved = {**cfg.to_dict(), "data": data_cfg.to_dict(), "preprocessing": prep.to_dict(),
                "strategy_detail": strategy.describe(), "class_names": loaders.class_names,
                "params": {"trainable": counts.trainable, "total": counts.total}}
    write_yaml(run_dir / "config.yaml", resolved)
    model_desc = {"kind": "backbone", "arch": cfg.arch, "num_classes": num_classes}
    meta = {"model_desc": model_desc, "class_names": loaders.class_names, "preprocessing": prep.to_dict(),
            "extra": {"partB": strategy.describe()}}
    # the context manager finishes the W&B run with exit code 0, 130 (Ctrl-C) or 1 (any other error)
    with Tracker.start(run_dir=run_dir, name=name, config=resolved, group=group, job_type="partB",
                       mode=tracker_mode, tags=("partB", cfg.arch, cfg.strategy), resume=resume) as tracker:
        result = fit(model, loaders, cfg.train, run_dir=run_dir, checkpoint_meta=meta, tracker=tracker,
                     strategy=strategy, resume=resume, on_epoch_end=on_epoch_end)
        test_acc = test_loss = None
        if result.best_path is not None and getattr(result, "stopped_by", None) != "callback":
            test_acc, test_loss = evaluate_best_on_test(model, loaders, model_desc, result, device, run_dir)
        seconds = [h["seconds"] for h in result.history]
        out = PartBResult(name, cfg.arch, cfg.strategy, float(result.best_val_acc), int(result.best_epoch),
                          test_acc, test_loss, counts.trainable, count_parameters(model).trainable, counts.total,
                          sum(seconds) / len(seconds) if seconds else math.nan, result.epochs_run,
                          tuple(result.history), run_dir, result.best_path)
        # the summary's val_acc is what a W&B sweep optimises: make it the best epoch's, as the local backend does
        tracker.set_summary({"val_acc": out.best_val_acc, "best_val_acc": out.best_val_acc,
                             "best_epoch": out.best_epoch,
                             "trainable_params": out.trainable_params, "total_params": out.total_params,
                             "seconds_per_epoch": out.seconds_per_epoch,
                             **({"test_acc": test_acc, "test_loss": test_loss} if test_acc is not None else {})})
    logger.info("%s: test_acc %s  best val_acc %.1f%% at epoch %d  trainable %d / %d", name,
                "-" if test_acc is None else f"{100 * test_acc:.1f}%", 100 * out.best_val_acc, out.best_epoch,
                out.trainable_params, out.total_params)
    return out


class PartBTrial:
    """Sweep trial function: ``PartBConfig.from_flat(flat, base)`` → ``run_partB`` → ``TrialOutcome``."""

    def __init__(self, base: PartBConfig | None = None) -> None:
        self.base = base

    def build_config(self, flat: dict[str, Any]) -> PartBConfig:
        return PartBConfig.from_flat(dict(flat), base=self.base)

    def __call__(self, request: Any) -> Any:
        from core.sweep_trial import run_for_request

        return run_for_request(run_partB, self.build_config(dict(request.flat)), request)


def strategy_runs(cfg: PartBConfig, strategies: tuple[str, ...] = STRATEGY_NAMES) -> list[PartBConfig]:
    """One config per strategy for ``--compare`` (validated up front, so a bad k fails before any run)."""
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {list(STRATEGY_NAMES)}")
    return [dataclasses.replace(cfg, strategy=s) for s in strategies]


# --- comparison (--compare) ------------------------------------------------------------------------
COMPARISON_COLUMNS = ("run", "kind", "strategy", "test_acc", "best_val_acc", "epochs_to_best",
                      "trainable_params", "final_trainable_params", "total_params", "seconds_per_epoch",
                      "epochs_run")


@dataclass(frozen=True)
class ComparisonRow:
    run: str
    kind: str  # "partB" | "partA"
    strategy: str
    test_acc: float | None
    best_val_acc: float
    epochs_to_best: int
    trainable_params: int  # at the first epoch
    final_trainable_params: int  # at the last epoch (differs for gradual)
    total_params: int
    seconds_per_epoch: float
    epochs_run: int
    curve: tuple[tuple[int, float, float], ...] = ()  # (epoch, train_acc, val_acc)

    def values(self) -> list[Any]:
        return [getattr(self, c) for c in COMPARISON_COLUMNS]


def _curve(history: Any) -> tuple[tuple[int, float, float], ...]:
    return tuple((int(h["epoch"]), float(h["train_acc"]), float(h["val_acc"])) for h in history)


def row_from_result(r: PartBResult) -> ComparisonRow:
    return ComparisonRow(r.name, "partB", r.strategy, r.test_acc, r.best_val_acc, r.best_epoch, r.trainable_params,
                         r.final_trainable_params, r.total_params, r.seconds_per_epoch, r.epochs_run, _curve(r.history))


def read_partA_row(run_dir: Path | str) -> ComparisonRow:  # noqa: N802
    """A Part A run folder (``test_metrics.json``, ``metrics.jsonl``, ``best.pt``) as a comparison row."""
    from core.checkpoint import load_model

    run_dir = Path(run_dir)
    needed = [run_dir / f for f in ("test_metrics.json", "metrics.jsonl", "best.pt")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--partA-run {run_dir} is not a finished Part A run folder: missing {missing}; "
                                "pass runs/<name> of a completed experiments/partA_train.py run")
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
                         sum(h["seconds"] for h in history) / len(history), len(history), _curve(history))


def run_compare(cfg: PartBConfig, run_dir: Path | str, *, strategies: tuple[str, ...] = STRATEGY_NAMES,
                partA_run: Path | str | None = None, tracker_mode: str = "auto", name: str | None = None,  # noqa: N803
                resume: bool = False) -> list[ComparisonRow]:
    """Every strategy on the same data and backbone, then the table and curves (see module docstring)."""
    from core.tracking import Tracker

    run_dir = Path(run_dir)
    name = name or run_dir.name
    configs = strategy_runs(cfg, tuple(strategies))
    part_a = read_partA_row(partA_run) if partA_run is not None else None  # bad folder: fail before training
    rows = [row_from_result(run_partB(c, run_dir / c.strategy, tracker_mode=tracker_mode,
                                      name=f"{name}-{c.strategy}", group=name, resume=resume)) for c in configs]
    rows += [part_a] if part_a is not None else []
    paths = write_comparison(rows, run_dir)
    tracker = Tracker.start(run_dir=run_dir, name=name, config=cfg.to_dict(), group=name, job_type="partB-compare",
                            mode=tracker_mode, tags=("partB", "compare", cfg.arch))
    try:
        tracker.log_table("comparison", list(COMPARISON_COLUMNS), [r.values() for r in rows])
        tracker.log_image("accuracy_curves", paths["png"], caption="validation (solid) and train (dashed) accuracy")
    finally:
        tracker.finish()
    return rows


def write_comparison(rows: list[ComparisonRow], run_dir: Path | str) -> dict[str, Path]:
    """``comparison.csv`` (all columns), ``comparison.md`` (readable table), ``accuracy_curves.png``."""
    run_dir = Path(run_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COMPARISON_COLUMNS)
    writer.writerows(r.values() for r in rows)
    paths = {"csv": run_dir / "comparison.csv", "md": run_dir / "comparison.md", "png": run_dir / "accuracy_curves.png"}
    write_text(paths["csv"], buf.getvalue())
    lines = ["| run | strategy | test acc | best val acc | epochs to best | trainable params | total params "
             "| s/epoch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.run} | {r.strategy} | {_pct(r.test_acc)} | {_pct(r.best_val_acc)} | {r.epochs_to_best} | "
              f"{_trainable(r)} | {r.total_params:,} | {r.seconds_per_epoch:.1f} |" for r in rows]
    write_text(paths["md"], "\n".join(lines) + "\n")
    plot_accuracy_curves(rows, paths["png"])
    return paths


def _trainable(row: ComparisonRow) -> str:
    """``12,810`` or, when unfreezing grew it, ``12,810 → 1,218,890``."""
    start, end = row.trainable_params, row.final_trainable_params
    return f"{start:,}" if start == end else f"{start:,} → {end:,}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def plot_accuracy_curves(rows: list[ComparisonRow], path: Path) -> Path:
    """Validation (solid) and train (dashed) accuracy per epoch, one colour per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from core.plots import save_figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        colour = f"C{i % 10}"
        epochs = [e for e, _, _ in row.curve]
        ax.plot(epochs, [100 * v for _, _, v in row.curve], "-o", color=colour, ms=3,
                label=f"{row.run} (test {_pct(row.test_acc)})")
        ax.plot(epochs, [100 * t for _, t, _ in row.curve], "--", color=colour, alpha=0.5)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy vs epoch: validation (solid), train (dashed)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
