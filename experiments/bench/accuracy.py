r"""The ``accuracy`` section of ``experiments/benchmark.py``: test accuracy and training images/s of whole Part A
runs on a real photo folder, the peers' pipeline against ours, side by side in one process.

    python experiments/benchmark.py accuracy --data-dir ../shared/data/flowers5 --image-size 96 --epochs 15 \
        --seeds 0,1
    python experiments/benchmark.py accuracy --data-dir ../shared/data/flowers5 --rows ablation --epochs 10

Rows (:data:`ROWS`): ``issue`` (peer pipeline + recipe, our pipeline + peer recipe, our defaults), ``ablation``
(one change at a time, :data:`ABLATION`) or ``search`` (the defaults search's best, :data:`SEARCHED`). Every
row trains on the same split, size, epochs and seeds; each run reports the test accuracy of its best-val-acc,
best-val-loss and last checkpoints (test recorded per epoch for analysis only, never selected on). Runs are
appended to ``<out-dir>/accuracy-runs.jsonl``; a rerun with the same settings reuses finished ones.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experiments.bench.common import BenchConfig, SectionResult, quiet_loggers

log = logging.getLogger(__name__)

PEER_MODEL = {"filters": 32, "organisation": "double", "kernel_size": 3, "activation": "relu", "batch_norm": True,
              "dense_units": 512, "dropout": 0.12}
PEER_TRAIN = {"optimizer": "adam", "lr": 6.2e-4, "weight_decay": 7.4e-4, "batch_size": 64, "normalization": "imagenet"}
PEER_RECIPE = {**PEER_MODEL, **PEER_TRAIN}


@dataclass(frozen=True)
class Row:
    """One line of the table: a pipeline, the flat Part A settings, and how the kept checkpoint is chosen."""

    label: str
    pipeline: str  # "peer" (experiments/bench/peer.py) | "ours" (make_loaders + fit)
    flat: dict = field(default_factory=dict)  # PartAConfig.from_flat keys over our defaults ("ours" only)
    select: str | None = None  # "val_acc" | "val_loss" | "last": the epoch the row keeps; None = its monitor
    transform: str | None = None  # ablation only: replace our training transform (see _ablation_transform)
    init: str = "default"  # "default" (PyTorch's) | "kaiming" (the peer's, experiments/bench/peer.py)


ROWS: dict[str, Row] = {
    "peer": Row("(a) peers' pipeline + peer recipe", "peer", PEER_RECIPE, select="val_loss"),
    "ours_peer": Row("(b) ours + peer recipe", "ours", {**PEER_RECIPE, "augment": True}),
    "ours_default": Row("(c) ours, defaults", "ours", {}),
    "ours_default_kaiming": Row("(c) with the peer's Kaiming init", "ours", {}, init="kaiming"),
    "ours_default_per_sample": Row("(c) on the per-sample torchvision path (issue 16: same accuracy?)", "ours",
                                   {"pipeline": "per_sample"}),
}
OURS_BEFORE = {**PEER_RECIPE, "augment": True, "train_decode_ratio": 1.0, "crop_scale": (0.6, 1.0),
               "scheduler": "constant", "warmup_epochs": 0.0, "label_smoothing": 0.0, "monitor": "val_acc",
               "pipeline": "per_sample"}  # (b) before issue 15: crop from the 96 px decode, per-sample torchvision
# v2 transforms, constant LR, best.pt = best val_acc (the defaults then)
ABLATION: dict[str, Row] = {
    "abl_before": Row("ours before: crop 0.6-1 from the decode at the input size", "ours", OURS_BEFORE),
    "abl_source": Row("crop source decoded 1.15x larger", "ours", {**OURS_BEFORE, "train_decode_ratio": 1.15}),
    "abl_nocrop": Row("no crop: flip + jitter only", "ours", OURS_BEFORE, transform="flip_jitter"),
    "abl_plateau": Row("source 1.15x + plateau LR (0.5, patience 2)", "ours",
                       {**OURS_BEFORE, "train_decode_ratio": 1.15, "scheduler": "plateau", "gamma": 0.5,
                        "plateau_patience": 2}),
    "abl_noaug": Row("no augmentation", "ours", {**OURS_BEFORE, "augment": False}),
    "abl_kaiming": Row("source 1.15x + Kaiming init", "ours", {**OURS_BEFORE, "train_decode_ratio": 1.15},
                       init="kaiming"),
    "abl_peer_aug": Row("peer's augmentation (flip, rotate 10, jitter) on our cache", "ours", OURS_BEFORE,
                        transform="flip_rotate_jitter"),
    # what (b) adds to the old recipe, one piece at a time on top of the 1.15x crop source
    "abl_cosine": Row("source 1.15x + cosine LR with a 0.5-epoch warm-up", "ours",
                      {**OURS_BEFORE, "train_decode_ratio": 1.15, "scheduler": "cosine", "warmup_epochs": 0.5}),
    "abl_smoothing": Row("source 1.15x + label smoothing 0.1", "ours",
                         {**OURS_BEFORE, "train_decode_ratio": 1.15, "label_smoothing": 0.1}),
    "abl_batched": Row("source 1.15x + the batched augmentation path", "ours",
                       {**OURS_BEFORE, "train_decode_ratio": 1.15, "pipeline": "batched"}),
}
FOUND = {"batch_norm": True, "dense_units": 512, "label_smoothing": 0.0, "weight_decay": 0.1}  # all four share
SEARCHED: dict[str, Row] = {  # the defaults search's best trials (configs/partA_defaults_search.yaml, seed 0)
    "search_21": Row("search trial 21: 64 same, 3x3, GELU, dropout 0.12", "ours",
                     {**FOUND, "filters": 64, "organisation": "same", "activation": "gelu", "lr": 6.816e-4}),
    "search_1": Row("search trial 1: 32 doubling, 7-5-5-3-3, SiLU, no dropout", "ours",
                    {**FOUND, "filters": 32, "kernel_size": [7, 5, 5, 3, 3], "activation": "silu", "dropout": 0.0,
                     "lr": 4.292e-4}),
    "search_13": Row("search trial 13: 32 doubling, 3x3, GELU, dropout 0.12", "ours",
                     {**FOUND, "filters": 32, "activation": "gelu", "lr": 7.921e-4}),
    "search_3": Row("search trial 3: 16 doubling, 3x3, GELU, dropout 0.12", "ours",
                    {**FOUND, "filters": 16, "activation": "gelu", "lr": 5.190e-4}),
    "search_3_relu": Row("search trial 3 with ReLU (guided backprop's activation)", "ours",
                         {**FOUND, "filters": 16, "activation": "relu", "lr": 5.190e-4}),
}
ROWS.update(ABLATION)
ROWS.update(SEARCHED)
PRESETS = {"issue": ["peer", "ours_peer", "ours_default"], "ablation": ["peer", *ABLATION],
           "search": ["ours_default", *SEARCHED]}


def parse_rows(spec: str) -> list[str]:
    """``issue`` | ``ablation`` | ``key,key,...`` -> row keys; ValueError naming the valid ones."""
    keys = PRESETS.get(spec, [k.strip() for k in spec.split(",") if k.strip()])
    unknown = [k for k in keys if k not in ROWS]
    if unknown or not keys:
        raise ValueError(f"unknown accuracy rows {unknown or spec!r}; expected a preset {sorted(PRESETS)} or "
                         f"comma-separated keys of {sorted(ROWS)}")
    return keys


def _ablation_transform(kind: str, prep):
    from torchvision.transforms import v2

    ops = [v2.RandomHorizontalFlip()]
    if kind == "flip_rotate_jitter":
        ops.append(v2.RandomRotation(10))
    elif kind != "flip_jitter":
        raise ValueError(f"unknown ablation transform {kind!r}")
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True),
                       v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                       v2.Normalize(list(prep.mean), list(prep.std))])


def _ours(row: Row, data_dir: Path, size: int, epochs: int, seed: int, run_dir: Path) -> list[dict]:
    from core.data import make_loaders
    from core.devices import resolve_channels_last, resolve_device
    from core.model import build_cnn
    from core.partA import PartAConfig
    from core.train import evaluate, fit, seed_everything
    from experiments.bench.peer import peer_init

    cfg = PartAConfig.from_flat({**row.flat, "data_dir": data_dir, "image_size": size, "epochs": epochs,
                                 "seed": seed, "device": "cpu"})
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)  # as run_partA: the weight init, then fit re-seeds the rest
    loaders = make_loaders(cfg.data)
    if row.transform is not None:
        loaders.train.dataset.transform = _ablation_transform(row.transform, loaders.preprocessing)
    model = build_cnn(cfg.spec(len(loaders.class_names), loaders.preprocessing.image_size))
    if row.init == "kaiming":
        peer_init(model)
    channels_last = resolve_channels_last(cfg.train.channels_last, device)
    tests: dict[int, float] = {}

    def record_test(epoch: int, stats) -> None:
        tests[epoch] = evaluate(model, loaders.test, device, channels_last=channels_last, desc="test").acc

    meta = {"model_desc": {"kind": "cnn", "spec": model.spec.to_dict()}, "class_names": loaders.class_names,
            "preprocessing": loaders.preprocessing.to_dict()}
    result = fit(model, loaders, cfg.train, run_dir=run_dir, checkpoint_meta=meta, on_epoch_end=record_test)
    return [{"epoch": h["epoch"], "val_loss": h["val_loss"], "val_acc": h["val_acc"], "test_acc": tests[h["epoch"]],
             "train_images_per_sec": h["images_per_sec"], "lr": h["lr"]} for h in result.history]


def _peer(row: Row, data_dir: Path, size: int, epochs: int, seed: int, workers: int) -> list[dict]:
    from dataclasses import asdict

    from core.data import DataConfig, make_loaders
    from core.model import build_cnn, make_spec
    from experiments.bench.peer import peer_init, peer_loaders, train_peer

    split = make_loaders(DataConfig(data_dir=data_dir, image_size=size))  # our split's file lists, nothing else
    samples = {name: list(getattr(split, name).dataset.samples) for name in ("train", "val", "test")}
    torch.manual_seed(seed)
    model_keys = {k: v for k, v in row.flat.items() if k in PEER_MODEL}
    model = peer_init(build_cnn(make_spec(**model_keys, image_size=size, num_classes=len(split.class_names))))
    loaders = peer_loaders(samples, size, row.flat["batch_size"], seed, num_workers=workers)
    records = train_peer(model, loaders, epochs=epochs, lr=row.flat["lr"], weight_decay=row.flat["weight_decay"])
    return [asdict(r) for r in records]


def row_select(row: Row) -> str:
    """The selection rule a row keeps its checkpoint by: explicit, else our config's ``monitor``."""
    if row.select is not None:
        return row.select
    from core.partA import PartAConfig

    return PartAConfig.from_flat(dict(row.flat)).train.monitor


