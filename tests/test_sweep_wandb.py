"""The wandb backend and the backend choice. Only the network boundary (``wandb.sweep``/``wandb.agent``) is
mocked: the fake agent does what W&B's agent does locally (writes the run's parameters to the file named
by ``WANDB_SWEEP_PARAM_PATH``, sets the sweep/run ids, calls the function), and the real ``wandb.init``
runs offline and reads them."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import wandb
import yaml

from core.sweep import SweepSettings, agent_command, choose_backend, parse_sweep_config, run_sweep
from core.train import RunResult

RAW = {"method": "bayes", "metric": {"name": "val_acc", "goal": "maximize"}, "run_cap": 10,
       "parameters": {"filters": {"values": [8, 16]},
                      "optimizer": {"parameters": {"name": {"values": ["adam", "sgd"]},
                                                   "lr": {"min": 0.001, "max": 0.1}}}}}
AGENT_RUNS = [{"filters": 16, "optimizer": {"name": "sgd", "lr": 0.05}},
              {"filters": 8, "optimizer": {"name": "adam", "lr": 0.002}}]


class Recorder:
    def __init__(self):
        self.requests = []

    def __call__(self, req):
        self.requests.append(req)
        (req.run_dir / "best.pt").write_bytes(b"w")
        acc = 0.1 * req.values["filters"] / 8
        req.report(1, {"val_acc": acc})
        return RunResult(best_val_acc=acc, best_epoch=1, history=({"epoch": 1, "val_acc": acc},),
                         best_path=req.run_dir / "best.pt", parameter_count=10, flops=20)


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    calls = {}

    def sweep(sweep, entity=None, project=None, prior_runs=None):
        calls["sweep"] = {"sweep": sweep, "entity": entity, "project": project}
        return "abc123"

    def agent(sweep_id, function=None, entity=None, project=None, count=None, **kwargs):
        calls["agent"] = {"sweep_id": sweep_id, "entity": entity, "project": project, "count": count, **kwargs}
        monkeypatch.setenv("WANDB_SWEEP_ID", sweep_id)
        for i, params in enumerate(AGENT_RUNS[:count]):
            path = tmp_path / f"sweep-params-{i}.yaml"
            path.write_text(yaml.safe_dump({k: {"value": v} for k, v in params.items()}))
            monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(path))
            monkeypatch.setenv("WANDB_RUN_ID", f"run{i}")
            wandb.teardown()  # as W&B's agent does before each run: settings are re-read from the env
            function()

    monkeypatch.setattr(wandb, "sweep", sweep)
    monkeypatch.setattr(wandb, "agent", agent)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return calls


def test_wandb_backend_builds_the_exact_sweep_and_agent_calls(fake_wandb, tmp_path):
    cfg, trial = parse_sweep_config(RAW), Recorder()
    settings = SweepSettings(name="wb", out_dir=tmp_path / "runs", backend="wandb", count=2, project="proj",
                             tracker_mode="offline")
    summary = run_sweep(cfg, settings, trial, argv=["--config", "x.yaml", "--count", "2"])
    assert fake_wandb["sweep"] == {"sweep": {**RAW, "name": "wb"}, "entity": None, "project": "proj"}, \
        "wandb.sweep gets the config file unchanged (plus the sweep name), in the project"
    assert fake_wandb["agent"] == {"sweep_id": "abc123", "entity": None, "project": "proj", "count": 2}
    got = [dict(r.flat) for r in trial.requests]
    assert got == [{"filters": 16, "optimizer": "sgd", "lr": 0.05}, {"filters": 8, "optimizer": "adam", "lr": 0.002}], \
        f"wandb.config (nested) flattened with the sweep's rule: {got}"
    assert [r.number for r in trial.requests] == [0, 1] and trial.requests[0].group == "wb"
    assert summary.sweep_path == "proj/abc123"
    assert summary.agent_command.endswith("--config x.yaml --count 2 --backend wandb --resume proj/abc123"), \
        summary.agent_command
    rows = list(csv.DictReader((tmp_path / "runs" / "wb" / "results.csv").open()))
    assert [(r["number"], r["state"], r["optimizer.name"]) for r in rows] == [("0", "COMPLETE", "sgd"),
                                                                              ("1", "COMPLETE", "adam")]
    assert summary.best.number == 0 and (tmp_path / "runs" / "wb" / "best.pt").read_bytes() == b"w"
    trial_json = json.loads((trial.requests[0].run_dir / "trial.json").read_text())
    assert trial_json["backend"] == "wandb" and trial_json["sweep_id"] == "abc123"


def test_joining_an_existing_wandb_sweep_does_not_create_one(fake_wandb, tmp_path):
    settings = SweepSettings(name="wb", out_dir=tmp_path, backend="wandb", count=1, resume="ent/proj/abc123",
                             tracker_mode="offline")
    summary = run_sweep(parse_sweep_config(RAW), settings, Recorder())
    assert "sweep" not in fake_wandb and fake_wandb["agent"]["sweep_id"] == "ent/proj/abc123"
    assert summary.sweep_path == "ent/proj/abc123"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"resume": ""}, "needs the sweep to join"),
    ({"workers": 2}, "belong to the local backend"),
])
def test_wandb_backend_refuses_local_only_options(tmp_path, kwargs, match):
    settings = SweepSettings(name="wb", out_dir=tmp_path, backend="wandb", **kwargs)
    with pytest.raises(ValueError, match=match):
        run_sweep(parse_sweep_config(RAW), settings, Recorder())


def _no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_auto_backend_is_local_without_credentials_and_says_why(monkeypatch, tmp_path, caplog):
    _no_credentials(monkeypatch, tmp_path)
    backend, reason = choose_backend("auto")
    assert backend == "local" and "no W&B credentials" in reason, (backend, reason)
    cfg = parse_sweep_config({**RAW, "method": "random"})
    with caplog.at_level(logging.INFO, logger="core.sweep.run"):
        summary = run_sweep(cfg, SweepSettings(name="auto", out_dir=tmp_path, count=1), Recorder())
    assert summary.backend == "local" and (tmp_path / "auto" / "optuna.db").is_file()
    assert "backend local (no W&B credentials" in caplog.text


def test_auto_backend_is_wandb_with_an_api_key(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert choose_backend("auto")[0] == "wandb"
    assert choose_backend("local") == ("local", "--backend local")
    with pytest.raises(ValueError, match="unknown backend 'cloud'"):
        choose_backend("cloud")


def test_agent_command_replaces_backend_and_resume_flags():
    cmd = agent_command("e/p/id", ["--backend", "auto", "--resume", "--data-dir", "/d x", "--count", "3"])
    assert cmd == "python experiments/partA_sweep.py --data-dir '/d x' --count 3 --backend wandb --resume e/p/id"
