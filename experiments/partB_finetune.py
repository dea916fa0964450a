r"""Part B: fine-tune an ImageNet-pretrained torchvision backbone with one strategy, or compare them all.

    python experiments/partB_finetune.py --arch vgg16 --strategy head                 # demo set
    python experiments/partB_finetune.py --arch resnet50 --strategy top-k --k 2 --data-dir data/inaturalist_12K
    python experiments/partB_finetune.py --arch mobilenet_v2 --strategy gradual --unfreeze-every 2 --epochs 8
    python experiments/partB_finetune.py --arch mobilenet_v2 --bn-eval \
        --weights-file ../shared/weights/mobilenet_v2_imagenet1k_from_qnnpack.pth
    python experiments/partB_finetune.py --arch vgg16 --compare --partA-run runs/partA-demo   # a sweep: its best

Strategies: head (only the new head trains), top-k (the last k blocks + head), full (everything; backbone
at lr x --backbone-lr-mult), gradual (head first, one more block every --unfreeze-every epochs), lp-ft
(head only for --lp-epochs, then everything at lr x --backbone-lr-mult), layer-decay (everything; block i of n
at lr x --layer-decay^(n-i)). Head-only epochs without augmentation train on cached backbone features.
Writes runs/<name>/: config.yaml, split.json, metrics.jsonl, best.pt, last.pt, test_metrics.json; with
--compare one such folder per strategy under runs/<name>/<strategy>/ plus comparison.csv, comparison.md,
accuracy_curves.png and comparison.html (the page to open). On a CPU the defaults shrink to 64 px images and
3 epochs (the log says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from core.cli import UsageError, check_run_folder, configure_logging, run_script
from core.finetune import (
    CPU_EPOCHS,
    CPU_IMAGE_SIZE,
    GPU_EPOCHS,
    PARTB_KEYS,
    STRATEGIES,
    PartBConfig,
    run_compare,
    run_partB,
    with_device_defaults,
)
from core.model import supported_archs
from core.runfiles import run_name
from experiments.flags import DATA_FLAGS, TRAIN_FLAGS, add_flags, add_tracking_flags

log = logging.getLogger("partB_finetune")
RUN_FLAGS = ("list_archs", "weights_file", "compare", "strategies", "partA_run", "out_dir", "name", "wandb_mode",
             "resume", "debug")
ON_OFF = argparse.BooleanOptionalAction
# flat key -> (flags, add_argument keywords, help; "{}" is PartBConfig's default), as experiments/flags.py's tables
STRATEGY_FLAGS = {
    "arch": (("--arch",), {}, "torchvision arch (see --list-archs; default {})"),
    "strategy": (("--strategy",), {"choices": STRATEGIES}, "fine-tuning strategy (default {})"),
    "k": (("--k",), {"type": int}, "top-k: number of blocks unfrozen from the top (default {})"),
    "unfreeze_every": (("--unfreeze-every",), {"type": int}, "gradual: epochs between unfreezing blocks "
                                                             "(default {})"),
    "lp_epochs": (("--lp-epochs",), {"type": int},
                  "lp-ft: epochs of linear probing (head only) before everything fine-tunes (default {})"),
    "layer_decay": (("--layer-decay",), {"type": float},
                    "layer-wise LR decay (timm's --layer-decay): block i of n trains at lr x this^(n-i) "
                    "(default 0.75 for --strategy layer-decay, off otherwise)"),
    "feature_cache": (("--feature-cache",), {"action": ON_OFF},
                      "head-only epochs without augmentation train on backbone features computed once "
                      "(same result, much faster; default {})"),
    "backbone_lr_mult": (("--backbone-lr-mult",), {"type": float},
                         "backbone LR = --lr x this (the new head trains at --lr; lp-ft fine-tunes everything at "
                         "this LR; default {})"),
    "bn_eval": (("--bn-eval",), {"action": ON_OFF},
                "keep every BatchNorm in eval mode, also in trained blocks (folded-BN weights; default {})"),
    "weights": (("--weights",), {}, "DEFAULT (torchvision download / torch hub cache), a weights name such as "
                                    "IMAGENET1K_V1, or none (default {}; none with --weights-file)"),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PartBConfig().to_flat()
    defaults_monitor = PartBConfig().train.monitor
    model = parser.add_argument_group("backbone and strategy")
    add_flags(model, STRATEGY_FLAGS, defaults)
    model.add_argument("--list-archs", action="store_true", help="print the supported archs and exit")
    model.add_argument("--weights-file", type=Path, default=None,
                       help="state dict of the stock 1000-class torchvision model, used instead of a download "
                            "(default none)")
    data = parser.add_argument_group("data")
    add_flags(data, DATA_FLAGS, defaults, [k for k in PARTB_KEYS if k in DATA_FLAGS])
    data.add_argument("--image-size", type=int, default=argparse.SUPPRESS,
                      help=f"input side (default: the weights' own (224) on GPU, {CPU_IMAGE_SIZE} on CPU)")
    add_flags(parser.add_argument_group("training"), TRAIN_FLAGS, defaults, [k for k in PARTB_KEYS if k in TRAIN_FLAGS],
              help_overrides={"epochs": f"epochs (default {GPU_EPOCHS} on GPU, {CPU_EPOCHS} on CPU)",
                              "patience": f"early stopping: epochs without a gain of {defaults_monitor} (default: off)",
                              "lr": f"learning rate of the new head (default {defaults['lr']:g})",
                              "seed": f"seed of the split, the new head's init and the data order "
                                      f"(default {defaults['seed']})"})
    run = parser.add_argument_group("run")
    run.add_argument("--compare", action="store_true", help="run every strategy and write the comparison")
    run.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES,
                     help="with --compare: the strategies to run (default all)")
    run.add_argument("--partA-run", type=Path, default=None,
                     help="with --compare: a Part A run folder to include, or a sweep folder (its best trial)")
    run.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent folder of the run folder")
    run.add_argument("--name", default=None, help="run folder / W&B name (default partB-<arch>-<strategy|compare>)")
    add_tracking_flags(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")
    return parser


def build_config(args: argparse.Namespace) -> PartBConfig:
    """Flags -> PartBConfig, with the device's defaults (small images, few epochs on a CPU) filled in and logged."""
    flat = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
    if args.weights_file is not None and "weights" not in flat:
        flat["weights"] = None  # the file replaces the download
    cfg = PartBConfig.from_flat(flat)
    return with_device_defaults(dataclasses.replace(cfg, weights_file=args.weights_file), given=flat)