def summarise_run(epochs: list[dict], select: str) -> dict:
    """Test accuracy of the kept checkpoint under each selection rule, and the mean training images/s."""
    by_acc = max(epochs, key=lambda e: (e["val_acc"], -e["epoch"]))  # first epoch reaching the best, as fit
    by_loss = min(epochs, key=lambda e: (e["val_loss"], e["epoch"]))
    chosen = {"val_acc": by_acc, "val_loss": by_loss, "last": epochs[-1]}
    return {"kept_test_acc": chosen[select]["test_acc"], "kept_epoch": chosen[select]["epoch"],
            "test_acc_best_val_acc": by_acc["test_acc"], "test_acc_best_val_loss": by_loss["test_acc"],
            "test_acc_last": epochs[-1]["test_acc"],
            "train_images_per_sec": statistics.mean(e["train_images_per_sec"] for e in epochs)}


def _spread(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "min": min(xs), "max": max(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}


def bench_accuracy(cfg: BenchConfig) -> SectionResult:
    """Train every row for every seed (finished runs in the JSONL are reused) and summarise per row."""
    if cfg.data_dir is None:
        raise ValueError("the accuracy section needs --data-dir (a folder with train/ and val/, e.g. "
                         "../shared/data/flowers5)")
    keys = parse_rows(cfg.rows)
    size, epochs, seeds = cfg.image_size or 96, cfg.epochs or (2 if cfg.quick else 15), cfg.seeds
    out = cfg.out_dir / "accuracy-runs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["row"], rec["seed"], rec["epochs"], rec["image_size"], rec["data_dir"])] = rec
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    for seed in seeds:  # every row at one seed before the next seed: a partial run already compares rows
        for key in keys:
            row, ident = ROWS[key], (key, seed, epochs, size, str(cfg.data_dir))
            if ident not in done:
                log.info("accuracy: %s, seed %d, %d epochs at %d px", row.label, seed, epochs, size)
                with quiet_loggers("core.train.trainer", "core.data.loaders", "core.data.decode_cache"):
                    if row.pipeline == "peer":
                        history = _peer(row, cfg.data_dir, size, epochs, seed, cfg.peer_workers)
                    else:
                        history = _ours(row, cfg.data_dir, size, epochs, seed, cfg.work_dir / f"{key}-{seed}")
                done[ident] = {"row": key, "seed": seed, "epochs": epochs, "image_size": size,
                               "data_dir": str(cfg.data_dir), "flat": copy.deepcopy(dict(row.flat)),
                               "history": history, **summarise_run(history, row_select(row))}
                with open(out, "a") as f:
                    f.write(json.dumps(done[ident], default=str) + "\n")
                rec = done[ident]
                log.info("  kept test %.1f%% (epoch %d), last %.1f%%, %.0f img/s", 100 * rec["kept_test_acc"],
                         rec["kept_epoch"], 100 * rec["test_acc_last"], rec["train_images_per_sec"])
            runs[key].append({**done[ident], **summarise_run(done[ident]["history"], row_select(ROWS[key]))})
    rows = []
    for key in keys:
        recs = runs[key]
        rows.append({"key": key, "label": ROWS[key].label, "select": row_select(ROWS[key]), "seeds": list(seeds),
                     **{name: _spread([r[name] for r in recs]) for name in
                        ("kept_test_acc", "test_acc_best_val_acc", "test_acc_best_val_loss", "test_acc_last",
                         "train_images_per_sec")}})
    comparisons = []
    if cfg.repeats > 0 and len(keys) > 1:  # side by side: the runs above ran at different times
        from experiments.bench.accuracy_speed import time_rows

        transforms = {k: (lambda prep, kind=ROWS[k].transform: _ablation_transform(kind, prep))
                      for k in keys if ROWS[k].transform is not None}
        log.info("accuracy: timing one training epoch per row, side by side (%d rounds)", min(cfg.repeats, 2))
        with quiet_loggers("core.train.trainer", "core.data.loaders", "core.data.batching", "core.data.decode_cache"):
            comparisons = time_rows({k: ROWS[k] for k in keys}, cfg.data_dir, size, cfg.peer_workers,
                                    repeats=min(cfg.repeats, 2), warmup=min(cfg.warmup, 1), transforms=transforms)
        speed = {keys[0]: statistics.median(comparisons[0].baseline)}
        speed.update({c.ours_label: statistics.median(c.ours) for c in comparisons})
        for r in rows:
            r["epoch_images_per_sec_side_by_side"] = speed[r["key"]]
    info = {"data_dir": str(cfg.data_dir), "image_size": size, "epochs": epochs, "seeds": list(seeds),
            "rows": rows, "runs_file": str(out)}
    return SectionResult(comparisons, info)


def format_rows(info: dict) -> list[str]:
    """The accuracy table: kept-checkpoint test accuracy mean ± std [min-max], other rules, images/s."""
    lines = [f"  {info['data_dir']}, {info['image_size']} px, {info['epochs']} epochs, seeds {info['seeds']}",
             f"  {'row':<58} {'kept test acc':>22} {'best val_loss':>13} {'last':>7} {'img/s':>7} {'side by side':>12}"]
    for r in info["rows"]:
        k = r["kept_test_acc"]
        kept = f"{100 * k['mean']:.1f} ± {100 * k['std']:.1f} [{100 * k['min']:.0f}-{100 * k['max']:.0f}]"
        side = r.get("epoch_images_per_sec_side_by_side")
        lines.append(f"  {r['label'][:58]:<58} {kept:>22} {100 * r['test_acc_best_val_loss']['mean']:>12.1f}% "
                     f"{100 * r['test_acc_last']['mean']:>6.1f}% {r['train_images_per_sec']['mean']:>7.0f} "
                     f"{'-' if side is None else f'{side:.1f}':>12}")
    return lines
