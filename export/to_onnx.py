"""Export a checkpoint (Part A CNN or Part B backbone) to ONNX, verify it against torch, optionally INT8/fp16.

    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx
    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx --quantize int8 --data-dir data/
    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx --infer-on data/val --labels-from-folders

Writes ``--out`` (fp32, dynamic batch, metadata: classes, preprocessing, source checkpoint sha256), and
with ``--quantize int8`` / ``--fp16`` also ``<out>.int8.onnx`` / ``<out>.fp16.onnx``. Every file is checked
with ``onnx.checker`` and compared with the torch model at batch sizes other than the export batch.

Images for the parity check: ``--parity-images DIR``, else ``--data-dir``'s ``val/``, else the generated
demo set's ``val/`` when the checkpoint has the demo (iNaturalist-12K) classes, else random inputs.
Calibration images for INT8: ``--calibration-images DIR``, else ``--data-dir``'s ``train/``, else the demo
set's ``train/`` (same condition); never noise. Exit codes (docs/cli.md): 0 ok, 2 bad input (missing or
foreign checkpoint, bad flags), 1 export failure, 3 parity beyond tolerance (the files are kept for
inspection, the numbers are printed).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from core.runfiles import writable_path
from core.train import load_checkpoint
from experiments.cli import UsageError, output_file, run_script
from export.infer import add_inference_args, configure_logging, run_inference
from export.onnx_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    SUPPORTED_OPSETS,
    ExportConfig,
    convert_fp16,
    export_checkpoint_file,
)
from export.ort_session import create_session
from export.parity import TOLERANCES, ParityReport, Tolerance, check_parity, load_images, random_inputs
from export.predict import collect_images
from export.quantize import CALIBRATION_METHODS, quantize_int8

log = logging.getLogger("export.to_onnx")
PARITY_FAILED = 3


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a best.pt / last.pt of ours")
    parser.add_argument("--out", type=output_file, default=None, help="output .onnx (default: the checkpoint's path "
                                                               "with .onnx)")
    exp = parser.add_argument_group("export")
    exp.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                     help=f"ONNX opset, {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    exp.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                     help="dynamo = torch.export (maintained, default); torchscript = the deprecated tracer")
    exp.add_argument("--export-batch", type=int, default=2, help="example batch traced (>= 2; the batch axis "
                                                                 "stays dynamic)")
    exp.add_argument("--quantize", choices=("none", "int8"), default="none",
                     help="int8: also write <out>.int8.onnx (onnxruntime static QDQ, per-channel)")
    exp.add_argument("--fp16", action="store_true", help="also write <out>.fp16.onnx (for GPUs; fp32 I/O)")
    data = parser.add_argument_group("images for parity and calibration")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="dataset root (train/, val/): val/ for parity, train/ for calibration")
    data.add_argument("--parity-images", type=Path, default=None, help="folder of images for the parity check")
    data.add_argument("--parity-count", type=int, default=32, help="images used by the parity check")
    data.add_argument("--calibration-images", type=Path, default=None, help="folder of INT8 calibration images")
    data.add_argument("--calibration-count", type=int, default=256, help="calibration images used")
    data.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                      help="how activation ranges are set from the calibration images")
    tol = parser.add_argument_group("parity tolerance (fp32 file; fp16/int8 use their own defaults)")
    tol.add_argument("--parity-batch-sizes", type=int, nargs="+", default=[1, 3, 8],
                     help="batch sizes compared with torch (must not include --export-batch)")
    tol.add_argument("--atol", type=float, default=TOLERANCES["fp32"].atol, help="max |logit diff|, absolute part")
    tol.add_argument("--rtol", type=float, default=TOLERANCES["fp32"].rtol,
                     help="max |logit diff|, part relative to max |logit|")
    tol.add_argument("--min-agreement", type=float, default=TOLERANCES["fp32"].min_agreement,
                     help="min top-1 agreement with torch (0..1)")
    inf = parser.add_argument_group("export then infer")
    inf.add_argument("--infer-on", type=Path, nargs="+", default=None,
                     help="after exporting, run export/infer.py on these images/folders")
    add_inference_args(parser)
    parser.add_argument("--verbose", action="store_true", help="debug logging, exporter messages included")
    return parser


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def sample_paths(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    """``count`` paths drawn without replacement (seeded), in a stable order; all when fewer."""
    if len(paths) <= count:
        return paths
    return sorted(random.Random(seed).sample(paths, count))


def _demo_split(class_names: Sequence[str], split: str) -> Path | None:
    from core.data import DEMO_CLASSES, ensure_demo_dataset

    if sorted(class_names) != sorted(DEMO_CLASSES):
        return None
    return ensure_demo_dataset() / split


def image_source(explicit: Path | None, data_dir: Path | None, split: str,
                 class_names: Sequence[str]) -> Path | None:
    """Where parity (``val``) / calibration (``train``) images come from; see the module docstring."""
    if explicit is not None:
        return explicit
    if data_dir is not None:
        folder = data_dir / split
        if not folder.is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir} has no {split}/ folder; expected <root>/train and "
                                    f"<root>/val, or pass --parity-images / --calibration-images")
        return folder
    folder = _demo_split(class_names, split)
    if folder is not None:
        log.info("using the generated demo set's %s/ (pass --data-dir for the real dataset)", split)
    return folder


def _parity(model, path: Path, inputs, source: str, args, tolerance: Tolerance, export_batch: int) -> ParityReport:
    session, _ = create_session(path, "cpu", intra_op_threads=args.threads)
    report = check_parity(model, session, inputs, batch_sizes=args.parity_batch_sizes, export_batch=export_batch,
                          tolerance=tolerance, source=source)
    print(f"{path.name}: {report.summary()}")
    for failure in report.failures():
        print(f"  {failure}")
    return report


def export_checkpoint(args: argparse.Namespace) -> int:
    """Everything after argument parsing; returns the exit code."""
    config = ExportConfig(opset=args.opset, export_batch=args.export_batch, exporter=args.exporter)
    fp32_tol = Tolerance(atol=args.atol, rtol=args.rtol, min_agreement=args.min_agreement)
    if config.export_batch in args.parity_batch_sizes:
        raise UsageError(f"--parity-batch-sizes {args.parity_batch_sizes} include the export batch "
                         f"{config.export_batch}; parity must use other batch sizes")
    out = args.out or args.checkpoint.with_suffix(".onnx")
    for path, wanted in ((out, True), (out.with_suffix(".int8.onnx"), args.quantize == "int8"),
                         (out.with_suffix(".fp16.onnx"), args.fp16)):
        if wanted:  # a directory, FIFO or device is refused before any export
            writable_path(path)
    calib = None
    if args.quantize == "int8":  # decided before exporting: a refusal must not cost an export
        calib = image_source(args.calibration_images, args.data_dir, "train",
                             load_checkpoint(args.checkpoint)["class_names"])
        if calib is None:
            raise UsageError("INT8 calibration needs real images from the training distribution: pass "
                             "--calibration-images DIR or --data-dir ROOT")
    model, path, written = export_checkpoint_file(args.checkpoint, out, config)
    prep, class_names = written.preprocessing, written.class_names
    print(f"wrote {path} ({_size(path)}, opset {written.opset}, {config.exporter} exporter, "
          f"{len(class_names)} classes, input [N,3,{prep.image_size},{prep.image_size}])")

    folder = image_source(args.parity_images, args.data_dir, "val", class_names)
    if folder is not None:
        files = sample_paths([item.path for item in collect_images([folder])], args.parity_count)
        inputs, source = load_images(files, prep), "images"
    else:
        log.warning("no parity images (give --parity-images or --data-dir): comparing on random inputs, where "
                    "top-1 agreement says little")
        inputs, source = random_inputs(args.parity_count, prep), "random"
    outputs = [(path, fp32_tol)]
    if calib is not None:
        files = sample_paths([item.path for item in collect_images([calib])], args.calibration_count)
        q_path, used = quantize_int8(path, path.with_suffix(".int8.onnx"), files, method=args.calibration_method)
        print(f"wrote {q_path} ({_size(q_path)}, INT8 QDQ per-channel, calibrated on {used} "
              f"images from {calib})")
        outputs.append((q_path, TOLERANCES["int8"]))
    if args.fp16:
        h_path = convert_fp16(path, path.with_suffix(".fp16.onnx"))
        print(f"wrote {h_path} ({_size(h_path)}, fp16 weights, fp32 input/output)")
        outputs.append((h_path, TOLERANCES["fp16"]))

    reports = [_parity(model, p, inputs, source, args, tol, config.export_batch) for p, tol in outputs]
    failed = [p for (p, _), r in zip(outputs, reports) if not r.passed]
    if failed:
        print(f"error: parity beyond tolerance for {', '.join(p.name for p in failed)} (files kept for "
              f"inspection)", file=sys.stderr)
        return PARITY_FAILED
    if args.infer_on:
        for p, _ in outputs:
            print(f"--- inference with {p.name} on {', '.join(map(str, args.infer_on))}")
            code = run_inference(p, args.infer_on, replace_ns(args, image_size=None, resize_size=None,
                                                              mean=None, std=None))
            if code:
                return code
    return 0


def replace_ns(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def _export(args: argparse.Namespace) -> int:
    configure_logging(args.verbose)
    return export_checkpoint(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("to_onnx", get_args_parser(), _export, argv)


if __name__ == "__main__":
    raise SystemExit(main())
