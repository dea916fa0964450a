r"""Predict image classes with an exported ``.onnx`` model and onnxruntime; the ``.onnx`` file is all it needs.

    python export/infer.py model.onnx photo.jpg other.png
    python export/infer.py model.onnx data/val --labels-from-folders --out predictions.csv
    python export/infer.py foreign.onnx imgs/ --image-size 224 --resize-size 256 \
        --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225

Prints the top-k classes per image, the unreadable images (skipped), accuracy and a confusion matrix when labels
are known, throughput and the execution provider that actually ran. Exit codes (docs/cli.md): 0 ok, 2 bad
input, 1 a runtime failure.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from core.cli import configure_logging as script_logging
from core.cli import output_file, run_script
from core.runfiles import atomic_writer
from export.metadata import MissingMetadataError, ModelMetadata, metadata_from_flags
from export.ort_session import PROVIDER_CHOICES, create_session, session_metadata
from export.predict import LabelledScore, PredictionRun, collect_images, predict_images, score

log = logging.getLogger("export.infer")
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx", "torch.export", "torch._dynamo")
MAX_MATRIX_CLASSES = 30


def configure_logging(verbose: bool = False) -> None:
    """Script logging: our INFO lines as plain messages; the exporters' chatter only with --verbose."""
    script_logging(logging.DEBUG if verbose else logging.INFO, "%(message)s")
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``infer.py`` and ``to_onnx.py --infer-on``."""
    group = parser.add_argument_group("inference")
    group.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto",
                       help="onnxruntime execution provider: auto = CUDA when usable, else CPU (reported); "
                            "cuda = fail unless CUDA really runs; cpu")
    group.add_argument("--batch-size", type=int, default=32, help="images per onnxruntime call")
    group.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    group.add_argument("--labels-from-folders", action="store_true",
                       help="true label = the image's parent folder name (FOLDER/<Class>/*.jpg): "
                            "prints accuracy and a confusion matrix")
    group.add_argument("--show", type=int, default=20, help="print at most this many per-image lines")
    group.add_argument("--threads", type=int, default=None,
                       help="onnxruntime intra-op threads (default: all cores)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the .onnx file (ours carries classes and preprocessing)")
    parser.add_argument("images", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", type=output_file, default=None, help="write one CSV row per image here")
    add_inference_args(parser)
    foreign = parser.add_argument_group("foreign models (an .onnx without our metadata)")
    foreign.add_argument("--image-size", type=int, default=None, help="square input side S of the model")
    foreign.add_argument("--resize-size", type=int, default=None,
                         help="resize the short side to R, then centre-crop S (omit: resize straight to SxS)")
    foreign.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                         help="per-channel mean on the 0..1 scale, e.g. 0.485 0.456 0.406")
    foreign.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                         help="per-channel std on the 0..1 scale, e.g. 0.229 0.224 0.225")
    parser.add_argument("--verbose", action="store_true", help="debug logging (onnxruntime's own messages too)")
    return parser


def resolve_metadata(session, model_path: Path, args: argparse.Namespace) -> ModelMetadata:
    """Our metadata from the file; for a foreign file, from the preprocessing flags (else a clear error)."""
    flags = {"image_size": args.image_size, "resize_size": args.resize_size, "mean": args.mean, "std": args.std}
    try:
        meta = session_metadata(session, where=str(model_path))
    except MissingMetadataError:
        if all(v is None for v in flags.values()):
            raise
        return metadata_from_flags(**flags, where=str(model_path))
    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if given:
        log.warning("%s carries its own preprocessing (%s); ignoring %s", model_path, meta.preprocessing,
                    " ".join(given))
    return meta


def format_confusion(result: LabelledScore) -> str:
    width = max(5, *(len(c) for c in result.classes)) if result.classes else 5
    short = [c[:width] for c in result.classes]
    lines = ["true \\ predicted".ljust(width) + " " + " ".join(c.rjust(width) for c in short)]
    for name, row in zip(short, result.confusion):
        lines.append(name.ljust(width) + " " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(lines)


def write_csv(path: Path, run: PredictionRun, meta: ModelMetadata) -> None:
    with atomic_writer(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true_label", "pred_index", "pred_label", "prob", "correct", "top_k"])
        for p in run.predictions:
            pred = meta.label(p.index)
            correct = "" if p.label is None else int(p.label == pred)
            top = ";".join(f"{meta.label(i)}:{prob:.4f}" for i, prob in zip(p.top_indices, p.top_probs))
            writer.writerow([str(p.path), p.label or "", p.index, pred, f"{p.top_probs[0]:.6f}", correct, top])
        for path_, reason in run.skipped:
            writer.writerow([str(path_), "", "", "", "", "", f"SKIPPED: {reason}"])


def run_inference(model_path: Path, images: Sequence[Path], args: argparse.Namespace,
                  out: Path | None = None) -> int:
    """The whole ``infer.py`` flow on already-parsed flags; returns the exit code."""
    session, report = create_session(model_path, args.provider, intra_op_threads=args.threads)
    meta = resolve_metadata(session, model_path, args)
    items = collect_images(images, labels_from_folders=args.labels_from_folders)
    run = predict_images(session, items, meta, batch_size=args.batch_size, top_k=args.top_k)
    num_outputs = session.get_outputs()[0].shape[1]
    if not isinstance(num_outputs, int):
        num_outputs = max(len(meta.class_names), 1 + max(i for p in run.predictions for i in p.top_indices))
    print(f"model: {model_path} ({meta.precision}, {len(meta.class_names) or num_outputs} classes, "
          f"{meta.preprocessing})")
    for p in run.predictions[:args.show]:
        top = "  ".join(f"{meta.label(i)} {prob:.3f}" for i, prob in zip(p.top_indices, p.top_probs))
        truth = f"  [true: {p.label}]" if p.label is not None else ""
        print(f"{p.path.name}: [{p.index}] {top}{truth}")
    if len(run.predictions) > args.show:
        print(f"... {len(run.predictions) - args.show} more predictions" + (f" in {out}" if out else
                                                                                 " (use --out FILE.csv)"))
    for path, reason in run.skipped:
        print(f"skipped (unreadable): {path}: {reason}")
    result = score(run, meta, num_outputs)
    if result is not None and result.num_scored:
        print(f"accuracy: {result.accuracy:.2%} ({result.num_scored} labelled images)")
        if len(result.classes) <= MAX_MATRIX_CLASSES:
            print("confusion matrix (rows: true, columns: predicted):")
            print(format_confusion(result))
        else:
            print(f"confusion matrix not printed: {len(result.classes)} classes involved "
                  f"(> {MAX_MATRIX_CLASSES}); the CSV holds every prediction")
    elif result is not None:
        print(f"accuracy: n/a (no folder name is a class of the model: {', '.join(result.unknown_labels[:5])})")
    print(f"images: {len(run.predictions)} predicted, {len(run.skipped)} skipped; throughput "
          f"{run.model_images_per_second:.1f} img/s model only, {run.end_to_end_images_per_second:.1f} img/s "
          f"with decoding (batch {args.batch_size})")
    print(report.line())
    if out is not None:
        write_csv(out, run, meta)
        print(f"wrote {out}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    configure_logging(args.verbose)
    return run_inference(args.model, args.images, args, out=args.out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("infer", get_args_parser(), _infer, argv)


if __name__ == "__main__":
    raise SystemExit(main())
