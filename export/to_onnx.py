"""Export a checkpoint (Part A CNN or Part B backbone) to ONNX, verify it against torch, optionally INT8/fp16.

    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx
    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx --quantize int8 --data-dir data/
    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx --infer-on data/val --labels-from-folders
    python export/to_onnx.py --checkpoint runs/a/best.pt --out model.onnx --target ort opencv --web page/

Writes ``--out`` (fp32, dynamic batch, metadata), and with ``--quantize int8`` / ``--fp16`` also
``<out>.int8.onnx`` / ``<out>.fp16.onnx``; every file is checked and compared with torch at other batch sizes in
each runtime of ``--target``; ``--web DIR`` writes an offline page that classifies photos in the browser. Parity
and calibration images come from real folders (never noise for calibration). Exit codes (docs/cli.md): 0 ok,
2 bad input, 1 export failure, 3 parity beyond tolerance (the files are kept, the numbers printed).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from core.cli import UsageError, output_file, run_script
from core.runfiles import writable_path
from core.train import load_checkpoint
from export.consumers import TARGETS, ConsumerError, opencv_runner, opencv_version, web_runner
from export.infer import add_inference_args, configure_logging, run_inference
from export.onnx_export import (
    DEFAULT_OPSET,
    EXPORTERS,
    SUPPORTED_OPSETS,
    ExportConfig,
    ExportError,
    convert_fp16,
    export_checkpoint_file,
)
from export.ort_session import create_session
from export.parity import TOLERANCES, Tolerance, check_parity, load_images, random_inputs
from export.predict import collect_images
from export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION, accuracy_loss, held_out_split, quantize_int8
from export.webpage import ort_web_package, write_web_page

log = logging.getLogger("export.to_onnx")
PARITY_FAILED = 3


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a best.pt / last.pt of ours")
    parser.add_argument("--out", type=output_file, default=None, help="output .onnx (default: the checkpoint's path "
                                                               "with .onnx)")
    exp = parser.add_argument_group("export")
    exp.add_argument("--opset", type=int, default=DEFAULT_OPSET, choices=SUPPORTED_OPSETS, metavar="OPSET",
                     help=f"ONNX opset, {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    exp.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                     help="dynamo = torch.export (maintained, default); torchscript = the deprecated tracer")
    exp.add_argument("--export-batch", type=int, default=2, help="example batch traced (>= 2; the batch axis "
                                                                 "stays dynamic)")
    exp.add_argument("--quantize", choices=("none", "int8"), default="none",
                     help="int8: also write <out>.int8.onnx (onnxruntime static QDQ, per-channel)")
    exp.add_argument("--max-int8-loss", type=float, default=0.5, metavar="POINTS",
                     help="refuse to write the INT8 model (exit 1) when its top-1 accuracy on the held-out part of "
                          "the calibration images is more than POINTS percentage points below fp32's")
    exp.add_argument("--fp16", action="store_true", help="also write <out>.fp16.onnx (for GPUs; fp32 I/O)")
    exp.add_argument("--target", choices=TARGETS, nargs="+", default=["ort"],
                     help="runtimes every written file is checked in against torch: ort = onnxruntime CPU, "
                          "opencv = OpenCV's DNN module, web = onnxruntime-web (wasm, under Node.js)")
    exp.add_argument("--web", type=Path, default=None, metavar="DIR",
                     help="also write an offline page classifying photos in the browser into DIR (serve it: "
                          "python -m http.server -d DIR -b 127.0.0.1); adds the web target")
    data = parser.add_argument_group("images for parity and calibration")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="dataset root (train/, val/): val/ for parity, train/ for calibration")
    data.add_argument("--parity-images", type=Path, default=None, help="folder of images for the parity check")
    data.add_argument("--parity-count", type=int, default=32, help="images used by the parity check")
    data.add_argument("--calibration-images", type=Path, default=None, help="folder of INT8 calibration images")
    data.add_argument("--calibration-count", type=int, default=256, help="calibration images used")
    data.add_argument("--holdout-count", type=int, default=200,
                      help="labelled calibration images (DIR/<Class>/*) kept out of calibration to measure INT8's "
                           "accuracy loss (at most a third of them)")
    data.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
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


def _parity(model, path: Path, target: str, inputs, source: str, args, tolerance: Tolerance,
            export_batch: int) -> bool:
    """Parity of ``path`` run by ``target`` against torch; prints the summary, returns whether it passed."""
    if target == "opencv":
        runner = opencv_runner(path)
    elif target == "web":
        runner = web_runner(path, ort_web_package())
    else:
        runner = create_session(path, "cpu", intra_op_threads=args.threads)[0]
    try:
        report = check_parity(model, runner, inputs, batch_sizes=args.parity_batch_sizes,
                              export_batch=export_batch, tolerance=tolerance, source=source)
    except ConsumerError as exc:
        print(f"{path.name} [{target}]: FAIL: {exc}")
        return False
    print(f"{path.name} [{target}]: {report.summary()}")
    for failure in report.failures():
        print(f"  {failure}")
    return report.passed


def _quantize(path: Path, calib: Path, class_names: Sequence[str], args: argparse.Namespace) -> Path:
    """INT8 next to ``path``, written only when it loses at most ``--max-int8-loss`` points on held-out images."""
    candidates, held = held_out_split([item.path for item in collect_images([calib])], class_names,
                                      args.holdout_count)
    q_path = path.with_suffix(".int8.onnx")
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as tmp:
        trial, used = quantize_int8(path, Path(tmp) / q_path.name, sample_paths(candidates, args.calibration_count),
                                    method=args.calibration_method)
        loss = accuracy_loss(path, trial, held, threads=args.threads)
        print(f"INT8 ({args.calibration_method}, {used} calibration images from {calib}) on {loss.num_images} "
              f"held-out images: top-1 fp32 {loss.fp32_acc:.2%}, int8 {loss.int8_acc:.2%}, loss "
              f"{loss.points:.2f} points (limit {args.max_int8_loss:g}; one image is {100 / loss.num_images:.2g})")
        if loss.points > args.max_int8_loss:
            raise ExportError(f"refusing to write {q_path.name}: INT8 loses {loss.points:.2f} points of top-1 "
                              f"accuracy on {loss.num_images} held-out images (> --max-int8-loss "
                              f"{args.max_int8_loss:g}); try --calibration-method minmax, another "
                              f"--calibration-count, or serve the fp32 model")
        os.replace(trial, q_path)
    print(f"wrote {q_path} ({_size(q_path)}, INT8 QDQ per-channel)")
    return q_path


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
    targets = list(dict.fromkeys([*args.target, *(["web"] if args.web else [])]))
    if "opencv" in targets:  # runtimes checked before exporting, like the calibration images below
        log.info("OpenCV %s", opencv_version())
    if "web" in targets:
        log.info("onnxruntime-web from %s", ort_web_package())
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
        outputs.append((_quantize(path, calib, class_names, args), TOLERANCES["int8"]))
    if args.fp16:
        h_path = convert_fp16(path, path.with_suffix(".fp16.onnx"))
        print(f"wrote {h_path} ({_size(h_path)}, fp16 weights, fp32 input/output)")
        outputs.append((h_path, TOLERANCES["fp16"]))

    failed = [f"{p.name} [{t}]" for p, tol in outputs for t in targets
              if not _parity(model, p, t, inputs, source, args, tol, config.export_batch)]
    if failed:
        print(f"error: parity beyond tolerance or not runnable: {', '.join(failed)} (files kept for "
              f"inspection)", file=sys.stderr)
        return PARITY_FAILED
    if args.web:
        page = write_web_page(path, args.web, ort_web_package())
        print(f"wrote {page} (offline page, onnxruntime-web; serve it: python -m http.server -d {args.web} "
              f"-b 127.0.0.1)")
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
