"""End to end through the CLI with the real trainer: 3 trials x 2 epochs on a tiny image folder at 32 px."""

from __future__ import annotations

import csv

import pytest
import yaml

from core.data import cache_stats, reset_cache_stats
from core.train import load_model
from experiments.partA_sweep import main

TINY_SWEEP = {
    "name": "tiny", "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
    "parameters": {"image_size": {"value": 32}, "epochs": {"value": 2}, "batch_size": {"value": 8},
                   "filters": {"value": 4}, "dense_units": {"value": 16}, "num_workers": {"value": 0},
                   "activation": {"values": ["relu", "gelu", "silu"]},
                   "optimizer": {"parameters": {"name": {"value": "adam"}, "lr": {"value": 0.003}}}},
}


@pytest.mark.slow
def test_three_trial_sweep_end_to_end(tiny_imagefolder, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_SWEEP))
    reset_cache_stats(forget_memory=True)
    argv = ["--config", str(config), "--data-dir", str(tiny_imagefolder), "--out-dir", str(tmp_path / "runs"),
            "--device", "cpu", "--wandb-mode", "offline", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Top 3 runs by val_acc" in out and "Best configuration (trial" in out and "report.html" in out, out

    stats = cache_stats()
    assert stats.misses == 3 and stats.images_decoded == 30 + 12 + 6, \
        f"the train pool (1.15x larger, the augmentation's crop source), the 6 validation images (20%, at the " \
        f"input size) and the test list are each decoded once, for all 3 trials: {stats}"
    assert stats.memory_hits >= 4, f"trials 2 and 3 read the decoded images from memory: {stats}"

    sweep = tmp_path / "runs" / "tiny"
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert sorted(r["activation"] for r in rows) == ["gelu", "relu", "silu"], rows
    assert all(r["state"] == "COMPLETE" and 0.0 <= float(r["val_acc"]) <= 1.0 for r in rows), rows
    assert all(int(r["parameter_count"]) > 0 and int(r["flops"]) > 0 and r["test_acc"] for r in rows), rows
    best = max(rows, key=lambda r: (float(r["val_acc"]), -int(r["number"])))
    model, payload = load_model(sweep / "best.pt")
    assert payload["metrics"]["val_acc"] == pytest.approx(float(best["val_acc"]), abs=1e-6), \
        "best.pt is the checkpoint of the best trial"
    best_cfg = yaml.safe_load((sweep / "best_config.yaml").read_text())
    assert best_cfg["trial"] == int(best["number"]) and best_cfg["parameters"]["activation"] == best["activation"]
    assert sum(p.numel() for p in model.parameters()) == int(best["parameter_count"])
    figures = ["metric_vs_time", "parallel_coordinates", "optimization_history", "learning_curves", "cost_front"]
    if len({r["val_acc"] for r in rows}) > 1:  # importance needs trials that differ (3 tiny trials may tie)
        figures.append("importance")
    for name in figures:
        assert (sweep / f"{name}.png").stat().st_size > 5_000, f"{name}.png is empty"
    assert sorted(p.stem for p in sweep.glob("*.png")) == sorted(figures), "no placeholder figures"
    assert (sweep / "report.html").read_text().count('<img alt="') == len(figures)
    for r in rows:
        trial_dir = sweep / "trials" / r["run_dir"].rsplit("/", 1)[-1]
        assert (trial_dir / "best.pt").is_file() and (trial_dir / "metrics.jsonl").is_file()
        assert list((trial_dir / "wandb").glob("offline-run-*")), f"each trial is an offline W&B run: {trial_dir}"

    assert main(argv) == 0, "rerunning a finished sweep only rebuilds the outputs"
    assert len(list(csv.DictReader((sweep / "results.csv").open()))) == 3
    assert cache_stats().misses == 3, "the rerun decodes nothing"


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY_SWEEP, "parameters": {"colour": {"values": ["red"]}}}))
    assert main(["--config", str(bad), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'colour': 'red'} is not a valid trainer config" in err and "known keys" in err, err
    assert main(["--config", str(bad), "--data-dir", str(tmp_path / "nope")]) == 2
    assert "--data-dir" in capsys.readouterr().err
