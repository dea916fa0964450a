"""The default export runs where people deploy it: onnxruntime, OpenCV's DNN module and onnxruntime-web.

The oracle is torch's logits at batch sizes 1, 3 and 8 (the export batch is 2), for a Part A CNN with every
activation and for MobileNetV2. OpenCV and onnxruntime-web run in child processes (``export.consumers``), so
a runtime that crashes on a graph fails the test with its signal instead of killing the suite. onnxruntime-web
comes from npm (installed once into the cache by ``export.webpage.ort_web_package``); its tests skip where
Node.js/npm is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import onnx
import pytest
import torch

from core.data import Preprocessing
from core.model import ACTIVATIONS, build_backbone, build_cnn, make_spec
from core.train import make_payload, save_checkpoint
from export.consumers import ConsumerUnavailableError, opencv_runner, web_runner
from export.metadata import ModelMetadata
from export.onnx_export import export_onnx
from export.ort_session import create_session
from export.parity import check_parity, random_inputs

to_onnx = importlib.import_module("export.to_onnx")
PREP = Preprocessing(image_size=32)
needs_opencv = pytest.mark.skipif(importlib.util.find_spec("cv2") is None,
                                  reason="pip install opencv-python-headless (the test extra has it)")


@pytest.fixture(scope="module")
def ort_web():
    from export.webpage import ort_web_package

    try:
        return ort_web_package()
    except ConsumerUnavailableError as exc:
        pytest.skip(str(exc))


def _cnn(activation: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = make_spec(filters=4, image_size=32, num_classes=5, batch_norm=True, dense_units=8, activation=activation)
    model = build_cnn(spec).eval()
    for module in model.modules():  # BatchNorm statistics away from (0, 1), so folding them is really tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def _checkpoint(tmp_path, activation: str):
    model = _cnn(activation)
    path = tmp_path / f"{activation}.pt"
    save_checkpoint(path, make_payload(model, model_desc={"kind": "cnn", "spec": model.spec.to_dict()},
                                       class_names=tuple("abcde"), preprocessing=PREP, train_config={},
                                       metrics={}, epoch=0))
    return path


@pytest.mark.slow
@needs_opencv
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_runs_in_onnxruntime_opencv_and_onnxruntime_web(activation, tmp_path, ort_web):
    model = _cnn(activation)
    path, written = export_onnx(model, tmp_path / f"{activation}.onnx",
                                ModelMetadata(class_names=tuple("abcde"), preprocessing=PREP))
    assert written.opset == 20, f"the default opset should be 20 (native Gelu), got {written.opset}"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    if activation == "gelu":
        assert "Gelu" in ops and "Erf" not in ops, f"GELU should be one native Gelu node, got {sorted(ops)}"
    inputs = random_inputs(8, PREP)
    runners = {"onnxruntime": create_session(path, "cpu", intra_op_threads=1)[0],
               "opencv": opencv_runner(path), "onnxruntime-web": web_runner(path, ort_web)}
    for name, runner in runners.items():
        report = check_parity(model, runner, inputs, batch_sizes=(1, 3, 8), export_batch=2, source="random")
        assert report.passed, f"{activation} in {name}: {report.summary()}; {report.failures()}"
        assert report.max_abs_diff <= 1e-5, f"{activation} in {name}: max |logit diff| {report.max_abs_diff:.3g}"


@pytest.mark.slow
@needs_opencv
def test_mobilenet_v2_runs_in_opencv_and_onnxruntime_web_on_real_photos(shared_dir, tmp_path, ort_web):
    from export.parity import load_images
    from export.predict import collect_images

    weights = shared_dir / "weights" / "mobilenet_v2_imagenet1k_from_qnnpack.pth"
    model = build_backbone("mobilenet_v2", None, weights_file=weights).eval()
    prep = Preprocessing(224, 256)
    path, _ = export_onnx(model, tmp_path / "mnv2.onnx", ModelMetadata(class_names=(), preprocessing=prep))
    inputs = load_images([item.path for item in collect_images([shared_dir / "photos"])], prep)
    for name, runner in {"opencv": opencv_runner(path), "onnxruntime-web": web_runner(path, ort_web)}.items():
        report = check_parity(model, runner, inputs, batch_sizes=(1, 3), export_batch=2)
        assert report.passed and report.top1_agreement == 1.0, f"MobileNetV2 in {name}: {report.summary()}"


@pytest.mark.slow
@needs_opencv
def test_a_graph_opencv_cannot_run_is_a_clear_line_not_a_crash(tmp_path, capsys):
    """GELU at opset 18 (Erf spelling) kills OpenCV 5.1 with SIGSEGV: to_onnx --target opencv says so, exit 3."""
    ckpt = _checkpoint(tmp_path, "gelu")
    code = to_onnx.main(["--checkpoint", str(ckpt), "--opset", "18", "--target", "ort", "opencv",
                         "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 3, f"expected exit 3 (a target cannot run the model), got {code}:\n{captured.out}"
    assert "gelu.onnx [ort]: parity" in captured.out and "PASS" in captured.out, captured.out
    line = next((x for x in captured.out.splitlines() if x.startswith("gelu.onnx [opencv]")), "")
    assert "FAIL" in line and ("crashed" in line or "refused" in line), f"no clear OpenCV line:\n{captured.out}"
    assert "not runnable: gelu.onnx [opencv]" in captured.err, captured.err


def test_a_missing_runtime_is_exit_2_before_exporting(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # what an environment without OpenCV looks like to find_spec
    ckpt = _checkpoint(tmp_path, "relu")
    code = to_onnx.main(["--checkpoint", str(ckpt), "--target", "opencv"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install opencv-python-headless" in err, f"exit {code}: {err}"
    assert not (tmp_path / "relu.onnx").exists(), "a refusal must come before the export"


def test_web_without_npm_is_exit_2_before_exporting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INAT_CNN_CACHE", str(tmp_path / "cache"))  # an empty cache: npm would be needed
    monkeypatch.setenv("PATH", str(tmp_path))  # and neither npm nor node is on it
    ckpt = _checkpoint(tmp_path, "relu")
    code = to_onnx.main(["--checkpoint", str(ckpt), "--web", str(tmp_path / "page")])
    err = capsys.readouterr().err
    assert code == 2 and "npm is not installed" in err, f"exit {code}: {err}"
    assert not (tmp_path / "relu.onnx").exists() and not (tmp_path / "page").exists(), "refuse before exporting"
