"""Train one Part A configuration from scratch, evaluate it on the test split, write the run folder.

    python experiments/partA_train.py                                   # demo set, 64 px, CPU-sized
    python experiments/partA_train.py --data-dir data/inaturalist_12K --filters 32 --organisation double \\
        --kernel-size 3 --activation silu --batch-norm --dropout 0.2 --dense 256 --augment --epochs 20
    python experiments/partA_train.py --name my-run --resume            # continue an interrupted run

Outputs land in ``<out-dir>/<name>/``: config.yaml, split.json, metrics.jsonl, best.pt, last.pt,
test_metrics.json and (offline W&B) wandb/. ``--resume`` reads the run's config.yaml; flags given
with it override that config (e.g. ``--epochs 30`` to train longer).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from core.data import AUGMENT_POLICIES, resolve_dataset
from core.devices import AMP_MODES, CHANNELS_LAST_MODES, COMPILE_MODES
from core.partA import PartAConfig, run_partA
from core.runfiles import run_name
from core.train import MONITORS, OPTIMIZERS, SCHEDULERS, TRACKING_MODES
from experiments.cli import UsageError, check_run_folder, configure_logging, run_script
from experiments.spec_args import add_spec_arguments

log = logging.getLogger("partA_train")

DEMO_IMAGE_SIZE = 64  # the demo set's default side: a few seconds per epoch on a laptop CPU
DATA_IMAGE_SIZE = 224  # the real dataset's default side (the assignment's)
# argparse dest -> PartAConfig.from_flat key, for the flags whose names differ
DEST_TO_FLAT = {"dense": "dense_units"}
RUN_FLAGS = ("out_dir", "name", "resume", "download", "wandb_mode", "project", "group", "log_level", "debug")
FIXED_FLAGS = ("in_channels", "num_classes")  # make_spec flags the data decides; only checked


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PartAConfig()  # the defaults are the recommended recipe (core/partA/config.py, docs/results.md)
    data_d, train_d = d.data, d.train
    on_off = {True: "on", False: "off"}
    add_spec_arguments(parser, help_overrides={  # sizes and classes come from the data here
        "image_size": (f"square input side in pixels (default {DEMO_IMAGE_SIZE} on the demo set, "
                       f"{DATA_IMAGE_SIZE} with --data-dir)"),
        "num_classes": "output classes: taken from the dataset; if given, must match its class folders",
        "in_channels": "input channels: the loaders give RGB, so only 3 is accepted",
        "filters": f"filters in the first conv block (default {d.filters})",
        "organisation": f"filters per block: same, double, half or 5 comma-separated counts (default {d.organisation})",
        "batch_norm": f"batch norm after every conv (default {on_off[d.batch_norm]})",
        "dropout": f"dropout before the output layer, in [0, 1) (default {d.dropout})",
        "dense": f"units in the dense layer (default {d.dense_units})",
    })

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, help="dataset root with train/ and val/ (default: the generated "
                                                    "demo set)")
    data.add_argument("--download", action="store_true",
                      help="download iNaturalist-12K into --data-dir (default: the cache's inaturalist/) "
                           "unless it is already there")
    data.add_argument("--max-per-class", type=int, help="use at most this many images per class (quick runs)")
    data.add_argument("--batch-size", type=int, help=f"images per batch (default {data_d.batch_size})")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction,
                      help=f"random resized crop, flip and colour jitter on the training split "
                           f"(default {on_off[data_d.augment]})")
    data.add_argument("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"),
                      help=f"--augment: area range of the random-resized crop, as fractions "
                           f"(default {data_d.crop_scale[0]:g} {data_d.crop_scale[1]:g})")
    data.add_argument("--train-decode-ratio", type=float,
                      help="--augment: decode training images at this times the image size and crop from them "
                           f"(ImageNet's 256/224 = 1.14; default {data_d.train_decode_ratio})")
    data.add_argument("--pipeline", choices=("batched", "per_sample"),
                      help="batched: whole batches gathered and augmented on the device (default); per_sample: "
                           "DataLoader with torchvision transforms per image")
    data.add_argument("--augment-device", choices=("auto", "cpu", "cuda"),
                      help="where batched augmentation runs (default auto = the training device)")
    data.add_argument("--augment-policy", choices=AUGMENT_POLICIES,
                      help="per-image torchvision policy on top of (or instead of) --augment: TrivialAugmentWide "
                           "or RandAugment(2, 9) (default none; selects the per-sample DataLoader path)")
    data.add_argument("--random-erasing", type=float,
                      help="probability of erasing one random rectangle of each training image (default 0)")
    data.add_argument("--resize-size", type=int, help="short side before a centre crop (default: resize straight)")
    data.add_argument("--val-fraction", type=float, help="fraction of train/ held out for validation (default 0.2)")
    data.add_argument("--split-seed", type=int, help="seed of the stratified train/val split (default 0)")
    data.add_argument("--num-workers", type=int, help="DataLoader workers (default: chosen for the device)")
    data.add_argument("--normalization", choices=("dataset", "imagenet"),
                      help="mean/std of the training split (default) or ImageNet's")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, help=f"epochs (default {train_d.epochs})")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default {train_d.optimizer})")
    train.add_argument("--lr", type=float, help=f"peak learning rate (default {train_d.lr:g})")
    train.add_argument("--weight-decay", type=float,
                       help=f"weight decay on weights, not biases/BN (default {train_d.weight_decay:g} for "
                            f"{train_d.optimizer}; another --optimizer brings its own: adam/nadam 0, sgd 5e-4)")
    train.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    train.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov SGD (default off)")
    train.add_argument("--scheduler", choices=SCHEDULERS, help=f"LR schedule (default {train_d.scheduler})")
    train.add_argument("--warmup-epochs", type=float,
                       help=f"linear LR warmup in epochs (default {train_d.warmup_epochs:g})")
    train.add_argument("--step-size", type=int, help="'step' schedule: epochs between decays (default epochs//3)")
    train.add_argument("--gamma", type=float, help="'step'/'plateau' schedule: decay factor (default 0.1)")
    train.add_argument("--plateau-patience", type=int,
                       help="'plateau' schedule: epochs without a val_loss improvement before a decay (default 2)")
    train.add_argument("--label-smoothing", type=float,
                       help=f"label smoothing in [0, 1) (default {train_d.label_smoothing:g})")
    train.add_argument("--mixup-alpha", type=float,
                       help="MixUp: mix each batch with Beta(a, a) weights, soft targets (default 0 = off)")
    train.add_argument("--cutmix-alpha", type=float,
                       help="CutMix: paste a Beta(a, a)-sized box between images (default 0 = off); with "
                            "--mixup-alpha too, each batch gets one of the two")
    train.add_argument("--ema-decay", type=float,
                       help="evaluate and checkpoint an EMA of the weights with this decay, e.g. 0.99 "
                            "(default 0 = off)")
    train.add_argument("--tta", action=argparse.BooleanOptionalAction,
                       help="validation and test on the image and its horizontal flip, logits averaged "
                            "(default off)")
    train.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this (default: no clip)")
    train.add_argument("--patience", type=int, help="early stopping: epochs without a gain of --monitor (default: off)")
    train.add_argument("--monitor", choices=MONITORS,
                       help=f"what picks best.pt and drives early stopping (default {train_d.monitor})")
    train.add_argument("--min-delta", type=float, help="gain of --monitor that counts as improvement (default 0)")
    train.add_argument("--seed", type=int, help="seeds python, numpy, torch and the data order (default 0)")
    train.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    train.add_argument("--amp", choices=AMP_MODES, help="mixed precision: auto = bf16/fp16 on CUDA, off on CPU")
    train.add_argument("--channels-last", choices=CHANNELS_LAST_MODES, help="NHWC memory format (default auto)")
    train.add_argument("--compile", choices=COMPILE_MODES,
                       help="torch.compile the model (default auto: on only where measured faster)")

    run = parser.add_argument_group("run folder and tracking")
    run.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent of the run folder (default runs)")
    run.add_argument("--name", help="run folder and W&B run name (default partA-<date>-<time>)")
    run.add_argument("--resume", action="store_true", help="continue <out-dir>/<name> from its last.pt")
    run.add_argument("--wandb-mode", choices=TRACKING_MODES, default="auto",
                     help="auto: online with W&B credentials, else offline into the run folder; or disabled")
    run.add_argument("--project", default="inat-cnn", help="W&B project (default inat-cnn)")
    run.add_argument("--group", help="W&B group (optional)")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"), help="logging level")
    # every config flag defaults to "absent", so only what the user typed overrides the base config
    for action in parser._actions:
        if action.dest not in RUN_FLAGS and action.dest != "help":
            action.default = argparse.SUPPRESS
    return parser


def _base_config(args: argparse.Namespace, run_dir: Path, flat: dict) -> PartAConfig:
    saved = check_run_folder(run_dir, "partA_train.py", args.resume)
    if args.resume:
        if saved is None:
            raise FileNotFoundError(f"--resume: {run_dir / 'config.yaml'} does not exist; check --name/--out-dir "
                                    "(or drop --resume to start the run)")
        try:
            return PartAConfig.from_dict(saved["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{run_dir / 'config.yaml'} has no usable 'config' section ({exc!r}); restore it, "
                             "or drop --resume and choose another --name") from exc
    size = DATA_IMAGE_SIZE if flat.get("data_dir") is not None else DEMO_IMAGE_SIZE
    return PartAConfig.from_flat({"image_size": size})


def _check_fixed_flags(args: argparse.Namespace, cfg: PartAConfig) -> None:
    if getattr(args, "in_channels", 3) != 3:
        raise UsageError(f"--in-channels {args.in_channels}: the loaders give RGB images, so it must be 3 "
                         "(drop the flag)")
    if getattr(args, "num_classes", None) is not None and cfg.data.data_dir is not None:
        train_dir = cfg.data.data_dir / "train"
        found = len([d for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]) \
            if train_dir.is_dir() else None  # hidden folders are not classes (core.data.imagefolder)
        if found is not None and found != args.num_classes:
            raise UsageError(f"--num-classes {args.num_classes} but {train_dir} has {found} class folders; "
                             "drop the flag (the class count comes from the data)")


def train(args: argparse.Namespace) -> int:
    """Everything after parsing; errors propagate to :func:`experiments.cli.run_script` (exit codes)."""
    configure_logging(args.log_level, "%(asctime)s %(message)s", "%H:%M:%S")
    flat = {DEST_TO_FLAT.get(k, k): v for k, v in vars(args).items() if k not in RUN_FLAGS + FIXED_FLAGS}
    if args.resume and not args.name:
        raise UsageError("--resume needs --name of the run to continue (the folder under --out-dir)")
    name = args.name = run_name(args.name or time.strftime("partA-%Y%m%d-%H%M%S"))  # the Ctrl-C line names it
    run_dir = args.out_dir / name
    if args.download:
        flat["data_dir"] = resolve_dataset(flat.get("data_dir"), download=True)
    cfg = PartAConfig.from_flat(flat, base=_base_config(args, run_dir, flat))
    _check_fixed_flags(args, cfg)
    result = run_partA(cfg, run_dir, tracker_mode=args.wandb_mode, name=name, group=args.group,
                       resume=args.resume, project=args.project)
    test = f"{result.test_acc:.1%}" if result.test_acc is not None else "not evaluated"
    log.info("done: best.pt = epoch %d (best %s), val_acc %.1f%%, test_acc %s, %s params, %.3f GFLOPs; run folder %s",
             result.best_epoch, cfg.train.monitor, 100 * result.best_val_acc, test, f"{result.parameter_count:,}",
             result.flops / 1e9, run_dir)
    return 0


def _resume_hint(args: argparse.Namespace) -> str:
    if not (args.out_dir / str(args.name) / "config.yaml").is_file():  # stopped before the run folder was written
        return "nothing was saved yet: run the same command again (without --resume)"
    return f"continue with: python experiments/partA_train.py --out-dir {args.out_dir} --name {args.name} --resume"


def main(argv: list[str] | None = None) -> int:
    return run_script("partA_train", get_args_parser(), train, argv, on_interrupt=_resume_hint)


if __name__ == "__main__":
    sys.exit(main())
