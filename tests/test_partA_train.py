"""core.partA.run (PartAConfig.from_flat, run_partA) and experiments/partA_train.py on tiny image folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.data import DataConfig, Preprocessing, make_loaders
from core.partA import FLAT_KEYS, PartAConfig, run_partA
from core.runfiles import read_jsonl, read_yaml
from core.train import StopTraining, TrainConfig, evaluate, load_checkpoint, load_model
from experiments import partA_train

# ---------------------------------------------------------------- PartAConfig.from_flat

def test_from_flat_routes_every_contract_key_to_its_section():
    cfg = PartAConfig.from_flat({
        "filters": 16, "organisation": "double", "kernel_size": 5, "activation": "GELU", "batch_norm": True,
        "dropout": 0.3, "dense_units": 128, "augment": True, "image_size": 96, "lr": 3e-4, "weight_decay": 1e-4,
        "batch_size": 16, "optimizer": "sgd", "epochs": 7, "scheduler": "cosine", "label_smoothing": 0.1,
    })
    assert (cfg.filters, cfg.organisation, cfg.kernel_size, cfg.activation) == (16, "double", 5, "gelu"), cfg
    assert (cfg.batch_norm, cfg.dropout, cfg.dense_units) == (True, 0.3, 128), cfg
    assert (cfg.data.augment, cfg.data.image_size, cfg.data.batch_size) == (True, 96, 16), cfg.data
    t = cfg.train
    assert (t.lr, t.weight_decay, t.optimizer, t.epochs, t.scheduler, t.label_smoothing) == \
        (3e-4, 1e-4, "sgd", 7, "cosine", 0.1), t


def test_from_flat_coerces_what_sweep_files_produce():
    cfg = PartAConfig.from_flat({"lr": "1e-3", "epochs": 3.0, "batch_norm": "true", "augment": 0,
                                 "organisation": "16,32,32,64,64", "kernel_size": [3, 3, 5, 5, 7],
                                 "grad_clip": 0, "patience": "none", "device": "cpu"})
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3, "'1e-3' and 3.0 must become 0.001 and 3"
    assert cfg.batch_norm is True and cfg.data.augment is False, "'true' / 0 must become booleans"
    assert cfg.organisation == (16, 32, 32, 64, 64), f"custom organisation: {cfg.organisation}"
    assert cfg.kernel_size == (3, 3, 5, 5, 7), f"kernel list: {cfg.kernel_size}"
    assert cfg.train.grad_clip is None and cfg.train.patience is None, "0 / 'none' mean off"
    assert cfg.train.device == "cpu", "device must reach the training config"


def test_from_flat_keeps_the_base_and_rejects_unknown_keys():
    base = PartAConfig(filters=8, data=DataConfig(image_size=64, max_per_class=5), train=TrainConfig(epochs=2))
    cfg = PartAConfig.from_flat({"lr": 0.01}, base=base)
    assert (cfg.filters, cfg.data.max_per_class, cfg.train.epochs, cfg.train.lr) == (8, 5, 2, 0.01), cfg
    with pytest.raises(ValueError, match=r"unknown Part A parameter\(s\) \['learning_rate'\]; known keys: \["):
        PartAConfig.from_flat({"learning_rate": 0.1})


@pytest.mark.parametrize(("params", "message"), [
    ({"optimizer": "rmsprop"}, "TrainConfig.optimizer='rmsprop' is invalid"),
    ({"activation": "swoosh"}, "unknown activation 'swoosh'"),
    ({"organisation": "triple"}, "unknown filter organisation 'triple'"),
    ({"filters": "many"}, "filters: expected an integer, got 'many'"),
    ({"batch_norm": "maybe"}, "batch_norm: expected true/false"),
    ({"image_size": 16}, "image"),  # five 2x2 pools do not fit in 16 px
])
def test_bad_flat_values_fail_at_construction(params, message):
    with pytest.raises(ValueError, match=message):
        PartAConfig.from_flat({"image_size": 64, **params} if "image_size" not in params else params)


flat_values = st.fixed_dictionaries({}, optional={
    "filters": st.integers(1, 64), "organisation": st.sampled_from(["same", "double", "half"]),
    "kernel_size": st.sampled_from([1, 3, 5]), "activation": st.sampled_from(["relu", "gelu", "mish"]),
    "batch_norm": st.booleans(), "dropout": st.floats(0, 0.9), "dense_units": st.integers(1, 512),
    "augment": st.booleans(), "lr": st.floats(1e-5, 1.0), "batch_size": st.integers(1, 256),
    "optimizer": st.sampled_from(["adam", "adamw", "sgd", "nadam"]), "epochs": st.integers(1, 50),
    "scheduler": st.sampled_from(["constant", "cosine", "onecycle", "step"]), "label_smoothing": st.floats(0, 0.5),
    "weight_decay": st.floats(0, 0.1), "seed": st.integers(0, 2**31),
})


@given(flat_values)
def test_flat_round_trip(params):
    cfg = PartAConfig.from_flat(params, base=PartAConfig(data=DataConfig(image_size=64)))
    assert PartAConfig.from_flat(cfg.to_flat()) == cfg, "from_flat(to_flat()) must give the same config"
    assert PartAConfig.from_dict(cfg.to_dict()) == cfg, "from_dict(to_dict()) must give the same config"
    assert set(cfg.to_flat()) == set(FLAT_KEYS), "to_flat must produce every flat key"


# ---------------------------------------------------------------- run_partA

def _tiny_cfg(data_dir: Path, **train) -> PartAConfig:
    return PartAConfig(filters=4, dense_units=16, data=DataConfig(data_dir=data_dir, image_size=32, batch_size=8),
                       train=TrainConfig(**{"epochs": 2, "device": "cpu", "lr": 3e-3, **train}))


def test_run_parta_writes_a_complete_run_folder(tiny_imagefolder, tmp_path):
    run_dir = tmp_path / "run"
    result = run_partA(_tiny_cfg(tiny_imagefolder), run_dir, tracker_mode="disabled")
    for name in ("config.yaml", "split.json", "metrics.jsonl", "best.pt", "last.pt", "test_metrics.json"):
        assert (run_dir / name).is_file(), f"run folder lacks {name}: {sorted(p.name for p in run_dir.iterdir())}"
    assert not (run_dir / "wandb").exists(), "disabled tracking must not create a wandb folder"
    assert result.epochs_run == 2 and len(read_jsonl(run_dir / "metrics.jsonl")) == 2, "two epochs expected"

    config = read_yaml(run_dir / "config.yaml")
    assert config["class_names"] == ["Amphibia", "Aves", "Fungi"], f"class names: {config['class_names']}"
    assert (config["params"], config["flops"]) == (result.parameter_count, result.flops), "counts differ from RunResult"
    assert result.parameter_count == sum(p.numel() for p in load_model(result.best_path)[0].parameters()), \
        "params in RunResult must equal the model's parameter count"
    assert PartAConfig.from_dict(config["config"]) == _tiny_cfg(tiny_imagefolder), "config.yaml does not round-trip"

    test = json.loads((run_dir / "test_metrics.json").read_text())
    model, payload = load_model(result.best_path)
    assert payload["epoch"] == result.best_epoch, "best.pt must hold the best epoch"
    assert payload["metrics"]["test_acc"] == test["test_acc"] == result.test_acc, "test acc disagrees"
    prep = Preprocessing.from_dict(payload["preprocessing"])  # what a later evaluation script does
    loaders = make_loaders(DataConfig(data_dir=tiny_imagefolder, image_size=32, batch_size=8), preprocessing=prep)
    again = evaluate(model, loaders.test, "cpu")
    assert again.total == 12 and again.acc == pytest.approx(result.test_acc), \
        f"re-evaluating best.pt gives {again.acc} on {again.total} images, run said {result.test_acc}"


def test_run_summary_val_acc_is_the_best_epochs(tiny_imagefolder, tmp_path, monkeypatch):
    """A W&B sweep optimises the summary's val_acc: it must be the best epoch's, not the last one's."""
    from core.train import Tracker

    summary: dict = {}
    monkeypatch.setattr(Tracker, "set_summary", lambda self, values: summary.update(values))
    result = run_partA(_tiny_cfg(tiny_imagefolder), tmp_path / "run", tracker_mode="disabled")
    best = max(h["val_acc"] for h in result.history)
    assert summary["val_acc"] == summary["best_val_acc"] == result.best_val_acc == best, f"summary {summary}"


