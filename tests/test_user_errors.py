"""The catalogue of user errors: every script, every bad input it can meet, run as a user runs it (a subprocess).

One table, one assertion per row: the exit code (2 = bad usage or input, 1 = runtime failure, 0 for the
rows that must only warn; docs/cli.md), no traceback, and a message that names what is wrong and says how
to fix it (two patterns per row: the *what* and the *fix*). The rows run in parallel subprocesses with a
shared set of inputs built once (tiny datasets, one tiny checkpoint and its ONNX export, bad files).

``python tests/test_user_errors.py`` prints the table with each row's exit code and first message line
(what the issue note and docs/cli.md show).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_tiny_imagefolder  # noqa: E402

PT, PS, PE, PB = ("experiments/partA_train.py", "experiments/partA_sweep.py", "experiments/partA_evaluate.py",
                  "experiments/partB_finetune.py")
PD, PC, TO, IN, BM = ("experiments/prepare_data.py", "experiments/partA_count.py", "export/to_onnx.py",
                      "export/infer.py", "experiments/benchmark.py")
WT = "experiments/wandb_trial.py"  # W&B's agent runs it; a user who starts it by hand is told what to run
TINY_TRAIN = ("--epochs", "1", "--image-size", "32", "--filters", "4", "--dense", "8", "--wandb-mode", "disabled",
              "--device", "cpu")


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    argv: tuple[str, ...]  # "{name}" fields are filled from the world (paths built once)
    code: int
    what: str  # regex: the message names what is wrong ...
    fix: str  # ... and says how to fix it
    never: tuple[str, ...] = ()  # text that must not appear anywhere in the output
    env: dict[str, str] = field(default_factory=dict)
    needs_no_cuda: bool = False  # the row asks for a GPU: only meaningful where there is none


BAD_CHECKPOINTS = {  # the same bad file must give the same exit code from every script that reads checkpoints
    "missing": (r"checkpoint \S+missing\.pt does not exist", r"train one with experiments/partA_train\.py"),
    "text": (r"notes\.pt is not a torch checkpoint file", r"pass a best\.pt / last\.pt written by"),
    "truncated": (r"truncated\.pt is not a torch checkpoint file \(truncated or damaged",
                  r"copy it again from where it was written"),
    "bare": (r"bare\.pt is a bare state dict .* no script can rebuild its model", r"pass a best\.pt / last\.pt"),
    "malicious": (r"evil\.pt holds pickled Python objects that could run code.*references posix\.system",
                  r"pass a best\.pt / last\.pt written by this project's training scripts"),
    "size": (r"size\.pt is inconsistent: its model takes 32 px images but its preprocessing says 64 px",
             r"pass a best\.pt / last\.pt"),
    "classes": (r"classes\.pt is inconsistent: its model has 3 outputs but it lists 2 class names",
                r"pass a best\.pt / last\.pt"),
}
NEVER_UNSAFE = ("weights_only=False", "will likely succeed", "safe_globals", "PWNED")

CASES: list[Case] = [
    # ---- partA_train
    Case("train-download-no-network", PT, ("--download", "--data-dir", "{tmp}/dl", "--out-dir", "{runs}"), 1,
         r"could not reach http://127\.0\.0\.1:\d+/nature_12K\.zip", r"To place the data by hand",
         env={"INAT_CNN_DATASET_URL": "{refused_url}"}),
    Case("train-data-dir-missing", PT, ("--data-dir", "{tmp}/nowhere", "--out-dir", "{runs}"), 2,
         r"dataset root \S+nowhere does not exist", r"expected <root>/train/<Class>"),
    Case("train-no-val-folder", PT, ("--data-dir", "{no_val}", "--out-dir", "{runs}"), 2,
         r"has no val/ folder", r"prepare_data\.py --download"),
    Case("train-classes-differ", PT, ("--data-dir", "{classes_differ}", "--out-dir", "{runs}"), 2,
         r"class folders differ.*only in train/: \['Fungi'\]", r"make both hold the same class folders"),
    Case("train-empty-class-folder", PT, ("--data-dir", "{empty_class}", "--out-dir", "{runs}"), 2,
         r"class folders without image files .*\['Fungi'\]", r"remove or fill them"),
    Case("train-class-all-corrupt", PT, ("--data-dir", "{corrupt_class}", "--out-dir", "{runs}", *TINY_TRAIN), 2,
         r"no decodable training images left for classes \['Fungi'\]", r"replace the unreadable files"),
    Case("train-one-class", PT, ("--data-dir", "{one_class}", "--out-dir", "{runs}", *TINY_TRAIN), 2,
         r"one_class/train has only 1 class folder \['Aves'\]: a classifier needs at least 2 classes",
         r"add class folders"),
    Case("train-max-per-class-one", PT, ("--data-dir", "{data}", "--out-dir", "{runs}", "--name", "cap1",
                                         "--max-per-class", "1", *TINY_TRAIN), 2,
         r"the validation split is empty: 3 training images \(max_per_class 1\) leave none at val_fraction 0\.2",
         r"raise --max-per-class to 2 or more \(or --val-fraction\), or add images"),
    Case("train-one-image-class-warns", PT, ("--data-dir", "{one_image}", "--out-dir", "{runs}", "--name", "one",
                                             *TINY_TRAIN), 0,
         r"class 'Fungi' \(label 2\) has a single training image", r"add images to \S+Fungi"),
    Case("train-resume-without-name", PT, ("--resume", "--out-dir", "{runs}"), 2,
         r"--resume needs --name", r"the folder under --out-dir"),
    Case("train-resume-missing-run", PT, ("--resume", "--name", "ghost", "--out-dir", "{runs}"), 2,
         r"ghost/config\.yaml does not exist", r"check --name/--out-dir \(or drop --resume"),
    Case("train-run-exists", PT, ("--name", "taken", "--out-dir", "{runs}"), 2,
         r"taken already holds a run", r"pass --resume to continue it or choose another --name"),
    Case("train-num-classes-mismatch", PT, ("--data-dir", "{data}", "--num-classes", "5", "--out-dir", "{runs}"), 2,
         r"--num-classes 5 but \S+ has 3 class folders", r"drop the flag"),
    Case("train-in-channels", PT, ("--in-channels", "1", "--out-dir", "{runs}"), 2,
         r"--in-channels 1: the loaders give RGB images", r"drop the flag"),
    Case("train-unknown-activation", PT, ("--activation", "swishy", "--out-dir", "{runs}"), 2,
         r"unknown activation 'swishy'", r"expected one of"),
    Case("train-organisation-not-5-blocks", PT, ("--organisation", "16,32,64", "--out-dir", "{runs}"), 2,
         r"needs 5 channel counts, got \[16, 32, 64\]", r"5 channel counts"),
    Case("train-image-too-small", PT, ("--image-size", "16", "--out-dir", "{runs}"), 2,
         r"block 5: the feature map is 1x1 before a 2x2 max-pool", r"raise image_size \(now 16x16\)"),
    Case("train-unknown-flag", PT, ("--learning-rate", "0.1"), 2,
         r"unrecognized arguments: --learning-rate", r"usage: partA_train\.py"),
    Case("train-name-outside-out-dir", PT, ("--name", "../x", "--out-dir", "{runs}"), 2,
         r"run name '\.\./x' must be letters, digits", r"choose another --name"),
    Case("train-out-dir-is-a-file", PT, ("--data-dir", "{data}", "--out-dir", "{tmp}/tiny.pt", "--name", "x",
                                         *TINY_TRAIN), 2,
         r"cannot make the run folder \S+tiny\.pt/x: \S+tiny\.pt is a file, not a folder",
         r"choose another --out-dir or --name"),
    Case("train-seed-overflow", PT, ("--seed", "100000000000000000000000", "--out-dir", "{runs}"), 2,
         r"argument --seed: 100000000000000000000000 is out of range", r"expected a 64-bit integer"),
    Case("train-lr-nan", PT, ("--lr", "nan", "--out-dir", "{runs}"), 2, r"argument --lr: nan is out of range",
         r"expected a finite number"),
    Case("train-batch-too-big", PT, ("--data-dir", "{data}", "--out-dir", "{runs}", "--name", "big", *TINY_TRAIN,
                                     "--image-size", "2048", "--batch-size", "65536"), 2,
         r"a training batch of 65536 images at 2048x2048 px keeps [\d,.]+ GB for the backward pass, but cpu "
         r"has [\d,.]+ GB in all", r"lower --batch-size or --image-size"),
    Case("train-image-size-huge", PT, ("--data-dir", "{data}", "--out-dir", "{runs}", "--name", "huge", *TINY_TRAIN,
                                       "--image-size", "100000"), 2,
         r"a training batch of 32 images at 100000x100000 px keeps [\d,.]+ GB for the backward pass",
         r"lower --batch-size or --image-size"),
    Case("partB-batch-too-big", PB, ("--arch", "resnet18", "--weights", "none", "--strategy", "full", "--data-dir",
                                     "{data}", "--out-dir", "{runs}", "--image-size", "2048", "--batch-size", "4096",
                                     "--device", "cpu", "--wandb-mode", "disabled"), 2,
         r"a training batch of 4096 images at 2048x2048 px keeps [\d,.]+ GB for the backward pass, but cpu has "
         r"[\d,.]+ GB in all", r"lower --batch-size or --image-size"),
    Case("partB-image-size-huge", PB, ("--arch", "resnet18", "--weights", "none", "--data-dir", "{data}", "--out-dir",
                                       "{runs}", "--image-size", "100000", "--epochs", "1", "--device", "cpu",
                                       "--wandb-mode", "disabled"), 2,
         r"15 images at \d+x\d+ px need [\d,.]+ GB of decoded pixels, but the decode cache \S+ has [\d,.]+ GB "
         r"free and this machine [\d,.]+ GB of RAM", r"lower --image-size or --max-per-class"),
    Case("train-storage-flag-masked", PT, ("--storage", "postgresql://me:hunter2@db:5432/x"), 2,
         r"unrecognized arguments: --storage postgresql://me:\*\*\*@db:5432/x", r"usage: partA_train\.py",
         never=("hunter2",)),
    Case("train-cuda-without-gpu", PT, ("--device", "cuda", "--out-dir", "{runs}"), 2,
         r"device 'cuda' requested but CUDA is not available", r"use --device cpu or auto", needs_no_cuda=True),
    # ---- partA_sweep
    Case("sweep-download-no-network", PS, ("--download", "--data-dir", "{tmp}/dl2", "--out-dir", "{runs}"), 1,
         r"could not reach http://127\.0\.0\.1:\d+/nature_12K\.zip", r"To place the data by hand",
         env={"INAT_CNN_DATASET_URL": "{refused_url}"}),
    Case("sweep-config-missing", PS, ("--config", "{tmp}/nope.yaml", "--out-dir", "{runs}"), 2,
         r"sweep config \S+nope\.yaml does not exist", r"pass --config with a W&B sweep YAML"),
    Case("sweep-config-not-yaml", PS, ("--config", "{broken_yaml}", "--out-dir", "{runs}"), 2,
         r"broken\.yaml is not valid YAML", r"fix the line it points at"),
    Case("sweep-config-unknown-key", PS, ("--config", "{unknown_key_yaml}", "--out-dir", "{runs}"), 2,
         r"unknown key\(s\) \['bogus'\]", r"expected some of \['method'"),
    Case("sweep-config-duplicate-key", PS, ("--config", "{duplicate_key_yaml}", "--out-dir", "{runs}"), 2,
         r"duplicate-key\.yaml is not valid YAML \(found duplicate key 'method' \(first on line 1\).*line 5",
         r"fix the line it points at"),
    Case("sweep-storage-password-with-at", PS, ("--storage", "postgresql://me:p@ss:w0rd@db:5432/x",
                                                "--out-dir", "{runs}"), 2,
         r"--storage 'postgresql://me:\*\*\*@db:5432/x' is not a database URL",
         r"a '@', ':' or '/' in the password must be written %40, %3A, %2F", never=("w0rd", "p@ss")),
    Case("sweep-config-unknown-program", PS, ("--config", "{bad_program_yaml}", "--out-dir", "{runs}"), 2,
         r"program 'train_something\.py' has no trial program", r"expected one of \['partA_train\.py'"),
    Case("sweep-data-dir-missing", PS, ("--data-dir", "{tmp}/nowhere", "--out-dir", "{runs}"), 2,
         r"--data-dir \S+nowhere does not exist", r"pass the folder holding train/ and val/ or add --download"),
    # ---- partA_evaluate: bad checkpoints (same table as to_onnx below), wrong data
    *[Case(f"evaluate-checkpoint-{kind}", PE, ("--checkpoint", f"{{ckpt_{kind}}}", "--wandb-mode", "disabled"), 2,
           what, fix, never=NEVER_UNSAFE) for kind, (what, fix) in BAD_CHECKPOINTS.items()],
    Case("evaluate-checkpoint-directory", PE, ("--checkpoint", "{no_images}", "--wandb-mode", "disabled"), 2,
         r"no_images is a directory, not a file", r"pass a best\.pt / last\.pt written by"),
    Case("evaluate-other-classes", PE, ("--checkpoint", "{ckpt}", "--data-dir", "{other_classes}",
                                        "--wandb-mode", "disabled", "--device", "cpu"), 2,
         r"trained on classes \['Amphibia', 'Aves', 'Fungi'\]", r"pass the --data-dir the model was trained on"),
    Case("evaluate-per-class-zero", PE, ("--checkpoint", "{ckpt}", "--per-class", "0"), 2,
         r"argument --per-class: 0 is out of range", r"expected a value in \[1,inf\)"),
    Case("evaluate-per-class-capped", PE, ("--checkpoint", "{ckpt}", "--data-dir", "{data}", "--per-class", "100000",
                                           "--out-dir", "{tmp}/eval-capped", "--wandb-mode", "disabled",
                                           "--device", "cpu"), 0,
         r"--per-class 100000: the largest class has 2 test images", r"the grid shows 2 per class"),
    # ---- partB_finetune
    Case("partB-unknown-arch", PB, ("--arch", "vgg17", "--out-dir", "{runs}"), 2,
         r"unknown arch 'vgg17'", r"expected one of \[.*'vgg16'"),
    Case("partB-partA-run-without-compare", PB, ("--partA-run", "{runs}", "--out-dir", "{runs}"), 2,
         r"--partA-run is only used with --compare", r"add --compare or drop --partA-run"),
    Case("partB-weights-and-weights-file", PB, ("--weights", "DEFAULT", "--weights-file", "{ckpt}",
                                                "--out-dir", "{runs}"), 2,
         r"weights='DEFAULT' and weights_file=\S+ both given", r"pass one"),
    Case("partB-weights-file-missing", PB, ("--arch", "mobilenet_v2", "--weights-file", "{tmp}/none.pth",
                                            "--data-dir", "{data}", "--out-dir", "{runs}", "--device", "cpu"), 2,
         r"weights file not found: \S+none\.pth", r"check the path, or drop --weights-file"),
    *[Case(f"partB-weights-file-{kind}", PB, ("--arch", "mobilenet_v2", "--weights-file", f"{{{file}}}",
                                              "--data-dir", "{data}", "--out-dir", "{runs}", "--device", "cpu"), 2,
           what, r"pass a state_dict of torchvision mobilenet_v2 \(torch\.save\(model\.state_dict\(\), path\)\)",
           never=NEVER_UNSAFE) for kind, file, what in (
        ("onnx", "garbage_onnx", r"garbage\.onnx is not a torch checkpoint file \(it starts with b'<htm'"),
        ("pickle", "ckpt_malicious", r"evil\.pt holds pickled Python objects that could run code"),
        ("directory", "no_images", r"no_images is a directory, not a file"))],
    Case("partB-k-too-large", PB, ("--arch", "resnet18", "--weights", "none", "--strategy", "top-k", "--k", "9",
                                   "--data-dir", "{data}", "--out-dir", "{runs}", "--device", "cpu"), 2,
         r"k=9 but resnet has only 5 blocks", r"use a smaller k or --strategy full"),
    # ---- prepare_data
    Case("prepare-nothing-to-do", PD, (), 2, r"nothing to do", r"pass --download, --demo and/or --check"),
    Case("prepare-download-and-demo", PD, ("--download", "--demo"), 2,
         r"--download and --demo are alternatives", r"pick one"),
    Case("prepare-check-without-data-dir", PD, ("--check",), 2, r"--check needs --data-dir", r"--data-dir ROOT"),
    Case("prepare-check-missing-root", PD, ("--check", "--data-dir", "{tmp}/nowhere"), 2,
         r"dataset root \S+nowhere does not exist", r"expected <root>/train/<Class>"),
    Case("prepare-check-classes-differ", PD, ("--check", "--data-dir", "{classes_differ}"), 2,
         r"class folders differ", r"make both hold the same class folders"),
    Case("prepare-check-class-all-corrupt", PD, ("--check", "--data-dir", "{corrupt_class}"), 2,
         r"not usable for training: no decodable images in train/ for classes \['Fungi'\]",
         r"add decodable images to those classes"),
    Case("prepare-check-one-class", PD, ("--check", "--data-dir", "{one_class}"), 2,
         r"one_class/train has only 1 class folder \['Aves'\]: a classifier needs at least 2 classes",
         r"add class folders"),
    Case("prepare-check-one-image-warns", PD, ("--check", "--data-dir", "{one_image}"), 0,
         r"WARNING: classes \['Fungi'\] have a single decodable training image", r"add images to them"),
    Case("prepare-check-duplicates-warns", PD, ("--check", "--data-dir", "{duplicates}"), 0,
         r"WARNING: byte-identical copies of train/ images in val/ \(the test set\): 2 \(e\.g\. \S+aves_000\.jpg = "
         r"\S+val/Aves/copy\.jpg", r"remove them from one of the two"),
    Case("prepare-download-no-network", PD, ("--download", "--data-dir", "{tmp}/dl3", "--timeout", "3"), 1,
         r"could not reach http://127\.0\.0\.1:\d+/nature_12K\.zip", r"To place the data by hand",
         env={"INAT_CNN_DATASET_URL": "{refused_url}"}),
    # ---- partA_count
    Case("count-organisation-typo", PC, ("--organisation", "dubble"), 2, r"unknown filter organisation 'dubble'",
         r"expected one of \['same', 'double', 'half'\] or a list of 5"),
    Case("count-organisation-not-ints", PC, ("--organisation", "16,x,64,64,128"), 2,
         r"--organisation '16,x,64,64,128'", r"5 comma-separated integers"),
    Case("count-image-too-small", PC, ("--image-size", "8"), 2, r"block 4: the feature map is 1x1",
         r"raise image_size \(now 8x8\)"),
    Case("count-dropout-out-of-range", PC, ("--dropout", "1.5"), 2, r"dropout.*1\.5", r"\[0,1\)"),
    # ---- to_onnx: the same bad checkpoints, bad flags
    *[Case(f"export-checkpoint-{kind}", TO, ("--checkpoint", f"{{ckpt_{kind}}}", "--out", "{tmp}/x.onnx"), 2,
           what, fix, never=NEVER_UNSAFE) for kind, (what, fix) in BAD_CHECKPOINTS.items()],
    Case("export-checkpoint-directory", TO, ("--checkpoint", "{no_images}", "--out", "{tmp}/d.onnx"), 2,
         r"no_images is a directory, not a file", r"pass a best\.pt / last\.pt written by"),
    Case("export-fp16-out-is-a-directory", TO, ("--checkpoint", "{ckpt}", "--out", "{tmp}/w.onnx", "--fp16"), 2,
         r"w\.fp16\.onnx is a directory, not a file", r"pass a file path"),
    Case("export-parity-batch-is-export-batch", TO, ("--checkpoint", "{ckpt}", "--parity-batch-sizes", "1", "2"), 2,
         r"--parity-batch-sizes \[1, 2\] include the export batch 2", r"parity must use other batch sizes"),
    Case("export-int8-without-images", TO, ("--checkpoint", "{ckpt}", "--quantize", "int8",
                                            "--out", "{tmp}/y.onnx"), 2,
         r"INT8 calibration needs real images", r"pass --calibration-images DIR or --data-dir ROOT"),
    Case("export-opset-unsupported", TO, ("--checkpoint", "{ckpt}", "--opset", "12", "--out", "{tmp}/z.onnx"), 2,
         r"argument --opset: invalid choice: 12", r"choose from 17, 18, 19, 20, 21, 22, 23"),
    Case("export-batch-one", TO, ("--checkpoint", "{ckpt}", "--export-batch", "1", "--out", "{tmp}/z.onnx"), 2,
         r"export_batch must be an int >= 2", r"specialises a batch of 1"),
    # ---- infer
    Case("infer-given-a-pt", IN, ("{ckpt}", "{data}/val"), 2,
         r"tiny\.pt is a PyTorch checkpoint, not an ONNX model", r"export it first with python export/to_onnx\.py"),
    Case("infer-model-missing", IN, ("{tmp}/missing.onnx", "{data}/val"), 2,
         r"ONNX model not found: \S+missing\.onnx", r"export one with export/to_onnx\.py"),
    Case("infer-model-is-a-directory", IN, ("{no_images}", "{data}/val"), 2,
         r"no_images is a directory, not an ONNX model", r"pass the \.onnx file inside it"),
    Case("infer-image-is-a-fifo", IN, ("{onnx}", "{fifo}"), 2,
         r"pipe\.jpg is not a regular file or folder \(a FIFO, socket or device\)", r"pass image files"),
    Case("infer-model-garbage", IN, ("{garbage_onnx}", "{data}/val"), 2,
         r"garbage\.onnx is not an ONNX model onnxruntime can load", r"pass an \.onnx file written by"),
    Case("infer-image-missing", IN, ("{onnx}", "{tmp}/nope.jpg"), 2,
          r"no such image file or folder: \S+nope\.jpg", r"check the path"),
    Case("infer-folder-without-images", IN, ("{onnx}", "{no_images}"), 2, r"no_images holds no image files",
         r"pass image files or a folder that holds some"),
    Case("infer-only-broken-images", IN, ("{onnx}", "{only_broken}"), 2,
         r"none of the 1 images could be decoded \(x\.jpg", r"pass JPEG/PNG/\.\.\. files"),
    Case("infer-out-is-a-device", IN, ("{onnx}", "{data}/val", "--out", "/dev/full"), 2,
         r"argument --out: /dev/full is not a regular file \(a character device\)",
         r"pass the path of a regular file or of a new one"),
    Case("infer-out-is-a-directory", IN, ("{onnx}", "{data}/val", "--out", "{tmp}"), 2,
         r"argument --out: \S+ is a directory, not a file", r"pass a file path"),
    Case("infer-top-k-zero", IN, ("{onnx}", "{data}/val", "--top-k", "0"), 2, r"argument --top-k: 0 is out of range",
         r"expected a value in \[1,inf\)"),
    Case("infer-labels-from-flat-folder", IN, ("{onnx}", "{flat_images}", "--labels-from-folders"), 2,
         r"--labels-from-folders needs class sub-folders", r"drop --labels-from-folders or sort the images"),
    Case("infer-foreign-model-without-flags", IN, ("{foreign_onnx}", "{data}/val"), 2,
         r"foreign\.onnx has no inat-cnn metadata", r"give it explicitly: --image-size S .*--mean R G B --std"),
    Case("infer-provider-cuda-without-gpu", IN, ("{onnx}", "{data}/val", "--provider", "cuda"), 2,
         r"--provider cuda was requested but onnxruntime runs CPUExecutionProvider",
         r"use --provider auto to fall back to the CPU, or --provider cpu", needs_no_cuda=True),
    # ---- benchmark
    Case("benchmark-repeats-zero", BM, ("train", "--repeats", "0", "--out-dir", "{tmp}/bench"), 2,
         r"argument --repeats: 0 is out of range", r"expected a value in \[1,inf\)"),
    Case("benchmark-unknown-device", BM, ("train", "--device", "tpu", "--out-dir", "{tmp}/bench"), 2,
         r"--device: unknown device 'tpu'", r"expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    Case("benchmark-unknown-section", BM, ("everything",), 2, r"invalid choice: 'everything'", r"choose from"),
    # ---- wandb_trial (the program of a --backend wandb sweep)
    Case("wandb-trial-by-hand", WT, (), 2, r"INAT_CNN_WANDB_AGENT is not set",
         r"start agents with that command instead of a bare `wandb agent`"),
]


# ------------------------------------------------------------------------------------------ the world
def _refused_url() -> str:
    """A loopback URL nobody listens on: the connection is refused at once, as without a network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nature_12K.zip"


