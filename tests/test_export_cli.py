"""export/to_onnx.py end to end: checkpoint -> fp32/INT8/fp16 files, parity verdicts, --infer-on, bad inputs."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch
from test_export import tiny_bundle

from export.metadata import read_metadata

to_onnx = importlib.import_module("export.to_onnx")

# The TorchScript exporter (FAST) flags SmallCNN.forward's input-shape check as a traced constant: harmless.
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")




@pytest.fixture
def tiny(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def test_export_quantize_fp16_parity_and_infer_in_one_command(tiny, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(out), "--data-dir", str(tiny.data_dir),
                         "--quantize", "int8", "--fp16", "--infer-on", str(tiny.data_dir / "val"),
                         "--labels-from-folders", "--threads", "1", "--show", "2"])
    text = capsys.readouterr().out
    assert code == 0, f"to_onnx exited {code}:\n{text}"
    for path in (out, tmp_path / "model.int8.onnx", tmp_path / "model.fp16.onnx"):
        assert path.is_file(), f"{path.name} not written"
    meta = read_metadata(out)
    assert meta.source_name == "best.pt" and re.fullmatch(r"[0-9a-f]{64}", meta.source_sha256), meta
    assert read_metadata(tmp_path / "model.int8.onnx").precision == "int8"
    loss = re.search(r"on (\d+) held-out images: top-1 fp32 ([\d.]+)%, int8 ([\d.]+)%, loss (-?[\d.]+) points", text)
    assert loss and int(loss[1]) == 96 // 3, f"no INT8 accuracy-loss line on a third of the 96 train images:\n{text}"
    assert float(loss[4]) <= 0.5 and float(loss[2]) >= 90, f"INT8 loses too much on the tiny model: {loss[0]}"
    parity = [line for line in text.splitlines() if "parity on" in line]
    assert len(parity) == 3 and all(line.endswith("PASS") for line in parity), "\n".join(parity)
    assert "32 images at batch sizes [1, 3, 8]" in parity[0], parity[0]
    accuracies = re.findall(r"accuracy: ([\d.]+)% \((\d+) labelled images\)", text)
    assert len(accuracies) == 3, f"expected inference on 3 models, got {accuracies}\n{text}"
    assert all(float(a) >= 90 and int(n) == 128 for a, n in accuracies), accuracies
    import onnxruntime as ort  # the oracle: what onnxruntime itself runs each file on, asked directly

    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    for path in (out, tmp_path / "model.int8.onnx", tmp_path / "model.fp16.onnx"):
        expected = ort.InferenceSession(str(path), providers=wanted).get_providers()[0]
        line = next(ln for ln in text.split(f"--- inference with {path.name}")[1].splitlines()
                    if ln.startswith("provider: "))
        assert line.startswith(f"provider: {expected} (requested auto"), f"{path.name}: {line!r}, ORT runs {expected}"


def test_parity_beyond_tolerance_exits_3_and_prints_the_numbers(tiny, tmp_path, capsys, monkeypatch):
    import export.parity as parity

    real = parity.run_logits

    def off_by_a_bit(session, images):  # a faulty runtime: every logit 1e-3 off
        return real(session, images) + np.float32(1e-3)

    monkeypatch.setattr(parity, "run_logits", off_by_a_bit)
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(tmp_path / "m.onnx"),
                         "--parity-images", str(tiny.data_dir / "val"), "--exporter", "torchscript"])
    captured = capsys.readouterr()
    assert code == to_onnx.PARITY_FAILED, f"exit code {code}, expected {to_onnx.PARITY_FAILED}\n{captured.out}"
    assert re.search(r"max \|logit difference\| 0\.001 > tolerance", captured.out), captured.out
    assert "FAIL" in captured.out and "parity beyond tolerance" in captured.err, captured.err


def test_int8_beyond_the_accuracy_loss_limit_is_refused_and_not_written(tiny, tmp_path, capsys):
    """A limit of -100 points is one no model meets: the refusal path, deterministically."""
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(tmp_path / "m.onnx"), "--data-dir",
                         str(tiny.data_dir), "--quantize", "int8", "--max-int8-loss", "-100", "--exporter",
                         "torchscript"])
    captured = capsys.readouterr()
    assert code == 1, f"exit {code}, expected 1 (INT8 refused)\n{captured.out}"
    assert "refusing to write m.int8.onnx: INT8 loses" in captured.err and "--max-int8-loss -100" in captured.err, (
        captured.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"], "only the fp32 model may be left behind"


def test_checkpoint_that_is_not_ours_is_a_clear_error(tmp_path, capsys):
    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    assert to_onnx.main(["--checkpoint", str(bare)]) == 2
    assert "bare state dict" in capsys.readouterr().err
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert to_onnx.main(["--checkpoint", str(text)]) == 2
    assert "not a torch checkpoint" in capsys.readouterr().err
    assert to_onnx.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx")), "no model may be written for a bad checkpoint"


def test_random_parity_and_int8_without_calibration_images(tiny, tmp_path, capsys):
    """No image source at all: INT8 refuses to calibrate on noise (before exporting anything); parity falls back
    to random inputs (said so)."""
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(tmp_path / "m.onnx"),
                         "--quantize", "int8", "--exporter", "torchscript"])
    captured = capsys.readouterr()
    assert code == 2, f"exit {code}: INT8 without calibration images must fail\n{captured.out}"
    assert "--calibration-images DIR or --data-dir" in captured.err, captured.err
    assert not list(tmp_path.glob("*.onnx")), "the refusal comes before the export"
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(tmp_path / "m.onnx"),
                         "--exporter", "torchscript"])
    captured = capsys.readouterr()
    assert code == 0 and "comparing on random inputs" in captured.err, captured.err


def test_parity_batch_sizes_must_avoid_the_export_batch(tiny, tmp_path, capsys):
    code = to_onnx.main(["--checkpoint", str(tiny.checkpoint), "--out", str(tmp_path / "m.onnx"),
                         "--parity-batch-sizes", "1", "2", "--export-batch", "2"])
    assert code == 2 and "include the export batch 2" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists(), "validation must happen before exporting"