def test_pruned_run_keeps_a_valid_folder_without_test_numbers(tiny_imagefolder, tmp_path):
    def prune(epoch, stats):
        raise StopTraining(f"pruned at epoch {epoch}")

    run_dir = tmp_path / "pruned"
    result = run_partA(_tiny_cfg(tiny_imagefolder, epochs=3), run_dir, tracker_mode="disabled", on_epoch_end=prune)
    assert (result.epochs_run, result.stopped_by, result.test_acc) == (1, "callback", None), result
    assert not (run_dir / "test_metrics.json").exists(), "a pruned run must not evaluate the test set"
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "last.pt"):
        assert (run_dir / name).is_file(), f"pruned run folder lacks {name}"
    assert load_checkpoint(run_dir / "last.pt")["extra"]["stopped_reason"] == "stopped: pruned at epoch 1"


# ---------------------------------------------------------------- experiments/partA_train.py

@pytest.mark.slow
def test_script_trains_resumes_and_logs_offline(tiny_imagefolder, tmp_path):
    common = ["--data-dir", str(tiny_imagefolder), "--image-size", "32", "--filters", "4", "--dense", "16",
              "--batch-size", "8", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "cli"]
    assert partA_train.main([*common, "--epochs", "1", "--wandb-mode", "offline"]) == 0, "first run failed"
    run_dir = tmp_path / "cli"
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb")), "offline W&B run file missing"
    before = (run_dir / "config.yaml").read_text()
    code = partA_train.main(["--out-dir", str(tmp_path), "--name", "cli", "--resume", "--filters", "8",
                             "--wandb-mode", "disabled"])
    assert code == 2, f"resuming with a different architecture is bad input (docs/cli.md), got exit {code}"
    assert (run_dir / "config.yaml").read_text() == before, "a refused resume must not overwrite config.yaml"
    code = partA_train.main(["--out-dir", str(tmp_path), "--name", "cli", "--resume", "--epochs", "2",
                             "--wandb-mode", "disabled"])
    assert code == 0, "resume with a longer --epochs failed"
    epochs = [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert epochs == [1, 2], f"resume should add epoch 2 to the same run, metrics.jsonl has {epochs}"
    saved = read_yaml(run_dir / "config.yaml")["config"]
    assert saved["model"]["filters"] == 4 and saved["train"]["epochs"] == 2, "resume must keep the saved config"


def test_script_refuses_to_overwrite_and_reports_bad_flags(tiny_imagefolder, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "last.pt").write_bytes(b"x")
    cases = [
        (["--name", "taken"], "already holds a run; pass --resume"),
        (["--organisation", "16,32"], "needs 5 channel counts"),
        (["--num-classes", "5"], "--num-classes 5 but"),
        (["--resume"], "--resume needs --name"),
        (["--name", "nothing", "--resume"], "config.yaml does not exist"),
    ]
    for extra, message in cases:
        code = partA_train.main(["--data-dir", str(tiny_imagefolder), "--out-dir", str(tmp_path), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, f"{extra}: exit {code}, stderr: {err[-300:]}"


def test_num_classes_check_ignores_hidden_folders_like_the_scan(tiny_imagefolder):
    (tiny_imagefolder / "train" / ".ipynb_checkpoints").mkdir()  # not a class for core.data.imagefolder either
    cfg = PartAConfig.from_flat({"data_dir": str(tiny_imagefolder), "image_size": 32})
    partA_train._check_fixed_flags(partA_train.get_args_parser().parse_args(["--num-classes", "3"]), cfg)
    with pytest.raises(ValueError, match="--num-classes 4 but .* has 3 class folders"):
        partA_train._check_fixed_flags(partA_train.get_args_parser().parse_args(["--num-classes", "4"]), cfg)


def test_script_defaults_to_the_demo_set(tmp_path, monkeypatch):
    import core.data.loaders
    from core.data import ensure_demo_dataset

    small_demo = tmp_path / "demo"  # the real demo layout and classes, 6+2 images per class instead of 100+30
    monkeypatch.setattr(core.data.loaders, "ensure_demo_dataset",
                        lambda root=None: ensure_demo_dataset(small_demo, train_per_class=6, val_per_class=2))
    args = ["--epochs", "1", "--max-per-class", "5", "--filters", "4", "--dense", "8", "--image-size", "32",
            "--batch-size", "16", "--device", "cpu", "--wandb-mode", "disabled", "--out-dir", str(tmp_path),
            "--name", "run"]
    assert partA_train.main(args) == 0, "training on the generated demo set failed"
    config = read_yaml(tmp_path / "run" / "config.yaml")
    assert Path(config["data_root"]).name == "demo" and len(config["class_names"]) == 10, \
        f"expected the 10-class demo set, got {config['data_root']} with {config['class_names']}"
    assert config["config"]["data"]["image_size"] == 32, "an explicit --image-size must win over the demo default"


def test_script_ctrl_c_exits_130_and_says_how_to_resume(tiny_imagefolder, tmp_path, monkeypatch, capsys):
    def interrupted(cfg, run_dir, **kwargs):
        if kwargs["name"] == "x":  # interrupted after the run folder was written: --resume works
            (run_dir / "config.yaml").parent.mkdir(parents=True)
            (run_dir / "config.yaml").write_text("spec: {}\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(partA_train, "run_partA", interrupted)
    for name, hint in (("x", "continue with:"), ("early", "nothing was saved yet: run the same command again "
                                                          "(without --resume)")):
        code = partA_train.main(["--data-dir", str(tiny_imagefolder), "--out-dir", str(tmp_path), "--name", name,
                                 "--wandb-mode", "disabled"])
        assert code == 130, f"Ctrl-C should exit with 130, got {code}"
        err = capsys.readouterr().err
        assert f"partA_train: error: interrupted; {hint}" in err, err
        assert ("--name x --resume" in err) == (name == "x"), f"the resume command only when resuming works: {err}"


def test_run_parta_resume_with_augmentation_matches_the_uninterrupted_run(tiny_imagefolder, tmp_path):
    cfg = PartAConfig.from_flat({"augment": True, "dropout": 0.3, "scheduler": "cosine", "epochs": 3},
                                base=_tiny_cfg(tiny_imagefolder))
    full = run_partA(cfg, tmp_path / "full", tracker_mode="disabled")

    def interrupt(epoch, stats):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_partA(cfg, tmp_path / "cut", tracker_mode="disabled", on_epoch_end=interrupt)
    resumed = run_partA(cfg, tmp_path / "cut", tracker_mode="disabled", resume=True)

    def strip(history):
        return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_sec")} for h in history]

    assert strip(resumed.history) == strip(full.history), "augmented run: resume diverged from the full run"
    assert resumed.test_acc == full.test_acc, f"test acc {resumed.test_acc} vs {full.test_acc}"


def test_defaults_are_the_recommended_recipe_and_weight_decay_follows_the_optimizer():
    from core.partA import RECOMMENDED_DATA, RECOMMENDED_TRAIN

    cfg = PartAConfig()
    assert all(getattr(cfg.data, k) == v for k, v in RECOMMENDED_DATA.items()), cfg.data
    assert all(getattr(cfg.train, k) == v for k, v in RECOMMENDED_TRAIN.items()), cfg.train
    assert PartAConfig.from_flat({"optimizer": "adam"}).train.weight_decay == 0.0, "no AdamW decay as Adam's L2"
    assert PartAConfig.from_flat({"optimizer": "sgd"}).train.weight_decay == 5e-4
    assert PartAConfig.from_flat({"optimizer": "adam", "weight_decay": 0.01}).train.weight_decay == 0.01, \
        "an explicit weight decay wins"
    custom = PartAConfig.from_flat({"weight_decay": 0.2})
    assert PartAConfig.from_flat({"optimizer": "adam"}, base=custom).train.weight_decay == 0.2, \
        "a base with its own decay keeps it"
