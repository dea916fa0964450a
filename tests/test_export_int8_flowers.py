"""INT8 keeps its accuracy on real photos: flowers5 (``../shared/data/flowers5``, 799 train / 200 test photos).

Part A CNNs at 64 px are trained by the real trainer with the recommended recipe and model knobs (PartAConfig's
defaults; ~20-30 s each on one CPU thread): ReLU (the default CNN) and GELU (the issue's case). Each is exported
and quantized by ``to_onnx.py`` with its defaults (percentile, 256 calibration images from ``train/``, the first
two convs and the logits layer in fp32). The oracle is the fp32 file on the 200 test photos (``val/``, never seen
by calibration or training): INT8 may lose at most 0.5 points of top-1 accuracy and must agree with fp32 on
>= 99% of them (docs/export.md measured 99.0% for ReLU, 99.5% for GELU). ``to_onnx.py`` itself measures the
loss on 200 photos of ``train/`` kept out of calibration and must write the INT8 file under its default limit
(0.5 points, one photo of 200).
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

from core.data import load_image_tensor
from core.partA import PartAConfig, run_partA
from export.metadata import read_metadata
from export.ort_session import create_session, run_logits
from export.predict import collect_images

to_onnx = importlib.import_module("export.to_onnx")
pytestmark = pytest.mark.slow
# only what makes the run small and reproducible on a CPU; the recipe and the other knobs are the defaults, as
# docs/export.md measured them
PARAMS = {"image_size": 64, "epochs": 15, "seed": 0, "device": "cpu", "num_workers": 0}


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_int8_loses_at_most_half_a_point_on_flowers5(activation, shared_dir, tmp_path, capsys):
    flowers = shared_dir / "data" / "flowers5"
    config = PartAConfig.from_flat({**PARAMS, "activation": activation, "data_dir": str(flowers)})
    result = run_partA(config, tmp_path / "run", tracker_mode="disabled")
    assert result.test_acc is not None and result.test_acc > 0.5, f"the CNN should learn flowers5: {result.test_acc}"
    out = tmp_path / "model.onnx"
    code = to_onnx.main(["--checkpoint", str(result.best_path), "--out", str(out), "--data-dir", str(flowers),
                         "--quantize", "int8", "--threads", "1"])
    text = capsys.readouterr().out
    assert code == 0, f"to_onnx exited {code}:\n{text}"
    held = re.search(r"on (\d+) held-out images: top-1 fp32 ([\d.]+)%, int8 ([\d.]+)%, loss (-?[\d.]+) points", text)
    assert held and int(held[1]) == 200, f"no held-out INT8 report on 200 images of train/:\n{text}"

    items = collect_images([flowers / "val"], labels_from_folders=True)
    meta = read_metadata(out)
    x = np.stack([load_image_tensor(item.path, meta.preprocessing).numpy() for item in items])
    labels = np.array([meta.class_names.index(item.label) for item in items])
    tops = [run_logits(create_session(p, "cpu", intra_op_threads=1)[0], x).argmax(1)
            for p in (out, out.with_suffix(".int8.onnx"))]
    acc = [float((top == labels).mean()) for top in tops]
    agreement = float((tops[0] == tops[1]).mean())
    print(f"flowers5 {activation} 64 px: test top-1 fp32 {acc[0]:.2%}, int8 {acc[1]:.2%}, agreement "
          f"{agreement:.2%}; held-out {held[0]}")
    assert acc[0] == pytest.approx(result.test_acc, abs=1e-6), f"fp32 ONNX {acc[0]} != trainer's {result.test_acc}"
    assert 100 * (acc[0] - acc[1]) <= 0.5, f"INT8 loses {100 * (acc[0] - acc[1]):.2f} points on the 200 test photos"
    assert agreement >= 0.99, f"INT8 agrees with fp32 on {agreement:.2%} of the test photos"
