"""Storage URLs as users write them: PostgreSQL via psycopg 3, the password from the environment, masked
everywhere it is shown or written, and one clear line for each way of not reaching the database.

Against a real PostgreSQL server (``postgres_server`` in conftest.py) and, for the live view, the real
``optuna-dashboard`` serving a finished study over HTTP on the loopback interface.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from test_sweep_local import RANDOM, StandIn, settings_for

from core.runfiles import mask_secrets, masked_argv
from core.sweep import SweepSettings, parse_sweep_config
from core.sweep.backends.local import StorageError, normalize_url, open_storage, run_local, sqlite_url

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, expected", [
    ("postgresql://sweeper:pw@db.lab:5432/sweeps", "postgresql://sweeper:***@db.lab:5432/sweeps"),
    ("--storage=postgres://u:p@ss@h/db", "--storage=postgres://u:***@h/db"),  # a raw '@' in the password
    ("postgresql+psycopg://u:x@h/db?sslmode=require", "postgresql+psycopg://u:***@h/db?sslmode=require"),
    ("postgresql://h/db?user=u&password=hunter2", "postgresql://h/db?user=u&password=***"),
    ("postgres:/sweeper:pw@host/db", "postgres:/sweeper:***@host/db"),  # a slash missing: still masked
    ("postgresql://sweeper@h/db", "postgresql://sweeper@h/db"),  # nothing to hide
    ("see user@example.org at 10:30", "see user@example.org at 10:30"),
    ("sqlite:////runs/x/optuna.db", "sqlite:////runs/x/optuna.db"),
])
def test_passwords_are_masked_in_any_text(text, expected):
    assert mask_secrets(text) == expected
    assert masked_argv(["prog", "--storage", text]) == ["prog", "--storage", expected]


def test_the_sweep_settings_connect_with_the_password_and_never_show_it(tmp_path):
    url = "postgresql://sweeper:hunter2@db.lab:5432/sweeps"
    settings = SweepSettings(name="pg", out_dir=tmp_path / "runs", storage=url, count=3)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings), repr(settings)
    assert settings.storage_url == url, "the real URL is what the storage is opened with"
    assert settings.shown_url == "postgresql://sweeper:***@db.lab:5432/sweeps"
    default = SweepSettings(name="lite", out_dir=tmp_path / "runs")
    db = tmp_path / "runs" / "lite" / "optuna.db"
    assert default.storage_url == default.shown_url == "sqlite:///" + os.path.realpath(db)
    assert default.trials_dir == Path(os.path.realpath(tmp_path / "runs" / "lite" / "trials"))
    assert not default.must_exist and SweepSettings(name="lite", resume="").must_exist, "--resume alone: must exist"


def test_urls_are_taken_as_users_write_them():
    assert normalize_url("postgresql://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db", "an explicit driver stays"
    for bad, says in [("not a url", "is not a database URL"), ("sqlite://", "names no SQLite file"),
                      ("postgresql://u:secret@h:port/db", "is not a database URL"),
                      ("nosuchdb://u@h/db", "has no dialect 'nosuchdb'")]:
        with pytest.raises(ValueError, match=says) as err:
            normalize_url(bad) if "dialect" not in says else open_storage(bad)
        assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_each_way_of_not_reaching_postgresql_is_one_line_naming_the_fix(postgres_server, monkeypatch):
    s = postgres_server
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens here once the socket is closed
    cases = [
        (f"postgresql://{s.role}:wrong-pw@127.0.0.1:{s.port}/{s.database}", "rejected user 'sweeper'"),
        (f"postgresql://{s.role}@127.0.0.1:{s.port}/{s.database}", "wants a password for user 'sweeper': set "
                                                                    "PGPASSWORD"),
        (f"postgresql://{s.role}:{s.password}@127.0.0.1:{closed}/{s.database}",
         f"cannot reach the PostgreSQL server 127.0.0.1:{closed} (connection refused)"),
        (f"postgresql://{s.role}:{s.password}@127.0.0.1:{s.port}/no_such_db",
         "database 'no_such_db' does not exist on PostgreSQL server"),
    ]
    for url, says in cases:
        with pytest.raises(StorageError) as err:
            open_storage(url)
        message = str(err.value)
        assert says in message, message
        assert "\n" not in message and s.password not in message and "wrong-pw" not in message, message


@pytest.mark.slow
def test_a_missing_driver_names_the_extra_to_install(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None\n"  # psycopg not installed: its import fails
            "from core.sweep.backends.local import open_storage, StorageError\n"
            "try:\n    open_storage('postgresql://u:secret@127.0.0.1:1/db')\n"
            "except StorageError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert "driver for postgresql+psycopg://u:***@127.0.0.1:1/db is not installed" in out, out
    assert 'pip install -e ".[postgres]"' in out and "secret" not in out, out


@pytest.mark.slow
def test_the_password_may_come_from_pgpassword_or_a_pgpass_file(postgres_server, postgres_url, tmp_path,
                                                                   monkeypatch):
    s, cfg = postgres_server, parse_sweep_config(RANDOM)
    bare = postgres_url.replace(f":{s.password}@", "@")
    assert s.password not in bare
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    monkeypatch.setenv("PGPASSWORD", s.password)
    settings = settings_for(tmp_path, 1)
    run_local(cfg, replace(settings, storage=bare), StandIn(tmp_path / "log.jsonl"))
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{s.port}:*:{s.role}:{s.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    run_local(cfg, replace(settings, storage=bare, count=2), StandIn(tmp_path / "log.jsonl"))
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_no_file_of_a_postgresql_sweep_and_no_output_line_holds_the_password(postgres_server, postgres_url,
                                                                                tiny_imagefolder, tmp_path):
    raw = {"name": "secret-check", "method": "grid", "metric": {"name": "val_acc", "goal": "maximize"},
           "parameters": {"image_size": {"value": 32}, "epochs": {"value": 1}, "batch_size": {"value": 8},
                          "filters": {"value": 4}, "dense_units": {"value": 8}, "num_workers": {"value": 0},
                          "activation": {"values": ["relu", "gelu"]}}}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "experiments" / "partA_sweep.py"), "--config", str(config), "--data-dir",
           str(tiny_imagefolder), "--out-dir", str(out), "--device", "cpu", "--wandb-mode", "offline",
           "--storage", postgres_url, "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=900)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    secret = postgres_server.password.encode()
    assert secret not in done.stdout and secret not in done.stderr, "stdout/stderr show the password"
    assert b"sweeper:***@127.0.0.1" in done.stdout, done.stdout.decode()[-2000:]
    files = [p for p in (out / "secret-check").rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any("wandb" in p.parts for p in files), files
    leaks = [str(p) for p in files if secret in p.read_bytes()]
    assert leaks == [], f"files holding the password: {leaks}"
    trial_cfg = yaml.safe_load(next((out / "secret-check" / "trials").glob("0-*/config.yaml")).read_text())
    assert any("sweeper:***@" in a for a in trial_cfg["command"]), trial_cfg["command"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_optuna_dashboard_serves_a_finished_sweep_over_http(tmp_path):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is the [dashboard] extra")
    cfg = parse_sweep_config(RANDOM)
    run_local(cfg, settings_for(tmp_path, 3, name="live"), StandIn(tmp_path / "log.jsonl"))
    port = _free_port()
    # the command docs/scaling.md shows, installed beside this interpreter (found even when the environment
    # is not activated, e.g. the suite started as /path/to/venv/bin/python -m pytest)
    scripts = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    command = shutil.which("optuna-dashboard", path=scripts)
    assert command, f"optuna-dashboard is installed but its command is neither beside {sys.executable} nor on PATH"
    dashboard = subprocess.Popen([command, sqlite_url(tmp_path / "optuna.db"),
                                  "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None, dashboard.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 120 s"
                time.sleep(0.3)
        study = next(s for s in studies if s["study_name"] == "live")
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete"] * 3, [t["state"] for t in trials]
        logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
        acts = [next(p["param_external_value"] for p in t["params"] if p["name"] == "act") for t in trials]
        assert acts == [r["values"]["act"] for r in logged], (acts, logged)
    finally:
        dashboard.terminate()
        dashboard.wait(30)
