"""Check a dataset before training: per-class counts, files that will be skipped, images that get converted.

Why separate from ``core.data.loaders``: a check must decode *every* file (including the ones a
``max_per_class`` cap would leave out) and must report instead of stop, so a user fixes all problems in
one pass. Layout errors still raise (there is nothing to count); everything else is collected.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from core.data.decode_cache import decode_images
from core.data.imagefolder import SkippedFile, scan_dataset
from core.data.preprocess import Preprocessing, exif_orientation


@dataclass
class DatasetReport:
    root: Path
    class_names: list[str]
    train_counts: dict[str, int]  # decodable images per class in train/
    test_counts: dict[str, int]  # decodable images per class in val/ (the test set)
    skipped: list[SkippedFile] = field(default_factory=list)
    converted: Counter = field(default_factory=Counter)  # PIL mode -> images converted to RGB
    rotated: int = 0  # images with an EXIF orientation other than "upright"
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (train/ file, byte-identical val/ file)

    @property
    def warnings(self) -> list[str]:
        """What training survives but should be fixed: a class with one training image has no validation image."""
        single = [c for c, n in self.train_counts.items() if n == 1]
        out = [f"classes {single} have a single decodable training image in train/: none is left for validation; "
               "add images to them"] if single else []
        if self.duplicates:
            pairs = "; ".join(f"{a} = {b}" for a, b in self.duplicates[:3])
            out.append(f"byte-identical copies of train/ images in val/ (the test set): {len(self.duplicates)} (e.g. "
                       f"{pairs}); they inflate the test accuracy: remove them from one of the two")
        return out

    @property
    def problems(self) -> list[str]:
        """What stops training: classes without a decodable image in train/ or val/."""
        out = []
        for split, counts in (("train", self.train_counts), ("val", self.test_counts)):
            empty = [c for c, n in counts.items() if n == 0]
            if empty:
                out.append(f"no decodable images in {split}/ for classes {empty}")
        return out


def _header_facts(path: Path) -> tuple[str, bool]:
    """(PIL mode, EXIF-rotated?) from the header only; unreadable files are reported by the decode."""
    try:
        with Image.open(path) as img:
            return img.mode, exif_orientation(img) != 1  # the decoder's own reading of EXIF orientation
    except Exception:  # any failure is the decode step's to report, with its reason
        return "RGB", False


def check_dataset(root: Path) -> DatasetReport:
    """Scan ``root``, decode every image once at 32 px (in a throwaway cache), and report."""
    scan = scan_dataset(root)
    report = DatasetReport(Path(root), list(scan.class_names), {}, {}, list(scan.skipped))
    seen: dict[str, Path] = {}  # content hash -> a train/ file with those bytes
    with tempfile.TemporaryDirectory(prefix="inat-check-") as tmp:
        for split, samples in (("train", scan.train), ("test", scan.test)):
            entry = decode_images([p for p, _ in samples], Preprocessing(32), Path(tmp), desc=f"checking {split}")
            counts = dict.fromkeys(scan.class_names, 0)
            for row, (path, label) in enumerate(samples):
                if row in entry.failed:
                    report.skipped.append(SkippedFile(path, entry.failed[row]))
                    continue
                counts[scan.class_names[label]] += 1
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if split == "train":
                    seen.setdefault(digest, path)
                elif digest in seen:
                    report.duplicates.append((seen[digest], path))
                mode, rotated = _header_facts(path)
                if mode != "RGB":
                    report.converted[mode] += 1
                report.rotated += rotated
            setattr(report, f"{split}_counts", counts)
    return report


def format_report(report: DatasetReport) -> str:
    """Human-readable table of :class:`DatasetReport` (what ``prepare_data.py --check`` prints)."""
    width = max([len("class"), *map(len, report.class_names)])
    lines = [f"dataset {report.root}", f"{'class':<{width}}  {'train':>7}  {'val (test)':>10}"]
    for c in report.class_names:
        lines.append(f"{c:<{width}}  {report.train_counts[c]:>7}  {report.test_counts[c]:>10}")
    lines.append(f"{'total':<{width}}  {sum(report.train_counts.values()):>7}  "
                 f"{sum(report.test_counts.values()):>10}")
    if report.converted:
        modes = ", ".join(f"{m}: {n}" for m, n in sorted(report.converted.items()))
        lines.append(f"converted to RGB (kept): {modes}")
    if report.rotated:
        lines.append(f"EXIF-rotated, turned upright (kept): {report.rotated}")
    lines.append(f"skipped files: {len(report.skipped)}")
    for s in report.skipped:
        lines.append(f"  {s.path}: {s.reason}")
    for w in report.warnings:
        lines.append(f"WARNING: {w}")
    for p in report.problems:
        lines.append(f"PROBLEM: {p}")
    lines.append("status: " + ("NOT usable" if report.problems else "usable"))
    return "\n".join(lines)
