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

from core.cli import UsageError, check_run_folder, configure_logging, run_script
from core.data import resolve_dataset
from core.partA import WEIGHT_DECAY_FOR, PartAConfig, run_partA
from core.runfiles import run_name
from core.train import MONITORS
from experiments.flags import DATA_FLAGS, TRAIN_FLAGS, add_flags, add_spec_flags, add_tracking_flags

log = logging.getLogger("partA_train")

DEMO_IMAGE_SIZE = 64  # the demo set's default side: a few seconds per epoch on a laptop CPU
DATA_IMAGE_SIZE = 224  # the real dataset's default side (the assignment's)
RUN_FLAGS = ("out_dir", "name", "resume", "download", "wandb_mode", "project", "group", "log_level", "debug")
FIXED_FLAGS = ("in_channels", "num_classes")  # make_spec flags the data decides; only checked


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PartAConfig().to_flat()  # the recommended recipe (core/partA/config.py, docs/results.md)
    add_spec_flags(parser, defaults, help_overrides={  # sizes and classes come from the data here
        "image_size": (f"square input side in pixels (default {DEMO_IMAGE_SIZE} on the demo set, "
                       f"{DATA_IMAGE_SIZE} with --data-dir)"),
        "num_classes": "output classes: taken from the dataset; if given, must match its class folders",
        "in_channels": "input channels: the loaders give RGB, so only 3 is accepted",
    })
    data = parser.add_argument_group("data")
    add_flags(data, DATA_FLAGS, defaults)
    data.add_argument("--download", action="store_true",
                      help="download iNaturalist-12K into --data-dir (default: the cache's inaturalist/) "
                           "unless it is already there")
    add_flags(parser.add_argument_group("training"), TRAIN_FLAGS, defaults, help_overrides={
        "weight_decay": (f"weight decay on weights, not biases/BN (default {defaults['weight_decay']:g} for "
                         f"{defaults['optimizer']}; another --optimizer brings its own: "
                         + ", ".join(f"{k} {v:g}" for k, v in WEIGHT_DECAY_FOR.items() if k != defaults["optimizer"])
                         + ")")})
    run = parser.add_argument_group("run folder and tracking")
    run.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent of the run folder (default runs)")
    run.add_argument("--name", help="run folder and W&B run name (default partA-<date>-<time>)")
    run.add_argument("--resume", action="store_true", help="continue <out-dir>/<name> from its last.pt")
    add_tracking_flags(run)
    run.add_argument("--project", default="inat-cnn", help="W&B project (default inat-cnn)")
    run.add_argument("--group", help="W&B group (default none)")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                     help="logging level (default INFO)")
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
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes)."""
    configure_logging(args.log_level, "%(asctime)s %(message)s", "%H:%M:%S")
    flat = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS + FIXED_FLAGS}
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
    log.info("done: best.pt = epoch %d, %s (--monitor); val_acc %.1f%%, test_acc %s, %s params, %.3f GFLOPs; "
             "run folder %s", result.best_epoch, MONITORS[cfg.train.monitor], 100 * result.best_val_acc, test,
             f"{result.parameter_count:,}", result.flops / 1e9, run_dir)
    return 0


def _resume_hint(args: argparse.Namespace) -> str:
    if not (args.out_dir / str(args.name) / "config.yaml").is_file():  # stopped before the run folder was written
        return "nothing was saved yet: run the same command again (without --resume)"
    return f"continue with: python experiments/partA_train.py --out-dir {args.out_dir} --name {args.name} --resume"


def main(argv: list[str] | None = None) -> int:
    return run_script("partA_train", get_args_parser(), train, argv, on_interrupt=_resume_hint)


if __name__ == "__main__":
    sys.exit(main())