def _dataset(root: Path, **kw) -> Path:
    return make_tiny_imagefolder(root, train_per_class=kw.pop("train_per_class", 5),
                                 test_per_class=kw.pop("test_per_class", 2), **kw)


def build_world(tmp: Path) -> dict[str, str]:
    """Every input a row refers to, built once: datasets (good and bad), checkpoints, ONNX files."""
    import shutil

    import onnx
    import torch

    from core.model import build_cnn, make_spec
    from core.train import make_payload, save_checkpoint
    from export.onnx_export import ExportConfig, export_checkpoint_file

    w: dict[str, Path | str] = {"tmp": tmp, "runs": tmp / "runs", "refused_url": _refused_url()}
    w["data"] = _dataset(tmp / "data")
    w["no_val"] = _dataset(tmp / "no_val")
    shutil.rmtree(tmp / "no_val" / "val")
    w["classes_differ"] = _dataset(tmp / "classes_differ")
    shutil.rmtree(tmp / "classes_differ" / "val" / "Fungi")
    w["empty_class"] = _dataset(tmp / "empty_class")
    for f in (tmp / "empty_class" / "train" / "Fungi").iterdir():
        f.unlink()
    w["corrupt_class"] = _dataset(tmp / "corrupt_class")
    for f in (tmp / "corrupt_class" / "train" / "Fungi").iterdir():
        f.write_bytes(b"not a jpeg at all")
    w["one_image"] = _dataset(tmp / "one_image")
    for f in sorted((tmp / "one_image" / "train" / "Fungi").iterdir())[1:]:
        f.unlink()
    w["duplicates"] = _dataset(tmp / "duplicates")
    for name, cls in (("copy.jpg", "Aves"), ("copy2.jpg", "Fungi")):
        dup = tmp / "duplicates"
        shutil.copy(sorted((dup / "train" / cls).glob("*.jpg"))[0], dup / "val" / cls / name)
    w["one_class"] = make_tiny_imagefolder(tmp / "one_class", classes=("Aves",), train_per_class=4, test_per_class=2)
    w["other_classes"] = make_tiny_imagefolder(tmp / "other", classes=("Insecta", "Mammalia"), train_per_class=3,
                                               test_per_class=2)
    (tmp / "runs" / "taken").mkdir(parents=True)
    (tmp / "runs" / "taken" / "last.pt").write_bytes(b"an earlier run")
    for name, file, text in (
            ("broken_yaml", "broken.yaml", "method: [random\nparameters: {"),
            ("unknown_key_yaml", "unknown-key.yaml",
             "method: random\nbogus: 1\nparameters:\n  lr:\n    values: [0.1]\n"),
            ("duplicate_key_yaml", "duplicate-key.yaml",
             "method: random\nparameters:\n  lr:\n    values: [0.1]\nmethod: grid\n"),
            ("bad_program_yaml", "bad-program.yaml",
             "program: train_something.py\nmethod: random\nparameters:\n  lr:\n    values: [0.1]\n")):
        w[name] = tmp / file
        Path(w[name]).write_text(text)

    torch.manual_seed(0)
    spec = make_spec(filters=4, image_size=32, num_classes=3, dense_units=8)
    model = build_cnn(spec)
    payload = make_payload(model, model_desc={"kind": "cnn", "spec": spec.to_dict()},
                           class_names=["Amphibia", "Aves", "Fungi"],
                           preprocessing={"image_size": 32, "resize_size": None, "mean": (0.5,) * 3,
                                          "std": (0.25,) * 3}, train_config={}, metrics={}, epoch=1)
    w["ckpt"] = tmp / "tiny.pt"
    save_checkpoint(w["ckpt"], payload)
    for kind, change in (("size", {"preprocessing": {**payload["preprocessing"], "image_size": 64}}),
                         ("classes", {"class_names": ["Amphibia", "Aves"]})):
        w[f"ckpt_{kind}"] = tmp / f"{kind}.pt"
        save_checkpoint(w[f"ckpt_{kind}"], {**payload, **change})
    w["ckpt_missing"] = tmp / "missing.pt"
    w["ckpt_text"] = tmp / "notes.pt"
    Path(w["ckpt_text"]).write_text("these are my notes, not a model\n")
    w["ckpt_truncated"] = tmp / "truncated.pt"
    Path(w["ckpt_truncated"]).write_bytes(Path(w["ckpt"]).read_bytes()[:300])
    w["ckpt_bare"] = tmp / "bare.pt"
    torch.save(model.state_dict(), w["ckpt_bare"])
    w["ckpt_malicious"] = tmp / "evil.pt"
    marker = tmp / "PWNED"
    Path(w["ckpt_malicious"]).write_bytes(_malicious_pickle(f"touch {marker}"))
    w["pwned_marker"] = marker

    w["onnx"] = tmp / "tiny.onnx"
    export_checkpoint_file(w["ckpt"], w["onnx"], ExportConfig(exporter="torchscript"))
    proto = onnx.load(str(w["onnx"]))
    del proto.metadata_props[:]  # what a model exported by someone else looks like
    w["foreign_onnx"] = tmp / "foreign.onnx"
    onnx.save(proto, str(w["foreign_onnx"]))
    w["garbage_onnx"] = tmp / "garbage.onnx"
    Path(w["garbage_onnx"]).write_text("<html>404 Not Found</html>")
    w["no_images"] = tmp / "no_images"
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "readme.txt").write_text("nothing to see")
    w["only_broken"] = tmp / "only_broken"
    (tmp / "only_broken").mkdir()
    (tmp / "only_broken" / "x.jpg").write_bytes(b"nope")
    (tmp / "w.fp16.onnx").mkdir()
    w["fifo"] = tmp / "pipe.jpg"
    os.mkfifo(w["fifo"])
    w["flat_images"] = tmp / "flat_images"
    (tmp / "flat_images").mkdir()
    shutil.copy(next((tmp / "data" / "val" / "Aves").glob("*.jpg")), tmp / "flat_images" / "a.jpg")
    return {k: str(v) for k, v in w.items()}


