"""Evaluate a Part A checkpoint on the official test split (``val/``) and explain what it learned.

    python experiments/partA_evaluate.py --checkpoint runs/demo/best.pt             # the demo set
    python experiments/partA_evaluate.py --checkpoint runs/best/best.pt --data-dir data/inaturalist_12K
    python experiments/partA_evaluate.py --checkpoint runs/gelu/best.pt --guided-mode relu-swap

Writes to ``--out-dir`` (default: ``<checkpoint folder>/eval``): ``test_metrics.json``,
``confusion_matrix.png``, ``predictions_grid.png`` (+ ``.json``), ``gradcam.png``, ``filters_conv1.png``,
``feature_maps_conv1.png``, ``guided_backprop_conv5.png`` (+ ``.json``: the neurons and the method),
``evaluation.html`` (every figure with the numbers, linked from the sweep report),
and logs the figures, a predictions table and the test accuracy to a W&B run (job type "evaluate").
Filters, feature maps, guided backprop and Grad-CAM need a Part A SmallCNN; for other models (Part B
backbones) they are skipped with a warning and the metrics are still written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.cli import configure_logging, run_script
from core.explain import GUIDED_MODES, EvalConfig, evaluate_checkpoint, log_evaluation
from experiments.flags import add_tracking_flags

log = logging.getLogger("partA_evaluate")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a Part A checkpoint (best.pt / last.pt)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="dataset root with train/ and val/ (val/ is the test set); default: the demo set")
    parser.add_argument("--out-dir", type=Path, default=None, help="output folder (default: <checkpoint folder>/eval)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the grid images and the explained image")
    parser.add_argument("--per-class", type=int, default=3, help="test images per class in the prediction grid")
    parser.add_argument("--neurons", type=int, default=10, help="CONV5 neurons shown by guided backprop")
    parser.add_argument("--guided-mode", choices=GUIDED_MODES, default="auto",
                        help="auto: guided backprop for all-ReLU models, else labelled plain saliency; "
                             "relu-swap: guided backprop on a copy with activations swapped to ReLU; "
                             "saliency: plain gradients")
    add_tracking_flags(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for the test pass")
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="use at most this many test images per class (quick looks; default: all)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test metrics on each image and its horizontal flip, logits averaged "
                             "(default: as the run was trained, its --tta)")
    return parser


def evaluate(args: argparse.Namespace) -> int:
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes)."""
    configure_logging(logging.INFO)
    cfg = EvalConfig(checkpoint=args.checkpoint, data_dir=args.data_dir, out_dir=args.out_dir, seed=args.seed,
                     per_class=args.per_class, neurons=args.neurons, guided_mode=args.guided_mode,
                     wandb_mode=args.wandb_mode, device=args.device, batch_size=args.batch_size,
                     max_per_class=args.max_per_class, tta=args.tta)
    summary = evaluate_checkpoint(cfg)
    log_evaluation(cfg, summary)
    m = summary["metrics"]
    print(f"test accuracy {m.accuracy:.2%} ({m.n_correct}/{m.n}); outputs in {summary['out_dir']}; "
          f"open {summary['page']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script("partA_evaluate", get_args_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
