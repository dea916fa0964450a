"""The wandb backend under W&B's real agent, with only W&B's server scripted (tests/scripted_wandb.py).

``run_sweep(backend="wandb")`` calls the real ``wandb.sweep`` and ``wandb.agent``; W&B's agent
(``wandb/wandb_agent.py``) registers with the scripted server, heartbeats, and starts one process per
run (``python -m experiments.wandb_trial``) that trains the real Part A CNN on a tiny image folder and
logs to an offline W&B run. The server's script: run r1, stop r1 once it has finished an epoch (W&B's
agent sends SIGTERM), run r2, exit. Oracles: the trial folders' own files (``metrics.jsonl``,
``split.json``, ``best.pt`` read with ``torch.load``) and W&B's own reader of each run's transaction
log (``wandb leet inspect``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb.wandb_agent
import yaml

from core.partA import FLAT_KEYS, PartAConfig
from core.sweep import SweepSettings, choose_backend, parse_sweep_config, run_sweep
from core.sweep.backends.wandb import agent_command
from core.sweep.trials import partA_program
from tests.scripted_wandb import ENTITY, EXIT, PROJECT, SWEEP_ID, ScriptedWandbServer, run_command, stop_command

REPO = Path(__file__).resolve().parents[1]
RAW = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"}, "run_cap": 10,
       "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
       "parameters": {"filters": {"values": [4, 8]}, "epochs": {"values": [2, 100]},
                      "lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.01}}}
R1 = {"filters": 4, "epochs": 100, "lr": 0.003}  # stopped after its first finished epoch
R2 = {"filters": 8, "epochs": 2, "lr": 0.003}  # runs to the end


def _no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """W&B pointed at a scripted server with a made-up key; runs log offline; children import this tree."""
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    for var in ("WANDB_DIR", "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_ENTITY",
                "WANDB_PROJECT"):
        monkeypatch.setenv(var, "")  # recorded, so whatever W&B's client sets in this process is undone after
        monkeypatch.delenv(var)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setattr(wandb.wandb_agent.Agent, "POLL_INTERVAL", 0.3)  # W&B's agent waits 5 s between polls
    monkeypatch.chdir(tmp_path)  # W&B's agent runs `python -m experiments.wandb_trial`: any directory works

    def serve(decide):
        server = ScriptedWandbServer(decide)
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        return server

    return serve


def _trial_dir(trials: Path, run_id: str) -> Path | None:
    for path in trials.glob("*/trial.json"):
        if json.loads(path.read_text()).get("wandb_run_id") == run_id:
            return path.parent
    return None


def _epochs_done(run_dir: Path | None) -> int:
    log = run_dir / "metrics.jsonl" if run_dir else None
    return len(log.read_text().splitlines()) if log and log.is_file() else 0


def run_stop_run_exit(trials: Path):
    """The heartbeat script: run r1 → stop r1 after its first epoch → run r2 → exit once r2 is done."""
    phase = {"n": 0, "r2_seen": False}

    def decide(running: dict[str, bool]) -> list[dict]:
        n = phase["n"]
        if n == 0:
            phase["n"] = 1
            return [run_command("r1", R1)]
        if n == 1 and running.get("r1") and _epochs_done(_trial_dir(trials, "r1")) >= 1:
            phase["n"] = 2
            return [stop_command("r1")]
        if n == 2 and not running.get("r1"):
            phase["n"] = 3
            return [run_command("r2", R2)]
        if n == 3:
            phase["r2_seen"] |= bool(running.get("r2"))
            if phase["r2_seen"] and not running.get("r2"):
                phase["n"] = 4
                return [EXIT]
        return []

    return decide


def _inspect(run_dir: Path) -> tuple[dict, list[dict]]:
    """W&B's own reader of an offline run: ``wandb leet inspect`` (summary object, and every record)."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    summary = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                             capture_output=True, text=True, timeout=120, env=env, check=True)
    records = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, timeout=120, env=env, check=True)
    return json.loads(summary.stdout), [json.loads(x) for x in records.stdout.splitlines() if x.strip()]


