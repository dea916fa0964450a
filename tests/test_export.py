"""export/: torch -> ONNX (dynamic batch, metadata, checker), parity against torch, INT8, fp16, atomic writes.

The oracle is torch at batch sizes other than the export batch (2). Models are trained for real on a
generated colour dataset (a few hundred Adam steps, ~1 s) so top-1 agreement numbers mean something.
``tiny_bundle`` is also imported by tests/test_infer.py; it is cached per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from conftest import SHARED_DIR, make_tiny_imagefolder
from hypothesis import given
from hypothesis import strategies as st

from core.data import Preprocessing, load_image_tensor
from core.model import build_cnn, make_spec
from core.train import make_payload, save_checkpoint
from export.metadata import FORMAT_VERSION, MissingMetadataError, ModelMetadata, read_metadata
from export.onnx_export import ExportConfig, ExportError, convert_fp16, export_onnx
from export.ort_session import create_session, run_logits
from export.parity import TOLERANCES, check_parity
from export.quantize import ImageCalibrationReader, quantize_int8

CLASSES = ("Amphibia", "Aves", "Fungi", "Insecta", "Mammalia", "Mollusca", "Plantae", "Reptilia")
PREP = Preprocessing(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
FAST = ExportConfig(exporter="torchscript")  # ~0.1 s instead of ~2 s, for tests that are not about the exporter
# The TorchScript exporter (FAST) flags SmallCNN.forward's input-shape check as a traced constant: harmless.
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")




@dataclass(frozen=True)
class TinyBundle:
    data_dir: Path  # train/ and val/ (the test split), 8 classes
    model: torch.nn.Module  # trained SmallCNN, eval mode
    model_desc: dict
    checkpoint: Path
    onnx_path: Path  # fp32 export of ``model``
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_paths: tuple[Path, ...]


SHARED_WEIGHTS = SHARED_DIR / "weights" / "mobilenet_v2_imagenet1k_from_qnnpack.pth"
SHARED_PHOTOS = SHARED_DIR / "photos"
_BUNDLES: dict[str, TinyBundle] = {}


def _load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    xs, ys, paths = [], [], []
    for ci, name in enumerate(CLASSES):
        for p in sorted((root / split / name).glob("*.jpg")):
            xs.append(load_image_tensor(p, PREP))
            ys.append(ci)
            paths.append(p)
    return torch.stack(xs), torch.tensor(ys), paths


def tiny_bundle(tmp_path_factory) -> TinyBundle:
    """Train a Part A SmallCNN on 8 colour classes (12 train + 16 test images each), checkpoint and export it."""
    if "tiny" in _BUNDLES:
        return _BUNDLES["tiny"]
    root = tmp_path_factory.mktemp("export_tiny")
    data = make_tiny_imagefolder(root / "data", classes=CLASSES, train_per_class=12, test_per_class=16)
    x_train, y_train, train_paths = _load_split(data, "train")
    x_test, y_test, _ = _load_split(data, "val")
    torch.manual_seed(0)
    spec = make_spec(filters=8, image_size=32, num_classes=len(CLASSES), batch_norm=True, dense_units=32)
    model = build_cnn(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x_train), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc >= 0.9, f"the tiny model should learn the colour classes (test acc {acc:.2%}); fixture broken"
    desc = {"kind": "cnn", "spec": spec.to_dict()}
    ckpt = root / "best.pt"
    save_checkpoint(ckpt, make_payload(model, model_desc=desc, class_names=CLASSES, preprocessing=PREP,
                                       train_config={"epochs": 1}, metrics={"test_acc": acc}, epoch=1))
    meta = ModelMetadata(class_names=CLASSES, preprocessing=PREP, model_desc=desc, source_name="best.pt")
    onnx_path, _ = export_onnx(model, root / "tiny.onnx", meta)
    bundle = TinyBundle(data, model, desc, ckpt, onnx_path, x_test, y_test, tuple(train_paths))
    _BUNDLES["tiny"] = bundle
    return bundle


@pytest.fixture
def tiny(tmp_path_factory) -> TinyBundle:
    return tiny_bundle(tmp_path_factory)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_tiny_cnn_export_has_dynamic_batch_metadata_and_matches_torch(tiny):
    proto = onnx.load(str(tiny.onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert _dims(proto.graph.input[0]) == ["batch", 3, 32, 32], f"input dims {_dims(proto.graph.input[0])}"
    assert _dims(proto.graph.output[0]) == ["batch", len(CLASSES)], f"output dims {_dims(proto.graph.output[0])}"
    assert not list(tiny.onnx_path.parent.glob("*.data")), "weights must be inline, no external .data file"
    assert not list(tiny.onnx_path.parent.glob(".*.tmp")), "atomic write left a temp file behind"

    meta = read_metadata(tiny.onnx_path)
    assert meta.class_names == CLASSES, f"class names did not round-trip: {meta.class_names}"
    assert meta.preprocessing == PREP, f"preprocessing did not round-trip: {meta.preprocessing}"
    assert meta.model_desc == tiny.model_desc, "model description did not round-trip"
    assert (meta.opset, meta.export_batch, meta.precision) == (20, 2, "fp32"), f"export fields: {meta}"
    assert meta.torch_version == torch.__version__ and meta.onnx_version == onnx.__version__

    session, _ = create_session(tiny.onnx_path, "cpu", intra_op_threads=1)
    report = check_parity(tiny.model, session, tiny.test_images[:20], batch_sizes=(1, 3, 8), export_batch=2)
    assert report.max_abs_diff < 1e-4, f"onnxruntime vs torch max |diff| {report.max_abs_diff:.3g} >= 1e-4"
    assert report.top1_agreement == 1.0, f"top-1 agreement {report.top1_agreement:.2%} at batch 1/3/8"
    assert report.passed, report.summary()


def _mobilenet_with_nontrivial_statistics() -> torch.nn.Module:
    """Random MobileNetV2 whose BatchNorms carry random statistics: freshly initialised, its logits are
    ~1e-9 and any parity check would pass trivially."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    torch.nn.init.normal_(model.classifier[1].weight, std=0.05)
    return model.eval()


