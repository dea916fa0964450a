"""Get a dataset ready: download iNaturalist-12K, generate the demo set, or check a dataset folder.

    python experiments/prepare_data.py --download                    # into $INAT_CNN_CACHE/inaturalist
    python experiments/prepare_data.py --download --data-dir /data/inat --check
    python experiments/prepare_data.py --demo                        # the generated 10-class demo set
    python experiments/prepare_data.py --check --data-dir /data/inat/inaturalist_12K

Exit status (docs/cli.md): 0 when the dataset is usable (skipped files are listed, not fatal), 2 when it
is not (missing folders, mismatched classes, a class without decodable images) or the flags make no
sense, 1 when the download fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.cli import EXIT_USAGE, UsageError, configure_logging, run_script
from core.data import (
    INATURALIST_URL,
    URL_ENV,
    check_dataset,
    default_download_dir,
    download_inaturalist,
    ensure_demo_dataset,
    find_dataset_root,
    format_report,
)

log = logging.getLogger("prepare_data")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download, generate or check an ImageFolder dataset "
                                            "(root/train/<Class>/*, root/val/<Class>/*).")
    what = p.add_argument_group("actions (combine --check with either of the others)")
    what.add_argument("--download", action="store_true",
                      help="download and extract iNaturalist-12K (resumable) into --data-dir")
    what.add_argument("--demo", action="store_true",
                      help="generate the 10-class demo set (into --data-dir, default $INAT_CNN_CACHE/demo)")
    what.add_argument("--check", action="store_true",
                      help="validate the dataset: per-class counts, skipped files, conversions; exit 1 if unusable")
    demo = p.add_argument_group("demo options")
    demo.add_argument("--demo-train-per-class", type=int, default=100,
                      help="training images per class of the demo set (default 100)")
    demo.add_argument("--demo-val-per-class", type=int, default=30,
                      help="test (val/) images per class of the demo set (default 30)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="dataset root to check, or folder to download/generate into "
                        "(default: $INAT_CNN_CACHE/inaturalist for --download, $INAT_CNN_CACHE/demo for --demo)")
    dl = p.add_argument_group("download options")
    dl.add_argument("--url", default=None, help=f"archive URL (default ${URL_ENV} if set, else {INATURALIST_URL})")
    dl.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (checked when given)")
    dl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    return p


def prepare(args: argparse.Namespace) -> int:
    """Everything after parsing; errors propagate to :func:`core.cli.run_script` (exit codes)."""
    configure_logging(logging.INFO)
    if not (args.download or args.demo or args.check):
        raise UsageError("nothing to do: pass --download, --demo and/or --check")
    if args.download and args.demo:
        raise UsageError("--download and --demo are alternatives: pick one (either combines with --check)")
    if args.check and args.data_dir is None and not (args.download or args.demo):
        raise UsageError("--check needs --data-dir ROOT (or --download / --demo to check what they produce)")
    root = args.data_dir
    if args.download:
        root = download_inaturalist(args.data_dir or default_download_dir(), url=args.url,
                                    sha256=args.sha256, timeout=args.timeout)
        print(f"dataset root: {root}")
    elif args.demo:
        root = ensure_demo_dataset(args.data_dir, train_per_class=args.demo_train_per_class,
                                   val_per_class=args.demo_val_per_class)
        print(f"demo dataset: {root}")
    if args.check:
        if root.is_dir():  # accept the folder that holds inaturalist_12K/ as well as the root itself
            root = find_dataset_root(root) or root
        report = check_dataset(root)
        print(format_report(report))
        if report.problems:
            print(f"prepare_data: error: {root} is not usable for training: {'; '.join(report.problems)}; "
                  "add decodable images to those classes or remove their folders from train/ and val/",
                  file=sys.stderr)
            return EXIT_USAGE
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script("prepare_data", get_args_parser(), prepare, argv)


if __name__ == "__main__":
    raise SystemExit(main())