def finetune(args: argparse.Namespace) -> int:
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes)."""
    configure_logging(logging.INFO)
    if args.list_archs:
        print("\n".join(supported_archs()))
        return 0
    if args.partA_run is not None and not args.compare:
        raise UsageError("--partA-run is only used with --compare; add --compare or drop --partA-run")
    cfg = build_config(args)
    name = run_name(args.name or f"partB-{cfg.arch}-{'compare' if args.compare else cfg.strategy}")
    run_dir = args.out_dir / name
    for folder in [run_dir / s for s in args.strategies] if args.compare else [run_dir]:
        check_run_folder(folder, "partB_finetune.py", args.resume)
    if args.compare:
        cfg = dataclasses.replace(cfg, strategy=args.strategies[0])
        rows = run_compare(cfg, run_dir, strategies=tuple(args.strategies), partA_run=args.partA_run,
                           tracker_mode=args.wandb_mode, name=name, resume=args.resume)
        print((run_dir / "comparison.md").read_text(encoding="utf-8"), end="")
        print(f"{len(rows)} runs compared; outputs in {run_dir}; open {run_dir / 'comparison.html'}")
    else:
        run = run_partB(cfg, run_dir, tracker_mode=args.wandb_mode, name=name, resume=args.resume)
        result = run.result
        test = f"{result.test_acc:.2%}" if result.test_acc is not None else "not evaluated"
        print(f"{name}: test accuracy {test}, best val accuracy {result.best_val_acc:.2%} "
              f"(epoch {result.best_epoch}), trainable {run.trainable_params:,} / {result.parameter_count:,} "
              f"params, {run.seconds_per_epoch:.1f} s/epoch; outputs in {run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script("partB_finetune", get_args_parser(), finetune, argv)


if __name__ == "__main__":
    sys.exit(main())
