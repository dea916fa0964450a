"""The local (Optuna) backend with a stand-in trial: budget, resume after kill -9, shared storage, pruning.

The stand-in is a deterministic function of the parameters that "trains" for ``epochs`` steps, so the
search, storage and crash logic is tested in seconds. It appends one JSON line per started trial to a
log file (O_APPEND: safe from several processes), which is how the tests see who ran what.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from core.sweep import SweepSettings, parse_sweep_config
from core.sweep.backends.local import HOST, open_study, records_from_study, recover_dead_trials, run_local, sqlite_url
from core.train import EpochStats, RunResult, StopTraining

optuna.logging.set_verbosity(optuna.logging.WARNING)
TESTS_DIR = Path(__file__).resolve().parent

RANDOM = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
          "parameters": {"act": {"values": ["relu", "gelu", "silu"]},
                         "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                         "epochs": {"value": 3}}}
GRID = {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {"act": {"values": ["relu", "gelu", "silu"]}, "bn": {"values": [True, False]},
                       "epochs": {"value": 2}}}


def score(values) -> float:
    bonus = {"relu": 0.0, "gelu": 0.2, "silu": 0.1}.get(values.get("act"), 0.0)
    return 0.3 + bonus + (0.1 if values.get("bn") else 0.0) + 0.02 * math.log10(values.get("lr", 1e-3) / 1e-4)


def number_of(run_dir: Path) -> int:
    """The trial number the backend gave a run: its folder is ``trials/<number>-<hash>/``."""
    return int(Path(run_dir).name.split("-")[0])


def report_epoch(on_epoch_end, epoch: int, epochs: int, val_acc: float) -> bool:
    """Hand one epoch to the sweep as the trainer does; True when the sweep stops the run (a prune)."""
    try:
        on_epoch_end(epoch, EpochStats(epoch=epoch, epochs=epochs, train_loss=1.0, train_acc=val_acc,
                                       val_loss=1.0 - val_acc, val_acc=val_acc, lr=1e-3, seconds=0.0,
                                       images_per_sec=0.0, best_val_acc=val_acc))
    except StopTraining:
        return True
    return False


class StandIn:
    """Picklable stand-in trial program (workers are spawned processes): the drawn point is its config."""

    def __init__(self, log: Path, *, block_number: int | None = None, marker: Path | None = None,
                 sleep: float = 0.0, barrier: Path | None = None) -> None:
        self.log, self.block_number, self.marker, self.sleep = log, block_number, marker, sleep
        self.barrier = barrier  # with 2 workers: each waits until both are inside a trial (true overlap)

    def _wait_for_both_workers(self) -> None:
        self.barrier.mkdir(exist_ok=True)
        (self.barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(self.barrier.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    def configure(self, values) -> dict:
        return dict(values)

    def run(self, config: dict, run_dir: Path, *, on_epoch_end, resume: bool = False, **_) -> RunResult:
        number = number_of(run_dir)
        line = json.dumps({"number": number, "pid": os.getpid(), "values": config, "resume": resume,
                           "run_dir": str(run_dir)})
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.barrier is not None:
            self._wait_for_both_workers()
        if number == self.block_number:
            self.marker.write_text(str(os.getpid()))
            time.sleep(120)  # killed here
        time.sleep(self.sleep)
        target, acc, epoch, epochs = score(config), 0.0, 0, int(config.get("epochs", 3))
        for epoch in range(1, epochs + 1):
            acc = target * epoch / epochs
            if report_epoch(on_epoch_end, epoch, epochs, acc):
                break
        best = run_dir / "best.pt"
        best.write_bytes(json.dumps(config).encode())
        history = tuple({"epoch": e, "val_acc": target * e / epochs} for e in range(1, epoch + 1))
        return RunResult(best_val_acc=acc, best_epoch=epoch, history=history, best_path=best, test_acc=acc - 0.05,
                         parameter_count=1000 + number, flops=2000)



def settings_for(tmp_path: Path, budget: int, name: str = "s", storage: str | None = None, **kw) -> SweepSettings:
    """Study ``name`` in ``storage`` (default ``tmp_path/optuna.db``); trial folders in ``tmp_path/<name>/trials``."""
    return SweepSettings(name=name, out_dir=tmp_path, backend="local", count=budget,
                         storage=storage or sqlite_url(tmp_path / "optuna.db"), tracker_mode="disabled", **kw)


def started(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_count_is_honoured_across_reruns(tmp_path):
    cfg, log = parse_sweep_config(RANDOM), tmp_path / "log.jsonl"
    run_local(cfg, settings_for(tmp_path, 2), StandIn(log))
    run_local(cfg, settings_for(tmp_path, 2), StandIn(log))
    assert len(started(log)) == 2, f"a rerun with the same --count must train nothing new: {started(log)}"
    run_local(cfg, settings_for(tmp_path, 4), StandIn(log))
    records = records_from_study(open_study(cfg, settings_for(tmp_path, 4)), cfg)
    assert [r.number for r in records] == [0, 1, 2, 3] and all(r.state == "COMPLETE" for r in records), records
    assert all(r.run_dir.parent == tmp_path / "s" / "trials" and r.run_dir.name.startswith(f"{r.number}-")
               for r in records), [r.run_dir for r in records]
    assert all(abs(r.objective - score(r.hyperparameters)) < 1e-9 for r in records), \
        "the trial's val_acc is the objective"


def _blocking_run(db_dir: str) -> None:  # runs in a subprocess that the test kills
    tmp = Path(db_dir)
    run_local(parse_sweep_config(RANDOM), settings_for(tmp, 4),
              StandIn(tmp / "log.jsonl", block_number=2, marker=tmp / "marker"))


@pytest.mark.slow
def test_resume_after_kill_9_reruns_the_interrupted_trial_and_keeps_the_others(tmp_path):
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_sweep_local as t; " \
           f"t._blocking_run({str(tmp_path)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (tmp_path / "marker").exists():
        assert proc.poll() is None, f"worker died early: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the worker never reached trial 2"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = parse_sweep_config(RANDOM)
    before = {t.number: t.state.name for t in open_study(cfg, settings_for(tmp_path, 4)).trials}
    assert before == {0: "COMPLETE", 1: "COMPLETE", 2: "RUNNING"}, f"state after kill -9: {before}"

    log = tmp_path / "log.jsonl"
    first = started(log)
    run_local(cfg, settings_for(tmp_path, 4), StandIn(log))  # the same command again
    rerun = started(log)[len(first):]
    assert [r["number"] for r in rerun] == [2, 3], f"only the killed trial and the missing one run: {rerun}"
    assert rerun[0]["values"] == first[2]["values"], "the killed trial re-runs with the same parameters"
    assert rerun[0]["run_dir"] == first[2]["run_dir"] and rerun[0]["resume"], "in its old folder, resume=True"
    study = open_study(cfg, settings_for(tmp_path, 4))
    states = {t.number: t.state.name for t in study.trials}
    assert states[2] == "FAIL" and list(states.values()).count("COMPLETE") == 4, f"Optuna trials: {states}"
    records = records_from_study(study, cfg)
    assert [(r.number, r.state) for r in records] == [(n, "COMPLETE") for n in range(4)], records
    assert records[2].retry_of == 2


@pytest.mark.slow
def test_two_workers_share_a_grid_without_running_a_point_twice(tmp_path):
    cfg, log = parse_sweep_config(GRID), tmp_path / "log.jsonl"
    run_local(cfg, settings_for(tmp_path, cfg.grid_size(), workers=2), StandIn(log, sleep=0.2, barrier=tmp_path / "b"))
    runs = started(log)
    points = [(r["values"]["act"], r["values"]["bn"]) for r in runs]
    assert len(points) == 6 and len(set(points)) == 6, f"each of the 6 grid points exactly once: {points}"
    assert len({r["pid"] for r in runs}) == 2, "both worker processes took trials"
    records = records_from_study(open_study(cfg, settings_for(tmp_path, 6)), cfg)
    assert len(records) == 6 and all(r.state == "COMPLETE" for r in records)


@pytest.mark.slow
def test_two_workers_never_exceed_the_budget(tmp_path):
    cfg, log = parse_sweep_config(RANDOM), tmp_path / "log.jsonl"
    run_local(cfg, settings_for(tmp_path, 3, workers=2), StandIn(log, sleep=0.2, barrier=tmp_path / "b"))
    assert len(started(log)) == 3, f"budget 3 across two workers, trained {len(started(log))}"


def test_hyperband_prunes_weak_trials_and_records_them(tmp_path):
    raw = {**GRID, "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
           "parameters": {**GRID["parameters"], "epochs": {"value": 4}}}
    cfg = parse_sweep_config(raw)
    run_local(cfg, settings_for(tmp_path, 6), StandIn(tmp_path / "log.jsonl"))
    records = records_from_study(open_study(cfg, settings_for(tmp_path, 6)), cfg)
    pruned = [r for r in records if r.state == "PRUNED"]
    assert pruned, f"some of 6 trials with different targets are pruned: {[(r.number, r.state) for r in records]}"
    assert all(r.result.epochs_run < 4 and r.objective is not None for r in pruned), \
        "pruned trials keep their partial metric"


def test_a_changed_config_or_a_missing_resume_target_is_an_error(tmp_path):
    run_local(parse_sweep_config(RANDOM), settings_for(tmp_path, 1), StandIn(tmp_path / "log.jsonl"))
    changed = {**RANDOM, "parameters": {**RANDOM["parameters"], "act": {"values": ["relu"]}}}
    with pytest.raises(ValueError, match="different config"):
        run_local(parse_sweep_config(changed), settings_for(tmp_path, 1), StandIn(tmp_path / "log.jsonl"))
    with pytest.raises(ValueError, match="--resume: no sweep named 'other'"):
        run_local(parse_sweep_config(RANDOM), settings_for(tmp_path, 1, "other", resume=""),
                  StandIn(tmp_path / "log.jsonl"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_running_trial_of_a_dead_process_is_failed_and_requeued(tmp_path):
    cfg = parse_sweep_config(RANDOM)
    study = open_study(cfg, settings_for(tmp_path, 3))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ghost = study.ask()
    ghost.suggest_categorical("act", ["relu", "gelu", "silu"])
    ghost.set_user_attr("worker", {"host": HOST, "pid": dead.pid})
    ghost.set_user_attr("values", {"act": "relu"})
    alive = study.ask()  # same host, this (live) process: must be left alone
    alive.set_user_attr("worker", {"host": HOST, "pid": os.getppid()})
    assert recover_dead_trials(study) == [ghost.number]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "RUNNING", "WAITING"], states
    assert study.get_trials()[2].system_attrs["failed_trial"] == ghost.number
    assert recover_dead_trials(study) == [], "a trial is re-queued once"


def test_an_interrupted_trial_is_requeued_on_the_next_run(tmp_path):
    cfg, log = parse_sweep_config(RANDOM), tmp_path / "log.jsonl"

    class Interrupt(StandIn):
        def run(self, config, run_dir, **kwargs):
            super().run(config, run_dir, **kwargs)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(cfg, settings_for(tmp_path, 2), Interrupt(log))
    run_local(cfg, settings_for(tmp_path, 2), StandIn(log))
    runs = started(log)
    assert [r["number"] for r in runs] == [0, 0, 1], f"Ctrl-C'd trial 0 re-runs first: {runs}"
    assert runs[1]["values"] == runs[0]["values"] and runs[1]["resume"]
