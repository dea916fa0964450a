"""Failures do not burn the budget: a failed trial keeps its slot and the next run retries it; failures in a
row stop the sweep; a sweep without a success exits non-zero with its first error once; what is sure to fail
every trial is refused before the first one; Ctrl-C ends with one line.

In-process tests use the deterministic stand-in trial of ``test_sweep_local.py`` (made to raise); the CLI
tests run ``experiments/partA_sweep.py`` with the real trainer on a tiny image folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from test_sweep_local import RANDOM, StandIn, number_of, settings_for, started

from core.sweep import SweepSettings, parse_sweep_config, run_sweep
from core.sweep.backends.local import run_local
from experiments.partA_sweep import main

REPO = Path(__file__).resolve().parents[1]


class Failing(StandIn):
    """Raises in the slots of ``fail`` (all slots if None) while ``fixed`` does not exist."""

    def __init__(self, log: Path, fixed: Path, fail: tuple[int, ...] | None = None) -> None:
        super().__init__(log)
        self.fixed, self.fail = fixed, fail

    def run(self, config, run_dir, **kwargs):
        number = number_of(run_dir)
        if not self.fixed.exists() and (self.fail is None or number in self.fail):
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"number": number, "values": config, "failed": True}) + "\n")
            raise RuntimeError(f"boom in trial {number}")
        return super().run(config, run_dir, **kwargs)


def test_a_failed_trial_keeps_its_slot_and_the_next_run_retries_it_with_the_same_parameters(tmp_path):
    cfg, log, fixed = parse_sweep_config(RANDOM), tmp_path / "log.jsonl", tmp_path / "fixed"
    first = run_local(cfg, settings_for(tmp_path, 3), Failing(log, fixed, fail=(1,)))
    runs = started(log)
    assert [(r["number"], r.get("failed", False)) for r in runs] == [(0, False), (1, True), (2, False)], runs
    assert not first.stopped_for_failures and first.failure_streak == 0, first
    assert (next((tmp_path / "s" / "trials").glob("1-*")) / "error.txt").read_text().count("RuntimeError: boom") == 1

    fixed.touch()
    second = run_local(cfg, settings_for(tmp_path, 3), Failing(log, fixed))
    rerun = started(log)[len(runs):]
    assert [r["number"] for r in rerun] == [1], f"only the failed slot runs again: {rerun}"
    assert rerun[0]["values"] == runs[1]["values"], "with the parameters it failed with"
    assert second.retried == (1,)


def test_with_no_retry_failed_a_failed_trial_uses_up_its_slot(tmp_path):
    cfg, log, fixed = parse_sweep_config(RANDOM), tmp_path / "log.jsonl", tmp_path / "fixed"
    keep = replace(settings_for(tmp_path, 2), retry_failed=False)
    run_local(cfg, keep, Failing(log, fixed, fail=(0,)))
    fixed.touch()
    run_local(cfg, keep, Failing(log, fixed))
    assert [r["number"] for r in started(log)] == [0, 1], started(log)


def test_failures_in_a_row_stop_the_sweep_and_a_sweep_without_success_reports_its_first_error(tmp_path):
    cfg, log, fixed = parse_sweep_config(RANDOM), tmp_path / "log.jsonl", tmp_path / "fixed"
    settings = SweepSettings(name="fails", out_dir=tmp_path / "runs", backend="local", count=10,
                             tracker_mode="disabled", max_consecutive_failures=3)
    summary = run_sweep(cfg, settings, Failing(log, fixed))
    assert len(started(log)) == 3, f"3 failures in a row stop a 10-trial sweep: {started(log)}"
    assert summary.failure is not None and summary.failure.startswith("no trial succeeded (3 failed)"), summary
    assert "trial 0 in " in summary.failure and "RuntimeError: boom in trial 0" in summary.failure, summary.failure
    first_dir = next((tmp_path / "runs" / "fails" / "trials").glob("0-*"))
    assert str(first_dir) in summary.failure, "the failure names the first failed trial's folder"

    fixed.touch()  # the cause is fixed: the same command retries the 3 failed slots, then draws the rest
    summary = run_sweep(cfg, settings, Failing(log, fixed))
    assert summary.failure is None and summary.note is None, summary
    assert [r.number for r in summary.records] == list(range(10)) and all(r.state == "COMPLETE"
                                                                          for r in summary.records)
    retried = [r["values"] for r in started(log)[3:6]]
    assert retried == [r["values"] for r in started(log)[:3]], "slots 0-2 run again with their own parameters"


def _cli_config(tmp_path: Path, **params) -> Path:
    raw = {"name": "cli", "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
           "parameters": {"image_size": {"value": 32}, "epochs": {"value": 1}, "batch_size": {"value": 8},
                          "filters": {"value": 4}, "dense_units": {"value": 8}, "num_workers": {"value": 0},
                          "activation": {"values": ["relu", "gelu"]}, **params}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _unreadable_imagefolder(root: Path) -> Path:
    """The iNaturalist layout, but no file decodes: the layout check passes, every trial's decode fails."""
    for split, count in (("train", 6), ("val", 2)):
        for name in ("Aves", "Fungi"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                (root / split / name / f"{i}.jpg").write_bytes(b"this is no JPEG" * 20)
    return root


def test_a_sweep_where_every_trial_fails_exits_1_with_the_first_error_once(tmp_path, capsys, caplog):
    data = _unreadable_imagefolder(tmp_path / "broken")
    argv = ["--config", str(_cli_config(tmp_path)), "--data-dir", str(data), "--out-dir", str(tmp_path / "runs"),
            "--device", "cpu", "--wandb-mode", "disabled", "--quiet"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.startswith("partA_sweep: error:")]
    assert len(lines) == 1 and "no trial succeeded (2 failed)" in lines[0], captured.err
    assert "trial 0 in " in lines[0] and "ValueError: no decodable training images" in lines[0], lines[0]
    assert "Traceback" not in captured.err, captured.err
    failed = [r for r in caplog.records if " failed: ValueError: no decodable" in r.getMessage()]
    assert len(failed) == 2 and not any(r.exc_info for r in failed), "one line per failed trial, no traceback"
    assert not any(r.name.startswith("optuna") and "failed" in r.getMessage() for r in caplog.records), \
        "Optuna's own failure log (with its traceback) is replaced by ours"
    trial0 = next((tmp_path / "runs" / "cli" / "trials").glob("0-*"))
    assert str(trial0) in lines[0] and "Traceback" in (trial0 / "error.txt").read_text()
    assert captured.out == "", "no summary of a sweep without results"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_what_would_fail_every_trial_is_refused_before_the_first_one(tiny_imagefolder, tmp_path, capsys):
    config = _cli_config(tmp_path)
    out = tmp_path / "runs"
    base = ["--config", str(config), "--out-dir", str(out), "--wandb-mode", "disabled", "--quiet"]
    assert main([*base, "--data-dir", str(tiny_imagefolder), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda' requested but CUDA is not available here" in err and "Traceback" not in err, err
    missing = _cli_config(tmp_path, data_dir={"value": str(tmp_path / "nowhere")})
    assert main(["--config", str(missing), "--out-dir", str(out), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"dataset root {tmp_path / 'nowhere'} does not exist" in err, err
    assert not (out / "cli" / "trials").exists(), "no trial started"


@pytest.mark.slow
def test_ctrl_c_ends_a_two_worker_sweep_with_one_line_that_says_how_to_resume(tiny_imagefolder, tmp_path):
    config = _cli_config(tmp_path, epochs={"value": 500})
    out = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "experiments" / "partA_sweep.py"), "--config", str(config), "--data-dir",
           str(tiny_imagefolder), "--out-dir", str(out), "--device", "cpu", "--wandb-mode", "disabled",
           "--workers", "2", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while len([p for p in out.glob("cli/trials/*/metrics.jsonl") if p.stat().st_size]) < 2:
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "the two trials never started training"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    stdout, stderr = proc.communicate(timeout=120)
    err = stderr.decode()
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("partA_sweep: interrupted"), f"one line, got:\n{err}"
    assert "Resume with: python experiments/partA_sweep.py --config" in lines[0], lines[0]
    import optuna

    trials = optuna.load_study(study_name="cli", storage=f"sqlite:///{out / 'cli' / 'optuna.db'}").get_trials()
    assert len(trials) == 2 and all(t.state.name == "FAIL" and t.user_attrs.get("interrupted") for t in trials), \
        [(t.number, t.state.name, t.user_attrs.get("interrupted")) for t in trials]
    assert all((Path(t.user_attrs["run_dir"]) / "last.pt").is_file() for t in trials), \
        "each stopped at a batch boundary with its finished epochs kept: the next run resumes from last.pt"
