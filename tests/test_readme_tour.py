"""README's tour, run in order as the README writes it: the main job, evaluate, Part B with the shared MobileNetV2
weights, export and inference, each command taken from README.md's tour table.

The commands run in a fresh folder laid out like a clone (``experiments/``, ``export/``, ``core/`` linked in) with
``../shared`` beside it, so their relative paths (``runs/partA-demo``, ``model.onnx``, ``../shared/photos``) mean
what they mean to a reader. To fit the suite's CPU budget, size-shrinking flags are appended to some commands
(:data:`SHRINK`, nothing else is changed): one Part B strategy for one epoch on a few images per class at 32 px.
The main job runs whole (its 12 trials take well under a minute): the model it keeps is the one the README exports
to INT8, which refuses a model that loses more than half a point, as a barely trained one can. Rows that need the
network (the download) or measure speed (the benchmark) are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHRINK = {  # script -> flags appended (only ever smaller: fewer trials, epochs, images, strategies)
    "experiments/partA_train.py": ["--epochs", "1", "--image-size", "32"],
    "experiments/partB_finetune.py": ["--strategies", "head", "--epochs", "1", "--image-size", "32",
                                      "--max-per-class", "4"],
    "experiments/partA_evaluate.py": ["--max-per-class", "2"],
}
NOT_RUN = {"experiments/prepare_data.py": "downloads 3.6 GB (network)",
           "experiments/benchmark.py": "measures speed for minutes"}


def tour_commands() -> list[str]:
    """The ``python ...`` code spans of README's tour table, in order."""
    text = (ROOT / "README.md").read_text()
    tour = text[text.index("## A tour"):]
    tour = tour[:tour.index("\n## ", 1)]
    return [m for line in tour.splitlines() if line.startswith("| ")
            for m in re.findall(r"`(python [^`]+)`", line.split(" | ")[1])]


def test_the_tour_names_the_steps_in_order():
    scripts = [shlex.split(c)[1] for c in tour_commands()]
    assert scripts == ["experiments/prepare_data.py", "experiments/partA_count.py", "experiments/partA_train.py",
                       "experiments/partA_sweep.py", "experiments/partA_evaluate.py", "experiments/partB_finetune.py",
                       "export/to_onnx.py", "export/infer.py", "export/to_onnx.py", "experiments/benchmark.py"], scripts


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "weights").is_dir() or not (SHARED / "photos").is_dir(),
                    reason="needs ../shared (MobileNetV2 weights, photos) beside the repository")
def test_readme_tour_runs_as_written(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("core", "experiments", "export"):
        (clone / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    outputs = {}
    for command in tour_commands():
        argv = shlex.split(command)
        if argv[1] in NOT_RUN:
            continue
        argv = [sys.executable, *argv[1:], *SHRINK.get(argv[1], [])]
        done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, \
            f"{command!r} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs[argv[1]] = done.stdout
    sweep = outputs["experiments/partA_sweep.py"]
    assert "Best trial" in sweep and "python experiments/partA_evaluate.py --checkpoint runs/partA-demo/best.pt" \
        in sweep, sweep
    assert "test accuracy" in outputs["experiments/partA_evaluate.py"]
    assert (clone / "runs/partB-mobilenet_v2-compare/comparison.csv").read_text().count("partA:") == 1, \
        "the Part B comparison includes the sweep's best trial"
    assert (clone / "model.onnx").is_file() and (clone / "model.int8.onnx").is_file()
    assert (clone / "runs/partA-demo/web/index.html").is_file(), "the browser page's folder"
    photos = [p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert sum(p.name in outputs["export/infer.py"] for p in photos) == len(photos), outputs["export/infer.py"]
