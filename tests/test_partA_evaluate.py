"""experiments/partA_evaluate.py end to end on a tiny image folder and hand-made checkpoints."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.data import Preprocessing, load_image_tensor
from core.explain import FIGURES, select_per_class
from core.model import build_cnn, make_spec
from core.train import make_payload, save_checkpoint
from experiments import partA_evaluate

CLASSES = ("Amphibia", "Aves", "Fungi")  # conftest.make_tiny_imagefolder's classes
PREP = Preprocessing(32, None, (0.5, 0.45, 0.4), (0.25, 0.25, 0.25))


class FakeTracker:
    """Records what the script sends to W&B (the real Tracker is tested by its owner)."""

    runs: list[FakeTracker] = []

    def __init__(self, kwargs):
        self.kwargs, self.images, self.tables, self.summary, self.finished = kwargs, {}, {}, {}, False

    @classmethod
    def start(cls, **kwargs):
        run = cls(kwargs)
        cls.runs.append(run)
        return run

    def log_image(self, key, path, caption=None):
        self.images[key] = Path(path)

    def log_table(self, key, columns, rows):
        self.tables[key] = (list(columns), [list(r) for r in rows])

    def set_summary(self, values):
        self.summary.update(values)

    def finish(self, exit_code=0):
        self.finished = True


@pytest.fixture(autouse=True)
def fake_tracker(monkeypatch):
    FakeTracker.runs = []
    monkeypatch.setattr("core.explain.checkpoint_evaluation.Tracker", FakeTracker)
    return FakeTracker


def make_checkpoint(path: Path, activation: str = "relu", class_names=CLASSES, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = make_spec(filters=12, activation=activation, batch_norm=True, image_size=32, dense_units=16,
                     num_classes=len(class_names))
    model = build_cnn(spec)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(path, make_payload(model, model_desc={"kind": "cnn", "spec": spec.to_dict()},
                                       class_names=class_names, preprocessing=PREP, train_config={},
                                       metrics={}, epoch=1))
    return model.eval()


def hand_predictions(model, data_dir: Path) -> tuple[list[int], list[int]]:
    """Independent path: every val/ file through load_image_tensor and the model, labels from folder order."""
    targets, preds = [], []
    for label, name in enumerate(CLASSES):
        for f in sorted((data_dir / "val" / name).iterdir()):
            with torch.no_grad():
                preds.append(int(model(load_image_tensor(f, PREP)[None]).argmax()))
            targets.append(label)
    return targets, preds


def run(argv) -> int:
    return partA_evaluate.main([*map(str, argv), "--wandb-mode", "disabled", "--device", "cpu"])


def assert_real_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000, f"{path.name} missing or nearly empty"
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= 150, f"{path.name}: {img.format} {img.size}"


def test_relu_checkpoint_writes_everything(tiny_imagefolder, tmp_path):
    ckpt = tmp_path / "run" / "best.pt"
    model = make_checkpoint(ckpt)
    assert run(["--checkpoint", ckpt, "--data-dir", tiny_imagefolder, "--seed", "3"]) == 0
    out = tmp_path / "run" / "eval"  # the default: next to the checkpoint

    metrics = json.loads((out / "test_metrics.json").read_text())
    targets, preds = hand_predictions(model, tiny_imagefolder)
    n_correct = sum(t == p for t, p in zip(targets, preds))
    assert metrics["n"] == 12 and metrics["n_correct"] == n_correct, (metrics["n"], metrics["n_correct"], n_correct)
    assert metrics["accuracy"] == pytest.approx(n_correct / 12), f"{metrics['accuracy']} != {n_correct}/12"
    counts = [[sum(1 for t, p in zip(targets, preds) if (t, p) == (i, j)) for j in range(3)] for i in range(3)]
    assert metrics["confusion_matrix"]["counts"] == counts, metrics["confusion_matrix"]["counts"]
    assert metrics["class_names"] == list(CLASSES), metrics["class_names"]

    for name in FIGURES:
        assert_real_png(out / name)

    grid = json.loads((out / "predictions_grid.json").read_text())
    per_class = {c: [r for r in grid["cells"] if r["true"] == c] for c in CLASSES}
    assert all(len(v) == 3 for v in per_class.values()), {c: len(v) for c, v in per_class.items()}
    assert grid["notes"] == [], grid["notes"]
    for r in grid["cells"]:
        assert Path(r["path"]).parent.name == r["true"], f"{r['path']} is not an image of {r['true']}"
        assert r["correct"] == (r["true"] == r["pred"]), r
    expected = select_per_class([label for label in range(3) for _ in range(4)], 3, k=3, seed=3)
    assert [r["index"] for r in grid["cells"]] == [i for _, i in expected.flat()], "grid must use the seeded draw"
    assert grid["seed"] == 3, grid["seed"]

    gb = json.loads((out / "guided_backprop_conv5.json").read_text())
    assert gb["method"] == "guided" and gb["warning"] is None, (gb["method"], gb["warning"])
    assert gb["layer"] == "features.4.conv" and len(gb["neurons"]) == 10, (gb["layer"], len(gb["neurons"]))
    assert len({n["channel"] for n in gb["neurons"]}) == 10, "ten different channels expected"

    (tracker,) = FakeTracker.runs
    assert tracker.finished and tracker.kwargs["job_type"] == "evaluate", tracker.kwargs
    assert sorted(tracker.images) == sorted(n.removesuffix(".png") for n in FIGURES), tracker.images
    columns, rows = tracker.tables["test_predictions_grid"]
    assert len(rows) == 9 and columns[:3] == ["path", "true", "pred"], (columns, len(rows))
    assert tracker.summary["test_acc"] == pytest.approx(n_correct / 12), tracker.summary

    page = (out / "evaluation.html").read_text()  # the page: the hand-counted numbers, every figure, links
    assert f'<span class="test-accuracy">{100 * n_correct / 12:.1f}%</span>' in page
    assert f"{n_correct} of 12 test images" in page
    for c, name in enumerate(CLASSES):
        assert f"<td>{name}</td><td class=\"num\">4</td><td class=\"num\">{counts[c][c]}</td>" in page, name
    alts = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert sorted(alts) == sorted(n.removesuffix(".png").replace("_", " ") for n in FIGURES), alts
    assert '<a href="../">← run folder</a>' in page and '<a href="test_metrics.json">' in page


def test_gelu_checkpoint_and_short_class(tiny_imagefolder, tmp_path, caplog):
    for f in sorted((tiny_imagefolder / "val" / "Aves").iterdir())[:2]:
        f.unlink()  # Aves keeps 2 test images
    ckpt = tmp_path / "best.pt"
    make_checkpoint(ckpt, activation="gelu")
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        assert run(["--checkpoint", ckpt, "--data-dir", tiny_imagefolder, "--out-dir", out]) == 0
    grid = json.loads((out / "predictions_grid.json").read_text())
    assert sum(r["true"] == "Aves" for r in grid["cells"]) == 2, grid["cells"]
    assert grid["notes"] == ["Aves has only 2 test images (fewer than 3)"], grid["notes"]
    assert "Aves has only 2 test images" in caplog.text, "the shortfall must be logged"
    gb = json.loads((out / "guided_backprop_conv5.json").read_text())
    assert gb["method"] == "saliency" and "saliency" in gb["label"] and gb["warning"], gb
    assert "guided backprop is defined for ReLU" in caplog.text, "the GELU fallback must be logged"
    for name in FIGURES:
        assert_real_png(out / name)

    swap_out = tmp_path / "swap"
    assert run(["--checkpoint", ckpt, "--data-dir", tiny_imagefolder, "--out-dir", swap_out,
                "--guided-mode", "relu-swap"]) == 0
    assert json.loads((swap_out / "guided_backprop_conv5.json").read_text())["method"] == "relu-swap"
    page = (out / "evaluation.html").read_text()
    assert "Guided backprop: model has" in page and "Aves has only 2 test images (fewer than 3)" in page


def test_backbone_checkpoint_skips_explanations(tiny_imagefolder, tmp_path, caplog):
    from core.model import build_backbone

    model = build_backbone("mobilenet_v3_small", num_classes=3, weights=None)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, make_payload(model, model_desc={"kind": "backbone", "arch": "mobilenet_v3_small",
                                                           "num_classes": 3},
                                       class_names=CLASSES, preprocessing=PREP, train_config={}, metrics={}, epoch=1))
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        assert run(["--checkpoint", ckpt, "--data-dir", tiny_imagefolder, "--out-dir", out]) == 0
    assert json.loads((out / "test_metrics.json").read_text())["n"] == 12
    for name in ("confusion_matrix.png", "predictions_grid.png"):
        assert_real_png(out / name)
    for name in ("gradcam.png", "filters_conv1.png", "guided_backprop_conv5.png"):
        assert not (out / name).exists(), f"{name} written for a backbone"
    assert "Part A SmallCNN" in caplog.text, "the skip must say explanations are for Part A models"
    page = (out / "evaluation.html").read_text()
    assert "Explanations skipped:" in page and page.count("<img ") == 2, "only what was drawn, the skip named"


def test_errors_are_reported(tiny_imagefolder, tmp_path, capsys):
    assert run(["--checkpoint", tmp_path / "missing.pt", "--data-dir", tiny_imagefolder]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    ckpt = tmp_path / "best.pt"
    make_checkpoint(ckpt, class_names=("Amphibia", "Aves", "Insecta"))
    assert run(["--checkpoint", ckpt, "--data-dir", tiny_imagefolder]) == 2
    err = capsys.readouterr().err
    assert "trained on classes ['Amphibia', 'Aves', 'Insecta']" in err and "Fungi" in err, err
    with pytest.raises(SystemExit):
        partA_evaluate.main(["--checkpoint", str(ckpt), "--guided-mode", "guided"])
