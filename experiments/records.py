"""Rerun the fast measurements behind the docs' figures and rewrite their records in docs/records/.

    python experiments/records.py                       # every record with an "extract" table
    python experiments/records.py --only main_job       # one of them

Each record is one command as the docs print it; it runs from a temporary folder (its outputs are dropped), and
each figure is read from what it shows on the terminal or from a file it wrote: ``"name": ["output" or a path,
regex]``, the regex's last group parsed as a number, or with no group the count of matching lines.
tests/test_records.py holds the docs to the records.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from core.cli import run_script
from core.runfiles import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
RECORDS_DIR = ROOT / "docs" / "records"


def measure(command: str, extract: dict[str, list[str]]) -> dict[str, float]:
    argv = [sys.executable if a == "python" else str(ROOT / a) if (ROOT / a).exists() else a
            for a in shlex.split(command)]  # paths as the docs give them, from the repository root
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}  # no W&B runs of a rerun
        done = subprocess.run(argv, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode:
            raise RuntimeError(f"{command!r} exited {done.returncode}: {done.stdout.strip()[-2000:]}")
        figures = {}
        for name, (source, pattern) in extract.items():
            text, rx = done.stdout if source == "output" else Path(tmp, source).read_text(), re.compile(pattern, re.M)
            found = rx.search(text)
            if found is None:
                raise ValueError(f"figure {name!r}: {pattern!r} matches nothing in {source} of {command!r}")
            figures[name] = json.loads(found[rx.groups].replace(",", "")) if rx.groups else len(rx.findall(text))
    return figures


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return (f"{cpu[1] if cpu else platform.processor()}, {os.cpu_count()} cores, torch {version('torch')}, "
            f"Python {platform.python_version()}, {platform.system()}")


def regenerate(args: argparse.Namespace) -> None:
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    names = args.only or sorted(p.stem for p in RECORDS_DIR.glob("*.json") if "extract" in read_json(p))
    for name in names:
        record = read_json(RECORDS_DIR / f"{name}.json")
        if "extract" not in record:
            raise ValueError(f"record {name!r} has no extract table: it is a documented measurement, not rerun here")
        figures = measure(record["command"], record["extract"])
        write_json(RECORDS_DIR / f"{name}.json", {**record, "commit": commit, "machine": machine(),
                                                  "date": datetime.date.today().isoformat(), "figures": figures})
        print(f"{name}: {figures}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="records to rerun (file names without .json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_script("records", get_args_parser(), regenerate, argv)


if __name__ == "__main__":
    sys.exit(main())