def test_mobilenet_v2_export_matches_torch_at_batch_1_3_8(tmp_path):
    """Random-weight MobileNetV2. Where ../shared holds the real weights, tests/test_infer.py exports the real
    MobileNetV2 with the same 1e-4 bound at batch 1/3/8 on real photos, so this one would only repeat a
    ~10 s export on a shared 2-core box: it runs when that test cannot."""
    if SHARED_WEIGHTS.is_file() and SHARED_PHOTOS.is_dir():
        pytest.skip("covered by tests/test_infer.py::test_real_mobilenet_v2_on_shared_photos (real weights)")
    model = _mobilenet_with_nontrivial_statistics()
    prep = Preprocessing(image_size=64)
    meta = ModelMetadata(class_names=tuple(f"c{i}" for i in range(10)), preprocessing=prep,
                         model_desc={"kind": "backbone", "arch": "mobilenet_v2", "num_classes": 10})
    path, _ = export_onnx(model, tmp_path / "mnv2.onnx", meta)
    onnx.checker.check_model(str(path), full_check=True)
    session, _ = create_session(path, "cpu", intra_op_threads=1)
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    report = check_parity(model, session, x, batch_sizes=(1, 3, 8), export_batch=2)
    assert report.max_abs_logit > 0.1, f"logits too small ({report.max_abs_logit:.3g}) for a meaningful check"
    assert report.max_abs_diff < 1e-4, f"MobileNetV2 onnxruntime vs torch max |diff| {report.max_abs_diff:.3g}"
    assert report.top1_agreement == 1.0, report.summary()
    assert read_metadata(path).model_desc["arch"] == "mobilenet_v2"


