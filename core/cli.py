"""How every script ends: one exit-code convention, one-line error messages, tracebacks only on request.

A user who mistypes a path reads one line naming the path and the fix, from any script, with the same exit
status (docs/cli.md): 0 success, 1 runtime failure, 2 bad usage or input, 130 interrupted. The exception's
*type* decides the code (:data:`USAGE_ERRORS`, :data:`RUNTIME_ERRORS`; a subclass follows its base), so core
code raises what it means and never thinks about exit codes. ``--debug`` or ``INAT_CNN_DEBUG=1`` prints the
traceback first; the code stays the same.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.runfiles import mask_secrets, read_yaml, writable_path

__all__ = ["DEBUG_ENV", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "RUN_WRITERS", "UsageError",
           "check_run_folder", "classify", "configure_logging", "output_file", "run_script"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "INAT_CNN_DEBUG"


class UsageError(ValueError):
    """A flag combination that cannot work; the message names the flags and the fix (exit 2)."""


# Checked in order, most specific first: the first matching type decides. Names of types that live in
# optional or heavy modules are matched by name (no import just to classify an error).
RUNTIME_ERRORS: tuple[str, ...] = (
    "DownloadError",  # network: the URL was fine, the transfer failed
    "TrainingError",  # e.g. a NaN loss
    "ExportError",  # the exporter produced something we cannot ship
    "WandbUnavailableError",  # W&B's server unreachable or failing
    "StorageError",  # the sweep's database cannot be reached or refuses us
)
USAGE_ERRORS: tuple[type[BaseException] | str, ...] = (
    UsageError,
    "CheckpointError",  # not a checkpoint of ours / a different model: the file must change
    "MissingMetadataError",  # a foreign ONNX file without preprocessing flags
    "ProviderUnavailableError",  # --provider cuda without a usable GPU: change the flag
    "WeightsUnavailableError",  # pretrained weights neither cached nor downloadable: place the file
    "ConsumerUnavailableError",  # to_onnx --target/--web: OpenCV, Node.js or npm not installed here
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    ValueError,  # a bad value: our code raises it with the value and the valid set
)


RUN_WRITERS = {"partA_train.py": "spec", "partB_finetune.py": "arch"}  # script -> a key only its config.yaml has


def check_run_folder(run_dir: Path, script: str, resume: bool) -> dict[str, Any] | None:
    """Before a script writes ``run_dir``: its ``config.yaml`` (None when there is none), refused (exit 2, nothing
    written) when another script wrote it or it is damaged, and a folder holding a run refused without --resume."""
    from core.train import check_run_start  # torch loads only for scripts that write run folders

    check_run_start(run_dir, resume)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return None
    doc = read_yaml(saved)
    writer = next((name for name, key in RUN_WRITERS.items() if isinstance(doc, dict) and key in doc), None)
    if writer is None:
        raise ValueError(f"{saved} is not a run's config.yaml (expected the mapping experiments/{script} writes, "
                         f"with a {RUN_WRITERS[script]!r} key); restore it, or choose another --name")
    if writer != script:
        raise ValueError(f"{run_dir} is a run folder of experiments/{writer}, not of {script}; continue it with "
                         f"experiments/{writer}, or choose another --name")
    return doc


def output_file(text: str) -> Path:
    """argparse ``type`` of an output file flag: refused up front (exit 2) when the path exists and is a directory,
    FIFO, socket or device; a symlink is written through."""
    try:
        writable_path(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return Path(text)


# The domain of the numeric flags, by dest: argparse refuses a value outside it (exit 2) before anything runs; the
# configs check the same bounds for sweep YAMLs and saved configs. Not listed: any finite value (e.g. --mean).
_COUNTS = ("epochs", "batch_size", "filters", "dense_units", "in_channels", "num_classes", "image_size", "resize_size",
           "step_size", "patience", "max_per_class", "per_class", "neurons", "count", "workers", "top_k", "show",
           "repeats", "threads", "k", "lp_epochs", "unfreeze_every", "demo_train_per_class", "demo_val_per_class",
           "calibration_count", "export_batch", "holdout_count", "parity_batch_sizes", "parity_count")
DOMAINS: dict[str, str] = {
    **dict.fromkeys(_COUNTS, "[1,inf)"), **dict.fromkeys(("lr", "timeout", "grad_clip", "backbone_lr_mult", "std"),
                                                          "(0,inf)"),
    **dict.fromkeys(("seed", "split_seed", "num_workers", "plateau_patience", "max_consecutive_failures", "warmup",
                     "peer_workers", "weight_decay", "momentum", "min_delta", "mixup_alpha", "cutmix_alpha",
                     "warmup_epochs", "atol", "rtol"), "[0,inf)"),
    **dict.fromkeys(("dropout", "label_smoothing", "ema_decay"), "[0,1)"), "random_erasing": "[0,1]",
    "val_fraction": "(0,1)", "gamma": "(0,1]", "min_agreement": "[0,1]", "layer_decay": "(0,1]", "crop_scale": "(0,1]",
    "train_decode_ratio": "[1,4]"}


def _in_range(kind: type, domain: str | None) -> Callable[[str], Any]:
    lo, hi = (float(v) for v in domain[1:-1].split(",")) if domain else (-math.inf, math.inf)

    def parse(text: str) -> Any:
        value = kind(text)  # a ValueError here is argparse's own "invalid int value"
        if (kind is int and not -2**63 <= value < 2**63) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected "
                                             f"{'a 64-bit integer' if kind is int else 'a finite number'}")
        if domain and not ((lo < value or domain[0] == "[" and lo == value)
                           and (value < hi or domain[-1] == "]" and value == hi)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected a value in {domain}")
        return value

    parse.__name__ = kind.__name__
    return parse


def range_check_numbers(parser: argparse.ArgumentParser) -> None:
    """Every ``type=int`` / ``type=float`` flag of ``parser`` (and its sub-commands) refuses values no code can use
    (an int past 64 bits: torch's "Overflow when unpacking long long"; nan and inf; outside :data:`DOMAINS`) with
    argparse's exit 2."""
    for action in parser._actions:
        if action.type in (int, float):
            action.type = _in_range(action.type, DOMAINS.get(action.dest))
        for sub in (action.choices or {}).values() if isinstance(action, argparse._SubParsersAction) else ():
            range_check_numbers(sub)


def _matches(exc: BaseException, kind: type[BaseException] | str) -> bool:
    if isinstance(kind, str):
        return any(cls.__name__ == kind for cls in type(exc).__mro__)
    return isinstance(exc, kind)


def _free_space(filename: object) -> str:
    """`` (12.3 GB free on that disk)`` for the nearest existing folder of ``filename``; empty when unknown."""
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return ""
    folder = Path(os.fsdecode(filename)).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f" ({shutil.disk_usage(folder).free / 1e9:,.1f} GB free on that disk)"
    except OSError:
        return ""


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ended a script."""
    text = " ".join(str(exc).split())  # one line, whatever the exception's own formatting
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    for kind in RUNTIME_ERRORS:
        if _matches(exc, kind):
            return EXIT_RUNTIME, text or type(exc).__name__
    for kind in USAGE_ERRORS:
        if _matches(exc, kind):
            return EXIT_USAGE, text or type(exc).__name__
    if isinstance(exc, ModuleNotFoundError):
        return EXIT_RUNTIME, (f"the Python package {exc.name!r} is not installed; install it "
                              f"(pip install -e . installs every required one)")
    if isinstance(exc, MemoryError):
        return EXIT_RUNTIME, "out of memory; use a smaller --batch-size or --image-size"
    if isinstance(exc, OSError):  # disk full, permission denied, ...: the path, the OS's words, the free space
        return EXIT_RUNTIME, f"{type(exc).__name__}: {text}{_free_space(exc.filename)}"
    if isinstance(exc, RuntimeError):  # a library's failure while running (torch, onnxruntime, optuna)
        return EXIT_RUNTIME, f"{text or type(exc).__name__} (rerun with --debug for the traceback)"
    return EXIT_RUNTIME, (f"unexpected {type(exc).__name__}: {text}; this is a bug: rerun with --debug "
                          f"(or {DEBUG_ENV}=1) and include the traceback in a report")


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no", "off")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    if not any("--debug" in a.option_strings for a in parser._actions):
        parser.add_argument("--debug", action="store_true",
                            help=f"on an error, print the full traceback (for bug reports); same as {DEBUG_ENV}=1")


class _StderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is at that moment, so a caller that swaps stderr (a test's
    capture, a notebook cell) never leaves the handler writing to a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # noqa: ANN201 - StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.setStream assigns it; the current stderr always wins
        pass


def configure_logging(level: int, fmt: str = "%(levelname)s %(name)s: %(message)s", datefmt: str | None = None,
                      *, terminal: int | None = None) -> None:
    """A script's log lines on stderr: one handler of ours on the root logger. A second call replaces it (the
    last script's level and format win when several run in one process); other handlers are left alone.

    ``terminal`` (e.g. WARNING) keeps the terminal to that level while ``level`` still reaches other handlers
    (a sweep trial's ``trial.log``); records marked ``progress`` (one line per finished trial) always show,
    as their bare message."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    plain, full = logging.Formatter("%(message)s"), logging.Formatter(fmt, datefmt)
    handler.format = lambda r: (plain if getattr(r, "progress", False) and terminal else full).format(r)
    if terminal is not None:  # spawned sweep workers read terminal_level and filter their own terminal alike
        handler.terminal_level = terminal
        handler.addFilter(lambda r: r.levelno >= terminal or getattr(r, "progress", False))
    root.addHandler(handler)
    root.setLevel(level)


def run_script(prog: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
               argv: Sequence[str] | None = None, *, on_interrupt: Callable[[argparse.Namespace], str] | None = None
               ) -> int:
    """Parse ``argv`` with ``parser`` (+ ``--debug``), run ``body(args)``, turn any exception into an exit code.

    ``body`` returns the exit code (``None`` = 0). Bad flags end in argparse's usage line and exit 2 as
    usual. ``on_interrupt(args)`` gives the line printed on Ctrl-C (e.g. the resume command).
    """
    add_debug_flag(parser)
    range_check_numbers(parser)
    error = parser.error  # argparse quotes the bad argument: a URL password in it is masked first
    parser.error = lambda message: error(mask_secrets(message))  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    try:
        code = body(args)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every ending into a code
        code, message = classify(exc)
        if debug_requested(args):
            traceback.print_exc()
        if code == EXIT_INTERRUPTED and on_interrupt is not None:
            message = f"interrupted; {on_interrupt(args)}"
        print(f"{prog}: error: {mask_secrets(message)}", file=sys.stderr)  # no password, whatever raised
        sys.stderr.flush()
        return code
    return EXIT_OK if code is None else int(code)
