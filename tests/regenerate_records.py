"""Rerun the docs/records/ entries with an ``extract`` table: ``python tests/regenerate_records.py [--only NAME]``.

It lives beside ``test_records.py``, the test that holds the docs' figures to these records: both keep the docs
true, neither is part of the toolkit.

Each command runs as the docs print it, from a temporary folder; a figure is its regex's last group in the terminal
output (``"output"``) or in a file the command wrote, or with no group the number of matching lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from core.cli import run_script
from core.runfiles import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]


def measure(command: str, extract: dict[str, list[str]]) -> dict[str, float]:
    argv = [sys.executable if a == "python" else str(ROOT / a) if (ROOT / a).exists() else a
            for a in shlex.split(command)]  # paths as the docs give them, from the repository root
    with tempfile.TemporaryDirectory() as tmp:  # outputs dropped, no W&B runs
        done = subprocess.run(argv, cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            raise RuntimeError(f"{command!r} exited {done.returncode}: {done.stdout.strip()[-2000:]}")
        texts = {src: done.stdout if src == "output" else Path(tmp, src).read_text() for src, _ in extract.values()}
    figures = {}
    for name, (src, pattern) in extract.items():
        rx = re.compile(pattern, re.M)
        if (found := rx.search(texts[src])) is None:
            raise ValueError(f"figure {name!r}: {pattern!r} matches nothing in {src} of {command!r}")
        figures[name] = json.loads(found[rx.groups].replace(",", "")) if rx.groups else len(rx.findall(texts[src]))
    return figures


def regenerate(args: argparse.Namespace) -> None:
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    cpuinfo = Path("/proc/cpuinfo").read_text() if sys.platform == "linux" else ""
    cpu = (re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M) or [sys.platform])[0]
    machine = f"{cpu}, {os.cpu_count()} cores, torch {version('torch')}, Python {sys.version.split()[0]}"
    for path in [ROOT / "docs/records" / f"{n}.json" for n in args.only] or sorted(ROOT.glob("docs/records/*.json")):
        if "extract" not in (record := read_json(path)) and args.only:
            raise ValueError(f"{path.stem} is a documented measurement (no extract table): not rerun here")
        if "extract" in record:
            figures = measure(record["command"], record["extract"])
            write_json(path, {**record, "commit": commit, "machine": machine, "date": time.strftime("%Y-%m-%d"),
                              "figures": figures})
            print(f"{path.stem}: {figures}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="these records (file names, no .json)")
    return run_script("records", parser, regenerate, argv)


if __name__ == "__main__":
    sys.exit(main())
