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

from core.data import AUGMENT_POLICIES, DataConfig
from core.devices import resolve_device
from core.finetune import (
    CPU_EPOCHS,
    CPU_IMAGE_SIZE,
    GPU_EPOCHS,
    STRATEGIES,
    PartBConfig,
    device_defaults,
    run_compare,
    run_partB,
)
from core.model import supported_archs
from core.runfiles import run_name
from core.train import TRACKING_MODES, TrainConfig
from experiments.cli import UsageError, check_run_folder, configure_logging, run_script

log = logging.getLogger("partB_finetune")



def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("backbone and strategy")
    model.add_argument("--arch", default="vgg16", help="torchvision arch (see --list-archs); default vgg16")
    model.add_argument("--list-archs", action="store_true", help="print the supported archs and exit")
    model.add_argument("--strategy", default="head", choices=STRATEGIES, help="fine-tuning strategy")
    model.add_argument("--k", type=int, default=2, help="top-k: number of blocks unfrozen from the top")
    model.add_argument("--unfreeze-every", type=int, default=1, help="gradual: epochs between unfreezing blocks")
    model.add_argument("--lp-epochs", type=int, default=1,
                       help="lp-ft: epochs of linear probing (head only) before everything fine-tunes; default 1")
    model.add_argument("--layer-decay", type=float, default=None,
                       help="layer-wise LR decay (timm's --layer-decay): block i of n trains at "
                            "lr x this^(n-i); default 0.75 for --strategy layer-decay, off otherwise")
    model.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                       help="head-only epochs without augmentation train on backbone features computed once "
                            "(same result, much faster); default on")
    model.add_argument("--backbone-lr-mult", type=float, default=0.1,
                       help="backbone LR = --lr x this (the new head trains at --lr; lp-ft fine-tunes "
                            "everything at this LR); default 0.1")
    model.add_argument("--bn-eval", action="store_true",
                       help="keep every BatchNorm in eval mode, also in trained blocks (folded-BN weights)")
    model.add_argument("--weights", default=None,
                       help="DEFAULT (torchvision download / torch hub cache), a weights name such as "
                            "IMAGENET1K_V1, or none; default DEFAULT (none with --weights-file)")
    model.add_argument("--weights-file", type=Path, default=None,
                       help="state dict of the stock 1000-class torchvision model, used instead of a download")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None, help="dataset root with train/ and val/ (default: demo)")
    data.add_argument("--image-size", type=int, default=None,
                      help=f"input side; default the weights' own (224) on GPU, {CPU_IMAGE_SIZE} on CPU")
    data.add_argument("--batch-size", type=int, default=32, help="batch size")
    data.add_argument("--max-per-class", type=int, default=None, help="cap images per class (quick runs)")
    data.add_argument("--augment", action="store_true", help="augment the training subset")
    data.add_argument("--augment-policy", choices=AUGMENT_POLICIES, default="none",
                      help="per-image TrivialAugmentWide or RandAugment(2, 9) on the training subset")
    data.add_argument("--random-erasing", type=float, default=0.0,
                      help="probability of erasing a random rectangle of each training image (default 0)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"epochs; default {GPU_EPOCHS} (GPU) / {CPU_EPOCHS} (CPU)")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate of the new head")
    train.add_argument("--optimizer", default="adam", help="adam | adamw | sgd | nadam")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (weights only)")
    train.add_argument("--scheduler", default="constant", help="constant | cosine | onecycle | step")
    train.add_argument("--warmup-epochs", type=float, default=0.0, help="linear LR warmup in epochs (default 0)")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing in [0, 1) (default 0)")
    train.add_argument("--mixup-alpha", type=float, default=0.0, help="MixUp Beta(a, a) per batch (default off)")
    train.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix Beta(a, a) per batch (default off)")
    train.add_argument("--ema-decay", type=float, default=0.0,
                       help="evaluate and keep an EMA of the weights with this decay (default 0 = off)")
    train.add_argument("--tta", action="store_true", help="validate and test on each image and its flip")
    train.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (off by default)")
    train.add_argument("--seed", type=int, default=0, help="seed for the split, init and data order")
    train.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run = parser.add_argument_group("run")
    run.add_argument("--compare", action="store_true", help="run every strategy and write the comparison")
    run.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES,
                     help="with --compare: the strategies to run (default all)")
    run.add_argument("--partA-run", type=Path, default=None,
                     help="with --compare: a Part A run folder to include, or a sweep folder (its best trial)")
    run.add_argument("--out-dir", type=Path, default=Path("runs"), help="parent folder of the run folder")
    run.add_argument("--name", default=None, help="run folder / W&B name (default partB-<arch>-<strategy|compare>)")
    run.add_argument("--wandb-mode", default="auto", choices=TRACKING_MODES,
                     help="W&B: auto | online | offline | disabled")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")
    return parser


def build_config(args: argparse.Namespace) -> PartBConfig:
    """Flags -> PartBConfig, with the CPU defaults (small images, few epochs) filled in and logged."""
    on_cpu = resolve_device(args.device).type == "cpu"
    image_size, epochs, chosen = device_defaults(args.arch, args.device, args.image_size, args.epochs)
    if chosen:
        log.info("CPU run: %s by default (pass --image-size / --epochs to change)", " and ".join(chosen))
    weights = args.weights if args.weights is not None else (None if args.weights_file else "DEFAULT")
    data = DataConfig(data_dir=args.data_dir, batch_size=args.batch_size, max_per_class=args.max_per_class,
                      augment=args.augment, augment_policy=args.augment_policy,
                      random_erasing=args.random_erasing, normalization="imagenet", seed=args.seed,
                      device="cpu" if on_cpu else "cuda")
    train = TrainConfig(epochs=epochs, lr=args.lr, optimizer=args.optimizer,
                        weight_decay=args.weight_decay, scheduler=args.scheduler, patience=args.patience,
                        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                        mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, ema_decay=args.ema_decay,
                        tta=args.tta, seed=args.seed, device=args.device)
    return PartBConfig(arch=args.arch, strategy=args.strategy, k=args.k, unfreeze_every=args.unfreeze_every,
                       backbone_lr_mult=args.backbone_lr_mult, bn_eval=args.bn_eval, lp_epochs=args.lp_epochs,
                       layer_decay=args.layer_decay, feature_cache=args.feature_cache, weights=weights,
                       weights_file=args.weights_file, image_size=image_size, data=data, train=train)


def finetune(args: argparse.Namespace) -> int:
    """Everything after parsing; errors propagate to :func:`experiments.cli.run_script` (exit codes)."""
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