@pytest.mark.slow
def test_real_agent_stop_mid_run_is_a_prune_and_each_run_carries_the_whole_config(wandb_env, tiny_imagefolder,
                                                                                   tmp_path):
    out_dir = tmp_path / "runs"
    trials = out_dir / "wb" / "trials"
    base = PartAConfig.from_flat({"data_dir": tiny_imagefolder, "device": "cpu", "image_size": 32, "batch_size": 8,
                                  "num_workers": 0, "dense_units": 16})
    settings = SweepSettings(name="wb", out_dir=out_dir, backend="wandb", project=PROJECT, tracker_mode="offline")
    with wandb_env(run_stop_run_exit(trials)) as server:
        summary = run_sweep(parse_sweep_config(RAW), settings, partA_program(base), argv=["--config", "x.yaml"])

    assert not server.unknown, f"W&B's client made calls the script does not answer: {server.unknown}"
    assert server.sent == [run_command("r1", R1), stop_command("r1"), run_command("r2", R2), EXIT], server.sent
    assert server.sweep_configs == [{**RAW, "name": "wb", "program": "experiments/wandb_trial.py",
                                     "command": ["${env}", "${interpreter}", "-m", "experiments.wandb_trial"]}]
    path = f"{ENTITY}/{PROJECT}/{SWEEP_ID}"  # the entity the server put the sweep in
    assert summary.sweep_path == path and summary.agent_command.endswith(f"--backend wandb --resume {path}"), \
        (summary.sweep_path, summary.agent_command)
    assert (out_dir / "wb" / "wandb" / f"sweep-{SWEEP_ID}" / "config-r1.yaml").is_file(), \
        "W&B's agent writes each run's parameters under the sweep folder (WANDB_DIR)"

    r1, r2 = _trial_dir(trials, "r1"), _trial_dir(trials, "r2")
    rows = {r["run_dir"]: r for r in csv.DictReader((out_dir / "wb" / "results.csv").open())}
    seen = {}  # run id -> W&B's reading of its run
    assert set(rows) == {str(r1), str(r2)}, rows
    for run_dir, run_id, values in ((r1, "r1", R1), (r2, "r2", R2)):
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        monitor = yaml.safe_load((run_dir / "config.yaml").read_text())["flat"]["monitor"]  # what picks best.pt
        best = min(history, key=lambda h: (-h["val_acc"] if monitor == "val_acc" else h["val_loss"], h["epoch"]))
        row = rows[str(run_dir)]
        assert float(row["val_acc"]) == pytest.approx(best["val_acc"], abs=1e-6), (row, best)
        assert int(row["epochs_run"]) == len(history) and row["filters"] == str(values["filters"]), row
        payload = torch.load(run_dir / "best.pt", weights_only=True)
        assert payload["epoch"] == best["epoch"], f"{run_id}: best.pt holds epoch {payload['epoch']}, not {best}"
        assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == len(history)
        trial = json.loads((run_dir / "trial.json").read_text())
        assert trial["sweep_id"] == SWEEP_ID and trial["backend"] == "wandb"

        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert [p.name.rsplit("-", 1)[-1] for p in runs] == [run_id], f"one W&B run per trial folder: {runs}"
        assert (runs[0] / f"run-{run_id}.wandb").is_file()
        wb, records = seen[run_id] = _inspect(runs[0])
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        split = json.loads((run_dir / "split.json").read_text())
        config = wb["config"]
        assert set(FLAT_KEYS) <= set(config), f"trainer keys missing in the W&B config: {set(FLAT_KEYS) - set(config)}"
        assert {k: config[k] for k in FLAT_KEYS} == json.loads(json.dumps(resolved["flat"], default=str))
        assert {k: config[k] for k in values} == values, "the swept values, under the sweep's names"
        buffers = ("running_mean", "running_var", "num_batches_tracked")  # batch norm's statistics are not weights
        n_weights = sum(v.numel() for k, v in payload["state_dict"].items() if not k.endswith(buffers))
        assert config["parameter_count"] == n_weights and config["flops"] == resolved["flops"] > 0
        assert config["class_names"] == ["Amphibia", "Aves", "Fungi"] and config["num_classes"] == 3
        assert config["sizes"] == {k: len(split[k]) for k in ("train", "val", "test")}, (config["sizes"], split.keys())
        assert config["preprocessing"] == resolved["preprocessing"] and config["preprocessing"]["image_size"] == 32
        logged = [r["history"]["item"]["val_acc"] for r in records if r["type"] == "history"]
        assert logged == pytest.approx([h["val_acc"] for h in history]), "one val_acc per epoch, under the metric name"
        assert wb["summary"]["val_acc"] == pytest.approx(best["val_acc"]), "the summary holds the best epoch's"
        assert wb["state"] == "finished" and wb["exit_code"] == 0, (wb["state"], wb["exit_code"])
        assert next(r for r in records if r["type"] == "run")["run"]["sweep_id"] == SWEEP_ID

    stopped, done = rows[str(r1)], rows[str(r2)]
    assert stopped["state"] == "PRUNED" and 1 <= int(stopped["epochs_run"]) < R1["epochs"], stopped
    assert "SIGTERM" in stopped["stopped_reason"] and not stopped["test_acc"], stopped
    assert not (r1 / "test_metrics.json").exists(), "a stopped trial gets no test pass"
    assert done["state"] == "COMPLETE" and int(done["epochs_run"]) == 2 and not done["stopped_reason"], done
    test = json.loads((r2 / "test_metrics.json").read_text())
    assert float(done["test_acc"]) == pytest.approx(test["test_acc"], abs=1e-6)
    (wb1, _), (wb2, _) = seen["r1"], seen["r2"]
    assert wb1["summary"]["stopped"] is True and "stopped" in wb1["tags"] and "test_acc" not in wb1["summary"], wb1
    assert wb2["summary"]["test_acc"] == pytest.approx(test["test_acc"]) and "stopped" not in wb2["tags"], wb2
    leftovers = [p for p in out_dir.rglob("offline-run-*") if not any(p.glob("*.wandb"))]
    assert not leftovers, f"empty W&B run folders: {leftovers}"


