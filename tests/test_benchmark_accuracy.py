"""experiments/benchmark.py accuracy: the peers' pipeline and ours on one photo folder, rows, JSON, reuse."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from experiments.bench.accuracy import ROWS, parse_rows, row_select, summarise_run
from experiments.bench.common import write_photo_dataset
from experiments.bench.peer import PILFolderDataset, peer_init, peer_transforms
from experiments.benchmark import main


def test_selection_rules_pick_the_right_epochs():
    epochs = [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.40, "train_images_per_sec": 10.0},
              {"epoch": 2, "val_acc": 0.7, "val_loss": 0.9, "test_acc": 0.60, "train_images_per_sec": 20.0},
              {"epoch": 3, "val_acc": 0.7, "val_loss": 0.7, "test_acc": 0.65, "train_images_per_sec": 30.0},
              {"epoch": 4, "val_acc": 0.6, "val_loss": 0.8, "test_acc": 0.55, "train_images_per_sec": 40.0}]
    s = summarise_run(epochs, "val_acc")
    assert (s["kept_epoch"], s["kept_test_acc"]) == (2, 0.60), "best val_acc, first epoch on a tie (as fit keeps)"
    assert s["test_acc_best_val_loss"] == 0.65 and s["test_acc_last"] == 0.55, s
    assert summarise_run(epochs, "val_loss")["kept_epoch"] == 3 and s["train_images_per_sec"] == 25.0


def test_rows_and_presets():
    assert parse_rows("issue") == ["peer", "ours_peer", "ours_default"]
    assert parse_rows("ablation")[0] == "peer" and all(k in ROWS for k in parse_rows("ablation"))
    with pytest.raises(ValueError, match="unknown accuracy rows"):
        parse_rows("peer,nope")
    assert row_select(ROWS["peer"]) == "val_loss", "the peer keeps its lowest validation loss"
    assert row_select(ROWS["ours_default"]) == "val_loss", "ours keeps what --monitor says (default val_loss)"
    assert row_select(ROWS["abl_before"]) == "val_acc", "the pre-issue-15 row keeps its best val_acc, as it did"


def test_peer_pipeline_pieces(tmp_path):
    root = write_photo_dataset(tmp_path / "d", classes=2, train_per_class=2, test_per_class=1, size=(120, 90))
    train_tf, eval_tf = peer_transforms(32)
    files = sorted((root / "train").rglob("*.jpg"))
    ds = PILFolderDataset([(files[0], 0)], eval_tf)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0 and abs(float(x.mean())) < 3, "ImageNet-normalised 32 px tensor"
    assert train_tf(Image.open(files[0]).convert("RGB")).shape == (3, 32, 32)
    conv = torch.nn.Conv2d(3, 8, 3)
    peer_init(torch.nn.Sequential(conv))
    assert float(conv.bias.detach().abs().max()) == 0.0, "peer init zeroes conv biases"
    fan_out_std = (2.0 / (8 * 9)) ** 0.5  # Kaiming normal, fan_out, ReLU gain
    assert abs(float(conv.weight.detach().std()) - fan_out_std) < 0.35 * fan_out_std, float(conv.weight.detach().std())


@pytest.mark.slow
def test_accuracy_section_end_to_end_and_reuse(tmp_path, capsys):
    root = write_photo_dataset(tmp_path / "photos", classes=2, train_per_class=8, test_per_class=2, size=(160, 120))
    argv = ["accuracy", "--data-dir", str(root), "--image-size", "32", "--epochs", "1", "--seeds", "0",
            "--peer-workers", "0", "--repeats", "1", "--warmup", "0", "--out-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    report = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    rows = report["sections"]["accuracy"]["info"]["rows"]
    assert [r["key"] for r in rows] == ["peer", "ours_peer", "ours_default"], rows
    for r in rows:
        assert 0.0 <= r["kept_test_acc"]["mean"] <= 1.0 and r["train_images_per_sec"]["mean"] > 0, r
        assert r["epoch_images_per_sec_side_by_side"] > 0, "every row is also timed side by side"
    comps = report["sections"]["accuracy"]["comparisons"]
    assert [c["ours"]["label"] for c in comps] == ["ours_peer", "ours_default"] and comps[0]["baseline"]["label"] == \
        "peer", comps
    runs = (tmp_path / "out" / "accuracy-runs.jsonl").read_text().splitlines()
    assert len(runs) == 3 and all(len(json.loads(line)["history"]) == 1 for line in runs)
    out = capsys.readouterr().out
    assert "(a) peers' pipeline + peer recipe" in out and "kept test acc" in out, out
    assert main(argv) == 0, "a rerun reuses the finished runs"
    assert len((tmp_path / "out" / "accuracy-runs.jsonl").read_text().splitlines()) == 3, "nothing was retrained"


def test_accuracy_flags_are_checked(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    # main's CLI convention (core.cli.run_script): a bad flag value returns 2 with a one-line error
    assert main(["accuracy", "--data-dir", str(tmp_path), "--rows", "bogus", "--out-dir", str(tmp_path / "o")]) == 2
    assert "benchmark: error: --rows: unknown accuracy rows" in capsys.readouterr().err