def test_torchscript_exporter_also_gives_a_dynamic_batch(tiny, tmp_path):
    meta = ModelMetadata(class_names=CLASSES, preprocessing=PREP)
    path, written = export_onnx(tiny.model, tmp_path / "ts.onnx", meta,
                                ExportConfig(exporter="torchscript", opset=17, export_batch=3))
    assert written.opset == 17 and written.export_batch == 3
    session, _ = create_session(path, "cpu", intra_op_threads=1)
    report = check_parity(tiny.model, session, tiny.test_images[:10], batch_sizes=(1, 2, 8), export_batch=3)
    assert report.max_abs_diff < 1e-4, report.summary()


@pytest.mark.parametrize("kwargs, message", [
    ({"export_batch": 1}, "export_batch must be an int >= 2"),
    ({"opset": 12}, "unsupported opset 12"),
    ({"exporter": "jit"}, "unknown exporter 'jit'"),
])
def test_export_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExportConfig(**kwargs)


def test_export_refuses_a_static_batch_and_mismatched_classes(tiny, tmp_path):
    class FixedBatch(torch.nn.Module):  # a constant batch in a reshape: exports, but the output batch is baked in
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).reshape(2, -1)

    meta = ModelMetadata(class_names=CLASSES, preprocessing=PREP)
    with pytest.raises(ExportError, match=r"'logits' has shape \[2, .*expected \[<symbolic batch>, C\]"):
        export_onnx(FixedBatch(tiny.model), tmp_path / "fixed.onnx", meta)
    assert not (tmp_path / "fixed.onnx").exists(), "a refused export must not leave a file"

    wrong = ModelMetadata(class_names=CLASSES[:3], preprocessing=PREP)
    with pytest.raises(ExportError, match="8 classes but the metadata lists 3"):
        export_onnx(tiny.model, tmp_path / "wrong.onnx", wrong, FAST)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tiny.model, tmp_path / "model.pt", meta)


def test_failed_export_keeps_the_previous_file(tiny, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(tiny.onnx_path.read_bytes())
    before = target.read_bytes()
    import export.onnx_export as ox

    def broken_check(*args, **kwargs):
        raise ExportError("simulated checker failure")

    monkeypatch.setattr(ox, "check_model", broken_check)
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(tiny.model, target, ModelMetadata(class_names=CLASSES, preprocessing=PREP), FAST)
    assert target.read_bytes() == before, "the previous model file was modified by a failed export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"], "temp files left behind"


@given(
    names=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True),
    size=st.integers(8, 512),
    extra=st.one_of(st.none(), st.integers(0, 64)),
    mean=st.tuples(*[st.floats(-2, 2, allow_nan=False)] * 3),
    std=st.tuples(*[st.floats(0.01, 5, allow_nan=False)] * 3),
)
def test_metadata_props_round_trip(names, size, extra, mean, std):
    prep = Preprocessing(size, None if extra is None else size + extra, mean, std)
    meta = ModelMetadata(class_names=tuple(names), preprocessing=prep, model_desc={"kind": "cnn", "x": [1, 2]},
                         source_sha256="ab" * 32, precision="int8", opset=18, export_batch=2)
    props = meta.to_props()
    assert all(isinstance(v, str) for v in props.values()), "metadata_props values must be strings"
    back = ModelMetadata.from_props(props)
    assert back == meta, f"round trip changed the metadata: {back} != {meta}"


def test_metadata_errors_name_the_fix():
    with pytest.raises(MissingMetadataError, match="--image-size"):
        ModelMetadata.from_props({"producer": "someone else"})
    with pytest.raises(MissingMetadataError, match="re-export"):
        ModelMetadata.from_props({"format": FORMAT_VERSION, "class_names": "[]"})
    props = ModelMetadata(class_names=("a",), preprocessing=PREP).to_props()
    props["class_names"] = "not json"
    with pytest.raises(MissingMetadataError, match="not valid JSON"):
        ModelMetadata.from_props(props)
    with pytest.raises(ValueError, match="unique"):
        ModelMetadata(class_names=("a", "a"), preprocessing=PREP)
    with pytest.raises(ValueError, match="unknown precision"):
        ModelMetadata(class_names=("a",), preprocessing=PREP, precision="int4")


