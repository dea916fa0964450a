"""Sweeps that scale out, against real storage: several OS processes on one SQLite file or one PostgreSQL
study (a real server, ``postgres_server`` in conftest.py), a grid shared by processes, and a real
``kill -9`` resume compared with an uninterrupted run.

The trial program is the deterministic stand-in of ``test_sweep_local.py``: the thing under test is the
sweep machinery (draws, budget, storage), not training. Each process is a separate ``python`` started
with :func:`subprocess.Popen`, as a user starts them in several terminals or on several machines; a
start barrier makes them ask for trials at the same time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from core.sweep import SweepSettings, parse_sweep_config
from core.sweep.backends.local import open_study, records_from_study, run_local, sqlite_url

pytestmark = pytest.mark.slow  # every test here starts processes (workers, PostgreSQL, kill -9)

optuna.logging.set_verbosity(optuna.logging.WARNING)
TESTS_DIR = Path(__file__).resolve().parent

RANDOM9 = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"}, "run_cap": 9,
           "parameters": {"act": {"values": ["relu", "gelu", "silu"]},
                          "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
                          "epochs": {"value": 2}}}
GRID6 = {"method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
         "parameters": {"act": {"values": ["relu", "gelu", "silu"]}, "bn": {"values": [True, False]},
                        "epochs": {"value": 2}}}


def settings(storage: str, folder: Path, budget: int, name: str = "scale", **kw) -> SweepSettings:
    """Study ``name`` in ``storage``, trial folders under ``folder/<name>/trials`` (one folder per process)."""
    from test_sweep_local import settings_for

    return settings_for(folder, budget, name, storage=storage, **kw)


def process_main(raw_json: str, storage: str, folder: str, budget: int, barrier: str, parties: int,
                 sleep: float) -> None:
    """One sweep process (run in a subprocess): wait at the barrier, then run the sweep."""
    from test_sweep_local import StandIn

    cfg, folder_path = parse_sweep_config(json.loads(raw_json)), Path(folder)
    gate = Path(barrier)
    gate.mkdir(exist_ok=True)
    (gate / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(gate.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.05)
    run_local(cfg, settings(storage, folder_path, budget), StandIn(folder_path / "log.jsonl", sleep=sleep))


def start_process(raw: dict, storage: str, folder: Path, budget: int, parties: int, sleep: float = 0.2,
                  **popen) -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_sweep_scale as t; "
            f"t.process_main({json.dumps(raw)!r}, {storage!r}, {str(folder)!r}, {budget}, "
            f"{str(folder / 'barrier')!r}, {parties}, {sleep})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **popen)


def run_processes(raw: dict, storage: str, folder: Path, budget: int, parties: int = 3) -> list[dict]:
    procs = [start_process(raw, storage, folder, budget, parties) for _ in range(parties)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"a sweep process failed: {err.decode()[-3000:]}"
    log = folder / "log.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def check_nine_distinct(raw: dict, storage: str, folder: Path) -> None:
    runs = run_processes(raw, storage, folder, budget=9)
    configs = [(r["values"]["act"], r["values"]["lr"]) for r in runs]
    assert len(runs) == 9, f"run_cap 9 over 3 processes trains exactly 9 trials, trained {len(runs)}: {configs}"
    assert len(set(configs)) == 9, f"9 distinct configurations, got {configs}"
    assert sorted(r["number"] for r in runs) == list(range(9)), [r["number"] for r in runs]
    assert len({r["pid"] for r in runs}) >= 2, "the processes shared the work"
    cfg = parse_sweep_config(raw)
    records = records_from_study(open_study(cfg, settings(storage, folder, 9)), cfg)
    assert [(r.number, r.state) for r in records] == [(n, "COMPLETE") for n in range(9)], records


def test_three_processes_on_one_postgresql_study_run_exactly_nine_distinct_trials(postgres_url, tmp_path):
    check_nine_distinct(RANDOM9, postgres_url, tmp_path)


def test_three_processes_on_one_sqlite_file_run_exactly_nine_distinct_trials(tmp_path):
    check_nine_distinct(RANDOM9, sqlite_url(tmp_path / "optuna.db"), tmp_path)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_six_point_grid_on_three_processes_runs_each_point_once(backend, tmp_path, request):
    storage = (sqlite_url(tmp_path / "optuna.db") if backend == "sqlite"
               else request.getfixturevalue("postgres_url"))
    runs = run_processes(GRID6, storage, tmp_path, budget=6)
    points = sorted((r["values"]["act"], r["values"]["bn"]) for r in runs)
    expected = sorted((a, b) for a in ("relu", "gelu", "silu") for b in (True, False))
    assert points == expected, f"each of the 6 grid points exactly once: {points}"


def blocked_main(raw_json: str, storage: str, folder: str, budget: int, block: int, workers: int) -> None:
    """A sweep (run in a subprocess) whose trial ``block`` hangs until the test kills the process."""
    from test_sweep_local import StandIn

    folder_path = Path(folder)
    run_local(parse_sweep_config(json.loads(raw_json)), settings(storage, folder_path, budget, workers=workers),
              StandIn(folder_path / "log.jsonl", block_number=block, marker=folder_path / "marker"))


def start_blocked(raw: dict, storage: str, folder: Path, budget: int, block: int, workers: int = 1):
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_sweep_scale as t; "
            f"t.blocked_main({json.dumps(raw)!r}, {storage!r}, {str(folder)!r}, {budget}, {block}, {workers})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (folder / "marker").exists():
        assert proc.poll() is None, f"the sweep died early: {proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, f"the sweep never reached trial {block}"
        time.sleep(0.1)
    return proc


def configs(storage: str, folder: Path, raw: dict, budget: int) -> dict[int, dict]:
    cfg = parse_sweep_config(raw)
    records = records_from_study(open_study(cfg, settings(storage, folder, budget)), cfg)
    assert all(r.state == "COMPLETE" for r in records), [(r.number, r.state) for r in records]
    return {r.number: dict(r.hyperparameters) for r in records}


@pytest.mark.parametrize("raw", [RANDOM9, GRID6], ids=["random", "grid"])
def test_a_sweep_resumed_after_kill_9_draws_what_an_uninterrupted_run_draws(raw, tmp_path):
    from test_sweep_local import StandIn

    cfg, budget = parse_sweep_config(raw), 5
    ref, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    ref.mkdir()
    killed.mkdir()
    run_local(cfg, settings(sqlite_url(ref / "optuna.db"), ref, budget), StandIn(ref / "log.jsonl"))
    proc = start_blocked(raw, sqlite_url(killed / "optuna.db"), killed, budget, block=2)
    os.kill(proc.pid, signal.SIGKILL)  # a real kill -9, in the middle of trial 2
    proc.wait()
    run_local(cfg, settings(sqlite_url(killed / "optuna.db"), killed, budget), StandIn(killed / "log.jsonl"))
    expected = configs(sqlite_url(ref / "optuna.db"), ref, raw, budget)
    got = configs(sqlite_url(killed / "optuna.db"), killed, raw, budget)
    assert sorted(got) == list(range(budget)), got
    assert got == expected, f"trial n after kill -9 + resume must equal trial n of an uninterrupted run:\n" \
                            f"resumed {got}\nuninterrupted {expected}"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker pids from /proc (Linux)")
def test_kill_9_of_the_parent_stops_its_workers_within_seconds_and_a_rerun_resumes(tmp_path):
    from test_sweep_local import StandIn

    storage = sqlite_url(tmp_path / "optuna.db")
    proc = start_blocked(RANDOM9, storage, tmp_path, budget=4, block=1, workers=2)
    workers = _children(proc.pid)
    assert workers, "the parent has worker processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), f"workers {workers} outlived their killed parent by 10 s"
    log = tmp_path / "log.jsonl"
    before = len(log.read_text().splitlines())
    run_local(parse_sweep_config(RANDOM9), settings(storage, tmp_path, 4), StandIn(log))
    rerun = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert 1 in [r["number"] for r in rerun] and all(r["resume"] for r in rerun if r["number"] == 1), rerun
    assert sorted(configs(storage, tmp_path, RANDOM9, 4)) == [0, 1, 2, 3]


class GpuRecorder:
    """Records which GPUs the worker process that runs the trial may see (picklable for spawned workers)."""

    def __init__(self, log: Path, barrier: Path) -> None:
        from test_sweep_local import StandIn

        self.inner = StandIn(log, barrier=barrier)
        self.log = log.with_suffix(".gpus")

    def configure(self, values):
        return self.inner.configure(values)

    def run(self, config, run_dir, **kwargs):
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')}\n")
        return self.inner.run(config, run_dir, **kwargs)


def test_workers_on_a_multi_gpu_machine_get_one_gpu_each(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")  # the GPUs this sweep may use, as a user would restrict it
    recorder = GpuRecorder(tmp_path / "log.jsonl", tmp_path / "barrier")
    run_local(parse_sweep_config(RANDOM9), settings(sqlite_url(tmp_path / "optuna.db"), tmp_path, 2, workers=2),
              recorder)
    seen = dict(line.split() for line in recorder.log.read_text().splitlines())
    assert sorted(seen.values()) == ["7", "9"], f"worker 0 sees GPU 7 only, worker 1 GPU 9 only: {seen}"
