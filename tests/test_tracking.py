"""core.train.tracking: mode resolution, an offline run read back with wandb's own tool, disabled = nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types

import pytest

from core.train import Tracker, has_wandb_credentials, resolve_mode, tracking

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 chars: the shape of a W&B API key


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No W&B env, a HOME without a netrc: nothing but the test decides the mode."""
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL",
                "NETRC", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_mode_resolution(clean_env, monkeypatch, caplog):
    assert resolve_mode("auto") == "offline", "no credentials and no WANDB_MODE must mean offline"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto") == "online", "WANDB_API_KEY set must mean online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled", "WANDB_MODE=disabled must be respected"
    assert resolve_mode("offline") == "offline", "an explicit mode beats WANDB_MODE"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline", "WANDB_MODE=dryrun is W&B's old name for offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY")
    with caplog.at_level(logging.WARNING, logger="core.train.tracking"):
        assert resolve_mode("online") == "offline", "online without credentials must fall back to offline"
    assert "wandb sync" in caplog.text, "the fallback warning should say how to upload later"
    with pytest.raises(ValueError, match=r"unknown W&B mode 'cloud'; expected one of \['auto', 'online'"):
        resolve_mode("cloud")


def test_netrc_credentials_are_found_for_the_wandb_host_only(clean_env):
    netrc_file = clean_env / ".netrc"
    netrc_file.write_text(f"machine example.com\n  login user\n  password {FAKE_KEY}\n")
    netrc_file.chmod(0o600)
    assert not has_wandb_credentials(), "a netrc entry for another host is not a W&B login"
    netrc_file.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    assert has_wandb_credentials(), "`wandb login` writes a netrc entry for api.wandb.ai; it must count"


@pytest.mark.slow
def test_offline_run_is_readable_with_wandb_tooling(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # present, but offline was asked for: must never be written
    run_dir = tmp_path / "run"
    config = {"lr": 0.01, "filters": 8, "wandb_api_key": FAKE_KEY, "nested": {"token": "x", "depth": 2}}
    tracker = Tracker.start(run_dir=run_dir, name="unit-offline", mode="offline", group="tests", job_type="partA",
                            config=config)
    assert tracker.mode == "offline" and tracker.active, f"tracker mode {tracker.mode!r}"
    tracker.log({"val_acc": 0.25, "train_loss": 1.5}, step=1)
    tracker.log({"val_acc": 0.5, "train_loss": 1.0}, step=2)
    tracker.set_summary({"best_val_acc": 0.5, "test_acc": 0.45, "params": 1234, "flops": 5678})
    tracker.finish()
    tracker.finish()  # idempotent

    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run folder under {run_dir / 'wandb'}, found {runs}"
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(runs[0])],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    info = json.loads(out)
    summary = info["summary"]
    assert (summary["val_acc"], summary["best_val_acc"], summary["test_acc"]) == (0.5, 0.5, 0.45), \
        f"summary read back from the .wandb file: {summary}"
    assert (summary["params"], summary["flops"], info["step"]) == (1234, 5678, 2), f"read back: {info}"
    assert info["config"]["lr"] == 0.01 and "wandb_api_key" not in info["config"], \
        f"config should hold lr and no credential keys: {info['config']}"
    assert info["config"]["nested"] == {"depth": 2}, "credential-looking keys must be dropped at any depth"
    assert (info["state"], info["exit_code"], info["name"]) == ("finished", 0, "unit-offline"), f"run state: {info}"
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == [], f"the API key was written to {leaked}"
    assert (run_dir / tracking.RUN_ID_FILE).read_text().strip() == info["run_id"], "run id file should match"


def test_disabled_writes_nothing_and_never_imports_wandb(clean_env, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises ImportError
    run_dir = tmp_path / "run"
    tracker = Tracker.start(run_dir=run_dir, name="off", config={"a": 1}, mode="disabled")
    tracker.log({"val_acc": 1.0}, step=1)
    tracker.log_image("grid", tmp_path / "missing.png")
    tracker.log_table("t", ["a"], [[1]])
    tracker.set_summary({"test_acc": 1.0})
    tracker.finish()
    assert tracker.mode == "disabled" and not tracker.active, "disabled tracker must be inactive"
    assert not run_dir.exists(), f"disabled mode created {list(run_dir.rglob('*'))}"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert Tracker.start(run_dir=run_dir, name="env", config={}).mode == "disabled", "WANDB_MODE=disabled ignored"
    assert not run_dir.exists(), "WANDB_MODE=disabled must not create the run folder either"


def test_wandb_failures_never_raise(clean_env, monkeypatch, tmp_path, caplog):
    def broken_init(**kwargs):
        raise RuntimeError("service crashed")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=broken_init))
    with caplog.at_level(logging.WARNING, logger="core.train.tracking"):
        tracker = Tracker.start(run_dir=tmp_path, name="x", config={}, mode="offline")
    assert tracker.mode == "disabled", "a failed init must degrade to a no-op tracker"
    assert "W&B init failed (RuntimeError: service crashed)" in caplog.text, caplog.text

    class FlakyRun:
        id, url, dir = "abc", None, str(tmp_path / "wandb" / "offline-run-x" / "files")
        summary = {}

        def log(self, *a, **k):
            raise ConnectionError("network down")

        def finish(self, exit_code=0):
            raise ConnectionError("network down")

    flaky = Tracker(FlakyRun(), "offline", tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="core.train.tracking"):
        flaky.log({"a": 1}, step=1)
        flaky.log({"a": 2}, step=2)
        flaky.finish()
    warnings = [r.getMessage() for r in caplog.records if "network down" in r.getMessage()]
    assert len(warnings) == 2, f"expected one warning for log (then quiet) and one for finish, got {warnings}"
