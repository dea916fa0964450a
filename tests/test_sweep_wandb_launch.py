"""``partA_sweep.py --backend wandb`` launched the way many people launch Python: an absolute interpreter path,
from a folder outside the repository, no environment activated, and another ``python`` first on ``PATH``
(the system's, without wandb or torch) — W&B's agent starts each run as ``/usr/bin/env python -m ...``.

Everything is real but W&B's server (tests/scripted_wandb.py): the script is a child process; its W&B agent
is W&B's own. Oracles: the trial folders' files, the results table, the exit code and the printed error.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.scripted_wandb import EXIT, PROJECT, ScriptedWandbServer, run_command
from tests.test_sweep_wandb import R1, R2, RAW, _trial_dir, run_stop_run_exit

REPO = Path(__file__).resolve().parents[1]
FIXED = {"image_size": 32, "batch_size": 8, "dense_units": 16, "num_workers": 0}
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _other_python_first(tmp_path: Path) -> str:
    """A ``PATH`` whose first ``python`` is not this interpreter (the system's, else none at all)."""
    other = tmp_path / "other-bin"
    other.mkdir()
    if SYSTEM_PYTHON.is_file() and subprocess.run([SYSTEM_PYTHON, "-c", "import wandb"],
                                                  capture_output=True).returncode != 0:
        (other / "python").symlink_to(SYSTEM_PYTHON)
    return os.pathsep.join([str(other), "/usr/bin", "/bin"])


def _launch(tmp_path: Path, server: ScriptedWandbServer, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({**RAW, "parameters": {**RAW["parameters"],
                                                            **{k: {"value": v} for k, v in FIXED.items()}}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("WANDB_", "INAT_CNN_WANDB"))}
    env.update(PATH=_other_python_first(tmp_path), WANDB_BASE_URL=server.url, WANDB_API_KEY="k" * 40,
               WANDB_MODE="offline", WANDB_SILENT="true", HOME=str(tmp_path / "home"),
               NETRC=str(tmp_path / "no-netrc"))
    cmd = [sys.executable, str(REPO / "experiments" / "partA_sweep.py"), "--backend", "wandb", "--config",
           str(config), "--name", "wb", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "runs"),
           "--device", "cpu", "--project", PROJECT, "--wandb-mode", "offline", *extra]
    return subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_agent_from_another_folder_and_interpreter_prunes_the_stopped_run_and_completes_the_next(tiny_imagefolder,
                                                                                                 tmp_path):
    trials = tmp_path / "runs" / "wb" / "trials"
    script = run_stop_run_exit(trials)
    give_up = time.monotonic() + 300  # runs that never start a trial: end the agent, the asserts say why

    def decide(running):  # the fixed values travel with every run, as W&B's controller sends them
        r2 = _trial_dir(trials, "r2")  # r2 may start and finish between two of the agent's 5 s polls
        ended = r2 is not None and json.loads((r2 / "trial.json").read_text())["state"] != "RUNNING"
        if time.monotonic() > give_up or (ended and not running.get("r2")):
            return [EXIT]
        return [{**c, "args": {**c["args"], **{k: {"value": v} for k, v in FIXED.items()}}} if c["type"] == "run"
                else c for c in script(running)]

    with ScriptedWandbServer(decide) as server:
        done = _launch(tmp_path, server, tiny_imagefolder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not server.unknown, server.unknown
    r1, r2 = _trial_dir(trials, "r1"), _trial_dir(trials, "r2")
    assert r1 and r2, f"both runs started a trial: {sorted(p.name for p in trials.iterdir())}\n{done.stderr[-3000:]}"
    rows = {r["run_dir"]: r for r in csv.DictReader((tmp_path / "runs" / "wb" / "results.csv").open())}
    stopped, finished = rows[str(r1)], rows[str(r2)]
    assert stopped["state"] == "PRUNED" and 1 <= int(stopped["epochs_run"]) < R1["epochs"], stopped
    assert finished["state"] == "COMPLETE" and int(finished["epochs_run"]) == R2["epochs"], finished
    history = [json.loads(x) for x in (r1 / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == int(stopped["epochs_run"]), "the stopped run keeps its finished epochs"
    best = torch.load(r1 / "best.pt", weights_only=True)
    assert 1 <= best["epoch"] <= len(history) and best["state_dict"], "a loadable best.pt of a finished epoch"
    for run_dir in (r1, r2):
        log = (run_dir / "run.log").read_text()
        assert "W&B run" in log and "trial" in log, f"the run's whole output is kept in {run_dir / 'run.log'}: {log}"


@pytest.mark.slow
def test_every_run_failing_to_start_is_exit_1_with_the_first_runs_error(tiny_imagefolder, tmp_path):
    wrong = {"width": 3}  # a sweep created from another YAML: no run can map its parameters

    state = {"n": 0}

    def decide(running):
        state["n"] += 1
        if state["n"] == 1:
            return [run_command("f1", wrong)]
        if state["n"] == 3 and not running.get("f1"):
            return [run_command("f2", wrong)]
        if state["n"] >= 5 and not running.get("f2"):
            return [EXIT]
        return []

    with ScriptedWandbServer(decide) as server:
        done = _launch(tmp_path, server, tiny_imagefolder)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    lines = [x for x in done.stderr.splitlines() if x.startswith("partA_sweep: error:")]
    assert lines, done.stderr[-3000:]
    log = tmp_path / "runs" / "wb" / "trials" / ".starting" / "f1.log"
    assert "run f1" in lines[0] and "created from another YAML" in lines[0] and str(log) in lines[0], lines[0]
    assert "created from another YAML" in log.read_text(), "the failed start's output is kept"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_PYTHON.is_file(), reason="no system Python without the project's packages")
def test_trial_program_under_another_interpreter_names_it_and_the_fix(tmp_path):
    """W&B's agent on a machine where `python` is not the project's interpreter: one line, exit 2."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has torch: not another interpreter for this test")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([SYSTEM_PYTHON, "-m", "experiments.wandb_trial"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith(f"wandb_trial: error: {SYSTEM_PYTHON} cannot import"), done.stderr
    assert "partA_sweep.py --backend wandb --resume" in done.stderr and "Traceback" not in done.stderr, done.stderr
