"""From trial records to outputs: results.csv, best.pt/best_config.yaml, statistics, figures, report.html."""

from __future__ import annotations

import csv
import math
import re
from datetime import datetime, timedelta

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from core.sweep import TrialRecord, analyse, best_record, epsilon_squared, parse_sweep_config, ranked, write_outputs
from core.train import RunResult

CFG = parse_sweep_config({
    "method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
    "parameters": {"act": {"values": ["relu", "gelu"]},
                   "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
                   "epochs": {"value": 2}}})
T0 = datetime(2025, 1, 1, 12, 0, 0)


def make_records(tmp_path, n: int = 8) -> list[TrialRecord]:
    """gelu is 0.2 better than relu; lr has no effect; one failed and one pruned trial."""
    records = []
    for i in range(n):
        act = "gelu" if i % 2 else "relu"
        lr = 10 ** (-4 + 3 * ((i * 0.37) % 1))
        value = (0.6 if act == "gelu" else 0.4) + 0.01 * (i % 3)
        run_dir = tmp_path / "trials" / f"{i}-abc"
        run_dir.mkdir(parents=True)
        (run_dir / "best.pt").write_bytes(f"weights of trial {i}".encode())
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"flat": {"act": act}}))
        state = "FAIL" if i == n - 1 else ("PRUNED" if i == n - 2 else "COMPLETE")
        records.append(TrialRecord(
            number=i, state=state, hyperparameters={"act": act, "lr": lr, "epochs": 2},
            objective=None if state == "FAIL" else value,
            result=None if state == "FAIL" else RunResult(
                best_val_acc=value, best_epoch=2, test_acc=value - 0.05, parameter_count=1000 * (i + 1), flops=5000,
                history=({"epoch": 1, "val_acc": value / 2}, {"epoch": 2, "val_acc": value}),
                best_path=run_dir / "best.pt"),
            started_at=T0 + timedelta(minutes=i), ended_at=T0 + timedelta(minutes=i, seconds=30), run_dir=run_dir,
            error="RuntimeError: boom" if state == "FAIL" else None))
    return records


def test_best_and_ranking_follow_the_goal(tmp_path):
    records = make_records(tmp_path)
    assert best_record(records, CFG).number == 5, "gelu with the largest i % 3 bonus among results: trial 5"
    order = [r.number for r in ranked(records, CFG)]
    assert order[0] == 5 and 7 not in order, f"failed trials are not ranked: {order}"
    minimize = parse_sweep_config({**CFG.raw, "metric": {"name": "val_acc", "goal": "minimize"}})
    assert best_record(records, minimize).number == 0


def test_epsilon_squared_is_one_for_separated_groups_and_zero_for_identical_ones():
    sep = epsilon_squared([np.array([1.0, 1.0, 1.0]), np.array([5.0, 5.0, 5.0])])
    assert sep == pytest.approx(1.0), sep
    same = epsilon_squared([np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])])
    assert same == 0.0, same
    assert epsilon_squared([np.array([1.0, 2.0])]) is None, "one group explains nothing"


def test_analysis_finds_the_parameter_that_matters(tmp_path):
    records = make_records(tmp_path)
    analysis = analyse(records, CFG)
    complete = [r for r in records if r.state == "COMPLETE"]
    assert analysis.n_used == len(complete) == 6
    act = next(e for e in analysis.effects if e.name == "act")
    assert analysis.effects[0].name == "act", "act explains the metric, lr does not"
    gelu = next(g for g in act.groups if g.label == "gelu")
    expected = [r.objective for r in complete if r.hyperparameters["act"] == "gelu"]
    assert gelu.n == len(expected) and math.isclose(gelu.mean, sum(expected) / len(expected)), gelu
    assert act.groups[0].label == "gelu", "groups are ordered best first for a maximised metric"
    assert act.importance > 0.8 and gelu.correlation > 0.9, (act.importance, gelu.correlation)
    texts = [o.text for o in analysis.observations]
    assert any(t.startswith("act: gelu gave the highest mean val_acc") and "3 trials" in t for t in texts), texts
    assert texts[0].startswith("8 trials (6 complete, 1 pruned, 1 fail)"), texts[0]
    assert all(o.support >= 1 for o in analysis.observations)


def test_write_outputs_writes_every_file(tmp_path):
    records = make_records(tmp_path)
    out = write_outputs(CFG, records, sweep_dir=tmp_path, sweep_name="unit", backend="local", notes=["a note"])
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 8 and [r["number"] for r in rows] == [str(i) for i in range(8)]
    header = list(rows[0])
    assert header[:6] == ["number", "state", "val_acc", "best_epoch", "best_val_acc", "test_acc"], header
    assert {"act", "lr", "epochs", "parameter_count", "flops", "started_at", "ended_at", "seconds"} <= set(header)
    assert rows[7]["state"] == "FAIL" and rows[7]["error"] == "RuntimeError: boom" and rows[7]["val_acc"] == ""
    assert float(rows[1]["seconds"]) == 30.0 and rows[1]["act"] == "gelu"
    assert (tmp_path / "best.pt").read_bytes() == b"weights of trial 5", "best.pt is the best trial's file"
    best_cfg = yaml.safe_load((tmp_path / "best_config.yaml").read_text())
    assert best_cfg["trial"] == 5 and best_cfg["parameters"]["act"] == "gelu"
    assert best_cfg["trainer_keys"] == {"act": "gelu", "lr": records[5].hyperparameters["lr"], "epochs": 2}
    assert best_cfg["resolved_config"] == {"flat": {"act": "gelu"}}
    for name in ("metric_vs_time", "parallel_coordinates", "importance", "optimization_history", "learning_curves"):
        png = out[f"{name}.png"]
        img = imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, f"{name}: {img.shape}"
        assert img[..., :3].std() > 0.01, f"{name}.png is blank"
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5, "every figure is embedded"
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "the report must not fetch anything"
    assert "Best: trial 5" in html and "act: gelu gave the highest mean val_acc" in html and "a note" in html


def test_outputs_without_any_finished_trial_still_render(tmp_path):
    running = [TrialRecord(number=0, state="RUNNING", hyperparameters={"act": "relu", "lr": 1e-3, "epochs": 2},
                           started_at=T0)]
    out = write_outputs(CFG, running, sweep_dir=tmp_path, sweep_name="empty", backend="local")
    assert "best.pt" not in out and not (tmp_path / "best.pt").exists()
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 5
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 1