@pytest.mark.slow
def test_joining_a_sweep_registers_no_new_one(wandb_env, tmp_path):
    settings = SweepSettings(name="wb", out_dir=tmp_path / "runs", backend="wandb", resume=f"team/{PROJECT}/{SWEEP_ID}",
                             tracker_mode="offline")
    with wandb_env(lambda running: [EXIT]) as server:
        summary = run_sweep(parse_sweep_config(RAW), settings, partA_program())
    assert "UpsertSweep" not in server.operations and "CreateAgent" in server.operations, server.operations
    assert summary.sweep_path == f"team/{PROJECT}/{SWEEP_ID}" and summary.records == ()


@pytest.mark.slow
def test_wandb_backend_without_login_is_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k in ("WANDB_MODE", "WANDB_SILENT")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "experiments/partA_sweep.py", "--backend", "wandb", "--out-dir",
                           str(tmp_path / "runs")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert "wandb login" in lines[0] and "WANDB_API_KEY" in lines[0] and "--backend local" in lines[0], lines[0]


@pytest.mark.slow
def test_trial_program_outside_our_agent_says_how_to_start_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INAT_CNN_WANDB")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "experiments.wandb_trial"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "partA_sweep.py --backend wandb" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"resume": ""}, "needs the sweep to join"),
    ({"workers": 2}, "belong to the local backend"),
])
def test_wandb_backend_refuses_local_only_options(monkeypatch, tmp_path, kwargs, match):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    settings = SweepSettings(name="wb", out_dir=tmp_path, backend="wandb", **kwargs)
    with pytest.raises(ValueError, match=match):
        run_sweep(parse_sweep_config(RAW), settings, partA_program())


def test_auto_backend_is_local_without_credentials_and_says_why(monkeypatch, tmp_path, caplog):
    _no_credentials(monkeypatch, tmp_path)
    backend, reason = choose_backend("auto")
    assert backend == "local" and "no W&B credentials" in reason, (backend, reason)


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



def test_the_runs_of_the_agent_find_this_checkout(tmp_path, monkeypatch):
    """W&B's agent starts ``python -m experiments.wandb_trial`` from its own folder: the checkout goes first on
    PYTHONPATH (with whatever PYTHONPATH held), and ``python`` is this interpreter, its output kept per run."""
    from core.sweep.backends.wandb.controller import launcher_environment

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = launcher_environment(tmp_path / "sweep", tmp_path / "trials")
    root = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (root / "experiments" / "wandb_trial.py").is_file() and (root / "core" / "sweep").is_dir(), env
    assert env["PYTHONPATH"].endswith(os.pathsep + "/elsewhere"), env
    shim = Path(env["PATH"].split(os.pathsep)[0]) / "python"
    assert sys.executable in shim.read_text(), shim.read_text()
