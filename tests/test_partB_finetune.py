"""Part B end to end: run folder, comparison table/curves, CLI, sweep wiring, pretrained vs random init.

All CPU-sized: MobileNetV2 at 32-64 px on a few images per class, 1-2 epochs, W&B disabled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import yaml

from core.data import DataConfig
from core.finetune import PARTB_FLAT_KEYS, PartBConfig, read_partA_row, run_compare, run_partB
from core.train import TrainConfig, load_checkpoint, load_model
from experiments import partB_finetune

SHARED_MOBILENET = "weights/mobilenet_v2_imagenet1k_from_qnnpack.pth"
REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(data_dir: Path, **kwargs) -> PartBConfig:
    base = dict(arch="mobilenet_v2", weights=None, image_size=32,
                data=DataConfig(data_dir=data_dir, batch_size=8, normalization="imagenet"),
                train=TrainConfig(epochs=2, lr=3e-3, device="cpu"))
    return PartBConfig(**{**base, **kwargs})


def test_compare_writes_table_curves_and_a_part_a_row(tiny_imagefolder, tmp_path):
    from core.model import build_cnn  # noqa: F401  (Part A's model module must exist for the row)
    from core.partA import PartAConfig, run_partA

    part_a = tmp_path / "partA-run"
    run_partA(PartAConfig(filters=4, dense_units=8, data=DataConfig(data_dir=tiny_imagefolder, image_size=32),
                          train=TrainConfig(epochs=2, device="cpu")), part_a, tracker_mode="disabled")
    out = tmp_path / "cmp"
    rows = run_compare(tiny_cfg(tiny_imagefolder, k=1, unfreeze_every=1), out, partA_run=part_a,
                       tracker_mode="disabled", strategies=("head", "top-k", "full", "gradual"))
    assert [r.strategy for r in rows] == ["head", "top-k", "full", "gradual", "scratch"], rows
    with (out / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["run"] for t in table] == ["cmp-head", "cmp-top-k", "cmp-full", "cmp-gradual", "partA:partA-run"]
    for row, strategy in zip(table[:4], ["head", "top-k", "full", "gradual"]):
        test = json.loads((out / strategy / "test_metrics.json").read_text())
        history = [json.loads(line) for line in (out / strategy / "metrics.jsonl").read_text().splitlines()]
        best = max(history, key=lambda h: h["val_acc"])
        assert float(row["test_acc"]) == pytest.approx(test["test_acc"]), f"{strategy}: csv vs test_metrics.json"
        assert float(row["best_val_acc"]) == pytest.approx(best["val_acc"]), f"{strategy}: csv vs metrics.jsonl"
        assert int(row["epochs_to_best"]) == best["epoch"] and int(row["epochs_run"]) == 2
    head = 1280 * 3 + 3  # 3 classes
    trainable = {t["strategy"]: int(t["trainable_params"]) for t in table}
    total = int(table[0]["total_params"])
    assert trainable["head"] == trainable["gradual"] == head, trainable  # gradual starts with the head only
    assert trainable["full"] == total == 2_223_872 + head, trainable
    assert head < trainable["top-k"] < total
    final = {t["strategy"]: int(t["final_trainable_params"]) for t in table}
    assert final["gradual"] == head + 320 * 1280 + 2 * 1280, "gradual unfroze features[18] at epoch index 1"
    assert final["head"] == head and final["full"] == total, final
    assert rows[3].curve and len(rows[3].curve) == 2
    a_test = json.loads((part_a / "test_metrics.json").read_text())["test_acc"]
    assert float(table[4]["test_acc"]) == pytest.approx(a_test)
    assert int(table[4]["trainable_params"]) == int(table[4]["total_params"]) > 0
    md = (out / "comparison.md").read_text()
    assert md.count("\n") == 2 + 5 and "| cmp-full | full |" in md, md
    assert f"| {head:,} → {final['gradual']:,} |" in md, "gradual shows its trainable count growing"
    page = (out / "comparison.html").read_text()
    for t in table:
        assert f"<td>{t['run']}</td>" in page, f"{t['run']} missing from comparison.html"
    assert f'<span title="{total:,}">' in page and '<a href="head/">folder</a>' in page
    assert '<a href="../partA-run/">folder</a>' in page, "the Part A row links its run folder"
    png = (out / "accuracy_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, "accuracy_curves.png must be a real figure"
    # fit() kept frozen BatchNorm in eval mode: head-only best.pt still has the untouched init statistics
    state = load_checkpoint(out / "head" / "best.pt")["state_dict"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(torch.count_nonzero(m) == 0 for m in means), "frozen BN running_mean moved"
    assert all(int(v) == 0 for k, v in state.items() if k.endswith("num_batches_tracked"))
    moved = load_checkpoint(out / "full" / "best.pt")["state_dict"]["features.18.1.running_mean"]
    assert torch.count_nonzero(moved) > 0, "full fine-tuning must update BN statistics (bn_eval is off)"


def test_run_folder_is_self_describing_and_gradual_grows(tiny_imagefolder, tmp_path):
    run = tmp_path / "grad"
    result = run_partB(tiny_cfg(tiny_imagefolder, strategy="gradual", unfreeze_every=1), run,
                       tracker_mode="disabled")
    for name in ("config.yaml", "split.json", "metrics.jsonl", "best.pt", "last.pt", "test_metrics.json"):
        assert (run / name).is_file(), f"{name} missing from the run folder"
    mbv2_features18 = 320 * 1280 + 2 * 1280
    assert result.final_trainable_params == result.trainable_params + mbv2_features18, \
        "after epoch index 1 gradual must have unfrozen exactly features[18]"
    model, payload = load_model(result.result.best_path)
    assert payload["model_desc"] == {"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 3}
    assert payload["preprocessing"]["image_size"] == 32 and payload["preprocessing"]["resize_size"] == 33
    assert payload["extra"]["partB"]["strategy"] == "gradual"
    assert payload["metrics"]["test_acc"] == pytest.approx(result.result.test_acc)
    assert model.classifier[1].out_features == 3
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["strategy"] == "gradual" and config["params"]["trainable"] == result.trainable_params


def test_cli_runs_one_strategy(tiny_imagefolder, tmp_path, capsys):
    code = partB_finetune.main(["--arch", "mobilenet_v2", "--weights", "none", "--strategy", "top-k", "--k", "1",
                                "--data-dir", str(tiny_imagefolder), "--epochs", "1", "--batch-size", "8",
                                "--out-dir", str(tmp_path), "--name", "cli", "--wandb-mode", "disabled"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cli: test accuracy" in out and (tmp_path / "cli" / "best.pt").is_file()
    config = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert config["preprocessing"]["image_size"] == partB_finetune.CPU_IMAGE_SIZE, "CPU default image size"
    assert config["train"]["epochs"] == 1 and config["k"] == 1


def test_cli_errors_come_before_any_training(tiny_imagefolder, tmp_path, monkeypatch, capsys):
    common = ["--data-dir", str(tiny_imagefolder), "--out-dir", str(tmp_path), "--wandb-mode", "disabled"]
    assert partB_finetune.main(["--arch", "vgg17", *common]) == 2
    assert "unknown arch 'vgg17'" in capsys.readouterr().err
    assert partB_finetune.main(["--arch", "resnet18", "--weights", "none", "--strategy", "top-k", "--k", "9",
                                "--name", "k9", *common]) == 2
    assert "k=9 but resnet has only 5 blocks" in capsys.readouterr().err
    assert not (tmp_path / "k9").exists(), "a bad k must fail before the data is read"

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))

    def offline(url, dst, hash_prefix=None, progress=True):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert partB_finetune.main(["--arch", "resnet18", "--name", "offline", *common]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err, err
    assert "--weights-file" in err and not (tmp_path / "offline").exists()
    assert partB_finetune.main(["--compare", "--partA-run", str(tmp_path / "nope"), "--weights", "none",
                                "--arch", "resnet18", *common]) == 2
    assert "not a finished Part A run folder" in capsys.readouterr().err


def test_flat_keys_and_the_sweep_file(tiny_imagefolder):
    from core.sweep import load_sweep_config

    sweep = load_sweep_config(REPO / "experiments" / "configs" / "partB_sweep.yaml")
    keys = {p.name for p in sweep.parameters}
    assert keys <= set(PARTB_FLAT_KEYS), f"sweep keys {sorted(keys - set(PARTB_FLAT_KEYS))} unknown to Part B"
    assert {"arch", "strategy", "k", "lr"} <= keys
    base = tiny_cfg(tiny_imagefolder)
    cfg = PartBConfig.from_flat({"arch": "resnet18", "strategy": "top-k", "k": 3, "lr": 1e-4, "augment": True},
                                base=base)
    assert (cfg.arch, cfg.strategy, cfg.k, cfg.train.lr, cfg.data.augment) == ("resnet18", "top-k", 3, 1e-4, True)
    assert cfg.data.data_dir == tiny_imagefolder, "keys not in the sweep come from base"
    with pytest.raises(ValueError, match=r"unknown Part B parameter\(s\) \['filters'\]"):
        PartBConfig.from_flat({"filters": 32})
    with pytest.raises(ValueError, match="both given"):
        PartBConfig(weights="DEFAULT", weights_file="w.pth")


def test_part_b_trial_reports_epochs_and_returns_outcome(tiny_imagefolder, tmp_path):
    from core.sweep import TrialRequest, execute_trial, partB_program

    seen = []
    request = TrialRequest(number=0, values={"strategy": "head", "epochs": 1}, run_dir=tmp_path / "trial",
                           name="t0", group="g", tracker_mode="disabled",
                           report=lambda epoch, metrics: seen.append((epoch, metrics)) or False)
    outcome = execute_trial(partB_program(tiny_cfg(tiny_imagefolder)), request)
    assert [e for e, _ in seen] == [1] and "val_acc" in seen[0][1], seen
    assert outcome.metrics()["val_acc"] == pytest.approx(seen[0][1]["val_acc"])
    assert outcome.test_acc is not None and outcome.parameter_count == 2_223_872 + 1280 * 3 + 3


def test_read_part_a_row_rejects_an_incomplete_folder(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match=r"missing .*test_metrics.json.*best.pt"):
        read_partA_row(tmp_path)


@pytest.mark.slow
def test_pretrained_head_only_beats_random_init(shared_dir: Path, tmp_path):
    """The shared ImageNet MobileNetV2, head only, vs the same net from random init trained fully, same epochs."""
    data = DataConfig(max_per_class=8, batch_size=16, normalization="imagenet")  # the demo set
    train = TrainConfig(epochs=2, lr=3e-3, device="cpu")
    pretrained = run_partB(PartBConfig(arch="mobilenet_v2", strategy="head", weights=None, bn_eval=True,
                                       weights_file=shared_dir / SHARED_MOBILENET, image_size=64, data=data,
                                       train=train), tmp_path / "pretrained", tracker_mode="disabled")
    scratch = run_partB(PartBConfig(arch="mobilenet_v2", strategy="full", backbone_lr_mult=1.0, weights=None,
                                    image_size=64, data=data, train=train), tmp_path / "scratch",
                        tracker_mode="disabled")
    pretrained, scratch = pretrained.result, scratch.result
    assert pretrained.test_acc >= scratch.test_acc + 0.2, \
        f"pretrained head-only test acc {pretrained.test_acc:.2f} vs random init {scratch.test_acc:.2f}"
    assert pretrained.best_val_acc > scratch.best_val_acc, (pretrained.best_val_acc, scratch.best_val_acc)


def test_gradual_run_resumes_to_the_same_weights(tiny_imagefolder, tmp_path):
    """fit() replays on_epoch_start on resume, so the optimizer has the groups its saved state refers to."""
    cfg = tiny_cfg(tiny_imagefolder, strategy="gradual", unfreeze_every=1)
    straight = run_partB(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3)),
                         tmp_path / "straight", tracker_mode="disabled")
    run_partB(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2)), tmp_path / "resumed",
              tracker_mode="disabled")
    resumed = run_partB(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3)),
                        tmp_path / "resumed", tracker_mode="disabled", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert len(a["optimizer"]["param_groups"]) == len(b["optimizer"]["param_groups"]) == 2 + 2 * 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs after resume"
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[h[k] for k in keys] for h in resumed.result.history] == \
        [[h[k] for k in keys] for h in straight.result.history]
    assert resumed.final_trainable_params == straight.final_trainable_params


def test_a_sweeps_part_b_trial_gets_the_clis_cpu_resolution_per_arch():
    """partA_sweep.py with a Part B config: each trial's image size and epochs are the CLI's CPU defaults."""
    from core.sweep import load_sweep_config
    from experiments import partB_finetune
    from experiments.partA_sweep import CONFIG_DIR, make_program

    program = make_program(load_sweep_config(CONFIG_DIR / "partB_sweep.yaml"), None, "cpu", None)
    for arch in ("resnet50", "efficientnet_v2_s"):  # 224 and 384 px natively
        sweep_cfg = program.configure({"arch": arch, "strategy": "head", "lr": 1e-3})
        cli_cfg = partB_finetune.build_config(partB_finetune.get_args_parser().parse_args(
            ["--arch", arch, "--device", "cpu"]))
        assert sweep_cfg.preprocessing() == cli_cfg.preprocessing(), arch
        assert sweep_cfg.preprocessing().image_size == 64 and sweep_cfg.train.epochs == cli_cfg.train.epochs == 3
    vit = program.configure({"arch": "vit_b_16"})
    assert vit.preprocessing().image_size == 224, "a ViT keeps its fixed input size"
    searched = program.configure({"arch": "resnet50", "image_size": 96, "epochs": 8})
    assert (searched.image_size, searched.train.epochs) == (96, 8), "values the sweep sets win"