def test_int8_static_qdq_agrees_with_fp32_on_the_test_set(tiny, tmp_path):
    """INT8 must agree with fp32 on >= 98% of the 128 test images (the issue's bar)."""
    q_path, used = quantize_int8(tiny.onnx_path, tmp_path / "tiny.int8.onnx", list(tiny.train_paths))
    assert used == len(tiny.train_paths), f"calibrated on {used} of {len(tiny.train_paths)} images"
    proto = onnx.load(str(q_path))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, f"not a QDQ model: ops {sorted(ops)}"
    conv_w_scales = [init for init in proto.graph.initializer if init.name.endswith("_scale") and init.dims]
    assert conv_w_scales, "per-channel quantization should store per-channel (1-D) weight scales"
    meta = read_metadata(q_path)
    assert meta.precision == "int8" and meta.class_names == CLASSES, f"int8 metadata: {meta}"

    fp32, _ = create_session(tiny.onnx_path, "cpu", intra_op_threads=1)
    int8, _ = create_session(q_path, "cpu", intra_op_threads=1)
    x = tiny.test_images.numpy()
    top_fp32 = run_logits(fp32, x).argmax(1)
    top_int8 = run_logits(int8, x).argmax(1)
    agreement = float((top_fp32 == top_int8).mean())
    assert len(x) == 128, f"expected the 128-image test split, got {len(x)}"
    assert agreement >= 0.98, f"INT8 top-1 agreement with fp32 {agreement:.2%} < 98%"
    int8_acc = float((top_int8 == tiny.test_labels.numpy()).mean())
    assert int8_acc >= 0.9, f"INT8 test accuracy {int8_acc:.2%}"
    report = check_parity(tiny.model, int8, tiny.test_images[:16], export_batch=2, tolerance=TOLERANCES["int8"])
    assert report.passed, report.summary()


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_a_count_that_is_not_a_multiple_of_the_batch(tiny, tmp_path, method):
    """13 images in batches of 8: onnxruntime's histograms failed on the short last batch (ValueError, an
    inhomogeneous shape); the reader drops it and says how many images were used."""
    _, used = quantize_int8(tiny.onnx_path, tmp_path / "tiny.int8.onnx", list(tiny.train_paths[:13]), method=method)
    assert used == 8, f"expected 8 calibration images used (one whole batch of 8 of 13), got {used}"


def test_calibration_reader_skips_unreadable_and_refuses_nothing(tiny, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    reader = ImageCalibrationReader([bad, *tiny.train_paths[:3]], PREP, batch_size=2)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch["images"])
    # the short last batch (1 image) is dropped: onnxruntime's histogram calibration stacks equal batches
    assert [b.shape for b in batches] == [(2, 3, 32, 32)], [b.shape for b in batches]
    assert reader.skipped == [bad] and reader.used == 2, f"skipped: {reader.skipped}, used {reader.used}"
    single = ImageCalibrationReader(tiny.train_paths[:3], PREP, batch_size=8)
    assert single.get_next()["images"].shape == (3, 3, 32, 32) and single.get_next() is None, "one short batch is kept"
    with pytest.raises(ValueError, match="none of the 1 calibration images"):
        ImageCalibrationReader([bad], PREP).get_next()
    with pytest.raises(ValueError, match="--calibration-images"):
        ImageCalibrationReader([], PREP)


def test_fp16_keeps_fp32_io_and_stays_close(tiny, tmp_path):
    path = convert_fp16(tiny.onnx_path, tmp_path / "tiny.fp16.onnx")
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "input must stay fp32"
    halves = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves, "no fp16 weights in the fp16 model"
    assert json.loads(dict((p.key, p.value) for p in proto.metadata_props)["class_names"]) == list(CLASSES)
    session, _ = create_session(path, "cpu", intra_op_threads=1)
    report = check_parity(tiny.model, session, tiny.test_images[:16], export_batch=2, tolerance=TOLERANCES["fp16"])
    assert report.passed and report.max_abs_diff > 0, report.summary()
    out = run_logits(session, tiny.test_images[:3].numpy())
    assert out.dtype == np.float32 and out.shape == (3, len(CLASSES)), (out.dtype, out.shape)