def _malicious_pickle(command: str) -> bytes:
    """A torch-style zip whose pickle calls ``os.system(command)`` when unpickled by the unsafe loader."""
    import io

    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (command,))

    buf = io.BytesIO()
    torch.save({"format": "inat-cnn/1", "state_dict": Evil()}, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def first_message_line(self, case: Case) -> str:
        """The error line (exit 1/2), or for a row that must only warn, the first line saying what is wrong."""
        import re

        lines = [ln for ln in self.err.splitlines() if "error:" in ln] if self.code else \
            [ln for ln in self.text.splitlines() if re.search(case.what, ln)]
        return (lines or [""])[0].strip()


def subprocess_env(world: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INAT_CNN_DEBUG", "INAT_CNN_DATASET_URL")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), WANDB_MODE="offline",
               WANDB_SILENT="true", MPLBACKEND="Agg", OMP_NUM_THREADS="1", INAT_CNN_CACHE=world["tmp"] + "/cache",
               TORCH_HOME=world["tmp"] + "/torch-home", PYTHONWARNINGS="ignore")
    env.update({k: v.format(**world) for k, v in (extra or {}).items()})
    return env


def run_case(case: Case, world: dict[str, str], *extra_argv: str, env: dict[str, str] | None = None) -> Outcome:
    argv = [a.format(**world) for a in case.argv] + list(extra_argv)
    proc = subprocess.run([sys.executable, str(ROOT / case.script), *argv], capture_output=True, text=True,
                          cwd=world["tmp"], env=subprocess_env(world, {**case.env, **(env or {})}), timeout=600)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    return build_world(tmp_path_factory.mktemp("user-errors"))


@pytest.fixture(scope="module")
def outcomes(world, request) -> dict[str, Outcome]:
    """Every selected row, run in parallel subprocesses (they are independent and mostly wait on imports)."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [c for c in CASES if c.id in selected]
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip([c.id for c in cases], pool.map(lambda c: run_case(c, world), cases)))


def test_every_script_is_in_the_catalogue():
    scripts = {c.script for c in CASES}
    every = {PT, PS, PE, PB, PD, PC, TO, IN, BM, WT}
    on_disk = {p.relative_to(ROOT).as_posix() for folder in ("experiments", "export")
               for p in (ROOT / folder).glob("*.py") if 'if __name__ == "__main__"' in p.read_text()}
    assert scripts == every == on_disk, (sorted(on_disk - scripts), sorted(scripts - on_disk))
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error(case: Case, outcomes, world):
    if case.needs_no_cuda and _cuda_present():
        pytest.skip("a GPU is present: the no-GPU message cannot be produced here")
    got = outcomes[case.id]
    where = f"{case.script} {' '.join(case.argv)}\n--- stdout\n{got.out[-3000:]}\n--- stderr\n{got.err[-3000:]}"
    assert got.code == case.code, f"exit {got.code}, expected {case.code}\n{where}"
    assert "Traceback" not in got.text, f"a traceback reached the user\n{where}"
    import re

    shown = got.err if case.code else got.text
    assert re.search(case.what, shown, re.S), f"the message must say what is wrong ({case.what!r})\n{where}"
    assert re.search(case.fix, shown, re.S), f"the message must say how to fix it ({case.fix!r})\n{where}"
    if case.code:
        lines = [ln for ln in got.err.splitlines() if "error:" in ln]
        assert lines, f"no 'error:' line\n{where}"
        assert re.search(case.what, lines[-1]) or re.search(case.what, got.err), where
    for text in case.never:
        assert text not in got.text, f"{text!r} must never be shown\n{where}"
    assert not Path(world["pwned_marker"]).exists(), "a refused pickle must never run its code"


@pytest.mark.slow
def test_the_same_bad_checkpoint_gives_the_same_exit_code_everywhere(outcomes):
    for kind in BAD_CHECKPOINTS:
        a, b = f"evaluate-checkpoint-{kind}", f"export-checkpoint-{kind}"
        if a in outcomes and b in outcomes:
            assert outcomes[a].code == outcomes[b].code == 2, (kind, outcomes[a].code, outcomes[b].code)


@pytest.mark.slow
def test_debug_flag_and_environment_variable_show_the_traceback(world):
    case = next(c for c in CASES if c.id == "infer-given-a-pt")
    plain = run_case(case, world)
    flagged = run_case(case, world, "--debug")
    by_env = run_case(case, world, env={"INAT_CNN_DEBUG": "1"})
    assert "Traceback" not in plain.err and plain.code == 2
    for got in (flagged, by_env):
        assert got.code == plain.code, "--debug changes what is shown, not the exit code"
        assert "Traceback (most recent call last)" in got.err and "_refuse_torch_file" in got.err, got.err
        assert got.err.rstrip().splitlines()[-1] == plain.err.rstrip().splitlines()[-1], "same one-line message last"


def get_args_parser():
    """``python tests/test_user_errors.py``: no flags; it prints the catalogue as a Markdown table."""
    import argparse

    return argparse.ArgumentParser(description="Run every catalogue row and print the table of docs/cli.md.")


if __name__ == "__main__":  # the table for the issue note and docs/cli.md
    import tempfile

    get_args_parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        built = build_world(Path(tmp_dir))
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda c: (c, run_case(c, built)), CASES))
    print("| case | script | exit | first line of the message |\n| --- | --- | --- | --- |")
    for c, o in results:  # a backtick in a message would open a code span in docs/cli.md
        line = o.first_message_line(c).replace(tmp_dir, "<tmp>").replace("|", "\\|").replace("`", "'")
        print(f"| {c.id} | {Path(c.script).name} | {o.code} | {line} |")
